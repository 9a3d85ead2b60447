//! The 61-byte header of a Kafka RecordBatch v2, by named field.

use super::{at, BATCH_OVERHEAD, CODEC_MASK, CONTROL, KAFKA_CRC_START, LOG_APPEND_TIME};
use crate::batch::Compression;

/// The header fields of a Kafka RecordBatch v2 (all big-endian on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after this field (the whole batch is `batch_length + 12`).
    pub batch_length: i32,
    /// The leader epoch the batch was written in.
    pub partition_leader_epoch: i32,
    /// 2 for RecordBatch v2.
    pub magic: i8,
    /// CRC-32C of the bytes from `attributes` to the end.
    pub crc: u32,
    /// Codec (bits 0-2), timestamp type (3), transactional (4), control (5).
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when none.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record.
    pub base_sequence: i32,
    /// Records in the batch.
    pub record_count: i32,
}

fn be<const N: usize>(b: &[u8], pos: usize) -> [u8; N] {
    b.get(pos..pos + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

impl RecordBatchHeader {
    /// Reads the header at the start of `batch`; `None` when fewer than
    /// [`BATCH_OVERHEAD`] bytes are given. Nothing is checked.
    pub fn read(batch: &[u8]) -> Option<Self> {
        if batch.len() < BATCH_OVERHEAD {
            return None;
        }
        Some(RecordBatchHeader {
            base_offset: i64::from_be_bytes(be(batch, 0)),
            batch_length: i32::from_be_bytes(be(batch, at::BATCH_LENGTH)),
            partition_leader_epoch: i32::from_be_bytes(be(batch, at::LEADER_EPOCH)),
            magic: i8::from_be_bytes(be(batch, at::MAGIC)),
            crc: u32::from_be_bytes(be(batch, at::CRC)),
            attributes: i16::from_be_bytes(be(batch, at::ATTRIBUTES)),
            last_offset_delta: i32::from_be_bytes(be(batch, at::LAST_OFFSET_DELTA)),
            base_timestamp: i64::from_be_bytes(be(batch, at::BASE_TIMESTAMP)),
            max_timestamp: i64::from_be_bytes(be(batch, at::MAX_TIMESTAMP)),
            producer_id: i64::from_be_bytes(be(batch, at::PRODUCER_ID)),
            producer_epoch: i16::from_be_bytes(be(batch, at::PRODUCER_EPOCH)),
            base_sequence: i32::from_be_bytes(be(batch, at::BASE_SEQUENCE)),
            record_count: i32::from_be_bytes(be(batch, at::RECORD_COUNT)),
        })
    }

    /// Bytes of the whole batch (`batch_length + 12`), when that is at least a header.
    pub fn total_len(&self) -> Option<usize> {
        usize::try_from(self.batch_length)
            .ok()
            .and_then(|l| l.checked_add(super::LOG_OVERHEAD))
            .filter(|&t| t >= BATCH_OVERHEAD)
    }

    /// The codec of the records (may be an undefined one, 5-7).
    pub fn compression(&self) -> Compression {
        Compression((self.attributes & CODEC_MASK) as u8)
    }

    /// A control batch (transaction marker), which consumers skip.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// Record timestamps are the broker's append time (`max_timestamp`).
    pub fn log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME != 0
    }

    /// The offset after the batch's last record (saturating).
    pub fn next_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
            .saturating_add(1)
    }
}

/// The Kafka CRC of one whole batch: CRC-32C of the bytes from `attributes` to the end.
pub fn kafka_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(KAFKA_CRC_START..).unwrap_or_default())
}
