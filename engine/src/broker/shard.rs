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

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::channels::shared_channel::SharedReceiver;
use glommio::net::TcpListener;
use tidelog_wire::native::ErrorCode;

use super::BrokerConfig;
use crate::io::dma::DmaStorage;
use crate::io::SystemClock;
use crate::log::PartitionLog;
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
}

/// Addresses a shard listens on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardAddrs {
    pub shared: SocketAddr,
    pub own: SocketAddr,
}

/// Start-up reports from a shard to [`super::start`].
#[derive(Debug)]
pub(crate) enum Ready {
    Serving,
    Failed(String),
}

/// Messages between shards. Small and `Send`; data never travels this way.
#[derive(Debug)]
pub(crate) enum ShardMessage {
    /// Shard 0 → all: a topic exists with this configuration; answer with `Ack`.
    TopicUpsert {
        id: u64,
        name: String,
        config: TopicConfig,
    },
    /// Shard 0 → all: a topic is gone; delete the partitions you own; answer with `Ack`.
    TopicRemoved { id: u64, name: String },
    /// Any → shard 0: create a topic; answered with `AdminReply`.
    CreateTopic {
        from: usize,
        id: u64,
        name: String,
        config: TopicConfig,
    },
    /// Any → shard 0: delete a topic; answered with `AdminReply`.
    DeleteTopic { from: usize, id: u64, name: String },
    /// Reply to an admin request.
    AdminReply {
        id: u64,
        error: i16,
        message: String,
    },
    /// Reply to a topic-table push.
    Ack { id: u64 },
}

/// Replies awaited by this shard's tasks, by request id.
#[derive(Default)]
struct Pending {
    replies: RefCell<HashMap<u64, Option<(i16, String)>>>,
    arrived: Event,
}

/// One shard's state. `!Send`: it lives and dies on its executor.
pub(crate) struct Shard {
    pub id: usize,
    pub shards: usize,
    pub config: BrokerConfig,
    pub endpoints: Vec<SocketAddr>,
    pub topics: RefCell<BTreeMap<String, TopicConfig>>,
    pub partitions: RefCell<HashMap<(String, u32), Rc<Log>>>,
    /// Notified after every append on this shard (wakes long-polling fetches).
    pub appended: Event,
    /// Notified when the shard starts shutting down.
    pub stopping: Event,
    pub stopped: Cell<bool>,
    pub connections: Cell<usize>,
    store: Option<TopicStore<DmaStorage, SystemClock>>,
    senders: Senders<ShardMessage>,
    pending: Pending,
    next_id: Cell<u64>,
}

/// Runs a shard to completion on the current executor.
pub(crate) async fn run(
    config: ShardConfig,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    ready: mpsc::SyncSender<Result<ShardAddrs, String>>,
    go: mpsc::Receiver<Vec<SocketAddr>>,
    serving: mpsc::SyncSender<Ready>,
    stop: SharedReceiver<()>,
) -> Result<(), String> {
    let bound = bind(&config);
    let (shared, own) = match bound {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let addrs = ShardAddrs {
        shared: shared.local_addr().map_err(|e| e.to_string())?,
        own: own.local_addr().map_err(|e| e.to_string())?,
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
                    ShardMessage::AdminReply { id, error, message } => {
                        shard.deliver(id, (error, message));
                    }
                    ShardMessage::Ack { id } => shard.deliver(id, (0, String::new())),
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
    let stop = stop.connect().await;
    // Nothing is ever sent: the handle dropping its sender is the stop signal.
    let _ = stop.recv().await;
    shard.shutdown().await
}

fn bind(config: &ShardConfig) -> Result<(TcpListener, TcpListener), String> {
    let shared = TcpListener::bind(config.native_addr)
        .map_err(|e| format!("bind {}: {e}", config.native_addr))?;
    let own_addr = SocketAddr::new(config.native_addr.ip(), 0);
    let own = TcpListener::bind(own_addr).map_err(|e| format!("bind {own_addr}: {e}"))?;
    Ok((shared, own))
}

type Receivers = Vec<(
    usize,
    glommio::channels::shared_channel::ConnectedReceiver<ShardMessage>,
)>;

async fn start_shard(
    config: ShardConfig,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    endpoints: Vec<SocketAddr>,
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
    let shard = Shard {
        id: config.shard,
        shards: config.shards,
        config: config.broker,
        endpoints,
        topics: RefCell::new(BTreeMap::new()),
        partitions: RefCell::new(HashMap::new()),
        appended: Event::default(),
        stopping: Event::default(),
        stopped: Cell::new(false),
        connections: Cell::new(0),
        store,
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
                .send_to(peer, ShardMessage::Ack { id: u64::MAX })
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
                        ShardMessage::Ack { id: u64::MAX } => break,
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
            .get(&(topic.to_owned(), partition))
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
            let key = (name.to_owned(), partition);
            if self.partitions.borrow().contains_key(&key) {
                continue;
            }
            let dir = partition_dir(&self.config.data_dir, name, partition);
            let log = PartitionLog::open(DmaStorage, SystemClock, &dir, log_config.clone())
                .await
                .map_err(|e| format!("open {}: {e}", dir.display()))?;
            let log = Rc::new(log);
            spawn_housekeeping(Rc::clone(&log), Housekeeping::default());
            self.partitions.borrow_mut().insert(key, log);
        }
        Ok(())
    }

    async fn apply_removal(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
        let doomed: Vec<Rc<Log>> = {
            let mut partitions = self.partitions.borrow_mut();
            let keys: Vec<_> = partitions
                .keys()
                .filter(|(t, _)| t == name)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| partitions.remove(&k))
                .collect()
        };
        for log in doomed {
            let _ = log.close().await;
            let dir = log.dir().to_path_buf();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
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

    async fn await_reply(&self, id: u64) -> (i16, String) {
        loop {
            if let Some(Some(reply)) = self.pending.replies.borrow_mut().remove(&id) {
                return reply;
            }
            self.pending.replies.borrow_mut().entry(id).or_insert(None);
            let listener = self.pending.arrived.listen();
            listener.await;
        }
    }

    fn deliver(&self, id: u64, reply: (i16, String)) {
        self.pending.replies.borrow_mut().insert(id, Some(reply));
        self.pending.arrived.notify();
    }

    /// Creates a topic (on shard 0, forwarding if needed); returns once every shard knows it.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> (ErrorCode, String) {
        if self.id != 0 {
            let id = self.request_id();
            let message = ShardMessage::CreateTopic {
                from: self.id,
                id,
                name: name.to_owned(),
                config,
            };
            if self.senders.send_to(0, message).await.is_err() {
                return (ErrorCode::ShuttingDown, "shard 0 unreachable".into());
            }
            let (code, text) = self.await_reply(id).await;
            return (ErrorCode(code), text);
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
            let id = self.request_id();
            let message = ShardMessage::DeleteTopic {
                from: self.id,
                id,
                name: name.to_owned(),
            };
            if self.senders.send_to(0, message).await.is_err() {
                return (ErrorCode::ShuttingDown, "shard 0 unreachable".into());
            }
            let (code, text) = self.await_reply(id).await;
            return (ErrorCode(code), text);
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

    async fn on_message(&self, message: ShardMessage) {
        match message {
            ShardMessage::TopicUpsert { id, name, config } => {
                if let Err(e) = self.apply_upsert(&name, config).await {
                    tracing::error!(shard = self.id, topic = %name, error = %e, "opening partitions failed");
                }
                let _ = self.senders.send_to(0, ShardMessage::Ack { id }).await;
            }
            ShardMessage::TopicRemoved { id, name } => {
                self.apply_removal(&name).await;
                let _ = self.senders.send_to(0, ShardMessage::Ack { id }).await;
            }
            ShardMessage::CreateTopic {
                from,
                id,
                name,
                config,
            } => {
                let (error, message) = self.create_topic(&name, config).await;
                let reply = ShardMessage::AdminReply {
                    id,
                    error: error.0,
                    message,
                };
                let _ = self.senders.send_to(from, reply).await;
            }
            ShardMessage::DeleteTopic { from, id, name } => {
                let (error, message) = self.delete_topic(&name).await;
                let reply = ShardMessage::AdminReply {
                    id,
                    error: error.0,
                    message,
                };
                let _ = self.senders.send_to(from, reply).await;
            }
            ShardMessage::AdminReply { id, error, message } => self.deliver(id, (error, message)),
            ShardMessage::Ack { id } => self.deliver(id, (0, String::new())),
        }
    }

    async fn shutdown(&self) -> Result<(), String> {
        self.stopped.set(true);
        self.stopping.notify();
        self.appended.notify();
        let logs: Vec<Rc<Log>> = self.partitions.borrow().values().cloned().collect();
        let mut result = Ok(());
        for log in logs {
            if let Err(e) = log.close().await {
                result = Err(format!("closing {}: {e}", log.dir().display()));
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
