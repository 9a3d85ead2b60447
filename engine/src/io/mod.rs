//! The one seam between the engine and the outside world: files and time.
//!
//! Every byte the engine reads or writes, and every clock reading it takes, goes through the
//! [`Storage`], [`StorageFile`] and [`Clock`] traits. Production uses [`dma`] (glommio DMA
//! files, O_DIRECT over io_uring, and the system clock); tests use [`sim`], a seeded in-memory
//! disk that injects faults and simulates crashes that lose or tear unsynced writes.
//!
//! The contract every implementation keeps:
//! - positions and lengths of writes are multiples of [`IO_ALIGNMENT`](crate::limits::IO_ALIGNMENT);
//!   reads may be unaligned (the implementation aligns them);
//! - a write whose future has completed is visible to reads, but survives a crash only after
//!   a later `fdatasync` of the same file has completed;
//! - futures are `!Send`: everything runs on one shard's thread.

use std::future::Future;
use std::io;
use std::ops::{Deref, Range};
use std::path::Path;

pub mod dma;
pub mod journal;
pub mod sim;

/// Wall-clock time, as the engine sees it.
pub trait Clock: Clone + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// A monotonic reading in microseconds, for measuring durations (metrics); only
    /// differences mean anything. Defaults to [`now_ms`](Self::now_ms) in microseconds (the
    /// simulator's clock, so simulated runs stay deterministic).
    fn now_us(&self) -> u64 {
        u64::try_from(self.now_ms())
            .unwrap_or(0)
            .saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }

    fn now_us(&self) -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Bytes that clone and slice without a copy (what reads hand out, and the batch cache
/// keeps).
pub trait Sliceable: Deref<Target = [u8]> + Clone + Sized {
    /// The bytes of `range` (within bounds), sharing memory.
    fn slice_of(&self, range: Range<usize>) -> Self;
}

impl Sliceable for bytes::Bytes {
    fn slice_of(&self, range: Range<usize>) -> Self {
        self.slice(range)
    }
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read and write; create the file if it does not exist.
    Create,
    /// Read and write; the file must exist.
    Existing,
}

/// A directory tree of files, as the engine needs it.
#[allow(async_fn_in_trait)] // Shard-local: the futures are deliberately !Send.
pub trait Storage: Clone + 'static {
    /// An open file.
    type File: StorageFile;

    /// Creates a directory and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for direct I/O.
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Removes a file.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of a directory (created, removed files) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing the target.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// An open file, read and written with direct I/O.
#[allow(async_fn_in_trait)]
pub trait StorageFile: Clone + 'static {
    /// Bytes returned by a read. Cloning and slicing it must not copy the bytes.
    type ReadBuf: Sliceable + 'static;
    /// An aligned buffer for writes.
    type WriteBuf: AsRef<[u8]> + AsMut<[u8]> + 'static;
    /// The future of a write; `'static` so that several can be kept in flight.
    type WriteFuture: Future<Output = io::Result<usize>> + 'static;

    /// Allocates an aligned, zeroed-or-not buffer of exactly `len` bytes (`len` aligned).
    fn alloc_write_buf(&self, len: usize) -> Self::WriteBuf;
    /// Shrinks a write buffer to its first `len` bytes (`len` aligned).
    fn trim_write_buf(buf: &mut Self::WriteBuf, len: usize);
    /// Writes the whole buffer at `pos` (aligned). The I/O is submitted on the first poll.
    fn write_at(&self, buf: Self::WriteBuf, pos: u64) -> Self::WriteFuture;
    /// [`write_at`](Self::write_at), keeping a read-only view of the buffer's bytes that
    /// shares its memory (no copy): the writer hands it to the batch cache, which serves
    /// the appended batches from it while and after they go to the file. The buffer must not
    /// change after this (it is no longer writable).
    fn write_shared_at(&self, buf: Self::WriteBuf, pos: u64) -> (Self::ReadBuf, Self::WriteFuture);
    /// Reads up to `len` bytes at `pos`; shorter only at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    /// A sub-range of a read buffer, sharing its memory.
    fn slice(buf: &Self::ReadBuf, range: Range<usize>) -> Self::ReadBuf;
    /// Makes completed writes (and the file size) durable.
    async fn fdatasync(&self) -> io::Result<()>;
    /// Reserves space up to `len` bytes, extending the file size with zeros.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Sets the file size.
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Current file size.
    async fn size(&self) -> io::Result<u64>;
}
