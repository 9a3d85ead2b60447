//! `--smoke`: an in-process broker with its native and Kafka listeners, a short e2e run over
//! each protocol (Kafka first, then native), and a check that every record came back. It runs
//! in `cargo test` (tests/smoke.rs), so neither target can rot unnoticed (TigerBeetle's "no
//! benchmark bitrot").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use tidelog_engine::broker::{self, BrokerConfig};

use crate::args::{Args, Plan};
use crate::report;
use crate::run::Outcome;

/// Records of the smoke run.
pub const SMOKE_RECORDS: u64 = 20_000;

/// Starts a broker with its data in a fresh directory, runs the smoke plan through `run` over
/// Kafka (its table printed here) and then over the native protocol, checks both outcomes, and
/// returns the native one (whose plan `run` saw last).
///
/// # Errors
/// Broker start-up, a run, or a record that was not consumed.
pub fn smoke(mut run: impl FnMut(Plan) -> Result<Outcome>) -> Result<Outcome> {
    let dir = smoke_dir()?.join(format!("tidelog-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = BrokerConfig::new(&dir);
    config.native_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.kafka_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.shards = 1;
    config.pin_cpus = false;
    // The default preallocation is sized for production disks.
    config.log_defaults.preallocate_bytes = 1 << 20;
    let broker = broker::start(config).context("cannot start the in-process broker")?;
    eprintln!(
        "tidelog-bench: smoke: broker on {} with data in {}",
        broker.native_addr(),
        dir.display()
    );
    // Two topics, keys, a size range and a consumer group on both protocols; compression
    // where the protocol has it.
    let plan = |protocol: &str, addr: SocketAddr| {
        let extra = match protocol {
            "kafka" => "--keys round-robin --compression lz4",
            _ => "--keys random",
        };
        let line = format!(
            "tidelog-bench e2e --protocol {protocol} --broker {addr} --topic smoke-{protocol} \
             --topics 2 --partitions 2 --producers 2 --consumers 2 --record-size 16-112 \
             --acks 1 --records {SMOKE_RECORDS} --batch-bytes 16384 --linger-ms 1 \
             --group smoke-{protocol} {extra}"
        );
        Plan::from_args(&Args::parse_from(line.split_whitespace()))
    };
    let kafka = broker
        .kafka_addr()
        .ok_or_else(|| anyhow!("the smoke broker has no Kafka listener"))
        .and_then(|addr| plan("kafka", addr))
        .and_then(|plan| {
            let outcome = run(plan.clone())?;
            let finished = report::Run {
                label: format!("kafka://{}", plan.broker),
                plan,
                outcome: outcome.clone(),
                telemetry: report::Telemetry::default(),
            };
            print!("{}", report::table(&finished));
            check(&outcome).context("over Kafka")?;
            println!("smoke: kafka ok, every record was consumed");
            Ok(())
        });
    let outcome = kafka.and_then(|()| plan("native", broker.native_addr()).and_then(&mut run));
    let stopped = broker.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = outcome?;
    stopped.map_err(|e| anyhow!("broker shutdown: {e}"))?;
    check(&outcome)?;
    Ok(outcome)
}

fn check(o: &Outcome) -> Result<()> {
    let produced = o.produce.as_ref().map_or(0, |p| p.records);
    let consumed = o.consume.as_ref().map_or(0, |p| p.records);
    ensure!(o.errors.0.is_empty(), "smoke: errors {:?}", o.errors.0);
    ensure!(
        produced == SMOKE_RECORDS,
        "smoke: {produced} of {SMOKE_RECORDS} records acknowledged"
    );
    ensure!(
        o.consume_expected == SMOKE_RECORDS,
        "smoke: the end offsets span {} records, not {SMOKE_RECORDS}",
        o.consume_expected
    );
    ensure!(
        consumed == SMOKE_RECORDS,
        "smoke: {consumed} of {SMOKE_RECORDS} records consumed"
    );
    let e2e = o.e2e.as_ref().map_or(0, |l| l.count());
    ensure!(
        e2e == SMOKE_RECORDS,
        "smoke: {e2e} end-to-end latencies for {SMOKE_RECORDS} records"
    );
    Ok(())
}

/// Where the smoke broker keeps its data: the cargo target directory the binary was built in
/// (a real disk, needed for O_DIRECT), else the temporary directory unless it is tmpfs.
fn smoke_dir() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target));
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/tidelog-bench
        if let Some(target) = exe.parent().and_then(Path::parent) {
            candidates.push(target.to_path_buf());
        }
    }
    candidates.push(std::env::temp_dir());
    for dir in &candidates {
        if dir.is_dir() && fs_type(dir).as_deref() != Some("tmpfs") {
            return Ok(dir.clone());
        }
    }
    bail!("no directory for the smoke broker off tmpfs among {candidates:?} (O_DIRECT needs one)")
}

/// The filesystem type of `dir` per /proc/mounts (the longest mount point above it).
fn fs_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}
