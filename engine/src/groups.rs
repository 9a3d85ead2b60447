//! Committed consumer-group offsets.
//!
//! Groups hash onto [`OFFSET_SLOTS`] slots (`crc32c(group) % OFFSET_SLOTS`); each slot is an
//! internal partition log `<data-dir>/__offsets/<slot>/` placed on shards like any partition,
//! so the coordinator of a group is the shard owning its slot, and a different shard count
//! only moves slots, never loses commits. A commit is one record per partition, keyed
//! `group NUL topic NUL partition`, valued `offset (i64 LE) | metadata`, appended with
//! `Durability::Synced`; opening a slot replays it, the last record of a key winning.
//!
//! In a cluster the slots are the partitions of the internal topic [`OFFSETS_TOPIC`], placed
//! and replicated like any topic's (same directories): the node leading a slot's partition
//! coordinates its groups, with a store laid [`over`](OffsetStore::over) the replicated log,
//! and a commit is answered once every in-sync replica has it. Followers only replicate the
//! log; a new leader replays it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use tidelog_wire::batch::BatchBuilder;

use crate::config::LogConfig;
use crate::error::LogError;
use crate::io::{Clock, Storage};
use crate::log::{Durability, PartitionLog};

/// Number of offset slots. Fixed forever: changing it would move groups between slots.
pub const OFFSET_SLOTS: u32 = 16;
/// Directory of the offset slots inside the data directory.
pub const OFFSETS_DIR: &str = "__offsets";
/// In a cluster, the internal replicated topic whose partitions are the offset slots (its
/// partition directories are the slot directories).
pub const OFFSETS_TOPIC: &str = OFFSETS_DIR;
/// Most replicas of an offsets slot in a cluster (fewer when the cluster has fewer nodes).
pub const OFFSETS_REPLICATION_MAX: u16 = 3;
/// Longest group name accepted.
pub const GROUP_BYTES_MAX: usize = 255;
/// Longest commit metadata kept.
pub const METADATA_BYTES_MAX: usize = 4096;

/// The slot holding a group's offsets.
pub fn slot_of(group: &str) -> u32 {
    crc32c::crc32c(group.as_bytes()) % OFFSET_SLOTS
}

/// A committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to consume.
    pub offset: i64,
    /// Free text the consumer attached.
    pub metadata: String,
}

type Key = (String, String, i32);

/// One position a group commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// The topic.
    pub topic: String,
    /// The partition (a wire number; validated by the caller).
    pub partition: i32,
    /// The next offset the group will read.
    pub offset: i64,
    /// Client metadata, truncated to [`METADATA_BYTES_MAX`] bytes when stored.
    pub metadata: String,
}

/// A committed position of a group on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPosition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What was committed.
    pub committed: Committed,
}

/// The configuration of [`OFFSETS_TOPIC`]: one partition per slot, never deleted by
/// retention (expiry and compaction delete what is superseded), slot-sized segments.
pub fn offsets_topic_config() -> crate::meta::TopicConfig {
    crate::meta::TopicConfig {
        partitions: OFFSET_SLOTS,
        retention_ms: crate::meta::Limit::Unlimited,
        retention_bytes: crate::meta::Limit::Unlimited,
        segment_bytes: Some(SLOT_SEGMENT_BYTES),
        segment_ms: None,
        overrides: Default::default(),
    }
}

/// One slot's committed offsets.
pub struct OffsetStore<S: Storage, C: Clock> {
    log: std::rc::Rc<PartitionLog<S, C>>,
    /// Whether the store opened the log (a single node's slot) and closes it; a cluster's
    /// replicated slot log belongs to its partition's shard.
    owns_log: bool,
    clock: C,
    offsets: RefCell<HashMap<Key, Committed>>,
    /// Per group, when it last committed (ms since the epoch): what offset retention
    /// measures. Commits written before this was recorded count from the slot's open.
    last_commit_ms: RefCell<HashMap<String, i64>>,
    /// Commits and expiry's deletions enter shared; a compaction's snapshot exclusive (an
    /// older value appended after a newer one would win at replay), and so does forgetting a
    /// deleted topic (it waits for the commits in flight: see `commit_where`).
    writes: crate::sync::SharedGate,
}

/// Segment size of an offsets slot: compaction can drop a segment once it is sealed, so this
/// bounds the superseded bytes a slot keeps (and replays at start).
const SLOT_SEGMENT_BYTES: u64 = 16 << 20;

/// A slot is compacted when its log is this many times larger than its live positions.
const COMPACT_GARBAGE_RATIO: u64 = 4;

fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    format!("{group}\0{topic}\0{partition}").into_bytes()
}

fn decode_key(key: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.splitn(3, '\0');
    let group = parts.next()?.to_owned();
    let topic = parts.next()?.to_owned();
    let partition = parts.next()?.parse().ok()?;
    Some((group, topic, partition))
}

impl<S: Storage, C: Clock> OffsetStore<S, C> {
    /// Opens a slot's log and replays it.
    ///
    /// # Errors
    /// Errors of the slot's log.
    pub async fn open(storage: S, clock: C, data_dir: &Path, slot: u32) -> Result<Self, LogError> {
        let config = LogConfig {
            segment_bytes: SLOT_SEGMENT_BYTES,
            retention_ms: None,
            retention_bytes: None,
            preallocate_bytes: 1 << 20,
            ..LogConfig::default()
        };
        Self::open_with(storage, clock, data_dir, slot, config).await
    }

    async fn open_with(
        storage: S,
        clock: C,
        data_dir: &Path,
        slot: u32,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        let dir = data_dir.join(OFFSETS_DIR).join(slot.to_string());
        let log = PartitionLog::open(storage, clock.clone(), &dir, config).await?;
        Self::load(std::rc::Rc::new(log), true, clock).await
    }

    /// A store over a slot log opened elsewhere (a cluster's replicated slot, which this node
    /// now leads): replays it, and compacts it if due. Closing the store leaves the log open.
    ///
    /// # Errors
    /// Errors of the slot's log.
    pub async fn over(log: std::rc::Rc<PartitionLog<S, C>>, clock: C) -> Result<Self, LogError> {
        Self::load(log, false, clock).await
    }

    /// Whether the store works over this very log (not one opened since in its place).
    pub fn is_over(&self, log: &std::rc::Rc<PartitionLog<S, C>>) -> bool {
        std::rc::Rc::ptr_eq(&self.log, log)
    }

    async fn load(
        log: std::rc::Rc<PartitionLog<S, C>>,
        owns_log: bool,
        clock: C,
    ) -> Result<Self, LogError> {
        let opened_ms = clock.now_ms();
        let mut offsets = HashMap::new();
        let mut last_commit_ms: HashMap<String, i64> = HashMap::new();
        log.replay(|record| {
            let Some(key) = record.key.and_then(decode_key) else {
                return;
            };
            if record.value.len() >= 8 {
                let at = if record.timestamp > 0 {
                    record.timestamp
                } else {
                    opened_ms
                };
                let last = last_commit_ms.entry(key.0.clone()).or_insert(at);
                *last = (*last).max(at);
            }
            // An empty value is a tombstone: the position was deleted with its topic.
            let Some(head) = record.value.get(..8) else {
                offsets.remove(&key);
                return;
            };
            let value = i64::from_le_bytes(head.try_into().unwrap_or([0; 8]));
            let metadata = String::from_utf8_lossy(&record.value[8..]).into_owned();
            offsets.insert(
                key,
                Committed {
                    offset: value,
                    metadata,
                },
            );
        })
        .await?;
        last_commit_ms.retain(|group, _| offsets.keys().any(|(g, _, _)| g == group));
        let store = OffsetStore {
            log,
            owns_log,
            clock,
            offsets: RefCell::new(offsets),
            last_commit_ms: RefCell::new(last_commit_ms),
            writes: crate::sync::SharedGate::default(),
        };
        store.compact_if_due().await?;
        Ok(store)
    }

    /// Commits positions of one group; durable when this returns.
    ///
    /// # Errors
    /// Errors of the slot's log.
    pub async fn commit(&self, group: &str, offsets: &[OffsetCommit]) -> Result<(), LogError> {
        self.commit_where(group, offsets, |_| true)
            .await
            .map(|_| ())
    }

    /// [`commit`](Self::commit), only when `exists` holds for every topic committed to, as
    /// checked inside the slot's write gate; `Ok(false)`, with nothing written, otherwise. A
    /// topic's deletion removes it from what `exists` sees before it forgets the topic's
    /// positions, and [`forget_topics`](Self::forget_topics) waits for the commits inside the
    /// gate: so a commit racing the deletion either lands before the tombstones (which then
    /// cover it) or is refused, never lands after them.
    ///
    /// # Errors
    /// Errors of the slot's log.
    pub async fn commit_where(
        &self,
        group: &str,
        offsets: &[OffsetCommit],
        exists: impl Fn(&str) -> bool,
    ) -> Result<bool, LogError> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let _turn = self.writes.shared().await;
        if !offsets.iter().all(|commit| exists(&commit.topic)) {
            return Ok(false);
        }
        self.write_commits(group, offsets).await?;
        Ok(true)
    }

    /// Appends and applies commits; the caller holds the write gate shared.
    async fn write_commits(&self, group: &str, offsets: &[OffsetCommit]) -> Result<(), LogError> {
        let now_ms = self.clock.now_ms();
        let mut builder = BatchBuilder::new();
        for commit in offsets {
            let mut value = commit.offset.to_le_bytes().to_vec();
            let metadata = truncate_utf8(&commit.metadata, METADATA_BYTES_MAX);
            value.extend_from_slice(metadata.as_bytes());
            builder.push(
                Some(&encode_key(group, &commit.topic, commit.partition)),
                &value,
                now_ms,
                &[],
            );
        }
        self.log
            .append(builder.finish(), Durability::Synced)
            .await?;
        self.last_commit_ms
            .borrow_mut()
            .insert(group.to_owned(), now_ms);
        let mut map = self.offsets.borrow_mut();
        for commit in offsets {
            let committed = Committed {
                offset: commit.offset,
                metadata: truncate_utf8(&commit.metadata, METADATA_BYTES_MAX).to_owned(),
            };
            map.insert(
                (group.to_owned(), commit.topic.clone(), commit.partition),
                committed,
            );
        }
        Ok(())
    }

    /// Deletes, durably, every committed position on a topic for which `gone` holds (a
    /// deleted topic: a topic created later under its name must not inherit them). Returns how
    /// many were deleted. Waits for the commits in flight first (the write gate, exclusive),
    /// so that none lands after its tombstones (see [`commit_where`](Self::commit_where)).
    ///
    /// # Errors
    /// Errors of the slot's log; the positions not yet deleted stay.
    pub async fn forget_topics(&self, gone: impl Fn(&str) -> bool) -> Result<usize, LogError> {
        let _alone = self.writes.exclusive_wait().await;
        self.write_tombstones(|_, topic| gone(topic), None).await
    }

    /// Deletes, durably, committed positions of `group`: all of them (DeleteGroups,
    /// `partitions` `None`), or those on the given (topic, partition)s (OffsetDelete).
    /// Commits in flight land first (the write gate, exclusive), so none outlives its
    /// tombstone. Returns how many went.
    ///
    /// # Errors
    /// Errors of the slot's log; the positions not yet deleted stay.
    pub async fn delete_positions(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<usize, LogError> {
        let _alone = self.writes.exclusive_wait().await;
        let doomed: Vec<Key> = self
            .offsets
            .borrow()
            .keys()
            .filter(|(g, topic, partition)| {
                g == group
                    && partitions.is_none_or(|wanted| {
                        wanted.iter().any(|(t, p)| t == topic && p == partition)
                    })
            })
            .cloned()
            .collect();
        let n = self.write_tombstones(|_, _| true, Some(&doomed)).await?;
        if partitions.is_none() {
            self.last_commit_ms.borrow_mut().remove(group);
        }
        Ok(n)
    }

    /// Up to `max` committed positions (group, topic, partition, offset), and how many more
    /// there are.
    pub fn positions(&self, max: usize) -> (Vec<(String, String, u32, i64)>, usize) {
        let offsets = self.offsets.borrow();
        let out: Vec<_> = offsets
            .iter()
            .filter_map(|((g, t, p), c)| {
                Some((g.clone(), t.clone(), u32::try_from(*p).ok()?, c.offset))
            })
            .take(max)
            .collect();
        let dropped = offsets.len().saturating_sub(out.len());
        (out, dropped)
    }

    /// Up to `max` groups with committed positions here.
    pub fn groups(&self, max: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (g, _, _) in self.offsets.borrow().keys() {
            if out.last() != Some(g) {
                if out.len() == max {
                    break;
                }
                out.push(g.clone());
            }
        }
        out
    }

    /// Whether `group` has any committed position here.
    pub fn has_positions(&self, group: &str) -> bool {
        self.offsets.borrow().keys().any(|(g, _, _)| g == group)
    }

    /// Deletes, durably, the committed positions of every group that has not committed for
    /// `retention_ms` and for which `live` is false (no members: Kafka's
    /// `offsets.retention.minutes` for empty groups). Returns how many positions went.
    ///
    /// # Errors
    /// Errors of the slot's log; what is not yet deleted stays.
    pub async fn expire(
        &self,
        retention_ms: i64,
        live: impl Fn(&str) -> bool,
    ) -> Result<usize, LogError> {
        let now_ms = self.clock.now_ms();
        let expired: std::collections::HashSet<String> = self
            .last_commit_ms
            .borrow()
            .iter()
            .filter(|(group, at)| at.saturating_add(retention_ms) <= now_ms && !live(group))
            .map(|(group, _)| group.clone())
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let n = self.forget(|group, _| expired.contains(group)).await?;
        let mut times = self.last_commit_ms.borrow_mut();
        for group in &expired {
            times.remove(group);
        }
        Ok(n)
    }

    /// Compacts the slot when its log is much larger than its live positions: appends every
    /// live position again (a snapshot) and deletes the whole segments below it, so disk use
    /// and start-up replay stay proportional to the live state, not to uptime. Commits wait
    /// while the snapshot is written (an older value appended after a newer one would win
    /// at replay). Returns whether it compacted.
    ///
    /// # Errors
    /// Errors of the slot's log (nothing is deleted then).
    pub async fn compact_if_due(&self) -> Result<bool, LogError> {
        let live_bytes: u64 = self
            .offsets
            .borrow()
            .iter()
            .map(|((g, t, _), c)| (g.len() + t.len() + c.metadata.len() + 48) as u64)
            .sum();
        let size = self.log.size_bytes();
        if self.log.segment_count() < 2 || size <= COMPACT_GARBAGE_RATIO * live_bytes.max(1 << 20) {
            return Ok(false);
        }
        let Some(_exclusive) = self.writes.exclusive().await else {
            return Ok(false);
        };
        let dropped = self.write_snapshot().await?;
        tracing::info!(
            dir = %self.log.dir().display(),
            bytes_before = size,
            bytes_after = self.log.size_bytes(),
            segments_dropped = dropped,
            "offsets slot compacted"
        );
        Ok(true)
    }

    async fn write_snapshot(&self) -> Result<usize, LogError> {
        let live: Vec<(Vec<u8>, Vec<u8>, i64)> = {
            let times = self.last_commit_ms.borrow();
            self.offsets
                .borrow()
                .iter()
                .map(|((group, topic, partition), committed)| {
                    let mut value = committed.offset.to_le_bytes().to_vec();
                    value.extend_from_slice(committed.metadata.as_bytes());
                    let at = times.get(group).copied().unwrap_or(0);
                    (encode_key(group, topic, *partition), value, at)
                })
                .collect()
        };
        let start = self.log.append_snapshot(&live).await?;
        self.log.truncate_before(start).await
    }

    async fn forget(&self, doomed: impl Fn(&str, &str) -> bool) -> Result<usize, LogError> {
        let _turn = self.writes.shared().await;
        self.write_tombstones(doomed, None).await
    }

    /// Appends tombstones for every position for which `doomed(group, topic)` holds (or
    /// exactly the `keys` given) and removes them; the caller holds the write gate.
    async fn write_tombstones(
        &self,
        doomed: impl Fn(&str, &str) -> bool,
        keys: Option<&[Key]>,
    ) -> Result<usize, LogError> {
        /// Tombstones per batch: keys are at most ~520 bytes, so a batch stays far below the
        /// slot's batch limit.
        const TOMBSTONES_PER_BATCH: usize = 1000;
        let doomed: Vec<Key> = match keys {
            Some(keys) => keys.to_vec(),
            None => self
                .offsets
                .borrow()
                .keys()
                .filter(|(group, topic, _)| doomed(group, topic))
                .cloned()
                .collect(),
        };
        for chunk in doomed.chunks(TOMBSTONES_PER_BATCH) {
            let mut builder = BatchBuilder::new();
            for (group, topic, partition) in chunk {
                builder.push(Some(&encode_key(group, topic, *partition)), &[], 0, &[]);
            }
            self.log
                .append(builder.finish(), Durability::Synced)
                .await?;
            let mut map = self.offsets.borrow_mut();
            for key in chunk {
                map.remove(key);
            }
        }
        Ok(doomed.len())
    }

    /// The committed position of a group on a partition.
    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        let key = (group.to_owned(), topic.to_owned(), partition);
        self.offsets.borrow().get(&key).cloned()
    }

    /// Every partition a group has committed, with its position, sorted by topic and
    /// partition (OffsetFetch with `topics = null`).
    pub fn committed_by(&self, group: &str) -> Vec<GroupPosition> {
        let mut found: Vec<GroupPosition> = self
            .offsets
            .borrow()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, topic, partition), committed)| GroupPosition {
                topic: topic.clone(),
                partition: *partition,
                committed: committed.clone(),
            })
            .collect();
        found.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        found
    }

    /// The end of the slot's log: every commit made so far is below it.
    pub fn log_end(&self) -> u64 {
        self.log.log_end()
    }

    /// Flushes and closes the slot (a log the store did not open stays open).
    ///
    /// # Errors
    /// As [`PartitionLog::close`].
    pub async fn close(&self) -> Result<(), LogError> {
        if self.owns_log {
            self.log.close().await?;
        }
        Ok(())
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{SimClock, SimDisk};
    use futures_lite::future::block_on;

    /// Opens (recovering) offsets slot `slot` under `/d` on `disk`.
    fn open_slot(disk: &SimDisk, slot: u32) -> OffsetStore<SimDisk, SimClock> {
        block_on(OffsetStore::open(
            disk.clone(),
            SimClock::new(0),
            Path::new("/d"),
            slot,
        ))
        .expect("open")
    }

    #[test]
    fn commits_survive_a_crash_and_the_last_one_wins() {
        let disk = SimDisk::new(3);
        let open = || open_slot(&disk, 5);
        let store = open();
        let commit = |offset: i64| {
            vec![OffsetCommit {
                topic: "events".into(),
                partition: 2,
                offset,
                metadata: "m".into(),
            }]
        };
        block_on(store.commit("g", &commit(10))).expect("commit");
        block_on(store.commit("g", &commit(42))).expect("commit");
        disk.crash();
        let reopened = open();
        assert_eq!(
            reopened.fetch("g", "events", 2),
            Some(Committed {
                offset: 42,
                metadata: "m".into()
            })
        );
        assert_eq!(reopened.fetch("g", "events", 1), None);
        assert_eq!(reopened.fetch("other", "events", 2), None);
    }

    #[test]
    fn a_commit_racing_its_topics_deletion_lands_before_the_tombstones_or_not_at_all() {
        use std::future::Future;
        let disk = SimDisk::new(5);
        let open = || open_slot(&disk, 2);
        let store = open();
        let at = |offset: i64| {
            [OffsetCommit {
                topic: "doomed".into(),
                partition: 0,
                offset,
                metadata: String::new(),
            }]
        };
        block_on(store.commit("g", &at(1))).expect("commit");
        // A commit that passed its check is inside the gate when the deletion forgets.
        let in_flight = block_on(store.writes.shared());
        let mut forget = std::pin::pin!(store.forget_topics(|t| t == "doomed"));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(
            forget.as_mut().poll(&mut cx).is_pending(),
            "the deletion waits for the commit in flight"
        );
        block_on(store.write_commits("g", &at(2))).expect("the in-flight commit lands");
        drop(in_flight);
        let std::task::Poll::Ready(forgotten) = forget.as_mut().poll(&mut cx) else {
            panic!("the deletion goes on once the commit is out");
        };
        assert_eq!(forgotten.expect("forget"), 1);
        assert_eq!(
            store.fetch("g", "doomed", 0),
            None,
            "the tombstone covers it"
        );
        // A commit checked after the topic is gone is refused, and writes nothing.
        let committed = block_on(store.commit_where("g", &at(3), |t| t != "doomed"));
        assert!(!committed.expect("no error"));
        disk.crash();
        assert_eq!(
            open().fetch("g", "doomed", 0),
            None,
            "nothing of it comes back"
        );
    }

    #[test]
    fn positions_of_a_forgotten_topic_stay_deleted_after_a_crash() {
        let disk = SimDisk::new(4);
        let open = || open_slot(&disk, 1);
        let store = open();
        let at = |topic: &str, offset: i64| OffsetCommit {
            topic: topic.into(),
            partition: 0,
            offset,
            metadata: String::new(),
        };
        block_on(store.commit("g", &[at("old", 7), at("kept", 3)])).expect("commit");
        block_on(store.commit("h", &[at("old", 9)])).expect("commit");
        let forgotten = block_on(store.forget_topics(|t| t == "old")).expect("forget");
        assert_eq!(forgotten, 2);
        assert_eq!(store.fetch("g", "old", 0), None);
        disk.crash();
        let reopened = open();
        assert_eq!(
            reopened.fetch("g", "old", 0),
            None,
            "the tombstone was durable"
        );
        assert_eq!(reopened.fetch("h", "old", 0), None);
        assert_eq!(reopened.fetch("g", "kept", 0).map(|c| c.offset), Some(3));
        // A later commit on a topic of that name is a new position.
        block_on(reopened.commit("g", &[at("old", 1)])).expect("commit");
        disk.crash();
        assert_eq!(open().fetch("g", "old", 0).map(|c| c.offset), Some(1));
    }

    #[test]
    fn offsets_of_groups_idle_past_retention_expire_unless_live() {
        let disk = SimDisk::new(5);
        let clock = SimClock::new(1_000_000);
        let open = |clock: &SimClock| {
            block_on(OffsetStore::open(
                disk.clone(),
                clock.clone(),
                Path::new("/d"),
                2,
            ))
            .expect("open")
        };
        let store = open(&clock);
        let at = |offset: i64| {
            vec![OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset,
                metadata: String::new(),
            }]
        };
        block_on(store.commit("idle", &at(5))).expect("commit");
        block_on(store.commit("busy", &at(6))).expect("commit");
        block_on(store.commit("live", &at(7))).expect("commit");
        clock.advance(600);
        block_on(store.commit("busy", &at(8))).expect("commit");
        clock.advance(400);
        // idle and live last committed 1000 ms ago, busy 400 ms ago.
        let live = |g: &str| g == "live";
        assert_eq!(block_on(store.expire(1001, live)).expect("expire"), 0);
        assert_eq!(block_on(store.expire(1000, live)).expect("expire"), 1);
        assert_eq!(store.fetch("idle", "t", 0), None);
        assert_eq!(store.fetch("live", "t", 0).map(|c| c.offset), Some(7));
        assert_eq!(store.fetch("busy", "t", 0).map(|c| c.offset), Some(8));
        // The commit times are durable: after a crash, busy still counts from its commit.
        disk.crash();
        let reopened = open(&clock);
        assert_eq!(
            reopened.fetch("idle", "t", 0),
            None,
            "the expiry was durable"
        );
        assert_eq!(
            block_on(reopened.expire(500, |_| false)).expect("expire"),
            1
        );
        assert_eq!(reopened.fetch("busy", "t", 0).map(|c| c.offset), Some(8));
        clock.advance(100);
        assert_eq!(
            block_on(reopened.expire(500, |_| false)).expect("expire"),
            1
        );
        assert_eq!(reopened.fetch("busy", "t", 0), None);
    }

    /// A slot committed to for ever keeps a log proportional to its live positions: the
    /// snapshot re-appends them and the whole segments below go, also across a crash, and no
    /// position goes back. Before, every commit ever made stayed on disk and was replayed at
    /// every start.
    #[test]
    fn a_slot_compacts_to_its_live_positions_and_loses_none() {
        let disk = SimDisk::new(6);
        let config = LogConfig {
            segment_bytes: 64 << 10,
            max_batch_bytes: 32 << 10,
            retention_ms: None,
            retention_bytes: None,
            preallocate_bytes: 64 << 10,
            ..LogConfig::default()
        };
        let open = || {
            block_on(OffsetStore::open_with(
                disk.clone(),
                SimClock::new(1_000),
                Path::new("/d"),
                3,
                config.clone(),
            ))
            .expect("open")
        };
        let store = open();
        let at = |partition: i32, offset: i64| OffsetCommit {
            topic: "t".into(),
            partition,
            offset,
            metadata: "m".repeat(200),
        };
        for round in 0..5000i64 {
            let commits: Vec<OffsetCommit> = (0..4).map(|p| at(p, round)).collect();
            block_on(store.commit(&format!("g{}", round % 3), &commits)).expect("commit");
        }
        let before = store.log.size_bytes();
        assert!(
            store.log.segment_count() > 10,
            "the commits filled many segments"
        );
        assert!(
            block_on(store.compact_if_due()).expect("compact"),
            "compacted"
        );
        let after = store.log.size_bytes();
        assert!(
            after < before / 10,
            "{before} bytes before, {after} after compaction"
        );
        assert!(
            !block_on(store.compact_if_due()).expect("compact"),
            "not due again"
        );
        for g in 0..3 {
            for p in 0..4 {
                let last = (0..5000i64).rev().find(|r| r % 3 == g).expect("a round");
                assert_eq!(
                    store.fetch(&format!("g{g}"), "t", p).map(|c| c.offset),
                    Some(last)
                );
            }
        }
        block_on(store.commit("g0", &[at(0, 9000)])).expect("commit after compaction");
        disk.crash();
        let reopened = open();
        assert_eq!(reopened.fetch("g0", "t", 0).map(|c| c.offset), Some(9000));
        assert_eq!(reopened.fetch("g1", "t", 3).map(|c| c.offset), Some(4999));
        assert_eq!(reopened.fetch("g2", "t", 2).map(|c| c.offset), Some(4997));
        assert_eq!(reopened.fetch("g0", "t", 1).map(|c| c.offset), Some(4998));
    }

    #[test]
    fn keys_round_trip_with_odd_names() {
        let key = encode_key("g-1.x", "t_2", 7);
        assert_eq!(decode_key(&key), Some(("g-1.x".into(), "t_2".into(), 7)));
        assert!(slot_of("any group") < OFFSET_SLOTS);
        assert_eq!(truncate_utf8("ééé", 3), "é");
    }
}
