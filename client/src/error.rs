//! [`ClientError`], the one error type of this crate.

use std::net::SocketAddr;
use std::time::Duration;

use tidelog_wire::batch::Compression;
use tidelog_wire::native::ErrorCode;
use tidelog_wire::WireError;

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
///
/// `Clone` because one failed produce request fails every record of its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting to a broker failed (refused, unreachable, timed out).
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The operating system's error kind.
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// The connection closed (or broke) before the response arrived.
    #[error("connection closed{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    ConnectionClosed {
        /// Why, when known.
        reason: Option<String>,
    },
    /// Reading or writing a socket failed.
    #[error("i/o error ({kind:?}): {message}")]
    Io {
        /// The operating system's error kind.
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// The server answered with an error code.
    #[error("server error: {code} ({message})")]
    Protocol {
        /// The code.
        code: ErrorCode,
        /// Context: the server's message or what the request was about.
        message: String,
    },
    /// The topic or partition does not exist (in the server's answer or in metadata).
    #[error("unknown topic or partition {topic}{}", partition.map(|p| format!("/{p}")).unwrap_or_default())]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The partition, when one was asked for.
        partition: Option<i32>,
    },
    /// No response within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server sent bytes that do not decode.
    #[error("malformed data from the server: {0}")]
    Wire(#[from] WireError),
    /// The server answered with a message of the wrong kind.
    #[error("unexpected response: expected {expected}, got {got}")]
    UnexpectedResponse {
        /// The response kind that was expected.
        expected: &'static str,
        /// The kind received.
        got: &'static str,
    },
    /// A Kafka RecordBatch v2 payload is malformed.
    #[error("malformed Kafka record batch: {0}")]
    KafkaBatch(&'static str),
    /// A fetched batch is compressed with a codec this client does not decode, or its
    /// Tidelog header and its Kafka batch disagree on the codec.
    #[error("unsupported compression {0:?}")]
    UnsupportedCompression(Compression),
    /// A compressed Kafka batch did not inflate (corrupt, or larger than
    /// [`INFLATED_BATCH_BYTES_MAX`](crate::limits::INFLATED_BATCH_BYTES_MAX)).
    #[error("compressed Kafka batch: {0}")]
    Inflate(String),
    /// The server speaks no protocol version this client speaks.
    #[error("server speaks no common protocol version (client {min}..={max})")]
    UnsupportedVersion {
        /// Oldest version of the client.
        min: u16,
        /// Newest version of the client.
        max: u16,
    },
    /// A record does not fit the producer's buffer.
    #[error("record of {size} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        /// The record's size (key + value).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The producer's buffer and backlog are full; retry after some deliveries complete.
    #[error("producer buffer full ({backlog_bytes} bytes queued)")]
    BufferFull {
        /// Bytes waiting in the backlog.
        backlog_bytes: usize,
    },
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
    /// A caller-supplied value is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Whether retrying the same request (after a metadata refresh and, for connection errors,
    /// a reconnect) may succeed.
    ///
    /// Besides the server's retriable codes this includes `UnknownTopicOrPartition`: right after
    /// a topic is created, shards other than the one that handled the creation may not know it
    /// yet. Retries are always bounded ([`ClientConfig::retries`](crate::ClientConfig)), so a
    /// topic that really does not exist still fails, only later.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectionClosed { .. }
            | Self::Io { .. }
            | Self::Timeout(_)
            | Self::UnknownTopic { .. } => true,
            Self::Protocol { code, .. } => {
                code.is_retriable() || *code == ErrorCode::UnknownTopicOrPartition
            }
            _ => false,
        }
    }

    /// Whether this error calls for fresh metadata before a retry.
    pub fn needs_metadata(&self) -> bool {
        match self {
            Self::Protocol { code, .. } => {
                *code == ErrorCode::NotOwner || *code == ErrorCode::UnknownTopicOrPartition
            }
            Self::UnknownTopic { .. } | Self::Connect { .. } | Self::ConnectionClosed { .. } => {
                true
            }
            _ => false,
        }
    }

    /// The server's error code, if this error carries one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Protocol { code, .. } => Some(*code),
            Self::UnknownTopic { .. } => Some(ErrorCode::UnknownTopicOrPartition),
            _ => None,
        }
    }

    pub(crate) fn io(e: &std::io::Error) -> Self {
        Self::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    pub(crate) fn closed(reason: impl Into<String>) -> Self {
        Self::ConnectionClosed {
            reason: Some(reason.into()),
        }
    }

    /// Maps a per-partition (or per-topic) code to an error, `Ok(())` for `ErrorCode::None`.
    pub(crate) fn check(code: ErrorCode, topic: &str, partition: Option<i32>) -> Result<()> {
        match code {
            ErrorCode::None => Ok(()),
            ErrorCode::UnknownTopicOrPartition => Err(Self::UnknownTopic {
                topic: topic.to_owned(),
                partition,
            }),
            code => Err(Self::Protocol {
                code,
                message: match partition {
                    Some(p) => format!("{topic}/{p}"),
                    None => topic.to_owned(),
                },
            }),
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::io(&e)
    }
}
