//! CPU-only costs of the two wire protocols, per request: native frame encode and decode, Kafka
//! request decode (Produce v9 with one 16 KiB batch, Metadata v12), Kafka batch validation on the
//! produce path, and a Kafka Fetch response encode.
//!
//! Batch encode and verify, CRC-32C and the offset index lookup live in
//! `engine/benches/codec.rs`; the append path of one partition in `engine/benches/append.rs`.
//! Under `cargo test --all-targets` criterion runs each benchmark once, so they stay cheap there.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use tidelog_wire::batch::{verify, BatchBuilder, VerifyLimits};
use tidelog_wire::kafka::generated::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use tidelog_wire::kafka::generated::metadata_request::{MetadataRequest, MetadataRequestTopic};
use tidelog_wire::kafka::generated::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use tidelog_wire::kafka::generated::{decode_request_body, RequestBody};
use tidelog_wire::kafka::Decoder;
use tidelog_wire::kafka_records::{native_to_kafka, seal_produce_batch, validate_produce_batch};
use tidelog_wire::native::ErrorCode;
use tidelog_wire::native::{
    decode_frame, FetchResponsePartition, FrameEncoder, FrameLimits, ProduceRequestPartition,
};

/// Records of the 16 KiB batch: 16 values of 1 KiB, as a producer with 16 KiB batches sends.
const RECORDS: usize = 16;
const RECORD_BYTES: usize = 1024;
const API_PRODUCE: i16 = 0;
const API_FETCH_VERSION: i16 = 12;
const API_METADATA: i16 = 3;

/// A native batch of [`RECORDS`] 1 KiB records.
fn native_batch() -> BytesMut {
    let value = vec![0x5a; RECORD_BYTES];
    let mut builder = BatchBuilder::new();
    for i in 0..RECORDS {
        builder.push(None, &value, 1_700_000_000_000 + i as i64, &[]);
    }
    builder.finish()
}

/// The same records as a Kafka RecordBatch v2.
fn kafka_batch() -> Bytes {
    let native = native_batch();
    let view = verify(&native, &VerifyLimits::default()).expect("the builder makes valid batches");
    let mut out = BytesMut::new();
    native_to_kafka(&view, &mut out).expect("a small batch converts");
    out.freeze()
}

/// A group with short warm-up and measurement: these costs are microseconds.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g
}

/// Native frames: the header of a produce request and of a fetch response with 3 partitions
/// (the body is the batches, sent as they are), and decoding a whole produce frame.
fn native(c: &mut Criterion) {
    let mut g = group(c, "native");
    let batch = native_batch();
    let produce: Vec<ProduceRequestPartition<'_>> = (0..3)
        .map(|p| ProduceRequestPartition {
            topic: "bench-topic",
            partition: p,
            batches_len: batch.len(),
        })
        .collect();
    let fetch: Vec<FetchResponsePartition<'_>> = (0..3)
        .map(|p| FetchResponsePartition {
            topic: "bench-topic",
            partition: p,
            error: ErrorCode::None,
            high_watermark: 1_000_000,
            log_start: 0,
            batches_len: batch.len(),
            replica: None,
        })
        .collect();
    let mut encoder = FrameEncoder::new();
    let mut out = BytesMut::with_capacity(4096);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode/produce_request_3p", |b| {
        b.iter(|| {
            out.clear();
            encoder
                .encode_produce_request(7, 1, 30_000, black_box(&produce), &mut out)
                .expect("fits a frame")
        })
    });
    g.bench_function("encode/fetch_response_3p", |b| {
        b.iter(|| {
            out.clear();
            encoder
                .encode_fetch_response(7, black_box(&fetch), &mut out)
                .expect("fits a frame")
        })
    });

    // A whole produce frame: prefix, header, then the three batches.
    let mut frame = BytesMut::new();
    encoder
        .encode_produce_request(7, 1, 30_000, &produce, &mut frame)
        .expect("fits a frame");
    for _ in 0..3 {
        frame.extend_from_slice(&batch);
    }
    let limits = FrameLimits::default();
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode/produce_request_3x16KiB", |b| {
        b.iter(|| {
            decode_frame(black_box(&frame), &limits)
                .expect("valid frame")
                .correlation_id()
        })
    });
    g.finish();
}

/// Kafka: decoding request bodies the broker sees most, validating a produced batch, and
/// encoding a fetch response.
fn kafka(c: &mut Criterion) {
    let mut g = group(c, "kafka");
    let batch = kafka_batch();

    let produce = ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench-topic".into(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(batch.clone()),
            }],
        }],
    };
    let mut body = BytesMut::new();
    produce.encode(&mut body, 9).expect("encodes");
    let body = body.freeze();
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode/produce_v9_16KiB", |b| {
        b.iter(|| {
            let mut d = Decoder::new(black_box(&body));
            match decode_request_body(API_PRODUCE, 9, &mut d).expect("decodes") {
                RequestBody::Produce(r) => r.topic_data.len(),
                _ => unreachable!("a produce request decodes as one"),
            }
        })
    });

    let metadata = MetadataRequest {
        topics: Some(
            ["orders", "payments", "clicks"]
                .iter()
                .map(|t| MetadataRequestTopic {
                    topic_id: [0; 16],
                    name: Some((*t).into()),
                })
                .collect(),
        ),
        allow_auto_topic_creation: false,
        ..MetadataRequest::default()
    };
    let mut body = BytesMut::new();
    metadata.encode(&mut body, 12).expect("encodes");
    let body = body.freeze();
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode/metadata_v12_3topics", |b| {
        b.iter(|| {
            let mut d = Decoder::new(black_box(&body));
            match decode_request_body(API_METADATA, 12, &mut d).expect("decodes") {
                RequestBody::Metadata(r) => r.topics.map_or(0, |t| t.len()),
                _ => unreachable!("a metadata request decodes as one"),
            }
        })
    });

    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("validate_produce_batch/16KiB", |b| {
        b.iter(|| {
            validate_produce_batch(black_box(&batch), 9, 1 << 20)
                .expect("valid batch")
                .record_count
        })
    });

    // What storing one produced batch costs the broker up to the log's write buffer: the
    // path before this change (validate, copy behind a header, check the CRC again on
    // append, copy into the write buffer) against the current one (validate and seal:
    // no copy, one CRC pass; then the write buffer copy of head and tail).
    let mut write_buffer = vec![0u8; 1 << 20];
    g.bench_function("store/validate_copy_recheck_16KiB", |b| {
        b.iter(|| {
            let info = validate_produce_batch(black_box(&batch), 9, 1 << 20).expect("valid");
            let wrapped = tidelog_wire::batch::encode_kafka_wrapped(
                &batch,
                info.record_count,
                info.last_offset_delta,
                info.base_timestamp,
                info.max_timestamp,
                info.producer_id,
                info.producer_epoch,
                info.base_sequence,
                info.compression,
            );
            tidelog_wire::batch::check_crc(&wrapped).expect("valid");
            write_buffer[..wrapped.len()].copy_from_slice(&wrapped);
            black_box(&write_buffer);
        })
    });
    g.bench_function("store/seal_16KiB", |b| {
        b.iter(|| {
            let (_, sealed) = seal_produce_batch(black_box(&batch), 9, 1 << 20).expect("valid");
            let (head, tail) = sealed.into_parts();
            write_buffer[..head.len()].copy_from_slice(&head);
            write_buffer[head.len()..head.len() + tail.len()].copy_from_slice(&tail);
            black_box(&write_buffer);
        })
    });

    // The generated encoder as a proxy for the broker's own (private) fetch response writer:
    // 3 partitions with one small batch each.
    let small = {
        let mut builder = BatchBuilder::new();
        builder.push(None, &[0x5a; 64], 1_700_000_000_000, &[]);
        let native = builder.finish();
        let view = verify(&native, &VerifyLimits::default()).expect("valid batch");
        let mut out = BytesMut::new();
        native_to_kafka(&view, &mut out).expect("converts");
        out.freeze()
    };
    let fetch = FetchResponse {
        responses: vec![FetchableTopicResponse {
            topic: "bench-topic".into(),
            topic_id: [0; 16],
            partitions: (0..3)
                .map(|p| PartitionData {
                    partition_index: p,
                    high_watermark: 1_000_000,
                    last_stable_offset: 1_000_000,
                    log_start_offset: 0,
                    records: Some(small.clone()),
                    ..PartitionData::default()
                })
                .collect(),
        }],
        ..FetchResponse::default()
    };
    let mut out = BytesMut::with_capacity(4096);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode/fetch_response_v12_3p_small", |b| {
        b.iter(|| {
            out.clear();
            black_box(&fetch)
                .encode(&mut out, API_FETCH_VERSION)
                .expect("encodes");
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, native, kafka);
criterion_main!(benches);
