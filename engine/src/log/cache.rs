//! The batch cache: one shard's recent and recently read batches, for every partition of the
//! shard, under one byte budget (`--cache-bytes`).
//!
//! Like the page cache that O_DIRECT bypasses, it lets memory absorb what consumers read
//! soon after it was written or read. Readers get shared views (a reference count, never a
//! copy) that go to the socket as they are.
//!
//! **Where the bytes live.** An appended batch enters as it arrived (the request's bytes,
//! shared, see `ReadChunk::Split`). Once the write buffer that holds its copy on the way to
//! the disk has been handed to the kernel, the batches wholly inside that buffer are served
//! from the buffer itself ([`BatchCache::adopt_buffer`]): the copy every append makes
//! anyway becomes the cached copy, and the request's memory is freed. A batch split across
//! two write buffers, or a buffer mostly empty (a flush of a few batches), is copied into
//! memory of its own size instead, so a cached byte never keeps much more than itself
//! alive. Disk reads put what they served in as well.
//!
//! **Eviction.** Entries wait in two queues, oldest first. Batches written to their file
//! and batches read again join the *hot* queue; what a disk read brought in joins the
//! *cold* queue, which holds at most [`COLD_SHARE_DIVISOR`]th of the budget while hot
//! entries are waiting. So a consumer catching up from disk once (each byte read once)
//! churns only the cold share and never flushes the batches tail consumers are about to
//! read; a second reader of the same bytes finds them and promotes them to hot. A read hit
//! moves its entries to the back of the hot queue (least recently used goes first).
//!
//! **Invariant:** every batch whose write to its segment file has not completed is in the
//! cache. Such entries are *pinned*: they join a queue only once the log reports them
//! written ([`BatchCache::written`]), so the cache may exceed its budget by the bytes not
//! yet written (bounded by the writers' buffers and writes in flight).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Deref;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::partition::ReadChunk;
use super::segment::BatchMeta;
use crate::io::Sliceable;

/// The cold queue (what disk reads brought in) holds at most this fraction of the budget
/// while hot entries wait: a scan can displace at most this much of what tail readers use.
pub const COLD_SHARE_DIVISOR: usize = 8;

/// A run of whole batches in a buffer of this much memory is kept only while it fills at
/// least half of it; a sparser run is copied into memory of its own size.
const ADOPT_MIN_FILL_DIVISOR: usize = 2;

/// A cached run of batches is at most a budget's this-many-th part, within
/// [`ENTRY_BYTES_MIN`, `ENTRY_BYTES_MAX`] (whole batches, so a larger batch is one entry): the
/// unit of eviction, fine enough that a small cache still keeps many.
const ENTRIES_PER_BUDGET: usize = 16;
const ENTRY_BYTES_MIN: usize = 4 << 10;
const ENTRY_BYTES_MAX: usize = 256 << 10;

/// One cached batch (`Pieces`) or run of whole contiguous batches (`Owned`, `Shared`).
enum Data<B> {
    /// One batch as it arrived: `head` holds at least its header, `tail` the rest (may be
    /// empty). `at` is where its copy lies in the active segment (segment base offset, file
    /// position), until the write buffer holding that copy is adopted.
    Pieces {
        head: Bytes,
        tail: Bytes,
        at: Option<(u64, u64)>,
    },
    /// Whole batches in memory of their own.
    Owned(Bytes),
    /// Whole batches in a view of a write buffer or of a disk read.
    Shared(B),
}

impl<B: Sliceable> Data<B> {
    /// A run's batches (`None` for one batch held as it arrived).
    fn run_bytes(&self) -> Option<&[u8]> {
        match self {
            Data::Pieces { .. } => None,
            Data::Owned(bytes) => Some(bytes),
            Data::Shared(buf) => Some(buf),
        }
    }

    /// `range` of a run, shared.
    fn run_chunk(&self, range: std::ops::Range<usize>) -> Option<ReadChunk<B>> {
        match self {
            Data::Pieces { .. } => None,
            Data::Owned(bytes) => Some(ReadChunk::Cache(bytes.slice(range))),
            Data::Shared(buf) => Some(ReadChunk::Disk(buf.slice_of(range))),
        }
    }
}

impl<B: Deref<Target = [u8]>> Data<B> {
    fn len(&self) -> usize {
        match self {
            Data::Pieces { head, tail, .. } => head.len() + tail.len(),
            Data::Owned(bytes) => bytes.len(),
            Data::Shared(buf) => buf.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    /// Not yet written to its file: never evicted.
    Pinned,
    Hot,
    Cold,
}

struct Entry<B> {
    next_offset: u64,
    data: Data<B>,
    queue: Queue,
    /// The ticket that stands for it in its queue (older tickets of it are stale).
    seq: u64,
}

struct LogEntries<B> {
    /// By base offset; ranges never overlap.
    entries: BTreeMap<u64, Entry<B>>,
    /// Entries at and above this base offset may be pinned; below it none is.
    pinned_from: u64,
}

impl<B> Default for LogEntries<B> {
    fn default() -> Self {
        LogEntries {
            entries: BTreeMap::new(),
            pinned_from: 0,
        }
    }
}

#[derive(Clone, Copy)]
struct Ticket {
    seq: u64,
    log: u64,
    base: u64,
}

/// What the cache holds and has done, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The byte budget.
    pub budget: usize,
    /// Bytes held, pinned included.
    pub bytes: usize,
    /// Bytes held that are not yet written to their file.
    pub pinned_bytes: usize,
    /// Past this many unwritten bytes appenders wait for their writes
    /// ([`crate::limits::DIRTY_BYTES_PER_SHARD`]).
    pub dirty_budget: usize,
    /// Bytes held in the cold queue.
    pub cold_bytes: usize,
    /// Reads answered (at least in part) from the cache.
    pub hits: u64,
    /// Reads that found nothing cached at their offset.
    pub misses: u64,
    /// Bytes evicted.
    pub evicted_bytes: u64,
    /// Bytes of appended batches copied into memory of their own (split across write
    /// buffers, or in a mostly empty one).
    pub copied_bytes: u64,
}

struct Inner<B> {
    logs: HashMap<u64, LogEntries<B>>,
    hot: VecDeque<Ticket>,
    cold: VecDeque<Ticket>,
    /// Live entries in each queue (the queues also hold stale tickets).
    hot_live: usize,
    cold_live: usize,
    next_seq: u64,
    stats: CacheStats,
}

/// A shard's batch cache, shared by its partition logs (`Rc`, no lock: shard-local).
pub struct BatchCache<B> {
    inner: Rc<RefCell<Inner<B>>>,
}

impl<B> Clone for BatchCache<B> {
    fn clone(&self) -> Self {
        BatchCache {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<B> std::fmt::Debug for BatchCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("BatchCache")
            .field("stats", &inner.stats)
            .finish()
    }
}

/// Base offset, length and next offset of the batch whose header starts `bytes`, or `None`
/// when the bytes do not hold one (the cache only holds batches the log wrote or checked).
fn walk_header(bytes: &[u8]) -> Option<(u64, usize, u64)> {
    let meta = BatchMeta::parse(bytes).ok()?;
    let base = u64::try_from(meta.base_offset).ok()?;
    (meta.len <= bytes.len()).then_some((base, meta.len, base + meta.span()))
}

impl<B: Sliceable> BatchCache<B> {
    /// An empty cache of `budget` bytes.
    pub fn new(budget: usize) -> Self {
        BatchCache {
            inner: Rc::new(RefCell::new(Inner {
                logs: HashMap::new(),
                hot: VecDeque::new(),
                cold: VecDeque::new(),
                hot_live: 0,
                cold_live: 0,
                next_seq: 0,
                stats: CacheStats {
                    budget,
                    dirty_budget: crate::limits::DIRTY_BYTES_PER_SHARD,
                    ..CacheStats::default()
                },
            })),
        }
    }

    /// The same cache with another budget of unwritten bytes.
    #[must_use]
    pub fn with_dirty_budget(self, bytes: usize) -> Self {
        self.inner.borrow_mut().stats.dirty_budget = bytes;
        self
    }

    /// Whether the shard's unwritten bytes are past their budget.
    pub fn over_dirty_budget(&self) -> bool {
        let inner = self.inner.borrow();
        inner.stats.pinned_bytes > inner.stats.dirty_budget
    }

    /// What it holds and has done.
    pub fn stats(&self) -> CacheStats {
        self.inner.borrow().stats
    }

    /// Adds an appended batch (`[base, next)`), not yet written to its file: pinned until
    /// [`written`](Self::written) passes it. `at` is where its copy lies in the active
    /// segment (segment base offset, file position), for
    /// [`adopt_buffer`](Self::adopt_buffer).
    pub fn push_appended(
        &self,
        log: u64,
        base: u64,
        next: u64,
        head: Bytes,
        tail: Bytes,
        at: (u64, u64),
    ) {
        let mut inner = self.inner.borrow_mut();
        let data = Data::Pieces {
            head,
            tail,
            at: Some(at),
        };
        inner.stats.bytes += data.len();
        inner.stats.pinned_bytes += data.len();
        let entries = inner.logs.entry(log).or_default();
        if let Some((_, last)) = entries.entries.iter().next_back() {
            debug_assert!(last.next_offset <= base, "appends only grow");
        }
        entries.entries.insert(
            base,
            Entry {
                next_offset: next,
                data,
                queue: Queue::Pinned,
                seq: 0,
            },
        );
    }

    /// The write buffer `view` (file bytes from `view_pos` in segment `segment`) has gone to
    /// the kernel: batches of `log` wholly inside it are served from it from now on (one run
    /// per contiguous stretch), and their arrival buffers are let go. A batch that began in
    /// an earlier buffer is copied into memory of its own; so is a run that would fill less
    /// than half of the buffer's `capacity`.
    pub fn adopt_buffer(&self, log: u64, segment: u64, view_pos: u64, view: &B, capacity: usize) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(entries) = inner.logs.get_mut(&log) else {
            return;
        };
        let view_end = view_pos + view.len() as u64;
        // Appended batches waiting for their buffer are pinned, so they lie at or above
        // `pinned_from`, in file order.
        // (base offset, next offset, file position, length) of the batches adopted.
        let mut run: Vec<(u64, u64, u64, u64)> = Vec::new();
        let mut copied = 0u64;
        let candidates: Vec<u64> = entries
            .entries
            .range(entries.pinned_from..)
            .map(|(&base, _)| base)
            .collect();
        for base in candidates {
            let Some(entry) = entries.entries.get_mut(&base) else {
                continue;
            };
            let (pos, len) = match &entry.data {
                Data::Pieces {
                    at: Some((seg, pos)),
                    ..
                } if *seg == segment && entry.queue == Queue::Pinned => {
                    (*pos, entry.data.len() as u64)
                }
                _ => continue,
            };
            if pos + len > view_end {
                break;
            }
            if pos < view_pos {
                // Split across two buffers: it gets memory of its own.
                if let Data::Pieces { head, tail, .. } = &entry.data {
                    let mut own = BytesMut::with_capacity(head.len() + tail.len());
                    own.extend_from_slice(head);
                    own.extend_from_slice(tail);
                    copied += own.len() as u64;
                    entry.data = Data::Owned(own.freeze());
                }
                continue;
            }
            run.push((base, entry.next_offset, pos, len));
        }
        inner.stats.copied_bytes += copied;
        let (Some(&(_, _, start, _)), Some(&(_, _, last_pos, last_len))) =
            (run.first(), run.last())
        else {
            return;
        };
        // A sparse buffer is copied out, so that its batches keep only their own bytes.
        let whole = (last_pos + last_len - start) as usize;
        let owned = (whole * ADOPT_MIN_FILL_DIVISOR < capacity).then(|| {
            let from = (start - view_pos) as usize;
            inner.stats.copied_bytes += whole as u64;
            Bytes::copy_from_slice(&view[from..from + whole])
        });
        // The entries replace their batches byte for byte, all pinned: the totals stay.
        let grain = inner
            .stats
            .budget
            .div_ceil(ENTRIES_PER_BUDGET)
            .clamp(ENTRY_BYTES_MIN, ENTRY_BYTES_MAX);
        let mut group_start = 0usize;
        while group_start < run.len() {
            let (first, _, first_pos, _) = run[group_start];
            let mut group_end = group_start + 1;
            while group_end < run.len() {
                let (_, _, pos, len) = run[group_end];
                if (pos + len - first_pos) as usize > grain {
                    break;
                }
                group_end += 1;
            }
            let (_, next_offset, last_pos, last_len) = run[group_end - 1];
            for &(base, ..) in &run[group_start..group_end] {
                entries.entries.remove(&base);
            }
            let data = match &owned {
                Some(bytes) => {
                    let from = (first_pos - start) as usize;
                    Data::Owned(bytes.slice(from..(last_pos + last_len - start) as usize))
                }
                None => {
                    let from = (first_pos - view_pos) as usize;
                    Data::Shared(view.slice_of(from..(last_pos + last_len - view_pos) as usize))
                }
            };
            entries.entries.insert(
                first,
                Entry {
                    next_offset,
                    data,
                    queue: Queue::Pinned,
                    seq: 0,
                },
            );
            group_start = group_end;
        }
    }

    /// Every batch of `log` below `offset` is now written to its file: pinned entries there
    /// join the hot queue (and may be evicted from now on).
    pub fn written(&self, log: u64, offset: u64) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(entries) = inner.logs.get_mut(&log) else {
            return;
        };
        let mut released = 0usize;
        let mut tickets = Vec::new();
        // Below `offset` nothing stays pinned; an entry reaching past it keeps the mark.
        let mut pinned_from = offset.max(entries.pinned_from);
        for (&base, entry) in entries.entries.range_mut(entries.pinned_from..) {
            if entry.next_offset > offset {
                pinned_from = base.min(pinned_from);
                break;
            }
            if entry.queue == Queue::Pinned {
                released += entry.data.len();
                entry.queue = Queue::Hot;
                entry.seq = inner.next_seq;
                tickets.push(Ticket {
                    seq: inner.next_seq,
                    log,
                    base,
                });
                inner.next_seq += 1;
            }
        }
        entries.pinned_from = pinned_from;
        inner.stats.pinned_bytes -= released;
        inner.hot_live += tickets.len();
        inner.hot.extend(tickets);
        inner.evict();
    }

    /// Adds whole batches `[base, next)` of `log` that a disk read served (cold: evicted
    /// first unless read again). Nothing is added where the cache holds any of them already.
    pub fn insert_read(&self, log: u64, base: u64, next: u64, bytes: B) {
        if bytes.is_empty() || next <= base {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let entries = inner.logs.entry(log).or_default();
        let overlaps = entries
            .entries
            .range(..next)
            .next_back()
            .is_some_and(|(_, e)| e.next_offset > base);
        if overlaps {
            return;
        }
        let len = bytes.len();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        entries.entries.insert(
            base,
            Entry {
                next_offset: next,
                data: Data::Shared(bytes),
                queue: Queue::Cold,
                seq,
            },
        );
        inner.cold.push_back(Ticket { seq, log, base });
        inner.cold_live += 1;
        inner.stats.bytes += len;
        inner.stats.cold_bytes += len;
        inner.evict();
    }

    /// Whole batches of `log` starting with the one that contains `offset`, up to
    /// `max_bytes` but at least one, as long as they are cached without a gap. Returns the
    /// offset after the last one, or `None` (a miss) when `offset` is not cached. Entries
    /// read move to the back of the hot queue.
    pub fn read(
        &self,
        log: u64,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<ReadChunk<B>>,
    ) -> Option<u64> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let found = inner.logs.get(&log).and_then(|entries| {
            entries
                .entries
                .range(..=offset)
                .next_back()
                .filter(|(_, e)| e.next_offset > offset)
                .map(|(&base, _)| base)
        });
        let Some(mut base) = found else {
            inner.stats.misses += 1;
            return None;
        };
        let entries = inner.logs.get(&log)?;
        let mut total = 0usize;
        let mut next = offset;
        let mut touched = Vec::new();
        while let Some(entry) = entries.entries.get(&base) {
            let full = total > 0 && total >= max_bytes;
            if full {
                break;
            }
            let (taken, taken_next) = match &entry.data {
                Data::Pieces { head, tail, .. } => {
                    if total > 0 && total + head.len() + tail.len() > max_bytes {
                        break;
                    }
                    out.push(if tail.is_empty() {
                        ReadChunk::Cache(head.clone())
                    } else {
                        ReadChunk::Split {
                            head: head.clone(),
                            tail: tail.clone(),
                        }
                    });
                    (head.len() + tail.len(), entry.next_offset)
                }
                run => {
                    let room = max_bytes - total.min(max_bytes);
                    let cut = run
                        .run_bytes()
                        .and_then(|bytes| cut_run(bytes, next, room, total == 0));
                    let Some((range, end)) = cut else {
                        break;
                    };
                    let len = range.len();
                    out.extend(run.run_chunk(range));
                    (len, end)
                }
            };
            total += taken;
            next = taken_next;
            touched.push(base);
            if taken_next < entry.next_offset {
                break; // the budget ended inside this run
            }
            base = entry.next_offset;
        }
        if touched.is_empty() {
            inner.stats.misses += 1;
            return None;
        }
        inner.stats.hits += 1;
        for base in touched {
            inner.promote(log, base);
        }
        Some(next)
    }

    /// Whether the batch of `log` that contains `offset` is cached.
    pub fn holds(&self, log: u64, offset: u64) -> bool {
        let inner = self.inner.borrow();
        inner.logs.get(&log).is_some_and(|entries| {
            entries
                .entries
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, e)| e.next_offset > offset)
        })
    }

    /// Drops the entries of `log` that end at or below `offset` (retention moved its start).
    pub fn drop_below(&self, log: u64, offset: u64) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(entries) = inner.logs.get_mut(&log) else {
            return;
        };
        let doomed: Vec<u64> = entries
            .entries
            .iter()
            .take_while(|(_, e)| e.next_offset <= offset)
            .map(|(&base, _)| base)
            .collect();
        for base in doomed {
            inner.remove(log, base);
        }
    }

    /// Drops everything of `log` (closed or deleted).
    pub fn forget_log(&self, log: u64) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(entries) = inner.logs.get(&log) else {
            return;
        };
        let bases: Vec<u64> = entries.entries.keys().copied().collect();
        for base in bases {
            inner.remove(log, base);
        }
        inner.logs.remove(&log);
    }
}

/// The part of a run of whole batches to serve from `offset`: the batch containing it, then
/// whole batches up to `room` bytes (at least one when `must_take`). Returns the byte range
/// and the offset after it, or `None` when nothing fits or the run does not hold `offset`.
fn cut_run(
    run: &[u8],
    offset: u64,
    room: usize,
    must_take: bool,
) -> Option<(std::ops::Range<usize>, u64)> {
    let mut at = 0usize;
    let mut start = None;
    let mut next = offset;
    while at < run.len() {
        let (base, len, batch_next) = walk_header(&run[at..])?;
        if start.is_none() {
            if batch_next <= offset {
                at += len;
                continue;
            }
            if base > offset {
                return None;
            }
            start = Some(at);
        }
        let from = start.unwrap_or(at);
        let taken = at - from;
        if taken + len > room && !(must_take && taken == 0) {
            break;
        }
        at += len;
        next = batch_next;
    }
    let from = start?;
    (at > from).then_some((from..at, next))
}

impl<B: Deref<Target = [u8]>> Inner<B> {
    /// Removes an entry and returns its bytes (0 when there was none).
    fn remove(&mut self, log: u64, base: u64) -> usize {
        let Some(entries) = self.logs.get_mut(&log) else {
            return 0;
        };
        let Some(entry) = entries.entries.remove(&base) else {
            return 0;
        };
        let len = entry.data.len();
        self.stats.bytes -= len;
        match entry.queue {
            Queue::Pinned => self.stats.pinned_bytes -= len,
            Queue::Hot => self.hot_live -= 1,
            Queue::Cold => {
                self.cold_live -= 1;
                self.stats.cold_bytes -= len;
            }
        }
        len
    }

    /// Moves a queued entry to the back of the hot queue (a cold one becomes hot).
    fn promote(&mut self, log: u64, base: u64) {
        let seq = self.next_seq;
        let Some(entry) = self
            .logs
            .get_mut(&log)
            .and_then(|entries| entries.entries.get_mut(&base))
        else {
            return;
        };
        match entry.queue {
            Queue::Pinned => return,
            Queue::Hot => {}
            Queue::Cold => {
                self.cold_live -= 1;
                self.hot_live += 1;
                self.stats.cold_bytes -= entry.data.len();
                entry.queue = Queue::Hot;
            }
        }
        entry.seq = seq;
        self.next_seq += 1;
        self.hot.push_back(Ticket { seq, log, base });
        self.compact_queues();
    }

    /// Whether `ticket` still stands for its entry in `queue` (not stale).
    fn is_live(logs: &HashMap<u64, LogEntries<B>>, ticket: &Ticket, queue: Queue) -> bool {
        logs.get(&ticket.log)
            .and_then(|entries| entries.entries.get(&ticket.base))
            .is_some_and(|e| e.seq == ticket.seq && e.queue == queue)
    }

    /// Drops stale tickets once they outnumber the live ones (a hit leaves one behind).
    fn compact_queues(&mut self) {
        let logs = &self.logs;
        if self.hot.len() > 2 * self.hot_live + 1024 {
            self.hot.retain(|t| Self::is_live(logs, t, Queue::Hot));
        }
        if self.cold.len() > 2 * self.cold_live + 1024 {
            self.cold.retain(|t| Self::is_live(logs, t, Queue::Cold));
        }
    }

    /// Evicts the least recently used queued entries while over budget: cold ones first
    /// while the cold queue holds more than its share (or nothing is hot).
    fn evict(&mut self) {
        let cold_share = self.stats.budget / COLD_SHARE_DIVISOR;
        while self.stats.bytes > self.stats.budget {
            let from_cold = self.stats.cold_bytes > cold_share || self.hot_live == 0;
            let ticket = if from_cold {
                self.cold.pop_front()
            } else {
                self.hot.pop_front()
            };
            let Some(ticket) = ticket else {
                return; // only pinned bytes left
            };
            let queue = if from_cold { Queue::Cold } else { Queue::Hot };
            if Self::is_live(&self.logs, &ticket, queue) {
                let len = self.remove(ticket.log, ticket.base);
                self.stats.evicted_bytes += len as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidelog_wire::batch::HEADER_LEN;

    const LOG: u64 = 1;

    /// A batch as the cache sees it: a header with base offset, length and last offset
    /// delta, then `len - 64` bytes of `fill`.
    fn batch(base: u64, records: u32, len: usize, fill: u8) -> Vec<u8> {
        let mut bytes = vec![fill; len.max(HEADER_LEN)];
        // A header the log's checks accept (the payload is not looked at).
        bytes[..HEADER_LEN].fill(0);
        bytes[16] = tidelog_wire::batch::FORMAT_VERSION;
        bytes[20..24].copy_from_slice(&(records as i32).to_le_bytes());
        bytes[..8].copy_from_slice(&(base as i64).to_le_bytes());
        let len = bytes.len() as u32;
        bytes[12..16].copy_from_slice(&len.to_le_bytes());
        bytes[24..28].copy_from_slice(&(records as i32 - 1).to_le_bytes());
        bytes
    }

    /// Appends `batches` (records, len) to `cache` from offset `base` and file position
    /// `pos`, returning the bytes as a write buffer would hold them.
    fn append_all(
        cache: &BatchCache<Bytes>,
        base: u64,
        pos: u64,
        batches: &[(u32, usize)],
    ) -> Vec<u8> {
        let mut buffer = Vec::new();
        let mut offset = base;
        for (i, &(records, len)) in batches.iter().enumerate() {
            let bytes = batch(offset, records, len, i as u8);
            let at = (0, pos + buffer.len() as u64);
            cache.push_appended(
                LOG,
                offset,
                offset + u64::from(records),
                Bytes::copy_from_slice(&bytes),
                Bytes::new(),
                at,
            );
            buffer.extend_from_slice(&bytes);
            offset += u64::from(records);
        }
        buffer
    }

    fn read(cache: &BatchCache<Bytes>, offset: u64, max: usize) -> Option<(Vec<u8>, u64, usize)> {
        let mut out = Vec::new();
        let next = cache.read(LOG, offset, max, &mut out)?;
        let pieces = out.len();
        let bytes = out.iter().flat_map(ReadChunk::to_vec).collect();
        Some((bytes, next, pieces))
    }

    #[test]
    fn unwritten_batches_stay_whatever_the_budget() {
        let cache = BatchCache::new(1000);
        append_all(&cache, 0, 0, &[(1, 800); 5]);
        assert_eq!(cache.stats().bytes, 4000);
        assert_eq!(cache.stats().pinned_bytes, 4000);
        assert!(read(&cache, 0, 1).is_some(), "pinned: still readable");
        cache.written(LOG, 3);
        let stats = cache.stats();
        assert_eq!(stats.pinned_bytes, 1600);
        assert!(stats.bytes - stats.pinned_bytes <= 1000, "{stats:?}");
        assert!(
            read(&cache, 0, 1).is_none(),
            "the oldest written batch went"
        );
        assert!(read(&cache, 3, 1).is_some(), "unwritten batches stay");
        assert!(read(&cache, 4, 1).is_some());
    }

    #[test]
    fn an_adopted_buffer_serves_its_batches_from_its_own_memory() {
        let cache = BatchCache::new(64 << 20);
        let buffer = Bytes::from(append_all(&cache, 10, 0, &[(3, 300_000), (2, 400_000)]));
        cache.adopt_buffer(LOG, 0, 0, &buffer, 1 << 20);
        let mut out = Vec::new();
        assert_eq!(cache.read(LOG, 11, 1 << 20, &mut out), Some(15));
        // Each batch is larger than an entry's grain: one entry, one chunk each.
        let mut at = 0;
        for (chunk, len) in out.iter().zip([300_000, 400_000]) {
            let ReadChunk::Disk(chunk) = chunk else {
                panic!("an adopted run is served as a buffer view");
            };
            assert_eq!(chunk.as_ptr(), buffer[at..].as_ptr(), "no copy");
            assert_eq!(chunk.len(), len);
            at += len;
        }
        assert_eq!(cache.stats().copied_bytes, 0);
        assert_eq!(
            cache.stats().bytes,
            700_000,
            "accounting unchanged by adoption"
        );
    }

    #[test]
    fn a_batch_split_across_buffers_and_a_sparse_buffer_are_copied() {
        let cache = BatchCache::new(64 << 20);
        // Buffer 1 holds [0, 700k) of file bytes; batch 1 runs from 600k to 1M.
        let bytes = append_all(&cache, 0, 0, &[(1, 600_000), (1, 400_000), (1, 100)]);
        let first = Bytes::copy_from_slice(&bytes[..700_000]);
        cache.adopt_buffer(LOG, 0, 0, &first, 1 << 20);
        assert_eq!(cache.stats().copied_bytes, 0, "batch 0 adopted in place");
        // Buffer 2 starts at the page holding 700k (a partial page is written again).
        let second_pos = 700_000 / 4096 * 4096;
        let second = Bytes::copy_from_slice(&bytes[second_pos..]);
        cache.adopt_buffer(LOG, 0, second_pos as u64, &second, 1 << 20);
        let stats = cache.stats();
        assert_eq!(
            stats.copied_bytes,
            400_000 + 100,
            "batch 1 began in the first buffer; batch 2 alone fills too little of the second"
        );
        let (all, next, _) = read(&cache, 0, 10 << 20).expect("cached");
        assert_eq!(next, 3);
        assert_eq!(all, bytes, "every byte as appended");
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset_and_end_at_a_batch_boundary() {
        let cache = BatchCache::new(64 << 20);
        let bytes = append_all(&cache, 0, 0, &[(5, 1000); 8]);
        cache.adopt_buffer(LOG, 0, 0, &Bytes::from(bytes.clone()), 8000);
        let (got, next, _) = read(&cache, 12, 2500).expect("cached");
        assert_eq!(
            next, 20,
            "batches 10..15 and 15..20: a third would pass 2500 bytes"
        );
        assert_eq!(got, bytes[2000..4000]);
        let (got, next, _) = read(&cache, 39, 1).expect("cached");
        assert_eq!((got.len(), next), (1000, 40), "at least one batch");
        assert!(read(&cache, 40, 1).is_none(), "past the end: a miss");
    }

    #[test]
    fn a_scan_from_disk_takes_only_the_cold_share() {
        let budget = 80_000;
        let cache = BatchCache::new(budget);
        // 70 KB of appended batches, written: hot.
        append_all(&cache, 1000, 0, &[(1, 1000); 70]);
        cache.written(LOG, 1070);
        // A consumer catching up streams 1 MB through the cache from disk, once.
        for i in 0..1000u64 {
            let b = Bytes::from(batch(i, 1, 1000, 7));
            cache.insert_read(LOG, i, i + 1, b);
            let stats = cache.stats();
            assert!(stats.bytes <= budget, "{stats:?}");
        }
        let stats = cache.stats();
        assert!(
            stats.cold_bytes <= budget / COLD_SHARE_DIVISOR + 1000,
            "{stats:?}"
        );
        // The tail readers' batches are all still there but for what the cold share took.
        let hot_left = (1000..1070).filter(|&o| cache.holds(LOG, o)).count();
        assert!(hot_left >= 70 - 10 - 1, "{hot_left} of 70 hot batches left");
    }

    #[test]
    fn a_second_read_promotes_cold_bytes_and_hits_move_to_the_back() {
        let cache = BatchCache::new(10_000);
        for i in 0..5u64 {
            cache.insert_read(LOG, i, i + 1, Bytes::from(batch(i, 1, 1000, 1)));
        }
        assert_eq!(
            cache.stats().cold_bytes,
            5000,
            "within budget: nothing evicted yet"
        );
        assert!(read(&cache, 0, 1).is_some());
        assert_eq!(cache.stats().cold_bytes, 4000, "read again: hot");
        append_all(&cache, 5, 0, &[(1, 1000); 5]);
        cache.written(LOG, 10);
        assert_eq!(
            cache.stats().bytes,
            10_000,
            "exactly the budget: nothing evicted"
        );
        // Hot, oldest first: 0, 5, 6, 7, 8, 9; a hit moves 5 to the back.
        assert!(read(&cache, 5, 1).is_some());
        append_all(&cache, 10, 5000, &[(1, 1000); 6]);
        cache.written(LOG, 16);
        // 6,000 over: the cold queue above its share (1,250) gives 3,000, then the least
        // recently used hot batches go.
        for (offset, kept) in [
            (0, false),
            (1, false),
            (3, false),
            (4, true),
            (5, true),
            (6, false),
            (7, false),
            (8, true),
            (15, true),
        ] {
            assert_eq!(cache.holds(LOG, offset), kept, "offset {offset}");
        }
        let stats = cache.stats();
        assert_eq!(stats.bytes, 10_000, "{stats:?}");
        assert_eq!(stats.cold_bytes, 1000);
    }

    #[test]
    fn forgetting_a_log_and_dropping_below_give_the_bytes_back() {
        let cache = BatchCache::new(1 << 20);
        append_all(&cache, 0, 0, &[(2, 500); 10]);
        cache.written(LOG, 20);
        cache.drop_below(LOG, 6);
        assert_eq!(cache.stats().bytes, 3500);
        assert!(read(&cache, 5, 1).is_none());
        assert!(read(&cache, 6, 1).is_some());
        cache.forget_log(LOG);
        assert_eq!(
            cache.stats(),
            CacheStats {
                budget: 1 << 20,
                dirty_budget: crate::limits::DIRTY_BYTES_PER_SHARD,
                hits: 1,
                misses: 1,
                ..CacheStats::default()
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<(u32, usize)>),
        Submit,
        Write,
        Read(u64, usize),
        DiskRead(u64, u64),
        DropBelow(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec((1u32..4, 64usize..3000), 1..6).prop_map(Op::Append),
            Just(Op::Submit),
            Just(Op::Write),
            (0u64..200, 1usize..10_000).prop_map(|(o, m)| Op::Read(o, m)),
            (0u64..200, 1u64..10).prop_map(|(o, n)| Op::DiskRead(o, n)),
            (0u64..100).prop_map(Op::DropBelow),
        ]
    }

    proptest! {
        /// Against a model of the log (every batch's bytes by offset, what is submitted and
        /// written): reads return exactly the stored bytes of consecutive whole batches
        /// starting at the one holding the offset; unwritten batches are always readable;
        /// the budget holds but for unwritten bytes; the totals match the entries.
        #[test]
        fn the_cache_serves_the_log_as_written(
            budget in 2_000usize..40_000,
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let cache = BatchCache::<Bytes>::new(budget);
            // (base, next, file position, bytes) of every batch appended.
            let mut log: Vec<(u64, u64, u64, Vec<u8>)> = Vec::new();
            let (mut submitted, mut written, mut start) = (0u64, 0u64, 0u64);
            let end_pos = |log: &Vec<(u64, u64, u64, Vec<u8>)>| {
                log.last().map_or(0, |b| b.2 + b.3.len() as u64)
            };
            for op in ops {
                let log_end = log.last().map_or(0, |b| b.1);
                match op {
                    Op::Append(batches) => {
                        let pos = end_pos(&log);
                        let bytes = append_all(&cache, log_end, pos, &batches);
                        let (mut offset, mut at) = (log_end, pos);
                        for (records, len) in batches {
                            let len = len.max(HEADER_LEN);
                            let next = offset + u64::from(records);
                            let from = (at - pos) as usize;
                            log.push((offset, next, at, bytes[from..from + len].to_vec()));
                            offset = next;
                            at += len as u64;
                        }
                    }
                    Op::Submit => {
                        // A buffer from the page holding the last submitted byte to the end.
                        let end = end_pos(&log);
                        let view_pos = submitted / 4096 * 4096;
                        let mut view = Vec::new();
                        for (_, _, pos, bytes) in &log {
                            for (i, b) in bytes.iter().enumerate() {
                                let p = pos + i as u64;
                                if p >= view_pos && p < end {
                                    view.push(*b);
                                }
                            }
                        }
                        cache.adopt_buffer(LOG, 0, view_pos, &Bytes::from(view), 8192);
                        submitted = end;
                    }
                    Op::Write => {
                        // Everything submitted lands.
                        let offset = log
                            .iter()
                            .take_while(|b| b.2 + b.3.len() as u64 <= submitted)
                            .last()
                            .map_or(written, |b| b.1);
                        written = written.max(offset);
                        cache.written(LOG, written);
                    }
                    Op::Read(offset, max) => {
                        let offset = offset.min(log_end);
                        let got = read(&cache, offset, max);
                        let unwritten = offset >= written && offset < log_end;
                        prop_assert!(got.is_some() || !unwritten, "unwritten {offset} missed");
                        if let Some((bytes, next, _)) = got {
                            let first = log.iter().position(|b| b.1 > offset).expect("in log");
                            prop_assert!(log[first].0 <= offset);
                            let upto = log.iter().position(|b| b.1 == next).expect("boundary");
                            let want: Vec<u8> = log[first..=upto]
                                .iter()
                                .flat_map(|b| b.3.clone())
                                .collect();
                            prop_assert_eq!(&bytes, &want);
                            prop_assert!(bytes.len() <= max || upto == first);
                        }
                    }
                    Op::DiskRead(offset, n) => {
                        // A disk read serves whole written batches.
                        let Some(first) = log.iter().position(|b| b.0 >= offset && b.1 <= written)
                        else {
                            continue;
                        };
                        if log[first].0 < start {
                            continue;
                        }
                        let last = (first + n as usize - 1).min(log.len() - 1);
                        let last = (first..=last).take_while(|&i| log[i].1 <= written).last();
                        let Some(last) = last else { continue };
                        let bytes: Vec<u8> =
                            log[first..=last].iter().flat_map(|b| b.3.clone()).collect();
                        cache.insert_read(LOG, log[first].0, log[last].1, Bytes::from(bytes));
                    }
                    Op::DropBelow(offset) => {
                        let offset = offset.min(written);
                        cache.drop_below(LOG, offset);
                        start = start.max(offset);
                    }
                }
                let stats = cache.stats();
                prop_assert!(stats.bytes >= stats.pinned_bytes);
                prop_assert!(
                    stats.bytes - stats.pinned_bytes <= budget,
                    "over budget beyond the unwritten bytes: {:?}", stats
                );
                let inner = cache.inner.borrow();
                let held: usize = inner
                    .logs
                    .values()
                    .flat_map(|l| l.entries.values())
                    .map(|e| e.data.len())
                    .sum();
                prop_assert_eq!(held, stats.bytes);
            }
        }
    }
}
