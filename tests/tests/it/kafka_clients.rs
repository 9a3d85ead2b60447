//! Real Kafka clients against a real `tidelog serve` (two shards, so two virtual Kafka brokers):
//! the users' seed examples on the default port 9092, a kafka-python consumer group across a
//! rebalance and broker restarts, confluent-kafka with every codec and idempotence on and off,
//! kcat, native <-> Kafka interop both ways, and hostile raw bytes on the Kafka port.
//!
//! The clients come from `bash tests/kafka/setup.sh` (a venv at `target/kafka-venv`, or
//! `$TIDELOG_KAFKA_VENV`, plus `kcat` on the PATH). When they are missing these tests fail and
//! say so; `TIDELOG_SKIP_KAFKA_CLIENTS=1` skips what needs them.
//!
//! Broker flags assumed: `--kafka-addr HOST:PORT` (default port 9092),
//! `--group-initial-rebalance-delay-ms MS`, `--default-partitions N`, `--shards N`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::broker_process::{free_port, serial, Broker, Kafka, Serve, BIN};

/// Short, so that groups form quickly; clients still see a normal join.
const REBALANCE_DELAY_MS: &str = "300";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn kafka_dir() -> PathBuf {
    repo_root().join("tests/kafka")
}

/// The provisioned clients.
pub(crate) struct Clients {
    python: PathBuf,
    /// Where kafkajs is installed (`<dir>/node_modules/kafkajs`).
    kafkajs: PathBuf,
}

/// The clients, or `None` when `TIDELOG_SKIP_KAFKA_CLIENTS=1`; panics with what to run when
/// they are missing.
pub(crate) fn clients() -> Option<&'static Clients> {
    static CLIENTS: OnceLock<Result<Clients, String>> = OnceLock::new();
    if std::env::var("TIDELOG_SKIP_KAFKA_CLIENTS").as_deref() == Ok("1") {
        eprintln!("kafka clients: skipped (TIDELOG_SKIP_KAFKA_CLIENTS=1)");
        return None;
    }
    let found = CLIENTS.get_or_init(|| {
        let venv = std::env::var_os("TIDELOG_KAFKA_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/kafka-venv"));
        let venv = repo_root().join(venv);
        let python = venv.join("bin/python");
        let imports = Command::new(&python)
            .args([
                "-c",
                "import kafka, confluent_kafka, lz4, prometheus_client, snappy, zstandard",
            ])
            .output();
        match imports {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "{} cannot import the Kafka clients ({})",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Err(e) => return Err(format!("no venv Python at {}: {e}", python.display())),
        }
        match Command::new("kcat").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("kcat -V failed: {}", out.status)),
            Err(e) => return Err(format!("kcat is not on the PATH: {e}")),
        }
        let kafkajs = std::env::var_os("TIDELOG_KAFKAJS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/kafkajs"));
        let kafkajs = repo_root().join(kafkajs);
        if !kafkajs.join("node_modules/kafkajs/package.json").exists() {
            return Err(format!(
                "kafkajs is not installed under {}",
                kafkajs.display()
            ));
        }
        match Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => Ok(Clients { python, kafkajs }),
            Ok(out) => Err(format!("node --version failed: {}", out.status)),
            Err(e) => Err(format!("node is not on the PATH: {e}")),
        }
    });
    match found {
        Ok(c) => Some(c),
        Err(why) => panic!(
            "Kafka client tests: {why}. Run `bash tests/kafka/setup.sh` to provision them \
             (or set TIDELOG_SKIP_KAFKA_CLIENTS=1 to skip these tests)"
        ),
    }
}

/// A broker with its Kafka listener on a free loopback port.
fn kafka_broker(dir: &Path) -> Broker {
    let mut serve = Serve::new();
    serve.kafka = Kafka::At(format!("127.0.0.1:{}", free_port()));
    serve.extra = vec![
        "--group-initial-rebalance-delay-ms".into(),
        REBALANCE_DELAY_MS.into(),
        "--default-partitions".into(),
        "3".into(),
    ];
    Broker::start_with(dir, 0, serve)
}

/// What a bounded child process did.
pub(crate) struct Ran {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cmd` (stdin from `input`) with its output in files under `work`, killing it after
/// `within`; panics on a timeout with what it printed.
pub(crate) fn run_bounded(
    mut cmd: Command,
    input: Option<&[u8]>,
    within: Duration,
    work: &Path,
) -> Ran {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = work.join(format!("run-{n}.out"));
    let err_path = work.join(format!("run-{n}.err"));
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
    }
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {within:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Panics unless `ran` succeeded, with its output and the broker's log; returns stdout.
fn ok(ran: Ran, what: &str, broker: &Broker) -> String {
    assert!(
        ran.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}\nbroker log:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr,
        broker.stderr()
    );
    ran.stdout
}

pub(crate) fn python(c: &Clients, script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(&c.python);
    cmd.arg(kafka_dir().join(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// `tidelog-bench <args> --broker <bootstrap>` (the current source, built by this package).
pub(crate) fn bench(bootstrap: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidelog-bench-under-test"));
    cmd.args(args).args(["--broker", bootstrap]);
    cmd
}

fn kcat(bootstrap: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", bootstrap]).args(args);
    cmd
}

/// `tidelog <args> --broker <native>`, which must succeed; returns stdout.
fn native(broker: &Broker, args: &[&str], input: Option<&[u8]>, work: &Path) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).args(["--broker", &broker.addr]);
    let ran = run_bounded(cmd, input, Duration::from_secs(60), work);
    ok(ran, &format!("tidelog {}", args.join(" ")), broker)
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn seed_examples_run_unchanged_on_the_default_port() {
    let Some(c) = clients() else { return };
    let _one = serial();
    // The users' programs hard-code localhost:9092, so this broker runs on `serve`'s default.
    if let Err(e) = TcpListener::bind("0.0.0.0:9092") {
        panic!("port 9092 is busy ({e}): the seed-examples test needs it; stop whatever holds it");
    }
    let tmp = crate::test_dir("kafka-seed");
    let mut serve = Serve::new();
    serve.kafka = Kafka::Default;
    let broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let seed = std::env::var_os("TIDELOG_SEED_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| kafka_dir().join("seed-examples"));
    let mut cmd = Command::new("bash");
    cmd.arg(seed.join("check.sh")).env("PYTHON", &c.python);
    let ran = run_bounded(cmd, None, Duration::from_secs(180), tmp.path());
    let out = ok(ran, "seed-examples check.sh", &broker);
    assert!(
        out.contains("seed examples: consumer printed"),
        "check.sh passed without its success line: {out}"
    );
    eprintln!("{}", out.trim());
    broker.stop();
}

#[test]
fn kafka_python_group_rebalances_and_keeps_offsets_across_restarts() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-kp-group");
    let broker = kafka_broker(&tmp.path().join("data"));
    let records = "3000";
    let group_args = |phase: &str, records: &str, bootstrap: &str| -> Vec<String> {
        [
            "--bootstrap",
            bootstrap,
            "--topic",
            "kp-group",
            "--group",
            "kp-g",
            "--phase",
            phase,
            "--records",
            records,
            "--timeout",
            "170",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |broker: &Broker, phase: &str, records: &str| {
        let args = group_args(phase, records, broker.kafka());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = run_bounded(
            python(c, "kp_group.py", &args),
            None,
            Duration::from_secs(180),
            tmp.path(),
        );
        let out = ok(ran, &format!("kp_group.py --phase {phase}"), broker);
        assert!(out.starts_with("kp_group"), "no summary line: {out}");
        eprintln!("{}", out.trim());
    };
    run(&broker, "run", records);

    // kill -9: acks=all records and synced commits must both survive it.
    let serve = broker.serve();
    let dir = broker.kill_9();
    let broker = Broker::start_with(&dir, 1, serve.clone());
    run(&broker, "restart-check", records);

    // A clean restart too; the check above produced and committed one more record.
    let dir = broker.stop();
    let broker = Broker::start_with(&dir, 2, serve);
    run(&broker, "restart-check", "3001");
    broker.stop();
}

#[test]
fn confluent_kafka_every_codec_idempotence_and_admin() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-ck");
    let broker = kafka_broker(&tmp.path().join("data"));
    let ran = run_bounded(
        python(
            c,
            "ck_produce_consume.py",
            &[
                "--bootstrap",
                broker.kafka(),
                "--topic",
                "ck",
                "--records",
                "300",
                "--brokers",
                "2",
                "--timeout",
                "170",
            ],
        ),
        None,
        Duration::from_secs(180),
        tmp.path(),
    );
    let out = ok(ran, "ck_produce_consume.py", &broker);
    assert!(out.starts_with("ck_produce_consume:"), "{out}");
    eprintln!("{}", out.trim());
    broker.stop();
}

/// Reads lines from a child's stdout on a thread until `want` arrived or `within` passed,
/// then kills the child; returns the lines.
fn read_until_then_kill(mut cmd: Command, want: usize, within: Duration) -> Vec<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("lines").push(line);
            }
        })
    };
    let deadline = Instant::now() + within;
    while lines.lock().expect("lines").len() < want && Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give a duplicate the chance to show up before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("reader");
    let got = lines.lock().expect("lines").clone();
    got
}

/// The load generator's own Kafka client writes batches (keys, a size range, each of Kafka's
/// codecs) that librdkafka reads record for record, and its consumer group commits the offsets
/// it read to, so that the group's next run starts at the end.
#[test]
fn load_generator_batches_are_read_by_librdkafka_with_every_codec() {
    let Some(_) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-bench-codecs");
    let work = tmp.path();
    let broker = kafka_broker(&work.join("data"));
    let b = broker.kafka().to_owned();
    const RECORDS: usize = 3000;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("bench-{codec}");
        let records = RECORDS.to_string();
        let ran = run_bounded(
            bench(
                &b,
                &[
                    "produce",
                    "--protocol",
                    "kafka",
                    "--topic",
                    &topic,
                    "--partitions",
                    "2",
                    "--records",
                    &records,
                    "--record-size",
                    "20-200",
                    "--keys",
                    "round-robin",
                    "--compression",
                    codec,
                    "--batch-bytes",
                    "16384",
                    "--linger-ms",
                    "1",
                ],
            ),
            None,
            Duration::from_secs(60),
            work,
        );
        let table = ok(
            ran,
            &format!("tidelog-bench produce --compression {codec}"),
            &broker,
        );
        assert!(table.contains("errors: none"), "{codec}: {table}");
        // %K / %S: key and value lengths (the bytes themselves are binary).
        let ran = run_bounded(
            kcat(
                &b,
                &["-C", "-t", &topic, "-o", "beginning", "-e", "-f", "%K %S\n"],
            ),
            None,
            Duration::from_secs(60),
            work,
        );
        let out = ok(ran, &format!("kcat -C {topic}"), &broker);
        let sizes: Vec<(usize, usize)> = out
            .lines()
            .map(|l| {
                let (k, v) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{codec}: line {l:?}"));
                (
                    k.parse().expect("key length"),
                    v.parse().expect("value length"),
                )
            })
            .collect();
        assert_eq!(
            sizes.len(),
            RECORDS,
            "{codec}: every record read by librdkafka"
        );
        assert!(
            sizes
                .iter()
                .all(|(k, v)| *k == 16 && (20..=200).contains(v)),
            "{codec}: 16-byte keys, values of 20..=200 bytes"
        );
        let distinct: HashSet<usize> = sizes.iter().map(|(_, v)| *v).collect();
        assert!(distinct.len() > 50, "{codec}: sizes drawn from the range");
    }

    // Its consumer group reads everything and commits the end: a second run of the same
    // group has nothing left.
    let group_consume = |consumers: &str| -> u64 {
        let ran = run_bounded(
            bench(
                &b,
                &[
                    "consume",
                    "--protocol",
                    "kafka",
                    "--topic",
                    "bench-zstd",
                    "--consumers",
                    consumers,
                    "--group",
                    "bench-group",
                ],
            ),
            None,
            Duration::from_secs(60),
            work,
        );
        let table = ok(ran, "tidelog-bench consume --group", &broker);
        table
            .lines()
            .find_map(|l| l.strip_prefix("consume "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no consume row: {table}"))
    };
    assert_eq!(
        group_consume("2"),
        RECORDS as u64,
        "two members read it all"
    );
    assert_eq!(group_consume("1"), 0, "the group's commits were at the end");
}

#[test]
fn kcat_lists_produces_consumes_and_joins_a_group() {
    let Some(_) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-kcat");
    let work = tmp.path();
    let broker = kafka_broker(&work.join("data"));
    let b = broker.kafka().to_owned();
    native(
        &broker,
        &["topic", "create", "kc", "--partitions", "3"],
        None,
        work,
    );

    // -L: the topic and both shards as brokers, each on its own port.
    let ran = run_bounded(
        kcat(&b, &["-L", "-m", "30"]),
        None,
        Duration::from_secs(60),
        work,
    );
    let meta = ok(ran, "kcat -L", &broker);
    assert!(meta.contains(" 2 brokers:"), "{meta}");
    let broker_ports: HashSet<&str> = meta
        .lines()
        .filter_map(|l| l.trim().strip_prefix("broker "))
        .filter_map(|l| l.split(" at ").nth(1))
        .map(|a| a.split_whitespace().next().unwrap_or(a))
        .collect();
    assert_eq!(
        broker_ports.len(),
        2,
        "two brokers, distinct addresses: {meta}"
    );
    // A client that reached us on loopback is told `localhost` (both families listen).
    for a in &broker_ports {
        assert!(
            a.starts_with("localhost:") || a.starts_with("127.0.0.1:"),
            "advertised {a}: {meta}"
        );
    }
    assert!(meta.contains("topic \"kc\" with 3 partitions"), "{meta}");

    // -P: lines piped in, keyless (spread over partitions), then some to partition 1 only.
    let spread: Vec<String> = (0..100).map(|i| format!("kcat-{i}")).collect();
    let ordered: Vec<String> = (0..50).map(|i| format!("ordered-{i}")).collect();
    for (lines, extra) in [(&spread, &[][..]), (&ordered, &["-p", "1"][..])] {
        let input = lines.join("\n") + "\n";
        let args = [&["-P", "-t", "kc"][..], extra].concat();
        let ran = run_bounded(
            kcat(&b, &args),
            Some(input.as_bytes()),
            Duration::from_secs(60),
            work,
        );
        ok(ran, &format!("kcat {}", args.join(" ")), &broker);
    }
    let mut all: Vec<String> = spread.iter().chain(&ordered).cloned().collect();
    all.sort();

    // -C -e -o beginning: exactly those lines; partition 1 keeps the order they were sent in.
    let ran = run_bounded(
        kcat(
            &b,
            &["-C", "-t", "kc", "-o", "beginning", "-e", "-f", "%s\n"],
        ),
        None,
        Duration::from_secs(60),
        work,
    );
    assert_eq!(sorted_lines(&ok(ran, "kcat -C", &broker)), all);
    let ran = run_bounded(
        kcat(
            &b,
            &[
                "-C",
                "-t",
                "kc",
                "-p",
                "1",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%s\n",
            ],
        ),
        None,
        Duration::from_secs(60),
        work,
    );
    let p1 = ok(ran, "kcat -C -p 1", &broker);
    let p1_ordered: Vec<&str> = p1.lines().filter(|l| l.starts_with("ordered-")).collect();
    assert_eq!(p1_ordered, ordered, "partition 1 in produce order");

    // -G: a balanced consumer in a group gets every record once.
    let mut cmd = kcat(
        &b,
        &[
            // Unbuffered: kcat keeps running, so block-buffered output would never arrive.
            "-u",
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-f",
            "%s\n",
            "kc",
        ],
    );
    cmd.env("LC_ALL", "C");
    let mut got = read_until_then_kill(cmd, all.len(), Duration::from_secs(90));
    got.sort();
    assert_eq!(got, all, "kcat -G received every record exactly once");
    broker.stop();
}

#[test]
fn native_and_kafka_clients_read_each_others_records() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-interop");
    let work = tmp.path();
    let broker = kafka_broker(&work.join("data"));
    let b = broker.kafka().to_owned();

    // Native -> Kafka: `tidelog produce` writes, kafka-python and kcat read.
    native(
        &broker,
        &["topic", "create", "from-native", "--partitions", "3"],
        None,
        work,
    );
    let input: String = (0..200).map(|i| format!("k{i}:native-{i}\n")).collect();
    native(
        &broker,
        &["produce", "from-native", "--key-separator", ":"],
        Some(input.as_bytes()),
        work,
    );
    let ran = run_bounded(
        python(
            c,
            "kp_interop.py",
            &[
                "consume",
                "--bootstrap",
                &b,
                "--topic",
                "from-native",
                "--count",
                "200",
            ],
        ),
        None,
        Duration::from_secs(120),
        work,
    );
    let rows = ok(ran, "kp_interop.py consume from-native", &broker);
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut pairs = Vec::new();
    for row in rows.lines() {
        let f: Vec<&str> = row.splitn(4, '\t').collect();
        assert_eq!(f.len(), 4, "{row:?}");
        per_partition
            .entry(f[0].parse().expect("partition"))
            .or_default()
            .push(f[1].parse().expect("offset"));
        pairs.push(format!("{}:{}", f[2], f[3]));
    }
    for (p, offsets) in &per_partition {
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &dense, "partition {p}: offsets from 0, no gaps");
    }
    pairs.sort();
    assert_eq!(pairs, sorted_lines(&input));
    let ran = run_bounded(
        kcat(
            &b,
            &[
                "-C",
                "-t",
                "from-native",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k:%s\n",
            ],
        ),
        None,
        Duration::from_secs(60),
        work,
    );
    assert_eq!(
        sorted_lines(&ok(ran, "kcat -C from-native", &broker)),
        sorted_lines(&input)
    );

    // Kafka -> native: kafka-python (idempotent producer) and kcat write, `tidelog consume`
    // reads.
    let ran = run_bounded(
        python(
            c,
            "kp_interop.py",
            &[
                "produce",
                "--bootstrap",
                &b,
                "--topic",
                "from-kafka",
                "--count",
                "200",
                "--prefix",
                "kafka",
                "--create",
                "3",
            ],
        ),
        None,
        Duration::from_secs(120),
        work,
    );
    ok(ran, "kp_interop.py produce from-kafka", &broker);
    let kcat_input: String = (0..50).map(|i| format!("kk{i}:kcat-{i}\n")).collect();
    let ran = run_bounded(
        kcat(&b, &["-P", "-t", "from-kafka", "-K", ":"]),
        Some(kcat_input.as_bytes()),
        Duration::from_secs(60),
        work,
    );
    ok(ran, "kcat -P -K : from-kafka", &broker);
    let out = native(
        &broker,
        &[
            "consume",
            "from-kafka",
            "--from-beginning",
            "--count",
            "250",
            "--print-key",
            "--timeout-ms",
            "30000",
        ],
        None,
        work,
    );
    let mut want: Vec<String> = (0..200)
        .map(|i| format!("k{i}\tkafka-{i}"))
        .chain((0..50).map(|i| format!("kk{i}\tkcat-{i}")))
        .collect();
    want.sort();
    assert_eq!(
        sorted_lines(&out),
        want,
        "tidelog consume of Kafka-produced records"
    );
    broker.stop();
}

/// `tidelog consume` reads what log shippers send by default: compressed Kafka batches
/// (Filebeat: gzip), here written by librdkafka (kcat) with gzip and with zstd.
#[test]
fn tidelog_consume_reads_compressed_kafka_batches() {
    let Some(_c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-compressed");
    let work = tmp.path();
    let broker = kafka_broker(&work.join("data"));
    let b = broker.kafka().to_owned();
    native(
        &broker,
        &["topic", "create", "shipped", "--partitions", "2"],
        None,
        work,
    );
    let mut want = Vec::new();
    for codec in ["gzip", "zstd"] {
        let input: String = (0..100)
            .map(|i| format!("{codec}{i}:log line {i} from a shipper using {codec}\n"))
            .collect();
        want.extend(
            (0..100).map(|i| format!("{codec}{i}\tlog line {i} from a shipper using {codec}")),
        );
        let ran = run_bounded(
            kcat(&b, &["-P", "-t", "shipped", "-K", ":", "-z", codec]),
            Some(input.as_bytes()),
            Duration::from_secs(60),
            work,
        );
        ok(ran, &format!("kcat -P -z {codec}"), &broker);
    }
    let out = native(
        &broker,
        &[
            "consume",
            "shipped",
            "--from-beginning",
            "--count",
            "200",
            "--print-key",
            "--timeout-ms",
            "30000",
        ],
        None,
        work,
    );
    want.sort();
    assert_eq!(
        sorted_lines(&out),
        want,
        "tidelog consume of gzip and zstd batches"
    );
    broker.stop();
}

// ---- Hostile bytes on the Kafka port ----

/// A request: `int32 size`, header v1 (`api_key, api_version, correlation_id, client_id`),
/// plus the empty tagged-field section of header v2 when `flexible`, then `body`.
fn request(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    flexible: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(api_key.to_be_bytes());
    m.extend(version.to_be_bytes());
    m.extend(correlation_id.to_be_bytes());
    let client = b"raw-tcp";
    m.extend((client.len() as i16).to_be_bytes());
    m.extend(client);
    if flexible {
        m.push(0);
    }
    m.extend(body);
    let mut framed = (m.len() as i32).to_be_bytes().to_vec();
    framed.extend(m);
    framed
}

#[derive(Debug)]
enum Reply {
    Closed,
    Response { correlation_id: i32, body: Vec<u8> },
}

/// The broker's next frame, or `Closed`; panics when it does neither within 10 s.
fn reply(stream: &mut TcpStream, what: &str) -> Reply {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        )
    };
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if closed(&e) => return Reply::Closed,
        Err(e) => panic!("{what}: the broker neither answered nor closed within 10 s ({e})"),
    }
    let size = i32::from_be_bytes(size);
    assert!(
        (4..=64 << 20).contains(&size),
        "{what}: response size {size}"
    );
    let mut frame = vec![0u8; size as usize];
    match stream.read_exact(&mut frame) {
        Ok(()) => {}
        Err(e) if closed(&e) => panic!("{what}: connection closed inside a response frame"),
        Err(e) => panic!("{what}: response frame cut short ({e})"),
    }
    Reply::Response {
        correlation_id: i32::from_be_bytes(frame[..4].try_into().expect("4 bytes")),
        body: frame[4..].to_vec(),
    }
}

/// An ApiVersions v0 body: `(error_code, [(api_key, min, max)])`.
fn api_versions_v0(body: &[u8]) -> (i16, Vec<(i16, i16, i16)>) {
    let i16_at = |at: usize| i16::from_be_bytes(body[at..at + 2].try_into().expect("2 bytes"));
    let error = i16_at(0);
    let count = i32::from_be_bytes(body[2..6].try_into().expect("4 bytes"));
    assert!((0..1000).contains(&count), "api_keys count {count}");
    let keys = (0..count as usize)
        .map(|i| {
            let at = 6 + i * 6;
            (i16_at(at), i16_at(at + 2), i16_at(at + 4))
        })
        .collect();
    (error, keys)
}

/// ApiVersions v0 on `stream` answers with no error and the core APIs.
fn api_versions_work(stream: &mut TcpStream, correlation_id: i32, what: &str) {
    stream
        .write_all(&request(18, 0, correlation_id, false, &[]))
        .expect("send ApiVersions");
    match reply(stream, what) {
        Reply::Response {
            correlation_id: got,
            body,
        } => {
            assert_eq!(got, correlation_id, "{what}: correlation id");
            let (error, keys) = api_versions_v0(&body);
            assert_eq!(error, 0, "{what}: ApiVersions error");
            let advertised: HashSet<i16> = keys.iter().map(|k| k.0).collect();
            for key in [0, 1, 3, 18] {
                assert!(
                    advertised.contains(&key),
                    "{what}: api key {key} missing: {keys:?}"
                );
            }
        }
        Reply::Closed => panic!("{what}: ApiVersions v0 got a closed connection"),
    }
}

/// Sends `bytes` on a fresh connection (half-closing it when `then_shutdown`), and requires a
/// closed connection, or a response carrying `correlation_id` when one is allowed.
fn hostile(
    kafka: &str,
    what: &str,
    bytes: &[u8],
    then_shutdown: bool,
    correlation_id: Option<i32>,
) {
    let mut s = TcpStream::connect(kafka).expect("connect to the Kafka port");
    // The broker may close before reading everything; a failed write is a close.
    let _ = s.write_all(bytes);
    if then_shutdown {
        let _ = s.shutdown(Shutdown::Write);
    }
    match reply(&mut s, what) {
        Reply::Closed => {}
        Reply::Response {
            correlation_id: got,
            body,
        } => match correlation_id {
            Some(want) => {
                assert_eq!(got, want, "{what}: response to another request: {body:?}");
                // An error response is fine, but then the connection must stay in sync:
                // nothing more arrives unasked.
            }
            None => panic!("{what}: must close the connection, got a response {got} {body:?}"),
        },
    }
}

#[test]
fn hostile_bytes_get_an_error_or_a_closed_connection_and_the_broker_lives() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-hostile");
    let work = tmp.path();
    let mut broker = kafka_broker(&work.join("data"));
    let k = broker.kafka().to_owned();

    // A well-behaved connection opened before the barrage must keep working through it.
    let mut keeper = TcpStream::connect(&k).expect("connect");
    api_versions_work(&mut keeper, 1, "ApiVersions before the hostile input");

    // An ApiVersions version above the broker's max: error 35 with a v0 body naming key 18
    // (what librdkafka and kafka-python rely on to retry lower).
    let mut s = TcpStream::connect(&k).expect("connect");
    s.write_all(&request(18, 127, 7, true, &[]))
        .expect("send ApiVersions v127");
    match reply(&mut s, "ApiVersions v127") {
        Reply::Response {
            correlation_id,
            body,
        } => {
            assert_eq!(correlation_id, 7);
            let (error, keys) = api_versions_v0(&body);
            assert_eq!(error, 35, "UNSUPPORTED_VERSION");
            assert!(
                keys.iter().any(|k| k.0 == 18),
                "the error response lists ApiVersions' range: {keys:?}"
            );
        }
        Reply::Closed => panic!("ApiVersions v127 must get UNSUPPORTED_VERSION, not a close"),
    }
    drop(s);
    broker.assert_alive("ApiVersions v127");

    let cases: Vec<(&str, Vec<u8>, bool, Option<i32>)> = vec![
        (
            "unknown api key 32000",
            request(32000, 0, 11, false, &[]),
            false,
            Some(11),
        ),
        (
            "Metadata v127 (unsupported version)",
            request(3, 127, 12, true, &[0, 0, 0, 0]),
            false,
            Some(12),
        ),
        (
            "truncated frame (size 200, 12 bytes sent, then EOF)",
            {
                let mut r = request(3, 1, 13, false, &[0, 0, 0, 0]);
                r[..4].copy_from_slice(&200i32.to_be_bytes());
                r.truncate(16);
                r
            },
            true,
            None,
        ),
        (
            "Metadata v1 body cut short inside its array count",
            request(3, 1, 14, false, &[0, 0]),
            false,
            Some(14),
        ),
        (
            "header cut short inside client_id",
            {
                let mut m = Vec::new();
                m.extend(3i16.to_be_bytes());
                m.extend(1i16.to_be_bytes());
                m.extend(15i32.to_be_bytes());
                m.extend(1000i16.to_be_bytes());
                m.extend(b"abc");
                let mut r = (m.len() as i32).to_be_bytes().to_vec();
                r.extend(m);
                r
            },
            false,
            Some(15),
        ),
        (
            "size 0x7fffffff",
            {
                let mut r = 0x7fff_ffffi32.to_be_bytes().to_vec();
                r.extend(request(18, 0, 16, false, &[]).split_off(4));
                r
            },
            false,
            None,
        ),
        (
            "negative size",
            {
                let mut r = (-1i32).to_be_bytes().to_vec();
                r.extend([0u8; 8]);
                r
            },
            false,
            None,
        ),
        (
            "Metadata v1 with 0x7fffffff topics",
            request(3, 1, 17, false, &0x7fff_ffffi32.to_be_bytes()),
            false,
            Some(17),
        ),
        (
            "Metadata v12 with a 2^32-ish compact topic count",
            request(3, 12, 18, true, &[0xf0, 0xff, 0xff, 0xff, 0x0f]),
            false,
            Some(18),
        ),
        (
            "Produce v9 with 0x7fffffff-byte transactional id",
            request(0, 9, 19, true, &[0xff, 0xff, 0xff, 0xff, 0x07]),
            false,
            Some(19),
        ),
    ];
    for (what, bytes, shutdown, correlation_id) in cases {
        hostile(&k, what, &bytes, shutdown, correlation_id);
        broker.assert_alive(what);
    }

    api_versions_work(
        &mut keeper,
        2,
        "ApiVersions on the old connection afterwards",
    );
    let mut fresh = TcpStream::connect(&k).expect("connect");
    api_versions_work(&mut fresh, 3, "ApiVersions on a new connection afterwards");

    // And real clients still work on the same broker.
    if let Some(c) = clients() {
        let ran = run_bounded(
            kcat(&k, &["-L", "-m", "30"]),
            None,
            Duration::from_secs(60),
            work,
        );
        let meta = ok(ran, "kcat -L after the hostile input", &broker);
        assert!(meta.contains(" 2 brokers:"), "{meta}");
        for (args, what) in [
            (
                vec![
                    "produce",
                    "--bootstrap",
                    &k,
                    "--topic",
                    "survivor",
                    "--count",
                    "20",
                    "--prefix",
                    "ok",
                    "--create",
                    "2",
                ],
                "produce",
            ),
            (
                vec![
                    "consume",
                    "--bootstrap",
                    &k,
                    "--topic",
                    "survivor",
                    "--count",
                    "20",
                ],
                "consume",
            ),
        ] {
            let ran = run_bounded(
                python(c, "kp_interop.py", &args),
                None,
                Duration::from_secs(120),
                work,
            );
            let out = ok(
                ran,
                &format!("kp_interop.py {what} after the hostile input"),
                &broker,
            );
            if what == "consume" {
                assert_eq!(out.lines().count(), 20, "{out}");
            }
        }
    }
    broker.assert_alive("the clients afterwards");
    broker.stop();
}

#[test]
fn a_member_killed_without_leaving_expires_and_its_partitions_move() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-expiry");
    let broker = kafka_broker(&tmp.path().join("data"));
    let ran = run_bounded(
        python(
            c,
            "kp_session_expiry.py",
            &[
                "--bootstrap",
                broker.kafka(),
                "--topic",
                "expiry",
                "--group",
                "expiry-group",
                "--session-ms",
                "6000",
            ],
        ),
        None,
        Duration::from_secs(100),
        tmp.path(),
    );
    let out = ok(ran, "kp_session_expiry.py", &broker);
    assert!(out.starts_with("kp_session_expiry:"), "{out}");
    eprintln!("{}", out.trim());
    broker.stop();
}

/// Four kafka-python consumer processes joining one group at once, with
/// `session.timeout.ms=3000` (below Kafka's 6,000 minimum, so refused with
/// INVALID_SESSION_TIMEOUT before `--group-min-session-timeout-ms` defaulted to 1,000), settle
/// within a few seconds with one partition each, stay settled, and read their records.
#[test]
fn four_consumers_joining_at_once_settle_within_seconds() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-join-together");
    let broker = kafka_broker(&tmp.path().join("data"));
    let ran = run_bounded(
        python(
            c,
            "kp_join_together.py",
            &[
                "--bootstrap",
                broker.kafka(),
                "--topic",
                "together",
                "--group",
                "together-group",
                "--session-ms",
                "3000",
            ],
        ),
        None,
        Duration::from_secs(100),
        tmp.path(),
    );
    let out = ok(ran, "kp_join_together.py", &broker);
    assert!(out.starts_with("kp_join_together:"), "{out}");
    eprintln!("{}", out.trim());
    broker.stop();
}

/// `tests/kafka/admin_apis.py`: admin and lookup APIs through kafka-python and
/// confluent-kafka (each phase is described in the script); then `kill -9` and a restart,
/// after which the topic config overrides and a DeleteRecords' low watermark are still
/// there.
#[test]
fn admin_and_lookup_apis_through_real_clients() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-admin-apis");
    let mut serve = Serve::new();
    serve.kafka = Kafka::At(format!("127.0.0.1:{}", free_port()));
    // Retention checks every half second, so a retention change shows within the test.
    let metrics = format!("127.0.0.1:{}", free_port());
    serve.extra = [
        "--retention-check-ms",
        "500",
        "--metrics-addr",
        metrics.as_str(),
    ]
    .map(String::from)
    .to_vec();
    let mut broker = Broker::start_with(&tmp.path().join("data"), 0, serve.clone());
    let run = |broker: &Broker, phases: &[&str]| {
        let mut args = vec![
            "--bootstrap",
            broker.kafka(),
            "--topic",
            "admin",
            "--metrics",
            metrics.as_str(),
        ];
        for phase in phases {
            args.extend(["--phase", phase]);
        }
        let ran = run_bounded(
            python(c, "admin_apis.py", &args),
            None,
            Duration::from_secs(150),
            tmp.path(),
        );
        let out = ok(ran, "admin_apis.py", broker);
        eprintln!("{}", out.trim());
        out
    };
    let phases = [
        "versions",
        "timestamps",
        "configs",
        "records",
        "groups",
        "metrics",
    ];
    let out = run(&broker, &phases);
    for phase in phases {
        assert!(out.contains(&format!("admin_apis: {phase}:")), "{out}");
    }
    broker.assert_alive("the admin clients afterwards");
    let dir = broker.kill_9();
    let broker = Broker::start_with(&dir, 1, serve);
    let out = run(&broker, &["configs-after-restart"]);
    assert!(out.contains("admin_apis: configs-after-restart:"), "{out}");
    broker.stop();
}

/// `tests/kafka/ck_groups.py`: librdkafka's cooperative-sticky rebalancing (incremental
/// revocation, records consumed once) and static membership (a restarted static member gets
/// its partitions back and the other member sees no rebalance).
#[test]
fn librdkafka_cooperative_rebalancing_and_static_membership() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-ck-groups");
    let broker = kafka_broker(&tmp.path().join("data"));
    let ran = run_bounded(
        python(
            c,
            "ck_groups.py",
            &["--bootstrap", broker.kafka(), "--topic", "ck-groups"],
        ),
        None,
        Duration::from_secs(170),
        tmp.path(),
    );
    let out = ok(ran, "ck_groups.py", &broker);
    assert!(out.contains("ck_groups: cooperative:"), "{out}");
    assert!(out.contains("ck_groups: static:"), "{out}");
    eprintln!("{}", out.trim());
    broker.stop();
}

/// `tests/kafka/kafkajs_basic.js`: kafkajs (Node.js) admin calls (create with a config,
/// describeConfigs, createPartitions, groups, offsets, deleteTopicRecords), idempotent
/// acks=-1 produce, and a two-member consumer group reading every record once.
#[test]
fn kafkajs_admin_produce_consume_and_groups() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-kafkajs");
    let broker = kafka_broker(&tmp.path().join("data"));
    let mut cmd = Command::new("node");
    cmd.arg(kafka_dir().join("kafkajs_basic.js"))
        .args([broker.kafka(), "kafkajs"])
        .env("KAFKAJS_DIR", &c.kafkajs);
    let ran = run_bounded(cmd, None, Duration::from_secs(150), tmp.path());
    let out = ok(ran, "kafkajs_basic.js", &broker);
    assert!(out.starts_with("kafkajs_basic:"), "{out}");
    eprintln!("{}", out.trim());
    broker.stop();
}

/// `tests/kafka/rsyslog_ship.py`: a real log shipper, rsyslog's omkafka, ships 100,000 lines
/// with lz4 and acks=all; every line arrives exactly once and is stored compressed.
#[test]
fn rsyslog_ships_every_line_exactly_once() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-rsyslog");
    let broker = kafka_broker(&tmp.path().join("data"));
    let work = tmp.path().join("rsyslog");
    let ran = run_bounded(
        python(
            c,
            "rsyslog_ship.py",
            &[
                "--bootstrap",
                broker.kafka(),
                "--topic",
                "shipped",
                "--work",
                work.to_str().expect("utf-8 path"),
            ],
        ),
        None,
        Duration::from_secs(260),
        tmp.path(),
    );
    let out = ok(ran, "rsyslog_ship.py", &broker);
    assert!(out.starts_with("rsyslog_ship: 100000 lines"), "{out}");
    eprintln!("{}", out.trim());
    broker.stop();
}

/// `tests/kafka/kill9_soak.py`: cycles of idempotent acks=all confluent-kafka load and group
/// commits, `kill -9` at a random moment, an immediate restart on the same ports, and a check
/// that every acknowledged record is there byte for byte, in order, no offset handed out
/// twice, and committed offsets never behind an acknowledged commit. 50 cycles here
/// (`TIDELOG_SOAK_CYCLES` overrides; the script runs alone for longer soaks).
#[test]
fn kill_9_soak_keeps_every_acknowledged_record_and_commit() {
    let Some(c) = clients() else { return };
    let _one = serial();
    let tmp = crate::test_dir("kafka-kill9-soak");
    // Below the ephemeral range, so that no client socket takes one between restarts.
    let base = crate::broker_process::free_ports_below_ephemeral(4);
    let (kafka_port, native_port) = (base.to_string(), (base + 3).to_string());
    let cycles = std::env::var("TIDELOG_SOAK_CYCLES").unwrap_or_else(|_| "50".into());
    let data = tmp.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let cmd = python(
        c,
        "kill9_soak.py",
        &[
            "--tidelog",
            BIN,
            "--data-dir",
            data,
            "--kafka-port",
            &kafka_port,
            "--native-port",
            &native_port,
            "--cycles",
            &cycles,
        ],
    );
    let ran = run_bounded(cmd, None, Duration::from_secs(1200), tmp.path());
    assert!(
        ran.status.success() && ran.stdout.contains("kill9_soak: OK"),
        "kill -9 soak failed ({}):\nstdout:\n{}\nstderr:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr
            .chars()
            .rev()
            .take(4000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    eprintln!("{}", ran.stdout.trim());
}
