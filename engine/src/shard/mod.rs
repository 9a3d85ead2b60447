//! The shard runtime, free of any protocol: one per core, each with its own glommio executor
//! and io_uring ring, owning the partitions placed on it.
//!
//! ```text
//!   shard 0          shard 1    ...   shard N-1
//!   TopicStore ──push──▶ topic table copy on every shard
//!   partitions p with shard_for(topic, p, N) == shard
//!   group offset slots placed the same way (__offsets/<slot>)
//! ```
//!
//! A [`Shard`] is the **one door** into the logs for every caller: [`Shard::append`],
//! [`Shard::read`], [`Shard::list_offset`], [`Shard::bounds`], the group offsets and topic
//! admin. Each either runs on this shard or travels to the owner over the bounded channel
//! mesh ([`mesh`]), as the caller's [`Route`] allows. Answers are named structs and
//! [`ShardError`]s; the listeners (`crate::server`) map those to their protocols. Nothing here
//! names a listener.
//!
//! Start-up ([`Shard::open`]): join the mesh; (shard 0) replay the topic store and push the
//! table to every shard; open the partitions and offset slots this shard owns; start the
//! mesh receiver and the group timers. [`Shard::shutdown`] closes (flushes) everything.
//!
//! Shard state is `!Send` and lives on its thread.

use std::cell::{Cell, Ref, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

use futures_lite::StreamExt;

use crate::config::LogConfig;
use crate::coordinator::{CoordinatorConfig, GroupService};
use crate::groups::{OffsetStore, OFFSETS_DIR, OFFSET_SLOTS};
use crate::io::dma::DmaStorage;
use crate::io::SystemClock;
use crate::log::PartitionLog;
use crate::meta::{shard_for, TopicConfig, TopicStore};
use crate::sync::Event;

pub mod cluster;
mod data;
mod error;
pub(crate) mod mesh;
pub mod replica;
mod topics;

pub use data::{AppendStarted, Appended, Batches, Bounds, Fetched, ListedOffset, Route};
pub use error::ShardError;
pub use mesh::Mesh;
pub use topics::{ORPHAN_PREFIX, TOMBSTONE_PREFIX};

/// A partition log on real files.
pub(crate) type Log = PartitionLog<DmaStorage, SystemClock>;
use crate::log::files::SegmentFiles;
use crate::log::memory::ReadMemory;
use crate::log::LogResources;

/// A chunk of stored batches handed out by [`Shard::read`].
pub type Chunk = crate::log::ReadChunk<crate::io::dma::DmaBytes>;

/// What every shard needs to run, whatever listens in front of it.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Where partitions and metadata live.
    pub data_dir: PathBuf,
    /// Number of shards in the broker.
    pub shards: usize,
    /// Log settings for topics that do not override them.
    pub log_defaults: LogConfig,
    /// Consumer-group coordinator settings.
    pub coordinator: CoordinatorConfig,
    /// How long an empty group's committed offsets outlive its last commit (Kafka's
    /// `offsets.retention.minutes`).
    pub offsets_retention: std::time::Duration,
    /// Most partitions the broker holds, all topics together (internal logs aside):
    /// a creation past it is refused before anything is persisted.
    pub max_partitions: u64,
    /// How often each partition's flush and retention checks run.
    pub housekeeping: crate::runtime::Housekeeping,
    /// Most sealed-segment files the shard's partitions keep open, all together
    /// (`--max-open-segment-files`; see [`crate::log::files`]).
    pub open_segment_files: usize,
    /// Bytes of this shard's batch cache, all its partitions together.
    pub cache_bytes: usize,
    /// This node's place in a cluster; `None`: a single node without peers.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// What this node registers in the cluster metadata (its endpoints), in a cluster.
    pub registration: Option<crate::cluster::NodeInfo>,
    /// In-sync replicas an `acks=all` write to a replicated partition needs (Kafka's
    /// `min.insync.replicas`).
    pub min_insync_replicas: usize,
    /// Replicas of a topic created without a replication factor.
    pub default_replication_factor: u16,
    /// How this node's followers fetch from their leaders.
    pub replica_fetch: replica::ReplicaFetch,
}

/// Replies awaited by this shard's tasks, by request id.
#[derive(Default)]
struct Pending {
    replies: RefCell<HashMap<u64, mesh::Reply>>,
    arrived: Event,
}

/// A committed-offsets slot's store on a shard.
type SlotStore = OffsetStore<DmaStorage, SystemClock>;

/// One shard's state. `!Send`: it lives and dies on its executor.
pub struct Shard {
    id: usize,
    config: ShardConfig,
    topics: RefCell<BTreeMap<String, TopicConfig>>,
    /// Owned partition logs by topic, then partition (looked up by `&str`, no allocation).
    partitions: RefCell<HashMap<String, BTreeMap<u32, Rc<Log>>>>,
    /// Owned partitions that failed to open, with why: offline (requests to them get a
    /// storage error) while the shard serves the rest. Bounded by the partitions it owns.
    offline: RefCell<HashMap<(String, u32), String>>,
    /// Long-polling fetches waiting for appends, by the partitions they read: an append
    /// wakes only the fetches that read its partition.
    watchers: Watchers,
    /// Notified when the shard starts shutting down.
    stopping: Event,
    stopped: Cell<bool>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupService<SystemClock>,
    /// Kafka request counters and latencies, and open connections (metrics).
    pub metrics: crate::metrics::ShardMetrics,
    store: Option<TopicStore<DmaStorage, SystemClock>>,
    /// The committed-offsets stores of the slots this shard coordinates, with the leader
    /// epoch each was loaded at (0 on a single node, whose stores open at start). In a
    /// cluster they come and go with the leadership of the slots' partitions
    /// (`reconcile_offset_stores`).
    offsets: RefCell<HashMap<u32, (u32, Rc<SlotStore>)>>,
    /// Offset slots this shard owns that failed to open, with why.
    offline_slots: HashMap<u32, String>,
    senders: mesh::Senders,
    /// Replies go on a mesh of their own (see [`mesh::Mesh`]).
    reply_senders: mesh::Senders,
    pending: Pending,
    next_id: Cell<u64>,
    /// Serialises topic creations and deletions (used on shard 0, which does them all).
    admin_gate: crate::sync::Gate,
    /// What this shard's partitions share, bounded: open sealed-segment files, read memory,
    /// the batch cache.
    log_resources: LogResources<<DmaStorage as crate::io::Storage>::File>,
    /// The node's metadata Raft node (shard 0 of a cluster node).
    controller: Option<Rc<crate::cluster::Controller>>,
    /// The cluster as last pushed by shard 0 (`None` on a single node).
    view: RefCell<Option<std::sync::Arc<cluster::View>>>,
    /// Shard 0 of a cluster node: producer ids `[next, end)` reserved for this node.
    producer_block: Cell<(i64, i64)>,
    /// Shard 0 of a cluster node: the controller version applied to this node.
    applied_version: Cell<u64>,
    /// Rung when `applied_version` moves.
    applied: Event,
    /// Replicated partitions' roles here (leader or follower state), by partition.
    roles: RefCell<HashMap<(String, u32), replica::Role>>,
    /// Replicas whose log a follower is cutting back or emptying (closed, rewritten,
    /// reopened): one rewrite at a time per partition.
    rewriting: RefCell<std::collections::HashSet<(String, u32)>>,
    /// Tests: a rewrite waits after closing its log until this is notified (a slow close).
    #[cfg(test)]
    hold_rewrites: RefCell<Option<Rc<Event>>>,
    /// This shard, for tasks it spawns.
    this: RefCell<std::rc::Weak<Shard>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("shards", &self.config.shards)
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Opens shard `id`: joins the mesh, receives (or, on shard 0, replays and pushes) the
    /// topic table, opens what this shard owns and starts its background tasks. Every shard
    /// of the mesh must call this concurrently.
    ///
    /// # Errors
    /// A description of what failed (mesh, metadata, a partition's recovery).
    pub async fn open(id: usize, config: ShardConfig, mesh: Mesh) -> Result<Rc<Shard>, String> {
        let started = std::time::Instant::now();
        let mesh::Joined {
            senders,
            reply_senders,
            requests: mut receivers,
            mut replies,
        } = mesh
            .join()
            .await
            .map_err(|e| format!("channel mesh join failed: {e}"))?;
        let data_dir = config.data_dir.clone();
        let controller = match (&config.cluster, id) {
            (Some(cluster), 0) => Some(
                crate::cluster::Controller::open(cluster, &data_dir, Rc::new(Event::default()))
                    .await?,
            ),
            _ => None,
        };
        let store = if id == 0 && controller.is_none() {
            let store = TopicStore::open(
                DmaStorage,
                SystemClock,
                &data_dir,
                config.log_defaults.clone(),
            )
            .await
            .map_err(|e| format!("topic metadata: {e}"))?;
            Some(store)
        } else {
            None
        };
        let mut table = store.as_ref().map(|s| s.topics()).unwrap_or_default();
        let mut created_at = BTreeMap::new();
        if let Some(controller) = &controller {
            for (name, topic) in &controller.state().topics {
                table.insert(name.clone(), topic.config);
                created_at.insert(name.clone(), topic.created_at);
            }
        }
        if id == 0 {
            topics::sweep_data_dir(&data_dir, &table)
                .await
                .map_err(|e| format!("sweeping {}: {e}", data_dir.display()))?;
        }
        let mut offsets = HashMap::new();
        let mut offline_slots = HashMap::new();
        // In a cluster the slots are replicated partitions: their stores load when this node
        // leads them.
        let single_node = config.registration.is_none();
        for slot in (0..OFFSET_SLOTS).filter(|_| single_node) {
            if shard_for(OFFSETS_DIR, slot, config.shards) == id {
                match OffsetStore::open(DmaStorage, SystemClock, &data_dir, slot).await {
                    Ok(store) => {
                        offsets.insert(slot, (0, Rc::new(store)));
                    }
                    Err(e) => {
                        // The groups of this slot get storage errors; every other slot and
                        // every partition are served.
                        tracing::error!(shard = id, slot, error = %e,
                            "committed-offsets slot failed to open: offline");
                        offline_slots.insert(slot, e.to_string());
                    }
                }
            }
        }
        let groups = GroupService::new(config.coordinator.clone(), SystemClock);
        let config_open_segment_files = config.open_segment_files;
        let config_cache_bytes = config.cache_bytes;
        let shard = Shard {
            id,
            config,
            topics: RefCell::new(BTreeMap::new()),
            partitions: RefCell::new(HashMap::new()),
            offline: RefCell::new(HashMap::new()),
            watchers: Watchers::default(),
            stopping: Event::default(),
            stopped: Cell::new(false),
            groups,
            metrics: crate::metrics::ShardMetrics::default(),
            store,
            offsets: RefCell::new(offsets),
            offline_slots,
            senders,
            reply_senders,
            pending: Pending::default(),
            next_id: Cell::new(0),
            admin_gate: crate::sync::Gate::default(),
            controller,
            view: RefCell::new(None),
            producer_block: Cell::new((0, 0)),
            applied_version: Cell::new(0),
            applied: Event::default(),
            roles: RefCell::new(HashMap::new()),
            rewriting: RefCell::new(std::collections::HashSet::new()),
            #[cfg(test)]
            hold_rewrites: RefCell::new(None),
            this: RefCell::new(std::rc::Weak::new()),
            log_resources: LogResources {
                files: SegmentFiles::new(config_open_segment_files),
                memory: ReadMemory::new(crate::limits::READ_MEMORY_BYTES_PER_SHARD),
                cache: crate::log::cache::BatchCache::new(config_cache_bytes),
            },
        };
        // Shard 0 pushes the replayed table; every shard applies the pushes before serving.
        let streams = if shard.id == 0 {
            if let Some(view) = shard.current_view() {
                shard.push_view(view).await;
            }
            for (name, topic) in &table {
                // A partition that fails to open stays offline (logged); the rest serve.
                let _ = shard.apply_upsert(name, *topic).await;
            }
            for peer in 0..shard.shards() {
                if peer == shard.id {
                    continue;
                }
                for (name, topic) in &table {
                    shard.send_to(peer, mesh::table_entry(name, *topic)).await?;
                }
                shard
                    .send_to(peer, mesh::ShardMessage::TableComplete)
                    .await?;
            }
            receivers.streams()
        } else {
            // Apply the initial table, which ends with a marker from shard 0.
            let mut rest = Vec::new();
            for (peer, mut receiver) in receivers.streams() {
                if peer == 0 {
                    while let Some(message) = receiver.next().await {
                        match message {
                            mesh::ShardMessage::TopicUpsert { name, config, .. } => {
                                let _ = shard.apply_upsert(&name, config).await;
                            }
                            mesh::ShardMessage::TableComplete => break,
                            mesh::ShardMessage::ClusterView(view) => {
                                *shard.view.borrow_mut() = Some(view);
                            }
                            other => return Err(format!("unexpected start-up message {other:?}")),
                        }
                    }
                }
                rest.push((peer, receiver));
            }
            rest
        };
        let offline = shard.offline.borrow().len();
        let (partitions, bytes, segments, clean) = {
            let logs = shard.partitions.borrow();
            let all = logs.values().flat_map(|by_index| by_index.values());
            all.fold((0usize, 0u64, 0usize, 0usize), |(n, b, s, c), log| {
                (
                    n + 1,
                    b + log.size_bytes(),
                    s + log.segment_count(),
                    c + usize::from(log.opened_clean()),
                )
            })
        };
        tracing::info!(
            shard = shard.id,
            partitions,
            offline,
            // Opened from a clean-shutdown record; the rest scanned their active segment.
            clean,
            segments,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shard recovered its partitions"
        );
        // Positions on topics the metadata no longer has: a deletion a crash interrupted
        // before every slot forgot them.
        let known: std::collections::BTreeSet<String> =
            shard.topics.borrow().keys().cloned().collect();
        shard.forget_offsets(|topic| !known.contains(topic)).await;
        let shard = Rc::new(shard);
        *shard.this.borrow_mut() = Rc::downgrade(&shard);
        shard.reconcile_roles();
        mesh::spawn_receivers(&shard, streams, replies.streams());
        if let Some(controller) = &shard.controller {
            shard.applied_version.set(controller.version());
            shard.spawn_cluster_applier(created_at);
            if let Some(info) = shard.config.registration.clone() {
                controller.spawn_registration(info);
            }
            controller.spawn_fencing();
        }
        {
            let shard = Rc::clone(&shard);
            glommio::spawn_local(async move {
                let stopping = shard.stopping.listen();
                shard.groups.run_timers(stopping).await;
            })
            .detach();
        }
        spawn_offsets_expiry(&shard);
        Ok(shard)
    }

    /// This shard's index (also its Kafka node id).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Number of shards in the broker.
    pub fn shards(&self) -> usize {
        self.config.shards
    }

    /// Log settings for topics that do not override them.
    pub fn log_defaults(&self) -> &LogConfig {
        &self.config.log_defaults
    }

    /// The shard's settings.
    pub fn settings(&self) -> &ShardConfig {
        &self.config
    }

    /// The topic table (every shard holds all of it).
    pub fn topics(&self) -> Ref<'_, BTreeMap<String, TopicConfig>> {
        self.topics.borrow()
    }

    /// This shard's metrics now (a scrape): its partitions, request counters, fsync and
    /// cache figures, and the committed positions of the groups it coordinates (bounded).
    pub fn metrics_snapshot(&self) -> crate::metrics::ShardSnapshot {
        let mut snapshot = crate::metrics::ShardSnapshot {
            shard: self.id,
            offline: self.offline.borrow().len(),
            ..Default::default()
        };
        let mut fsync = crate::metrics::HistogramSnapshot::default();
        for (topic, logs) in self.partitions.borrow().iter() {
            for (&partition, log) in logs {
                let stats = log.stats();
                snapshot.fsyncs += stats.fsyncs;
                snapshot.cache_reads += stats.cache_reads;
                snapshot.disk_reads += stats.disk_reads;
                snapshot.readahead_hits += stats.readahead_hits;
                fsync.merge(&log.fsync_latency());
                snapshot.partitions.push(crate::metrics::PartitionSnapshot {
                    topic: topic.clone(),
                    partition,
                    leader: self.owner(topic, partition) == self.id
                        && self.leads_here(topic, partition),
                    log_start: log.log_start(),
                    log_end: self.readable_end(topic, partition, log),
                    size_bytes: log.size_bytes(),
                    bytes_in: stats.appended_bytes,
                    records_in: stats.appended_records,
                    bytes_out: stats.read_bytes,
                });
            }
        }
        snapshot.fsync_latency = fsync;
        let cache = self.log_resources.cache.stats();
        snapshot.cache_bytes = cache.bytes;
        snapshot.cache_budget = cache.budget;
        let memory = self.log_resources.memory.stats();
        snapshot.read_memory_bytes = memory.held;
        snapshot.read_memory_capacity = memory.capacity;
        (snapshot.kafka_connections, snapshot.native_connections) = self.metrics.connections();
        self.metrics.fill(&mut snapshot);
        let mut room = crate::metrics::GROUP_LAG_SERIES_MAX;
        for (_, store) in self.offset_stores() {
            let (positions, dropped) = store.positions(room);
            room -= positions.len();
            snapshot.committed.extend(positions);
            snapshot.committed_dropped += dropped;
        }
        snapshot
    }

    /// Every shard's metrics (this one's and, over the mesh, the others'), for a scrape.
    /// A shard that does not answer is left out.
    pub async fn metrics_all(&self) -> Vec<crate::metrics::ShardSnapshot> {
        let mut out = vec![self.metrics_snapshot()];
        for shard in (0..self.config.shards).filter(|&s| s != self.id) {
            if let Ok(mesh::Reply::Metrics(snapshot)) =
                self.forward(shard, mesh::Forwarded::Metrics).await
            {
                out.push(*snapshot);
            }
        }
        out
    }

    /// Every partition copy this shard holds (leader or follower): topic, partition, its
    /// size on disk in bytes, and its offset lag (reported as 0: not tracked per copy yet),
    /// sorted.
    pub fn local_partitions(&self) -> Vec<(String, u32, u64, u64)> {
        let mut out: Vec<(String, u32, u64, u64)> = self
            .partitions
            .borrow()
            .iter()
            .flat_map(|(topic, logs)| {
                logs.iter()
                    .map(move |(&p, log)| (topic.clone(), p, log.size_bytes(), 0))
            })
            .collect();
        out.sort();
        out
    }

    /// Whether a topic exists.
    pub fn has_topic(&self, name: &str) -> bool {
        self.topics.borrow().contains_key(name)
    }

    /// The shard owning a partition.
    pub fn owner(&self, topic: &str, partition: u32) -> usize {
        shard_for(topic, partition, self.config.shards)
    }

    /// Checks that a topic and partition exist.
    ///
    /// # Errors
    /// [`ShardError::UnknownTopicOrPartition`].
    pub fn check_exists(&self, topic: &str, partition: u32) -> Result<(), ShardError> {
        match self.topics.borrow().get(topic) {
            Some(config) if partition < config.partitions => Ok(()),
            _ => Err(ShardError::UnknownTopicOrPartition),
        }
    }

    /// The shard coordinating a group: the owner of its offset slot.
    pub fn group_owner(&self, group: &str) -> usize {
        shard_for(
            OFFSETS_DIR,
            crate::groups::slot_of(group),
            self.config.shards,
        )
    }

    /// True once the shard started shutting down.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Completes when the shard starts shutting down.
    pub fn stopping(&self) -> crate::sync::Listener<'_> {
        self.stopping.listen()
    }

    /// A doorbell that rings at each append to one of `partitions` that this shard owns (and
    /// at shutdown): what a long-polling fetch waits on. Listen to it before reading, so an
    /// append in between is not missed. Partitions of other shards never ring it.
    pub fn doorbell<'a>(&self, partitions: impl Iterator<Item = (&'a str, i32)>) -> Rc<Event> {
        let bell = Rc::new(Event::default());
        for (topic, partition) in partitions {
            let Ok(partition) = u32::try_from(partition) else {
                continue;
            };
            if self.local(topic, partition).is_ok() {
                self.watchers.watch(topic, partition, &bell);
            }
        }
        bell
    }

    /// The log of a partition this shard owns.
    fn local(&self, topic: &str, partition: u32) -> Result<Rc<Log>, ShardError> {
        let topics = self.topics.borrow();
        let Some(config) = topics.get(topic) else {
            return Err(ShardError::UnknownTopicOrPartition);
        };
        if partition >= config.partitions {
            return Err(ShardError::UnknownTopicOrPartition);
        }
        if self.owner(topic, partition) != self.id || !self.leads_here(topic, partition) {
            return Err(ShardError::NotOwner);
        }
        if let Some(log) = self
            .partitions
            .borrow()
            .get(topic)
            .and_then(|logs| logs.get(&partition))
        {
            // A leader serves only once its log has recorded the epoch it leads in and, for a
            // replicated partition, its leader state for that epoch exists.
            if let Some(epoch) = self.leading_epoch(topic, partition) {
                if log.latest_leader_epoch() != Some(epoch) {
                    return Err(ShardError::NotOwner);
                }
                if self.replicated(topic, partition)
                    && self.leading(topic, partition).map(|l| l.epoch) != Some(epoch)
                {
                    return Err(ShardError::NotOwner);
                }
            }
            return Ok(Rc::clone(log));
        }
        match self.offline.borrow().get(&(topic.to_owned(), partition)) {
            Some(reason) => Err(ShardError::Storage(format!(
                "partition {topic}-{partition} is offline: {reason}"
            ))),
            None => Err(ShardError::UnknownTopicOrPartition),
        }
    }

    /// Stops: wakes every waiter, closes (flushes) every partition and store.
    ///
    /// # Errors
    /// The last close that failed.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.stopped.set(true);
        self.stopping.notify();
        self.watchers.ring_all();
        let logs: Vec<Rc<Log>> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|logs| logs.values().cloned())
            .collect();
        let mut result = Ok(());
        for log in logs {
            if let Err(e) = log.close().await {
                result = Err(format!("closing {}: {e}", log.dir().display()));
            }
        }
        let stores: Vec<_> = self
            .offsets
            .borrow()
            .values()
            .map(|(_, s)| Rc::clone(s))
            .collect();
        for store in stores {
            if let Err(e) = store.close().await {
                result = Err(format!("closing offsets: {e}"));
            }
        }
        if let Some(store) = &self.store {
            store.close().await.map_err(|e| e.to_string())?;
        }
        if let Some(controller) = &self.controller {
            controller.stop();
            controller.close().await?;
        }
        self.senders.close();
        self.reply_senders.close();
        result
    }
}

/// A wire partition number as an index; negative ones name no partition.
///
/// # Errors
/// [`ShardError::UnknownTopicOrPartition`] for a negative number.
pub fn partition_index(partition: i32) -> Result<u32, ShardError> {
    u32::try_from(partition).map_err(|_| ShardError::UnknownTopicOrPartition)
}

impl Shard {
    /// The committed-offsets stores this shard holds now, by slot (cloned out of the map, so
    /// that no borrow is held while they are awaited).
    pub(super) fn offset_stores(&self) -> Vec<(u32, Rc<SlotStore>)> {
        self.offsets
            .borrow()
            .iter()
            .map(|(slot, (_, store))| (*slot, Rc::clone(store)))
            .collect()
    }
}

/// How often a shard looks for committed offsets past retention (Kafka's
/// `offsets.retention.check.interval.ms`), or the retention itself when shorter; slots due
/// for compaction are compacted at the same time (and at open).
const OFFSETS_EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes, periodically, the committed offsets of this shard's groups that have no members
/// and have not committed for the retention: state keyed by group names a client chose must
/// not grow for ever.
fn spawn_offsets_expiry(shard: &Rc<Shard>) {
    let retention = shard.config.offsets_retention;
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let every = OFFSETS_EXPIRY_CHECK
        .min(retention)
        .max(std::time::Duration::from_millis(100));
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(every).await;
            let Some(shard) = weak.upgrade() else {
                return;
            };
            if shard.is_stopped() {
                return;
            }
            for (slot, store) in shard.offset_stores() {
                let live = |group: &str| !shard.groups.describe(group).members.is_empty();
                match store.expire(retention_ms, live).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        shard = shard.id,
                        slot,
                        positions = n,
                        "committed offsets of empty groups expired (offsets retention)"
                    ),
                    Err(e) => tracing::warn!(shard = shard.id, slot, error = %e,
                        "expiring committed offsets failed; the next check retries"),
                }
                if let Err(e) = store.compact_if_due().await {
                    tracing::warn!(shard = shard.id, slot, error = %e,
                        "compacting an offsets slot failed; the next check retries");
                }
            }
        }
    })
    .detach();
}

/// Doorbells of waiting fetches by topic and partition. Bounded: a partition's list holds
/// the fetches waiting on it plus at most one finished one (each new watch and each ring
/// drops the finished), and only partitions this shard owns are watched.
#[derive(Default)]
struct Watchers {
    by_topic: RefCell<HashMap<String, PartitionBells>>,
}

/// The doorbells of one topic's waiting fetches, by partition.
type PartitionBells = HashMap<u32, Vec<std::rc::Weak<Event>>>;

impl Watchers {
    fn watch(&self, topic: &str, partition: u32, bell: &Rc<Event>) {
        let mut by_topic = self.by_topic.borrow_mut();
        if !by_topic.contains_key(topic) {
            by_topic.insert(topic.to_owned(), HashMap::new());
        }
        if let Some(parts) = by_topic.get_mut(topic) {
            let list = parts.entry(partition).or_default();
            list.retain(|w| w.strong_count() > 0);
            list.push(Rc::downgrade(bell));
        }
    }

    /// Wakes the fetches waiting on one partition.
    fn ring(&self, topic: &str, partition: u32) {
        let bells: Vec<Rc<Event>> = {
            let mut by_topic = self.by_topic.borrow_mut();
            let Some(parts) = by_topic.get_mut(topic) else {
                return;
            };
            let Some(list) = parts.get_mut(&partition) else {
                return;
            };
            list.retain(|w| w.strong_count() > 0);
            let bells = list.iter().filter_map(std::rc::Weak::upgrade).collect();
            if list.is_empty() {
                parts.remove(&partition);
                if parts.is_empty() {
                    by_topic.remove(topic);
                }
            }
            bells
        };
        for bell in bells {
            bell.notify();
        }
    }

    /// Wakes every waiting fetch (shutdown).
    fn ring_all(&self) {
        let bells: Vec<Rc<Event>> = self
            .by_topic
            .borrow()
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .filter_map(std::rc::Weak::upgrade)
            .collect();
        for bell in bells {
            bell.notify();
        }
    }
}

#[cfg(test)]
mod watcher_tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    /// An append wakes the fetches reading its partition and no other; finished fetches do
    /// not accumulate. Before, every append woke every long-polling fetch on the shard, each
    /// of which re-read all its partitions.
    #[test]
    fn a_ring_wakes_only_the_fetches_of_its_partition() {
        let watchers = Watchers::default();
        let reads_a0 = Rc::new(Event::default());
        let reads_b1 = Rc::new(Event::default());
        watchers.watch("a", 0, &reads_a0);
        watchers.watch("b", 1, &reads_b1);
        let mut a = Box::pin(reads_a0.listen());
        let mut b = Box::pin(reads_b1.listen());
        watchers.ring("a", 0);
        assert!(
            block_on(poll_once(&mut a)).is_some(),
            "its partition's fetch wakes"
        );
        assert!(
            block_on(poll_once(&mut b)).is_none(),
            "another partition's does not"
        );
        watchers.ring("a", 1);
        watchers.ring("c", 0);
        assert!(block_on(poll_once(&mut b)).is_none());
        watchers.ring_all();
        assert!(block_on(poll_once(&mut b)).is_some(), "shutdown wakes all");
        // Finished fetches are dropped from the lists.
        for _ in 0..1000 {
            let bell = Rc::new(Event::default());
            watchers.watch("a", 0, &bell);
        }
        let held = watchers.by_topic.borrow()["a"][&0].len();
        assert!(held <= 2, "{held} doorbells held for one waiting fetch");
        drop(reads_a0);
        watchers.ring("a", 0);
        assert!(
            watchers.by_topic.borrow().get("a").is_none(),
            "nothing left to ring"
        );
    }
}
