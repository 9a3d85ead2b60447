//! The shard's own error type: what the door into the logs can answer, free of any protocol.
//! Each listener maps it to its protocol's codes at its own boundary.

use crate::error::LogError;
use crate::meta::MetaError;

/// Why a shard refused or failed a request. `Clone + Send`: it crosses the mesh in replies.
/// `Display` is the message a protocol may pass on to its client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// No such topic, or no such partition of it.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The partition (or group slot) lives on another shard and the request was local-only.
    #[error("not owned by this shard")]
    NotOwner,
    /// The offset is outside the log.
    #[error("{0}")]
    OffsetOutOfRange(String),
    /// A batch failed its checks (framing, length, CRC).
    #[error("{0}")]
    CorruptBatch(String),
    /// A batch is larger than the log accepts.
    #[error("{0}")]
    BatchTooLarge(String),
    /// The disk is full.
    #[error("{0}")]
    DiskFull(String),
    /// An idempotent producer's epoch is older than the partition's.
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// An idempotent producer's sequence is not the next one.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// Stored bytes at the requested offsets failed their checks: that range is never
    /// served, and retrying cannot help, so protocols report it as final to consumers.
    #[error("{0}")]
    CorruptStored(String),
    /// Storage failed (I/O, poisoned partition).
    #[error("{0}")]
    Storage(String),
    /// A topic name breaks the naming rules.
    #[error("{0}")]
    InvalidTopic(String),
    /// A topic of that name exists.
    #[error("{0}")]
    TopicExists(String),
    /// A creation would take the broker past its partition cap.
    #[error("{0}")]
    PartitionLimit(String),
    /// A topic configuration is out of bounds.
    #[error("{0}")]
    InvalidConfig(String),
    /// A partition count that cannot be (CreatePartitions to fewer or as many).
    #[error("{0}")]
    InvalidPartitions(String),
    /// A replication factor the cluster cannot give.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// The metadata change could not be committed now (no metadata leader, or not in time).
    #[error("{0}")]
    NotController(String),
    /// A replica fetch named an older leader epoch than the leader's.
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(String),
    /// A replica fetch named a newer leader epoch than the leader's.
    #[error("unknown leader epoch: {0}")]
    UnknownLeaderEpoch(String),
    /// Fewer in-sync replicas than `min.insync.replicas` for an `acks=all` write.
    #[error("{0}")]
    NotEnoughReplicas(String),
    /// An `acks=all` write reached the high watermark after the in-sync set shrank below
    /// `min.insync.replicas` (it is in the log, on fewer copies than asked for).
    #[error("{0}")]
    NotEnoughReplicasAfterAppend(String),
    /// An `acks=all` write was not replicated in time (it may still commit).
    #[error("{0}")]
    ReplicationTimedOut(String),
    /// The request is malformed for the shard (e.g. an empty or oversized group name).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// This node coordinates the group but is still loading its offsets slot (replaying it
    /// after becoming its leader): retry shortly.
    #[error("the group's committed offsets are still loading")]
    CoordinatorLoading,
    /// ElectLeaders: the preferred replica leads already.
    #[error("{0}")]
    ElectionNotNeeded(String),
    /// ElectLeaders: the preferred replica is not a live in-sync replica.
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    /// AlterPartitionReassignments: the replicas named are not a valid placement.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// AlterPartitionReassignments: a cancellation with no reassignment under way.
    #[error("{0}")]
    NoReassignmentInProgress(String),
    /// The shard (or the shard it needed) is stopping or unreachable.
    #[error("{0}")]
    ShuttingDown(&'static str),
    /// An internal inconsistency (e.g. a reply of the wrong kind); never the client's fault.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<&LogError> for ShardError {
    fn from(error: &LogError) -> Self {
        let text = error.to_string();
        match error {
            LogError::OffsetOutOfRange { .. } => ShardError::OffsetOutOfRange(text),
            LogError::InvalidBatch(_) | LogError::BatchLengthMismatch { .. } => {
                ShardError::CorruptBatch(text)
            }
            LogError::BatchTooLarge { .. } => ShardError::BatchTooLarge(text),
            LogError::DiskFull { .. } => ShardError::DiskFull(text),
            LogError::Closed => ShardError::ShuttingDown("partition log is closed"),
            LogError::InvalidProducerEpoch { .. } => ShardError::InvalidProducerEpoch(text),
            LogError::OutOfOrderSequence { .. } => ShardError::OutOfOrderSequence(text),
            LogError::Corrupt { .. } => ShardError::CorruptStored(text),
            _ => ShardError::Storage(text),
        }
    }
}

impl From<LogError> for ShardError {
    fn from(error: LogError) -> Self {
        ShardError::from(&error)
    }
}

impl From<&MetaError> for ShardError {
    fn from(error: &MetaError) -> Self {
        let text = error.to_string();
        match error {
            MetaError::InvalidTopic { .. } => ShardError::InvalidTopic(text),
            MetaError::TopicExists(_) => ShardError::TopicExists(text),
            MetaError::UnknownTopic(_) => ShardError::UnknownTopicOrPartition,
            MetaError::InvalidConfig(_) => ShardError::InvalidConfig(text),
            _ => ShardError::Storage(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_keep_their_kind_and_message() {
        let closed = ShardError::from(&LogError::Closed);
        assert!(matches!(closed, ShardError::ShuttingDown(_)));
        let big = LogError::BatchTooLarge { len: 10, max: 5 };
        let mapped = ShardError::from(&big);
        assert!(matches!(mapped, ShardError::BatchTooLarge(_)));
        assert_eq!(mapped.to_string(), big.to_string());
        let unknown = ShardError::from(&MetaError::UnknownTopic("t".into()));
        assert_eq!(unknown, ShardError::UnknownTopicOrPartition);
    }
}
