//! Three `tidelog serve` processes as one cluster on 127.0.0.1, .2 and .3 (one shard each),
//! driven by kafka-python (`tests/kafka/cluster_basic.py`): the metadata Raft elects a leader
//! and every node registers; a topic created through one node is placed over all three, every
//! node reports the same leaders, and records produced through one node (idempotent,
//! acks=all) are read back through another exactly once and in order, with the group's
//! commit kept; with one node killed (-9) the other two still commit topic changes, and the
//! killed node, restarted, catches up and serves its partitions of the topic created while it
//! was down; after the whole cluster restarts, every topic and record is back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::broker_process::{free_ports_below_ephemeral, serial, Broker, Kafka, Serve};
use crate::kafka_clients::{clients, python, run_bounded};

/// The Kafka broker id of a node's shard 0 (node * 1024).
pub fn cluster_id(node: i32) -> i32 {
    node * 1024
}

fn node(dir: &Path, n: usize, base: u16, peers: &str, run: usize) -> Broker {
    node_with(dir, n, base, peers, run, &[])
}

fn node_with(dir: &Path, n: usize, base: u16, peers: &str, run: usize, extra: &[&str]) -> Broker {
    let ip = format!("127.0.0.{n}");
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.native_addr = format!("{ip}:{base}");
    serve.kafka = Kafka::At(format!("{ip}:{}", base + 1));
    serve.extra = vec![
        "--node-id".into(),
        n.to_string(),
        "--peers".into(),
        peers.into(),
        "--group-initial-rebalance-delay-ms".into(),
        "300".into(),
    ];
    serve.extra.extend(extra.iter().map(|s| (*s).to_owned()));
    Broker::start_with(&dir.join(format!("n{n}")), run, serve)
}

/// Waits until `broker`'s log has `line`.
pub(crate) fn wait_for(broker: &Broker, line: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !broker.stderr().contains(line) {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in time: {}",
            broker.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn script(args: &[&str], work: &Path, logs: &[&Broker]) -> serde_json::Value {
    run_script("cluster_basic.py", args, work, logs)
}

fn run_script(name: &str, args: &[&str], work: &Path, logs: &[&Broker]) -> serde_json::Value {
    run_script_env(name, args, &[], work, logs)
}

fn run_script_env(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    work: &Path,
    logs: &[&Broker],
) -> serde_json::Value {
    let c = clients().expect("clients");
    let mut cmd: Command = python(c, name, args);
    cmd.envs(env.iter().copied());
    let ran = run_bounded(cmd, None, Duration::from_secs(120), work);
    let all_logs: Vec<String> = logs.iter().map(|b| b.stderr()).collect();
    assert!(
        ran.status.success(),
        "{name} {args:?}: {}\nstdout:\n{}\nstderr:\n{}\nnode logs:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr,
        all_logs.join("\n-----\n")
    );
    serde_json::from_str(ran.stdout.lines().last().unwrap_or("{}")).expect("json")
}

/// `tidelog cluster status --json` against one bootstrap address.
fn cluster_status(bootstrap: &str) -> serde_json::Value {
    let out = Command::new(crate::broker_process::BIN)
        .args(["cluster", "status", "--json", "--bootstrap", bootstrap])
        .output()
        .expect("run tidelog cluster status");
    assert!(
        out.status.success(),
        "tidelog cluster status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

/// Node 3 was fenced (its partitions went offline: epoch + 1) and came back (it leads them
/// again: epoch + 1), so Metadata reports a leader epoch of at least 2 for them, and
/// OffsetForLeaderEpoch on node 3 answers from its leader-epoch cache: the old epoch ends
/// where the new one starts (after the 100 records written before), the current one at the
/// log end, and an epoch above every known one is undefined.
fn node3_partitions_answer_their_leader_epochs(base: u16) {
    use crate::kafka_protocol::Conn;
    use tidelog_wire::kafka::generated::{
        metadata_request::{MetadataRequest, MetadataRequestTopic},
        metadata_response::MetadataResponse,
        offset_for_leader_epoch_request::{
            OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
        },
        offset_for_leader_epoch_response::OffsetForLeaderEpochResponse,
    };
    use tidelog_wire::kafka::Decoder;
    let mut conn = Conn::open(&format!("127.0.0.1:{}", base + 1));
    let request = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: Some("spread".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let body = conn.call(3, 9, |b| request.encode(b, 9).expect("encode"));
    let metadata = MetadataResponse::decode(&mut Decoder::new(&body), 9).expect("decode");
    let node3 = cluster_id(3);
    let led: Vec<(i32, i32)> = metadata.topics[0]
        .partitions
        .iter()
        .filter(|p| p.leader_id == node3)
        .map(|p| (p.partition_index, p.leader_epoch))
        .collect();
    assert_eq!(
        led.len(),
        2,
        "node 3 leads two of six partitions: {metadata:?}"
    );
    let mut on_node3 = Conn::open(&format!("127.0.0.3:{}", base + 2));
    for (partition, epoch) in led {
        assert!(epoch >= 2, "fenced and back: epoch {epoch}");
        for (asked, want) in [(0, (0, 100)), (epoch, (epoch, 100)), (epoch + 3, (-1, -1))] {
            let request = OffsetForLeaderEpochRequest {
                replica_id: -1,
                topics: vec![OffsetForLeaderTopic {
                    topic: "spread".into(),
                    partitions: vec![OffsetForLeaderPartition {
                        partition,
                        current_leader_epoch: -1,
                        leader_epoch: asked,
                    }],
                }],
            };
            let body = on_node3.call(23, 4, |b| request.encode(b, 4).expect("encode"));
            let answer =
                OffsetForLeaderEpochResponse::decode(&mut Decoder::new(&body), 4).expect("decode");
            let got = &answer.topics[0].partitions[0];
            assert_eq!(got.error_code, 0, "{answer:?}");
            assert_eq!(
                (got.leader_epoch, got.end_offset),
                (want.0, want.1),
                "partition {partition}, epoch {asked} asked"
            );
        }
    }
}

#[test]
fn three_nodes_place_topics_over_all_and_survive_a_node_kill() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster");
    let base = free_ports_below_ephemeral(4);
    let peer_port = base + 3;
    let peers = format!("1@127.0.0.1:{peer_port},2@127.0.0.2:{peer_port},3@127.0.0.3:{peer_port}");
    let mut nodes: Vec<Broker> = (1..=3)
        .map(|n| node(dir.path(), n, base, &peers, 0))
        .collect();
    for b in &nodes {
        wait_for(
            b,
            "node registered in the cluster metadata",
            Duration::from_secs(30),
        );
    }
    let addrs: Vec<String> = (1..=3)
        .map(|n| format!("127.0.0.{n}:{}", base + 1))
        .collect();
    let addrs = addrs.join(",");
    let work = dir.path();
    let refs: Vec<&Broker> = nodes.iter().collect();
    let spread = script(&["spread", &addrs], work, &refs);
    assert_eq!(spread["leader_nodes"], 3, "{spread}");
    assert_eq!(spread["deleted_everywhere"], true, "{spread}");
    assert_eq!(spread["read"], 600, "{spread}");
    assert_eq!(
        spread["after_commit"], 0,
        "the group's commit was kept: {spread}"
    );
    assert_eq!(
        spread["rf2"], "accepted",
        "replication factor 2 of 3 nodes: {spread}"
    );
    assert_eq!(spread["rf4"], "refused", "4 replicas on 3 nodes: {spread}");

    // Node 3 dies; nodes 1 and 2 are a majority and still commit metadata.
    let dead = nodes.pop().expect("node 3");
    dead.kill_9();
    // The metadata leader fences it once it has not been heard from for 2 s: Metadata then
    // leaves it out, so clients do not try it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes
        .iter()
        .any(|b| b.stderr().contains("node not heard from: fenced"))
    {
        assert!(Instant::now() < deadline, "node 3 was never fenced");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `tidelog cluster status` sees two brokers and node 3's partitions offline.
    let status = cluster_status(&format!("127.0.0.1:{}", base + 1));
    assert_eq!(
        status["brokers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let offline: Vec<String> = status["offline"]
        .as_array()
        .expect("offline list")
        .iter()
        .map(|p| p["partition"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        offline.iter().filter(|p| p.starts_with("spread-")).count(),
        2,
        "node 3 led two of spread's partitions: {status}"
    );
    let two: Vec<&Broker> = nodes.iter().collect();
    let first_two = addrs.split(',').take(2).collect::<Vec<_>>().join(",");
    let created = script(&["create", &first_two, "during"], work, &two);
    assert_eq!(created["created"], "during");

    // Restarted, node 3 learns of the topic from the leader and opens its partition.
    let back = node(dir.path(), 3, base, &peers, 1);
    wait_for(
        &back,
        "metadata: topic created topic=\"during\"",
        Duration::from_secs(30),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes
        .iter()
        .any(|b| b.stderr().contains("node heard again: unfenced"))
    {
        assert!(Instant::now() < deadline, "node 3 was never unfenced");
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes.push(back);
    let refs: Vec<&Broker> = nodes.iter().collect();
    let read = script(&["readback", &addrs, "during"], work, &refs);
    assert_eq!(read["read"], 150, "{read}");
    node3_partitions_answer_their_leader_epochs(base);
    let status = cluster_status(&format!("127.0.0.2:{}", base + 1));
    assert_eq!(
        status["brokers"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(status["offline"], serde_json::json!([]), "{status}");

    // The whole cluster stops and starts again: the metadata (topics, placement) comes back
    // from each node's Raft log, and every record with it.
    let dirs: Vec<_> = nodes.into_iter().map(Broker::stop).collect();
    assert_eq!(dirs.len(), 3);
    let nodes: Vec<Broker> = (1..=3)
        .map(|n| node(dir.path(), n, base, &peers, 2))
        .collect();
    for b in &nodes {
        wait_for(b, "metadata leader changed", Duration::from_secs(30));
        wait_for(b, "shard recovered its partitions", Duration::from_secs(30));
    }
    let refs: Vec<&Broker> = nodes.iter().collect();
    let counts = script(&["count", &addrs, "spread"], work, &refs);
    assert_eq!(
        counts["counts"],
        serde_json::json!([100, 100, 100, 100, 100, 100]),
        "{counts}"
    );
    let counts = script(&["count", &addrs, "during"], work, &refs);
    assert_eq!(
        counts["counts"],
        serde_json::json!([50, 50, 50]),
        "{counts}"
    );
    for b in nodes {
        b.stop();
    }
}

/// The string values a `cluster_replicated.py` answer lists under `key` ("acked", "read") for
/// a partition.
fn values(answer: &serde_json::Value, key: &str, partition: usize) -> Vec<String> {
    answer[key][partition.to_string()]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} list: {answer}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Where a three-node test cluster listens: ports from `base` (native, Kafka bootstrap, Kafka
/// node ports, peers) on 127.0.0.1, .2 and .3.
struct Layout {
    base: u16,
    peers: String,
    /// The Kafka bootstrap addresses, comma-separated.
    addrs: String,
}

impl Layout {
    fn new() -> Layout {
        let base = free_ports_below_ephemeral(4);
        let peer_port = base + 3;
        Layout {
            base,
            peers: format!(
                "1@127.0.0.1:{peer_port},2@127.0.0.2:{peer_port},3@127.0.0.3:{peer_port}"
            ),
            addrs: (1..=3)
                .map(|n| format!("127.0.0.{n}:{}", base + 1))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Starts all three nodes with `extra` flags and waits until each registered.
    fn start(&self, dir: &Path, extra: &[&str]) -> Vec<Option<Broker>> {
        let nodes: Vec<Option<Broker>> = (1..=3)
            .map(|n| Some(node_with(dir, n, self.base, &self.peers, 0, extra)))
            .collect();
        for b in nodes.iter().flatten() {
            wait_for(
                b,
                "node registered in the cluster metadata",
                Duration::from_secs(30),
            );
        }
        nodes
    }
}

/// Replicated partitions (replication factor 3, min.insync.replicas 2) on three nodes: the
/// leader of each partition in turn is killed (-9) between two rounds of idempotent acks=all
/// writes, and restarted once a new leader took over; a preferred-leader election then moves
/// leadership back to each partition's first replica (DescribeCluster and ElectLeaders through
/// librdkafka's admin client), and a last round is written; at the end every acknowledged
/// record is read back exactly once, in the order it was sent, from every partition.
#[test]
fn replicated_partitions_fail_over_without_losing_acknowledged_records() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-rep");
    let layout = Layout::new();
    let (base, peers, addrs) = (layout.base, layout.peers.clone(), layout.addrs.clone());
    let extra = ["--min-insync-replicas", "2"];
    let mut nodes = layout.start(dir.path(), &extra);
    let work = dir.path();
    let logs = |nodes: &[Option<Broker>]| -> Vec<String> {
        nodes.iter().flatten().map(Broker::stderr).collect()
    };
    let call = |nodes: &[Option<Broker>], args: &[&str]| {
        let refs: Vec<&Broker> = nodes.iter().flatten().collect();
        run_script("cluster_replicated.py", args, work, &refs)
    };
    call(&nodes, &["create", &addrs]);
    let mut acked: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut record = |answer: &serde_json::Value| {
        for (p, list) in acked.iter_mut().enumerate() {
            list.extend(values(answer, "acked", p));
        }
    };
    for round in 0..3usize {
        let answer = call(&nodes, &["produce", &addrs, &format!("r{round}a"), "50"]);
        record(&answer);
        let leader = call(&nodes, &["leader", &addrs, &round.to_string()])["leader"]
            .as_i64()
            .expect("leader id");
        let victim = usize::try_from(leader / 1024).expect("a node") - 1;
        let broker = nodes[victim].take().expect("the leader runs");
        broker.kill_9();
        // The others elect a new leader from the in-sync replicas and take writes again.
        let answer = call(&nodes, &["produce", &addrs, &format!("r{round}b"), "50"]);
        record(&answer);
        nodes[victim] = Some(node_with(
            dir.path(),
            victim + 1,
            base,
            &peers,
            round + 1,
            &extra,
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        while call(&nodes, &["isr", &addrs])["min_isr"] != 3 {
            assert!(
                Instant::now() < deadline,
                "node {} never rejoined every in-sync set: {}",
                victim + 1,
                logs(&nodes).join("\n-----\n")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // The kills left leaders off their preferred (first) replicas: a preferred-leader
    // election (ElectLeaders, through librdkafka's admin client) moves them back, and
    // writes go on.
    let refs: Vec<&Broker> = nodes.iter().flatten().collect();
    let elected = run_script("cluster_admin.py", &["elect", &addrs, "rep"], work, &refs);
    let ids = |key: &str| -> Vec<i64> {
        elected[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {elected}"))
            .iter()
            .map(|v| v.as_i64().expect("an id"))
            .collect()
    };
    assert_eq!(
        ids("brokers"),
        [1, 2, 3].map(|n| i64::from(cluster_id(n))),
        "DescribeCluster lists every node's shard: {elected}\n{}",
        logs(&nodes).join("\n-----\n")
    );
    let (before, preferred) = (ids("before"), ids("preferred"));
    assert!(
        before != preferred,
        "the kills moved some leader off its preferred replica: {elected}"
    );
    assert_eq!(ids("after"), preferred, "{elected}");
    for (p, code) in ids("results").into_iter().enumerate() {
        let want = if before[p] == preferred[p] { 84 } else { 0 };
        assert_eq!(
            code, want,
            "partition {p} (84: ELECTION_NOT_NEEDED): {elected}"
        );
    }
    let answer = call(&nodes, &["produce", &addrs, "elected", "50"]);
    record(&answer);
    // A topic config change through one node reaches every node's DescribeConfigs (the
    // metadata Raft carries it).
    let configured = run_script("cluster_admin.py", &["config", &addrs, "rep"], work, &refs);
    assert_eq!(
        configured["retention_ms"],
        serde_json::json!(["123456000", "123456000", "123456000"]),
        "{configured}"
    );
    assert_eq!(
        configured["source"],
        serde_json::json!([1, 1, 1]),
        "{configured}"
    );

    let read = call(&nodes, &["read", &addrs]);
    for (p, want) in acked.iter().enumerate() {
        assert_eq!(
            want.len(),
            350,
            "partition {p}: every send was acknowledged"
        );
        let got = values(&read, "read", p);
        let mut seen = std::collections::HashSet::new();
        for v in &got {
            assert!(seen.insert(v), "partition {p}: {v} read twice");
        }
        let positions: Vec<usize> = want
            .iter()
            .map(|v| {
                got.iter().position(|g| g == v).unwrap_or_else(|| {
                    panic!(
                        "partition {p}: acknowledged {v} is missing: {}",
                        logs(&nodes).join("\n-----\n")
                    )
                })
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: acknowledged records out of order"
        );
    }

    // DeleteRecords moves the start on the leader, and its followers follow at their next
    // fetch: after the leader dies, the new leader does not serve the deleted records again.
    let deleted = run_script(
        "cluster_admin.py",
        &["delete-records", &addrs, "rep", "0", "10"],
        work,
        &nodes.iter().flatten().collect::<Vec<_>>(),
    );
    assert_eq!(deleted["low"], 10, "{deleted}");
    std::thread::sleep(Duration::from_secs(3));
    let leader = call(&nodes, &["leader", &addrs, "0"])["leader"]
        .as_i64()
        .expect("leader id");
    let victim = usize::try_from(leader / 1024).expect("a node") - 1;
    nodes[victim].take().expect("the leader runs").kill_9();
    let refs: Vec<&Broker> = nodes.iter().flatten().collect();
    let after = run_script(
        "cluster_admin.py",
        &["low", &addrs, "rep", "0"],
        work,
        &refs,
    );
    assert_eq!(
        after["low"],
        10,
        "the new leader keeps the moved start: {after}\n{}",
        logs(&nodes).join("\n-----\n")
    );
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// A follower that was down while its leader's retention deleted what it would fetch next
/// starts over at the leader's log start, catches up and rejoins the in-sync set; after the
/// leader is then killed, the partition's newest records are still all there, once each.
#[test]
fn a_follower_behind_the_leaders_retention_starts_over_and_rejoins() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-ret");
    let layout = Layout::new();
    let (base, peers, addrs) = (layout.base, layout.peers.clone(), layout.addrs.clone());
    let extra = [
        "--segment-bytes",
        "1048576",
        "--preallocate-bytes",
        "1048576",
        "--retention-bytes",
        "2097152",
        "--retention-check-ms",
        "200",
    ];
    let mut nodes = layout.start(dir.path(), &extra);
    let env = [
        ("TOPIC", "ret"),
        ("PARTITIONS", "1"),
        ("RECORD_BYTES", "1000"),
    ];
    let work = dir.path();
    let call = |nodes: &[Option<Broker>], args: &[&str]| {
        let refs: Vec<&Broker> = nodes.iter().flatten().collect();
        run_script_env("cluster_replicated.py", args, &env, work, &refs)
    };
    call(&nodes, &["create", &addrs]);
    call(&nodes, &["produce", &addrs, "a", "2000"]);
    let leader = call(&nodes, &["leader", &addrs, "0"])["leader"]
        .as_i64()
        .expect("leader");
    let leader = usize::try_from(leader / 1024).expect("node") - 1;
    let follower = (leader + 1) % 3;
    nodes[follower].take().expect("runs").kill_9();
    let written = call(&nodes, &["produce", &addrs, "b", "8000"]);
    let acked = values(&written, "acked", 0);
    let tail: Vec<String> = acked[acked.len().saturating_sub(500)..].to_vec();
    assert_eq!(tail.len(), 500);
    let back = node_with(dir.path(), follower + 1, base, &peers, 1, &extra);
    wait_for(&back, "starting over there", Duration::from_secs(60));
    nodes[follower] = Some(back);
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(&nodes, &["isr", &addrs])["min_isr"] != 3 {
        assert!(Instant::now() < deadline, "the follower never rejoined");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The old leader goes: the newest records must be on whoever leads now.
    nodes[leader].take().expect("runs").kill_9();
    let read = call(&nodes, &["read", &addrs]);
    let got = values(&read, "read", 0);
    let mut seen = std::collections::HashSet::new();
    assert!(got.iter().all(|v| seen.insert(v)), "a record read twice");
    let from = got
        .iter()
        .position(|v| *v == tail[0])
        .expect("the newest records survive the leader's loss");
    assert_eq!(
        &got[from..from + tail.len()],
        &tail[..],
        "in order, none missing"
    );
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// `acks=all` means every in-sync replica fdatasynced the write: with both followers of a
/// partition stopped (SIGSTOP), no write is acknowledged (the followers are still in sync, or
/// once fenced the in-sync set is below min.insync.replicas), and once they resume every
/// later write is. Fails if the leader acknowledged on its own fdatasync.
#[test]
fn acks_all_is_never_answered_while_the_followers_are_stopped() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-stop");
    let layout = Layout::new();
    let addrs = layout.addrs.clone();
    let nodes = layout.start(dir.path(), &["--min-insync-replicas", "2"]);
    let work = dir.path();
    let env = [("TOPIC", "stop"), ("PARTITIONS", "1")];
    let call = |args: &[&str]| {
        let refs: Vec<&Broker> = nodes.iter().flatten().collect();
        run_script_env("cluster_replicated.py", args, &env, work, &refs)
    };
    call(&["create", &addrs]);
    let acked = |answer: &serde_json::Value| values(answer, "acked", 0);
    let before = acked(&call(&["produce", &addrs, "a", "20"]));
    assert_eq!(before.len(), 20);
    let leader = call(&["leader", &addrs, "0"])["leader"]
        .as_i64()
        .expect("leader");
    let leader = usize::try_from(leader / 1024).expect("node") - 1;
    let signal = |sig: libc::c_int| {
        for (i, b) in nodes.iter().enumerate() {
            if i != leader {
                let pid = libc::pid_t::try_from(b.as_ref().expect("runs").pid()).expect("pid");
                // SAFETY: kill only signals our own child process.
                assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
            }
        }
    };
    signal(libc::SIGSTOP);
    // Straight to the leader's shard (a client library would also ask the stopped nodes for
    // metadata and hang there): the acks=all write must not be acknowledged.
    let mut conn =
        crate::kafka_protocol::Conn::open(&format!("127.0.0.{}:{}", leader + 1, layout.base + 2));
    let answer = conn.produce_within(
        "stop",
        crate::kafka_protocol::Conn::plain_batch(5),
        Duration::from_secs(6),
    );
    signal(libc::SIGCONT);
    assert!(
        answer.is_none_or(|code| code != 0),
        "acks=all acknowledged while no follower could have the write: {answer:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(&["isr", &addrs])["min_isr"] != 3 {
        assert!(Instant::now() < deadline, "the followers never rejoined");
        std::thread::sleep(Duration::from_millis(300));
    }
    let after = acked(&call(&["produce", &addrs, "c", "20"]));
    assert_eq!(
        after.len(),
        20,
        "every write acknowledged once the followers are back"
    );
    let read = call(&["read", &addrs]);
    let got = values(&read, "read", 0);
    let mut seen = std::collections::HashSet::new();
    assert!(got.iter().all(|v| seen.insert(v)), "a record read twice");
    for v in before.iter().chain(&after) {
        assert!(got.contains(v), "acknowledged {v} missing");
    }
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// A group commit in a cluster is answered only once every in-sync replica of the group's
/// offsets slot has it (as an acks=all write): with both followers of the coordinator
/// stopped (SIGSTOP), an OffsetCommit sent straight to the coordinator gets no success
/// answer; once they run again, commits are answered and read back. Fails when the
/// coordinator answers after its own fdatasync only.
#[test]
fn a_group_commit_is_not_answered_while_its_offsets_followers_are_stopped() {
    use tidelog_wire::kafka::generated::{
        offset_commit_request::{
            OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        },
        offset_commit_response::OffsetCommitResponse,
    };
    use tidelog_wire::kafka::Decoder;
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-commit-stop");
    let layout = Layout::new();
    let addrs = layout.addrs.clone();
    let nodes = layout.start(dir.path(), &["--min-insync-replicas", "2"]);
    let work = dir.path();
    let refs: Vec<&Broker> = nodes.iter().flatten().collect();
    run_script("cluster_replicated.py", &["create", &addrs], work, &refs);
    let group = "held";
    let kafka = |n: usize| format!("127.0.0.{}:{}", n + 1, layout.base + 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let coordinator = loop {
        if let Some(id) = coordinator_of(&kafka(0), group) {
            break usize::try_from(id / 1024).expect("a node") - 1;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The slot's in-sync set must hold all three before the followers stop.
    let commit_to = |coordinator: usize, offset: i64, wait: Duration| -> Option<i16> {
        let request = OffsetCommitRequest {
            group_id: group.into(),
            topics: vec![OffsetCommitRequestTopic {
                name: "rep".into(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: offset,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        let mut conn = crate::kafka_protocol::Conn::open(&format!(
            "127.0.0.{}:{}",
            coordinator + 1,
            layout.base + 2
        ));
        let body = conn.call_within(8, 2, |b| request.encode(b, 2).expect("encode"), wait)?;
        let answer = OffsetCommitResponse::decode(&mut Decoder::new(&body), 2).expect("decode");
        Some(answer.topics[0].partitions[0].error_code)
    };
    let commit = |offset: i64, wait: Duration| commit_to(coordinator, offset, wait);
    // The first commit waits while the coordinator loads its slot (LOAD_IN_PROGRESS).
    let deadline = Instant::now() + Duration::from_secs(30);
    while commit(3, Duration::from_secs(20)) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the first commit never succeeded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let signal = |sig: libc::c_int| {
        for (i, b) in refs.iter().enumerate() {
            if i != coordinator {
                let pid = libc::pid_t::try_from(b.pid()).expect("pid");
                // SAFETY: kill only signals our own child process.
                assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
            }
        }
    };
    signal(libc::SIGSTOP);
    let answer = commit(7, Duration::from_secs(6));
    signal(libc::SIGCONT);
    assert!(
        answer.is_none_or(|code| code != 0),
        "a commit acknowledged while no follower of its slot could have it: {answer:?}"
    );
    // As a client does, the commit follows the group's coordinator if the slot moved.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now_coordinator = coordinator_of(&kafka(coordinator), group)
            .and_then(|id| usize::try_from(id / 1024 - 1).ok())
            .unwrap_or(coordinator);
        let answer = commit_to(now_coordinator, 11, Duration::from_secs(10));
        if answer == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "commits never answered again: node {} (index) last answered {answer:?}; {}",
            now_coordinator,
            refs.iter()
                .map(|b| {
                    let log = b.stderr();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                })
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let read = run_script(
        "cluster_admin.py",
        &["committed", &addrs, "rep", group],
        work,
        &refs,
    );
    assert_eq!(read["committed"][0], 11, "{read}");
    drop(refs);
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// Partition reassignment (AlterPartitionReassignments and ListPartitionReassignments through
/// kafka-python's admin client) on three nodes, while an idempotent acks=all producer
/// writes: node 3 is drained (every partition's replica on it moves to the node without
/// one, the partitions it led get a new leader) and its copies are deleted from its disk;
/// a move onto a stopped node stays listed as under way until it is cancelled (replicas
/// back as they were); node 3 is added back to one partition and becomes an in-sync
/// replica. Every acknowledged record is then read back once, in order.
#[test]
fn partitions_move_between_nodes_and_a_node_is_drained() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-move");
    let layout = Layout::new();
    let addrs = layout.addrs.clone();
    let nodes = layout.start(dir.path(), &[]);
    let work = dir.path();
    let refs: Vec<&Broker> = nodes.iter().flatten().collect();
    let env = [
        ("TOPIC", "moves"),
        ("REPLICATION_FACTOR", "2"),
        ("RECORD_BYTES", "2000"),
    ];
    let call = |args: &[&str]| run_script_env("cluster_replicated.py", args, &env, work, &refs);
    let logs = || -> String {
        refs.iter()
            .map(|b| b.stderr())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    call(&["create", &addrs]);
    let mut acked: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut record = |answer: &serde_json::Value| {
        for (p, list) in acked.iter_mut().enumerate() {
            list.extend(values(answer, "acked", p));
        }
    };
    record(&call(&["produce", &addrs, "before", "300"]));
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|x| x.as_i64().expect("an id"))
            .collect()
    };
    let before = call(&["describe", &addrs]);
    let three = i64::from(cluster_id(3));
    // Drain node 3: each partition keeps its other replica and gains the node without one.
    let mut spec = Vec::new();
    let mut led_by_three = 0;
    for p in 0..3 {
        let replicas = ids(&before["replicas"][p.to_string()]);
        if !replicas.contains(&three) {
            continue;
        }
        led_by_three += usize::from(before["leader"][p.to_string()] == three);
        let mut target: Vec<i64> = replicas.into_iter().filter(|&r| r != three).collect();
        let missing = [1, 2]
            .map(|n| i64::from(cluster_id(n)))
            .into_iter()
            .find(|r| !target.contains(r))
            .expect("one node of 1 and 2 lacks a replica");
        target.push(missing);
        let list: Vec<String> = target.iter().map(i64::to_string).collect();
        spec.push(format!("{p}={}", list.join(",")));
    }
    assert!(
        !spec.is_empty() && led_by_three > 0,
        "node 3 holds and leads some partition of a 3-partition RF-2 topic: {before}"
    );
    // The moves happen while records are being written.
    let during = std::thread::scope(|scope| {
        let writer = scope.spawn(|| call(&["produce", &addrs, "during", "600"]));
        std::thread::sleep(Duration::from_millis(300));
        let moved = call(&["reassign", &addrs, &spec.join(";")]);
        for (p, error) in moved["results"].as_object().expect("results") {
            assert!(error.is_null(), "partition {p}: {moved}");
        }
        writer.join().expect("writer")
    });
    record(&during);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ongoing = call(&["reassignments", &addrs]);
        if ongoing["ongoing"].as_object().is_some_and(|m| m.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the moves never completed: {ongoing}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let drained = call(&["describe", &addrs]);
    for p in 0..3 {
        let replicas = ids(&drained["replicas"][p.to_string()]);
        let isr = ids(&drained["isr"][p.to_string()]);
        assert!(!replicas.contains(&three), "partition {p}: {drained}");
        assert_eq!(
            replicas.len(),
            2,
            "partition {p} kept two copies: {drained}"
        );
        assert_eq!(
            isr.len(),
            2,
            "partition {p}: both copies in sync: {drained}"
        );
        assert!(replicas.contains(&drained["leader"][p.to_string()].as_i64().expect("leader")));
    }
    // Node 3's copies are gone from its disk once it applied the change.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..3).any(|p| {
        dir.path()
            .join("n3")
            .join("moves")
            .join(p.to_string())
            .exists()
    }) {
        assert!(
            Instant::now() < deadline,
            "node 3 kept a moved replica's files\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        refs[2],
        "replica moved off this node: closed, its files deleted",
        Duration::from_secs(5),
    );
    record(&call(&["produce", &addrs, "drained", "100"]));

    // A move onto a stopped node cannot complete: listed as under way, then cancelled
    // (asking the running nodes only: a client would wait on the stopped one).
    refs[2].pause();
    // Until it is fenced, Metadata still lists it, and a client may wait on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !refs[..2]
        .iter()
        .any(|b| b.stderr().contains("fenced (left out of metadata) node=3"))
    {
        assert!(Instant::now() < deadline, "node 3 never fenced\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let addrs = addrs.split(',').take(2).collect::<Vec<_>>().join(",");
    let spec = "0=1024,2048,3072";
    let moved = call(&["reassign", &addrs, spec]);
    assert!(moved["results"]["0"].is_null(), "{moved}");
    let ongoing = call(&["reassignments", &addrs]);
    let entry = &ongoing["ongoing"]["moves-0"];
    assert_eq!(ids(&entry["adding_replicas"]), vec![three], "{ongoing}");
    assert!(ids(&entry["removing_replicas"]).is_empty(), "{ongoing}");
    assert_eq!(ids(&entry["replicas"]).len(), 3, "{ongoing}");
    // `tidelog cluster status` lists the move, and does not count the replica being added
    // as missing.
    let status = cluster_status(addrs.split(',').next().expect("an address"));
    assert_eq!(status["reassigning"][0]["partition"], "moves-0", "{status}");
    assert_eq!(
        status["reassigning"][0]["adding"],
        serde_json::json!([three])
    );
    assert!(
        !status["under_replicated"].to_string().contains("moves-0"),
        "{status}"
    );
    let cancelled = call(&["reassign", &addrs, "0=-"]);
    assert!(cancelled["results"]["0"].is_null(), "{cancelled}");
    let again = call(&["reassign", &addrs, "0=-"]);
    assert_eq!(
        again["results"]["0"], "NoReassignmentInProgressError",
        "{again}"
    );
    let after = call(&["describe", &addrs]);
    let mut replicas = ids(&after["replicas"]["0"]);
    replicas.sort_unstable();
    assert_eq!(replicas, vec![1024, 2048], "{after}");
    let invalid = call(&["reassign", &addrs, "1=1024,1024"]);
    assert_eq!(
        invalid["results"]["1"], "InvalidReplicationAssignmentError",
        "{invalid}"
    );
    refs[2].resume();

    // Node 3 is added back to partition 0 as a third copy and catches up into the in-sync set.
    let moved = call(&["reassign", &addrs, "0=1024,2048,3072"]);
    assert!(moved["results"]["0"].is_null(), "{moved}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = call(&["describe", &addrs]);
        if ids(&now["isr"]["0"]).contains(&three) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never caught up: {now}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    record(&call(&["produce", &addrs, "after", "100"]));

    let read = call(&["read", &addrs]);
    for (p, want) in acked.iter().enumerate() {
        assert_eq!(
            want.len(),
            1100,
            "partition {p}: every send was acknowledged"
        );
        let got = values(&read, "read", p);
        assert_eq!(
            &got, want,
            "partition {p}: every acknowledged record, once, in order"
        );
    }
    drop(refs);
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// A node is added to a running cluster and drained again: node 4 starts with
/// `--broker-only` (its id is not in the voters' peer list), registers, and is listed to
/// clients; a partition of a topic created before it joined is moved onto it and it is
/// elected that partition's leader; killed (-9) and restarted, it comes back from its own
/// durable copy of the metadata and rejoins the in-sync set; then every replica on it moves
/// back to the voters and its files go. Every record acknowledged along the way (idempotent,
/// acks=all) is read back once, in order.
#[test]
fn a_node_is_added_to_a_running_cluster_and_drained() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-grow");
    let layout = Layout::new();
    let (base, peers) = (layout.base, layout.peers.clone());
    let nodes = layout.start(dir.path(), &[]);
    let work = dir.path();
    let env = [("TOPIC", "grow"), ("REPLICATION_FACTOR", "2")];
    let call = |nodes: &[&Broker], addrs: &str, args: &[&str]| {
        let mut all = vec![args[0], addrs];
        all.extend_from_slice(&args[1..]);
        run_script_env("cluster_replicated.py", &all, &env, work, nodes)
    };
    let voters: Vec<&Broker> = nodes.iter().flatten().collect();
    call(&voters, &layout.addrs, &["create"]);
    let mut acked: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut record = |answer: &serde_json::Value| {
        for (p, list) in acked.iter_mut().enumerate() {
            list.extend(values(answer, "acked", p));
        }
    };
    record(&call(&voters, &layout.addrs, &["produce", "before", "100"]));

    let four = |run: usize| node_with(dir.path(), 4, base, &peers, run, &["--broker-only"]);
    let node4 = four(0);
    wait_for(
        &node4,
        "node registered in the cluster metadata",
        Duration::from_secs(30),
    );
    let addrs = format!("{},127.0.0.4:{}", layout.addrs, base + 1);
    for n in [1, 4] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = cluster_status(&format!("127.0.0.{n}:{}", base + 1));
            if status["brokers"].as_array().map(Vec::len) == Some(4) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {n} lists the four nodes: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let id4 = i64::from(cluster_id(4));
    let logs = |node4: &Broker| -> String {
        let mut all: Vec<String> = voters.iter().map(|b| b.stderr()).collect();
        all.push(node4.stderr());
        all.join("\n-----\n")
    };
    // Partition 0 moves onto node 4, which then leads it.
    let before = call(&voters, &addrs, &["describe"]);
    let old: Vec<i64> = before["replicas"]["0"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect();
    let spec = format!("0={id4},{}", old[1]);
    let moved = call(&voters, &addrs, &["reassign", &spec]);
    assert!(moved["results"]["0"].is_null(), "{moved}");
    let settled = |node4: &Broker, want: &dyn Fn(&serde_json::Value) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = call(&voters, &addrs, &["describe"]);
            let ongoing = call(&voters, &addrs, &["reassignments"]);
            if want(&now) && ongoing["ongoing"].as_object().is_some_and(|m| m.is_empty()) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {now} {ongoing}\n{}",
                logs(node4)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let on_four = settled(
        &node4,
        &|d| d["isr"]["0"] == serde_json::json!([old[1].min(id4), old[1].max(id4)]),
        "partition 0 never settled on node 4",
    );
    assert_eq!(on_four["replicas"]["0"], serde_json::json!([id4, old[1]]));
    let elected = run_script(
        "cluster_admin.py",
        &["elect", &addrs, "grow"],
        work,
        &voters,
    );
    assert_eq!(
        elected["after"][0], id4,
        "node 4 leads partition 0: {elected}"
    );
    record(&call(&voters, &addrs, &["produce", "moved", "100"]));

    // Killed and restarted, node 4 starts from its own copy of the metadata.
    node4.kill_9();
    record(&call(&voters, &layout.addrs, &["produce", "down", "100"]));
    let node4 = four(1);
    wait_for(
        &node4,
        "broker-only node: following the metadata of the voters",
        Duration::from_secs(10),
    );
    assert!(
        !node4.stderr().contains("applied=0 "),
        "the restart found its durable copy: {}",
        node4.stderr()
    );
    settled(
        &node4,
        &|d| d["isr"]["0"].as_array().is_some_and(|isr| isr.len() == 2),
        "node 4 never rejoined partition 0's in-sync set",
    );

    // Drained: partition 0 goes back to the voters, and node 4's files go.
    let spec = format!(
        "0={}",
        old.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    );
    let moved = call(&voters, &addrs, &["reassign", &spec]);
    assert!(moved["results"]["0"].is_null(), "{moved}");
    let drained = settled(
        &node4,
        &|d| !d["replicas"]["0"].to_string().contains(&id4.to_string()),
        "node 4 was never drained",
    );
    assert_eq!(
        drained["isr"]["0"].as_array().map(Vec::len),
        Some(2),
        "{drained}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.path().join("n4").join("grow").join("0").exists() {
        assert!(
            Instant::now() < deadline,
            "node 4 kept the partition's files"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    record(&call(&voters, &layout.addrs, &["produce", "after", "100"]));
    node4.stop();

    let read = call(&voters, &layout.addrs, &["read"]);
    for (p, want) in acked.iter().enumerate() {
        assert_eq!(
            want.len(),
            400,
            "partition {p}: every send was acknowledged"
        );
        let got = values(&read, "read", p);
        assert_eq!(
            &got, want,
            "partition {p}: every acknowledged record, once, in order"
        );
    }
    drop(voters);
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// The broker id coordinating `group`, as the node at `addr` answers FindCoordinator
/// (`None`: no coordinator now).
fn coordinator_of(addr: &str, group: &str) -> Option<i32> {
    use crate::kafka_protocol::Conn;
    use tidelog_wire::kafka::generated::{
        find_coordinator_request::FindCoordinatorRequest,
        find_coordinator_response::FindCoordinatorResponse,
    };
    use tidelog_wire::kafka::Decoder;
    let request = FindCoordinatorRequest {
        key: group.into(),
        key_type: 0,
        ..Default::default()
    };
    let body = Conn::open(addr).call(10, 2, |b| request.encode(b, 2).expect("encode"));
    let answer = FindCoordinatorResponse::decode(&mut Decoder::new(&body), 2).expect("decode");
    (answer.error_code == 0).then_some(answer.node_id)
}

/// Committed offsets are replicated like any partition (the internal offsets topic): a
/// group commits through its coordinator, the coordinator's node is killed (-9), another
/// node takes over the group's slot within seconds and answers the same committed offsets,
/// and takes new commits; the killed node comes back and catches up.
#[test]
fn committed_offsets_survive_the_coordinators_death() {
    let _serial = serial();
    if clients().is_none() {
        return;
    }
    let dir = crate::test_dir("cluster-coord");
    let layout = Layout::new();
    let (base, peers, addrs) = (layout.base, layout.peers.clone(), layout.addrs.clone());
    let extra = ["--min-insync-replicas", "2"];
    let mut nodes = layout.start(dir.path(), &extra);
    let work = dir.path();
    let call = |nodes: &[Option<Broker>], script: &str, args: &[&str]| {
        let refs: Vec<&Broker> = nodes.iter().flatten().collect();
        run_script(script, args, work, &refs)
    };
    call(&nodes, "cluster_replicated.py", &["create", &addrs]);
    call(
        &nodes,
        "cluster_replicated.py",
        &["produce", &addrs, "a", "30"],
    );
    let group = "survivors";
    let answer = call(
        &nodes,
        "cluster_admin.py",
        &["commit", &addrs, "rep", group, "17"],
    );
    assert_eq!(answer["committed"], 17, "{answer}");
    let kafka = |n: usize| format!("127.0.0.{}:{}", n + 1, base + 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let coordinator = loop {
        if let Some(id) = coordinator_of(&kafka(0), group) {
            break id;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let victim = usize::try_from(coordinator / 1024).expect("a node") - 1;
    nodes[victim].take().expect("runs").kill_9();
    // Another node leads the group's offsets slot once the dead one is fenced.
    let survivor = (victim + 1) % 3;
    let deadline = Instant::now() + Duration::from_secs(30);
    let took_over = loop {
        match coordinator_of(&kafka(survivor), group) {
            Some(id) if id != coordinator => break id,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator never moved off the dead node"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(usize::try_from(took_over / 1024).expect("node") - 1, victim);
    let read = call(
        &nodes,
        "cluster_admin.py",
        &["committed", &addrs, "rep", group],
    );
    assert_eq!(
        read["committed"],
        serde_json::json!([17, 17, 17]),
        "the new coordinator has the commit: {read}"
    );
    let answer = call(
        &nodes,
        "cluster_admin.py",
        &["commit", &addrs, "rep", group, "25"],
    );
    assert_eq!(answer["committed"], 25, "{answer}");
    nodes[victim] = Some(node_with(dir.path(), victim + 1, base, &peers, 1, &extra));
    let read = call(
        &nodes,
        "cluster_admin.py",
        &["committed", &addrs, "rep", group],
    );
    assert_eq!(read["committed"], serde_json::json!([25, 25, 25]), "{read}");
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// The load generator takes a bootstrap list (its first address answers nothing) and reports
/// what each node acknowledged: a topic of three partitions placed over three nodes gives
/// three nodes whose figures add up to the total, in the text and in the JSON. The native
/// client, through one node, writes and reads a topic placed over all three.
#[test]
fn the_load_generator_takes_a_bootstrap_list_reports_each_node_and_routes_natively() {
    let _serial = serial();
    let dir = crate::test_dir("cluster-bench");
    let layout = Layout::new();
    let nodes = layout.start(dir.path(), &[]);
    // A port of this machine that nothing listens on.
    let nobody = format!("127.0.0.1:{}", free_ports_below_ephemeral(1));
    let bootstrap = format!("{nobody},{}", layout.addrs);
    let json = dir.path().join("bench.json");
    let json_arg = json.display().to_string();
    let args = [
        "produce",
        "--protocol",
        "kafka",
        "--topic",
        "spread3",
        "--partitions",
        "3",
        "--records",
        "3000",
        "--record-size",
        "100",
        "--acks",
        "all",
        "--json",
        &json_arg,
    ];
    let ran = run_bounded(
        crate::kafka_clients::bench(&bootstrap, &args),
        None,
        Duration::from_secs(120),
        dir.path(),
    );
    let logs: Vec<String> = nodes.iter().flatten().map(Broker::stderr).collect();
    assert!(
        ran.status.success(),
        "tidelog-bench: {}\n{}\n{}",
        ran.stdout,
        ran.stderr,
        logs.join("\n-----\n")
    );
    assert!(
        ran.stdout.contains("by the node that acknowledged it"),
        "{}",
        ran.stdout
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json report")).expect("json");
    assert_eq!(report["produce"]["records"], 3000, "{report}");
    assert_eq!(
        report["params"]["broker"]
            .as_str()
            .map(|b| b.split(',').count()),
        Some(4),
        "{report}"
    );
    let by_node = report["produce"]["by_node"].as_array().expect("by_node");
    let ids: Vec<i64> = by_node.iter().filter_map(|n| n["node"].as_i64()).collect();
    assert_eq!(
        ids,
        [1, 2, 3].map(|n| i64::from(cluster_id(n))),
        "every node leads one partition: {report}"
    );
    let total: i64 = by_node.iter().filter_map(|n| n["records"].as_i64()).sum();
    assert_eq!(total, 3000, "{report}");
    assert!(
        by_node.iter().all(|n| n["records"].as_i64() > Some(0)),
        "{report}"
    );

    // The native client routes too: through node 1's native port, a topic placed over all
    // three nodes is written and read whole (each partition at its leader's shard).
    let native = format!("127.0.0.1:{}", layout.base);
    let run_native = |args: &[&str], what: &str| -> String {
        let ran = run_bounded(
            crate::kafka_clients::bench(&native, args),
            None,
            Duration::from_secs(120),
            dir.path(),
        );
        let logs: Vec<String> = nodes.iter().flatten().map(Broker::stderr).collect();
        assert!(
            ran.status.success(),
            "{what}: {}\n{}\n{}",
            ran.stdout,
            ran.stderr,
            logs.join("\n-----\n")
        );
        ran.stdout
    };
    let common = [
        "--protocol",
        "native",
        "--topic",
        "native3",
        "--partitions",
        "3",
    ];
    let produce: Vec<&str> = ["produce"]
        .iter()
        .chain(&common)
        .chain(&["--records", "3000", "--record-size", "100", "--acks", "all"])
        .copied()
        .collect();
    let table = run_native(&produce, "native produce");
    assert!(table.contains("errors: none"), "{table}");
    let consume: Vec<&str> = ["consume"].iter().chain(&common).copied().collect();
    let table = run_native(&consume, "native consume");
    let read: Option<u64> = table
        .lines()
        .find_map(|l| l.strip_prefix("consume "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    assert_eq!(read, Some(3000), "{table}");

    // Native group commits reach the group's coordinator on another node (native
    // FindCoordinator): a group coordinated away from node 1, read twice through node 1,
    // resumes where its first read committed.
    let kafka1 = format!("127.0.0.1:{}", layout.base + 1);
    let group = (0..64)
        .map(|i| format!("native-g{i}"))
        .find(|g| coordinator_of(&kafka1, g).is_some_and(|id| id / 1024 != 1))
        .expect("a group coordinated by node 2 or 3");
    let cli = |args: &[&str], input: Option<String>| -> String {
        use std::io::Write as _;
        let mut child = Command::new(crate::broker_process::BIN)
            .args(args)
            .args(["--broker", &native])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tidelog");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("tidelog");
        assert!(
            out.status.success(),
            "tidelog {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&["topic", "create", "grouped", "--partitions", "3"], None);
    let lines: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    cli(&["produce", "grouped", "--acks", "all"], Some(lines));
    let read_group = |count: &str| -> Vec<String> {
        let out = Command::new(crate::broker_process::BIN)
            .args(["consume", "grouped", "--group", &group, "--from-beginning"])
            .args(["--count", count, "--print-partition", "--print-offset"])
            .args(["--timeout-ms", "10000", "--broker", &native])
            .output()
            .expect("tidelog consume");
        assert!(
            out.status.success(),
            "tidelog consume --group: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let first = read_group("1500");
    let second = read_group("1500");
    assert_eq!((first.len(), second.len()), (1500, 1500));
    let seen: std::collections::HashSet<&String> = first.iter().collect();
    assert!(
        second.iter().all(|position| !seen.contains(position)),
        "the second read resumed from the first's commits (no record read twice)"
    );
    for b in nodes.into_iter().flatten() {
        b.stop();
    }
}

/// A metadata leader that was itself stopped judges nobody on what it did not hear while it
/// was stopped. With the metadata leader and a second node stopped (SIGSTOP) for 6 s, the
/// third node cannot win an election, so the leader is still leading when it resumes; it
/// must then give the nodes a full fencing period again, not fence the one that ran all
/// along (its coordinators and leaders would move for nothing: a group committing to it got
/// NOT_COORDINATOR for good in CI).
#[test]
fn a_resumed_metadata_leader_fences_nobody_for_its_own_pause() {
    let _serial = serial();
    let dir = crate::test_dir("cluster-leader-pause");
    let layout = Layout::new();
    let nodes = layout.start(dir.path(), &[]);
    let nodes: Vec<Broker> = nodes.into_iter().flatten().collect();
    // The metadata leader as every node last logged it (the Kafka controller id names
    // the node asked, not the Raft leader).
    let leader_seen = |b: &Broker| -> Option<usize> {
        let log = b.stderr();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("metadata leader changed"))?;
        let id = line.split("leader=").nth(1)?.split(' ').next()?;
        id.parse::<usize>().ok()?.checked_sub(1)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let seen: Vec<Option<usize>> = nodes.iter().map(leader_seen).collect();
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| *s == Some(*l)) {
                break *l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed metadata leader: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Settled: the offsets topic's partitions are placed and led.
    std::thread::sleep(Duration::from_secs(3));
    let second = (leader + 1) % 3;
    let third = (leader + 2) % 3;
    nodes[leader].pause();
    nodes[second].pause();
    std::thread::sleep(Duration::from_secs(6));
    nodes[leader].resume();
    nodes[second].resume();
    // Long enough for the resumed leader's fencing to run several times.
    std::thread::sleep(Duration::from_secs(4));
    let logs: Vec<String> = nodes.iter().map(Broker::stderr).collect();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("node not heard from: fenced")),
        "node {} (ran throughout) or another was fenced by the resumed leader {}:\n{}",
        third + 1,
        leader + 1,
        logs[leader]
    );
    assert!(
        logs[leader].contains("metadata leader resumed after a pause"),
        "the leader saw its own pause: {}",
        logs[leader]
    );
}
