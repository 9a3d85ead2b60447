//! The cluster: several broker nodes, one metadata Raft group among them (raft-rs), and the
//! metadata it replicates (nodes, topics, partition placement, producer-id blocks).
//!
//! ```text
//! node 1 shard 0 ── Controller (RawNode) ──TCP── node 2 shard 0 ── Controller
//!        │ applies committed commands to ClusterState, the same on every node
//!        └─▶ the shard runtime opens the partitions placed on this node
//! ```
//!
//! - `codec`: the bounded encoding of Raft messages, entries and snapshots.
//! - `state`: the metadata state machine ([`ClusterState`], [`Command`]).
//! - `store`: raft-rs's storage over an internal partition log (`__raft/0`).
//! - `transport`: node-to-node TCP, bounded queues.
//! - `controller`: the Raft node's driver on shard 0.
//!
//! A node started without peers runs none of this (the embedded single node).

use std::net::SocketAddr;
use std::time::Duration;

// raft-rs's protobuf types are filled field by field, in wire order, as they are decoded.
#[allow(clippy::field_reassign_with_default)]
pub mod codec;
pub mod controller;
pub mod state;
#[allow(clippy::field_reassign_with_default)]
pub mod store;
pub mod transport;

pub use controller::Controller;
pub use state::{kafka_broker_id, ClusterState, Command, NodeId, NodeInfo, Refusal, TopicMeta};

/// How long a metadata change may take to commit before the client is told to retry (a
/// broker-only node's proposal made through a voter gets the same).
pub const PROPOSAL_DEADLINE: Duration = Duration::from_secs(10);

/// A cluster member: its node id and inter-node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node id (1..=[`state::NODE_ID_MAX`]).
    pub id: NodeId,
    /// Where the other nodes reach it.
    pub addr: SocketAddr,
}

/// This node's place in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node.
    pub node_id: NodeId,
    /// The metadata quorum's members (the Raft voters); the same list on every node. A
    /// voter is in it; a broker-only node is not.
    pub peers: Vec<Peer>,
    /// This node holds partitions and serves clients but has no vote in the metadata
    /// quorum: it follows the committed metadata from the voters (KRaft's broker role), so
    /// nodes can be added to a running cluster without changing its quorum.
    pub broker_only: bool,
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The metadata refused the command.
    #[error(transparent)]
    Refused(Refusal),
    /// No metadata leader is known (an election is under way, or no quorum).
    #[error("no metadata leader (election under way or no quorum)")]
    NoLeader,
    /// The command was not committed in time.
    #[error("the metadata change was not committed in time")]
    TimedOut,
    /// The metadata Raft log failed on this node.
    #[error("metadata raft log failed: {0}")]
    Storage(String),
}

impl ClusterConfig {
    /// Parses `--peers` (`1@127.0.0.1:19392,2@127.0.0.2:19392,...`) for node `node_id`.
    ///
    /// # Errors
    /// A description of the first problem: syntax, an id out of range or repeated, an
    /// address repeated, too many peers, or `node_id` missing from the list.
    pub fn parse(node_id: NodeId, peers: &str) -> Result<Self, String> {
        Self::parse_as(node_id, peers, false)
    }

    /// [`parse`](Self::parse) for a voter (`broker_only` false: `node_id` must be in the
    /// list) or a broker-only node (`node_id` must not be).
    ///
    /// # Errors
    /// As [`parse`](Self::parse); a broker-only node whose id is in the list.
    pub fn parse_as(node_id: NodeId, peers: &str, broker_only: bool) -> Result<Self, String> {
        if node_id == 0 || node_id > state::NODE_ID_MAX {
            return Err(format!(
                "--node-id {node_id}: node ids are 1..={}",
                state::NODE_ID_MAX
            ));
        }
        let mut list: Vec<Peer> = Vec::new();
        for item in peers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, addr) = item
                .split_once('@')
                .ok_or_else(|| format!("peer {item:?}: expected ID@HOST:PORT"))?;
            let id: NodeId = id
                .parse()
                .map_err(|_| format!("peer {item:?}: {id:?} is not a node id"))?;
            if id == 0 || id > state::NODE_ID_MAX {
                return Err(format!(
                    "peer {item:?}: node ids are 1..={}",
                    state::NODE_ID_MAX
                ));
            }
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("peer {item:?}: address {addr:?}: {e}"))?;
            if list.iter().any(|p| p.id == id) {
                return Err(format!("node id {id} appears twice in the peer list"));
            }
            if list.iter().any(|p| p.addr == addr) {
                return Err(format!("address {addr} appears twice in the peer list"));
            }
            list.push(Peer { id, addr });
        }
        if list.len() > state::NODES_MAX {
            return Err(format!("at most {} peers", state::NODES_MAX));
        }
        let listed = list.iter().any(|p| p.id == node_id);
        if broker_only && listed {
            return Err(format!(
                "--node-id {node_id} is in the peer list, which names the metadata voters: a \
                 broker-only node must not be in it"
            ));
        }
        if !broker_only && !listed {
            return Err(format!(
                "--node-id {node_id} is not in the peer list (each voter's own id and address \
                 must be in it; a node joining as a broker without a vote takes --broker-only)"
            ));
        }
        if list.is_empty() {
            return Err("the peer list names no node".into());
        }
        list.sort_by_key(|p| p.id);
        Ok(ClusterConfig {
            node_id,
            peers: list,
            broker_only,
        })
    }

    /// A fingerprint of the peer list: nodes started with different lists refuse each other.
    pub fn fingerprint(&self) -> u64 {
        let text: Vec<String> = self
            .peers
            .iter()
            .map(|p| format!("{}@{}", p.id, p.addr))
            .collect();
        let joined = text.join(",");
        let low = crc32c::crc32c(joined.as_bytes());
        let high = crc32c::crc32c_append(low, joined.as_bytes());
        (u64::from(high) << 32) | u64::from(low)
    }
}

/// Runs `fut`, or gives up after `limit`.
pub(crate) async fn transport_within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_lists_parse_and_mistakes_are_named() {
        let c = ClusterConfig::parse(2, "3@127.0.0.3:19392, 1@127.0.0.1:19392,2@127.0.0.2:19392")
            .unwrap();
        assert_eq!(
            c.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let same = ClusterConfig::parse(1, "1@127.0.0.1:19392,2@127.0.0.2:19392,3@127.0.0.3:19392")
            .unwrap();
        assert_eq!(c.fingerprint(), same.fingerprint());
        let other = ClusterConfig::parse(1, "1@127.0.0.1:19392,2@127.0.0.2:19393").unwrap();
        assert_ne!(other.fingerprint(), same.fingerprint());
        for (node, bad) in [
            (1, "1@127.0.0.1:1,1@127.0.0.2:1"),
            (1, "1@127.0.0.1:1,2@127.0.0.1:1"),
            (4, "1@127.0.0.1:1"),
            (1, "0@127.0.0.1:1"),
            (1, "1-127.0.0.1:1"),
            (1, "1@localhost"),
        ] {
            assert!(ClusterConfig::parse(node, bad).is_err(), "{bad}");
        }
        let broker = ClusterConfig::parse_as(4, "1@127.0.0.1:1,2@127.0.0.2:1", true).unwrap();
        assert!(broker.broker_only);
        assert_eq!(
            broker.fingerprint(),
            ClusterConfig::parse(1, "1@127.0.0.1:1,2@127.0.0.2:1")
                .unwrap()
                .fingerprint(),
            "a broker-only node presents the voters' fingerprint"
        );
        assert!(ClusterConfig::parse_as(1, "1@127.0.0.1:1", true).is_err());
        assert!(ClusterConfig::parse_as(4, "", true).is_err());
    }
}
