//! Encoders: the native [`BatchBuilder`] and [`encode_kafka_wrapped`].

use bytes::{BufMut, BytesMut};
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::{
    compute_crc, BatchHeader, Compression, PayloadFormat, CRC_RANGE, FORMAT_VERSION, HEADER_LEN,
};
use crate::generated::{
    Record, RecordArgs, RecordBatch, RecordBatchArgs, RecordHeader, RecordHeaderArgs,
};

/// Upper bound of the flatbuffers bytes a record costs besides its data:
/// table (soffset, 5 fields, alignment), vtable, vector length prefixes and
/// their padding, and its slot in the records vector.
const RECORD_OVERHEAD: usize = 96;
/// Same for one record header.
const HEADER_OVERHEAD: usize = 48;
/// Root table, its vtable, the records vector prefix, root offset, alignment.
const BATCH_OVERHEAD: usize = 64;

/// A byte range in the builder's arena.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy)]
struct PendingRecord {
    key: Option<Span>,
    value: Span,
    timestamp: i64,
    /// Range in `BatchBuilder::headers`.
    headers_start: usize,
    headers_end: usize,
}

#[derive(Debug, Clone, Copy)]
struct PendingHeader {
    key: Span,
    value: Span,
}

/// Reusable encoder of native batches.
///
/// Records are buffered (metadata in a small `Vec`, all bytes in one arena)
/// and encoded on [`finish`](Self::finish), once the first and max timestamps
/// are known. All internal buffers, including the `FlatBufferBuilder`, keep
/// their capacity across batches, so steady-state encoding only allocates the
/// returned `BytesMut`.
pub struct BatchBuilder {
    fbb: FlatBufferBuilder<'static>,
    arena: Vec<u8>,
    records: Vec<PendingRecord>,
    headers: Vec<PendingHeader>,
    record_offsets: Vec<WIPOffset<Record<'static>>>,
    header_offsets: Vec<WIPOffset<RecordHeader<'static>>>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("records", &self.records.len())
            .field("arena_bytes", &self.arena.len())
            .field("producer_id", &self.producer_id)
            .field("producer_epoch", &self.producer_epoch)
            .field("base_sequence", &self.base_sequence)
            .finish_non_exhaustive()
    }
}

impl BatchBuilder {
    /// An empty builder with no producer (`producer_id`, epoch and sequence -1).
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::new(),
            arena: Vec::new(),
            records: Vec::new(),
            headers: Vec::new(),
            record_offsets: Vec::new(),
            header_offsets: Vec::new(),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    fn stash(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            end: self.arena.len(),
        }
    }

    /// Appends a record. `key: None` is a null key, distinct from `Some(&[])`.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        headers: &[(&str, &[u8])],
    ) {
        let key = key.map(|k| self.stash(k));
        let value = self.stash(value);
        let headers_start = self.headers.len();
        for (hk, hv) in headers {
            let key = self.stash(hk.as_bytes());
            let value = self.stash(hv);
            self.headers.push(PendingHeader { key, value });
        }
        self.records.push(PendingRecord {
            key,
            value,
            timestamp: timestamp_ms,
            headers_start,
            headers_end: self.headers.len(),
        });
    }

    /// Number of records pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// An upper bound of the size of the batch [`finish`](Self::finish) would
    /// return now (header included).
    pub fn estimated_size(&self) -> usize {
        HEADER_LEN
            + BATCH_OVERHEAD
            + self.arena.len()
            + self.records.len() * RECORD_OVERHEAD
            + self.headers.len() * HEADER_OVERHEAD
    }

    /// Sets the idempotent-producer fields of the next batch. Reset to "none"
    /// (-1) by [`finish`](Self::finish).
    pub fn producer(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
    }

    /// Encodes the pushed records into a native batch with `base_offset` 0 and
    /// the CRC filled in, then resets the builder for reuse.
    ///
    /// Records get `offset_delta` 0, 1, 2, ...; `first_timestamp` is the first
    /// record's timestamp and `max_timestamp` the largest one.
    ///
    /// Finishing an empty builder yields a batch with `record_count` 0, which
    /// [`verify`](super::verify) rejects: check [`is_empty`](Self::is_empty) first.
    ///
    /// # Panics
    ///
    /// If the payload exceeds the flatbuffers limit of 2 GiB; keep batches
    /// small with [`estimated_size`](Self::estimated_size).
    pub fn finish(&mut self) -> BytesMut {
        let first_timestamp = self.records.first().map_or(0, |r| r.timestamp);
        let max_timestamp = self
            .records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(first_timestamp);
        let record_count = i32::try_from(self.records.len()).unwrap_or(i32::MAX);

        self.fbb.reset();
        self.record_offsets.clear();
        let arena = &self.arena;
        let slice = |s: Span| arena.get(s.start..s.end).unwrap_or_default();
        for (index, rec) in self.records.iter().enumerate() {
            let key = rec.key.map(|k| self.fbb.create_vector(slice(k)));
            let value =
                (rec.value.end > rec.value.start).then(|| self.fbb.create_vector(slice(rec.value)));
            let headers = if rec.headers_end > rec.headers_start {
                self.header_offsets.clear();
                let pending = self
                    .headers
                    .get(rec.headers_start..rec.headers_end)
                    .unwrap_or_default();
                for h in pending {
                    // The arena bytes came from a `&str`: write them as a
                    // string without re-validating UTF-8 (same encoding as
                    // `create_string`: length prefix, bytes, NUL).
                    let key = self.fbb.create_byte_string(slice(h.key));
                    let key = WIPOffset::<&str>::new(key.value());
                    let value = (h.value.end > h.value.start)
                        .then(|| self.fbb.create_vector(slice(h.value)));
                    let header = RecordHeader::create(
                        &mut self.fbb,
                        &RecordHeaderArgs {
                            key: Some(key),
                            value,
                        },
                    );
                    self.header_offsets.push(header);
                }
                Some(self.fbb.create_vector(&self.header_offsets))
            } else {
                None
            };
            let record = Record::create(
                &mut self.fbb,
                &RecordArgs {
                    offset_delta: u32::try_from(index).unwrap_or(u32::MAX),
                    timestamp_delta: rec.timestamp.wrapping_sub(first_timestamp),
                    key,
                    value,
                    headers,
                },
            );
            self.record_offsets.push(record);
        }
        let records = self.fbb.create_vector(&self.record_offsets);
        let root = RecordBatch::create(
            &mut self.fbb,
            &RecordBatchArgs {
                records: Some(records),
            },
        );
        self.fbb.finish_minimal(root);

        let header = BatchHeader::new(
            0,
            0,
            0,
            FORMAT_VERSION,
            PayloadFormat::Native,
            Compression::None,
            0,
            record_count,
            record_count.saturating_sub(1),
            self.producer_epoch,
            0,
            first_timestamp,
            max_timestamp,
            self.producer_id,
            self.base_sequence,
            0,
        );
        let out = seal(header, self.fbb.finished_data());

        self.arena.clear();
        self.records.clear();
        self.headers.clear();
        self.record_offsets.clear();
        self.header_offsets.clear();
        self.producer_id = -1;
        self.producer_epoch = -1;
        self.base_sequence = -1;
        out
    }
}

/// Writes `header` (with `batch_len` and `crc` filled in) followed by `payload`.
///
/// # Panics
///
/// If the batch would exceed `u32::MAX` bytes.
fn seal(mut header: BatchHeader, payload: &[u8]) -> BytesMut {
    let total = HEADER_LEN + payload.len();
    let batch_len = u32::try_from(total);
    assert!(batch_len.is_ok(), "batch of {total} bytes exceeds u32::MAX");
    header.set_batch_len(batch_len.unwrap_or(u32::MAX));
    header.set_crc(0);
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(&header.0);
    out.put_slice(payload);
    let crc = compute_crc(&out);
    if let Some(dst) = out.get_mut(CRC_RANGE) {
        dst.copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Puts a Tidelog header in front of a verbatim Kafka RecordBatch v2.
///
/// The header gets `payload_format` Kafka, `base_offset` 0 and the CRC filled
/// in. The Kafka batch itself is not parsed or checked.
///
/// # Panics
///
/// If `kafka_batch` is longer than `u32::MAX - 64` bytes.
#[allow(clippy::too_many_arguments)]
pub fn encode_kafka_wrapped(
    kafka_batch: &[u8],
    record_count: i32,
    last_offset_delta: i32,
    first_ts: i64,
    max_ts: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
) -> BytesMut {
    let header = BatchHeader::new(
        0,
        0,
        0,
        FORMAT_VERSION,
        PayloadFormat::Kafka,
        compression,
        0,
        record_count,
        last_offset_delta,
        producer_epoch,
        0,
        first_ts,
        max_ts,
        producer_id,
        base_sequence,
        0,
    );
    seal(header, kafka_batch)
}
