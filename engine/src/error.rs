//! Errors of the storage engine.

use std::io;
use std::path::PathBuf;

use tidelog_wire::WireError;

/// Everything a partition log operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The requested offset is below the log start or above the log end.
    #[error("offset {requested} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Offset the caller asked for.
        requested: u64,
        /// First readable offset.
        start: u64,
        /// Log end offset (the next offset to be assigned).
        end: u64,
    },
    /// An earlier fsync or write failed; the outcome of buffered writes is unknown, so the
    /// partition refuses all further writes until it is reopened.
    #[error("partition is poisoned after a failed {op}: {reason}; reopen to recover")]
    Poisoned {
        /// The operation that failed (write, fdatasync, ...).
        op: &'static str,
        /// The original error, as text (io::Error is not Clone).
        reason: String,
    },
    /// The device has no space for the append; nothing of it was written.
    #[error("disk full while appending to {path}")]
    DiskFull {
        /// The segment that could not grow.
        path: PathBuf,
    },
    /// Stored bytes failed validation (CRC, length, header). They are never served.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The file holding the damaged bytes.
        path: PathBuf,
        /// Byte position of the damaged batch.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// A read that must not wait found the shard's read memory spent (see
    /// [`MemoryWait::IfFree`](crate::log::memory::MemoryWait)); nothing was read.
    #[error("the shard's read memory is spent")]
    MemoryBusy,
    /// The batch handed to append is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] WireError),
    /// The batch handed to append is larger than the configured maximum.
    #[error("batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// Length of the refused batch.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The batch's header declares a length other than the bytes handed to append.
    #[error("batch header declares {declared} bytes but {actual} were given")]
    BatchLengthMismatch {
        /// Length in the header.
        declared: usize,
        /// Bytes handed over.
        actual: usize,
    },
    /// A configuration value is out of its bounds.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// An idempotent producer wrote with an epoch older than the partition has seen (a
    /// zombie producer instance). Kafka: `INVALID_PRODUCER_EPOCH` (47).
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        /// The batch's producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The producer's current epoch in this partition.
        current: i16,
    },
    /// An idempotent producer's batch does not continue its sequence (a lost batch, or a
    /// new epoch not starting at 0). Kafka: `OUT_OF_ORDER_SEQUENCE_NUMBER` (45).
    #[error("producer {producer_id} epoch {epoch}: sequence {sequence}, expected {expected}")]
    OutOfOrderSequence {
        /// The batch's producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's first sequence.
        sequence: i32,
        /// The sequence the partition expected.
        expected: i32,
    },
    /// The log was closed or deleted.
    #[error("partition log is closed")]
    Closed,
    /// A replicated batch does not start where the follower's log ends.
    #[error("replicated batch starts at {base}, the log ends at {end}")]
    NotAtEnd {
        /// The batch's base offset.
        base: i64,
        /// The log end.
        end: u64,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        // glommio wraps OS errors in its own type: the errno may be gone, the kind is kept.
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            return LogError::DiskFull { path };
        }
        LogError::Io { op, path, source }
    }
}

/// Result alias for engine operations.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
