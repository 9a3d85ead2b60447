//! Broker-only nodes (KRaft's broker role): a node that is not in the peer list holds
//! partitions and serves clients but has no vote in the metadata quorum. It follows the
//! committed metadata by asking a voter (the metadata leader, once known) for the state after
//! the index it holds, long-polled, and proposes its commands (its registration, the in-sync
//! set changes of the partitions it leads, producer-id blocks, topic changes its clients ask
//! for) through a voter, waiting until the outcome's entry is in its own copy.
//!
//! Its copy is durable before it acts on it (the snapshot is the only content of its
//! `__raft/0` log), for the reason a voter applies only what its persisted commit index
//! covers: a restarted node must never start from metadata older than what it acted on
//! (a replica it was told to drop, then added back and counted in an in-sync set).
//!
//! A voter's answer is its applied state, always a prefix of the one committed log, and the
//! node takes only answers newer than what it holds, so its copy only moves forward. The
//! metadata leader fences a broker-only node it does not hear from, like any node: the node
//! polls the leader at least every [`OBSERVE_WAIT`].

use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::{Controller, TICK};
use crate::cluster::codec::{Decoded, Reader, Writer};
use crate::cluster::state::{Applied, ClusterState, Command, NodeId, Refusal};
use crate::cluster::store::RaftLog;
use crate::cluster::transport::{Frame, ObserverService, Session, PEER_IO_TIMEOUT};
use crate::cluster::{ClusterConfig, ClusterError};
use crate::io::dma::DmaStorage;
use crate::io::SystemClock;
use crate::sync::Event;

/// Longest a voter holds an observe request with nothing new (well under the fencing
/// period, so the leader hears the node often enough).
pub const OBSERVE_WAIT: Duration = Duration::from_millis(500);
/// Pause before a broker-only node tries another voter.
const RETRY: Duration = Duration::from_millis(200);

/// Opens a broker-only node's controller from its durable copy of the metadata.
pub(super) fn open(
    cluster: &ClusterConfig,
    log: RaftLog<DmaStorage, SystemClock>,
    stopping: Rc<Event>,
) -> Result<Rc<Controller>, String> {
    let (snapshot, _) = log.committed();
    let mut state = if snapshot.data.is_empty() {
        ClusterState::default()
    } else {
        ClusterState::decode(&snapshot.data).map_err(|e| format!("metadata copy: {e}"))?
    };
    state.members = cluster.peers.iter().map(|p| p.id).collect();
    let applied = snapshot.get_metadata().index;
    tracing::info!(
        node = cluster.node_id,
        voters = cluster.peers.len(),
        applied,
        topics = state.topics.len(),
        "broker-only node: following the metadata of the voters"
    );
    let controller = Rc::new(Controller {
        me: cluster.node_id,
        raw: None,
        log,
        transport: None,
        cluster: cluster.clone(),
        state: std::cell::RefCell::new(Rc::new(state)),
        applied: std::cell::Cell::new(applied),
        inbox: std::cell::RefCell::default(),
        proposals: std::cell::RefCell::default(),
        waiters: std::cell::RefCell::default(),
        next_proposal: std::cell::Cell::new(1),
        wake: Event::default(),
        changed: Event::default(),
        version: std::cell::Cell::new(1),
        leader: std::cell::Cell::new(0),
        stopping,
        failed: std::cell::RefCell::new(None),
        heard: std::cell::RefCell::default(),
    });
    {
        let controller = Rc::clone(&controller);
        glommio::spawn_local(async move { controller.run().await }).detach();
    }
    Ok(controller)
}

/// A proposal's outcome as it travels back to a broker-only node: the outcome and the index
/// of the entry that carried it.
pub fn encode_outcome(outcome: &Result<(Applied, u64), ClusterError>) -> Vec<u8> {
    let mut w = Writer::with_capacity(32);
    match outcome {
        Ok((applied, index)) => {
            w.u8(0);
            applied.put(&mut w);
            w.u64(*index);
        }
        Err(ClusterError::Refused(r)) => {
            w.u8(1);
            r.put(&mut w);
        }
        Err(ClusterError::NoLeader) => w.u8(2),
        Err(ClusterError::TimedOut) => w.u8(3),
        Err(ClusterError::Storage(reason)) => {
            w.u8(4);
            w.str(reason);
        }
    }
    w.out
}

/// Reads [`encode_outcome`]'s bytes.
///
/// # Errors
/// Anything `encode_outcome` could not have written.
pub fn decode_outcome(bytes: &[u8]) -> Decoded<Result<(Applied, u64), ClusterError>> {
    let mut r = Reader::new(bytes, "proposal outcome");
    let outcome = match r.u8()? {
        0 => {
            let applied = Applied::get(&mut r)?;
            Ok((applied, r.u64()?))
        }
        1 => Err(ClusterError::Refused(Refusal::get(&mut r)?)),
        2 => Err(ClusterError::NoLeader),
        3 => Err(ClusterError::TimedOut),
        4 => Err(ClusterError::Storage(r.str()?.to_owned())),
        _ => return r.fail("unknown outcome"),
    };
    r.finish()?;
    Ok(outcome)
}

/// A voter's side of broker-only nodes' requests.
pub(super) struct Door {
    controller: Weak<Controller>,
}

impl Door {
    pub(super) fn new(controller: &Rc<Controller>) -> Self {
        Door {
            controller: Rc::downgrade(controller),
        }
    }
}

impl Controller {
    /// Notes that a node was heard from (what fencing judges by). A node not registered yet
    /// is noted too (it is about to be: fencing it at once would only flap), while the map
    /// stays within [`NODES_MAX`](crate::cluster::state::NODES_MAX) such entries.
    fn heard_from(&self, node: NodeId) {
        let registered = self.state.borrow().nodes.contains_key(&node);
        let mut heard = self.heard.borrow_mut();
        if registered || heard.contains_key(&node) || heard.len() < crate::cluster::state::NODES_MAX
        {
            heard.insert(node, Instant::now());
        }
    }

    /// A broker-only node's loop: follow the metadata from a voter (the leader once known),
    /// keeping a durable copy, until the node stops.
    pub(super) async fn observe(self: Rc<Self>) {
        let stopping = Rc::clone(&self.stopping);
        futures_lite::future::or(self.follow_voters(), async {
            stopping.listen().await;
        })
        .await;
    }

    async fn follow_voters(&self) {
        let voters = self.cluster.peers.clone();
        let fingerprint = self.cluster.fingerprint();
        let mut next = 0usize;
        loop {
            let leader = self.leader.get();
            let peer = match voters.iter().find(|p| p.id == leader) {
                Some(p) => p.clone(),
                None => {
                    next = next.wrapping_add(1);
                    voters[next % voters.len()].clone()
                }
            };
            let mut session = match Session::open(self.me, &peer, fingerprint).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(voter = peer.id, error = %e, "cannot reach a voter; trying another");
                    if leader == peer.id {
                        self.set_leader(0);
                    }
                    glommio::timer::sleep(RETRY).await;
                    continue;
                }
            };
            loop {
                let ask = Frame::Observe {
                    known: self.applied.get(),
                };
                let answer = session.call(&ask, OBSERVE_WAIT + PEER_IO_TIMEOUT).await;
                let Ok(Frame::State {
                    applied,
                    leader,
                    state,
                }) = answer
                else {
                    tracing::debug!(voter = peer.id, answer = ?answer.err(), "a voter stopped answering");
                    if self.leader.get() == peer.id {
                        self.set_leader(0);
                    }
                    break;
                };
                if let Some(bytes) = state.filter(|_| applied > self.applied.get()) {
                    if let Err(e) = self.adopt(applied, bytes).await {
                        tracing::error!(node = self.me, error = %e,
                            "keeping the metadata copy failed: this node stops following the metadata");
                        *self.failed.borrow_mut() = Some(e);
                        return;
                    }
                }
                self.set_leader(leader);
                if leader != 0 && leader != peer.id && voters.iter().any(|p| p.id == leader) {
                    // Follow the leader itself: it is the one that fences.
                    break;
                }
            }
            glommio::timer::sleep(RETRY / 4).await;
        }
    }

    fn set_leader(&self, leader: NodeId) {
        if self.leader.get() != leader {
            tracing::info!(
                node = self.me,
                leader,
                "metadata leader changed (broker-only node)"
            );
            self.leader.set(leader);
            self.bump();
        }
    }

    /// Makes a voter's state at `index` this node's copy: durable first, then visible.
    async fn adopt(&self, index: u64, bytes: Vec<u8>) -> Result<(), String> {
        let mut state = ClusterState::decode(&bytes).map_err(|e| e.to_string())?;
        state.members = self.cluster.peers.iter().map(|p| p.id).collect();
        self.log
            .keep_snapshot(index, bytes)
            .await
            .map_err(|e| e.to_string())?;
        // Another answer may have moved the copy on meanwhile: only forward.
        if index > self.applied.get() {
            *self.state.borrow_mut() = Rc::new(state);
            self.applied.set(index);
            self.bump();
        }
        Ok(())
    }

    /// A broker-only node's proposal: through a voter (the leader when known), then waits
    /// until its own copy holds the entry.
    pub(super) async fn propose_remote(
        &self,
        command: &Command,
        deadline: Duration,
    ) -> Result<(Applied, u64), ClusterError> {
        let started = Instant::now();
        let data = command.encode();
        let voters = self.cluster.peers.clone();
        let fingerprint = self.cluster.fingerprint();
        let mut next = 0usize;
        loop {
            let left = self.time_left(started, deadline)?;
            let peer = match voters.iter().find(|p| p.id == self.leader.get()) {
                Some(p) => p.clone(),
                None => {
                    next = next.wrapping_add(1);
                    voters[next % voters.len()].clone()
                }
            };
            let answer = match Session::open(self.me, &peer, fingerprint).await {
                Ok(mut session) => session.call(&Frame::Propose(data.clone()), left).await,
                Err(e) => Err(e),
            };
            let outcome = match answer {
                Ok(Frame::Outcome(bytes)) => {
                    decode_outcome(&bytes).map_err(|e| ClusterError::Storage(e.to_string()))?
                }
                _ => {
                    glommio::timer::sleep(TICK).await;
                    continue;
                }
            };
            match outcome {
                Ok((applied, index)) => {
                    // Acknowledged once this node's copy has the entry.
                    while self.applied.get() < index {
                        let changed = self.changed.listen();
                        if self.applied.get() >= index {
                            break;
                        }
                        let left = deadline.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            return Err(ClusterError::TimedOut);
                        }
                        let _ = crate::cluster::transport_within(left, changed).await;
                    }
                    return Ok((applied, self.version.get()));
                }
                Err(ClusterError::NoLeader) => glommio::timer::sleep(TICK).await,
                Err(e) => return Err(e),
            }
        }
    }
}

impl ObserverService for Door {
    fn observe(
        &self,
        node: NodeId,
        known: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Frame>>> {
        let controller = self.controller.clone();
        Box::pin(async move {
            let Some(c) = controller.upgrade() else {
                return Frame::State {
                    applied: 0,
                    leader: 0,
                    state: None,
                };
            };
            c.heard_from(node);
            if c.applied.get() <= known {
                let changed = c.changed.listen();
                if c.applied.get() <= known {
                    let _ = crate::cluster::transport_within(OBSERVE_WAIT, changed).await;
                }
            }
            c.heard_from(node);
            let applied = c.applied.get();
            let state = (applied > known).then(|| c.state().encode());
            Frame::State {
                applied,
                leader: c.leader.get(),
                state,
            }
        })
    }

    fn propose(
        &self,
        node: NodeId,
        command: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Frame>>> {
        let controller = self.controller.clone();
        Box::pin(async move {
            if let Some(c) = controller.upgrade() {
                c.heard_from(node);
            }
            let outcome: Result<(Applied, u64), ClusterError> = match controller.upgrade() {
                None => Err(ClusterError::NoLeader),
                Some(c) => match Command::decode(&command) {
                    Err(e) => {
                        tracing::warn!(node, error = %e, "a broker-only node proposed a malformed command");
                        Err(ClusterError::Storage(format!("malformed command: {e}")))
                    }
                    Ok(command) => c
                        .propose_indexed(&command, crate::cluster::PROPOSAL_DEADLINE)
                        .await
                        .map(|(applied, _, index)| (applied, index)),
                },
            };
            Frame::Outcome(encode_outcome(&outcome))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_junk_is_refused() {
        let cases = [
            Ok((Applied::ProducerIds(4000), 17)),
            Ok((Applied::TopicCreated("t".into()), 3)),
            Ok((
                Applied::Fenced {
                    node: 2,
                    fenced: true,
                },
                9,
            )),
            Ok((Applied::Reassigned, 1)),
            Err(ClusterError::Refused(Refusal::InvalidReplicaAssignment(
                "x".into(),
            ))),
            Err(ClusterError::NoLeader),
            Err(ClusterError::TimedOut),
            Err(ClusterError::Storage("disk".into())),
        ];
        for case in cases {
            let bytes = encode_outcome(&case);
            assert_eq!(decode_outcome(&bytes), Ok(case.clone()));
            for cut in 0..bytes.len() {
                assert!(
                    decode_outcome(&bytes[..cut]).is_err(),
                    "{case:?} cut at {cut}"
                );
            }
        }
        assert!(decode_outcome(&[9]).is_err());
    }
}
