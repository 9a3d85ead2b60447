//! Replicated partitions (replication factor above 1): the leader's high watermark and its
//! followers' progress, the follower's fetch loop, truncation on divergence. The protocol
//! is described in ARCHITECTURE.md ("Data replication"); in short:
//!
//! - a follower fetches from its leader's shard over the native protocol, from the end of
//!   what it has fdatasynced, naming the leader epoch it believes current and the latest
//!   epoch in its own cache;
//! - the leader refuses a stale or future epoch, answers a diverging epoch (the follower cuts
//!   its log back and fetches again) or the stored batches, its high watermark and the epochs
//!   the follower lacks;
//! - the leader's high watermark is the smallest synced end over the in-sync set, itself
//!   included, and never goes down; consumers read below it and `acks=all` waits for it;
//! - a follower whose synced end reaches the high watermark is added to the in-sync set by
//!   the leader's `AlterIsr` at its epoch (removal happens when a node is fenced).
//!
//! State is per partition, on the shard that owns the partition on this node, `!Send`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::{Log, Shard, ShardError};
use crate::cluster::{Command, NodeId};
use crate::log::memory::MemoryWait;
use crate::sync::Event;

/// How long an `acks=all` append waits for its followers before answering a timeout (the
/// batch stays, and may still commit).
pub const REPLICATION_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How a follower fetches from its leader (`--replica-fetch-max-bytes`,
/// `--replica-fetch-wait-max-ms`; Kafka's `replica.fetch.max.bytes` and
/// `replica.fetch.wait.max.ms`, with Kafka's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFetch {
    /// Bytes a follower asks for per fetch (at least one whole batch comes back); what it
    /// got is fdatasynced before it fetches again.
    pub max_bytes: u32,
    /// Longest a follower's fetch waits at the leader for new batches.
    pub max_wait_ms: u32,
}

impl Default for ReplicaFetch {
    fn default() -> Self {
        ReplicaFetch {
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        }
    }
}

/// Bounds of [`ReplicaFetch`]: the bytes stay well below a native frame's limit, and a
/// follower parked longer than this would not notice a dead leader in time.
pub const REPLICA_FETCH_BYTES_RANGE: std::ops::RangeInclusive<u32> = (64 << 10)..=(32 << 20);
/// See [`REPLICA_FETCH_BYTES_RANGE`].
pub const REPLICA_FETCH_WAIT_MS_RANGE: std::ops::RangeInclusive<u32> = 1..=5_000;
/// An in-sync follower that has not caught up with the leader's log end for this long is
/// removed from the in-sync set by its leader (Kafka's `replica.lag.time.max.ms`).
pub const REPLICA_LAG_MAX: Duration = Duration::from_secs(30);
/// Pause before a follower retries after an error: the first retry waits
/// [`REPLICA_RETRY_FIRST`], each further one twice as long, up to this. A follower whose
/// new leader has not taken up its role yet (the common error, right after a topic is
/// created or a leader elected) retries within milliseconds, not a fixed 200 ms.
const REPLICA_RETRY: Duration = Duration::from_millis(200);
/// See [`REPLICA_RETRY`].
const REPLICA_RETRY_FIRST: Duration = Duration::from_millis(5);

/// The leader side of one replicated partition, for one leader epoch.
#[derive(Debug)]
pub(crate) struct Leading {
    /// The epoch this leadership is for.
    pub epoch: u32,
    me: NodeId,
    /// The committed in-sync set, as last applied here, and its version.
    isr: RefCell<Vec<NodeId>>,
    isr_version: Cell<u32>,
    /// A follower whose addition to the in-sync set is being proposed: counted in the high
    /// watermark from the proposal on (Kafka's "maximal ISR"), so whatever set commits, the
    /// mark only ever covered what all of its members hold.
    joining: Cell<Option<NodeId>>,
    /// Each follower's reported synced end.
    followers: RefCell<HashMap<NodeId, u64>>,
    hw: Cell<u64>,
    /// Rung when the high watermark moves or the leadership ends.
    pub advanced: Event,
    /// Set when this leadership ended (another epoch, another leader).
    deposed: Cell<bool>,
    /// An in-sync set change is being proposed.
    proposing: Cell<bool>,
    /// When each follower last fetched from at least the leader's log end as it was at its
    /// previous fetch (Kafka's lastCaughtUpTime rule: under steady load a healthy follower
    /// is always a little behind the live end, never behind that).
    caught_up: RefCell<HashMap<NodeId, std::time::Instant>>,
    /// The leader's log end when it answered each follower's previous fetch.
    end_at_last_fetch: RefCell<HashMap<NodeId, u64>>,
}

impl Leading {
    fn new(epoch: u32, me: NodeId, isr: Vec<NodeId>, hw: u64) -> Self {
        Leading {
            epoch,
            me,
            isr: RefCell::new(isr),
            isr_version: Cell::new(0),
            joining: Cell::new(None),
            followers: RefCell::new(HashMap::new()),
            hw: Cell::new(hw),
            advanced: Event::default(),
            deposed: Cell::new(false),
            proposing: Cell::new(false),
            caught_up: RefCell::new(HashMap::new()),
            end_at_last_fetch: RefCell::new(HashMap::new()),
        }
    }

    /// In-sync followers that have not caught up with the log end for `lag`, given when this
    /// leadership started (a follower not heard from since counts from then).
    fn lagging(&self, started: std::time::Instant, lag: Duration) -> Vec<NodeId> {
        let now = std::time::Instant::now();
        let caught_up = self.caught_up.borrow();
        self.isr
            .borrow()
            .iter()
            .copied()
            .filter(|&n| n != self.me)
            .filter(|n| now.duration_since(caught_up.get(n).copied().unwrap_or(started)) > lag)
            .collect()
    }

    /// Offsets below this are on every in-sync replica, fdatasynced.
    pub fn high_watermark(&self) -> u64 {
        self.hw.get()
    }

    /// Whether this leadership ended.
    pub fn deposed(&self) -> bool {
        self.deposed.get()
    }

    /// In-sync replicas, the leader included.
    pub fn isr_len(&self) -> usize {
        self.isr.borrow().len()
    }

    /// Recomputes the high watermark from the leader's own synced end and the in-sync
    /// followers' reports; it only moves up.
    pub fn recompute(&self, own_synced: u64) {
        let followers = self.followers.borrow();
        let mut low = own_synced;
        let joining = self.joining.get();
        for node in self
            .isr
            .borrow()
            .iter()
            .chain(joining.as_ref())
            .filter(|&&n| n != self.me)
        {
            low = low.min(followers.get(node).copied().unwrap_or(0));
        }
        if low > self.hw.get() {
            self.hw.set(low);
            self.advanced.notify();
        }
    }
}

/// Whether a follower's fetch at `offset`, with `last_fetched_epoch` its latest epoch,
/// diverges from the leader's log, given the leader's `(epoch, end)` answer for that epoch
/// (OffsetForLeaderEpoch): the divergence to answer, or `None` when the follower's log is a
/// prefix of the leader's. An epoch the leader cannot place has no end there (undefined,
/// -1): on the wire that would read as "no divergence" and the follower would fetch the same
/// offset for ever, so the answer is the high watermark instead (where Kafka's followers cut
/// back then), which every in-sync replica holds.
fn divergence(
    (epoch, end): (i64, i64),
    last_fetched_epoch: i32,
    offset: u64,
    hw: u64,
) -> Option<(i32, i64)> {
    if epoch == i64::from(last_fetched_epoch) && end >= offset as i64 {
        return None;
    }
    let end = if end < 0 { hw as i64 } else { end };
    Some((i32::try_from(epoch).unwrap_or(-1), end))
}

/// The follower side of one replicated partition, for one leader and epoch.
#[derive(Debug)]
pub(crate) struct Following {
    pub epoch: u32,
    pub leader: NodeId,
    /// The leader's high watermark, as last heard.
    pub hw: Cell<u64>,
}

/// A replicated partition's role on this node.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    Leading(Rc<Leading>),
    Following(Rc<Following>),
}

/// What a replica fetch is answered besides the batches.
pub struct ReplicaRead {
    /// The batches (bounded by the log end, not the high watermark).
    pub fetched: super::Fetched,
    /// The leader's epoch, a divergence, the epochs the follower lacks.
    pub answer: tidelog_wire::native::ReplicaAnswer,
}

impl Shard {
    /// The role of a replicated partition here (`None`: one replica, or not here).
    pub(crate) fn role(&self, topic: &str, partition: u32) -> Option<Role> {
        // A single node (and a cluster of single-replica topics) has none: no lookup, no
        // allocation on the data path.
        if self.roles.borrow().is_empty() {
            return None;
        }
        self.roles
            .borrow()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Whether a partition has more than one replica (in a cluster).
    pub(crate) fn replicated(&self, topic: &str, partition: u32) -> bool {
        self.view().is_some_and(|v| {
            v.state
                .topics
                .get(topic)
                .is_some_and(|t| t.replicas(partition).len() > 1)
        })
    }

    /// The leader state of a replicated partition this node leads.
    pub(crate) fn leading(&self, topic: &str, partition: u32) -> Option<Rc<Leading>> {
        match self.role(topic, partition) {
            Some(Role::Leading(l)) => Some(l),
            _ => None,
        }
    }

    /// Offsets below this are readable by consumers: the log end for a single replica, the
    /// high watermark for a replicated partition this node leads.
    pub(crate) fn readable_end(&self, topic: &str, partition: u32, log: &Log) -> u64 {
        match self.leading(topic, partition) {
            Some(l) => l.high_watermark().min(log.log_end()).max(log.log_start()),
            None => log.log_end(),
        }
    }

    /// Brings every local partition's replication role in line with the view: a leader of a
    /// replicated partition gets (or keeps) its leader state for its epoch, a follower gets a
    /// fetch loop for its leader and epoch, anything else none. Called after each view and
    /// after partitions open.
    pub(crate) fn reconcile_roles(&self) {
        let Some(view) = self.view() else {
            return;
        };
        let Some(this) = self.this.borrow().upgrade() else {
            return;
        };
        let local: Vec<(String, u32, Rc<Log>)> = self
            .partitions
            .borrow()
            .iter()
            .flat_map(|(t, logs)| logs.iter().map(move |(p, l)| (t.clone(), *p, Rc::clone(l))))
            .collect();
        let mut roles = self.roles.borrow_mut();
        let mut keep = std::collections::HashSet::new();
        let mut to_follow = Vec::new();
        let mut to_watch = Vec::new();
        for (topic, partition, log) in local {
            let Some(meta) = view
                .state
                .topics
                .get(&topic)
                .and_then(|t| t.partitions.get(partition as usize))
            else {
                continue;
            };
            if meta.replicas.len() < 2 {
                continue;
            }
            let key = (topic.clone(), partition);
            keep.insert(key.clone());
            let previous = roles.get(&key).cloned();
            match meta.leader {
                Some(leader) if leader == view.me => {
                    if let Some(Role::Leading(l)) = &previous {
                        if l.epoch == meta.leader_epoch {
                            *l.isr.borrow_mut() = meta.isr.clone();
                            l.isr_version.set(meta.isr_version);
                            if l.joining.get().is_some_and(|n| meta.isr.contains(&n)) {
                                l.joining.set(None);
                            }
                            l.recompute(log.synced_offset());
                            continue;
                        }
                    }
                    // A new leadership starts from the high watermark learnt as a follower
                    // (never above what it holds itself).
                    let hw = match &previous {
                        Some(Role::Following(f)) => f.hw.get(),
                        _ => 0,
                    }
                    .min(log.synced_offset())
                    .max(log.log_start());
                    if let Some(Role::Leading(old)) = &previous {
                        old.deposed.set(true);
                        old.advanced.notify();
                    }
                    let leading = Rc::new(Leading::new(
                        meta.leader_epoch,
                        view.me,
                        meta.isr.clone(),
                        hw,
                    ));
                    leading.isr_version.set(meta.isr_version);
                    leading.recompute(log.synced_offset());
                    tracing::info!(topic, partition, epoch = meta.leader_epoch, isr = ?meta.isr,
                        high_watermark = leading.high_watermark(), "leading a replicated partition");
                    to_watch.push((topic.clone(), partition, Rc::clone(&leading)));
                    roles.insert(key, Role::Leading(leading));
                }
                Some(leader) if meta.replicas.contains(&view.me) => {
                    if let Some(Role::Following(f)) = &previous {
                        if f.epoch == meta.leader_epoch && f.leader == leader {
                            continue;
                        }
                    }
                    let hw = match &previous {
                        Some(Role::Following(f)) => f.hw.get(),
                        Some(Role::Leading(l)) => {
                            l.deposed.set(true);
                            l.advanced.notify();
                            l.high_watermark()
                        }
                        None => 0,
                    };
                    let following = Rc::new(Following {
                        epoch: meta.leader_epoch,
                        leader,
                        hw: Cell::new(hw),
                    });
                    tracing::info!(
                        topic,
                        partition,
                        epoch = meta.leader_epoch,
                        leader,
                        "following a replicated partition"
                    );
                    roles.insert(key, Role::Following(Rc::clone(&following)));
                    to_follow.push((topic, partition, following));
                }
                _ => {
                    // No leader (offline): nothing to serve or fetch until one is elected.
                    if let Some(Role::Leading(l)) = roles.remove(&key) {
                        l.deposed.set(true);
                        l.advanced.notify();
                    }
                    keep.remove(&key);
                }
            }
        }
        roles.retain(|key, role| {
            let kept = keep.contains(key);
            if !kept {
                if let Role::Leading(l) = role {
                    l.deposed.set(true);
                    l.advanced.notify();
                }
            }
            kept
        });
        drop(roles);
        // Spawned with the roles let go of: a task may run at once and look its role up.
        for (topic, partition, following) in to_follow {
            let shard = Rc::clone(&this);
            glommio::spawn_local(async move {
                shard.follow(topic, partition, following).await;
            })
            .detach();
        }
        for (topic, partition, leading) in to_watch {
            let shard = Rc::clone(&this);
            glommio::spawn_local(async move {
                shard.watch_lag(topic, partition, leading).await;
            })
            .detach();
        }
    }

    /// While `leading` lasts: removes from the in-sync set the followers that have not caught
    /// up with the log end for [`REPLICA_LAG_MAX`], so one stuck replica on a live node does
    /// not hold every `acks=all` write. The high watermark keeps counting a removed follower
    /// until the change is committed and applied here.
    async fn watch_lag(self: Rc<Self>, topic: String, partition: u32, leading: Rc<Leading>) {
        let started = std::time::Instant::now();
        while !leading.deposed() && !self.is_stopped() {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            let lagging = leading.lagging(started, REPLICA_LAG_MAX);
            if lagging.is_empty() || leading.proposing.get() || leading.deposed() {
                continue;
            }
            let isr: Vec<NodeId> = leading
                .isr
                .borrow()
                .iter()
                .copied()
                .filter(|n| !lagging.contains(n))
                .collect();
            // How far behind each one is (offsets below the leader's end): the replication
            // lag the operator sees in the log line.
            let end = self
                .replica_log(&topic, partition)
                .map_or(0, |l| l.log_end());
            let behind: Vec<(NodeId, u64)> = {
                let followers = leading.followers.borrow();
                lagging
                    .iter()
                    .map(|n| {
                        (
                            *n,
                            end.saturating_sub(followers.get(n).copied().unwrap_or(0)),
                        )
                    })
                    .collect()
            };
            leading.proposing.set(true);
            let command = Command::AlterIsr {
                topic: topic.clone(),
                partition,
                leader_epoch: leading.epoch,
                isr_version: leading.isr_version.get(),
                isr,
            };
            match self.propose(command).await {
                Ok(()) => tracing::warn!(
                    topic,
                    partition,
                    ?lagging,
                    ?behind,
                    lag_ms = REPLICA_LAG_MAX.as_millis() as u64,
                    "followers lagging: removed from the in-sync set"
                ),
                Err(e) => {
                    tracing::debug!(topic, partition, error = %e, "in-sync shrink not committed")
                }
            }
            leading.proposing.set(false);
        }
    }

    /// The leader's side of a follower's fetch.
    ///
    /// # Errors
    /// [`ShardError::NotOwner`] when this node does not lead the partition,
    /// [`ShardError::FencedLeaderEpoch`] / [`ShardError::UnknownLeaderEpoch`] for an epoch
    /// other than the leader's, and the read's errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn replica_read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        follower: NodeId,
        leader_epoch: i32,
        last_fetched_epoch: i32,
        wait: MemoryWait,
    ) -> Result<ReplicaRead, ShardError> {
        let log = self.local(topic, partition)?;
        let Some(leading) = self.leading(topic, partition) else {
            return Err(ShardError::NotOwner);
        };
        let is_replica = self.view().is_some_and(|v| {
            v.state
                .topics
                .get(topic)
                .is_some_and(|t| t.replicas(partition).contains(&follower) && follower != v.me)
        });
        if !is_replica {
            return Err(ShardError::InvalidRequest(
                "a replica fetch from a node that holds no replica of the partition",
            ));
        }
        let mine = i64::from(leading.epoch);
        match i64::from(leader_epoch) {
            e if e < mine => return Err(ShardError::FencedLeaderEpoch(format!("{e} < {mine}"))),
            e if e > mine => return Err(ShardError::UnknownLeaderEpoch(format!("{e} > {mine}"))),
            _ => {}
        }
        let mut answer = tidelog_wire::native::ReplicaAnswer {
            leader_epoch: i32::try_from(leading.epoch).unwrap_or(i32::MAX),
            ..Default::default()
        };
        if last_fetched_epoch >= 0 {
            let leader_end = log.epoch_end_offset(i64::from(last_fetched_epoch));
            let hw = leading.high_watermark();
            if let Some(diverging) = divergence(leader_end, last_fetched_epoch, offset, hw) {
                answer.diverging = Some(diverging);
                let fetched = super::Fetched {
                    high_watermark: leading.high_watermark(),
                    log_start: log.log_start(),
                    chunks: Vec::new(),
                    memory: crate::log::memory::ReadPermit::default(),
                };
                return Ok(ReplicaRead { fetched, answer });
            }
        }
        if offset <= log.log_end() {
            let previous_end = leading
                .end_at_last_fetch
                .borrow_mut()
                .insert(follower, log.log_end());
            if previous_end.is_some_and(|end| offset >= end) {
                leading
                    .caught_up
                    .borrow_mut()
                    .insert(follower, std::time::Instant::now());
            }
            leading.followers.borrow_mut().insert(follower, offset);
            leading.recompute(log.synced_offset());
            self.maybe_expand_isr(topic, partition, &leading, follower, offset);
        }
        answer.epochs = log
            .leader_epochs()
            .entries()
            .iter()
            .copied()
            .filter(|&(e, _)| i64::from(e) > i64::from(last_fetched_epoch))
            .collect();
        let mut fetched = self.read_log(&log, offset, max_bytes, wait).await?;
        fetched.high_watermark = leading.high_watermark();
        Ok(ReplicaRead { fetched, answer })
    }

    /// Proposes adding a follower to the in-sync set once its synced end reached the high
    /// watermark (one proposal at a time per partition).
    fn maybe_expand_isr(
        &self,
        topic: &str,
        partition: u32,
        leading: &Rc<Leading>,
        follower: NodeId,
        synced: u64,
    ) {
        // Kafka's rule: a follower joins once it holds everything below the high watermark
        // *and* everything the leader held when its epoch began (the mark of a new leader
        // can lag behind what earlier leaders acknowledged).
        let epoch_start = log_epoch_start(self, topic, partition, leading.epoch);
        let fenced = self
            .view()
            .is_some_and(|v| v.state.fenced.contains(&follower));
        if leading.isr.borrow().contains(&follower)
            || synced < leading.high_watermark().max(epoch_start)
            || leading.proposing.get()
            || fenced
        {
            return;
        }
        let mut isr = leading.isr.borrow().clone();
        isr.push(follower);
        let command = Command::AlterIsr {
            topic: topic.to_owned(),
            partition,
            leader_epoch: leading.epoch,
            isr_version: leading.isr_version.get(),
            isr,
        };
        leading.proposing.set(true);
        leading.joining.set(Some(follower));
        let leading = Rc::clone(leading);
        let shard = self.this.borrow().clone();
        let (topic, follower_id) = (topic.to_owned(), follower);
        glommio::spawn_local(async move {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            match shard.propose(command).await {
                Ok(()) => tracing::info!(
                    topic,
                    partition,
                    follower = follower_id,
                    epoch = leading.epoch,
                    "follower caught up: added to the in-sync set"
                ),
                Err(e) => {
                    tracing::debug!(topic, partition, error = %e,
                        "in-sync set change not committed; retried at the next fetch");
                    leading.joining.set(None);
                }
            }
            leading.proposing.set(false);
        })
        .detach();
    }

    /// Before an `acks=all` append to a replicated partition: enough in-sync replicas?
    ///
    /// # Errors
    /// [`ShardError::NotEnoughReplicas`] below `min.insync.replicas`.
    pub(crate) fn check_min_isr(&self, topic: &str, partition: u32) -> Result<(), ShardError> {
        if let Some(l) = self.leading(topic, partition) {
            let min = self.config.min_insync_replicas.max(1);
            if l.isr_len() < min {
                return Err(ShardError::NotEnoughReplicas(format!(
                    "{topic}-{partition}: {} in-sync replicas, min.insync.replicas is {min}",
                    l.isr_len()
                )));
            }
        }
        Ok(())
    }

    /// The follower's fetch loop for one partition, until its role changes.
    async fn follow(self: Rc<Self>, topic: String, partition: u32, me: Rc<Following>) {
        let current = |shard: &Shard| matches!(shard.role(&topic, partition), Some(Role::Following(f)) if Rc::ptr_eq(&f, &me));
        let mut backoff = Backoff::default();
        while current(&self) && !self.is_stopped() {
            let Some(addr) = self.replica_endpoint(&topic, partition, me.leader) else {
                glommio::timer::sleep(backoff.next()).await;
                continue;
            };
            let options = tidelog_client::ConnectOptions {
                connect_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(10),
            };
            let conn =
                match tidelog_client::Connection::connect_with(addr, "tidelog-replica", options)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(topic, partition, leader = me.leader, error = %e,
                            "cannot reach the leader; retrying");
                        glommio::timer::sleep(backoff.next()).await;
                        continue;
                    }
                };
            while current(&self) && !self.is_stopped() {
                match self.fetch_once(&conn, &topic, partition, &me).await {
                    Ok(()) => backoff.reset(),
                    Err(e) => {
                        tracing::debug!(topic, partition, leader = me.leader, error = %e,
                            "replica fetch failed; retrying");
                        glommio::timer::sleep(backoff.next()).await;
                        break;
                    }
                }
            }
            conn.close();
        }
    }

    /// One fetch from the leader and what follows: a cut on divergence, or appending the
    /// batches (epochs first), then an fdatasync.
    async fn fetch_once(
        &self,
        conn: &tidelog_client::Connection,
        topic: &str,
        partition: u32,
        me: &Following,
    ) -> Result<(), String> {
        use tidelog_wire::native::{BodyT, ErrorCode, FetchPartitionT, FetchRequestT};
        let log = self
            .replica_log(topic, partition)
            .ok_or_else(|| "the replica is not open".to_string())?;
        // The fetch offset tells the leader what this replica has fdatasynced: never more.
        if log.synced_offset() < log.log_end() {
            log.sync().await.map_err(|e| e.to_string())?;
        }
        let offset = log.synced_offset();
        let last = log
            .latest_leader_epoch()
            .map_or(-1, |e| i32::try_from(e).unwrap_or(-1));
        let mut want = FetchPartitionT::default();
        want.topic = Some(topic.to_owned());
        want.partition = i32::try_from(partition).unwrap_or(i32::MAX);
        want.offset = offset as i64;
        let fetch = self.config.replica_fetch;
        let max_bytes = i32::try_from(fetch.max_bytes).unwrap_or(i32::MAX);
        want.max_bytes = max_bytes;
        want.leader_epoch = i32::try_from(me.epoch).unwrap_or(i32::MAX);
        want.last_fetched_epoch = last;
        let mut request = FetchRequestT::default();
        request.max_wait_ms = i32::try_from(fetch.max_wait_ms).unwrap_or(i32::MAX);
        request.min_bytes = 1;
        request.max_bytes = max_bytes;
        request.replica_node = self.view().map_or(0, |v| v.me);
        request.partitions = Some(vec![want]);
        let response = conn
            .call(BodyT::FetchRequest(Box::new(request)))
            .await
            .map_err(|e| e.to_string())?;
        // The view may have moved on while the fetch was in flight: a stale answer is dropped.
        if !matches!(self.role(topic, partition), Some(Role::Following(f)) if f.epoch == me.epoch && f.leader == me.leader)
        {
            return Ok(());
        }
        let frame = response.frame().map_err(|e| e.to_string())?;
        let Some(body) = frame.message.body_as_fetch_response() else {
            return Err("the leader did not answer a fetch".into());
        };
        let Some(part) = body.partitions().and_then(|p| p.iter().next()) else {
            return Err("an empty fetch response".into());
        };
        if part.error() == ErrorCode::OffsetOutOfRange
            && u64::try_from(part.log_start()).is_ok_and(|start| start > offset)
        {
            // Behind the leader's retention: start over at its log start.
            let start = u64::try_from(part.log_start()).unwrap_or(0);
            drop(log);
            return self.reset_replica(topic, partition, start, me).await;
        }
        if part.error() != ErrorCode::None {
            return Err(format!("leader answered {}", part.error()));
        }
        if part.diverging_epoch() >= 0 || part.diverging_end_offset() >= 0 {
            // No end for that epoch at the leader (undefined): cut to the high watermark, as
            // Kafka's followers do, never to the log start: a replica in the in-sync set
            // must keep what was acknowledged.
            let leader_end = u64::try_from(part.diverging_end_offset())
                .unwrap_or_else(|_| me.hw.get().min(log.log_end()));
            let (_, own_end) = log.epoch_end_offset(i64::from(part.diverging_epoch()));
            let mut target = leader_end;
            if own_end >= 0 {
                target = target.min(own_end as u64);
            }
            drop(log);
            return self.truncate_replica(topic, partition, target, me).await;
        }
        let epochs: Vec<(u32, u64)> = part
            .epochs()
            .map(|v| v.iter().map(|e| (e.epoch(), e.start())).collect())
            .unwrap_or_default();
        let adopt = |log: Rc<Log>, at: u64| {
            let due: Vec<u32> = epochs
                .iter()
                .filter(|&&(e, s)| s <= at && log.latest_leader_epoch() < Some(e))
                .map(|&(e, _)| e)
                .collect();
            async move {
                for e in due {
                    log.assign_leader_epoch(e)
                        .await
                        .map_err(|err| err.to_string())?;
                }
                Ok::<(), String>(())
            }
        };
        if let Some(range) = part.batches() {
            let from = range.offset() as usize;
            let to = from + range.len() as usize;
            let mut bytes = frame
                .body
                .get(from..to)
                .ok_or_else(|| "batches outside the frame".to_string())?;
            while !bytes.is_empty() {
                let header = tidelog_wire::batch::peek_header(bytes).map_err(|e| e.to_string())?;
                let len = header.batch_len() as usize;
                if len > bytes.len() {
                    return Err("a truncated batch from the leader".into());
                }
                let base = u64::try_from(header.base_offset()).unwrap_or(0);
                adopt(Rc::clone(&log), base).await?;
                // The response's own bytes, not a copy of them.
                let batch = response.bytes().slice_ref(&bytes[..len]);
                log.append_replica(batch).await.map_err(|e| e.to_string())?;
                bytes = &bytes[len..];
            }
            log.sync().await.map_err(|e| e.to_string())?;
        }
        adopt(Rc::clone(&log), log.log_end()).await?;
        // The leader's log start, where this copy holds it durably: an offsets slot's leader
        // compacts it (a snapshot, then the segments below it go) and its followers drop the
        // same superseded segments, or their copies would only grow; a regular topic's start
        // moved by DeleteRecords (or retention) moves here too, as Kafka's followers do, so a
        // later leader does not serve deleted records again.
        let leader_start = u64::try_from(part.log_start()).unwrap_or(0);
        if leader_start > log.log_start() && leader_start <= log.synced_offset() {
            if topic == crate::groups::OFFSETS_TOPIC {
                log.truncate_before(leader_start)
                    .await
                    .map_err(|e| e.to_string())?;
            } else {
                log.delete_records_before(leader_start, log.synced_offset())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let hw = u64::try_from(part.high_watermark()).unwrap_or(0);
        if hw > me.hw.get() {
            me.hw.set(hw);
        }
        Ok(())
    }

    /// The native endpoint of the shard owning a partition on `node`.
    fn replica_endpoint(
        &self,
        topic: &str,
        partition: u32,
        node: NodeId,
    ) -> Option<std::net::SocketAddr> {
        let view = self.view()?;
        let info = view.state.nodes.get(&node)?;
        let s = crate::meta::shard_for(topic, partition, info.shards());
        let port = *info.native_ports.get(s)?;
        let host = &info.native_host;
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()?
            .next()
    }

    /// The open log of a local replica.
    fn replica_log(&self, topic: &str, partition: u32) -> Option<Rc<Log>> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|logs| logs.get(&partition))
            .cloned()
    }

    /// Cuts a follower's log back to `offset` (its leader's log diverged from there): closes
    /// the replica, cuts it (`truncate_closed`), opens it again in its place.
    async fn truncate_replica(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        me: &Following,
    ) -> Result<(), String> {
        self.rewrite_replica(topic, partition, Rewrite::Cut(offset), me)
            .await
    }

    /// Empties a follower's log to start at its leader's log start (`reset_closed`).
    async fn reset_replica(
        &self,
        topic: &str,
        partition: u32,
        start: u64,
        me: &Following,
    ) -> Result<(), String> {
        self.rewrite_replica(topic, partition, Rewrite::StartAt(start), me)
            .await
    }

    /// Closes a follower's log, cuts or empties it, and opens it again, for the following
    /// `me` that asked. One rewrite at a time per partition, and the files are touched only
    /// if the log closed is still the partition's and `me` is still its role: a rewrite
    /// asked under an earlier leader whose close took long must not cut the log that a
    /// later follow loop reopened, filled and got counted in the in-sync set with (the
    /// fault test, seed 31338, lost acknowledged records that way).
    async fn rewrite_replica(
        &self,
        topic: &str,
        partition: u32,
        how: Rewrite,
        me: &Following,
    ) -> Result<(), String> {
        let offset = match how {
            Rewrite::Cut(o) | Rewrite::StartAt(o) => o,
        };
        let key = (topic.to_owned(), partition);
        if !self.rewriting.borrow_mut().insert(key.clone()) {
            return Err("another rewrite of this replica is under way".into());
        }
        struct Rewriting<'a>(&'a Shard, (String, u32));
        impl Drop for Rewriting<'_> {
            fn drop(&mut self) {
                self.0.rewriting.borrow_mut().remove(&self.1);
            }
        }
        let _rewriting = Rewriting(self, key);
        let still_mine = || matches!(self.role(topic, partition), Some(Role::Following(f)) if f.epoch == me.epoch && f.leader == me.leader);
        let Some(log) = self.replica_log(topic, partition) else {
            return Err("the replica is not open".into());
        };
        if !still_mine() {
            return Err("the replica's role moved on before its rewrite".into());
        }
        match how {
            Rewrite::Cut(_) => tracing::warn!(
                topic,
                partition,
                from = log.log_end(),
                to = offset,
                "replica diverges from its leader: truncating"
            ),
            Rewrite::StartAt(_) => tracing::warn!(
                topic,
                partition,
                end = log.log_end(),
                leader_start = offset,
                "replica ends below its leader's log start: starting over there"
            ),
        }
        log.close().await.map_err(|e| e.to_string())?;
        #[cfg(test)]
        {
            let hold = self.hold_rewrites.borrow_mut().take();
            if let Some(hold) = hold {
                hold.listen().await;
            }
        }
        let same = self
            .replica_log(topic, partition)
            .is_some_and(|now| Rc::ptr_eq(&now, &log));
        drop(log);
        if !same {
            return Err("the replica was replaced while it closed: not rewritten".into());
        }
        let dir = crate::meta::partition_dir(&self.config.data_dir, topic, partition);
        // Whatever happens to the cut, the replica is opened again (a failed cut leaves a
        // valid log, and the next fetch asks again). A role that moved on while the log
        // closed gets it back uncut: its own fetches decide.
        let cut = match how {
            _ if !still_mine() => {
                tracing::info!(
                    topic,
                    partition,
                    "the replica's role moved on while it closed: reopened without the cut"
                );
                Ok(())
            }
            Rewrite::Cut(_) => {
                crate::log::truncate_closed(&crate::io::dma::DmaStorage, &dir, offset)
                    .await
                    .map(|_| ())
            }
            Rewrite::StartAt(_) => {
                crate::log::reset_closed(&crate::io::dma::DmaStorage, &dir, offset).await
            }
        }
        .map_err(|e| e.to_string());
        let config = self
            .topics
            .borrow()
            .get(topic)
            .map(|t| t.log_config(&self.config.log_defaults))
            .ok_or_else(|| "the topic is gone".to_string())?;
        let reopened = crate::log::PartitionLog::open_with(
            crate::io::dma::DmaStorage,
            crate::io::SystemClock,
            &dir,
            config,
            self.log_resources.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let reopened = Rc::new(reopened);
        crate::runtime::spawn_housekeeping(Rc::clone(&reopened), self.config.housekeeping);
        if let Some(logs) = self.partitions.borrow_mut().get_mut(topic) {
            logs.insert(partition, reopened);
        }
        // A view applied while the log was closed may have made this node its leader: the
        // epoch it recorded then went to the closed log (or was refused by it), and a
        // coordinator store loaded over it would refuse every commit. Both follow the log
        // reopened in its place.
        self.adopt_leader_epochs().await;
        self.reconcile_offset_stores().await;
        cut
    }
}

/// A follower's pause between retries: [`REPLICA_RETRY_FIRST`], doubling up to
/// [`REPLICA_RETRY`], back to the first after a fetch that worked.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = REPLICA_RETRY_FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(REPLICA_RETRY);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How a follower's log is rewritten.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    /// Cut back to this offset (divergence).
    Cut(u64),
    /// Emptied to start at this offset (behind the leader's retention).
    StartAt(u64),
}

/// Where this replica's log says leader epoch `epoch` began (0 when it does not know it).
fn log_epoch_start(shard: &Shard, topic: &str, partition: u32, epoch: u32) -> u64 {
    shard
        .replica_log(topic, partition)
        .and_then(|log| {
            log.leader_epochs()
                .entries()
                .iter()
                .find(|&&(e, _)| e == epoch)
                .map(|&(_, start)| start)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_fast_double_to_the_cap_and_start_over_after_a_success() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u64> = (0..8).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 200, 200]);
        for _ in 0..100 {
            assert_eq!(backoff.next(), REPLICA_RETRY, "capped, never overflowing");
        }
        backoff.reset();
        assert_eq!(backoff.next(), REPLICA_RETRY_FIRST);
    }

    /// A follower's divergence rewrite asked under one leader, whose close took long, must
    /// not cut the log that a later role reopened and filled meanwhile: the fault test (seed
    /// 31338) lost 49 acknowledged records that way. Here the first rewrite (epoch 5, cut to
    /// 50) is held after its close; the role moves to epoch 6, whose own rewrite (cut to 80)
    /// and appends follow; released, the first rewrite must leave the log alone.
    #[test]
    fn a_stale_rewrite_does_not_cut_the_log_a_later_role_filled() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tmp")
            .join(format!("unit-stale-rewrite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let data_dir = dir.clone();
        let handle = crate::runtime::executor_builder(glommio::Placement::Unbound, 1)
            .expect("builder")
            .spawn(move || async move {
                let broker = crate::broker::BrokerConfig::new(&data_dir);
                let config = super::super::ShardConfig {
                    data_dir: data_dir.clone(),
                    shards: 1,
                    log_defaults: broker.log_defaults.clone(),
                    coordinator: broker.coordinator.clone(),
                    offsets_retention: broker.offsets_retention,
                    max_partitions: 100,
                    housekeeping: broker.housekeeping,
                    open_segment_files: 16,
                    cache_bytes: 1 << 20,
                    cluster: None,
                    registration: None,
                    min_insync_replicas: 1,
                    default_replication_factor: 1,
                    replica_fetch: ReplicaFetch::default(),
                };
                let shard = Shard::open(0, config, super::super::mesh::build(1))
                    .await
                    .expect("shard");
                shard
                    .create_topic("t", crate::meta::TopicConfig::with_partitions(1))
                    .await
                    .expect("topic");
                let append = |log: Rc<Log>, from: u64, to: u64| async move {
                    for i in from..to {
                        let mut b = tidelog_wire::batch::BatchBuilder::new();
                        b.push(None, &i.to_le_bytes(), 0, &[]);
                        if log
                            .append(b.finish(), crate::log::Durability::Synced)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                };
                let log = shard.replica_log("t", 0).expect("log");
                append(Rc::clone(&log), 0, 100).await;
                assert_eq!(log.log_end(), 100);
                drop(log);
                let follow = |epoch| {
                    let me = Rc::new(Following {
                        epoch,
                        leader: 2,
                        hw: Cell::new(0),
                    });
                    shard
                        .roles
                        .borrow_mut()
                        .insert(("t".to_owned(), 0), Role::Following(Rc::clone(&me)));
                    me
                };
                let first = follow(5);
                let hold = Rc::new(crate::sync::Event::default());
                *shard.hold_rewrites.borrow_mut() = Some(Rc::clone(&hold));
                let stale = {
                    let shard = Rc::clone(&shard);
                    glommio::spawn_local(async move {
                        shard
                            .rewrite_replica("t", 0, Rewrite::Cut(50), &first)
                            .await
                    })
                };
                // The first rewrite closes the log and holds.
                for _ in 0..2000 {
                    if shard.replica_log("t", 0).is_some_and(|l| l.is_closed()) {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                let second = follow(6);
                let _ = shard
                    .rewrite_replica("t", 0, Rewrite::Cut(80), &second)
                    .await;
                let log = shard.replica_log("t", 0).expect("log");
                append(Rc::clone(&log), log.log_end(), 100).await;
                let filled = log.log_end();
                drop(log);
                hold.notify();
                let _ = stale.await;
                let end = shard.replica_log("t", 0).map_or(0, |log| log.log_end());
                (end, filled)
            })
            .expect("spawn");
        let (end, filled) = handle.join().expect("executor");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(filled >= 80, "the later role's log held {filled}");
        assert!(
            end >= filled,
            "the stale rewrite cut the log to {end} (it held {filled})"
        );
    }

    /// The high watermark is the smallest synced end over the in-sync set (the leader's own
    /// included), waits for every in-sync follower, ignores followers outside the set, and
    /// never goes down.
    /// A follower counts as lagging once it has not caught up with the log end for the lag
    /// bound, measured from the leadership's start when it never did.
    /// A follower whose log is a prefix of the leader's goes on; one past the end of its
    /// epoch at the leader is told where that epoch ends there; one whose epoch the leader
    /// cannot place (above every epoch it knows) is told the high watermark, never the
    /// undefined -1 that the wire would take for "no divergence".
    #[test]
    fn divergence_answers_are_never_undefined() {
        assert_eq!(super::divergence((5, 300), 5, 250, 200), None);
        assert_eq!(super::divergence((5, 300), 5, 300, 200), None);
        assert_eq!(super::divergence((5, 300), 5, 320, 200), Some((5, 300)));
        assert_eq!(super::divergence((4, 250), 5, 260, 200), Some((4, 250)));
        assert_eq!(super::divergence((-1, -1), 9, 260, 200), Some((-1, 200)));
    }

    #[test]
    fn followers_that_stop_catching_up_lag() {
        let leading = Leading::new(1, 1, vec![1, 2, 3], 0);
        let started = std::time::Instant::now() - Duration::from_secs(60);
        assert_eq!(
            leading.lagging(started, Duration::from_secs(30)),
            vec![2, 3]
        );
        leading
            .caught_up
            .borrow_mut()
            .insert(2, std::time::Instant::now());
        assert_eq!(leading.lagging(started, Duration::from_secs(30)), vec![3]);
        assert!(leading
            .lagging(std::time::Instant::now(), Duration::from_secs(30))
            .is_empty());
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_replica() {
        let leading = Leading::new(3, 1, vec![1, 2, 3], 10);
        leading.recompute(50);
        assert_eq!(
            leading.high_watermark(),
            10,
            "followers 2 and 3 reported nothing"
        );
        leading.followers.borrow_mut().insert(2, 40);
        leading.recompute(50);
        assert_eq!(
            leading.high_watermark(),
            10,
            "follower 3 still reported nothing"
        );
        leading.followers.borrow_mut().insert(3, 30);
        leading.recompute(50);
        assert_eq!(leading.high_watermark(), 30);
        leading.followers.borrow_mut().insert(4, 0);
        leading.recompute(50);
        assert_eq!(
            leading.high_watermark(),
            30,
            "4 is not in sync: not counted"
        );
        leading.recompute(20);
        assert_eq!(leading.high_watermark(), 30, "never goes down");
        // Node 3 fenced: the committed set shrinks and the mark moves to the others.
        *leading.isr.borrow_mut() = vec![1, 2];
        leading.recompute(50);
        assert_eq!(leading.high_watermark(), 40);
        // A follower being added counts from the proposal on.
        leading.followers.borrow_mut().insert(3, 45);
        leading.joining.set(Some(3));
        leading.followers.borrow_mut().insert(2, 60);
        leading.recompute(60);
        assert_eq!(
            leading.high_watermark(),
            45,
            "the joining follower holds the mark"
        );
    }
}
