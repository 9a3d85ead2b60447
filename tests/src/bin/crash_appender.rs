//! `crash-appender DIR SEED`: appends deterministic batches to the partition log in `DIR`
//! forever, until killed. Used by the `storage_crash` test, which `kill -9`s it at random
//! moments and then checks what survived.
//!
//! Batch `seq` is `tidelog_tests::build_batch(SEED, seq)`. On start the log is recovered and
//! appending continues with the seq after the last batch in the log, so the log always holds
//! seqs 0, 1, 2, ... back to back. Output (stdout, one line each, flushed):
//! - `START <log_end> <next_seq>` once the log is open;
//! - `ACK <base_offset> <last_offset> <seq>` after each `Durability::Synced` append returned.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tidelog_engine::io::dma::DmaStorage;
use tidelog_engine::io::SystemClock;
use tidelog_engine::{Durability, PartitionLog};
use tidelog_tests::{build_batch, crash_config, durability, split_batches, VALUE_PREFIX};
use tidelog_wire::batch::{verify, VerifyLimits};

async fn next_seq(log: &PartitionLog<DmaStorage, SystemClock>) -> anyhow::Result<u64> {
    let end = log.log_end();
    if end == log.log_start() {
        return Ok(0);
    }
    let read = log.read(end - 1, 1).await.context("read the last batch")?;
    let mut last = None;
    let chunks: Vec<Vec<u8>> = read.chunks.iter().map(|c| c.to_vec()).collect();
    for chunk in &chunks {
        last = split_batches(chunk)?.last().copied().or(last);
    }
    let Some(last) = last else {
        bail!("no batch returned at offset {}", end - 1)
    };
    let view = verify(last, &VerifyLimits::default())?;
    let value = view.records()?.next().context("no records")?.value;
    if value.len() < VALUE_PREFIX {
        bail!("record value too short");
    }
    Ok(u64::from_le_bytes(value[..8].try_into()?) + 1)
}

async fn run(dir: PathBuf, seed: u64) -> anyhow::Result<()> {
    let log = PartitionLog::open(DmaStorage, SystemClock, &dir, crash_config()).await?;
    let mut seq = next_seq(&log).await?;
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        writeln!(out, "START {} {seq}", log.log_end())?;
        out.flush()?;
    }
    loop {
        let mode = durability(seed, seq);
        let info = log
            .append(build_batch(seed, seq), mode)
            .await
            .with_context(|| format!("append seq {seq}"))?;
        match mode {
            Durability::Synced => {
                let mut out = stdout.lock();
                writeln!(out, "ACK {} {} {seq}", info.base_offset, info.last_offset)?;
                out.flush()?;
            }
            Durability::Buffered => {
                log.maybe_flush().await?;
            }
        }
        seq += 1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: crash-appender DIR SEED");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let seed: u64 = args[2].parse().expect("SEED must be a u64");
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || run(dir, seed))
        .expect("spawn glommio executor")
        .join()
        .expect("executor panicked");
    if let Err(e) = result {
        eprintln!("crash-appender: {e:#}");
        std::process::exit(1);
    }
}
