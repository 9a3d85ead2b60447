//! The reader's side of a partition log: reads from the batch cache or the segment files
//! (CRC-checked before serving), the read-ahead for sequential disk readers, timestamp
//! lookups and replay. Readers never take the write gate.

use super::*;

/// A read of the bytes after a sequential disk read, started before anyone asked for them:
/// the next fetch of a catch-up consumer finds them read (or on their way) instead of
/// waiting for the disk. One per partition; a read that does not continue it drops it.
pub(super) struct ReadAhead<B> {
    /// The segment read (its base offset).
    segment: u64,
    /// The offset of the first batch at `position`.
    offset: u64,
    /// File position of the first byte.
    position: u64,
    future: Pin<Box<dyn Future<Output = std::io::Result<B>>>>,
    /// The read memory its buffer holds.
    memory: ReadPermit,
}

/// Where a disk read's first buffer comes from.
enum FirstRead<R> {
    /// The read-ahead that already read it.
    Ahead(R),
    /// A read of this many bytes, its memory taken.
    Fresh(usize, ReadPermit),
}

impl<S: Storage, C: Clock> PartitionLog<S, C> {
    /// Drops the read-ahead: any (`None`), or only one reading segment `segment` (that
    /// segment is being deleted and its file must not stay open).
    pub(crate) fn forget_readahead(&self, segment: Option<u64>) {
        let mut readahead = self.readahead.borrow_mut();
        if segment.is_none_or(|base| readahead.as_ref().is_some_and(|ra| ra.segment == base)) {
            *readahead = None;
        }
    }

    /// The file of segment `base`: `held` (the active segment's), else the shard's cached
    /// handle, else opened now and cached while the segment still exists. A segment deleted
    /// meanwhile (retention) reads as out of range at `offset`.
    async fn segment_file(
        &self,
        base: u64,
        held: Option<S::File>,
        path: &Path,
        offset: u64,
    ) -> Result<S::File> {
        if let Some(file) = held.or_else(|| self.files.get(self.id, base)) {
            return Ok(file);
        }
        let opened = self.storage.open(path, OpenMode::Existing).await;
        // No await from here on: the check and the insert see the same state.
        let state = self.state.borrow();
        if state.closed {
            return Err(LogError::Closed);
        }
        let alive = state.segments.contains_key(&base);
        match opened {
            Ok(file) => {
                if alive {
                    self.files.insert(self.id, base, file.clone());
                }
                Ok(file)
            }
            Err(_) if !alive => Err(LogError::OffsetOutOfRange {
                requested: offset,
                start: state.log_start,
                end: state.log_end,
            }),
            Err(e) => Err(LogError::io("open", path, e)),
        }
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// but always at least one batch. Cached batches come from the batch cache without a copy;
    /// older ones from a DMA read of the segment, CRC-checked. Reading at the log end returns
    /// no batches.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] below the log start or past the log end;
    /// [`LogError::Corrupt`] when stored bytes fail their checks (they are not returned).
    pub async fn read(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> Result<LogRead<<S::File as StorageFile>::ReadBuf>> {
        self.read_within(offset, max_bytes, MemoryWait::Wait).await
    }

    /// [`read`](Self::read), its disk buffers taken from the shard's read memory: waiting for
    /// room, or with [`MemoryWait::IfFree`] (the caller holds read memory already) failing
    /// at once. The bytes handed out are counted ([`LogStats::read_bytes`]).
    ///
    /// # Errors
    /// As [`read`](Self::read); [`LogError::MemoryBusy`] when `wait` is `IfFree` and the
    /// budget has no room.
    pub async fn read_within(
        &self,
        offset: u64,
        max_bytes: usize,
        wait: MemoryWait,
    ) -> Result<LogRead<<S::File as StorageFile>::ReadBuf>> {
        let read = self.read_within_counted(offset, max_bytes, wait).await?;
        bump(&self.counters.read_bytes, read.len() as u64);
        Ok(read)
    }

    /// [`read_within`](Self::read_within) before its bytes are counted.
    async fn read_within_counted(
        &self,
        offset: u64,
        max_bytes: usize,
        wait: MemoryWait,
    ) -> Result<LogRead<<S::File as StorageFile>::ReadBuf>> {
        let (held, path, position, limit, base_offset, log_start, high_watermark, segment_base) =
            {
                let state = self.state.borrow();
                if state.closed {
                    return Err(LogError::Closed);
                }
                let (log_start, log_end) = (state.log_start, state.log_end);
                if offset < log_start || offset > log_end {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        start: log_start,
                        end: log_end,
                    });
                }
                let empty = |next_offset| LogRead {
                    chunks: Vec::new(),
                    next_offset,
                    high_watermark: log_end,
                    log_start,
                    memory: ReadPermit::default(),
                };
                if offset == log_end {
                    return Ok(empty(offset));
                }
                let mut cached = Vec::new();
                if let Some(next_offset) = self.cache.read(self.id, offset, max_bytes, &mut cached)
                {
                    bump(&self.counters.cache_reads, 1);
                    return Ok(LogRead {
                        chunks: cached,
                        ..empty(next_offset)
                    });
                }
                let (_, segment) = state.segments.range(..=offset).next_back().ok_or(
                    LogError::OffsetOutOfRange {
                        requested: offset,
                        start: log_start,
                        end: log_end,
                    },
                )?;
                let limit = if segment.sealed {
                    segment.size
                } else {
                    state.written_bytes.min(segment.size)
                };
                let relative = (offset - segment.base_offset) as u32;
                let (indexed, position) = segment.offset_index.lookup(relative);
                let position = u64::from(position);
                let base_offset = segment.base_offset + u64::from(indexed);
                (
                    segment.file.clone(),
                    segment.path.clone(),
                    position,
                    limit,
                    base_offset,
                    log_start,
                    log_end,
                    segment.base_offset,
                )
            };
        bump(&self.counters.disk_reads, 1);
        let sequential = self.last_disk_read_end.get() == Some(offset);
        // A read-ahead for exactly this offset starts at its batch: no index walk needed.
        let ahead = self
            .readahead
            .borrow_mut()
            .take()
            .filter(|ra| ra.segment == segment_base && ra.offset == offset);
        let (position, base_offset) = match &ahead {
            Some(ra) => (ra.position, ra.offset),
            None => (position, base_offset),
        };
        let corrupt = |position: u64, reason: String| LogError::Corrupt {
            path: path.clone(),
            position,
            reason,
        };
        let read_len = |from: u64, want: u64| (want.min(limit.saturating_sub(from))) as usize;
        let slack = u64::from(self.config.index_interval_bytes) + max_bytes as u64;
        let window = slack.max(64 << 10);
        let mut buf_pos = position;
        // Each buffer's bytes are taken from the shard's read memory before it is read; a
        // buffer replaced below gives its bytes back first.
        let take = |len: usize| async move {
            match wait {
                MemoryWait::Wait => Ok(self.memory.take(len).await),
                MemoryWait::IfFree => self.memory.try_take(len).ok_or(LogError::MemoryBusy),
            }
        };
        // Memory first, then the file: a reader queued for memory holds no descriptor.
        let first_read = match ahead {
            Some(ra) => FirstRead::Ahead(ra),
            None => {
                let len = read_len(buf_pos, window);
                FirstRead::Fresh(len, take(len).await?)
            }
        };
        let file = self.segment_file(segment_base, held, &path, offset).await?;
        let (buf, mut memory) = match first_read {
            FirstRead::Ahead(ra) => {
                bump(&self.counters.readahead_hits, 1);
                (ra.future.await, ra.memory)
            }
            FirstRead::Fresh(len, memory) => (file.read_at(buf_pos, len).await, memory),
        };
        let mut buf = buf.map_err(|e| LogError::io("read", &path, e))?;
        let mut pos = position;
        let mut first: Option<u64> = None;
        let mut first_base = offset;
        let mut next_offset = offset;
        let mut end = pos;
        // The base offset is outside the CRC: check it against the offsets walked from the
        // index entry, so a damaged one is reported instead of served under a wrong offset.
        let mut expected_offset = base_offset;
        while pos < limit {
            let at = (pos - buf_pos) as usize;
            let header_end = at + tidelog_wire::batch::HEADER_LEN;
            if header_end > buf.len() {
                if first.is_some() {
                    break;
                }
                buf_pos = pos;
                let len = read_len(pos, window);
                drop((std::mem::take(&mut memory), buf));
                memory = take(len).await?;
                buf = file
                    .read_at(pos, len)
                    .await
                    .map_err(|e| LogError::io("read", &path, e))?;
                // The file ends before the size the log holds for it: reading again would
                // get the same short buffer, forever.
                if buf.len() < tidelog_wire::batch::HEADER_LEN {
                    return Err(corrupt(
                        pos,
                        format!("the segment file ends at byte {}", pos + buf.len() as u64),
                    ));
                }
                continue;
            }
            // Damage after good batches ends the read there: the good ones are served, and
            // the next read, starting at the damage, reports it.
            let meta = match BatchMeta::parse(&buf[at..header_end]) {
                Ok(meta) => meta,
                Err(_) if first.is_some() => break,
                Err(e) => return Err(corrupt(pos, format!("bad batch header: {e}"))),
            };
            if meta.base_offset != expected_offset as i64 {
                if first.is_some() {
                    break;
                }
                return Err(corrupt(
                    pos,
                    format!(
                        "batch has offset {}, expected {expected_offset}",
                        meta.base_offset
                    ),
                ));
            }
            let batch_next = expected_offset + meta.span();
            if batch_next <= offset {
                pos += meta.len as u64;
                expected_offset = batch_next;
                continue;
            }
            if let Some(start) = first {
                if pos + meta.len as u64 - start > max_bytes as u64 {
                    break;
                }
            }
            if at + meta.len > buf.len() {
                if first.is_some() {
                    break;
                }
                // No batch is larger: a damaged length must not size a read (or its memory).
                if meta.len > crate::limits::BATCH_BYTES_MAX {
                    return Err(corrupt(pos, format!("batch claims {} bytes", meta.len)));
                }
                // The first batch is larger than what was read: read exactly it.
                buf_pos = pos;
                let len = read_len(pos, meta.len as u64);
                drop((std::mem::take(&mut memory), buf));
                memory = take(len).await?;
                buf = file
                    .read_at(pos, len)
                    .await
                    .map_err(|e| LogError::io("read", &path, e))?;
                if buf.len() < meta.len {
                    return Err(corrupt(
                        pos,
                        "batch runs past the end of the segment".into(),
                    ));
                }
                continue;
            }
            let batch = &buf[at..at + meta.len];
            if let Err(e) = check_crc(batch) {
                if first.is_some() {
                    break;
                }
                return Err(corrupt(pos, format!("CRC mismatch: {e}")));
            }
            if first.is_none() {
                first = Some(pos);
                first_base = expected_offset;
            }
            pos += meta.len as u64;
            expected_offset = batch_next;
            end = pos;
            next_offset = batch_next;
        }
        let chunks = match first {
            Some(start) => {
                let range = (start - buf_pos) as usize..(end - buf_pos) as usize;
                let bytes = <S::File as StorageFile>::slice(&buf, range);
                // Checked whole batches: the cache keeps them (cold, unless read again).
                self.cache
                    .insert_read(self.id, first_base, next_offset, bytes.clone());
                vec![ReadChunk::Disk(bytes)]
            }
            None => Vec::new(),
        };
        if chunks.is_empty() {
            return Err(corrupt(
                position,
                format!("offset {offset} not found in segment"),
            ));
        }
        self.last_disk_read_end.set(Some(next_offset));
        // A second sequential read in a row with more written bytes after it, which the batch
        // cache will not serve: read them now.
        let cached_next = self.cache.holds(self.id, next_offset);
        let len = read_len(end, window);
        // A read-ahead parks its buffer until the consumer's next fetch: it takes read memory
        // only while half the budget stays free, so parked buffers never starve reads.
        let ahead_memory = (sequential && end < limit && !cached_next)
            .then(|| {
                self.memory
                    .try_take_leaving(len, self.memory.capacity() / 2)
            })
            .flatten();
        // Only for a segment still in an open log: retention or close during the awaits above
        // must not find a read-ahead parked on a deleted file (it would keep the file's space,
        // its descriptor and its read memory until the partition's next read).
        let idle = self.readahead.borrow().is_none() && {
            let state = self.state.borrow();
            !state.closed && state.segments.contains_key(&segment_base)
        };
        if let (Some(ahead_memory), true) = (ahead_memory, idle) {
            let file = file.clone();
            let mut future: Pin<Box<dyn Future<Output = std::io::Result<_>>>> =
                Box::pin(async move { file.read_at(end, len).await });
            // Poll once so the read is submitted now rather than when it is awaited; its
            // result waits in the future.
            let early = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = early {
                future = Box::pin(std::future::ready(result));
            }
            *self.readahead.borrow_mut() = Some(ReadAhead {
                segment: segment_base,
                offset: next_offset,
                position: end,
                future,
                memory: ahead_memory,
            });
        }
        Ok(LogRead {
            chunks,
            next_offset,
            high_watermark,
            log_start,
            memory,
        })
    }

    /// The first record below `end` whose timestamp is at or after `timestamp` (Kafka's
    /// ListOffsets by time): its offset and timestamp, or `None` when every readable record
    /// is older. Exact to the record: the batch found is opened (inflated when compressed);
    /// a batch whose records cannot be read answers with its first offset and its max
    /// timestamp.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
        end: u64,
    ) -> Result<Option<(u64, i64)>> {
        let (start, log_start) = {
            let state = self.state.borrow();
            let found = state
                .segments
                .values()
                .find(|s| s.size > 0 && s.max_timestamp >= timestamp);
            match found {
                Some(segment) => {
                    let relative = segment.time_index.scan_start(timestamp);
                    (
                        (segment.base_offset + u64::from(relative)).max(state.log_start),
                        state.log_start,
                    )
                }
                None => return Ok(None),
            }
        };
        let found = self
            .find_record(start, end, |max| max >= timestamp, |t| t >= timestamp)
            .await?;
        Ok(found.filter(|&(offset, _)| offset >= log_start))
    }

    /// The first record below `end` holding the largest timestamp of the log (Kafka's
    /// ListOffsets `MAX_TIMESTAMP`, -3): its offset and timestamp, or `None` for an empty
    /// log. The segment with the largest max timestamp is searched first; only when its
    /// record lies past `end` (not yet replicated) is every readable batch scanned.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn offset_of_max_timestamp(&self, end: u64) -> Result<Option<(u64, i64)>> {
        let (segment_start, max, log_start) = {
            let state = self.state.borrow();
            let mut best: Option<(u64, i64)> = None;
            for segment in state.segments.values().filter(|s| s.size > 0) {
                if best.is_none_or(|(_, max)| segment.max_timestamp > max) {
                    best = Some((segment.base_offset, segment.max_timestamp));
                }
            }
            match best {
                Some((base, max)) => (base.max(state.log_start), max, state.log_start),
                None => return Ok(None),
            }
        };
        if let Some(found) = self
            .find_record(segment_start, end, |m| m == max, |t| t == max)
            .await?
        {
            return Ok(Some(found));
        }
        // The newest timestamps are past `end`: the largest among the readable batches.
        let mut best: Option<i64> = None;
        let mut offset = log_start;
        while offset < end {
            let read = self.read(offset, 1 << 20).await?;
            if read.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                let mut bytes: &[u8] = chunk.head();
                while !bytes.is_empty() {
                    let meta = BatchMeta::parse(bytes)?;
                    if (meta.base_offset as u64) < end {
                        best = Some(best.map_or(meta.max_timestamp, |b| b.max(meta.max_timestamp)));
                    }
                    bytes = bytes.get(meta.len..).unwrap_or_default();
                }
            }
            offset = read.next_offset;
        }
        match best {
            Some(max) => {
                self.find_record(log_start, end, |m| m == max, |t| t == max)
                    .await
            }
            None => Ok(None),
        }
    }

    /// From `start`, the first batch below `end` whose max timestamp passes `batch`, and in
    /// it the first record at or after `start` whose timestamp passes `record`.
    async fn find_record(
        &self,
        start: u64,
        end: u64,
        batch: impl Fn(i64) -> bool,
        record: impl Fn(i64) -> bool,
    ) -> Result<Option<(u64, i64)>> {
        let mut offset = start;
        while offset < end {
            let read = self.read(offset, 1 << 20).await?;
            if read.is_empty() {
                return Ok(None);
            }
            for chunk in &read.chunks {
                // A split chunk is one batch whose header lies in its head.
                let copied;
                let whole: &[u8] = match chunk.contiguous() {
                    Some(bytes) => bytes,
                    None => {
                        copied = chunk.to_vec();
                        &copied
                    }
                };
                let mut bytes = whole;
                while !bytes.is_empty() {
                    let meta = BatchMeta::parse(bytes)?;
                    let base = meta.base_offset as u64;
                    if base >= end {
                        return Ok(None);
                    }
                    let batch_next = base + meta.span();
                    if batch_next > offset && batch(meta.max_timestamp) {
                        let this = bytes.get(..meta.len).unwrap_or(bytes);
                        match record_times(this) {
                            Some(times) => {
                                let hit = times.into_iter().find(|&(o, t)| {
                                    o >= offset as i64 && (o as u64) < end && record(t)
                                });
                                if let Some((o, t)) = hit {
                                    return Ok(Some((o as u64, t)));
                                }
                            }
                            None => {
                                tracing::warn!(
                                    base_offset = base,
                                    "a batch's records did not decode for a timestamp lookup; \
                                     answering with the batch's first offset"
                                );
                                return Ok(Some((base.max(offset), meta.max_timestamp)));
                            }
                        }
                    }
                    bytes = bytes.get(meta.len..).unwrap_or_default();
                }
            }
            offset = read.next_offset;
        }
        Ok(None)
    }

    /// Calls `apply` with every record of the log, in offset order (native batches only), e.g.
    /// to rebuild a table kept in an internal log.
    ///
    /// # Errors
    /// Read errors, or a stored batch that fails verification.
    pub async fn replay(
        &self,
        mut apply: impl FnMut(tidelog_wire::batch::RecordView<'_>),
    ) -> Result<()> {
        let limits = tidelog_wire::batch::VerifyLimits::default();
        let mut offset = self.log_start();
        while offset < self.log_end() {
            let read = self.read(offset, 1 << 20).await?;
            for chunk in &read.chunks {
                // Internal logs hold native batches, never split ones; one would be copied.
                let copied;
                let mut bytes: &[u8] = match chunk.contiguous() {
                    Some(bytes) => bytes,
                    None => {
                        copied = chunk.to_vec();
                        &copied
                    }
                };
                while !bytes.is_empty() {
                    let view = tidelog_wire::batch::verify(bytes, &limits)?;
                    for record in view.records()? {
                        apply(record);
                    }
                    bytes = &bytes[view.batch_len()..];
                }
            }
            offset = read.next_offset;
        }
        Ok(())
    }
}

/// Most bytes a compressed batch may inflate to for a timestamp lookup; a batch past it is
/// answered at batch granularity (its first offset).
const RECORD_TIMES_INFLATE_MAX: usize = 64 << 20;

/// (offset, timestamp) of every record of the stored batch `stored` (either payload format,
/// compressed or not), or `None` when its records cannot be read.
fn record_times(stored: &[u8]) -> Option<Vec<(i64, i64)>> {
    use tidelog_wire::kafka_records::{self as records, RecordBatchHeader};
    let header = tidelog_wire::batch::peek_header(stored).ok()?;
    let base_offset = header.base_offset();
    let kafka: std::borrow::Cow<'_, [u8]> =
        if header.payload_format() == tidelog_wire::batch::PayloadFormat::Kafka {
            {
                let payload = records::kafka_payload(stored).ok()?;
                if RecordBatchHeader::read(payload)?.compression()
                    == tidelog_wire::batch::Compression::None
                {
                    std::borrow::Cow::Borrowed(payload)
                } else {
                    let inflated = records::inflate(payload, RECORD_TIMES_INFLATE_MAX).ok()?;
                    std::borrow::Cow::Owned(inflated.to_vec())
                }
            }
        } else {
            {
                let limits = tidelog_wire::batch::VerifyLimits::default();
                let view = tidelog_wire::batch::verify(stored, &limits).ok()?;
                let mut out = bytes::BytesMut::new();
                records::native_to_kafka(&view, &mut out).ok()?;
                std::borrow::Cow::Owned(out.to_vec())
            }
        };
    let decoded = records::decode_records(&kafka, base_offset).ok()?;
    Some(
        decoded
            .into_iter()
            .map(|r| (r.offset, r.timestamp))
            .collect(),
    )
}
