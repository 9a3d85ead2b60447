//! `tidelog-bench`: the load generator of Tidelog.
//!
//! * [`args`]: the command line (a stable contract) and the checked [`args::Plan`];
//! * [`run`]: executors, producers, consumers;
//! * [`kafka`]: `--protocol kafka`: a Kafka client on glommio and its producers and consumers;
//! * [`payload`]: seeded values stamped with their send time;
//! * [`stats`]: histograms, error kinds, live counters;
//! * [`report`]: progress line, summary table, JSON report;
//! * [`smoke`]: `--smoke`, an in-process broker and a self-checking short run.
#![deny(unsafe_code)]

mod args;
mod kafka;
mod payload;
mod report;
mod run;
mod smoke;
mod stats;

use anyhow::Result;
use clap::Parser;

use crate::args::{Args, Plan};
use crate::run::{Outcome, Shared};

fn main() {
    let args = Args::parse();
    if let Err(e) = main_with(&args) {
        eprintln!("tidelog-bench: {e:#}");
        std::process::exit(1);
    }
}

fn main_with(args: &Args) -> Result<()> {
    let mut plan_run = None;
    let outcome = if args.smoke {
        smoke::smoke(|plan| {
            let o = execute(&plan);
            plan_run = Some(plan);
            o
        })?
    } else {
        let plan = Plan::from_args(args)?;
        let o = execute(&plan)?;
        plan_run = Some(plan);
        o
    };
    let plan = plan_run.expect("a run has a plan");
    print!("{}", report::table(&plan, &outcome));
    if let Some(path) = &args.json {
        report::write_json(path, &report::json(&plan, &outcome))?;
    }
    if args.smoke {
        println!("smoke: ok, every record was consumed");
    }
    Ok(())
}

fn execute(plan: &Plan) -> Result<Outcome> {
    let shared = Shared::new(plan.clone());
    let progress = report::Progress::start(std::sync::Arc::clone(&shared));
    let outcome = run::run(&shared);
    drop(progress);
    outcome
}
