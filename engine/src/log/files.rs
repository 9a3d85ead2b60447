//! A shard's bounded set of open sealed-segment files.
//!
//! An active segment holds its log file open for as long as it is active (one per partition,
//! bounded by the partitions a shard may hold). A sealed segment holds none: its file is
//! opened when a read needs it and kept in this cache, shared by every partition of the
//! shard, until the least recently used entries make room for others. So the descriptors a
//! shard's logs hold are bounded by `partitions + capacity + reads in flight` (a read keeps
//! the handle it took until it completes; a partition's one read-ahead likewise), whatever
//! the number of segments on disk, and a log of a million segments opens as fast as it can
//! stat them.
//!
//! Entries are keyed by the log's identity (unique per open of a partition, never reused)
//! and the segment's base offset, so a handle of a closed or deleted log can never be handed
//! to a later log at the same path. Whoever deletes a segment forgets its entry first, so the
//! cache never keeps a deleted file's space allocated.
//!
//! Shard-local: `!Send`, shared by `Rc`, no lock.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// The default number of sealed-segment files a shard keeps open (`--max-open-segment-files`).
pub const OPEN_SEGMENT_FILES_DEFAULT: usize = 1024;

thread_local! {
    /// Identities handed to logs of this thread; never reused.
    static NEXT_LOG_ID: Cell<u64> = const { Cell::new(1) };
}

/// A fresh identity for one open of a partition log.
pub(crate) fn next_log_id() -> u64 {
    NEXT_LOG_ID.with(|next| {
        let id = next.get();
        next.set(id + 1);
        id
    })
}

/// Key of an entry: the log's identity and the segment's base offset.
type Key = (u64, u64);

struct Inner<F> {
    capacity: usize,
    /// Each entry's file and the stamp of its last use.
    entries: BTreeMap<Key, (F, u64)>,
    /// Entries by last use, oldest first.
    by_use: BTreeMap<u64, Key>,
    clock: u64,
    hits: u64,
    opens: u64,
    evictions: u64,
}

/// Counters of a [`SegmentFiles`] cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentFilesStats {
    /// Files open in the cache now.
    pub open: usize,
    /// The most it keeps open.
    pub capacity: usize,
    /// Lookups that found the file open.
    pub hits: u64,
    /// Files opened on a miss and kept.
    pub opens: u64,
    /// Files closed to make room.
    pub evictions: u64,
}

/// A shard's cache of open sealed-segment files (module docs). Cloning shares it.
pub struct SegmentFiles<F> {
    inner: Rc<RefCell<Inner<F>>>,
}

impl<F> Clone for SegmentFiles<F> {
    fn clone(&self) -> Self {
        SegmentFiles {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<F: Clone> std::fmt::Debug for SegmentFiles<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFiles")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<F: Clone> SegmentFiles<F> {
    /// A cache keeping at most `capacity` files open (at least one).
    pub fn new(capacity: usize) -> Self {
        SegmentFiles {
            inner: Rc::new(RefCell::new(Inner {
                capacity: capacity.max(1),
                entries: BTreeMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
                hits: 0,
                opens: 0,
                evictions: 0,
            })),
        }
    }

    /// The open file of segment `base` of log `log`, marked as just used; `None` on a miss.
    pub(crate) fn get(&self, log: u64, base: u64) -> Option<F> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.clock += 1;
        let stamp = inner.clock;
        let (file, used) = inner.entries.get_mut(&(log, base))?;
        inner.by_use.remove(used);
        *used = stamp;
        inner.by_use.insert(stamp, (log, base));
        inner.hits += 1;
        Some(file.clone())
    }

    /// Keeps `file` as segment `base` of log `log`, closing the least recently used files
    /// past the capacity (their handles close when the last reader holding them is done).
    /// The caller checks, with no await in between, that the segment still exists.
    pub(crate) fn insert(&self, log: u64, base: u64, file: F) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.clock += 1;
        let stamp = inner.clock;
        if let Some((_, used)) = inner.entries.insert((log, base), (file, stamp)) {
            inner.by_use.remove(&used);
        }
        inner.by_use.insert(stamp, (log, base));
        inner.opens += 1;
        while inner.entries.len() > inner.capacity {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
            inner.evictions += 1;
        }
    }

    /// Closes the file of segment `base` of log `log`, if open (the segment is deleted).
    pub(crate) fn forget(&self, log: u64, base: u64) {
        let mut inner = self.inner.borrow_mut();
        if let Some((_, used)) = inner.entries.remove(&(log, base)) {
            inner.by_use.remove(&used);
        }
    }

    /// Closes every file of log `log` (it is closed or deleted).
    pub(crate) fn forget_log(&self, log: u64) {
        let mut inner = self.inner.borrow_mut();
        let keys: Vec<Key> = inner
            .entries
            .range((log, 0)..=(log, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            if let Some((_, used)) = inner.entries.remove(&key) {
                inner.by_use.remove(&used);
            }
        }
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> SegmentFilesStats {
        let inner = self.inner.borrow();
        SegmentFilesStats {
            open: inner.entries.len(),
            capacity: inner.capacity,
            hits: inner.hits,
            opens: inner.opens,
            evictions: inner.evictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_and_evicts_the_least_recently_used() {
        let files = SegmentFiles::new(2);
        files.insert(1, 0, Rc::new("a"));
        files.insert(1, 100, Rc::new("b"));
        assert!(files.get(1, 0).is_some(), "a used: b is now the oldest");
        files.insert(2, 0, Rc::new("c"));
        assert_eq!(files.stats().open, 2);
        assert!(files.get(1, 100).is_none(), "b evicted");
        assert!(files.get(1, 0).is_some());
        assert!(files.get(2, 0).is_some());
        assert_eq!(files.stats().evictions, 1);
    }

    #[test]
    fn an_evicted_handle_closes_only_when_its_last_reader_is_done() {
        let files = SegmentFiles::new(1);
        let handle = Rc::new("file");
        files.insert(1, 0, Rc::clone(&handle));
        let reading = files.get(1, 0).expect("cached");
        files.insert(1, 1, Rc::new("other"));
        assert_eq!(Rc::strong_count(&handle), 2, "the reader still holds it");
        drop(reading);
        assert_eq!(Rc::strong_count(&handle), 1, "closed with its last reader");
    }

    #[test]
    fn forgetting_a_log_closes_its_files_and_only_its_files() {
        let files = SegmentFiles::new(10);
        for base in [0, 10, 20] {
            files.insert(7, base, Rc::new(base));
            files.insert(8, base, Rc::new(base));
        }
        files.forget_log(7);
        files.forget(8, 10);
        assert_eq!(files.stats().open, 2);
        assert!(files.get(7, 0).is_none());
        assert!(files.get(8, 0).is_some() && files.get(8, 20).is_some());
        assert!(files.get(8, 10).is_none());
    }

    #[test]
    fn log_identities_are_never_reused() {
        let a = next_log_id();
        let b = next_log_id();
        assert!(b > a);
    }
}
