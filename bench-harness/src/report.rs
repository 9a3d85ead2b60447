//! The results: a live progress line on stderr, a summary table on stdout, and a JSON report
//! with the parameters, the git revision and the hardware beside the figures (a figure without
//! its setting and machine cannot be compared with anything).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::args::Plan;
use crate::run::{Outcome, Phase, Shared};
use crate::stats::{rates, LatencySummary, Live};

/// Prints one progress line per second on stderr until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(shared: Arc<Shared>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tidelog-bench-progress".into())
            .spawn(move || progress_loop(&shared, &flag))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn progress_loop(shared: &Shared, stop: &AtomicBool) {
    let live = &shared.live;
    let mut last = [0u64; 4];
    let mut last_at = Instant::now();
    let mut next = last_at + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        let now = [
            Live::get(&live.produced),
            Live::get(&live.produced_bytes),
            Live::get(&live.consumed),
            Live::get(&live.consumed_bytes),
        ];
        let dt = last_at.elapsed();
        last_at = Instant::now();
        let t = shared.started().map_or(0.0, |s| s.elapsed().as_secs_f64());
        let mut line = format!("[{t:6.1}s]");
        if shared.plan.mode.produces() {
            let (rps, mbs) = rates(now[0] - last[0], now[1] - last[1], dt);
            let _ = write!(
                line,
                " produce {:>9.0} rec/s {mbs:>8.1} MB/s (total {})",
                rps, now[0]
            );
        }
        if shared.plan.mode.consumes() {
            let (rps, mbs) = rates(now[2] - last[2], now[3] - last[3], dt);
            let _ = write!(
                line,
                " | consume {:>9.0} rec/s {mbs:>8.1} MB/s (total {})",
                rps, now[2]
            );
        }
        let _ = write!(line, " | errors {}", Live::get(&live.errors));
        eprintln!("{line}");
        last = now;
    }
}

/// The summary table.
pub fn table(plan: &Plan, outcome: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tidelog-bench {}: topic {} ({} partitions), {} producers, {} consumers, {} B records, \
         acks={}, {} executors",
        plan.mode.name(),
        plan.topic,
        outcome.partitions,
        plan.producers,
        plan.consumers,
        plan.record_size,
        crate::args::acks_name(plan.acks),
        plan.executors.len()
    );
    let _ = writeln!(
        s,
        "{:<8} {:>12} {:>12} {:>10} {:>9} | {:>8} {:>8} {:>8} {:>8} {:>9}",
        "phase",
        "records",
        "rec/s",
        "MB/s",
        "secs",
        "p50 us",
        "p90 us",
        "p99 us",
        "p999 us",
        "max us"
    );
    let row = |s: &mut String, name: &str, phase: Option<&Phase>, lat: Option<LatencySummary>| {
        let (records, rps, mbs, secs) = phase.map_or((String::new(), 0.0, 0.0, 0.0), |p| {
            let (rps, mbs) = rates(p.records, p.bytes, p.elapsed);
            (p.records.to_string(), rps, mbs, p.elapsed.as_secs_f64())
        });
        let _ = write!(s, "{name:<8} {records:>12} ");
        if phase.is_some() {
            let _ = write!(s, "{rps:>12.0} {mbs:>10.1} {secs:>9.2} |");
        } else {
            let _ = write!(s, "{:>12} {:>10} {:>9} |", "", "", "");
        }
        match lat {
            Some(l) if l.count > 0 => {
                let _ = writeln!(
                    s,
                    " {:>8} {:>8} {:>8} {:>8} {:>9}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                );
            }
            _ => s.push('\n'),
        }
    };
    if let Some(p) = &outcome.produce {
        row(&mut s, "produce", Some(p), Some(p.latency.summary()));
    }
    if let Some(p) = &outcome.consume {
        row(&mut s, "consume", Some(p), None);
    }
    if let Some(l) = &outcome.e2e {
        row(&mut s, "e2e", None, Some(l.summary()));
    }
    if outcome.errors.0.is_empty() {
        let _ = writeln!(s, "errors: none");
    } else {
        let kinds: Vec<String> = outcome
            .errors
            .0
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(
            s,
            "errors: {} ({})",
            outcome.errors.total(),
            kinds.join(", ")
        );
    }
    s
}

fn phase_json(p: &Phase, latency: bool) -> serde_json::Value {
    let (rps, mbs) = rates(p.records, p.bytes, p.elapsed);
    let mut v = serde_json::json!({
        "records": p.records,
        "bytes": p.bytes,
        "seconds": p.elapsed.as_secs_f64(),
        "records_per_s": rps,
        "mb_per_s": mbs,
    });
    if latency {
        v["latency_us"] = p.latency.summary().to_json();
    }
    v
}

/// The JSON report.
pub fn json(plan: &Plan, outcome: &Outcome) -> serde_json::Value {
    let mut params = plan.to_json();
    params["partitions"] = outcome.partitions.into();
    serde_json::json!({
        "tool": "tidelog-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "git": git_revision(),
        "hardware": hardware(),
        "params": params,
        "produce": outcome.produce.as_ref().map(|p| phase_json(p, true)),
        "consume": outcome.consume.as_ref().map(|p| phase_json(p, false)),
        "e2e": outcome.e2e.as_ref().map(|l| serde_json::json!({ "latency_us": l.summary().to_json() })),
        "errors": outcome.errors.0,
    })
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encode JSON")?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// The revision this binary was built from (`-dirty` with local changes), from the source
/// tree it was built in; `null` when git or the tree is not there.
fn git_revision() -> serde_json::Value {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(rev) = git(&["rev-parse", "HEAD"]) else {
        return serde_json::Value::Null;
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    serde_json::json!({ "revision": rev, "dirty": dirty })
}

/// CPU model, CPU count, memory and kernel, from /proc.
pub fn hardware() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let cpus_online = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_total_kb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    serde_json::json!({
        "cpu_model": cpu_model,
        "cpus_online": cpus_online,
        "cpus_available": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_bytes": mem_total_kb.map(|kb| kb * 1024),
        "kernel": kernel,
    })
}
