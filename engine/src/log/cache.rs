//! The tail cache: the most recent batches of a partition, as shared `Bytes`.
//!
//! Appended batches enter the cache without a copy (the caller's buffer is frozen into
//! `Bytes`) and readers get clones of those `Bytes` (a reference count, not a copy), so a
//! consumer that keeps up with producers never touches the disk.
//!
//! Invariant: every batch whose write to the segment file has not completed is in the cache.
//! Eviction therefore only removes batches below the written offset, and the cache may
//! exceed its byte budget by at most the bytes not yet written (bounded by the writer's
//! buffer and in-flight limits).

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
struct CachedBatch {
    base_offset: u64,
    next_offset: u64,
    bytes: Bytes,
    /// The rest of the batch when it is held in two pieces (a Kafka produce's head and its
    /// records, shared with the request: see `ReadChunk::Split`); empty otherwise.
    tail: Bytes,
}

impl CachedBatch {
    fn len(&self) -> usize {
        self.bytes.len() + self.tail.len()
    }
}

/// Recent batches of one partition, in offset order and contiguous.
#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    budget_bytes: usize,
}

impl TailCache {
    /// An empty cache holding about `budget_bytes`.
    pub fn new(budget_bytes: usize) -> Self {
        TailCache {
            batches: VecDeque::new(),
            bytes: 0,
            budget_bytes,
        }
    }

    /// First offset held, if any.
    pub fn start_offset(&self) -> Option<u64> {
        self.batches.front().map(|b| b.base_offset)
    }

    /// Adds the batch that follows the last one held.
    #[cfg(test)]
    pub fn push(&mut self, base_offset: u64, next_offset: u64, bytes: Bytes) {
        self.push_parts(base_offset, next_offset, bytes, Bytes::new());
    }

    /// Adds the batch that follows the last one held, in two pieces (`tail` may be empty).
    /// It counts its own bytes against the budget; what a piece shared with a read buffer
    /// keeps alive beyond them is bounded by the listeners' ledger (`server/pinned.rs`).
    pub fn push_parts(&mut self, base_offset: u64, next_offset: u64, bytes: Bytes, tail: Bytes) {
        if let Some(last) = self.batches.back() {
            assert_eq!(
                last.next_offset, base_offset,
                "tail cache must stay contiguous"
            );
        }
        self.bytes += bytes.len() + tail.len();
        self.batches.push_back(CachedBatch {
            base_offset,
            next_offset,
            bytes,
            tail,
        });
    }

    /// Evicts the oldest batches while over budget, never one at or above `written_offset`.
    pub fn evict(&mut self, written_offset: u64) {
        while self.bytes > self.budget_bytes {
            match self.batches.front() {
                Some(front) if front.next_offset <= written_offset => {
                    self.bytes -= front.len();
                    self.batches.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops batches that end at or below `offset` (after retention moved the log start).
    pub fn drop_below(&mut self, offset: u64) {
        while let Some(front) = self.batches.front() {
            if front.next_offset > offset {
                break;
            }
            self.bytes -= front.len();
            self.batches.pop_front();
        }
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Whole batches starting with the one that contains `offset`, up to `max_bytes` but at
    /// least one. `None` when `offset` is below the cache.
    /// Each batch comes as (bytes, tail), `tail` empty unless the batch is held in two pieces.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Option<u64> {
        let start = self.start_offset()?;
        if offset < start {
            return None;
        }
        let first = self.batches.partition_point(|b| b.next_offset <= offset);
        let mut total = 0usize;
        let mut next = offset;
        for batch in self.batches.range(first..) {
            if total > 0 && total + batch.len() > max_bytes {
                break;
            }
            total += batch.len();
            next = batch.next_offset;
            out.push((batch.bytes.clone(), batch.tail.clone()));
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(budget: usize) -> TailCache {
        let mut cache = TailCache::new(budget);
        for i in 0..10u64 {
            cache.push(i * 5, i * 5 + 5, Bytes::from(vec![i as u8; 100]));
        }
        cache
    }

    #[test]
    fn read_returns_shared_bytes_not_copies() {
        let cache = filled(10_000);
        let mut out = Vec::new();
        assert_eq!(cache.read(12, 250, &mut out), Some(20));
        assert_eq!(out.len(), 2);
        let held = &cache.batches[2].bytes;
        assert_eq!(
            out[0].0.as_ptr(),
            held.as_ptr(),
            "a cache hit must not copy"
        );
    }

    #[test]
    fn read_returns_at_least_one_batch() {
        let cache = filled(10_000);
        let mut out = Vec::new();
        assert_eq!(cache.read(0, 1, &mut out), Some(5));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn eviction_keeps_unwritten_batches() {
        let mut cache = filled(300);
        cache.evict(20);
        assert_eq!(cache.start_offset(), Some(20));
        cache.evict(50);
        assert_eq!(cache.start_offset(), Some(35));
        assert_eq!(cache.bytes, 300);
    }

    #[test]
    fn a_batch_in_two_pieces_counts_both_and_is_read_as_both() {
        let mut cache = TailCache::new(300);
        for (i, fill) in [1u8, 3].into_iter().enumerate() {
            let i = i as u64;
            cache.push_parts(
                i,
                i + 1,
                Bytes::from(vec![fill; 85]),
                Bytes::from(vec![fill + 1; 100]),
            );
        }
        assert_eq!(cache.bytes, 370, "each counts its head and its tail");
        cache.evict(2);
        assert_eq!(
            cache.start_offset(),
            Some(1),
            "over budget: the older one goes"
        );
        assert_eq!(cache.bytes, 185);
        let mut out = Vec::new();
        assert_eq!(cache.read(1, 10, &mut out), Some(2));
        assert_eq!(out[0].1.len(), 100, "read hands out both pieces");
    }
}
