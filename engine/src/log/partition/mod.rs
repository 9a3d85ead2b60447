//! A partition log: an ordered, durable sequence of batches addressed by offsets.
//!
//! State machine of one partition:
//! - **Appends** take the write gate, stamp the next offset into the batch, copy it into the
//!   active segment's write buffer and put the batch (shared, not copied) into the shard's
//!   batch cache, which serves it from the write buffer once that goes to the kernel.
//! - **Group commit**: [`PartitionLog::sync`] makes everything appended so far durable. One
//!   caller at a time leads: it writes out the buffer, waits for the writes, releases the gate
//!   and fdatasyncs; callers arriving meanwhile wait and are covered by the next leader, so N
//!   concurrent `acks=all` appenders cost about one fdatasync per round, not N.
//! - **Reads** never take the gate: they are served from the batch cache when the offset is
//!   recent and otherwise from the segment files with DMA reads, CRC-checked before serving.
//! - **Poison**: a failed write or fdatasync leaves the file in an unknown state, so the
//!   partition refuses every later write until it is reopened (and recovered).
//!
//! Offsets: `log_start <= high_watermark == log_end`. There is one replica, so the high
//! watermark is the log end, as in Kafka with a single in-sync replica.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tidelog_wire::batch::{check_crc, stamp_base_offset};

use super::cache::BatchCache;
use super::files::SegmentFiles;
use super::memory::{MemoryWait, ReadMemory, ReadPermit};
use super::producers::{ProducerStates, Verdict};
use super::segment::{
    parse_segment_name, read_whole, scan, scan_recovering, segment_path, write_index_file,
    BatchMeta, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::writer::{align_down, align_up, InFlightWrites, SegmentWriter};
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::io::{Clock, OpenMode, Storage, StorageFile};
use crate::log::index::{OffsetIndex, TimeIndex};
use crate::sync::{Event, Gate};

mod clean;
mod read;
mod recovery;
mod truncate;
mod write;

pub use clean::CLEAN_SHUTDOWN_FILE;
use read::ReadAhead;
pub use recovery::{PRODUCER_STATE_FILE, RECOVERY_POINT_FILE};
pub use truncate::{reset_closed, truncate_closed};
use write::Sealing;

/// The producer-state snapshot on disk: the state version it holds, the offset it covers,
/// and whether a new one is being written.
#[derive(Debug, Clone, Copy, Default)]
struct SnapshotMark {
    version: u64,
    covered: u64,
    running: bool,
}

/// When a producer-state snapshot is worth writing (each costs a file write, an fdatasync, a
/// rename and a directory sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotWhen {
    /// Housekeeping: the state changed, or the snapshot covers less than the active
    /// segment, so that a crash rebuilds from at most the active segment even when no
    /// producer is idempotent.
    Stale,
    /// Close: also whenever it does not cover the log end, so that the next open reads
    /// nothing back.
    Behind,
}

/// How durable an append must be before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Return once the batch is in the log's memory (`acks=0/1`); the flush policy or a
    /// later [`PartitionLog::sync`] makes it durable.
    Buffered,
    /// Return only after the batch has been written and fdatasynced (`acks=all`).
    Synced,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// The flush policy wants a [`PartitionLog::sync`] now.
    pub flush_due: bool,
    /// The batch was a retry of an idempotent producer's batch already in the log: nothing
    /// was appended, and the offsets are those of the original.
    pub duplicate: bool,
}

/// Sealed segments (besides the active one) whose batch headers are scanned at open to
/// rebuild the idempotent producer state. Bounded so that opening a partition costs a
/// fixed amount of I/O however long its log is: a producer silent for longer than this
/// many segments loses its state and is then accepted at any sequence, which is Kafka's
/// behaviour for a producer whose batches were removed by retention.
pub const PRODUCER_STATE_SEGMENTS: usize = 2;

/// Bytes handed out by a read: one or more whole batches.
#[derive(Debug, Clone)]
pub enum ReadChunk<B> {
    /// Batches from the batch cache held in memory of their own (shared, not copied).
    Cache(Bytes),
    /// One batch from the batch cache held in two pieces: a Kafka produce's `head` (the
    /// Tidelog header and the Kafka fields up to its CRC, written by the broker) and its
    /// `tail` (the producer's records, shared with the request they arrived in, never
    /// copied in user space).
    Split {
        /// The first bytes of the batch (at least the Tidelog header).
        head: Bytes,
        /// The rest of the batch.
        tail: Bytes,
    },
    /// Contiguous whole batches in a storage buffer: a DMA read of a segment file, or a
    /// write buffer the batch cache serves them from.
    Disk(B),
}

impl<B: Deref<Target = [u8]>> ReadChunk<B> {
    /// Bytes of the chunk.
    pub fn len(&self) -> usize {
        match self {
            ReadChunk::Cache(bytes) => bytes.len(),
            ReadChunk::Split { head, tail } => head.len() + tail.len(),
            ReadChunk::Disk(buf) => buf.len(),
        }
    }

    /// True for a chunk of no bytes (reads never hand one out).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk as one slice, unless it is held in two pieces.
    pub fn contiguous(&self) -> Option<&[u8]> {
        match self {
            ReadChunk::Cache(bytes) => Some(bytes),
            ReadChunk::Split { .. } => None,
            ReadChunk::Disk(buf) => Some(buf),
        }
    }

    /// The chunk's pieces in order: itself, or a split batch's head and tail. Write them
    /// one after the other to send the chunk.
    pub fn pieces(&self) -> [&[u8]; 2] {
        match self {
            ReadChunk::Cache(bytes) => [bytes, &[]],
            ReadChunk::Split { head, tail } => [head, tail],
            ReadChunk::Disk(buf) => [buf, &[]],
        }
    }

    /// The first piece: the whole chunk, or a split batch's head. Its batch headers can be
    /// walked (a split chunk is one batch whose header lies in its head).
    pub fn head(&self) -> &[u8] {
        self.pieces()[0]
    }

    /// The chunk copied into one buffer (tests, and callers that need one slice).
    pub fn to_vec(&self) -> Vec<u8> {
        let [head, tail] = self.pieces();
        let mut out = Vec::with_capacity(head.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(tail);
        out
    }
}

/// What a shard's partition logs share: the open sealed-segment files, the read-memory
/// budget and the batch cache, each bounded for the whole shard.
pub struct LogResources<F: StorageFile> {
    /// Open sealed-segment files.
    pub files: SegmentFiles<F>,
    /// Memory for disk-read buffers.
    pub memory: ReadMemory,
    /// Recent and recently read batches.
    pub cache: BatchCache<F::ReadBuf>,
}

impl<F: StorageFile> Clone for LogResources<F> {
    fn clone(&self) -> Self {
        LogResources {
            files: self.files.clone(),
            memory: self.memory.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<F: StorageFile> LogResources<F> {
    /// Resources for one log on its own (tests, tools): the default file and read-memory
    /// bounds and a cache of `cache_bytes`.
    pub fn standalone(cache_bytes: usize) -> Self {
        LogResources {
            files: SegmentFiles::new(crate::log::files::OPEN_SEGMENT_FILES_DEFAULT),
            memory: ReadMemory::new(crate::limits::READ_MEMORY_BYTES_PER_SHARD),
            cache: BatchCache::new(cache_bytes),
        }
    }
}

/// The result of [`PartitionLog::read`].
#[derive(Debug, Clone)]
pub struct LogRead<B> {
    /// Whole batches in offset order; empty when reading at the log end.
    pub chunks: Vec<ReadChunk<B>>,
    /// Offset after the last returned batch (the offset to read next).
    pub next_offset: u64,
    /// Offsets below this are readable.
    pub high_watermark: u64,
    /// First readable offset.
    pub log_start: u64,
    /// The read memory the disk chunks hold (none for cache reads): keep it until they are
    /// sent.
    pub memory: ReadPermit,
}

impl<B: Deref<Target = [u8]>> LogRead<B> {
    /// Total bytes returned.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(ReadChunk::len).sum()
    }

    /// True when no batch was returned.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Counters of one partition log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches appended.
    pub appends: u64,
    /// Bytes appended.
    pub appended_bytes: u64,
    /// fdatasync calls on segment data.
    pub fsyncs: u64,
    /// Reads served from the batch cache.
    pub cache_reads: u64,
    /// Reads served from segment files.
    pub disk_reads: u64,
    /// Disk reads whose bytes a read-ahead had already fetched.
    pub readahead_hits: u64,
    /// Segments rolled.
    pub rolls: u64,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
    /// Offsets (records) appended.
    pub appended_records: u64,
    /// Bytes handed out by reads (consumers and followers).
    pub read_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appends: Cell<u64>,
    appended_bytes: Cell<u64>,
    fsyncs: Cell<u64>,
    cache_reads: Cell<u64>,
    disk_reads: Cell<u64>,
    readahead_hits: Cell<u64>,
    rolls: Cell<u64>,
    segments_deleted: Cell<u64>,
    appended_records: Cell<u64>,
    read_bytes: Cell<u64>,
    fsync_latency: crate::metrics::LatencyHistogram,
}

fn bump(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get() + by);
}

struct State<F: StorageFile> {
    segments: BTreeMap<u64, Segment<F>>,
    /// Taken by whoever holds the write gate; `None` only while they work.
    writer: Option<SegmentWriter<F>>,
    /// The active writer's writes in flight, for waiting on them without the gate.
    in_flight: Rc<InFlightWrites<F>>,
    log_start: u64,
    log_end: u64,
    /// Offsets below are written to the file; bytes of the active segment below
    /// `written_bytes` likewise.
    written_offset: u64,
    written_bytes: u64,
    synced_offset: u64,
    appended_bytes_total: u64,
    synced_bytes_total: u64,
    oldest_unsynced_ms: Option<i64>,
    poison: Option<(&'static str, String)>,
    /// Idempotent producers: read and updated only under the write gate.
    producers: ProducerStates,
    sync_running: bool,
    /// A close is under way: appends are refused from its start, so that everything
    /// appended before is in what it makes durable.
    closing: bool,
    closed: bool,
    /// The recovery point on disk: every offset below it was durable when it was written.
    recovery_point: u64,
    /// A checkpoint of the recovery point is being written.
    checkpoint_running: bool,
}

/// One partition's log. Shard-local: `!Send`, shared between the shard's tasks by `Rc`.
pub struct PartitionLog<S: Storage, C: Clock> {
    /// This open's identity in the shard's file cache.
    id: u64,
    /// The shard's open sealed-segment files.
    files: SegmentFiles<S::File>,
    /// The shard's budget for disk-read buffers.
    memory: ReadMemory,
    /// The shard's batch cache.
    cache: BatchCache<<S::File as StorageFile>::ReadBuf>,
    dir: PathBuf,
    storage: S,
    clock: C,
    config: LogConfig,
    /// The settings a topic config change alters while the log is open (its `config`
    /// fields of the same names are the values it opened with).
    tunables: Cell<Tunables>,
    state: RefCell<State<S::File>>,
    gate: Gate,
    synced: Event,
    /// Notified when a close ends (or its caller gives up on it): a second close waits for
    /// the first instead of returning while files are still being written.
    close_ended: Event,
    counters: Counters,
    readahead: RefCell<Option<ReadAhead<<S::File as StorageFile>::ReadBuf>>>,
    /// The last rolled segment's trimming and index files, still to do.
    pending_seal: RefCell<Option<Sealing<S::File>>>,
    /// The offset after the last disk read: a read starting there is sequential.
    last_disk_read_end: Cell<Option<u64>>,
    /// What the producer-state snapshot file holds, and whether one is being written.
    producer_snapshot: Cell<SnapshotMark>,
    /// Whether the open trusted a clean-shutdown record instead of scanning the active
    /// segment.
    opened_clean: bool,
    /// The replica's leader-epoch cache (`log::epochs`).
    epochs: RefCell<crate::log::epochs::LeaderEpochs>,
}

impl<S: Storage, C: Clock> std::fmt::Debug for PartitionLog<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start", &state.log_start)
            .field("log_end", &state.log_end)
            .field("segments", &state.segments.len())
            .finish()
    }
}

impl<S: Storage, C: Clock> Drop for PartitionLog<S, C> {
    fn drop(&mut self) {
        // A log dropped without `close` (a failed open's cleanup, a shard stopping) must not
        // leave its sealed segments' files open, or its batches, in the shard's caches.
        self.files.forget_log(self.id);
        self.cache.forget_log(self.id);
    }
}

/// The settings of [`LogConfig`] that change while a log is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// As [`LogConfig::segment_bytes`].
    pub segment_bytes: u64,
    /// As [`LogConfig::segment_ms`].
    pub segment_ms: i64,
    /// As [`LogConfig::retention_bytes`].
    pub retention_bytes: Option<u64>,
    /// As [`LogConfig::retention_ms`].
    pub retention_ms: Option<i64>,
}

impl Tunables {
    fn of(config: &LogConfig) -> Self {
        Tunables {
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_ms,
        }
    }
}

impl<S: Storage, C: Clock> PartitionLog<S, C> {
    /// The shard's open sealed-segment files this log uses.
    pub fn segment_files(&self) -> &SegmentFiles<S::File> {
        &self.files
    }

    /// The shard's batch cache this log uses.
    pub fn batch_cache(&self) -> &BatchCache<<S::File as StorageFile>::ReadBuf> {
        &self.cache
    }

    /// The shard's read-memory budget this log reads within.
    pub fn read_memory(&self) -> &ReadMemory {
        &self.memory
    }

    /// The idempotent producers this partition keeps: (producer id, epoch, last sequence
    /// written), by id (Kafka's DescribeProducers).
    pub fn producers(&self) -> Vec<(i64, i16, i32)> {
        self.state.borrow().producers.describe()
    }

    /// Number of idempotent producers whose state this partition keeps.
    pub fn producer_count(&self) -> usize {
        self.state.borrow().producers.len()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log opened with (see [`tunables`](Self::tunables) for the
    /// settings changed since).
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Segment and retention settings in force.
    pub fn tunables(&self) -> Tunables {
        self.tunables.get()
    }

    /// Applies `config`'s segment and retention settings to the open log (a topic config
    /// change): the next append rolls by the new segment limits, the next retention check
    /// deletes by the new retention. Other fields of `config` are ignored.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] when `config` does not validate (nothing changes).
    pub fn retune(&self, config: &LogConfig) -> Result<()> {
        config.validate()?;
        let new = Tunables::of(config);
        let old = self.tunables.replace(new);
        if old != new {
            tracing::info!(dir = %self.dir.display(), segment_bytes = new.segment_bytes,
                segment_ms = new.segment_ms, retention_bytes = ?new.retention_bytes,
                retention_ms = ?new.retention_ms, "partition settings changed");
        }
        Ok(())
    }

    /// First readable offset.
    pub fn log_start(&self) -> u64 {
        self.state.borrow().log_start
    }

    /// Offset the next appended record gets.
    pub fn log_end(&self) -> u64 {
        self.state.borrow().log_end
    }

    /// Offsets below this are visible to readers (equal to the log end: one replica).
    pub fn high_watermark(&self) -> u64 {
        self.state.borrow().log_end
    }

    /// Offsets below this are durable (written and fdatasynced).
    pub fn synced_offset(&self) -> u64 {
        self.state.borrow().synced_offset
    }

    /// The recovery point last checkpointed: recovery never cuts below it.
    pub fn recovery_point(&self) -> u64 {
        self.state.borrow().recovery_point
    }

    /// Whether this log's open trusted a clean-shutdown record (the last close was clean and
    /// nothing changed since) instead of scanning its active segment.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// Number of segments, sealed and active.
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        let state = self.state.borrow();
        state.segments.values().map(|s| s.size).sum()
    }

    /// True once [`close`](Self::close) or [`delete`](Self::delete) ran.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// Why the partition refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        let state = self.state.borrow();
        state
            .poison
            .as_ref()
            .map(|(op, reason)| format!("{op}: {reason}"))
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            appends: c.appends.get(),
            appended_bytes: c.appended_bytes.get(),
            fsyncs: c.fsyncs.get(),
            cache_reads: c.cache_reads.get(),
            disk_reads: c.disk_reads.get(),
            readahead_hits: c.readahead_hits.get(),
            rolls: c.rolls.get(),
            segments_deleted: c.segments_deleted.get(),
            appended_records: c.appended_records.get(),
            read_bytes: c.read_bytes.get(),
        }
    }

    /// Latency of this log's fdatasyncs of segment data.
    pub fn fsync_latency(&self) -> crate::metrics::HistogramSnapshot {
        self.counters.fsync_latency.snapshot()
    }
}
