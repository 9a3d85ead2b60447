//! Committed consumer-group offsets.
//!
//! Groups hash onto [`OFFSET_SLOTS`] slots (`crc32c(group) % OFFSET_SLOTS`); each slot is an
//! internal partition log `<data-dir>/__offsets/<slot>/` placed on shards like any partition,
//! so the coordinator of a group is the shard owning its slot, and a different shard count
//! only moves slots, never loses commits. A commit is one record per partition, keyed
//! `group NUL topic NUL partition`, valued `offset (i64 LE) | metadata`, appended with
//! `Durability::Synced`; opening a slot replays it, the last record of a key winning.

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

/// One slot's committed offsets.
pub struct OffsetStore<S: Storage, C: Clock> {
    log: PartitionLog<S, C>,
    offsets: RefCell<HashMap<Key, Committed>>,
}

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
            segment_bytes: 64 << 20,
            retention_ms: None,
            retention_bytes: None,
            preallocate_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let dir = data_dir.join(OFFSETS_DIR).join(slot.to_string());
        let log = PartitionLog::open(storage, clock, &dir, config).await?;
        let mut offsets = HashMap::new();
        log.replay(|record| {
            let (Some(key), Some(head)) = (record.key.and_then(decode_key), record.value.get(..8))
            else {
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
        Ok(OffsetStore {
            log,
            offsets: RefCell::new(offsets),
        })
    }

    /// Commits positions of one group; durable when this returns.
    ///
    /// # Errors
    /// Errors of the slot's log.
    pub async fn commit(&self, group: &str, offsets: &[OffsetCommit]) -> Result<(), LogError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut builder = BatchBuilder::new();
        for commit in offsets {
            let mut value = commit.offset.to_le_bytes().to_vec();
            let metadata = truncate_utf8(&commit.metadata, METADATA_BYTES_MAX);
            value.extend_from_slice(metadata.as_bytes());
            builder.push(
                Some(&encode_key(group, &commit.topic, commit.partition)),
                &value,
                0,
                &[],
            );
        }
        self.log
            .append(builder.finish(), Durability::Synced)
            .await?;
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

    /// Flushes and closes the slot.
    ///
    /// # Errors
    /// As [`PartitionLog::close`].
    pub async fn close(&self) -> Result<(), LogError> {
        self.log.close().await
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

    #[test]
    fn commits_survive_a_crash_and_the_last_one_wins() {
        let disk = SimDisk::new(3);
        let open = || {
            block_on(OffsetStore::open(
                disk.clone(),
                SimClock::new(0),
                Path::new("/d"),
                5,
            ))
            .expect("open")
        };
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
    fn keys_round_trip_with_odd_names() {
        let key = encode_key("g-1.x", "t_2", 7);
        assert_eq!(decode_key(&key), Some(("g-1.x".into(), "t_2".into(), 7)));
        assert!(slot_of("any group") < OFFSET_SLOTS);
        assert_eq!(truncate_utf8("ééé", 3), "é");
    }
}
