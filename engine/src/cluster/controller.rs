//! The metadata Raft node of one broker node, driven on its shard 0: raft-rs's `RawNode`
//! (sans-I/O) stepped by one task that ticks it, feeds it the peers' messages and the local
//! proposals, persists what it must (entries and hard state, fdatasynced, before the
//! messages that depend on them go out), and applies committed commands to the
//! [`ClusterState`] in log order.
//!
//! Proposals carry `(node id, proposal id)` as their entry context; every node applies every
//! entry, and the proposing node also wakes the proposal's waiter with the outcome. A
//! proposal made while no leader is known fails at once (`NoLeader`) and is retried by
//! [`Controller::propose`] until its deadline; one lost in a leader change times out.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};

use super::state::{Applied, ClusterState, Command, NodeId, NodeInfo, Refusal};
use super::store::{RaftLog, RaftStore};
use super::transport::Transport;
use super::{ClusterConfig, ClusterError};
use crate::io::dma::DmaStorage;
use crate::io::SystemClock;
use crate::sync::Event;

/// One Raft tick.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's heartbeat before a follower campaigns (randomised up to twice
/// this): 1-2 s.
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;
/// Peer messages waiting to be stepped before new ones are dropped.
pub const INBOX_MESSAGES_MAX: usize = 8192;
/// Proposals waiting to enter the log, all callers together.
pub const PROPOSALS_MAX: usize = 1024;
/// A node the metadata leader has not heard from for this long is fenced.
pub const FENCE_AFTER: Duration = Duration::from_secs(2);
/// Applied entries kept in the log behind a snapshot before it is compacted.
pub const COMPACT_AFTER_ENTRIES: u64 = 10_000;

/// How a proposal ended.
type Outcome = Result<Applied, ClusterError>;

#[derive(Default)]
struct Waiter {
    outcome: RefCell<Option<Outcome>>,
    version: Cell<u64>,
    /// The index of the entry that carried the proposal.
    index: Cell<u64>,
    done: Event,
}

pub mod observer;

/// The metadata Raft node.
pub struct Controller {
    me: NodeId,
    /// The Raft node (`None` on a broker-only node, which follows the voters' metadata).
    raw: Option<RefCell<RawNode<RaftStore>>>,
    log: RaftLog<DmaStorage, SystemClock>,
    /// Connections to the other voters (`None` on a broker-only node).
    transport: Option<Rc<Transport>>,
    /// This node's place in the cluster.
    cluster: ClusterConfig,
    state: RefCell<Rc<ClusterState>>,
    applied: Cell<u64>,
    inbox: RefCell<VecDeque<Message>>,
    proposals: RefCell<VecDeque<(u64, Vec<u8>)>>,
    waiters: RefCell<HashMap<u64, Rc<Waiter>>>,
    next_proposal: Cell<u64>,
    wake: Event,
    /// Notified when the state (or the known leader) changed.
    changed: Event,
    version: Cell<u64>,
    leader: Cell<NodeId>,
    stopping: Rc<Event>,
    /// Set when the Raft log failed: the node no longer takes part.
    failed: RefCell<Option<String>>,
    /// When each peer's last message arrived (the leader hears every follower's answers).
    heard: RefCell<HashMap<NodeId, Instant>>,
}

/// raft-rs logs through `slog`; this forwards its records to `tracing`.
struct SlogToTracing;

impl slog::Drain for SlogToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let message = record.msg().to_string();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "tidelog::raft", "{message}");
            }
            slog::Level::Warning => tracing::warn!(target: "tidelog::raft", "{message}"),
            // raft-rs logs every dropped proposal and vote at info: routine, so debug here
            // (leader changes are logged by the controller itself).
            _ => tracing::debug!(target: "tidelog::raft", "{message}"),
        }
        Ok(())
    }
}

impl Controller {
    /// Opens the Raft log, rebuilds the metadata from it, binds the inter-node address and
    /// starts driving the Raft node.
    ///
    /// # Errors
    /// The Raft log's, raft-rs's refusal of the stored state, or the bind.
    pub async fn open(
        cluster: &ClusterConfig,
        data_dir: &Path,
        stopping: Rc<Event>,
    ) -> Result<Rc<Self>, String> {
        let me = cluster.node_id;
        let voters: Vec<NodeId> = cluster.peers.iter().map(|p| p.id).collect();
        let log = RaftLog::open(DmaStorage, SystemClock, data_dir, &voters)
            .await
            .map_err(|e| format!("metadata raft log: {e}"))?;
        if cluster.broker_only {
            return observer::open(cluster, log, stopping);
        }
        let (snapshot, committed) = log.committed();
        let mut state = if snapshot.data.is_empty() {
            ClusterState::default()
        } else {
            ClusterState::decode(&snapshot.data)
                .map_err(|e| format!("metadata raft snapshot: {e}"))?
        };
        state.members = voters.clone();
        let mut applied = snapshot.get_metadata().index;
        for entry in &committed {
            if let Some(command) = command_of(entry) {
                let _ = state.apply(entry.index, command);
            }
            applied = entry.index;
        }
        let config = raft::Config {
            id: me,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Drain::fuse(SlogToTracing), slog::o!());
        let raw = RawNode::new(&config, log.store(), &logger)
            .map_err(|e| format!("metadata raft: {e}"))?;
        let own = cluster
            .peers
            .iter()
            .find(|p| p.id == me)
            .ok_or_else(|| format!("node {me} is not in the peer list"))?;
        let listener = bind(own.addr)
            .map_err(|e| format!("binding the inter-node address {}: {e}", own.addr))?;
        let fingerprint = cluster.fingerprint();
        let transport = Transport::start(me, &cluster.peers, fingerprint, Rc::clone(&stopping));
        tracing::info!(
            node = me,
            addr = %own.addr,
            peers = voters.len(),
            applied,
            topics = state.topics.len(),
            "metadata raft node opened"
        );
        let controller = Rc::new(Controller {
            me,
            raw: Some(RefCell::new(raw)),
            log,
            transport: Some(transport),
            cluster: cluster.clone(),
            state: RefCell::new(Rc::new(state)),
            applied: Cell::new(applied),
            inbox: RefCell::new(VecDeque::new()),
            proposals: RefCell::new(VecDeque::new()),
            waiters: RefCell::new(HashMap::new()),
            next_proposal: Cell::new(1),
            wake: Event::default(),
            changed: Event::default(),
            version: Cell::new(1),
            leader: Cell::new(0),
            stopping,
            failed: RefCell::new(None),
            heard: RefCell::new(HashMap::new()),
        });
        let deliver: Rc<dyn Fn(Message)> = {
            let weak = Rc::downgrade(&controller);
            Rc::new(move |m| {
                if let Some(c) = weak.upgrade() {
                    c.deliver(m);
                }
            })
        };
        super::transport::serve(
            listener,
            Rc::new(cluster.peers.clone()),
            fingerprint,
            deliver,
            Rc::new(observer::Door::new(&controller)),
            Rc::clone(&controller.stopping),
        );
        {
            let controller = Rc::clone(&controller);
            glommio::spawn_local(async move { controller.run().await }).detach();
        }
        Ok(controller)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The metadata as last applied.
    pub fn state(&self) -> Rc<ClusterState> {
        Rc::clone(&self.state.borrow())
    }

    /// Increases with every change of [`state`](Self::state) or of the leader.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Completes at the next change.
    pub fn changed(&self) -> crate::sync::Listener<'_> {
        self.changed.listen()
    }

    /// The metadata leader, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        Some(self.leader.get()).filter(|&l| l != 0)
    }

    fn deliver(&self, m: Message) {
        self.heard.borrow_mut().insert(m.from, Instant::now());
        let mut inbox = self.inbox.borrow_mut();
        if inbox.len() >= INBOX_MESSAGES_MAX {
            return; // Raft tolerates loss; the sender retries.
        }
        inbox.push_back(m);
        drop(inbox);
        self.wake.notify();
    }

    /// Proposes a command and waits until it is committed and applied here; retried while no
    /// leader is known, for at most `deadline`. Returns the outcome and the state version
    /// that includes it.
    ///
    /// # Errors
    /// The command's [`Refusal`], or [`ClusterError`] when it could not be committed in time.
    pub async fn propose(
        &self,
        command: &Command,
        deadline: Duration,
    ) -> Result<(Applied, u64), ClusterError> {
        if self.raw.is_none() {
            return self.propose_remote(command, deadline).await;
        }
        self.propose_indexed(command, deadline)
            .await
            .map(|(applied, version, _)| (applied, version))
    }

    /// What is left of a proposal's `deadline`.
    ///
    /// # Errors
    /// [`ClusterError::Storage`] once the metadata log failed here; [`ClusterError::TimedOut`]
    /// past the deadline.
    fn time_left(&self, started: Instant, deadline: Duration) -> Result<Duration, ClusterError> {
        if let Some(reason) = self.failed.borrow().clone() {
            return Err(ClusterError::Storage(reason));
        }
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(ClusterError::TimedOut);
        }
        Ok(left)
    }

    /// [`propose`](Self::propose) on a voter, also returning the index of the entry.
    async fn propose_indexed(
        &self,
        command: &Command,
        deadline: Duration,
    ) -> Result<(Applied, u64, u64), ClusterError> {
        let started = Instant::now();
        let data = command.encode();
        loop {
            let left = self.time_left(started, deadline)?;
            if self.proposals.borrow().len() >= PROPOSALS_MAX {
                glommio::timer::sleep(TICK).await;
                continue;
            }
            let id = self.next_proposal.get();
            self.next_proposal.set(id + 1);
            let waiter = Rc::new(Waiter::default());
            self.waiters.borrow_mut().insert(id, Rc::clone(&waiter));
            self.proposals.borrow_mut().push_back((id, data.clone()));
            self.wake.notify();
            let done = waiter.done.listen();
            let finished = super::transport_within(left, done).await.is_some();
            self.waiters.borrow_mut().remove(&id);
            if !finished {
                return Err(ClusterError::TimedOut);
            }
            let outcome = waiter.outcome.borrow_mut().take();
            match outcome {
                Some(Ok(applied)) => {
                    return Ok((applied, waiter.version.get(), waiter.index.get()))
                }
                Some(Err(ClusterError::NoLeader)) => {
                    glommio::timer::sleep(TICK).await;
                }
                Some(Err(e)) => return Err(e),
                None => return Err(ClusterError::TimedOut),
            }
        }
    }

    /// Once this node is registered, creates the internal committed-offsets topic if the
    /// metadata has none yet (every node tries; all but one are told it exists): one
    /// partition per offsets slot, replicated on up to three nodes, so that group
    /// coordinators fail over with their commits.
    async fn ensure_offsets_topic(&self, registered: bool) {
        let state = self.state();
        if !registered
            || self.cluster.broker_only
            || self.leader().is_none()
            || state.topics.contains_key(crate::groups::OFFSETS_TOPIC)
        {
            return;
        }
        let replicas = u16::try_from(state.members.len())
            .unwrap_or(u16::MAX)
            .clamp(1, crate::groups::OFFSETS_REPLICATION_MAX);
        let command = Command::CreateTopic {
            name: crate::groups::OFFSETS_TOPIC.to_owned(),
            config: crate::groups::offsets_topic_config(),
            replication_factor: replicas,
        };
        match self.propose(&command, Duration::from_secs(5)).await {
            Ok(_) => tracing::info!(
                replicas,
                "internal committed-offsets topic created (group coordinators fail over with it)"
            ),
            Err(ClusterError::Refused(Refusal::TopicExists(_))) => {}
            Err(e) => tracing::debug!(error = %e, "offsets topic not created yet; retrying"),
        }
    }

    /// Keeps this node's registration (its endpoints) current in the metadata.
    pub fn spawn_registration(self: &Rc<Self>, info: NodeInfo) {
        let controller = Rc::clone(self);
        glommio::spawn_local(async move {
            loop {
                let registered = controller.state().nodes.get(&info.id) == Some(&info);
                if !registered && controller.leader().is_some() {
                    match controller
                        .propose(&Command::RegisterNode(info.clone()), Duration::from_secs(5))
                        .await
                    {
                        Ok(_) => tracing::info!(
                            node = info.id,
                            "node registered in the cluster metadata"
                        ),
                        Err(e) => {
                            tracing::debug!(error = %e, "registration not committed yet; retrying")
                        }
                    }
                }
                controller.ensure_offsets_topic(registered).await;
                let wait = futures_lite::future::or(
                    async {
                        controller.changed().await;
                        true
                    },
                    async {
                        glommio::timer::sleep(Duration::from_secs(1)).await;
                        true
                    },
                );
                let stop = async {
                    controller.stopping.listen().await;
                    false
                };
                if !futures_lite::future::or(stop, wait).await {
                    return;
                }
            }
        })
        .detach();
    }

    /// While this node leads the metadata: fences the registered nodes it has not heard from
    /// for [`FENCE_AFTER`], and unfences them once heard again.
    pub fn spawn_fencing(self: &Rc<Self>) {
        if self.raw.is_none() {
            return;
        }
        let controller = Rc::clone(self);
        glommio::spawn_local(async move {
            let mut last_tick = Instant::now();
            loop {
                let stop = async {
                    controller.stopping.listen().await;
                    false
                };
                let tick = async {
                    glommio::timer::sleep(FENCE_AFTER / 4).await;
                    true
                };
                if !futures_lite::future::or(stop, tick).await {
                    return;
                }
                let state = controller.state();
                let now = Instant::now();
                // A tick this late means this node itself did not run (stopped, or starved):
                // what it did not hear meanwhile says nothing of the others, whose messages
                // wait unread in its sockets. Resumed, it gives every node a full period
                // again instead of fencing the whole cluster at once.
                let gap = now.duration_since(last_tick);
                let paused = gap > FENCE_AFTER / 4 + FENCE_AFTER / 2;
                last_tick = now;
                if paused && controller.leader() == Some(controller.me) {
                    tracing::info!(
                        gap_ms = gap.as_millis() as u64,
                        "metadata leader resumed after a pause: fencing judges from now"
                    );
                }
                if controller.leader() != Some(controller.me) || paused {
                    // A node that becomes leader gives every node a full period to be heard
                    // before judging it.
                    let mut heard = controller.heard.borrow_mut();
                    for &node in state.nodes.keys() {
                        heard.insert(node, now);
                    }
                    continue;
                }
                for &node in state.nodes.keys() {
                    let heard = node == controller.me
                        || controller
                            .heard
                            .borrow()
                            .get(&node)
                            .is_some_and(|at| now.duration_since(*at) < FENCE_AFTER);
                    let fenced = state.fenced.contains(&node);
                    if heard == fenced {
                        let command = Command::Fence {
                            node,
                            fenced: !heard,
                        };
                        match controller.propose(&command, Duration::from_secs(2)).await {
                            Ok(_) if heard => tracing::info!(node, "node heard again: unfenced"),
                            Ok(_) => tracing::warn!(
                                node,
                                after_ms = FENCE_AFTER.as_millis() as u64,
                                "node not heard from: fenced (left out of metadata)"
                            ),
                            Err(e) => tracing::debug!(node, error = %e, "fencing not committed"),
                        }
                    }
                }
            }
        })
        .detach();
    }

    async fn run(self: Rc<Self>) {
        if self.raw.is_none() {
            return self.observe().await;
        }
        let mut next_tick = Instant::now() + TICK;
        loop {
            let idle = self.inbox.borrow().is_empty() && self.proposals.borrow().is_empty();
            if idle {
                let wait = next_tick.saturating_duration_since(Instant::now());
                let woken = self.wake.listen();
                let stop = self.stopping.listen();
                let go_on = futures_lite::future::or(
                    async {
                        stop.await;
                        false
                    },
                    async {
                        let _ = super::transport_within(wait, woken).await;
                        true
                    },
                )
                .await;
                if !go_on {
                    return;
                }
            }
            if let Err(e) = self.step_once(&mut next_tick).await {
                tracing::error!(node = self.me, error = %e,
                    "metadata raft log failed: this node stops taking part in the metadata quorum");
                *self.failed.borrow_mut() = Some(e.clone());
                for (_, waiter) in self.waiters.borrow_mut().drain() {
                    *waiter.outcome.borrow_mut() = Some(Err(ClusterError::Storage(e.clone())));
                    waiter.done.notify();
                }
                return;
            }
        }
    }

    async fn step_once(&self, next_tick: &mut Instant) -> Result<(), String> {
        let (Some(raw_node), Some(transport)) = (&self.raw, &self.transport) else {
            return Ok(());
        };
        {
            let mut raw = raw_node.borrow_mut();
            if Instant::now() >= *next_tick {
                raw.tick();
                *next_tick = Instant::now() + TICK;
            }
            let messages: Vec<Message> = self.inbox.borrow_mut().drain(..).collect();
            for m in messages {
                let _ = raw.step(m);
            }
            let proposals: Vec<(u64, Vec<u8>)> = self.proposals.borrow_mut().drain(..).collect();
            for (id, data) in proposals {
                let mut context = Vec::with_capacity(16);
                context.extend_from_slice(&self.me.to_le_bytes());
                context.extend_from_slice(&id.to_le_bytes());
                if raw.propose(context, data).is_err() {
                    self.finish(id, Err(ClusterError::NoLeader), 0, 0);
                }
            }
            for peer in transport.take_unreachable() {
                raw.report_unreachable(peer);
            }
            if !raw.has_ready() {
                return Ok(());
            }
        }
        let mut ready = raw_node.borrow_mut().ready();
        if let Some(soft) = ready.ss() {
            let leader = if soft.raft_state == StateRole::Leader {
                self.me
            } else {
                soft.leader_id
            };
            if leader != self.leader.get() {
                tracing::info!(node = self.me, leader, role = ?soft.raft_state,
                    "metadata leader changed");
                self.leader.set(leader);
                self.bump();
            }
        }
        for m in ready.take_messages() {
            transport.send(&m);
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.log
                .install_snapshot(&snapshot)
                .await
                .map_err(|e| e.to_string())?;
            let mut state = ClusterState::decode(&snapshot.data).map_err(|e| e.to_string())?;
            state.members = self.state.borrow().members.clone();
            *self.state.borrow_mut() = Rc::new(state);
            self.applied.set(snapshot.get_metadata().index);
            tracing::info!(
                node = self.me,
                index = snapshot.get_metadata().index,
                "metadata snapshot installed from the leader"
            );
            self.bump();
        }
        // Applied only once the commit index covering them is durable here: a node restarts
        // from its own log up to its persisted commit index, and what it applied (opened
        // partitions, removed topics) must be in that table, or the start-up sweep would
        // take a live topic's directory for an orphan.
        let committed = ready.take_committed_entries();
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        if !entries.is_empty() || hard_state.is_some() {
            self.log
                .persist(&entries, hard_state.as_ref())
                .await
                .map_err(|e| e.to_string())?;
        }
        self.apply(committed);
        for m in ready.take_persisted_messages() {
            transport.send(&m);
        }
        let mut light = raw_node.borrow_mut().advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = raw_node.borrow().raft.hard_state();
            hs.commit = commit;
            self.log
                .persist(&[], Some(&hs))
                .await
                .map_err(|e| e.to_string())?;
        }
        for m in light.take_messages() {
            transport.send(&m);
        }
        self.apply(light.take_committed_entries());
        raw_node.borrow_mut().advance_apply();
        let applied = self.applied.get();
        let data = self.state.borrow().encode();
        if let Err(e) = self.log.compact(applied, data, COMPACT_AFTER_ENTRIES).await {
            tracing::warn!(error = %e, "compacting the metadata raft log failed; retried later");
        }
        Ok(())
    }

    fn apply(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut state = (**self.state.borrow()).clone();
        let mut finished = Vec::new();
        for entry in entries {
            self.applied.set(entry.index);
            let Some(command) = command_of(&entry) else {
                continue;
            };
            let outcome = state.apply(entry.index, command);
            match &outcome {
                Ok(Applied::TopicCreated(name)) => {
                    tracing::info!(topic = name, index = entry.index, "metadata: topic created")
                }
                Ok(Applied::TopicDeleted(name)) => {
                    tracing::info!(topic = name, index = entry.index, "metadata: topic deleted")
                }
                Ok(Applied::PartitionsCreated(name)) => {
                    tracing::info!(
                        topic = name,
                        index = entry.index,
                        "metadata: partitions created"
                    )
                }
                Ok(Applied::TopicConfigChanged(name)) => {
                    tracing::info!(
                        topic = name,
                        index = entry.index,
                        "metadata: topic configuration changed"
                    )
                }
                Ok(Applied::Node(node)) => {
                    tracing::info!(node, index = entry.index, "metadata: node registered")
                }
                Ok(Applied::Fenced { node, fenced }) => {
                    tracing::info!(
                        node,
                        fenced,
                        index = entry.index,
                        "metadata: node fenced or back"
                    )
                }
                Ok(Applied::Reassigned) => {
                    tracing::info!(
                        index = entry.index,
                        "metadata: partition reassignment changed"
                    )
                }
                _ => {}
            }
            if entry.context.len() == 16 {
                let node = u64::from_le_bytes(entry.context[..8].try_into().unwrap_or_default());
                let id = u64::from_le_bytes(entry.context[8..].try_into().unwrap_or_default());
                if node == self.me {
                    finished.push((id, outcome.map_err(ClusterError::Refused), entry.index));
                }
            }
        }
        *self.state.borrow_mut() = Rc::new(state);
        self.bump();
        let version = self.version.get();
        for (id, outcome, index) in finished {
            self.finish(id, outcome, version, index);
        }
    }

    fn finish(&self, id: u64, outcome: Outcome, version: u64, index: u64) {
        if let Some(waiter) = self.waiters.borrow().get(&id) {
            *waiter.outcome.borrow_mut() = Some(outcome);
            waiter.version.set(version);
            waiter.index.set(index);
            waiter.done.notify();
        }
    }

    fn bump(&self) {
        self.version.set(self.version.get() + 1);
        self.changed.notify();
    }

    /// Stops the Raft node's tasks (driver, registration, transport).
    pub fn stop(&self) {
        self.stopping.notify();
    }

    /// Closes the Raft log.
    ///
    /// # Errors
    /// The log's.
    pub async fn close(&self) -> Result<(), String> {
        self.log.close().await.map_err(|e| e.to_string())
    }
}

/// The command of a normal entry with data (the empty entries a new leader appends and
/// configuration changes carry none).
fn command_of(entry: &Entry) -> Option<Command> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return None;
    }
    match Command::decode(&entry.data) {
        Ok(command) => Some(command),
        Err(e) => {
            // Every node decodes the same bytes the same way, so skipping keeps them equal.
            tracing::error!(index = entry.index, error = %e, "metadata entry does not decode: skipped");
            None
        }
    }
}

/// A listening socket for peers, bindable right after a `kill -9` of the previous process.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    // SAFETY: `into_raw_fd` hands over the only handle of a bound, listening TCP socket,
    // which is what glommio's `from_raw_fd` requires; nothing else closes that fd.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

impl From<Refusal> for ClusterError {
    fn from(r: Refusal) -> Self {
        ClusterError::Refused(r)
    }
}
