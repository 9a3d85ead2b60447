//! The cluster metadata: what the Raft metadata log's committed commands add up to, the same
//! on every node (KRaft's metadata image). Deterministic: applying the same commands in the
//! same order gives the same state on every node, so every decision that depends on state
//! (placement, refusals) is taken here, at apply time, never by the proposer.
//!
//! ```text
//! nodes:   id -> NodeInfo (registered endpoints, shard count)
//! topics:  name -> config; per partition: replicas, leader, leader epoch, in-sync set
//! producer ids: the next block's start
//! ```

use std::collections::BTreeMap;

use super::codec::{Decoded, Reader, Writer};
use crate::meta::{validate_topic_name, TopicConfig, CONFIG_BYTES, PARTITIONS_MAX};

/// A node's id in the cluster (1..=[`NODE_ID_MAX`]; 0 is the single node without peers).
pub type NodeId = u64;

/// Largest node id: a Kafka broker id is `node * SHARDS_MAX + shard` and must fit an i32.
pub const NODE_ID_MAX: NodeId = (i32::MAX as u64) / crate::limits::SHARDS_MAX as u64 - 1;
/// Most nodes one cluster may register.
pub const NODES_MAX: usize = 256;
/// Largest replication factor.
pub const REPLICATION_FACTOR_MAX: u16 = 16;
/// Most topics the cluster metadata holds.
pub const TOPICS_MAX: usize = 100_000;
/// Longest host name a node may register.
pub const HOST_BYTES_MAX: usize = 253;
/// Producer ids one allocation command reserves.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The Kafka broker id of a node's shard.
pub fn kafka_broker_id(node: NodeId, shard: usize) -> i32 {
    let id = node * crate::limits::SHARDS_MAX as u64 + shard as u64;
    i32::try_from(id).unwrap_or(i32::MAX)
}

/// What a node registers: where clients reach each of its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Host advertised to Kafka clients.
    pub kafka_host: String,
    /// Each shard's own Kafka port (empty when the Kafka listener is off).
    pub kafka_ports: Vec<u16>,
    /// Host of the native endpoints.
    pub native_host: String,
    /// Each shard's own native port; its length is the node's shard count.
    pub native_ports: Vec<u16>,
    /// Which run of the node registered (new at every start): a new incarnation bumps the
    /// epochs of the partitions the node leads, so followers holding records it lost in a
    /// crash see the divergence when it writes at those offsets again.
    pub incarnation: u64,
}

impl ClusterState {
    /// The nodes new topics are placed on: the voters (registered or not yet: a cluster
    /// that is starting places on all of them) and the live broker-only nodes.
    pub fn placeable(&self) -> Vec<NodeId> {
        let mut ids = self.members.clone();
        ids.extend(
            self.nodes
                .keys()
                .filter(|n| !self.members.contains(n) && !self.fenced.contains(n)),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether a node is registered and heard from.
    pub fn is_live(&self, node: NodeId) -> bool {
        self.nodes.contains_key(&node) && !self.fenced.contains(&node)
    }
}

impl NodeInfo {
    /// The node's shard count.
    pub fn shards(&self) -> usize {
        self.native_ports.len().max(1)
    }

    fn put(&self, w: &mut Writer) {
        w.u64(self.id);
        w.str(&self.kafka_host);
        w.u32(self.kafka_ports.len() as u32);
        for p in &self.kafka_ports {
            w.u16(*p);
        }
        w.str(&self.native_host);
        w.u32(self.native_ports.len() as u32);
        for p in &self.native_ports {
            w.u16(*p);
        }
        w.u64(self.incarnation);
    }

    fn get(r: &mut Reader<'_>) -> Decoded<Self> {
        let id = r.u64()?;
        let kafka_host = r.str()?.to_owned();
        let n = r.count(2, crate::limits::SHARDS_MAX)?;
        let kafka_ports = (0..n).map(|_| r.u16()).collect::<Decoded<_>>()?;
        let native_host = r.str()?.to_owned();
        let n = r.count(2, crate::limits::SHARDS_MAX)?;
        let native_ports = (0..n).map(|_| r.u16()).collect::<Decoded<_>>()?;
        let incarnation = r.u64()?;
        let info = NodeInfo {
            id,
            kafka_host,
            kafka_ports,
            native_host,
            native_ports,
            incarnation,
        };
        if info.id == 0 || info.id > NODE_ID_MAX {
            return r.fail("node id out of range");
        }
        if info.kafka_host.len() > HOST_BYTES_MAX || info.native_host.len() > HOST_BYTES_MAX {
            return r.fail("host name too long");
        }
        if info.native_ports.is_empty() {
            return r.fail("a node has at least one shard");
        }
        Ok(info)
    }
}

/// A change to the cluster metadata: the data of one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A node announces (or updates) its endpoints.
    RegisterNode(NodeInfo),
    /// Create a topic; replicas are placed when the command is applied.
    CreateTopic {
        /// The topic.
        name: String,
        /// Its configuration.
        config: TopicConfig,
        /// Replicas per partition.
        replication_factor: u16,
    },
    /// Delete a topic.
    DeleteTopic {
        /// The topic.
        name: String,
    },
    /// Grow a topic to `count` partitions; the new ones are placed when applied.
    CreatePartitions {
        /// The topic.
        name: String,
        /// Its new partition count (more than it has).
        count: u32,
    },
    /// Replace a topic's configuration (same partition count).
    AlterTopicConfig {
        /// The topic.
        name: String,
        /// Its new configuration.
        config: TopicConfig,
    },
    /// Reserve a block of idempotent-producer ids.
    AllocateProducerIds,
    /// A partition's leader changes its in-sync set (adds a follower that caught up);
    /// refused unless `leader_epoch` is the partition's current one.
    AlterIsr {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The proposing leader's epoch.
        leader_epoch: u32,
        /// The in-sync set version the proposal was made from.
        isr_version: u32,
        /// The new in-sync set (must hold the leader).
        isr: Vec<NodeId>,
    },
    /// The metadata leader stopped (or resumed) hearing from a node: a fenced node's shards
    /// are left out of Metadata, and its partitions have no leader, until it is heard again.
    Fence {
        /// The node.
        node: NodeId,
        /// Fenced (true) or back (false).
        fenced: bool,
    },
    /// Kafka's preferred-leader election (ElectLeaders, type 0): the partition's first
    /// replica becomes its leader at the next epoch, if it is live and in the in-sync set
    /// (so it holds every acknowledged record) and does not lead already.
    ElectPreferred {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// Kafka's AlterPartitionReassignments for one partition: move its replicas to
    /// `target` (new replicas join as followers, catch up, enter the in-sync set; once every
    /// target replica is in it the reassignment completes at apply time and the rest leave),
    /// or, with `None`, cancel the reassignment under way (back to the original replicas).
    Reassign {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replicas wanted, in preference order; `None` cancels.
        target: Option<Vec<NodeId>>,
    },
}

const REGISTER: u8 = 1;
const CREATE: u8 = 2;
const DELETE: u8 = 3;
const PRODUCER_IDS: u8 = 4;
const FENCE: u8 = 5;
const ALTER_ISR: u8 = 6;
const ELECT_PREFERRED: u8 = 7;
const REASSIGN: u8 = 8;
const ALTER_CONFIG: u8 = 9;
const CREATE_PARTITIONS: u8 = 10;

impl Command {
    /// The entry data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        match self {
            Command::RegisterNode(info) => {
                w.u8(REGISTER);
                info.put(&mut w);
            }
            Command::CreateTopic {
                name,
                config,
                replication_factor,
            } => {
                w.u8(CREATE);
                w.str(name);
                w.bytes(&config.encode());
                w.u16(*replication_factor);
            }
            Command::DeleteTopic { name } => {
                w.u8(DELETE);
                w.str(name);
            }
            Command::CreatePartitions { name, count } => {
                w.u8(CREATE_PARTITIONS);
                w.str(name);
                w.u32(*count);
            }
            Command::AlterTopicConfig { name, config } => {
                w.u8(ALTER_CONFIG);
                w.str(name);
                w.bytes(&config.encode());
            }
            Command::AllocateProducerIds => w.u8(PRODUCER_IDS),
            Command::AlterIsr {
                topic,
                partition,
                leader_epoch,
                isr_version,
                isr,
            } => {
                w.u8(ALTER_ISR);
                w.str(topic);
                w.u32(*partition);
                w.u32(*leader_epoch);
                w.u32(*isr_version);
                w.u16(isr.len() as u16);
                for n in isr {
                    w.u64(*n);
                }
            }
            Command::Fence { node, fenced } => {
                w.u8(FENCE);
                w.u64(*node);
                w.u8(u8::from(*fenced));
            }
            Command::ElectPreferred { topic, partition } => {
                w.u8(ELECT_PREFERRED);
                w.str(topic);
                w.u32(*partition);
            }
            Command::Reassign {
                topic,
                partition,
                target,
            } => {
                w.u8(REASSIGN);
                w.str(topic);
                w.u32(*partition);
                match target {
                    None => w.u8(0),
                    Some(nodes) => {
                        w.u8(1);
                        put_nodes(&mut w, nodes);
                    }
                }
            }
        }
        w.out
    }

    /// Decodes entry data.
    ///
    /// # Errors
    /// Anything that [`encode`](Self::encode) could not have written.
    pub fn decode(bytes: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(bytes, "metadata command");
        let command = match r.u8()? {
            REGISTER => Command::RegisterNode(NodeInfo::get(&mut r)?),
            CREATE => {
                let name = r.str()?.to_owned();
                let config = r.bytes()?;
                let Some(config) = TopicConfig::decode(config) else {
                    return r.fail("bad topic configuration");
                };
                Command::CreateTopic {
                    name,
                    config,
                    replication_factor: r.u16()?,
                }
            }
            DELETE => Command::DeleteTopic {
                name: r.str()?.to_owned(),
            },
            CREATE_PARTITIONS => Command::CreatePartitions {
                name: r.str()?.to_owned(),
                count: r.u32()?,
            },
            ALTER_CONFIG => {
                let name = r.str()?.to_owned();
                let Some(config) = TopicConfig::decode(r.bytes()?) else {
                    return r.fail("bad topic configuration");
                };
                Command::AlterTopicConfig { name, config }
            }
            PRODUCER_IDS => Command::AllocateProducerIds,
            ALTER_ISR => {
                let topic = r.str()?.to_owned();
                let partition = r.u32()?;
                let leader_epoch = r.u32()?;
                let isr_version = r.u32()?;
                let n = usize::from(r.u16()?);
                if n > usize::from(REPLICATION_FACTOR_MAX) {
                    return r.fail("in-sync set too large");
                }
                let isr = (0..n).map(|_| r.u64()).collect::<Decoded<Vec<_>>>()?;
                Command::AlterIsr {
                    topic,
                    partition,
                    leader_epoch,
                    isr_version,
                    isr,
                }
            }
            FENCE => Command::Fence {
                node: r.u64()?,
                fenced: r.bool()?,
            },
            ELECT_PREFERRED => Command::ElectPreferred {
                topic: r.str()?.to_owned(),
                partition: r.u32()?,
            },
            REASSIGN => {
                let topic = r.str()?.to_owned();
                let partition = r.u32()?;
                let target = if r.bool()? {
                    Some(get_nodes(&mut r)?)
                } else {
                    None
                };
                Command::Reassign {
                    topic,
                    partition,
                    target,
                }
            }
            _ => return r.fail("unknown command"),
        };
        r.finish()?;
        Ok(command)
    }
}

/// Why a command was refused when applied (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A topic of that name exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// No topic of that name.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The name breaks the rules.
    #[error("{0}")]
    InvalidTopic(String),
    /// The configuration is out of bounds.
    #[error("{0}")]
    InvalidConfig(String),
    /// More replicas than registered nodes, or none.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// A bound of the metadata was reached.
    #[error("{0}")]
    Limit(String),
    /// A partition change named a leader epoch that is no longer current.
    #[error("{0}")]
    StaleEpoch(String),
    /// The preferred replica leads already.
    #[error("{0}")]
    ElectionNotNeeded(String),
    /// The preferred replica is fenced or not in the in-sync set.
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    /// A reassignment named no replicas, a node twice, or an unregistered node.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// A cancellation found no reassignment under way.
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A node's endpoints changed.
    Node(NodeId),
    /// A node was fenced (or came back).
    Fenced {
        /// The node.
        node: NodeId,
        /// Fenced (true) or back (false).
        fenced: bool,
    },
    /// A topic was created.
    TopicCreated(String),
    /// A topic was deleted.
    TopicDeleted(String),
    /// A topic's configuration changed.
    TopicConfigChanged(String),
    /// A topic gained partitions.
    PartitionsCreated(String),
    /// Producer ids `[start, start + PRODUCER_ID_BLOCK)` are reserved for the proposer.
    ProducerIds(i64),
    /// A partition's in-sync set changed.
    IsrChanged,
    /// A partition's leader changed (preferred-leader election).
    LeaderElected,
    /// A partition's reassignment started, changed, completed or was cancelled.
    Reassigned,
}

impl Applied {
    /// Appends the encoding (a broker-only node's proposal outcome travels in it).
    pub fn put(&self, w: &mut Writer) {
        match self {
            Applied::Node(n) => {
                w.u8(1);
                w.u64(*n);
            }
            Applied::Fenced { node, fenced } => {
                w.u8(2);
                w.u64(*node);
                w.u8(u8::from(*fenced));
            }
            Applied::TopicCreated(name) => {
                w.u8(3);
                w.str(name);
            }
            Applied::TopicDeleted(name) => {
                w.u8(4);
                w.str(name);
            }
            Applied::ProducerIds(start) => {
                w.u8(5);
                w.i64(*start);
            }
            Applied::IsrChanged => w.u8(6),
            Applied::LeaderElected => w.u8(7),
            Applied::Reassigned => w.u8(8),
            Applied::TopicConfigChanged(name) => {
                w.u8(9);
                w.str(name);
            }
            Applied::PartitionsCreated(name) => {
                w.u8(10);
                w.str(name);
            }
        }
    }

    /// Reads [`put`](Self::put)'s encoding.
    ///
    /// # Errors
    /// Anything `put` could not have written.
    pub fn get(r: &mut Reader<'_>) -> Decoded<Self> {
        Ok(match r.u8()? {
            1 => Applied::Node(r.u64()?),
            2 => Applied::Fenced {
                node: r.u64()?,
                fenced: r.bool()?,
            },
            3 => Applied::TopicCreated(r.str()?.to_owned()),
            4 => Applied::TopicDeleted(r.str()?.to_owned()),
            5 => Applied::ProducerIds(r.i64()?),
            6 => Applied::IsrChanged,
            7 => Applied::LeaderElected,
            8 => Applied::Reassigned,
            9 => Applied::TopicConfigChanged(r.str()?.to_owned()),
            10 => Applied::PartitionsCreated(r.str()?.to_owned()),
            _ => return r.fail("unknown outcome"),
        })
    }
}

impl Refusal {
    /// Appends the encoding.
    pub fn put(&self, w: &mut Writer) {
        let (tag, text) = match self {
            Refusal::TopicExists(t) => (1, t),
            Refusal::UnknownTopic(t) => (2, t),
            Refusal::InvalidTopic(t) => (3, t),
            Refusal::InvalidConfig(t) => (4, t),
            Refusal::InvalidReplicationFactor(t) => (5, t),
            Refusal::Limit(t) => (6, t),
            Refusal::StaleEpoch(t) => (7, t),
            Refusal::ElectionNotNeeded(t) => (8, t),
            Refusal::PreferredLeaderNotAvailable(t) => (9, t),
            Refusal::InvalidReplicaAssignment(t) => (10, t),
            Refusal::NoReassignmentInProgress(t) => (11, t),
        };
        w.u8(tag);
        w.str(text);
    }

    /// Reads [`put`](Self::put)'s encoding.
    ///
    /// # Errors
    /// Anything `put` could not have written.
    pub fn get(r: &mut Reader<'_>) -> Decoded<Self> {
        let tag = r.u8()?;
        let text = r.str()?.to_owned();
        Ok(match tag {
            1 => Refusal::TopicExists(text),
            2 => Refusal::UnknownTopic(text),
            3 => Refusal::InvalidTopic(text),
            4 => Refusal::InvalidConfig(text),
            5 => Refusal::InvalidReplicationFactor(text),
            6 => Refusal::Limit(text),
            7 => Refusal::StaleEpoch(text),
            8 => Refusal::ElectionNotNeeded(text),
            9 => Refusal::PreferredLeaderNotAvailable(text),
            10 => Refusal::InvalidReplicaAssignment(text),
            11 => Refusal::NoReassignmentInProgress(text),
            _ => return r.fail("unknown refusal"),
        })
    }
}

/// One partition as the cluster knows it.
///
/// Invariants (kept by [`ClusterState::apply`], checked by its property test): the in-sync
/// set is a non-empty subset of the replicas; a leader is a member of it; the leader epoch
/// grows by one at every change of leader (a leader that goes and comes back is a new
/// epoch). The in-sync set only loses members when their node is fenced, and gains them only
/// by the leader's [`Command::AlterIsr`] at its current epoch, so a leader is only ever
/// elected from replicas every earlier leader counted when it acknowledged writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    /// The replicas, in placement order (the first is the preferred leader).
    pub replicas: Vec<NodeId>,
    /// The leader; `None` while every in-sync replica's node is fenced (offline).
    pub leader: Option<NodeId>,
    /// Bumped at every change of leader.
    pub leader_epoch: u32,
    /// The in-sync replicas.
    pub isr: Vec<NodeId>,
    /// Bumped at every change of the in-sync set (Kafka's partition epoch): an `AlterIsr`
    /// made from an older set is refused, so it cannot undo a fencing it did not see.
    pub isr_version: u32,
    /// Replicas a reassignment under way adds (in `replicas` already, catching up).
    pub adding: Vec<NodeId>,
    /// Replicas a reassignment under way removes once the added ones are in sync.
    pub removing: Vec<NodeId>,
}

impl PartitionMeta {
    fn new(replicas: Vec<NodeId>) -> Self {
        PartitionMeta {
            leader: replicas.first().copied(),
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
            isr_version: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// Whether a reassignment is under way.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas before the reassignment under way (the replicas when none is).
    pub fn original(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|n| !self.adding.contains(n))
            .collect()
    }

    /// The replicas the reassignment under way ends with (the replicas when none is).
    pub fn target(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|n| !self.removing.contains(n))
            .collect()
    }

    /// Makes `replicas` the partition's replica set: the in-sync set keeps only its members,
    /// and a leader outside it gives way to the first live in-sync member (at the next
    /// epoch). Refused, changing nothing, when no in-sync replica would be left.
    fn narrow_to(
        &mut self,
        replicas: Vec<NodeId>,
        fenced: &std::collections::BTreeSet<NodeId>,
        what: &str,
    ) -> Result<(), Refusal> {
        let isr: Vec<NodeId> = self
            .isr
            .iter()
            .copied()
            .filter(|n| replicas.contains(n))
            .collect();
        if isr.is_empty() {
            return Err(Refusal::InvalidReplicaAssignment(format!(
                "{what}: none of the replicas {replicas:?} is in the in-sync set {:?}, so none \
                 holds every acknowledged record",
                self.isr
            )));
        }
        if isr != self.isr {
            self.isr = isr;
            self.isr_version = self.isr_version.saturating_add(1);
        }
        if self.leader.is_some_and(|l| !replicas.contains(&l)) {
            // In preference order: the first target replica that holds everything.
            self.leader = replicas
                .iter()
                .copied()
                .find(|n| self.isr.contains(n) && !fenced.contains(n));
            self.leader_epoch = self.leader_epoch.saturating_add(1);
        }
        self.replicas = replicas;
        Ok(())
    }

    /// Completes the reassignment under way once every target replica is in the in-sync
    /// set: the removed replicas leave (the leader too, if it is one of them).
    fn complete_reassignment(&mut self, fenced: &std::collections::BTreeSet<NodeId>) -> bool {
        if !self.reassigning() {
            return false;
        }
        let target = self.target();
        if !target.iter().all(|n| self.isr.contains(n)) {
            return false;
        }
        // Every target replica is in sync, so narrowing cannot be refused.
        if self.narrow_to(target, fenced, "completing").is_err() {
            return false;
        }
        self.adding.clear();
        self.removing.clear();
        true
    }
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Its configuration.
    pub config: TopicConfig,
    /// Its partitions.
    pub partitions: Vec<PartitionMeta>,
    /// Index of the command that created it: a topic deleted and created again under the
    /// same name is another topic.
    pub created_at: u64,
}

impl TopicMeta {
    /// The node leading a partition.
    pub fn leader(&self, partition: u32) -> Option<NodeId> {
        self.partitions.get(partition as usize)?.leader
    }

    /// A partition's replicas.
    pub fn replicas(&self, partition: u32) -> &[NodeId] {
        self.partitions
            .get(partition as usize)
            .map_or(&[], |p| p.replicas.as_slice())
    }
}

/// The cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// The cluster's members (the Raft voters, from the peer list every node is started
    /// with): what partitions are placed on. Not part of snapshots; set at open.
    pub members: Vec<NodeId>,
    /// Registered nodes.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Topics.
    pub topics: BTreeMap<String, TopicMeta>,
    /// Start of the next producer-id block.
    pub next_producer_id: i64,
    /// Registered nodes the metadata leader does not hear from.
    pub fenced: std::collections::BTreeSet<NodeId>,
}

impl ClusterState {
    /// Applies one committed command.
    ///
    /// # Errors
    /// The [`Refusal`], which changes nothing.
    /// `index` is the command's position in the metadata log (a topic's incarnation).
    pub fn apply(&mut self, index: u64, command: Command) -> Result<Applied, Refusal> {
        match command {
            Command::RegisterNode(info) => {
                if !self.nodes.contains_key(&info.id) && self.nodes.len() >= NODES_MAX {
                    return Err(Refusal::Limit(format!("at most {NODES_MAX} nodes")));
                }
                let id = info.id;
                let restarted = self
                    .nodes
                    .get(&id)
                    .is_some_and(|old| old.incarnation != info.incarnation);
                self.nodes.insert(id, info);
                if restarted {
                    for topic in self.topics.values_mut() {
                        for p in &mut topic.partitions {
                            if p.leader == Some(id) {
                                p.leader_epoch = p.leader_epoch.saturating_add(1);
                            }
                        }
                    }
                }
                Ok(Applied::Node(id))
            }
            Command::CreateTopic {
                name,
                config,
                replication_factor,
            } => {
                // The committed-offsets topic is the one internal topic (proposed by the
                // nodes themselves, never by a client: see `Shard::cluster_create`).
                if name != crate::groups::OFFSETS_TOPIC {
                    validate_topic_name(&name).map_err(|e| Refusal::InvalidTopic(e.to_string()))?;
                }
                if self.topics.contains_key(&name) {
                    return Err(Refusal::TopicExists(name));
                }
                if self.topics.len() >= TOPICS_MAX {
                    return Err(Refusal::Limit(format!("at most {TOPICS_MAX} topics")));
                }
                if config.partitions == 0 || config.partitions > PARTITIONS_MAX {
                    return Err(Refusal::InvalidConfig(format!(
                        "partitions {} not in [1, {PARTITIONS_MAX}]",
                        config.partitions
                    )));
                }
                let rf = usize::from(replication_factor);
                let eligible = self.placeable();
                if rf == 0 || rf > eligible.len() {
                    return Err(Refusal::InvalidReplicationFactor(format!(
                        "replication factor {replication_factor} with {} nodes in the cluster",
                        eligible.len()
                    )));
                }
                let partitions = place(&name, config.partitions, rf, &eligible)
                    .into_iter()
                    .map(PartitionMeta::new)
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        config,
                        partitions,
                        created_at: index,
                    },
                );
                Ok(Applied::TopicCreated(name))
            }
            Command::DeleteTopic { name } if name == crate::groups::OFFSETS_TOPIC => Err(
                Refusal::InvalidTopic(format!("{name} is internal: it cannot be deleted")),
            ),
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => Ok(Applied::TopicDeleted(name)),
                None => Err(Refusal::UnknownTopic(name)),
            },
            Command::CreatePartitions { name, count } => {
                let eligible = self.placeable();
                let Some(topic) = self.topics.get_mut(&name) else {
                    return Err(Refusal::UnknownTopic(name));
                };
                let have = topic.config.partitions;
                if count <= have || count > PARTITIONS_MAX {
                    return Err(Refusal::InvalidConfig(format!(
                        "{name} has {have} partitions: the new count must be more, at most \
                         {PARTITIONS_MAX}, not {count}"
                    )));
                }
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
                if rf == 0 || rf > eligible.len() {
                    return Err(Refusal::InvalidReplicationFactor(format!(
                        "replication factor {rf} with {} nodes in the cluster",
                        eligible.len()
                    )));
                }
                let placed = place(&name, count, rf, &eligible);
                topic.partitions.extend(
                    placed
                        .into_iter()
                        .skip(have as usize)
                        .map(PartitionMeta::new),
                );
                topic.config.partitions = count;
                Ok(Applied::PartitionsCreated(name))
            }
            Command::AlterTopicConfig { name, config } => match self.topics.get_mut(&name) {
                None => Err(Refusal::UnknownTopic(name)),
                Some(topic) if topic.config.partitions != config.partitions => {
                    Err(Refusal::InvalidConfig(format!(
                        "the partition count of {name:?} cannot change with its configuration"
                    )))
                }
                Some(topic) => {
                    topic.config = config;
                    Ok(Applied::TopicConfigChanged(name))
                }
            },
            Command::Fence { node, fenced } => {
                if !self.nodes.contains_key(&node) {
                    return Err(Refusal::Limit(format!("node {node} is not registered")));
                }
                if fenced {
                    self.fenced.insert(node);
                } else {
                    self.fenced.remove(&node);
                }
                self.elect(node, fenced);
                Ok(Applied::Fenced { node, fenced })
            }
            Command::AlterIsr {
                topic,
                partition,
                leader_epoch,
                isr_version,
                isr,
            } => {
                let fenced = &self.fenced;
                let Some(meta) = self
                    .topics
                    .get_mut(&topic)
                    .and_then(|t| t.partitions.get_mut(partition as usize))
                else {
                    return Err(Refusal::UnknownTopic(topic));
                };
                // A fenced node may not join (as KIP-841): it could not be elected, and
                // clients are not told of it.
                if let Some(n) = isr
                    .iter()
                    .find(|n| !meta.isr.contains(n) && fenced.contains(n))
                {
                    return Err(Refusal::InvalidConfig(format!(
                        "{topic}-{partition}: node {n} is fenced and cannot join the in-sync set"
                    )));
                }
                let valid = meta.leader.is_some_and(|l| isr.contains(&l))
                    && isr.iter().all(|n| meta.replicas.contains(n))
                    && isr.len() <= meta.replicas.len();
                if meta.leader_epoch != leader_epoch || meta.isr_version != isr_version {
                    return Err(Refusal::StaleEpoch(format!(
                        "{topic}-{partition}: epoch {leader_epoch} in-sync version {isr_version}, \
                         current {} and {}",
                        meta.leader_epoch, meta.isr_version
                    )));
                }
                if !valid {
                    return Err(Refusal::InvalidConfig(format!(
                        "{topic}-{partition}: in-sync set {isr:?} must hold the leader and only replicas"
                    )));
                }
                let mut isr = isr;
                isr.sort_unstable();
                isr.dedup();
                meta.isr = isr;
                meta.isr_version = meta.isr_version.saturating_add(1);
                if meta.complete_reassignment(fenced) {
                    return Ok(Applied::Reassigned);
                }
                Ok(Applied::IsrChanged)
            }
            Command::ElectPreferred { topic, partition } => {
                let fenced = &self.fenced;
                let Some(meta) = self
                    .topics
                    .get_mut(&topic)
                    .and_then(|t| t.partitions.get_mut(partition as usize))
                else {
                    return Err(Refusal::UnknownTopic(topic));
                };
                let Some(&preferred) = meta.replicas.first() else {
                    return Err(Refusal::PreferredLeaderNotAvailable(format!(
                        "{topic}-{partition} has no replicas"
                    )));
                };
                if meta.leader == Some(preferred) {
                    return Err(Refusal::ElectionNotNeeded(format!(
                        "{topic}-{partition}: node {preferred} leads already"
                    )));
                }
                if fenced.contains(&preferred) || !meta.isr.contains(&preferred) {
                    return Err(Refusal::PreferredLeaderNotAvailable(format!(
                        "{topic}-{partition}: preferred node {preferred} is not a live in-sync \
                         replica (in-sync {:?})",
                        meta.isr
                    )));
                }
                meta.leader = Some(preferred);
                meta.leader_epoch = meta.leader_epoch.saturating_add(1);
                Ok(Applied::LeaderElected)
            }
            Command::Reassign {
                topic,
                partition,
                target,
            } => self.reassign(&topic, partition, target),
            Command::AllocateProducerIds => {
                let start = self.next_producer_id;
                let Some(next) = start.checked_add(PRODUCER_ID_BLOCK) else {
                    return Err(Refusal::Limit("producer ids exhausted".into()));
                };
                self.next_producer_id = next;
                Ok(Applied::ProducerIds(start))
            }
        }
    }

    /// Starts, replaces or cancels (`target: None`) a partition's reassignment. The
    /// replicas become the target followed by the original replicas it drops (Kafka's
    /// order: the target's first replica is the preferred leader), the in-sync set is left
    /// as it is (new replicas join it as their leader adds them), and the reassignment
    /// completes at once when every target replica is in sync already (a pure removal).
    fn reassign(
        &mut self,
        topic: &str,
        partition: u32,
        target: Option<Vec<NodeId>>,
    ) -> Result<Applied, Refusal> {
        let nodes = &self.nodes;
        let fenced = &self.fenced;
        let Some(meta) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        else {
            return Err(Refusal::UnknownTopic(topic.to_owned()));
        };
        let what = format!("{topic}-{partition}");
        let original = meta.original();
        let Some(target) = target else {
            if !meta.reassigning() {
                return Err(Refusal::NoReassignmentInProgress(format!(
                    "{what}: no reassignment under way"
                )));
            }
            let mut back = meta.clone();
            back.narrow_to(original, fenced, &what)?;
            back.adding.clear();
            back.removing.clear();
            *meta = back;
            return Ok(Applied::Reassigned);
        };
        if target.is_empty() || target.len() > usize::from(REPLICATION_FACTOR_MAX) {
            return Err(Refusal::InvalidReplicaAssignment(format!(
                "{what}: {} replicas named, 1..={REPLICATION_FACTOR_MAX} allowed",
                target.len()
            )));
        }
        for (i, n) in target.iter().enumerate() {
            if target[..i].contains(n) {
                return Err(Refusal::InvalidReplicaAssignment(format!(
                    "{what}: node {n} named twice"
                )));
            }
            if !nodes.contains_key(n) {
                return Err(Refusal::InvalidReplicaAssignment(format!(
                    "{what}: node {n} is not a registered node"
                )));
            }
        }
        let removing: Vec<NodeId> = original
            .iter()
            .copied()
            .filter(|n| !target.contains(n))
            .collect();
        let adding: Vec<NodeId> = target
            .iter()
            .copied()
            .filter(|n| !original.contains(n))
            .collect();
        let mut next = meta.clone();
        // Dropping an earlier target's additions that this one does not keep.
        let replicas: Vec<NodeId> = target.iter().chain(&removing).copied().collect();
        next.narrow_to(replicas, fenced, &what)?;
        next.adding = adding;
        next.removing = removing;
        next.complete_reassignment(fenced);
        *meta = next;
        Ok(Applied::Reassigned)
    }

    /// Elections after `node` was fenced (or came back): a fenced node leaves every in-sync
    /// set it was in but the last member's place (a partition whose only in-sync replica is
    /// fenced keeps it, and goes offline), and the partitions it led get the first live
    /// member of their in-sync set as leader, at the next epoch. A node coming back leads
    /// the offline partitions whose in-sync set it holds. Deterministic: every node elects
    /// alike.
    fn elect(&mut self, node: NodeId, fenced: bool) {
        let fenced_nodes = self.fenced.clone();
        let live = |n: &NodeId| !fenced_nodes.contains(n);
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if fenced {
                    if p.isr.contains(&node) && p.isr.len() > 1 {
                        p.isr.retain(|&n| n != node);
                        p.isr_version = p.isr_version.saturating_add(1);
                    }
                    if p.leader == Some(node) {
                        p.leader = p.isr.iter().copied().find(|n| live(n));
                        p.leader_epoch = p.leader_epoch.saturating_add(1);
                    }
                } else if p.leader.is_none() && p.isr.contains(&node) {
                    p.leader = Some(node);
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                }
            }
        }
    }

    /// The snapshot data of this state.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.u8(SNAPSHOT_VERSION);
        w.u32(self.nodes.len() as u32);
        for info in self.nodes.values() {
            info.put(&mut w);
        }
        w.u32(self.topics.len() as u32);
        for (name, topic) in &self.topics {
            w.str(name);
            w.u64(topic.created_at);
            w.bytes(&topic.config.encode());
            w.u32(topic.partitions.len() as u32);
            for p in &topic.partitions {
                for list in [&p.replicas, &p.isr] {
                    w.u16(list.len() as u16);
                    for node in list {
                        w.u64(*node);
                    }
                }
                w.u64(p.leader.unwrap_or(0));
                w.u32(p.leader_epoch);
                w.u32(p.isr_version);
                put_nodes(&mut w, &p.adding);
                put_nodes(&mut w, &p.removing);
            }
        }
        w.i64(self.next_producer_id);
        w.u32(self.fenced.len() as u32);
        for node in &self.fenced {
            w.u64(*node);
        }
        w.out
    }

    /// Decodes snapshot data.
    ///
    /// # Errors
    /// Anything [`encode`](Self::encode) could not have written.
    pub fn decode(bytes: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(bytes, "metadata snapshot");
        // Version 1 (before reassignments) has no adding and removing lists.
        let version = r.u8()?;
        if version != 1 && version != SNAPSHOT_VERSION {
            return r.fail("unknown version");
        }
        let mut state = ClusterState::default();
        let n = r.count(8, NODES_MAX)?;
        for _ in 0..n {
            let info = NodeInfo::get(&mut r)?;
            state.nodes.insert(info.id, info);
        }
        let n = r.count(2 + 8 + 4 + CONFIG_BYTES + 4, TOPICS_MAX)?;
        for _ in 0..n {
            let name = r.str()?.to_owned();
            let created_at = r.u64()?;
            let Some(config) = TopicConfig::decode(r.bytes()?) else {
                return r.fail("bad topic configuration");
            };
            // Each partition: replicas and in-sync set (u16 count + ids), leader, epoch.
            let partitions = r.count(2 + 8 + 2 + 8 + 8 + 4 + 4, PARTITIONS_MAX as usize)?;
            if partitions != config.partitions as usize {
                return r.fail("partitions do not match the partition count");
            }
            let mut list = Vec::with_capacity(partitions);
            for _ in 0..partitions {
                let mut lists = Vec::with_capacity(2);
                for _ in 0..2 {
                    let n = usize::from(r.u16()?);
                    if n == 0 || n > usize::from(REPLICATION_FACTOR_MAX) || n * 8 > r.remaining() {
                        return r.fail("replica list out of bounds");
                    }
                    lists.push((0..n).map(|_| r.u64()).collect::<Decoded<Vec<_>>>()?);
                }
                let leader = Some(r.u64()?).filter(|&n| n != 0);
                let leader_epoch = r.u32()?;
                let isr_version = r.u32()?;
                let (adding, removing) = if version >= 2 {
                    (get_nodes(&mut r)?, get_nodes(&mut r)?)
                } else {
                    (Vec::new(), Vec::new())
                };
                let isr = lists.pop().unwrap_or_default();
                let replicas = lists.pop().unwrap_or_default();
                list.push(PartitionMeta {
                    replicas,
                    leader,
                    leader_epoch,
                    isr,
                    isr_version,
                    adding,
                    removing,
                });
            }
            state.topics.insert(
                name,
                TopicMeta {
                    config,
                    partitions: list,
                    created_at,
                },
            );
        }
        state.next_producer_id = r.i64()?;
        let n = r.count(8, NODES_MAX)?;
        for _ in 0..n {
            state.fenced.insert(r.u64()?);
        }
        r.finish()?;
        Ok(state)
    }
}

/// The snapshot format written (2: partitions carry their reassignment).
const SNAPSHOT_VERSION: u8 = 2;

/// A list of node ids: a u16 count, then the ids.
fn put_nodes(w: &mut Writer, nodes: &[NodeId]) {
    w.u16(nodes.len() as u16);
    for n in nodes {
        w.u64(*n);
    }
}

/// Reads [`put_nodes`]'s list, at most [`REPLICATION_FACTOR_MAX`] long.
fn get_nodes(r: &mut Reader<'_>) -> Decoded<Vec<NodeId>> {
    let n = usize::from(r.u16()?);
    if n > usize::from(REPLICATION_FACTOR_MAX) || n * 8 > r.remaining() {
        return r.fail("node list out of bounds");
    }
    (0..n).map(|_| r.u64()).collect()
}

/// Places `rf` replicas of each partition on distinct nodes: partition `p` starts at node
/// `(crc32c(name) + p) % n` of the id-ordered nodes and takes the next `rf - 1` after it, so
/// leaders (first replicas) go round-robin over the nodes and the followers of one node's
/// leaders spread over the others.
fn place(name: &str, partitions: u32, rf: usize, members: &[NodeId]) -> Vec<Vec<NodeId>> {
    let mut ids = members.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len().max(1);
    let start = crc32c::crc32c(name.as_bytes()) as usize;
    (0..partitions as usize)
        .map(|p| {
            (0..rf)
                .map(|i| ids[(start.wrapping_add(p).wrapping_add(i)) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            kafka_host: format!("127.0.0.{id}"),
            kafka_ports: vec![9093],
            native_host: format!("127.0.0.{id}"),
            native_ports: vec![9293],
            incarnation: 1,
        }
    }

    /// Three registered members and a one-partition topic `t` of replication factor `rf`.
    fn three_nodes_and_topic_t(rf: u16) -> ClusterState {
        let mut state = ClusterState {
            members: vec![1, 2, 3],
            ..ClusterState::default()
        };
        for id in 1..=3 {
            state.apply(0, Command::RegisterNode(node(id))).unwrap();
        }
        let create = Command::CreateTopic {
            name: "t".into(),
            config: TopicConfig::with_partitions(1),
            replication_factor: rf,
        };
        state.apply(1, create).unwrap();
        state
    }

    #[test]
    fn placement_spreads_leaders_and_never_repeats_a_node() {
        let mut state = ClusterState {
            members: vec![3, 1, 2],
            ..ClusterState::default()
        };
        let created = state.apply(
            1,
            Command::CreateTopic {
                name: "t".into(),
                config: TopicConfig::with_partitions(6),
                replication_factor: 3,
            },
        );
        assert_eq!(created, Ok(Applied::TopicCreated("t".into())));
        let topic = &state.topics["t"];
        let mut leaders = BTreeMap::new();
        for replicas in topic.partitions.iter().map(|p| &p.replicas) {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let refused = state.apply(
            2,
            Command::CreateTopic {
                name: "u".into(),
                config: TopicConfig::with_partitions(1),
                replication_factor: 4,
            },
        );
        assert!(matches!(refused, Err(Refusal::InvalidReplicationFactor(_))));
        assert!(matches!(
            state.apply(
                3,
                Command::CreateTopic {
                    name: "t".into(),
                    config: TopicConfig::with_partitions(1),
                    replication_factor: 1,
                }
            ),
            Err(Refusal::TopicExists(_))
        ));
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut state = ClusterState::default();
        let a = state.apply(1, Command::AllocateProducerIds).unwrap();
        let b = state.apply(2, Command::AllocateProducerIds).unwrap();
        assert_eq!(a, Applied::ProducerIds(0));
        assert_eq!(b, Applied::ProducerIds(PRODUCER_ID_BLOCK));
    }

    /// A preferred-leader election moves leadership back to the first replica once it is a
    /// live in-sync replica again (at the next epoch), and is refused while it is fenced and
    /// when it leads already; a fenced node cannot rejoin the in-sync set.
    #[test]
    fn preferred_election_returns_leadership_to_the_first_replica() {
        let mut state = three_nodes_and_topic_t(3);
        let elect = || Command::ElectPreferred {
            topic: "t".into(),
            partition: 0,
        };
        let preferred = state.topics["t"].partitions[0].replicas[0];
        assert_eq!(state.topics["t"].partitions[0].leader, Some(preferred));
        assert!(matches!(
            state.apply(2, elect()),
            Err(Refusal::ElectionNotNeeded(_))
        ));
        let fence = |fenced| Command::Fence {
            node: preferred,
            fenced,
        };
        state.apply(3, fence(true)).unwrap();
        let after_fence = state.topics["t"].partitions[0].clone();
        assert_ne!(after_fence.leader, Some(preferred));
        assert!(matches!(
            state.apply(4, elect()),
            Err(Refusal::PreferredLeaderNotAvailable(_))
        ));
        // A fenced node cannot be added to the in-sync set either (KIP-841).
        let mut with_fenced = after_fence.isr.clone();
        with_fenced.push(preferred);
        let add_fenced = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: after_fence.leader_epoch,
            isr_version: after_fence.isr_version,
            isr: with_fenced,
        };
        assert!(matches!(
            state.apply(4, add_fenced),
            Err(Refusal::InvalidConfig(_))
        ));
        // Back, but out of the in-sync set until its leader adds it.
        state.apply(5, fence(false)).unwrap();
        assert!(matches!(
            state.apply(6, elect()),
            Err(Refusal::PreferredLeaderNotAvailable(_))
        ));
        let p = state.topics["t"].partitions[0].clone();
        let mut isr = p.isr.clone();
        isr.push(preferred);
        let alter = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: p.leader_epoch,
            isr_version: p.isr_version,
            isr,
        };
        state.apply(7, alter).unwrap();
        assert_eq!(state.apply(8, elect()), Ok(Applied::LeaderElected));
        let p = &state.topics["t"].partitions[0];
        assert_eq!(p.leader, Some(preferred));
        assert_eq!(p.leader_epoch, after_fence.leader_epoch + 1);
    }

    /// A reassignment adds the new replicas first, completes once they are all in the
    /// in-sync set (the leader gives way if it is removed), can be replaced or cancelled
    /// while under way, and refuses placements that name no node, a node twice, or an
    /// unregistered one.
    #[test]
    fn reassignments_add_first_and_complete_once_the_new_replicas_are_in_sync() {
        let mut state = three_nodes_and_topic_t(2);
        let p = state.topics["t"].partitions[0].clone();
        let (a, b) = (p.replicas[0], p.replicas[1]);
        let c = (1..=3).find(|n| !p.replicas.contains(n)).unwrap();
        let reassign = |target: Option<Vec<NodeId>>| Command::Reassign {
            topic: "t".into(),
            partition: 0,
            target,
        };
        let part = |s: &ClusterState| s.topics["t"].partitions[0].clone();
        assert!(matches!(
            state.apply(2, reassign(None)),
            Err(Refusal::NoReassignmentInProgress(_))
        ));
        for bad in [vec![], vec![b, b], vec![b, 9]] {
            assert!(
                matches!(
                    state.apply(2, reassign(Some(bad.clone()))),
                    Err(Refusal::InvalidReplicaAssignment(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(part(&state), p, "refusals change nothing");

        // Move a's copy to c: c is added (not in sync yet), a stays until c catches up.
        assert_eq!(
            state.apply(3, reassign(Some(vec![b, c]))),
            Ok(Applied::Reassigned)
        );
        let moving = part(&state);
        assert_eq!(moving.replicas, vec![b, c, a]);
        assert_eq!(
            (moving.adding.clone(), moving.removing.clone()),
            (vec![c], vec![a])
        );
        assert_eq!(moving.isr, p.isr);
        assert_eq!(
            (moving.leader, moving.leader_epoch),
            (Some(a), p.leader_epoch)
        );
        assert!(moving.reassigning());

        // Cancelled: back to a and b (in the order the move left them, as Kafka does).
        let mut cancelled = state.clone();
        cancelled.apply(4, reassign(None)).unwrap();
        assert_eq!(part(&cancelled).replicas, vec![b, a]);
        assert_eq!(part(&cancelled).isr, p.isr);
        assert!(!part(&cancelled).reassigning());

        // The leader adds c once it caught up: the move completes, a leaves and b leads.
        let join = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: moving.leader_epoch,
            isr_version: moving.isr_version,
            isr: vec![a, b, c],
        };
        assert_eq!(state.apply(5, join), Ok(Applied::Reassigned));
        let done = part(&state);
        assert_eq!(done.replicas, vec![b, c]);
        let mut isr = vec![b, c];
        isr.sort_unstable();
        assert_eq!(done.isr, isr);
        assert_eq!(done.leader, Some(b));
        assert_eq!(done.leader_epoch, moving.leader_epoch + 1);
        assert!(!done.reassigning());

        // A pure removal (every target replica in sync already) completes at once.
        assert_eq!(
            state.apply(6, reassign(Some(vec![c]))),
            Ok(Applied::Reassigned)
        );
        let shrunk = part(&state);
        assert_eq!(
            (shrunk.replicas.clone(), shrunk.isr.clone()),
            (vec![c], vec![c])
        );
        assert_eq!(shrunk.leader, Some(c));
        assert!(!shrunk.reassigning());
        let back = ClusterState::decode(&state.encode()).expect("decodes");
        assert_eq!(back.topics, state.topics);
    }

    /// Elections keep the partition invariants whatever nodes are fenced and come back, and
    /// whatever in-sync changes leaders propose (stale ones included).
    #[test]
    fn elections_keep_leaders_in_sync_and_epochs_growing() {
        let mut runner = proptest::test_runner::TestRunner::default();
        let step = prop_oneof![
            (1u64..4, any::<bool>()).prop_map(|(node, fenced)| Command::Fence { node, fenced }),
            (
                0u32..4,
                0u32..6,
                0u32..4,
                proptest::collection::vec(1u64..4, 0..4)
            )
                .prop_map(|(partition, leader_epoch, isr_version, isr)| {
                    Command::AlterIsr {
                        topic: "t".into(),
                        partition,
                        leader_epoch,
                        isr_version,
                        isr,
                    }
                }),
            (1u64..4, 1u64..3).prop_map(|(id, incarnation)| Command::RegisterNode(NodeInfo {
                incarnation,
                ..node(id)
            })),
            (0u32..5).prop_map(|partition| Command::ElectPreferred {
                topic: "t".into(),
                partition,
            }),
            (
                0u32..4,
                proptest::option::weighted(0.8, proptest::collection::vec(1u64..5, 0..4))
            )
                .prop_map(|(partition, target)| Command::Reassign {
                    topic: "t".into(),
                    partition,
                    target,
                }),
        ];
        runner
            .run(&proptest::collection::vec(step, 1..60), |steps| {
                let mut state = ClusterState {
                    members: vec![1, 2, 3],
                    ..ClusterState::default()
                };
                for id in 1..=3 {
                    state.apply(0, Command::RegisterNode(node(id))).unwrap();
                }
                state
                    .apply(
                        1,
                        Command::CreateTopic {
                            name: "t".into(),
                            config: TopicConfig::with_partitions(4),
                            replication_factor: 3,
                        },
                    )
                    .unwrap();
                let mut epochs: Vec<(u32, Option<NodeId>)> = state.topics["t"]
                    .partitions
                    .iter()
                    .map(|p| (p.leader_epoch, p.leader))
                    .collect();
                for (i, c) in steps.into_iter().enumerate() {
                    let _ = state.apply(2 + i as u64, c);
                    for (p, meta) in state.topics["t"].partitions.iter().enumerate() {
                        prop_assert!(!meta.isr.is_empty());
                        prop_assert!(meta.isr.iter().all(|n| meta.replicas.contains(n)));
                        prop_assert!(meta.adding.iter().all(|n| meta.replicas.contains(n)));
                        prop_assert!(meta.removing.iter().all(|n| meta.replicas.contains(n)));
                        prop_assert!(meta.adding.iter().all(|n| !meta.removing.contains(n)));
                        prop_assert!(!meta.target().is_empty());
                        if meta.reassigning() {
                            // Completed the moment every target replica is in sync.
                            prop_assert!(!meta.target().iter().all(|n| meta.isr.contains(n)));
                        }
                        if let Some(l) = meta.leader {
                            prop_assert!(meta.isr.contains(&l), "leader {l} not in {:?}", meta.isr);
                            prop_assert!(!state.fenced.contains(&l), "a fenced leader");
                        }
                        let (epoch, leader) = epochs[p];
                        prop_assert!(meta.leader_epoch >= epoch);
                        if meta.leader != leader {
                            prop_assert!(meta.leader_epoch > epoch, "a new leader, same epoch");
                        }
                        epochs[p] = (meta.leader_epoch, meta.leader);
                    }
                    let back = ClusterState::decode(&state.encode()).expect("decodes");
                    prop_assert_eq!(&back.topics, &state.topics);
                }
                Ok(())
            })
            .unwrap();
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (1u64..5).prop_map(|id| Command::RegisterNode(node(id))),
            ("[a-c]{1,2}", 1u32..5, 1u16..4).prop_map(|(name, p, rf)| Command::CreateTopic {
                name,
                config: TopicConfig::with_partitions(p),
                replication_factor: rf,
            }),
            "[a-c]{1,2}".prop_map(|name| Command::DeleteTopic { name }),
            Just(Command::AllocateProducerIds),
            (1u64..5, any::<bool>()).prop_map(|(node, fenced)| Command::Fence { node, fenced }),
            (
                "[a-c]{1,2}",
                0u32..3,
                0u32..3,
                proptest::collection::vec(1u64..4, 0..3)
            )
                .prop_map(|(topic, partition, leader_epoch, isr)| Command::AlterIsr {
                    topic,
                    partition,
                    leader_epoch,
                    isr_version: leader_epoch,
                    isr,
                }),
            ("[a-c]{1,2}", 0u32..3)
                .prop_map(|(topic, partition)| Command::ElectPreferred { topic, partition }),
            (
                "[a-c]{1,2}",
                0u32..3,
                proptest::option::of(proptest::collection::vec(1u64..5, 0..4))
            )
                .prop_map(|(topic, partition, target)| Command::Reassign {
                    topic,
                    partition,
                    target
                }),
        ]
    }

    proptest! {
        /// Commands and snapshots round-trip; any truncation is refused; junk never panics;
        /// a state rebuilt from a snapshot equals the one that wrote it.
        #[test]
        fn commands_and_snapshots_round_trip(commands in proptest::collection::vec(command(), 0..30),
                                             junk in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut state = ClusterState { members: vec![1, 2, 3], ..ClusterState::default() };
            for (i, c) in commands.into_iter().enumerate() {
                let bytes = c.encode();
                prop_assert_eq!(Command::decode(&bytes), Ok(c.clone()));
                for cut in 0..bytes.len() {
                    prop_assert!(Command::decode(&bytes[..cut]).is_err());
                }
                let _ = state.apply(i as u64 + 1, c);
            }
            let snapshot = state.encode();
            let mut back = ClusterState::decode(&snapshot).expect("decodes");
            back.members = state.members.clone();
            prop_assert_eq!(back, state.clone());
            for cut in 0..snapshot.len() {
                prop_assert!(ClusterState::decode(&snapshot[..cut]).is_err());
            }
            let _ = ClusterState::decode(&junk);
            let _ = Command::decode(&junk);
        }
    }
}
