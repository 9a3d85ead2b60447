//! The topic table: create and delete (owned by shard 0, which persists the change in its
//! `TopicStore` and pushes it to every shard, acknowledging only when all applied it), opening
//! and removing the partitions a shard owns, and idempotent-producer ids.

use std::rc::Rc;
use std::time::Duration;

use super::mesh::{Forwarded, Reply, ShardMessage};
use super::{Log, Shard, ShardError};
use crate::io::dma::DmaStorage;
use crate::io::SystemClock;
use crate::log::PartitionLog;
use crate::meta::{partition_dir, TopicConfig};
use crate::runtime::spawn_housekeeping;

impl Shard {
    /// Creates a topic (on shard 0, forwarding if needed); returns once every shard knows it.
    ///
    /// # Errors
    /// The topic store's refusal (name, existence, configuration) or a storage failure.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<(), ShardError> {
        if self.id != 0 {
            let request = Forwarded::CreateTopic {
                name: name.to_owned(),
                config,
            };
            return match self.forward(0, request).await? {
                Reply::Admin(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a topic creation")),
            };
        }
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        store
            .create(name, config)
            .await
            .map_err(|e| ShardError::from(&e))?;
        self.apply_upsert(name, config)
            .await
            .map_err(ShardError::Storage)?;
        self.broadcast(|id| ShardMessage::TopicUpsert {
            id,
            name: name.to_owned(),
            config,
        })
        .await;
        Ok(())
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
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        store.delete(name).await.map_err(|e| ShardError::from(&e))?;
        self.apply_removal(name).await;
        self.broadcast(|id| ShardMessage::TopicRemoved {
            id,
            name: name.to_owned(),
        })
        .await;
        Ok(())
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
        let Some(store) = &self.store else {
            return Err(ShardError::Internal("no topic store on shard 0"));
        };
        store.allocate_producer_id().await.map_err(|e| {
            tracing::error!(error = %e, "allocating a producer id failed");
            ShardError::Storage(e.to_string())
        })
    }

    /// Records a topic in this shard's table and opens the partitions it owns.
    pub(super) async fn apply_upsert(&self, name: &str, config: TopicConfig) -> Result<(), String> {
        self.topics.borrow_mut().insert(name.to_owned(), config);
        let log_config = config.log_config(&self.config.log_defaults);
        for partition in 0..config.partitions {
            if self.owner(name, partition) != self.id {
                continue;
            }
            let opened = self
                .partitions
                .borrow()
                .get(name)
                .is_some_and(|logs| logs.contains_key(&partition));
            if opened {
                continue;
            }
            let dir = partition_dir(&self.config.data_dir, name, partition);
            let log = PartitionLog::open(DmaStorage, SystemClock, &dir, log_config.clone())
                .await
                .map_err(|e| format!("open {}: {e}", dir.display()))?;
            let log = Rc::new(log);
            spawn_housekeeping(Rc::clone(&log), self.config.housekeeping);
            self.partitions
                .borrow_mut()
                .entry(name.to_owned())
                .or_default()
                .insert(partition, log);
        }
        Ok(())
    }

    /// Forgets a topic and deletes the partitions this shard owns.
    pub(super) async fn apply_removal(&self, name: &str) {
        /// How long a removal waits for other holders of a deleted partition to let go.
        const REMOVAL_CLOSE_WAIT: Duration = Duration::from_secs(2);
        /// How often it looks.
        const REMOVAL_CLOSE_POLL: Duration = Duration::from_millis(5);
        self.topics.borrow_mut().remove(name);
        let doomed: Vec<Rc<Log>> = self
            .partitions
            .borrow_mut()
            .remove(name)
            .map(|logs| logs.into_values().collect())
            .unwrap_or_default();
        // Unlink only once the segment files are closed. The last close of an unlinked file
        // frees its extents inside close(2), here on the shard thread: 0.7 s for a 6 GB
        // topic, stalling every partition of the shard. Closed first, the unlinks do that work
        // in io_uring's worker threads. The housekeeping tasks let go of their handles at
        // their next tick, other holders (a fetch being answered) shortly after: close every
        // partition, then wait for all of them at once.
        for log in &doomed {
            let _ = log.close().await;
        }
        let mut waited = Duration::ZERO;
        while doomed.iter().any(|log| Rc::strong_count(log) > 1) && waited < REMOVAL_CLOSE_WAIT {
            glommio::timer::sleep(REMOVAL_CLOSE_POLL).await;
            waited += REMOVAL_CLOSE_POLL;
        }
        let dirs: Vec<std::path::PathBuf> =
            doomed.iter().map(|log| log.dir().to_path_buf()).collect();
        drop(doomed);
        for dir in dirs {
            if let Err(e) = crate::io::dma::remove_tree(&dir).await {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted partition failed");
            }
        }
        let topic_dir = self.config.data_dir.join(name);
        let _ = std::fs::remove_dir(&topic_dir);
    }
}
