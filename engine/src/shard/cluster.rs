//! The shard runtime in a cluster: shard 0 runs the node's metadata Raft node
//! ([`crate::cluster::Controller`]) and applies what it commits to this node (opening the
//! partitions placed here, removing deleted topics' partitions), and every shard holds the
//! latest [`View`] of the cluster, pushed by shard 0 before the topic changes that depend on
//! it, to decide which partitions this node serves and to answer metadata.
//!
//! Topic changes, producer-id blocks and registrations are Raft commands proposed by shard 0
//! (other shards forward to it, as in a single node); a change is acknowledged once it is
//! committed *and* applied on this node, so the client that made it finds it here at once.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::mesh::ShardMessage;
use super::{Shard, ShardError};
use crate::cluster::{
    state::Applied, ClusterConfig, ClusterError, ClusterState, Command, NodeId, Refusal,
};
use crate::meta::TopicConfig;

pub use crate::cluster::PROPOSAL_DEADLINE;

/// What every shard knows of the cluster: the committed metadata and the metadata leader.
#[derive(Debug, Clone)]
pub struct View {
    /// This node.
    pub me: NodeId,
    /// The peer list.
    pub config: ClusterConfig,
    /// The committed metadata.
    pub state: ClusterState,
    /// The metadata leader, if known.
    pub leader: Option<NodeId>,
}

impl View {
    /// Every shard of every live registered node, as `(node, shard)`: what clients are told
    /// of (a fenced node is left out, so they do not try it).
    pub fn live_shards(&self) -> impl Iterator<Item = (&crate::cluster::NodeInfo, usize)> {
        self.state
            .nodes
            .values()
            .filter(|node| self.state.is_live(node.id))
            .flat_map(|node| (0..node.shards()).map(move |s| (node, s)))
    }

    /// The node leading a partition (`None`: unknown topic or partition).
    pub fn leader_of(&self, topic: &str, partition: u32) -> Option<NodeId> {
        self.state.topics.get(topic)?.leader(partition)
    }

    /// The live node leading a partition (`None` also while its node is fenced).
    pub fn live_leader_of(&self, topic: &str, partition: u32) -> Option<NodeId> {
        self.leader_of(topic, partition)
            .filter(|&n| self.state.is_live(n))
    }

    /// Whether this node holds a replica of a partition.
    pub fn replica_here(&self, topic: &str, partition: u32) -> bool {
        self.state
            .topics
            .get(topic)
            .is_some_and(|t| t.replicas(partition).contains(&self.me))
    }
}

/// Per topic, the partitions with a replica on the view's node.
fn placed_here(view: &View) -> BTreeMap<String, Vec<u32>> {
    view.state
        .topics
        .iter()
        .map(|(name, topic)| {
            let here = (0..topic.config.partitions)
                .filter(|&p| topic.replicas(p).contains(&view.me))
                .collect();
            (name.clone(), here)
        })
        .collect()
}

fn refusal_to_shard(e: ClusterError) -> ShardError {
    match e {
        ClusterError::Refused(r) => match r {
            Refusal::TopicExists(_) => ShardError::TopicExists(r.to_string()),
            Refusal::UnknownTopic(_) => ShardError::UnknownTopicOrPartition,
            Refusal::InvalidTopic(_) => ShardError::InvalidTopic(r.to_string()),
            Refusal::InvalidConfig(_) => ShardError::InvalidConfig(r.to_string()),
            Refusal::InvalidReplicationFactor(_) => {
                ShardError::InvalidReplicationFactor(r.to_string())
            }
            Refusal::Limit(_) => ShardError::PartitionLimit(r.to_string()),
            Refusal::StaleEpoch(_) => ShardError::NotController(r.to_string()),
            Refusal::ElectionNotNeeded(_) => ShardError::ElectionNotNeeded(r.to_string()),
            Refusal::PreferredLeaderNotAvailable(_) => {
                ShardError::PreferredLeaderNotAvailable(r.to_string())
            }
            Refusal::InvalidReplicaAssignment(_) => {
                ShardError::InvalidReplicaAssignment(r.to_string())
            }
            Refusal::NoReassignmentInProgress(_) => {
                ShardError::NoReassignmentInProgress(r.to_string())
            }
        },
        ClusterError::NoLeader | ClusterError::TimedOut => ShardError::NotController(e.to_string()),
        ClusterError::Storage(reason) => ShardError::Storage(reason),
    }
}

impl Shard {
    /// The cluster view (`None` on a single node without peers).
    pub fn view(&self) -> Option<Arc<View>> {
        self.view.borrow().clone()
    }

    /// Whether this node serves reads and writes of a partition: always on a single node;
    /// in a cluster, when it leads it.
    pub fn leads_here(&self, topic: &str, partition: u32) -> bool {
        match &*self.view.borrow() {
            None => true,
            Some(view) => {
                view.leader_of(topic, partition) == Some(view.me) && self.current_incarnation(view)
            }
        }
    }

    /// Whether the metadata knows this node's current incarnation (this process). Until its
    /// registration is applied, a restarted node leads nothing: the registration bumps the
    /// epochs of what it leads, so that followers holding records it lost in the crash see
    /// the divergence.
    fn current_incarnation(&self, view: &View) -> bool {
        match &self.config.registration {
            None => true,
            Some(mine) => view
                .state
                .nodes
                .get(&view.me)
                .is_some_and(|n| n.incarnation == mine.incarnation),
        }
    }

    /// Whether this node coordinates a group: always on a single node; in a cluster, when
    /// it leads the partition of the internal offsets topic that is the group's slot.
    pub fn coordinates_on_this_node(&self, group: &str) -> bool {
        self.leads_here(crate::groups::OFFSETS_TOPIC, crate::groups::slot_of(group))
    }

    /// The Kafka broker coordinating a group in a cluster: `(broker id, host, port)`, or
    /// `None` while its node has not registered (or on a single node).
    pub fn cluster_coordinator(&self, group: &str) -> Option<(i32, String, i32)> {
        let view = self.view()?;
        let slot = crate::groups::slot_of(group);
        let node_id = view.leader_of(crate::groups::OFFSETS_TOPIC, slot)?;
        if !view.state.is_live(node_id) {
            return None;
        }
        let node = view.state.nodes.get(&node_id)?;
        let s = crate::meta::shard_for(crate::groups::OFFSETS_DIR, slot, node.shards());
        let port = *node.kafka_ports.get(s)?;
        Some((
            crate::cluster::kafka_broker_id(node.id, s),
            node.kafka_host.clone(),
            i32::from(port),
        ))
    }

    /// The native endpoint coordinating a group: `node * SHARDS_MAX + shard` of the shard
    /// leading the group's offsets slot in a cluster, the group's shard on a single node.
    ///
    /// # Errors
    /// [`ShardError::InvalidRequest`] for a bad group name; [`ShardError::ShuttingDown`]
    /// (retriable) while the slot has no live leader.
    pub fn coordinator_endpoint(&self, group: &str) -> Result<u64, ShardError> {
        super::data::check_group(group)?;
        let Some(view) = self.view() else {
            return Ok(self.group_owner(group) as u64);
        };
        let slot = crate::groups::slot_of(group);
        let node = view
            .live_leader_of(crate::groups::OFFSETS_TOPIC, slot)
            .and_then(|n| view.state.nodes.get(&n))
            .ok_or(ShardError::ShuttingDown(
                "the group's coordinator is being elected",
            ))?;
        let shard = crate::meta::shard_for(crate::groups::OFFSETS_DIR, slot, node.shards());
        Ok(node.id * crate::limits::SHARDS_MAX as u64 + shard as u64)
    }

    /// The leader epoch this node leads a partition at, in a cluster (`None`: single node,
    /// or not the leader).
    pub(super) fn leading_epoch(&self, topic: &str, partition: u32) -> Option<u32> {
        let view = self.view.borrow();
        let view = view.as_ref()?;
        let meta = view
            .state
            .topics
            .get(topic)?
            .partitions
            .get(partition as usize)?;
        (meta.leader == Some(view.me)).then_some(meta.leader_epoch)
    }

    /// Records, in each local partition this node now leads, the leader epoch the metadata
    /// gave it (durably, before the partition serves in it: until then `local` answers
    /// `NotOwner` and clients retry).
    pub(super) async fn adopt_leader_epochs(&self) {
        let due: Vec<(String, u32, u32, Rc<super::Log>)> = {
            let partitions = self.partitions.borrow();
            partitions
                .iter()
                .flat_map(|(topic, logs)| {
                    logs.iter().filter_map(move |(p, log)| {
                        let epoch = self.leading_epoch(topic, *p)?;
                        (log.latest_leader_epoch() < Some(epoch))
                            .then(|| (topic.clone(), *p, epoch, Rc::clone(log)))
                    })
                })
                .collect()
        };
        for (topic, partition, epoch, log) in due {
            if let Err(e) = log.assign_leader_epoch(epoch).await {
                tracing::error!(topic, partition, epoch, error = %e,
                    "recording a new leader epoch failed: the partition does not serve");
            }
        }
    }

    /// In a cluster, this shard's committed-offsets stores follow the leadership of the
    /// offsets topic's partitions it holds: a store is loaded (the slot's log replayed) once
    /// this node leads the slot and its log has recorded the epoch, and dropped when the
    /// leadership ends (a deposed coordinator answers NOT_COORDINATOR). Called after each
    /// view's epochs are adopted.
    pub(super) async fn reconcile_offset_stores(&self) {
        use crate::groups::{OffsetStore, OFFSETS_TOPIC};
        if self.view().is_none() {
            return;
        }
        // The epoch this node (its current incarnation) leads a slot at.
        let leading_at = |slot: u32| {
            self.leading_epoch(OFFSETS_TOPIC, slot)
                .filter(|_| self.leads_here(OFFSETS_TOPIC, slot))
        };
        let mut lost = Vec::new();
        // A store over a log that a follower-era rewrite replaced since (closed, then
        // reopened in its place) would refuse every commit: reloaded below.
        let replaced: Vec<u32> = {
            let partitions = self.partitions.borrow();
            let current = partitions.get(OFFSETS_TOPIC);
            self.offsets
                .borrow()
                .iter()
                .filter(|(slot, (_, store))| {
                    !current
                        .and_then(|logs| logs.get(slot))
                        .is_some_and(|log| store.is_over(log))
                })
                .map(|(slot, _)| *slot)
                .collect()
        };
        self.offsets.borrow_mut().retain(|slot, (epoch, _)| {
            let keep = leading_at(*slot) == Some(*epoch);
            if keep && replaced.contains(slot) {
                // Still coordinating: the groups stay, the store is loaded again below.
                tracing::info!(
                    shard = self.id,
                    slot,
                    epoch = *epoch,
                    "an offsets slot's log was reopened: its store is loaded again"
                );
                return false;
            }
            if !keep {
                tracing::info!(
                    shard = self.id,
                    slot,
                    epoch = *epoch,
                    "no longer coordinating the groups of an offsets slot"
                );
                lost.push(*slot);
            }
            keep
        });
        if !lost.is_empty() {
            // Their members find the new coordinator; nothing stale stays for a later return.
            self.groups
                .forget(|group| lost.contains(&crate::groups::slot_of(group)));
        }
        let logs: Vec<(u32, Rc<super::Log>)> = self
            .partitions
            .borrow()
            .get(OFFSETS_TOPIC)
            .map(|logs| logs.iter().map(|(p, l)| (*p, Rc::clone(l))).collect())
            .unwrap_or_default();
        for (slot, log) in logs {
            let Some(epoch) = leading_at(slot) else {
                continue;
            };
            let loaded = || self.offsets.borrow().get(&slot).map(|(e, _)| *e);
            if log.latest_leader_epoch() != Some(epoch) || loaded() == Some(epoch) {
                continue;
            }
            match OffsetStore::over(Rc::clone(&log), crate::io::SystemClock).await {
                // Still leading at that epoch, and no other reconciliation loaded it meanwhile
                // (a second store would miss the commits made through the first).
                Ok(store) if leading_at(slot) == Some(epoch) && loaded() != Some(epoch) => {
                    tracing::info!(
                        shard = self.id,
                        slot,
                        epoch,
                        log_end = log.log_end(),
                        "coordinating the groups of an offsets slot (its log replayed)"
                    );
                    self.offsets
                        .borrow_mut()
                        .insert(slot, (epoch, Rc::new(store)));
                }
                Ok(_) => {}
                Err(e) => tracing::error!(shard = self.id, slot, epoch, error = %e,
                    "replaying an offsets slot failed: its groups get NOT_COORDINATOR"),
            }
        }
    }

    /// Whether this node keeps a replica of a partition on disk.
    pub(super) fn replica_here(&self, topic: &str, partition: u32) -> bool {
        match &*self.view.borrow() {
            None => true,
            Some(view) => view.replica_here(topic, partition),
        }
    }

    /// Shard 0 in a cluster: proposes a creation and waits until it is applied here.
    pub(super) async fn cluster_create(
        &self,
        name: &str,
        config: TopicConfig,
        replication_factor: u16,
    ) -> Result<(), ShardError> {
        // A client's topic: the metadata itself lets the internal offsets topic through.
        crate::meta::validate_topic_name(name).map_err(|e| ShardError::from(&e))?;
        config
            .validate(&self.config.log_defaults)
            .map_err(|e| ShardError::from(&e))?;
        self.propose(Command::CreateTopic {
            name: name.to_owned(),
            config,
            replication_factor,
        })
        .await
    }

    /// Shard 0 in a cluster: proposes a deletion and waits until it is applied here.
    pub(super) async fn cluster_delete(&self, name: &str) -> Result<(), ShardError> {
        self.propose(Command::DeleteTopic {
            name: name.to_owned(),
        })
        .await
    }

    /// Proposes a metadata command from any shard (forwarded to shard 0) and waits until it
    /// is applied on this node.
    ///
    /// # Errors
    /// The command's refusal, or [`ShardError::NotController`] when it was not committed.
    pub(crate) async fn propose(&self, command: Command) -> Result<(), ShardError> {
        if self.id != 0 {
            return match self
                .forward(0, super::mesh::Forwarded::Propose(command))
                .await?
            {
                super::mesh::Reply::Admin(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a proposal")),
            };
        }
        let Some(controller) = &self.controller else {
            return Err(ShardError::Internal("no controller on shard 0"));
        };
        let (_, version) = controller
            .propose(&command, PROPOSAL_DEADLINE)
            .await
            .map_err(refusal_to_shard)?;
        self.wait_applied(version).await;
        Ok(())
    }

    /// Kafka's preferred-leader election for one partition: its first replica leads again
    /// (at a new epoch) if it is a live in-sync replica. On a single node every partition's
    /// only replica leads it already.
    ///
    /// # Errors
    /// [`ShardError::ElectionNotNeeded`], [`ShardError::PreferredLeaderNotAvailable`],
    /// [`ShardError::UnknownTopicOrPartition`], or the proposal's failure.
    pub async fn elect_preferred(&self, topic: &str, partition: u32) -> Result<(), ShardError> {
        if self.view().is_none() {
            let partitions = self.topics().get(topic).map(|c| c.partitions);
            return match partitions {
                Some(n) if partition < n => Err(ShardError::ElectionNotNeeded(format!(
                    "{topic}-{partition} has one replica, its leader"
                ))),
                _ => Err(ShardError::UnknownTopicOrPartition),
            };
        }
        let command = Command::ElectPreferred {
            topic: topic.to_owned(),
            partition,
        };
        self.propose(command).await
    }

    /// Kafka's partition reassignment: moves a partition's replicas to `target` (nodes, in
    /// preference order), or cancels the move under way (`None`). Returns once the change
    /// is committed and applied here; the move itself completes when every new replica has
    /// caught up and joined the in-sync set.
    ///
    /// # Errors
    /// [`ShardError::InvalidReplicaAssignment`] (also on a single node, which keeps one
    /// copy), [`ShardError::NoReassignmentInProgress`],
    /// [`ShardError::UnknownTopicOrPartition`], or the proposal's failure.
    pub async fn reassign(
        &self,
        topic: &str,
        partition: u32,
        target: Option<Vec<NodeId>>,
    ) -> Result<(), ShardError> {
        if self.view().is_none() {
            let partitions = self.topics().get(topic).map(|c| c.partitions);
            return match (partitions, target) {
                (Some(n), _) if partition >= n => Err(ShardError::UnknownTopicOrPartition),
                (None, _) => Err(ShardError::UnknownTopicOrPartition),
                (Some(_), None) => Err(ShardError::NoReassignmentInProgress(format!(
                    "{topic}-{partition}: no reassignment under way"
                ))),
                (Some(_), Some(_)) => Err(ShardError::InvalidReplicaAssignment(
                    "a single node keeps one copy of each partition: start a cluster \
                     (--node-id, --peers) to move replicas"
                        .into(),
                )),
            };
        }
        self.propose(Command::Reassign {
            topic: topic.to_owned(),
            partition,
            target,
        })
        .await
    }

    /// Shard 0 in a cluster: a producer id from this node's block, reserving a new block
    /// through the metadata when it is spent.
    pub(super) async fn cluster_producer_id(&self) -> Result<i64, ShardError> {
        let Some(controller) = &self.controller else {
            return Err(ShardError::Internal("no controller on shard 0"));
        };
        loop {
            let (next, end) = self.producer_block.get();
            if next < end {
                self.producer_block.set((next + 1, end));
                return Ok(next);
            }
            match controller
                .propose(&Command::AllocateProducerIds, PROPOSAL_DEADLINE)
                .await
                .map_err(refusal_to_shard)?
            {
                (Applied::ProducerIds(start), _) => {
                    // Ids are i64 and never reused: a block left over is simply skipped.
                    self.producer_block
                        .set((start, start + crate::cluster::state::PRODUCER_ID_BLOCK));
                }
                _ => return Err(ShardError::Internal("unexpected producer id outcome")),
            }
        }
    }

    async fn wait_applied(&self, version: u64) {
        let deadline = std::time::Instant::now() + PROPOSAL_DEADLINE;
        while self.applied_version.get() < version && std::time::Instant::now() < deadline {
            let changed = self.applied.listen();
            if self.applied_version.get() >= version {
                break;
            }
            let _ = crate::cluster::transport_within(Duration::from_millis(100), changed).await;
        }
    }

    /// Pushes a view to every shard (this one included). Sent on the same channels as the
    /// topic pushes that follow it, so each shard has it before it opens anything.
    pub(super) async fn push_view(&self, view: Arc<View>) {
        *self.view.borrow_mut() = Some(Arc::clone(&view));
        // Roles first: a partition serves as leader only with both its leader state and its
        // epoch recorded (`local`), so neither order can let it serve without the other.
        self.reconcile_roles();
        self.adopt_leader_epochs().await;
        self.reconcile_offset_stores().await;
        for peer in 0..self.shards() {
            if peer != self.id {
                let _ = self
                    .send_to(peer, ShardMessage::ClusterView(Arc::clone(&view)))
                    .await;
            }
        }
    }

    /// The view of the controller's current state.
    pub(super) fn current_view(&self) -> Option<Arc<View>> {
        let controller = self.controller.as_ref()?;
        let cluster = self.config.cluster.clone()?;
        Some(Arc::new(View {
            me: controller.node_id(),
            config: cluster,
            state: (*controller.state()).clone(),
            leader: controller.leader(),
        }))
    }

    /// Shard 0 in a cluster: applies every committed change to this node, in order: push
    /// the view, remove the topics that went (or were re-created), open the new ones.
    pub(super) fn spawn_cluster_applier(self: &std::rc::Rc<Self>, applied: BTreeMap<String, u64>) {
        let shard = std::rc::Rc::clone(self);
        glommio::spawn_local(async move {
            let Some(controller) = shard.controller.clone() else {
                return;
            };
            let mut known = applied;
            // Per topic, the partitions placed on this node: a reassignment that adds or
            // removes one here has every shard open or drop it.
            let mut placed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            // Per topic, the configuration this node's shards last applied.
            let mut configs: BTreeMap<String, TopicConfig> = BTreeMap::new();
            if let Some(view) = shard.view() {
                placed = placed_here(&view);
                for (name, topic) in &view.state.topics {
                    configs.insert(name.clone(), topic.config);
                }
            }
            loop {
                let changed = controller.changed();
                let stopping = shard.stopping.listen();
                let version = controller.version();
                if version > shard.applied_version.get() {
                    let Some(view) = shard.current_view() else {
                        return;
                    };
                    shard.push_view(Arc::clone(&view)).await;
                    let gone: Vec<String> = known
                        .iter()
                        .filter(|(name, created)| {
                            view.state.topics.get(*name).map(|t| t.created_at) != Some(**created)
                        })
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in gone {
                        known.remove(&name);
                        configs.remove(&name);
                        shard.remove_everywhere(&name).await;
                    }
                    let now_placed = placed_here(&view);
                    for (name, topic) in &view.state.topics {
                        if known.get(name) == Some(&topic.created_at) {
                            if placed.get(name) != now_placed.get(name) {
                                tracing::info!(topic = name, here = ?now_placed.get(name),
                                    "partitions placed on this node changed: opening and dropping replicas");
                                if let Err(e) = shard.upsert_everywhere(name, topic.config).await {
                                    tracing::error!(topic = name, error = %e,
                                        "a replica moved here failed to open");
                                }
                            } else if configs.get(name) != Some(&topic.config) {
                                if let Err(e) = shard.upsert_everywhere(name, topic.config).await {
                                    tracing::error!(topic = name, error = %e,
                                        "a topic's new configuration failed to apply");
                                }
                            }
                            configs.insert(name.clone(), topic.config);
                            continue;
                        }
                        configs.insert(name.clone(), topic.config);
                        known.insert(name.clone(), topic.created_at);
                        if let Err(e) = shard.upsert_everywhere(name, topic.config).await {
                            tracing::error!(topic = name, error = %e,
                                "a created topic's partitions failed to open on this node");
                        }
                    }
                    placed = now_placed;
                    shard.applied_version.set(version);
                    shard.applied.notify();
                    continue;
                }
                let go_on = futures_lite::future::or(
                    async {
                        changed.await;
                        true
                    },
                    async {
                        stopping.await;
                        false
                    },
                )
                .await;
                if !go_on {
                    return;
                }
            }
        })
        .detach();
    }

    /// Removes a deleted topic's partitions on every shard of this node, then its files.
    pub(super) async fn remove_everywhere(&self, name: &str) {
        let data_dir = &self.config.data_dir;
        let tombstone = match super::topics::entomb(data_dir, name).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(topic = name, error = %e,
                    "renaming a deleted topic's directory failed; its files stay");
                None
            }
        };
        self.close_everywhere(name, tombstone).await;
    }

    /// Opens a topic's partitions placed on this node, on every shard.
    pub(super) async fn upsert_everywhere(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<(), ShardError> {
        let mut failures = Vec::new();
        if let Err(e) = self.apply_upsert(name, config).await {
            failures.push(e);
        }
        let replies = self
            .broadcast(|id| ShardMessage::TopicUpsert {
                id,
                name: name.to_owned(),
                config,
            })
            .await;
        for reply in replies {
            match reply {
                super::mesh::Reply::Admin(Ok(())) => {}
                super::mesh::Reply::Admin(Err(e)) => failures.push(e.to_string()),
                _ => failures.push("a shard gave an unexpected reply".into()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ShardError::Storage(failures.join("; ")))
        }
    }
}
