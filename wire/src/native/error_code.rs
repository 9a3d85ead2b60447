//! Rust-side helpers on the generated [`ErrorCode`]: descriptions, retry
//! classification and the mapping from decode errors.
//!
//! The generated type is an open `i16` newtype, so a client may receive a
//! code newer than itself; such codes print as "unknown error code N" and
//! are not retriable.

use super::ErrorCode;
use crate::WireError;

impl ErrorCode {
    /// A short description, or `None` for a code this crate does not know.
    pub fn description(self) -> Option<&'static str> {
        Some(match self {
            Self::None => "success",
            Self::Unknown => "unexpected server error",
            Self::InvalidFrame => "malformed frame",
            Self::UnsupportedVersion => "unsupported protocol version or message type",
            Self::UnknownTopicOrPartition => "unknown topic or partition",
            Self::OffsetOutOfRange => "offset out of range",
            Self::CorruptBatch => "corrupt record batch",
            Self::RecordTooLarge => "record batch too large",
            Self::TopicAlreadyExists => "topic already exists",
            Self::InvalidTopic => "invalid topic name",
            Self::InvalidPartitions => "invalid partition count",
            Self::InvalidConfig => "invalid topic configuration",
            Self::RequestTimedOut => "request timed out",
            Self::NotOwner => "shard does not own the partition",
            Self::DiskFull => "disk full",
            Self::StorageError => "storage error (partition poisoned or I/O failed)",
            Self::InvalidRequest => "invalid request",
            Self::GroupNotFound => "consumer group not found",
            Self::TooManyConnections => "too many connections",
            Self::ShuttingDown => "broker shutting down",
            Self::FencedLeaderEpoch => "leader epoch is stale (a newer leader exists)",
            Self::UnknownLeaderEpoch => "leader epoch is newer than the leader's",
            _ => return None,
        })
    }

    /// Whether the same request may succeed if retried unchanged (after a
    /// metadata refresh for [`NotOwner`](Self::NotOwner), after a reconnect
    /// for [`TooManyConnections`](Self::TooManyConnections) and
    /// [`ShuttingDown`](Self::ShuttingDown)).
    ///
    /// [`StorageError`](Self::StorageError) and [`DiskFull`](Self::DiskFull)
    /// are not: a poisoned partition refuses writes until an operator
    /// restarts the broker, and there is no replica to fail over to. Unknown
    /// codes are not retriable.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            Self::RequestTimedOut
                | Self::NotOwner
                | Self::TooManyConnections
                | Self::ShuttingDown
                | Self::FencedLeaderEpoch
                | Self::UnknownLeaderEpoch
        )
    }

    /// Whether this is [`ErrorCode::None`].
    pub fn is_ok(self) -> bool {
        self == Self::None
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.description() {
            Some(d) => f.write_str(d),
            None => write!(f, "unknown error code {}", self.0),
        }
    }
}

impl From<&WireError> for ErrorCode {
    /// The code a server answers with when decoding a frame, or a batch in
    /// it, fails.
    fn from(e: &WireError) -> Self {
        match e {
            WireError::UnknownMessageType { .. } => Self::UnsupportedVersion,
            WireError::MissingBody { .. } => Self::InvalidRequest,
            WireError::BadFrameLength { .. }
            | WireError::FrameTooLarge { .. }
            | WireError::HeaderTooLarge { .. }
            | WireError::HeaderOutOfBounds { .. }
            | WireError::BadIdentifier
            | WireError::InvalidHeader(_)
            | WireError::BodyRefOutOfBounds { .. } => Self::InvalidFrame,
            WireError::TooLarge { .. } | WireError::TooManyRecords { .. } => Self::RecordTooLarge,
            _ => Self::CorruptBatch,
        }
    }
}
