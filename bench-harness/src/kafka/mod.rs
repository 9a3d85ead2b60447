//! `--protocol kafka`: a small Kafka client for the load generator, on glommio.
//!
//! * [`conn`]: one connection: size-prefixed frames, correlation ids, pipelined requests
//!   (bounded) matched in order;
//! * [`client`]: ApiVersions negotiation, Metadata (leaders, broker endpoints, one connection
//!   per leader node), CreateTopics, ListOffsets;
//! * [`batch`]: the RecordBatch v2 encoder (keys, the five codecs) and the Produce request
//!   framing around it;
//! * [`producer`]: batching per partition, linger, in-flight windows, per-batch reports;
//! * [`consumer`]: fetch rounds over the leaders, batch decoding;
//! * [`group`]: classic consumer-group membership and offset commits.
//!
//! It speaks what a benchmark needs: Produce v3..=9 (one batch per partition and request),
//! sessionless Fetch v4..=12 (read_uncommitted), ListOffsets, Metadata, CreateTopics, and for
//! `--group` FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch. No idempotence, no transactions.

pub mod batch;
pub mod client;
pub mod conn;
pub mod consumer;
pub mod group;
pub mod producer;

use std::fmt;

/// Largest fetch response asked for (`max_bytes`).
pub const FETCH_BYTES_MAX: usize = 16 << 20;
/// Largest part of it for one partition (`partition_max_bytes`).
pub const FETCH_PARTITION_BYTES_MAX: usize = 4 << 20;

/// What went wrong talking Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaError {
    /// The TCP connection could not be established.
    Connect(String),
    /// The connection broke or was closed.
    Closed(String),
    /// No response within the request timeout.
    Timeout,
    /// The broker answered `code` to `api`.
    Code {
        /// The request.
        api: &'static str,
        /// The Kafka error code.
        code: i16,
    },
    /// A response that does not decode or does not fit the request.
    Malformed(String),
    /// The broker lacks an API or version the tool needs, or sent something the tool does
    /// not handle (compressed batches).
    Unsupported(String),
}

/// Results of this module.
pub type Result<T, E = KafkaError> = std::result::Result<T, E>;

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaError::Connect(m) => write!(f, "cannot connect to {m}"),
            KafkaError::Closed(m) => write!(f, "connection closed: {m}"),
            KafkaError::Timeout => write!(f, "no response within {:?}", conn::REQUEST_TIMEOUT),
            KafkaError::Code { api, code } => {
                write!(f, "{api}: Kafka error {} ({code})", error_name(*code))
            }
            KafkaError::Malformed(m) => write!(f, "malformed response: {m}"),
            KafkaError::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

impl std::error::Error for KafkaError {}

impl KafkaError {
    /// The kind counted in the run's errors: `kafka:NOT_LEADER_OR_FOLLOWER`, `kafka:timeout`...
    pub fn kind(&self) -> String {
        match self {
            KafkaError::Connect(_) => "kafka:connect".into(),
            KafkaError::Closed(_) => "kafka:connection_closed".into(),
            KafkaError::Timeout => "kafka:timeout".into(),
            KafkaError::Code { code, .. } => format!("kafka:{}", error_name(*code)),
            KafkaError::Malformed(_) => "kafka:malformed".into(),
            KafkaError::Unsupported(_) => "kafka:unsupported".into(),
        }
    }

    /// Whether a retry after a metadata refresh may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Connect(_) | KafkaError::Closed(_) | KafkaError::Timeout => true,
            KafkaError::Code { code, .. } => is_retriable_code(*code),
            KafkaError::Malformed(_) | KafkaError::Unsupported(_) => false,
        }
    }
}

/// Kafka error codes (others read `CODE_<n>`).
pub use tidelog_wire::kafka::code;

/// The name of Kafka error `code`, as in Kafka's `Errors` enum.
pub fn error_name(code: i16) -> String {
    let name = match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        4 => "INVALID_FETCH_SIZE",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        13 => "NETWORK_EXCEPTION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        21 => "INVALID_REQUIRED_ACKS",
        22 => "ILLEGAL_GENERATION",
        25 => "UNKNOWN_MEMBER_ID",
        27 => "REBALANCE_IN_PROGRESS",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        32 => "INVALID_TIMESTAMP",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        56 => "KAFKA_STORAGE_ERROR",
        74 => "FENCED_LEADER_EPOCH",
        75 => "UNKNOWN_LEADER_EPOCH",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        87 => "INVALID_RECORD",
        79 => "MEMBER_ID_REQUIRED",
        89 => "THROTTLING_QUOTA_EXCEEDED",
        _ => return format!("CODE_{code}"),
    };
    name.into()
}

/// Codes Kafka marks retriable (a refreshed leader or a later attempt may succeed).
pub fn is_retriable_code(code: i16) -> bool {
    matches!(
        code,
        3 | 5 | 6 | 7 | 13 | 14 | 15 | 16 | 19 | 20 | 56 | 74 | 75 | 89
    )
}

/// `code` as a result.
///
/// # Errors
/// [`KafkaError::Code`] unless `code` is 0.
pub fn check(api: &'static str, code: i16) -> Result<()> {
    if code == code::NONE {
        Ok(())
    } else {
        Err(KafkaError::Code { api, code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_name_the_kafka_code() {
        let e = KafkaError::Code {
            api: "Produce",
            code: 6,
        };
        assert_eq!(e.kind(), "kafka:NOT_LEADER_OR_FOLLOWER");
        assert!(e.is_retriable());
        assert_eq!(error_name(9999), "CODE_9999");
        assert!(!KafkaError::Code {
            api: "Produce",
            code: 87
        }
        .is_retriable());
        assert_eq!(KafkaError::Timeout.kind(), "kafka:timeout");
        assert!(check("x", 0).is_ok());
    }
}
