//! `--sweep` / `--sweep-rates`: latency at fixed rates, as a curve, the way OpenMessaging
//! Benchmark reports compare brokers. With `--sweep P1,P2,...` a closed-loop run first finds
//! the maximum rate of the workload, then one open-loop run per percentage of it; with
//! `--sweep-rates R1,R2,...` the rates (records/s) are given. Each point is a whole run of
//! its own on topics of its own (`TOPIC-sweep-N`), so no point reads another's records.
//! The result: one row per point (rate asked, rate achieved, MB/s, publish and end-to-end
//! p50 / p99 / p99.9), in the table, the JSON (`sweep`) and the HTML (latency against
//! throughput).

use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::args::{topic_names, Plan};
use crate::report::{self, Run};
use crate::stats::LatencySummary;

/// Most points of one sweep.
pub const POINTS_MAX: usize = 32;

/// How the sweep's rates are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Rates {
    /// Percentages of the maximum a closed-loop run measures first.
    PercentOfMax(Vec<f64>),
    /// Records per second.
    Absolute(Vec<f64>),
}

impl Rates {
    /// Checks the list: 1..=[`POINTS_MAX`] positive finite values, percentages at most 100.
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn check(&self) -> Result<()> {
        let (values, what) = match self {
            Rates::PercentOfMax(v) => (v, "--sweep"),
            Rates::Absolute(v) => (v, "--sweep-rates"),
        };
        if values.is_empty() || values.len() > POINTS_MAX {
            bail!(
                "{what} takes 1 to {POINTS_MAX} values, got {}",
                values.len()
            );
        }
        for &v in values {
            if !(v.is_finite() && v > 0.0) {
                bail!("{what} values must be positive, got {v}");
            }
            if matches!(self, Rates::PercentOfMax(_)) && v > 100.0 {
                bail!("{what} takes percentages of the maximum (at most 100), got {v}");
            }
        }
        Ok(())
    }
}

/// One point of the curve.
#[derive(Debug, Clone)]
pub struct Point {
    /// Records per second asked for.
    pub rate: f64,
    /// The percentage of the maximum it stands for, with `--sweep`.
    pub percent: Option<f64>,
    pub run: Run,
}

/// A finished sweep: the closed-loop run that measured the maximum (with `--sweep`) and the
/// points in the order given.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub max: Option<Run>,
    pub points: Vec<Point>,
}

/// The plan of the sweep's `index`-th run: the workload of `base` on topics of its own, at
/// `rate` (open loop) or closed loop (`None`).
pub fn point_plan(base: &Plan, base_topic: &str, index: &str, rate: Option<f64>) -> Plan {
    let mut plan = base.clone();
    plan.topics = topic_names(&format!("{base_topic}-sweep-{index}"), base.topics.len());
    plan.rate = rate;
    plan
}

/// The produce rate a run achieved, records per second.
fn achieved(run: &Run) -> f64 {
    run.outcome.produce.as_ref().map_or(0.0, |p| {
        crate::stats::rates(p.records, p.bytes, p.elapsed).0
    })
}

/// The produce throughput a run achieved, MB/s.
fn achieved_mb(run: &Run) -> f64 {
    run.outcome.produce.as_ref().map_or(0.0, |p| {
        crate::stats::rates(p.records, p.bytes, p.elapsed).1
    })
}

/// Runs the sweep: `execute` runs one plan (the caller's progress and telemetry).
///
/// # Errors
/// A failed run, or a maximum of zero (nothing was acknowledged).
pub fn run(
    base: &Plan,
    base_topic: &str,
    rates: &Rates,
    mut execute: impl FnMut(&Plan) -> Result<Run>,
) -> Result<Sweep> {
    rates.check()?;
    let (max, targets): (Option<Run>, Vec<(f64, Option<f64>)>) = match rates {
        Rates::Absolute(list) => (None, list.iter().map(|&r| (r, None)).collect()),
        Rates::PercentOfMax(list) => {
            eprintln!("sweep: measuring the maximum rate (closed loop)");
            let run = execute(&point_plan(base, base_topic, "max", None))?;
            let max = achieved(&run);
            if max <= 0.0 {
                bail!("the closed-loop run acknowledged nothing: no maximum to sweep under");
            }
            let targets = list.iter().map(|&p| (max * p / 100.0, Some(p))).collect();
            (Some(run), targets)
        }
    };
    let mut points = Vec::with_capacity(targets.len());
    for (i, (rate, percent)) in targets.into_iter().enumerate() {
        eprintln!("sweep: point {} at {rate:.0} records/s", i + 1);
        let run = execute(&point_plan(base, base_topic, &i.to_string(), Some(rate)))?;
        points.push(Point { rate, percent, run });
    }
    Ok(Sweep { max, points })
}

/// The latency summaries of a run: publish, end to end.
fn summaries(run: &Run) -> (Option<LatencySummary>, Option<LatencySummary>) {
    (
        run.outcome.produce.as_ref().map(|p| p.latency.summary()),
        run.outcome.e2e.as_ref().map(|l| l.summary()),
    )
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The sweep as a table: one row per point.
pub fn table(sweep: &Sweep) -> String {
    let mut s = String::new();
    if let Some(max) = &sweep.max {
        let _ = writeln!(
            s,
            "sweep: closed-loop maximum {:.0} records/s",
            achieved(max)
        );
    }
    let _ = writeln!(
        s,
        "| point | asked rec/s | achieved rec/s | MB/s | publish p50 / p99 / p99.9 ms | e2e p50 / p99 / p99.9 ms | errors |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, point) in sweep.points.iter().enumerate() {
        let name = match point.percent {
            Some(p) => format!("{p}% of max"),
            None => format!("{}", i + 1),
        };
        let mb = achieved_mb(&point.run);
        let (publish, e2e) = summaries(&point.run);
        let three = |l: Option<LatencySummary>| {
            l.map_or("-".to_owned(), |l| {
                format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.p999))
            })
        };
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.0} | {mb:.1} | {} | {} | {} |",
            point.rate,
            achieved(&point.run),
            three(publish),
            three(e2e),
            point.run.outcome.errors.total()
        );
    }
    s
}

/// The sweep as JSON: the maximum run's summary and every point's full report.
pub fn json(sweep: &Sweep) -> serde_json::Value {
    serde_json::json!({
        "max_records_per_s": sweep.max.as_ref().map(achieved),
        "max": sweep.max.as_ref().map(report::json),
        "points": sweep.points.iter().map(|p| serde_json::json!({
            "rate": p.rate,
            "percent_of_max": p.percent,
            "achieved_records_per_s": achieved(&p.run),
            "run": report::json(&p.run),
        })).collect::<Vec<_>>(),
    })
}

/// Lines of (throughput MB/s, latency ms) for the HTML curves: publish and end to end, each
/// at p50, p99 and p99.9.
pub fn curves(sweep: &Sweep) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out = Vec::new();
    type Pick = fn(&LatencySummary) -> u64;
    let quantiles: [(&str, Pick); 3] = [
        ("p50", |l| l.p50),
        ("p99", |l| l.p99),
        ("p99.9", |l| l.p999),
    ];
    for (kind, e2e) in [("publish", false), ("end to end", true)] {
        for (q, pick) in quantiles {
            let points: Vec<(f64, f64)> = sweep
                .points
                .iter()
                .filter_map(|p| {
                    let (publish, end) = summaries(&p.run);
                    let l = if e2e { end } else { publish }?;
                    let mb = achieved_mb(&p.run);
                    Some((mb, pick(&l) as f64 / 1000.0))
                })
                .collect();
            if !points.is_empty() {
                out.push((format!("{kind} {q}"), points));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_lists_are_checked() {
        assert!(Rates::PercentOfMax(vec![10.0, 50.0, 90.0]).check().is_ok());
        assert!(Rates::Absolute(vec![1e6]).check().is_ok());
        assert!(Rates::PercentOfMax(vec![]).check().is_err());
        assert!(Rates::PercentOfMax(vec![150.0]).check().is_err());
        assert!(Rates::Absolute(vec![0.0]).check().is_err());
        assert!(Rates::Absolute(vec![f64::NAN]).check().is_err());
        assert!(Rates::Absolute(vec![1.0; POINTS_MAX + 1]).check().is_err());
    }

    #[test]
    fn a_sweep_runs_the_maximum_then_each_percentage_on_its_own_topics() {
        let base = crate::report::tests::fake_run("native", 1).plan;
        let mut asked = Vec::new();
        let sweep = run(&base, "t", &Rates::PercentOfMax(vec![50.0, 10.0]), |plan| {
            asked.push((plan.topics.clone(), plan.rate));
            // The closed-loop run achieves 500 records/s; the others their own rate.
            let scale = plan.rate.map_or(1, |r| (r / 500.0).max(1.0) as u64);
            Ok(crate::report::tests::fake_run("native", scale))
        })
        .expect("sweep");
        assert_eq!(
            asked,
            vec![
                (vec!["t-sweep-max".to_owned()], None),
                (vec!["t-sweep-0".to_owned()], Some(250.0)),
                (vec!["t-sweep-1".to_owned()], Some(50.0)),
            ]
        );
        assert_eq!(sweep.points.len(), 2);
        assert_eq!(sweep.points[0].percent, Some(50.0));
        let text = table(&sweep);
        assert!(text.contains("closed-loop maximum 500 records/s"), "{text}");
        assert!(text.contains("| 50% of max | 250 |"), "{text}");
        let lines = curves(&sweep);
        assert_eq!(lines.len(), 6, "publish and e2e at three percentiles");
        assert!(lines.iter().all(|(_, points)| points.len() == 2));
        let j = json(&sweep);
        assert_eq!(j["max_records_per_s"], 500.0);
        assert_eq!(j["points"][1]["rate"], 50.0);
        let page = crate::html::sweep_page(&sweep);
        assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<polyline"));
    }
}
