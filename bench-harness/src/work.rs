//! The state one run shares between its executors and the results they hand back: the
//! plan's targets, the start line, live counters, per-phase outcomes, and how producers and
//! consumers split the targets. [`crate::run`] orchestrates; [`crate::produce`],
//! [`crate::consume`] and [`crate::kafka`] work on this, never on the orchestration.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use tidelog_client::Client;

use crate::args::Plan;
use crate::stats::{now_ns, Errors, Latency, Live};

/// A partition of the run: (topic index in `Plan::topics`, partition).
pub type Tp = (usize, i32);

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
    /// Kafka: records and bytes produced, by the node (broker id) that acknowledged them.
    pub produced_by_node: BTreeMap<i32, (u64, u64)>,
}

/// State shared by the executors and the progress line.
#[derive(Debug)]
pub struct Shared {
    pub plan: Plan,
    pub live: Live,
    /// Every partition of every topic, set up before the executors start.
    pub(crate) targets: OnceLock<Vec<Tp>>,
    /// Each target's index in `targets` (looked up per partition on every poll).
    pub(crate) target_index: OnceLock<std::collections::HashMap<Tp, usize>>,
    /// Consumers: where each target starts (consume: earliest; e2e: latest; with a group,
    /// its committed offset where it has one).
    pub(crate) starts: OnceLock<Vec<i64>>,
    /// Consumers: where each target ends (consume: at setup; e2e: once producers are done).
    ends: OnceLock<Vec<i64>>,
    /// Executors that finished their setup.
    arrived: AtomicUsize,
    start: OnceLock<(Instant, u64)>,
    /// Producers still sending; e2e consumers look for the end once it is 0.
    producers_left: AtomicUsize,
    /// Set when an executor failed to set up; the others leave at the start line.
    pub(crate) failed: AtomicBool,
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
    pub(crate) fn start(&self) -> (Instant, u64) {
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
    pub(crate) async fn start_line(&self) {
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
/// How often an executor looks whether the others have set up.
const START_LINE_POLL: Duration = Duration::from_millis(1);

/// Long-poll wait of a consumer's fetch.
pub(crate) const POLL_WAIT: Duration = Duration::from_millis(100);

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
    /// Kafka: records and bytes acknowledged, by the node (broker id) that acknowledged them.
    pub produced_by_node: BTreeMap<i32, (u64, u64)>,
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
        for (node, (records, bytes)) in o.produced_by_node {
            let entry = self.produced_by_node.entry(node).or_default();
            entry.0 += records;
            entry.1 += bytes;
        }
    }
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
