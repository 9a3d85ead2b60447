//! Encoders: the native [`BatchBuilder`] and [`encode_kafka_wrapped`].

use bytes::{BufMut, BytesMut};
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::{
    compute_crc, BatchHeader, Compression, PayloadFormat, CRC_RANGE, FORMAT_VERSION, HEADER_LEN,
};
use crate::generated::{
    Record, RecordArgs, RecordBatch, RecordBatchArgs, RecordHeader, RecordHeaderArgs,
};

/// Bytes a record adds at finish: its slot in the records vector (its own
/// table and data are encoded at push).
const RECORD_SLOT: usize = 4;
/// Root table, its vtable, the records vector prefix, root offset, alignment.
const BATCH_OVERHEAD: usize = 64;

/// Reusable encoder of native batches.
///
/// Each [`push`](Self::push) writes the record's flatbuffers table (and its
/// key, value and headers) straight into the `FlatBufferBuilder`: the bytes
/// are copied once, and the record's vtable is deduplicated against the
/// previous records' by the builder. Timestamps are stored relative to the
/// first record's, which is known at the first push. Flatbuffers builds back
/// to front, so record tables lie in the buffer in reverse order; the records
/// vector lists them in push order, which is all a reader sees.
/// [`finish`](Self::finish) adds the records vector and the root. All
/// internal buffers, including the `FlatBufferBuilder`, keep their capacity
/// across batches, so steady-state encoding only allocates the returned
/// `BytesMut`.
pub struct BatchBuilder {
    fbb: FlatBufferBuilder<'static>,
    record_offsets: Vec<WIPOffset<Record<'static>>>,
    header_offsets: Vec<WIPOffset<RecordHeader<'static>>>,
    /// Timestamps of the first record and the largest one (valid while non-empty).
    first_timestamp: i64,
    max_timestamp: i64,
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
            .field("records", &self.record_offsets.len())
            .field("encoded_bytes", &self.fbb.unfinished_data().len())
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
            record_offsets: Vec::new(),
            header_offsets: Vec::new(),
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Appends a record. `key: None` is a null key, distinct from `Some(&[])`.
    ///
    /// # Panics
    ///
    /// If the payload exceeds the flatbuffers limit of 2 GiB; keep batches
    /// small with [`estimated_size`](Self::estimated_size).
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        headers: &[(&str, &[u8])],
    ) {
        let index = self.record_offsets.len();
        if index == 0 {
            self.first_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        }
        let key = key.map(|k| self.fbb.create_vector(k));
        let value = (!value.is_empty()).then(|| self.fbb.create_vector(value));
        let headers = if headers.is_empty() {
            None
        } else {
            self.header_offsets.clear();
            for (hk, hv) in headers {
                let key = self.fbb.create_string(hk);
                let value = (!hv.is_empty()).then(|| self.fbb.create_vector(hv));
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
        };
        let record = Record::create(
            &mut self.fbb,
            &RecordArgs {
                offset_delta: u32::try_from(index).unwrap_or(u32::MAX),
                timestamp_delta: timestamp_ms.wrapping_sub(self.first_timestamp),
                key,
                value,
                headers,
            },
        );
        self.record_offsets.push(record);
    }

    /// Number of records pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.record_offsets.len()
    }

    /// Whether no record was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.record_offsets.is_empty()
    }

    /// An upper bound of the size of the batch [`finish`](Self::finish) would
    /// return now (header included): the bytes encoded so far plus the records
    /// vector and the root.
    pub fn estimated_size(&self) -> usize {
        HEADER_LEN
            + BATCH_OVERHEAD
            + self.fbb.unfinished_data().len()
            + self.record_offsets.len() * RECORD_SLOT
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
    /// If the payload exceeds the flatbuffers limit of 2 GiB.
    pub fn finish(&mut self) -> BytesMut {
        let (first_timestamp, max_timestamp) = if self.is_empty() {
            (0, 0)
        } else {
            (self.first_timestamp, self.max_timestamp)
        };
        let record_count = i32::try_from(self.record_offsets.len()).unwrap_or(i32::MAX);
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
        let out = seal(header, self.fbb.finished_data(), |_| {});

        self.fbb.reset();
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
/// Header + payload with the length and CRC filled in; `edit` may change the copied payload
/// first (bytes the CRC then covers).
fn seal(mut header: BatchHeader, payload: &[u8], edit: impl FnOnce(&mut [u8])) -> BytesMut {
    let total = HEADER_LEN + payload.len();
    let batch_len = u32::try_from(total);
    assert!(batch_len.is_ok(), "batch of {total} bytes exceeds u32::MAX");
    header.set_batch_len(batch_len.unwrap_or(u32::MAX));
    header.set_crc(0);
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(&header.0);
    out.put_slice(payload);
    if let Some(copied) = out.get_mut(HEADER_LEN..) {
        edit(copied);
    }
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
    seal(header, kafka_batch, |_| {})
}
