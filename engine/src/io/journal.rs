//! Power loss for a real broker process.
//!
//! `kill -9` cannot test durability: the page cache, and O_DIRECT writes already on the
//! device, survive it, so a broker that never called fdatasync passes every kill test. This
//! module lets a test take power away from a real broker instead:
//!
//! 1. **Recording** (debug builds only, when [`JOURNAL_ENV`] names a directory): the
//!    production storage ([`DmaStorage`](super::dma::DmaStorage)) appends every file-system
//!    operation it performs to a per-thread journal in that directory (directory creation,
//!    opens, each completed write with its bytes, the start and the completion of each
//!    fdatasync, truncation, removal, rename, directory sync), stamped with one process-wide
//!    sequence number. Each record is one `write(2)`, so it outlives a `kill -9`. A release
//!    build records nothing and the calls compile away.
//! 2. **Replay** ([`PowerLossModel`]): after the process is killed, the test replays the
//!    journal over a model of the data directory as it was when the process started, then
//!    [`PowerLossModel::lose_power`] computes what a disk that lost power at that moment could
//!    hold, and [`Tree::materialise`] replaces the data directory with it.
//!
//! The model is strict POSIX, as the simulated disk ([`super::sim`]) is:
//! - a write survives only if an fdatasync of its file *started after it completed* and
//!   *completed*; every other write is independently kept, lost, or torn at a 512-byte
//!   sector boundary; size changes (truncate, preallocate) likewise;
//! - a directory entry (a created file or directory, a removal, a rename) survives only if a
//!   sync of that directory completed after it; otherwise the directory's entries are those
//!   of its last sync.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::sim::SimRng;

/// Environment variable naming the journal directory (debug builds only).
pub const JOURNAL_ENV: &str = "TIDELOG_FAULT_POWER_JOURNAL";

/// Sector size at which a lost-power write may be torn.
const SECTOR_BYTES: usize = 512;

const TAG_MKDIR: u8 = 1;
const TAG_OPEN: u8 = 2;
const TAG_WRITE: u8 = 3;
const TAG_FSYNC_START: u8 = 4;
const TAG_FSYNC_DONE: u8 = 5;
const TAG_SET_LEN: u8 = 6;
const TAG_EXTEND: u8 = 7;
const TAG_REMOVE: u8 = 8;
const TAG_SYNC_DIR: u8 = 9;
const TAG_RENAME: u8 = 10;

/// The recording side: no-ops unless a debug build runs with [`JOURNAL_ENV`] set.
pub(crate) mod record {
    #[cfg(debug_assertions)]
    mod enabled {
        use std::cell::RefCell;
        use std::fs::File;
        use std::io::Write;
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;

        static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
        static SEQ: AtomicU64 = AtomicU64::new(1);
        static IDS: AtomicU64 = AtomicU64::new(1);
        static THREADS: AtomicU64 = AtomicU64::new(0);

        thread_local! {
            static FILE: RefCell<Option<File>> = const { RefCell::new(None) };
        }

        pub fn dir() -> Option<&'static Path> {
            DIR.get_or_init(|| std::env::var_os(super::super::JOURNAL_ENV).map(PathBuf::from))
                .as_deref()
        }

        pub fn next_id() -> u64 {
            IDS.fetch_add(1, Ordering::Relaxed)
        }

        /// Appends one record; a journal that cannot be written aborts the process, since
        /// a test relying on it would otherwise pass on a partial record.
        pub fn append(tag: u8, body: &[u8]) {
            let Some(dir) = dir() else { return };
            FILE.with(|file| {
                let mut file = file.borrow_mut();
                if file.is_none() {
                    let n = THREADS.fetch_add(1, Ordering::Relaxed);
                    let path = dir.join(format!("journal-{}-{n}", std::process::id()));
                    match std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                    {
                        Ok(f) => *file = Some(f),
                        Err(e) => {
                            eprintln!("power-loss journal {}: {e}", path.display());
                            std::process::abort();
                        }
                    }
                }
                let seq = SEQ.fetch_add(1, Ordering::SeqCst);
                let total = 4 + 8 + 1 + body.len();
                let mut record = Vec::with_capacity(total);
                record.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_le_bytes());
                record.extend_from_slice(&seq.to_le_bytes());
                record.push(tag);
                record.extend_from_slice(body);
                if let Some(f) = file.as_mut() {
                    if let Err(e) = f.write_all(&record) {
                        eprintln!("power-loss journal write: {e}");
                        std::process::abort();
                    }
                }
            });
        }
    }

    use std::path::Path;

    /// Whether operations are being recorded.
    #[inline]
    pub fn on() -> bool {
        #[cfg(debug_assertions)]
        {
            enabled::dir().is_some()
        }
        #[cfg(not(debug_assertions))]
        {
            false
        }
    }

    /// A journal id for a newly opened file (0 when not recording).
    pub fn file_id() -> u64 {
        #[cfg(debug_assertions)]
        {
            if on() {
                return enabled::next_id();
            }
        }
        0
    }

    fn append(tag: u8, body: &[u8]) {
        #[cfg(debug_assertions)]
        enabled::append(tag, body);
        #[cfg(not(debug_assertions))]
        let _ = (tag, body);
    }

    fn put_path(out: &mut Vec<u8>, path: &Path) {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let bytes = absolute.as_os_str().as_encoded_bytes();
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(bytes);
    }

    fn path_op(tag: u8, path: &Path) {
        if !on() {
            return;
        }
        let mut body = Vec::new();
        put_path(&mut body, path);
        append(tag, &body);
    }

    fn file_op(tag: u8, id: u64, value: Option<u64>) {
        if id == 0 {
            return;
        }
        let mut body = id.to_le_bytes().to_vec();
        if let Some(value) = value {
            body.extend_from_slice(&value.to_le_bytes());
        }
        append(tag, &body);
    }

    /// Directories `create_dir_all(path)` is about to create, outermost first.
    pub fn missing_dirs(path: &Path) -> Vec<std::path::PathBuf> {
        if !on() {
            return Vec::new();
        }
        let mut missing = Vec::new();
        let mut cur = Some(path);
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            missing.push(p.to_owned());
            cur = p.parent();
        }
        missing.reverse();
        missing
    }

    pub fn mkdir(path: &Path) {
        path_op(super::TAG_MKDIR, path);
    }

    pub fn open(id: u64, path: &Path, created: bool) {
        if id == 0 {
            return;
        }
        let mut body = id.to_le_bytes().to_vec();
        body.push(u8::from(created));
        put_path(&mut body, path);
        append(super::TAG_OPEN, &body);
    }

    pub fn write(id: u64, pos: u64, data: &[u8]) {
        if id == 0 {
            return;
        }
        let mut body = Vec::with_capacity(16 + data.len());
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&pos.to_le_bytes());
        body.extend_from_slice(data);
        append(super::TAG_WRITE, &body);
    }

    pub fn fsync_start(id: u64) {
        file_op(super::TAG_FSYNC_START, id, None);
    }

    pub fn fsync_done(id: u64) {
        file_op(super::TAG_FSYNC_DONE, id, None);
    }

    pub fn set_len(id: u64, len: u64) {
        file_op(super::TAG_SET_LEN, id, Some(len));
    }

    pub fn extend(id: u64, len: u64) {
        file_op(super::TAG_EXTEND, id, Some(len));
    }

    /// A file, or a directory and everything below it, was removed.
    pub fn remove(path: &Path) {
        path_op(super::TAG_REMOVE, path);
    }

    pub fn sync_dir(path: &Path) {
        path_op(super::TAG_SYNC_DIR, path);
    }

    pub fn rename(from: &Path, to: &Path) {
        if !on() {
            return;
        }
        let mut body = Vec::new();
        put_path(&mut body, from);
        put_path(&mut body, to);
        append(super::TAG_RENAME, &body);
    }
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Mkdir(PathBuf),
    Open {
        id: u64,
        path: PathBuf,
        created: bool,
    },
    Write {
        id: u64,
        pos: u64,
        data: Vec<u8>,
    },
    FsyncStart(u64),
    FsyncDone(u64),
    SetLen(u64, u64),
    Extend(u64, u64),
    Remove(PathBuf),
    SyncDir(PathBuf),
    Rename(PathBuf, PathBuf),
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn path(&mut self) -> Option<PathBuf> {
        let len = usize::try_from(self.u32()?).ok()?;
        let bytes = self.take(len)?;
        Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned()))
    }
}

fn decode(tag: u8, body: &[u8]) -> Option<Op> {
    let mut r = Reader(body);
    Some(match tag {
        TAG_MKDIR => Op::Mkdir(r.path()?),
        TAG_OPEN => {
            let id = r.u64()?;
            let created = r.take(1)?[0] != 0;
            Op::Open {
                id,
                path: r.path()?,
                created,
            }
        }
        TAG_WRITE => Op::Write {
            id: r.u64()?,
            pos: r.u64()?,
            data: r.0.to_vec(),
        },
        TAG_FSYNC_START => Op::FsyncStart(r.u64()?),
        TAG_FSYNC_DONE => Op::FsyncDone(r.u64()?),
        TAG_SET_LEN => Op::SetLen(r.u64()?, r.u64()?),
        TAG_EXTEND => Op::Extend(r.u64()?, r.u64()?),
        TAG_REMOVE => Op::Remove(r.path()?),
        TAG_SYNC_DIR => Op::SyncDir(r.path()?),
        TAG_RENAME => Op::Rename(r.path()?, r.path()?),
        _ => return None,
    })
}

/// Reads every journal file in `dir`, in sequence order. A record cut short by the kill ends
/// its file's journal.
///
/// # Errors
/// The directory or a journal cannot be read; a record has an unknown tag.
fn read_journal(dir: &Path) -> io::Result<Vec<Op>> {
    let mut ops: Vec<(u64, Op)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let bytes = std::fs::read(entry?.path())?;
        let mut r = Reader(&bytes);
        while let Some(total) = r.u32() {
            let Some(body_len) = usize::try_from(total).ok().and_then(|t| t.checked_sub(4)) else {
                break;
            };
            let Some(record) = r.take(body_len) else {
                break;
            };
            let mut rr = Reader(record);
            let (Some(seq), Some(tag)) = (rr.u64(), rr.take(1).map(|t| t[0])) else {
                break;
            };
            let op = decode(tag, rr.0).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("journal record {seq} (tag {tag}) does not decode"),
                )
            })?;
            ops.push((seq, op));
        }
    }
    ops.sort_by_key(|(seq, _)| *seq);
    Ok(ops.into_iter().map(|(_, op)| op).collect())
}

/// A size or content change of a file not yet known durable.
#[derive(Debug, Clone)]
enum Change {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
    Extend(u64),
}

fn apply(content: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { pos, data } => {
            let start = usize::try_from(*pos).unwrap_or(usize::MAX);
            let end = start.saturating_add(data.len());
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(data);
        }
        Change::SetLen(len) => content.resize(usize::try_from(*len).unwrap_or(0), 0),
        Change::Extend(len) => {
            let len = usize::try_from(*len).unwrap_or(0);
            if content.len() < len {
                content.resize(len, 0);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct FileNode {
    /// Content known durable.
    synced: Vec<u8>,
    /// Changes since, in completion order.
    pending: Vec<Change>,
    /// Fsyncs in flight: (file id, number of `pending` changes completed when it started).
    in_flight: Vec<(u64, usize)>,
}

#[derive(Debug, Clone, Default)]
struct DirNode {
    current: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// A data directory as the journal says the disk holds it: what is durable and what is not.
#[derive(Debug, Clone)]
pub struct PowerLossModel {
    root: PathBuf,
    nodes: Vec<Node>,
    files: HashMap<u64, usize>,
}

/// What the disk holds after the power came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Paths relative to the data directory, parents before children.
    pub dirs: Vec<PathBuf>,
    /// Files and their contents.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

impl PowerLossModel {
    /// The data directory `root` as it is on disk now, all of it durable.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn scan(root: &Path) -> io::Result<PowerLossModel> {
        let root = std::path::absolute(root)?;
        let mut model = PowerLossModel {
            root: root.clone(),
            nodes: vec![Node::Dir(DirNode::default())],
            files: HashMap::new(),
        };
        if root.exists() {
            model.scan_dir(&root, 0)?;
        }
        Ok(model)
    }

    fn scan_dir(&mut self, dir: &Path, ino: usize) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = self.nodes.len();
            if entry.file_type()?.is_dir() {
                self.nodes.push(Node::Dir(DirNode::default()));
                self.scan_dir(&entry.path(), child)?;
            } else {
                self.nodes.push(Node::File(FileNode {
                    synced: std::fs::read(entry.path())?,
                    ..FileNode::default()
                }));
            }
            if let Node::Dir(d) = &mut self.nodes[ino] {
                d.current.insert(name.clone(), child);
                d.durable.insert(name, child);
            }
        }
        Ok(())
    }

    /// Replays the journal files in `journal_dir` over the model.
    ///
    /// # Errors
    /// A journal cannot be read or does not decode.
    pub fn replay(&mut self, journal_dir: &Path) -> io::Result<()> {
        for op in read_journal(journal_dir)? {
            self.apply(op);
        }
        Ok(())
    }

    /// The directory and the name of `path`'s entry, if its parent exists in the model.
    fn parent_of(&self, path: &Path) -> Option<(usize, String)> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut names: Vec<String> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n.to_str()?.to_owned()),
                _ => return None,
            }
        }
        let last = names.pop()?;
        let mut ino = 0;
        for name in &names {
            let Node::Dir(d) = &self.nodes[ino] else {
                return None;
            };
            ino = *d.current.get(name)?;
        }
        matches!(self.nodes[ino], Node::Dir(_)).then_some((ino, last))
    }

    fn dir_mut(&mut self, ino: usize) -> &mut DirNode {
        match &mut self.nodes[ino] {
            Node::Dir(d) => d,
            Node::File(_) => unreachable!("parent_of only returns directories"),
        }
    }

    fn lookup(&self, path: &Path) -> Option<usize> {
        if path == self.root {
            return Some(0);
        }
        let (dir, name) = self.parent_of(path)?;
        match &self.nodes[dir] {
            Node::Dir(d) => d.current.get(&name).copied(),
            Node::File(_) => None,
        }
    }

    fn file_mut(&mut self, id: u64) -> Option<&mut FileNode> {
        let ino = *self.files.get(&id)?;
        match &mut self.nodes[ino] {
            Node::File(f) => Some(f),
            Node::Dir(_) => None,
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Mkdir(path) => {
                if let Some((dir, name)) = self.parent_of(&path) {
                    let ino = self.nodes.len();
                    self.nodes.push(Node::Dir(DirNode::default()));
                    self.dir_mut(dir).current.entry(name).or_insert(ino);
                }
            }
            Op::Open { id, path, created } => {
                let existing = self.lookup(&path);
                let ino = match existing {
                    Some(ino) if !created => ino,
                    _ => {
                        let Some((dir, name)) = self.parent_of(&path) else {
                            return;
                        };
                        let ino = self.nodes.len();
                        self.nodes.push(Node::File(FileNode::default()));
                        self.dir_mut(dir).current.insert(name, ino);
                        ino
                    }
                };
                self.files.insert(id, ino);
            }
            Op::Write { id, pos, data } => {
                if let Some(f) = self.file_mut(id) {
                    f.pending.push(Change::Write { pos, data });
                }
            }
            Op::SetLen(id, len) => {
                if let Some(f) = self.file_mut(id) {
                    f.pending.push(Change::SetLen(len));
                }
            }
            Op::Extend(id, len) => {
                if let Some(f) = self.file_mut(id) {
                    f.pending.push(Change::Extend(len));
                }
            }
            Op::FsyncStart(id) => {
                if let Some(f) = self.file_mut(id) {
                    let completed = f.pending.len();
                    f.in_flight.push((id, completed));
                }
            }
            Op::FsyncDone(id) => {
                if let Some(f) = self.file_mut(id) {
                    let Some(i) = f.in_flight.iter().position(|(fid, _)| *fid == id) else {
                        return;
                    };
                    let (_, covered) = f.in_flight.remove(i);
                    let FileNode {
                        synced,
                        pending,
                        in_flight,
                    } = f;
                    for change in pending.drain(..covered.min(pending.len())) {
                        apply(synced, &change);
                    }
                    for (_, n) in in_flight.iter_mut() {
                        *n = n.saturating_sub(covered);
                    }
                }
            }
            Op::Remove(path) => {
                if let Some((dir, name)) = self.parent_of(&path) {
                    self.dir_mut(dir).current.remove(&name);
                }
            }
            Op::SyncDir(path) => {
                if let Some(ino) = self.lookup(&path) {
                    if let Node::Dir(d) = &mut self.nodes[ino] {
                        d.durable = d.current.clone();
                    }
                }
            }
            Op::Rename(from, to) => {
                let (Some((fdir, fname)), Some((tdir, tname))) =
                    (self.parent_of(&from), self.parent_of(&to))
                else {
                    return;
                };
                if let Some(ino) = self.dir_mut(fdir).current.remove(&fname) {
                    self.dir_mut(tdir).current.insert(tname, ino);
                }
            }
        }
    }

    /// What the disk could hold had the power failed after the last replayed operation:
    /// every unsynced change drawn from `seed` (kept, lost, or torn), every unsynced
    /// directory as of its last sync.
    pub fn lose_power(&self, seed: u64) -> Tree {
        let mut rng = SimRng::new(seed);
        let mut tree = Tree {
            dirs: Vec::new(),
            files: BTreeMap::new(),
        };
        self.collect(0, &PathBuf::new(), &mut rng, &mut tree);
        tree
    }

    fn collect(&self, ino: usize, at: &Path, rng: &mut SimRng, tree: &mut Tree) {
        let Node::Dir(d) = &self.nodes[ino] else {
            return;
        };
        for (name, &child) in &d.durable {
            let path = at.join(name);
            match &self.nodes[child] {
                Node::Dir(_) => {
                    tree.dirs.push(path.clone());
                    self.collect(child, &path, rng, tree);
                }
                Node::File(f) => {
                    let mut content = f.synced.clone();
                    for change in &f.pending {
                        match change {
                            Change::Write { pos, data } => match rng.below(3) {
                                0 => apply(&mut content, change),
                                1 => {}
                                _ => {
                                    let sectors = data.len().div_ceil(SECTOR_BYTES) as u64;
                                    let kept = rng.below(sectors.max(1)) as usize * SECTOR_BYTES;
                                    if kept > 0 {
                                        let torn = Change::Write {
                                            pos: *pos,
                                            data: data[..kept.min(data.len())].to_vec(),
                                        };
                                        apply(&mut content, &torn);
                                    }
                                }
                            },
                            _ => {
                                if rng.below(2) == 0 {
                                    apply(&mut content, change);
                                }
                            }
                        }
                    }
                    tree.files.insert(path, content);
                }
            }
        }
    }
}

impl Tree {
    /// Replaces everything in `root` with this tree.
    ///
    /// # Errors
    /// The directory cannot be emptied or written.
    pub fn materialise(&self, root: &Path) -> io::Result<()> {
        if root.exists() {
            for entry in std::fs::read_dir(root)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
        } else {
            std::fs::create_dir_all(root)?;
        }
        for dir in &self.dirs {
            std::fs::create_dir_all(root.join(dir))?;
        }
        for (path, content) in &self.files {
            std::fs::write(root.join(path), content)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(root: &str) -> PowerLossModel {
        PowerLossModel {
            root: PathBuf::from(root),
            nodes: vec![Node::Dir(DirNode::default())],
            files: HashMap::new(),
        }
    }

    fn write(id: u64, pos: u64, byte: u8, len: usize) -> Op {
        Op::Write {
            id,
            pos,
            data: vec![byte; len],
        }
    }

    fn outcomes(m: &PowerLossModel, path: &str) -> Vec<Option<Vec<u8>>> {
        (0..64)
            .map(|seed| m.lose_power(seed).files.get(Path::new(path)).cloned())
            .collect()
    }

    #[test]
    fn a_write_survives_only_behind_a_completed_fsync_that_started_after_it() {
        let mut m = model("/d");
        for op in [
            Op::Open {
                id: 1,
                path: "/d/f".into(),
                created: true,
            },
            Op::SyncDir("/d".into()),
            write(1, 0, 1, 512),
            Op::FsyncStart(1),
            write(1, 512, 2, 512),
            Op::FsyncDone(1),
            write(1, 1024, 3, 1024),
            Op::FsyncStart(1),
        ] {
            m.apply(op);
        }
        let seen = outcomes(&m, "f");
        for content in &seen {
            let content = content.as_ref().expect("the entry was synced");
            assert_eq!(&content[..512], &[1u8; 512][..], "synced write kept");
        }
        let lengths: std::collections::BTreeSet<usize> =
            seen.iter().flatten().map(Vec::len).collect();
        assert!(lengths.contains(&512), "both later writes can be lost");
        assert!(lengths.contains(&2048), "or both kept");
        assert!(
            seen.iter()
                .flatten()
                .any(|c| c.len() == 1536 && c[1024] == 3),
            "the last write can be torn after its first sector"
        );
    }

    #[test]
    fn an_entry_survives_only_behind_a_directory_sync() {
        let mut m = model("/d");
        for op in [
            Op::Mkdir("/d/t".into()),
            Op::Mkdir("/d/t/0".into()),
            Op::Open {
                id: 1,
                path: "/d/t/0/seg".into(),
                created: true,
            },
            write(1, 0, 7, 512),
            Op::FsyncStart(1),
            Op::FsyncDone(1),
            Op::SyncDir("/d/t/0".into()),
        ] {
            m.apply(op);
        }
        assert!(
            m.lose_power(1).files.is_empty(),
            "t and t/0 were never synced in their parents: the fsynced file is unreachable"
        );
        m.apply(Op::SyncDir("/d/t".into()));
        m.apply(Op::SyncDir("/d".into()));
        let tree = m.lose_power(1);
        assert_eq!(tree.files.get(Path::new("t/0/seg")), Some(&vec![7u8; 512]));
        // A removal and a rename are undone until their directory is synced.
        m.apply(Op::Rename("/d/t".into(), "/d/gone".into()));
        let tree = m.lose_power(2);
        assert!(tree.files.contains_key(Path::new("t/0/seg")));
        m.apply(Op::SyncDir("/d".into()));
        let tree = m.lose_power(2);
        assert!(tree.files.contains_key(Path::new("gone/0/seg")));
        m.apply(Op::Remove("/d/gone".into()));
        assert!(!m.lose_power(3).files.is_empty());
        m.apply(Op::SyncDir("/d".into()));
        assert!(m.lose_power(3).files.is_empty());
    }

    #[test]
    fn truncation_is_undone_until_synced() {
        let mut m = model("/d");
        for op in [
            Op::Open {
                id: 1,
                path: "/d/f".into(),
                created: true,
            },
            Op::SyncDir("/d".into()),
            write(1, 0, 1, 1024),
            Op::FsyncStart(1),
            Op::FsyncDone(1),
            Op::SetLen(1, 512),
        ] {
            m.apply(op);
        }
        let lengths: std::collections::BTreeSet<usize> = outcomes(&m, "f")
            .into_iter()
            .flatten()
            .map(|c| c.len())
            .collect();
        assert_eq!(lengths, [512, 1024].into());
        m.apply(Op::FsyncStart(1));
        m.apply(Op::FsyncDone(1));
        let lengths: std::collections::BTreeSet<usize> = outcomes(&m, "f")
            .into_iter()
            .flatten()
            .map(|c| c.len())
            .collect();
        assert_eq!(lengths, [512].into());
    }
}
