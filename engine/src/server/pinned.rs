//! What stored batches keep alive of the buffers their requests were read into.
//!
//! A produced batch is stored with one copy (into the segment's write buffer): until that
//! buffer goes to the kernel (when it fills, or at a flush), the batch cache keeps the
//! producer's bytes as a slice of the very buffer the request arrived in, then serves them
//! from the write buffer and lets the slice go. Such a slice keeps its whole allocation
//! alive, which several requests share (a connection reads greedily, so one read buffer
//! holds many small frames) and which may hold batches of many partitions, each adopted at
//! its own time. The cache counts only the batches' own bytes; this ledger bounds the rest: every read buffer a stored batch shares
//! is registered here, once, at its full size, and while the registered buffers reach
//! [`PINNED_READ_BYTES_MAX`] a listener copies the batch instead of sharing it (the copy
//! owns exactly its bytes). A registered buffer is released once the ledger holds its last
//! reference, found by sweeping: on demand when the bound is reached, every
//! [`SWEEP_EVERY_PINS`] registrations, and on the server's timer.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::limits::PINNED_READ_BYTES_MAX;

/// Registrations between two sweeps of the ledger (besides the on-demand and timed ones).
pub(crate) const SWEEP_EVERY_PINS: u32 = 256;

/// The allocation a frame was read into: its first byte's address (its identity while the
/// allocation is alive) and its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Home {
    pub(super) base: usize,
    pub(super) bytes: usize,
}

impl Home {
    /// The allocation `buf` starts at, with `buf`'s capacity: call right after allocating
    /// (or reclaiming) it, when the view starts at the allocation's first byte.
    pub fn of(buf: &BytesMut) -> Home {
        Home {
            base: buf.as_ptr() as usize,
            bytes: buf.capacity(),
        }
    }

    /// Whether `part` lies within the allocation.
    pub fn holds(&self, part: &[u8]) -> bool {
        let at = part.as_ptr() as usize;
        at >= self.base && at + part.len() <= self.base + self.bytes
    }
}

/// The read buffers stored batches keep alive on one shard, and their total.
#[derive(Debug)]
pub(crate) struct PinnedReads {
    limit: usize,
    held: usize,
    /// One byte of each registered allocation (the reference that keeps it registered),
    /// by base address: an allocation the ledger holds cannot be freed, so no other can
    /// have its address meanwhile.
    buffers: HashMap<usize, (Bytes, usize)>,
    pins_since_sweep: u32,
    /// Batches stored as slices of their request, and their bytes.
    pub shared_bytes: u64,
    /// Batches copied because the bound was reached (or their buffer was unknown).
    pub copied_bytes: u64,
}

impl Default for PinnedReads {
    fn default() -> Self {
        PinnedReads::new(PINNED_READ_BYTES_MAX)
    }
}

impl PinnedReads {
    /// An empty ledger of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        PinnedReads {
            limit,
            held: 0,
            buffers: HashMap::new(),
            pins_since_sweep: 0,
            shared_bytes: 0,
            copied_bytes: 0,
        }
    }

    /// Bytes of the registered read buffers.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether a stored batch may keep `home` alive: it is registered already or is now,
    /// within the bound. `anchor` is a non-empty slice of that allocation (a reference the
    /// ledger keeps while the allocation is registered).
    pub fn pin(&mut self, home: Home, anchor: &Bytes) -> bool {
        if anchor.is_empty() || home.bytes == 0 || !home.holds(anchor) {
            return false;
        }
        if self.buffers.contains_key(&home.base) {
            return true;
        }
        self.pins_since_sweep += 1;
        if self.pins_since_sweep >= SWEEP_EVERY_PINS || self.held + home.bytes > self.limit {
            self.sweep();
        }
        if self.held + home.bytes > self.limit {
            return false;
        }
        self.held += home.bytes;
        self.buffers
            .insert(home.base, (anchor.slice(..1), home.bytes));
        true
    }

    /// Whether `len` bytes of a batch in the allocation `home` (`anchor`: any non-empty slice
    /// of it) may be stored as a slice of it ([`pin`](Self::pin)); the caller copies them
    /// otherwise. Counts which.
    pub fn may_share(&mut self, home: Home, anchor: &Bytes, len: usize) -> bool {
        let shared = self.pin(home, anchor);
        let counter = if shared {
            &mut self.shared_bytes
        } else {
            &mut self.copied_bytes
        };
        *counter += len as u64;
        shared
    }

    /// Shares `records` (a slice of the allocation `home`) when the ledger allows it, else
    /// copies them into a buffer of their own.
    pub fn share_or_copy(&mut self, home: Home, records: Bytes) -> Bytes {
        if self.may_share(home, &records, records.len()) {
            records
        } else {
            Bytes::copy_from_slice(&records)
        }
    }

    /// Releases every registered allocation that nothing but the ledger references any
    /// more (the batches sharing it were evicted, the requests answered).
    pub fn sweep(&mut self) {
        self.pins_since_sweep = 0;
        let mut released = 0;
        self.buffers.retain(|_, (keep, bytes)| {
            let gone = keep.is_unique();
            if gone {
                released += *bytes;
            }
            !gone
        });
        self.held -= released;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read buffer with two frames split off it, as the connection loop does.
    fn buffer(cap: usize) -> (Home, Bytes, Bytes, BytesMut) {
        let mut buf = BytesMut::with_capacity(cap);
        let home = Home::of(&buf);
        buf.resize(300, 7);
        let a = buf.split_to(100).freeze();
        let b = buf.split_to(100).freeze();
        (home, a, b, buf)
    }

    #[test]
    fn a_buffer_is_counted_once_at_its_full_size() {
        let mut ledger = PinnedReads::new(1 << 20);
        let (home, a, b, _rest) = buffer(64 << 10);
        assert!(ledger.pin(home, &a));
        assert!(ledger.pin(home, &b));
        assert_eq!(ledger.held, 64 << 10, "one buffer, counted once, whole");
    }

    #[test]
    fn over_the_bound_batches_are_copied() {
        let mut ledger = PinnedReads::new(100 << 10);
        let (home1, a1, _, _r1) = buffer(64 << 10);
        let (home2, a2, _, _r2) = buffer(64 << 10);
        let kept = ledger.share_or_copy(home1, a1.clone());
        assert_eq!(kept.as_ptr(), a1.as_ptr(), "within the bound: shared");
        let kept = ledger.share_or_copy(home2, a2.clone());
        assert_ne!(kept.as_ptr(), a2.as_ptr(), "past the bound: copied");
        assert_eq!(kept, a2);
        assert_eq!(ledger.held, 64 << 10);
        assert_eq!((ledger.shared_bytes, ledger.copied_bytes), (100, 100));
    }

    #[test]
    fn a_buffer_nothing_else_references_is_released_by_a_sweep() {
        let mut ledger = PinnedReads::new(100 << 10);
        let (home1, a1, b1, rest1) = buffer(64 << 10);
        assert!(ledger.pin(home1, &a1));
        ledger.sweep();
        assert_eq!(ledger.held, 64 << 10, "still referenced: kept");
        drop((a1, b1, rest1));
        // Registering a second buffer over the bound sweeps first and finds the first free.
        let (home2, a2, _, _r2) = buffer(64 << 10);
        assert!(ledger.pin(home2, &a2));
        assert_eq!(ledger.held, 64 << 10, "the first buffer was released");
    }

    #[test]
    fn a_slice_outside_the_named_buffer_is_not_registered() {
        let mut ledger = PinnedReads::new(1 << 20);
        let (home, _, _, _rest) = buffer(64 << 10);
        let elsewhere = Bytes::from(vec![1u8; 10]);
        assert!(!ledger.pin(home, &elsewhere));
        assert!(!ledger.pin(Home::default(), &elsewhere));
        assert_eq!(ledger.held, 0);
    }
}
