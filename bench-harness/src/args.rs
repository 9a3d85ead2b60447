//! The command line: a stable contract, because scripts and `tuning.md` quote it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use tidelog_client::Acks;

/// Load generator for Tidelog: producers and consumers spread over glommio executors, one
/// per core, each executor with its own client.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// What to run: produce, catch-up consume, or both at once (end-to-end latency).
    #[arg(value_enum, default_value_t = Mode::E2e)]
    pub mode: Mode,
    /// Wire protocol of the broker.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Broker address, HOST:PORT. Native: any shard (usually the shared native port).
    /// Kafka: the bootstrap brokers, HOST:PORT[,HOST:PORT...] (Tidelog's --kafka-addr of one
    /// or more nodes), tried in order until one answers; left at the default,
    /// 127.0.0.1:9092.
    #[arg(long, default_value = BROKER_DEFAULT)]
    pub broker: String,
    /// Topic to write and read; created with --partitions if missing. With --topics N > 1,
    /// the topics are `TOPIC-0` .. `TOPIC-(N-1)`.
    #[arg(long, default_value = "tidelog-bench")]
    pub topic: String,
    /// Number of topics; every one gets --partitions and the producers and consumers spread
    /// over all their partitions.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Partitions of each topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Producers, spread round robin over the executors.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, spread round robin over the executors. Without --group each reads the
    /// partitions p with p % consumers == its index (counting the partitions of all topics).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// The consumers form this consumer group: they start from its committed offsets
    /// (consume: earliest, e2e: latest where it has none), commit as they read and at the
    /// end. Kafka: a real group membership (JoinGroup/SyncGroup, range assignment,
    /// heartbeats, rebalances); native: the group's committed offsets with the static
    /// assignment (the native protocol has no group membership).
    #[arg(long)]
    pub group: Option<String>,
    /// Compression codec of produced batches (Kafka protocol; the native protocol carries
    /// uncompressed batches only).
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    /// What the values hold (after the 8-byte send timestamp): incompressible random bytes,
    /// or application-log text that compresses like real logs (for --compression runs).
    #[arg(long, value_enum, default_value_t = PayloadKind::Random)]
    pub payload: PayloadKind,
    /// Value bytes of each record (at least 8: the first 8 carry the send timestamp), or a
    /// range `MIN-MAX` drawn uniformly per record from the --seed stream.
    #[arg(long, default_value = "1024", value_parser = parse_record_size)]
    pub record_size: RecordSize,
    /// When the broker acknowledges: 0 (never), 1 (appended), all (durable).
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: Acks,
    /// Run the produce phase this long (default 10 s when --records is not given).
    #[arg(long, conflicts_with = "records")]
    pub duration: Option<u64>,
    /// Produce this many records in total (consume: read at most this many).
    #[arg(long)]
    pub records: Option<u64>,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = tidelog_client::limits::BATCH_BYTES_DEFAULT)]
    pub batch_bytes: usize,
    /// How long a partition's first record waits for more before its batch goes out.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Produce requests in flight per partition and producer.
    #[arg(long, default_value_t = tidelog_client::limits::BATCHES_IN_FLIGHT_DEFAULT)]
    pub max_in_flight: usize,
    /// Open loop: send this many records per second in total, measuring latency from each
    /// record's intended send time. Without it producers run closed loop (as fast as the
    /// producer's bounded in-flight window allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// CPUs to run executors on, pinned (e.g. `0-3` or `2,3`). Default: one unpinned executor
    /// per CPU, so that a broker pinned on the same machine is not fought for fixed CPUs.
    #[arg(long, value_parser = parse_cpus)]
    pub cores: Option<CpuList>,
    /// Seed of the payload generator; the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run a short self-checking e2e (~20,000 small records, two topics, keys, a group, lz4
    /// over Kafka) against the native broker at --broker and, with --smoke-kafka, first
    /// against that Kafka bootstrap address; check that every record was consumed, exit 0.
    /// Ignores the workload flags.
    #[arg(long)]
    pub smoke: bool,
    /// The Kafka bootstrap address of the broker that --smoke checks (HOST:PORT).
    #[arg(long, requires = "smoke")]
    pub smoke_kafka: Option<String>,
    /// Keys of the records: none, 16 random bytes each, or 16-byte keys cycling through 1024
    /// (key bytes from the --seed stream). Keys count in the bytes moved.
    #[arg(long, value_enum, default_value_t = KeyMode::None)]
    pub keys: KeyMode,
    /// Run this many seconds before measuring: records acknowledged or consumed during the
    /// warm-up are left out of the results (they still count toward --records); --duration
    /// is the measured time after it.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// The broker's process id: report its CPU seconds and RSS (from /proc) per second and
    /// over the measured run.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Also write a self-contained HTML report (charts, parameters, summary) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Run the same workload again against a second target right after the first and print
    /// both side by side with ratios (second / first): `HOST:PORT` (same protocol),
    /// `native://HOST:PORT` or `kafka://HOST:PORT`.
    #[arg(long, value_parser = parse_target)]
    pub compare: Option<Target>,
    /// Latency at fixed rates, as a curve: a closed-loop run finds the workload's maximum
    /// rate, then one open-loop run per PERCENT of it (e.g. `10,25,50,75,90`), each on topics
    /// of its own (`TOPIC-sweep-N`) and each as long as --duration. Prints (and writes to
    /// --json / --html) publish and end-to-end p50 / p99 / p99.9 against the throughput
    /// achieved. Use with `e2e` for end-to-end latency.
    #[arg(long, value_name = "PERCENTS", value_delimiter = ',',
          conflicts_with_all = ["rate", "compare", "smoke", "sweep_rates"])]
    pub sweep: Option<Vec<f64>>,
    /// As --sweep, at these rates (records/s, all producers together) instead of
    /// percentages of a measured maximum.
    #[arg(long, value_name = "RATES", value_delimiter = ',',
          conflicts_with_all = ["rate", "compare", "smoke"])]
    pub sweep_rates: Option<Vec<f64>>,
    /// The second target's broker pid for --compare (default: --broker-pid, the usual case of
    /// one broker with a native and a Kafka listener).
    #[arg(long, requires = "compare")]
    pub compare_broker_pid: Option<u32>,
}

impl Args {
    /// The rates of a --sweep or --sweep-rates run.
    pub fn sweep_rates(&self) -> Option<crate::sweep::Rates> {
        match (&self.sweep, &self.sweep_rates) {
            (Some(percents), _) => Some(crate::sweep::Rates::PercentOfMax(percents.clone())),
            (None, Some(rates)) => Some(crate::sweep::Rates::Absolute(rates.clone())),
            (None, None) => None,
        }
    }

    /// The arguments of the --compare run: the same workload against the second target.
    pub fn compare_args(&self) -> Option<Args> {
        let target = self.compare.as_ref()?;
        let mut second = self.clone();
        second.broker.clone_from(&target.broker);
        second.protocol = target.protocol.unwrap_or(self.protocol);
        second.broker_pid = self.compare_broker_pid.or(self.broker_pid);
        second.compare = None;
        second.compare_broker_pid = None;
        Some(second)
    }
}

/// Value bytes per record: one size or a uniform range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSize {
    /// Smallest value.
    pub min: usize,
    /// Largest value (equal to `min` for a fixed size).
    pub max: usize,
}

impl std::fmt::Display for RecordSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// Compares the smallest size, the one the lower bound applies to.
impl PartialEq<usize> for RecordSize {
    fn eq(&self, other: &usize) -> bool {
        self.min == *other
    }
}

/// Compares the smallest size, the one the lower bound applies to.
impl PartialOrd<usize> for RecordSize {
    fn partial_cmp(&self, other: &usize) -> Option<std::cmp::Ordering> {
        self.min.partial_cmp(other)
    }
}

fn parse_record_size(s: &str) -> Result<RecordSize, String> {
    let bad = |_| format!("bad record size {s:?}: expected BYTES or MIN-MAX");
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (
            a.trim().parse().map_err(bad)?,
            b.trim().parse().map_err(bad)?,
        ),
        None => {
            let n = s.trim().parse().map_err(bad)?;
            (n, n)
        }
    };
    if min > max {
        return Err(format!("bad record size range {s:?}: MIN is above MAX"));
    }
    Ok(RecordSize { min, max })
}

/// How records are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyMode {
    /// No keys.
    None,
    /// A fresh random key per record.
    Random,
    /// Keys cycling through a fixed set, one after the other.
    RoundRobin,
}

impl KeyMode {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyMode::None => "none",
            KeyMode::Random => "random",
            KeyMode::RoundRobin => "round-robin",
        }
    }
}

/// What record values hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// Uniform random bytes: incompressible.
    Random,
    /// Application-log lines: compressible like real logs.
    Text,
}

impl PayloadKind {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Random => "random",
            PayloadKind::Text => "text",
        }
    }
}

/// A batch compression codec (Kafka's five).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec in the wire crate's terms (Kafka's numbering).
    pub fn compression(self) -> tidelog_wire::batch::Compression {
        use tidelog_wire::batch::Compression;
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// The second target of --compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None`: the protocol of the first run.
    pub protocol: Option<Protocol>,
    /// `HOST:PORT`.
    pub broker: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            Some(Protocol::Native) => write!(f, "native://{}", self.broker),
            Some(Protocol::Kafka) => write!(f, "kafka://{}", self.broker),
            None => f.write_str(&self.broker),
        }
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (protocol, broker) = match s.split_once("://") {
        Some(("native", rest)) => (Some(Protocol::Native), rest),
        Some(("kafka", rest)) => (Some(Protocol::Kafka), rest),
        Some((scheme, _)) => {
            return Err(format!(
                "unknown protocol {scheme:?} in {s:?}: use native:// or kafka://"
            ))
        }
        None => (None, s),
    };
    if broker.is_empty() || broker.contains('/') {
        return Err(format!(
            "bad target {s:?}: expected [native://|kafka://]HOST:PORT"
        ));
    }
    Ok(Target {
        protocol,
        broker: broker.to_owned(),
    })
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Producers only.
    Produce,
    /// Consumers only: read from the earliest offset to the end offsets taken at start.
    Consume,
    /// Producers and consumers at once; end-to-end latency from send to consumption.
    E2e,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }

    pub fn produces(self) -> bool {
        matches!(self, Mode::Produce | Mode::E2e)
    }

    pub fn consumes(self) -> bool {
        matches!(self, Mode::Consume | Mode::E2e)
    }
}

/// Which protocol the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Tidelog's own flatbuffers protocol.
    Native,
    /// The Kafka wire protocol: Tidelog's Kafka listener or any Kafka-compatible broker.
    Kafka,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Kafka => "kafka",
        }
    }
}

/// Default of --broker (the native port).
pub const BROKER_DEFAULT: &str = "127.0.0.1:9292";
/// The broker used for --protocol kafka when --broker is left at its default.
pub const KAFKA_BROKER_DEFAULT: &str = "127.0.0.1:9092";

/// CPUs named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!("acks must be 0, 1 or all, not {s:?}")),
    }
}

pub fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |_| format!("bad CPU list {s:?}: expected e.g. 0-3 or 0,2");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(bad)?, b.parse().map_err(bad)?);
                if a > b {
                    return Err(format!("bad CPU range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(bad)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(CpuList(cpus))
}

/// What a run does, checked and with defaults filled in.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub protocol: Protocol,
    /// The first of `bootstrap`: the native broker, or the first Kafka bootstrap address.
    pub broker: SocketAddr,
    /// Kafka: every bootstrap address, in the order given (one for native).
    pub bootstrap: Vec<SocketAddr>,
    /// The topics' names (one, or `TOPIC-i` for --topics > 1).
    pub topics: Vec<String>,
    pub partitions: u32,
    pub producers: usize,
    pub consumers: usize,
    pub record_size: usize,
    pub acks: Acks,
    /// Produce for this long, unless `records` is set.
    pub duration: Option<Duration>,
    /// Produce this many records in total (consume: read at most this many).
    pub records: Option<u64>,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub rate: Option<f64>,
    /// One executor per entry; `Some(cpu)` pins it.
    pub executors: Vec<Option<usize>>,
    pub seed: u64,
    /// Smallest value; `record_size` is the largest (equal for a fixed size).
    pub record_size_min: usize,
    pub keys: KeyMode,
    /// Run this long before measuring.
    pub warmup: Duration,
    /// The broker process to sample from /proc.
    pub broker_pid: Option<u32>,
    /// The consumers' group.
    pub group: Option<String>,
    pub compression: Codec,
    pub payload: PayloadKind,
}

/// Most topics one run spreads over.
pub const TOPICS_MAX: usize = 10_000;
/// Most Kafka bootstrap addresses --broker may list.
pub const BOOTSTRAP_MAX: usize = 64;
/// Longest --group name (the broker's bound).
pub const GROUP_BYTES_MAX: usize = 255;

/// The topic names of `--topic base --topics n`.
pub fn topic_names(base: &str, n: usize) -> Vec<String> {
    if n == 1 {
        vec![base.to_owned()]
    } else {
        (0..n).map(|i| format!("{base}-{i}")).collect()
    }
}

/// The default produce duration when neither --duration nor --records is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// The smallest record: the send timestamp.
pub const RECORD_SIZE_MIN: usize = 8;

impl Plan {
    /// Checks `args` and fills in defaults.
    ///
    /// # Errors
    /// Values out of range, an unresolvable broker.
    pub fn from_args(args: &Args) -> Result<Self> {
        if args.record_size < RECORD_SIZE_MIN {
            bail!(
                "--record-size {} is below {RECORD_SIZE_MIN} (the send timestamp)",
                args.record_size
            );
        }
        if args.partitions == 0 {
            bail!("--partitions must be at least 1");
        }
        if args.mode.produces() && args.producers == 0 {
            bail!("{} needs at least one producer", args.mode.name());
        }
        if args.mode.consumes() && args.consumers == 0 {
            bail!("{} needs at least one consumer", args.mode.name());
        }
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a positive number of records per second");
            }
        }
        if args.records == Some(0) {
            bail!("--records must be at least 1");
        }
        if args.duration == Some(0) {
            bail!("--duration must be at least 1 second");
        }
        if args.topics == 0 || args.topics > TOPICS_MAX {
            bail!("--topics must be in 1..={TOPICS_MAX}");
        }
        if args.protocol == Protocol::Native && args.compression != Codec::None {
            bail!(
                "--compression {} needs --protocol kafka: native batches are uncompressed",
                args.compression.name()
            );
        }
        if let Some(g) = &args.group {
            if g.is_empty() || g.len() > GROUP_BYTES_MAX {
                bail!("--group must be 1..={GROUP_BYTES_MAX} bytes");
            }
        }
        let broker = match args.protocol {
            Protocol::Kafka if args.broker == BROKER_DEFAULT => KAFKA_BROKER_DEFAULT,
            _ => args.broker.as_str(),
        };
        let list: Vec<&str> = broker
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if list.len() > 1 && args.protocol == Protocol::Native {
            bail!("--broker takes one address with --protocol native (any shard answers)");
        }
        if list.len() > BOOTSTRAP_MAX {
            bail!("--broker lists at most {BOOTSTRAP_MAX} addresses");
        }
        let bootstrap = list
            .iter()
            .map(|addr| {
                addr.to_socket_addrs()
                    .with_context(|| format!("cannot resolve --broker {addr}"))?
                    .next()
                    .ok_or_else(|| anyhow!("--broker {addr} resolves to no address"))
            })
            .collect::<Result<Vec<SocketAddr>>>()?;
        let broker = *bootstrap
            .first()
            .ok_or_else(|| anyhow!("--broker names no address"))?;
        let executors = match &args.cores {
            Some(CpuList(cpus)) => cpus.iter().map(|c| Some(*c)).collect(),
            None => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                vec![None; n]
            }
        };
        let duration = match (args.duration, args.records) {
            (Some(s), _) => Some(Duration::from_secs(s)),
            (None, Some(_)) => None,
            (None, None) if args.mode.produces() => Some(DURATION_DEFAULT),
            (None, None) => None,
        };
        Ok(Plan {
            mode: args.mode,
            protocol: args.protocol,
            broker,
            bootstrap,
            topics: topic_names(&args.topic, args.topics),
            partitions: args.partitions,
            producers: if args.mode.produces() {
                args.producers
            } else {
                0
            },
            consumers: if args.mode.consumes() {
                args.consumers
            } else {
                0
            },
            record_size: args.record_size.max,
            acks: args.acks,
            duration,
            records: args.records,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            max_in_flight: args.max_in_flight,
            rate: args.rate,
            executors,
            seed: args.seed,
            record_size_min: args.record_size.min,
            keys: args.keys,
            warmup: Duration::from_secs(args.warmup),
            broker_pid: args.broker_pid,
            group: args.group.clone(),
            compression: args.compression,
            payload: args.payload,
        })
    }

    /// The plan as JSON, for the report.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode.name(),
            "protocol": self.protocol.name(),
            "broker": self
                .bootstrap
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "topic": self.topics.first(),
            "topics": self.topics.len(),
            "partitions": self.partitions,
            "producers": self.producers,
            "consumers": self.consumers,
            "record_size": self.record_size,
            "acks": acks_name(self.acks),
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "records": self.records,
            "batch_bytes": self.batch_bytes,
            "linger_ms": self.linger.as_millis() as u64,
            "max_in_flight": self.max_in_flight,
            "rate": self.rate,
            "executors": self.executors.len(),
            "pinned_cpus": self.executors.iter().flatten().collect::<Vec<_>>(),
            "seed": self.seed,
            "record_size_min": self.record_size_min,
            "keys": self.keys.name(),
            "warmup_s": self.warmup.as_secs_f64(),
            "broker_pid": self.broker_pid,
            "group": self.group,
            "compression": self.compression.name(),
            "payload": self.payload.name(),
        })
    }

    /// The mean value size, for sizing windows by records.
    pub fn record_size_mean(&self) -> usize {
        (self.record_size_min + self.record_size) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tidelog-bench").chain(line.split_whitespace()))
    }

    #[test]
    fn the_documented_command_line_parses() {
        let a = parse(
            "produce --protocol native --broker 127.0.0.1:9292 --topic t --partitions 3 \
             --producers 2 --consumers 1 --record-size 1024 --acks all --duration 20 \
             --batch-bytes 65536 --linger-ms 2 --rate 1000 --json out.json",
        )
        .expect("parses");
        assert_eq!(a.mode, Mode::Produce);
        assert_eq!(a.acks, Acks::All);
        assert_eq!(a.duration, Some(20));
        let plan = Plan::from_args(&a).expect("valid");
        assert_eq!(plan.partitions, 3);
        assert_eq!(plan.consumers, 0, "produce runs no consumers");
    }

    #[test]
    fn mode_defaults_to_e2e_and_records_conflict_with_duration() {
        let a = parse("--records 5").expect("parses");
        assert_eq!(a.mode, Mode::E2e);
        assert_eq!(Plan::from_args(&a).expect("valid").duration, None);
        assert!(parse("--records 5 --duration 3").is_err());
        assert!(parse("--acks 2").is_err());
    }

    #[test]
    fn kafka_takes_a_bootstrap_list_and_native_one_address() {
        let a = parse("--protocol kafka --broker 127.0.0.1:1,127.0.0.2:2").expect("parses");
        let plan = Plan::from_args(&a).expect("valid");
        assert_eq!(plan.bootstrap.len(), 2);
        assert_eq!(plan.broker, plan.bootstrap[0]);
        assert_eq!(plan.to_json()["broker"], "127.0.0.1:1,127.0.0.2:2");
        let native = parse("--broker 127.0.0.1:1,127.0.0.2:2").expect("parses");
        assert!(Plan::from_args(&native).is_err());
    }

    #[test]
    fn kafka_defaults_to_the_kafka_port() {
        let a = parse("--protocol kafka").expect("parses");
        let plan = Plan::from_args(&a).expect("valid");
        assert_eq!(plan.protocol, Protocol::Kafka);
        assert_eq!(plan.broker.to_string(), KAFKA_BROKER_DEFAULT);
        assert_eq!(plan.to_json()["protocol"], "kafka");
        let a = parse("--protocol kafka --broker 127.0.0.1:19092").expect("parses");
        assert_eq!(Plan::from_args(&a).expect("valid").broker.port(), 19092);
        let native = Plan::from_args(&parse("").expect("parses")).expect("valid");
        assert_eq!(native.broker.to_string(), BROKER_DEFAULT);
    }

    #[test]
    fn record_sizes_keys_warmup_and_pid() {
        let a = parse("--record-size 64-4096 --keys round-robin --warmup 3 --broker-pid 77")
            .expect("parses");
        let plan = Plan::from_args(&a).expect("valid");
        assert_eq!((plan.record_size_min, plan.record_size), (64, 4096));
        assert_eq!(plan.record_size_mean(), 2080);
        assert_eq!(plan.keys, KeyMode::RoundRobin);
        assert_eq!(plan.warmup, Duration::from_secs(3));
        assert_eq!(plan.broker_pid, Some(77));
        assert_eq!(plan.to_json()["keys"], "round-robin");
        let fixed = Plan::from_args(&parse("").expect("parses")).expect("valid");
        assert_eq!((fixed.record_size_min, fixed.record_size), (1024, 1024));
        assert_eq!(fixed.keys, KeyMode::None);
        assert_eq!(fixed.warmup, Duration::ZERO);
        assert!(parse("--record-size 10-5").is_err());
        assert!(parse("--record-size x").is_err());
        assert!(parse("--keys sometimes").is_err());
        let small = parse("--record-size 4-100").expect("parses");
        assert!(Plan::from_args(&small).is_err(), "below the timestamp");
    }

    #[test]
    fn topics_groups_and_compression() {
        let plan = Plan::from_args(
            &parse("--protocol kafka --topic t --topics 3 --group g --compression zstd")
                .expect("parses"),
        )
        .expect("valid");
        assert_eq!(plan.topics, ["t-0", "t-1", "t-2"]);
        assert_eq!(plan.group.as_deref(), Some("g"));
        assert_eq!(plan.compression, Codec::Zstd);
        assert_eq!(plan.to_json()["topics"], 3);
        assert_eq!(plan.to_json()["compression"], "zstd");
        let one = Plan::from_args(&parse("--topic solo").expect("parses")).expect("valid");
        assert_eq!(one.topics, ["solo"], "one topic keeps its name");
        assert!(Plan::from_args(&parse("--topics 0").expect("parses")).is_err());
        let native_zstd = parse("--compression zstd").expect("parses");
        let e = Plan::from_args(&native_zstd).expect_err("native has no codecs");
        assert!(e.to_string().contains("--protocol kafka"), "{e}");
        let long = format!("--group {}", "g".repeat(256));
        assert!(Plan::from_args(&parse(&long).expect("parses")).is_err());
        // Keys, size ranges and warm-up work with either protocol.
        let k =
            parse("--protocol kafka --keys random --record-size 10-20 --warmup 1").expect("parses");
        assert!(Plan::from_args(&k).is_ok());
    }

    #[test]
    fn compare_targets() {
        let t = |s| parse_target(s).expect(s);
        assert_eq!(t("h:1").protocol, None);
        assert_eq!(t("kafka://127.0.0.1:9092").protocol, Some(Protocol::Kafka));
        assert_eq!(t("native://h:2").broker, "h:2");
        assert_eq!(t("kafka://h:3").to_string(), "kafka://h:3");
        assert!(parse_target("http://h:1").is_err());
        assert!(parse_target("kafka://").is_err());
        assert!(parse("--compare-broker-pid 5").is_err(), "needs --compare");

        let a = parse("--broker 127.0.0.1:9292 --broker-pid 9 --compare 127.0.0.1:9393")
            .expect("parses");
        let second = a.compare_args().expect("a second run");
        assert_eq!(second.broker, "127.0.0.1:9393");
        assert_eq!(second.protocol, Protocol::Native);
        assert_eq!(second.broker_pid, Some(9), "same broker process by default");
        assert!(second.compare.is_none());
        assert!(parse("").expect("parses").compare_args().is_none());

        let k = parse("--compare kafka://127.0.0.1:9092 --compare-broker-pid 4").expect("parses");
        let second = k.compare_args().expect("a second run");
        assert_eq!(second.protocol, Protocol::Kafka);
        assert_eq!(second.broker_pid, Some(4));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0-2,5").expect("ok").0, [0, 1, 2, 5]);
        assert_eq!(parse_cpus("3,1,3").expect("ok").0, [1, 3]);
        assert!(parse_cpus("2-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
