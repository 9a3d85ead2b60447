//! A partition log: an ordered, durable sequence of batches addressed by offsets.
//!
//! State machine of one partition:
//! - **Appends** take the write gate, stamp the next offset into the batch, copy it into the
//!   active segment's write buffer and put the batch (shared, not copied) into the tail cache.
//! - **Group commit**: [`PartitionLog::sync`] makes everything appended so far durable. One
//!   caller at a time leads: it writes out the buffer, waits for the writes, releases the gate
//!   and fdatasyncs; callers arriving meanwhile wait and are covered by the next leader, so N
//!   concurrent `acks=all` appenders cost about one fdatasync per round, not N.
//! - **Reads** never take the gate: they are served from the tail cache when the offset is
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
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tidelog_wire::batch::{compute_crc, stamp_base_offset};

use super::cache::TailCache;
use super::producers::{ProducerStates, Verdict};
use super::segment::{
    parse_segment_name, read_whole, scan, segment_path, write_index_file, BatchMeta, Segment,
    INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::writer::{align_down, SegmentWriter};
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::io::{Clock, OpenMode, Storage, StorageFile};
use crate::log::index::{OffsetIndex, TimeIndex};
use crate::sync::{Event, Gate};

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
    /// Batches from the tail cache (shared, not copied).
    Cache(Bytes),
    /// Contiguous batches from a DMA read of a segment file.
    Disk(B),
}

impl<B: Deref<Target = [u8]>> Deref for ReadChunk<B> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadChunk::Cache(bytes) => bytes,
            ReadChunk::Disk(buf) => buf,
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
}

impl<B: Deref<Target = [u8]>> LogRead<B> {
    /// Total bytes returned.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
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
    /// Reads served from the tail cache.
    pub cache_reads: u64,
    /// Reads served from segment files.
    pub disk_reads: u64,
    /// Disk reads whose bytes a read-ahead had already fetched.
    pub readahead_hits: u64,
    /// Segments rolled.
    pub rolls: u64,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
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
}

/// What a roll leaves to do after the write gate is released (`PartitionLog::seal_pending`).
struct Sealing<F> {
    file: F,
    path: PathBuf,
    base: u64,
    size: u64,
    offset_index: Vec<u8>,
    time_index: Vec<u8>,
}

/// A read of the bytes after a sequential disk read, started before anyone asked for them:
/// the next fetch of a catch-up consumer finds them read (or on their way) instead of
/// waiting for the disk. One per partition; a read that does not continue it drops it.
struct ReadAhead<B> {
    /// The segment read (its base offset).
    segment: u64,
    /// The offset of the first batch at `position`.
    offset: u64,
    /// File position of the first byte.
    position: u64,
    future: Pin<Box<dyn Future<Output = std::io::Result<B>>>>,
}

fn bump(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get() + by);
}

struct State<F: StorageFile> {
    segments: BTreeMap<u64, Segment<F>>,
    /// Taken by whoever holds the write gate; `None` only while they work.
    writer: Option<SegmentWriter<F>>,
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
    cache: TailCache,
    poison: Option<(&'static str, String)>,
    /// Idempotent producers: read and updated only under the write gate.
    producers: ProducerStates,
    sync_running: bool,
    closed: bool,
}

/// One partition's log. Shard-local: `!Send`, shared between the shard's tasks by `Rc`.
pub struct PartitionLog<S: Storage, C: Clock> {
    dir: PathBuf,
    storage: S,
    clock: C,
    config: LogConfig,
    state: RefCell<State<S::File>>,
    gate: Gate,
    synced: Event,
    counters: Counters,
    readahead: RefCell<Option<ReadAhead<<S::File as StorageFile>::ReadBuf>>>,
    /// The last rolled segment's trimming and index files, still to do.
    pending_seal: RefCell<Option<Sealing<S::File>>>,
    /// The offset after the last disk read: a read starting there is sequential.
    last_disk_read_end: Cell<Option<u64>>,
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

/// The writer, lent out to the holder of the write gate; it goes back on drop. If a
/// multi-step operation is dropped half-way (`dirty`), the partition is poisoned.
struct WriterLease<'a, S: Storage, C: Clock> {
    log: &'a PartitionLog<S, C>,
    writer: Option<SegmentWriter<S::File>>,
    dirty: bool,
    _gate: crate::sync::GateGuard<'a>,
}

impl<S: Storage, C: Clock> WriterLease<'_, S, C> {
    fn writer(&mut self) -> &mut SegmentWriter<S::File> {
        self.writer
            .as_mut()
            .expect("a lease always holds the writer until dropped")
    }

    /// Publishes how far the writer has written, and evicts what the cache may now drop.
    fn publish_progress(&mut self) {
        let writer = self.writer.as_ref().expect("lease holds the writer");
        let mut state = self.log.state.borrow_mut();
        state.written_offset = writer.written_offset();
        state.written_bytes = writer.completed_end();
        let written = state.written_offset;
        state.cache.evict(written);
    }
}

impl<S: Storage, C: Clock> Drop for WriterLease<'_, S, C> {
    fn drop(&mut self) {
        let mut state = self.log.state.borrow_mut();
        if let Some(writer) = self.writer.take() {
            state.written_offset = writer.written_offset();
            state.written_bytes = writer.completed_end();
            state.writer = Some(writer);
        }
        if self.dirty && state.poison.is_none() {
            state.poison = Some(("write", "operation cancelled half-way".into()));
        }
    }
}

struct SyncRunning<'a, S: Storage, C: Clock>(&'a PartitionLog<S, C>);

impl<S: Storage, C: Clock> Drop for SyncRunning<'_, S, C> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().sync_running = false;
        self.0.synced.notify();
    }
}

impl<S: Storage, C: Clock> PartitionLog<S, C> {
    /// Opens (or creates) the partition log in `dir`, recovering it: every batch of the active
    /// segment is checked and the log is cut at the first torn or corrupt one; damaged or
    /// missing indexes of sealed segments are rebuilt.
    ///
    /// # Errors
    /// I/O errors, an invalid configuration, or [`LogError::Corrupt`] when a sealed segment
    /// does not hold the offsets its neighbours say it must.
    pub async fn open(storage: S, clock: C, dir: &Path, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let io = |op| move |e| LogError::io(op, dir, e);
        storage
            .create_dir_all(dir)
            .await
            .map_err(io("create directory"))?;
        let names = storage.list_dir(dir).await.map_err(io("list directory"))?;
        let mut bases: Vec<u64> = names
            .iter()
            .filter_map(|n| parse_segment_name(n, LOG_SUFFIX))
            .collect();
        bases.sort_unstable();
        for name in &names {
            // Leftovers of an interrupted index write, or of a segment deleted half-way.
            let stray_tmp = name.ends_with(".tmp");
            let orphan = [INDEX_SUFFIX, TIME_INDEX_SUFFIX].iter().any(|suffix| {
                parse_segment_name(name, suffix).is_some_and(|b| bases.binary_search(&b).is_err())
            });
            if stray_tmp || orphan {
                let path = dir.join(name);
                storage
                    .remove_file(&path)
                    .await
                    .map_err(|e| LogError::io("remove", &path, e))?;
            }
        }
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let segment = create_segment(&storage, dir, 0).await?;
            storage.sync_dir(dir).await.map_err(io("sync directory"))?;
            segments.insert(0, segment);
        }
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let segment = match next_base {
                Some(next) => open_sealed(&storage, dir, base, next, &config).await?,
                None => open_active(&storage, dir, base, &config).await?,
            };
            segments.insert(base, segment);
        }
        let (log_start, active) = {
            let first = segments.keys().next().copied().unwrap_or(0);
            let active = segments.values().next_back().expect("at least one segment");
            (first, active)
        };
        let log_end = active.next_offset;
        let end_bytes = active.size;
        let tail_start = align_down(end_bytes);
        let tail_len = (end_bytes - tail_start) as usize;
        let tail = if tail_len == 0 {
            Vec::new()
        } else {
            let page = active
                .file
                .read_at(tail_start, tail_len)
                .await
                .map_err(|e| LogError::io("read", &active.path, e))?;
            page.to_vec()
        };
        if tail.len() != tail_len {
            return Err(LogError::Corrupt {
                path: active.path.clone(),
                position: tail_start,
                reason: "short read of the last page".into(),
            });
        }
        let writer = SegmentWriter::new(active.file.clone(), end_bytes, &tail, end_bytes, log_end);
        let state = State {
            segments,
            writer: Some(writer),
            log_start,
            log_end,
            written_offset: log_end,
            written_bytes: end_bytes,
            synced_offset: log_end,
            appended_bytes_total: 0,
            synced_bytes_total: 0,
            oldest_unsynced_ms: None,
            cache: TailCache::new(config.tail_cache_bytes),
            poison: None,
            producers: ProducerStates::default(),
            sync_running: false,
            closed: false,
        };
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            storage,
            clock,
            config,
            state: RefCell::new(state),
            gate: Gate::default(),
            synced: Event::default(),
            counters: Counters::default(),
            readahead: RefCell::new(None),
            pending_seal: RefCell::new(None),
            last_disk_read_end: Cell::new(None),
        };
        log.rebuild_producer_state().await?;
        Ok(log)
    }

    /// Rebuilds the idempotent producer state from the batch headers of the log tail (the
    /// active segment and up to [`PRODUCER_STATE_SEGMENTS`] sealed ones before it). Runs at
    /// open, after recovery cut the log, so the state covers exactly the surviving batches.
    async fn rebuild_producer_state(&self) -> Result<()> {
        let from = {
            let state = self.state.borrow();
            let from = state
                .segments
                .keys()
                .rev()
                .nth(PRODUCER_STATE_SEGMENTS)
                .copied()
                .unwrap_or(state.log_start);
            from.max(state.log_start)
        };
        let mut producers = ProducerStates::default();
        let mut offset = from;
        while offset < self.log_end() {
            let read = match self.read(offset, 1 << 20).await {
                Ok(read) => read,
                Err(LogError::Corrupt {
                    path,
                    position,
                    reason,
                }) => {
                    // Damaged bytes are reported when read, not fatal at open. What was
                    // learnt before them may be stale (the producers' later batches are
                    // unreadable), so forget it: unknown producers are accepted at any
                    // sequence, whereas stale state would refuse their next batch.
                    tracing::warn!(path = %path.display(), position, %reason,
                        "skipping a damaged segment while rebuilding producer state");
                    producers = ProducerStates::default();
                    let next = self
                        .state
                        .borrow()
                        .segments
                        .range(offset + 1..)
                        .next()
                        .map(|(b, _)| *b);
                    match next {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            };
            if read.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                let mut bytes: &[u8] = chunk;
                while !bytes.is_empty() {
                    let meta = BatchMeta::parse(bytes)?;
                    if let Some(batch) = meta.producer() {
                        let first = meta.base_offset as u64;
                        producers.record(&batch, first, first + meta.span() - 1);
                    }
                    bytes = bytes.get(meta.len..).unwrap_or_default();
                }
            }
            offset = read.next_offset;
        }
        self.state.borrow_mut().producers = producers;
        Ok(())
    }

    /// Number of idempotent producers whose state this partition keeps.
    pub fn producer_count(&self) -> usize {
        self.state.borrow().producers.len()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
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
        }
    }

    fn poison(&self, op: &'static str, error: &std::io::Error) -> LogError {
        let mut state = self.state.borrow_mut();
        let reason = error.to_string();
        if state.poison.is_none() {
            tracing::error!(dir = %self.dir.display(), op, %reason, "partition poisoned");
            state.poison = Some((op, reason.clone()));
        }
        LogError::Poisoned { op, reason }
    }

    fn check_writable(&self) -> Result<()> {
        let state = self.state.borrow();
        if state.closed {
            return Err(LogError::Closed);
        }
        match &state.poison {
            Some((op, reason)) => Err(LogError::Poisoned {
                op,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    async fn lease(&self) -> Result<WriterLease<'_, S, C>> {
        let gate = self.gate.enter().await;
        self.check_writable()?;
        let writer = self.state.borrow_mut().writer.take();
        match writer {
            Some(writer) => Ok(WriterLease {
                log: self,
                writer: Some(writer),
                dirty: false,
                _gate: gate,
            }),
            None => Err(LogError::Closed),
        }
    }

    /// Appends one batch (header and payload as built by `tidelog-wire`), assigning it the
    /// next offsets, and returns where it landed. The batch's CRC is checked first; the base
    /// offset is stamped in place (it is outside the CRC), then the batch is copied once into
    /// the write buffer and shared with the tail cache.
    ///
    /// Idempotent producers (`producer_id >= 0` in the header) are checked under the same
    /// write gate that assigns offsets: a retry of one of the producer's last 5 batches (same
    /// epoch, same first and last sequence) is not appended again; the original's offsets
    /// come back with [`AppendInfo::duplicate`] set (after the original is durable, for
    /// [`Durability::Synced`]).
    ///
    /// # Errors
    /// [`LogError::InvalidProducerEpoch`] / [`LogError::OutOfOrderSequence`] when the
    /// producer's epoch or sequence does not follow its state (nothing is written);
    /// [`LogError::InvalidBatch`] / [`LogError::BatchTooLarge`] for a bad batch (nothing is
    /// written); [`LogError::DiskFull`] when the segment cannot grow (nothing is written, the
    /// log stays usable); [`LogError::Poisoned`] after a failed write or fdatasync.
    pub async fn append(&self, batch: BytesMut, durability: Durability) -> Result<AppendInfo> {
        let info = self.append_unsynced(batch).await?;
        if durability == Durability::Synced {
            self.wait_durable(&info).await?;
        }
        Ok(AppendInfo {
            flush_due: info.flush_due && durability == Durability::Buffered,
            ..info
        })
    }

    /// The first half of [`append`](Self::append) for `acks=all` pipelining: assigns the
    /// offsets and puts the batch in the log (visible to readers) but does not wait for it to
    /// be durable; [`wait_durable`](Self::wait_durable) does that. Callers that start appends
    /// in a given order get offsets in that order when each awaits this before starting the
    /// next, which the write gate alone (not FIFO) does not promise for concurrent callers.
    ///
    /// # Errors
    /// As [`append`](Self::append), except the fdatasync ones.
    pub async fn append_unsynced(&self, mut batch: BytesMut) -> Result<AppendInfo> {
        let len = batch.len();
        if len > self.config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                len,
                max: self.config.max_batch_bytes,
            });
        }
        let meta = BatchMeta::parse(&batch)?;
        if meta.len != len {
            return Err(LogError::BatchLengthMismatch {
                declared: meta.len,
                actual: len,
            });
        }
        let computed = compute_crc(&batch);
        if computed != meta.crc {
            return Err(tidelog_wire::WireError::CrcMismatch {
                stored: meta.crc,
                computed,
            }
            .into());
        }
        let now_ms = self.clock.now_ms();
        let mut lease = self.lease().await?;
        let producer = meta.producer();
        if let Some(producer) = &producer {
            let verdict = self.state.borrow().producers.check(producer)?;
            if let Verdict::Duplicate {
                first_offset,
                last_offset,
            } = verdict
            {
                drop(lease);
                return Ok(AppendInfo {
                    base_offset: first_offset,
                    last_offset,
                    flush_due: false,
                    duplicate: true,
                });
            }
        }
        if self.needs_roll(len as u64, meta.span(), now_ms) {
            self.roll(&mut lease).await?;
        }
        let base_offset = self.state.borrow().log_end;
        stamp_base_offset(&mut batch, base_offset as i64)?;
        let meta = BatchMeta {
            base_offset: base_offset as i64,
            ..meta
        };
        let next_offset = base_offset + meta.span();
        let position = lease.writer().end();
        let segment_bytes = self.config.segment_bytes;
        let step = self.config.preallocate_bytes;
        lease
            .writer()
            .reserve(position + len as u64, step, segment_bytes)
            .await
            .map_err(|e| LogError::io("preallocate", self.active_path(), e))?;
        lease.dirty = true;
        if let Err(e) = lease.writer().append(&batch, next_offset).await {
            return Err(self.poison("write", &e));
        }
        lease.dirty = false;
        let flush_due = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            let active = state
                .segments
                .values_mut()
                .next_back()
                .expect("active segment");
            active.first_append_ms.get_or_insert(now_ms);
            active.on_batch(&meta, position, self.config.index_interval_bytes);
            state.log_end = next_offset;
            state.appended_bytes_total += len as u64;
            state.oldest_unsynced_ms.get_or_insert(now_ms);
            state.cache.push(base_offset, next_offset, batch.freeze());
            if let Some(producer) = &producer {
                state
                    .producers
                    .record(producer, base_offset, next_offset - 1);
            }
            self.flush_due_locked(state, now_ms)
        };
        lease.publish_progress();
        drop(lease);
        bump(&self.counters.appends, 1);
        bump(&self.counters.appended_bytes, len as u64);
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            flush_due,
            duplicate: false,
        })
    }

    /// Waits until the batch [`append_unsynced`](Self::append_unsynced) returned `info` for
    /// is durable (group commit: concurrent waiters share fdatasyncs). For a duplicate, the
    /// original is what becomes durable.
    ///
    /// # Errors
    /// [`LogError::Poisoned`] when a write or fdatasync failed; [`LogError::Closed`] when the
    /// log closed first.
    pub async fn wait_durable(&self, info: &AppendInfo) -> Result<()> {
        self.sync_to(info.last_offset + 1).await
    }

    fn active_path(&self) -> PathBuf {
        let state = self.state.borrow();
        let active = state.segments.values().next_back().expect("active segment");
        active.path.clone()
    }

    fn needs_roll(&self, len: u64, span: u64, now_ms: i64) -> bool {
        let state = self.state.borrow();
        let active = state.segments.values().next_back().expect("active segment");
        if active.size == 0 {
            return false;
        }
        let full = active.size + len > self.config.segment_bytes;
        let old = active
            .first_append_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.segment_ms);
        let offsets_full =
            active.next_offset + span - active.base_offset > crate::limits::SEGMENT_OFFSETS_MAX;
        full || old || offsets_full
    }

    /// Seals the active segment and starts a new one at the log end. The new file is created
    /// first, so running out of space leaves the old segment active and intact. What is left
    /// of sealing (trimming, index files) waits for [`seal_pending`](Self::seal_pending),
    /// outside the write gate; a roll that finds an earlier one still waiting does it first.
    async fn roll(&self, lease: &mut WriterLease<'_, S, C>) -> Result<()> {
        self.seal_pending().await;
        let new_base = self.state.borrow().log_end;
        let old_path = self.active_path();
        lease.dirty = true;
        if let Err(e) = lease.writer().flush().await {
            return Err(self.poison("write", &e));
        }
        let old_file = lease.writer().file().clone();
        if let Err(e) = old_file.fdatasync().await {
            return Err(self.poison("fdatasync", &e));
        }
        bump(&self.counters.fsyncs, 1);
        lease.dirty = false;
        let new_segment = create_segment(&self.storage, &self.dir, new_base).await?;
        let reserve = self.config.preallocate_bytes.min(self.config.segment_bytes);
        if let Err(e) = new_segment.file.preallocate(reserve).await {
            let _ = self.storage.remove_file(&new_segment.path).await;
            return Err(LogError::io("preallocate", &new_segment.path, e));
        }
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        // The old segment is complete and durable; its trimming and index files wait for
        // `seal`, outside the gate.
        let (old_base, old_size, offset_index, time_index) = {
            let mut state = self.state.borrow_mut();
            let old = state
                .segments
                .values_mut()
                .next_back()
                .expect("active segment");
            old.finish_time_index();
            old.sealed = true;
            (
                old.base_offset,
                old.size,
                old.offset_index.encode(),
                old.time_index.encode(),
            )
        };
        let writer = SegmentWriter::new(new_segment.file.clone(), 0, &[], reserve, new_base);
        lease.writer = Some(writer);
        let mut state = self.state.borrow_mut();
        state.segments.insert(new_base, new_segment);
        state.written_offset = new_base;
        state.written_bytes = 0;
        state.synced_offset = state.synced_offset.max(new_base);
        state.synced_bytes_total = state.appended_bytes_total;
        state.oldest_unsynced_ms = None;
        drop(state);
        bump(&self.counters.rolls, 1);
        *self.pending_seal.borrow_mut() = Some(Sealing {
            file: old_file,
            path: old_path,
            base: old_base,
            size: old_size,
            offset_index,
            time_index,
        });
        Ok(())
    }

    /// Finishes sealing the last rolled segment, if a roll left that to do: the housekeeping
    /// task calls this every flush check, and `close` before closing. Appends go on
    /// meanwhile, so a roll stalls them only for the old segment's last flush and fdatasync
    /// and the new segment's creation.
    pub async fn seal_pending(&self) {
        let pending = self.pending_seal.borrow_mut().take();
        if let Some(sealing) = pending {
            self.seal(sealing).await;
        }
    }

    /// The rest of a roll, done with the write gate free so that appends to the new segment
    /// go on meanwhile: cuts the sealed segment's preallocated zeros and persists its
    /// indexes. The segment is already complete and durable; a failure here (or a caller
    /// that gives up half-way) costs only an index rebuild at the next open, and index files
    /// of a segment that retention deleted meanwhile are removed at the next open too.
    async fn seal(&self, sealing: Sealing<S::File>) {
        let Sealing {
            file,
            path,
            base,
            size,
            offset_index,
            time_index,
        } = sealing;
        let sealed = async {
            file.truncate(size).await?;
            file.fdatasync().await?;
            let index_path = segment_path(&self.dir, base, INDEX_SUFFIX);
            write_index_file(&self.storage, &index_path, &offset_index).await?;
            let time_path = segment_path(&self.dir, base, TIME_INDEX_SUFFIX);
            write_index_file(&self.storage, &time_path, &time_index).await?;
            self.storage.sync_dir(&self.dir).await
        };
        if let Err(e) = sealed.await {
            tracing::warn!(path = %path.display(), error = %e, "sealing segment failed; indexes will be rebuilt");
        }
    }

    fn flush_due_locked(&self, state: &State<S::File>, now_ms: i64) -> bool {
        let unsynced = state.appended_bytes_total - state.synced_bytes_total;
        unsynced > 0
            && (unsynced >= self.config.flush_bytes
                || state
                    .oldest_unsynced_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.flush_interval_ms))
    }

    /// True when the flush policy (bytes or interval) wants buffered appends made durable.
    pub fn flush_due(&self) -> bool {
        let now_ms = self.clock.now_ms();
        self.flush_due_locked(&self.state.borrow(), now_ms)
    }

    /// Runs [`sync`](Self::sync) if the flush policy says so; returns whether it did.
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub async fn maybe_flush(&self) -> Result<bool> {
        if !self.flush_due() {
            return Ok(false);
        }
        self.sync().await?;
        Ok(true)
    }

    /// Makes every batch appended before this call durable (group commit).
    ///
    /// # Errors
    /// [`LogError::Poisoned`] when this or an earlier write or fdatasync failed.
    pub async fn sync(&self) -> Result<()> {
        let target = self.state.borrow().log_end;
        self.sync_to(target).await
    }

    async fn sync_to(&self, target: u64) -> Result<()> {
        loop {
            {
                let state = self.state.borrow();
                if let Some((op, reason)) = &state.poison {
                    return Err(LogError::Poisoned {
                        op,
                        reason: reason.clone(),
                    });
                }
                if state.synced_offset >= target {
                    return Ok(());
                }
                if state.closed {
                    return Err(LogError::Closed);
                }
            }
            if self.state.borrow().sync_running {
                let listener = self.synced.listen();
                listener.await;
                continue;
            }
            self.state.borrow_mut().sync_running = true;
            let _running = SyncRunning(self);
            let (file, covered_offset, covered_bytes) = {
                let mut lease = self.lease().await?;
                lease.dirty = true;
                if let Err(e) = lease.writer().flush().await {
                    return Err(self.poison("write", &e));
                }
                lease.dirty = false;
                lease.publish_progress();
                let state = self.state.borrow();
                (
                    lease.writer().file().clone(),
                    state.log_end,
                    state.appended_bytes_total,
                )
            };
            // The gate is free again: appends fill the buffer while the fdatasync runs.
            if let Err(e) = file.fdatasync().await {
                return Err(self.poison("fdatasync", &e));
            }
            bump(&self.counters.fsyncs, 1);
            let mut state = self.state.borrow_mut();
            state.synced_offset = state.synced_offset.max(covered_offset);
            state.synced_bytes_total = state.synced_bytes_total.max(covered_bytes);
            state.oldest_unsynced_ms = if state.synced_bytes_total < state.appended_bytes_total {
                Some(self.clock.now_ms())
            } else {
                None
            };
        }
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// but always at least one batch. Recent batches come from the tail cache without a copy;
    /// older ones from a DMA read of the segment, CRC-checked. Reading at the log end returns
    /// no batches.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] below the log start or past the log end;
    /// [`LogError::Corrupt`] when stored bytes fail their checks (they are not returned).
    pub async fn read(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> Result<LogRead<<S::File as StorageFile>::ReadBuf>> {
        let (file, path, position, limit, base_offset, log_start, high_watermark, segment_base) =
            {
                let state = self.state.borrow();
                if state.closed {
                    return Err(LogError::Closed);
                }
                let (log_start, log_end) = (state.log_start, state.log_end);
                if offset < log_start || offset > log_end {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        start: log_start,
                        end: log_end,
                    });
                }
                let empty = |next_offset| LogRead {
                    chunks: Vec::new(),
                    next_offset,
                    high_watermark: log_end,
                    log_start,
                };
                if offset == log_end {
                    return Ok(empty(offset));
                }
                let mut cached = Vec::new();
                if let Some(next_offset) = state.cache.read(offset, max_bytes, &mut cached) {
                    bump(&self.counters.cache_reads, 1);
                    return Ok(LogRead {
                        chunks: cached.into_iter().map(ReadChunk::Cache).collect(),
                        ..empty(next_offset)
                    });
                }
                let (_, segment) = state.segments.range(..=offset).next_back().ok_or(
                    LogError::OffsetOutOfRange {
                        requested: offset,
                        start: log_start,
                        end: log_end,
                    },
                )?;
                let limit = if segment.sealed {
                    segment.size
                } else {
                    state.written_bytes.min(segment.size)
                };
                let relative = (offset - segment.base_offset) as u32;
                let (indexed, position) = segment.offset_index.lookup(relative);
                let position = u64::from(position);
                let base_offset = segment.base_offset + u64::from(indexed);
                (
                    segment.file.clone(),
                    segment.path.clone(),
                    position,
                    limit,
                    base_offset,
                    log_start,
                    log_end,
                    segment.base_offset,
                )
            };
        bump(&self.counters.disk_reads, 1);
        let sequential = self.last_disk_read_end.get() == Some(offset);
        // A read-ahead for exactly this offset starts at its batch: no index walk needed.
        let ahead = self
            .readahead
            .borrow_mut()
            .take()
            .filter(|ra| ra.segment == segment_base && ra.offset == offset);
        let (position, base_offset) = match &ahead {
            Some(ra) => (ra.position, ra.offset),
            None => (position, base_offset),
        };
        let corrupt = |position: u64, reason: String| LogError::Corrupt {
            path: path.clone(),
            position,
            reason,
        };
        let read_len = |from: u64, want: u64| (want.min(limit.saturating_sub(from))) as usize;
        let slack = u64::from(self.config.index_interval_bytes) + max_bytes as u64;
        let window = slack.max(64 << 10);
        let mut buf_pos = position;
        let mut buf = match ahead {
            Some(ra) => {
                bump(&self.counters.readahead_hits, 1);
                ra.future.await
            }
            None => file.read_at(buf_pos, read_len(buf_pos, window)).await,
        }
        .map_err(|e| LogError::io("read", &path, e))?;
        let mut pos = position;
        let mut first: Option<u64> = None;
        let mut next_offset = offset;
        let mut end = pos;
        // The base offset is outside the CRC: check it against the offsets walked from the
        // index entry, so a damaged one is reported instead of served under a wrong offset.
        let mut expected_offset = base_offset;
        while pos < limit {
            let at = (pos - buf_pos) as usize;
            let header_end = at + tidelog_wire::batch::HEADER_LEN;
            if header_end > buf.len() {
                if first.is_some() {
                    break;
                }
                buf_pos = pos;
                buf = file
                    .read_at(pos, read_len(pos, window))
                    .await
                    .map_err(|e| LogError::io("read", &path, e))?;
                continue;
            }
            let meta = BatchMeta::parse(&buf[at..header_end])
                .map_err(|e| corrupt(pos, format!("bad batch header: {e}")))?;
            if meta.base_offset != expected_offset as i64 {
                return Err(corrupt(
                    pos,
                    format!(
                        "batch has offset {}, expected {expected_offset}",
                        meta.base_offset
                    ),
                ));
            }
            let batch_next = expected_offset + meta.span();
            if batch_next <= offset {
                pos += meta.len as u64;
                expected_offset = batch_next;
                continue;
            }
            if let Some(start) = first {
                if pos + meta.len as u64 - start > max_bytes as u64 {
                    break;
                }
            }
            if at + meta.len > buf.len() {
                if first.is_some() {
                    break;
                }
                // The first batch is larger than what was read: read exactly it.
                buf_pos = pos;
                buf = file
                    .read_at(pos, read_len(pos, meta.len as u64))
                    .await
                    .map_err(|e| LogError::io("read", &path, e))?;
                if buf.len() < meta.len {
                    return Err(corrupt(
                        pos,
                        "batch runs past the end of the segment".into(),
                    ));
                }
                continue;
            }
            let batch = &buf[at..at + meta.len];
            let computed = compute_crc(batch);
            if computed != meta.crc {
                return Err(corrupt(
                    pos,
                    format!(
                        "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
                        meta.crc
                    ),
                ));
            }
            first.get_or_insert(pos);
            pos += meta.len as u64;
            expected_offset = batch_next;
            end = pos;
            next_offset = batch_next;
        }
        let chunks = match first {
            Some(start) => {
                let range = (start - buf_pos) as usize..(end - buf_pos) as usize;
                vec![ReadChunk::Disk(<S::File as StorageFile>::slice(
                    &buf, range,
                ))]
            }
            None => Vec::new(),
        };
        if chunks.is_empty() {
            return Err(corrupt(
                position,
                format!("offset {offset} not found in segment"),
            ));
        }
        self.last_disk_read_end.set(Some(next_offset));
        // A second sequential read in a row with more written bytes after it, which the tail
        // cache will not serve: read them now.
        let cached_next = self
            .state
            .borrow()
            .cache
            .start_offset()
            .is_some_and(|start| next_offset >= start);
        if sequential && end < limit && !cached_next && self.readahead.borrow().is_none() {
            let file = file.clone();
            let len = read_len(end, window);
            let mut future: Pin<Box<dyn Future<Output = std::io::Result<_>>>> =
                Box::pin(async move { file.read_at(end, len).await });
            // Poll once so the read is submitted now rather than when it is awaited; its
            // result waits in the future.
            let early = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = early {
                future = Box::pin(std::future::ready(result));
            }
            *self.readahead.borrow_mut() = Some(ReadAhead {
                segment: segment_base,
                offset: next_offset,
                position: end,
                future,
            });
        }
        Ok(LogRead {
            chunks,
            next_offset,
            high_watermark,
            log_start,
        })
    }

    /// The first batch whose max timestamp is at or after `timestamp`: its base offset and
    /// max timestamp, or `None` when every record is older.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>> {
        let start = {
            let state = self.state.borrow();
            let found = state
                .segments
                .values()
                .find(|s| s.size > 0 && s.max_timestamp >= timestamp);
            match found {
                Some(segment) => {
                    let relative = segment.time_index.scan_start(timestamp);
                    (segment.base_offset + u64::from(relative)).max(state.log_start)
                }
                None => return Ok(None),
            }
        };
        let mut offset = start;
        loop {
            let read = self.read(offset, 1 << 20).await?;
            if read.is_empty() {
                return Ok(None);
            }
            for chunk in &read.chunks {
                let mut bytes: &[u8] = chunk;
                while !bytes.is_empty() {
                    let meta = BatchMeta::parse(bytes)?;
                    let batch_next = meta.base_offset as u64 + meta.span();
                    if batch_next > offset && meta.max_timestamp >= timestamp {
                        return Ok(Some((meta.base_offset as u64, meta.max_timestamp)));
                    }
                    bytes = bytes.get(meta.len..).unwrap_or_default();
                }
            }
            offset = read.next_offset;
        }
    }

    /// Calls `apply` with every record of the log, in offset order (native batches only), e.g.
    /// to rebuild a table kept in an internal log.
    ///
    /// # Errors
    /// Read errors, or a stored batch that fails verification.
    pub async fn replay(
        &self,
        mut apply: impl FnMut(tidelog_wire::batch::RecordView<'_>),
    ) -> Result<()> {
        let limits = tidelog_wire::batch::VerifyLimits::default();
        let mut offset = self.log_start();
        while offset < self.log_end() {
            let read = self.read(offset, 1 << 20).await?;
            for chunk in &read.chunks {
                let mut bytes: &[u8] = chunk;
                while !bytes.is_empty() {
                    let view = tidelog_wire::batch::verify(bytes, &limits)?;
                    for record in view.records()? {
                        apply(record);
                    }
                    bytes = &bytes[view.batch_len()..];
                }
            }
            offset = read.next_offset;
        }
        Ok(())
    }

    /// Deletes the oldest sealed segments beyond the retention limits (size, then age) and
    /// moves the log start. The active segment is never deleted. Returns how many went.
    ///
    /// # Errors
    /// I/O errors removing files (the log start has moved already: the files are only
    /// garbage, removed again at the next open).
    pub async fn enforce_retention(&self) -> Result<usize> {
        let now_ms = self.clock.now_ms();
        let doomed: Vec<(u64, PathBuf)> = {
            let _lease = self.lease().await?;
            let mut state = self.state.borrow_mut();
            let mut total: u64 = state.segments.values().map(|s| s.size).sum();
            let mut doomed = Vec::new();
            let sealed: Vec<(u64, u64, i64)> = state
                .segments
                .values()
                .filter(|s| s.sealed)
                .map(|s| (s.base_offset, s.size, s.max_timestamp))
                .collect();
            for (base, size, max_timestamp) in sealed {
                let by_size = self
                    .config
                    .retention_bytes
                    .is_some_and(|limit| total - size >= limit);
                let by_age = self
                    .config
                    .retention_ms
                    .is_some_and(|ms| max_timestamp < now_ms.saturating_sub(ms));
                if !(by_size || by_age) {
                    break;
                }
                total -= size;
                if let Some(segment) = state.segments.remove(&base) {
                    doomed.push((base, segment.path));
                }
                // A read-ahead of a deleted segment would keep its file open (and its space
                // taken) until the next read.
                let mut readahead = self.readahead.borrow_mut();
                if readahead.as_ref().is_some_and(|ra| ra.segment == base) {
                    *readahead = None;
                }
            }
            if let Some(&first) = state.segments.keys().next() {
                state.log_start = first;
                state.cache.drop_below(first);
            }
            doomed
        };
        for (base, path) in &doomed {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let file = segment_path(&self.dir, *base, suffix);
                match self.storage.remove_file(&file).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io("remove", path, e)),
                }
            }
        }
        if !doomed.is_empty() {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        }
        bump(&self.counters.segments_deleted, doomed.len() as u64);
        Ok(doomed.len())
    }

    /// Makes everything durable and refuses further use.
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub async fn close(&self) -> Result<()> {
        self.seal_pending().await;
        let result = if self.check_writable().is_ok() {
            self.sync().await
        } else {
            Ok(())
        };
        let _gate = self.gate.enter().await;
        let mut state = self.state.borrow_mut();
        state.closed = true;
        state.cache.clear();
        // Its buffer (up to a fetch's size) and its file handle go with the log's use.
        self.readahead.borrow_mut().take();
        result
    }

    /// Closes the log and removes its directory with every file in it.
    ///
    /// # Errors
    /// I/O errors removing the directory.
    pub async fn delete(self) -> Result<()> {
        {
            let _gate = self.gate.enter().await;
            let mut state = self.state.borrow_mut();
            state.closed = true;
            state.cache.clear();
        }
        self.storage
            .remove_dir_all(&self.dir)
            .await
            .map_err(|e| LogError::io("remove directory", &self.dir, e))?;
        if let Some(parent) = self.dir.parent() {
            let _ = self.storage.sync_dir(parent).await;
        }
        Ok(())
    }
}

async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
) -> Result<Segment<S::File>> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::Create)
        .await
        .map_err(|e| LogError::io("create", &path, e))?;
    Ok(Segment::empty(base, file, path))
}

async fn open_segment_file<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
) -> Result<(Segment<S::File>, u64)> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::Existing)
        .await
        .map_err(|e| LogError::io("open", &path, e))?;
    let len = file
        .size()
        .await
        .map_err(|e| LogError::io("stat", &path, e))?;
    Ok((Segment::empty(base, file, path), len))
}

/// Opens a sealed segment: trusts its persisted indexes when they check out, else rebuilds
/// them with a full scan. Either way its offsets must end where the next segment starts.
async fn open_sealed<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    next_base: u64,
    config: &LogConfig,
) -> Result<Segment<S::File>> {
    let (mut segment, file_len) = open_segment_file(storage, dir, base).await?;
    segment.sealed = true;
    let span = next_base - base;
    let index_path = segment_path(dir, base, INDEX_SUFFIX);
    let time_path = segment_path(dir, base, TIME_INDEX_SUFFIX);
    let offset_index = read_whole(storage, &index_path)
        .await
        .ok()
        .and_then(|b| OffsetIndex::decode(&b, file_len.max(1), span));
    let time_index = read_whole(storage, &time_path)
        .await
        .ok()
        .and_then(|b| TimeIndex::decode(&b, span));
    if let (Some(offset_index), Some(time_index)) = (offset_index, time_index) {
        if file_len > 0 && !offset_index.is_empty() {
            segment.size = file_len;
            segment.next_offset = next_base;
            segment.max_timestamp = time_index.max_timestamp().unwrap_or(i64::MIN);
            segment.offset_index = offset_index;
            segment.time_index = time_index;
            return Ok(segment);
        }
    }
    tracing::warn!(segment = %segment.path.display(), "rebuilding indexes of sealed segment");
    let scanned = scan(&mut segment, file_len, config.index_interval_bytes)
        .await
        .map_err(|e| LogError::io("read", &segment.path, e))?;
    if segment.next_offset != next_base {
        return Err(LogError::Corrupt {
            path: segment.path.clone(),
            position: scanned.valid_bytes,
            reason: format!(
                "sealed segment ends at offset {} but the next segment starts at {next_base}{}",
                segment.next_offset,
                scanned
                    .stopped
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
        });
    }
    if file_len > scanned.valid_bytes {
        // A roll was interrupted after the next segment was created: cut the zeros.
        cut_file(&segment, scanned.valid_bytes).await?;
    }
    let seal_path = segment.path.clone();
    let io = |e| LogError::io("seal", &seal_path, e);
    segment.finish_time_index();
    write_index_file(storage, &index_path, &segment.offset_index.encode())
        .await
        .map_err(io)?;
    write_index_file(storage, &time_path, &segment.time_index.encode())
        .await
        .map_err(io)?;
    Ok(segment)
}

/// Opens the active segment: scans every batch and cuts the file at the first torn or
/// corrupt one, so nothing after a torn write is ever served or resurrected.
async fn open_active<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    config: &LogConfig,
) -> Result<Segment<S::File>> {
    let (mut segment, file_len) = open_segment_file(storage, dir, base).await?;
    let scanned = scan(&mut segment, file_len, config.index_interval_bytes)
        .await
        .map_err(|e| LogError::io("read", &segment.path, e))?;
    if let Some(reason) = &scanned.stopped {
        tracing::warn!(
            segment = %segment.path.display(),
            valid_bytes = scanned.valid_bytes,
            dropped_bytes = file_len - scanned.valid_bytes,
            %reason,
            "truncating torn or corrupt tail"
        );
    }
    if file_len != scanned.valid_bytes {
        cut_file(&segment, scanned.valid_bytes).await?;
    }
    Ok(segment)
}

/// Truncates a segment file to `len` bytes and makes the new size durable.
async fn cut_file<F: StorageFile>(segment: &Segment<F>, len: u64) -> Result<()> {
    let io = |e| LogError::io("truncate", &segment.path, e);
    segment.file.truncate(len).await.map_err(io)?;
    segment.file.fdatasync().await.map_err(io)
}
