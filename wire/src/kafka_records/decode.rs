//! Decoding the records of a Kafka RecordBatch v2, for clients (the native client's
//! consumer reads Kafka-format batches stored by the broker; the load generator's Kafka
//! consumer reads fetched batches), and inflating a compressed batch (feature `codecs`).
//!
//! ```text
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//!         keyLength varint (-1: null) | key | valueLength varint | value
//!         headerCount varint | { keyLength varint | key | valueLength varint | value }*
//! ```
//!
//! Every length and count is checked against the bytes left before it is used: a batch that
//! lies costs an error, never an allocation or a panic.

use std::ops::Range;

use super::{BATCH_OVERHEAD, CODEC_MASK, KAFKA_CRC_START, LOG_APPEND_TIME, MAGIC_V2};
use crate::batch::Compression;

/// Why a batch's records do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The batch is malformed (truncated, wrong magic, CRC mismatch, bad varints, counts that
    /// disagree with the bytes); the text says which.
    #[error("malformed Kafka record batch: {0}")]
    Malformed(&'static str),
    /// The records are compressed with this codec; inflate the batch first.
    #[error("unsupported compression {0:?}")]
    Compressed(Compression),
}

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
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordsError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(RecordsError::Malformed("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(RecordsError::Malformed("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordsError> {
        let s = self.take(N)?;
        s.try_into()
            .map_err(|_| RecordsError::Malformed("truncated"))
    }

    fn i8(&mut self) -> Result<i8, RecordsError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, RecordsError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RecordsError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordsError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordsError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A zigzag varint of at most 10 bytes.
    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.array::<1>()?[0];
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(RecordsError::Malformed("varint longer than 10 bytes"))
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        i32::try_from(self.varlong()?).map_err(|_| RecordsError::Malformed("varint overflows i32"))
    }

    /// A length-prefixed byte range (`-1`: null).
    fn bytes(&mut self) -> Result<Option<Range<usize>>, RecordsError> {
        let len = self.varint()?;
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(RecordsError::Malformed("negative length"))
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
/// [`RecordsError::Compressed`] for compressed batches (inflate them first),
/// [`RecordsError::Malformed`] for a wrong magic, a CRC mismatch, truncation, bad varints or a
/// record count that disagrees with the records.
pub fn decode_records(payload: &[u8], base_offset: i64) -> Result<Vec<KafkaRecord>, RecordsError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let _base_offset = r.i64()?;
    let batch_length = r.i32()?;
    let end = usize::try_from(batch_length)
        .ok()
        .and_then(|l| l.checked_add(12))
        .filter(|&e| e >= BATCH_OVERHEAD && e <= payload.len())
        .ok_or(RecordsError::Malformed("bad batchLength"))?;
    r.buf = payload.get(..end).unwrap_or_default();
    let _leader_epoch = r.i32()?;
    if r.i8()? != MAGIC_V2 {
        return Err(RecordsError::Malformed("magic is not 2"));
    }
    let crc = r.u32()?;
    if crc32c::crc32c(r.buf.get(KAFKA_CRC_START..).unwrap_or_default()) != crc {
        return Err(RecordsError::Malformed("crc mismatch"));
    }
    let attributes = r.i16()?;
    let codec = (attributes & CODEC_MASK) as u8;
    if codec != 0 {
        return Err(RecordsError::Compressed(Compression(codec)));
    }
    let _last_offset_delta = r.i32()?;
    let base_timestamp = r.i64()?;
    let max_timestamp = r.i64()?;
    let _producer_id = r.i64()?;
    let _producer_epoch = r.i16()?;
    let _base_sequence = r.i32()?;
    let count = r.i32()?;
    let count =
        usize::try_from(count).map_err(|_| RecordsError::Malformed("negative record count"))?;
    // Each record takes at least 7 bytes; an absurd count cannot make us allocate.
    let mut records = Vec::with_capacity(count.min(end / 7 + 1));
    for _ in 0..count {
        let len = r.varint()?;
        let len =
            usize::try_from(len).map_err(|_| RecordsError::Malformed("negative record length"))?;
        let record_end = r
            .pos
            .checked_add(len)
            .filter(|&e| e <= end)
            .ok_or(RecordsError::Malformed("record overruns the batch"))?;
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
            return Err(RecordsError::Malformed(
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
        return Err(RecordsError::Malformed("bytes after the last record"));
    }
    Ok(records)
}

/// `whole` (a compressed batch) as the same batch uncompressed, at most `limit` bytes of
/// records: its CRC checked first, the records inflated, the codec bits cleared, length and
/// CRC redone. An uncompressed batch comes back as a copy.
///
/// # Errors
/// A CRC mismatch or truncation ([`InflateError::Records`]), corrupt or oversized data
/// ([`InflateError::Codec`]), a batch past 2 GiB.
#[cfg(feature = "codecs")]
pub fn inflate(whole: &[u8], limit: usize) -> Result<bytes::BytesMut, InflateError> {
    use bytes::BufMut;
    let header =
        super::RecordBatchHeader::read(whole).ok_or(RecordsError::Malformed("truncated"))?;
    if super::kafka_crc(whole) != header.crc {
        return Err(RecordsError::Malformed("crc mismatch").into());
    }
    let records = super::codec::decompress(
        header.compression(),
        whole.get(BATCH_OVERHEAD..).unwrap_or_default(),
        limit,
    )?;
    let mut out = bytes::BytesMut::with_capacity(BATCH_OVERHEAD + records.len());
    out.put_slice(whole.get(..BATCH_OVERHEAD).unwrap_or_default());
    out.put_slice(&records);
    let length =
        i32::try_from(out.len() - super::LOG_OVERHEAD).map_err(|_| InflateError::TooLarge)?;
    out[super::at::BATCH_LENGTH..super::at::BATCH_LENGTH + 4]
        .copy_from_slice(&length.to_be_bytes());
    let attributes = header.attributes & !CODEC_MASK;
    out[super::at::ATTRIBUTES..super::at::ATTRIBUTES + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    super::seal_kafka_crc(&mut out);
    Ok(out)
}

/// `whole` (one Kafka batch whose CRC is checked here) with its records compressed by
/// `target` instead (Kafka's `compression.type` set to a codec: the broker recompresses on
/// append). The records section is the same bytes under either codec, so only the codec bits,
/// `batchLength` and the CRC change. A batch already in `target` comes back as it is (no
/// copy); the inflated records may take at most `limit` bytes.
///
/// # Errors
/// As [`inflate`].
#[cfg(feature = "codecs")]
pub fn recompress(
    whole: &bytes::Bytes,
    target: Compression,
    limit: usize,
) -> Result<bytes::Bytes, InflateError> {
    use bytes::BufMut;
    let header =
        super::RecordBatchHeader::read(whole).ok_or(RecordsError::Malformed("truncated"))?;
    if header.compression() == target {
        return Ok(whole.clone());
    }
    if super::kafka_crc(whole) != header.crc {
        return Err(RecordsError::Malformed("crc mismatch").into());
    }
    let records = super::codec::decompress(
        header.compression(),
        whole.get(BATCH_OVERHEAD..).unwrap_or_default(),
        limit,
    )?;
    let mut packed = Vec::with_capacity(records.len() / 2 + 64);
    super::codec::compress(target, &records, &mut packed)?;
    let mut out = bytes::BytesMut::with_capacity(BATCH_OVERHEAD + packed.len());
    out.put_slice(whole.get(..BATCH_OVERHEAD).unwrap_or_default());
    out.put_slice(&packed);
    let length =
        i32::try_from(out.len() - super::LOG_OVERHEAD).map_err(|_| InflateError::TooLarge)?;
    out[super::at::BATCH_LENGTH..super::at::BATCH_LENGTH + 4]
        .copy_from_slice(&length.to_be_bytes());
    let attributes = (header.attributes & !CODEC_MASK) | i16::from(target.0);
    out[super::at::ATTRIBUTES..super::at::ATTRIBUTES + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    super::seal_kafka_crc(&mut out);
    Ok(out.freeze())
}

/// Why [`inflate`] failed.
#[cfg(feature = "codecs")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// The batch itself is malformed.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The records do not decompress within the limit.
    #[error(transparent)]
    Codec(#[from] super::codec::CodecError),
    /// The inflated batch would exceed 2 GiB.
    #[error("inflated batch exceeds 2 GiB")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_varint_bytes() {
        // Zigzag: 0 -> 00, -1 -> 01, 1 -> 02, 150 -> ac 02, -1 as length means null.
        let mut r = Reader {
            buf: &[0x00, 0x01, 0x02, 0xac, 0x02],
            pos: 0,
        };
        assert_eq!(r.varlong().expect("0"), 0);
        assert_eq!(r.varlong().expect("-1"), -1);
        assert_eq!(r.varlong().expect("1"), 1);
        assert_eq!(r.varlong().expect("150"), 150);
        let mut r = Reader {
            buf: &[0xff; 11],
            pos: 0,
        };
        assert!(matches!(r.varlong(), Err(RecordsError::Malformed(_))));
    }

    /// What the builder writes, the broker's validator accepts and the decoder reads back.
    #[test]
    fn built_batches_validate_and_decode_back() {
        let mut builder = crate::kafka_records::RecordBatchBuilder::with_capacity(1024);
        builder.push(Some(b"k"), b"first", 1_000);
        builder.push(None, b"second", 1_300);
        assert_eq!(builder.count(), 2);
        let batch = builder.finish(1024);
        assert!(builder.is_empty());
        let info = crate::kafka_records::validate_produce_batch(&batch, 9, 1 << 20).expect("valid");
        assert_eq!(info.record_count, 2);
        let records = decode_records(&batch, 40).expect("decodes");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 40);
        assert_eq!(&batch[records[0].key.clone().expect("key")], b"k");
        assert_eq!(&batch[records[1].value.clone()], b"second");
        assert_eq!(records[1].timestamp, 1_300);
        assert_eq!(records[1].key, None);
    }

    /// A compressed batch inflates to one that decodes like the uncompressed one, and
    /// inflation is bounded and CRC-checked first.
    #[cfg(feature = "codecs")]
    #[test]
    fn compressed_batches_inflate_to_the_same_records() {
        use crate::kafka_records::RecordBatchBuilder;
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut builder = RecordBatchBuilder::with_capacity(1024);
            for i in 0..50u8 {
                builder.push(Some(&[i]), &[i; 40], 5_000 + i64::from(i));
            }
            let batch = builder.finish_compressed(1024, codec).expect("known codec");
            assert_eq!(
                decode_records(&batch, 0),
                Err(RecordsError::Compressed(codec))
            );
            let plain = inflate(&batch, 1 << 20).expect("inflates");
            let records = decode_records(&plain, 0).expect("decodes");
            assert_eq!(records.len(), 50);
            assert_eq!(&plain[records[7].value.clone()], &[7u8; 40][..]);
            assert!(inflate(&batch, 100).is_err(), "bounded");
            let mut damaged = batch.to_vec();
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            assert!(inflate(&damaged, 1 << 20).is_err(), "CRC checked first");
        }
    }

    /// Recompression keeps the records and offsets, changes only the codec, length and CRC,
    /// from and to every codec; a batch already in the target comes back unchanged.
    #[cfg(feature = "codecs")]
    #[test]
    fn recompression_keeps_every_record() {
        use crate::kafka_records::{kafka_crc, RecordBatchBuilder, RecordBatchHeader};
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for from in codecs {
            let mut builder = RecordBatchBuilder::with_capacity(1024);
            for i in 0..30u8 {
                builder.push(Some(&[i]), &[i; 64], 9_000 + i64::from(i));
            }
            let batch = builder.finish_compressed(1024, from).expect("known codec");
            let want = decode_records(&inflate(&batch, 1 << 20).expect("inflates"), 0)
                .expect("decodes")
                .len();
            for to in codecs {
                let out = recompress(&batch, to, 1 << 20).expect("recompresses");
                let header = RecordBatchHeader::read(&out).expect("a header");
                assert_eq!(header.compression(), to, "{from:?} -> {to:?}");
                assert_eq!(kafka_crc(&out), header.crc, "{from:?} -> {to:?}");
                let plain = inflate(&out, 1 << 20).expect("inflates");
                let records = decode_records(&plain, 0).expect("decodes");
                assert_eq!(records.len(), want);
                assert_eq!(&plain[records[29].value.clone()], &[29u8; 64][..]);
                assert_eq!(records[29].timestamp, 9_029);
                if from == to {
                    assert_eq!(out, batch, "unchanged");
                }
            }
        }
    }
}
