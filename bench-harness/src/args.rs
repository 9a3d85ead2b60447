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
    /// Kafka: the bootstrap broker (Tidelog's --kafka-addr); left at the default, it becomes
    /// 127.0.0.1:9092.
    #[arg(long, default_value = BROKER_DEFAULT)]
    pub broker: String,
    /// Topic to write and read; created with --partitions if missing.
    #[arg(long, default_value = "tidelog-bench")]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Producers, spread round robin over the executors.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, spread round robin over the executors; each reads the partitions p with
    /// p % consumers == its index.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Value bytes of each record (at least 8: the first 8 carry the send timestamp).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
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
    /// Start an in-process broker, run a short e2e with ~20,000 small records, check that
    /// every record was consumed, exit 0. Ignores the workload flags.
    #[arg(long)]
    pub smoke: bool,
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
    pub broker: SocketAddr,
    pub topic: String,
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
        let broker = match args.protocol {
            Protocol::Kafka if args.broker == BROKER_DEFAULT => KAFKA_BROKER_DEFAULT,
            _ => args.broker.as_str(),
        };
        let broker = broker
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve --broker {broker}"))?
            .next()
            .ok_or_else(|| anyhow!("--broker {broker} resolves to no address"))?;
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
            topic: args.topic.clone(),
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
            record_size: args.record_size,
            acks: args.acks,
            duration,
            records: args.records,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            max_in_flight: args.max_in_flight,
            rate: args.rate,
            executors,
            seed: args.seed,
        })
    }

    /// The plan as JSON, for the report.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode.name(),
            "protocol": self.protocol.name(),
            "broker": self.broker.to_string(),
            "topic": self.topic,
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
        })
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
    fn cpu_lists() {
        assert_eq!(parse_cpus("0-2,5").expect("ok").0, [0, 1, 2, 5]);
        assert_eq!(parse_cpus("3,1,3").expect("ok").0, [1, 3]);
        assert!(parse_cpus("2-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
