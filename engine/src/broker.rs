//! The broker: the assembly of the shard runtime ([`crate::shard`]) and the listeners in
//! front of it ([`crate::server`]), one pair per core, each with its own glommio executor,
//! io_uring ring, listeners and partitions. This is the only module that names both.
//!
//! ```text
//!            shared native port (SO_REUSEPORT: the kernel spreads connections)
//!      ┌────────────────┬────────────────┐
//!   shard 0          shard 1    ...   shard N-1      each: own port too (shard-aware endpoint)
//!   TopicStore ──push──▶ topic table copy on every shard
//!   partitions p with shard_for(topic, p, N) == shard
//! ```
//!
//! Start-up of each shard thread, in order: bind the shared and own ports and report them;
//! wait for every shard's addresses; open the shard (mesh, topic table, partitions); report
//! serving; accept until told to stop; close every partition (flushing it).
//!
//! Shard state is `!Send` and lives on its thread. Shards talk only through bounded glommio
//! channel meshes: topic-table changes go from shard 0 to all, admin requests from any shard
//! to shard 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crate::config::LogConfig;
use crate::server::{Bound, Endpoints, ListenerConfig, ShardAddrs};
use crate::shard::{Mesh, Shard, ShardConfig};

pub use crate::server::kafka::ADVERTISED as KAFKA_ADVERTISED_APIS;
pub use crate::server::{KafkaLimits, ServerLimits};

/// How often a shard checks whether it was asked to stop. A timer, not a cross-thread channel:
/// glommio's shared-channel receiver whose sender lives on a plain thread kept its executor
/// spinning (a whole core per shard while idle).
pub const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Everything `tidelog serve` needs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where partitions and metadata live.
    pub data_dir: PathBuf,
    /// The shared native port (port 0: any free port).
    pub native_addr: SocketAddr,
    /// Host advertised in metadata for shard endpoints.
    pub advertised_host: String,
    /// Number of shards (executors).
    pub shards: usize,
    /// Pin shard i to CPU i.
    pub pin_cpus: bool,
    /// Log settings for topics that do not override them.
    pub log_defaults: LogConfig,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Partitions the broker holds per shard at most (all topics together, times the shard
    /// count): each open partition costs file descriptors, memory and a housekeeping task.
    pub max_partitions_per_shard: u32,
    /// Sealed-segment files each shard keeps open, all its partitions together
    /// (`--max-open-segment-files`): reads of older segments reopen what was evicted.
    pub open_segment_files_per_shard: usize,
    /// Bytes of batch cache for the whole broker, split evenly across the shards
    /// (`--cache-bytes`; see [`crate::log::cache`]).
    pub cache_bytes: u64,
    /// How long an empty group's committed offsets outlive its last commit (Kafka's
    /// `offsets.retention.minutes`, 7 days).
    pub offsets_retention: std::time::Duration,
    /// Bounds of the native listener.
    pub limits: ServerLimits,
    /// The Kafka bootstrap address every shard accepts on (SO_REUSEPORT); `None` turns the
    /// Kafka listener off.
    pub kafka_addr: Option<SocketAddr>,
    /// Also accept Kafka clients on `::1` at the same ports when `kafka_addr` is on
    /// `127.0.0.1`, so that `localhost` reaches the broker however a client resolves it
    /// (skipped with a warning where IPv6 is off).
    pub kafka_ipv6_loopback_too: bool,
    /// Port of shard 0's own Kafka endpoint (node 0); shard i listens on this + i. `None`:
    /// the bootstrap port + 1 (any free ports when the bootstrap port is 0).
    pub kafka_node_port_base: Option<u16>,
    /// Host advertised to Kafka clients; `None`: the address each client reached us at
    /// (`localhost` for loopback).
    pub kafka_advertised_host: Option<String>,
    /// Bounds of the Kafka listener.
    pub kafka_limits: KafkaLimits,
    /// Consumer-group coordinator settings (timeouts, initial rebalance delay, bounds).
    pub coordinator: crate::coordinator::CoordinatorConfig,
    /// How often each partition's flush and retention checks run.
    pub housekeeping: crate::runtime::Housekeeping,
    /// Idle, request-arrival and response-write deadlines of every connection.
    pub timeouts: crate::server::ConnectionTimeouts,
    /// Connections one client address may hold per shard, both protocols together.
    pub max_connections_per_ip: usize,
    /// Receive buffer of every accepted connection (Kafka's `socket.receive.buffer.bytes`);
    /// `None`: the kernel autotunes it. Bounds the kernel memory bytes a client sent but the
    /// broker has not read yet can take (a client past its request-memory share waits there).
    pub socket_receive_buffer_bytes: Option<usize>,
    /// This node's place in a cluster (`--node-id`, `--peers`); `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// In-sync replicas an `acks=all` write to a replicated partition needs.
    pub min_insync_replicas: usize,
    /// Replicas of a topic created without a replication factor (auto-created, or -1).
    pub default_replication_factor: u16,
    /// How this node's followers fetch from their leaders.
    pub replica_fetch: crate::shard::replica::ReplicaFetch,
    /// The metrics endpoint (`/metrics`, `/health`, `/ready`, served by shard 0); `None`:
    /// off.
    pub metrics: Option<MetricsListen>,
}

/// Where the metrics endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen {
    /// The address (port 0: any free port).
    pub addr: SocketAddr,
    /// Whether a failure to bind stops the start (an address the operator chose) or only
    /// turns the endpoint off with a warning (the default address, which a second broker on
    /// the machine may hold).
    pub required: bool,
}

impl BrokerConfig {
    /// Defaults that work on a laptop: data in `data_dir`, loopback, port 9292, one shard per
    /// CPU the process may use.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            native_addr: SocketAddr::from(([127, 0, 0, 1], 9292)),
            advertised_host: "127.0.0.1".into(),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_cpus: true,
            log_defaults: LogConfig::default(),
            default_partitions: 1,
            max_partitions_per_shard: crate::limits::PARTITIONS_PER_SHARD_DEFAULT,
            open_segment_files_per_shard: crate::log::files::OPEN_SEGMENT_FILES_DEFAULT,
            cache_bytes: crate::limits::CACHE_BYTES_EMBEDDED_DEFAULT,
            socket_receive_buffer_bytes: crate::limits::SOCKET_RECEIVE_BUFFER_DEFAULT,
            offsets_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            limits: ServerLimits::default(),
            kafka_addr: None,
            kafka_ipv6_loopback_too: false,
            kafka_node_port_base: None,
            kafka_advertised_host: None,
            kafka_limits: KafkaLimits::default(),
            coordinator: crate::coordinator::CoordinatorConfig::default(),
            housekeeping: crate::runtime::Housekeeping::default(),
            timeouts: crate::server::ConnectionTimeouts::default(),
            max_connections_per_ip: crate::limits::CONNECTIONS_PER_IP_PER_SHARD_DEFAULT,
            cluster: None,
            min_insync_replicas: 1,
            default_replication_factor: 1,
            replica_fetch: crate::shard::replica::ReplicaFetch::default(),
            metrics: None,
        }
    }
}

/// Why the broker failed to start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A shard could not start.
    #[error("shard {shard} failed to start: {reason}")]
    Startup {
        /// The shard.
        shard: usize,
        /// What went wrong.
        reason: String,
    },
    /// A shard thread panicked or failed while stopping.
    #[error("shard {shard} failed: {reason}")]
    Shard {
        /// The shard.
        shard: usize,
        /// What went wrong.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid broker configuration: {0}")]
    Config(String),
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    native_addr: SocketAddr,
    shard_addrs: Vec<SocketAddr>,
    kafka_addr: Option<SocketAddr>,
    kafka_node_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    /// Set to ask every shard to stop (they check it every [`STOP_CHECK`]).
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>,
    /// The data directory's exclusive lock, held until the handle is dropped.
    _lock: std::fs::File,
}

impl BrokerHandle {
    /// The shared native address.
    pub fn native_addr(&self) -> SocketAddr {
        self.native_addr
    }

    /// Each shard's own native address, by shard.
    pub fn shard_addrs(&self) -> Vec<SocketAddr> {
        self.shard_addrs.clone()
    }

    /// The Kafka bootstrap address, when the Kafka listener is on.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// Each shard's own Kafka endpoint (node id = index).
    pub fn kafka_node_addrs(&self) -> Vec<SocketAddr> {
        self.kafka_node_addrs.clone()
    }

    /// The metrics endpoint's address, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, lets in-flight requests finish, flushes every partition and waits for
    /// the shards to exit.
    ///
    /// # Errors
    /// The first shard that failed.
    pub fn shutdown(self) -> Result<(), BrokerError> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut result = Ok(());
        for (shard, thread) in self.threads.into_iter().enumerate() {
            let outcome = match thread.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(reason),
                Err(e) => Err(format!("{e}")),
            };
            if let (Err(reason), Ok(())) = (outcome, &result) {
                result = Err(BrokerError::Shard { shard, reason });
            }
        }
        result
    }

    /// Blocks until every shard exits (after a signal handler called for a stop).
    ///
    /// # Errors
    /// As [`shutdown`](Self::shutdown).
    pub fn wait(self) -> Result<(), BrokerError> {
        self.shutdown()
    }
}

/// Starts the shards and returns once every one of them is listening.
///
/// # Errors
/// [`BrokerError::Startup`] naming the first shard that failed (bind, recovery, memlock).
pub fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    if config.shards == 0 || config.shards > crate::limits::SHARDS_MAX {
        return Err(BrokerError::Config(format!(
            "shards {} not in [1, {}]",
            config.shards,
            crate::limits::SHARDS_MAX
        )));
    }
    config
        .log_defaults
        .validate()
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| BrokerError::Startup {
        shard: 0,
        reason: format!("create {}: {e}", config.data_dir.display()),
    })?;
    let lock = lock_data_dir(&config.data_dir)?;
    // The metrics listener is bound here, before any shard starts, so that a taken address
    // the operator chose stops the start; shard 0 serves it.
    let mut metrics_fd = None;
    let mut metrics_addr = None;
    if let Some(listen) = config.metrics {
        let bound = std::net::TcpListener::bind(listen.addr).and_then(|l| {
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            Ok((l, addr))
        });
        match bound {
            Ok((listener, addr)) => {
                metrics_addr = Some(addr);
                metrics_fd = Some(std::os::fd::IntoRawFd::into_raw_fd(listener));
            }
            Err(e) if listen.required => {
                return Err(BrokerError::Startup {
                    shard: 0,
                    reason: format!("metrics address {}: {e}", listen.addr),
                })
            }
            Err(e) => {
                tracing::warn!(addr = %listen.addr, error = %e,
                    "the default metrics address is taken: metrics endpoint off (--metrics-addr)");
            }
        }
    }
    let mesh = crate::shard::mesh::build(config.shards);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Shard 0 binds the shared port first (it may be port 0), the others bind what it got.
    let mut native_addr = config.native_addr;
    let mut shard_addrs = Vec::with_capacity(config.shards);
    let mut kafka_addr = config.kafka_addr;
    let mut kafka_node_addrs = Vec::with_capacity(config.shards);
    let mut threads = Vec::with_capacity(config.shards);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut go = Vec::with_capacity(config.shards);
    let (serving_tx, serving_rx) = mpsc::sync_channel(config.shards);
    for shard in 0..config.shards {
        let placement = if config.pin_cpus && config.shards <= cpus {
            glommio::Placement::Fixed(shard)
        } else {
            glommio::Placement::Unbound
        };
        let builder = crate::runtime::executor_builder(placement, config.shards)
            .map_err(|e| BrokerError::Startup {
                shard,
                reason: e.to_string(),
            })?
            .name(&format!("tidelog-shard-{shard}"));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (go_tx, go_rx) = mpsc::sync_channel(1);
        let stop_rx = std::sync::Arc::clone(&stop);
        let kafka = kafka_addr.map(|bootstrap| {
            let base = match config.kafka_node_port_base {
                Some(base) => Some(base),
                None if bootstrap.port() == 0 => None,
                None => bootstrap.port().checked_add(1),
            };
            let port = base.map_or(0, |b| b.saturating_add(shard as u16));
            (bootstrap, SocketAddr::new(bootstrap.ip(), port))
        });
        let start = ShardStart {
            shard,
            metrics_fd: if shard == 0 { metrics_fd.take() } else { None },
            config: config.clone(),
            native_addr,
            kafka,
            mesh: mesh.clone(),
            ready: ready_tx,
            go: go_rx,
            serving: serving_tx.clone(),
            stop: stop_rx,
        };
        let thread = builder
            .spawn(move || run_shard(start))
            .map_err(|e| BrokerError::Startup {
                shard,
                reason: e.to_string(),
            })?;
        match ready_rx.recv() {
            Ok(Ok(addrs)) => {
                native_addr = addrs.shared;
                shard_addrs.push(addrs.own);
                if let (Some(shared), Some(own)) = (addrs.kafka_shared, addrs.kafka_own) {
                    kafka_addr = Some(shared);
                    kafka_node_addrs.push(own);
                }
            }
            Ok(Err(reason)) => return Err(BrokerError::Startup { shard, reason }),
            Err(_) => {
                return Err(BrokerError::Startup {
                    shard,
                    reason: "shard exited during start-up".into(),
                })
            }
        }
        threads.push(thread);
        go.push(go_tx);
    }
    for go in go {
        let _ = go.send(Endpoints {
            native: shard_addrs.clone(),
            kafka: kafka_node_addrs.clone(),
        });
    }
    for _ in 0..config.shards {
        match serving_rx.recv() {
            Ok(Ready::Serving) => {}
            Ok(Ready::Failed(reason)) => {
                return Err(BrokerError::Startup { shard: 0, reason });
            }
            Err(_) => {
                return Err(BrokerError::Startup {
                    shard: 0,
                    reason: "a shard exited during start-up".into(),
                })
            }
        }
    }
    Ok(BrokerHandle {
        native_addr,
        shard_addrs,
        kafka_addr,
        kafka_node_addrs,
        metrics_addr,
        stop,
        threads,
        _lock: lock,
    })
}

/// The lock file in the data directory. Topic names may not start with `__`, so no topic
/// directory can take its name.
pub const DATA_DIR_LOCK: &str = "__broker.lock";

/// Takes an exclusive, non-blocking `flock` on the data directory's lock file, so that two
/// brokers never open one directory and interleave appends. The kernel drops the lock when
/// the process dies, `kill -9` included, so a restart never finds a stale one.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, BrokerError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(DATA_DIR_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BrokerError::Startup {
            shard: 0,
            reason: format!("open {}: {e}", path.display()),
        })?;
    // SAFETY: flock takes a descriptor this function owns (open for the call) and no memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let reason = if e.kind() == std::io::ErrorKind::WouldBlock {
            format!(
                "data directory {} is in use by another broker (lock {})",
                dir.display(),
                path.display()
            )
        } else {
            format!("lock {}: {e}", path.display())
        };
        return Err(BrokerError::Startup { shard: 0, reason });
    }
    Ok(file)
}

/// Start-up reports from a shard thread to [`start`].
#[derive(Debug)]
enum Ready {
    Serving,
    Failed(String),
}

/// What one shard thread starts from.
struct ShardStart {
    shard: usize,
    /// Shard 0: the bound metrics listener, to serve.
    metrics_fd: Option<std::os::fd::RawFd>,
    config: BrokerConfig,
    native_addr: SocketAddr,
    /// The shared Kafka bootstrap address (as bound by shard 0) and this shard's own Kafka
    /// address; `None` when the Kafka listener is off.
    kafka: Option<(SocketAddr, SocketAddr)>,
    mesh: Mesh,
    ready: mpsc::SyncSender<Result<ShardAddrs, String>>,
    go: mpsc::Receiver<Endpoints>,
    serving: mpsc::SyncSender<Ready>,
    stop: Arc<AtomicBool>,
}

/// One shard thread, start to finish.
async fn run_shard(start: ShardStart) -> Result<(), String> {
    let twin = (start.config.kafka_ipv6_loopback_too
        && start
            .kafka
            .is_some_and(|(shared, _)| shared.ip() == std::net::Ipv4Addr::LOCALHOST))
    .then_some(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    let receive_buffer = start.config.socket_receive_buffer_bytes;
    let bound =
        Bound::bind(start.native_addr, start.kafka, twin, receive_buffer).and_then(|bound| {
            let addrs = bound.addrs()?;
            Ok((bound, addrs))
        });
    let bound = match bound {
        Ok((bound, addrs)) => {
            let _ = start.ready.send(Ok(addrs));
            bound
        }
        Err(e) => {
            let _ = start.ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    // Start-up only: wait (blocking this thread) until every shard has bound its ports.
    let endpoints = start
        .go
        .recv()
        .map_err(|_| "broker start-up aborted".to_string())?;
    let config = start.config;
    let registration = config.cluster.as_ref().map(|cluster| {
        let kafka_host = config.kafka_advertised_host.clone().unwrap_or_else(|| {
            endpoints
                .kafka
                .first()
                .map_or_else(|| config.advertised_host.clone(), |a| a.ip().to_string())
        });
        crate::cluster::NodeInfo {
            id: cluster.node_id,
            kafka_host,
            kafka_ports: endpoints.kafka.iter().map(SocketAddr::port).collect(),
            native_host: config.advertised_host.clone(),
            native_ports: endpoints.native.iter().map(SocketAddr::port).collect(),
            incarnation: incarnation(),
        }
    });
    let shard_config = ShardConfig {
        cluster: config.cluster.clone(),
        registration,
        min_insync_replicas: config.min_insync_replicas,
        default_replication_factor: config.default_replication_factor,
        replica_fetch: config.replica_fetch,
        data_dir: config.data_dir.clone(),
        shards: config.shards,
        log_defaults: config.log_defaults.clone(),
        coordinator: config.coordinator.clone(),
        housekeeping: config.housekeeping,
        max_partitions: config.max_partitions_per_shard as u64 * config.shards as u64,
        offsets_retention: config.offsets_retention,
        open_segment_files: config.open_segment_files_per_shard,
        cache_bytes: usize::try_from(config.cache_bytes / config.shards.max(1) as u64)
            .unwrap_or(usize::MAX),
    };
    let shard: Rc<Shard> = match Shard::open(start.shard, shard_config, start.mesh).await {
        Ok(shard) => shard,
        Err(e) => {
            let _ = start.serving.send(Ready::Failed(e.clone()));
            return Err(e);
        }
    };
    let _ = start.serving.send(Ready::Serving);
    #[cfg(debug_assertions)]
    inject_panic_fault(start.shard);
    let listeners = ListenerConfig {
        advertised_host: config.advertised_host,
        default_partitions: config.default_partitions,
        limits: config.limits,
        kafka_advertised_host: config.kafka_advertised_host,
        kafka_limits: config.kafka_limits,
        timeouts: config.timeouts,
        max_connections_per_ip: config.max_connections_per_ip,
    };
    crate::server::serve(Rc::clone(&shard), listeners, endpoints, bound);
    if let Some(fd) = start.metrics_fd {
        // SAFETY: `fd` is the listening socket broker::start bound and gave up with
        // `into_raw_fd`; it reaches this shard alone, once, and is owned from here on.
        let listener =
            unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        crate::server::metrics_http::serve(Rc::clone(&shard), listener);
    }
    while !start.stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_CHECK).await;
    }
    shard.shutdown().await
}

/// This process's incarnation: different at every start (time and process id), the same for
/// every shard of the process.
fn incarnation() -> u64 {
    static ONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    })
}

/// Debug builds only (tests): `TIDELOG_FAULT_PANIC_SHARD=<n>` makes shard n panic shortly
/// after it starts serving, so that tests can check what a shard's panic does to the broker.
#[cfg(debug_assertions)]
fn inject_panic_fault(shard: usize) {
    let wanted = std::env::var("TIDELOG_FAULT_PANIC_SHARD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if wanted == Some(shard) {
        glommio::spawn_local(async move {
            glommio::timer::sleep(std::time::Duration::from_secs(2)).await;
            panic!("fault injection: shard {shard} panics (TIDELOG_FAULT_PANIC_SHARD)");
        })
        .detach();
    }
}
