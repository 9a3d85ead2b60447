//! `tidelog`: run the broker, manage topics, produce and consume.
//!
//! Client commands (`topic`, `produce`, `consume`) run the native client on one glommio
//! executor of their own and print errors as one line, `tidelog: <message>`, exit status 1.
//!
//! The code lives in this library so that the end-to-end tests (`tidelog-tests`) can build the
//! very same command as a binary of their own (cargo builds binaries of a dependency only with
//! the unstable artifact dependencies); `src/main.rs` only calls [`main`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use tidelog_engine::broker::{self, BrokerConfig};
use tidelog_engine::LogConfig;

mod checks;
mod cluster;
mod connect;
mod consume;
mod group;
mod kafka_admin;
mod produce;
mod settings;
mod topic;

/// Tidelog: a persistent, partitioned log broker.
#[derive(Debug, Parser)]
#[command(name = "tidelog", bin_name = "tidelog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker in the foreground until SIGINT or SIGTERM. Every flag may also come
    /// from a TOML file (--config, or TIDELOG_CONFIG: `data_dir = "d"`, `peers = [...]`) or a
    /// TIDELOG_* environment variable (TIDELOG_DATA_DIR=d); flags win over the environment,
    /// the environment over the file.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write each line of stdin as a record.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// The cluster as Kafka clients see it (works against any Kafka broker).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Consumer groups: list, describe (lag), delete, reset offsets (over the Kafka
    /// protocol: works against any Kafka broker).
    #[command(subcommand)]
    Group(group::GroupCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of serve settings, named like the flags (`min_insync_replicas = 2`);
    /// default: $TIDELOG_CONFIG, else none.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective settings (flags over environment over file over defaults), each
    /// with where it came from, as TOML, and exit.
    #[arg(long)]
    print_config: bool,
    /// Directory for partitions and metadata (ext4 or xfs: O_DIRECT is required).
    #[arg(long, default_value = "./tidelog-data")]
    data_dir: PathBuf,
    /// Shared native-protocol address; every shard also listens on a port of its own.
    #[arg(long, default_value = "127.0.0.1:9292")]
    native_addr: String,
    /// Host that metadata advertises for the shard endpoints (default: the native address's).
    #[arg(long)]
    advertised_host: Option<String>,
    /// Number of shards, one per core (default: every CPU this process may use).
    #[arg(long)]
    shards: Option<usize>,
    /// Partitions of topics created without a count (also Kafka auto-created topics).
    #[arg(long, default_value_t = 1)]
    default_partitions: u32,
    /// Most partitions per shard, all topics together (the broker holds this times
    /// `--shards`); creations past it are refused (Kafka POLICY_VIOLATION) before anything
    /// is written.
    #[arg(long, value_name = "N", default_value_t = tidelog_engine::limits::PARTITIONS_PER_SHARD_DEFAULT)]
    max_partitions_per_shard: u32,
    /// Most sealed-segment files each shard keeps open, all its partitions together; reads
    /// of older segments reopen the least recently used ones (active segments always hold
    /// theirs).
    #[arg(long, value_name = "N", default_value_t = tidelog_engine::log::files::OPEN_SEGMENT_FILES_DEFAULT)]
    max_open_segment_files: usize,
    /// Memory for recent and recently read batches, all shards together (split evenly):
    /// consumers within it read from memory, not disk [default: 10% of the memory the
    /// process may use, the smaller of the machine's and its cgroup's limit].
    #[arg(long, value_name = "BYTES")]
    cache_bytes: Option<u64>,
    /// Receive buffer of every accepted connection, in bytes (Kafka's
    /// `socket.receive.buffer.bytes`); -1: the kernel autotunes it. Bounds the kernel memory a
    /// client's unread bytes take; raise (or -1) for clients across high-latency links.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 131_072,
        allow_negative_numbers = true
    )]
    socket_receive_buffer_bytes: i64,
    /// Delete the committed offsets of a group with no members this long after its last
    /// commit (Kafka's `offsets.retention.minutes`).
    #[arg(long, value_name = "MINUTES", default_value_t = 10_080)]
    offsets_retention_minutes: u64,
    /// Kafka-protocol bootstrap address ("off" disables the Kafka listener). The listener
    /// has no authentication yet, so the default is loopback only: `localhost` binds
    /// 127.0.0.1 and ::1, so `localhost:9092` works however a client resolves it. Other
    /// interfaces are an explicit choice (`0.0.0.0:9092`, `[::]:9092`).
    #[arg(long, default_value = "localhost:9092")]
    kafka_addr: String,
    /// Port of Kafka node 0 (shard 0's own endpoint); shard i listens on this + i
    /// (default: the bootstrap port + 1).
    #[arg(long)]
    kafka_node_port_base: Option<u16>,
    /// How long a new consumer group waits for more members before its first rebalance.
    #[arg(long, default_value_t = 300)]
    group_initial_rebalance_delay_ms: u64,
    /// Metrics endpoint address: Prometheus text at /metrics, plus /health and /ready ("off"
    /// disables it). Default: the native address's host, port 9644 (if that is taken, e.g.
    /// by a second broker, the endpoint stays off with a warning; an address given here must
    /// bind or the start fails)
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Shortest session timeout a group member may ask for (Kafka's
    /// `group.min.session.timeout.ms`, 6,000 there); shorter joins are refused with
    /// INVALID_SESSION_TIMEOUT.
    #[arg(long, value_name = "MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(i32).range(1..=3_600_000))]
    group_min_session_timeout_ms: i32,
    /// Longest session timeout a group member may ask for (Kafka's
    /// `group.max.session.timeout.ms`).
    #[arg(long, value_name = "MS", default_value_t = 1_800_000,
          value_parser = clap::value_parser!(i32).range(1..=86_400_000))]
    group_max_session_timeout_ms: i32,
    /// Close a connection that sent no request for this long (Kafka's
    /// `connections.max.idle.ms`).
    #[arg(long, value_name = "MS", default_value_t = 600_000)]
    connections_max_idle_ms: u64,
    /// Close a connection whose request does not arrive whole within this long of its first
    /// bytes (plus a second per MiB of its size): slow or stalled peers hold no buffer.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    request_arrival_timeout_ms: u64,
    /// Close a connection whose peer has not taken a whole response within this long (plus
    /// a second per MiB of it): a peer reading a byte now and then pins fetched buffers.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    response_write_timeout_ms: u64,
    /// Connections one client address may hold on each shard (both protocols together);
    /// more are closed at once.
    #[arg(long, value_name = "N", default_value_t = tidelog_engine::limits::CONNECTIONS_PER_IP_PER_SHARD_DEFAULT)]
    max_connections_per_ip_per_shard: usize,
    /// This node's id in a cluster (1..); needs --peers.
    #[arg(long, value_name = "ID", requires = "peers")]
    node_id: Option<u64>,
    /// Every cluster member's id and inter-node address, this node included, the same list
    /// on every node: `1@127.0.0.1:19392,2@127.0.0.2:19392,3@127.0.0.3:19392`. Without it the
    /// broker is a single node.
    #[arg(long, value_name = "ID@HOST:PORT,...", requires = "node_id")]
    peers: Option<String>,
    /// Join the cluster of --peers as a broker without a vote in the metadata quorum: the
    /// node holds partitions and serves clients, follows the committed metadata from the
    /// voters, and its --node-id is not in --peers (how a node is added to a running
    /// cluster; move partitions onto it with AlterPartitionReassignments).
    #[arg(long, requires = "peers")]
    broker_only: bool,
    /// Replicas of a topic created without a replication factor (auto-created topics,
    /// CreateTopics with -1); at most the cluster's node count.
    #[arg(long, value_name = "N", default_value_t = 1)]
    default_replication_factor: u16,
    /// In-sync replicas an acks=all write to a replicated partition needs (Kafka's
    /// `min.insync.replicas`); fewer answer NOT_ENOUGH_REPLICAS.
    #[arg(long, value_name = "N", default_value_t = 1)]
    min_insync_replicas: usize,
    /// Bytes a follower asks its leader for per fetch (Kafka's `replica.fetch.max.bytes`),
    /// 65536 to 33554432; a follower fdatasyncs what it got before fetching again.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    replica_fetch_max_bytes: u32,
    /// Longest a follower's fetch waits at its leader for new batches (Kafka's
    /// `replica.fetch.wait.max.ms`), 1 to 5000.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    replica_fetch_wait_max_ms: u32,
    /// Log lines on stderr as human-readable text or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Which events to log: a level (error, warn, info, debug, trace) or `tracing` directives
    /// such as `info,tidelog_engine::server=debug` [default: $RUST_LOG, else info].
    #[arg(long, value_name = "DIRECTIVES")]
    log_level: Option<String>,
    /// How often each partition deletes segments past its retention (Kafka's
    /// `log.retention.check.interval.ms`).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    retention_check_ms: u64,
    #[command(flatten)]
    log: LogArgs,
}

/// How `serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event (for log shippers).
    Json,
}

/// Installs the process's `tracing` subscriber: every engine event (durability events,
/// recovery, failed opens, refused connections) at or above the chosen level on stderr.
///
/// # Errors
/// Directives that do not parse.
fn install_logging(format: LogFormat, level: Option<&str>) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(directives) => EnvFilter::try_new(directives)
            .with_context(|| format!("--log-level {directives:?} does not parse"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow!("cannot install the log subscriber: {e}"))
}

/// Partition log defaults (tuning.md, "Storage engine"): every topic gets these unless its
/// own configuration says otherwise. Unset flags keep the engine's defaults.
#[derive(Debug, Default, clap::Args)]
struct LogArgs {
    /// Roll to a new segment past this size [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Roll a segment written to for this long [default: 7 days].
    #[arg(long, value_name = "MS")]
    segment_ms: Option<i64>,
    /// fdatasync buffered (acks 0/1) appends past this many unsynced bytes [default: 1 MiB].
    #[arg(long, value_name = "BYTES")]
    flush_bytes: Option<u64>,
    /// ... or once the oldest unsynced append is this old [default: 100].
    #[arg(long, value_name = "MS")]
    flush_interval_ms: Option<i64>,
    /// Keep at most this many bytes per partition; -1: no limit [default: no limit].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Delete data older than this; -1: never [default: 7 days].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Space reserved ahead of the write head with one fallocate [default: 256 MiB].
    #[arg(long, value_name = "BYTES")]
    preallocate_bytes: Option<u64>,
    /// Largest batch a partition accepts [default: 1 MiB].
    #[arg(long, value_name = "BYTES")]
    max_batch_bytes: Option<usize>,
}

impl LogArgs {
    /// `base` with every flag that was given applied.
    ///
    /// # Errors
    /// A retention flag below -1.
    fn apply(&self, base: &LogConfig) -> Result<LogConfig> {
        Ok(LogConfig {
            segment_bytes: self.segment_bytes.unwrap_or(base.segment_bytes),
            segment_ms: self.segment_ms.unwrap_or(base.segment_ms),
            flush_bytes: self.flush_bytes.unwrap_or(base.flush_bytes),
            flush_interval_ms: self.flush_interval_ms.unwrap_or(base.flush_interval_ms),
            retention_bytes: retention(
                self.retention_bytes,
                base.retention_bytes
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
                "--retention-bytes",
            )?
            .map(|v| v.unsigned_abs()),
            retention_ms: retention(self.retention_ms, base.retention_ms, "--retention-ms")?,
            preallocate_bytes: self.preallocate_bytes.unwrap_or(base.preallocate_bytes),
            max_batch_bytes: self.max_batch_bytes.unwrap_or(base.max_batch_bytes),
            ..base.clone()
        })
    }
}

/// A retention flag over the engine's default, in Kafka's terms: absent keeps `base`, -1 is
/// no limit (`None`), 0 or more is the limit; anything else is refused (a negative limit
/// would make every sealed segment expired).
fn retention(flag: Option<i64>, base: Option<i64>, what: &str) -> Result<Option<i64>> {
    match flag {
        None => Ok(base),
        Some(-1) => Ok(None),
        Some(v) if v >= 0 => Ok(Some(v)),
        Some(v) => Err(anyhow!(
            "{what} {v}: give -1 (no limit) or a limit of 0 or more"
        )),
    }
}

/// The `tidelog` command: parses the arguments, runs the command, and on failure prints
/// `tidelog: <message>` and exits with status 1.
pub fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command();
    let Some(serve) = command.find_subcommand("serve").cloned() else {
        unreachable!("the serve command is declared above");
    };
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let (argv, sources) = match settings::expand(std::env::args_os().collect(), env, &serve) {
        Ok(expanded) => expanded,
        Err(e) => {
            eprintln!("tidelog: {e:#}");
            std::process::exit(1);
        }
    };
    let matches = command.get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Serve(args), Some(serve_matches)) =
        (&cli.command, matches.subcommand_matches("serve"))
    {
        if args.print_config {
            print!("{}", settings::print(serve_matches, &serve, &sources));
            return;
        }
    }
    if let Err(e) = run(cli) {
        eprintln!("tidelog: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Topic(command) => topic::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Cluster(command) => cluster::run(command),
        Command::Group(command) => group::run(command),
    }
}

/// The metrics endpoint's default port (Redpanda's admin and metrics port).
const METRICS_PORT_DEFAULT: u16 = 9644;

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// The Kafka bootstrap address, and whether `::1` is bound beside it: "off" disables it;
/// `localhost:PORT` is 127.0.0.1 and ::1; an IPv6 wildcard falls back to the IPv4 wildcard
/// where IPv6 is unavailable.
fn kafka_addr(text: &str) -> Result<(Option<SocketAddr>, bool)> {
    if text == "off" {
        return Ok((None, false));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("--kafka-addr {text}: bad port"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        checks::port_free(addr)?;
        return Ok((Some(addr), true));
    }
    Ok((kafka_addr_exact(text)?, false))
}

fn kafka_addr_exact(text: &str) -> Result<Option<SocketAddr>> {
    let addr = resolve(text)?;
    if addr.ip().is_unspecified() && addr.is_ipv6() {
        let probe = std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0));
        if probe.is_err() {
            return Ok(Some(SocketAddr::from(([0, 0, 0, 0], addr.port()))));
        }
    }
    checks::port_free(addr)?;
    Ok(Some(addr))
}

/// A panic on any thread, a shard's executor included, aborts the whole process. A shard
/// that died alone left the broker half up: its partitions and group slots unreachable, its
/// connections hung, the process alive, so no supervisor would restart it.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("tidelog: a thread panicked; aborting so that a supervisor restarts the broker");
        std::process::abort();
    }));
}

fn serve(args: ServeArgs) -> Result<()> {
    abort_on_panic();
    install_logging(args.log_format, args.log_level.as_deref())?;
    checks::io_uring()?;
    let memlock = checks::raise_memlock();
    let nofile = checks::raise_nofile();
    checks::data_dir(&args.data_dir)?;
    let native_addr = resolve(&args.native_addr)?;
    checks::port_free(native_addr)?;
    let mut config = BrokerConfig::new(&args.data_dir);
    config.native_addr = native_addr;
    config.kafka_advertised_host = args.advertised_host.clone();
    config.advertised_host = args
        .advertised_host
        .unwrap_or_else(|| native_addr.ip().to_string());
    (config.kafka_addr, config.kafka_ipv6_loopback_too) = kafka_addr(&args.kafka_addr)?;
    config.kafka_node_port_base = args.kafka_node_port_base;
    config.metrics = match args.metrics_addr.as_deref() {
        Some("off") => None,
        Some(addr) => Some(tidelog_engine::broker::MetricsListen {
            addr: resolve(addr)?,
            required: true,
        }),
        None => Some(tidelog_engine::broker::MetricsListen {
            addr: SocketAddr::new(native_addr.ip(), METRICS_PORT_DEFAULT),
            required: false,
        }),
    };
    config.coordinator.initial_rebalance_delay_ms = args.group_initial_rebalance_delay_ms;
    if args.group_min_session_timeout_ms > args.group_max_session_timeout_ms {
        return Err(anyhow!(
            "--group-min-session-timeout-ms must not exceed --group-max-session-timeout-ms"
        ));
    }
    config.coordinator.session_timeout_ms_min = args.group_min_session_timeout_ms;
    config.coordinator.session_timeout_ms_max = args.group_max_session_timeout_ms;
    if args.retention_check_ms == 0 {
        return Err(anyhow!("--retention-check-ms must be positive"));
    }
    config.housekeeping.retention_check = Duration::from_millis(args.retention_check_ms);
    if args.connections_max_idle_ms == 0
        || args.request_arrival_timeout_ms == 0
        || args.response_write_timeout_ms == 0
    {
        return Err(anyhow!(
            "--connections-max-idle-ms, --request-arrival-timeout-ms and \
             --response-write-timeout-ms must be positive"
        ));
    }
    if args.max_connections_per_ip_per_shard == 0 {
        return Err(anyhow!(
            "--max-connections-per-ip-per-shard must be positive"
        ));
    }
    config.max_connections_per_ip = args.max_connections_per_ip_per_shard;
    if args.default_replication_factor == 0 || args.min_insync_replicas == 0 {
        return Err(anyhow!(
            "--default-replication-factor and --min-insync-replicas must be positive"
        ));
    }
    config.default_replication_factor = args.default_replication_factor;
    config.min_insync_replicas = args.min_insync_replicas;
    {
        use tidelog_engine::shard::replica::{
            REPLICA_FETCH_BYTES_RANGE as BYTES, REPLICA_FETCH_WAIT_MS_RANGE as WAIT,
        };
        if !BYTES.contains(&args.replica_fetch_max_bytes)
            || !WAIT.contains(&args.replica_fetch_wait_max_ms)
        {
            return Err(anyhow!(
                "--replica-fetch-max-bytes must be {} to {} and --replica-fetch-wait-max-ms {} to {}",
                BYTES.start(),
                BYTES.end(),
                WAIT.start(),
                WAIT.end()
            ));
        }
    }
    config.replica_fetch = tidelog_engine::shard::replica::ReplicaFetch {
        max_bytes: args.replica_fetch_max_bytes,
        max_wait_ms: args.replica_fetch_wait_max_ms,
    };
    if let (Some(node_id), Some(peers)) = (args.node_id, &args.peers) {
        let cluster =
            tidelog_engine::cluster::ClusterConfig::parse_as(node_id, peers, args.broker_only)
                .map_err(|e| anyhow!("--peers: {e}"))?;
        tracing::info!(
            node_id,
            peers = cluster.peers.len(),
            broker_only = cluster.broker_only,
            "starting as a cluster node"
        );
        config.cluster = Some(cluster);
    }
    config.timeouts = tidelog_engine::server::ConnectionTimeouts {
        idle: Duration::from_millis(args.connections_max_idle_ms),
        request_arrival: Duration::from_millis(args.request_arrival_timeout_ms),
        response_write: Duration::from_millis(args.response_write_timeout_ms),
    };
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    config.default_partitions = args.default_partitions;
    if args.max_partitions_per_shard == 0 {
        return Err(anyhow!("--max-partitions-per-shard must be positive"));
    }
    config.max_partitions_per_shard = args.max_partitions_per_shard;
    if args.max_open_segment_files == 0 {
        return Err(anyhow!("--max-open-segment-files must be positive"));
    }
    config.open_segment_files_per_shard = args.max_open_segment_files;
    config.cache_bytes = match args.cache_bytes {
        Some(bytes) => bytes,
        None => checks::usable_memory().map_or(
            tidelog_engine::limits::CACHE_BYTES_EMBEDDED_DEFAULT,
            |bytes| bytes / 100 * tidelog_engine::limits::CACHE_SHARE_OF_MEMORY_PERCENT,
        ),
    };
    config.socket_receive_buffer_bytes = match args.socket_receive_buffer_bytes {
        -1 => None,
        bytes if bytes >= 4096 => Some(usize::try_from(bytes)?),
        bytes => {
            return Err(anyhow!(
                "--socket-receive-buffer-bytes must be -1 (kernel default) or at least 4096, \
                 not {bytes}"
            ))
        }
    };
    if args.offsets_retention_minutes == 0 {
        return Err(anyhow!("--offsets-retention-minutes must be positive"));
    }
    config.offsets_retention =
        Duration::from_secs(args.offsets_retention_minutes.saturating_mul(60));
    config.log_defaults = args.log.apply(&config.log_defaults)?;
    config
        .log_defaults
        .validate()
        .map_err(|e| anyhow!("invalid log flags: {e}"))?;
    let shards = config.shards;
    // Every connection the limits admit takes a descriptor; so do segment files. An active
    // segment holds its log file, and a partition's read-ahead one more; sealed segments
    // share the shard's bounded cache (reads in flight hold theirs until done).
    let connections = shards as u64
        * (config.limits.max_connections_per_shard as u64
            + config.kafka_limits.max_connections_per_shard as u64
            + 2 * u64::from(config.max_partitions_per_shard)
            + config.open_segment_files_per_shard as u64);
    if connections >= nofile {
        tracing::warn!(
            open_files_limit = nofile,
            connections_admitted = connections,
            "the open-files limit is below the connections the broker admits: raise `ulimit -n` \
             (the hard limit) or clients will be refused with EMFILE before the connection limits"
        );
    }
    if let Some(bootstrap) = config.kafka_addr {
        // The shards' own Kafka ports (node i on base + i), bound without a check otherwise.
        let base = config.kafka_node_port_base.or_else(|| {
            bootstrap
                .port()
                .checked_add(1)
                .filter(|_| bootstrap.port() != 0)
        });
        if let Some(base) = base {
            for shard in 0..shards {
                let port = u16::try_from(usize::from(base) + shard)
                    .map_err(|_| anyhow!("Kafka node port {base} + {shard} is past 65535"))?;
                checks::port_free(SocketAddr::new(bootstrap.ip(), port))?;
            }
        }
    }
    let config_twin = config.kafka_ipv6_loopback_too;
    let handle = broker::start(config)
        .map_err(|e| anyhow!(checks::explain_startup(&e.to_string(), &args.native_addr)))?;
    let endpoints: Vec<String> = handle
        .shard_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    eprintln!(
        "tidelog: serving {} on {} with {shards} shards (shard endpoints {}), locked-memory limit {} KiB",
        args.data_dir.display(),
        handle.native_addr(),
        endpoints.join(", "),
        memlock / 1024
    );
    if let Some(kafka) = handle.kafka_addr() {
        let nodes: Vec<String> = handle
            .kafka_node_addrs()
            .iter()
            .map(|a| a.port().to_string())
            .collect();
        let on = if config_twin && kafka.ip().is_loopback() {
            format!("{kafka} and [::1]:{}", kafka.port())
        } else {
            kafka.to_string()
        };
        let reach = if kafka.ip().is_loopback() {
            "loopback only"
        } else {
            "reachable from other hosts: any client that reaches it can read, write and delete"
        };
        eprintln!(
            "tidelog: Kafka protocol on {on} (node ports {}); unauthenticated, {reach}",
            nodes.join(", ")
        );
    }
    if let Some(metrics) = handle.metrics_addr() {
        eprintln!("tidelog: metrics on http://{metrics}/metrics (and /health, /ready)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("tidelog: stopping: finishing requests and flushing partitions");
    handle.shutdown().context("shutdown")?;
    eprintln!("tidelog: stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Kafka listener is loopback only unless asked: `localhost` is 127.0.0.1 plus
    /// ::1, and the default is that.
    #[test]
    fn the_kafka_listener_defaults_to_loopback() {
        let args = serve_args(&[]);
        assert_eq!(args.kafka_addr, "localhost:9092");
        let (addr, twin) = kafka_addr("localhost:0").expect("parses");
        assert_eq!(addr, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert!(twin);
        let (addr, twin) = kafka_addr("127.0.0.1:0").expect("parses");
        assert_eq!(addr, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert!(!twin);
        assert_eq!(kafka_addr("off").expect("parses"), (None, false));
        assert!(kafka_addr("localhost:x").is_err());
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from([&["tidelog", "serve"], args].concat()).expect("parses");
        match cli.command {
            Command::Serve(args) => *args,
            _ => unreachable!("serve was parsed"),
        }
    }

    /// `serve --retention-ms -1` is Kafka's "keep forever": it used to become a limit of
    /// -1 ms, under which every sealed segment had expired.
    #[test]
    fn minus_one_retention_flags_mean_no_limit() {
        let args = serve_args(&["--retention-ms", "-1", "--retention-bytes", "-1"]);
        let config = args.log.apply(&LogConfig::default()).expect("valid");
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, None);
        config.validate().expect("a valid log configuration");
        let args = serve_args(&["--retention-ms", "5000"]);
        let config = args.log.apply(&LogConfig::default()).expect("valid");
        assert_eq!(config.retention_ms, Some(5000));
    }

    #[test]
    fn other_negative_retention_flags_are_refused() {
        for flag in ["--retention-ms", "--retention-bytes"] {
            let args = serve_args(&[flag, "-2"]);
            let error = args.log.apply(&LogConfig::default()).expect_err("refused");
            assert!(error.to_string().contains(flag), "{error}");
        }
    }
}
