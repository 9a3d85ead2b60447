//! The cross-shard mesh: bounded glommio channels between every pair of shards, the messages
//! they carry, and request/reply matching. A full channel makes the sender wait (push-back);
//! nothing here blocks a thread.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::channels::channel_mesh::{Full, MeshBuilder};

use super::data::{Appended, Batches, Fetched, ListedOffset};
use super::{Shard, ShardError};
use crate::groups::{Committed, OffsetCommit};
use crate::log::memory::MemoryWait;
use crate::log::Durability;
use crate::meta::TopicConfig;

/// The channel meshes every shard joins at start-up: one for requests and pushes, one for
/// replies. A shard that stops taking requests (all its request slots busy: push-back) must
/// still receive the replies its busy tasks wait for, or they would wait for ever; on one
/// shared channel those replies would queue behind the requests it is not taking.
#[derive(Clone)]
pub struct Mesh {
    requests: MeshBuilder<ShardMessage, Full>,
    replies: MeshBuilder<ShardMessage, Full>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").finish_non_exhaustive()
    }
}

/// What a shard holds of the meshes once joined.
pub(crate) struct Joined {
    pub senders: Senders,
    pub reply_senders: Senders,
    pub requests: glommio::channels::channel_mesh::Receivers<ShardMessage>,
    pub replies: glommio::channels::channel_mesh::Receivers<ShardMessage>,
}

impl Mesh {
    /// Joins both meshes (every shard must, concurrently).
    pub(crate) async fn join(self) -> glommio::Result<Joined, ()> {
        let (senders, requests) = self.requests.join().await?;
        let (reply_senders, replies) = self.replies.join().await?;
        Ok(Joined {
            senders,
            reply_senders,
            requests,
            replies,
        })
    }
}

/// This shard's senders into the mesh.
pub(crate) type Senders = glommio::channels::channel_mesh::Senders<ShardMessage>;

type Receivers = Vec<(
    usize,
    glommio::channels::shared_channel::ConnectedReceiver<ShardMessage>,
)>;

/// A full mesh for `shards` shards, each channel [`crate::limits::SHARD_CHANNEL_DEPTH`] deep.
pub fn build(shards: usize) -> Mesh {
    Mesh {
        requests: MeshBuilder::full(shards, crate::limits::SHARD_CHANNEL_DEPTH),
        replies: MeshBuilder::full(shards, crate::limits::SHARD_CHANNEL_DEPTH),
    }
}

/// Messages between shards. `Send`; a forwarded request carries its batch bytes as `Bytes`.
#[derive(Debug)]
pub enum ShardMessage {
    /// Shard 0 → all: a topic exists with this configuration; answered with `Ack`.
    TopicUpsert {
        /// Request id (`u64::MAX` during start-up: not answered).
        id: u64,
        /// The topic.
        name: String,
        /// Its configuration.
        config: TopicConfig,
    },
    /// Shard 0 → all: a topic is gone; delete the partitions you own; answered with `Ack`.
    TopicRemoved {
        /// Request id.
        id: u64,
        /// The topic.
        name: String,
    },
    /// A request for the shard that owns what it is about.
    Request {
        /// The asking shard.
        from: usize,
        /// Request id, echoed in the reply.
        id: u64,
        /// What is asked.
        request: Forwarded,
    },
    /// The answer to a `Request` or a push.
    Reply {
        /// The request id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// Start-up marker from shard 0: the initial topic table is complete.
    TableComplete,
    /// Shard 0 → all (a cluster node): the cluster as committed; not answered. Sent before
    /// the topic pushes that depend on it, on the same channel.
    ClusterView(std::sync::Arc<super::cluster::View>),
}

/// Requests one shard forwards to another.
#[derive(Debug)]
pub enum Forwarded {
    /// Create a topic (to shard 0).
    CreateTopic {
        /// The topic.
        name: String,
        /// Its configuration.
        config: TopicConfig,
        /// Replicas per partition (`None`: the default).
        replication_factor: Option<u16>,
    },
    /// This shard's metrics, for a scrape (from shard 0).
    Metrics,
    /// Grow a topic's partition count (to shard 0).
    CreatePartitions {
        /// The topic.
        name: String,
        /// The new count.
        count: u32,
    },
    /// Change a topic's configuration (to shard 0).
    AlterTopic {
        /// The topic.
        name: String,
        /// Its new configuration (same partition count).
        config: TopicConfig,
    },
    /// Delete a topic (to shard 0).
    DeleteTopic {
        /// The topic.
        name: String,
    },
    /// Append stored-format batches (to the owner).
    Produce {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// How durable before answering.
        durability: Durability,
        /// Whole stored-format batches.
        batches: Bytes,
    },
    /// Read a partition (to the owner).
    Fetch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// First offset wanted.
        offset: u64,
        /// Most bytes wanted. The owner reads it only if its read memory has room now: a
        /// forwarded fetch never waits for memory there, since it holds a request slot of
        /// the mesh meanwhile, and shards waiting on each other's slots could deadlock.
        max_bytes: usize,
    },
    /// Resolve a timestamp to an offset (to the owner).
    ListOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// -1 latest, -2 earliest, else a timestamp in ms.
        timestamp: i64,
    },
    /// Commit a group's positions (to the group's coordinator).
    CommitOffsets {
        /// The group.
        group: String,
        /// The positions.
        offsets: Vec<OffsetCommit>,
    },
    /// A group's committed positions (from the group's coordinator).
    FetchOffsets {
        /// The group.
        group: String,
        /// (topic, partition) pairs.
        partitions: Vec<(String, i32)>,
    },
    /// A new idempotent-producer id, from shard 0's metadata log.
    AllocateProducerId,
    /// Propose a metadata command (to shard 0, which runs the node's Raft node).
    Propose(crate::cluster::Command),
}

/// Answers between shards.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A push was applied.
    Ack,
    /// A topic admin outcome.
    Admin(Result<(), ShardError>),
    /// A produce outcome.
    Produced(Result<Appended, ShardError>),
    /// A fetch outcome: the batches copied once into `Bytes` to cross threads.
    Fetched(Result<FetchedData, ShardError>),
    /// A list-offset outcome.
    Listed(Result<ListedOffset, ShardError>),
    /// A commit outcome.
    Committed(Result<(), ShardError>),
    /// Committed positions, one per asked partition.
    Offsets(Result<Vec<Option<Committed>>, ShardError>),
    /// A producer id.
    ProducerId(Result<i64, ShardError>),
    /// A shard's metrics.
    Metrics(Box<crate::metrics::ShardSnapshot>),
}

/// A fetch answered by another shard: the batches copied once into `Bytes` to cross threads.
#[derive(Debug, Clone)]
pub struct FetchedData {
    /// Offsets below this are readable.
    pub high_watermark: u64,
    /// First readable offset.
    pub log_start: u64,
    /// Whole batches.
    pub bytes: Bytes,
}

/// A start-up push of one topic table entry.
pub(super) fn table_entry(name: &str, config: TopicConfig) -> ShardMessage {
    ShardMessage::TopicUpsert {
        id: u64::MAX,
        name: name.to_owned(),
        config,
    }
}

/// Serves the meshes. Replies complete waiting tasks at once. Each request (or push) may
/// itself wait, so it runs as its own task, but at most
/// [`SHARD_REQUESTS_IN_FLIGHT`](crate::limits::SHARD_REQUESTS_IN_FLIGHT) per peer: past that
/// the receiver stops taking requests, the channel fills, and the sending shard waits.
pub(super) fn spawn_receivers(shard: &Rc<Shard>, requests: Receivers, replies: Receivers) {
    for (_, receiver) in replies {
        let shard = Rc::clone(shard);
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                if let ShardMessage::Reply { id, reply } = message {
                    shard.deliver(id, reply);
                }
            }
        })
        .detach();
    }
    for (_, receiver) in requests {
        let shard = Rc::clone(shard);
        let receiver = Rc::new(receiver);
        glommio::spawn_local(async move {
            let recv = || {
                let receiver = Rc::clone(&receiver);
                async move { receiver.recv().await }
            };
            serve_bounded(recv, crate::limits::SHARD_REQUESTS_IN_FLIGHT, |message| {
                let shard = Rc::clone(&shard);
                async move {
                    match message {
                        ShardMessage::Reply { id, reply } => shard.deliver(id, reply),
                        request => shard.on_message(request).await,
                    }
                }
            })
            .await;
        })
        .detach();
    }
}

/// Takes messages from `recv` and runs `handle` on each in a task of its own, with at most
/// `limit` running: while all are busy it takes no more, so a bounded channel behind `recv`
/// fills and its senders wait. Returns when `recv` ends.
pub(crate) async fn serve_bounded<M, R, RF, H, HF>(mut recv: R, limit: usize, handle: H)
where
    M: 'static,
    R: FnMut() -> RF,
    RF: std::future::Future<Output = Option<M>>,
    H: Fn(M) -> HF,
    HF: std::future::Future<Output = ()> + 'static,
{
    let slots = Rc::new(glommio::sync::Semaphore::new(limit as u64));
    while let Some(message) = recv().await {
        let Ok(slot) = slots.acquire_static_permit(1).await else {
            return;
        };
        let work = handle(message);
        glommio::spawn_local(async move {
            work.await;
            drop(slot);
        })
        .detach();
    }
}

impl Shard {
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

    pub(super) async fn send_to(&self, peer: usize, message: ShardMessage) -> Result<(), String> {
        self.senders
            .send_to(peer, message)
            .await
            .map_err(|_| format!("shard {peer} unreachable"))
    }

    /// Sends a request to another shard and waits for its answer.
    pub(super) async fn forward(&self, to: usize, request: Forwarded) -> Result<Reply, ShardError> {
        let id = self.request_id();
        let message = ShardMessage::Request {
            from: self.id,
            id,
            request,
        };
        if self.senders.send_to(to, message).await.is_err() {
            return Err(ShardError::ShuttingDown("the owning shard is unreachable"));
        }
        Ok(self.await_reply(id).await)
    }

    /// Sends a message to every other shard and waits for all their acks.
    /// Sends a push to every other shard and returns their replies once all answered.
    pub(super) async fn broadcast(&self, make: impl Fn(u64) -> ShardMessage) -> Vec<Reply> {
        let mut ids = Vec::new();
        for peer in 0..self.shards() {
            if peer == self.id {
                continue;
            }
            let id = self.request_id();
            if self.senders.send_to(peer, make(id)).await.is_ok() {
                ids.push(id);
            }
        }
        let mut replies = Vec::with_capacity(ids.len());
        for id in ids {
            replies.push(self.await_reply(id).await);
        }
        replies
    }

    async fn on_message(&self, message: ShardMessage) {
        let (to, id, reply) = match message {
            ShardMessage::TopicUpsert { id, name, config } => {
                let opened = self.apply_upsert(&name, config).await;
                (0, id, Reply::Admin(opened.map_err(ShardError::Storage)))
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
            ShardMessage::ClusterView(view) => {
                *self.view.borrow_mut() = Some(view);
                self.reconcile_roles();
                self.adopt_leader_epochs().await;
                self.reconcile_offset_stores().await;
                return;
            }
        };
        let _ = self
            .reply_senders
            .send_to(to, ShardMessage::Reply { id, reply })
            .await;
    }

    async fn serve_forwarded(&self, request: Forwarded) -> Reply {
        use super::data::Route;
        match request {
            Forwarded::CreateTopic {
                name,
                config,
                replication_factor,
            } => Reply::Admin(
                self.create_topic_with(&name, config, replication_factor)
                    .await,
            ),
            Forwarded::DeleteTopic { name } => Reply::Admin(self.delete_topic(&name).await),
            Forwarded::Metrics => Reply::Metrics(Box::new(self.metrics_snapshot())),
            Forwarded::CreatePartitions { name, count } => {
                Reply::Admin(self.create_partitions(&name, count).await)
            }
            Forwarded::AlterTopic { name, config } => {
                Reply::Admin(self.alter_topic(&name, config).await)
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
                let started = self
                    .append(
                        &topic,
                        partition,
                        Batches::Stored(batches),
                        durability,
                        Route::Local,
                    )
                    .await;
                Reply::Produced(match started {
                    Ok(started) => started.durable().await,
                    Err(e) => Err(e),
                })
            }
            Forwarded::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
            } => Reply::Fetched(
                self.read(
                    &topic,
                    partition,
                    offset,
                    max_bytes,
                    Route::Local,
                    MemoryWait::IfFree,
                )
                .await
                .map(copy_out),
            ),
            Forwarded::ListOffset {
                topic,
                partition,
                timestamp,
            } => Reply::Listed(
                self.list_offset(&topic, partition, timestamp, Route::Local)
                    .await,
            ),
            Forwarded::CommitOffsets { group, offsets } => {
                Reply::Committed(self.commit_offsets(&group, offsets).await)
            }
            Forwarded::AllocateProducerId => Reply::ProducerId(self.allocate_producer_id().await),
            Forwarded::Propose(command) => Reply::Admin(self.propose(command).await),
            Forwarded::FetchOffsets { group, partitions } => {
                Reply::Offsets(self.fetch_offsets(&group, partitions).await)
            }
        }
    }
}

/// Copies a local read into one `Bytes` that can cross threads.
fn copy_out(read: Fetched) -> FetchedData {
    let total = read.chunks.iter().map(|c| c.len()).sum();
    let mut bytes = BytesMut::with_capacity(total);
    for chunk in &read.chunks {
        for piece in chunk.pieces() {
            bytes.extend_from_slice(piece);
        }
    }
    FetchedData {
        high_watermark: read.high_watermark,
        log_start: read.log_start,
        bytes: bytes.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::serve_bounded;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Requests beyond the in-flight bound stay in the channel, so a bounded channel pushes
    /// back on its sender; before, every message became a task at once.
    #[test]
    fn requests_past_the_bound_wait_in_the_channel_and_push_back() {
        let handle = crate::runtime::executor_builder(glommio::Placement::Unbound, 1)
            .expect("builder")
            .spawn(|| async {
                let (tx, rx) = glommio::channels::local_channel::new_bounded::<u32>(8);
                let rx = Rc::new(rx);
                let started = Rc::new(Cell::new(0u32));
                let release = Rc::new(crate::sync::Event::default());
                let server = {
                    let (rx, started, release) =
                        (Rc::clone(&rx), Rc::clone(&started), Rc::clone(&release));
                    glommio::spawn_local(async move {
                        let recv = || {
                            let rx = Rc::clone(&rx);
                            async move { rx.recv().await }
                        };
                        serve_bounded(recv, 4, |_| {
                            let (started, release) = (Rc::clone(&started), Rc::clone(&release));
                            async move {
                                started.set(started.get() + 1);
                                release.listen().await;
                            }
                        })
                        .await;
                    })
                };
                // 4 running + 1 taken and waiting for a slot + 8 queued: the 14th send
                // finds the channel full.
                let mut sent = 0;
                for i in 0..100 {
                    if tx.try_send(i).is_err() {
                        break;
                    }
                    sent += 1;
                    glommio::yield_if_needed().await;
                    glommio::executor().yield_task_queue_now().await;
                }
                assert_eq!(started.get(), 4, "only the bound runs");
                assert!(sent <= 13, "the channel filled: {sent} sent");
                release.notify();
                for _ in 0..20 {
                    glommio::executor().yield_task_queue_now().await;
                }
                assert!(started.get() > 4, "released slots take the queued requests");
                drop(tx);
                release.notify();
                server.detach();
            })
            .expect("spawn");
        handle.join().expect("executor");
    }
}
