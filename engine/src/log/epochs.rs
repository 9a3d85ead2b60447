//! The leader-epoch cache of a partition replica (Kafka's `leader-epoch-checkpoint`): at
//! which offset each leader epoch's first batch was appended. A follower asks the leader for
//! the end of its own latest epoch (OffsetForLeaderEpoch) and truncates to it, so replicas
//! never keep a suffix a new leader does not have; clients use the same API to detect a log
//! that was truncated under them after a failover (KIP-320).
//!
//! Invariants: epochs strictly increase and start offsets never decrease along the list;
//! an entry is persisted (written to a temporary file, fdatasynced, renamed, directory
//! synced) before any batch of its epoch is appended, so after a crash the file never lacks
//! an epoch the log holds batches of. The file lives in the partition directory
//! ([`LEADER_EPOCHS_FILE`]); a missing or damaged file is an empty cache (logged).

use std::path::Path;

use crate::io::Storage;
use crate::log::segment::{read_whole, write_index_file};

/// Name of the leader-epoch file in a partition directory.
pub const LEADER_EPOCHS_FILE: &str = "leader-epochs";
const MAGIC: [u8; 4] = *b"TLLE";
const VERSION: u8 = 1;
/// Most entries kept: older ones are dropped first (a partition that changed leader this
/// often keeps the recent history, which is what truncation needs).
pub const LEADER_EPOCHS_MAX: usize = 4096;

/// Kafka's "no epoch" (`UNDEFINED_EPOCH`) and "no offset" answers.
pub const UNDEFINED: i64 = -1;

/// `(epoch, start offset)` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(u32, u64)>,
}

impl LeaderEpochs {
    /// The latest epoch and its start.
    pub fn latest(&self) -> Option<(u32, u64)> {
        self.entries.last().copied()
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    /// Records that `epoch` starts at `start`. An epoch not above the latest is ignored
    /// (returns false); entries starting at or after `start` are dropped first (they belong
    /// to a suffix that was truncated).
    pub fn assign(&mut self, epoch: u32, start: u64) -> bool {
        if self.latest().is_some_and(|(e, _)| epoch <= e) {
            return false;
        }
        self.entries.retain(|&(_, s)| s < start);
        if self.latest().is_some_and(|(e, _)| epoch <= e) {
            return false;
        }
        self.entries.push((epoch, start));
        if self.entries.len() > LEADER_EPOCHS_MAX {
            let extra = self.entries.len() - LEADER_EPOCHS_MAX;
            self.entries.drain(..extra);
        }
        true
    }

    /// Drops the entries of epochs that start at or after `offset` (the log was cut there).
    pub fn truncate_from(&mut self, offset: u64) {
        self.entries.retain(|&(_, s)| s < offset);
    }

    /// Kafka's answer to OffsetForLeaderEpoch for `requested`, given the log end: the largest
    /// epoch at or below it, and the offset where the next epoch starts (the log end for the
    /// latest epoch). `(UNDEFINED, UNDEFINED)` for an epoch above every known one, or with no
    /// entries.
    pub fn end_offset_for(&self, requested: i64, log_end: u64) -> (i64, i64) {
        let Some((latest, _)) = self.latest() else {
            return (UNDEFINED, UNDEFINED);
        };
        if requested < 0 {
            return (UNDEFINED, UNDEFINED);
        }
        if requested == i64::from(latest) {
            return (requested, log_end as i64);
        }
        let Some(&(_, higher_start)) = self
            .entries
            .iter()
            .find(|&&(e, _)| i64::from(e) > requested)
        else {
            return (UNDEFINED, UNDEFINED);
        };
        let floor = self
            .entries
            .iter()
            .rev()
            .find(|&&(e, _)| i64::from(e) <= requested)
            .map_or(requested, |&(e, _)| i64::from(e));
        (floor, higher_start as i64)
    }

    /// The file's bytes: magic, version, count, entries, CRC-32C of all before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.entries.len() * 12 + 4);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (epoch, start) in &self.entries {
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&start.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes [`encode`](Self::encode)'s bytes; `None` for anything else (including entries
    /// out of order).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 13 || bytes[..4] != MAGIC || bytes[4] != VERSION {
            return None;
        }
        let n = u32::from_le_bytes(bytes[5..9].try_into().ok()?) as usize;
        if n > LEADER_EPOCHS_MAX {
            return None;
        }
        let end = 9usize.checked_add(n.checked_mul(12)?)?;
        let crc = u32::from_le_bytes(bytes.get(end..end + 4)?.try_into().ok()?);
        if bytes.len() != end + 4 || crc32c::crc32c(&bytes[..end]) != crc {
            return None;
        }
        let mut entries: Vec<(u32, u64)> = Vec::with_capacity(n);
        for i in 0..n {
            let at = 9 + i * 12;
            let epoch = u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?);
            let start = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().ok()?);
            if entries
                .last()
                .is_some_and(|&(e, s)| epoch <= e || start < s)
            {
                return None;
            }
            entries.push((epoch, start));
        }
        Some(LeaderEpochs { entries })
    }

    /// Reads the file in `dir` (empty when missing; logged and empty when damaged).
    pub async fn load<S: Storage>(storage: &S, dir: &Path) -> Self {
        let path = dir.join(LEADER_EPOCHS_FILE);
        match read_whole(storage, &path).await {
            Ok(bytes) => LeaderEpochs::decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(),
                    "unreadable leader-epoch file: ignored (epochs are learnt again)");
                LeaderEpochs::default()
            }),
            Err(_) => LeaderEpochs::default(),
        }
    }

    /// Makes this cache the file in `dir`, durably (temporary file, fdatasync, rename,
    /// directory sync).
    ///
    /// # Errors
    /// The I/O error; the previous file is then still in place.
    pub async fn persist<S: Storage>(&self, storage: &S, dir: &Path) -> std::io::Result<()> {
        write_index_file(storage, &dir.join(LEADER_EPOCHS_FILE), &self.encode()).await?;
        storage.sync_dir(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Kafka's answers (LeaderEpochFileCache.endOffsetFor): the latest epoch ends at the log
    /// end, an older one where the next starts (naming the largest epoch at or below it), an
    /// epoch before the first where the first starts, one above every epoch is undefined.
    #[test]
    fn end_offsets_follow_kafka() {
        let mut epochs = LeaderEpochs::default();
        assert_eq!(epochs.end_offset_for(0, 10), (UNDEFINED, UNDEFINED));
        assert!(epochs.assign(2, 0));
        assert!(epochs.assign(4, 100));
        assert!(epochs.assign(7, 250));
        assert!(!epochs.assign(7, 300), "not above the latest");
        assert_eq!(epochs.end_offset_for(7, 400), (7, 400));
        assert_eq!(epochs.end_offset_for(4, 400), (4, 250));
        assert_eq!(epochs.end_offset_for(5, 400), (4, 250));
        assert_eq!(epochs.end_offset_for(2, 400), (2, 100));
        assert_eq!(epochs.end_offset_for(1, 400), (1, 0));
        assert_eq!(epochs.end_offset_for(8, 400), (UNDEFINED, UNDEFINED));
        assert_eq!(epochs.end_offset_for(-1, 400), (UNDEFINED, UNDEFINED));
        epochs.truncate_from(250);
        assert_eq!(epochs.latest(), Some((4, 100)));
        // A new epoch starting below an entry replaces the truncated suffix.
        assert!(epochs.assign(9, 50));
        assert_eq!(epochs.entries(), &[(2, 0), (9, 50)]);
    }

    proptest! {
        /// Whatever is assigned, entries stay ordered and the file round-trips; damage and
        /// junk are refused without panicking.
        #[test]
        fn entries_stay_ordered_and_the_file_round_trips(
            steps in proptest::collection::vec((0u32..50, 0u64..1000, any::<bool>()), 0..60),
            flip in any::<prop::sample::Index>(),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut epochs = LeaderEpochs::default();
            for (epoch, start, cut) in steps {
                if cut {
                    epochs.truncate_from(start);
                } else {
                    epochs.assign(epoch, start);
                }
                let e = epochs.entries();
                prop_assert!(e.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            }
            let bytes = epochs.encode();
            prop_assert_eq!(LeaderEpochs::decode(&bytes), Some(epochs.clone()));
            let mut damaged = bytes.clone();
            let i = flip.index(damaged.len());
            damaged[i] ^= 1;
            prop_assert_eq!(LeaderEpochs::decode(&damaged), None);
            let _ = LeaderEpochs::decode(&junk);
        }
    }
}
