//! Cutting a closed partition's log back to an offset: what a follower does before it fetches
//! from a new leader whose log ends lower (Kafka's truncation to the leader epoch's end).
//!
//! Built from steps whose crash outcomes recovery already handles, in an order that leaves a
//! valid log after a crash at any point, and then handed to [`PartitionLog::open`]:
//! 1. find the cut (the first batch at or above the offset; reads only) and lower the
//!    recovery point to it (durably): recovery would otherwise take the offsets between the
//!    new end and the old point for lost acknowledged data and resume the log above them;
//! 2. remove the clean-shutdown record (it describes the file before the cut);
//! 3. remove the segments wholly above the cut, highest first, syncing the directory after
//!    each, so a crash leaves a prefix of segments, never a gap;
//! 4. truncate the segment holding the cut there, fdatasync it, and remove its index files
//!    (the open rebuilds them);
//! 5. drop the leader epochs that start at or past the cut.
//!
//! The cut lands on a batch boundary: a batch that straddles the offset goes too, so the log
//! ends at or below the offset asked for; the offset it ends at is returned. Running it again
//! after a crash finishes the job.

use super::*;
use crate::log::segment::{
    segment_bases, segment_path, write_index_file, BatchMeta, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};

/// Removes every batch at or above `offset` from the closed partition log in `dir`; returns
/// the offset the log now ends at (`offset`, or lower when a batch straddled it). The log
/// must not be open. A cut below the first segment's base is refused.
///
/// # Errors
/// I/O errors (the log is valid whatever step failed; run it again), or
/// [`LogError::InvalidConfig`] for a cut below the log's first segment.
pub async fn truncate_closed<S: Storage>(storage: &S, dir: &Path, offset: u64) -> Result<u64> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e| LogError::io(op, path, e)
    };
    let bases = segment_bases(&storage.list_dir(dir).await.map_err(io("list", dir))?);
    let Some(&first) = bases.first() else {
        return Ok(offset);
    };
    if offset < first {
        return Err(LogError::InvalidConfig(format!(
            "cannot truncate to {offset}: the log starts at {first}"
        )));
    }
    // The segment holding the cut, and where in it the cut falls (reads only). The segment
    // starting at the cut goes too, unless it is the first (the log keeps its start).
    let holding = bases
        .iter()
        .rev()
        .copied()
        .find(|&b| b < offset || b == first)
        .unwrap_or(first);
    let path = segment_path(dir, holding, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::Existing)
        .await
        .map_err(io("open", &path))?;
    let len = file.size().await.map_err(io("size", &path))?;
    let (cut, end) = cut_position(&file, len, holding, offset)
        .await
        .map_err(io("read", &path))?;
    // 1. The recovery point never stays above the new end: recovery would take the missing
    // offsets below it for lost acknowledged data and resume the log above them.
    let point_path = dir.join(RECOVERY_POINT_FILE);
    let point = recovery::read_recovery_point(storage, dir).await;
    if point > end {
        write_index_file(storage, &point_path, &recovery::encode_recovery_point(end))
            .await
            .map_err(io("write", &point_path))?;
        storage.sync_dir(dir).await.map_err(io("sync", dir))?;
    }
    // 2. The clean-shutdown record describes the file before the cut.
    let record = dir.join(CLEAN_SHUTDOWN_FILE);
    if storage.remove_file(&record).await.is_ok() {
        storage.sync_dir(dir).await.map_err(io("sync", dir))?;
    }
    // 3. Whole segments above the cut, highest first, each removal durable before the next.
    for &base in bases.iter().rev().filter(|&&b| b > holding) {
        remove_segment(storage, dir, base).await?;
    }
    // 4. The segment holding the cut ends before the first batch at or above it.
    file.truncate(cut).await.map_err(io("truncate", &path))?;
    file.fdatasync().await.map_err(io("sync", &path))?;
    drop(file);
    let mut removed = false;
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let index = segment_path(dir, holding, suffix);
        removed |= storage.remove_file(&index).await.is_ok();
    }
    if removed {
        storage.sync_dir(dir).await.map_err(io("sync", dir))?;
    }
    // 5. Epochs starting at or past the cut have no batches left (after the cut: the file
    // must never lack the epoch of a batch the log still holds).
    let mut epochs = crate::log::epochs::LeaderEpochs::load(storage, dir).await;
    let before = epochs.clone();
    epochs.truncate_from(end);
    if epochs != before {
        epochs.persist(storage, dir).await.map_err(io(
            "write",
            &dir.join(crate::log::epochs::LEADER_EPOCHS_FILE),
        ))?;
    }
    let (topic, partition) = crate::log::topic_partition(dir);
    tracing::info!(%topic, %partition, asked = offset, end, segment = holding,
        "log truncated (a follower cutting back to its leader's log)");
    Ok(end)
}

/// The byte position in a segment file of the first batch at or above `offset` (or of the
/// end of its valid batches), and the offset the segment then ends at.
async fn cut_position<F: StorageFile>(
    file: &F,
    len: u64,
    base: u64,
    offset: u64,
) -> std::io::Result<(u64, u64)> {
    let mut pos = 0u64;
    let mut next = base;
    while pos + tidelog_wire::batch::HEADER_LEN as u64 <= len {
        let head = file.read_at(pos, tidelog_wire::batch::HEADER_LEN).await?;
        let Ok(meta) = BatchMeta::parse(&head) else {
            break; // the zeros after the data, or a torn tail: the end of the valid batches
        };
        let start = u64::try_from(meta.base_offset).unwrap_or(u64::MAX);
        if start != next || pos + meta.len as u64 > len {
            break;
        }
        if start + meta.span() > offset {
            break;
        }
        pos += meta.len as u64;
        next = start + meta.span();
    }
    Ok((pos, next))
}

/// Empties the closed partition log in `dir` and makes it start (and end) at `start`: what a
/// follower does when its log ends below its leader's log start (retention removed what it
/// would need next). Every segment and the files describing them go, newest first, each
/// removal durable before the next (a crash leaves a prefix of the old log, which the
/// follower resets again); then an empty segment named `start` is created and made durable,
/// with the recovery point at `start`.
///
/// # Errors
/// I/O errors (run it again).
pub async fn reset_closed<S: Storage>(storage: &S, dir: &Path, start: u64) -> Result<()> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e| LogError::io(op, path, e)
    };
    for name in [
        CLEAN_SHUTDOWN_FILE,
        PRODUCER_STATE_FILE,
        recovery::LOG_START_FILE,
        crate::log::epochs::LEADER_EPOCHS_FILE,
    ] {
        let _ = storage.remove_file(&dir.join(name)).await;
    }
    storage.sync_dir(dir).await.map_err(io("sync", dir))?;
    let bases = segment_bases(&storage.list_dir(dir).await.map_err(io("list", dir))?);
    for &base in bases.iter().rev() {
        remove_segment(storage, dir, base).await?;
    }
    let path = segment_path(dir, start, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::Create)
        .await
        .map_err(io("create", &path))?;
    file.fdatasync().await.map_err(io("sync", &path))?;
    drop(file);
    let point = dir.join(RECOVERY_POINT_FILE);
    write_index_file(storage, &point, &recovery::encode_recovery_point(start))
        .await
        .map_err(io("write", &point))?;
    storage.sync_dir(dir).await.map_err(io("sync", dir))?;
    let (topic, partition) = crate::log::topic_partition(dir);
    tracing::warn!(%topic, %partition, start,
        "log emptied to start at the leader's log start (it was behind the leader's retention)");
    Ok(())
}

/// Removes one segment's files (log and indexes) and makes the removal durable before the
/// caller removes the next: removed newest first, a crash leaves a prefix of the segments.
async fn remove_segment<S: Storage>(storage: &S, dir: &Path, base: u64) -> Result<()> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        let path = segment_path(dir, base, suffix);
        match storage.remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io("remove", path, e)),
        }
    }
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| LogError::io("sync", dir, e))
}
