//! A seeded, in-memory disk with injected faults, standing in for [`DmaStorage`](super::dma::DmaStorage)
//! in tests.
//!
//! Fault model (every choice drawn from one seeded generator, so a seed replays exactly):
//! - **Crash** ([`SimDisk::crash`]): every write that completed since the file's last
//!   `fdatasync` is independently kept whole, lost, or torn at a random 512-byte sector
//!   boundary; files whose directory entry was never synced with `sync_dir` may vanish,
//!   and files removed since their directory's last `sync_dir` may come back.
//! - **I/O errors**: each write and each `fdatasync` fails with `EIO` with a configured
//!   probability. A failed fdatasync drops the unsynced writes, as Linux may do.
//! - **Disk full**: with a capacity set, any write or preallocation that would grow the
//!   total allocated bytes past it fails with `ENOSPC` and changes nothing.
//! - **Bit rot** ([`SimDisk::flip_bit`]): a bit of a file flips in place, durable or not.
//!
//! Reads always see the latest completed writes, as the page cache or the device would.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::{OpenMode, Storage, StorageFile};
use crate::limits::IO_ALIGNMENT;

/// Sector size at which crashes tear writes.
const SECTOR_BYTES: usize = 512;

/// A small deterministic generator (splitmix64); no external crate so the stream of
/// numbers never changes under us.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.below(1_000_000) < u64::from(per_million)
    }
}

/// Probabilities of injected faults, in parts per million.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Chance that a write fails with EIO.
    pub write_error_ppm: u32,
    /// Chance that an fdatasync fails with EIO.
    pub fsync_error_ppm: u32,
    /// Times an fdatasync yields to other tasks before completing, as a real one would while
    /// the device works (lets tests observe group commit).
    pub fsync_yields: u32,
    /// Times a write's future yields before completing, as a real one would while the device
    /// works (lets tests observe appends going on while writes are in flight). The bytes
    /// are applied when the write is started; only its completion waits.
    pub write_yields: u32,
}

#[derive(Debug, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Completed writes since the last fdatasync, in completion order.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// The directory entry survives a crash only once its directory was synced.
    entry_durable: bool,
    /// Bytes read from the file so far (what recovery costs, for tests).
    bytes_read: u64,
}

#[derive(Debug)]
struct DiskState {
    rng: SimRng,
    faults: Faults,
    capacity_bytes: Option<u64>,
    files: BTreeMap<PathBuf, Rc<RefCell<FileData>>>,
    dirs: BTreeSet<PathBuf>,
    /// Bumped at each crash; handles from before a crash stop working.
    generation: u64,
    /// Durable entries removed since their directory was last synced: a crash may bring
    /// each back, as a power loss can undo an unlink that was never made durable.
    unlinked: Vec<(PathBuf, Rc<RefCell<FileData>>)>,
}

impl DiskState {
    fn allocated_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.borrow().current.len() as u64)
            .sum()
    }

    fn check_growth(&self, growth: u64) -> io::Result<()> {
        match self.capacity_bytes {
            Some(capacity) if self.allocated_bytes() + growth > capacity => {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }
}

/// The simulated disk. Cheap to clone; clones share the same files.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

impl SimDisk {
    /// An empty disk whose faults are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Rc::new(RefCell::new(DiskState {
                rng: SimRng::new(seed),
                faults: Faults::default(),
                capacity_bytes: None,
                files: BTreeMap::new(),
                dirs: BTreeSet::new(),
                generation: 0,
                unlinked: Vec::new(),
            })),
        }
    }

    /// Sets the injected fault probabilities.
    pub fn set_faults(&self, faults: Faults) {
        self.state.borrow_mut().faults = faults;
    }

    /// Limits the total allocated bytes; `None` for unlimited.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state.borrow_mut().capacity_bytes = capacity_bytes;
    }

    /// Total bytes allocated by all files.
    pub fn allocated_bytes(&self) -> u64 {
        self.state.borrow().allocated_bytes()
    }

    /// Bytes read so far from the file at `path` (0 when there is none).
    pub fn bytes_read(&self, path: &Path) -> u64 {
        self.state
            .borrow()
            .files
            .get(path)
            .map_or(0, |f| f.borrow().bytes_read)
    }

    /// Simulates a power loss or `kill -9`: unsynced writes are kept, lost or torn, and
    /// unsynced directory entries may vanish. Open handles become invalid.
    pub fn crash(&self) {
        let mut state = self.state.borrow_mut();
        state.generation += 1;
        for (path, data) in std::mem::take(&mut state.unlinked) {
            if !state.files.contains_key(&path)
                && state.dirs.iter().any(|d| path.parent() == Some(d))
                && state.rng.chance(500_000)
            {
                data.borrow_mut().entry_durable = true;
                state.files.insert(path, data);
            }
        }
        let paths: Vec<PathBuf> = state.files.keys().cloned().collect();
        for path in paths {
            let Some(file) = state.files.get(&path).cloned() else {
                continue;
            };
            let mut file = file.borrow_mut();
            if !file.entry_durable && state.rng.chance(500_000) {
                drop(file);
                state.files.remove(&path);
                continue;
            }
            let mut content = std::mem::take(&mut file.durable);
            for (pos, data) in std::mem::take(&mut file.unsynced) {
                let keep = match state.rng.below(3) {
                    0 => 0,
                    1 => data.len(),
                    _ => {
                        let sectors = data.len().div_ceil(SECTOR_BYTES) as u64;
                        (state.rng.below(sectors + 1) as usize * SECTOR_BYTES).min(data.len())
                    }
                };
                apply_write(&mut content, pos, &data[..keep]);
            }
            file.current = content.clone();
            file.durable = content;
            file.entry_durable = true;
        }
    }

    /// Flips one bit of a file's current and durable contents (simulated bit rot).
    pub fn flip_bit(&self, path: &Path, byte: usize, bit: u8) -> bool {
        let state = self.state.borrow();
        let Some(file) = state.files.get(path) else {
            return false;
        };
        let mut file = file.borrow_mut();
        let mask = 1u8 << (bit % 8);
        let mut flipped = false;
        if let Some(b) = file.current.get_mut(byte) {
            *b ^= mask;
            flipped = true;
        }
        if let Some(b) = file.durable.get_mut(byte) {
            *b ^= mask;
        }
        flipped
    }

    /// Current size of a file, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<usize> {
        let state = self.state.borrow();
        state.files.get(path).map(|f| f.borrow().current.len())
    }

    /// Sets a file's current and durable length (cuts the tail or extends with zeros).
    pub fn set_file_len(&self, path: &Path, len: usize) -> bool {
        let state = self.state.borrow();
        let Some(file) = state.files.get(path) else {
            return false;
        };
        let mut file = file.borrow_mut();
        file.current.resize(len, 0);
        file.durable.resize(len, 0);
        file.unsynced.clear();
        true
    }

    /// Puts a durable file with `content` at `path` (its directories too): damaged or
    /// hand-made files for recovery tests and fuzzing.
    pub fn install(&self, path: &Path, content: &[u8]) {
        let mut state = self.state.borrow_mut();
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() {
                break;
            }
            state.dirs.insert(d.to_owned());
            dir = d.parent();
        }
        let data = FileData {
            current: content.to_vec(),
            durable: content.to_vec(),
            unsynced: Vec::new(),
            entry_durable: true,
            bytes_read: 0,
        };
        state
            .files
            .insert(path.to_owned(), Rc::new(RefCell::new(data)));
    }

    /// Paths of all files, sorted.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.state.borrow().files.keys().cloned().collect()
    }
}

fn apply_write(content: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let pos = pos as usize;
    let end = pos + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[pos..end].copy_from_slice(data);
}

fn check_aligned(value: u64) -> io::Result<()> {
    if value.is_multiple_of(IO_ALIGNMENT as u64) {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// An open file on a [`SimDisk`].
#[derive(Debug, Clone)]
pub struct SimFile {
    disk: SimDisk,
    data: Rc<RefCell<FileData>>,
    generation: u64,
}

impl SimFile {
    fn check_live(&self) -> io::Result<()> {
        if self.disk.state.borrow().generation == self.generation {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EBADF))
        }
    }

    fn start_write(&self, buf: &[u8], pos: u64) -> SimWrite {
        let yields = self.disk.state.borrow().faults.write_yields;
        SimWrite {
            result: Some(self.write_now(buf, pos)),
            yields,
        }
    }

    fn write_now(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        self.check_live()?;
        check_aligned(pos)?;
        check_aligned(buf.len() as u64)?;
        let mut state = self.disk.state.borrow_mut();
        let write_error_ppm = state.faults.write_error_ppm;
        if state.rng.chance(write_error_ppm) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let current_len = self.data.borrow().current.len() as u64;
        let end = pos + buf.len() as u64;
        state.check_growth(end.saturating_sub(current_len))?;
        let mut data = self.data.borrow_mut();
        apply_write(&mut data.current, pos, buf);
        data.unsynced.push((pos, buf.to_vec()));
        Ok(buf.len())
    }
}

/// A simulated write's completion: ready after [`Faults::write_yields`] polls.
#[derive(Debug)]
pub struct SimWrite {
    result: Option<io::Result<usize>>,
    yields: u32,
}

impl std::future::Future for SimWrite {
    type Output = io::Result<usize>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<usize>> {
        if self.yields > 0 {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(
            self.result
                .take()
                .unwrap_or_else(|| Err(io::Error::other("write polled after completion"))),
        )
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Storage for SimDisk {
    type File = SimFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.borrow();
        if !state.dirs.contains(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let mut names = BTreeSet::new();
        let children = state.files.keys().chain(state.dirs.iter());
        for child in children {
            if child.parent() == Some(path) {
                if let Some(name) = child.file_name().and_then(|n| n.to_str()) {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let mut state = self.state.borrow_mut();
        if !state.dirs.contains(&parent_of(path)) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let generation = state.generation;
        let data = match state.files.get(path) {
            Some(data) => Rc::clone(data),
            None if mode == OpenMode::Create => {
                let data = Rc::new(RefCell::new(FileData::default()));
                state.files.insert(path.to_path_buf(), Rc::clone(&data));
                data
            }
            None => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        Ok(SimFile {
            disk: self.clone(),
            data,
            generation,
        })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        match state.files.remove(path) {
            Some(data) => {
                if data.borrow().entry_durable {
                    state.unlinked.push((path.to_path_buf(), data));
                }
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.files.retain(|p, _| !p.starts_with(path));
        state.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.unlinked.retain(|(p, _)| p.parent() != Some(path));
        for (file_path, data) in &state.files {
            if file_path.parent() == Some(path) {
                data.borrow_mut().entry_durable = true;
            }
        }
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let data = state
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        // The new name is as durable as its directory: not until the next sync_dir.
        data.borrow_mut().entry_durable = false;
        state.files.insert(to.to_path_buf(), data);
        Ok(())
    }
}

impl StorageFile for SimFile {
    type ReadBuf = Bytes;
    type WriteBuf = Vec<u8>;
    type WriteFuture = SimWrite;

    fn alloc_write_buf(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }

    fn trim_write_buf(buf: &mut Vec<u8>, len: usize) {
        buf.truncate(len);
    }

    fn write_at(&self, buf: Vec<u8>, pos: u64) -> Self::WriteFuture {
        self.start_write(&buf, pos)
    }

    fn write_shared_at(&self, buf: Vec<u8>, pos: u64) -> (Bytes, Self::WriteFuture) {
        let write = self.start_write(&buf, pos);
        (Bytes::from(buf), write)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.check_live()?;
        let mut data = self.data.borrow_mut();
        let start = (pos as usize).min(data.current.len());
        let end = start.saturating_add(len).min(data.current.len());
        data.bytes_read += (end - start) as u64;
        Ok(Bytes::copy_from_slice(&data.current[start..end]))
    }

    fn slice(buf: &Bytes, range: Range<usize>) -> Bytes {
        buf.slice(range)
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.check_live()?;
        let yields = self.disk.state.borrow().faults.fsync_yields;
        for _ in 0..yields {
            futures_lite::future::yield_now().await;
        }
        self.check_live()?;
        let mut state = self.disk.state.borrow_mut();
        let fsync_error_ppm = state.faults.fsync_error_ppm;
        let mut data = self.data.borrow_mut();
        if state.rng.chance(fsync_error_ppm) {
            // Linux may drop dirty pages after a failed writeback: model the worst case.
            let durable = data.durable.clone();
            data.current = durable;
            data.unsynced.clear();
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        data.durable = data.current.clone();
        data.unsynced.clear();
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.check_live()?;
        let state = self.disk.state.borrow();
        let current_len = self.data.borrow().current.len() as u64;
        state.check_growth(len.saturating_sub(current_len))?;
        let mut data = self.data.borrow_mut();
        if (data.current.len() as u64) < len {
            data.current.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.check_live()?;
        let mut data = self.data.borrow_mut();
        data.current.resize(len as usize, 0);
        // Size changes are treated as durable metadata at once; the data they expose is not.
        let durable_len = data.durable.len().min(len as usize);
        data.durable.truncate(durable_len);
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.check_live()?;
        Ok(self.data.borrow().current.len() as u64)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct SimClock(Rc<std::cell::Cell<i64>>);

impl SimClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        SimClock(Rc::new(std::cell::Cell::new(now_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: i64) {
        self.0.set(self.0.get() + ms);
    }
}

impl super::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}
