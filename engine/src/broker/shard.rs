//! One shard: its executor's share of the broker.
//!
//! Start-up, in order: bind the shared and own ports and report them; wait for every shard's
//! addresses; join the channel mesh; (shard 0) replay the topic store and push the table to
//! every shard; open the partitions this shard owns; report serving; accept connections
//! until told to stop; close every partition (flushing it).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::net::TcpListener;
use tidelog_wire::native::ErrorCode;

use super::BrokerConfig;
use crate::coordinator::GroupService;
use crate::error::LogError;
use crate::groups::{self, Committed, OffsetStore, OFFSETS_DIR, OFFSET_SLOTS};
use crate::io::dma::DmaStorage;
use crate::io::SystemClock;
use crate::log::{AppendInfo, Durability, PartitionLog, ReadChunk};
use crate::meta::{partition_dir, shard_for, MetaError, TopicConfig, TopicStore};
use crate::runtime::{spawn_housekeeping, Housekeeping};
use crate::sync::Event;

/// A partition log on real files.
pub(crate) type Log = PartitionLog<DmaStorage, SystemClock>;

pub(crate) struct ShardConfig {
    pub shard: usize,
    pub shards: usize,
    pub broker: BrokerConfig,
    pub native_addr: SocketAddr,
    /// The shared Kafka bootstrap address (as bound by shard 0) and this shard's own Kafka
    /// address; `None` when the Kafka listener is off.
    pub kafka: Option<(SocketAddr, SocketAddr)>,
}

/// Addresses a shard listens on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardAddrs {
    pub shared: SocketAddr,
    pub own: SocketAddr,
    pub kafka_shared: Option<SocketAddr>,
    pub kafka_own: Option<SocketAddr>,
}

/// Every shard's endpoints, sent to each shard once all have bound.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub native: Vec<SocketAddr>,
    pub kafka: Vec<SocketAddr>,
}

/// Start-up reports from a shard to [`super::start`].
#[derive(Debug)]
pub(crate) enum Ready {
    Serving,
    Failed(String),
}

/// Messages between shards. `Send`; a forwarded request carries its batch bytes as `Bytes`.
#[derive(Debug)]
pub(crate) enum ShardMessage {
    /// Shard 0 → all: a topic exists with this configuration; answered with `Ack`.
    TopicUpsert {
        id: u64,
        name: String,
        config: TopicConfig,
    },
    /// Shard 0 → all: a topic is gone; delete the partitions you own; answered with `Ack`.
    TopicRemoved { id: u64, name: String },
    /// A request for the shard that owns what it is about.
    Request {
        from: usize,
        id: u64,
        request: Forwarded,
    },
    /// The answer to a `Request` or a push.
    Reply { id: u64, reply: Reply },
    /// Start-up marker from shard 0: the initial topic table is complete.
    TableComplete,
}

/// Requests one shard forwards to another.
#[derive(Debug)]
pub(crate) enum Forwarded {
    CreateTopic {
        name: String,
        config: TopicConfig,
    },
    DeleteTopic {
        name: String,
    },
    Produce {
        topic: String,
        partition: u32,
        durability: Durability,
        batches: Bytes,
    },
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    },
    ListOffset {
        topic: String,
        partition: u32,
        timestamp: i64,
    },
    CommitOffsets {
        group: String,
        offsets: Vec<(String, i32, i64, String)>,
    },
    FetchOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// A new idempotent-producer id, from shard 0's metadata log.
    AllocateProducerId,
}

/// Answers between shards.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Ack,
    Admin(ErrorCode, String),
    Produced(Result<(u64, u64), ErrorCode>),
    Fetched(Result<FetchedData, ErrorCode>),
    Listed(Result<(i64, i64), ErrorCode>),
    Committed(ErrorCode),
    Offsets(Vec<Option<Committed>>),
    ProducerId(Result<i64, ErrorCode>),
}

/// A fetch answered by another shard: the batches copied once into `Bytes` to cross threads.
#[derive(Debug, Clone)]
pub(crate) struct FetchedData {
    pub high_watermark: u64,
    pub log_start: u64,
    pub bytes: Bytes,
}

/// Replies awaited by this shard's tasks, by request id.
#[derive(Default)]
struct Pending {
    replies: RefCell<HashMap<u64, Reply>>,
    arrived: Event,
}

/// One shard's state. `!Send`: it lives and dies on its executor.
pub(crate) struct Shard {
    pub id: usize,
    pub shards: usize,
    pub config: BrokerConfig,
    pub endpoints: Vec<SocketAddr>,
    pub topics: RefCell<BTreeMap<String, TopicConfig>>,
    /// Owned partition logs by topic, then partition (looked up by `&str`, no allocation).
    pub partitions: RefCell<HashMap<String, BTreeMap<u32, Rc<Log>>>>,
    /// Notified after every append on this shard (wakes long-polling fetches).
    pub appended: Event,
    /// Notified when the shard starts shutting down.
    pub stopping: Event,
    pub stopped: Cell<bool>,
    pub connections: Cell<usize>,
    /// Every shard's own Kafka endpoint, by shard (node id); empty when Kafka is off.
    pub kafka_endpoints: Vec<SocketAddr>,
    /// Open Kafka connections on this shard.
    pub kafka_connections: Cell<usize>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupService<SystemClock>,
    store: Option<TopicStore<DmaStorage, SystemClock>>,
    offsets: HashMap<u32, Rc<OffsetStore<DmaStorage, SystemClock>>>,
    senders: Senders<ShardMessage>,
    pending: Pending,
    next_id: Cell<u64>,
}

/// Runs a shard to completion on the current executor.
pub(crate) async fn run(
    config: ShardConfig,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    ready: mpsc::SyncSender<Result<ShardAddrs, String>>,
    go: mpsc::Receiver<Endpoints>,
    serving: mpsc::SyncSender<Ready>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let bound = bind(&config);
    let (shared, own, kafka) = match bound {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let kafka_addrs = match &kafka {
        Some((shared, own)) => (
            Some(shared.local_addr().map_err(|e| e.to_string())?),
            Some(own.local_addr().map_err(|e| e.to_string())?),
        ),
        None => (None, None),
    };
    let addrs = ShardAddrs {
        shared: shared.local_addr().map_err(|e| e.to_string())?,
        own: own.local_addr().map_err(|e| e.to_string())?,
        kafka_shared: kafka_addrs.0,
        kafka_own: kafka_addrs.1,
    };
    let _ = ready.send(Ok(addrs));
    // Start-up only: wait (blocking this thread) until every shard has bound its ports.
    let endpoints = go
        .recv()
        .map_err(|_| "broker start-up aborted".to_string())?;
    let started = start_shard(config, mesh, endpoints).await;
    let (shard, receivers) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = serving.send(Ready::Failed(e.clone()));
            return Err(e);
        }
    };
    let _ = serving.send(Ready::Serving);
    let shard = Rc::new(shard);
    for (_, receiver) in receivers {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                // Replies complete waiting tasks at once. Anything else may itself wait for
                // replies arriving on this very channel, so it runs as its own task.
                match message {
                    ShardMessage::Reply { id, reply } => shard.deliver(id, reply),
                    request => {
                        let shard = Rc::clone(&shard);
                        glommio::spawn_local(async move { shard.on_message(request).await })
                            .detach();
                    }
                }
            }
        })
        .detach();
    }
    for listener in [shared, own] {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move { super::conn::accept_loop(shard, listener).await })
            .detach();
    }
    if let Some((shared, own)) = kafka {
        for listener in [shared, own] {
            let shard = Rc::clone(&shard);
            glommio::spawn_local(async move { super::kafka::accept_loop(shard, listener).await })
                .detach();
        }
    }
    {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            let stopping = shard.stopping.listen();
            shard.groups.run_timers(stopping).await;
        })
        .detach();
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        glommio::timer::sleep(super::STOP_CHECK).await;
    }
    shard.shutdown().await
}

type Listeners = (TcpListener, TcpListener, Option<(TcpListener, TcpListener)>);

fn bind(config: &ShardConfig) -> Result<Listeners, String> {
    let shared = TcpListener::bind(config.native_addr)
        .map_err(|e| format!("bind {}: {e}", config.native_addr))?;
    let own_addr = SocketAddr::new(config.native_addr.ip(), 0);
    let own = TcpListener::bind(own_addr).map_err(|e| format!("bind {own_addr}: {e}"))?;
    let kafka = match config.kafka {
        None => None,
        Some((shared_addr, own_addr)) => {
            let shared = TcpListener::bind(shared_addr)
                .map_err(|e| format!("bind Kafka address {shared_addr}: {e}"))?;
            let own = TcpListener::bind(own_addr)
                .map_err(|e| format!("bind Kafka node address {own_addr}: {e}"))?;
            Some((shared, own))
        }
    };
    Ok((shared, own, kafka))
}

type Receivers = Vec<(
    usize,
    glommio::channels::shared_channel::ConnectedReceiver<ShardMessage>,
)>;

async fn start_shard(
    config: ShardConfig,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    endpoints: Endpoints,
) -> Result<(Shard, Receivers), String> {
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| format!("channel mesh join failed: {e}"))?;
    let data_dir = config.broker.data_dir.clone();
    let store = if config.shard == 0 {
        let store = TopicStore::open(
            DmaStorage,
            SystemClock,
            &data_dir,
            config.broker.log_defaults.clone(),
        )
        .await
        .map_err(|e| format!("topic metadata: {e}"))?;
        Some(store)
    } else {
        None
    };
    let topics = store.as_ref().map(|s| s.topics()).unwrap_or_default();
    let mut offsets = HashMap::new();
    for slot in 0..OFFSET_SLOTS {
        if shard_for(OFFSETS_DIR, slot, config.shards) == config.shard {
            let store = OffsetStore::open(DmaStorage, SystemClock, &data_dir, slot)
                .await
                .map_err(|e| format!("offsets slot {slot}: {e}"))?;
            offsets.insert(slot, Rc::new(store));
        }
    }
    let groups = GroupService::new(config.broker.coordinator.clone(), SystemClock);
    let shard = Shard {
        id: config.shard,
        shards: config.shards,
        config: config.broker,
        endpoints: endpoints.native,
        kafka_endpoints: endpoints.kafka,
        kafka_connections: Cell::new(0),
        groups,
        topics: RefCell::new(BTreeMap::new()),
        partitions: RefCell::new(HashMap::new()),
        appended: Event::default(),
        stopping: Event::default(),
        stopped: Cell::new(false),
        connections: Cell::new(0),
        store,
        offsets,
        senders,
        pending: Pending::default(),
        next_id: Cell::new(0),
    };
    // Shard 0 pushes the replayed table; every shard applies the pushes before serving.
    if shard.id == 0 {
        for (name, topic) in &topics {
            shard.apply_upsert(name, *topic).await?;
        }
        for peer in 0..shard.shards {
            if peer == shard.id {
                continue;
            }
            for (name, topic) in &topics {
                let message = ShardMessage::TopicUpsert {
                    id: u64::MAX,
                    name: name.clone(),
                    config: *topic,
                };
                shard
                    .senders
                    .send_to(peer, message)
                    .await
                    .map_err(|_| format!("shard {peer} unreachable"))?;
            }
            shard
                .senders
                .send_to(peer, ShardMessage::TableComplete)
                .await
                .map_err(|_| format!("shard {peer} unreachable"))?;
        }
    } else {
        // Apply the initial table, which ends with an Ack marker from shard 0.
        let streams = receivers.streams();
        let mut rest = Vec::new();
        for (peer, mut receiver) in streams {
            if peer == 0 {
                while let Some(message) = receiver.next().await {
                    match message {
                        ShardMessage::TopicUpsert { name, config, .. } => {
                            shard.apply_upsert(&name, config).await?;
                        }
                        ShardMessage::TableComplete => break,
                        other => return Err(format!("unexpected start-up message {other:?}")),
                    }
                }
            }
            rest.push((peer, receiver));
        }
        return Ok((shard, rest));
    }
    Ok((shard, receivers.streams()))
}

impl Shard {
    /// The shard owning a partition.
    pub fn owner(&self, topic: &str, partition: u32) -> usize {
        shard_for(topic, partition, self.shards)
    }

    /// Checks that a topic and partition exist (every shard holds the whole table).
    pub fn check_exists(&self, topic: &str, partition: u32) -> Result<(), ErrorCode> {
        match self.topics.borrow().get(topic) {
            Some(config) if partition < config.partitions => Ok(()),
            _ => Err(ErrorCode::UnknownTopicOrPartition),
        }
    }

    /// The log of partition `partition` (a wire `i32`) of `topic`, owned by this shard.
    pub fn local_log(&self, topic: &str, partition: i32) -> Result<Rc<Log>, ErrorCode> {
        self.partition(topic, partition_index(partition)?)
    }

    /// The log of a partition this shard owns.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Rc<Log>, ErrorCode> {
        let topics = self.topics.borrow();
        let Some(config) = topics.get(topic) else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        if partition >= config.partitions {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        if self.owner(topic, partition) != self.id {
            return Err(ErrorCode::NotOwner);
        }
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|logs| logs.get(&partition))
            .cloned()
            .ok_or(ErrorCode::UnknownTopicOrPartition)
    }

    async fn apply_upsert(&self, name: &str, config: TopicConfig) -> Result<(), String> {
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
            spawn_housekeeping(Rc::clone(&log), Housekeeping::default());
            self.partitions
                .borrow_mut()
                .entry(name.to_owned())
                .or_default()
                .insert(partition, log);
        }
        Ok(())
    }

    async fn apply_removal(&self, name: &str) {
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

    fn request_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1) % (u64::MAX - 1));
        id
    }

    async fn await_reply(&self, id: u64) -> Reply {
        loop {
            if let Some(reply) = self.pending.replies.borrow_mut().remove(&id) {
                return reply;
            }
            let listener = self.pending.arrived.listen();
            listener.await;
        }
    }

    fn deliver(&self, id: u64, reply: Reply) {
        self.pending.replies.borrow_mut().insert(id, reply);
        self.pending.arrived.notify();
    }

    /// Sends a request to another shard and waits for its answer.
    async fn forward(&self, to: usize, request: Forwarded) -> Option<Reply> {
        let id = self.request_id();
        let message = ShardMessage::Request {
            from: self.id,
            id,
            request,
        };
        if self.senders.send_to(to, message).await.is_err() {
            return None;
        }
        Some(self.await_reply(id).await)
    }

    /// Creates a topic (on shard 0, forwarding if needed); returns once every shard knows it.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> (ErrorCode, String) {
        if self.id != 0 {
            let request = Forwarded::CreateTopic {
                name: name.to_owned(),
                config,
            };
            return match self.forward(0, request).await {
                Some(Reply::Admin(code, text)) => (code, text),
                _ => (ErrorCode::ShuttingDown, "shard 0 unreachable".into()),
            };
        }
        let Some(store) = &self.store else {
            return (ErrorCode::Unknown, "no topic store on shard 0".into());
        };
        if let Err(e) = store.create(name, config).await {
            return meta_error(&e);
        }
        if let Err(e) = self.apply_upsert(name, config).await {
            return (ErrorCode::StorageError, e);
        }
        self.broadcast(|id| ShardMessage::TopicUpsert {
            id,
            name: name.to_owned(),
            config,
        })
        .await;
        (ErrorCode::None, String::new())
    }

    /// Deletes a topic (on shard 0, forwarding if needed) and its partitions everywhere.
    pub async fn delete_topic(&self, name: &str) -> (ErrorCode, String) {
        if self.id != 0 {
            let request = Forwarded::DeleteTopic {
                name: name.to_owned(),
            };
            return match self.forward(0, request).await {
                Some(Reply::Admin(code, text)) => (code, text),
                _ => (ErrorCode::ShuttingDown, "shard 0 unreachable".into()),
            };
        }
        let Some(store) = &self.store else {
            return (ErrorCode::Unknown, "no topic store on shard 0".into());
        };
        if let Err(e) = store.delete(name).await {
            return meta_error(&e);
        }
        self.apply_removal(name).await;
        self.broadcast(|id| ShardMessage::TopicRemoved {
            id,
            name: name.to_owned(),
        })
        .await;
        (ErrorCode::None, String::new())
    }

    /// Sends a message to every other shard and waits for all their acks.
    async fn broadcast(&self, make: impl Fn(u64) -> ShardMessage) {
        let mut ids = Vec::new();
        for peer in 0..self.shards {
            if peer == self.id {
                continue;
            }
            let id = self.request_id();
            if self.senders.send_to(peer, make(id)).await.is_ok() {
                ids.push(id);
            }
        }
        for id in ids {
            self.await_reply(id).await;
        }
    }

    /// Appends one or more whole batches to a partition, on this shard or its owner's.
    /// Returns the first batch's base offset and the log start.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batches: BytesMut,
        durability: Durability,
    ) -> Result<(u64, u64), ErrorCode> {
        self.check_exists(topic, partition)?;
        let owner = self.owner(topic, partition);
        if owner == self.id {
            let log = self.partition(topic, partition)?;
            let result = append_all(&log, batches, durability).await;
            self.appended.notify();
            return result.map(|base| (base, log.log_start()));
        }
        let request = Forwarded::Produce {
            topic: topic.to_owned(),
            partition,
            durability,
            batches: batches.freeze(),
        };
        match self.forward(owner, request).await {
            Some(Reply::Produced(result)) => result,
            _ => Err(ErrorCode::ShuttingDown),
        }
    }

    /// The first half of a pipelined produce: on this shard, an `acks=all` produce returns
    /// once its batches are in the log, and [`ProduceStarted::finish`] waits for the
    /// fdatasync; anything else (other durabilities, partitions owned elsewhere) completes
    /// here, so starting produces in order appends them in order.
    pub async fn produce_unsynced(
        &self,
        topic: &str,
        partition: u32,
        batches: BytesMut,
        durability: Durability,
    ) -> Result<ProduceStarted, ErrorCode> {
        self.check_exists(topic, partition)?;
        if durability != Durability::Synced || self.owner(topic, partition) != self.id {
            return self
                .produce(topic, partition, batches, durability)
                .await
                .map(|(base, log_start)| ProduceStarted::Done { base, log_start });
        }
        let log = self.partition(topic, partition)?;
        let result = append_all_unsynced(&log, batches).await;
        self.appended.notify();
        let (base, last) = result?;
        Ok(ProduceStarted::Unsynced { log, base, last })
    }

    /// Reads a partition on this shard (zero-copy chunks) or on its owner's (one copy to
    /// cross threads). Returns (high watermark, log start, chunks).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(u64, u64, Vec<ReadChunk<glommio::io::ReadResult>>), ErrorCode> {
        self.check_exists(topic, partition)?;
        let owner = self.owner(topic, partition);
        if owner == self.id {
            let log = self.partition(topic, partition)?;
            let read = log
                .read(offset, max_bytes)
                .await
                .map_err(|e| log_error_code(&e))?;
            return Ok((read.high_watermark, read.log_start, read.chunks));
        }
        let request = Forwarded::Fetch {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes,
        };
        match self.forward(owner, request).await {
            Some(Reply::Fetched(Ok(data))) => {
                let chunks = if data.bytes.is_empty() {
                    Vec::new()
                } else {
                    vec![ReadChunk::Cache(data.bytes)]
                };
                Ok((data.high_watermark, data.log_start, chunks))
            }
            Some(Reply::Fetched(Err(code))) => Err(code),
            _ => Err(ErrorCode::ShuttingDown),
        }
    }

    async fn fetch_copied(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedData, ErrorCode> {
        let (high_watermark, log_start, chunks) =
            self.fetch(topic, partition, offset, max_bytes).await?;
        let total = chunks.iter().map(|c| c.len()).sum();
        let mut bytes = BytesMut::with_capacity(total);
        for chunk in &chunks {
            bytes.extend_from_slice(chunk);
        }
        Ok(FetchedData {
            high_watermark,
            log_start,
            bytes: bytes.freeze(),
        })
    }

    /// Resolves a ListOffsets timestamp (-1 latest, -2 earliest) to (offset, timestamp).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<(i64, i64), ErrorCode> {
        self.check_exists(topic, partition)?;
        let owner = self.owner(topic, partition);
        if owner != self.id {
            let request = Forwarded::ListOffset {
                topic: topic.to_owned(),
                partition,
                timestamp,
            };
            return match self.forward(owner, request).await {
                Some(Reply::Listed(result)) => result,
                _ => Err(ErrorCode::ShuttingDown),
            };
        }
        let log = self.partition(topic, partition)?;
        match timestamp {
            -1 => Ok((log.log_end() as i64, -1)),
            -2 => Ok((log.log_start() as i64, -1)),
            ts => match log.offset_for_timestamp(ts).await {
                Ok(Some((offset, found))) => Ok((offset as i64, found)),
                Ok(None) => Ok((log.log_end() as i64, -1)),
                Err(e) => Err(log_error_code(&e)),
            },
        }
    }

    /// The shard coordinating a group: the owner of its offset slot.
    pub fn group_owner(&self, group: &str) -> usize {
        shard_for(OFFSETS_DIR, groups::slot_of(group), self.shards)
    }

    /// Commits a group's positions on the group's coordinator shard.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, i64, String)>,
    ) -> ErrorCode {
        if group.is_empty() || group.len() > groups::GROUP_BYTES_MAX {
            return ErrorCode::InvalidRequest;
        }
        let owner = self.group_owner(group);
        if owner != self.id {
            let request = Forwarded::CommitOffsets {
                group: group.to_owned(),
                offsets,
            };
            return match self.forward(owner, request).await {
                Some(Reply::Committed(code)) => code,
                _ => ErrorCode::ShuttingDown,
            };
        }
        let Some(store) = self.offsets.get(&groups::slot_of(group)) else {
            return ErrorCode::NotOwner;
        };
        match store.commit(group, &offsets).await {
            Ok(()) => ErrorCode::None,
            Err(e) => log_error_code(&e),
        }
    }

    /// A group's committed positions, from its coordinator shard.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Option<Committed>>, ErrorCode> {
        if group.is_empty() || group.len() > groups::GROUP_BYTES_MAX {
            return Err(ErrorCode::InvalidRequest);
        }
        let owner = self.group_owner(group);
        if owner != self.id {
            let request = Forwarded::FetchOffsets {
                group: group.to_owned(),
                partitions,
            };
            return match self.forward(owner, request).await {
                Some(Reply::Offsets(offsets)) => Ok(offsets),
                _ => Err(ErrorCode::ShuttingDown),
            };
        }
        let store = self
            .offsets
            .get(&groups::slot_of(group))
            .ok_or(ErrorCode::NotOwner)?;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| store.fetch(group, topic, *partition))
            .collect())
    }

    /// Every partition a group this shard coordinates has committed.
    pub fn group_committed(&self, group: &str) -> Result<Vec<(String, i32, Committed)>, ErrorCode> {
        let store = self
            .offsets
            .get(&groups::slot_of(group))
            .ok_or(ErrorCode::NotOwner)?;
        Ok(store.committed_by(group))
    }

    /// A new idempotent-producer id, unique across restarts (allocated by shard 0).
    pub async fn allocate_producer_id(&self) -> Result<i64, ErrorCode> {
        if self.id != 0 {
            return match self.forward(0, Forwarded::AllocateProducerId).await {
                Some(Reply::ProducerId(result)) => result,
                _ => Err(ErrorCode::ShuttingDown),
            };
        }
        let Some(store) = &self.store else {
            return Err(ErrorCode::Unknown);
        };
        store.allocate_producer_id().await.map_err(|e| {
            tracing::error!(error = %e, "allocating a producer id failed");
            ErrorCode::StorageError
        })
    }

    async fn on_message(&self, message: ShardMessage) {
        let (to, id, reply) = match message {
            ShardMessage::TopicUpsert { id, name, config } => {
                if let Err(e) = self.apply_upsert(&name, config).await {
                    tracing::error!(shard = self.id, topic = %name, error = %e, "opening partitions failed");
                }
                (0, id, Reply::Ack)
            }
            ShardMessage::TopicRemoved { id, name } => {
                self.apply_removal(&name).await;
                (0, id, Reply::Ack)
            }
            ShardMessage::Request { from, id, request } => {
                (from, id, self.serve_forwarded(request).await)
            }
            ShardMessage::Reply { id, reply } => {
                self.deliver(id, reply);
                return;
            }
            ShardMessage::TableComplete => return,
        };
        let _ = self
            .senders
            .send_to(to, ShardMessage::Reply { id, reply })
            .await;
    }

    async fn serve_forwarded(&self, request: Forwarded) -> Reply {
        match request {
            Forwarded::CreateTopic { name, config } => {
                let (code, text) = self.create_topic(&name, config).await;
                Reply::Admin(code, text)
            }
            Forwarded::DeleteTopic { name } => {
                let (code, text) = self.delete_topic(&name).await;
                Reply::Admin(code, text)
            }
            Forwarded::Produce {
                topic,
                partition,
                durability,
                batches,
            } => {
                // Unique after the hop, so this is the sender's buffer, not a copy.
                let batches = batches
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                Reply::Produced(self.produce(&topic, partition, batches, durability).await)
            }
            Forwarded::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
            } => Reply::Fetched(
                self.fetch_copied(&topic, partition, offset, max_bytes)
                    .await,
            ),
            Forwarded::ListOffset {
                topic,
                partition,
                timestamp,
            } => Reply::Listed(self.list_offset(&topic, partition, timestamp).await),
            Forwarded::CommitOffsets { group, offsets } => {
                Reply::Committed(self.commit_offsets(&group, offsets).await)
            }
            Forwarded::AllocateProducerId => Reply::ProducerId(self.allocate_producer_id().await),
            Forwarded::FetchOffsets { group, partitions } => Reply::Offsets(
                self.fetch_offsets(&group, partitions)
                    .await
                    .unwrap_or_default(),
            ),
        }
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.stopped.set(true);
        self.stopping.notify();
        self.appended.notify();
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
        for store in self.offsets.values() {
            if let Err(e) = store.close().await {
                result = Err(format!("closing offsets: {e}"));
            }
        }
        if let Some(store) = &self.store {
            store.close().await.map_err(|e| e.to_string())?;
        }
        self.senders.close();
        result
    }
}

fn meta_error(error: &MetaError) -> (ErrorCode, String) {
    let code = match error {
        MetaError::InvalidTopic { .. } => ErrorCode::InvalidTopic,
        MetaError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
        MetaError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
        MetaError::InvalidConfig(_) => ErrorCode::InvalidConfig,
        _ => ErrorCode::StorageError,
    };
    (code, error.to_string())
}

/// A produce started by [`Shard::produce_unsynced`].
pub(crate) enum ProduceStarted {
    /// Complete: (first base offset, log start).
    Done { base: u64, log_start: u64 },
    /// In the log; `last` (the last batch appended) is not yet known durable.
    Unsynced {
        log: Rc<Log>,
        base: u64,
        last: AppendInfo,
    },
}

impl ProduceStarted {
    /// Waits until the produce is durable; returns (first base offset, log start).
    pub async fn finish(self) -> Result<(u64, u64), ErrorCode> {
        match self {
            ProduceStarted::Done { base, log_start } => Ok((base, log_start)),
            ProduceStarted::Unsynced { log, base, last } => {
                log.wait_durable(&last)
                    .await
                    .map_err(|e| log_error_code(&e))?;
                Ok((base, log.log_start()))
            }
        }
    }
}

/// Appends every whole batch of `region`; returns the first batch's base offset.
async fn append_all(log: &Log, region: BytesMut, durability: Durability) -> Result<u64, ErrorCode> {
    let (base, last) = append_all_unsynced(log, region).await?;
    if durability == Durability::Synced {
        log.wait_durable(&last)
            .await
            .map_err(|e| log_error_code(&e))?;
    }
    Ok(base)
}

/// Appends every whole batch of `region` without waiting for durability; returns the first
/// batch's base offset and where the last one landed.
async fn append_all_unsynced(
    log: &Log,
    mut region: BytesMut,
) -> Result<(u64, AppendInfo), ErrorCode> {
    let mut first = None;
    let mut last = None;
    while !region.is_empty() {
        let header =
            tidelog_wire::batch::peek_header(&region).map_err(|_| ErrorCode::CorruptBatch)?;
        let len = header.batch_len() as usize;
        if len > region.len() {
            return Err(ErrorCode::CorruptBatch);
        }
        let batch = region.split_to(len);
        let info = log
            .append_unsynced(batch)
            .await
            .map_err(|e| log_error_code(&e))?;
        first.get_or_insert(info.base_offset);
        last = Some(furthest(last, info));
    }
    match (first, last) {
        (Some(first), Some(last)) => Ok((first, last)),
        _ => Err(ErrorCode::InvalidRequest),
    }
}

/// Of the batches appended so far (`so_far`) and `next`, the one whose durability covers all:
/// the highest last offset. A duplicate idempotent batch reports its original's offsets,
/// which may lie below the batches appended before it in the same request, so the last
/// batch appended is not always the one to wait for.
fn furthest(so_far: Option<AppendInfo>, next: AppendInfo) -> AppendInfo {
    match so_far {
        Some(prev) if prev.last_offset > next.last_offset => prev,
        _ => next,
    }
}

/// The native error code for an engine error.
pub(crate) fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::InvalidBatch(_) | LogError::BatchLengthMismatch { .. } => ErrorCode::CorruptBatch,
        LogError::BatchTooLarge { .. } => ErrorCode::RecordTooLarge,
        LogError::DiskFull { .. } => ErrorCode::DiskFull,
        LogError::Closed => ErrorCode::ShuttingDown,
        // The native protocol has no idempotence codes yet (adding them means regenerating
        // native.fbs); the Kafka listener maps these to 47 and 45 itself.
        LogError::InvalidProducerEpoch { .. } | LogError::OutOfOrderSequence { .. } => {
            ErrorCode::InvalidRequest
        }
        _ => ErrorCode::StorageError,
    }
}

/// Accepts connections on `listener` until the shard stops, running `serve` for each in a
/// task of its own. A failed accept is logged and retried after a short pause.
pub(crate) async fn accept_until_stopped<F, Fut>(
    shard: Rc<Shard>,
    listener: TcpListener,
    protocol: &'static str,
    serve: F,
) where
    F: Fn(Rc<Shard>, glommio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stopping.listen().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id, protocol, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if shard.stopped.get() {
            return;
        }
        glommio::spawn_local(serve(Rc::clone(&shard), stream)).detach();
    }
}

/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// A wire partition number as an index; negative ones name no partition.
pub(crate) fn partition_index(partition: i32) -> Result<u32, ErrorCode> {
    u32::try_from(partition).map_err(|_| ErrorCode::UnknownTopicOrPartition)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(base_offset: u64, last_offset: u64, duplicate: bool) -> AppendInfo {
        AppendInfo {
            base_offset,
            last_offset,
            flush_due: false,
            duplicate,
        }
    }

    #[test]
    fn a_trailing_duplicate_does_not_lower_the_durability_wait() {
        let new = info(100, 109, false);
        let dup_of_older = info(10, 19, true);
        assert_eq!(
            furthest(Some(new), dup_of_older),
            new,
            "wait for offset 109, not 19"
        );
        let later = info(110, 119, false);
        assert_eq!(furthest(Some(new), later), later);
        assert_eq!(furthest(None, dup_of_older), dup_of_older);
    }
}
