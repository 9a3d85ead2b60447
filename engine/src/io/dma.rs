//! Production storage: glommio DMA files (O_DIRECT, io_uring) on the shard's own ring.

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::ops::{Deref, Range};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::journal::record;
use super::{OpenMode, Storage, StorageFile};

/// Files on a real filesystem through glommio. Must be used inside a glommio executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaStorage;

/// An open DMA file, shared by the writer and readers of one segment.
#[derive(Debug, Clone)]
pub struct DmaFileHandle {
    file: Rc<DmaFile>,
    /// Its id in the power-loss journal ([`super::journal`]); 0 when not recording.
    journal: u64,
}

/// Bytes a DMA file hands out: a read's result, or a write buffer shared once it was handed
/// to the kernel (the batch cache serves appended batches from it). Cloning and slicing share
/// the memory, never copy it.
#[derive(Clone)]
pub enum DmaBytes {
    /// A DMA read's buffer (or a slice of it).
    Read(ReadResult),
    /// `len` bytes at `start` of a submitted write buffer.
    Written {
        /// The buffer, shared with the write that sends it to the file.
        buf: Rc<DmaBuffer>,
        /// First byte of the view.
        start: usize,
        /// Bytes in the view.
        len: usize,
    },
}

impl DmaBytes {
    /// `len` bytes at `start` of this view, sharing its memory; `None` when out of range.
    pub fn slice(&self, start: usize, len: usize) -> Option<DmaBytes> {
        match self {
            DmaBytes::Read(read) => ReadResult::slice(read, start, len).map(DmaBytes::Read),
            DmaBytes::Written {
                buf,
                start: at,
                len: have,
            } => {
                let end = start.checked_add(len)?;
                (end <= *have).then(|| DmaBytes::Written {
                    buf: Rc::clone(buf),
                    start: at + start,
                    len,
                })
            }
        }
    }
}

impl super::Sliceable for DmaBytes {
    fn slice_of(&self, range: Range<usize>) -> Self {
        let len = range.end.saturating_sub(range.start);
        // An out-of-range slice is a programmer error in the caller's bounds arithmetic.
        self.slice(range.start, len).unwrap_or_default()
    }
}

impl Default for DmaBytes {
    fn default() -> Self {
        DmaBytes::Read(ReadResult::default())
    }
}

impl Deref for DmaBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            DmaBytes::Read(read) => read,
            DmaBytes::Written { buf, start, len } => &buf.as_bytes()[*start..*start + *len],
        }
    }
}

impl std::fmt::Debug for DmaBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            DmaBytes::Read(_) => "Read",
            DmaBytes::Written { .. } => "Written",
        };
        write!(f, "DmaBytes::{kind}({} bytes)", self.len())
    }
}

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

thread_local! {
    /// Devices whose io_uring poll support this thread's glommio reactor has probed correctly.
    static PROBED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// Name of the scratch file used by [`ensure_iopoll_probed`].
const PROBE_FILE: &str = ".tidelog-iopoll-probe";

/// Makes glommio's first DMA open on a device probe a file that holds data.
///
/// glommio 0.9 decides, once per thread and device, whether the device supports polled I/O by
/// reading 4 KiB at offset 0 of the first file it opens there, and caches the answer. When that
/// file is empty (a new segment) the read ends at end-of-file without reaching the device and
/// "succeeds", so glommio routes every later read to the poll ring, where a device without poll
/// queues (virtio, most cloud disks) fails it with EOPNOTSUPP. Opening a file with real data
/// first gives the probe a truthful answer. Blocking std::fs calls: once per device and thread,
/// at start-up, never on the data path.
async fn ensure_iopoll_probed(path: &Path) {
    let Some(dir) = path.parent() else {
        return;
    };
    let Ok(device) = std::fs::metadata(dir).map(|m| m.dev()) else {
        return;
    };
    if PROBED_DEVICES.with(|d| d.borrow().contains(&device)) {
        return;
    }
    // A file that already holds a page of data gives glommio a truthful probe by itself.
    let has_data = std::fs::metadata(path).is_ok_and(|m| m.len() >= PROBE_BYTES as u64);
    if !has_data {
        if let Err(e) = probe_with_scratch_file(dir).await {
            // Out of space or read-only: nothing better to do than let glommio probe as it will.
            tracing::warn!(dir = %dir.display(), error = %e, "could not probe polled I/O support");
        }
    }
    PROBED_DEVICES.with(|d| d.borrow_mut().insert(device));
}

const PROBE_BYTES: usize = 4096;

async fn probe_with_scratch_file(dir: &Path) -> io::Result<()> {
    let probe = dir.join(PROBE_FILE);
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&probe)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let opened = match written {
        Ok(()) => DmaFile::open(&probe).await.map_err(to_io),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&probe);
    opened?.close().await.map_err(to_io)
}

impl Storage for DmaStorage {
    type File = DmaFileHandle;

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Directory creation is rare (topic creation, segment roll never needs it), so the
        // blocking call is acceptable; it never runs on the append path.
        let created = record::missing_dirs(path);
        std::fs::create_dir_all(path)?;
        created.iter().for_each(|dir| record::mkdir(dir));
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DmaFileHandle> {
        ensure_iopoll_probed(path).await;
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if mode == OpenMode::Create {
            options.create(true);
        }
        let journal = record::file_id();
        let created = journal != 0 && !path.exists();
        let file = options.dma_open(path).await.map_err(to_io)?;
        record::open(journal, path, created);
        Ok(DmaFileHandle {
            file: Rc::new(file),
            journal,
        })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(to_io)?;
        record::remove(path);
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        remove_tree(path).await?;
        record::remove(path);
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // glommio's Directory::open fails with EBADF on relative paths.
        let path = std::path::absolute(path)?;
        let dir = glommio::io::Directory::open(&path).await.map_err(to_io)?;
        dir.sync().await.map_err(to_io)?;
        record::sync_dir(&path);
        dir.close().await.map_err(to_io)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to).await.map_err(to_io)?;
        record::rename(from, to);
        Ok(())
    }
}

impl StorageFile for DmaFileHandle {
    type ReadBuf = DmaBytes;
    type WriteBuf = DmaBuffer;
    type WriteFuture = Pin<Box<dyn Future<Output = io::Result<usize>>>>;

    fn alloc_write_buf(&self, len: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(len)
    }

    fn trim_write_buf(buf: &mut DmaBuffer, len: usize) {
        buf.trim_to_size(len);
    }

    fn write_at(&self, buf: DmaBuffer, pos: u64) -> Self::WriteFuture {
        let file = Rc::clone(&self.file);
        let journal = self.journal;
        // The journal needs the bytes after the buffer has gone to the kernel.
        let copy = (journal != 0).then(|| buf.as_ref().to_vec());
        Box::pin(async move {
            let written = file.write_at(buf, pos).await.map_err(to_io)?;
            if let Some(copy) = copy {
                record::write(journal, pos, &copy[..written.min(copy.len())]);
            }
            Ok(written)
        })
    }

    fn write_shared_at(&self, buf: DmaBuffer, pos: u64) -> (DmaBytes, Self::WriteFuture) {
        let buf = Rc::new(buf);
        let view = DmaBytes::Written {
            buf: Rc::clone(&buf),
            start: 0,
            len: buf.len(),
        };
        let file = Rc::clone(&self.file);
        let journal = self.journal;
        let future = Box::pin(async move {
            let expected = buf.len();
            let written = file
                .write_rc_at(Rc::clone(&buf), pos)
                .await
                .map_err(to_io)?;
            if journal != 0 {
                record::write(journal, pos, &buf.as_bytes()[..written.min(expected)]);
            }
            Ok(written)
        });
        (view, future)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<DmaBytes> {
        self.file
            .read_at(pos, len)
            .await
            .map(DmaBytes::Read)
            .map_err(to_io)
    }

    fn slice(buf: &DmaBytes, range: Range<usize>) -> DmaBytes {
        let len = range.end.saturating_sub(range.start);
        // An out-of-range slice is a programmer error in the caller's bounds arithmetic.
        buf.slice(range.start, len).unwrap_or_default()
    }

    async fn fdatasync(&self) -> io::Result<()> {
        record::fsync_start(self.journal);
        self.file.fdatasync().await.map_err(to_io)?;
        record::fsync_done(self.journal);
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, false).await.map_err(to_io)?;
        record::extend(self.journal, len);
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)?;
        record::set_len(self.journal, len);
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }
}

/// Removes `path` and everything below it without blocking the executor on the unlinks: each
/// file is unlinked through io_uring (a worker thread does the blocking part), only listing a
/// directory and removing an emptied one are direct syscalls. Unlinking a multi-GiB segment
/// frees its extents, which takes long enough on ext4 to stall a shard if done inline.
///
/// # Errors
/// The first failure to list or remove; a missing `path` is not one.
async fn remove_tree(path: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        } else {
            glommio::io::remove(entry.path()).await.map_err(to_io)?;
        }
    }
    for dir in dirs {
        Box::pin(remove_tree(&dir)).await?;
    }
    std::fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::executor_builder;
    use glommio::Placement;

    #[test]
    fn remove_tree_removes_nested_files_and_tolerates_a_missing_path() {
        let exe = std::env::current_exe().expect("test binary path");
        let root = exe.with_file_name("remove-tree");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("topic/0")).expect("mkdir");
        std::fs::create_dir_all(root.join("topic/1")).expect("mkdir");
        for f in [
            "topic/0/a.log",
            "topic/0/a.index",
            "topic/1/b.log",
            "topic/meta",
        ] {
            std::fs::write(root.join(f), vec![7u8; 64 << 10]).expect("write");
        }
        let target = root.join("topic");
        let handle = executor_builder(Placement::Unbound, 1)
            .expect("memlock sufficient")
            .spawn(move || async move {
                remove_tree(&target).await.expect("removed");
                assert!(!target.exists(), "the whole tree is gone");
                remove_tree(&target)
                    .await
                    .expect("a missing path is not an error");
            })
            .expect("spawn executor");
        handle.join().expect("executor");
        assert!(root.exists(), "the parent stays");
        let _ = std::fs::remove_dir_all(&root);
    }
}
