//! The generator's Kafka producer: the same shape as the native [`tidelog_client::Producer`]
//! (`send_nowait` plus a per-batch report), so that one send loop drives both protocols.
//!
//! ```text
//!  send_nowait(slot, key, value) ─▶ slot's open BatchBuilder
//!      full (--batch-bytes) ──────────────────────▶ sealed (compressed, CRC) ─▶ slot queue
//!      lingered (--linger-ms, timer task) ───────▶ sealed when a window permit is free;
//!                                                   else it keeps filling
//!  pump(slot): while in flight < --max-in-flight: front of the queue (or a due open batch)
//!      ─▶ batch task: Produce to the leader, retried after a metadata refresh
//!      ─▶ report (slot, first record index, records, bytes, result) ─▶ pump(slot)
//! ```
//!
//! Records are numbered per slot in send order, so a report names the records it covers
//! without a per-record future. Sealed batches waiting for a window are bounded by
//! [`BACKLOG_BYTES_MAX`]: past it `send_nowait` refuses records (`buffer_full`), as the native
//! producer does.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidelog_wire::kafka::generated::produce_response::ProduceResponse;
use tidelog_wire::kafka::Decoder;

use super::batch::{self, BatchBuilder, BATCH_HEADER_LEN, RECORD_OVERHEAD_MAX};
use super::client::{api, KafkaClient, Tp, RETRY_BACKOFF};
use super::{check, KafkaError};
use crate::args::Codec;
use crate::stats::now_ns;

/// Attempts of a Produce after a retriable error (each after a metadata refresh).
const PRODUCE_RETRIES: usize = 5;
/// Bytes of sealed batches waiting for a window permit, per producer, past which records are
/// refused (the native producer's backlog bound).
pub const BACKLOG_BYTES_MAX: usize = tidelog_client::limits::PRODUCER_BACKLOG_BYTES_DEFAULT;
/// Produce `timeout_ms`.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// How often [`KafkaProducer::flush`] looks whether every batch is done.
const FLUSH_POLL: Duration = Duration::from_micros(200);

/// Settings of a [`KafkaProducer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Kafka `acks`: 0, 1 or -1.
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    /// Produce requests in flight per partition.
    pub max_in_flight: usize,
    pub codec: Codec,
    /// The largest key plus value sent, to size batch buffers.
    pub record_bytes_max: usize,
}

/// What a producer says about one batch.
#[derive(Debug)]
pub struct Report<'a> {
    /// The slot (the partition's place in the producer's list).
    pub slot: usize,
    /// Index of the batch's first record among the slot's records, from 0.
    pub first_index: u64,
    pub records: usize,
    /// The node (Kafka broker id) that acknowledged it: the partition's leader then.
    pub result: Result<i32, &'a KafkaError>,
}

type Listener = Box<dyn Fn(&Report<'_>)>;

/// A sealed batch.
struct Sealed {
    batch: Bytes,
    first_index: u64,
    records: usize,
}

/// One partition's producer state.
struct Slot {
    tp: Tp,
    open: BatchBuilder,
    /// Index of the open batch's first record.
    open_first: u64,
    /// When the open batch got its first record ([`now_ns`]).
    opened_ns: u64,
    /// Index the next record gets.
    next_index: u64,
    /// A linger timer task is waiting for this slot.
    linger_armed: bool,
    queue: VecDeque<Sealed>,
    in_flight: usize,
}

/// A producer of a fixed list of partitions (slots); `!Send`, on one executor.
pub struct KafkaProducer {
    client: Rc<KafkaClient>,
    config: ProducerConfig,
    /// Buffer size of a batch: one record always fits.
    capacity: usize,
    /// `config.linger` in ns.
    linger_ns: u64,
    slots: RefCell<Vec<Slot>>,
    listener: RefCell<Option<Listener>>,
    /// Bytes of sealed batches not yet sent.
    backlog_bytes: Cell<usize>,
    /// Sealed batches not yet reported.
    outstanding: Cell<usize>,
}

impl KafkaProducer {
    /// A producer of `tps` (slot `i` is `tps[i]`) through `client`.
    pub fn new(client: Rc<KafkaClient>, tps: &[Tp], config: ProducerConfig) -> Rc<Self> {
        let capacity = config
            .batch_bytes
            .max(BATCH_HEADER_LEN + config.record_bytes_max + RECORD_OVERHEAD_MAX);
        let slots = tps
            .iter()
            .map(|tp| Slot {
                tp: *tp,
                open: BatchBuilder::with_capacity(capacity),
                open_first: 0,
                opened_ns: 0,
                next_index: 0,
                linger_armed: false,
                queue: VecDeque::new(),
                in_flight: 0,
            })
            .collect();
        Rc::new(KafkaProducer {
            client,
            linger_ns: u64::try_from(config.linger.as_nanos()).unwrap_or(u64::MAX),
            config,
            capacity,
            slots: RefCell::new(slots),
            listener: RefCell::new(None),
            backlog_bytes: Cell::new(0),
            outstanding: Cell::new(0),
        })
    }

    /// Calls `f` with the report of every batch, once it is acknowledged or has failed.
    pub fn on_batch(&self, f: impl Fn(&Report<'_>) + 'static) {
        *self.listener.borrow_mut() = Some(Box::new(f));
    }

    /// Adds a record to `slot`'s open batch; it is sent when the batch is full or lingered.
    ///
    /// # Errors
    /// `buffer_full` when the sealed batches waiting for a window exceed
    /// [`BACKLOG_BYTES_MAX`] (the record is not taken); an unknown slot.
    pub fn send_nowait(
        self: &Rc<Self>,
        slot: usize,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<(), &'static str> {
        if self.backlog_bytes.get() >= BACKLOG_BYTES_MAX {
            return Err("buffer_full");
        }
        let (arm, sealed) = {
            let mut slots = self.slots.borrow_mut();
            let s = slots.get_mut(slot).ok_or("unknown_partition")?;
            let add = s
                .open
                .record_len(key.map(<[u8]>::len), value.len(), timestamp_ms);
            let sealed = !s.open.is_empty() && s.open.len() + add > self.config.batch_bytes;
            if sealed {
                self.seal(s);
            }
            if s.open.is_empty() {
                s.opened_ns = now_ns();
                s.open_first = s.next_index;
            }
            s.open.push(key, value, timestamp_ms);
            s.next_index += 1;
            let arm = self.linger_ns > 0 && !s.linger_armed;
            s.linger_armed |= arm;
            (arm, sealed)
        };
        if arm {
            glommio::spawn_local(Rc::clone(self).linger(slot)).detach();
        }
        // Something to send now only when a batch was sealed, or without linger. A lingering
        // batch goes from its timer, or from the report that frees a window slot.
        if sealed || self.linger_ns == 0 {
            self.pump(slot);
        }
        Ok(())
    }

    /// Seals every open batch and waits until every batch is reported.
    pub async fn flush(self: &Rc<Self>) {
        let n = self.slots.borrow().len();
        for slot in 0..n {
            {
                let mut slots = self.slots.borrow_mut();
                if let Some(s) = slots.get_mut(slot) {
                    if !s.open.is_empty() {
                        self.seal(s);
                    }
                }
            }
            self.pump(slot);
        }
        while self.outstanding.get() > 0 {
            glommio::timer::sleep(FLUSH_POLL).await;
        }
    }

    /// Turns `s`'s open batch into a sealed one at the back of its queue.
    fn seal(&self, s: &mut Slot) {
        let records = (s.next_index - s.open_first) as usize;
        let batch = s.open.finish(self.capacity, self.config.codec);
        self.backlog_bytes
            .set(self.backlog_bytes.get() + batch.len());
        self.outstanding.set(self.outstanding.get() + 1);
        s.queue.push_back(Sealed {
            batch,
            first_index: s.open_first,
            records,
        });
    }

    /// Sends what `slot` may: queued batches first, then the open batch once its linger is
    /// over, while the window has room.
    fn pump(self: &Rc<Self>, slot: usize) {
        loop {
            let next = {
                let mut slots = self.slots.borrow_mut();
                let Some(s) = slots.get_mut(slot) else { return };
                if s.in_flight >= self.config.max_in_flight.max(1) {
                    return;
                }
                if s.queue.is_empty() && !s.open.is_empty() && self.due(s) {
                    self.seal(s);
                }
                let Some(next) = s.queue.pop_front() else {
                    return;
                };
                s.in_flight += 1;
                self.backlog_bytes
                    .set(self.backlog_bytes.get().saturating_sub(next.batch.len()));
                (s.tp, next)
            };
            glommio::spawn_local(Rc::clone(self).send(slot, next.0, next.1)).detach();
        }
    }

    fn due(&self, s: &Slot) -> bool {
        self.linger_ns == 0 || now_ns() >= s.opened_ns.saturating_add(self.linger_ns)
    }

    /// The linger timer of `slot`: sleeps until the open batch is due, sends it if the window
    /// lets it, and sleeps again while a younger batch is open.
    async fn linger(self: Rc<Self>, slot: usize) {
        let linger = self.linger_ns;
        loop {
            let wait = {
                let slots = self.slots.borrow();
                let Some(s) = slots.get(slot) else { return };
                s.opened_ns.saturating_add(linger).saturating_sub(now_ns())
            };
            if wait > 0 {
                glommio::timer::sleep(Duration::from_nanos(wait)).await;
            }
            self.pump(slot);
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot) else { return };
            // Nothing open, or a due batch waiting for the window (the next report pumps it).
            if s.open.is_empty() || self.due(s) {
                s.linger_armed = false;
                return;
            }
        }
    }

    /// One batch: Produce with bounded retries, then its report.
    async fn send(self: Rc<Self>, slot: usize, tp: Tp, sealed: Sealed) {
        let mut attempt = 0;
        let outcome = loop {
            match self.produce_once(tp, &sealed.batch).await {
                Ok(node) => break Ok(node),
                Err(e) if e.is_retriable() && attempt < PRODUCE_RETRIES => {
                    attempt += 1;
                    glommio::timer::sleep(RETRY_BACKOFF * attempt as u32).await;
                    // A failed refresh shows in the next attempt.
                    let _ = self.client.refresh(false).await;
                }
                Err(e) => break Err(e),
            }
        };
        if let Some(f) = &*self.listener.borrow() {
            f(&Report {
                slot,
                first_index: sealed.first_index,
                records: sealed.records,
                result: outcome.as_ref().copied(),
            });
        }
        if let Some(s) = self.slots.borrow_mut().get_mut(slot) {
            s.in_flight -= 1;
        }
        self.outstanding.set(self.outstanding.get() - 1);
        self.pump(slot);
    }

    /// One Produce of `records` to `tp`'s leader; with acks=0, done once written. Returns
    /// the leader's node id.
    async fn produce_once(&self, tp: Tp, records: &Bytes) -> super::Result<i32> {
        let leader = self.client.leader_id(tp);
        let node = self.client.leader(tp).await?;
        let v = node.versions.produce;
        let topic = self.client.topic(tp.0);
        let mut prefix = BytesMut::with_capacity(48 + topic.len());
        batch::produce_prefix(
            &mut prefix,
            v,
            self.config.acks,
            PRODUCE_TIMEOUT_MS,
            topic,
            tp.1,
            records.len(),
        );
        let parts: [&[u8]; 3] = [&prefix, records, batch::produce_suffix(v)];
        let Some(pending) = node
            .conn
            .send(api::PRODUCE, v, &parts, self.config.acks != 0)
            .await?
        else {
            return Ok(leader);
        };
        let body = pending.wait().await?;
        let r = ProduceResponse::decode(&mut Decoder::new(&body), v)
            .map_err(|e| KafkaError::Malformed(format!("Produce: {e}")))?;
        let p = r
            .responses
            .iter()
            .filter(|t| t.name == topic)
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.index == tp.1)
            .ok_or_else(|| KafkaError::Malformed(format!("Produce without {topic}/{}", tp.1)))?;
        check("Produce", p.error_code).map(|()| leader)
    }
}
