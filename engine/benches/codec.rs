//! CPU-only costs on the append and read paths: CRC-32C, batch encoding and verification,
//! and the sparse offset index lookup a disk read starts with.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidelog_engine::log::index::OffsetIndex;
use tidelog_wire::batch::{compute_crc, verify, BatchBuilder, VerifyLimits, CRC_START};

const RECORDS: usize = 64;
const RECORD_BYTES: usize = 1024;
const INDEX_ENTRIES: u32 = 100_000;

fn encode(builder: &mut BatchBuilder, value: &[u8]) -> bytes::BytesMut {
    encode_n(builder, value, RECORDS)
}

fn encode_n(builder: &mut BatchBuilder, value: &[u8], records: usize) -> bytes::BytesMut {
    for i in 0..records {
        builder.push(None, value, 1_700_000_000_000 + i as i64, &[]);
    }
    builder.finish()
}

/// xorshift64: cheap, deterministic, and not something the optimizer can see through.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // compute_crc covers the batch from CRC_START: give it exactly 64 KiB to checksum.
    let buf: Vec<u8> = (0..CRC_START + (64 << 10)).map(|i| i as u8).collect();
    group.throughput(Throughput::Bytes(64 << 10));
    group.bench_function("crc32c/64KiB", |b| b.iter(|| compute_crc(black_box(&buf))));

    let value = vec![0x5a; RECORD_BYTES];
    let mut builder = BatchBuilder::new();
    let batch = encode(&mut builder, &value);
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("encode/64x1KiB", |b| {
        b.iter(|| encode(&mut builder, black_box(&value)))
    });

    // The producer's 100 B case: per-record encoding cost rather than copying dominates.
    let small = vec![0x5a; 100];
    group.throughput(Throughput::Elements(2048));
    group.bench_function("encode/2048x100B", |b| {
        b.iter(|| encode_n(&mut builder, black_box(&small), 2048))
    });
    group.throughput(Throughput::Bytes(batch.len() as u64));

    let limits = VerifyLimits::default();
    group.bench_function("verify/64x1KiB", |b| {
        b.iter(|| {
            verify(black_box(&batch), &limits)
                .expect("valid batch")
                .record_count()
        })
    });

    // One entry per 4 KiB of a segment with 64 records per entry, as the log builds it.
    let mut index = OffsetIndex::default();
    for i in 1..=INDEX_ENTRIES {
        index.push(i * 64, i * 4096);
    }
    let span = u64::from(INDEX_ENTRIES) * 64 + 64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("offset_index/lookup_100k", |b| {
        b.iter(|| index.lookup(black_box((next_random(&mut state) % span) as u32)))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
