//! Kafka RecordBatch v2 (magic 2): the one home of the format in the workspace.
//!
//! The broker's hot path, here: validating the `records` of a Produce request, wrapping an
//! accepted batch for the log, locating the Kafka bytes of a stored batch for Fetch, and
//! converting native batches to Kafka batches. For clients: the header by named field
//! ([`RecordBatchHeader`], [`at`]), zigzag varints ([`varint`]), the record decoder
//! ([`decode_records`]), the batch encoder ([`RecordBatchBuilder`]) and, with the feature
//! `codecs`, Kafka's compression codecs ([`codec`]) and [`inflate`] (the broker never links
//! them: it stores compressed batches verbatim).
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 (=2)
//! 17 crc u32 (CRC-32C of [21..]) | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32 | 57 recordCount i32 | 61 records...        (all big-endian)
//!
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//!         keyLength varint (-1: null) | key | valueLength varint | value
//!         headerCount varint | { keyLength varint | key | valueLength varint | value }*
//! ```
//!
//! Everything here works on borrowed bytes and allocates nothing but the
//! output buffer. Kafka batches are stored verbatim after a 64-byte Tidelog
//! header ([`PayloadFormat::Kafka`]); only `baseOffset` (stamped at append,
//! outside both CRCs) and `partitionLeaderEpoch` (set to 0 by [`wrap_for_log`],
//! outside the Kafka CRC) differ from what the producer sent.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    chained_crc, peek_header, BatchHeader, BatchView, Compression, PayloadFormat,
    FLAG_KAFKA_CRC_CHAIN, FORMAT_VERSION, HEADER_LEN, KAFKA_CHAIN_END,
};
pub use crate::kafka::code::{
    CORRUPT_MESSAGE, INVALID_RECORD, INVALID_TIMESTAMP, MESSAGE_TOO_LARGE,
    UNSUPPORTED_COMPRESSION_TYPE,
};
use crate::WireError;

#[cfg(feature = "codecs")]
pub mod codec;
mod decode;
mod encode;
mod header;
pub mod varint;

pub use decode::{decode_records, KafkaRecord, RecordsError};
#[cfg(feature = "codecs")]
pub use decode::{inflate, recompress, InflateError};
pub use encode::RecordBatchBuilder;
pub use header::{kafka_crc, RecordBatchHeader};
use varint::{put_varint, varint_len};

#[cfg(test)]
mod tests;

/// Bytes of a Kafka RecordBatch v2 before its first record
/// (`RECORD_BATCH_OVERHEAD` in Kafka).
pub const BATCH_OVERHEAD: usize = 61;
/// Bytes of a batch not counted by `batchLength` (`baseOffset` and `batchLength` itself).
pub const LOG_OVERHEAD: usize = 12;
/// The only magic byte accepted.
pub const MAGIC_V2: i8 = 2;
/// First byte covered by the Kafka CRC (`attributes`).
pub const KAFKA_CRC_START: usize = 21;
/// First Produce version allowed to carry zstd batches (KIP-110).
pub const ZSTD_MIN_PRODUCE_VERSION: i16 = 7;
/// The fewest bytes an uncompressed record takes (seven one-byte varints).
pub const RECORD_MIN_BYTES: usize = 7;
/// Most records one produced batch may claim, compressed or not: a batch claims one offset
/// per record, and a tiny compressed batch claiming 2^31 made the partition roll a segment
/// (and keep a file open) every two batches. Real producers stay far below (Kafka's own
/// batches hold up to `batch.size`, 16 KiB to 1 MiB of records).
pub const BATCH_RECORDS_MAX: usize = 1 << 20;
/// Largest ratio deflate (gzip) reaches (about 1032:1), rounded up.
const DEFLATE_RATIO_MAX: usize = 1040;
/// Largest ratio snappy reaches (about 21:1 on runs), rounded up.
const SNAPPY_RATIO_MAX: usize = 32;
/// Largest ratio LZ4 reaches (about 255:1), rounded up.
const LZ4_RATIO_MAX: usize = 256;

/// Byte positions of the Kafka batch header fields (all big-endian).
pub mod at {
    /// `baseOffset` i64.
    pub const BASE_OFFSET: usize = 0;
    /// `batchLength` i32: bytes after this field.
    pub const BATCH_LENGTH: usize = 8;
    /// `partitionLeaderEpoch` i32.
    pub const LEADER_EPOCH: usize = 12;
    /// `magic` i8.
    pub const MAGIC: usize = 16;
    /// `crc` u32: CRC-32C of `[ATTRIBUTES..]`.
    pub const CRC: usize = 17;
    /// `attributes` i16.
    pub const ATTRIBUTES: usize = 21;
    /// `lastOffsetDelta` i32.
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// `baseTimestamp` i64.
    pub const BASE_TIMESTAMP: usize = 27;
    /// `maxTimestamp` i64.
    pub const MAX_TIMESTAMP: usize = 35;
    /// `producerId` i64.
    pub const PRODUCER_ID: usize = 43;
    /// `producerEpoch` i16.
    pub const PRODUCER_EPOCH: usize = 51;
    /// `baseSequence` i32.
    pub const BASE_SEQUENCE: usize = 53;
    /// `recordCount` i32.
    pub const RECORD_COUNT: usize = 57;
}

/// `attributes` bits 0-2: the compression codec.
pub const CODEC_MASK: i16 = 0x07;
/// `attributes` bit 3: timestamps are the broker's append time.
pub const LOG_APPEND_TIME: i16 = 1 << 3;
/// `attributes` bit 4: part of a transaction.
pub const TRANSACTIONAL: i16 = 1 << 4;
/// `attributes` bit 5: a control batch (transaction marker).
pub const CONTROL: i16 = 1 << 5;

/// Why a Produce partition's `records` were refused. [`kafka_code`](Self::kafka_code)
/// gives the error code to answer with; `Display` gives the error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaBatchError {
    /// Fewer bytes than one batch header (including no bytes at all).
    #[error("records must hold exactly one record batch: {len} bytes is less than a batch header")]
    NoBatch {
        /// Bytes present.
        len: usize,
    },
    /// Not a RecordBatch v2.
    #[error(
        "produce requests are only allowed to contain record batches with magic version 2, got {0}"
    )]
    BadMagic(i8),
    /// `batchLength + 12` is not the number of bytes present: a truncated
    /// batch, or more than one batch.
    #[error("records must hold exactly one record batch: batchLength {batch_length} + 12 != {len} bytes")]
    NotOneBatch {
        /// The `batchLength` field.
        batch_length: i32,
        /// Bytes present.
        len: usize,
    },
    /// The batch exceeds the topic's maximum batch size.
    #[error("record batch of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Bytes of the batch.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CRC-32C does not match the bytes from `attributes` to the end.
    #[error("record batch crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The `crc` field.
        stored: u32,
        /// CRC computed over the batch.
        computed: u32,
    },
    /// `recordCount` is not positive or disagrees with `lastOffsetDelta`.
    #[error("inconsistent batch offset range: recordCount {record_count}, lastOffsetDelta {last_offset_delta}")]
    InconsistentOffsets {
        /// The `recordCount` field.
        record_count: i32,
        /// The `lastOffsetDelta` field.
        last_offset_delta: i32,
    },
    /// Clients may not write control batches.
    #[error("clients are not allowed to write control records")]
    ControlBatch,
    /// Transactions are not supported.
    #[error("transactional record batches are not supported")]
    Transactional,
    /// An idempotent batch (`producerId >= 0`) without a sequence number.
    #[error("producer id {producer_id} with invalid base sequence {base_sequence}")]
    MissingSequence {
        /// The `producerId` field.
        producer_id: i64,
        /// The `baseSequence` field.
        base_sequence: i32,
    },
    /// Codec id 5-7: no such compression.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// zstd before Produce v7.
    #[error("zstd compression requires produce version 7 or later, got {0}")]
    ZstdNeedsV7(i16),
    /// A CreateTime timestamp outside the topic's `message.timestamp.before.max.ms` /
    /// `after.max.ms` window.
    #[error("timestamp {timestamp} is outside the topic's window [{earliest}, {latest}]")]
    TimestampOutOfRange {
        /// The batch's offending timestamp.
        timestamp: i64,
        /// The earliest accepted.
        earliest: i64,
        /// The latest accepted.
        latest: i64,
    },
    /// The producer set the LogAppendTime timestamp type.
    #[error("producers may not set the LogAppendTime timestamp type")]
    LogAppendTime,
}

impl KafkaBatchError {
    /// The Kafka error code to put in the partition's Produce response.
    pub fn kafka_code(&self) -> i16 {
        match self {
            Self::NoBatch { .. }
            | Self::BadMagic(_)
            | Self::NotOneBatch { .. }
            | Self::InconsistentOffsets { .. }
            | Self::ControlBatch
            | Self::Transactional
            | Self::MissingSequence { .. } => INVALID_RECORD,
            Self::TooLarge { .. } => MESSAGE_TOO_LARGE,
            Self::CrcMismatch { .. } => CORRUPT_MESSAGE,
            Self::UnknownCompression(_) | Self::ZstdNeedsV7(_) => UNSUPPORTED_COMPRESSION_TYPE,
            Self::LogAppendTime | Self::TimestampOutOfRange { .. } => INVALID_TIMESTAMP,
        }
    }
}

/// The header fields of a validated Kafka batch that the Tidelog header repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaBatchInfo {
    /// Number of records (at least 1).
    pub record_count: i32,
    /// `recordCount - 1`.
    pub last_offset_delta: i32,
    /// `baseTimestamp`: the first record's timestamp, ms since the epoch.
    pub base_timestamp: i64,
    /// `maxTimestamp`, as sent by the producer.
    pub max_timestamp: i64,
    /// `producerId`; -1 when the producer is not idempotent.
    pub producer_id: i64,
    /// `producerEpoch`.
    pub producer_epoch: i16,
    /// `baseSequence`; at least 0 when `producer_id >= 0`.
    pub base_sequence: i32,
    /// Codec of the records.
    pub compression: Compression,
}

/// Checks one partition's `records` of a Produce v3+ request against the
/// broker validation checklist (docs/KAFKA.md §2) and returns its header fields.
///
/// In order: at least a batch header, magic 2, exactly one batch
/// (`batchLength + 12 == records.len()`), size `<= max_batch_bytes`, CRC-32C,
/// `recordCount > 0` and `lastOffsetDelta + 1 == recordCount`, not a control
/// batch, not transactional, `producerId >= 0` ⇒ `baseSequence >= 0`, codec
/// 0..=4 with zstd only from Produce v7, and no LogAppendTime bit.
///
/// Records are not decompressed or parsed (optional in Kafka's checklist).
///
/// # Errors
/// The first failed check, as a [`KafkaBatchError`].
pub fn validate_produce_batch(
    records: &[u8],
    produce_version: i16,
    max_batch_bytes: usize,
) -> Result<KafkaBatchInfo, KafkaBatchError> {
    let len = records.len();
    let Some(h) = RecordBatchHeader::read(records) else {
        return Err(KafkaBatchError::NoBatch { len });
    };
    let magic = h.magic;
    if magic != MAGIC_V2 {
        return Err(KafkaBatchError::BadMagic(magic));
    }
    let batch_length = h.batch_length;
    let framed = usize::try_from(batch_length)
        .ok()
        .and_then(|l| l.checked_add(LOG_OVERHEAD));
    if framed != Some(len) {
        return Err(KafkaBatchError::NotOneBatch { batch_length, len });
    }
    if len > max_batch_bytes {
        return Err(KafkaBatchError::TooLarge {
            len,
            max: max_batch_bytes,
        });
    }
    let stored = h.crc;
    let computed = kafka_crc(records);
    if stored != computed {
        return Err(KafkaBatchError::CrcMismatch { stored, computed });
    }
    let record_count = h.record_count;
    let last_offset_delta = h.last_offset_delta;
    if record_count <= 0 || i64::from(last_offset_delta) + 1 != i64::from(record_count) {
        return Err(KafkaBatchError::InconsistentOffsets {
            record_count,
            last_offset_delta,
        });
    }
    let attributes = h.attributes;
    if attributes & CONTROL != 0 {
        return Err(KafkaBatchError::ControlBatch);
    }
    if attributes & TRANSACTIONAL != 0 {
        return Err(KafkaBatchError::Transactional);
    }
    let producer_id = h.producer_id;
    let base_sequence = h.base_sequence;
    if producer_id >= 0 && base_sequence < 0 {
        return Err(KafkaBatchError::MissingSequence {
            producer_id,
            base_sequence,
        });
    }
    let compression = h.compression();
    let codec = compression.0;
    if compression.variant_name().is_none() {
        return Err(KafkaBatchError::UnknownCompression(codec));
    }
    // An uncompressed record takes at least 7 bytes (length, attributes, timestamp delta,
    // offset delta, key length, value length, header count: one varint byte each), so the
    // count cannot exceed what the bytes hold: a tiny batch must not claim 2^31 offsets.
    // A compressed batch's records are not inflated here, so its count is bounded by what
    // the codec could have squeezed into these bytes (zstd: by the absolute cap alone).
    let body = records.len().saturating_sub(BATCH_OVERHEAD);
    let fits = match compression {
        Compression::None => body / RECORD_MIN_BYTES,
        Compression::Gzip => body.saturating_mul(DEFLATE_RATIO_MAX) / RECORD_MIN_BYTES,
        Compression::Snappy => body.saturating_mul(SNAPPY_RATIO_MAX) / RECORD_MIN_BYTES,
        Compression::Lz4 => body.saturating_mul(LZ4_RATIO_MAX) / RECORD_MIN_BYTES,
        _ => usize::MAX,
    }
    .min(BATCH_RECORDS_MAX);
    if usize::try_from(record_count).map_or(true, |n| n > fits) {
        return Err(KafkaBatchError::InconsistentOffsets {
            record_count,
            last_offset_delta,
        });
    }
    if compression == Compression::Zstd && produce_version < ZSTD_MIN_PRODUCE_VERSION {
        return Err(KafkaBatchError::ZstdNeedsV7(produce_version));
    }
    if attributes & LOG_APPEND_TIME != 0 {
        return Err(KafkaBatchError::LogAppendTime);
    }
    Ok(KafkaBatchInfo {
        record_count,
        last_offset_delta,
        base_timestamp: h.base_timestamp,
        max_timestamp: h.max_timestamp,
        producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence,
        compression,
    })
}

/// Puts a Tidelog header ([`PayloadFormat::Kafka`], `base_offset` 0, CRC filled in) in
/// front of `records`, ready for the partition log's append, which stamps both base offsets,
/// **without copying the records**: the result is a small head (the 64-byte header and the
/// Kafka batch's first 21 bytes, up to its CRC) and the rest of `records` as a shared slice.
///
/// The head's `partitionLeaderEpoch` is set to 0 (outside the Kafka CRC); a replicated
/// partition's log stamps its leader epoch there at append
/// ([`crate::batch::stamp_kafka_leader_epoch`]). Nothing else of the Kafka batch changes. The CRCs are chained ([`crate::batch::FLAG_KAFKA_CRC_CHAIN`]): the Tidelog CRC
/// covers the head, whose Kafka CRC (checked by validation) covers the tail, so wrapping
/// costs no CRC pass over the records.
///
/// Only [`seal_produce_batch`] calls this, with records and info it just validated: a
/// `SealedBatch` is appended without another CRC check, so it must never be made from
/// unchecked bytes.
fn wrap_for_log(records: &Bytes, info: &KafkaBatchInfo) -> SealedBatch {
    let total = HEADER_LEN.saturating_add(records.len());
    let header = BatchHeader::new(
        0,
        0,
        u32::try_from(total).unwrap_or(u32::MAX),
        FORMAT_VERSION,
        PayloadFormat::Kafka,
        info.compression,
        FLAG_KAFKA_CRC_CHAIN,
        info.record_count,
        info.last_offset_delta,
        info.producer_epoch,
        0,
        info.base_timestamp,
        info.max_timestamp,
        info.producer_id,
        info.base_sequence,
        0,
    );
    let split = (KAFKA_CHAIN_END - HEADER_LEN).min(records.len());
    let mut head = BytesMut::with_capacity(KAFKA_CHAIN_END);
    head.put_slice(&header.0);
    head.put_slice(&records[..split]);
    // The leader epoch is outside the Kafka CRC: 0 unless the log stamps its own.
    let epoch = HEADER_LEN + at::LEADER_EPOCH;
    if let Some(dst) = head.get_mut(epoch..epoch + 4) {
        dst.copy_from_slice(&0i32.to_be_bytes());
    }
    let crc = chained_crc(&head);
    head[8..12].copy_from_slice(&crc.to_le_bytes());
    SealedBatch {
        head,
        tail: records.slice(split..),
    }
}

/// Validates one partition's `records` of a Produce request ([`validate_produce_batch`])
/// and wraps them for the log ([`wrap_for_log`]): the only way to make a [`SealedBatch`].
/// One CRC pass over the records (validation's), no copy of them.
///
/// # Errors
/// The first failed check of [`validate_produce_batch`].
pub fn seal_produce_batch(
    records: &Bytes,
    produce_version: i16,
    max_batch_bytes: usize,
) -> Result<(KafkaBatchInfo, SealedBatch), KafkaBatchError> {
    seal_produce_batch_with(
        records,
        produce_version,
        max_batch_bytes,
        &TimestampPolicy::default(),
    )
}

/// A topic's rules for produced timestamps (`message.timestamp.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampPolicy {
    /// `message.timestamp.type=LogAppendTime`: the batch is stamped with this time (ms since
    /// the epoch): the LogAppendTime bit set, `maxTimestamp` the append time, CRC redone.
    pub log_append_time: Option<i64>,
    /// CreateTime batches must lie within `[now - before, now + after]` (ms), checked on
    /// `baseTimestamp` (the first record's) and `maxTimestamp`: `(now, before, after)`.
    pub create_time_bounds: Option<(i64, i64, i64)>,
}

/// [`seal_produce_batch`] under a topic's [`TimestampPolicy`]. A LogAppendTime stamp costs a
/// copy of the batch and a second CRC pass (Kafka rewrites the batch the same way); a
/// CreateTime batch outside the bounds is refused with INVALID_TIMESTAMP.
///
/// # Errors
/// As [`seal_produce_batch`]; [`KafkaBatchError::TimestampOutOfRange`].
pub fn seal_produce_batch_with(
    records: &Bytes,
    produce_version: i16,
    max_batch_bytes: usize,
    policy: &TimestampPolicy,
) -> Result<(KafkaBatchInfo, SealedBatch), KafkaBatchError> {
    let info = validate_produce_batch(records, produce_version, max_batch_bytes)?;
    if let Some(now) = policy.log_append_time {
        let mut stamped = BytesMut::from(&records[..]);
        let attributes = info_attributes(&stamped) | LOG_APPEND_TIME;
        stamped[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        stamped[at::MAX_TIMESTAMP..at::MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        seal_kafka_crc(&mut stamped);
        let info = KafkaBatchInfo {
            max_timestamp: now,
            ..info
        };
        return Ok((info, wrap_for_log(&stamped.freeze(), &info)));
    }
    if let Some((now, before, after)) = policy.create_time_bounds {
        let earliest = now.saturating_sub(before);
        let latest = now.saturating_add(after);
        for timestamp in [info.base_timestamp, info.max_timestamp] {
            if timestamp < earliest || timestamp > latest {
                return Err(KafkaBatchError::TimestampOutOfRange {
                    timestamp,
                    earliest,
                    latest,
                });
            }
        }
    }
    Ok((info, wrap_for_log(records, &info)))
}

/// The `attributes` of a batch at least [`BATCH_OVERHEAD`] long.
fn info_attributes(batch: &[u8]) -> i16 {
    i16::from_be_bytes([batch[at::ATTRIBUTES], batch[at::ATTRIBUTES + 1]])
}

/// A stored-format batch whose CRCs this crate computed over input it had checked: made
/// only by [`seal_produce_batch`], for a batch [`validate_produce_batch`] accepted. A log may
/// append it without checking its CRCs again (its Kafka CRC was verified by validation, the
/// Tidelog CRC was just computed), which is what makes a Kafka produce one CRC pass over
/// its records. It is two pieces: the head (everything the broker writes: both base
/// offsets, the header, the leader epoch, all that the Tidelog CRC covers) and the tail,
/// the producer's bytes from the Kafka `attributes` on, shared with the request.
#[derive(Debug)]
pub struct SealedBatch {
    head: BytesMut,
    tail: Bytes,
}

impl SealedBatch {
    /// Bytes of the whole batch.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Never true: a sealed batch holds at least a header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The head (header and the Kafka fields the log stamps) and the tail (shared).
    pub fn into_parts(self) -> (BytesMut, Bytes) {
        (self.head, self.tail)
    }

    /// The whole batch in one buffer (a copy of the tail), e.g. to cross threads or in tests.
    pub fn into_bytes(self) -> BytesMut {
        let mut whole = self.head;
        whole.extend_from_slice(&self.tail);
        whole
    }
}

/// Byte range of the Kafka RecordBatch inside a stored Kafka-format batch
/// (`HEADER_LEN..batch_len`), e.g. to slice a fetched chunk without copying.
///
/// Checks the header ([`peek_header`]) but not the CRC: batches read back from
/// the log were CRC-checked by the log.
///
/// # Errors
/// Header errors, [`WireError::Truncated`] when `stored_batch` is shorter than
/// `batch_len`, [`WireError::WrongPayloadFormat`] for a native batch.
pub fn kafka_payload_range(stored_batch: &[u8]) -> Result<Range<usize>, WireError> {
    let header = peek_header(stored_batch)?;
    if header.payload_format() != PayloadFormat::Kafka {
        return Err(WireError::WrongPayloadFormat {
            expected: PayloadFormat::Kafka,
            found: header.payload_format(),
        });
    }
    let batch_len = header.batch_len() as usize;
    if stored_batch.len() < batch_len {
        return Err(WireError::Truncated {
            need: batch_len,
            have: stored_batch.len(),
        });
    }
    Ok(HEADER_LEN..batch_len)
}

/// The Kafka RecordBatch bytes of the stored Kafka-format batch at the start
/// of `stored_batch`: exactly what a Fetch response carries for it.
///
/// # Errors
/// As [`kafka_payload_range`].
pub fn kafka_payload(stored_batch: &[u8]) -> Result<&[u8], WireError> {
    let range = kafka_payload_range(stored_batch)?;
    stored_batch.get(range).ok_or(WireError::Truncated {
        need: HEADER_LEN,
        have: stored_batch.len(),
    })
}

/// Length prefix plus bytes of a Kafka `bytes`/`string` field.
fn field_len(bytes_len: usize) -> usize {
    varint_len(bytes_len as i64) + bytes_len
}

/// Converts a stored native batch into an uncompressed Kafka RecordBatch v2
/// appended to `out`: `baseOffset` is the stored base offset, leader epoch 0,
/// CreateTime, the producer fields and timestamps of the Tidelog header, and
/// every record with its key (null stays null), value and headers.
///
/// Native batches cannot express a null value or a null header value; both
/// become empty. Native batches are never compressed ([`crate::batch::verify`]
/// refuses compressed ones), so the output is always uncompressed.
///
/// # Errors
/// [`WireError::WrongPayloadFormat`] for a Kafka-format batch (serve its bytes
/// with [`kafka_payload`] instead); [`WireError::TooLarge`] when the Kafka
/// batch would exceed `i32::MAX` bytes, or a field `i32::MAX` bytes. On error
/// `out` is left as it was.
pub fn native_to_kafka(view: &BatchView<'_>, out: &mut BytesMut) -> Result<(), WireError> {
    let records = view.records()?;
    let header = view.header();
    let base_offset = view.base_offset();
    let base_timestamp = header.first_timestamp();
    let too_large = |len: usize| WireError::TooLarge {
        batch_len: len,
        max: i32::MAX as usize,
    };

    // First pass: sizes, so the output is reserved once and every length is
    // known before it is written.
    let mut total = BATCH_OVERHEAD;
    for r in records.clone() {
        let body = record_body_len(&r, base_offset, base_timestamp);
        if body > i32::MAX as usize {
            return Err(too_large(body));
        }
        total = total.saturating_add(varint_len(body as i64) + body);
    }
    if total > i32::MAX as usize {
        return Err(too_large(total));
    }
    out.reserve(total);
    let start = out.len();
    out.put_i64(base_offset);
    out.put_i32((total - LOG_OVERHEAD) as i32);
    out.put_i32(0); // partitionLeaderEpoch
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, filled in below
    out.put_i16(0); // attributes: no codec, CreateTime, not transactional
    out.put_i32(header.last_offset_delta());
    out.put_i64(base_timestamp);
    out.put_i64(header.max_timestamp());
    out.put_i64(header.producer_id());
    out.put_i16(header.producer_epoch());
    out.put_i32(header.base_sequence());
    out.put_i32(header.record_count());
    for r in records {
        let body = record_body_len(&r, base_offset, base_timestamp);
        put_varint(out, body as i64);
        out.put_i8(0); // record attributes (unused)
        put_varint(out, r.timestamp.wrapping_sub(base_timestamp));
        put_varint(out, r.offset.wrapping_sub(base_offset));
        match r.key {
            Some(key) => {
                put_varint(out, key.len() as i64);
                out.put_slice(key);
            }
            None => put_varint(out, -1),
        }
        put_varint(out, r.value.len() as i64);
        out.put_slice(r.value);
        put_varint(out, r.headers.len() as i64);
        for (key, value) in r.headers.iter() {
            put_varint(out, key.len() as i64);
            out.put_slice(key.as_bytes());
            put_varint(out, value.len() as i64);
            out.put_slice(value);
        }
    }
    debug_assert_eq!(out.len() - start, total);
    if let Some(batch) = out.get_mut(start..) {
        seal_kafka_crc(batch);
    }
    Ok(())
}

/// Writes the CRC-32C of one whole Kafka RecordBatch v2 (`attributes` to the end) into its
/// `crc` field. A slice shorter than the batch header is left as it is.
pub fn seal_kafka_crc(batch: &mut [u8]) {
    if batch.len() < BATCH_OVERHEAD {
        return;
    }
    let crc = crc32c::crc32c(&batch[KAFKA_CRC_START..]);
    batch[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Bytes of a record after its length prefix.
fn record_body_len(r: &crate::batch::RecordView<'_>, base_offset: i64, base_ts: i64) -> usize {
    let mut n = 1 // attributes
        + varint_len(r.timestamp.wrapping_sub(base_ts))
        + varint_len(r.offset.wrapping_sub(base_offset));
    n += match r.key {
        Some(key) => field_len(key.len()),
        None => varint_len(-1),
    };
    n += field_len(r.value.len());
    n += varint_len(r.headers.len() as i64);
    for (key, value) in r.headers.iter() {
        n += field_len(key.len()) + field_len(value.len());
    }
    n
}
