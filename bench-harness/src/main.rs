//! `tidelog-bench`: the load generator of Tidelog.
//!
//! * [`args`]: the command line (a stable contract) and the checked [`args::Plan`];
//! * [`run`]: executors, producers, consumers;
//! * [`kafka`]: `--protocol kafka`: a Kafka client on glommio and its producers and consumers;
//! * [`payload`]: seeded values stamped with their send time;
//! * [`stats`]: histograms, error kinds, live counters;
//! * [`report`]: progress line and per-second series, summary and --compare tables, JSON report;
//! * [`smoke`]: `--smoke`, a self-checking short run against a running broker;
//! * [`procfs`]: the broker's CPU time and RSS for `--broker-pid`;
//! * [`html`]: `--html`, a self-contained page with the charts.
#![deny(unsafe_code)]

mod args;
mod consume;
mod kafka;
mod payload;
mod produce;
mod report;
mod run;
mod smoke;
mod stats;
mod sweep;
mod work;

// Reports beyond the summary table.
mod html;
mod procfs;

use anyhow::{Context, Result};
use clap::Parser;

use crate::args::{Args, Plan};
use crate::report::Run;
use crate::work::Shared;

fn main() {
    let args = Args::parse();
    if let Err(e) = main_with(&args) {
        eprintln!("tidelog-bench: {e:#}");
        std::process::exit(1);
    }
}

fn main_with(args: &Args) -> Result<()> {
    if let Some(rates) = args.sweep_rates() {
        let plan = Plan::from_args(args)?;
        let sweep = sweep::run(&plan, &args.topic, &rates, |p| {
            let run = execute(p, args.broker.clone())?;
            print!("{}", report::table(&run));
            Ok(run)
        })?;
        print!("{}", sweep::table(&sweep));
        if let Some(path) = &args.json {
            report::write_json(path, &serde_json::json!({ "sweep": sweep::json(&sweep) }))?;
        }
        if let Some(path) = &args.html {
            std::fs::write(path, html::sweep_page(&sweep))
                .with_context(|| format!("write {}", path.display()))?;
        }
        return Ok(());
    }
    let runs = if args.smoke {
        let mut run = None;
        smoke::smoke(&args.broker, args.smoke_kafka.as_deref(), |plan| {
            let r = execute(&plan, plan.broker.to_string())?;
            let outcome = r.outcome.clone();
            run = Some(r);
            Ok(outcome)
        })?;
        vec![run.ok_or_else(|| anyhow::anyhow!("the smoke run did not run"))?]
    } else {
        // Both plans first, so that a bad second target fails before the first run.
        let plan = Plan::from_args(args)?;
        let second = match args.compare_args() {
            Some(second_args) => {
                let label = args.compare.as_ref().map(ToString::to_string);
                let plan =
                    Plan::from_args(&second_args).map_err(|e| e.context("--compare target"))?;
                Some((plan, label.unwrap_or_default()))
            }
            None => None,
        };
        let first = execute(&plan, args.broker.clone())?;
        print!("{}", report::table(&first));
        let mut runs = vec![first];
        if let Some((plan, label)) = second {
            let second = execute(&plan, label)?;
            print!("{}", report::table(&second));
            runs.push(second);
        }
        runs
    };
    if args.smoke {
        print!("{}", report::table(&runs[0]));
    }
    if let [first, second] = &runs[..] {
        print!("{}", report::compare_table(first, second));
    }
    if let Some(path) = &args.json {
        let mut value = report::json(&runs[0]);
        if let [first, second] = &runs[..] {
            value["compare"] = report::compare_json(first, second);
        }
        report::write_json(path, &value)?;
    }
    if let Some(path) = &args.html {
        let refs: Vec<&Run> = runs.iter().collect();
        std::fs::write(path, html::page(&refs))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if args.smoke {
        println!("smoke: ok, every record was consumed");
    }
    Ok(())
}

/// Runs one plan with the progress line; `label` names its target in reports.
fn execute(plan: &Plan, label: String) -> Result<Run> {
    let shared = Shared::new(plan.clone());
    let progress = report::Progress::start(std::sync::Arc::clone(&shared));
    let outcome = run::run(&shared);
    let telemetry = progress.finish();
    Ok(Run {
        label,
        plan: plan.clone(),
        outcome: outcome?,
        telemetry,
    })
}
