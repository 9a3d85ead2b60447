//! Running a plan: glommio executors (one per core), each with its own clients, producers and
//! consumers, started together.
//!
//! ```text
//!  main thread: setup executor (topics exist? create; consumers' start and end offsets)
//!               ─▶ N worker executors ─▶ merge results
//!  worker k:    connects its clients and joins its consumers' group, waits for the others
//!               (without blocking its thread: group heartbeats keep running), then runs
//!               producers i ≡ k (mod N) (crate::produce) and consumers j ≡ k (mod N)
//!               (crate::consume), either protocol
//! ```
//!
//! A run addresses partitions as *targets*: the (topic, partition) pairs of every topic, in
//! topic order. Producers and static consumers split the targets; a Kafka group assigns them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use glommio::Placement;
use tidelog_client::{Client, ClientError, EARLIEST, LATEST};

use crate::args::{Mode, Plan, Protocol};
use crate::kafka;
use crate::stats::{now_ns, Errors, Latency, Live};

/// A partition of the run: (topic index in `Plan::topics`, partition).
pub type Tp = kafka::client::Tp;

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
    /// The partitions of all topics as the broker has them.
    pub partitions: u32,
    pub produce: Option<Phase>,
    pub consume: Option<Phase>,
    /// Send → consumption (e2e only).
    pub e2e: Option<Latency>,
    /// How late the open-loop producers sent records against their schedule: the
    /// generator's own lag (empty in closed loop).
    pub send_lag: Option<Latency>,
    pub errors: Errors,
    /// Records between the consumers' start and end offsets: what they had to read.
    pub consume_expected: u64,
}

/// State shared by the executors and the progress line.
#[derive(Debug)]
pub struct Shared {
    pub plan: Plan,
    pub live: Live,
    /// Every partition of every topic, set up before the executors start.
    targets: OnceLock<Vec<Tp>>,
    /// Each target's index in `targets` (looked up per partition on every poll).
    target_index: OnceLock<std::collections::HashMap<Tp, usize>>,
    /// Consumers: where each target starts (consume: earliest; e2e: latest; with a group,
    /// its committed offset where it has one).
    starts: OnceLock<Vec<i64>>,
    /// Consumers: where each target ends (consume: at setup; e2e: once producers are done).
    ends: OnceLock<Vec<i64>>,
    /// Executors that finished their setup.
    arrived: AtomicUsize,
    start: OnceLock<(Instant, u64)>,
    /// Producers still sending; e2e consumers look for the end once it is 0.
    producers_left: AtomicUsize,
    /// Set when an executor failed to set up; the others leave at the start line.
    failed: AtomicBool,
}

impl Shared {
    pub fn new(plan: Plan) -> Arc<Self> {
        Arc::new(Shared {
            producers_left: AtomicUsize::new(plan.producers),
            plan,
            live: Live::default(),
            targets: OnceLock::new(),
            target_index: OnceLock::new(),
            starts: OnceLock::new(),
            ends: OnceLock::new(),
            arrived: AtomicUsize::new(0),
            start: OnceLock::new(),
            failed: AtomicBool::new(false),
        })
    }

    /// The common start: the first executor past the start line sets it.
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

    /// Every partition of the run.
    pub(crate) fn targets(&self) -> &[Tp] {
        self.targets.get().map_or(&[], Vec::as_slice)
    }

    /// Where consumers start reading target `i`.
    pub(crate) fn start_of(&self, i: usize) -> i64 {
        self.starts
            .get()
            .and_then(|s| s.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Where consumers stop reading each target, once known.
    pub(crate) fn ends(&self) -> Option<&[i64]> {
        self.ends.get().map(Vec::as_slice)
    }

    /// Records the end offsets (the first caller wins; later ones are equal, taken after
    /// the producers finished).
    pub(crate) fn set_ends(&self, ends: Vec<i64>) {
        let _ = self.ends.set(ends);
    }

    /// The index of `tp` among the targets.
    pub(crate) fn target_index(&self, tp: Tp) -> Option<usize> {
        self.target_index.get()?.get(&tp).copied()
    }

    /// Producers still sending.
    pub(crate) fn producers_running(&self) -> usize {
        self.producers_left.load(Ordering::SeqCst)
    }

    /// A producer has sent its share and seen every ack.
    pub(crate) fn producer_done(&self) {
        self.producers_left.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until every executor has set up. Polls rather than blocking the thread, so that
    /// this executor's group heartbeats and connections keep being served meanwhile.
    async fn start_line(&self) {
        let executors = self.plan.executors.len();
        self.arrived.fetch_add(1, Ordering::SeqCst);
        while self.arrived.load(Ordering::SeqCst) < executors {
            glommio::timer::sleep(START_LINE_POLL).await;
        }
    }
}

/// How long e2e consumers wait without a record, once the producers are done, before they
/// report a stall.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Long-poll wait of a consumer's fetch.
pub(crate) const POLL_WAIT: Duration = Duration::from_millis(100);

/// How often an executor looks whether the others have set up.
const START_LINE_POLL: Duration = Duration::from_millis(1);

/// Runs the plan to the end.
///
/// # Errors
/// Setup failures (connect, topic), executor failures, a consumer that stalls.
pub fn run(shared: &Arc<Shared>) -> Result<Outcome> {
    let plan = &shared.plan;
    let setup = setup(plan)?;
    let partitions = setup.targets.len() as u32;
    let _ = shared.target_index.set(
        setup
            .targets
            .iter()
            .enumerate()
            .map(|(i, tp)| (*tp, i))
            .collect(),
    );
    let _ = shared.targets.set(setup.targets);
    if let Some(starts) = setup.starts {
        let _ = shared.starts.set(starts);
    }
    if let Some(ends) = setup.ends {
        shared.set_ends(ends);
    }
    let executors = plan.executors.len();
    let mut handles = Vec::with_capacity(executors);
    for (k, cpu) in plan.executors.iter().enumerate() {
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let builder = executor(placement).name(&format!("tidelog-bench-{k}"));
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

/// Registered io memory per executor. The generator does only TCP I/O, which glommio never
/// serves from registered memory, so each executor asks for glommio's minimum that works
/// here (1 MiB; its 64 KiB pool breaks DMA reads on this kernel) instead of a share of the
/// locked-memory limit: N executors × 3 rings stay far below a typical 8 MiB limit.
const IO_MEMORY_BYTES: usize = 1 << 20;

/// A glommio executor for the generator (glommio itself refuses to start, with its
/// "memlock resource limit is too low" error, below a 512 KiB limit).
fn executor(placement: Placement) -> glommio::LocalExecutorBuilder {
    glommio::LocalExecutorBuilder::new(placement).io_memory(IO_MEMORY_BYTES)
}

/// What [`setup`] found.
struct Setup {
    targets: Vec<Tp>,
    starts: Option<Vec<i64>>,
    ends: Option<Vec<i64>>,
}

/// Makes sure the topics exist (creating them for produce and e2e); lists their partitions
/// and, for consumers, where they start and (consume) end.
fn setup(asked: &Plan) -> Result<Setup> {
    let plan = asked.clone();
    let handle = executor(Placement::Unbound)
        .name("tidelog-bench-setup")
        .spawn(move || async move {
            match plan.protocol {
                Protocol::Kafka => kafka_setup(&plan).await,
                Protocol::Native => native_setup(&plan).await,
            }
        })
        .map_err(|e| anyhow!("cannot start the setup executor: {e}"))?;
    let setup = handle
        .join()
        .map_err(|e| anyhow!("setup executor failed: {e}"))??;
    let plan = asked;
    if setup.targets.is_empty() {
        bail!("the topics have no partitions");
    }
    let expected = plan.partitions as usize * plan.topics.len();
    if plan.mode.produces() && setup.targets.len() != expected {
        eprintln!(
            "tidelog-bench: the topics exist with {} partitions in all (asked for {expected}); \
             using them",
            setup.targets.len()
        );
    }
    Ok(setup)
}

/// Where consumers without a committed offset start: consume reads what is there (the
/// earliest offset), e2e only what is produced from now on (the latest).
fn reset_to_earliest(plan: &Plan) -> bool {
    plan.mode == Mode::Consume
}

async fn native_setup(plan: &Plan) -> Result<Setup> {
    let client = Client::connect(plan.broker)
        .await
        .with_context(|| format!("cannot connect to {}", plan.broker))?;
    let mut targets = Vec::new();
    for (t, name) in plan.topics.iter().enumerate() {
        let info = match client.topic(name).await {
            Ok(info) => info,
            Err(ClientError::UnknownTopic { .. }) if plan.mode.produces() => {
                match client.create_topic(name, plan.partitions, -1, -1).await {
                    Ok(()) => {}
                    // Another run created it meanwhile: use it.
                    Err(ClientError::Protocol { code, .. })
                        if format!("{code:?}") == "TopicAlreadyExists" => {}
                    Err(e) => return Err(e).with_context(|| format!("cannot create {name}")),
                }
                client.topic(name).await?
            }
            Err(ClientError::UnknownTopic { .. }) => {
                bail!("topic {name} does not exist; produce to it first")
            }
            Err(e) => return Err(e).context("cannot read metadata"),
        };
        targets.extend((0..info.partition_count() as i32).map(|p| (t, p)));
    }
    let (mut starts, mut ends) = (None, None);
    if plan.mode.consumes() {
        let reset = if reset_to_earliest(plan) {
            EARLIEST
        } else {
            LATEST
        };
        let committed: Vec<Option<i64>> = match &plan.group {
            Some(g) => {
                let asked: Vec<(&str, i32)> = targets
                    .iter()
                    .map(|(t, p)| (plan.topics[*t].as_str(), *p))
                    .collect();
                client
                    .fetch_committed(g, &asked)
                    .await?
                    .iter()
                    .map(|c| c.offset)
                    .collect()
            }
            None => vec![None; targets.len()],
        };
        let mut s = Vec::with_capacity(targets.len());
        for ((t, p), committed) in targets.iter().zip(committed) {
            s.push(match committed {
                Some(o) => o,
                None => client.list_offsets(&plan.topics[*t], *p, reset).await?,
            });
        }
        starts = Some(s);
        if plan.mode == Mode::Consume {
            ends = Some(native_offsets(&client, &plan.topics, &targets, LATEST).await?);
        }
    }
    Ok(Setup {
        targets,
        starts,
        ends,
    })
}

/// The offsets at `timestamp` of `targets`, in their order, over the native protocol.
///
/// # Errors
/// The first request that fails.
pub(crate) async fn native_offsets(
    client: &Client,
    topics: &[String],
    targets: &[Tp],
    timestamp: i64,
) -> Result<Vec<i64>> {
    let mut offsets = Vec::with_capacity(targets.len());
    for (t, p) in targets {
        offsets.push(client.list_offsets(&topics[*t], *p, timestamp).await?);
    }
    Ok(offsets)
}

async fn kafka_setup(plan: &Plan) -> Result<Setup> {
    let client = kafka::client::KafkaClient::connect(plan.broker, &plan.topics)
        .await
        .with_context(|| format!("Kafka bootstrap {}", plan.broker))?;
    let counts = match client
        .ensure_topics(plan.partitions, plan.mode.produces())
        .await
    {
        Ok(n) => n,
        Err(kafka::KafkaError::Code {
            code: kafka::code::UNKNOWN_TOPIC_OR_PARTITION,
            ..
        }) => bail!(
            "a topic of {:?} does not exist; produce to it first",
            plan.topics
        ),
        Err(e) => return Err(e).context("cannot set up the topics"),
    };
    let targets: Vec<Tp> = counts
        .iter()
        .enumerate()
        .flat_map(|(t, n)| (0..*n as i32).map(move |p| (t, p)))
        .collect();
    let (mut starts, mut ends) = (None, None);
    if plan.mode.consumes() {
        let client = std::rc::Rc::new(client);
        let reset = if reset_to_earliest(plan) {
            kafka::client::EARLIEST
        } else {
            kafka::client::LATEST
        };
        let reset = client.list_offsets(&targets, reset).await?;
        let committed = match &plan.group {
            Some(g) => {
                let member = kafka::group::GroupMember::new(std::rc::Rc::clone(&client), g).await?;
                member.committed(&targets).await?
            }
            None => vec![None; targets.len()],
        };
        starts = Some(
            committed
                .iter()
                .zip(&reset)
                .map(|(c, r)| c.unwrap_or(*r))
                .collect(),
        );
        if plan.mode == Mode::Consume {
            ends = Some(client.list_offsets(&targets, kafka::client::LATEST).await?);
        }
    }
    Ok(Setup {
        targets,
        starts,
        ends,
    })
}

/// The targets producer `i` of `producers` writes (indices into `n` targets): its own share
/// when there are at least as many targets as producers, otherwise one shared with other
/// producers.
pub fn producer_partitions(i: usize, producers: usize, n: u32) -> Vec<usize> {
    let n = n as usize;
    if producers >= n {
        vec![i % n]
    } else {
        (0..n).filter(|p| p % producers == i).collect()
    }
}

/// The targets consumer `j` of `consumers` reads without a group (empty when there are more
/// consumers than targets).
pub fn consumer_partitions(j: usize, consumers: usize, n: u32) -> Vec<usize> {
    (0..n as usize).filter(|p| p % consumers == j).collect()
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
    pub send_lag: Latency,
    pub produce_end: Option<Instant>,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub e2e_latency: Latency,
    pub consume_end: Option<Instant>,
    pub errors: Errors,
}

impl WorkerResult {
    pub(crate) fn add(&mut self, o: WorkerResult) {
        self.produced += o.produced;
        self.produced_bytes += o.produced_bytes;
        self.produce_latency.merge(&o.produce_latency);
        self.send_lag.merge(&o.send_lag);
        self.produce_end = self.produce_end.max(o.produce_end);
        self.consumed += o.consumed;
        self.consumed_bytes += o.consumed_bytes;
        self.e2e_latency.merge(&o.e2e_latency);
        self.consume_end = self.consume_end.max(o.consume_end);
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
    let consume_expected = match (shared.starts.get(), shared.ends()) {
        (Some(s), Some(e)) => s
            .iter()
            .zip(e)
            .map(|(s, e)| u64::try_from(e - s).unwrap_or(0))
            .sum(),
        _ => 0,
    };
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
        send_lag: (plan.mode.produces() && plan.rate.is_some()).then_some(all.send_lag),
        errors: all.errors,
        consume_expected,
    }
}

async fn worker(shared: Arc<Shared>, k: usize) -> Result<WorkerResult> {
    let setup = worker_setup(&shared, k).await;
    if setup.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    shared.start_line().await;
    let (producer_client, consumers) = setup?;
    if shared.failed.load(Ordering::SeqCst) {
        return Ok(WorkerResult::default());
    }
    let (start, _) = shared.start();
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let mut producer_tasks = Vec::new();
    if let Some(client) = producer_client {
        for i in (k..plan.producers).step_by(executors) {
            let task = crate::produce::produce(client.clone(), Arc::clone(&shared), i, start);
            producer_tasks.push(glommio::spawn_local(task).detach());
        }
    }
    let mut consumer_tasks = Vec::new();
    for c in consumers {
        let task = crate::consume::consume(Arc::clone(&shared), c, start);
        consumer_tasks.push(glommio::spawn_local(task).detach());
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

type WorkerSetup = (
    Option<crate::produce::ProducerClient>,
    Vec<crate::consume::LoadConsumer>,
);

/// Connects this executor's clients and readies its consumers (a Kafka group: joined, all
/// of this executor's members at once), before the start.
async fn worker_setup(shared: &Arc<Shared>, k: usize) -> Result<WorkerSetup> {
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let producer_client = if (k..plan.producers).step_by(executors).next().is_some() {
        Some(crate::produce::ProducerClient::connect(shared).await?)
    } else {
        None
    };
    let mut ready = Vec::new();
    for j in (k..plan.consumers).step_by(executors) {
        ready.push(glommio::spawn_local(crate::consume::ready(Arc::clone(shared), j)).detach());
    }
    let mut consumers = Vec::new();
    for r in ready {
        if let Some(c) = r
            .await
            .ok_or_else(|| anyhow!("consumer setup cancelled"))??
        {
            consumers.push(c);
        }
    }
    Ok((producer_client, consumers))
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
