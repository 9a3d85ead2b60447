//! A segment: one log file of whole batches plus its sparse offset and time indexes.
//!
//! Files of the segment with base offset `B` in a partition directory:
//! `B.log` (20-digit zero-padded), `B.index`, `B.timeindex`. The log file of the active
//! segment is preallocated past its data and ends in zeros; a sealed segment's log file is
//! truncated to its data, and its index files are written when it is sealed.

use std::io;
use std::path::{Path, PathBuf};

use tidelog_wire::batch::{check_crc, peek_header, HEADER_LEN};

use super::index::{OffsetIndex, TimeIndex};
use crate::io::{OpenMode, Storage, StorageFile};
use crate::limits::{BATCH_BYTES_MAX, IO_ALIGNMENT, SCAN_READ_BYTES};
use crate::log::writer::{align_down, align_up};

/// File name extension of segment data.
pub const LOG_SUFFIX: &str = "log";
/// File name extension of the offset index.
pub const INDEX_SUFFIX: &str = "index";
/// File name extension of the time index.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Path of a segment file.
pub fn segment_path(dir: &Path, base_offset: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// The base offsets of the segments among a directory's `names`, in order.
pub fn segment_bases(names: &[String]) -> Vec<u64> {
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_name(n, LOG_SUFFIX))
        .collect();
    bases.sort_unstable();
    bases
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_segment_name(name: &str, suffix: &str) -> Option<u64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What the engine needs from a batch header, read from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub base_offset: i64,
    pub crc: u32,
    pub len: usize,
    pub last_offset_delta: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 when the batch has no idempotent producer.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchMeta {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, tidelog_wire::WireError> {
        let header = peek_header(bytes)?;
        Ok(BatchMeta {
            base_offset: header.base_offset(),
            crc: header.crc(),
            len: header.batch_len() as usize,
            // peek_header guarantees last_offset_delta >= 0.
            last_offset_delta: u32::try_from(header.last_offset_delta()).unwrap_or(0),
            first_timestamp: header.first_timestamp(),
            max_timestamp: header.max_timestamp(),
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
        })
    }

    pub(crate) fn span(&self) -> u64 {
        u64::from(self.last_offset_delta) + 1
    }

    /// The batch's idempotent-producer fields; `None` without a producer.
    pub(crate) fn producer(&self) -> Option<super::producers::ProducerBatch> {
        super::producers::ProducerBatch::new(
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self.last_offset_delta,
        )
    }
}

/// One segment's metadata and, while it is active (or being recovered), its open log file.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    pub base_offset: u64,
    /// The log file: held by the active segment (and during recovery); a sealed segment's
    /// file is opened on demand through the shard's [`SegmentFiles`](super::files) cache.
    pub file: Option<F>,
    pub path: PathBuf,
    /// Bytes of valid batches.
    pub size: u64,
    /// One past the last offset in the segment.
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// Last batch's relative offset (for the final time-index entry).
    pub last_batch_relative: u32,
    /// Wall-clock time of the first append (for rolling by age).
    pub first_append_ms: Option<i64>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: u64,
    pub sealed: bool,
}

impl<F> Segment<F> {
    pub(crate) fn empty(base_offset: u64, file: F, path: PathBuf) -> Self {
        Segment {
            base_offset,
            file: Some(file),
            path,
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            last_batch_relative: 0,
            first_append_ms: None,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            sealed: false,
        }
    }

    /// Accounts for a batch appended (or found by a scan) at `position`.
    pub(crate) fn on_batch(&mut self, meta: &BatchMeta, position: u64, index_interval_bytes: u32) {
        let relative = (meta.base_offset as u64 - self.base_offset) as u32;
        if self.size == 0 || self.bytes_since_index >= u64::from(index_interval_bytes) {
            self.offset_index.push(relative, position as u32);
            self.time_index
                .maybe_push(self.max_timestamp.max(meta.max_timestamp), relative);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += meta.len as u64;
        self.size = position + meta.len as u64;
        self.next_offset = meta.base_offset as u64 + meta.span();
        self.max_timestamp = self.max_timestamp.max(meta.max_timestamp);
        self.last_batch_relative = relative;
    }

    /// Bytes of batches since the last offset-index entry (when the next entry is due).
    pub(crate) fn bytes_since_index(&self) -> u64 {
        self.bytes_since_index
    }

    /// Restores [`bytes_since_index`](Self::bytes_since_index) from a clean-shutdown record.
    pub(crate) fn set_bytes_since_index(&mut self, bytes: u64) {
        self.bytes_since_index = bytes;
    }

    /// Makes the next batch accounted get an index entry of its own, so that reads of its
    /// offsets start at it (after a damaged range, never inside it).
    pub(crate) fn index_next_batch(&mut self) {
        self.bytes_since_index = u64::MAX / 2;
    }

    /// Adds the segment's final max timestamp to the time index before it is persisted.
    pub(crate) fn finish_time_index(&mut self) {
        if self.size > 0 {
            self.time_index
                .maybe_push(self.max_timestamp, self.last_batch_relative);
        }
    }
}

/// Result of reading a segment from the start and checking every batch.
#[derive(Debug)]
pub(crate) struct Scan {
    /// End of the last valid batch (with a recovery point, valid batches after a damaged
    /// range count too).
    pub valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did on something not zero.
    pub stopped: Option<String>,
    /// Ranges below the recovery point that do not read back, skipped and kept on disk.
    pub damaged: Vec<Damaged>,
    /// Set when damage below the recovery point runs to the end of the file: the offsets
    /// up to it existed (they were durable), so the log resumes there, never reusing them.
    pub lost_to: Option<u64>,
}

/// Bytes below the recovery point that fail their checks: their offsets are never served
/// (reads report corruption), never truncated, never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damaged {
    /// The offsets lost (as far as the batches around them tell).
    pub offsets: std::ops::Range<u64>,
    /// Where in the file.
    pub bytes: std::ops::Range<u64>,
    /// What failed first.
    pub reason: String,
}

/// Reads a segment from the start, checking each batch's header, length, CRC and offset, and
/// feeds every valid batch to `segment`. Stops at the first batch that fails (a torn or
/// corrupt tail, or the zeros after the data).
pub(crate) async fn scan<F: StorageFile>(
    segment: &mut Segment<F>,
    file: &F,
    file_len: u64,
    index_interval_bytes: u32,
) -> io::Result<Scan> {
    scan_recovering(segment, file, file_len, index_interval_bytes, 0).await
}

/// [`scan`], knowing that every offset below `recovery_point` was durable: a stop below it
/// is damage, not a torn tail. The scan then looks for the next valid batch after the bad
/// bytes and goes on from there, recording the range skipped ([`Scan::damaged`]); when none
/// follows, the offsets up to the recovery point are recorded as lost ([`Scan::lost_to`]).
/// Stops at or above the recovery point end the scan as [`scan`] does.
pub(crate) async fn scan_recovering<F: StorageFile>(
    segment: &mut Segment<F>,
    file: &F,
    file_len: u64,
    index_interval_bytes: u32,
    recovery_point: u64,
) -> io::Result<Scan> {
    let mut damaged = Vec::new();
    let mut lost_to = None;
    let mut pos = 0u64;
    let mut expected_offset = segment.base_offset;
    loop {
        let (end, stopped) = scan_from(
            segment,
            file,
            file_len,
            index_interval_bytes,
            pos,
            expected_offset,
        )
        .await?;
        let expected = segment.next_offset;
        if expected >= recovery_point {
            return Ok(Scan {
                valid_bytes: end,
                stopped,
                damaged,
                lost_to,
            });
        }
        let reason = stopped.unwrap_or_else(|| format!("zeros at byte {end}"));
        match find_next_batch(file, file_len, end + 1, expected).await? {
            Some((at, base)) => {
                damaged.push(Damaged {
                    offsets: expected..base,
                    bytes: end..at,
                    reason,
                });
                segment.next_offset = base;
                segment.index_next_batch();
                pos = at;
                expected_offset = base;
            }
            None => {
                damaged.push(Damaged {
                    offsets: expected..recovery_point,
                    bytes: end..file_len,
                    reason,
                });
                lost_to = Some(recovery_point);
                return Ok(Scan {
                    valid_bytes: end,
                    stopped: None,
                    damaged,
                    lost_to,
                });
            }
        }
    }
}

/// The first position at or after `from` holding a whole valid batch (header, length, CRC)
/// whose base offset follows `after` (within one segment's offset range): where the batches
/// go on after damaged bytes. One header parse per byte position; CRCs only for candidates.
async fn find_next_batch<F: StorageFile>(
    file: &F,
    file_len: u64,
    from: u64,
    after: u64,
) -> io::Result<Option<(u64, u64)>> {
    let mut next = from;
    while next + HEADER_LEN as u64 <= file_len {
        let chunk_pos = align_down(next);
        let chunk = file.read_at(chunk_pos, SCAN_READ_BYTES).await?;
        let first = (next - chunk_pos) as usize;
        if chunk.len() < first + HEADER_LEN {
            return Ok(None);
        }
        let last = chunk.len() - HEADER_LEN;
        for at in first..=last {
            let header = &chunk[at..at + HEADER_LEN];
            if header.iter().all(|&b| b == 0) {
                continue;
            }
            let Ok(meta) = BatchMeta::parse(header) else {
                continue;
            };
            let pos = chunk_pos + at as u64;
            let base = meta.base_offset as u64;
            let plausible = meta.base_offset > after as i64
                && base - after <= crate::limits::SEGMENT_OFFSETS_MAX
                && meta.len <= BATCH_BYTES_MAX
                && pos + meta.len as u64 <= file_len;
            if !plausible {
                continue;
            }
            let batch_ok = if at + meta.len <= chunk.len() {
                check_crc(&chunk[at..at + meta.len]).is_ok()
            } else {
                let start = align_down(pos);
                let want = align_up(pos + meta.len as u64 - start) as usize;
                let whole = file.read_at(start, want).await?;
                let skip = (pos - start) as usize;
                whole.len() >= skip + meta.len && check_crc(&whole[skip..skip + meta.len]).is_ok()
            };
            if batch_ok {
                return Ok(Some((pos, base)));
            }
        }
        // Every position up to `last` was tried; the next read overlaps by a header.
        next = chunk_pos + last as u64 + 1;
    }
    Ok(None)
}

/// Checks batches from byte `start` (expected to begin at `expected_offset`) until one fails
/// or the file ends; returns the end of the last valid one and why it stopped (`None`: the
/// end of the file or zeros).
async fn scan_from<F: StorageFile>(
    segment: &mut Segment<F>,
    file: &F,
    file_len: u64,
    index_interval_bytes: u32,
    start: u64,
    expected_offset: u64,
) -> io::Result<(u64, Option<String>)> {
    if start + HEADER_LEN as u64 > file_len {
        return Ok((start, None));
    }
    let mut chunk_pos = align_down(start);
    let mut chunk = file
        .read_at(
            chunk_pos,
            SCAN_READ_BYTES.min((file_len - chunk_pos) as usize),
        )
        .await?;
    let mut pos = start;
    let mut expected_offset = expected_offset;
    let stopped = loop {
        if pos + HEADER_LEN as u64 > file_len {
            break None;
        }
        if pos + HEADER_LEN as u64 > chunk_pos + chunk.len() as u64 {
            chunk_pos = align_down(pos);
            chunk = file.read_at(chunk_pos, SCAN_READ_BYTES).await?;
            if pos + HEADER_LEN as u64 > chunk_pos + chunk.len() as u64 {
                break Some(format!("short read at byte {pos}"));
            }
        }
        let at = (pos - chunk_pos) as usize;
        let header_bytes = &chunk[at..at + HEADER_LEN];
        if header_bytes.iter().all(|&b| b == 0) {
            break None;
        }
        let meta = match BatchMeta::parse(header_bytes) {
            Ok(meta) => meta,
            Err(e) => break Some(format!("bad header at byte {pos}: {e}")),
        };
        if meta.len > BATCH_BYTES_MAX || pos + meta.len as u64 > file_len {
            break Some(format!("batch at byte {pos} claims {} bytes", meta.len));
        }
        if meta.base_offset != expected_offset as i64 {
            break Some(format!(
                "batch at byte {pos} has offset {}, expected {expected_offset}",
                meta.base_offset
            ));
        }
        if pos + meta.len as u64 > chunk_pos + chunk.len() as u64 {
            chunk_pos = align_down(pos);
            let want = align_up(pos + meta.len as u64 - chunk_pos).max(SCAN_READ_BYTES as u64);
            chunk = file.read_at(chunk_pos, want as usize).await?;
            if pos + meta.len as u64 > chunk_pos + chunk.len() as u64 {
                break Some(format!("short read at byte {pos}"));
            }
        }
        let at = (pos - chunk_pos) as usize;
        let batch = &chunk[at..at + meta.len];
        if let Err(e) = check_crc(batch) {
            break Some(format!("CRC mismatch at byte {pos}: {e}"));
        }
        segment.on_batch(&meta, pos, index_interval_bytes);
        expected_offset = segment.next_offset;
        pos += meta.len as u64;
    };
    Ok((pos, stopped))
}

/// Writes an index file in full and makes it durable (write to a temporary name, sync,
/// rename, so a crash leaves either the old file or the new one).
pub(crate) async fn write_index_file<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = storage.open(&tmp, OpenMode::Create).await?;
    let padded = align_up(bytes.len() as u64) as usize;
    let mut buf = file.alloc_write_buf(padded.max(IO_ALIGNMENT));
    buf.as_mut()[..bytes.len()].copy_from_slice(bytes);
    buf.as_mut()[bytes.len()..].fill(0);
    let written = file.write_at(buf, 0).await?;
    if written < bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short index write",
        ));
    }
    file.truncate(bytes.len() as u64).await?;
    file.fdatasync().await?;
    storage.rename(&tmp, path).await
}

/// Reads a whole small file.
pub(crate) async fn read_whole<S: Storage>(storage: &S, path: &Path) -> io::Result<Vec<u8>> {
    let file = storage.open(path, OpenMode::Existing).await?;
    let len = file.size().await?;
    if len > 64 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "index file too large",
        ));
    }
    let bytes = file.read_at(0, len as usize).await?;
    Ok(bytes.to_vec())
}
