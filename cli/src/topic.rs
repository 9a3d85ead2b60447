//! `tidelog topic create|list|describe|delete`.

use anyhow::Result;
use clap::Subcommand;
use tidelog_client::{EARLIEST, LATEST};

use crate::connect::{endpoint_text, explain, on_executor, BrokerArgs};

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics, one name per line.
    List(ListArgs),
    /// Show a topic's partitions (owning shard, endpoint, start and end offsets) and retention.
    Describe(NameArgs),
    /// Delete a topic and its data.
    Delete(NameArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Topic name.
    name: String,
    /// Number of partitions (default: the broker's --default-partitions).
    #[arg(long, short = 'p')]
    partitions: Option<u32>,
    /// Delete data older than this many milliseconds; -1: never (default: the broker's).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Keep at most this many bytes per partition; -1: no limit (default: the broker's).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// Topic name.
    name: String,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn run(command: TopicCommand) -> Result<()> {
    match command {
        TopicCommand::Create(a) => on_executor(move || create(a)),
        TopicCommand::List(a) => on_executor(move || list(a)),
        TopicCommand::Describe(a) => on_executor(move || describe(a)),
        TopicCommand::Delete(a) => on_executor(move || delete(a)),
    }
}

/// A retention flag (Kafka's convention: -1 is no limit) in the native protocol's terms
/// (-1: the broker's default, -2: no limit).
fn as_wire(v: Option<i64>, what: &str) -> Result<i64> {
    match v {
        None => Ok(-1),
        Some(-1) => Ok(-2),
        Some(v) if v >= 0 => Ok(v),
        Some(v) => Err(anyhow::anyhow!(
            "{what} {v}: give -1 (no limit) or a limit of 0 or more"
        )),
    }
}

async fn create(a: CreateArgs) -> Result<()> {
    let client = a.broker.connect().await?;
    let retention_ms = as_wire(a.retention_ms, "--retention-ms")?;
    let retention_bytes = as_wire(a.retention_bytes, "--retention-bytes")?;
    client
        .create_topic(
            &a.name,
            a.partitions.unwrap_or(0),
            retention_ms,
            retention_bytes,
        )
        .await
        .map_err(|e| match e.code() {
            Some(tidelog_wire::native::ErrorCode::TopicAlreadyExists) => {
                anyhow::anyhow!("topic {} already exists", a.name)
            }
            _ => explain(e, &a.broker.broker),
        })?;
    Ok(())
}

async fn list(a: ListArgs) -> Result<()> {
    let client = a.broker.connect().await?;
    let md = client
        .metadata(&[])
        .await
        .map_err(|e| explain(e, &a.broker.broker))?;
    let mut out = String::new();
    for name in md.topics.keys() {
        out.push_str(name);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn retention(v: i64) -> String {
    match v {
        -2 => "unlimited".to_owned(),
        v if v < 0 => "default".to_owned(),
        v => v.to_string(),
    }
}

async fn describe(a: NameArgs) -> Result<()> {
    let broker = a.broker.broker.clone();
    let client = a.broker.connect().await?;
    let md = client
        .metadata(&[&a.name])
        .await
        .map_err(|e| explain(e, &broker))?;
    let info = md.topics.get(&a.name).ok_or_else(|| {
        explain(
            tidelog_client::ClientError::UnknownTopic {
                topic: a.name.clone(),
                partition: None,
            },
            &broker,
        )
    })?;
    let mut out = format!(
        "topic {}  partitions {}  retention.ms {}  retention.bytes {}\n",
        info.name,
        info.partition_count(),
        retention(info.retention_ms),
        retention(info.retention_bytes)
    );
    out.push_str(&format!(
        "{:<10} {:<6} {:<22} {:>12} {:>12}\n",
        "partition", "shard", "endpoint", "start", "end"
    ));
    for (&partition, &shard) in &info.partitions {
        let start = client
            .list_offsets(&a.name, partition, EARLIEST)
            .await
            .map_err(|e| explain(e, &broker))?;
        let end = client
            .list_offsets(&a.name, partition, LATEST)
            .await
            .map_err(|e| explain(e, &broker))?;
        out.push_str(&format!(
            "{partition:<10} {shard:<6} {:<22} {start:>12} {end:>12}\n",
            endpoint_text(&md, shard)
        ));
    }
    print!("{out}");
    Ok(())
}

async fn delete(a: NameArgs) -> Result<()> {
    let client = a.broker.connect().await?;
    client
        .delete_topic(&a.name)
        .await
        .map_err(|e| explain(e, &a.broker.broker))
}
