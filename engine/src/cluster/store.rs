//! The metadata Raft's storage: raft-rs's [`raft::Storage`] over an in-memory copy of the
//! log, made durable in an internal partition log (`<data-dir>/__raft/0`), so it inherits the
//! engine's CRCs, fdatasync, recovery and simulator coverage instead of a second file format.
//!
//! Each durable record is one of: an entry (`e`), the hard state (`h`) or a snapshot (`s`),
//! appended with `Durability::Synced` before raft-rs is told they are persisted. Replay applies
//! them in order: an entry at index `i` drops every entry at or after `i` first (a new leader
//! overwrote an uncommitted suffix), a snapshot drops the entries it covers. Compaction
//! appends the snapshot, the hard state and the entries after it, then drops the whole
//! segments below (as the other internal logs do), so a crash at any point replays to the
//! same log.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use tidelog_wire::batch::BatchBuilder;

use super::codec::{self, Reader, Writer};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::io::{Clock, Storage};
use crate::log::{Durability, PartitionLog};

/// Directory of the metadata Raft log inside the data directory (a name no topic can have).
pub const RAFT_DIR: &str = "__raft";

const ENTRY: &[u8] = b"e";
const HARD_STATE: &[u8] = b"h";
const SNAPSHOT: &[u8] = b"s";

/// Why the Raft log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The underlying log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stored record does not decode.
    #[error("metadata raft log: {0}")]
    Corrupt(String),
}

#[derive(Debug, Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, dense: `entries[0].index == snapshot index + 1`.
    entries: Vec<Entry>,
}

impl Core {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    /// Appends entries, first dropping any at or after the first new one's index.
    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snapshot_index() {
            return Err(format!(
                "entry {} at or below the snapshot {}",
                first.index,
                self.snapshot_index()
            ));
        }
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "entry {} leaves a gap after {}",
                first.index,
                self.last_index()
            ));
        }
        let keep = (first.index - self.snapshot_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        let index = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        // Keep the entries after it only if the log agrees at its index.
        let agrees = self
            .entries
            .iter()
            .find(|e| e.index == index)
            .is_some_and(|e| e.term == meta.term);
        if agrees {
            self.entries.retain(|e| e.index > index);
        } else {
            self.entries.clear();
        }
        self.snapshot = snapshot;
    }
}

/// raft-rs's view of the log (shared with [`RaftLog`], which makes it durable). `!Send`.
#[derive(Clone, Default)]
pub struct RaftStore {
    core: Rc<RefCell<Core>>,
}

fn unavailable<T>() -> raft::Result<T> {
    Err(raft::Error::Store(StorageError::Unavailable))
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.borrow();
        Ok(RaftState::new(
            core.hard_state.clone(),
            core.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.borrow();
        let first = core.snapshot_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 || low > high {
            return unavailable();
        }
        let from = (low - first) as usize;
        let to = (high - first) as usize;
        let mut out: Vec<Entry> = core.entries[from..to].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core.borrow();
        let snap = core.snapshot_index();
        if idx == snap {
            return Ok(core.snapshot.get_metadata().term);
        }
        if idx < snap {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match core.entries.get((idx - snap - 1) as usize) {
            Some(e) => Ok(e.term),
            None => unavailable(),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The controller compacts at applied indexes, so the stored snapshot is always
        // usable; a follower too far behind gets it and then the entries after.
        Ok(self.core.borrow().snapshot.clone())
    }
}

/// The durable side: the internal log behind a [`RaftStore`].
pub struct RaftLog<S: Storage, C: Clock> {
    log: PartitionLog<S, C>,
    store: RaftStore,
}

impl<S: Storage, C: Clock> RaftLog<S, C> {
    /// Opens (or creates) the Raft log under `data_dir` and replays it. A new log starts
    /// with `voters` as its configuration (every node of a new cluster starts the same).
    ///
    /// # Errors
    /// The log's, or a record that does not decode or breaks the log's order.
    pub async fn open(
        storage: S,
        clock: C,
        data_dir: &Path,
        voters: &[u64],
    ) -> Result<Self, StoreError> {
        let config = LogConfig {
            segment_bytes: 16 << 20,
            retention_ms: None,
            retention_bytes: None,
            preallocate_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let dir = data_dir.join(RAFT_DIR).join("0");
        let log = PartitionLog::open(storage, clock, &dir, config).await?;
        let mut core = Core::default();
        let mut failure: Option<String> = None;
        log.replay(|record| {
            if failure.is_some() {
                return;
            }
            let key = record.key.unwrap_or_default();
            let result = match key {
                ENTRY => {
                    let mut r = Reader::new(record.value, "raft log entry");
                    codec::get_entry(&mut r)
                        .and_then(|e| r.finish().map(|()| e))
                        .map_err(|e| e.to_string())
                        .and_then(|e| core.append(&[e]))
                }
                HARD_STATE => {
                    let mut r = Reader::new(record.value, "raft hard state");
                    codec::get_hard_state(&mut r)
                        .and_then(|h| r.finish().map(|()| h))
                        .map(|h| core.hard_state = h)
                        .map_err(|e| e.to_string())
                }
                SNAPSHOT => {
                    let mut r = Reader::new(record.value, "raft snapshot");
                    codec::get_snapshot(&mut r)
                        .and_then(|s| r.finish().map(|()| s))
                        .map(|s| core.apply_snapshot(s))
                        .map_err(|e| e.to_string())
                }
                _ => Err("unknown record".into()),
            };
            if let Err(e) = result {
                failure = Some(e);
            }
        })
        .await?;
        if let Some(e) = failure {
            return Err(StoreError::Corrupt(e));
        }
        if core.conf_state.voters.is_empty() {
            core.conf_state.voters = voters.to_vec();
        }
        // The commit index never points past the log (raft-rs would refuse to start).
        core.hard_state.commit = core.hard_state.commit.min(core.last_index());
        Ok(RaftLog {
            log,
            store: RaftStore {
                core: Rc::new(RefCell::new(core)),
            },
        })
    }

    /// raft-rs's view of this log.
    pub fn store(&self) -> RaftStore {
        self.store.clone()
    }

    /// The snapshot and the committed entries after it, as replayed (what the state machine
    /// is rebuilt from at open).
    pub fn committed(&self) -> (Snapshot, Vec<Entry>) {
        let core = self.store.core.borrow();
        let commit = core.hard_state.commit;
        let entries = core
            .entries
            .iter()
            .filter(|e| e.index <= commit)
            .cloned()
            .collect();
        (core.snapshot.clone(), entries)
    }

    /// Makes `entries` and `hard_state` durable (in that order) and then visible to raft-rs.
    ///
    /// # Errors
    /// The log's; the in-memory log is changed only after the write succeeded, and a failed
    /// write poisons the underlying log (every later persist fails: the node stops voting
    /// and acknowledging rather than forget what it promised).
    pub async fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        let mut records: Vec<(&[u8], Vec<u8>)> = Vec::with_capacity(entries.len() + 1);
        for e in entries {
            let mut w = Writer::with_capacity(32 + e.data.len());
            codec::put_entry(&mut w, e);
            records.push((ENTRY, w.out));
        }
        if let Some(h) = hard_state {
            let mut w = Writer::with_capacity(24);
            codec::put_hard_state(&mut w, h);
            records.push((HARD_STATE, w.out));
        }
        self.append(&records).await?;
        let mut core = self.store.core.borrow_mut();
        core.append(entries).map_err(StoreError::Corrupt)?;
        if let Some(h) = hard_state {
            core.hard_state = h.clone();
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader (durable first).
    ///
    /// # Errors
    /// As [`persist`](Self::persist).
    pub async fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut w = Writer::with_capacity(64 + snapshot.data.len());
        codec::put_snapshot(&mut w, snapshot);
        self.append(&[(SNAPSHOT, w.out)]).await?;
        self.store
            .core
            .borrow_mut()
            .apply_snapshot(snapshot.clone());
        Ok(())
    }

    /// A broker-only node's copy of the committed metadata: the snapshot becomes the log's
    /// only content (durable before it returns; the older records are dropped after).
    ///
    /// # Errors
    /// As [`persist`](Self::persist); nothing is dropped then.
    pub async fn keep_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let mut snapshot = Snapshot::default();
        snapshot.data = data.into();
        snapshot.mut_metadata().index = index;
        let start = self.log.log_end();
        let mut w = Writer::with_capacity(64 + snapshot.data.len());
        codec::put_snapshot(&mut w, &snapshot);
        self.append(&[(SNAPSHOT, w.out)]).await?;
        self.store.core.borrow_mut().apply_snapshot(snapshot);
        self.log.truncate_before(start).await?;
        Ok(())
    }

    /// Replaces the log up to `index` (applied) by a snapshot whose data is `data`, when more
    /// than `threshold` entries precede it: appends the snapshot, the hard state and the
    /// entries after it, then drops the segments below. Returns whether it compacted.
    ///
    /// # Errors
    /// As [`persist`](Self::persist); nothing is dropped then.
    pub async fn compact(
        &self,
        index: u64,
        data: Vec<u8>,
        threshold: u64,
    ) -> Result<bool, StoreError> {
        let (snapshot, hard_state, after) = {
            let core = self.store.core.borrow();
            if index <= core.snapshot_index() + threshold || index > core.last_index() {
                return Ok(false);
            }
            let term = match core
                .entries
                .get((index - core.snapshot_index() - 1) as usize)
            {
                Some(e) => e.term,
                None => return Ok(false),
            };
            let mut snapshot = Snapshot::default();
            snapshot.data = data.into();
            let meta = snapshot.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(core.conf_state.clone());
            let after: Vec<Entry> = core
                .entries
                .iter()
                .filter(|e| e.index > index)
                .cloned()
                .collect();
            (snapshot, core.hard_state.clone(), after)
        };
        let start = self.log.log_end();
        let mut w = Writer::default();
        codec::put_snapshot(&mut w, &snapshot);
        let mut records: Vec<(&[u8], Vec<u8>)> = vec![(SNAPSHOT, w.out)];
        let mut w = Writer::default();
        codec::put_hard_state(&mut w, &hard_state);
        records.push((HARD_STATE, w.out));
        for e in &after {
            let mut w = Writer::default();
            codec::put_entry(&mut w, e);
            records.push((ENTRY, w.out));
        }
        self.append(&records).await?;
        self.store.core.borrow_mut().apply_snapshot(snapshot);
        let dropped = self.log.truncate_before(start).await?;
        tracing::info!(
            index,
            entries_kept = after.len(),
            segments_dropped = dropped,
            "metadata raft log compacted"
        );
        Ok(true)
    }

    /// Appends records as synced batches of at most half the batch limit each.
    async fn append(&self, records: &[(&[u8], Vec<u8>)]) -> Result<(), StoreError> {
        let budget = self.log.config().max_batch_bytes / 2;
        let mut builder = BatchBuilder::new();
        let mut bytes = 0usize;
        for (key, value) in records {
            let size = key.len() + value.len() + 32;
            if bytes > 0 && bytes + size > budget {
                let mut full = std::mem::replace(&mut builder, BatchBuilder::new());
                self.log.append(full.finish(), Durability::Synced).await?;
                bytes = 0;
            }
            builder.push(Some(key), value, 0, &[]);
            bytes += size;
        }
        if bytes > 0 {
            self.log
                .append(builder.finish(), Durability::Synced)
                .await?;
        }
        Ok(())
    }

    /// Flushes and closes the log.
    ///
    /// # Errors
    /// The log's.
    pub async fn close(&self) -> Result<(), StoreError> {
        Ok(self.log.close().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{SimClock, SimDisk};
    use futures_lite::future::block_on;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("{index}@{term}").into_bytes().into();
        e
    }

    fn open(disk: &SimDisk) -> RaftLog<SimDisk, SimClock> {
        block_on(RaftLog::open(
            disk.clone(),
            SimClock::new(0),
            Path::new("/data"),
            &[1, 2, 3],
        ))
        .expect("opens")
    }

    fn hard(term: u64, vote: u64, commit: u64) -> HardState {
        let mut h = HardState::default();
        h.term = term;
        h.vote = vote;
        h.commit = commit;
        h
    }

    /// What was persisted survives a crash exactly, an overwritten suffix stays overwritten,
    /// and a compaction keeps what follows its snapshot.
    #[test]
    fn persisted_entries_and_votes_survive_a_crash_and_overwrites_stick() {
        let disk = SimDisk::new(7);
        let log = open(&disk);
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        block_on(log.persist(&entries, Some(&hard(1, 2, 3)))).unwrap();
        // A new leader in term 2 overwrites 4 and 5.
        block_on(log.persist(&[entry(4, 2)], Some(&hard(2, 3, 3)))).unwrap();
        disk.crash();
        let log = open(&disk);
        let store = log.store();
        let state = store.initial_state().unwrap();
        assert_eq!(state.hard_state, hard(2, 3, 3));
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(store.last_index().unwrap(), 4);
        assert_eq!(store.term(4).unwrap(), 2);
        assert_eq!(store.term(3).unwrap(), 1);
        let (_, committed) = log.committed();
        assert_eq!(committed.len(), 3);
        assert!(block_on(log.compact(3, b"state".to_vec(), 1)).unwrap());
        block_on(log.persist(&[entry(5, 2)], None)).unwrap();
        disk.crash();
        let log = open(&disk);
        let store = log.store();
        assert_eq!(store.first_index().unwrap(), 4);
        assert_eq!(store.last_index().unwrap(), 5);
        assert_eq!(store.term(3).unwrap(), 1, "the snapshot's term");
        assert!(store.term(2).is_err(), "compacted");
        let (snapshot, committed) = log.committed();
        assert_eq!(&snapshot.data[..], b"state");
        assert!(committed.is_empty(), "commit is still 3");
        assert_eq!(
            store
                .entries(4, 6, None, GetEntriesContext::empty(false))
                .unwrap(),
            vec![entry(4, 2), entry(5, 2)]
        );
    }

    /// A vote is never forgotten: without the fdatasync behind `persist`, a crash could lose
    /// it and the node could vote twice in one term. Run over many seeds: each crash may
    /// lose anything unsynced, so this fails if the hard state were written unsynced.
    #[test]
    fn a_persisted_vote_survives_every_crash() {
        for seed in 0..40 {
            let disk = SimDisk::new(seed);
            let log = open(&disk);
            block_on(log.persist(&[entry(1, 1)], Some(&hard(1, 2, 0)))).unwrap();
            block_on(log.persist(&[], Some(&hard(2, 3, 1)))).unwrap();
            disk.crash();
            let log = open(&disk);
            assert_eq!(
                log.store().initial_state().unwrap().hard_state,
                hard(2, 3, 1),
                "seed {seed}"
            );
        }
    }
}
