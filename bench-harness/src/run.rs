//! Running a plan: glommio executors (one per core), each with its own clients, producers and
//! consumers, started together behind a barrier.
//!
//! ```text
//!  main thread: setup executor (topic exists? create) ─▶ N worker executors ─▶ merge results
//!  worker k:    producers i ≡ k (mod N), one Client shared by them
//!               consumers j ≡ k (mod N), one Client each (a consumer's long poll holds its
//!               shard connection, so it must not share one with a producer)
//!  producer i:  send loop ─▶ Producer::send_nowait, (send time, bytes) kept per partition
//!               ─▶ per-batch report (on_batch) ─▶ latency of the batch's records
//!               closed loop: a per-partition window of records not yet acknowledged paces
//!               the send loop; open loop (--rate): unbounded, paced by the clock, latency
//!               measured from the intended send time (no coordinated omission)
//!  consumer j:  partitions p ≡ j (mod consumers), poll until the end offsets
//! ```
//!
//! The producer numbers each partition's records in send order and reports which ones a batch
//! holds, so the send times need no per-record future or channel.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use glommio::sync::Semaphore;
use glommio::Placement;
use tidelog_client::{
    BatchReport, Client, ClientError, Consumer, ConsumerConfig, Partitioner, Producer,
    ProducerConfig, StartAt, LATEST,
};

use crate::args::{Mode, Plan, Protocol};
use crate::kafka;
use crate::payload::{self, Payloads};
use crate::stats::{error_kind, now_ns, Errors, Latency, Live};

/// What a phase (produce or consume) did, over all executors.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub records: u64,
    pub bytes: u64,
    /// From the common start to the last executor's end (produce: after its final flush).
    pub elapsed: Duration,
    /// Produce: send → ack; consume: empty.
    pub latency: Latency,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The topic's partition count as the broker has it.
    pub partitions: u32,
    pub produce: Option<Phase>,
    pub consume: Option<Phase>,
    /// Send → consumption (e2e only).
    pub e2e: Option<Latency>,
    pub errors: Errors,
    /// Records between the consumers' start and end offsets: what they had to read.
    pub consume_expected: u64,
}

/// State shared by the executors and the progress line.
#[derive(Debug)]
pub struct Shared {
    pub plan: Plan,
    pub live: Live,
    partitions: AtomicUsize,
    barrier: Barrier,
    start: OnceLock<(Instant, u64)>,
    /// Producers still sending; e2e consumers look for the end once it is 0.
    producers_left: AtomicUsize,
    /// Set when an executor failed to set up; the others leave at the barrier.
    failed: AtomicBool,
}

impl Shared {
    pub fn new(plan: Plan) -> Arc<Self> {
        let executors = plan.executors.len();
        Arc::new(Shared {
            producers_left: AtomicUsize::new(plan.producers),
            plan,
            live: Live::default(),
            partitions: AtomicUsize::new(0),
            barrier: Barrier::new(executors),
            start: OnceLock::new(),
            failed: AtomicBool::new(false),
        })
    }

    /// The common start: the first executor past the barrier sets it.
    fn start(&self) -> (Instant, u64) {
        *self.start.get_or_init(|| (Instant::now(), now_ns()))
    }

    /// When the run started, once it has.
    pub fn started(&self) -> Option<Instant> {
        self.start.get().map(|s| s.0)
    }

    /// When the results start counting: the start plus the warm-up.
    pub fn measured_from(&self) -> Option<Instant> {
        self.started().map(|s| s + self.plan.warmup)
    }

    /// Whether an event at `ns` ([`now_ns`]) is past the warm-up and counts in the results.
    pub fn measuring(&self, ns: u64) -> bool {
        let warmup = u64::try_from(self.plan.warmup.as_nanos()).unwrap_or(u64::MAX);
        self.start
            .get()
            .is_some_and(|(_, start)| ns >= start.saturating_add(warmup))
    }

    /// The topic's partition count, as set up.
    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.load(Ordering::Relaxed) as u32
    }

    /// Producers still sending.
    pub(crate) fn producers_running(&self) -> usize {
        self.producers_left.load(Ordering::SeqCst)
    }

    /// A producer has sent its share and seen every ack.
    pub(crate) fn producer_done(&self) {
        self.producers_left.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the plan to the end.
///
/// # Errors
/// Setup failures (connect, topic), executor failures, a consumer that stalls.
pub fn run(shared: &Arc<Shared>) -> Result<Outcome> {
    let plan = &shared.plan;
    let partitions = setup(plan)?;
    shared
        .partitions
        .store(partitions as usize, Ordering::Relaxed);
    let executors = plan.executors.len();
    let mut handles = Vec::with_capacity(executors);
    for (k, cpu) in plan.executors.iter().enumerate() {
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let builder = tidelog_engine::runtime::executor_builder(placement, executors)?
            .name(&format!("tidelog-bench-{k}"));
        let shared = Arc::clone(shared);
        let handle = builder
            .spawn(move || async move { worker(shared, k).await })
            .map_err(|e| anyhow!("cannot start executor {k}: {e}"))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(executors);
    let mut first_error = None;
    for (k, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                first_error.get_or_insert(e.context(format!("executor {k}")));
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("executor {k} failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(merge(shared, partitions, results))
}

/// Makes sure the topic exists (creating it for produce and e2e); returns its partition count.
fn setup(asked: &Plan) -> Result<u32> {
    let plan = asked.clone();
    let handle = tidelog_engine::runtime::executor_builder(Placement::Unbound, 1)?
        .name("tidelog-bench-setup")
        .spawn(move || async move {
            if plan.protocol == Protocol::Kafka {
                return kafka_setup(&plan).await;
            }
            let client = Client::connect(plan.broker)
                .await
                .with_context(|| format!("cannot connect to {}", plan.broker))?;
            let info = match client.topic(&plan.topic).await {
                Ok(info) => info,
                Err(ClientError::UnknownTopic { .. }) if plan.mode.produces() => {
                    match client
                        .create_topic(&plan.topic, plan.partitions, -1, -1)
                        .await
                    {
                        Ok(()) => {}
                        // Another run created it meanwhile: use it.
                        Err(ClientError::Protocol { code, .. })
                            if format!("{code:?}") == "TopicAlreadyExists" => {}
                        Err(e) => return Err(e).context("cannot create the topic"),
                    }
                    client.topic(&plan.topic).await?
                }
                Err(ClientError::UnknownTopic { .. }) => {
                    bail!("topic {} does not exist; produce to it first", plan.topic)
                }
                Err(e) => return Err(e).context("cannot read metadata"),
            };
            Ok::<_, anyhow::Error>(u32::try_from(info.partition_count()).unwrap_or(u32::MAX))
        })
        .map_err(|e| anyhow!("cannot start the setup executor: {e}"))?;
    let partitions = handle
        .join()
        .map_err(|e| anyhow!("setup executor failed: {e}"))??;
    let plan = asked;
    if partitions == 0 {
        bail!("topic {} has no partitions", plan.topic);
    }
    if partitions != plan.partitions {
        eprintln!(
            "tidelog-bench: topic {} exists with {partitions} partitions (asked for {}); using {partitions}",
            plan.topic, plan.partitions
        );
    }
    Ok(partitions)
}

/// The Kafka flavour of [`setup`]'s task: bootstrap, topic (created when producing), its
/// partition count.
async fn kafka_setup(plan: &Plan) -> Result<u32> {
    let client = kafka::client::KafkaClient::connect(plan.broker, &plan.topic)
        .await
        .with_context(|| format!("Kafka bootstrap {}", plan.broker))?;
    let n = match client
        .ensure_topic(plan.partitions, plan.mode.produces())
        .await
    {
        Ok(n) => n,
        Err(kafka::KafkaError::Code {
            code: kafka::code::UNKNOWN_TOPIC_OR_PARTITION,
            ..
        }) => bail!("topic {} does not exist; produce to it first", plan.topic),
        Err(e) => return Err(e).context("cannot set up the topic"),
    };
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The partitions producer `i` of `producers` writes: its own share when there are at least as
/// many partitions as producers, otherwise one partition shared with other producers.
pub fn producer_partitions(i: usize, producers: usize, partitions: u32) -> Vec<i32> {
    let n = partitions as usize;
    if producers >= n {
        vec![(i % n) as i32]
    } else {
        (0..n)
            .filter(|p| p % producers == i)
            .map(|p| p as i32)
            .collect()
    }
}

/// The partitions consumer `j` of `consumers` reads (empty when there are more consumers than
/// partitions).
pub fn consumer_partitions(j: usize, consumers: usize, partitions: u32) -> Vec<i32> {
    (0..partitions as usize)
        .filter(|p| p % consumers == j)
        .map(|p| p as i32)
        .collect()
}

/// Records producer `i` sends when `total` are asked for.
pub(crate) fn records_for(i: usize, producers: usize, total: u64) -> u64 {
    let p = producers as u64;
    total / p + u64::from((i as u64) < total % p)
}

/// What one executor (or one producer or consumer of it) measured.
#[derive(Debug, Default)]
pub(crate) struct WorkerResult {
    pub produced: u64,
    pub produced_bytes: u64,
    pub produce_latency: Latency,
    pub produce_end: Option<Instant>,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub e2e_latency: Latency,
    pub consume_end: Option<Instant>,
    pub consume_expected: u64,
    pub errors: Errors,
}

impl WorkerResult {
    fn add(&mut self, o: WorkerResult) {
        self.produced += o.produced;
        self.produced_bytes += o.produced_bytes;
        self.produce_latency.merge(&o.produce_latency);
        self.produce_end = self.produce_end.max(o.produce_end);
        self.consumed += o.consumed;
        self.consumed_bytes += o.consumed_bytes;
        self.e2e_latency.merge(&o.e2e_latency);
        self.consume_end = self.consume_end.max(o.consume_end);
        self.consume_expected += o.consume_expected;
        self.errors.merge(&o.errors);
    }
}

fn merge(shared: &Shared, partitions: u32, results: Vec<WorkerResult>) -> Outcome {
    let mut all = WorkerResult::default();
    for r in results {
        all.add(r);
    }
    let start = shared.measured_from().unwrap_or_else(Instant::now);
    let plan = &shared.plan;
    let since =
        |end: Option<Instant>| end.map_or(Duration::ZERO, |e| e.saturating_duration_since(start));
    Outcome {
        partitions,
        produce: plan.mode.produces().then(|| Phase {
            records: all.produced,
            bytes: all.produced_bytes,
            elapsed: since(all.produce_end),
            latency: all.produce_latency,
        }),
        consume: plan.mode.consumes().then(|| Phase {
            records: all.consumed,
            bytes: all.consumed_bytes,
            elapsed: since(all.consume_end),
            latency: Latency::default(),
        }),
        e2e: (plan.mode == Mode::E2e).then_some(all.e2e_latency),
        errors: all.errors,
        consume_expected: all.consume_expected,
    }
}

/// A consumer set up and positioned, waiting for the start.
struct ReadyConsumer {
    /// The consumer's own client, for offset lookups.
    client: Client,
    consumer: Consumer,
    partitions: Vec<i32>,
    /// Consume mode: the end offsets taken at start.
    ends: Option<Vec<i64>>,
}

async fn worker(shared: Arc<Shared>, k: usize) -> Result<WorkerResult> {
    let setup = worker_setup(&shared, k).await;
    if setup.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    // Blocking this executor's thread is fine here: nothing of the run has started yet.
    shared.barrier.wait();
    let (producer_client, consumers) = setup?;
    if shared.failed.load(Ordering::SeqCst) {
        return Ok(WorkerResult::default());
    }
    let (start, _) = shared.start();
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let mut producer_tasks = Vec::new();
    match producer_client {
        Some(ProducerClient::Native(client)) => {
            for i in (k..plan.producers).step_by(executors) {
                let task = produce(Rc::new(client.clone()), Arc::clone(&shared), i, start);
                producer_tasks.push(glommio::spawn_local(task).detach());
            }
        }
        Some(ProducerClient::Kafka(client)) => {
            for i in (k..plan.producers).step_by(executors) {
                let task = kafka::load::produce(Rc::clone(&client), Arc::clone(&shared), i, start);
                producer_tasks.push(glommio::spawn_local(task).detach());
            }
        }
        None => {}
    }
    let mut consumer_tasks = Vec::new();
    for c in consumers {
        let task = match c {
            AnyConsumer::Native(c) => glommio::spawn_local(consume(Arc::clone(&shared), c, start)),
            AnyConsumer::Kafka(c) => {
                glommio::spawn_local(kafka::load::consume(Arc::clone(&shared), c, start))
            }
        };
        consumer_tasks.push(task.detach());
    }
    let mut result = WorkerResult::default();
    for t in producer_tasks {
        let r = t
            .await
            .ok_or_else(|| anyhow!("producer task cancelled"))??;
        result.add(r);
    }
    for t in consumer_tasks {
        let r = t
            .await
            .ok_or_else(|| anyhow!("consumer task cancelled"))??;
        result.add(r);
    }
    Ok(result)
}

/// An executor's producer client: shared by its producers.
enum ProducerClient {
    Native(Client),
    Kafka(Rc<kafka::client::KafkaClient>),
}

/// A consumer ready to start, of either protocol.
enum AnyConsumer {
    Native(ReadyConsumer),
    Kafka(kafka::load::ReadyConsumer),
}

type WorkerSetup = (Option<ProducerClient>, Vec<AnyConsumer>);

/// Connects this executor's clients and positions its consumers, before the start.
async fn worker_setup(shared: &Shared, k: usize) -> Result<WorkerSetup> {
    if shared.plan.protocol == Protocol::Kafka {
        return kafka_worker_setup(shared, k).await;
    }
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let partitions = shared.partitions.load(Ordering::Relaxed) as u32;
    let producer_client = if (k..plan.producers).step_by(executors).next().is_some() {
        let client = Client::connect(plan.broker).await?;
        // Warm the metadata cache so that the first sends need no lookup.
        client.topic(&plan.topic).await?;
        Some(client)
    } else {
        None
    };
    let mut consumers = Vec::new();
    for j in (k..plan.consumers).step_by(executors) {
        let parts = consumer_partitions(j, plan.consumers, partitions);
        if parts.is_empty() {
            continue;
        }
        let client = Client::connect(plan.broker).await?;
        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default())?;
        let start = match plan.mode {
            Mode::Consume => StartAt::Earliest,
            _ => StartAt::Latest,
        };
        let assignment: Vec<(&str, i32, StartAt)> = parts
            .iter()
            .map(|p| (plan.topic.as_str(), *p, start.clone()))
            .collect();
        consumer.assign(&assignment).await?;
        let ends = if plan.mode == Mode::Consume {
            let mut ends = Vec::with_capacity(parts.len());
            for p in &parts {
                ends.push(client.list_offsets(&plan.topic, *p, LATEST).await?);
            }
            Some(ends)
        } else {
            None
        };
        consumers.push(AnyConsumer::Native(ReadyConsumer {
            client,
            consumer,
            partitions: parts,
            ends,
        }));
    }
    Ok((producer_client.map(ProducerClient::Native), consumers))
}

/// [`worker_setup`] over Kafka: one client for the executor's producers (metadata warmed),
/// one per consumer (a fetch's long poll holds its connections' response order).
async fn kafka_worker_setup(shared: &Shared, k: usize) -> Result<WorkerSetup> {
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let partitions = shared.partition_count();
    let producer_client = if (k..plan.producers).step_by(executors).next().is_some() {
        let client = kafka::client::KafkaClient::connect(plan.broker, &plan.topic).await?;
        client.refresh(false).await?;
        // Connect to every leader now so that the first batches wait for no handshake.
        for p in 0..partitions as i32 {
            client.leader(p).await?;
        }
        Some(ProducerClient::Kafka(Rc::new(client)))
    } else {
        None
    };
    let mut consumers = Vec::new();
    for j in (k..plan.consumers).step_by(executors) {
        let parts = consumer_partitions(j, plan.consumers, partitions);
        if !parts.is_empty() {
            let ready = kafka::load::ready_consumer(shared, parts).await?;
            consumers.push(AnyConsumer::Kafka(ready));
        }
    }
    Ok((producer_client, consumers))
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
    /// Records the latency of every record of an acknowledged batch, or its error.
    fn batch(&mut self, slot: Option<usize>, b: &BatchReport<'_>) {
        let live = &self.shared.live;
        let n = b.records as u64;
        let now = now_ns();
        let measuring = self.shared.measuring(now);
        let (Some(slot), Some(first)) = (slot, b.first_index) else {
            if let Err(e) = b.result {
                self.result.errors.add(error_kind(e), n);
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
            if b.result.is_ok() && measuring {
                self.result.produce_latency.record_ns(t0, now);
            }
            bytes += u64::from(size);
            entry.0 = ACKED;
        }
        while p.times.front().is_some_and(|e| e.0 == ACKED) {
            p.times.pop_front();
            p.base += 1;
        }
        match b.result {
            Ok(_) => {
                if measuring {
                    self.result.produced += n;
                    self.result.produced_bytes += bytes;
                }
                Live::add(&live.produced, n);
                Live::add(&live.produced_bytes, bytes);
            }
            Err(e) => {
                self.result.errors.add(error_kind(e), n);
                Live::add(&live.errors, n);
            }
        }
    }
}

/// Producer `i`: sends its share with [`Producer::send_nowait`], then flushes. The producer
/// reports each acknowledged batch; the listener takes the batch's send times from this
/// producer's own per-partition list, so nothing is allocated or awaited per record.
async fn produce(
    client: Rc<Client>,
    shared: Arc<Shared>,
    i: usize,
    start: Instant,
) -> Result<WorkerResult> {
    let plan = &shared.plan;
    let partitions = shared.partitions.load(Ordering::Relaxed) as u32;
    let parts = producer_partitions(i, plan.producers, partitions);
    let producer = Producer::new(
        (*client).clone(),
        ProducerConfig {
            acks: plan.acks,
            linger: plan.linger,
            batch_bytes: plan.batch_bytes,
            max_in_flight: plan.max_in_flight,
            partitioner: Partitioner::RoundRobin,
            ..ProducerConfig::default()
        },
    )?;
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
    let mut slot_of = vec![None; partitions as usize];
    for (slot, p) in parts.iter().enumerate() {
        if let Some(s) = slot_of.get_mut(*p as usize) {
            *s = Some(slot);
        }
    }
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
    {
        let acks = Rc::clone(&acks);
        let windows = Rc::clone(&windows);
        producer.on_batch(move |b| {
            let slot = usize::try_from(b.partition)
                .ok()
                .and_then(|p| slot_of.get(p).copied().flatten());
            acks.borrow_mut().batch(slot, b);
            if let Some(w) = slot.and_then(|s| windows.get(s)) {
                w.signal(b.records as u64);
            }
        });
    }
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
    let mut payloads = Payloads::ranged(seed, plan.record_size_min, plan.record_size);
    let mut keys = payload::Keys::new(plan.keys, seed);
    let mut sent = 0u64;
    while sent < quota {
        let t0 = match interval_ns {
            Some(interval) => {
                let intended = start_ns + sent * interval;
                let now = now_ns();
                if deadline.is_some_and(|d| start + Duration::from_nanos(intended - start_ns) >= d)
                {
                    break;
                }
                if intended > now + OPEN_LOOP_SLEEP_MIN_NS {
                    glommio::timer::sleep(Duration::from_nanos(intended - now)).await;
                } else if sent.is_multiple_of(64) {
                    // Behind (or nearly due): keep sending, but let the tasks that write
                    // batches and take acks run, or the send loop starves them.
                    glommio::yield_if_needed().await;
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
        let index = (sent % parts.len() as u64) as usize;
        sent += 1;
        if !open_loop {
            let w = &windows[index];
            if !w.try_acquire(1).unwrap_or(false) && w.acquire(1).await.is_err() {
                bail!("producer window closed");
            }
        }
        let value = payloads.next(t0);
        let key = keys.next();
        let size = (value.len() + key.map_or(0, <[u8]>::len)) as u32;
        match producer.send_nowait(
            &plan.topic,
            key,
            value,
            Some(parts[index]),
            Some(wall_ms(t0)),
        ) {
            Ok(()) => acks.borrow_mut().pending[index].times.push_back((t0, size)),
            Err(e) => {
                let mut a = acks.borrow_mut();
                a.result.errors.client(&e);
                Live::add(&shared.live.errors, 1);
                if !open_loop {
                    windows[index].signal(1);
                }
            }
        }
    }
    producer.flush().await;
    let mut result = std::mem::take(&mut acks.borrow_mut().result);
    result.produce_end = Some(Instant::now());
    shared.producers_left.fetch_sub(1, Ordering::SeqCst);
    Ok(result)
}

/// Open loop: a record due sooner than this is sent at once rather than after a timer (one
/// timer per record costs more than the record at high rates; latency is still measured from
/// the intended time).
const OPEN_LOOP_SLEEP_MIN_NS: u64 = 50_000;

/// How long e2e consumers wait without a record, once the producers are done, before they
/// report a stall.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Long-poll wait of a consumer's fetch.
pub(crate) const POLL_WAIT: Duration = Duration::from_millis(100);

/// A consumer: reads its partitions to the end offsets (consume: taken at start; e2e: taken
/// once the producers are done).
async fn consume(
    shared: Arc<Shared>,
    ready: ReadyConsumer,
    start: Instant,
) -> Result<WorkerResult> {
    let plan = &shared.plan;
    let live = &shared.live;
    let ReadyConsumer {
        client,
        mut consumer,
        partitions,
        mut ends,
    } = ready;
    let starts: Vec<i64> = partitions
        .iter()
        .map(|p| consumer.position(&plan.topic, *p).unwrap_or(0))
        .collect();
    let deadline = match plan.mode {
        Mode::Consume => plan.duration.map(|d| start + plan.warmup + d),
        _ => None,
    };
    let mut r = WorkerResult::default();
    let mut last_progress = Instant::now();
    loop {
        if ends.is_none() && shared.producers_left.load(Ordering::SeqCst) == 0 {
            let mut e = Vec::with_capacity(partitions.len());
            for p in &partitions {
                e.push(client.list_offsets(&plan.topic, *p, LATEST).await?);
            }
            ends = Some(e);
            last_progress = Instant::now();
        }
        if let Some(ends) = &ends {
            let done = partitions
                .iter()
                .zip(ends)
                .all(|(p, end)| consumer.position(&plan.topic, *p).unwrap_or(0) >= *end);
            if done {
                break;
            }
            if plan.mode == Mode::E2e && last_progress.elapsed() > STALL_TIMEOUT {
                bail!("consumer stalled: no record for {STALL_TIMEOUT:?} before the end offsets");
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d)
            || plan
                .records
                .is_some_and(|n| plan.mode == Mode::Consume && Live::get(&live.consumed) >= n)
        {
            break;
        }
        let records = match consumer.poll(POLL_WAIT).await {
            Ok(records) => records,
            Err(e) if e.is_retriable() => {
                r.errors.client(&e);
                Live::add(&live.errors, 1);
                continue;
            }
            Err(e) => return Err(e).context("poll"),
        };
        if records.is_empty() {
            continue;
        }
        last_progress = Instant::now();
        let now = now_ns();
        let measuring = shared.measuring(now);
        let mut bytes = 0u64;
        for rec in &records {
            bytes += (rec.value.len() + rec.key.as_ref().map_or(0, |k| k.len())) as u64;
            if plan.mode == Mode::E2e && measuring {
                if let Some(sent) = payload::timestamp_ns(&rec.value) {
                    r.e2e_latency.record_ns(sent, now);
                }
            }
        }
        let n = records.len() as u64;
        if measuring {
            r.consumed += n;
            r.consumed_bytes += bytes;
        }
        Live::add(&live.consumed, n);
        Live::add(&live.consumed_bytes, bytes);
    }
    r.consume_end = Some(Instant::now());
    if let Some(ends) = &ends {
        r.consume_expected = ends
            .iter()
            .zip(&starts)
            .map(|(e, s)| u64::try_from(e - s).unwrap_or(0))
            .sum();
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_spread_without_overlap() {
        assert_eq!(producer_partitions(0, 2, 3), [0, 2]);
        assert_eq!(producer_partitions(1, 2, 3), [1]);
        assert_eq!(producer_partitions(4, 6, 3), [1], "more producers share");
        assert_eq!(consumer_partitions(1, 2, 5), [1, 3]);
        assert!(consumer_partitions(3, 4, 2).is_empty());
        let total: u64 = (0..3).map(|i| records_for(i, 3, 10)).sum();
        assert_eq!(total, 10);
        assert_eq!(records_for(0, 3, 10), 4);
    }
}
