//! Fault injection in the spirit of Jepsen: three `tidelog serve` nodes, each in its own
//! network namespace (`ip netns` + veth on a bridge), while real clients
//! (`tests/kafka/faults_workload.py`, librdkafka) write with an idempotent acks=all producer
//! and read with a consumer. A seeded nemesis kills (-9), stops (SIGSTOP), restarts and cuts
//! nodes off (a node isolated from both others, often a partition leader; one-way loss; two
//! nodes cut apart while the third sees both), one fault at a time. Then every fault heals
//! and the checker asserts on the clients' history:
//!
//! - no acknowledged record is lost, and none is in the log twice (idempotence);
//! - each partition's log holds its producer's records in the order they were sent;
//! - nothing the live consumer read is missing from, or different in, the final log (no
//!   lost reads after a failover), and the offsets it was handed only go up;
//! - the cluster heals: every partition has its three in-sync replicas again, and writes are
//!   acknowledged after the faults stop;
//! - the producer never hit a fatal (idempotence) error.
//!
//! Needs root (network namespaces); skipped otherwise, as CI runs as root. The README's test
//! command runs a short schedule; a long one:
//! `TIDELOG_FAULTS=100 TIDELOG_FAULT_SEED=7 cargo test -p tidelog-tests --test it faults -- --nocapture`.
//! Partitions are silent: `ip rule ... blackhole` at the receiver drops packets without an
//! answer, as a cut cable does (a blackhole route at the sender would fail sends at once).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::broker_process::{serial, Broker, Kafka, Serve, BIN};
use crate::cluster::wait_for;
use crate::kafka_clients::{clients, python, run_bounded};

const NODES: usize = 3;
const SUBNET: &str = "10.231.77";
const TOPIC: &str = "faults";
const PARTITIONS: usize = 3;
/// Ports inside each node's own namespace: nothing else listens there.
const NATIVE_PORT: u16 = 9400;
const KAFKA_PORT: u16 = 9401;
const PEER_PORT: u16 = 9403;

fn node_ip(n: usize) -> String {
    format!("{SUBNET}.{}", n + 1)
}

fn ns(n: usize) -> String {
    format!("tlf{}", n + 1)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three namespaces on a bridge in this one; removed when dropped.
struct Net;

impl Net {
    const BRIDGE: &'static str = "tlfbr";

    fn teardown() {
        for n in 0..NODES {
            let _ = ip(&["netns", "del", &ns(n)]);
        }
        let _ = ip(&["link", "del", Net::BRIDGE]);
    }

    /// None (with the reason) where namespaces cannot be made here.
    fn setup() -> Result<Net, String> {
        Net::teardown();
        let host = format!("{SUBNET}.254/24");
        ip(&["link", "add", Net::BRIDGE, "type", "bridge"])?;
        let net = Net;
        ip(&["addr", "add", &host, "dev", Net::BRIDGE])?;
        ip(&["link", "set", Net::BRIDGE, "up"])?;
        for n in 0..NODES {
            let name = ns(n);
            let veth = format!("{name}h");
            ip(&["netns", "add", &name])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ])?;
            ip(&["link", "set", &veth, "master", Net::BRIDGE, "up"])?;
            let addr = format!("{}/24", node_ip(n));
            ip(&["-n", &name, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            // The local table answers first by default, before any rule could drop a
            // packet addressed here: move it behind the fault rules (preference 10).
            ip(&["-n", &name, "rule", "add", "pref", "100", "lookup", "local"])?;
            ip(&["-n", &name, "rule", "del", "pref", "0"])?;
        }
        Ok(net)
    }

    /// Packets from node `from` to node `to` are dropped silently, at `to`.
    fn drop_from(&self, from: usize, to: usize) {
        let src = node_ip(from);
        ip(&[
            "-n",
            &ns(to),
            "rule",
            "add",
            "pref",
            "10",
            "from",
            &src,
            "blackhole",
        ])
        .expect("add a drop rule");
    }

    fn heal(&self) {
        for n in 0..NODES {
            while ip(&["-n", &ns(n), "rule", "del", "pref", "10"]).is_ok() {}
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::teardown();
    }
}

/// splitmix64: the schedule is a function of the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9, restarted when the fault heals.
    Kill(usize),
    /// SIGTERM, started again when the fault heals.
    Restart(usize),
    /// SIGSTOP, SIGCONT when the fault heals.
    Pause(usize),
    /// Cut off from both other nodes, both ways (clients still reach it).
    Isolate(usize),
    /// Packets from the first to the second node are lost; the other way works.
    OneWay(usize, usize),
    /// The two nodes cannot reach each other; the third reaches both.
    Bridge(usize, usize),
}

struct Cluster<'a> {
    dir: &'a Path,
    peers: String,
    nodes: Vec<Option<Broker>>,
    runs: Vec<usize>,
}

impl Cluster<'_> {
    fn start(&mut self, n: usize) {
        let mut serve = Serve::new();
        serve.shards = 1;
        serve.netns = Some(ns(n));
        serve.native_addr = format!("{}:{NATIVE_PORT}", node_ip(n));
        serve.kafka = Kafka::At(format!("{}:{KAFKA_PORT}", node_ip(n)));
        serve.extra = [
            "--node-id",
            &(n + 1).to_string(),
            "--peers",
            &self.peers,
            "--min-insync-replicas",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let broker = Broker::start_with(&self.dir.join(format!("n{}", n + 1)), self.runs[n], serve);
        self.runs[n] += 1;
        self.nodes[n] = Some(broker);
    }

    /// Every node's log of every run, as `(node index, run, text)`.
    fn run_logs(&self) -> Vec<(usize, usize, String)> {
        (0..NODES)
            .flat_map(|n| (0..self.runs[n]).map(move |run| (n, run)))
            .map(|(n, run)| {
                let log = self
                    .dir
                    .join(format!("n{}", n + 1))
                    .with_extension(format!("serve-{run}.log"));
                (n, run, std::fs::read_to_string(&log).unwrap_or_default())
            })
            .collect()
    }

    /// How often the nodes' logs (every run) say each of `events`.
    fn count(&self, events: &[&'static str]) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = events.iter().map(|e| (*e, 0)).collect();
        for (_, _, text) in self.run_logs() {
            for (event, count) in &mut counts {
                *count += text.matches(*event).count();
            }
        }
        counts
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (n, run, text) in self.run_logs() {
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            all.push_str(&format!("----- node {} run {run} (last lines)\n", n + 1));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

fn bootstrap() -> String {
    (0..NODES)
        .map(|n| format!("{}:{KAFKA_PORT}", node_ip(n)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `tidelog cluster status --json`, or None if no node answered.
fn status() -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["cluster", "status", "--json", "--bootstrap", &bootstrap()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The node leading a random partition, as some node's metadata says.
fn some_leader(rng: &mut Rng) -> Option<usize> {
    let status = status()?;
    let p = rng.below(PARTITIONS);
    let id = status["leaders"][format!("{TOPIC}-{p}")].as_i64()?;
    usize::try_from(id / 1024).ok()?.checked_sub(1)
}

fn pick(rng: &mut Rng) -> Fault {
    let target = |rng: &mut Rng| {
        // Half the time the leader of a partition: the interesting victim.
        if rng.below(2) == 0 {
            if let Some(n) = some_leader(rng) {
                return n;
            }
        }
        rng.below(NODES)
    };
    let pair = |rng: &mut Rng| {
        let a = rng.below(NODES);
        (a, (a + 1 + rng.below(NODES - 1)) % NODES)
    };
    match rng.below(6) {
        0 => Fault::Kill(target(rng)),
        1 => Fault::Restart(target(rng)),
        2 => Fault::Pause(target(rng)),
        3 => Fault::Isolate(target(rng)),
        4 => {
            let (a, b) = pair(rng);
            Fault::OneWay(a, b)
        }
        _ => {
            let (a, b) = pair(rng);
            Fault::Bridge(a, b)
        }
    }
}

fn apply(fault: Fault, cluster: &mut Cluster, net: &Net) {
    match fault {
        Fault::Kill(n) => {
            cluster.nodes[n].take().expect("runs").kill_9();
        }
        Fault::Restart(n) => {
            cluster.nodes[n].take().expect("runs").stop();
        }
        Fault::Pause(n) => cluster.nodes[n].as_ref().expect("runs").pause(),
        Fault::Isolate(n) => {
            for m in (0..NODES).filter(|&m| m != n) {
                net.drop_from(n, m);
                net.drop_from(m, n);
            }
        }
        Fault::OneWay(a, b) => net.drop_from(a, b),
        Fault::Bridge(a, b) => {
            net.drop_from(a, b);
            net.drop_from(b, a);
        }
    }
}

fn heal(fault: Fault, cluster: &mut Cluster, net: &Net) {
    match fault {
        Fault::Kill(n) | Fault::Restart(n) => cluster.start(n),
        Fault::Pause(n) => cluster.nodes[n].as_ref().expect("runs").resume(),
        Fault::Isolate(_) | Fault::OneWay(..) | Fault::Bridge(..) => net.heal(),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A partition's records as `(offset, value)` from a history list.
fn records(list: &serde_json::Value) -> Vec<(i64, String)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r[0].as_i64().expect("offset"),
                r[1].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

/// Acknowledgement gaps of a partition longer than this are reported as write pauses.
const PAUSE_REPORTED_S: f64 = 1.0;

/// The producer's sequence number in a value `P-SEQ` of partition `p`.
fn seq(value: &str, p: usize) -> Option<u64> {
    let (part, seq) = value.split_once('-')?;
    (part == p.to_string()).then_some(())?;
    seq.parse().ok()
}

/// What the checker found wrong (empty: nothing), and a summary line.
fn check(history: &serde_json::Value, healed_at: f64) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let (mut acked_total, mut failed_total, mut observed_total, mut final_total) = (0, 0, 0, 0);
    let mut commits_total = 0;
    // Gaps between a partition's acknowledgements (the producer sends 50 a second): how long
    // writes stalled while a fault lasted and a new leader took over.
    let mut pauses: Vec<f64> = Vec::new();
    for fatal in history["fatal"].as_array().into_iter().flatten() {
        problems.push(format!("fatal client error: {fatal}"));
    }
    for p in 0..PARTITIONS {
        let key = p.to_string();
        let log = records(&history["final"][&key]);
        final_total += log.len();
        let at: HashMap<i64, &str> = log.iter().map(|(o, v)| (*o, v.as_str())).collect();
        let mut where_: HashMap<&str, i64> = HashMap::new();
        let mut last: Option<(i64, u64)> = None;
        for (offset, value) in &log {
            let Some(s) = seq(value, p) else {
                problems.push(format!("p{p}@{offset}: {value:?} is not this partition's"));
                continue;
            };
            if where_.insert(value.as_str(), *offset).is_some() {
                problems.push(format!("p{p}: {value} is in the log twice"));
            }
            if let Some((o, prev)) = last {
                if *offset <= o {
                    problems.push(format!("p{p}: offset {offset} after {o} in the log"));
                }
                if s <= prev {
                    problems.push(format!(
                        "p{p}@{offset}: {value} after sequence {prev} (reordered or duplicated)"
                    ));
                }
            }
            last = Some((*offset, s));
        }
        let acked = history["acked"][&key].as_array().expect("acked list");
        acked_total += acked.len();
        failed_total += history["failed"][&key].as_array().map_or(0, Vec::len);
        let mut after_heal = 0;
        let mut previous: Option<f64> = None;
        for ack in acked {
            let value = ack[0].as_str().expect("value");
            if !where_.contains_key(value) {
                problems.push(format!("p{p}: acknowledged {value} is lost"));
            }
            let at = ack[1].as_f64().expect("time");
            if at > healed_at {
                after_heal += 1;
            }
            if let Some(before) = previous {
                if at - before > PAUSE_REPORTED_S {
                    pauses.push(at - before);
                }
            }
            previous = Some(at);
        }
        if after_heal == 0 {
            problems.push(format!(
                "p{p}: nothing acknowledged after the faults healed"
            ));
        }
        // Every acknowledged commit survives the coordinators' failovers: the group's
        // position at the end is at least the last one acknowledged (the live consumer
        // commits positions that only go up), and no further than the log.
        let commits = history["commits"][&key].as_array().expect("commits list");
        if let Some(last) = commits.last().and_then(serde_json::Value::as_i64) {
            let end = log.last().map_or(0, |(o, _)| o + 1);
            match history["committed"][&key].as_i64() {
                Some(c) if c >= last && c <= end => {}
                other => problems.push(format!(
                    "p{p}: the group committed {last} (acknowledged) but ends at {other:?} \
                     (log end {end})"
                )),
            }
        }
        commits_total += commits.len();
        let observed = records(&history["observed"][&key]);
        observed_total += observed.len();
        let mut last = None;
        for (offset, value) in &observed {
            if last.is_some_and(|o| *offset <= o) {
                problems.push(format!(
                    "p{p}: the consumer was handed offset {offset} after {}",
                    last.unwrap_or_default()
                ));
            }
            last = Some(*offset);
            match at.get(offset) {
                Some(v) if v == value => {}
                Some(v) => problems.push(format!(
                    "p{p}@{offset}: the consumer read {value}, the log now has {v}"
                )),
                None => problems.push(format!(
                    "p{p}@{offset}: the consumer read {value}, now gone from the log (lost read)"
                )),
            }
        }
    }
    problems.truncate(50);
    pauses.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let i = ((pauses.len() as f64 * q).ceil() as usize).clamp(1, pauses.len().max(1)) - 1;
        pauses.get(i).copied().unwrap_or(0.0)
    };
    let pauses = format!(
        "write pauses over {PAUSE_REPORTED_S} s: {} (p50 {:.1} s, p99 {:.1} s, max {:.1} s)",
        pauses.len(),
        quantile(0.5),
        quantile(0.99),
        pauses.last().copied().unwrap_or(0.0)
    );
    let summary = format!(
        "acknowledged {acked_total}, failed {failed_total}, read live {observed_total}, \
         in the log {final_total}, group commits acknowledged {commits_total}; {pauses}"
    );
    (problems, summary)
}

/// Copies the nodes' logs, the clients' history and the workload's output out of the test
/// directory (removed when the test ends) to the target's temporary directory; says where.
fn keep_evidence(work: &Path, seed: u64) -> String {
    let to = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-evidence-{seed}-{}", std::process::id()));
    if std::fs::create_dir_all(&to).is_err() {
        return String::new();
    }
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".log") || name.starts_with("history") || name.starts_with("workload") {
            let _ = std::fs::copy(entry.path(), to.join(&*name));
        }
    }
    format!("\nlogs and history kept in {}", to.display())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `cluster status` until every node is listed and every partition has a leader and
/// all its replicas in sync.
fn wait_healthy(within: Duration, cluster: &Cluster) {
    let deadline = Instant::now() + within;
    loop {
        let healthy = status().is_some_and(|s| {
            s["brokers"].as_array().map(Vec::len) == Some(NODES)
                && s["offline"] == serde_json::json!([])
                && s["under_replicated"] == serde_json::json!([])
                // The topic's partitions and the committed-offsets slots.
                && s["partitions"] == PARTITIONS + 16
        });
        if healthy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not heal within {within:?}: {:?}\n{}",
            status(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stop_workload(mut child: Child, work: &Path, cluster: &Cluster) -> serde_json::Value {
    std::fs::write(work.join("stop"), b"").expect("stop file");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the workload did not finish: {}\n{}",
                std::fs::read_to_string(work.join("workload.err")).unwrap_or_default(),
                cluster.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "workload: {status}: {}",
        std::fs::read_to_string(work.join("workload.err")).unwrap_or_default()
    );
    let text = std::fs::read_to_string(work.join("history.json")).expect("history");
    serde_json::from_str(&text).expect("history is JSON")
}

#[test]
fn faults_in_network_namespaces_lose_no_acknowledged_record() {
    let _serial = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("faults: skipped (network namespaces need root; CI runs as root)");
        return;
    }
    let Some(c) = clients() else {
        return;
    };
    let net = match Net::setup() {
        Ok(net) => net,
        Err(e) if e.contains("Operation not permitted") => {
            eprintln!("faults: skipped (no network namespaces here: {e})");
            return;
        }
        Err(e) => panic!("network namespaces: {e}"),
    };
    let faults: usize = env_or("TIDELOG_FAULTS", 6);
    // A fixed schedule by default, so that the README's test command is repeatable; long
    // runs pass their own seeds.
    let seed: u64 = env_or("TIDELOG_FAULT_SEED", 1);
    eprintln!("faults: {faults} faults, seed {seed} (TIDELOG_FAULT_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let dir = crate::test_dir("faults");
    let work = dir.path();
    let peers = (0..NODES)
        .map(|n| format!("{}@{}:{PEER_PORT}", n + 1, node_ip(n)))
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster {
        dir: work,
        peers,
        nodes: (0..NODES).map(|_| None).collect(),
        runs: vec![0; NODES],
    };
    for n in 0..NODES {
        cluster.start(n);
    }
    for b in cluster.nodes.iter().flatten() {
        wait_for(
            b,
            "node registered in the cluster metadata",
            Duration::from_secs(30),
        );
    }
    let partitions = PARTITIONS.to_string();
    let created = run_bounded(
        python(
            c,
            "faults_workload.py",
            &["create", &bootstrap(), TOPIC, &partitions],
        ),
        None,
        Duration::from_secs(90),
        work,
    );
    assert!(
        created.status.success(),
        "create: {}\n{}",
        created.stderr,
        cluster.logs()
    );
    wait_healthy(Duration::from_secs(60), &cluster);
    let workdir = work.display().to_string();
    let workload = python(
        c,
        "faults_workload.py",
        &["run", &bootstrap(), TOPIC, &partitions, &workdir],
    )
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(work.join("workload.out")).expect("out file"))
    .stderr(std::fs::File::create(work.join("workload.err")).expect("err file"))
    .spawn()
    .expect("start the workload");
    std::thread::sleep(Duration::from_secs(3));

    let started = Instant::now();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for i in 0..faults {
        let fault = pick(&mut rng);
        let hold = rng.millis(1_000, 6_000);
        let gap = rng.millis(500, 3_000);
        eprintln!(
            "faults: [{:>6.1}s] #{i} {fault:?} for {hold:?}",
            started.elapsed().as_secs_f64()
        );
        let kind = match fault {
            Fault::Kill(_) => "kill -9",
            Fault::Restart(_) => "restart",
            Fault::Pause(_) => "SIGSTOP",
            Fault::Isolate(_) => "isolate",
            Fault::OneWay(..) => "one-way",
            Fault::Bridge(..) => "bridge",
        };
        *counts.entry(kind).or_default() += 1;
        apply(fault, &mut cluster, &net);
        std::thread::sleep(hold);
        heal(fault, &mut cluster, &net);
        std::thread::sleep(gap);
    }
    let faulted = started.elapsed();
    wait_healthy(Duration::from_secs(90), &cluster);
    let healed_at = unix_now();
    eprintln!(
        "faults: healed {:.1}s after the last fault",
        (started.elapsed() - faulted).as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(4));
    let history = stop_workload(workload, work, &cluster);
    let (problems, summary) = check(&history, healed_at);
    let errors = history["errors"].as_array().map_or(0, Vec::len);
    eprintln!(
        "faults: seed {seed}, {faults} faults in {:.0}s {counts:?}; {summary}; {errors} client \
         errors logged",
        faulted.as_secs_f64()
    );
    eprintln!(
        "faults: the nodes logged {:?}",
        cluster.count(&[
            "leading a replicated partition",
            "metadata leader changed",
            "node not heard from: fenced",
            "replica diverges from its leader: truncating",
            "followers lagging: removed from the in-sync set",
            "follower caught up: added to the in-sync set",
        ])
    );
    let kept = if problems.is_empty() {
        String::new()
    } else {
        keep_evidence(work, seed)
    };
    assert!(
        problems.is_empty(),
        "seed {seed}: {}\nclient errors: {}\n{}{kept}",
        problems.join("\n"),
        history["errors"],
        cluster.logs()
    );
    for b in cluster.nodes.into_iter().flatten() {
        b.stop();
    }
    drop(net);
}

#[cfg(test)]
mod checker {
    use super::check;
    use serde_json::json;

    fn history(final_: serde_json::Value, observed: serde_json::Value) -> serde_json::Value {
        json!({
            "acked": {"0": [["0-000000001", 10.0], ["0-000000002", 20.0]], "1": [["1-000000001", 20.0]], "2": [["2-000000001", 20.0]]},
            "failed": {"0": [], "1": [], "2": []},
            "observed": observed,
            "final": final_,
            "commits": {"0": [1], "1": [], "2": []},
            "committed": {"0": 1, "1": -1001, "2": -1001},
            "fatal": [],
            "errors": [],
        })
    }

    fn good_final() -> serde_json::Value {
        json!({"0": [[0, "0-000000001"], [1, "0-000000002"]], "1": [[0, "1-000000001"]], "2": [[0, "2-000000001"]]})
    }

    #[test]
    fn a_clean_history_passes() {
        let observed = json!({"0": [[0, "0-000000001"]], "1": [], "2": []});
        let (problems, _) = check(&history(good_final(), observed), 15.0);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn each_anomaly_is_found() {
        let none = json!({"0": [], "1": [], "2": []});
        // Lost acknowledged record.
        let lost = json!({"0": [[0, "0-000000001"]], "1": [[0, "1-000000001"]], "2": [[0, "2-000000001"]]});
        let (p, _) = check(&history(lost, none.clone()), 15.0);
        assert!(p.iter().any(|s| s.contains("is lost")), "{p:?}");
        // Duplicate and reorder.
        let dup = json!({"0": [[0, "0-000000001"], [1, "0-000000002"], [2, "0-000000001"]], "1": [[0, "1-000000001"]], "2": [[0, "2-000000001"]]});
        let (p, _) = check(&history(dup, none.clone()), 15.0);
        assert!(p.iter().any(|s| s.contains("twice")), "{p:?}");
        // Lost read, and a consumer handed an offset twice.
        let observed = json!({"0": [[1, "0-000000009"], [1, "0-000000002"]], "1": [[5, "1-000000001"]], "2": []});
        let (p, _) = check(&history(good_final(), observed), 15.0);
        assert!(p.iter().any(|s| s.contains("the log now has")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("after 1")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("lost read")), "{p:?}");
        // Nothing acknowledged after healing.
        let (p, _) = check(&history(good_final(), none.clone()), 25.0);
        assert!(
            p.iter().any(|s| s.contains("after the faults healed")),
            "{p:?}"
        );
        // An acknowledged commit lost.
        let mut lost_commit = history(good_final(), none);
        lost_commit["committed"]["0"] = json!(0);
        let (p, _) = check(&lost_commit, 15.0);
        assert!(
            p.iter().any(|s| s.contains("the group committed 1")),
            "{p:?}"
        );
    }
}
