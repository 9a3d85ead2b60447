//! `tidelog group list|describe|delete|reset-offsets`, over the Kafka protocol (any Kafka
//! broker), as `rpk group` and `kafka-consumer-groups.sh` do.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Subcommand;
use tidelog_wire::kafka::generated::{
    delete_groups_request::DeleteGroupsRequest,
    delete_groups_response::DeleteGroupsResponse,
    describe_groups_request::DescribeGroupsRequest,
    describe_groups_response::DescribeGroupsResponse,
    list_groups_request::ListGroupsRequest,
    list_groups_response::ListGroupsResponse,
    offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    },
    offset_commit_response::OffsetCommitResponse,
    offset_fetch_request::OffsetFetchRequest,
    offset_fetch_response::OffsetFetchResponse,
};

use crate::kafka_admin::{assignment, code_text, Admin};

/// Consumer-group administration.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Every group of every broker: name, state, protocol type.
    List(BootstrapArgs),
    /// A group's state, members and their partitions, and per partition its committed
    /// offset, log end and lag.
    Describe(GroupArgs),
    /// Delete groups with no members (their committed offsets go).
    Delete(GroupArgs),
    /// Move a group's committed offsets on a topic (the group must have no members).
    ResetOffsets(ResetArgs),
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Kafka bootstrap addresses (`HOST:PORT[,HOST:PORT...]`).
    #[arg(long, default_value = "localhost:9092")]
    bootstrap: String,
}

#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// The group.
    group: String,
    #[command(flatten)]
    kafka: BootstrapArgs,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
pub struct ResetArgs {
    /// The group.
    group: String,
    /// The topic whose partitions move (all of them).
    #[arg(long)]
    topic: String,
    /// To each partition's first offset.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end (skip everything there now).
    #[arg(long)]
    to_latest: bool,
    /// To this offset on every partition.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    #[command(flatten)]
    kafka: BootstrapArgs,
}

pub fn run(command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::List(a) => list(&a),
        GroupCommand::Describe(a) => describe(&a),
        GroupCommand::Delete(a) => delete(&a),
        GroupCommand::ResetOffsets(a) => reset(&a),
    }
}

fn list(a: &BootstrapArgs) -> Result<()> {
    let admin = Admin::connect(&a.bootstrap)?;
    let mut groups = BTreeMap::new();
    for broker in admin.brokers() {
        let response = admin.ask(
            &broker,
            16,
            4,
            |b| ListGroupsRequest::default().encode(b, 4),
            |d| ListGroupsResponse::decode(d, 4),
        )?;
        if response.error_code != 0 {
            bail!("ListGroups on {broker}: {}", code_text(response.error_code));
        }
        for g in response.groups {
            groups.insert(g.group_id, (g.group_state, g.protocol_type));
        }
    }
    for (group, (state, kind)) in groups {
        println!(
            "{group}\t{state}\t{}",
            if kind.is_empty() { "-" } else { &kind }
        );
    }
    Ok(())
}

/// A group's committed offsets: topic -> partition -> offset.
fn committed(
    admin: &Admin,
    coordinator: &str,
    group: &str,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>> {
    let response = admin.ask(
        coordinator,
        9,
        5,
        |b| {
            OffsetFetchRequest {
                group_id: group.to_owned(),
                topics: None,
                ..Default::default()
            }
            .encode(b, 5)
        },
        |d| OffsetFetchResponse::decode(d, 5),
    )?;
    if response.error_code != 0 {
        bail!(
            "fetching the offsets of {group}: {}",
            code_text(response.error_code)
        );
    }
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            if p.committed_offset >= 0 {
                out.entry(t.name.clone())
                    .or_default()
                    .insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

fn describe(a: &GroupArgs) -> Result<()> {
    let admin = Admin::connect(&a.kafka.bootstrap)?;
    let coordinator = admin.coordinator(&a.group)?;
    let response = admin.ask(
        &coordinator,
        15,
        2,
        |b| {
            DescribeGroupsRequest {
                groups: vec![a.group.clone()],
                include_authorized_operations: false,
            }
            .encode(b, 2)
        },
        |d| DescribeGroupsResponse::decode(d, 2),
    )?;
    let Some(g) = response.groups.into_iter().next() else {
        bail!("no answer for {}", a.group);
    };
    if g.error_code != 0 {
        bail!("describing {}: {}", a.group, code_text(g.error_code));
    }
    let offsets = committed(&admin, &coordinator, &a.group)?;
    if g.group_state == "Dead" && offsets.is_empty() {
        bail!("no group {}", a.group);
    }
    println!(
        "group {}  state {}  protocol {} {}  coordinator {coordinator}  members {}",
        a.group,
        g.group_state,
        if g.protocol_type.is_empty() {
            "-"
        } else {
            &g.protocol_type
        },
        g.protocol_data,
        g.members.len()
    );
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &g.members {
        let parts = assignment(&m.member_assignment);
        println!(
            "  member {}  client {}  host {}",
            m.member_id, m.client_id, m.client_host
        );
        for (topic, ps) in parts {
            for p in ps {
                owner.insert((topic.clone(), p), m.client_id.clone());
            }
        }
    }
    println!("  TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tOWNER");
    for (topic, parts) in &offsets {
        let ends = admin.offsets(topic, -1).unwrap_or_default();
        for (p, offset) in parts {
            let (end, lag) = match ends.get(p) {
                Some(end) => (end.to_string(), (end - offset).max(0).to_string()),
                None => ("-".into(), "-".into()),
            };
            let who = owner.get(&(topic.clone(), *p)).map_or("-", String::as_str);
            println!("  {topic}\t{p}\t{offset}\t{end}\t{lag}\t{who}");
        }
    }
    Ok(())
}

fn delete(a: &GroupArgs) -> Result<()> {
    let admin = Admin::connect(&a.kafka.bootstrap)?;
    let coordinator = admin.coordinator(&a.group)?;
    let response = admin.ask(
        &coordinator,
        42,
        1,
        |b| {
            DeleteGroupsRequest {
                groups_names: vec![a.group.clone()],
            }
            .encode(b, 1)
        },
        |d| DeleteGroupsResponse::decode(d, 1),
    )?;
    for r in response.results {
        if r.error_code != 0 {
            bail!("deleting {}: {}", r.group_id, code_text(r.error_code));
        }
        println!("deleted group {}", r.group_id);
    }
    Ok(())
}

fn reset(a: &ResetArgs) -> Result<()> {
    let admin = Admin::connect(&a.kafka.bootstrap)?;
    let targets: BTreeMap<i32, i64> = if a.to_earliest {
        admin.offsets(&a.topic, -2)?
    } else if a.to_latest {
        admin.offsets(&a.topic, -1)?
    } else {
        let offset = a.to_offset.unwrap_or(0);
        let (start, end) = (admin.offsets(&a.topic, -2)?, admin.offsets(&a.topic, -1)?);
        start
            .iter()
            .map(|(&p, &lo)| (p, offset.clamp(lo, end.get(&p).copied().unwrap_or(lo))))
            .collect()
    };
    let coordinator = admin.coordinator(&a.group)?;
    // A commit outside any generation (-1, no member id) is accepted only while the group
    // has no members, as Kafka's own tool requires.
    let response = admin.ask(
        &coordinator,
        8,
        2,
        |b| {
            OffsetCommitRequest {
                group_id: a.group.clone(),
                generation_id_or_member_epoch: -1,
                member_id: String::new(),
                retention_time_ms: -1,
                topics: vec![OffsetCommitRequestTopic {
                    name: a.topic.clone(),
                    partitions: targets
                        .iter()
                        .map(|(&p, &o)| OffsetCommitRequestPartition {
                            partition_index: p,
                            committed_offset: o,
                            committed_leader_epoch: -1,
                            commit_timestamp: -1,
                            committed_metadata: Some(String::new()),
                        })
                        .collect(),
                }],
                ..Default::default()
            }
            .encode(b, 2)
        },
        |d| OffsetCommitResponse::decode(d, 2),
    )?;
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "resetting {}-{} for {}: {} (a group with members cannot be reset)",
                    t.name,
                    p.partition_index,
                    a.group,
                    code_text(p.error_code)
                );
            }
        }
    }
    for (p, o) in targets {
        println!("{}\t{p}\t{o}", a.topic);
    }
    Ok(())
}
