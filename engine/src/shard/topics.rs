//! The topic table: create and delete (owned by shard 0, which persists the change in its
//! `TopicStore` and pushes it to every shard, acknowledging only when all applied it), opening
//! and removing the partitions a shard owns, and idempotent-producer ids.
//!
//! Creations and deletions are serialised on shard 0 (the admin gate, held across the
//! metadata record and the push to every shard), so a name being deleted cannot be created
//! again until every shard has let go of it, and every shard applies one name's changes in
//! the order they were made. A deletion first renames the topic's directory to a tombstone
//! (`__deleted-<name>-<n>`, a name no topic can have) and makes that durable, then writes the
//! metadata record, then has every shard close its partitions, then removes the tombstone:
//! a topic created again gets a fresh directory, never the old files, and a crash at any
//! point leaves either the topic with its data or a tombstone that the next start removes.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::mesh::{Forwarded, Reply, ShardMessage};
use super::{Log, Shard, ShardError};
use crate::io::dma::DmaStorage;
use crate::io::{Storage, SystemClock};
use crate::log::PartitionLog;
use crate::meta::{partition_dir, validate_topic_name, TopicConfig};
use crate::runtime::spawn_housekeeping;

impl Shard {
    /// Creates a topic (on shard 0, forwarding if needed); returns once every shard knows it.
    ///
    /// # Errors
    /// The topic store's refusal (name, existence, configuration) or a storage failure.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<(), ShardError> {
        self.create_topic_with(name, config, None).await
    }

    /// [`create_topic`](Self::create_topic) with a replication factor (`None`: the broker's
    /// default). A single node has one replica of everything: more is refused.
    ///
    /// # Errors
    /// As [`create_topic`](Self::create_topic); [`ShardError::InvalidReplicationFactor`].
    pub async fn create_topic_with(
        &self,
        name: &str,
        config: TopicConfig,
        replication_factor: Option<u16>,
    ) -> Result<(), ShardError> {
        if self.id != 0 {
            let request = Forwarded::CreateTopic {
                name: name.to_owned(),
                config,
                replication_factor,
            };
            return match self.forward(0, request).await? {
                Reply::Admin(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a topic creation")),
            };
        }
        let rf = replication_factor.unwrap_or(self.config.default_replication_factor);
        if self.controller.is_some() {
            let _admin = self.admin_gate.enter().await;
            return self.cluster_create(name, config, rf).await;
        }
        if rf != 1 {
            return Err(ShardError::InvalidReplicationFactor(format!(
                "replication factor {rf}: a single node keeps one copy (start a cluster with \
                 --node-id and --peers for more)"
            )));
        }
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        let _admin = self.admin_gate.enter().await;
        let held: u64 = store
            .topics()
            .values()
            .map(|t| u64::from(t.partitions))
            .sum();
        if held + u64::from(config.partitions) > self.config.max_partitions
            && store.topic(name).is_none()
        {
            return Err(ShardError::PartitionLimit(format!(
                "creating {name:?} with {} partitions would exceed the broker's {} partitions \
                 ({held} held; --max-partitions-per-shard)",
                config.partitions, self.config.max_partitions
            )));
        }
        store
            .create(name, config)
            .await
            .map_err(|e| ShardError::from(&e))?;
        // Acknowledged only when every shard opened its partitions; one that failed leaves
        // them offline (the topic exists) and the creation is reported as failed.
        self.upsert_everywhere(name, config).await
    }

    /// Replaces a topic's configuration (on shard 0, forwarding if needed): persisted in the
    /// metadata log, then applied by every shard to its open partitions (segment and
    /// retention settings take effect at once) before this returns. The partition count
    /// cannot change here.
    ///
    /// # Errors
    /// [`ShardError::UnknownTopicOrPartition`], an invalid configuration, a changed partition
    /// count, or a storage failure.
    pub async fn alter_topic(&self, name: &str, config: TopicConfig) -> Result<(), ShardError> {
        if self.id != 0 {
            let request = Forwarded::AlterTopic {
                name: name.to_owned(),
                config,
            };
            return match self.forward(0, request).await? {
                Reply::Admin(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a config change")),
            };
        }
        config
            .validate(&self.config.log_defaults)
            .map_err(|e| ShardError::from(&e))?;
        if self.controller.is_some() {
            let _admin = self.admin_gate.enter().await;
            return self
                .propose(crate::cluster::Command::AlterTopicConfig {
                    name: name.to_owned(),
                    config,
                })
                .await;
        }
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        let _admin = self.admin_gate.enter().await;
        store
            .alter(name, config)
            .await
            .map_err(|e| ShardError::from(&e))?;
        tracing::info!(topic = name, "topic configuration changed");
        self.upsert_everywhere(name, config).await
    }

    /// Grows a topic to `count` partitions (on shard 0, forwarding if needed): persisted in
    /// the metadata, then every shard opens the new partitions it owns (placed like the
    /// rest) before this returns. Records keep their partitions; keyed producers map keys
    /// to the new count from their next metadata refresh, as with Kafka.
    ///
    /// # Errors
    /// [`ShardError::UnknownTopicOrPartition`], [`ShardError::InvalidPartitions`] for a count
    /// that is not more, [`ShardError::PartitionLimit`], or a storage failure.
    pub async fn create_partitions(&self, name: &str, count: u32) -> Result<(), ShardError> {
        if self.id != 0 {
            let request = Forwarded::CreatePartitions {
                name: name.to_owned(),
                count,
            };
            return match self.forward(0, request).await? {
                Reply::Admin(result) => result,
                _ => Err(ShardError::Internal(
                    "unexpected reply to a partition creation",
                )),
            };
        }
        let _admin = self.admin_gate.enter().await;
        let have = match self.topics.borrow().get(name) {
            Some(config) => config.partitions,
            None => return Err(ShardError::UnknownTopicOrPartition),
        };
        if count <= have {
            return Err(ShardError::InvalidPartitions(format!(
                "{name} has {have} partitions: the new count must be more, not {count}"
            )));
        }
        let held: u64 = self
            .topics
            .borrow()
            .values()
            .map(|t| u64::from(t.partitions))
            .sum();
        if held + u64::from(count - have) > self.config.max_partitions {
            return Err(ShardError::PartitionLimit(format!(
                "growing {name:?} to {count} partitions would exceed the broker's {} \
                 partitions ({held} held; --max-partitions-per-shard)",
                self.config.max_partitions
            )));
        }
        if self.controller.is_some() {
            return self
                .propose(crate::cluster::Command::CreatePartitions {
                    name: name.to_owned(),
                    count,
                })
                .await;
        }
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        let config = store
            .grow(name, count)
            .await
            .map_err(|e| ShardError::from(&e))?;
        tracing::info!(topic = name, from = have, to = count, "partitions created");
        self.upsert_everywhere(name, config).await
    }

    /// Deletes a topic (on shard 0, forwarding if needed) and its partitions everywhere.
    ///
    /// # Errors
    /// As [`create_topic`](Self::create_topic).
    pub async fn delete_topic(&self, name: &str) -> Result<(), ShardError> {
        if self.id != 0 {
            let request = Forwarded::DeleteTopic {
                name: name.to_owned(),
            };
            return match self.forward(0, request).await? {
                Reply::Admin(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a topic deletion")),
            };
        }
        if self.controller.is_some() {
            let _admin = self.admin_gate.enter().await;
            return self.cluster_delete(name).await;
        }
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        let _admin = self.admin_gate.enter().await;
        if store.topic(name).is_none() {
            return Err(ShardError::from(&crate::meta::MetaError::UnknownTopic(
                name.to_owned(),
            )));
        }
        let data_dir = &self.config.data_dir;
        let tombstone = entomb(data_dir, name).await.map_err(|e| {
            ShardError::Storage(format!(
                "deleting topic {name:?}: renaming its directory: {e}"
            ))
        })?;
        if let Err(e) = store.delete(name).await {
            // Not deleted after all: the topic keeps its data.
            if let Some(tomb) = &tombstone {
                if let Err(back) = DmaStorage.rename(tomb, &data_dir.join(name)).await {
                    tracing::error!(topic = name, tombstone = %tomb.display(), error = %back,
                        "a failed deletion could not restore the topic's directory");
                }
            }
            return Err(ShardError::from(&e));
        }
        self.close_everywhere(name, tombstone).await;
        Ok(())
    }

    /// A deleted topic (its directory already renamed to `tombstone`): every shard closes and
    /// forgets its partitions, then the files go.
    pub(super) async fn close_everywhere(&self, name: &str, tombstone: Option<PathBuf>) {
        tracing::info!(topic = name, "topic deleted: closing its partitions");
        self.apply_removal(name).await;
        self.broadcast(|id| ShardMessage::TopicRemoved {
            id,
            name: name.to_owned(),
        })
        .await;
        self.offline
            .borrow_mut()
            .retain(|(topic, _), _| topic != name);
        // Every shard has closed its partitions: the files can go.
        if let Some(tomb) = tombstone {
            if let Err(e) = DmaStorage.remove_dir_all(&tomb).await {
                tracing::warn!(tombstone = %tomb.display(), error = %e,
                    "removing a deleted topic's files failed; the next start retries");
            }
        }
    }

    /// A new idempotent-producer id, unique across restarts (allocated by shard 0).
    ///
    /// # Errors
    /// [`ShardError::Storage`] when the metadata log fails.
    pub async fn allocate_producer_id(&self) -> Result<i64, ShardError> {
        if self.id != 0 {
            return match self.forward(0, Forwarded::AllocateProducerId).await? {
                Reply::ProducerId(result) => result,
                _ => Err(ShardError::Internal(
                    "unexpected reply to a producer id request",
                )),
            };
        }
        if self.controller.is_some() {
            return self.cluster_producer_id().await;
        }
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        store.allocate_producer_id().await.map_err(|e| {
            tracing::error!(error = %e, "allocating a producer id failed");
            ShardError::Storage(e.to_string())
        })
    }

    /// Records a topic in this shard's table and opens the partitions it owns. A partition
    /// that fails to open (a descriptor limit, damage recovery cannot repair) is logged and
    /// kept offline, with its reason, while the rest are served; the error names every
    /// partition that failed.
    pub(super) async fn apply_upsert(&self, name: &str, config: TopicConfig) -> Result<(), String> {
        let mut failed = Vec::new();
        self.topics.borrow_mut().insert(name.to_owned(), config);
        let log_config = config.log_config(&self.config.log_defaults);
        for partition in 0..config.partitions {
            if self.owner(name, partition) != self.id {
                continue;
            }
            if !self.replica_here(name, partition) {
                // Moved off this node (a reassignment), here or while it was down: the
                // metadata that says so is committed and durable here, so no later state
                // can count this copy in an in-sync set (a replica added back starts over).
                self.drop_replica(name, partition).await;
                continue;
            }
            let opened = self
                .partitions
                .borrow()
                .get(name)
                .is_some_and(|logs| logs.contains_key(&partition));
            if opened {
                // A configuration change: the open log takes the new segment and retention
                // settings now.
                let log = self
                    .partitions
                    .borrow()
                    .get(name)
                    .and_then(|logs| logs.get(&partition).cloned());
                if let Some(log) = log {
                    if let Err(e) = log.retune(&log_config) {
                        failed.push(format!("{name}-{partition}: {e}"));
                    }
                }
                continue;
            }
            let dir = partition_dir(&self.config.data_dir, name, partition);
            let log = match PartitionLog::open_with(
                DmaStorage,
                SystemClock,
                &dir,
                log_config.clone(),
                self.log_resources.clone(),
            )
            .await
            {
                Ok(log) => log,
                Err(e) => {
                    let reason = e.to_string();
                    tracing::error!(shard = self.id, topic = name, partition, error = %reason,
                        "partition failed to open: offline, the rest of the broker serves on");
                    failed.push(format!("{name}-{partition}: {reason}"));
                    self.offline
                        .borrow_mut()
                        .insert((name.to_owned(), partition), reason);
                    continue;
                }
            };
            self.offline
                .borrow_mut()
                .remove(&(name.to_owned(), partition));
            let log = Rc::new(log);
            spawn_housekeeping(Rc::clone(&log), self.config.housekeeping);
            self.partitions
                .borrow_mut()
                .entry(name.to_owned())
                .or_default()
                .insert(partition, log);
        }
        self.reconcile_roles();
        self.adopt_leader_epochs().await;
        self.reconcile_offset_stores().await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "partitions offline (failed to open): {}",
                failed.join("; ")
            ))
        }
    }

    /// Forgets a topic and deletes the partitions this shard owns.
    pub(super) async fn apply_removal(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
        let doomed: Vec<Rc<Log>> = self
            .partitions
            .borrow_mut()
            .remove(name)
            .map(|logs| logs.into_values().collect())
            .unwrap_or_default();
        // Closed before anything is unlinked, all at once (see `close_all`).
        close_all(&doomed).await;
        // The files are in the tombstone shard 0 removes once every shard got here.
        drop(doomed);
        self.forget_offsets(|topic| topic == name).await;
    }

    /// Closes this shard's replica of a partition the metadata placed elsewhere and deletes
    /// its files (renamed to a tombstone first, durably, so a crash half-way leaves nothing
    /// a later start could take for the partition's data).
    pub(super) async fn drop_replica(&self, name: &str, partition: u32) {
        let log = self
            .partitions
            .borrow_mut()
            .get_mut(name)
            .and_then(|logs| logs.remove(&partition));
        self.offline
            .borrow_mut()
            .remove(&(name.to_owned(), partition));
        let had_log = log.is_some();
        if let Some(log) = log {
            let doomed = [log];
            close_all(&doomed).await;
        }
        let data_dir = &self.config.data_dir;
        let dir = partition_dir(data_dir, name, partition);
        if !dir.exists() {
            return;
        }
        let tomb = unused_name(data_dir, TOMBSTONE_PREFIX, &format!("{name}.{partition}"));
        let renamed = async {
            DmaStorage.rename(&dir, &tomb).await?;
            DmaStorage.sync_dir(data_dir).await?;
            DmaStorage.sync_dir(&data_dir.join(name)).await
        }
        .await;
        if let Err(e) = renamed {
            tracing::error!(shard = self.id, topic = name, partition, error = %e,
                "moving a replica that left this node aside failed; its files stay");
            return;
        }
        tracing::info!(
            shard = self.id,
            topic = name,
            partition,
            open = had_log,
            "replica moved off this node: closed, its files deleted"
        );
        if let Err(e) = DmaStorage.remove_dir_all(&tomb).await {
            tracing::warn!(tombstone = %tomb.display(), error = %e,
                "removing a moved replica's files failed; the next start retries");
        }
    }

    /// Deletes the committed group positions this shard's offset slots hold on topics for
    /// which `gone` holds (a deleted topic's, so that a topic re-created under its name does
    /// not inherit them). A failure is logged; start-up forgets what is left.
    pub(super) async fn forget_offsets(&self, gone: impl Fn(&str) -> bool) {
        for (slot, store) in self.offset_stores() {
            match store.forget_topics(&gone).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        shard = self.id,
                        slot,
                        positions = n,
                        "deleted committed offsets of deleted topics"
                    );
                }
                Err(e) => {
                    tracing::error!(shard = self.id, slot, error = %e,
                        "deleting committed offsets of a deleted topic failed; the next start retries");
                }
            }
        }
    }
}

/// Closes partitions being removed and waits (up to [`REMOVAL_CLOSE_WAIT`]) until nothing
/// else holds them.
///
/// Unlink only once the segment files are closed. The last close of an unlinked file frees
/// its extents inside close(2), on the shard thread: 0.7 s for a 6 GB topic, stalling every
/// partition of the shard. Closed first, the unlinks do that work in io_uring's worker
/// threads. The housekeeping tasks let go of their handles at their next tick, other holders
/// (a fetch being answered) shortly after.
async fn close_all(doomed: &[Rc<Log>]) {
    /// How often it looks.
    const REMOVAL_CLOSE_POLL: Duration = Duration::from_millis(5);
    for log in doomed {
        let _ = log.close().await;
    }
    let mut waited = Duration::ZERO;
    while doomed.iter().any(|log| Rc::strong_count(log) > 1) && waited < REMOVAL_CLOSE_WAIT {
        glommio::timer::sleep(REMOVAL_CLOSE_POLL).await;
        waited += REMOVAL_CLOSE_POLL;
    }
}

/// How long a removal waits for other holders of a removed partition to let go.
const REMOVAL_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Directory-name prefix of a deleted topic's files until they are removed.
pub const TOMBSTONE_PREFIX: &str = "__deleted-";
/// Directory-name prefix of a topic directory found at start with no topic in the metadata.
pub const ORPHAN_PREFIX: &str = "__orphaned-";

/// A directory name that no topic can have and no earlier one took: `prefix`, the name, a
/// number.
fn unused_name(data_dir: &Path, prefix: &str, name: &str) -> PathBuf {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    loop {
        let candidate = data_dir.join(format!("{prefix}{name}-{n}"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Renames a topic's directory to a tombstone and makes the rename durable; `None` when the
/// topic has no directory.
pub(super) async fn entomb(data_dir: &Path, name: &str) -> std::io::Result<Option<PathBuf>> {
    let dir = data_dir.join(name);
    if !dir.exists() {
        return Ok(None);
    }
    let tomb = unused_name(data_dir, TOMBSTONE_PREFIX, name);
    DmaStorage.rename(&dir, &tomb).await?;
    DmaStorage.sync_dir(data_dir).await?;
    Ok(Some(tomb))
}

/// At start (shard 0, before any partition opens): removes the tombstones of deletions a
/// crash interrupted, and moves aside (never deletes) every directory named like a topic that
/// the metadata does not know, so that a topic created later under that name starts empty
/// instead of resurrecting those files.
pub(super) async fn sweep_data_dir(
    data_dir: &Path,
    topics: &std::collections::BTreeMap<String, TopicConfig>,
) -> std::io::Result<()> {
    let mut moved = false;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(TOMBSTONE_PREFIX) {
            tracing::info!(tombstone = %entry.path().display(), "removing a deleted topic's files");
            DmaStorage.remove_dir_all(&entry.path()).await?;
        } else if validate_topic_name(&name).is_ok() && !topics.contains_key(&name) {
            let aside = unused_name(data_dir, ORPHAN_PREFIX, &name);
            tracing::error!(directory = %entry.path().display(), moved_to = %aside.display(),
                "a topic directory the metadata does not know: moved aside, not deleted");
            DmaStorage.rename(&entry.path(), &aside).await?;
            moved = true;
        }
    }
    if moved {
        DmaStorage.sync_dir(data_dir).await?;
    }
    Ok(())
}
