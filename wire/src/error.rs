//! Error type of the wire codecs.

use crate::batch::{Compression, PayloadFormat};

/// Everything that can go wrong while decoding (or checking) wire data.
///
/// Every variant carries enough context to log a useful message without the
/// offending bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than what is needed to decode it.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// `batch_len` is smaller than the fixed header.
    #[error("bad batch length {batch_len} (minimum {min})")]
    BadLength {
        /// The `batch_len` field.
        batch_len: u32,
        /// The smallest valid length.
        min: usize,
    },
    /// `batch_len` exceeds [`VerifyLimits::max_batch_len`](crate::batch::VerifyLimits).
    #[error("batch of {batch_len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The `batch_len` field.
        batch_len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The stored CRC does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over the batch bytes.
        computed: u32,
    },
    /// `format_version` is not one this crate understands.
    #[error("unsupported batch format version {0}")]
    UnsupportedVersion(u8),
    /// `payload_format` is not a known [`PayloadFormat`].
    #[error("unknown payload format {0}")]
    UnknownPayloadFormat(u8),
    /// `compression` is not a known [`Compression`].
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    /// The compression is known but not allowed for this payload format
    /// (native payloads are never compressed).
    #[error("compression {compression:?} is not supported for {format:?} payloads")]
    UnsupportedCompression {
        /// The payload format.
        format: PayloadFormat,
        /// The compression found in the header.
        compression: Compression,
    },
    /// `record_count` is zero, negative, or inconsistent with `last_offset_delta`.
    #[error("bad record count {record_count} (last_offset_delta {last_offset_delta})")]
    BadRecordCount {
        /// The `record_count` field.
        record_count: i32,
        /// The `last_offset_delta` field.
        last_offset_delta: i32,
    },
    /// `last_offset_delta` is negative or `i32::MAX`.
    #[error("bad last offset delta {0}")]
    BadOffsetDelta(i32),
    /// A reserved header field (`flags`, `reserved`, `reserved2`) is not zero.
    #[error("reserved header field `{field}` is {value}, must be 0")]
    ReservedNonZero {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// `record_count` exceeds [`VerifyLimits::max_records`](crate::batch::VerifyLimits).
    #[error("{record_count} records exceed the limit of {max}")]
    TooManyRecords {
        /// The `record_count` field.
        record_count: i32,
        /// The configured limit.
        max: usize,
    },
    /// The native payload is not a valid flatbuffers `RecordBatch`.
    #[error("invalid payload: {0}")]
    InvalidPayload(#[from] flatbuffers::InvalidFlatbuffer),
    /// The native payload holds a different number of records than the header says.
    #[error("header says {header} records, payload holds {payload}")]
    RecordCountMismatch {
        /// The `record_count` field.
        header: i32,
        /// Records in the payload.
        payload: usize,
    },
    /// A record's `offset_delta` is not strictly increasing, or the last one
    /// differs from the header's `last_offset_delta`.
    #[error("record {index} has bad offset delta {offset_delta} (last_offset_delta {last_offset_delta})")]
    BadRecordOffset {
        /// Index of the record in the batch.
        index: usize,
        /// Its `offset_delta`.
        offset_delta: u32,
        /// The header's `last_offset_delta`.
        last_offset_delta: i32,
    },
    /// The operation needs a different payload format (e.g. iterating the
    /// records of a Kafka-wrapped batch).
    #[error("operation needs a {expected:?} payload, batch holds {found:?}")]
    WrongPayloadFormat {
        /// The format the operation needs.
        expected: PayloadFormat,
        /// The batch's format.
        found: PayloadFormat,
    },

    /// A native frame's `frame_len` is smaller than the `header_len` field
    /// that must follow it.
    #[error("bad frame length {frame_len} (minimum 4)")]
    BadFrameLength {
        /// The `frame_len` field.
        frame_len: u32,
    },
    /// A native frame (`4 + frame_len` bytes) exceeds
    /// [`FrameLimits::max_frame_bytes`](crate::native::FrameLimits).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Total frame size, `4 + frame_len` (or, when encoding, the size
        /// that would not fit the `u32` length field).
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// `header_len` exceeds [`FrameLimits::max_header_bytes`](crate::native::FrameLimits).
    #[error("frame header of {len} bytes exceeds the limit of {max}")]
    HeaderTooLarge {
        /// The `header_len` field.
        len: u32,
        /// The configured limit.
        max: usize,
    },
    /// `header_len` does not fit in the frame.
    #[error("frame header of {header_len} bytes does not fit in frame_len {frame_len}")]
    HeaderOutOfBounds {
        /// The `header_len` field.
        header_len: u32,
        /// The `frame_len` field.
        frame_len: usize,
    },
    /// The frame header lacks the `"TLG1"` file identifier.
    #[error("frame header lacks the TLG1 identifier")]
    BadIdentifier,
    /// The frame header is not a valid flatbuffers `Message`.
    #[error("invalid frame header: {0}")]
    InvalidHeader(flatbuffers::InvalidFlatbuffer),
    /// The frame header's body is absent or of a kind this crate does not
    /// know. Carries the correlation id so that the server can answer.
    #[error("unknown message type {message_type} (correlation id {correlation_id})")]
    UnknownMessageType {
        /// The `Body` union discriminant.
        message_type: u8,
        /// The header's correlation id.
        correlation_id: u32,
    },
    /// A `BodyRef` points outside the frame body.
    #[error("body ref [{offset}, +{len}) out of bounds of a {body_len}-byte body")]
    BodyRefOutOfBounds {
        /// The `BodyRef`'s offset.
        offset: u32,
        /// The `BodyRef`'s length.
        len: u32,
        /// Length of the frame body.
        body_len: usize,
    },
    /// A produce partition has no `BodyRef` to its batches.
    #[error("produce partition {index} has no batches")]
    MissingBody {
        /// Index of the partition in the request.
        index: usize,
    },
}
