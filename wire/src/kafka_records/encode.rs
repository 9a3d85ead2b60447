//! The Kafka RecordBatch v2 encoder for clients (the load generator's producer): records
//! without headers appended to one buffer reserved for the whole batch, so adding a record
//! allocates nothing; the header is patched, the records optionally compressed and the CRC
//! computed once, at the end.
//!
//! ```text
//!  0 baseOffset i64 (0) | 8 batchLength i32 | 12 partitionLeaderEpoch i32 (-1) | 16 magic (2)
//! 17 crc u32 = CRC-32C(bytes[21..]) | 21 attributes i16 (codec bits only, CreateTime)
//! 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId (-1)
//! 51 producerEpoch (-1) | 53 baseSequence (-1) | 57 recordCount i32 | 61 records...
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::varint::{put_varint, varint_len};
use super::{seal_kafka_crc, BATCH_OVERHEAD, CODEC_MASK, LOG_OVERHEAD, MAGIC_V2};
use crate::batch::Compression;

/// Builds one RecordBatch v2 of header-less records.
#[derive(Debug)]
pub struct RecordBatchBuilder {
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    /// `(producerId, producerEpoch, baseSequence)`; -1s when not idempotent.
    producer: (i64, i16, i32),
}

impl RecordBatchBuilder {
    /// An empty batch with room for `capacity` bytes (header included) before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_OVERHEAD));
        buf.put_bytes(0, BATCH_OVERHEAD);
        Self {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer: (-1, -1, -1),
        }
    }

    /// Marks the batch as an idempotent producer's: its id, epoch and the sequence of the
    /// first record (otherwise -1 each). [`finish`](Self::finish) resets it.
    pub fn producer(&mut self, id: i64, epoch: i16, base_sequence: i32) {
        self.producer = (id, epoch, base_sequence);
    }

    /// Records in the batch.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the batch so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes `push` of a record with a `key_len`-byte key (`None`: null) and a
    /// `value_len`-byte value at `timestamp_ms` would add (before compression).
    pub fn record_len(&self, key_len: Option<usize>, value_len: usize, timestamp_ms: i64) -> usize {
        let body = self.body_len(key_len, value_len, timestamp_ms);
        varint_len(body as i64) + body
    }

    fn body_len(&self, key_len: Option<usize>, value_len: usize, timestamp_ms: i64) -> usize {
        let delta = if self.count == 0 {
            0
        } else {
            timestamp_ms.wrapping_sub(self.base_timestamp)
        };
        let key = key_len.map_or(1, |k| varint_len(k as i64) + k);
        1 + varint_len(delta)
            + varint_len(i64::from(self.count))
            + key
            + varint_len(value_len as i64)
            + value_len
            + 1
    }

    /// Appends a record with `key`, `value` and no headers, created at `timestamp_ms`.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let body = self.body_len(key.map(<[u8]>::len), value.len(), timestamp_ms);
        let buf = &mut self.buf;
        put_varint(buf, body as i64);
        buf.put_u8(0);
        put_varint(buf, timestamp_ms.wrapping_sub(self.base_timestamp));
        put_varint(buf, i64::from(self.count));
        match key {
            Some(k) => {
                put_varint(buf, k.len() as i64);
                buf.put_slice(k);
            }
            None => put_varint(buf, -1),
        }
        put_varint(buf, value.len() as i64);
        buf.put_slice(value);
        put_varint(buf, 0);
        self.count += 1;
    }

    /// The finished batch, uncompressed: header patched, CRC computed. The builder is left
    /// empty with a fresh buffer of `next_capacity` bytes.
    pub fn finish(&mut self, next_capacity: usize) -> Bytes {
        let buf = self.take(next_capacity);
        self.seal(buf, Compression::None)
    }

    /// The finished batch with its records compressed with `codec`.
    ///
    /// # Errors
    /// [`CodecError::Unknown`](super::codec::CodecError::Unknown) for a codec Kafka does not
    /// define; the builder keeps its records.
    #[cfg(feature = "codecs")]
    pub fn finish_compressed(
        &mut self,
        next_capacity: usize,
        codec: Compression,
    ) -> Result<Bytes, super::codec::CodecError> {
        if codec.variant_name().is_none() {
            return Err(super::codec::CodecError::Unknown(codec.0));
        }
        let buf = self.take(next_capacity);
        if codec == Compression::None {
            return Ok(self.seal(buf, codec));
        }
        let mut packed = Vec::with_capacity(BATCH_OVERHEAD + buf.len() / 2);
        packed.resize(BATCH_OVERHEAD, 0);
        super::codec::compress(codec, &buf[BATCH_OVERHEAD..], &mut packed)?;
        Ok(self.seal(BytesMut::from(&packed[..]), codec))
    }

    /// The records so far, the builder restarted with a fresh buffer.
    fn take(&mut self, next_capacity: usize) -> BytesMut {
        let buf = std::mem::replace(
            &mut self.buf,
            BytesMut::with_capacity(next_capacity.max(BATCH_OVERHEAD)),
        );
        self.buf.put_bytes(0, BATCH_OVERHEAD);
        buf
    }

    /// Patches the header of `buf` (records after [`BATCH_OVERHEAD`] zero bytes) and its CRC.
    fn seal(&mut self, mut buf: BytesMut, codec: Compression) -> Bytes {
        let batch_length = i32::try_from(buf.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
        let mut header = [0u8; BATCH_OVERHEAD];
        {
            let mut h = &mut header[..];
            h.put_i64(0);
            h.put_i32(batch_length);
            h.put_i32(-1);
            h.put_i8(MAGIC_V2);
            h.put_u32(0);
            h.put_i16(i16::from(codec.0) & CODEC_MASK);
            h.put_i32(self.count - 1);
            h.put_i64(self.base_timestamp);
            h.put_i64(self.max_timestamp);
            h.put_i64(self.producer.0);
            h.put_i16(self.producer.1);
            h.put_i32(self.producer.2);
            h.put_i32(self.count);
        }
        buf[..BATCH_OVERHEAD].copy_from_slice(&header);
        seal_kafka_crc(&mut buf);
        self.count = 0;
        self.producer = (-1, -1, -1);
        buf.freeze()
    }
}
