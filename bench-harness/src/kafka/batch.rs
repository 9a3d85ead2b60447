//! A fast encoder of Kafka RecordBatch v2 (docs/KAFKA.md §2) and the hand-written framing of a
//! one-partition Produce request around it.
//!
//! ```text
//!  0 baseOffset i64 (0) | 8 batchLength i32 | 12 partitionLeaderEpoch i32 (-1) | 16 magic (2)
//! 17 crc u32 = CRC-32C(bytes[21..]) | 21 attributes i16 (0: no codec, CreateTime)
//! 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId (-1)
//! 51 producerEpoch (-1) | 53 baseSequence (-1) | 57 recordCount i32 | 61 records...
//!
//! record: length varint | attributes 0 | timestampDelta varlong | offsetDelta varint
//!         keyLength varint (-1: null) | key | valueLength varint | value | headerCount 0
//! ```
//!
//! The records are appended to one buffer reserved for the whole batch, so adding a record
//! allocates nothing; the header is patched, the records compressed (`--compression`) and the
//! CRC computed once, in [`BatchBuilder::finish`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::args::Codec;
use tidelog_wire::kafka::codec::put_uvarint;
#[cfg(test)]
use tidelog_wire::kafka_records::varint::{put_varint as put_varlong, varint_len as varlong_len};
use tidelog_wire::kafka_records::RecordBatchBuilder;

/// Bytes before the first record.
pub use tidelog_wire::kafka_records::BATCH_OVERHEAD as BATCH_HEADER_LEN;
/// Most bytes a record adds beyond its key and value: length (5), attributes (1), timestamp
/// delta (10), offset delta (5), key length (5), value length (5), header count (1).
pub const RECORD_OVERHEAD_MAX: usize = 32;

/// Builds one RecordBatch v2 of header-less records: the wire crate's encoder, finished with
/// the `--compression` codec.
#[derive(Debug)]
pub struct BatchBuilder(RecordBatchBuilder);

impl BatchBuilder {
    /// An empty batch with room for `capacity` bytes (header included) before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        BatchBuilder(RecordBatchBuilder::with_capacity(capacity))
    }

    /// Records in the batch.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of the batch so far (header included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Bytes `push` of a record with a `key_len`-byte key (`None`: null) and a
    /// `value_len`-byte value at `timestamp_ms` would add (before compression).
    pub fn record_len(&self, key_len: Option<usize>, value_len: usize, timestamp_ms: i64) -> usize {
        self.0.record_len(key_len, value_len, timestamp_ms)
    }

    /// Appends a record with `key`, `value` and no headers, created at `timestamp_ms`.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) {
        self.0.push(key, value, timestamp_ms);
    }

    /// The finished batch: records compressed with `codec`, header patched, CRC computed.
    /// The builder is left empty with a fresh buffer of `next_capacity` bytes.
    pub fn finish(&mut self, next_capacity: usize, codec: Codec) -> Bytes {
        match self.0.finish_compressed(next_capacity, codec.compression()) {
            Ok(batch) => batch,
            // Only a codec Kafka does not define fails, and `Codec` has none of those.
            Err(_) => self.0.finish(next_capacity),
        }
    }
}

/// Appends the start of a Produce request body (v3..=11) for one topic and one partition,
/// up to and including the length of `records`; the records follow, then
/// [`produce_suffix`]. Matches the generated `ProduceRequest::encode` byte for byte.
pub fn produce_prefix(
    out: &mut BytesMut,
    version: i16,
    acks: i16,
    timeout_ms: i32,
    topic: &str,
    partition: i32,
    records_len: usize,
) {
    let flexible = version >= 9;
    // transactional_id: null.
    if flexible {
        out.put_u8(0);
    } else {
        out.put_i16(-1);
    }
    out.put_i16(acks);
    out.put_i32(timeout_ms);
    // One topic.
    put_len(out, 1, flexible);
    if flexible {
        put_uvarint(out, topic.len() as u32 + 1);
    } else {
        out.put_i16(topic.len() as i16);
    }
    out.put_slice(topic.as_bytes());
    // One partition.
    put_len(out, 1, flexible);
    out.put_i32(partition);
    put_len(out, records_len, flexible);
}

/// The bytes after the records of a request started by [`produce_prefix`]: the tagged-field
/// sections of the partition, the topic and the request in flexible versions.
pub fn produce_suffix(version: i16) -> &'static [u8] {
    if version >= 9 {
        &[0, 0, 0]
    } else {
        &[]
    }
}

fn put_len(out: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(out, len as u32 + 1);
    } else {
        out.put_i32(len as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidelog_wire::kafka::generated::produce_request::ProduceRequest;
    use tidelog_wire::kafka::Decoder;
    use tidelog_wire::kafka_records::validate_produce_batch;

    fn values(n: usize, size: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| (0..size).map(|j| (i * 31 + j) as u8).collect())
            .collect()
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v), "{v}");
        }
    }

    #[test]
    fn batches_validate_and_decode_back() {
        for (n, size) in [(1, 8), (3, 0), (200, 100), (5, 20_000)] {
            let vals = values(n, size);
            let mut b = BatchBuilder::with_capacity(64);
            let mut expect_len = BATCH_HEADER_LEN;
            for (i, v) in vals.iter().enumerate() {
                let ts = 1_700_000_000_000 + (i as i64 % 7) * 1000 - 3000;
                expect_len += b.record_len(None, v.len(), ts);
                b.push(None, v, ts);
            }
            assert_eq!(b.len(), expect_len);
            assert_eq!(b.count(), n);
            let batch = b.finish(64, Codec::None);
            assert!(b.is_empty());
            let info = validate_produce_batch(&batch, 9, 8 << 20).expect("valid batch");
            assert_eq!(info.record_count, n as i32);
            assert_eq!(info.producer_id, -1);
            assert_eq!(info.base_timestamp, 1_700_000_000_000 - 3000);
            let records = tidelog_client::kafka::decode_records(&batch, 1000).expect("decodes");
            assert_eq!(records.len(), n);
            for (i, (r, v)) in records.iter().zip(&vals).enumerate() {
                assert_eq!(r.offset, 1000 + i as i64);
                assert_eq!(r.key, None);
                assert_eq!(&batch[r.value.clone()], &v[..]);
                assert_eq!(
                    r.timestamp,
                    1_700_000_000_000 + (i as i64 % 7) * 1000 - 3000
                );
            }
        }
    }

    #[test]
    fn keys_and_codecs_make_valid_batches() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let mut b = BatchBuilder::with_capacity(64);
            let mut len = BATCH_HEADER_LEN;
            for i in 0..20u8 {
                let key = [i; 16];
                let key = (i % 3 != 0).then_some(&key[..]);
                len += b.record_len(key.map(<[u8]>::len), 100, 7);
                b.push(key, &[i; 100], 7);
            }
            assert_eq!(b.len(), len, "record_len counts keys");
            let batch = b.finish(64, codec);
            let info = validate_produce_batch(&batch, 9, 8 << 20).expect("valid batch");
            assert_eq!(info.record_count, 20, "{codec:?}");
            assert_eq!(
                i16::from_be_bytes([batch[21], batch[22]]) & 7,
                i16::from(codec.compression().0)
            );
            if codec == Codec::None {
                let records = tidelog_client::kafka::decode_records(&batch, 0).expect("decodes");
                assert_eq!(
                    records[1].key.clone().map(|k| batch[k].to_vec()),
                    Some(vec![1; 16])
                );
                assert_eq!(records[0].key, None);
            }
        }
    }

    #[test]
    fn a_reused_builder_starts_a_new_batch() {
        let mut b = BatchBuilder::with_capacity(128);
        b.push(None, b"first", 5);
        let one = b.finish(128, Codec::None);
        b.push(Some(b"k"), b"second", 9);
        b.push(None, b"third", 7);
        let two = b.finish(128, Codec::None);
        assert_eq!(
            validate_produce_batch(&one, 3, 1 << 20)
                .expect("ok")
                .record_count,
            1
        );
        let info = validate_produce_batch(&two, 3, 1 << 20).expect("ok");
        assert_eq!(
            (info.record_count, info.base_timestamp, info.max_timestamp),
            (2, 9, 9)
        );
    }

    #[test]
    fn produce_framing_matches_the_generated_codec() {
        let mut b = BatchBuilder::with_capacity(256);
        b.push(None, &[7u8; 40], 1);
        let batch = b.finish(0, Codec::None);
        for version in [3, 7, 8, 9, 11] {
            let mut body = BytesMut::new();
            produce_prefix(&mut body, version, -1, 30_000, "topic-ü", 5, batch.len());
            body.put_slice(&batch);
            body.put_slice(produce_suffix(version));
            let body = body.freeze();
            let mut d = Decoder::new(&body);
            let req = ProduceRequest::decode(&mut d, version).expect("decodes");
            assert_eq!(d.remaining(), 0, "v{version}: nothing left over");
            assert_eq!(req.acks, -1);
            assert_eq!(req.timeout_ms, 30_000);
            assert_eq!(req.transactional_id, None);
            assert_eq!(req.topic_data.len(), 1);
            assert_eq!(req.topic_data[0].name, "topic-ü");
            let p = &req.topic_data[0].partition_data;
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].index, 5);
            assert_eq!(p[0].records.as_deref(), Some(&batch[..]));
        }
    }
}
