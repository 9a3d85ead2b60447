//! Decoding the records of a Kafka RecordBatch v2 (a Kafka-format payload stored verbatim
//! after a Tidelog batch header).
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
//! Varints are zigzag-encoded (Protocol Buffers' `sint`). Only uncompressed batches are
//! decoded (`attributes & 7 == 0`); the format itself lives in `tidelog_wire::kafka_records`.

use tidelog_wire::kafka_records::RecordsError;

use crate::error::{ClientError, Result};

/// One record of a Kafka batch; `key` and `value` are ranges of the decoded payload.
pub use tidelog_wire::kafka_records::KafkaRecord;
/// Bytes before the first record.
pub use tidelog_wire::kafka_records::BATCH_OVERHEAD as BATCH_HEADER_LEN;
/// The only magic byte decoded.
pub use tidelog_wire::kafka_records::MAGIC_V2;
#[cfg(test)]
use tidelog_wire::{batch::Compression, kafka_records::LOG_APPEND_TIME};

/// Decodes every record of the Kafka RecordBatch v2 in `payload`, giving record `i` the offset
/// `base_offset + offsetDelta` (the Tidelog header's base offset is authoritative: the broker
/// stamps it, not the Kafka batch's own `baseOffset`). The decoder is the wire crate's
/// ([`tidelog_wire::kafka_records::decode_records`]); this maps its errors.
///
/// # Errors
/// [`ClientError::UnsupportedCompression`] for compressed batches,
/// [`ClientError::KafkaBatch`] for a wrong magic, a CRC mismatch, truncation, bad varints or a
/// record count that disagrees with the records.
pub fn decode_records(payload: &[u8], base_offset: i64) -> Result<Vec<KafkaRecord>> {
    tidelog_wire::kafka_records::decode_records(payload, base_offset).map_err(|e| match e {
        RecordsError::Malformed(why) => ClientError::KafkaBatch(why),
        RecordsError::Compressed(codec) => ClientError::UnsupportedCompression(codec),
        _ => ClientError::KafkaBatch("malformed batch"),
    })
}

#[cfg(test)]
mod tests;
