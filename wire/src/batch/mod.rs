//! Record batches: the 64-byte header, verification, zero-copy views and the
//! native encoder. See the crate docs for the byte layout.

use flatbuffers::{ForwardsUOffset, Vector, VectorIter, VerifierOptions};

use crate::generated::{Record, RecordBatch, RecordHeader};
use crate::WireError;

mod builder;
#[cfg(test)]
mod tests;

pub use crate::generated::{BatchHeader, Compression, PayloadFormat};
pub use builder::{encode_kafka_wrapped, BatchBuilder};

/// Size of the fixed [`BatchHeader`] in bytes.
pub const HEADER_LEN: usize = 64;
/// First byte covered by the CRC; the CRC covers `[CRC_START .. batch_len)`,
/// except the Kafka `baseOffset` of Kafka payloads (see [`compute_crc`]).
pub const CRC_START: usize = 12;
/// The only `format_version` this crate reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// `flags` bit of a Kafka-format batch whose CRCs are chained: the Tidelog CRC covers the
/// header and the Kafka batch's fields up to and including its own CRC (payload bytes
/// `8..21`, see [`KAFKA_CHAIN_END`]), and the Kafka CRC covers the rest (payload `21..`).
/// Together they cover every byte the CRC of an unchained batch covers, but storing a
/// Produce batch costs one CRC pass over its records (Kafka's, which validation computes
/// anyway) instead of three. Never set on native batches.
pub const FLAG_KAFKA_CRC_CHAIN: u8 = 0x01;

/// End of the bytes the Tidelog CRC covers in a chained batch: the header plus the Kafka
/// batch's first 21 bytes (`baseOffset` .. `crc`).
pub const KAFKA_CHAIN_END: usize = HEADER_LEN + 21;

/// Position of the `flags` byte.
const FLAGS_AT: usize = 19;
/// Byte range of the Kafka CRC (big-endian) in a stored Kafka-format batch.
const KAFKA_CRC_RANGE: std::ops::Range<usize> = HEADER_LEN + 17..KAFKA_CHAIN_END;
/// Fewest payload bytes of a Kafka batch whose CRCs may be chained (a whole v2 header).
const KAFKA_CHAIN_MIN_PAYLOAD: usize = 61;

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_LEN);

/// Byte range of the `base_offset` field.
const BASE_OFFSET_RANGE: std::ops::Range<usize> = 0..8;
/// Byte range of the `crc` field.
pub(crate) const CRC_RANGE: std::ops::Range<usize> = 8..12;

/// Copies the first [`HEADER_LEN`] bytes of `buf` into a [`BatchHeader`].
fn read_header(buf: &[u8]) -> Result<BatchHeader, WireError> {
    let bytes: [u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        })?;
    Ok(BatchHeader(bytes))
}

/// Parses and sanity-checks the fixed header only (no CRC).
///
/// Checks: `buf.len() >= HEADER_LEN`, `batch_len >= HEADER_LEN`,
/// `format_version == FORMAT_VERSION`, known payload format and compression,
/// reserved fields zero, `record_count >= 1`,
/// `0 <= last_offset_delta < i32::MAX` and `record_count - 1 <= last_offset_delta`.
///
/// Does not require `buf` to hold the whole batch, so it can be used on the
/// first bytes read from a socket or file to learn `batch_len`.
pub fn peek_header(buf: &[u8]) -> Result<BatchHeader, WireError> {
    let h = read_header(buf)?;
    if h.format_version() != FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion(h.format_version()));
    }
    let batch_len = h.batch_len();
    if (batch_len as usize) < HEADER_LEN {
        return Err(WireError::BadLength {
            batch_len,
            min: HEADER_LEN,
        });
    }
    if h.payload_format().variant_name().is_none() {
        return Err(WireError::UnknownPayloadFormat(h.payload_format().0));
    }
    if h.compression().variant_name().is_none() {
        return Err(WireError::UnknownCompression(h.compression().0));
    }
    let chained = h.flags() == FLAG_KAFKA_CRC_CHAIN
        && h.payload_format() == PayloadFormat::Kafka
        && batch_len as usize >= HEADER_LEN + KAFKA_CHAIN_MIN_PAYLOAD;
    let flags = if chained { 0 } else { h.flags() };
    for (field, value) in [
        ("flags", u32::from(flags)),
        ("reserved", u32::from(h.reserved())),
        ("reserved2", h.reserved2()),
    ] {
        if value != 0 {
            return Err(WireError::ReservedNonZero { field, value });
        }
    }
    let last_offset_delta = h.last_offset_delta();
    if !(0..i32::MAX).contains(&last_offset_delta) {
        return Err(WireError::BadOffsetDelta(last_offset_delta));
    }
    let record_count = h.record_count();
    // Every record has its own offset in [0, last_offset_delta].
    if record_count < 1 || record_count - 1 > last_offset_delta {
        return Err(WireError::BadRecordCount {
            record_count,
            last_offset_delta,
        });
    }
    Ok(h)
}

/// Byte range of a Kafka payload's own `baseOffset` (big-endian i64) inside a
/// stored batch: payload bytes `0..8`. Like the Tidelog `base_offset`, it is
/// stamped at append and therefore excluded from the Tidelog CRC.
pub const KAFKA_BASE_OFFSET_RANGE: std::ops::Range<usize> = HEADER_LEN..HEADER_LEN + 8;

/// Whether the bytes of `batch` are a Kafka-format batch long enough to hold
/// the Kafka `baseOffset` field (only then is that field stamped and skipped by
/// the CRC; a shorter Kafka payload is covered whole).
fn has_kafka_base_offset(batch: &[u8]) -> bool {
    batch.get(PAYLOAD_FORMAT_AT) == Some(&PayloadFormat::Kafka.0)
        && batch.len() >= KAFKA_BASE_OFFSET_RANGE.end
}

/// Position of the `payload_format` byte.
const PAYLOAD_FORMAT_AT: usize = 17;

/// CRC-32C (Castagnoli) of the bytes of `batch` that the broker never rewrites.
///
/// * Native payloads (and anything that is not a Kafka payload): `batch[CRC_START..]`.
/// * Kafka payloads of at least 8 bytes: `batch[CRC_START..64]` followed by
///   `batch[72..]`, i.e. the embedded Kafka `baseOffset`
///   ([`KAFKA_BASE_OFFSET_RANGE`]) is skipped, so that [`stamp_base_offset`]
///   can write it without a recompute and fetches can send the stored Kafka
///   bytes unmodified.
///
/// * Kafka payloads with [`FLAG_KAFKA_CRC_CHAIN`]: `batch[CRC_START..64]` followed by
///   `batch[72..KAFKA_CHAIN_END]`; the Kafka CRC in the covered bytes vouches for the rest
///   ([`check_crc`] checks both).
///
/// The format is read from the `payload_format` byte (17), which is itself
/// covered. The caller passes exactly one batch (`batch.len() == batch_len`).
/// A slice shorter than [`CRC_START`] yields the CRC of the empty string.
pub fn compute_crc(batch: &[u8]) -> u32 {
    if is_chained(batch) {
        chained_crc(batch)
    } else if has_kafka_base_offset(batch) {
        let head = batch
            .get(CRC_START..KAFKA_BASE_OFFSET_RANGE.start)
            .unwrap_or_default();
        let tail = batch.get(KAFKA_BASE_OFFSET_RANGE.end..).unwrap_or_default();
        crc32c::crc32c_append(crc32c::crc32c(head), tail)
    } else {
        crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default())
    }
}

/// The Tidelog CRC of a chained Kafka-format batch, from its first [`KAFKA_CHAIN_END`] bytes
/// (all it covers): `head[CRC_START..64]` followed by `head[72..KAFKA_CHAIN_END]`.
pub fn chained_crc(head: &[u8]) -> u32 {
    let header = head
        .get(CRC_START..KAFKA_BASE_OFFSET_RANGE.start)
        .unwrap_or_default();
    let kafka = head
        .get(KAFKA_BASE_OFFSET_RANGE.end..KAFKA_CHAIN_END)
        .unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(header), kafka)
}

/// Whether `batch` is a Kafka-format batch with chained CRCs, long enough for the chain.
fn is_chained(batch: &[u8]) -> bool {
    batch.get(FLAGS_AT) == Some(&FLAG_KAFKA_CRC_CHAIN)
        && batch.get(PAYLOAD_FORMAT_AT) == Some(&PayloadFormat::Kafka.0)
        && batch.len() >= HEADER_LEN + KAFKA_CHAIN_MIN_PAYLOAD
}

/// Checks every CRC of one whole stored batch (`batch.len() == batch_len`): the Tidelog CRC
/// in the header and, for a batch with [`FLAG_KAFKA_CRC_CHAIN`], the Kafka CRC it chains
/// to. One pass over the bytes either way.
///
/// # Errors
/// [`WireError::CrcMismatch`] naming the CRC that failed; [`WireError::Truncated`] for a
/// slice shorter than the header.
pub fn check_crc(batch: &[u8]) -> Result<(), WireError> {
    let stored = read_header(batch)?.crc();
    let computed = compute_crc(batch);
    if computed != stored {
        return Err(WireError::CrcMismatch { stored, computed });
    }
    if is_chained(batch) {
        let stored = batch
            .get(KAFKA_CRC_RANGE)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes);
        let computed = crc32c::crc32c(batch.get(KAFKA_CHAIN_END..).unwrap_or_default());
        if computed != stored {
            return Err(WireError::CrcMismatch { stored, computed });
        }
    }
    Ok(())
}

/// Writes `base_offset` into bytes `0..8` (little-endian) and, for a Kafka
/// payload, also into the Kafka batch's own `baseOffset` (bytes `64..72`,
/// big-endian). The Tidelog CRC stays valid because it covers neither, and the
/// Kafka CRC stays valid because Kafka's starts at `attributes`.
///
/// # Errors
///
/// [`WireError::Truncated`] when `batch` is shorter than [`HEADER_LEN`].
pub fn stamp_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), WireError> {
    let have = batch.len();
    let kafka = has_kafka_base_offset(batch);
    let dst = batch
        .get_mut(BASE_OFFSET_RANGE)
        .filter(|_| have >= HEADER_LEN)
        .ok_or(WireError::Truncated {
            need: HEADER_LEN,
            have,
        })?;
    dst.copy_from_slice(&base_offset.to_le_bytes());
    if kafka {
        if let Some(dst) = batch.get_mut(KAFKA_BASE_OFFSET_RANGE) {
            dst.copy_from_slice(&base_offset.to_be_bytes());
        }
    }
    Ok(())
}

/// Byte range of a Kafka payload's `partitionLeaderEpoch` (big-endian i32) inside a stored
/// batch: payload bytes `12..16`.
const KAFKA_LEADER_EPOCH_RANGE: std::ops::Range<usize> = HEADER_LEN + 12..HEADER_LEN + 16;

/// Writes the leader epoch the batch is appended in into a Kafka payload's
/// `partitionLeaderEpoch` and refreshes the Tidelog CRC, which covers that field (the Kafka
/// CRC does not: it starts at `attributes`). Consumers take the epoch of the last batch they
/// read as their position's epoch and validate it after a leader change
/// (OffsetForLeaderEpoch): a batch that claimed an older epoch than the one it was written in
/// would look truncated there and send the consumer back.
///
/// `batch` is the head of a chained batch (at least [`KAFKA_CHAIN_END`] bytes; its CRC
/// covers only those) or a whole batch. Native batches have no such field: `Ok(false)`, and
/// nothing changes.
///
/// # Errors
/// [`WireError::Truncated`] when `batch` is shorter than a header.
pub fn stamp_kafka_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<bool, WireError> {
    let h = read_header(batch)?;
    if h.payload_format() != PayloadFormat::Kafka {
        return Ok(false);
    }
    let whole = h.batch_len() as usize;
    let chained =
        h.flags() == FLAG_KAFKA_CRC_CHAIN && whole >= HEADER_LEN + KAFKA_CHAIN_MIN_PAYLOAD;
    let need = if chained { KAFKA_CHAIN_END } else { whole };
    if batch.len() < need {
        return Err(WireError::Truncated {
            need,
            have: batch.len(),
        });
    }
    let Some(dst) = batch.get_mut(KAFKA_LEADER_EPOCH_RANGE) else {
        return Ok(false);
    };
    if dst == epoch.to_be_bytes() {
        return Ok(true);
    }
    dst.copy_from_slice(&epoch.to_be_bytes());
    let crc = if chained {
        chained_crc(batch.get(..KAFKA_CHAIN_END).unwrap_or_default())
    } else {
        compute_crc(batch.get(..whole).unwrap_or_default())
    };
    if let Some(dst) = batch.get_mut(CRC_RANGE) {
        dst.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(true)
}

/// Bounds applied by [`verify`] to untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyLimits {
    /// Largest accepted `batch_len` (header included).
    pub max_batch_len: usize,
    /// Largest accepted `record_count`.
    pub max_records: usize,
    /// Deepest accepted table nesting in a native payload (a valid batch
    /// needs 3: batch, record, record header).
    pub max_depth: usize,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        Self {
            max_batch_len: 64 << 20,
            max_records: 1 << 20,
            max_depth: 16,
        }
    }
}

/// Fully verifies the batch at the start of `buf` and returns a view of it.
///
/// Checks [`peek_header`], `batch_len <= limits.max_batch_len`,
/// `buf.len() >= batch_len`, `record_count <= limits.max_records` and the CRC.
/// For native payloads it also runs the flatbuffers verifier (bounded by
/// `limits`) and checks that the payload holds exactly `record_count` records
/// whose `offset_delta`s strictly increase up to `last_offset_delta`.
/// Kafka payloads are not parsed.
///
/// Bytes after `batch_len` are ignored; the view covers `buf[..batch_len]`.
pub fn verify<'a>(buf: &'a [u8], limits: &VerifyLimits) -> Result<BatchView<'a>, WireError> {
    let header = peek_header(buf)?;
    let batch_len = header.batch_len() as usize;
    if batch_len > limits.max_batch_len {
        return Err(WireError::TooLarge {
            batch_len,
            max: limits.max_batch_len,
        });
    }
    let bytes = buf.get(..batch_len).ok_or(WireError::Truncated {
        need: batch_len,
        have: buf.len(),
    })?;
    let record_count = header.record_count();
    if record_count as usize > limits.max_records {
        return Err(WireError::TooManyRecords {
            record_count,
            max: limits.max_records,
        });
    }
    check_crc(bytes)?;
    let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
    let records = match header.payload_format() {
        PayloadFormat::Native => Some(verify_native(&header, payload, limits)?),
        _ => None,
    };
    Ok(BatchView {
        header,
        bytes,
        records,
    })
}

type RecordVec<'a> = Vector<'a, ForwardsUOffset<Record<'a>>>;
type HeaderVec<'a> = Vector<'a, ForwardsUOffset<RecordHeader<'a>>>;

fn verify_native<'a>(
    header: &BatchHeader,
    payload: &'a [u8],
    limits: &VerifyLimits,
) -> Result<RecordVec<'a>, WireError> {
    if header.compression() != Compression::None {
        return Err(WireError::UnsupportedCompression {
            format: PayloadFormat::Native,
            compression: header.compression(),
        });
    }
    let opts = VerifierOptions {
        max_depth: limits.max_depth,
        // Every table starts with a 4-byte vtable offset, so an honest buffer
        // cannot hold more tables than this; aliasing tricks are rejected.
        max_tables: payload.len() / 4 + 1,
        // Vtables are shared between tables and each field lookup is counted,
        // so the apparent size of an honest buffer is a small multiple of its
        // length (at most ~4.5x for empty records); 8x bounds DAG blow-ups.
        max_apparent_size: payload.len().min(limits.max_batch_len).saturating_mul(8),
        ignore_missing_null_terminator: false,
    };
    let batch = flatbuffers::root_with_opts::<RecordBatch>(&opts, payload)?;
    let records = batch.records().unwrap_or_default();
    let record_count = header.record_count();
    if records.len() != record_count as usize {
        return Err(WireError::RecordCountMismatch {
            header: record_count,
            payload: records.len(),
        });
    }
    let last_offset_delta = header.last_offset_delta();
    let mut prev: Option<u32> = None;
    for (index, record) in records.iter().enumerate() {
        let offset_delta = record.offset_delta();
        let increasing = prev.is_none_or(|p| offset_delta > p);
        let last = index + 1 == records.len();
        if !increasing
            || i64::from(offset_delta) > i64::from(last_offset_delta)
            || (last && i64::from(offset_delta) != i64::from(last_offset_delta))
        {
            return Err(WireError::BadRecordOffset {
                index,
                offset_delta,
                last_offset_delta,
            });
        }
        prev = Some(offset_delta);
    }
    Ok(records)
}

/// A verified batch borrowed from the buffer passed to [`verify`].
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
    /// `Some` for native payloads (verified), `None` otherwise.
    records: Option<RecordVec<'a>>,
}

impl std::fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchView")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<'a> BatchView<'a> {
    /// The fixed header (a copy of the first 64 bytes).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included (`batch_len` bytes).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// `batch_len` as `usize` (equals `bytes().len()`).
    pub fn batch_len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset()
    }

    /// Offset of the last record (`base_offset + last_offset_delta`, wrapping
    /// on overflow, which only a corrupt `base_offset` can cause).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.header.last_offset_delta()))
    }

    /// The offset the batch after this one starts at (`last_offset() + 1`).
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Number of records (at least 1).
    pub fn record_count(&self) -> i32 {
        self.header.record_count()
    }

    /// Payload format of the batch.
    pub fn payload_format(&self) -> PayloadFormat {
        self.header.payload_format()
    }

    /// Iterates the records of a native batch; errors for other formats.
    pub fn records(&self) -> Result<RecordIter<'a>, WireError> {
        let records = self.records.ok_or(WireError::WrongPayloadFormat {
            expected: PayloadFormat::Native,
            found: self.header.payload_format(),
        })?;
        Ok(RecordIter {
            inner: records.iter(),
            base_offset: self.header.base_offset(),
            first_timestamp: self.header.first_timestamp(),
        })
    }
}

/// Iterator over the records of a verified native batch.
#[derive(Clone)]
pub struct RecordIter<'a> {
    inner: VectorIter<'a, ForwardsUOffset<Record<'a>>>,
    base_offset: i64,
    first_timestamp: i64,
}

impl<'a> RecordIter<'a> {
    fn view(&self, r: Record<'a>) -> RecordView<'a> {
        RecordView {
            offset: self.base_offset.wrapping_add(i64::from(r.offset_delta())),
            timestamp: self.first_timestamp.wrapping_add(r.timestamp_delta()),
            key: r.key().map(|k| k.bytes()),
            value: r.value().map(|v| v.bytes()).unwrap_or_default(),
            headers: Headers { inner: r.headers() },
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.inner.next()?;
        Some(self.view(r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for RecordIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let r = self.inner.next_back()?;
        Some(self.view(r))
    }
}

impl ExactSizeIterator for RecordIter<'_> {}
impl std::iter::FusedIterator for RecordIter<'_> {}

/// One record of a native batch, borrowing from the batch bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Absolute offset (`base_offset + offset_delta`).
    pub offset: i64,
    /// Absolute timestamp in ms since the epoch.
    pub timestamp: i64,
    /// `None` for a null key; `Some(&[])` for an empty key.
    pub key: Option<&'a [u8]>,
    /// The value (empty if absent).
    pub value: &'a [u8],
    /// The record's headers.
    pub headers: Headers<'a>,
}

/// The headers of a [`RecordView`]: `(key, value)` pairs in insertion order.
#[derive(Clone, Copy, Default)]
pub struct Headers<'a> {
    inner: Option<HeaderVec<'a>>,
}

impl<'a> Headers<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.inner.map_or(0, |v| v.len())
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates `(key, value)` pairs; an absent key or value reads as empty.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            inner: self.inner.map(|v| v.iter()),
        }
    }
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over `(key, value)` header pairs.
#[derive(Clone)]
pub struct HeaderIter<'a> {
    inner: Option<VectorIter<'a, ForwardsUOffset<RecordHeader<'a>>>>,
}

fn header_pair(h: RecordHeader<'_>) -> (&str, &[u8]) {
    (
        h.key().unwrap_or_default(),
        h.value().map(|v| v.bytes()).unwrap_or_default(),
    )
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.as_mut()?.next().map(header_pair)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.as_ref().map_or((0, Some(0)), |i| i.size_hint())
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}
impl std::iter::FusedIterator for HeaderIter<'_> {}
