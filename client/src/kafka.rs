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
//! decoded for now (`attributes & 7 == 0`).

use std::ops::Range;

use tidelog_wire::batch::Compression;

use crate::error::{ClientError, Result};

/// Bytes before the first record.
pub use tidelog_wire::kafka_records::BATCH_OVERHEAD as BATCH_HEADER_LEN;
use tidelog_wire::kafka_records::KAFKA_CRC_START as CRC_START;
/// The only magic byte decoded.
pub use tidelog_wire::kafka_records::MAGIC_V2;
/// `attributes` bit 3: timestamps are the broker's append time (`maxTimestamp`).
const LOG_APPEND_TIME: i16 = 1 << 3;

/// One record of a Kafka batch; `key` and `value` are ranges of the payload passed to
/// [`decode_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Absolute offset (`base_offset + offsetDelta`).
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// `None` for a null key.
    pub key: Option<Range<usize>>,
    /// The value; an empty range for a null value.
    pub value: Range<usize>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ClientError::KafkaBatch("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ClientError::KafkaBatch("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        s.try_into()
            .map_err(|_| ClientError::KafkaBatch("truncated"))
    }

    fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A zigzag varint of at most 10 bytes.
    fn varlong(&mut self) -> Result<i64> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.array::<1>()?[0];
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(ClientError::KafkaBatch("varint longer than 10 bytes"))
    }

    fn varint(&mut self) -> Result<i32> {
        i32::try_from(self.varlong()?).map_err(|_| ClientError::KafkaBatch("varint overflows i32"))
    }

    /// A length-prefixed byte range (`-1`: null).
    fn bytes(&mut self) -> Result<Option<Range<usize>>> {
        let len = self.varint()?;
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(ClientError::KafkaBatch("negative length"))
            };
        }
        let start = self.pos;
        self.take(len as usize)?;
        Ok(Some(start..self.pos))
    }
}

/// Decodes every record of the Kafka RecordBatch v2 in `payload`, giving record `i` the offset
/// `base_offset + offsetDelta` (the Tidelog header's base offset is authoritative: the broker
/// stamps it, not the Kafka batch's own `baseOffset`).
///
/// # Errors
/// [`ClientError::UnsupportedCompression`] for compressed batches,
/// [`ClientError::KafkaBatch`] for a wrong magic, a CRC mismatch, truncation, bad varints or a
/// record count that disagrees with the records.
pub fn decode_records(payload: &[u8], base_offset: i64) -> Result<Vec<KafkaRecord>> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let _base_offset = r.i64()?;
    let batch_length = r.i32()?;
    let end = usize::try_from(batch_length)
        .ok()
        .and_then(|l| l.checked_add(12))
        .filter(|&e| e >= BATCH_HEADER_LEN && e <= payload.len())
        .ok_or(ClientError::KafkaBatch("bad batchLength"))?;
    r.buf = payload.get(..end).unwrap_or_default();
    let _leader_epoch = r.i32()?;
    if r.i8()? != MAGIC_V2 {
        return Err(ClientError::KafkaBatch("magic is not 2"));
    }
    let crc = r.u32()?;
    if crc32c::crc32c(r.buf.get(CRC_START..).unwrap_or_default()) != crc {
        return Err(ClientError::KafkaBatch("crc mismatch"));
    }
    let attributes = r.i16()?;
    let codec = (attributes & 7) as u8;
    if codec != 0 {
        return Err(ClientError::UnsupportedCompression(Compression(codec)));
    }
    let _last_offset_delta = r.i32()?;
    let base_timestamp = r.i64()?;
    let max_timestamp = r.i64()?;
    let _producer_id = r.i64()?;
    let _producer_epoch = r.i16()?;
    let _base_sequence = r.i32()?;
    let count = r.i32()?;
    let count =
        usize::try_from(count).map_err(|_| ClientError::KafkaBatch("negative record count"))?;
    // Each record takes at least 7 bytes; an absurd count cannot make us allocate.
    let mut records = Vec::with_capacity(count.min(end / 7 + 1));
    for _ in 0..count {
        let len = r.varint()?;
        let len =
            usize::try_from(len).map_err(|_| ClientError::KafkaBatch("negative record length"))?;
        let record_end = r
            .pos
            .checked_add(len)
            .filter(|&e| e <= end)
            .ok_or(ClientError::KafkaBatch("record overruns the batch"))?;
        let _attributes = r.i8()?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.bytes()?;
        let value = r.bytes()?;
        let headers = r.varint()?;
        for _ in 0..headers.max(0) {
            let _key = r.bytes()?;
            let _value = r.bytes()?;
        }
        if r.pos != record_end {
            return Err(ClientError::KafkaBatch(
                "record length disagrees with its fields",
            ));
        }
        let timestamp = if attributes & LOG_APPEND_TIME != 0 {
            max_timestamp
        } else {
            base_timestamp.wrapping_add(timestamp_delta)
        };
        let empty = r.pos..r.pos;
        records.push(KafkaRecord {
            offset: base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp,
            key,
            value: value.unwrap_or(empty),
        });
    }
    if r.pos != end {
        return Err(ClientError::KafkaBatch("bytes after the last record"));
    }
    Ok(records)
}

#[cfg(test)]
mod tests;
