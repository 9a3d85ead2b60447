//! The producers of a run, one send loop for both protocols.
//!
//! ```text
//!  producer i:  send loop ─▶ Producer::send_nowait (native client) or
//!               KafkaProducer::send_nowait (crate::kafka::producer), (send time, bytes) kept
//!               per partition ─▶ per-batch report ─▶ latency of the batch's records
//!               closed loop: a per-partition window of records not yet acknowledged paces
//!               the send loop; open loop (--rate): paced by the clock, latency measured from
//!               the intended send time (no coordinated omission), the loop's own lateness
//!               recorded as the send lag
//! ```
//!
//! Both producers number each partition's records in send order and report which ones a
//! batch holds, so the send times need no per-record future or channel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use glommio::sync::Semaphore;
use tidelog_client::{Client, Partitioner, Producer, ProducerConfig};

use crate::args::Protocol;
use crate::kafka::client::KafkaClient;
use crate::kafka::producer::{self as kp, KafkaProducer};
use crate::payload::{self, Payloads};
use crate::stats::{error_kind, now_ns, Live};
use crate::work::{producer_partitions, records_for, Shared, Tp, WorkerResult};

/// An executor's producer client, shared by its producers.
#[derive(Clone)]
pub(crate) enum ProducerClient {
    Native(Client),
    Kafka(Rc<KafkaClient>),
}

impl ProducerClient {
    /// Connects, with the topics' metadata (and, for Kafka, every leader's connection) ready
    /// so that the first batches wait for no lookup or handshake.
    ///
    /// # Errors
    /// Connect and metadata errors.
    pub(crate) async fn connect(shared: &Shared) -> Result<Self> {
        let plan = &shared.plan;
        Ok(match plan.protocol {
            Protocol::Native => {
                let client = Client::connect(plan.broker).await?;
                for t in &plan.topics {
                    client.topic(t).await?;
                }
                ProducerClient::Native(client)
            }
            Protocol::Kafka => {
                let client = KafkaClient::connect(&plan.bootstrap, &plan.topics).await?;
                client.refresh(false).await?;
                for tp in shared.targets() {
                    client.leader(*tp).await?;
                }
                ProducerClient::Kafka(Rc::new(client))
            }
        })
    }
}

/// Marks a record of [`Pending`] as acknowledged.
const ACKED: u64 = u64::MAX;

/// A partition's records sent and not yet acknowledged, by the producer's per-partition record
/// index: `times[i - base]` is record `i`'s (send time, bytes), [`ACKED`] once reported. Batches
/// are reported in order except after retries, so acked records leave from the front.
#[derive(Default)]
struct Pending {
    base: u64,
    times: std::collections::VecDeque<(u64, u32)>,
}

/// What a producer's batch listener updates.
struct Acks {
    shared: Arc<Shared>,
    result: WorkerResult,
    /// By slot (the position of the partition in the producer's list).
    pending: Vec<Pending>,
}

impl Acks {
    /// Records the latency of every record of an acknowledged batch, or its error (`error`:
    /// the kind).
    fn batch(
        &mut self,
        slot: Option<usize>,
        first: Option<u64>,
        n: usize,
        outcome: Result<Option<i32>, String>,
    ) {
        let (node, error) = match outcome {
            Ok(node) => (node, None),
            Err(kind) => (None, Some(kind)),
        };
        let live = &self.shared.live;
        let n = n as u64;
        let now = now_ns();
        let measuring = self.shared.measuring(now);
        let (Some(slot), Some(first)) = (slot, first) else {
            if let Some(kind) = error {
                self.result.errors.add(kind, n);
                Live::add(&live.errors, n);
            }
            return;
        };
        let Some(p) = self.pending.get_mut(slot) else {
            return;
        };
        let mut bytes = 0u64;
        let from = first.saturating_sub(p.base) as usize;
        let to = (first + n).saturating_sub(p.base) as usize;
        for entry in p
            .times
            .range_mut(from.min(p.times.len())..to.min(p.times.len()))
        {
            let (t0, size) = *entry;
            if t0 == ACKED {
                continue;
            }
            if error.is_none() && measuring {
                self.result.produce_latency.record_ns(t0, now);
            }
            bytes += u64::from(size);
            entry.0 = ACKED;
        }
        while p.times.front().is_some_and(|e| e.0 == ACKED) {
            p.times.pop_front();
            p.base += 1;
        }
        match error {
            None => {
                if measuring {
                    self.result.produced += n;
                    self.result.produced_bytes += bytes;
                    if let Some(node) = node {
                        let by_node = self.result.produced_by_node.entry(node).or_default();
                        by_node.0 += n;
                        by_node.1 += bytes;
                    }
                }
                Live::add(&live.produced, n);
                Live::add(&live.produced_bytes, bytes);
            }
            Some(kind) => {
                self.result.errors.add(kind, n);
                Live::add(&live.errors, n);
            }
        }
    }
}

/// A producer of either protocol.
enum Sender {
    Native(Producer),
    Kafka(Rc<KafkaProducer>),
}

/// Producer `i`: sends its share, then flushes. The producer reports each acknowledged
/// batch; the listener takes the batch's send times from this producer's own per-partition
/// list, so nothing is allocated or awaited per record.
pub(crate) async fn produce(
    client: ProducerClient,
    shared: Arc<Shared>,
    i: usize,
    start: Instant,
) -> Result<WorkerResult> {
    let plan = &shared.plan;
    let targets = shared.targets();
    let parts: Vec<Tp> = producer_partitions(i, plan.producers, targets.len() as u32)
        .into_iter()
        .map(|k| targets[k])
        .collect();
    // Closed loop: per partition, the records of `max_in_flight` batches in flight plus one
    // being filled. Open loop: no bound (the producer's own backlog limit reports overload).
    let batch_records = (plan.batch_bytes / plan.record_size_mean()).max(1);
    let window = batch_records * (plan.max_in_flight + 1);
    let windows: Rc<Vec<Semaphore>> = Rc::new(
        parts
            .iter()
            .map(|_| Semaphore::new(window as u64))
            .collect(),
    );
    let slot_of: HashMap<Tp, usize> = parts.iter().enumerate().map(|(s, tp)| (*tp, s)).collect();
    let acks = Rc::new(RefCell::new(Acks {
        shared: Arc::clone(&shared),
        result: WorkerResult::default(),
        pending: parts
            .iter()
            .map(|_| Pending {
                base: 0,
                times: std::collections::VecDeque::with_capacity(window),
            })
            .collect(),
    }));
    let ack = {
        let acks = Rc::clone(&acks);
        let windows = Rc::clone(&windows);
        move |slot: Option<usize>,
              first: Option<u64>,
              n: usize,
              outcome: Result<Option<i32>, String>| {
            acks.borrow_mut().batch(slot, first, n, outcome);
            if let Some(w) = slot.and_then(|s| windows.get(s)) {
                w.signal(n as u64);
            }
        }
    };
    let sender = match client {
        ProducerClient::Native(client) => {
            let producer = Producer::new(
                client,
                ProducerConfig {
                    acks: plan.acks,
                    linger: plan.linger,
                    batch_bytes: plan.batch_bytes,
                    max_in_flight: plan.max_in_flight,
                    partitioner: Partitioner::RoundRobin,
                    ..ProducerConfig::default()
                },
            )?;
            let topic_of: HashMap<String, usize> = plan
                .topics
                .iter()
                .enumerate()
                .map(|(t, name)| (name.clone(), t))
                .collect();
            producer.on_batch(move |b| {
                let slot = topic_of
                    .get(b.topic)
                    .and_then(|t| slot_of.get(&(*t, b.partition)).copied());
                ack(
                    slot,
                    b.first_index,
                    b.records,
                    b.result.map(|_| None).map_err(error_kind),
                );
            });
            Sender::Native(producer)
        }
        ProducerClient::Kafka(client) => {
            let producer = KafkaProducer::new(
                client,
                &parts,
                kp::ProducerConfig {
                    // Kafka's acks values are the native wire's: 0, 1, -1.
                    acks: i16::from(plan.acks.wire()),
                    batch_bytes: plan.batch_bytes,
                    linger: plan.linger,
                    max_in_flight: plan.max_in_flight,
                    codec: plan.compression,
                    record_bytes_max: plan.record_size + payload::KEY_BYTES,
                },
            );
            producer.on_batch(move |r| {
                ack(
                    Some(r.slot),
                    Some(r.first_index),
                    r.records,
                    r.result.map(Some).map_err(|e| e.kind().to_owned()),
                );
            });
            Sender::Kafka(producer)
        }
    };
    let open_loop = plan.rate.is_some();
    let quota = plan
        .records
        .map_or(u64::MAX, |n| records_for(i, plan.producers, n));
    let deadline = plan.duration.map(|d| start + plan.warmup + d);
    // Open loop: this producer's share of the rate, as an interval between intended sends.
    let interval_ns = plan
        .rate
        .map(|r| (1e9 * plan.producers as f64 / r).max(1.0) as u64);
    let start_ns = now_ns();
    // Record timestamps (ms since the epoch) follow the monotonic clock from here: no second
    // clock read per record.
    let wall_ms_at_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let wall_ms = |t: u64| wall_ms_at_start + (t.saturating_sub(start_ns) / 1_000_000) as i64;
    let seed = plan.seed.wrapping_add(i as u64);
    let mut payloads = Payloads::ranged(seed, plan.record_size_min, plan.record_size, plan.payload);
    let mut keys = payload::Keys::new(plan.keys, seed);
    let mut lag = crate::stats::Latency::default();
    let mut sent = 0u64;
    while sent < quota {
        let t0 = match interval_ns {
            Some(interval) => {
                let intended = start_ns + sent * interval;
                let mut now = now_ns();
                if deadline.is_some_and(|d| start + Duration::from_nanos(intended - start_ns) >= d)
                {
                    break;
                }
                // One clock read per record, a second only after a wait (at 1 M rec/s the
                // clock was 5% of the generator's profile).
                if intended > now + OPEN_LOOP_SLEEP_MIN_NS {
                    glommio::timer::sleep(Duration::from_nanos(intended - now)).await;
                    now = now_ns();
                } else if sent.is_multiple_of(64) {
                    // Behind (or nearly due): keep sending, but let the tasks that write
                    // batches and take acks run, or the send loop starves them.
                    glommio::yield_if_needed().await;
                    now = now_ns();
                }
                if shared.measuring(now) {
                    lag.record_ns(intended, now);
                }
                intended
            }
            None => {
                if sent.is_multiple_of(64) {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    glommio::yield_if_needed().await;
                }
                now_ns()
            }
        };
        let slot = (sent % parts.len() as u64) as usize;
        sent += 1;
        if !open_loop {
            let w = &windows[slot];
            if !w.try_acquire(1).unwrap_or(false) && w.acquire(1).await.is_err() {
                bail!("producer window closed");
            }
        }
        let value = payloads.next(t0);
        let key = keys.next();
        let size = (value.len() + key.map_or(0, <[u8]>::len)) as u32;
        let (t, p) = parts[slot];
        let sent_ok = match &sender {
            Sender::Native(producer) => producer
                .send_nowait(&plan.topics[t], key, value, Some(p), Some(wall_ms(t0)))
                .map_err(|e| error_kind(&e)),
            Sender::Kafka(producer) => producer
                .send_nowait(slot, key, value, wall_ms(t0))
                .map_err(str::to_owned),
        };
        match sent_ok {
            Ok(()) => acks.borrow_mut().pending[slot].times.push_back((t0, size)),
            Err(kind) => {
                acks.borrow_mut().result.errors.add(kind, 1);
                Live::add(&shared.live.errors, 1);
                if !open_loop {
                    windows[slot].signal(1);
                }
            }
        }
    }
    match &sender {
        Sender::Native(producer) => producer.flush().await,
        Sender::Kafka(producer) => producer.flush().await,
    }
    let mut result = std::mem::take(&mut acks.borrow_mut().result);
    result.send_lag = lag;
    result.produce_end = Some(Instant::now());
    shared.producer_done();
    Ok(result)
}

/// Open loop: a record due sooner than this is sent at once rather than after a timer (one
/// timer per record costs more than the record at high rates; latency is still measured from
/// the intended time).
const OPEN_LOOP_SLEEP_MIN_NS: u64 = 50_000;
