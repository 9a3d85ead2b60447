//! Operator metrics: per-shard counters and latency histograms kept on the shard (plain
//! `Cell`s, no atomics or locks: each shard counts its own), a [`ShardSnapshot`] each shard
//! builds when asked over the mesh, and the Prometheus text rendering of all shards'
//! snapshots (with the `prometheus-client` crate's encoder), served on shard 0 by
//! [`crate::server::metrics_http`].
//!
//! Naming follows Prometheus: `tidelog_` prefix, `_total` on counters, base units
//! (`_bytes`, `_seconds`) in names. Bounds: a shard's series are bounded by its partitions
//! (the partition limit), the Kafka API keys and error codes (fixed by the protocol), and
//! consumer-group lag by [`GROUP_LAG_SERIES_MAX`] per shard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Most (group, topic, partition) lag series one shard reports per scrape; past it the rest
/// are left out (and counted in `tidelog_group_lag_series_dropped`).
pub const GROUP_LAG_SERIES_MAX: usize = 10_000;

/// Upper bounds of the latency histogram buckets, in microseconds (the last bucket, +Inf,
/// is implied).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with the fixed buckets [`LATENCY_BOUNDS_US`], counted in `Cell`s
/// (shard-local).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [Cell<u64>; LATENCY_BOUNDS_US.len() + 1],
    sum_us: Cell<u64>,
}

impl LatencyHistogram {
    /// Counts one observation of `us` microseconds.
    pub fn observe(&self, us: u64) {
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].set(self.buckets[i].get() + 1);
        self.sum_us.set(self.sum_us.get().saturating_add(us));
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A histogram's counts (per bucket, not cumulative), to cross shards and merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket of [`LATENCY_BOUNDS_US`] plus +Inf.
    pub buckets: Vec<u64>,
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The Kafka request counters of one shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Requests by API key.
    requests: RefCell<BTreeMap<i16, u64>>,
    /// Error codes answered by (API key, code): per partition for Produce and Fetch.
    errors: RefCell<BTreeMap<(i16, i16), u64>>,
    /// Request latency by (API key, acks; -2 where acks does not apply).
    latency: RefCell<BTreeMap<(i16, i8), LatencyHistogram>>,
    /// Open connections: Kafka, native.
    connections: Cell<(usize, usize)>,
}

impl ShardMetrics {
    /// Counts a request of `api`.
    pub fn request(&self, api: i16) {
        *self.requests.borrow_mut().entry(api).or_default() += 1;
    }

    /// Counts an error code answered to a request of `api` (0 is not an error).
    pub fn error(&self, api: i16, code: i16) {
        if code != 0 {
            *self.errors.borrow_mut().entry((api, code)).or_default() += 1;
        }
    }

    /// Counts a request's latency (`acks` for Produce, else -2).
    pub fn latency(&self, api: i16, acks: i8, us: u64) {
        self.latency
            .borrow_mut()
            .entry((api, acks))
            .or_default()
            .observe(us);
    }

    /// Records the open connection counts (Kafka, native).
    pub fn set_connections(&self, kafka: usize, native: usize) {
        self.connections.set((kafka, native));
    }

    /// The open connection counts (Kafka, native).
    pub fn connections(&self) -> (usize, usize) {
        self.connections.get()
    }

    fn requests(&self) -> Vec<(i16, u64)> {
        self.requests
            .borrow()
            .iter()
            .map(|(&a, &n)| (a, n))
            .collect()
    }

    fn errors(&self) -> Vec<(i16, i16, u64)> {
        self.errors
            .borrow()
            .iter()
            .map(|(&(a, c), &n)| (a, c, n))
            .collect()
    }

    fn latencies(&self) -> Vec<(i16, i8, HistogramSnapshot)> {
        self.latency
            .borrow()
            .iter()
            .map(|(&(a, acks), h)| (a, acks, h.snapshot()))
            .collect()
    }

    /// Fills the request parts of a snapshot.
    pub fn fill(&self, snapshot: &mut ShardSnapshot) {
        snapshot.requests = self.requests();
        snapshot.errors = self.errors();
        snapshot.latency = self.latencies();
    }
}

/// One partition copy in a snapshot.
#[derive(Debug, Clone, Default)]
pub struct PartitionSnapshot {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Whether this copy leads (or is the only one).
    pub leader: bool,
    /// First readable offset.
    pub log_start: u64,
    /// Next offset to be written.
    pub log_end: u64,
    /// Bytes of its segment files.
    pub size_bytes: u64,
    /// Bytes appended since the log opened.
    pub bytes_in: u64,
    /// Offsets (records) appended since the log opened.
    pub records_in: u64,
    /// Bytes read out since the log opened (consumers and followers).
    pub bytes_out: u64,
}

/// What one shard reports per scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: usize,
    /// Its partition copies.
    pub partitions: Vec<PartitionSnapshot>,
    /// Partitions that failed to open.
    pub offline: usize,
    /// Kafka requests by API key.
    pub requests: Vec<(i16, u64)>,
    /// Error codes answered by (API key, code).
    pub errors: Vec<(i16, i16, u64)>,
    /// Latency by (API key, acks).
    pub latency: Vec<(i16, i8, HistogramSnapshot)>,
    /// fdatasync calls on partition data.
    pub fsyncs: u64,
    /// fdatasync latency.
    pub fsync_latency: HistogramSnapshot,
    /// Reads served from the batch cache / from disk / disk reads a read-ahead had fetched.
    pub cache_reads: u64,
    /// See `cache_reads`.
    pub disk_reads: u64,
    /// See `cache_reads`.
    pub readahead_hits: u64,
    /// Batch cache: bytes held and budget.
    pub cache_bytes: usize,
    /// See `cache_bytes`.
    pub cache_budget: usize,
    /// Read memory: bytes held and capacity.
    pub read_memory_bytes: usize,
    /// See `read_memory_bytes`.
    pub read_memory_capacity: usize,
    /// Open connections: Kafka, native.
    pub kafka_connections: usize,
    /// See `kafka_connections`.
    pub native_connections: usize,
    /// Committed positions of the groups this shard coordinates: (group, topic, partition,
    /// offset), at most [`GROUP_LAG_SERIES_MAX`].
    pub committed: Vec<(String, String, u32, i64)>,
    /// Positions left out for the bound.
    pub committed_dropped: usize,
}

/// A metric family built from snapshot rows, encoded with `prometheus-client`.
#[derive(Debug)]
struct Rows {
    kind: MetricType,
    rows: Vec<(Vec<(String, String)>, Value)>,
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(HistogramSnapshot),
}

impl EncodeMetric for Rows {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.rows {
            let mut e = encoder.encode_family(labels)?;
            match value {
                Value::Counter(v) => e.encode_counter::<NoLabelSet, u64, u64>(v, None)?,
                Value::Gauge(v) => e.encode_gauge(v)?,
                Value::Histogram(h) => {
                    let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
                        .iter()
                        .map(|&b| b as f64 / 1e6)
                        .chain(std::iter::once(f64::INFINITY))
                        .zip(h.buckets.iter().copied().chain(std::iter::repeat(0)))
                        .collect();
                    buckets.truncate(LATENCY_BOUNDS_US.len() + 1);
                    e.encode_histogram::<NoLabelSet>(
                        h.sum_us as f64 / 1e6,
                        h.count(),
                        &buckets,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn labels(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Kafka's name of an API key (for the `api` label).
pub fn api_name(key: i16) -> String {
    let name = match key {
        0 => "produce",
        1 => "fetch",
        2 => "list_offsets",
        3 => "metadata",
        8 => "offset_commit",
        9 => "offset_fetch",
        10 => "find_coordinator",
        11 => "join_group",
        12 => "heartbeat",
        13 => "leave_group",
        14 => "sync_group",
        15 => "describe_groups",
        16 => "list_groups",
        18 => "api_versions",
        19 => "create_topics",
        20 => "delete_topics",
        21 => "delete_records",
        22 => "init_producer_id",
        23 => "offset_for_leader_epoch",
        32 => "describe_configs",
        33 => "alter_configs",
        35 => "describe_log_dirs",
        37 => "create_partitions",
        42 => "delete_groups",
        43 => "elect_leaders",
        44 => "incremental_alter_configs",
        45 => "alter_partition_reassignments",
        46 => "list_partition_reassignments",
        47 => "offset_delete",
        60 => "describe_cluster",
        61 => "describe_producers",
        other => return format!("api_{other}"),
    };
    name.to_owned()
}

fn acks_label(acks: i8) -> String {
    match acks {
        -1 => "all".into(),
        -2 => "none".into(),
        n => n.to_string(),
    }
}

/// Renders every shard's snapshot as Prometheus text (OpenMetrics-compatible exposition).
/// `ends` maps (topic, partition) to the leader's log end, for consumer-group lag.
pub fn render(snapshots: &[ShardSnapshot]) -> String {
    let mut registry = Registry::with_prefix("tidelog");
    let mut ends: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    for s in snapshots {
        for p in s.partitions.iter().filter(|p| p.leader) {
            ends.insert((p.topic.as_str(), p.partition), p.log_end);
        }
    }
    let part_labels = |s: &ShardSnapshot, p: &PartitionSnapshot| {
        labels(&[
            ("topic", p.topic.clone()),
            ("partition", p.partition.to_string()),
            ("shard", s.shard.to_string()),
            (
                "role",
                if p.leader { "leader" } else { "follower" }.to_owned(),
            ),
        ])
    };
    let per_partition = |f: &dyn Fn(&PartitionSnapshot) -> Value| -> Vec<_> {
        snapshots
            .iter()
            .flat_map(|s| s.partitions.iter().map(move |p| (s, p)))
            .map(|(s, p)| (part_labels(s, p), f(p)))
            .collect()
    };
    let counter = MetricType::Counter;
    let gauge = MetricType::Gauge;
    let mut add = |name: &str, help: &str, unit: Option<Unit>, kind, rows| {
        let metric = Rows { kind, rows };
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, metric),
            None => registry.register(name, help, metric),
        }
    };
    add(
        "partition_in",
        "Bytes appended to the partition since its log opened",
        Some(Unit::Bytes),
        counter,
        per_partition(&|p| Value::Counter(p.bytes_in)),
    );
    add(
        "partition_records_in",
        "Records (offsets) appended to the partition since its log opened",
        None,
        counter,
        per_partition(&|p| Value::Counter(p.records_in)),
    );
    add(
        "partition_out",
        "Bytes read from the partition (consumers and followers) since its log opened",
        Some(Unit::Bytes),
        counter,
        per_partition(&|p| Value::Counter(p.bytes_out)),
    );
    add(
        "partition_log_start_offset",
        "First readable offset",
        None,
        gauge,
        per_partition(&|p| Value::Gauge(p.log_start as i64)),
    );
    add(
        "partition_log_end_offset",
        "Next offset to be written",
        None,
        gauge,
        per_partition(&|p| Value::Gauge(p.log_end as i64)),
    );
    add(
        "partition_size",
        "Bytes of the partition's segment files",
        Some(Unit::Bytes),
        gauge,
        per_partition(&|p| Value::Gauge(p.size_bytes as i64)),
    );
    let shard_label = |s: &ShardSnapshot| labels(&[("shard", s.shard.to_string())]);
    let per_shard = |f: &dyn Fn(&ShardSnapshot) -> Value| -> Vec<_> {
        snapshots.iter().map(|s| (shard_label(s), f(s))).collect()
    };
    add(
        "partitions_offline",
        "Partitions that failed to open (served by nobody here)",
        None,
        gauge,
        per_shard(&|s| Value::Gauge(s.offline as i64)),
    );
    add(
        "fsyncs",
        "fdatasync calls on partition data",
        None,
        counter,
        per_shard(&|s| Value::Counter(s.fsyncs)),
    );
    add(
        "fsync_duration",
        "fdatasync latency on partition data",
        Some(Unit::Seconds),
        MetricType::Histogram,
        per_shard(&|s| Value::Histogram(s.fsync_latency.clone())),
    );
    add(
        "cache_reads",
        "Reads served from the batch cache",
        None,
        counter,
        per_shard(&|s| Value::Counter(s.cache_reads)),
    );
    add(
        "disk_reads",
        "Reads served from segment files",
        None,
        counter,
        per_shard(&|s| Value::Counter(s.disk_reads)),
    );
    add(
        "readahead_hits",
        "Disk reads whose bytes a read-ahead had already fetched",
        None,
        counter,
        per_shard(&|s| Value::Counter(s.readahead_hits)),
    );
    add(
        "cache_used",
        "Bytes held by the batch cache",
        Some(Unit::Bytes),
        gauge,
        per_shard(&|s| Value::Gauge(s.cache_bytes as i64)),
    );
    add(
        "cache_budget",
        "The batch cache's budget",
        Some(Unit::Bytes),
        gauge,
        per_shard(&|s| Value::Gauge(s.cache_budget as i64)),
    );
    add(
        "read_memory_used",
        "Disk-read buffers held (fetch responses, read-aheads)",
        Some(Unit::Bytes),
        gauge,
        per_shard(&|s| Value::Gauge(s.read_memory_bytes as i64)),
    );
    add(
        "read_memory_budget",
        "The shard's budget for disk-read buffers",
        Some(Unit::Bytes),
        gauge,
        per_shard(&|s| Value::Gauge(s.read_memory_capacity as i64)),
    );
    let conn_rows = snapshots
        .iter()
        .flat_map(|s| {
            [
                ("kafka", s.kafka_connections),
                ("native", s.native_connections),
            ]
            .map(|(protocol, n)| {
                (
                    labels(&[
                        ("shard", s.shard.to_string()),
                        ("protocol", protocol.into()),
                    ]),
                    Value::Gauge(n as i64),
                )
            })
        })
        .collect();
    add(
        "connections",
        "Open client connections",
        None,
        gauge,
        conn_rows,
    );
    let request_rows = snapshots
        .iter()
        .flat_map(|s| {
            s.requests.iter().map(move |&(api, n)| {
                (
                    labels(&[("shard", s.shard.to_string()), ("api", api_name(api))]),
                    Value::Counter(n),
                )
            })
        })
        .collect();
    add(
        "kafka_requests",
        "Kafka requests served, by API",
        None,
        counter,
        request_rows,
    );
    let error_rows = snapshots
        .iter()
        .flat_map(|s| {
            s.errors.iter().map(move |&(api, code, n)| {
                (
                    labels(&[
                        ("shard", s.shard.to_string()),
                        ("api", api_name(api)),
                        ("code", code.to_string()),
                    ]),
                    Value::Counter(n),
                )
            })
        })
        .collect();
    add(
        "kafka_errors",
        "Kafka error codes answered, by API and code (per partition for Produce and Fetch)",
        None,
        counter,
        error_rows,
    );
    let latency_rows = snapshots
        .iter()
        .flat_map(|s| {
            s.latency.iter().map(move |(api, acks, h)| {
                (
                    labels(&[
                        ("shard", s.shard.to_string()),
                        ("api", api_name(*api)),
                        ("acks", acks_label(*acks)),
                    ]),
                    Value::Histogram(h.clone()),
                )
            })
        })
        .collect();
    add(
        "kafka_request_duration",
        "Kafka request latency from its arrival to its response (Produce by acks; Fetch \
         includes its wait for data)",
        Some(Unit::Seconds),
        MetricType::Histogram,
        latency_rows,
    );
    let lag_rows = snapshots
        .iter()
        .flat_map(|s| s.committed.iter())
        .filter_map(|(group, topic, partition, offset)| {
            let end = *ends.get(&(topic.as_str(), *partition))?;
            let lag = (end as i64).saturating_sub(*offset).max(0);
            Some((
                labels(&[
                    ("group", group.clone()),
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                ]),
                Value::Gauge(lag),
            ))
        })
        .collect();
    add(
        "group_lag",
        "Records between a group's committed offset and the partition's log end",
        None,
        gauge,
        lag_rows,
    );
    add(
        "group_lag_series_dropped",
        "Committed positions left out of tidelog_group_lag for its bound",
        None,
        gauge,
        per_shard(&|s| Value::Gauge(s.committed_dropped as i64)),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_and_merge() {
        let h = LatencyHistogram::default();
        for us in [50, 100, 101, 20_000_000] {
            h.observe(us);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2, "<= 100 us");
        assert_eq!(s.buckets[1], 1, "<= 250 us");
        assert_eq!(s.buckets[LATENCY_BOUNDS_US.len()], 1, "+Inf");
        assert_eq!(s.count(), 4);
        let mut total = s.clone();
        total.merge(&s);
        assert_eq!(total.count(), 8);
        assert_eq!(total.sum_us, 2 * s.sum_us);
    }

    #[test]
    fn rendering_names_series_as_prometheus_expects() {
        let metrics = ShardMetrics::default();
        metrics.request(0);
        metrics.error(0, 10);
        metrics.error(0, 0);
        metrics.latency(0, -1, 3_000);
        let mut s = ShardSnapshot {
            shard: 1,
            partitions: vec![PartitionSnapshot {
                topic: "orders".into(),
                partition: 2,
                leader: true,
                log_end: 100,
                bytes_in: 4096,
                ..Default::default()
            }],
            committed: vec![("g".into(), "orders".into(), 2, 60)],
            ..Default::default()
        };
        metrics.fill(&mut s);
        let text = render(&[s]);
        for want in [
            "tidelog_partition_in_bytes_total{topic=\"orders\",partition=\"2\",shard=\"1\",role=\"leader\"} 4096",
            "tidelog_kafka_requests_total{shard=\"1\",api=\"produce\"} 1",
            "tidelog_kafka_errors_total{shard=\"1\",api=\"produce\",code=\"10\"} 1",
            "tidelog_kafka_request_duration_seconds_bucket{le=\"0.005\",shard=\"1\",api=\"produce\",acks=\"all\"} 1",
            "tidelog_group_lag{group=\"g\",topic=\"orders\",partition=\"2\"} 40",
            "# TYPE tidelog_fsync_duration_seconds histogram",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("code=\"0\""), "0 is not an error");
    }
}
