//! A `tidelog serve` child process, shared by the tests that run the real command (`cli`,
//! `kafka_clients`): start on free loopback ports, wait until it listens, SIGTERM or kill -9,
//! and restart on the same data directory and ports.
//!
//! The binary is `tidelog-under-test`, a binary of this package built from `cli/src/main.rs`
//! (see `tests/Cargo.toml`), so cargo builds it from the current source before these tests.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidelog-under-test");

/// Every test that runs a broker process holds this: on a small machine they are much faster
/// one at a time than interleaved, and the seed-examples test needs port 9092 to itself.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `count` consecutive free ports below the kernel's ephemeral range (32768 and up), so that
/// no client socket of a concurrently running test can be holding one of them when a broker
/// binds them without retrying. Found by trying to bind each.
pub fn free_ports_below_ephemeral(count: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let seed = u64::from(std::process::id()) ^ nanos;
    let mut candidate = 20_000 + (seed % 10_000) as u16;
    loop {
        let all_free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", candidate + i)).is_ok());
        if all_free {
            return candidate;
        }
        candidate = 20_000 + (candidate - 20_000 + 97) % 12_000;
    }
}

/// Whether this build's `serve` has the Kafka listener (`--kafka-addr`).
pub fn has_kafka_listener() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let out = Command::new(BIN)
            .args(["serve", "--help"])
            .output()
            .expect("run tidelog serve --help");
        String::from_utf8_lossy(&out.stdout).contains("--kafka-addr")
    })
}

/// Where the Kafka listener listens.
#[derive(Debug, Clone)]
pub enum Kafka {
    /// Not used by the test: when the build has a listener, it goes to a free loopback port
    /// so that it never competes for 9092.
    Unused,
    /// `serve`'s default address (port 9092), reached as 127.0.0.1:9092.
    Default,
    /// `--kafka-addr` this address.
    At(String),
}

/// How to run `tidelog serve`.
#[derive(Debug, Clone)]
pub struct Serve {
    pub shards: usize,
    pub native_addr: String,
    pub kafka: Kafka,
    /// More `serve` flags.
    pub extra: Vec<String>,
    /// Environment variables for the broker process.
    pub env: Vec<(String, String)>,
    /// Open-files limit (soft and hard) of the broker process, which cannot raise it.
    pub nofile: Option<u64>,
    /// The network namespace to run in (`ip netns exec NAME`, which execs the broker itself,
    /// so the child's pid is the broker's).
    pub netns: Option<String>,
}

impl Serve {
    /// Two shards on a free native port; no Kafka clients. Ports come from below the
    /// ephemeral range: a restart on the same port must not find it taken by some client
    /// socket of another test (the Kafka client tests open many).
    pub fn new() -> Serve {
        Serve {
            shards: 2,
            native_addr: format!("127.0.0.1:{}", free_ports_below_ephemeral(1)),
            kafka: Kafka::Unused,
            extra: Vec::new(),
            env: Vec::new(),
            nofile: None,
            netns: None,
        }
    }

    /// The arguments after `serve`, and the Kafka address to wait for (if any).
    fn args(&self, dir: &Path) -> (Vec<String>, Option<String>) {
        let mut args: Vec<String> = vec![
            "--shards".into(),
            self.shards.to_string(),
            "--native-addr".into(),
            self.native_addr.clone(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        let kafka = match &self.kafka {
            Kafka::Unused if has_kafka_listener() => {
                // Not the native port, nor the node port after it.
                let addr = loop {
                    let port = free_ports_below_ephemeral(2);
                    let addr = format!("127.0.0.1:{port}");
                    let taken = |p: u16| self.native_addr.ends_with(&format!(":{p}"));
                    if !taken(port) && !taken(port + 1) {
                        break addr;
                    }
                };
                args.extend(["--kafka-addr".into(), addr]);
                None
            }
            Kafka::Unused => None,
            Kafka::Default => Some("127.0.0.1:9092".to_owned()),
            Kafka::At(addr) => {
                args.extend(["--kafka-addr".into(), addr.clone()]);
                Some(addr.clone())
            }
        };
        if kafka.is_some() {
            assert!(
                has_kafka_listener(),
                "this build's `tidelog serve --help` lists no --kafka-addr: the Kafka listener \
                 is not in this tree yet, so the Kafka client tests cannot run"
            );
        }
        // Tests run brokers side by side: the metrics endpoint only where a test asks for it.
        if !self.extra.iter().any(|a| a == "--metrics-addr") {
            args.extend(["--metrics-addr".into(), "off".into()]);
        }
        args.extend(self.extra.iter().cloned());
        (args, kafka)
    }
}

/// A running `tidelog serve`.
pub struct Broker {
    child: Child,
    dir: PathBuf,
    /// The shared native-protocol address.
    pub addr: String,
    /// The Kafka bootstrap address, when the test asked for one.
    pub kafka_addr: Option<String>,
    log: PathBuf,
    serve: Serve,
}

impl Broker {
    /// Two shards on free ports.
    pub fn start(dir: &Path, run: usize) -> Broker {
        Broker::start_with(dir, run, Serve::new())
    }

    /// Starts `serve` and waits until it listens. `run` numbers the log file
    /// (`<dir>.serve-<run>.log`). A restart on the same ports retries while the old process's
    /// ports are still being released.
    pub fn start_with(dir: &Path, run: usize, serve: Serve) -> Broker {
        Broker::launch(dir, run, serve, true)
    }

    /// [`Broker::start_with`] without retrying: the first start must succeed, as a
    /// supervisor's immediate restart expects.
    pub fn start_at_once(dir: &Path, run: usize, serve: Serve) -> Broker {
        Broker::launch(dir, run, serve, false)
    }

    fn launch(dir: &Path, run: usize, serve: Serve, retry_in_use: bool) -> Broker {
        let (args, kafka_addr) = serve.args(dir);
        let log = dir.with_extension(format!("serve-{run}.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        'spawn: loop {
            let mut command = match &serve.netns {
                None => Command::new(BIN),
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, BIN]);
                    c
                }
            };
            if let Some(limit) = serve.nofile {
                use std::os::unix::process::CommandExt;
                // SAFETY: between fork and exec the closure only calls setrlimit, which is
                // async-signal-safe, on a value on its own stack.
                unsafe {
                    command.pre_exec(move || {
                        let rlimit = libc::rlimit {
                            rlim_cur: limit,
                            rlim_max: limit,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error())
                        }
                    });
                }
            }
            let child = command
                .arg("serve")
                .args(&args)
                .envs(serve.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn tidelog serve");
            let mut broker = Broker {
                child,
                dir: dir.to_owned(),
                addr: serve.native_addr.clone(),
                kafka_addr: kafka_addr.clone(),
                log: log.clone(),
                serve: serve.clone(),
            };
            loop {
                if let Some(status) = broker.child.try_wait().expect("try_wait") {
                    let stderr = broker.stderr();
                    if retry_in_use
                        && stderr.contains("already in use")
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(250));
                        continue 'spawn;
                    }
                    panic!("broker exited with {status}: {stderr}");
                }
                if broker.listening() {
                    return broker;
                }
                assert!(
                    Instant::now() < deadline,
                    "broker did not listen in time: {}\nits threads (name, state, wait channel):\n{}",
                    broker.stderr(),
                    thread_states(broker.child.id())
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn listening(&self) -> bool {
        if TcpStream::connect(&self.addr).is_err() {
            return false;
        }
        match &self.kafka_addr {
            None => true,
            // The start-up line comes after every listener is bound, so a connect that
            // succeeds before it may be another process's port.
            Some(kafka) => {
                self.stderr().contains("tidelog: serving") && TcpStream::connect(kafka).is_ok()
            }
        }
    }

    /// The settings it runs with: pass them to [`Broker::start_with`] to restart on the same
    /// ports.
    pub fn serve(&self) -> Serve {
        self.serve.clone()
    }

    /// The Kafka bootstrap address (panics if the test did not ask for a listener).
    pub fn kafka(&self) -> &str {
        self.kafka_addr
            .as_deref()
            .expect("started with a Kafka listener")
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the broker's log if the process has exited.
    pub fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("broker died ({status}) after {after}: {}", self.stderr());
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill only sends a signal to our own child process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "broker did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays, answering nothing, until [`Broker::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM, and the broker must say it stopped cleanly and exit 0.
    pub fn stop(mut self) -> PathBuf {
        self.signal(libc::SIGTERM);
        let status = self.wait(Duration::from_secs(60));
        let stderr = self.stderr();
        assert!(status.success(), "broker exited with {status}: {stderr}");
        assert!(stderr.contains("stopped cleanly"), "{stderr}");
        self.dir.clone()
    }

    /// Waits up to `within` for the broker to exit by itself; returns its status.
    pub fn exits_within(&mut self, within: Duration) -> ExitStatus {
        self.wait(within)
    }

    /// The broker's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    pub fn kill_9(mut self) -> PathBuf {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(30));
        self.dir.clone()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Each thread of process `pid` as "name state wchan", to tell a hang at start-up apart from
/// a slow start when a broker does not listen in time.
fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(no /proc entry)".into();
    };
    let mut lines = Vec::new();
    for task in tasks.filter_map(Result::ok) {
        let path = task.path();
        let read = |name: &str| {
            std::fs::read_to_string(path.join(name))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let state = read("stat")
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default();
        lines.push(format!("{} {} {}", read("comm"), state, read("wchan")));
    }
    lines.sort();
    lines.join("\n")
}
