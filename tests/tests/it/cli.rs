//! The `tidelog` command end to end: real `tidelog serve` processes, topic administration,
//! parallel producers feeding stdin, consumers checking every record, a clean restart, a
//! kill -9 during an `--acks all` produce, and the one-line error messages.
//!
//! The broker process is [`crate::broker_process::Broker`].
//!
//! `TIDELOG_E2E_RECORDS` sets how many records the big produce/consume round trip moves
//! (default 1,000,000).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker_process::{serial, Broker, Serve, BIN};

const PRODUCERS: usize = 3;

fn records_wanted() -> usize {
    std::env::var("TIDELOG_E2E_RECORDS")
        .ok()
        .map(|v| v.parse().expect("TIDELOG_E2E_RECORDS is a number"))
        .unwrap_or(1_000_000)
}

fn tidelog(broker: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).args(["--broker", broker]);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn run_ok(broker: &str, args: &[&str]) -> String {
    let out = tidelog(broker, args).output().expect("run tidelog");
    ok(out, &args.join(" "))
}

/// One row of `topic describe`.
#[derive(Debug)]
struct PartitionRow {
    partition: i32,
    shard: u16,
    endpoint: String,
    start: i64,
    end: i64,
}

fn describe(broker: &str, topic: &str) -> (String, Vec<PartitionRow>) {
    let out = run_ok(broker, &["topic", "describe", topic]);
    let mut lines = out.lines();
    let summary = lines.next().expect("summary line").to_owned();
    let header = lines.next().expect("header line");
    assert!(header.starts_with("partition"), "{out}");
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "{l}");
            PartitionRow {
                partition: f[0].parse().expect("partition"),
                shard: f[1].parse().expect("shard"),
                endpoint: f[2].to_owned(),
                start: f[3].parse().expect("start"),
                end: f[4].parse().expect("end"),
            }
        })
        .collect();
    (summary, rows)
}

/// Runs `tidelog produce topic <args>` fed `input` on stdin; returns its output.
fn produce(broker: &str, topic: &str, args: &[&str], input: Vec<u8>) -> Output {
    let mut cmd = tidelog(broker, &[&["produce", topic][..], args].concat());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn produce");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("produce output");
    writer.join().expect("writer").expect("stdin written");
    out
}

/// A consumed record: (offset, key, value).
type Rec = (i64, String, String);

/// Reads `count` records of one partition from the beginning with every field printed.
fn consume_partition(broker: &str, topic: &str, partition: i32, count: i64) -> Vec<Rec> {
    if count == 0 {
        return Vec::new();
    }
    let p = partition.to_string();
    let n = count.to_string();
    let out = run_ok(
        broker,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--partition",
            &p,
            "--count",
            &n,
            "--print-partition",
            "--print-offset",
            "--print-key",
            "--timeout-ms",
            "30000",
        ],
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(f.len(), 4, "{l:?}");
            assert_eq!(f[0], p, "partition field");
            (
                f[1].parse().expect("offset"),
                f[2].to_owned(),
                f[3].to_owned(),
            )
        })
        .collect()
}

/// Every partition read whole, in parallel, from the end offsets `topic describe` shows.
fn consume_all(broker: &str, topic: &str) -> BTreeMap<i32, Vec<Rec>> {
    let (_, rows) = describe(broker, topic);
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .iter()
            .map(|r| {
                assert_eq!(r.start, 0, "nothing was deleted");
                let (p, end) = (r.partition, r.end);
                (p, s.spawn(move || consume_partition(broker, topic, p, end)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(p, h)| (p, h.join().expect("consumer thread")))
            .collect()
    })
}

/// Checks dense in-order offsets, keys matching values, and per-producer order; returns
/// every value once (panics on a duplicate).
fn check_partitions(parts: &BTreeMap<i32, Vec<Rec>>) -> HashSet<String> {
    let mut all = HashSet::new();
    for (p, records) in parts {
        let mut last_seq: HashMap<String, u64> = HashMap::new();
        for (i, (offset, key, value)) in records.iter().enumerate() {
            assert_eq!(
                *offset, i as i64,
                "partition {p}: offsets dense and in order"
            );
            let (producer, seq) = value.split_once('-').expect("value is producer-seq");
            let seq: u64 = seq.parse().expect("seq");
            assert_eq!(key, &format!("k{seq}"), "partition {p} offset {offset}");
            if let Some(prev) = last_seq.insert(producer.to_owned(), seq) {
                assert!(
                    prev < seq,
                    "partition {p}: producer {producer} wrote {prev} before {seq}"
                );
            }
            assert!(all.insert(value.clone()), "duplicate record {value}");
        }
    }
    all
}

/// Lines `k<seq>:<producer>-<seq>` for `seqs`; returns the input and the values.
fn lines(producer: &str, seqs: std::ops::Range<usize>) -> (Vec<u8>, Vec<String>) {
    let mut input = Vec::with_capacity(seqs.len() * 24);
    let mut values = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let value = format!("{producer}-{seq}");
        writeln!(input, "k{seq}:{value}").expect("write to Vec");
        values.push(value);
    }
    (input, values)
}

#[test]
fn admin_million_records_and_clean_restart() {
    let _one = serial();
    let tmp = crate::test_dir("cli-e2e");
    let dir = tmp.path().join("data");
    let broker = Broker::start(&dir, 0);
    let b = broker.addr.clone();

    // 1. Topic administration.
    run_ok(&b, &["topic", "create", "events", "--partitions", "3"]);
    run_ok(
        &b,
        &[
            "topic",
            "create",
            "small",
            "--partitions",
            "1",
            "--retention-ms",
            "60000",
            "--retention-bytes",
            "1048576",
        ],
    );
    let listed = run_ok(&b, &["topic", "list"]);
    assert_eq!(listed, "events\nsmall\n");
    let (summary, rows) = describe(&b, "events");
    assert!(summary.contains("partitions 3"), "{summary}");
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().map(|r| r.partition).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let shards: HashSet<u16> = rows.iter().map(|r| r.shard).collect();
    assert_eq!(shards.len(), 2, "3 partitions over both shards: {rows:?}");
    for r in &rows {
        assert!(
            r.endpoint.starts_with("127.0.0.1:"),
            "endpoint {}",
            r.endpoint
        );
        assert_ne!(r.endpoint, b, "a shard's own endpoint, not the shared port");
        assert_eq!((r.start, r.end), (0, 0));
    }
    let endpoints: HashSet<&str> = rows.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(endpoints.len(), 2, "one endpoint per shard");
    let (small, _) = describe(&b, "small");
    assert!(
        small.contains("retention.ms 60000") && small.contains("retention.bytes 1048576"),
        "{small}"
    );
    assert!(dir.join("small").exists(), "the topic has a directory");
    run_ok(&b, &["topic", "delete", "small"]);
    assert_eq!(run_ok(&b, &["topic", "list"]), "events\n");
    // Its files go once every handle on them is closed (the shard waits for that, then
    // unlinks them through io_uring).
    let gone = Instant::now();
    while dir.join("small").exists() && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dir.join("small").exists(),
        "the deleted topic's directory is removed"
    );

    // 2. Parallel producers, then every record read back.
    let total = records_wanted();
    let started = Instant::now();
    let mut expected: HashSet<String> = HashSet::with_capacity(total);
    let mut inputs = Vec::new();
    for j in 0..PRODUCERS {
        let from = total * j / PRODUCERS;
        let to = total * (j + 1) / PRODUCERS;
        let (input, values) = lines(&format!("p{j}"), from..to);
        expected.extend(values);
        inputs.push(input);
    }
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .into_iter()
            .map(|input| {
                let b = &b;
                s.spawn(move || {
                    produce(b, "events", &["--acks", "1", "--key-separator", ":"], input)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer"))
            .collect()
    });
    for out in outputs {
        let stdout = ok(out, "produce");
        assert!(stdout.is_empty(), "produce prints nothing: {stdout}");
    }
    let produced_in = started.elapsed();
    let (_, rows) = describe(&b, "events");
    assert_eq!(
        rows.iter().map(|r| r.end).sum::<i64>(),
        total as i64,
        "{rows:?}"
    );
    let consumed = consume_all(&b, "events");
    let values = check_partitions(&consumed);
    assert_eq!(values.len(), total);
    assert!(values == expected, "consumed values differ from produced");
    eprintln!(
        "cli e2e: {total} records produced by {PRODUCERS} processes in {produced_in:?}, \
         read back in {:?}",
        started.elapsed() - produced_in
    );

    // 3. Clean restart on the same directory, more records, everything still there.
    let dir = broker.stop();
    let broker = Broker::start(&dir, 1);
    let b = broker.addr.clone();
    assert_eq!(run_ok(&b, &["topic", "list"]), "events\n");
    let (input, more) = lines("r", 0..30_000);
    ok(
        produce(
            &b,
            "events",
            &["--acks", "all", "--key-separator", ":"],
            input,
        ),
        "produce after restart",
    );
    expected.extend(more);
    let consumed = consume_all(&b, "events");
    let values = check_partitions(&consumed);
    assert_eq!(values.len(), total + 30_000);
    assert!(values == expected, "old and new records after the restart");
    broker.stop();
}

#[test]
fn kill_9_keeps_every_acknowledged_record() {
    let _one = serial();
    let tmp = crate::test_dir("cli-kill9");
    let dir = tmp.path().join("data");
    let broker = Broker::start(&dir, 0);
    let b = broker.addr.clone();
    run_ok(&b, &["topic", "create", "acked", "--partitions", "3"]);

    let mut child = tidelog(
        &b,
        &[
            "produce",
            "acked",
            "--acks",
            "all",
            "--verbose",
            "--key-separator",
            ":",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn produce");
    let mut stdin = child.stdin.take().expect("stdin");
    // Feeds lines until the producer stops reading (it exits after the broker dies).
    let writer = std::thread::spawn(move || {
        for chunk in 0..1_000 {
            let (input, _) = lines("a", chunk * 2_000..(chunk + 1) * 2_000);
            if stdin.write_all(&input).is_err() {
                return;
            }
        }
    });
    let acked = Arc::new(AtomicUsize::new(0));
    let stdout = child.stdout.take().expect("stdout");
    let reader = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                lines.push(line.expect("utf8 line"));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            lines
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < 20_000 {
        assert!(Instant::now() < deadline, "no acknowledgements");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = broker.kill_9();

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("producer did not give up after the broker died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    writer.join().expect("writer");
    let ok_lines = reader.join().expect("reader");
    assert_eq!(status.code(), Some(1), "producer fails: {stderr}");
    assert!(stderr.starts_with("tidelog: "), "{stderr}");
    assert!(
        stderr.contains("records failed") || stderr.contains("stopped reading stdin"),
        "{stderr}"
    );

    let broker = Broker::start(&dir, 1);
    let b = broker.addr.clone();
    let consumed = consume_all(&b, "acked");
    let stored: HashMap<(i32, i64), &str> = consumed
        .iter()
        .flat_map(|(p, recs)| recs.iter().map(move |(o, _, v)| ((*p, *o), v.as_str())))
        .collect();
    for line in &ok_lines {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!(f[0], "OK", "{line}");
        let key = (
            f[1].parse::<i32>().expect("partition"),
            f[2].parse::<i64>().expect("offset"),
        );
        assert_eq!(
            stored.get(&key).copied(),
            Some(f[3]),
            "acknowledged record {line} after kill -9"
        );
    }
    eprintln!(
        "cli kill -9: {} acknowledged records all present ({} stored)",
        ok_lines.len(),
        stored.len()
    );
    broker.stop();
}

#[test]
fn errors_are_one_actionable_line() {
    let _one = serial();
    let out = Command::new(BIN)
        .args(["topic", "list", "--broker", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "tidelog: cannot reach the broker at 127.0.0.1:1: connection refused — is tidelog \
         serve running?\n"
    );

    let tmp = crate::test_dir("cli-errors");
    let broker = Broker::start(&tmp.path().join("data"), 0);
    let b = broker.addr.clone();
    for args in [
        &[
            "consume",
            "nosuchtopic",
            "--count",
            "1",
            "--timeout-ms",
            "500",
        ][..],
        &["topic", "describe", "nosuchtopic"],
        &["topic", "delete", "nosuchtopic"],
    ] {
        let out = tidelog(&b, args).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            text(&out.stderr),
            "tidelog: topic nosuchtopic does not exist\n",
            "{args:?}"
        );
    }
    let out = produce(&b, "nosuchtopic", &[], b"x\n".to_vec());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "tidelog: topic nosuchtopic does not exist\n"
    );

    run_ok(&b, &["topic", "create", "t", "--partitions", "2"]);
    let out = tidelog(&b, &["topic", "create", "t"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "tidelog: topic t already exists\n");
    let out = tidelog(&b, &["consume", "t", "--partition", "5", "--count", "1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no partition 5"), "{out:?}");
    // A consumer that reaches --timeout-ms without records exits 0 with nothing printed.
    let out = run_ok(&b, &["consume", "t", "--timeout-ms", "300"]);
    assert!(out.is_empty());

    let out = tidelog(&b, &["consume", "t", "--no-such-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(text(&out.stderr).contains("--no-such-flag"), "{out:?}");
    broker.stop();

    // Replica fetch settings outside their bounds are refused before anything starts.
    for bad in [
        ["--replica-fetch-max-bytes", "1024"],
        ["--replica-fetch-max-bytes", "1073741824"],
        ["--replica-fetch-wait-max-ms", "0"],
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(tmp.path().join("bounds"))
            .args(bad)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert_eq!(
            text(&out.stderr),
            "tidelog: --replica-fetch-max-bytes must be 65536 to 33554432 and \
             --replica-fetch-wait-max-ms 1 to 5000\n",
            "{bad:?}"
        );
    }
    // A group session-timeout floor above its ceiling is refused the same way.
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("bounds"))
        .args(["--group-min-session-timeout-ms", "7000"])
        .args(["--group-max-session-timeout-ms", "6000"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "tidelog: --group-min-session-timeout-ms must not exceed \
         --group-max-session-timeout-ms\n"
    );
}

/// `consume --group`: (partition, offset) of each record printed.
fn consume_group(broker: &str, topic: &str, extra: &[&str]) -> Vec<(i32, i64)> {
    let out = run_ok(
        broker,
        &[
            &[
                "consume",
                topic,
                "--group",
                "g",
                "--print-partition",
                "--print-offset",
            ][..],
            extra,
        ]
        .concat(),
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            assert_eq!(f.len(), 3, "{l:?}");
            (
                f[0].parse().expect("partition"),
                f[1].parse().expect("offset"),
            )
        })
        .collect()
}

#[test]
fn group_offsets_resume_and_survive_a_restart() {
    let _one = serial();
    let tmp = crate::test_dir("cli-group");
    let dir = tmp.path().join("data");
    let broker = Broker::start(&dir, 0);
    let b = broker.addr.clone();
    run_ok(&b, &["topic", "create", "grouped", "--partitions", "3"]);
    let (input, _) = lines("g", 0..3_000);
    ok(
        produce(&b, "grouped", &["--key-separator", ":"], input),
        "produce",
    );

    // Where each run must start: the next offset after the previous runs, per partition.
    let mut next: BTreeMap<i32, i64> = (0..3).map(|p| (p, 0)).collect();
    let mut seen = HashSet::new();
    let mut check_run = |run: &[(i32, i64)], next: &mut BTreeMap<i32, i64>| {
        assert_eq!(run.len(), 1_000);
        for &(p, o) in run {
            assert_eq!(
                o, next[&p],
                "partition {p} resumes after the last committed record"
            );
            next.insert(p, o + 1);
            assert!(seen.insert((p, o)), "record {p}/{o} read twice");
        }
    };
    let first = consume_group(
        &b,
        "grouped",
        &[
            "--from-beginning",
            "--count",
            "1000",
            "--timeout-ms",
            "30000",
        ],
    );
    check_run(&first, &mut next);
    let second = consume_group(&b, "grouped", &["--count", "1000", "--timeout-ms", "30000"]);
    check_run(&second, &mut next);

    let dir = broker.stop();
    let broker = Broker::start(&dir, 1);
    let b = broker.addr.clone();
    let third = consume_group(&b, "grouped", &["--count", "1000", "--timeout-ms", "30000"]);
    check_run(&third, &mut next);
    assert_eq!(seen.len(), 3_000, "every record once across the three runs");
    assert!(
        consume_group(&b, "grouped", &["--timeout-ms", "300"]).is_empty(),
        "nothing left for the group"
    );

    // A new group without --from-beginning starts at the end, and remembers that.
    let out = run_ok(
        &b,
        &[
            "consume",
            "grouped",
            "--group",
            "fresh",
            "--timeout-ms",
            "300",
        ],
    );
    assert!(out.is_empty(), "{out}");
    let (input, values) = lines("n", 0..10);
    ok(
        produce(&b, "grouped", &["--key-separator", ":"], input),
        "produce",
    );
    let out = run_ok(
        &b,
        &[
            "consume",
            "grouped",
            "--group",
            "fresh",
            "--count",
            "10",
            "--timeout-ms",
            "30000",
        ],
    );
    let got: HashSet<&str> = out.lines().collect();
    let want: HashSet<&str> = values.iter().map(String::as_str).collect();
    assert_eq!(
        got, want,
        "only the records produced after the group first ran"
    );
    broker.stop();
}

/// `serve`'s log flags reach every partition: 1 MiB segments roll a 4 MB topic into several
/// files, and a value the engine refuses stops `serve` with the reason.
#[test]
fn serve_log_flags_set_the_partition_defaults() {
    let _one = serial();
    let tmp = crate::test_dir("cli-log-flags");
    let dir = tmp.path().join("data");
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.extra = [
        "--segment-bytes",
        "1048576",
        "--preallocate-bytes",
        "1048576",
    ]
    .map(String::from)
    .to_vec();
    let broker = Broker::start_with(&dir, 0, serve);
    let b = broker.addr.clone();
    run_ok(
        &b,
        &["topic", "create", "small-segments", "--partitions", "1"],
    );
    let mut input = Vec::new();
    for i in 0..4000 {
        writeln!(input, "{i}:{}", "x".repeat(1000)).expect("write to Vec");
    }
    let out = produce(&b, "small-segments", &["--key-separator", ":"], input);
    assert!(out.status.success(), "produce: {}", text(&out.stderr));
    let segments = std::fs::read_dir(dir.join("small-segments").join("0"))
        .expect("partition directory")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    assert!(
        segments >= 3,
        "about 4 MB in 1 MiB segments: {segments} segment files"
    );
    drop(broker);

    let bad = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("bad"))
        .args(["--native-addr", "127.0.0.1:0", "--kafka-addr", "off"])
        .args(["--segment-bytes", "100"])
        .output()
        .expect("run serve");
    assert!(!bad.status.success(), "a 100-byte segment is refused");
    assert!(
        text(&bad.stderr).contains("segment_bytes"),
        "the reason names the flag's value: {}",
        text(&bad.stderr)
    );
}

/// Two brokers never open one data directory: the second `serve` stops with the reason while
/// the first keeps serving, and after the first is killed (`kill -9`: the kernel drops its
/// lock) a new one starts on the directory at once.
#[test]
fn a_data_directory_is_served_by_one_broker_at_a_time() {
    let _one = serial();
    let tmp = crate::test_dir("cli-dir-lock");
    let dir = tmp.path().join("data");
    let mut serve = Serve::new();
    serve.shards = 1;
    let first = Broker::start_with(&dir, 0, serve);
    run_ok(
        &first.addr,
        &["topic", "create", "locked", "--partitions", "1"],
    );
    let log = tmp.path().join("second.log");
    let mut second = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&dir)
        .args(["--native-addr", "127.0.0.1:0", "--kafka-addr", "off"])
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run serve");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second broker on the directory is refused ({status:?}): {stderr}"
    );
    assert!(
        stderr.contains("in use by another broker"),
        "the reason says why: {stderr}"
    );
    run_ok(&first.addr, &["topic", "describe", "locked"]);
    first.kill_9();
    let mut serve = Serve::new();
    serve.shards = 1;
    let again = Broker::start_with(&dir, 1, serve);
    run_ok(&again.addr, &["topic", "describe", "locked"]);
    again.stop();
}

/// A panic on one shard's thread takes the whole process down (SIGABRT), so a supervisor
/// restarts it. Before, the shard's thread died alone and the process lived on half up:
/// that shard's partitions unreachable, the process still there.
#[test]
fn a_panicking_shard_aborts_the_whole_broker() {
    use std::os::unix::process::ExitStatusExt;
    let _one = serial();
    let tmp = crate::test_dir("panic-aborts");
    let mut serve = Serve::new();
    serve.shards = 2;
    serve.env = vec![("TIDELOG_FAULT_PANIC_SHARD".into(), "1".into())];
    let mut broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let status = broker.exits_within(Duration::from_secs(20));
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{status}: {}",
        broker.stderr()
    );
    assert!(
        broker
            .stderr()
            .contains("aborting so that a supervisor restarts the broker"),
        "{}",
        broker.stderr()
    );
}

/// `serve --config FILE`: the file's settings (named like the flags), `TIDELOG_*` variables
/// over them, flags over both; `--print-config` shows each effective value and its source.
/// A broker started from the file alone serves where the file says, and a typo in the file
/// stops it with the name at fault.
#[test]
fn serve_takes_a_config_file_and_the_environment_under_its_flags() {
    let _one = serial();
    let tmp = crate::test_dir("cli-config");
    let base = crate::broker_process::free_ports_below_ephemeral(2);
    let data = tmp.path().join("from-file");
    let file = tmp.path().join("tidelog.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nnative_addr = \"127.0.0.1:{base}\"\nkafka_addr = \"127.0.0.1:{}\"\n\
             shards = 1\nnode_id = 1\npeers = [\"1@127.0.0.1:19392\", \"2@127.0.0.2:19392\"]\n\
             min_insync_replicas = 2\ndefault_replication_factor = 2\n",
            data.display(),
            base + 1
        ),
    )
    .expect("write the config file");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--default-replication-factor", "3", "--print-config"])
        .env("TIDELOG_MIN_INSYNC_REPLICAS", "3")
        .env("TIDELOG_DEFAULT_REPLICATION_FACTOR", "1")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    for line in [
        format!("data_dir = {:?}  # config file", data.display().to_string()),
        "peers = \"1@127.0.0.1:19392,2@127.0.0.2:19392\"  # config file".to_owned(),
        "min_insync_replicas = \"3\"  # environment".to_owned(),
        "default_replication_factor = \"3\"  # flag".to_owned(),
        "replica_fetch_max_bytes = \"1048576\"  # default".to_owned(),
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line:?} in:\n{printed}"
        );
    }

    // A single node from the file alone (the peers dropped): it serves on the file's ports
    // from the file's data directory.
    let text_of = std::fs::read_to_string(&file).expect("read");
    let single: String = text_of
        .lines()
        .filter(|l| !l.starts_with("peers") && !l.starts_with("node_id"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, single).expect("write");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let expect = format!("serving {} on 127.0.0.1:{base}", data.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let served = loop {
        match lines.next() {
            Some(Ok(line)) => {
                let hit = line.contains(&expect);
                seen.push(line);
                if hit {
                    break true;
                }
            }
            _ => break false,
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "{expect:?} never logged:\n{}", seen.join("\n"));
    assert!(data.exists(), "the file's data directory was used");

    std::fs::write(&file, "data_dirr = \"x\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown setting `data_dirr`"),
        "{out:?}"
    );
}

/// `tidelog` over the Kafka protocol (`--bootstrap`): group list, describe (committed, log
/// end, lag), reset-offsets (earliest, latest, an offset; refused while the group has a
/// member), delete; topic alter-config and describe --configs, add-partitions,
/// delete-records; cluster info.
#[test]
fn kafka_admin_commands_manage_groups_configs_partitions_and_records() {
    let _one = serial();
    let tmp = crate::test_dir("cli-kafka-admin");
    let mut serve = Serve::new();
    serve.kafka = crate::broker_process::Kafka::At(format!(
        "127.0.0.1:{}",
        crate::broker_process::free_port()
    ));
    let broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let b = broker.addr.clone();
    let k = broker.kafka().to_owned();
    let kafka = |args: &[&str]| -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--bootstrap", &k])
            .output()
            .expect("run tidelog")
    };
    let kafka_ok = |args: &[&str]| ok(kafka(args), &args.join(" "));
    run_ok(&b, &["topic", "create", "admin", "--partitions", "2"]);
    let (input, _) = lines("a", 0..100);
    ok(produce(&b, "admin", &[], input), "produce");

    // A group that exists only through its committed offsets.
    kafka_ok(&[
        "group",
        "reset-offsets",
        "g1",
        "--topic",
        "admin",
        "--to-latest",
    ]);
    let listed = kafka_ok(&["group", "list"]);
    assert!(listed.lines().any(|l| l.starts_with("g1\t")), "{listed}");
    let lag = |out: &str| -> Vec<i64> {
        out.lines()
            .filter(|l| l.trim_start().starts_with("admin\t"))
            .map(|l| {
                l.split('\t')
                    .nth(4)
                    .expect("lag column")
                    .parse()
                    .expect("lag")
            })
            .collect()
    };
    let described = kafka_ok(&["group", "describe", "g1"]);
    assert_eq!(lag(&described), [0, 0], "{described}");
    kafka_ok(&[
        "group",
        "reset-offsets",
        "g1",
        "--topic",
        "admin",
        "--to-earliest",
    ]);
    let described = kafka_ok(&["group", "describe", "g1"]);
    assert_eq!(lag(&described).iter().sum::<i64>(), 100, "{described}");
    let moved = kafka_ok(&[
        "group",
        "reset-offsets",
        "g1",
        "--topic",
        "admin",
        "--to-offset",
        "10",
    ]);
    assert_eq!(moved.lines().count(), 2, "{moved}");
    assert!(moved.lines().all(|l| l.ends_with("\t10")), "{moved}");

    // Topic configs.
    kafka_ok(&[
        "topic",
        "alter-config",
        "admin",
        "--set",
        "retention.ms=123456",
        "--set",
        "cleanup.policy=compact,delete",
    ]);
    let configs = kafka_ok(&["topic", "describe", "admin", "--configs"]);
    assert!(configs.contains("retention.ms\t123456\ttopic"), "{configs}");
    assert!(
        configs.contains("cleanup.policy\tcompact,delete\ttopic"),
        "{configs}"
    );
    kafka_ok(&["topic", "alter-config", "admin", "--delete", "retention.ms"]);
    let configs = kafka_ok(&["topic", "describe", "admin", "--configs"]);
    assert!(!configs.contains("retention.ms"), "{configs}");
    let all = kafka_ok(&["topic", "describe", "admin", "--configs", "--all"]);
    assert!(all.contains("retention.ms\t"), "{all}");
    let bad = kafka(&["topic", "alter-config", "admin", "--set", "no.such=1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("INVALID_CONFIG"), "{bad:?}");

    // Partitions and records.
    kafka_ok(&["topic", "add-partitions", "admin", "--count", "3"]);
    let described = run_ok(&b, &["topic", "describe", "admin"]);
    assert!(described.contains("partitions 3"), "{described}");
    let deleted = kafka_ok(&[
        "topic",
        "delete-records",
        "admin",
        "--partition",
        "0",
        "--before",
        "-1",
    ]);
    assert!(deleted.starts_with("admin\t0\tlow watermark "), "{deleted}");
    let low: i64 = deleted
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a low watermark");
    assert!(low > 0, "{deleted}");

    // Deleting the group takes its offsets; describing it then fails.
    kafka_ok(&["group", "delete", "g1"]);
    let gone = kafka(&["group", "describe", "g1"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let info = kafka_ok(&["cluster", "info"]);
    assert!(info.starts_with("cluster tidelog"), "{info}");

    // `consume --format json`: one object per record, parsed here.
    let json = run_ok(
        &b,
        &[
            "consume",
            "admin",
            "--partition",
            "1",
            "--from-beginning",
            "--format",
            "json",
            "--count",
            "3",
            "--timeout-ms",
            "5000",
        ],
    );
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(objects.len(), 3, "{json}");
    for (i, o) in objects.iter().enumerate() {
        assert_eq!(o["topic"], "admin", "{o}");
        assert_eq!(o["partition"], 1, "{o}");
        assert_eq!(o["offset"], i as i64, "{o}");
        assert!(o["timestamp"].as_i64().is_some_and(|t| t > 0), "{o}");
        assert!(
            o["value"].as_str().is_some_and(|v| v.contains(":a-")),
            "{o}"
        );
    }
    broker.stop();
}
