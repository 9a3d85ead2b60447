//! Administration over the Kafka protocol, so these commands work against Tidelog's Kafka port
//! and any Kafka broker (as `rpk` and Kafka's own scripts do): `tidelog group ...` and the
//! `tidelog topic` commands that take `--bootstrap` (configs, partitions, records).
//!
//! Each call is one request on a fresh connection to the broker that must answer it: any
//! bootstrap address for cluster-wide requests, the group's coordinator for group requests
//! (FindCoordinator), a partition's leader for DeleteRecords and ListOffsets (Metadata).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use tidelog_wire::kafka::generated::metadata_response::MetadataResponse;
use tidelog_wire::kafka::Decoder;

use crate::cluster::{call, metadata};

/// A Kafka error code as text, for messages.
pub(crate) fn code_text(code: i16) -> String {
    let name = match code {
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        6 => "NOT_LEADER_OR_FOLLOWER",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        25 => "UNKNOWN_MEMBER_ID",
        37 => "INVALID_PARTITIONS",
        40 => "INVALID_CONFIG",
        42 => "INVALID_REQUEST",
        68 => "NON_EMPTY_GROUP",
        69 => "GROUP_ID_NOT_FOUND",
        86 => "GROUP_SUBSCRIBED_TO_TOPIC",
        _ => "",
    };
    if name.is_empty() {
        format!("error {code}")
    } else {
        format!("{name} ({code})")
    }
}

/// The bootstrap addresses and what Metadata said.
pub(crate) struct Admin {
    /// The address that answered.
    pub addr: String,
    /// Its Metadata (every topic).
    pub meta: MetadataResponse,
}

impl Admin {
    /// Asks each bootstrap address in turn for Metadata; the first that answers is used.
    pub fn connect(bootstrap: &str) -> Result<Admin> {
        let mut last = None;
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match metadata(addr) {
                Ok(meta) => {
                    return Ok(Admin {
                        addr: addr.to_owned(),
                        meta,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no bootstrap address given")))
    }

    /// `host:port` of a broker id.
    pub fn broker(&self, id: i32) -> Result<String> {
        self.meta
            .brokers
            .iter()
            .find(|b| b.node_id == id)
            .map(|b| format!("{}:{}", b.host, b.port))
            .ok_or_else(|| anyhow!("broker {id} is not in the metadata"))
    }

    /// Every broker's `host:port`.
    pub fn brokers(&self) -> Vec<String> {
        self.meta
            .brokers
            .iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect()
    }

    /// A topic's partitions with their leaders.
    pub fn partitions(&self, topic: &str) -> Result<Vec<(i32, i32)>> {
        let t = self
            .meta
            .topics
            .iter()
            .find(|t| t.name.as_deref() == Some(topic))
            .ok_or_else(|| anyhow!("no topic {topic:?}"))?;
        if t.error_code != 0 {
            bail!("topic {topic}: {}", code_text(t.error_code));
        }
        let mut out: Vec<(i32, i32)> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// One request to `addr`, decoded.
    pub fn ask<T>(
        &self,
        addr: &str,
        key: i16,
        version: i16,
        encode: impl FnOnce(&mut bytes::BytesMut) -> Result<(), tidelog_wire::kafka::codec::EncodeError>,
        decode: impl FnOnce(&mut Decoder<'_>) -> Result<T, tidelog_wire::kafka::DecodeError>,
    ) -> Result<T> {
        let body: Bytes = call(addr, key, version, |buf| {
            encode(buf).map_err(|e| anyhow!("encoding API {key} v{version}: {e}"))
        })?;
        decode(&mut Decoder::new(&body)).map_err(|e| anyhow!("decoding API {key} v{version}: {e}"))
    }

    /// The coordinator of `group` (`host:port`).
    pub fn coordinator(&self, group: &str) -> Result<String> {
        use tidelog_wire::kafka::generated::find_coordinator_request::FindCoordinatorRequest;
        use tidelog_wire::kafka::generated::find_coordinator_response::FindCoordinatorResponse;
        for _ in 0..20 {
            let response = self.ask(
                &self.addr,
                10,
                2,
                |b| {
                    FindCoordinatorRequest {
                        key: group.to_owned(),
                        key_type: 0,
                        ..Default::default()
                    }
                    .encode(b, 2)
                },
                |d| FindCoordinatorResponse::decode(d, 2),
            )?;
            match response.error_code {
                0 => return Ok(format!("{}:{}", response.host, response.port)),
                14 | 15 => std::thread::sleep(std::time::Duration::from_millis(250)),
                code => bail!("finding the coordinator of {group}: {}", code_text(code)),
            }
        }
        bail!("the coordinator of {group} stayed unavailable")
    }

    /// Offsets of every partition of `topic` at `timestamp` (-2 earliest, -1 latest), asked
    /// of each partition's leader.
    pub fn offsets(&self, topic: &str, timestamp: i64) -> Result<BTreeMap<i32, i64>> {
        use tidelog_wire::kafka::generated::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
        };
        use tidelog_wire::kafka::generated::list_offsets_response::ListOffsetsResponse;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (p, leader) in self.partitions(topic)? {
            if leader < 0 {
                bail!("{topic}-{p} has no leader");
            }
            by_leader.entry(leader).or_default().push(p);
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let addr = self.broker(leader)?;
            let response = self.ask(
                &addr,
                2,
                2,
                |b| {
                    ListOffsetsRequest {
                        replica_id: -1,
                        topics: vec![ListOffsetsTopic {
                            name: topic.to_owned(),
                            partitions: parts
                                .iter()
                                .map(|&p| ListOffsetsPartition {
                                    partition_index: p,
                                    timestamp,
                                    current_leader_epoch: -1,
                                    max_num_offsets: 1,
                                })
                                .collect(),
                        }],
                        ..Default::default()
                    }
                    .encode(b, 2)
                },
                |d| ListOffsetsResponse::decode(d, 2),
            )?;
            for t in response.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "offsets of {topic}-{}: {}",
                            p.partition_index,
                            code_text(p.error_code)
                        );
                    }
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }
}

/// The consumer-protocol assignment a member was given: topic -> partitions.
pub(crate) fn assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    let mut out = Vec::new();
    let mut rest = bytes.get(2..).unwrap_or_default();
    let take_i32 = |rest: &mut &[u8]| -> Option<i32> {
        let v = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        *rest = &rest[4..];
        Some(v)
    };
    let Some(topics) = take_i32(&mut rest) else {
        return out;
    };
    for _ in 0..topics.max(0) {
        let Some(len) = rest.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            break;
        };
        let Ok(len) = usize::try_from(len) else { break };
        let Some(name) = rest.get(2..2 + len) else {
            break;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        rest = &rest[2 + len..];
        let Some(n) = take_i32(&mut rest) else { break };
        let mut parts = Vec::new();
        for _ in 0..n.max(0) {
            match take_i32(&mut rest) {
                Some(p) => parts.push(p),
                None => break,
            }
        }
        out.push((name, parts));
    }
    out
}

/// `--set k=v` arguments as pairs.
pub(crate) fn pairs(sets: &[String]) -> Result<Vec<(String, String)>> {
    sets.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("--set {s:?}: give NAME=VALUE"))
        })
        .collect()
}
