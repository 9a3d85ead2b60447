//! `tidelog cluster status`: the cluster as a Kafka client sees it, over the Kafka protocol,
//! so it works against Tidelog's Kafka port and any Kafka broker: brokers, the controller,
//! the partitions that are offline (no leader) or under-replicated (fewer in-sync replicas
//! than replicas, a reassignment's new replicas not counted, as Kafka counts), and the
//! reassignments under way (ListPartitionReassignments, where the broker has it).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use tidelog_wire::kafka::generated::{
    list_partition_reassignments_request::ListPartitionReassignmentsRequest,
    list_partition_reassignments_response::ListPartitionReassignmentsResponse,
    metadata_request::MetadataRequest, metadata_response::MetadataResponse,
};
use tidelog_wire::kafka::{request_header_version, response_header_version, Decoder};

/// Largest response read (a Metadata response of a very large cluster fits).
const RESPONSE_BYTES_MAX: usize = 64 << 20;
const METADATA: i16 = 3;
const METADATA_VERSION: i16 = 9;
const LIST_REASSIGNMENTS: i16 = 46;
/// How long a bootstrap address may take to accept before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, offline and under-replicated partitions.
    #[command(alias = "info")]
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Kafka bootstrap addresses (`HOST:PORT[,HOST:PORT...]`); the first that answers is asked.
    #[arg(long, default_value = "localhost:9092")]
    bootstrap: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status(args) => status(&args),
    }
}

/// One request to `addr` (a fresh connection), its response body after the header.
pub(crate) fn call(
    addr: &str,
    key: i16,
    version: i16,
    encode: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<Bytes> {
    // A node that is cut off never answers the SYN: give up on it and ask the next.
    let socket = addr
        .to_socket_addrs()
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&socket, CONNECT_TIMEOUT)
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i16(key);
    buf.put_i16(version);
    buf.put_i32(1);
    buf.put_i16(7);
    buf.put_slice(b"tidelog");
    if request_header_version(key, version) >= 2 {
        buf.put_u8(0);
    }
    encode(&mut buf)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&buf)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
    if !(4..=RESPONSE_BYTES_MAX).contains(&size) {
        bail!("{addr} answered a response of {size} bytes");
    }
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body)?;
    let skip = if response_header_version(key, version) >= 1 {
        5
    } else {
        4
    };
    if body.len() < skip {
        bail!("{addr} answered a truncated response");
    }
    Ok(Bytes::from(body).slice(skip..))
}

pub(crate) fn metadata(addr: &str) -> Result<MetadataResponse> {
    let body = call(addr, METADATA, METADATA_VERSION, |buf| {
        let request = MetadataRequest {
            topics: None,
            allow_auto_topic_creation: false,
            ..Default::default()
        };
        request
            .encode(buf, METADATA_VERSION)
            .map_err(|e| anyhow!("encoding Metadata: {e}"))
    })?;
    MetadataResponse::decode(&mut Decoder::new(&body), METADATA_VERSION)
        .map_err(|e| anyhow!("decoding {addr}'s Metadata: {e}"))
}

/// A reassignment under way: topic-partition, replicas, adding, removing.
type Moving = (String, Vec<i32>, Vec<i32>, Vec<i32>);

/// The reassignments under way; empty
/// where the broker does not list them (a Kafka broker before 2.4).
fn reassignments(addr: &str) -> Vec<Moving> {
    let body = call(addr, LIST_REASSIGNMENTS, 0, |buf| {
        ListPartitionReassignmentsRequest {
            timeout_ms: 10_000,
            topics: None,
        }
        .encode(buf, 0)
        .map_err(|e| anyhow!("encoding ListPartitionReassignments: {e}"))
    });
    let Ok(body) = body else {
        return Vec::new();
    };
    let Ok(list) = ListPartitionReassignmentsResponse::decode(&mut Decoder::new(&body), 0) else {
        return Vec::new();
    };
    list.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    format!("{}-{}", t.name, p.partition_index),
                    p.replicas.clone(),
                    p.adding_replicas.clone(),
                    p.removing_replicas.clone(),
                )
            })
        })
        .collect()
}

fn status(args: &StatusArgs) -> Result<()> {
    let mut last = None;
    let mut found = None;
    for addr in args
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match metadata(addr) {
            Ok(m) => {
                found = Some((addr.to_owned(), m));
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some((asked, m)) = found else {
        return Err(last.unwrap_or_else(|| anyhow!("no bootstrap address given")));
    };
    let moving = reassignments(&asked);
    let mut offline = Vec::new();
    let mut under = Vec::new();
    let mut partitions = 0usize;
    let mut leaders = Vec::new();
    for topic in &m.topics {
        let name = topic.name.clone().unwrap_or_default();
        for p in &topic.partitions {
            partitions += 1;
            leaders.push(format!("\"{name}-{}\":{}", p.partition_index, p.leader_id));
            let entry = (
                format!("{name}-{}", p.partition_index),
                p.leader_id,
                p.replica_nodes.clone(),
                p.isr_nodes.clone(),
            );
            // A reassignment's new replicas are catching up, not missing.
            let adding = moving
                .iter()
                .find(|(n, ..)| *n == entry.0)
                .map_or(0, |(_, _, adding, _)| adding.len());
            if p.leader_id < 0 {
                offline.push(entry);
            } else if p.isr_nodes.len() < p.replica_nodes.len().saturating_sub(adding) {
                under.push(entry);
            }
        }
    }
    if args.json {
        let list = |v: &[(String, i32, Vec<i32>, Vec<i32>)]| {
            v.iter()
                .map(|(name, leader, replicas, isr)| {
                    format!(
                        "{{\"partition\":\"{name}\",\"leader\":{leader},\"replicas\":{replicas:?},\"isr\":{isr:?}}}"
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let brokers: Vec<String> = m
            .brokers
            .iter()
            .map(|b| {
                format!(
                    "{{\"id\":{},\"host\":\"{}\",\"port\":{}}}",
                    b.node_id, b.host, b.port
                )
            })
            .collect();
        let reassigning: Vec<String> = moving
            .iter()
            .map(|(name, replicas, adding, removing)| {
                format!(
                    "{{\"partition\":\"{name}\",\"replicas\":{replicas:?},\"adding\":{adding:?},\"removing\":{removing:?}}}"
                )
            })
            .collect();
        println!(
            "{{\"asked\":\"{asked}\",\"cluster_id\":{:?},\"controller\":{},\"brokers\":[{}],\"topics\":{},\"partitions\":{partitions},\"leaders\":{{{}}},\"offline\":[{}],\"under_replicated\":[{}],\"reassigning\":[{}]}}",
            m.cluster_id.clone().unwrap_or_default(),
            m.controller_id,
            brokers.join(","),
            m.topics.len(),
            leaders.join(","),
            list(&offline),
            list(&under),
            reassigning.join(",")
        );
        return Ok(());
    }
    println!(
        "cluster {} (asked {asked}), controller {}",
        m.cluster_id.as_deref().unwrap_or("?"),
        m.controller_id
    );
    println!("brokers ({}):", m.brokers.len());
    for b in &m.brokers {
        println!("  {:>8}  {}:{}", b.node_id, b.host, b.port);
    }
    println!(
        "topics {}, partitions {partitions}: {} offline, {} under-replicated",
        m.topics.len(),
        offline.len(),
        under.len()
    );
    if !moving.is_empty() {
        println!("reassignments under way ({}):", moving.len());
        for (name, replicas, adding, removing) in &moving {
            println!("  {name}  replicas {replicas:?}  adding {adding:?}  removing {removing:?}");
        }
    }
    for (title, list) in [("offline", &offline), ("under-replicated", &under)] {
        if list.is_empty() {
            continue;
        }
        println!("{title} partitions:");
        for (name, leader, replicas, isr) in list {
            println!("  {name}  leader {leader}  replicas {replicas:?}  in-sync {isr:?}");
        }
    }
    Ok(())
}
