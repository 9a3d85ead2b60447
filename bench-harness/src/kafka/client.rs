//! The generator's Kafka client for a fixed list of topics: bootstrap, version negotiation, metadata,
//! one connection per leader node, CreateTopics and ListOffsets.
//!
//! Every connection starts with ApiVersions (v0, which every broker answers) and keeps the
//! versions negotiated for it: per API the highest version both sides speak. Metadata maps
//! each partition to its leader node and each node to an address; requests for a partition
//! go straight to its leader's connection, opened on first use and reopened when broken.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tidelog_wire::kafka::generated::{
    api_versions_response::ApiVersionsResponse,
    create_topics_request::{CreatableTopic, CreateTopicsRequest},
    create_topics_response::CreateTopicsResponse,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic},
    list_offsets_response::ListOffsetsResponse,
    metadata_request::{MetadataRequest, MetadataRequestTopic},
    metadata_response::MetadataResponse,
};
use tidelog_wire::kafka::Decoder;

use super::conn::KafkaConn;
use super::{check, code, KafkaError, Result};

/// API keys used.
pub mod api {
    /// Produce.
    pub const PRODUCE: i16 = 0;
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// ListOffsets.
    pub const LIST_OFFSETS: i16 = 2;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// ApiVersions.
    pub const API_VERSIONS: i16 = 18;
    /// CreateTopics.
    pub const CREATE_TOPICS: i16 = 19;
    /// OffsetCommit.
    pub const OFFSET_COMMIT: i16 = 8;
    /// OffsetFetch.
    pub const OFFSET_FETCH: i16 = 9;
    /// FindCoordinator.
    pub const FIND_COORDINATOR: i16 = 10;
    /// JoinGroup.
    pub const JOIN_GROUP: i16 = 11;
    /// Heartbeat.
    pub const HEARTBEAT: i16 = 12;
    /// LeaveGroup.
    pub const LEAVE_GROUP: i16 = 13;
    /// SyncGroup.
    pub const SYNC_GROUP: i16 = 14;
}

/// The `client_id` of every request.
pub const CLIENT_ID: &str = "tidelog-bench";
/// ListOffsets timestamp: the log start.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp: the high watermark.
pub const LATEST: i64 = -1;
/// How long setup waits for a new topic's leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts of a cold-path request (ListOffsets) after a retriable error.
const RETRIES: usize = 8;
/// Wait before retry `n` is `n` times this.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Versions this client speaks, per API: (key, name, lowest, highest).
const OURS: [(i16, &str, i16, i16); 4] = [
    (api::PRODUCE, "Produce", 3, 9),
    (api::FETCH, "Fetch", 4, 12),
    (api::LIST_OFFSETS, "ListOffsets", 1, 7),
    (api::METADATA, "Metadata", 1, 12),
];
/// CreateTopics versions spoken; optional (the fallback is auto-creation via Metadata).
const CREATE_TOPICS_VERSIONS: (i16, i16) = (2, 7);
/// The group APIs, needed for --group only: (key, lowest, highest). FindCoordinator stops
/// before v4's batched keys, OffsetFetch before v8's groups array.
const GROUP_APIS: [(i16, i16, i16); 7] = [
    (api::FIND_COORDINATOR, 1, 3),
    (api::JOIN_GROUP, 2, 7),
    (api::SYNC_GROUP, 1, 5),
    (api::HEARTBEAT, 1, 4),
    (api::LEAVE_GROUP, 1, 5),
    (api::OFFSET_COMMIT, 2, 8),
    (api::OFFSET_FETCH, 1, 7),
];

/// Versions of the group APIs negotiated with one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupVersions {
    pub find_coordinator: i16,
    pub join_group: i16,
    pub sync_group: i16,
    pub heartbeat: i16,
    pub leave_group: i16,
    pub offset_commit: i16,
    pub offset_fetch: i16,
}

/// Versions negotiated with one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// Produce version.
    pub produce: i16,
    /// Fetch version.
    pub fetch: i16,
    /// ListOffsets version.
    pub list_offsets: i16,
    /// Metadata version.
    pub metadata: i16,
    /// CreateTopics version, if the broker has one we speak.
    pub create_topics: Option<i16>,
    /// The group APIs, if the broker has every one in a version we speak.
    pub groups: Option<GroupVersions>,
}

/// Picks, per API, the highest version in both our range and the broker's `(key, min, max)`.
///
/// # Errors
/// [`KafkaError::Unsupported`] naming the first API the broker lacks or speaks no common
/// version of.
pub fn negotiate(broker: &[(i16, i16, i16)]) -> Result<Versions> {
    let pick = |key: i16, lo: i16, hi: i16| -> Option<std::result::Result<i16, (i16, i16)>> {
        let (_, bmin, bmax) = broker.iter().find(|(k, _, _)| *k == key)?;
        let v = hi.min(*bmax);
        Some(if v >= lo.max(*bmin) {
            Ok(v)
        } else {
            Err((*bmin, *bmax))
        })
    };
    let mut got = [0i16; 4];
    for (slot, (key, name, lo, hi)) in got.iter_mut().zip(OURS) {
        *slot = match pick(key, lo, hi) {
            Some(Ok(v)) => v,
            Some(Err((bmin, bmax))) => {
                return Err(KafkaError::Unsupported(format!(
                    "the broker speaks {name} v{bmin}..={bmax}; tidelog-bench needs v{lo}..={hi}"
                )))
            }
            None => {
                return Err(KafkaError::Unsupported(format!(
                    "the broker does not offer the {name} API (key {key})"
                )))
            }
        };
    }
    let (lo, hi) = CREATE_TOPICS_VERSIONS;
    Ok(Versions {
        produce: got[0],
        fetch: got[1],
        list_offsets: got[2],
        metadata: got[3],
        create_topics: pick(api::CREATE_TOPICS, lo, hi).and_then(|r| r.ok()),
        groups: (|| {
            let mut g = [0i16; 7];
            for (slot, (key, lo, hi)) in g.iter_mut().zip(GROUP_APIS) {
                *slot = pick(key, lo, hi)?.ok()?;
            }
            Some(GroupVersions {
                find_coordinator: g[0],
                join_group: g[1],
                sync_group: g[2],
                heartbeat: g[3],
                leave_group: g[4],
                offset_commit: g[5],
                offset_fetch: g[6],
            })
        })(),
    })
}

/// A connection with the versions negotiated on it.
#[derive(Debug, Clone)]
pub struct NodeConn {
    /// The connection.
    pub conn: KafkaConn,
    /// What it speaks.
    pub versions: Versions,
}

impl NodeConn {
    /// Connects to `addr` and negotiates versions.
    ///
    /// # Errors
    /// Connect, ApiVersions errors, no common version.
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let conn = KafkaConn::connect(addr, CLIENT_ID).await?;
        let body = conn.call(api::API_VERSIONS, 0, &[]).await?;
        let r = ApiVersionsResponse::decode(&mut Decoder::new(&body), 0)
            .map_err(|e| KafkaError::Malformed(format!("ApiVersions: {e}")))?;
        check("ApiVersions", r.error_code)?;
        let ranges: Vec<_> = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let versions = negotiate(&ranges)?;
        Ok(NodeConn { conn, versions })
    }
}

pub(crate) fn encode(
    f: impl FnOnce(&mut BytesMut) -> Result<(), tidelog_wire::kafka::EncodeError>,
) -> Result<BytesMut> {
    let mut b = BytesMut::new();
    f(&mut b).map_err(|e| KafkaError::Malformed(format!("encode: {e}")))?;
    Ok(b)
}

pub(crate) fn malformed(api: &str) -> impl Fn(tidelog_wire::kafka::DecodeError) -> KafkaError + '_ {
    move |e| KafkaError::Malformed(format!("{api}: {e}"))
}

/// A partition: (index of its topic in the client's list, partition number).
pub use crate::work::Tp;

/// A Kafka client for a fixed list of topics; `!Send`, one per executor (or per consumer).
#[derive(Debug)]
pub struct KafkaClient {
    /// The bootstrap addresses, tried in order; the one that answered last goes first.
    bootstrap: Vec<SocketAddr>,
    /// Index in `bootstrap` of the address that answered last.
    booted: Cell<usize>,
    topics: Vec<String>,
    boot: RefCell<Option<NodeConn>>,
    /// Node id → address, from the last metadata.
    nodes: RefCell<HashMap<i32, SocketAddr>>,
    /// Node id → open connection.
    conns: RefCell<HashMap<i32, NodeConn>>,
    /// Per topic, partition → leader node id (-1: none).
    leaders: RefCell<Vec<Vec<i32>>>,
    controller: Cell<i32>,
}

impl KafkaClient {
    /// Connects to the first bootstrap broker that answers and negotiates versions.
    ///
    /// # Errors
    /// As [`NodeConn::open`], for the last address tried; an empty list.
    pub async fn connect(bootstrap: &[SocketAddr], topics: &[String]) -> Result<Self> {
        let (booted, boot) = open_any(bootstrap, 0).await?;
        Ok(KafkaClient {
            bootstrap: bootstrap.to_vec(),
            booted: Cell::new(booted),
            topics: topics.to_vec(),
            boot: RefCell::new(Some(boot)),
            nodes: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            leaders: RefCell::new(vec![Vec::new(); topics.len()]),
            controller: Cell::new(-1),
        })
    }

    /// Topic `t`'s name.
    pub fn topic(&self, t: usize) -> &str {
        self.topics.get(t).map_or("", String::as_str)
    }

    /// Number of topics.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Topic `t`'s partition count per the last metadata.
    pub fn partition_count(&self, t: usize) -> usize {
        self.leaders.borrow().get(t).map_or(0, Vec::len)
    }

    /// Node `id`'s address per the last metadata.
    ///
    /// # Errors
    /// An unknown node.
    pub fn node_addr(&self, id: i32) -> Result<SocketAddr> {
        self.nodes
            .borrow()
            .get(&id)
            .copied()
            .ok_or_else(|| KafkaError::Malformed(format!("unknown node {id}")))
    }

    /// The index of topic `name` in the client's list.
    pub fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == name)
    }

    /// The leader node of `tp` per the last metadata (-1: unknown).
    pub fn leader_id(&self, tp: Tp) -> i32 {
        usize::try_from(tp.1)
            .ok()
            .and_then(|p| self.leaders.borrow().get(tp.0)?.get(p).copied())
            .unwrap_or(-1)
    }

    /// The bootstrap connection, reopened if broken.
    ///
    /// # Errors
    /// Connect or negotiation errors.
    pub async fn boot(&self) -> Result<NodeConn> {
        let cached = self.boot.borrow().clone();
        match cached {
            Some(c) if !c.conn.is_closed() => Ok(c),
            _ => {
                let (booted, c) = open_any(&self.bootstrap, self.booted.get()).await?;
                self.booted.set(booted);
                *self.boot.borrow_mut() = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// The connection to node `id`, opened if needed.
    ///
    /// # Errors
    /// An unknown node, connect or negotiation errors.
    pub async fn node(&self, id: i32) -> Result<NodeConn> {
        let cached = self.conns.borrow().get(&id).cloned();
        if let Some(c) = cached.filter(|c| !c.conn.is_closed()) {
            return Ok(c);
        }
        let addr = self
            .nodes
            .borrow()
            .get(&id)
            .copied()
            .ok_or(KafkaError::Code {
                api: "Metadata",
                code: code::LEADER_NOT_AVAILABLE,
            })?;
        let c = NodeConn::open(addr).await?;
        self.conns.borrow_mut().insert(id, c.clone());
        Ok(c)
    }

    /// Remembers node `id` at `host:port` (a FindCoordinator answer).
    ///
    /// # Errors
    /// An unresolvable host or a bad port.
    pub fn learn_node(&self, id: i32, host: &str, port: i32) -> Result<()> {
        let port = u16::try_from(port)
            .map_err(|_| KafkaError::Malformed(format!("node {id} port {port}")))?;
        let addr = resolve(host, port, self.bootstrap[self.booted.get()])?;
        let old = self.nodes.borrow_mut().insert(id, addr);
        if old.is_some_and(|a| a != addr) {
            self.conns.borrow_mut().remove(&id);
        }
        Ok(())
    }

    /// The connection to the leader of `tp`.
    ///
    /// # Errors
    /// No known leader, or as [`node`](Self::node).
    pub async fn leader(&self, tp: Tp) -> Result<NodeConn> {
        match self.leader_id(tp) {
            id if id >= 0 => self.node(id).await,
            _ => Err(KafkaError::Code {
                api: "Metadata",
                code: code::LEADER_NOT_AVAILABLE,
            }),
        }
    }

    /// Reads the topics' metadata (asking the broker to create missing ones when
    /// `auto_create`); returns each topic's partition count, or its error code.
    ///
    /// # Errors
    /// Request errors.
    async fn refresh_topics(&self, auto_create: bool) -> Result<Vec<Result<usize, i16>>> {
        let boot = self.boot().await?;
        let v = boot.versions.metadata;
        let request = MetadataRequest {
            topics: Some(
                self.topics
                    .iter()
                    .map(|t| MetadataRequestTopic {
                        name: Some(t.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            allow_auto_topic_creation: auto_create,
            ..Default::default()
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = boot.conn.call(api::METADATA, v, &body).await?;
        let m =
            MetadataResponse::decode(&mut Decoder::new(&resp), v).map_err(malformed("Metadata"))?;
        {
            let mut nodes = self.nodes.borrow_mut();
            for b in &m.brokers {
                let port = u16::try_from(b.port).map_err(|_| {
                    KafkaError::Malformed(format!("Metadata: node {} port {}", b.node_id, b.port))
                })?;
                nodes.insert(
                    b.node_id,
                    resolve(&b.host, port, self.bootstrap[self.booted.get()])?,
                );
            }
        }
        self.controller.set(m.controller_id);
        let mut out = Vec::with_capacity(self.topics.len());
        let mut all = Vec::with_capacity(self.topics.len());
        for name in &self.topics {
            let t = m
                .topics
                .iter()
                .find(|t| t.name.as_deref() == Some(name.as_str()))
                .ok_or_else(|| {
                    KafkaError::Malformed(format!("Metadata without topic {name} asked for"))
                })?;
            if t.error_code != code::NONE {
                out.push(Err(t.error_code));
                all.push(Vec::new());
                continue;
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                let slot = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| leaders.get_mut(i))
                    .ok_or_else(|| {
                        KafkaError::Malformed(format!("Metadata: partition {}", p.partition_index))
                    })?;
                *slot = if p.error_code == code::NONE {
                    p.leader_id
                } else {
                    -1
                };
            }
            out.push(Ok(leaders.len()));
            all.push(leaders);
        }
        *self.leaders.borrow_mut() = all;
        Ok(out)
    }

    /// Reads the topics' metadata; returns their partition counts.
    ///
    /// # Errors
    /// The first topic's error code (`UNKNOWN_TOPIC_OR_PARTITION` when missing), request
    /// errors.
    pub async fn refresh(&self, auto_create: bool) -> Result<Vec<usize>> {
        self.refresh_topics(auto_create)
            .await?
            .into_iter()
            .map(|r| {
                r.map_err(|code| KafkaError::Code {
                    api: "Metadata",
                    code,
                })
            })
            .collect()
    }

    /// Makes sure every topic exists with every partition led; creates missing ones with
    /// `partitions` when `create` (CreateTopics, else auto-creation through Metadata).
    /// Returns the partition counts.
    ///
    /// # Errors
    /// A missing topic without `create`, refused creation, leaders still missing after
    /// a while.
    pub async fn ensure_topics(&self, partitions: u32, create: bool) -> Result<Vec<usize>> {
        let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
        let mut created = false;
        loop {
            let found = self.refresh_topics(created).await;
            let err = match found {
                Ok(found) => {
                    let missing: Vec<String> = found
                        .iter()
                        .zip(&self.topics)
                        .filter(|(r, _)| *r == &Err(code::UNKNOWN_TOPIC_OR_PARTITION))
                        .map(|(_, t)| t.clone())
                        .collect();
                    let led = self
                        .leaders
                        .borrow()
                        .iter()
                        .all(|l| !l.is_empty() && l.iter().all(|id| *id >= 0));
                    if let Some(code) = found.iter().find_map(|r| r.err()) {
                        if code == code::UNKNOWN_TOPIC_OR_PARTITION && create && !created {
                            let boot = self.boot().await?;
                            if boot.versions.create_topics.is_some() {
                                self.create_topics(&missing, partitions).await?;
                            }
                            // Without CreateTopics, the next Metadata asks for auto-creation.
                            created = true;
                            continue;
                        }
                        let e = KafkaError::Code {
                            api: "Metadata",
                            code,
                        };
                        if !e.is_retriable()
                            || (code == code::UNKNOWN_TOPIC_OR_PARTITION && !create)
                        {
                            return Err(e);
                        }
                        e
                    } else if led {
                        return Ok(found.into_iter().flatten().collect());
                    } else {
                        KafkaError::Code {
                            api: "Metadata",
                            code: code::LEADER_NOT_AVAILABLE,
                        }
                    }
                }
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            glommio::timer::sleep(RETRY_BACKOFF * 2).await;
        }
    }

    /// CreateTopics for `names` with `partitions` each and the broker's replication factor
    /// (v4+: -1), sent to the controller when Metadata named one.
    ///
    /// # Errors
    /// Request errors; an existing topic is not one.
    pub async fn create_topics(&self, names: &[String], partitions: u32) -> Result<()> {
        let controller = self.controller.get();
        let target = if controller >= 0 && self.nodes.borrow().contains_key(&controller) {
            self.node(controller).await?
        } else {
            self.boot().await?
        };
        let v = target.versions.create_topics.ok_or_else(|| {
            KafkaError::Unsupported("the broker does not offer CreateTopics v2..=7".into())
        })?;
        let request = CreateTopicsRequest {
            topics: names
                .iter()
                .map(|name| CreatableTopic {
                    name: name.clone(),
                    num_partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
                    replication_factor: if v >= 4 { -1 } else { 1 },
                    ..Default::default()
                })
                .collect(),
            timeout_ms: 30_000,
            validate_only: false,
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = target.conn.call(api::CREATE_TOPICS, v, &body).await?;
        let r = CreateTopicsResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("CreateTopics"))?;
        for t in &r.topics {
            match t.error_code {
                code::NONE | code::TOPIC_ALREADY_EXISTS => {}
                c => {
                    return Err(KafkaError::Code {
                        api: "CreateTopics",
                        code: c,
                    })
                }
            }
        }
        Ok(())
    }

    /// The offsets at `timestamp` ([`EARLIEST`] or [`LATEST`]) of `tps`, in their order; one
    /// request per leader, retried after a metadata refresh.
    ///
    /// # Errors
    /// Errors that persist through the retries.
    pub async fn list_offsets(&self, tps: &[Tp], timestamp: i64) -> Result<Vec<i64>> {
        let mut attempt = 0;
        loop {
            match self.list_offsets_once(tps, timestamp).await {
                Ok(o) => return Ok(o),
                Err(e) if e.is_retriable() && attempt < RETRIES => {
                    attempt += 1;
                    glommio::timer::sleep(RETRY_BACKOFF * attempt as u32).await;
                    // A failed refresh shows in the next attempt.
                    let _ = self.refresh(false).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn list_offsets_once(&self, tps: &[Tp], timestamp: i64) -> Result<Vec<i64>> {
        let mut by_node: HashMap<i32, Vec<Tp>> = HashMap::new();
        for tp in tps {
            by_node.entry(self.leader_id(*tp)).or_default().push(*tp);
        }
        let mut found: HashMap<(String, i32), i64> = HashMap::new();
        for (node, tps) in by_node {
            if node < 0 {
                return Err(KafkaError::Code {
                    api: "ListOffsets",
                    code: code::LEADER_NOT_AVAILABLE,
                });
            }
            let c = self.node(node).await?;
            let v = c.versions.list_offsets;
            let request = ListOffsetsRequest {
                replica_id: -1,
                isolation_level: 0,
                topics: by_topic(&tps)
                    .into_iter()
                    .map(|(t, parts)| ListOffsetsTopic {
                        name: self.topic(t).to_owned(),
                        partitions: parts
                            .iter()
                            .map(|p| ListOffsetsPartition {
                                partition_index: *p,
                                current_leader_epoch: -1,
                                timestamp,
                                ..Default::default()
                            })
                            .collect(),
                    })
                    .collect(),
                ..Default::default()
            };
            let body = encode(|b| request.encode(b, v))?;
            let resp = c.conn.call(api::LIST_OFFSETS, v, &body).await?;
            let r = ListOffsetsResponse::decode(&mut Decoder::new(&resp), v)
                .map_err(malformed("ListOffsets"))?;
            for t in &r.topics {
                for p in &t.partitions {
                    check("ListOffsets", p.error_code)?;
                    found.insert((t.name.clone(), p.partition_index), p.offset);
                }
            }
        }
        tps.iter()
            .map(|(t, p)| {
                found
                    .get(&(self.topic(*t).to_owned(), *p))
                    .copied()
                    .ok_or_else(|| {
                        KafkaError::Malformed(format!("ListOffsets without {}/{p}", self.topic(*t)))
                    })
            })
            .collect()
    }
}

/// `tps` grouped by topic, topics and partitions in first-seen order.
pub fn by_topic(tps: &[Tp]) -> Vec<(usize, Vec<i32>)> {
    let mut out: Vec<(usize, Vec<i32>)> = Vec::new();
    for (t, p) in tps {
        match out.iter_mut().find(|(u, _)| u == t) {
            Some((_, ps)) => ps.push(*p),
            None => out.push((*t, vec![*p])),
        }
    }
    out
}

/// Resolves a node's advertised `host:port`, preferring the bootstrap address's IP family
/// (a broker advertising `localhost` may listen on IPv4 only).
/// Opens the first of `addrs` that answers, starting at `from` and wrapping around; returns
/// its index.
async fn open_any(addrs: &[SocketAddr], from: usize) -> Result<(usize, NodeConn)> {
    let mut last = KafkaError::Connect("no bootstrap address".into());
    for k in 0..addrs.len() {
        let i = (from + k) % addrs.len();
        match NodeConn::open(addrs[i]).await {
            Ok(c) => return Ok((i, c)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn resolve(host: &str, port: u16, bootstrap: SocketAddr) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| KafkaError::Connect(format!("{host}:{port}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == bootstrap.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| KafkaError::Connect(format!("{host}:{port} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_the_highest_common_ones() {
        let tidelog = [
            (0, 0, 10),
            (1, 4, 12),
            (2, 1, 7),
            (3, 0, 12),
            (19, 2, 7),
            (18, 0, 4),
        ];
        let v = negotiate(&tidelog).expect("common versions");
        assert_eq!(
            v,
            Versions {
                produce: 9,
                fetch: 12,
                list_offsets: 7,
                metadata: 12,
                create_topics: Some(7),
                groups: None,
            }
        );
        let mut with_groups = tidelog.to_vec();
        with_groups.extend([(10, 0, 4), (11, 0, 7), (14, 0, 5), (12, 0, 4), (13, 0, 5)]);
        with_groups.extend([(8, 2, 9), (9, 1, 9)]);
        let g = negotiate(&with_groups).expect("ok").groups.expect("groups");
        assert_eq!(
            (g.find_coordinator, g.join_group, g.offset_fetch),
            (3, 7, 7)
        );
        with_groups.retain(|k| k.0 != 12);
        assert_eq!(
            negotiate(&with_groups).expect("ok").groups,
            None,
            "no Heartbeat"
        );
        let old = [(0, 0, 5), (1, 0, 6), (2, 0, 2), (3, 0, 5)];
        let v = negotiate(&old).expect("older broker");
        assert_eq!(
            (v.produce, v.fetch, v.list_offsets, v.metadata),
            (5, 6, 2, 5)
        );
        assert_eq!(v.create_topics, None, "auto-creation then");
        let e = negotiate(&[(0, 0, 2), (1, 4, 12), (2, 1, 7), (3, 0, 12)]).expect_err("no v3");
        assert!(e.to_string().contains("Produce v0..=2"), "{e}");
        let e = negotiate(&[(0, 0, 9), (2, 1, 7), (3, 0, 12)]).expect_err("no Fetch");
        assert!(e.to_string().contains("Fetch API"), "{e}");
    }

    #[test]
    fn node_hosts_resolve_to_the_bootstrap_family() {
        let v4: SocketAddr = "127.0.0.1:9092".parse().expect("addr");
        let a = resolve("127.0.0.1", 9093, v4).expect("resolves");
        assert_eq!(a, "127.0.0.1:9093".parse().expect("addr"));
    }
}
