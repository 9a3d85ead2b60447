//! [`Producer`]: batches records per partition and sends them with bounded pipelining.
//!
//! ```text
//!  send() ─▶ [backlog: FIFO, ≤ backlog_bytes] ─▶ per-partition BatchBuilder (≤ buffer_bytes in total)
//!        ─▶ sealed when ≥ batch_bytes or linger expired ─▶ partition queue
//!        ─▶ pump: ≤ max_in_flight produce requests per partition, written in order
//!        ─▶ ProduceResponse base_offset + record index ─▶ each record's Delivery
//! ```
//!
//! `send` never blocks: a record whose partition is known and that fits in the buffer is
//! appended at once; otherwise it waits in the backlog (records never overtake it), and once
//! the backlog is full `send` fails with [`ClientError::BufferFull`]. Bytes count key plus
//! value and are released when the batch's response arrives.
//!
//! Ordering: batches of a partition are written in order. A batch retried after an error may
//! land after a later batch that was in flight at the same time (as with Kafka's
//! non-idempotent producer); `max_in_flight: 1` keeps strict order.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::{Semaphore, StaticPermit};
use tidelog_wire::batch::BatchBuilder;
use tidelog_wire::native::ProduceRequestPartition;

use crate::client::{unexpected, Client};
use crate::connection::PendingResponse;
use crate::error::{ClientError, Result};
use crate::limits::{
    BATCHES_IN_FLIGHT_DEFAULT, BATCHES_IN_FLIGHT_MAX, BATCH_BYTES_DEFAULT, BATCH_BYTES_MAX,
    PRODUCER_BACKLOG_BYTES_DEFAULT, PRODUCER_BUFFER_BYTES_DEFAULT,
};
use crate::partitioner::Partitioner;
use crate::sync::{oneshot, Notify, Receiver, Sender};

/// When the broker acknowledges a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// No response at all; offsets are unknown (-1).
    None,
    /// After the append.
    Leader,
    /// After the append is durable (fdatasync).
    #[default]
    All,
}

impl Acks {
    /// The wire value (0, 1, -1).
    pub fn wire(self) -> i8 {
        match self {
            Self::None => 0,
            Self::Leader => 1,
            Self::All => -1,
        }
    }
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When the broker answers.
    pub acks: Acks,
    /// How long a partition's first record waits for more before its batch is sent.
    pub linger: Duration,
    /// A batch is sent once its estimated size reaches this (1..=[`BATCH_BYTES_MAX`]).
    pub batch_bytes: usize,
    /// Produce requests in flight per partition (1..=[`BATCHES_IN_FLIGHT_MAX`]).
    pub max_in_flight: usize,
    /// Picks the partition of records sent without one.
    pub partitioner: Partitioner,
    /// Record bytes held in batches being built or in flight, across partitions.
    pub buffer_bytes: usize,
    /// Record bytes waiting behind a full buffer or a metadata lookup.
    pub backlog_bytes: usize,
    /// The broker's limit on waiting for durability, sent with each request.
    pub server_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: BATCH_BYTES_DEFAULT,
            max_in_flight: BATCHES_IN_FLIGHT_DEFAULT,
            partitioner: Partitioner::KeyHash,
            buffer_bytes: PRODUCER_BUFFER_BYTES_DEFAULT,
            backlog_bytes: PRODUCER_BACKLOG_BYTES_DEFAULT,
            server_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: i32,
    /// The record's offset (-1 with [`Acks::None`]).
    pub offset: i64,
}

/// The outcome of one [`Producer::send`]; resolves when the record's batch is acknowledged.
/// Dropping it does not cancel the record.
#[must_use = "a Delivery reports whether the record was written"]
pub struct Delivery {
    rx: Receiver<Result<RecordMetadata>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

type Waiter = Sender<Result<RecordMetadata>>;
type PartKey = (Rc<str>, i32);

struct Queued {
    topic: Rc<str>,
    partition: Option<i32>,
    key: Option<Bytes>,
    value: Bytes,
    waiter: Waiter,
}

impl Queued {
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len()
    }
}

struct Sealed {
    batch: Bytes,
    waiters: Vec<Waiter>,
    bytes: usize,
}

struct Part {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    bytes: usize,
    /// Bumped at every seal, so a linger timer armed for an earlier batch does nothing.
    generation: u64,
    queue: VecDeque<Sealed>,
    pumping: bool,
    in_flight: Rc<Semaphore>,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    parts: RefCell<HashMap<PartKey, Part>>,
    buffered_bytes: Cell<usize>,
    backlog: RefCell<VecDeque<Queued>>,
    backlog_bytes: Cell<usize>,
    draining: Cell<bool>,
    round_robin: Cell<u32>,
    /// Records sent and not yet resolved.
    outstanding: Cell<usize>,
    /// Notified when buffer bytes are released or records resolve.
    changed: Notify,
}

/// A batching producer. Cheap to clone; clones share buffers.
#[derive(Clone)]
pub struct Producer {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .field("outstanding", &self.inner.outstanding.get())
            .finish()
    }
}

impl Producer {
    /// A producer sending through `client`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for settings out of their bounds.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        let bad = |what: String| Err(ClientError::InvalidArgument(what));
        if !(1..=BATCH_BYTES_MAX).contains(&config.batch_bytes) {
            return bad(format!(
                "batch_bytes {} not in 1..={BATCH_BYTES_MAX}",
                config.batch_bytes
            ));
        }
        if !(1..=BATCHES_IN_FLIGHT_MAX).contains(&config.max_in_flight) {
            return bad(format!(
                "max_in_flight {} not in 1..={BATCHES_IN_FLIGHT_MAX}",
                config.max_in_flight
            ));
        }
        if config.buffer_bytes == 0 {
            return bad("buffer_bytes 0".into());
        }
        if i32::try_from(config.server_timeout.as_millis()).is_err() {
            return bad("server_timeout exceeds i32 ms".into());
        }
        Ok(Self {
            inner: Rc::new(Inner {
                client,
                config,
                parts: RefCell::new(HashMap::new()),
                buffered_bytes: Cell::new(0),
                backlog: RefCell::new(VecDeque::new()),
                backlog_bytes: Cell::new(0),
                draining: Cell::new(false),
                round_robin: Cell::new(0),
                outstanding: Cell::new(0),
                changed: Notify::default(),
            }),
        })
    }

    /// Queues a record for `topic` (to `partition`, or one the partitioner picks) and returns
    /// a future of its offset. The record is queued by the time this returns; awaiting the
    /// `Delivery` only waits for the acknowledgement.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<i32>,
    ) -> Delivery {
        let (tx, rx) = oneshot();
        let delivery = Delivery { rx };
        let size = key.map_or(0, <[u8]>::len) + value.len();
        let inner = &self.inner;
        if size > inner.config.buffer_bytes {
            tx.send(Err(ClientError::RecordTooLarge {
                size,
                max: inner.config.buffer_bytes,
            }));
            return delivery;
        }
        inner.outstanding.set(inner.outstanding.get() + 1);
        if inner.backlog.borrow().is_empty() && inner.fits(size) {
            if let Some(partitions) = inner
                .client
                .cached_topic(topic)
                .map(|t| t.partition_count())
            {
                match inner.pick(partition, key, partitions, topic) {
                    Ok(p) => inner.append(&Rc::from(topic), p, key, value, tx),
                    Err(e) => inner.resolve(tx, Err(e)),
                }
                return delivery;
            }
        }
        let backlog = inner.backlog_bytes.get();
        if backlog + size > inner.config.backlog_bytes {
            inner.resolve(
                tx,
                Err(ClientError::BufferFull {
                    backlog_bytes: backlog,
                }),
            );
            return delivery;
        }
        inner.backlog_bytes.set(backlog + size);
        inner.backlog.borrow_mut().push_back(Queued {
            topic: Rc::from(topic),
            partition,
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
            waiter: tx,
        });
        if !inner.draining.replace(true) {
            glommio::spawn_local(drain(Rc::clone(inner))).detach();
        }
        delivery
    }

    /// Sends every buffered record now and waits until all records sent so far are resolved.
    pub async fn flush(&self) {
        let inner = &self.inner;
        loop {
            let changed = inner.changed.notified();
            inner.seal_all();
            if inner.outstanding.get() == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Records sent and not yet acknowledged (or failed).
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding.get()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Moves backlog records into batches in order, waiting for metadata and buffer space.
async fn drain(inner: Rc<Inner>) {
    loop {
        let front = inner
            .backlog
            .borrow()
            .front()
            .map(|q| (Rc::clone(&q.topic), q.size()));
        let Some((topic, size)) = front else {
            inner.draining.set(false);
            return;
        };
        let client = inner.client.clone();
        let info = client.retrying(&[&topic], || client.topic(&topic)).await;
        loop {
            let changed = inner.changed.notified();
            if inner.fits(size) {
                break;
            }
            changed.await;
        }
        let Some(q) = inner.backlog.borrow_mut().pop_front() else {
            continue;
        };
        inner
            .backlog_bytes
            .set(inner.backlog_bytes.get().saturating_sub(size));
        let picked = info.and_then(|info| {
            inner.pick(
                q.partition,
                q.key.as_deref(),
                info.partition_count(),
                &q.topic,
            )
        });
        match picked {
            Ok(p) => inner.append(&q.topic, p, q.key.as_deref(), &q.value, q.waiter),
            Err(e) => inner.resolve(q.waiter, Err(e)),
        }
    }
}

impl Inner {
    /// Whether `size` more bytes fit the buffer. A record always fits an empty buffer, so a
    /// record as large as the buffer still goes out.
    fn fits(&self, size: usize) -> bool {
        let used = self.buffered_bytes.get();
        used == 0 || used + size <= self.config.buffer_bytes
    }

    fn pick(
        &self,
        partition: Option<i32>,
        key: Option<&[u8]>,
        partitions: usize,
        topic: &str,
    ) -> Result<i32> {
        let count = u32::try_from(partitions).unwrap_or(u32::MAX);
        match partition {
            Some(p) if p >= 0 && (p as u32) < count => Ok(p),
            Some(p) => Err(ClientError::UnknownTopic {
                topic: topic.to_owned(),
                partition: Some(p),
            }),
            None if count == 0 => Err(ClientError::UnknownTopic {
                topic: topic.to_owned(),
                partition: None,
            }),
            None => {
                let mut rr = self.round_robin.get();
                let p = self.config.partitioner.partition(key, count, &mut rr);
                self.round_robin.set(rr);
                Ok(p)
            }
        }
    }

    fn resolve(&self, waiter: Waiter, result: Result<RecordMetadata>) {
        waiter.send(result);
        self.outstanding
            .set(self.outstanding.get().saturating_sub(1));
        self.changed.notify_all();
    }

    fn append(
        self: &Rc<Self>,
        topic: &Rc<str>,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        waiter: Waiter,
    ) {
        let size = key.map_or(0, <[u8]>::len) + value.len();
        self.buffered_bytes.set(self.buffered_bytes.get() + size);
        let part_key = (Rc::clone(topic), partition);
        let (full, first, generation) = {
            let mut parts = self.parts.borrow_mut();
            let part = parts.entry(part_key.clone()).or_insert_with(|| Part {
                builder: BatchBuilder::new(),
                waiters: Vec::new(),
                bytes: 0,
                generation: 0,
                queue: VecDeque::new(),
                pumping: false,
                in_flight: Rc::new(Semaphore::new(self.config.max_in_flight as u64)),
            });
            part.builder.push(key, value, now_ms(), &[]);
            part.waiters.push(waiter);
            part.bytes += size;
            (
                part.builder.estimated_size() >= self.config.batch_bytes,
                part.waiters.len() == 1,
                part.generation,
            )
        };
        if full {
            self.seal(&part_key);
        } else if first {
            let me = Rc::clone(self);
            let linger = self.config.linger;
            glommio::spawn_local(async move {
                glommio::timer::sleep(linger).await;
                let current = me.parts.borrow().get(&part_key).map(|p| p.generation);
                if current == Some(generation) {
                    me.seal(&part_key);
                }
            })
            .detach();
        }
    }

    fn seal_all(self: &Rc<Self>) {
        let keys: Vec<PartKey> = self
            .parts
            .borrow()
            .iter()
            .filter(|(_, p)| !p.builder.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.seal(&k);
        }
    }

    /// Closes the partition's open batch and makes sure its pump runs.
    fn seal(self: &Rc<Self>, key: &PartKey) {
        let start_pump = {
            let mut parts = self.parts.borrow_mut();
            let Some(part) = parts.get_mut(key) else {
                return;
            };
            if part.builder.is_empty() {
                return;
            }
            part.generation = part.generation.wrapping_add(1);
            let sealed = Sealed {
                batch: part.builder.finish().freeze(),
                waiters: std::mem::take(&mut part.waiters),
                bytes: std::mem::take(&mut part.bytes),
            };
            part.queue.push_back(sealed);
            !std::mem::replace(&mut part.pumping, true)
        };
        if start_pump {
            glommio::spawn_local(pump(Rc::clone(self), key.clone())).detach();
        }
    }

    async fn start(
        &self,
        topic: &str,
        partition: i32,
        batch: &Bytes,
    ) -> Result<Option<PendingResponse>> {
        let shard = self.client.owner(topic, partition).await?;
        let conn = self.client.shard_conn(shard).await?;
        let acks = self.config.acks.wire();
        let timeout_ms = i32::try_from(self.config.server_timeout.as_millis()).unwrap_or(i32::MAX);
        let parts = [ProduceRequestPartition {
            topic,
            partition,
            batches_len: batch.len(),
        }];
        let encode =
            |cid, enc: &mut tidelog_wire::native::FrameEncoder, out: &mut bytes::BytesMut| {
                enc.encode_produce_request(cid, acks, timeout_ms, &parts, out)
            };
        let body = [batch.clone()];
        if self.config.acks == Acks::None {
            conn.send_only(encode, &body).await?;
            Ok(None)
        } else {
            Ok(Some(conn.start_request(encode, &body).await?))
        }
    }

    async fn produce_once(&self, topic: &str, partition: i32, batch: &Bytes) -> Result<i64> {
        match self.start(topic, partition, batch).await? {
            Some(pending) => base_offset(pending.wait().await?, topic, partition),
            None => Ok(-1),
        }
    }
}

fn base_offset(resp: crate::Response, topic: &str, partition: i32) -> Result<i64> {
    let frame = resp.frame()?;
    let r = frame
        .message
        .body_as_produce_response()
        .ok_or_else(|| unexpected("ProduceResponse", &resp))?;
    let p = r
        .partitions()
        .unwrap_or_default()
        .iter()
        .find(|p| p.topic() == Some(topic) && p.partition() == partition)
        .ok_or_else(|| ClientError::Protocol {
            code: tidelog_wire::native::ErrorCode::InvalidRequest,
            message: format!("produce response lacks {topic}/{partition}"),
        })?;
    ClientError::check(p.error(), topic, Some(partition))?;
    Ok(p.base_offset())
}

/// Writes a partition's sealed batches in order, at most `max_in_flight` awaiting answers.
async fn pump(inner: Rc<Inner>, key: PartKey) {
    loop {
        let next = {
            let mut parts = inner.parts.borrow_mut();
            let Some(part) = parts.get_mut(&key) else {
                return;
            };
            match part.queue.pop_front() {
                Some(s) => Some((s, Rc::clone(&part.in_flight))),
                None => {
                    part.pumping = false;
                    None
                }
            }
        };
        let Some((sealed, in_flight)) = next else {
            return;
        };
        let permit = match in_flight.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => {
                inner.complete(sealed, key.1, Err(ClientError::Closed));
                continue;
            }
        };
        let started = inner.start(&key.0, key.1, &sealed.batch).await;
        glommio::spawn_local(finish(
            Rc::clone(&inner),
            key.clone(),
            sealed,
            started,
            permit,
        ))
        .detach();
    }
}

async fn finish(
    inner: Rc<Inner>,
    (topic, partition): PartKey,
    sealed: Sealed,
    started: Result<Option<PendingResponse>>,
    _permit: StaticPermit,
) {
    let first = match started {
        Ok(Some(pending)) => match pending.wait().await {
            Ok(resp) => base_offset(resp, &topic, partition),
            Err(e) => Err(e),
        },
        Ok(None) => Ok(-1),
        Err(e) => Err(e),
    };
    let result = match first {
        Err(e) if e.is_retriable() => {
            if e.needs_metadata() {
                inner.client.invalidate(&topic);
            }
            let client = inner.client.clone();
            let batch = &sealed.batch;
            let inner2 = &inner;
            client
                .retrying(&[&topic], || inner2.produce_once(&topic, partition, batch))
                .await
        }
        other => other,
    };
    inner.complete(sealed, partition, result);
}

impl Inner {
    fn complete(&self, sealed: Sealed, partition: i32, result: Result<i64>) {
        self.buffered_bytes
            .set(self.buffered_bytes.get().saturating_sub(sealed.bytes));
        for (index, waiter) in sealed.waiters.into_iter().enumerate() {
            let r = match &result {
                Ok(base) if *base >= 0 => Ok(RecordMetadata {
                    partition,
                    offset: base + index as i64,
                }),
                Ok(_) => Ok(RecordMetadata {
                    partition,
                    offset: -1,
                }),
                Err(e) => Err(e.clone()),
            };
            self.resolve(waiter, r);
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests;
