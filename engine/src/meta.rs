//! Topic metadata: which topics exist, their partition counts and per-topic configuration, and
//! where their partitions live.
//!
//! The metadata is itself a partition log (`<data-dir>/__meta/0/`), so it inherits the
//! engine's durability and crash recovery: every change is one record appended with
//! `Durability::Synced`, keyed by topic name, whose value is the topic's configuration (or
//! empty for a deletion). Opening the store replays the log; the last record of a topic wins.
//! One shard owns the store; the broker pushes the resulting table to every other shard.
//!
//! The same log also persists the idempotent producer id high-water mark, under the key
//! [`PRODUCER_IDS_KEY`] (reserved: no topic may have it, see [`RESERVED_NAMES`]). Ids are handed out
//! from an in-memory block of [`PRODUCER_ID_BLOCK`]; the block's end is made durable before
//! its first id is handed out, so after a restart (even `kill -9`) allocation resumes above
//! every id ever given, at the cost of skipping the rest of the last block.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tidelog_wire::batch::BatchBuilder;

use crate::config::LogConfig;
use crate::error::LogError;
use crate::io::{Clock, Storage};
use crate::limits::NAME_BYTES_MAX;
use crate::log::{Durability, PartitionLog};

/// Directory of the metadata log inside the data directory; reserved ([`RESERVED_NAMES`]), so
/// it never collides with a topic.
pub const META_DIR: &str = "__meta";
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Key of the metadata records that persist the producer id high-water mark; reserved
/// ([`RESERVED_NAMES`]), so no topic can have it.
pub const PRODUCER_IDS_KEY: &str = "__producer_ids";
/// Producer ids reserved by one durable metadata record. Larger blocks cost fewer synced
/// appends and skip more ids at each restart; ids are i64, so skipping is harmless.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
const PRODUCER_IDS_VERSION: u8 = 1;
const PRODUCER_IDS_BYTES: usize = 1 + 8;
/// Version 1 stored -1 for "unset" and had no "unlimited"; version 2 stores
/// [`Limit::Default`] as -2 and [`Limit::Unlimited`] as -1 (Kafka's value for it, as
/// [`Limit::to_kafka`] gives).
/// Version 3 appends the other overrides: a count (u8), then `(tag u8, value i64)` each
/// ([`crate::topic_configs`]); a tag this build does not know is skipped.
const CONFIG_VERSION_1: u8 = 1;
const CONFIG_VERSION_2: u8 = 2;
const CONFIG_VERSION: u8 = 3;
const STORED_DEFAULT: i64 = -2;
/// Bytes of a configuration's fixed part (all of it before version 3).
pub(crate) const CONFIG_BYTES: usize = 1 + 4 + 8 + 8 + 8 + 8;

/// Errors of topic metadata operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The name breaks the topic naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The refused name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A topic of that name exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// No topic of that name exists.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The partition count or another setting is out of bounds.
    #[error("invalid topic configuration: {0}")]
    InvalidConfig(String),
    /// The metadata log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Every producer id up to `i64::MAX` has been handed out.
    #[error("producer ids exhausted")]
    ProducerIdsExhausted,
    /// A stored metadata record does not decode.
    #[error("corrupt metadata record for topic {topic:?}")]
    CorruptRecord {
        /// The record's key.
        topic: String,
    },
}

/// A topic's retention limit: the broker's default, none at all (Kafka's `-1`: keep
/// forever), or a value. The three are stored distinctly, so "keep forever" never turns into
/// the default after a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Limit {
    /// Whatever the broker's default is.
    #[default]
    Default,
    /// No limit.
    Unlimited,
    /// At most this much.
    At(u64),
}

impl Limit {
    /// A value as Kafka configs give it: `-1` is unlimited, `0..` a limit; any other
    /// negative value is refused (`None`).
    pub fn from_kafka(value: i64) -> Option<Limit> {
        match value {
            -1 => Some(Limit::Unlimited),
            v => u64::try_from(v).ok().map(Limit::At),
        }
    }

    /// The value Kafka reports: `-1` when unlimited, `None` for the broker's default.
    pub fn to_kafka(self) -> Option<i64> {
        match self {
            Limit::Default => None,
            Limit::Unlimited => Some(-1),
            Limit::At(v) => Some(i64::try_from(v).unwrap_or(i64::MAX)),
        }
    }

    /// The limit in force given the broker's default (`None`: unlimited).
    pub fn resolve(self, default: Option<u64>) -> Option<u64> {
        match self {
            Limit::Default => default,
            Limit::Unlimited => None,
            Limit::At(v) => Some(v),
        }
    }

    fn stored(self) -> i64 {
        self.to_kafka().unwrap_or(STORED_DEFAULT)
    }

    fn from_stored(version: u8, value: i64) -> Option<Limit> {
        match (version, value) {
            (CONFIG_VERSION_1, v) if v < 0 => Some(Limit::Default),
            (_, STORED_DEFAULT) => Some(Limit::Default),
            (_, v) => Limit::from_kafka(v),
        }
    }
}

/// Per-topic configuration; unset values fall back to the broker's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// Retention by age, in milliseconds.
    pub retention_ms: Limit,
    /// Retention by size, per partition.
    pub retention_bytes: Limit,
    /// Segment size.
    pub segment_bytes: Option<u64>,
    /// Segment age.
    pub segment_ms: Option<i64>,
    /// Every other Kafka topic config this topic overrides.
    pub overrides: crate::topic_configs::Overrides,
}

impl TopicConfig {
    /// A topic with `partitions` partitions and default settings.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            retention_ms: Limit::Default,
            retention_bytes: Limit::Default,
            segment_bytes: None,
            segment_ms: None,
            overrides: crate::topic_configs::Overrides::default(),
        }
    }

    /// The log configuration of this topic's partitions on top of the broker's defaults. A
    /// topic whose `cleanup.policy` is `compact` alone is never deleted by retention (as in
    /// Kafka: its records go only by compaction).
    pub fn log_config(&self, defaults: &LogConfig) -> LogConfig {
        let compact_only = self.overrides.get(crate::topic_configs::TAG_CLEANUP_POLICY)
            == Some(crate::topic_configs::CLEANUP_COMPACT);
        let config = LogConfig {
            retention_ms: self
                .retention_ms
                .resolve(defaults.retention_ms.and_then(|v| u64::try_from(v).ok()))
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            retention_bytes: self.retention_bytes.resolve(defaults.retention_bytes),
            segment_bytes: self.segment_bytes.unwrap_or(defaults.segment_bytes),
            segment_ms: self.segment_ms.unwrap_or(defaults.segment_ms),
            ..defaults.clone()
        };
        if compact_only {
            LogConfig {
                retention_ms: None,
                retention_bytes: None,
                ..config
            }
        } else {
            config
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; CONFIG_BYTES];
        out[0] = CONFIG_VERSION;
        out[1..5].copy_from_slice(&self.partitions.to_le_bytes());
        out[5..13].copy_from_slice(&self.retention_ms.stored().to_le_bytes());
        out[13..21].copy_from_slice(&self.retention_bytes.stored().to_le_bytes());
        let segment_bytes = self.segment_bytes.map_or(-1, |b| b as i64);
        out[21..29].copy_from_slice(&segment_bytes.to_le_bytes());
        out[29..37].copy_from_slice(&self.segment_ms.unwrap_or(-1).to_le_bytes());
        let overrides: Vec<(u8, i64)> = self.overrides.iter().collect();
        out.push(overrides.len() as u8);
        for (tag, value) in overrides {
            out.push(tag);
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let version = *bytes.first()?;
        let fixed = bytes.get(..CONFIG_BYTES)?;
        let tail = &bytes[CONFIG_BYTES..];
        match version {
            CONFIG_VERSION_1 | CONFIG_VERSION_2 if tail.is_empty() => {}
            CONFIG_VERSION if !tail.is_empty() => {}
            _ => return None,
        }
        let i64_at = |at: usize| fixed[at..at + 8].try_into().ok().map(i64::from_le_bytes);
        let optional = |v: i64| (v >= 0).then_some(v);
        let mut overrides = crate::topic_configs::Overrides::default();
        if version == CONFIG_VERSION {
            let count = usize::from(tail[0]);
            let entries = &tail[1..];
            if entries.len() != count * 9 {
                return None;
            }
            for entry in entries.chunks_exact(9) {
                let value = i64::from_le_bytes(entry[1..9].try_into().ok()?);
                // A tag from a newer build is skipped, not an error.
                overrides.restore(entry[0], value);
            }
        }
        Some(TopicConfig {
            partitions: u32::from_le_bytes(fixed[1..5].try_into().ok()?),
            retention_ms: Limit::from_stored(version, i64_at(5)?)?,
            retention_bytes: Limit::from_stored(version, i64_at(13)?)?,
            segment_bytes: optional(i64_at(21)?).map(|v| v as u64),
            segment_ms: optional(i64_at(29)?),
            overrides,
        })
    }

    pub(crate) fn validate(&self, defaults: &LogConfig) -> Result<(), MetaError> {
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(MetaError::InvalidConfig(format!(
                "partitions {} not in [1, {PARTITIONS_MAX}]",
                self.partitions
            )));
        }
        self.log_config(defaults)
            .validate()
            .map_err(|e| MetaError::InvalidConfig(e.to_string()))
    }
}

/// Names in the data directory and the metadata log that are the broker's own: no topic may
/// have one. (A topic is a directory of the data directory, named as the topic.)
pub const RESERVED_NAMES: &[&str] = &[
    META_DIR,
    PRODUCER_IDS_KEY,
    crate::groups::OFFSETS_DIR,
    crate::cluster::store::RAFT_DIR,
    crate::broker::DATA_DIR_LOCK,
    // The start-up O_DIRECT probe file (cli/src/checks.rs).
    "__odirect-probe",
    // Kafka's own internal topics: a client creating one expects Kafka's semantics.
    "__consumer_offsets",
    "__transaction_state",
    "__cluster_metadata",
];

/// Name prefixes that are the broker's own: deletion tombstones, orphaned directories moved
/// aside, and `__tidelog` kept for internal names to come.
pub const RESERVED_PREFIXES: &[&str] = &[
    crate::shard::TOMBSTONE_PREFIX,
    crate::shard::ORPHAN_PREFIX,
    "__tidelog",
];

/// Checks a topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not
/// `.` or `..`; and Tidelog's: none of its own names ([`RESERVED_NAMES`],
/// [`RESERVED_PREFIXES`]). Other names starting `__` are allowed (Debezium's heartbeat topics
/// are `__debezium-heartbeat.<prefix>`).
///
/// # Errors
/// [`MetaError::InvalidTopic`] naming the broken rule.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let fail = |reason| {
        Err(MetaError::InvalidTopic {
            name: name.chars().take(NAME_BYTES_MAX).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > NAME_BYTES_MAX {
        return fail("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return fail("'.' and '..' are not allowed");
    }
    if RESERVED_NAMES.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return fail("the name is one of the broker's own (internal logs and files)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return fail("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The shard that owns a partition. Deterministic and stable for a given shard count; the
/// partitions of one topic go round-robin over the shards from a start picked by the name.
pub fn shard_for(topic: &str, partition: u32, shards: usize) -> usize {
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    (start.wrapping_add(partition as usize)) % shards.max(1)
}

/// Directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(topic).join(partition.to_string())
}

/// The producer ids that may be handed out without another metadata append:
/// `next..end`, where `end` is durable.
#[derive(Debug, Clone, Copy)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

fn encode_producer_ids(high_water: i64) -> [u8; PRODUCER_IDS_BYTES] {
    let mut out = [0u8; PRODUCER_IDS_BYTES];
    out[0] = PRODUCER_IDS_VERSION;
    out[1..].copy_from_slice(&high_water.to_le_bytes());
    out
}

fn decode_producer_ids(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [PRODUCER_IDS_VERSION, rest @ ..] if bytes.len() == PRODUCER_IDS_BYTES => rest
            .try_into()
            .ok()
            .map(i64::from_le_bytes)
            .filter(|&v| v >= 0),
        _ => None,
    }
}

/// The persisted topic table.
pub struct TopicStore<S: Storage, C: Clock> {
    log: PartitionLog<S, C>,
    defaults: LogConfig,
    topics: RefCell<BTreeMap<String, TopicConfig>>,
    producer_ids: RefCell<ProducerIdBlock>,
    /// Changes enter shared; a compaction's snapshot exclusive.
    writes: crate::sync::SharedGate,
}

impl<S: Storage, C: Clock> TopicStore<S, C> {
    /// Opens the metadata log under `data_dir` and replays it.
    ///
    /// # Errors
    /// Errors of the metadata log, or a record that does not decode.
    pub async fn open(
        storage: S,
        clock: C,
        data_dir: &Path,
        defaults: LogConfig,
    ) -> Result<Self, MetaError> {
        let meta_config = LogConfig {
            segment_bytes: 16 << 20,
            retention_ms: None,
            retention_bytes: None,
            preallocate_bytes: 1 << 20,
            ..LogConfig::default()
        };
        Self::open_with(storage, clock, data_dir, defaults, meta_config).await
    }

    async fn open_with(
        storage: S,
        clock: C,
        data_dir: &Path,
        defaults: LogConfig,
        meta_config: LogConfig,
    ) -> Result<Self, MetaError> {
        let dir = data_dir.join(META_DIR).join("0");
        let log = PartitionLog::open(storage, clock, &dir, meta_config).await?;
        let mut topics = BTreeMap::new();
        let mut corrupt = None;
        let mut producer_high_water = 0i64;
        log.replay(|record| {
            let name = String::from_utf8_lossy(record.key.unwrap_or_default()).into_owned();
            if name == PRODUCER_IDS_KEY {
                match decode_producer_ids(record.value) {
                    Some(high) => producer_high_water = producer_high_water.max(high),
                    None => {
                        corrupt.get_or_insert(name);
                    }
                }
            } else if record.value.is_empty() {
                topics.remove(&name);
            } else {
                match TopicConfig::decode(record.value) {
                    Some(config) => {
                        topics.insert(name, config);
                    }
                    None => {
                        corrupt.get_or_insert(name);
                    }
                }
            }
        })
        .await?;
        if let Some(topic) = corrupt {
            return Err(MetaError::CorruptRecord { topic });
        }
        let store = TopicStore {
            log,
            defaults,
            topics: RefCell::new(topics),
            // Nothing of the last persisted block is known to be unused: start a new one.
            producer_ids: RefCell::new(ProducerIdBlock {
                next: producer_high_water,
                end: producer_high_water,
            }),
            writes: crate::sync::SharedGate::default(),
        };
        store.compact_if_due().await?;
        Ok(store)
    }

    /// Compacts the metadata log when it is much larger than the live table: appends every
    /// topic and the producer-id high-water mark again (a snapshot), then deletes the whole
    /// segments below it, so start-up replays the live table, not every change ever made.
    /// Changes wait while the snapshot is written. Returns whether it compacted.
    ///
    /// # Errors
    /// Errors of the metadata log (nothing is deleted then).
    pub async fn compact_if_due(&self) -> Result<bool, MetaError> {
        /// Log bytes per live byte past which the log is compacted.
        const GARBAGE_RATIO: u64 = 4;
        let live_bytes: u64 = self
            .topics
            .borrow()
            .keys()
            .map(|name| name.len() as u64 + 64)
            .sum();
        let size = self.log.size_bytes();
        if self.log.segment_count() < 2 || size <= GARBAGE_RATIO * live_bytes.max(1 << 20) {
            return Ok(false);
        }
        let Some(_exclusive) = self.writes.exclusive().await else {
            return Ok(false);
        };
        let records: Vec<(Vec<u8>, Vec<u8>, i64)> = self
            .topics
            .borrow()
            .iter()
            .map(|(name, config)| (name.clone().into_bytes(), config.encode(), 0))
            .chain(std::iter::once((
                PRODUCER_IDS_KEY.as_bytes().to_vec(),
                encode_producer_ids(self.producer_ids.borrow().end).to_vec(),
                0,
            )))
            .collect();
        let start = self.log.append_snapshot(&records).await?;
        let dropped = self.log.truncate_before(start).await?;
        tracing::info!(
            bytes_before = size,
            bytes_after = self.log.size_bytes(),
            segments_dropped = dropped,
            topics = records.len() - 1,
            "metadata log compacted"
        );
        Ok(true)
    }

    /// Hands out a producer id never handed out before by this store, across restarts and
    /// crashes. Usually in memory; once per [`PRODUCER_ID_BLOCK`] ids it first appends the
    /// new high-water mark with [`Durability::Synced`].
    ///
    /// # Errors
    /// A failure of the metadata log (no id is handed out), or
    /// [`MetaError::ProducerIdsExhausted`].
    pub async fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        let _write = self.writes.shared().await;
        loop {
            let end = {
                let mut block = self.producer_ids.borrow_mut();
                if block.next < block.end {
                    let id = block.next;
                    block.next += 1;
                    return Ok(id);
                }
                block.end
            };
            let new_end = end
                .checked_add(PRODUCER_ID_BLOCK)
                .ok_or(MetaError::ProducerIdsExhausted)?;
            self.append(PRODUCER_IDS_KEY, &encode_producer_ids(new_end))
                .await?;
            // Concurrent callers may have persisted the same or a later end meanwhile; ids
            // below any persisted end are safe, and `next` only ever moves up.
            let mut block = self.producer_ids.borrow_mut();
            block.end = block.end.max(new_end);
        }
    }

    /// All topics, by name.
    pub fn topics(&self) -> BTreeMap<String, TopicConfig> {
        self.topics.borrow().clone()
    }

    /// One topic's configuration.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.topics.borrow().get(name).copied()
    }

    /// Creates a topic; durable when this returns.
    ///
    /// # Errors
    /// [`MetaError::InvalidTopic`], [`MetaError::InvalidConfig`], [`MetaError::TopicExists`],
    /// or a failure of the metadata log.
    pub async fn create(&self, name: &str, config: TopicConfig) -> Result<(), MetaError> {
        let _write = self.writes.shared().await;
        validate_topic_name(name)?;
        config.validate(&self.defaults)?;
        if self.topics.borrow().contains_key(name) {
            return Err(MetaError::TopicExists(name.to_owned()));
        }
        self.append(name, &config.encode()).await?;
        // Two creations of one name may race across the append's await: the first wins.
        let mut topics = self.topics.borrow_mut();
        if topics.contains_key(name) {
            return Err(MetaError::TopicExists(name.to_owned()));
        }
        topics.insert(name.to_owned(), config);
        Ok(())
    }

    /// Grows a topic to `count` partitions; durable when this returns.
    ///
    /// # Errors
    /// [`MetaError::UnknownTopic`], [`MetaError::InvalidConfig`] for a count that is not
    /// more than the topic has (or past [`PARTITIONS_MAX`]), or a failure of the metadata log.
    pub async fn grow(&self, name: &str, count: u32) -> Result<TopicConfig, MetaError> {
        let _write = self.writes.shared().await;
        let mut config = self
            .topic(name)
            .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))?;
        if count <= config.partitions {
            return Err(MetaError::InvalidConfig(format!(
                "{name} has {} partitions: the new count must be more, not {count}",
                config.partitions
            )));
        }
        config.partitions = count;
        config.validate(&self.defaults)?;
        self.append(name, &config.encode()).await?;
        if let Some(slot) = self.topics.borrow_mut().get_mut(name) {
            *slot = config;
        }
        Ok(config)
    }

    /// Replaces a topic's configuration; durable when this returns.
    ///
    /// # Errors
    /// [`MetaError::UnknownTopic`], [`MetaError::InvalidConfig`] (also for a changed
    /// partition count), or a failure of the metadata log.
    pub async fn alter(&self, name: &str, config: TopicConfig) -> Result<(), MetaError> {
        let _write = self.writes.shared().await;
        config.validate(&self.defaults)?;
        let old = self
            .topic(name)
            .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))?;
        if old.partitions != config.partitions {
            return Err(MetaError::InvalidConfig(format!(
                "the partition count of {name:?} cannot change with its configuration"
            )));
        }
        self.append(name, &config.encode()).await?;
        // A deletion racing the append's await wins: the topic stays deleted (the record
        // after its tombstone would bring it back at the next start, so write one again).
        let replaced = match self.topics.borrow_mut().get_mut(name) {
            Some(slot) => {
                *slot = config;
                true
            }
            None => false,
        };
        if !replaced {
            self.append(name, &[]).await?;
            return Err(MetaError::UnknownTopic(name.to_owned()));
        }
        Ok(())
    }

    /// Deletes a topic from the table; durable when this returns. Removing the partitions'
    /// files is the owning shards' job.
    ///
    /// # Errors
    /// [`MetaError::UnknownTopic`] or a failure of the metadata log.
    pub async fn delete(&self, name: &str) -> Result<TopicConfig, MetaError> {
        let _write = self.writes.shared().await;
        let config = self
            .topic(name)
            .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))?;
        self.append(name, &[]).await?;
        self.topics.borrow_mut().remove(name);
        Ok(config)
    }

    async fn append(&self, name: &str, value: &[u8]) -> Result<(), MetaError> {
        let mut builder = BatchBuilder::new();
        builder.push(Some(name.as_bytes()), value, 0, &[]);
        self.log
            .append(builder.finish(), Durability::Synced)
            .await?;
        Ok(())
    }

    /// Flushes and closes the metadata log.
    ///
    /// # Errors
    /// As [`PartitionLog::close`].
    pub async fn close(&self) -> Result<(), MetaError> {
        Ok(self.log.close().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{SimClock, SimDisk};
    use futures_lite::future::block_on;

    fn open(disk: &SimDisk) -> TopicStore<SimDisk, SimClock> {
        block_on(TopicStore::open(
            disk.clone(),
            SimClock::new(0),
            Path::new("/data"),
            LogConfig::default(),
        ))
        .expect("open")
    }

    #[test]
    fn topics_survive_a_crash_once_created() {
        let disk = SimDisk::new(1);
        let store = open(&disk);
        let config = TopicConfig {
            retention_ms: Limit::At(1000),
            retention_bytes: Limit::Unlimited,
            ..TopicConfig::with_partitions(3)
        };
        block_on(store.create("orders", config)).expect("create");
        block_on(store.create("logs", TopicConfig::with_partitions(1))).expect("create");
        block_on(store.delete("logs")).expect("delete");
        disk.crash();
        let reopened = open(&disk);
        assert_eq!(reopened.topic("orders"), Some(config));
        assert_eq!(reopened.topic("logs"), None);
        assert_eq!(reopened.topics().len(), 1);
    }

    /// The metadata log is compacted at open once it is much larger than the live table:
    /// topics and producer ids survive it and a crash after it; the log shrinks. Before, every
    /// creation and deletion ever made was replayed at every start.
    #[test]
    fn the_metadata_log_compacts_to_the_live_table() {
        let disk = SimDisk::new(9);
        let small = LogConfig {
            segment_bytes: 64 << 10,
            max_batch_bytes: 32 << 10,
            retention_ms: None,
            retention_bytes: None,
            preallocate_bytes: 64 << 10,
            ..LogConfig::default()
        };
        let open = || {
            block_on(TopicStore::open_with(
                disk.clone(),
                SimClock::new(0),
                Path::new("/data"),
                LogConfig::default(),
                small.clone(),
            ))
            .expect("open")
        };
        let store = open();
        let long = |i: usize| format!("{i:05}{}", "t".repeat(240));
        for i in 0..9000 {
            block_on(store.create(&long(i), TopicConfig::with_partitions(1))).expect("create");
            if i % 10 != 0 {
                block_on(store.delete(&long(i))).expect("delete");
            }
        }
        let issued = block_on(store.allocate_producer_id()).expect("id");
        let before = store.log.size_bytes();
        drop(store);
        disk.crash();
        let store = open();
        let after = store.log.size_bytes();
        assert!(after * 4 < before, "{before} bytes before, {after} after");
        assert_eq!(store.topics().len(), 900);
        assert!(store.topic(&long(10)).is_some() && store.topic(&long(11)).is_none());
        assert!(block_on(store.allocate_producer_id()).expect("id") > issued);
        drop(store);
        disk.crash();
        let store = open();
        assert_eq!(store.topics().len(), 900, "the snapshot was durable");
        assert!(block_on(store.allocate_producer_id()).expect("id") > issued);
    }

    #[test]
    fn creation_is_refused_for_bad_names_counts_and_duplicates() {
        let disk = SimDisk::new(2);
        let store = open(&disk);
        for bad in [
            "",
            ".",
            "..",
            "__meta",
            "__offsets",
            "__raft",
            "__producer_ids",
            "__deleted-x-1",
            "__orphaned-y-2",
            "__consumer_offsets",
            "a b",
            "ä",
            &"x".repeat(250),
        ] {
            let result = block_on(store.create(bad, TopicConfig::with_partitions(1)));
            assert!(
                matches!(result, Err(MetaError::InvalidTopic { .. })),
                "{bad:?}: {result:?}"
            );
        }
        // Other names starting "__" are topics like any other (Debezium's heartbeats).
        block_on(store.create("__debezium-heartbeat.db1", TopicConfig::with_partitions(1)))
            .expect("a __ name that is not the broker's");
        let zero = block_on(store.create("t", TopicConfig::with_partitions(0)));
        assert!(matches!(zero, Err(MetaError::InvalidConfig(_))));
        block_on(store.create("t", TopicConfig::with_partitions(2))).expect("create");
        let again = block_on(store.create("t", TopicConfig::with_partitions(2)));
        assert!(matches!(again, Err(MetaError::TopicExists(_))));
        let missing = block_on(store.delete("nope"));
        assert!(matches!(missing, Err(MetaError::UnknownTopic(_))));
    }

    #[test]
    fn placement_is_stable_and_spreads_partitions() {
        let shards = 4;
        let owners: Vec<usize> = (0..8).map(|p| shard_for("orders", p, shards)).collect();
        assert_eq!(
            owners,
            (0..8)
                .map(|p| shard_for("orders", p, shards))
                .collect::<Vec<_>>()
        );
        for shard in 0..shards {
            assert_eq!(
                owners.iter().filter(|&&s| s == shard).count(),
                2,
                "{owners:?}"
            );
        }
        assert!((0..100).all(|p| shard_for("t", p, 3) < 3));
    }

    #[test]
    fn producer_ids_never_repeat_across_restarts_and_crashes() {
        let disk = SimDisk::new(3);
        let store = open(&disk);
        let first: Vec<i64> = (0..PRODUCER_ID_BLOCK + 5)
            .map(|_| block_on(store.allocate_producer_id()).expect("allocate"))
            .collect();
        assert!(first.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(first[0], 0);
        block_on(store.close()).expect("close");
        let store = open(&disk);
        assert!(store.topics().is_empty(), "the reserved key is not a topic");
        let after_reopen = block_on(store.allocate_producer_id()).expect("allocate");
        assert!(after_reopen > *first.last().unwrap());
        // kill -9: nothing but the synced metadata survives.
        disk.crash();
        let store = open(&disk);
        let after_crash = block_on(store.allocate_producer_id()).expect("allocate");
        assert!(after_crash > after_reopen);
        assert_eq!(decode_producer_ids(&encode_producer_ids(7)), Some(7));
        assert_eq!(decode_producer_ids(&[1, 2]), None);
    }

    #[test]
    fn config_round_trips() {
        for (retention_ms, retention_bytes) in [
            (Limit::At(5), Limit::Default),
            (Limit::Unlimited, Limit::At(0)),
            (Limit::Default, Limit::Unlimited),
        ] {
            let config = TopicConfig {
                partitions: 12,
                retention_ms,
                retention_bytes,
                segment_bytes: Some(1 << 20),
                segment_ms: None,
                overrides: Default::default(),
            };
            assert_eq!(TopicConfig::decode(&config.encode()), Some(config));
        }
        assert_eq!(TopicConfig::decode(&[0; 3]), None);
    }

    /// Records written before version 3 (no overrides) still decode; a version-3 record
    /// with a tag this build does not know keeps the rest; a truncated tail is refused.
    /// `cleanup.policy=compact` (alone) turns retention off, as Kafka does; with `delete`
    /// beside it retention applies.
    #[test]
    fn compacted_topics_are_not_deleted_by_retention() {
        let defaults = LogConfig::default();
        let mut config = TopicConfig::with_partitions(1);
        crate::topic_configs::apply(&mut config, "retention.ms", Some("1000")).expect("ok");
        crate::topic_configs::apply(&mut config, "cleanup.policy", Some("compact")).expect("ok");
        let log = config.log_config(&defaults);
        assert_eq!((log.retention_ms, log.retention_bytes), (None, None));
        crate::topic_configs::apply(&mut config, "cleanup.policy", Some("compact,delete"))
            .expect("ok");
        assert_eq!(config.log_config(&defaults).retention_ms, Some(1000));
    }

    #[test]
    fn older_and_newer_config_records_decode() {
        let mut config = TopicConfig::with_partitions(3);
        config.retention_ms = Limit::At(5000);
        let mut v2 = config.encode();
        v2.truncate(CONFIG_BYTES);
        v2[0] = CONFIG_VERSION_2;
        assert_eq!(TopicConfig::decode(&v2), Some(config));

        crate::topic_configs::apply(&mut config, "cleanup.policy", Some("compact")).expect("ok");
        let mut v3 = config.encode();
        // One more entry with an unknown tag.
        v3[CONFIG_BYTES] += 1;
        v3.push(200);
        v3.extend_from_slice(&7i64.to_le_bytes());
        assert_eq!(TopicConfig::decode(&v3), Some(config));
        v3.pop();
        assert_eq!(TopicConfig::decode(&v3), None, "a torn entry");
    }

    #[test]
    fn a_config_change_survives_a_crash_and_keeps_the_partition_count() {
        let disk = SimDisk::new(17);
        let store = open(&disk);
        block_on(store.create("orders", TopicConfig::with_partitions(3))).expect("create");
        let mut changed = TopicConfig::with_partitions(3);
        crate::topic_configs::apply(&mut changed, "retention.bytes", Some("1048576"))
            .expect("valid");
        crate::topic_configs::apply(&mut changed, "max.message.bytes", Some("2000"))
            .expect("valid");
        block_on(store.alter("orders", changed)).expect("alter");
        let more = TopicConfig::with_partitions(4);
        assert!(matches!(
            block_on(store.alter("orders", more)),
            Err(MetaError::InvalidConfig(_))
        ));
        assert!(matches!(
            block_on(store.alter("nothing", changed)),
            Err(MetaError::UnknownTopic(_))
        ));
        disk.crash();
        let reopened = open(&disk);
        assert_eq!(reopened.topic("orders"), Some(changed));
        assert_eq!(reopened.topic("nothing"), None);
        assert_eq!(changed.max_message_bytes(), Some(2000));
    }

    /// Kafka's "keep forever" (-1) is stored as such: it neither deletes anything (a limit
    /// of -1 ms made every sealed segment expired) nor turns into the broker's 7-day default
    /// after a restart (it was stored as "unset").
    #[test]
    fn unlimited_retention_stays_unlimited_across_a_restart() {
        let config = TopicConfig {
            retention_ms: Limit::from_kafka(-1).expect("-1 is valid"),
            retention_bytes: Limit::from_kafka(-1).expect("-1 is valid"),
            ..TopicConfig::with_partitions(1)
        };
        let defaults = LogConfig::default();
        assert!(
            defaults.retention_ms.is_some(),
            "the default does limit by age"
        );
        let log = config.log_config(&defaults);
        assert_eq!((log.retention_ms, log.retention_bytes), (None, None));
        let disk = SimDisk::new(3);
        let store = open(&disk);
        block_on(store.create("forever", config)).expect("create");
        disk.crash();
        let reopened = open(&disk);
        let stored = reopened.topic("forever").expect("topic");
        assert_eq!(stored.retention_ms, Limit::Unlimited);
        assert_eq!(stored.log_config(&defaults).retention_ms, None);
        assert_eq!(Limit::from_kafka(-2), None, "other negatives are refused");
    }

    #[test]
    fn version_1_records_read_negative_values_as_the_default() {
        let mut old = TopicConfig::with_partitions(2).encode();
        old.truncate(CONFIG_BYTES);
        old[0] = CONFIG_VERSION_1;
        old[5..13].copy_from_slice(&(-1i64).to_le_bytes());
        old[13..21].copy_from_slice(&4096i64.to_le_bytes());
        let decoded = TopicConfig::decode(&old).expect("version 1 decodes");
        assert_eq!(decoded.retention_ms, Limit::Default);
        assert_eq!(decoded.retention_bytes, Limit::At(4096));
    }
}
