//! `--smoke`: a short e2e run over each protocol of a running broker (Kafka first, when its
//! bootstrap address is given, then native), and a check that every record came back. The
//! tests run it against a real `tidelog serve` process (tests/tests/it/bench_smoke.rs), so
//! neither target can rot unnoticed (TigerBeetle's "no benchmark bitrot"); the generator
//! links no broker code.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, ensure, Context, Result};
use clap::Parser;

use crate::args::{Args, Plan};
use crate::report;
use crate::work::Outcome;

/// Records of the smoke run.
pub const SMOKE_RECORDS: u64 = 20_000;

/// Runs the smoke plan through `run` over Kafka at `kafka` (its table printed here), when
/// given, and then over the native protocol at `native`; checks both outcomes and returns the
/// native one (whose plan `run` saw last).
///
/// # Errors
/// An address that does not resolve, a run, or a record that was not consumed.
pub fn smoke(
    native: &str,
    kafka: Option<&str>,
    mut run: impl FnMut(Plan) -> Result<Outcome>,
) -> Result<Outcome> {
    let native = resolve(native)?;
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
    if let Some(kafka) = kafka {
        let plan = plan("kafka", resolve(kafka)?)?;
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
    }
    let outcome = run(plan("native", native)?)?;
    check(&outcome)?;
    Ok(outcome)
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let addr = addr
        .strip_prefix("native://")
        .or_else(|| addr.strip_prefix("kafka://"))
        .unwrap_or(addr);
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
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
