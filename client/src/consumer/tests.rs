use bytes::{BufMut, BytesMut};
use tidelog_wire::batch::{encode_kafka_wrapped, stamp_base_offset, BatchBuilder};

use super::*;

fn native_batch(base: i64, values: &[&[u8]]) -> BytesMut {
    let mut b = BatchBuilder::new();
    for (i, v) in values.iter().enumerate() {
        let key = (i % 2 == 0).then_some(&b"k"[..]);
        b.push(key, v, 1_000 + i as i64, &[]);
    }
    let mut batch = b.finish();
    stamp_base_offset(&mut batch, base).expect("stamp");
    batch
}

/// `decode_batches` into owned records sharing `buf`.
fn decode(
    buf: &Bytes,
    topic: &str,
    partition: i32,
    position: i64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<i64> {
    decode_batches(buf, topic, partition, position, &mut |r| {
        out.push(r.to_record(buf));
    })
}

#[test]
fn skips_records_below_the_position_and_ignores_a_cut_batch() {
    let mut data = BytesMut::new();
    data.put(native_batch(10, &[b"a", b"b", b"c"]));
    data.put(native_batch(13, &[b"d", b"e"]));
    let whole = data.len();
    let cut = native_batch(15, &[b"f"]);
    data.put(&cut[..cut.len() - 1]);
    let buf = data.freeze();
    let mut out = Vec::new();
    let next = decode(&buf, "t", 0, 11, &mut out).expect("decode");
    assert_eq!(next, 15, "the cut batch is fetched again");
    let offsets: Vec<i64> = out.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [11, 12, 13, 14]);
    assert_eq!(out[0].value, Bytes::from_static(b"b"));
    assert_eq!(out[0].key, None);
    assert_eq!(out[1].key, Some(Bytes::from_static(b"k")));
    assert_eq!(out[1].timestamp, 1_002);
    assert!(whole < buf.len());
}

#[test]
fn reads_kafka_format_batches() {
    // One Kafka v2 record: key "kk", value "vv", built by hand.
    let mut rec = vec![0u8, 0, 0, 4, b'k', b'k', 4, b'v', b'v', 0];
    let mut records = vec![rec.len() as u8 * 2];
    records.append(&mut rec);
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0i16.to_be_bytes());
    after_crc.extend_from_slice(&0i32.to_be_bytes());
    after_crc.extend_from_slice(&5_000i64.to_be_bytes());
    after_crc.extend_from_slice(&5_000i64.to_be_bytes());
    after_crc.extend_from_slice(&(-1i64).to_be_bytes());
    after_crc.extend_from_slice(&(-1i16).to_be_bytes());
    after_crc.extend_from_slice(&(-1i32).to_be_bytes());
    after_crc.extend_from_slice(&1i32.to_be_bytes());
    after_crc.extend_from_slice(&records);
    let mut kafka = Vec::new();
    kafka.extend_from_slice(&0i64.to_be_bytes());
    kafka.extend_from_slice(&((9 + after_crc.len()) as i32).to_be_bytes());
    kafka.extend_from_slice(&0i32.to_be_bytes());
    kafka.push(2);
    kafka.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
    kafka.extend_from_slice(&after_crc);
    let mut batch = encode_kafka_wrapped(&kafka, 1, 0, 5_000, 5_000, -1, -1, -1, Compression::None);
    stamp_base_offset(&mut batch, 42).expect("stamp");
    let buf = batch.freeze();
    let mut out = Vec::new();
    let next = decode(&buf, "t", 1, 0, &mut out).expect("decode");
    assert_eq!(next, 43);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].offset, 42);
    assert_eq!(out[0].timestamp, 5_000);
    assert_eq!(out[0].key, Some(Bytes::from_static(b"kk")));
    assert_eq!(out[0].value, Bytes::from_static(b"vv"));

    let mut gz = encode_kafka_wrapped(&kafka, 1, 0, 5_000, 5_000, -1, -1, -1, Compression::Gzip);
    stamp_base_offset(&mut gz, 0).expect("stamp");
    let gz = gz.freeze();
    assert!(matches!(
        decode(&gz, "t", 1, 0, &mut Vec::new()),
        Err(ClientError::UnsupportedCompression(Compression::Gzip))
    ));
}

#[test]
fn a_corrupt_batch_is_an_error() {
    let mut batch = native_batch(0, &[b"x"]);
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let buf = batch.freeze();
    assert!(matches!(
        decode(&buf, "t", 0, 0, &mut Vec::new()),
        Err(ClientError::Wire(WireError::CrcMismatch { .. }))
    ));
}

/// A compressed Kafka batch as the broker stores it (Tidelog header and Kafka attributes
/// both naming the codec) is inflated and read; one that inflates past the bound, or whose
/// records are damaged, is an error.
#[test]
fn reads_compressed_kafka_batches() {
    use tidelog_wire::kafka_records::{seal_produce_batch, RecordBatchBuilder};
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut builder = RecordBatchBuilder::with_capacity(4096);
        for i in 0..30u8 {
            builder.push(Some(&[i]), &[i; 100], 9_000);
        }
        let kafka = builder.finish_compressed(4096, codec).expect("known codec");
        let (_, sealed) = seal_produce_batch(&kafka, 9, 1 << 20).expect("valid");
        let mut stored = sealed.into_bytes();
        stamp_base_offset(&mut stored, 100).expect("stamp");
        let stored = stored.freeze();
        let mut out = Vec::new();
        let next = decode(&stored, "t", 0, 105, &mut out).expect("inflates and decodes");
        assert_eq!(next, 130, "{codec:?}");
        assert_eq!(out.len(), 25, "records from the position on");
        assert_eq!(out[0].offset, 105);
        assert_eq!(out[0].key, Some(Bytes::from_static(&[5])));
        assert_eq!(out[0].value, Bytes::from(vec![5u8; 100]));
    }
}
