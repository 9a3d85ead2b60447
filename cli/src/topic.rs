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
    /// Show a topic's partitions (owning shard, endpoint, start and end offsets) and retention;
    /// with --configs, its Kafka configs (over the Kafka protocol, --bootstrap).
    Describe(DescribeArgs),
    /// Delete a topic and its data.
    Delete(NameArgs),
    /// Change a topic's Kafka configs (IncrementalAlterConfigs, over the Kafka protocol).
    AlterConfig(AlterArgs),
    /// Grow a topic to more partitions (CreatePartitions, over the Kafka protocol).
    AddPartitions(AddPartitionsArgs),
    /// Delete a partition's records below an offset (DeleteRecords, over the Kafka protocol).
    DeleteRecords(DeleteRecordsArgs),
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Topic name.
    name: String,
    /// Print the topic's configs instead (name, value, source), asked over the Kafka
    /// protocol of --bootstrap; with --all also those at their defaults.
    #[arg(long)]
    configs: bool,
    /// With --configs: every config, not only the topic's overrides.
    #[arg(long, requires = "configs")]
    all: bool,
    /// Kafka bootstrap addresses for --configs.
    #[arg(long, default_value = "localhost:9092")]
    bootstrap: String,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, clap::Args)]
pub struct AlterArgs {
    /// Topic name.
    name: String,
    /// Set a config: NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Remove an override, back to the broker's value (repeatable).
    #[arg(long, value_name = "NAME")]
    delete: Vec<String>,
    /// Kafka bootstrap addresses.
    #[arg(long, default_value = "localhost:9092")]
    bootstrap: String,
}

#[derive(Debug, clap::Args)]
pub struct AddPartitionsArgs {
    /// Topic name.
    name: String,
    /// The new total number of partitions.
    #[arg(long)]
    count: u32,
    /// Kafka bootstrap addresses.
    #[arg(long, default_value = "localhost:9092")]
    bootstrap: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteRecordsArgs {
    /// Topic name.
    name: String,
    /// The partition (default: every partition).
    #[arg(long)]
    partition: Option<i32>,
    /// Delete records below this offset; -1: everything there now.
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    before: i64,
    /// Kafka bootstrap addresses.
    #[arg(long, default_value = "localhost:9092")]
    bootstrap: String,
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
        TopicCommand::Describe(a) if a.configs => {
            kafka::describe_configs(&a.name, a.all, &a.bootstrap)
        }
        TopicCommand::Describe(a) => on_executor(move || {
            describe(NameArgs {
                name: a.name,
                broker: a.broker,
            })
        }),
        TopicCommand::Delete(a) => on_executor(move || delete(a)),
        TopicCommand::AlterConfig(a) => kafka::alter_config(&a),
        TopicCommand::AddPartitions(a) => kafka::add_partitions(&a),
        TopicCommand::DeleteRecords(a) => kafka::delete_records(&a),
    }
}

/// The topic commands that speak the Kafka protocol.
mod kafka {
    use std::collections::BTreeMap;

    use anyhow::{bail, Result};
    use tidelog_wire::kafka::generated::{
        create_partitions_request::{CreatePartitionsRequest, CreatePartitionsTopic},
        create_partitions_response::CreatePartitionsResponse,
        delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
        },
        delete_records_response::DeleteRecordsResponse,
        describe_configs_request::{DescribeConfigsRequest, DescribeConfigsResource},
        describe_configs_response::DescribeConfigsResponse,
        incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
        },
        incremental_alter_configs_response::IncrementalAlterConfigsResponse,
    };

    use super::{AddPartitionsArgs, AlterArgs, DeleteRecordsArgs};
    use crate::kafka_admin::{code_text, pairs, Admin};

    const TOPIC: i8 = 2;

    fn source_text(source: i8) -> &'static str {
        match source {
            1 => "topic",
            2 => "dynamic broker",
            3 => "dynamic default broker",
            4 => "static broker",
            5 => "default",
            _ => "unknown",
        }
    }

    pub fn describe_configs(name: &str, all: bool, bootstrap: &str) -> Result<()> {
        let admin = Admin::connect(bootstrap)?;
        let response = admin.ask(
            &admin.addr,
            32,
            1,
            |b| {
                DescribeConfigsRequest {
                    resources: vec![DescribeConfigsResource {
                        resource_type: TOPIC,
                        resource_name: name.to_owned(),
                        configuration_keys: None,
                    }],
                    include_synonyms: false,
                    include_documentation: false,
                }
                .encode(b, 1)
            },
            |d| DescribeConfigsResponse::decode(d, 1),
        )?;
        let Some(result) = response.results.into_iter().next() else {
            bail!("no answer for {name}");
        };
        if result.error_code != 0 {
            bail!(
                "describing {name}: {} {}",
                code_text(result.error_code),
                result.error_message.unwrap_or_default()
            );
        }
        for c in result.configs {
            // Source 1 is the topic's own override.
            if all || c.config_source == 1 {
                println!(
                    "{}	{}	{}",
                    c.name,
                    c.value.unwrap_or_default(),
                    source_text(c.config_source)
                );
            }
        }
        Ok(())
    }

    pub fn alter_config(a: &AlterArgs) -> Result<()> {
        if a.set.is_empty() && a.delete.is_empty() {
            bail!("give --set NAME=VALUE or --delete NAME");
        }
        let mut configs: Vec<AlterableConfig> = pairs(&a.set)?
            .into_iter()
            .map(|(name, value)| AlterableConfig {
                name,
                config_operation: 0,
                value: Some(value),
            })
            .collect();
        configs.extend(a.delete.iter().map(|name| AlterableConfig {
            name: name.clone(),
            config_operation: 1,
            value: None,
        }));
        let admin = Admin::connect(&a.bootstrap)?;
        let response = admin.ask(
            &admin.addr,
            44,
            0,
            |b| {
                IncrementalAlterConfigsRequest {
                    resources: vec![AlterConfigsResource {
                        resource_type: TOPIC,
                        resource_name: a.name.clone(),
                        configs,
                    }],
                    validate_only: false,
                }
                .encode(b, 0)
            },
            |d| IncrementalAlterConfigsResponse::decode(d, 0),
        )?;
        for r in response.responses {
            if r.error_code != 0 {
                bail!(
                    "altering {}: {} {}",
                    a.name,
                    code_text(r.error_code),
                    r.error_message.unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    pub fn add_partitions(a: &AddPartitionsArgs) -> Result<()> {
        let admin = Admin::connect(&a.bootstrap)?;
        let response = admin.ask(
            &admin.addr,
            37,
            1,
            |b| {
                CreatePartitionsRequest {
                    topics: vec![CreatePartitionsTopic {
                        name: a.name.clone(),
                        count: i32::try_from(a.count).unwrap_or(i32::MAX),
                        assignments: None,
                    }],
                    timeout_ms: 30_000,
                    validate_only: false,
                }
                .encode(b, 1)
            },
            |d| CreatePartitionsResponse::decode(d, 1),
        )?;
        for r in response.results {
            if r.error_code != 0 {
                bail!(
                    "growing {}: {} {}",
                    a.name,
                    code_text(r.error_code),
                    r.error_message.unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    pub fn delete_records(a: &DeleteRecordsArgs) -> Result<()> {
        let admin = Admin::connect(&a.bootstrap)?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (p, leader) in admin.partitions(&a.name)? {
            if a.partition.is_none_or(|want| want == p) {
                by_leader.entry(leader).or_default().push(p);
            }
        }
        if by_leader.is_empty() {
            bail!("{} has no partition {:?}", a.name, a.partition);
        }
        for (leader, parts) in by_leader {
            let addr = admin.broker(leader)?;
            let response = admin.ask(
                &addr,
                21,
                1,
                |b| {
                    DeleteRecordsRequest {
                        topics: vec![DeleteRecordsTopic {
                            name: a.name.clone(),
                            partitions: parts
                                .iter()
                                .map(|&p| DeleteRecordsPartition {
                                    partition_index: p,
                                    offset: a.before,
                                })
                                .collect(),
                        }],
                        timeout_ms: 30_000,
                    }
                    .encode(b, 1)
                },
                |d| DeleteRecordsResponse::decode(d, 1),
            )?;
            for t in response.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "deleting records of {}-{}: {}",
                            a.name,
                            p.partition_index,
                            code_text(p.error_code)
                        );
                    }
                    println!(
                        "{}	{}	low watermark {}",
                        a.name, p.partition_index, p.low_watermark
                    );
                }
            }
        }
        Ok(())
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
