//! Sparse per-segment indexes, kept in memory and persisted when a segment is sealed.
//!
//! On disk an index file is:
//!
//! ```text
//! 0   magic      u32  "TLIX" (offset index) or "TLTI" (time index)
//! 4   version    u32  1
//! 8   count      u32  number of entries
//! 12  crc        u32  CRC-32C of the entry bytes
//! 16  entries    count x entry, little-endian
//!                offset index: relative_offset u32, position u32            (8 bytes)
//!                time index:   max_timestamp i64, relative_offset u32       (12 bytes)
//! ```
//!
//! A file that fails any check is ignored and the index is rebuilt from the segment.

const OFFSET_MAGIC: u32 = u32::from_le_bytes(*b"TLIX");
const TIME_MAGIC: u32 = u32::from_le_bytes(*b"TLTI");
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 16;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Offset → file position, one entry every `index_interval_bytes` of batches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    /// (offset relative to the segment base, byte position of the batch starting there)
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Appends an entry; offsets and positions must grow.
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(relative_offset > last_offset && position > last_position);
        }
        self.entries.push((relative_offset, position));
    }

    /// The last indexed batch starting at or below `relative_offset`: its relative offset and
    /// position, or (0, 0), the segment's first batch.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let index = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if index == 0 {
            (0, 0)
        } else {
            self.entries[index - 1]
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serialized form.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.entries {
            body.extend_from_slice(&offset.to_le_bytes());
            body.extend_from_slice(&position.to_le_bytes());
        }
        frame(OFFSET_MAGIC, self.entries.len(), &body)
    }

    /// Parses and checks a serialized index against the segment it belongs to: entries must
    /// strictly grow and lie inside `segment_bytes` / below `offsets_in_segment`.
    pub fn decode(bytes: &[u8], segment_bytes: u64, offsets_in_segment: u64) -> Option<Self> {
        let body = unframe(bytes, OFFSET_MAGIC, OFFSET_ENTRY_BYTES)?;
        let mut index = OffsetIndex::default();
        for entry in body.chunks_exact(OFFSET_ENTRY_BYTES) {
            let offset = u32::from_le_bytes(entry[0..4].try_into().ok()?);
            let position = u32::from_le_bytes(entry[4..8].try_into().ok()?);
            if u64::from(position) >= segment_bytes || u64::from(offset) >= offsets_in_segment {
                return None;
            }
            if let Some(&(last_offset, last_position)) = index.entries.last() {
                if offset <= last_offset || position <= last_position {
                    return None;
                }
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

/// Max timestamp → offset, one entry whenever the segment's max timestamp grows at an index
/// point. Timestamps and offsets both grow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    /// (max timestamp of the segment up to and including the batch, its relative offset)
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Appends an entry if `max_timestamp` is above the last one.
    pub fn maybe_push(&mut self, max_timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(last_ts, last_offset))
                if max_timestamp <= last_ts || relative_offset <= last_offset => {}
            _ => self.entries.push((max_timestamp, relative_offset)),
        }
    }

    /// Relative offset from which a scan for the first batch with a timestamp at or after
    /// `timestamp` can start: the last entry whose max timestamp is still below it.
    pub fn scan_start(&self, timestamp: i64) -> u32 {
        let index = self.entries.partition_point(|&(ts, _)| ts < timestamp);
        if index == 0 {
            0
        } else {
            self.entries[index - 1].1
        }
    }

    /// Largest timestamp indexed.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(ts, _)| ts)
    }

    /// Serialized form.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(ts, offset) in &self.entries {
            body.extend_from_slice(&ts.to_le_bytes());
            body.extend_from_slice(&offset.to_le_bytes());
        }
        frame(TIME_MAGIC, self.entries.len(), &body)
    }

    /// Parses and checks a serialized time index (entries strictly grow, offsets in range).
    pub fn decode(bytes: &[u8], offsets_in_segment: u64) -> Option<Self> {
        let body = unframe(bytes, TIME_MAGIC, TIME_ENTRY_BYTES)?;
        let mut index = TimeIndex::default();
        for entry in body.chunks_exact(TIME_ENTRY_BYTES) {
            let ts = i64::from_le_bytes(entry[0..8].try_into().ok()?);
            let offset = u32::from_le_bytes(entry[8..12].try_into().ok()?);
            if u64::from(offset) >= offsets_in_segment {
                return None;
            }
            if let Some(&(last_ts, last_offset)) = index.entries.last() {
                if ts <= last_ts || offset <= last_offset {
                    return None;
                }
            }
            index.entries.push((ts, offset));
        }
        Some(index)
    }
}

fn frame(magic: u32, count: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn unframe(bytes: &[u8], magic: u32, entry_bytes: usize) -> Option<&[u8]> {
    let header = bytes.get(..HEADER_BYTES)?;
    let word = |i: usize| header[i..i + 4].try_into().ok().map(u32::from_le_bytes);
    if word(0)? != magic || word(4)? != VERSION {
        return None;
    }
    let count = usize::try_from(word(8)?).ok()?;
    let body_len = count.checked_mul(entry_bytes)?;
    let body = bytes.get(HEADER_BYTES..HEADER_BYTES.checked_add(body_len)?)?;
    (crc32c::crc32c(body) == word(12)?).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4096);
        index.push(20, 9000);
        assert_eq!(index.lookup(0), (0, 0));
        assert_eq!(index.lookup(9), (0, 0));
        assert_eq!(index.lookup(10), (10, 4096));
        assert_eq!(index.lookup(25), (20, 9000));
    }

    #[test]
    fn time_scan_start_is_last_entry_below() {
        let mut index = TimeIndex::default();
        index.maybe_push(100, 0);
        index.maybe_push(90, 5); // not above the last timestamp: skipped
        index.maybe_push(200, 10);
        assert_eq!(index.scan_start(50), 0);
        assert_eq!(index.scan_start(150), 0);
        assert_eq!(index.scan_start(201), 10);
        assert_eq!(index.max_timestamp(), Some(200));
    }

    proptest! {
        #[test]
        fn offset_index_round_trips(steps in proptest::collection::vec((1u32..1000, 1u32..100_000), 0..200)) {
            let mut index = OffsetIndex::default();
            let (mut offset, mut position) = (0u32, 0u32);
            for (d_offset, d_position) in steps {
                index.push(offset, position);
                offset += d_offset;
                position += d_position;
            }
            let decoded = OffsetIndex::decode(&index.encode(), u64::from(position) + 1, u64::from(offset) + 1);
            prop_assert_eq!(decoded, Some(index));
        }

        #[test]
        fn damaged_index_is_rejected(byte in 0usize..64, bit in 0u8..8) {
            let mut index = OffsetIndex::default();
            for i in 0..6u32 {
                index.push(i * 10, i * 5000);
            }
            let mut bytes = index.encode();
            prop_assume!(byte < bytes.len());
            bytes[byte] ^= 1 << bit;
            prop_assert_eq!(OffsetIndex::decode(&bytes, 1 << 20, 1000), None);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = OffsetIndex::decode(&bytes, 1 << 20, 1 << 20);
            let _ = TimeIndex::decode(&bytes, 1 << 20);
        }
    }
}
