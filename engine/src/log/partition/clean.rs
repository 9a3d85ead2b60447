//! The clean-shutdown record: what a clean close knew about the active segment (its size,
//! offsets and indexes), so that the next open trusts it instead of reading the whole
//! segment back to find where the valid batches end, as Kafka skips log recovery after a
//! clean shutdown.
//!
//! Invariants:
//! - Written only at close, under the write gate (no append can follow), when every batch
//!   appended is fdatasynced and the recovery point is the log end: the record describes
//!   durable bytes only.
//! - Consumed once: the open that reads it removes it and syncs the directory before the log
//!   takes any write, so a record never describes a file that was written after it. A crash
//!   after that open finds no record and scans the active segment as before.
//! - Trusted only when it matches the file: same segment, same file length (a changed length
//!   means the file is not the one the record describes), offsets at or above the recovery
//!   point, indexes that decode inside the segment, and zeros where a batch after its end
//!   would start (a build that did not know the record may have left it and appended).
//!   Anything else is ignored (logged) and the segment is scanned. Batches are CRC-checked
//!   when read either way.

use super::*;

/// Name of the clean-shutdown record in a partition directory.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
const MAGIC: [u8; 4] = *b"TLCS";
const VERSION: u8 = 1;
/// Magic, version, base, file length, size, next offset, max timestamp, last batch's
/// relative offset, bytes since the last index entry, the two index lengths.
const HEAD: usize = 4 + 1 + 8 * 7 + 4 * 2;

/// The active segment as a clean close left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CleanShutdown {
    base: u64,
    file_len: u64,
    size: u64,
    next_offset: u64,
    max_timestamp: i64,
    last_batch_relative: u32,
    bytes_since_index: u64,
    offset_index: Vec<u8>,
    time_index: Vec<u8>,
}

impl CleanShutdown {
    /// The record of `segment` (the active one), whose file is `file_len` bytes long.
    pub(super) fn of<F>(segment: &Segment<F>, file_len: u64) -> Self {
        CleanShutdown {
            base: segment.base_offset,
            file_len,
            size: segment.size,
            next_offset: segment.next_offset,
            max_timestamp: segment.max_timestamp,
            last_batch_relative: segment.last_batch_relative,
            bytes_since_index: segment.bytes_since_index(),
            offset_index: segment.offset_index.encode(),
            time_index: segment.time_index.encode(),
        }
    }

    /// The file's bytes: the fields above, then CRC-32C of all before it.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEAD + self.offset_index.len() + self.time_index.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        for v in [
            self.base,
            self.file_len,
            self.size,
            self.next_offset,
            self.max_timestamp as u64,
            u64::from(self.last_batch_relative),
            self.bytes_since_index,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.offset_index.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.time_index.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.offset_index);
        out.extend_from_slice(&self.time_index);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a record; `None` for anything but an intact one of this version.
    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let head = bytes.get(..HEAD)?;
        if head[..4] != MAGIC || head[4] != VERSION {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            let at = 5 + 8 * i;
            Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?))
        };
        let len = |at: usize| -> Option<usize> {
            Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?) as usize)
        };
        let offset_len = len(HEAD - 8)?;
        let time_len = len(HEAD - 4)?;
        let end = HEAD.checked_add(offset_len)?.checked_add(time_len)?;
        let crc = u32::from_le_bytes(bytes.get(end..end.checked_add(4)?)?.try_into().ok()?);
        if crc32c::crc32c(&bytes[..end]) != crc {
            return None;
        }
        Some(CleanShutdown {
            base: word(0)?,
            file_len: word(1)?,
            size: word(2)?,
            next_offset: word(3)?,
            max_timestamp: word(4)? as i64,
            last_batch_relative: u32::try_from(word(5)?).ok()?,
            bytes_since_index: word(6)?,
            offset_index: bytes[HEAD..HEAD + offset_len].to_vec(),
            time_index: bytes[HEAD + offset_len..end].to_vec(),
        })
    }

    /// The recorded size of the segment's valid batches.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Installs the record into `segment` (just opened, not scanned, its file `file_len`
    /// bytes long) when it describes that file; otherwise says why not and leaves `segment`
    /// untouched.
    pub(super) fn apply<F>(
        &self,
        segment: &mut Segment<F>,
        file_len: u64,
        recovery_point: u64,
    ) -> std::result::Result<(), &'static str> {
        if self.base != segment.base_offset {
            return Err("it describes another segment");
        }
        if self.file_len != file_len {
            return Err("the file's length changed");
        }
        if self.size > file_len || self.next_offset < self.base {
            return Err("its sizes are inconsistent");
        }
        if self.next_offset < recovery_point {
            return Err("it ends below the recovery point");
        }
        let span = (self.next_offset - self.base).max(1);
        let offset_index = OffsetIndex::decode(&self.offset_index, self.size.max(1), span)
            .ok_or("its offset index does not decode")?;
        let time_index =
            TimeIndex::decode(&self.time_index, span).ok_or("its time index does not decode")?;
        if (self.size > 0) == offset_index.is_empty() {
            return Err("its offset index does not match its size");
        }
        segment.size = self.size;
        segment.next_offset = self.next_offset;
        segment.max_timestamp = self.max_timestamp;
        segment.last_batch_relative = self.last_batch_relative;
        segment.offset_index = offset_index;
        segment.time_index = time_index;
        segment.set_bytes_since_index(self.bytes_since_index);
        Ok(())
    }
}

/// Reads the partition's clean-shutdown record, if any, and removes it durably before the
/// log can take a write (module docs). An unreadable record is removed too and yields `None`.
///
/// # Errors
/// Failing to remove the record or to sync the directory: the log must not open, or a later
/// crash could find a record that no longer describes the file.
pub(super) async fn take<S: Storage>(storage: &S, dir: &Path) -> Result<Option<CleanShutdown>> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let bytes = match read_whole(storage, &path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let (topic, partition) = crate::log::topic_partition(dir);
            tracing::warn!(%topic, %partition, path = %path.display(), error = %e,
                "unreadable clean-shutdown record: ignored (the active segment is scanned)");
            Vec::new()
        }
    };
    storage
        .remove_file(&path)
        .await
        .map_err(|e| LogError::io("remove", &path, e))?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| LogError::io("sync directory", dir, e))?;
    let record = CleanShutdown::decode(&bytes);
    if record.is_none() && !bytes.is_empty() {
        let (topic, partition) = crate::log::topic_partition(dir);
        tracing::warn!(%topic, %partition, path = %path.display(),
            "damaged clean-shutdown record: ignored (the active segment is scanned)");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(seed: u64, index_len: usize) -> CleanShutdown {
        CleanShutdown {
            base: seed,
            file_len: seed.wrapping_mul(3),
            size: seed.wrapping_mul(2),
            next_offset: seed.wrapping_add(7),
            max_timestamp: -(seed as i64),
            last_batch_relative: seed as u32,
            bytes_since_index: seed ^ 0x55,
            offset_index: vec![seed as u8; index_len],
            time_index: vec![!seed as u8; index_len / 2],
        }
    }

    proptest! {
        #[test]
        fn records_round_trip_and_any_flipped_byte_is_refused(
            seed in any::<u64>(),
            index_len in 0usize..64,
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let r = record(seed, index_len);
            let mut bytes = r.encode();
            prop_assert_eq!(CleanShutdown::decode(&bytes), Some(r));
            let at = flip.index(bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert_eq!(CleanShutdown::decode(&bytes), None);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = CleanShutdown::decode(&bytes);
        }
    }

    /// The open that takes the record makes its removal durable: no crash brings it back
    /// (without the directory sync, the simulated power loss does for some seeds).
    #[test]
    fn a_taken_record_never_comes_back() {
        use crate::io::sim::SimDisk;
        use futures_lite::future::block_on;
        let dir = Path::new("/data/t/0");
        for seed in 0..16 {
            let disk = SimDisk::new(seed);
            let path = dir.join(CLEAN_SHUTDOWN_FILE);
            disk.install(&path, &record(seed, 8).encode());
            let taken = block_on(take(&disk, dir)).expect("take");
            assert_eq!(taken, Some(record(seed, 8)));
            disk.crash();
            assert_eq!(
                disk.file_len(&path),
                None,
                "seed {seed}: the record came back"
            );
        }
    }

    #[test]
    fn truncated_records_are_refused() {
        let bytes = record(9, 16).encode();
        for len in 0..bytes.len() {
            assert_eq!(CleanShutdown::decode(&bytes[..len]), None, "cut at {len}");
        }
    }
}
