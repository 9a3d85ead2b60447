//! `tidelog`: run the broker, manage topics, produce and consume.
//!
//! Client commands (`topic`, `produce`, `consume`) run the native client on one glommio
//! executor of their own and print errors as one line, `tidelog: <message>`, exit status 1.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use tidelog_engine::broker::{self, BrokerConfig};

mod checks;
mod connect;
mod consume;
mod produce;
mod topic;

/// Tidelog: a persistent, partitioned log broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker in the foreground until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write each line of stdin as a record.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory for partitions and metadata (ext4 or xfs: O_DIRECT is required).
    #[arg(long, default_value = "./tidelog-data")]
    data_dir: PathBuf,
    /// Shared native-protocol address; every shard also listens on a port of its own.
    #[arg(long, default_value = "127.0.0.1:9292")]
    native_addr: String,
    /// Host that metadata advertises for the shard endpoints (default: the native address's).
    #[arg(long)]
    advertised_host: Option<String>,
    /// Number of shards, one per core (default: every CPU this process may use).
    #[arg(long)]
    shards: Option<usize>,
    /// Partitions of topics created without a count.
    #[arg(long, default_value_t = 1)]
    default_partitions: u32,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("tidelog: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Topic(command) => topic::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

fn serve(args: ServeArgs) -> Result<()> {
    checks::io_uring()?;
    let memlock = checks::raise_memlock();
    checks::data_dir(&args.data_dir)?;
    let native_addr = resolve(&args.native_addr)?;
    checks::port_free(native_addr)?;
    let mut config = BrokerConfig::new(&args.data_dir);
    config.native_addr = native_addr;
    config.advertised_host = args
        .advertised_host
        .unwrap_or_else(|| native_addr.ip().to_string());
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    config.default_partitions = args.default_partitions;
    let shards = config.shards;
    let handle = broker::start(config)
        .map_err(|e| anyhow!(checks::explain_startup(&e.to_string(), &args.native_addr)))?;
    let endpoints: Vec<String> = handle
        .shard_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    eprintln!(
        "tidelog: serving {} on {} with {shards} shards (shard endpoints {}), locked-memory limit {} KiB",
        args.data_dir.display(),
        handle.native_addr(),
        endpoints.join(", "),
        memlock / 1024
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("tidelog: stopping: finishing requests and flushing partitions");
    handle.shutdown().context("shutdown")?;
    eprintln!("tidelog: stopped cleanly");
    Ok(())
}
