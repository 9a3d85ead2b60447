//! [`Producer`]: batches records per partition and sends them with bounded pipelining.
//!
//! ```text
//!  send() ─▶ [backlog: FIFO, ≤ backlog_bytes] ─▶ per-partition BatchBuilder (≤ buffer_bytes in total)
//!        ─▶ sealed when ≥ batch_bytes or linger expired ─▶ partition queue
//!        ─▶ pump: ≤ max_in_flight produce requests per partition, written in order
//!        ─▶ ProduceResponse base_offset + record index ─▶ each `send` record's Delivery,
//!                                                   and one BatchReport per batch (on_batch)
//! ```
//!
//! Hot path: [`Producer::send_nowait`] costs no allocation but the record's bytes in the
//! batch: the topic's partition table is a `Vec` indexed by partition, found by comparing the
//! name with the last topic used, and its partition count is re-read only when the client's
//! metadata generation changes. Callers that account per batch (load generators) take the
//! [`BatchReport`]s instead of a future per record.
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

/// One acknowledged (or failed) batch, as a [`Producer::on_batch`] listener sees it.
///
/// Every record a producer accepts (from [`Producer::send`] or [`Producer::send_nowait`]) is
/// covered by exactly one report. Records of a partition are numbered in the order they were
/// sent, from 0 per producer: a report covers `first_index .. first_index + records`.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition (-1 if the record never got one).
    pub partition: i32,
    /// Index of the batch's first record among the records sent to this partition; `None` for
    /// a record that failed before it got a place in one (its partition was never known to
    /// this producer).
    pub first_index: Option<u64>,
    /// Records in the batch.
    pub records: usize,
    /// Key plus value bytes of those records.
    pub bytes: usize,
    /// The offset of the first record (-1 with [`Acks::None`]), or why the batch failed.
    pub result: std::result::Result<i64, &'a ClientError>,
}

type Listener = Rc<dyn Fn(&BatchReport<'_>)>;
type Waiter = Sender<Result<RecordMetadata>>;
/// A partition: index in `Inner::topics`, partition number.
type PartKey = (usize, i32);

struct Queued {
    topic: Rc<str>,
    partition: Option<i32>,
    key: Option<Bytes>,
    value: Bytes,
    timestamp_ms: Option<i64>,
    waiter: Option<Waiter>,
}

impl Queued {
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len()
    }
}

struct Sealed {
    batch: Bytes,
    /// Per-record waiters of `send` records: (index in the batch, waiter).
    waiters: Vec<(u32, Waiter)>,
    bytes: usize,
    records: usize,
    first_index: u64,
}

struct Part {
    builder: BatchBuilder,
    waiters: Vec<(u32, Waiter)>,
    bytes: usize,
    /// Index (per partition) of the next record appended.
    next_index: u64,
    /// Bumped at every seal, so a linger timer armed for an earlier batch does nothing.
    generation: u64,
    queue: VecDeque<Sealed>,
    pumping: bool,
    in_flight: Rc<Semaphore>,
    /// The open batch's linger ran out while the in-flight window was full: the pump seals
    /// it when a request slot frees, and until then it keeps filling (as Kafka's accumulator
    /// does) instead of queueing one small batch per linger behind the window.
    linger_expired: bool,
}

/// A topic this producer sent to: its partition count as of a metadata generation, and its
/// partitions' state indexed by partition number (created on first use).
struct Topic {
    name: Rc<str>,
    partitions: usize,
    generation: u64,
    parts: Vec<Option<Part>>,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    topics: RefCell<Vec<Topic>>,
    /// Index in `topics` by name; looked up only when the last topic used is another one.
    topic_index: RefCell<HashMap<Rc<str>, usize>>,
    last_topic: Cell<usize>,
    buffered_bytes: Cell<usize>,
    backlog: RefCell<VecDeque<Queued>>,
    backlog_bytes: Cell<usize>,
    draining: Cell<bool>,
    round_robin: Cell<u32>,
    /// Records sent and not yet resolved.
    outstanding: Cell<usize>,
    /// Notified when buffer bytes are released or records resolve.
    changed: Notify,
    listener: RefCell<Option<Listener>>,
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
                topics: RefCell::new(Vec::new()),
                topic_index: RefCell::new(HashMap::new()),
                last_topic: Cell::new(0),
                buffered_bytes: Cell::new(0),
                backlog: RefCell::new(VecDeque::new()),
                backlog_bytes: Cell::new(0),
                draining: Cell::new(false),
                round_robin: Cell::new(0),
                outstanding: Cell::new(0),
                changed: Notify::default(),
                listener: RefCell::new(None),
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
        // An error is already in the Delivery.
        let _ = self
            .inner
            .enqueue(topic, key, value, partition, None, Some(tx));
        Delivery { rx }
    }

    /// Queues a record like [`send`](Self::send) without a per-record future: its outcome is
    /// reported per batch to the [`on_batch`](Self::on_batch) listener. `timestamp_ms` (ms
    /// since the epoch) defaults to now.
    ///
    /// # Errors
    /// Failures known at once, which the listener does not see: the record is larger than the
    /// buffer ([`ClientError::RecordTooLarge`]), the backlog is full
    /// ([`ClientError::BufferFull`]), or the cached metadata lacks the partition.
    pub fn send_nowait(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<i32>,
        timestamp_ms: Option<i64>,
    ) -> Result<()> {
        self.inner
            .enqueue(topic, key, value, partition, timestamp_ms, None)
    }

    /// Calls `listener` once per batch when the batch is acknowledged or fails, after the
    /// `Delivery`s of its records resolve. Replaces an earlier listener. The listener runs on
    /// the producer's tasks and must not block.
    pub fn on_batch(&self, listener: impl Fn(&BatchReport<'_>) + 'static) {
        *self.inner.listener.borrow_mut() = Some(Rc::new(listener));
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
        let slot = match inner.topic_slot(&topic) {
            Some(t) => Ok(Some(t)),
            None => {
                let client = inner.client.clone();
                client
                    .retrying(&[&topic], || client.topic(&topic))
                    .await
                    .map(|_| inner.topic_slot(&topic))
            }
        };
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
        let picked = slot.and_then(|t| {
            let t = t.ok_or_else(|| ClientError::UnknownTopic {
                topic: q.topic.to_string(),
                partition: q.partition,
            })?;
            let count = inner.topics.borrow().get(t).map_or(0, |t| t.partitions);
            Ok((
                t,
                inner.pick(q.partition, q.key.as_deref(), count, &q.topic)?,
            ))
        });
        match picked {
            Ok((t, p)) => inner.append(t, p, q.key.as_deref(), &q.value, q.timestamp_ms, q.waiter),
            Err(e) => inner.fail_unplaced(q, e),
        }
    }
}

impl Inner {
    /// Appends the record at once when it can, else queues it in the backlog.
    fn enqueue(
        self: &Rc<Self>,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        partition: Option<i32>,
        timestamp_ms: Option<i64>,
        waiter: Option<Waiter>,
    ) -> Result<()> {
        let fail = |waiter: Option<Waiter>, e: ClientError| {
            if let Some(w) = waiter {
                w.send(Err(e.clone()));
            }
            Err(e)
        };
        let size = key.map_or(0, <[u8]>::len) + value.len();
        if size > self.config.buffer_bytes {
            let max = self.config.buffer_bytes;
            return fail(waiter, ClientError::RecordTooLarge { size, max });
        }
        if self.backlog.borrow().is_empty() && self.fits(size) {
            if let Some(t) = self.topic_slot(topic) {
                let count = self.topics.borrow().get(t).map_or(0, |t| t.partitions);
                return match self.pick(partition, key, count, topic) {
                    Ok(p) => {
                        self.outstanding.set(self.outstanding.get() + 1);
                        self.append(t, p, key, value, timestamp_ms, waiter);
                        Ok(())
                    }
                    Err(e) => fail(waiter, e),
                };
            }
        }
        let backlog = self.backlog_bytes.get();
        if backlog + size > self.config.backlog_bytes {
            let e = ClientError::BufferFull {
                backlog_bytes: backlog,
            };
            return fail(waiter, e);
        }
        self.outstanding.set(self.outstanding.get() + 1);
        self.backlog_bytes.set(backlog + size);
        self.backlog.borrow_mut().push_back(Queued {
            topic: Rc::from(topic),
            partition,
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
            timestamp_ms,
            waiter,
        });
        if !self.draining.replace(true) {
            glommio::spawn_local(drain(Rc::clone(self))).detach();
        }
        Ok(())
    }

    /// The index in `topics` of `topic` with its partition count current, if metadata of it
    /// is cached. Costs a string compare when the topic is the last one used.
    fn topic_slot(&self, topic: &str) -> Option<usize> {
        let generation = self.client.metadata_generation();
        let mut topics = self.topics.borrow_mut();
        let last = self.last_topic.get();
        let index = match topics.get(last) {
            Some(t) if &*t.name == topic => last,
            _ => {
                let found = self.topic_index.borrow().get(topic).copied();
                match found {
                    Some(i) => i,
                    None => {
                        let partitions = self.client.cached_partition_count(topic)?;
                        let name: Rc<str> = Rc::from(topic);
                        topics.push(Topic {
                            name: Rc::clone(&name),
                            partitions,
                            generation,
                            parts: Vec::new(),
                        });
                        let i = topics.len() - 1;
                        self.topic_index.borrow_mut().insert(name, i);
                        i
                    }
                }
            }
        };
        self.last_topic.set(index);
        let t = topics.get_mut(index)?;
        if t.generation != generation {
            t.partitions = self.client.cached_partition_count(topic)?;
            t.generation = generation;
        }
        if t.parts.len() < t.partitions {
            t.parts.resize_with(t.partitions, || None);
        }
        Some(index)
    }

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

    /// Runs `f` on the state of partition `key`, creating it on first use. `None` if the
    /// partition is outside the topic's table (never for a partition `pick` returned).
    fn with_part<T>(&self, (t, p): PartKey, f: impl FnOnce(&mut Part) -> T) -> Option<T> {
        let mut topics = self.topics.borrow_mut();
        let slot = topics.get_mut(t)?.parts.get_mut(usize::try_from(p).ok()?)?;
        let part = slot.get_or_insert_with(|| Part {
            builder: BatchBuilder::new(),
            waiters: Vec::new(),
            bytes: 0,
            next_index: 0,
            generation: 0,
            queue: VecDeque::new(),
            pumping: false,
            in_flight: Rc::new(Semaphore::new(self.config.max_in_flight as u64)),
            linger_expired: false,
        });
        Some(f(part))
    }

    fn topic_name(&self, t: usize) -> Rc<str> {
        self.topics
            .borrow()
            .get(t)
            .map_or_else(|| Rc::from(""), |t| Rc::clone(&t.name))
    }

    /// A record that failed before it got a place in a partition: it still takes the next
    /// index of its partition when that partition is known, so indices stay dense.
    fn fail_unplaced(&self, mut q: Queued, e: ClientError) {
        let partition = q.partition.unwrap_or(-1);
        let first_index = self.topic_index.borrow().get(&*q.topic).and_then(|&t| {
            self.with_part((t, partition), |part| {
                part.next_index += 1;
                part.next_index - 1
            })
        });
        if let Some(w) = q.waiter.take() {
            w.send(Err(e.clone()));
        }
        self.report(&BatchReport {
            topic: &q.topic,
            partition,
            first_index,
            records: 1,
            bytes: q.size(),
            result: Err(&e),
        });
        self.outstanding
            .set(self.outstanding.get().saturating_sub(1));
        self.changed.notify_all();
    }

    fn report(&self, report: &BatchReport<'_>) {
        let listener = self.listener.borrow().clone();
        if let Some(l) = listener {
            l(report);
        }
    }

    fn append(
        self: &Rc<Self>,
        t: usize,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: Option<i64>,
        waiter: Option<Waiter>,
    ) {
        let size = key.map_or(0, <[u8]>::len) + value.len();
        self.buffered_bytes.set(self.buffered_bytes.get() + size);
        let part_key = (t, partition);
        let batch_bytes = self.config.batch_bytes;
        let appended = self.with_part(part_key, |part| {
            let index = u32::try_from(part.builder.len()).unwrap_or(u32::MAX);
            part.builder
                .push(key, value, timestamp_ms.unwrap_or_else(now_ms), &[]);
            if let Some(w) = waiter {
                part.waiters.push((index, w));
            }
            part.bytes += size;
            part.next_index += 1;
            (
                part.builder.estimated_size() >= batch_bytes,
                index == 0,
                part.generation,
            )
        });
        let Some((full, first, generation)) = appended else {
            // `pick` only returns partitions of the table; keep the books straight anyway.
            self.buffered_bytes
                .set(self.buffered_bytes.get().saturating_sub(size));
            self.outstanding
                .set(self.outstanding.get().saturating_sub(1));
            return;
        };
        if full {
            self.seal(part_key);
        } else if first {
            let me = Rc::clone(self);
            let linger = self.config.linger;
            glommio::spawn_local(async move {
                glommio::timer::sleep(linger).await;
                me.linger_ran_out(part_key, generation);
            })
            .detach();
        }
    }

    fn seal_all(self: &Rc<Self>) {
        let keys: Vec<PartKey> = self
            .topics
            .borrow()
            .iter()
            .enumerate()
            .flat_map(|(t, topic)| {
                topic.parts.iter().enumerate().filter_map(move |(p, part)| {
                    let open = part.as_ref().is_some_and(|p| !p.builder.is_empty());
                    open.then(|| (t, i32::try_from(p).unwrap_or(i32::MAX)))
                })
            })
            .collect();
        for k in keys {
            self.seal(k);
        }
    }

    /// The linger of batch `generation` ran out: seal it when a request slot is free and
    /// nothing is queued before it; else leave it open, growing, for the pump to seal as soon
    /// as a slot frees.
    fn linger_ran_out(self: &Rc<Self>, key: PartKey, generation: u64) {
        let action = self.with_part(key, |part| {
            if part.generation != generation || part.builder.is_empty() {
                return None;
            }
            if part.queue.is_empty() && part.in_flight.available() > 0 {
                return Some(true);
            }
            part.linger_expired = true;
            if std::mem::replace(&mut part.pumping, true) {
                None
            } else {
                Some(false)
            }
        });
        match action.flatten() {
            Some(true) => self.seal(key),
            Some(false) => {
                glommio::spawn_local(pump(Rc::clone(self), key)).detach();
            }
            None => {}
        }
    }

    /// Seals the partition's open batch, if any, without queueing it.
    fn take_open(part: &mut Part) -> Option<Sealed> {
        if part.builder.is_empty() {
            return None;
        }
        part.generation = part.generation.wrapping_add(1);
        part.linger_expired = false;
        let records = part.builder.len();
        Some(Sealed {
            batch: part.builder.finish().freeze(),
            waiters: std::mem::take(&mut part.waiters),
            bytes: std::mem::take(&mut part.bytes),
            records,
            first_index: part.next_index - records as u64,
        })
    }

    /// Closes the partition's open batch and makes sure its pump runs.
    fn seal(self: &Rc<Self>, key: PartKey) {
        let start_pump = self.with_part(key, |part| {
            let Some(sealed) = Self::take_open(part) else {
                return false;
            };
            part.queue.push_back(sealed);
            !std::mem::replace(&mut part.pumping, true)
        });
        if start_pump == Some(true) {
            glommio::spawn_local(pump(Rc::clone(self), key)).detach();
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

/// Writes a partition's sealed batches in order, at most `max_in_flight` awaiting answers;
/// when nothing is queued and the open batch's linger has run out, seals and sends that.
async fn pump(inner: Rc<Inner>, key: PartKey) {
    let topic = inner.topic_name(key.0);
    loop {
        let in_flight = inner
            .with_part(key, |part| {
                let lingered = part.linger_expired && !part.builder.is_empty();
                if part.queue.is_empty() && !lingered {
                    part.pumping = false;
                    return None;
                }
                Some(Rc::clone(&part.in_flight))
            })
            .flatten();
        let Some(in_flight) = in_flight else {
            return;
        };
        let Ok(permit) = in_flight.acquire_static_permit(1).await else {
            // The window is closed: fail what is queued.
            let queued: Vec<Sealed> = inner
                .with_part(key, |part| {
                    part.pumping = false;
                    part.queue.drain(..).collect()
                })
                .unwrap_or_default();
            for sealed in queued {
                inner.complete(sealed, &topic, key.1, Err(ClientError::Closed));
            }
            return;
        };
        // Taken only now that a slot is free, so a lingered open batch kept growing while
        // the window was full.
        let next = inner
            .with_part(key, |part| match part.queue.pop_front() {
                Some(sealed) => Some(sealed),
                None if part.linger_expired => Inner::take_open(part),
                None => None,
            })
            .flatten();
        let Some(sealed) = next else {
            drop(permit);
            continue;
        };
        let started = inner.start(&topic, key.1, &sealed.batch).await;
        glommio::spawn_local(finish(
            Rc::clone(&inner),
            Rc::clone(&topic),
            key.1,
            sealed,
            started,
            permit,
        ))
        .detach();
    }
}

async fn finish(
    inner: Rc<Inner>,
    topic: Rc<str>,
    partition: i32,
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
    inner.complete(sealed, &topic, partition, result);
}

impl Inner {
    fn complete(&self, sealed: Sealed, topic: &str, partition: i32, result: Result<i64>) {
        self.buffered_bytes
            .set(self.buffered_bytes.get().saturating_sub(sealed.bytes));
        for (index, waiter) in sealed.waiters {
            let r = match &result {
                Ok(base) if *base >= 0 => Ok(RecordMetadata {
                    partition,
                    offset: base + i64::from(index),
                }),
                Ok(_) => Ok(RecordMetadata {
                    partition,
                    offset: -1,
                }),
                Err(e) => Err(e.clone()),
            };
            waiter.send(r);
        }
        self.outstanding
            .set(self.outstanding.get().saturating_sub(sealed.records));
        self.report(&BatchReport {
            topic,
            partition,
            first_index: Some(sealed.first_index),
            records: sealed.records,
            bytes: sealed.bytes,
            result: result.as_ref().copied(),
        });
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests;
