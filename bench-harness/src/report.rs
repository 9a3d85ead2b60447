//! The results: a live progress line on stderr (which also records the per-second series and
//! samples the broker's /proc), a summary table on stdout, a side-by-side table for --compare,
//! and a JSON report with the parameters, the git revision and the hardware beside the figures
//! (a figure without its setting and machine cannot be compared with anything).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::args::Plan;
use crate::procfs::{self, BrokerUsage, ProcSample};
use crate::stats::{rates, LatencySummary, Live};
use crate::work::{Outcome, Phase, Shared};

/// One interval (about a second) of a run, from the live counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    /// End of the interval, seconds since the start.
    pub t_s: f64,
    /// Length of the interval.
    pub dt_s: f64,
    /// The interval ended inside the warm-up (left out of the results).
    pub warmup: bool,
    pub produce_records_per_s: f64,
    pub produce_mb_per_s: f64,
    pub consume_records_per_s: f64,
    pub consume_mb_per_s: f64,
    /// Errors in the interval.
    pub errors: u64,
    /// Broker CPU seconds per second in the interval (1.0 = one core busy), with --broker-pid.
    pub broker_cpu: Option<f64>,
    /// Broker RSS at the end of the interval, with --broker-pid.
    pub broker_rss_bytes: Option<u64>,
}

impl SeriesPoint {
    /// The point as JSON.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "t_s": self.t_s,
            "dt_s": self.dt_s,
            "warmup": self.warmup,
            "produce_records_per_s": self.produce_records_per_s,
            "produce_mb_per_s": self.produce_mb_per_s,
            "consume_records_per_s": self.consume_records_per_s,
            "consume_mb_per_s": self.consume_mb_per_s,
            "errors": self.errors,
            "broker_cpu": self.broker_cpu,
            "broker_rss_bytes": self.broker_rss_bytes,
        })
    }
}

/// What the progress thread recorded beside the outcome.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// One point per second, and a last shorter one at the end.
    pub series: Vec<SeriesPoint>,
    /// The broker's usage over the measured run (with --broker-pid, while its /proc was
    /// readable).
    pub broker: Option<BrokerUsage>,
}

/// One finished run and what it was: the unit of the table, the JSON and the HTML.
#[derive(Debug, Clone)]
pub struct Run {
    /// What the run is called in comparisons (its target).
    pub label: String,
    pub plan: Plan,
    pub outcome: Outcome,
    pub telemetry: Telemetry,
}

/// Prints one progress line per second on stderr and records the series until finished.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Telemetry>>,
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

impl Progress {
    /// Stops the thread and returns what it recorded.
    pub fn finish(mut self) -> Telemetry {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
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

/// Samples the broker when the pid is known.
fn broker_sample(shared: &Shared) -> Option<ProcSample> {
    shared.plan.broker_pid.and_then(procfs::sample)
}

fn progress_loop(shared: &Shared, stop: &AtomicBool) -> Telemetry {
    let live = &shared.live;
    let mut last = [0u64; 5];
    let mut last_at = Instant::now();
    let mut next = last_at + Duration::from_secs(1);
    // The broker's baseline: taken now (before the start) without warm-up, else rebased when
    // the warm-up ends.
    let mut base = broker_sample(shared);
    let mut rebased = shared.plan.warmup.is_zero();
    let mut last_broker = base;
    let mut rss_max = base.map_or(0, |b| b.rss_bytes);
    let mut telemetry = Telemetry::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !rebased && shared.measured_from().is_some_and(|m| Instant::now() >= m) {
            rebased = true;
            base = broker_sample(shared).or(base);
            rss_max = base.map_or(0, |b| b.rss_bytes);
        }
        if !stopping && Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        let now = [
            Live::get(&live.produced),
            Live::get(&live.produced_bytes),
            Live::get(&live.consumed),
            Live::get(&live.consumed_bytes),
            Live::get(&live.errors),
        ];
        // The first interval counts from the start, not from before the setup.
        let from = shared.started().map_or(last_at, |s| last_at.max(s));
        let dt = from.elapsed();
        last_at = Instant::now();
        let broker = broker_sample(shared);
        if let Some(b) = broker {
            rss_max = rss_max.max(b.rss_bytes);
        }
        let point = shared.started().map(|started| {
            let (produce_rps, produce_mbs) = rates(now[0] - last[0], now[1] - last[1], dt);
            let (consume_rps, consume_mbs) = rates(now[2] - last[2], now[3] - last[3], dt);
            SeriesPoint {
                t_s: started.elapsed().as_secs_f64(),
                dt_s: dt.as_secs_f64(),
                warmup: shared.measured_from().is_some_and(|m| Instant::now() < m),
                produce_records_per_s: produce_rps,
                produce_mb_per_s: produce_mbs,
                consume_records_per_s: consume_rps,
                consume_mb_per_s: consume_mbs,
                errors: now[4] - last[4],
                broker_cpu: broker
                    .zip(last_broker)
                    .map(|(b, a)| (b.cpu_s - a.cpu_s).max(0.0) / dt.as_secs_f64().max(1e-9)),
                broker_rss_bytes: broker.map(|b| b.rss_bytes),
            }
        });
        last_broker = broker.or(last_broker);
        last = now;
        if let Some(p) = point {
            // The last interval is shorter: keep it unless it is a sliver.
            if !stopping || p.dt_s >= 0.1 {
                eprintln!("{}", progress_line(shared, &p, now));
                telemetry.series.push(p);
            }
        }
        if stopping {
            break;
        }
    }
    telemetry.broker = base
        .zip(last_broker)
        .map(|(a, b)| BrokerUsage::between(a, b, rss_max));
    telemetry
}

/// The progress line of one interval; `totals` are the live counters.
fn progress_line(shared: &Shared, p: &SeriesPoint, totals: [u64; 5]) -> String {
    let mut line = format!("[{:6.1}s]", p.t_s);
    if p.warmup {
        line.push_str(" warm-up");
    }
    if shared.plan.mode.produces() {
        let _ = write!(
            line,
            " produce {:>9.0} rec/s {:>8.1} MB/s (total {})",
            p.produce_records_per_s, p.produce_mb_per_s, totals[0]
        );
    }
    if shared.plan.mode.consumes() {
        let _ = write!(
            line,
            " | consume {:>9.0} rec/s {:>8.1} MB/s (total {})",
            p.consume_records_per_s, p.consume_mb_per_s, totals[2]
        );
    }
    let _ = write!(line, " | errors {}", totals[4]);
    if let (Some(cpu), Some(rss)) = (p.broker_cpu, p.broker_rss_bytes) {
        let _ = write!(
            line,
            " | broker {:.0}% CPU {:.0} MiB",
            cpu * 100.0,
            rss as f64 / (1 << 20) as f64
        );
    }
    line
}

/// Bytes produced plus consumed in the measured run.
fn bytes_moved(outcome: &Outcome) -> u64 {
    outcome.produce.as_ref().map_or(0, |p| p.bytes)
        + outcome.consume.as_ref().map_or(0, |p| p.bytes)
}

/// "topic T" or "N topics T-0..T-(N-1)".
fn topics_text(plan: &crate::args::Plan) -> String {
    match plan.topics.as_slice() {
        [one] => format!("topic {one}"),
        [first, .., last] => format!("{} topics {first}..{last}", plan.topics.len()),
        [] => "no topic".into(),
    }
}

/// The summary table.
pub fn table(run: &Run) -> String {
    let (plan, outcome) = (&run.plan, &run.outcome);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tidelog-bench {} on {}: {} ({} partitions), {} producers, {} consumers{}, {} B \
         records, acks={}, {} executors",
        plan.mode.name(),
        run.label,
        topics_text(plan),
        outcome.partitions,
        plan.producers,
        plan.consumers,
        plan.group
            .as_ref()
            .map(|g| format!(" in group {g}"))
            .unwrap_or_default(),
        record_size_text(plan),
        crate::args::acks_name(plan.acks),
        plan.executors.len()
    );
    let _ = writeln!(
        s,
        "{:<8} {:>12} {:>12} {:>10} {:>9} | {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "phase",
        "records",
        "rec/s",
        "MB/s",
        "secs",
        "p50 us",
        "p90 us",
        "p99 us",
        "p999 us",
        "p9999 us",
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
                    " {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
                    l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
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
    if let Some(l) = outcome.send_lag.as_ref().filter(|l| l.count() > 0) {
        // The generator's own lateness against the open-loop schedule: included in the
        // publish latency above, shown so that a late generator is not taken for the broker.
        row(&mut s, "send lag", None, Some(l.summary()));
    }
    if let (Some(p), false) = (&outcome.produce, outcome.produced_by_node.is_empty()) {
        // Over the produce phase's whole time, so the nodes' figures add up to its total.
        let _ = writeln!(s, "produced, by the node that acknowledged it (leader):");
        for (node, (records, bytes)) in &outcome.produced_by_node {
            let (rps, mbs) = rates(*records, *bytes, p.elapsed);
            let share = 100.0 * *bytes as f64 / p.bytes.max(1) as f64;
            let _ = writeln!(
                s,
                "  node {node:>8} {records:>12} {rps:>12.0} {mbs:>10.1} MB/s  {share:>5.1}%"
            );
        }
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
    if let Some(b) = &run.telemetry.broker {
        let per_gb = b
            .cpu_s_per_gb(bytes_moved(outcome))
            .map_or_else(String::new, |x| format!(" ({x:.2} CPU-s per GB moved)"));
        let _ = writeln!(
            s,
            "broker: {:.2} CPU-s{per_gb}, RSS max {:.1} MiB, end {:.1} MiB",
            b.cpu_s,
            b.rss_max_bytes as f64 / (1 << 20) as f64,
            b.rss_end_bytes as f64 / (1 << 20) as f64
        );
    } else if let Some(pid) = plan.broker_pid {
        let _ = writeln!(s, "broker: /proc/{pid} was not readable");
    }
    s
}

/// `1024`, or `64-4096` for a range.
fn record_size_text(plan: &Plan) -> String {
    if plan.record_size_min == plan.record_size {
        plan.record_size.to_string()
    } else {
        format!("{}-{}", plan.record_size_min, plan.record_size)
    }
}

/// One row of the --compare table: a figure of both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub name: String,
    pub first: Option<f64>,
    pub second: Option<f64>,
}

impl CompareRow {
    /// second / first, when both are there and first is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.first, self.second) {
            (Some(a), Some(b)) if a != 0.0 => Some(b / a),
            _ => None,
        }
    }
}

/// Throughput and latency figures of a run by name, for comparison.
fn figures(run: &Run) -> Vec<(String, f64)> {
    let o = &run.outcome;
    let mut f = Vec::new();
    let mut phase = |name: &str, p: &Phase| {
        let (rps, mbs) = rates(p.records, p.bytes, p.elapsed);
        f.push((format!("{name} rec/s"), rps));
        f.push((format!("{name} MB/s"), mbs));
    };
    if let Some(p) = &o.produce {
        phase("produce", p);
    }
    if let Some(p) = &o.consume {
        phase("consume", p);
    }
    let mut latency = |name: &str, l: LatencySummary| {
        if l.count == 0 {
            return;
        }
        for (q, v) in [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p999),
            ("p99.99", l.p9999),
            ("max", l.max),
        ] {
            f.push((format!("{name} {q} us"), v as f64));
        }
    };
    if let Some(p) = &o.produce {
        latency("publish", p.latency.summary());
    }
    if let Some(l) = &o.e2e {
        latency("e2e", l.summary());
    }
    if let Some(l) = &o.send_lag {
        latency("send lag", l.summary());
    }
    f.push(("errors".into(), o.errors.total() as f64));
    if let Some(b) = &run.telemetry.broker {
        f.push(("broker CPU-s".into(), b.cpu_s));
        if let Some(x) = b.cpu_s_per_gb(bytes_moved(o)) {
            f.push(("broker CPU-s/GB".into(), x));
        }
        f.push((
            "broker RSS max MiB".into(),
            b.rss_max_bytes as f64 / (1 << 20) as f64,
        ));
    }
    f
}

/// The rows of the --compare table: every figure of either run, in the first run's order.
pub fn compare_rows(first: &Run, second: &Run) -> Vec<CompareRow> {
    let a = figures(first);
    let b = figures(second);
    let mut rows: Vec<CompareRow> = a
        .iter()
        .map(|(name, v)| CompareRow {
            name: name.clone(),
            first: Some(*v),
            second: b.iter().find(|(n, _)| n == name).map(|(_, v)| *v),
        })
        .collect();
    for (name, v) in &b {
        if !a.iter().any(|(n, _)| n == name) {
            rows.push(CompareRow {
                name: name.clone(),
                first: None,
                second: Some(*v),
            });
        }
    }
    rows
}

/// The side-by-side table of --compare, with ratios second / first.
pub fn compare_table(first: &Run, second: &Run) -> String {
    let mut s = String::new();
    let width = first.label.len().max(second.label.len()).max(12);
    let _ = writeln!(
        s,
        "{:<20} {:>width$} {:>width$} {:>8}",
        "compare", first.label, second.label, "ratio"
    );
    let cell = |v: Option<f64>| {
        v.map_or_else(
            || "-".to_owned(),
            |v| {
                if v.abs() >= 100.0 || v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            },
        )
    };
    for row in compare_rows(first, second) {
        let ratio = row
            .ratio()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            s,
            "{:<20} {:>width$} {:>width$} {:>8}",
            row.name,
            cell(row.first),
            cell(row.second),
            ratio
        );
    }
    s
}

/// The --compare part of the JSON report: the second run and the ratios.
pub fn compare_json(first: &Run, second: &Run) -> serde_json::Value {
    let ratios: serde_json::Map<String, serde_json::Value> = compare_rows(first, second)
        .into_iter()
        .map(|r| (r.name.clone(), r.ratio().into()))
        .collect();
    serde_json::json!({
        "first": first.label,
        "second": second.label,
        "run": json(second),
        "ratios": ratios,
    })
}

/// Kafka: the produce phase per acknowledging node (broker id), rates over the phase's time.
fn by_node_json(
    p: &Phase,
    by_node: &std::collections::BTreeMap<i32, (u64, u64)>,
) -> serde_json::Value {
    by_node
        .iter()
        .map(|(node, (records, bytes))| {
            let (rps, mbs) = rates(*records, *bytes, p.elapsed);
            serde_json::json!({
                "node": node,
                "records": records,
                "bytes": bytes,
                "records_per_s": rps,
                "mb_per_s": mbs,
            })
        })
        .collect()
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
pub fn json(run: &Run) -> serde_json::Value {
    let (plan, outcome) = (&run.plan, &run.outcome);
    let mut params = plan.to_json();
    params["partitions"] = outcome.partitions.into();
    let git = git_revision();
    let broker = run.telemetry.broker.map(|b| {
        serde_json::json!({
            "pid": plan.broker_pid,
            "cpu_s": b.cpu_s,
            "cpu_s_per_gb": b.cpu_s_per_gb(bytes_moved(outcome)),
            "rss_max_bytes": b.rss_max_bytes,
            "rss_end_bytes": b.rss_end_bytes,
            "rss_start_bytes": b.rss_start_bytes,
        })
    });
    serde_json::json!({
        "tool": "tidelog-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "target": run.label,
        "git_rev": git.get("revision").and_then(|r| r.as_str()).unwrap_or("unknown"),
        "git": git,
        "hardware": hardware(),
        "params": params,
        "broker": broker,
        "series": run.telemetry.series.iter().map(|p| p.to_json()).collect::<Vec<_>>(),
        "produce": outcome.produce.as_ref().map(|p| {
            let mut v = phase_json(p, true);
            v["by_node"] = by_node_json(p, &outcome.produced_by_node);
            v
        }),
        "consume": outcome.consume.as_ref().map(|p| phase_json(p, false)),
        "e2e": outcome.e2e.as_ref().map(|l| serde_json::json!({ "latency_us": l.summary().to_json() })),
        "send_lag_us": outcome.send_lag.as_ref().map(|l| l.summary().to_json()),
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
        "logical_cores": cpus_online,
        "cpus_available": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_bytes": mem_total_kb.map(|kb| kb * 1024),
        "kernel": kernel,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::args::Args;
    use crate::stats::Latency;
    use clap::Parser;

    /// A finished e2e run with made-up figures: `scale` multiplies throughput and latency.
    pub(crate) fn fake_run(label: &str, scale: u64) -> Run {
        let args = Args::try_parse_from(["tidelog-bench", "--broker-pid", "1"]).expect("parses");
        let plan = Plan::from_args(&args).expect("valid");
        let mut latency = Latency::default();
        for us in 1..=1000u64 {
            latency.record_ns(0, us * 1000 * scale);
        }
        let phase = |records: u64| Phase {
            records: records * scale,
            bytes: records * scale * 1000,
            elapsed: Duration::from_secs(2),
            latency: latency.clone(),
        };
        let series = (1..=3)
            .map(|t| SeriesPoint {
                t_s: f64::from(t),
                dt_s: 1.0,
                warmup: false,
                produce_records_per_s: 500.0 * scale as f64,
                produce_mb_per_s: 0.5 * scale as f64,
                consume_records_per_s: 400.0,
                consume_mb_per_s: 0.4,
                errors: 0,
                broker_cpu: Some(0.5),
                broker_rss_bytes: Some(1 << 20),
            })
            .collect();
        Run {
            label: label.to_owned(),
            plan,
            outcome: Outcome {
                partitions: 1,
                produce: Some(phase(1000)),
                consume: Some(phase(1000)),
                e2e: Some(latency.clone()),
                ..Outcome::default()
            },
            telemetry: Telemetry {
                series,
                broker: Some(BrokerUsage {
                    cpu_s: 2.0 * scale as f64,
                    rss_max_bytes: 4 << 20,
                    rss_end_bytes: 3 << 20,
                    rss_start_bytes: 2 << 20,
                }),
            },
        }
    }

    #[test]
    fn compare_ratios_are_second_over_first() {
        let (a, b) = (fake_run("native", 1), fake_run("kafka://h:1", 2));
        let rows = compare_rows(&a, &b);
        let ratio = |name: &str| {
            rows.iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("row {name}"))
                .ratio()
        };
        assert_eq!(ratio("produce rec/s"), Some(2.0));
        assert_eq!(ratio("consume MB/s"), Some(2.0));
        assert_eq!(ratio("broker CPU-s"), Some(2.0));
        assert_eq!(ratio("errors"), None, "0 errors: no ratio");
        let p99 = ratio("publish p99 us").expect("latency ratio");
        assert!((p99 - 2.0).abs() < 0.01, "{p99}");
        let row = CompareRow {
            name: "x".into(),
            first: None,
            second: Some(1.0),
        };
        assert_eq!(row.ratio(), None);
        let table = compare_table(&a, &b);
        assert!(
            table.contains("kafka://h:1") && table.contains("2.00x"),
            "{table}"
        );
        let json = compare_json(&a, &b);
        assert_eq!(json["ratios"]["produce rec/s"], 2.0);
        assert_eq!(json["run"]["target"], "kafka://h:1");
    }

    #[test]
    fn json_report_has_the_documented_fields() {
        let run = fake_run("native", 1);
        let j = json(&run);
        for phase in ["produce", "consume"] {
            assert!(j[phase]["records_per_s"].as_f64().is_some(), "{phase}");
            assert!(j[phase]["mb_per_s"].as_f64().is_some(), "{phase}");
        }
        for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(j["produce"]["latency_us"][p].as_u64().is_some(), "{p}");
            assert!(j["e2e"]["latency_us"][p].as_u64().is_some(), "{p}");
        }
        assert!(j["git_rev"].is_string());
        assert!(j["hardware"]["logical_cores"].as_u64().is_some());
        assert_eq!(j["series"].as_array().map(Vec::len), Some(3));
        assert_eq!(j["broker"]["cpu_s"], 2.0);
        assert_eq!(j["broker"]["rss_max_bytes"], 4 << 20);
        assert_eq!(j["params"]["broker_pid"], 1);
        assert!(table(&run).contains("broker: 2.00 CPU-s"));
    }

    #[test]
    fn html_is_self_contained() {
        let (a, b) = (fake_run("native", 1), fake_run("kafka://h:1", 2));
        for page in [crate::html::page(&[&a]), crate::html::page(&[&a, &b])] {
            assert!(page.starts_with("<!DOCTYPE html>"));
            assert!(page.contains("<svg") && page.contains("<polyline"));
            assert!(page.contains(">99.9<"), "percentile axis labels");
            let lower = page.to_lowercase();
            for banned in ["http", "src=", "href=", "<script", "@import", "url("] {
                assert!(!lower.contains(banned), "{banned} in the page");
            }
        }
    }
}
