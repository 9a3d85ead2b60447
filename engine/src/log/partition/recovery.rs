//! Recovery: opening a partition log, trusting sealed segments by their index files,
//! scanning the active segment, and rebuilding the idempotent producers' state.
//!
//! The **recovery point** (file [`RECOVERY_POINT_FILE`], Kafka's
//! recovery-point-offset-checkpoint) is an offset below which every batch was fdatasynced,
//! checkpointed by housekeeping and at close. The active segment's scan cuts only what lies
//! at or above it (the torn or unsynced tail of a crash). A bad batch below it is damage to
//! acknowledged data: it is reported, skipped (the scan goes on at the next valid batch) and
//! kept on disk; its offsets are never served, never truncated, never reused.

use super::*;

/// The batch cache of a log opened on its own with [`PartitionLog::open`] (the internal
/// `__meta` and `__offsets` logs, tests, tools).
pub const STANDALONE_CACHE_BYTES: usize = 8 << 20;

impl<S: Storage, C: Clock> PartitionLog<S, C> {
    /// Opens (or creates) the partition log in `dir`, recovering it: every batch of the active
    /// segment is checked and the log is cut at the first torn or corrupt one; damaged or
    /// missing indexes of sealed segments are rebuilt.
    ///
    /// # Errors
    /// I/O errors, an invalid configuration, or [`LogError::Corrupt`] when a sealed segment
    /// does not hold the offsets its neighbours say it must.
    pub async fn open(storage: S, clock: C, dir: &Path, config: LogConfig) -> Result<Self> {
        Self::open_with(
            storage,
            clock,
            dir,
            config,
            LogResources::standalone(STANDALONE_CACHE_BYTES),
        )
        .await
    }

    /// [`open`](Self::open) within `shared`, the resources every partition of the shard
    /// shares: sealed segments' files are kept in its file cache (whose capacity bounds the
    /// descriptors they hold) and disk reads take its read memory.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with(
        storage: S,
        clock: C,
        dir: &Path,
        config: LogConfig,
        shared: LogResources<S::File>,
    ) -> Result<Self> {
        let LogResources {
            files,
            memory,
            cache,
        } = shared;
        config.validate()?;
        let io = |op| move |e| LogError::io(op, dir, e);
        create_dir_durably(&storage, dir)
            .await
            .map_err(io("create directory"))?;
        let names = storage.list_dir(dir).await.map_err(io("list directory"))?;
        let bases = crate::log::segment::segment_bases(&names);
        for name in &names {
            // Leftovers of an interrupted index write, or of a segment deleted half-way.
            let stray_tmp = name.ends_with(".tmp");
            let orphan = [INDEX_SUFFIX, TIME_INDEX_SUFFIX].iter().any(|suffix| {
                parse_segment_name(name, suffix).is_some_and(|b| bases.binary_search(&b).is_err())
            });
            if stray_tmp || orphan {
                let path = dir.join(name);
                storage
                    .remove_file(&path)
                    .await
                    .map_err(|e| LogError::io("remove", &path, e))?;
            }
        }
        let recovery_point = read_recovery_point(&storage, dir).await;
        // Removed (durably) here, before anything can be appended: module `clean`.
        let mut clean = clean::take(&storage, dir).await?;
        let mut opened_clean = false;
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let segment = create_segment(&storage, dir, 0).await?;
            storage.sync_dir(dir).await.map_err(io("sync directory"))?;
            segments.insert(0, segment);
        }
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let segment = match next_base {
                // Sealed segments keep no file open: reads open them through `files`.
                Some(next) => {
                    let mut segment = open_sealed(&storage, dir, base, next, &config).await?;
                    segment.file = None;
                    segment
                }
                None => {
                    let (segment, lost_to, trusted) =
                        open_active(&storage, dir, base, &config, recovery_point, clean.take())
                            .await?;
                    opened_clean = trusted;
                    if let Some(resume) = lost_to {
                        // The damaged segment is sealed as it is (its index files make the
                        // next open trust it) and the log resumes at the recovery point.
                        let mut sealed = seal_damaged(&storage, dir, segment, resume).await?;
                        sealed.file = None;
                        segments.insert(base, sealed);
                        let fresh = create_segment(&storage, dir, resume).await?;
                        storage.sync_dir(dir).await.map_err(io("sync directory"))?;
                        segments.insert(resume, fresh);
                        continue;
                    }
                    segment
                }
            };
            segments.insert(base, segment);
        }
        let (first, active) = {
            let first = segments.keys().next().copied().unwrap_or(0);
            let active = segments.values().next_back().expect("at least one segment");
            (first, active)
        };
        let log_end = active.next_offset;
        // A DeleteRecords moved the start inside the first segment: it stays there (never
        // past what recovery kept).
        let log_start = read_log_start(&storage, dir)
            .await
            .clamp(first, log_end.max(first));
        let end_bytes = active.size;
        let tail_start = align_down(end_bytes);
        let tail_len = (end_bytes - tail_start) as usize;
        let active_file = active
            .file
            .clone()
            .expect("the active segment holds its file");
        let tail = if tail_len == 0 {
            Vec::new()
        } else {
            let page = active_file
                .read_at(tail_start, tail_len)
                .await
                .map_err(|e| LogError::io("read", &active.path, e))?;
            page.to_vec()
        };
        if tail.len() != tail_len {
            return Err(LogError::Corrupt {
                path: active.path.clone(),
                position: tail_start,
                reason: "short read of the last page".into(),
            });
        }
        let writer = SegmentWriter::new(active_file, end_bytes, &tail, end_bytes, log_end);
        // Recovery yields `log_start <= log_end`, segments that continue each other, and
        // never a log end below the recovery point.
        debug_assert!(log_start <= log_end);
        debug_assert!(log_end >= recovery_point || log_start > recovery_point);
        debug_assert!(segments
            .values()
            .zip(segments.keys().skip(1))
            .all(|(segment, &next)| segment.next_offset == next));
        let in_flight = Rc::clone(writer.in_flight());
        let state = State {
            segments,
            writer: Some(writer),
            in_flight,
            log_start,
            log_end,
            written_offset: log_end,
            written_bytes: end_bytes,
            synced_offset: log_end,
            appended_bytes_total: 0,
            synced_bytes_total: 0,
            oldest_unsynced_ms: None,
            poison: None,
            producers: ProducerStates::default(),
            sync_running: false,
            closing: false,
            closed: false,
            recovery_point,
            checkpoint_running: false,
        };
        let id = crate::log::files::next_log_id();
        // Everything below the log end is on disk: the cache may take disk reads of it.
        cache.written(id, log_end);
        let log = PartitionLog {
            id,
            files,
            memory,
            cache,
            dir: dir.to_path_buf(),
            storage,
            clock,
            tunables: Cell::new(Tunables::of(&config)),
            config,
            state: RefCell::new(state),
            gate: Gate::default(),
            synced: Event::default(),
            close_ended: Event::default(),
            counters: Counters::default(),
            readahead: RefCell::new(None),
            pending_seal: RefCell::new(None),
            last_disk_read_end: Cell::new(None),
            producer_snapshot: Cell::new(SnapshotMark::default()),
            opened_clean,
            epochs: RefCell::new(crate::log::epochs::LeaderEpochs::default()),
        };
        log.restore_producer_state().await?;
        // Epochs that start past what recovery kept have no batches here any more.
        let mut epochs = crate::log::epochs::LeaderEpochs::load(&log.storage, dir).await;
        epochs.truncate_from(log.log_end() + 1);
        *log.epochs.borrow_mut() = epochs;
        Ok(log)
    }

    /// Restores the idempotent producer state: from the snapshot file (written at close and
    /// periodically, only when everything appended was synced) plus the batches after it, or,
    /// without a usable snapshot, from the batch headers of the log tail (the active segment
    /// and up to [`PRODUCER_STATE_SEGMENTS`] sealed ones before it). Runs at open, after
    /// recovery cut the log, so the state covers exactly the surviving batches. A snapshot
    /// covering more than the log now holds (the tail it saw is gone) is removed, so it can
    /// never be mistaken for one covering batches written later at the same offsets.
    async fn restore_producer_state(&self) -> Result<()> {
        let path = self.dir.join(PRODUCER_STATE_FILE);
        let found = read_whole(&self.storage, &path).await.ok();
        let (log_start, log_end) = (self.log_start(), self.log_end());
        if let Some(bytes) = found {
            match decode_producer_snapshot(&bytes) {
                Some((covered, producers)) if covered <= log_end => {
                    let from = covered.max(log_start);
                    self.producer_snapshot.set(SnapshotMark {
                        covered,
                        ..SnapshotMark::default()
                    });
                    return self.scan_producers(from, producers).await;
                }
                stale_or_bad => {
                    let (topic, partition) = crate::log::topic_partition(&self.dir);
                    tracing::warn!(%topic, %partition, usable = stale_or_bad.is_some(), log_end,
                        "producer-state snapshot not usable: removed, rebuilding from the log");
                    self.storage
                        .remove_file(&path)
                        .await
                        .map_err(|e| LogError::io("remove", &path, e))?;
                    // Durably: a stale snapshot brought back by a crash, once the log has
                    // grown past its offset again, would pass for a valid one and describe
                    // batches that are gone.
                    self.storage
                        .sync_dir(&self.dir)
                        .await
                        .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
                }
            }
        }
        let from = {
            let state = self.state.borrow();
            let from = state
                .segments
                .keys()
                .rev()
                .nth(PRODUCER_STATE_SEGMENTS)
                .copied()
                .unwrap_or(state.log_start);
            from.max(state.log_start)
        };
        self.scan_producers(from, ProducerStates::default()).await
    }

    /// Adds to `producers` the batches from `from` to the log end, then installs it.
    async fn scan_producers(&self, from: u64, mut producers: ProducerStates) -> Result<()> {
        let mut offset = from;
        while offset < self.log_end() {
            let read = match self.read(offset, 1 << 20).await {
                Ok(read) => read,
                Err(LogError::Corrupt {
                    path,
                    position,
                    reason,
                }) => {
                    // Damaged bytes are reported when read, not fatal at open. What was
                    // learnt before them may be stale (the producers' later batches are
                    // unreadable), so forget it: unknown producers are accepted at any
                    // sequence, whereas stale state would refuse their next batch.
                    let (topic, partition) =
                        crate::log::topic_partition(path.parent().unwrap_or(&path));
                    tracing::warn!(%topic, %partition, path = %path.display(), position,
                        %reason, "skipping a damaged segment while rebuilding producer state");
                    producers = ProducerStates::default();
                    let next = self
                        .state
                        .borrow()
                        .segments
                        .range(offset + 1..)
                        .next()
                        .map(|(b, _)| *b);
                    match next {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            };
            if read.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                // A split chunk is one batch whose header lies in its head.
                let mut bytes: &[u8] = chunk.head();
                while !bytes.is_empty() {
                    let meta = BatchMeta::parse(bytes)?;
                    if let Some(batch) = meta.producer() {
                        let first = meta.base_offset as u64;
                        producers.record(&batch, first, first + meta.span() - 1);
                    }
                    bytes = bytes.get(meta.len..).unwrap_or_default();
                }
            }
            offset = read.next_offset;
        }
        self.state.borrow_mut().producers = producers;
        Ok(())
    }
}

/// Creates `dir` and its missing parents, and syncs the directory above each one created: a
/// new partition's (or topic's) directory entry must be durable before anything acknowledged
/// lives below it, or a power loss takes the whole directory with it. A directory that exists
/// but is still empty may be one a crash interrupted before its entry was synced: its
/// parent is synced again.
async fn create_dir_durably<S: Storage>(storage: &S, dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) {
        if parent.as_os_str().is_empty() {
            break;
        }
        let exists = match storage.list_dir(parent).await {
            Ok(names) => names.iter().any(|n| std::ffi::OsStr::new(n) == name),
            Err(_) => false,
        };
        if exists {
            break;
        }
        missing.push(cur);
        cur = parent;
    }
    storage.create_dir_all(dir).await?;
    if missing.is_empty() && storage.list_dir(dir).await?.is_empty() {
        missing.push(dir);
    }
    // Innermost first; each entry lives in the directory above it.
    for created in missing {
        if let Some(parent) = created.parent() {
            storage.sync_dir(parent).await?;
        }
    }
    Ok(())
}

pub(super) async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
) -> Result<Segment<S::File>> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::Create)
        .await
        .map_err(|e| LogError::io("create", &path, e))?;
    Ok(Segment::empty(base, file, path))
}

async fn open_segment_file<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
) -> Result<(Segment<S::File>, u64)> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let file = storage
        .open(&path, OpenMode::Existing)
        .await
        .map_err(|e| LogError::io("open", &path, e))?;
    let len = file
        .size()
        .await
        .map_err(|e| LogError::io("stat", &path, e))?;
    Ok((Segment::empty(base, file, path), len))
}

/// Opens a sealed segment: trusts its persisted indexes when they check out, else rebuilds
/// them with a full scan. Either way its offsets must end where the next segment starts.
async fn open_sealed<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    next_base: u64,
    config: &LogConfig,
) -> Result<Segment<S::File>> {
    let (mut segment, file_len) = open_segment_file(storage, dir, base).await?;
    segment.sealed = true;
    let span = next_base - base;
    let index_path = segment_path(dir, base, INDEX_SUFFIX);
    let time_path = segment_path(dir, base, TIME_INDEX_SUFFIX);
    let offset_index = read_whole(storage, &index_path)
        .await
        .ok()
        .and_then(|b| OffsetIndex::decode(&b, file_len.max(1), span));
    let time_index = read_whole(storage, &time_path)
        .await
        .ok()
        .and_then(|b| TimeIndex::decode(&b, span));
    if let (Some(offset_index), Some(time_index)) = (offset_index, time_index) {
        if file_len > 0 && !offset_index.is_empty() {
            segment.size = file_len;
            segment.next_offset = next_base;
            segment.max_timestamp = time_index.max_timestamp().unwrap_or(i64::MIN);
            segment.offset_index = offset_index;
            segment.time_index = time_index;
            return Ok(segment);
        }
    }
    let (topic, partition) =
        crate::log::topic_partition(segment.path.parent().unwrap_or(&segment.path));
    tracing::warn!(%topic, %partition, segment = %segment.path.display(),
        base_offset = segment.base_offset, "rebuilding indexes of sealed segment");
    let file = segment.file.clone().expect("opened above");
    let scanned = scan(&mut segment, &file, file_len, config.index_interval_bytes)
        .await
        .map_err(|e| LogError::io("read", &segment.path, e))?;
    if segment.next_offset != next_base {
        return Err(LogError::Corrupt {
            path: segment.path.clone(),
            position: scanned.valid_bytes,
            reason: format!(
                "sealed segment ends at offset {} but the next segment starts at {next_base}{}",
                segment.next_offset,
                scanned
                    .stopped
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
        });
    }
    if file_len > scanned.valid_bytes {
        // A roll was interrupted after the next segment was created: cut the zeros.
        cut_file(&segment, scanned.valid_bytes).await?;
    }
    let seal_path = segment.path.clone();
    let io = |e| LogError::io("seal", &seal_path, e);
    segment.finish_time_index();
    write_index_file(storage, &index_path, &segment.offset_index.encode())
        .await
        .map_err(io)?;
    write_index_file(storage, &time_path, &segment.time_index.encode())
        .await
        .map_err(io)?;
    Ok(segment)
}

/// Opens the active segment: scans every batch and cuts the file at the first torn or
/// corrupt one at or above the recovery point, so nothing after a torn write is ever served
/// or resurrected; damage below it is skipped and kept (module docs). Returns the segment
/// and, when damage below the recovery point ran to the file's end, the offset to resume at.
async fn open_active<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    config: &LogConfig,
    recovery_point: u64,
    clean: Option<clean::CleanShutdown>,
) -> Result<(Segment<S::File>, Option<u64>, bool)> {
    let (mut segment, file_len) = open_segment_file(storage, dir, base).await?;
    let (topic, partition) =
        crate::log::topic_partition(segment.path.parent().unwrap_or(&segment.path));
    if let Some(record) = clean {
        let file = segment.file.clone().expect("opened above");
        let followed = !nothing_after(&file, record.size(), file_len)
            .await
            .map_err(|e| LogError::io("read", &segment.path, e))?;
        // `apply` changes the segment only when it succeeds.
        let applied = if followed {
            Err("bytes follow its end (appended after it was written)")
        } else {
            record.apply(&mut segment, file_len, recovery_point)
        };
        match applied {
            Ok(()) => {
                tracing::debug!(%topic, %partition, segment = %segment.path.display(),
                    size = segment.size, log_end = segment.next_offset,
                    "clean shutdown: the active segment is trusted without a scan");
                if file_len != segment.size {
                    // The preallocated zeros after the data, as a scan would cut them.
                    cut_file(&segment, segment.size).await?;
                }
                return Ok((segment, None, true));
            }
            Err(why) => {
                tracing::warn!(%topic, %partition, segment = %segment.path.display(), why,
                    "clean-shutdown record not usable: scanning the active segment");
            }
        }
    }
    let file = segment.file.clone().expect("opened above");
    let scanned = scan_recovering(
        &mut segment,
        &file,
        file_len,
        config.index_interval_bytes,
        recovery_point,
    )
    .await
    .map_err(|e| LogError::io("read", &segment.path, e))?;
    for damaged in &scanned.damaged {
        tracing::error!(
            %topic,
            %partition,
            segment = %segment.path.display(),
            first_offset = damaged.offsets.start,
            end_offset = damaged.offsets.end,
            first_byte = damaged.bytes.start,
            end_byte = damaged.bytes.end,
            recovery_point,
            reason = %damaged.reason,
            "corruption below the recovery point: these offsets are not served; the bytes are kept"
        );
    }
    if scanned.lost_to.is_some() {
        return Ok((segment, scanned.lost_to, false));
    }
    if let Some(reason) = &scanned.stopped {
        tracing::warn!(
            %topic,
            %partition,
            segment = %segment.path.display(),
            valid_bytes = scanned.valid_bytes,
            dropped_bytes = file_len - scanned.valid_bytes,
            log_end = segment.next_offset,
            recovery_point,
            %reason,
            "truncating the torn or unsynced tail (above the recovery point)"
        );
    }
    if file_len != scanned.valid_bytes {
        cut_file(&segment, scanned.valid_bytes).await?;
    }
    Ok((segment, None, false))
}

/// Whether nothing follows byte `size` of a file `file_len` bytes long: the bytes where a
/// next batch header would start are zeros, or the file ends. Anything else was appended
/// after a clean-shutdown record ending at `size` was written (say by a build that did not
/// know the record and left it in place), so the record no longer describes the file.
async fn nothing_after<F: StorageFile>(
    file: &F,
    size: u64,
    file_len: u64,
) -> std::io::Result<bool> {
    let want = (tidelog_wire::batch::HEADER_LEN as u64).min(file_len.saturating_sub(size));
    if want == 0 {
        return Ok(true);
    }
    let start = align_down(size);
    let len = (align_up(size + want) - start) as usize;
    let bytes = file.read_at(start, len).await?;
    let from = (size - start) as usize;
    let to = from + want as usize;
    Ok(bytes
        .get(from..to)
        .is_some_and(|b| b.iter().all(|&x| x == 0)))
}

/// Seals an active segment whose damage below the recovery point runs to its end: its
/// offsets end at `resume` (the recovery point), its bytes stay as they are, and its index
/// files are written so that later opens trust it without a scan.
async fn seal_damaged<S: Storage>(
    storage: &S,
    dir: &Path,
    mut segment: Segment<S::File>,
    resume: u64,
) -> Result<Segment<S::File>> {
    segment.next_offset = resume;
    segment.sealed = true;
    segment.finish_time_index();
    let io = |e| LogError::io("seal", &segment.path, e);
    let index_path = segment_path(dir, segment.base_offset, INDEX_SUFFIX);
    write_index_file(storage, &index_path, &segment.offset_index.encode())
        .await
        .map_err(io)?;
    let time_path = segment_path(dir, segment.base_offset, TIME_INDEX_SUFFIX);
    write_index_file(storage, &time_path, &segment.time_index.encode())
        .await
        .map_err(io)?;
    Ok(segment)
}

/// Name of the file in a partition directory that holds its recovery point.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Name of a partition's producer-state snapshot file.
pub const PRODUCER_STATE_FILE: &str = "producer-state";
const PRODUCER_STATE_MAGIC: [u8; 4] = *b"TLPS";
const PRODUCER_STATE_VERSION: u8 = 1;
/// Magic, version, covered offset, payload length.
const PRODUCER_STATE_HEAD: usize = 4 + 1 + 8 + 4;

/// A producer-state snapshot file's bytes: magic, version, the offset it covers (the state
/// of every batch below it), the payload's length, the payload, CRC-32C of all before it.
pub(super) fn encode_producer_snapshot(covered: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRODUCER_STATE_HEAD + payload.len() + 4);
    out.extend_from_slice(&PRODUCER_STATE_MAGIC);
    out.push(PRODUCER_STATE_VERSION);
    out.extend_from_slice(&covered.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The covered offset and the table of a snapshot file (zero padding after it is allowed).
fn decode_producer_snapshot(bytes: &[u8]) -> Option<(u64, ProducerStates)> {
    let head = bytes.get(..PRODUCER_STATE_HEAD)?;
    if head[..4] != PRODUCER_STATE_MAGIC || head[4] != PRODUCER_STATE_VERSION {
        return None;
    }
    let covered = u64::from_le_bytes(head[5..13].try_into().ok()?);
    let len = u32::from_le_bytes(head[13..17].try_into().ok()?) as usize;
    let end = PRODUCER_STATE_HEAD.checked_add(len)?;
    let crc = u32::from_le_bytes(bytes.get(end..end + 4)?.try_into().ok()?);
    if crc32c::crc32c(&bytes[..end]) != crc {
        return None;
    }
    let producers = ProducerStates::decode(&bytes[PRODUCER_STATE_HEAD..end])?;
    Some((covered, producers))
}
const RECOVERY_POINT_MAGIC: [u8; 4] = *b"TLRP";
const RECOVERY_POINT_VERSION: u8 = 1;
const RECOVERY_POINT_BYTES: usize = 4 + 1 + 8 + 4;

/// The recovery point file's bytes: magic, version, offset, CRC-32C of what precedes it.
pub(super) fn encode_recovery_point(offset: u64) -> [u8; RECOVERY_POINT_BYTES] {
    encode_point(offset, RECOVERY_POINT_MAGIC)
}

fn decode_recovery_point(bytes: &[u8]) -> Option<u64> {
    decode_point(bytes, RECOVERY_POINT_MAGIC)
}

/// An offset file's bytes (recovery point, log start): `magic`, version, offset, CRC-32C of
/// what precedes it.
fn encode_point(offset: u64, magic: [u8; 4]) -> [u8; RECOVERY_POINT_BYTES] {
    let mut out = [0u8; RECOVERY_POINT_BYTES];
    out[..4].copy_from_slice(&magic);
    out[4] = RECOVERY_POINT_VERSION;
    out[5..13].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&out[..13]);
    out[13..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_point(bytes: &[u8], magic: [u8; 4]) -> Option<u64> {
    if bytes.len() != RECOVERY_POINT_BYTES
        || bytes[..4] != magic
        || bytes[4] != RECOVERY_POINT_VERSION
    {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[13..].try_into().ok()?);
    if crc != crc32c::crc32c(&bytes[..13]) {
        return None;
    }
    Some(u64::from_le_bytes(bytes[5..13].try_into().ok()?))
}

/// The partition's recovery point: 0 (nothing known durable: every bad batch is a torn
/// tail, as before recovery points existed) when the file is missing or unreadable.
pub(super) async fn read_recovery_point<S: Storage>(storage: &S, dir: &Path) -> u64 {
    let path = dir.join(RECOVERY_POINT_FILE);
    match read_whole(storage, &path).await {
        Ok(bytes) => decode_recovery_point(&bytes).unwrap_or_else(|| {
            let (topic, partition) = crate::log::topic_partition(path.parent().unwrap_or(&path));
            tracing::warn!(%topic, %partition, path = %path.display(),
                "unreadable recovery point: ignored (the whole active segment is checked)");
            0
        }),
        Err(_) => 0,
    }
}

/// Name of the file in a partition directory that holds a log start moved by DeleteRecords
/// (Kafka's `log-start-offset-checkpoint`): same layout as the recovery point, its own magic.
pub const LOG_START_FILE: &str = "log-start";
const LOG_START_MAGIC: [u8; 4] = *b"TLLS";

/// The log start file's bytes (the recovery point's layout, its own magic).
pub(super) fn encode_log_start(offset: u64) -> [u8; RECOVERY_POINT_BYTES] {
    encode_point(offset, LOG_START_MAGIC)
}

/// The persisted log start, 0 when there is none. An unreadable file is 0 too (the records
/// a DeleteRecords removed may come back readable, which loses nothing), and logged.
pub(super) async fn read_log_start<S: Storage>(storage: &S, dir: &Path) -> u64 {
    let path = dir.join(LOG_START_FILE);
    let Ok(bytes) = read_whole(storage, &path).await else {
        return 0;
    };
    decode_point(&bytes, LOG_START_MAGIC).unwrap_or_else(|| {
        let (topic, partition) = crate::log::topic_partition(dir);
        tracing::warn!(%topic, %partition, path = %path.display(),
            "unreadable log start file: ignored (records below it may be readable again)");
        0
    })
}

/// Truncates a segment file to `len` bytes and makes the new size durable.
async fn cut_file<F: StorageFile>(segment: &Segment<F>, len: u64) -> Result<()> {
    let io = |e| LogError::io("truncate", &segment.path, e);
    let file = segment
        .file
        .as_ref()
        .ok_or_else(|| io(std::io::Error::other("segment file not open")))?;
    file.truncate(len).await.map_err(io)?;
    file.fdatasync().await.map_err(io)
}
