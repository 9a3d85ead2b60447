//! Per-partition log configuration. Every knob is documented in `tuning.md`.

use crate::error::{LogError, Result};
use crate::limits;

/// How one partition log behaves. Topic configuration maps onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would exceed this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one has been written to for this long.
    pub segment_ms: i64,
    /// Add a sparse index entry after at least this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Buffered (non-`acks=all`) appends are made durable once this many bytes are unsynced.
    pub flush_bytes: u64,
    /// ... or once the oldest unsynced append is this old.
    pub flush_interval_ms: i64,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this (`None`: never; a
    /// negative value is invalid).
    pub retention_ms: Option<i64>,
    /// Space reserved ahead of the write head with one fallocate.
    pub preallocate_bytes: u64,
    /// Largest batch accepted by append.
    pub max_batch_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_bytes: 1 << 20,
            flush_interval_ms: 100,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            preallocate_bytes: limits::PREALLOCATE_STEP_BYTES,
            max_batch_bytes: 1 << 20,
        }
    }
}

impl LogConfig {
    /// Checks every value against its bounds.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] naming the first value out of bounds.
    pub fn validate(&self) -> Result<()> {
        let fail = |what: String| Err(LogError::InvalidConfig(what));
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return fail(format!(
                "segment_bytes {} not in [{}, {}]",
                self.segment_bytes,
                limits::SEGMENT_BYTES_MIN,
                limits::SEGMENT_BYTES_MAX
            ));
        }
        if self.segment_ms <= 0 {
            return fail(format!("segment_ms {} must be positive", self.segment_ms));
        }
        if let Some(ms) = self.retention_ms.filter(|&ms| ms < 0) {
            // A negative age limit would make every sealed segment expired.
            return fail(format!(
                "retention_ms {ms} must not be negative (no limit is None)"
            ));
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be positive".into());
        }
        if self.flush_interval_ms <= 0 {
            return fail("flush_interval_ms must be positive".into());
        }
        if self.preallocate_bytes == 0
            || !self
                .preallocate_bytes
                .is_multiple_of(limits::IO_ALIGNMENT as u64)
        {
            return fail(format!(
                "preallocate_bytes {} must be a positive multiple of {}",
                self.preallocate_bytes,
                limits::IO_ALIGNMENT
            ));
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > limits::BATCH_BYTES_MAX {
            return fail(format!(
                "max_batch_bytes {} not in [1, {}]",
                self.max_batch_bytes,
                limits::BATCH_BYTES_MAX
            ));
        }
        if self.max_batch_bytes as u64 > self.segment_bytes {
            return fail("max_batch_bytes exceeds segment_bytes".into());
        }
        Ok(())
    }
}
