//! The writer's side of a partition log: the write gate and its lease, appends, rolls and
//! sealing, group commit (`sync`), the flush policy, retention, close and delete.

use super::recovery::create_segment;
use super::*;

/// What a roll leaves to do after the write gate is released (`PartitionLog::seal_pending`).
pub(super) struct Sealing<F> {
    file: F,
    path: PathBuf,
    base: u64,
    size: u64,
    offset_index: Vec<u8>,
    time_index: Vec<u8>,
}

/// The writer, lent out to the holder of the write gate; it goes back on drop. If a
/// multi-step operation is dropped half-way (`dirty`), the partition is poisoned.
struct WriterLease<'a, S: Storage, C: Clock> {
    log: &'a PartitionLog<S, C>,
    writer: Option<SegmentWriter<S::File>>,
    dirty: bool,
    _gate: crate::sync::GateGuard<'a>,
}

impl<S: Storage, C: Clock> WriterLease<'_, S, C> {
    fn writer(&mut self) -> &mut SegmentWriter<S::File> {
        self.writer
            .as_mut()
            .expect("a lease always holds the writer until dropped")
    }

    /// Hands the write buffers submitted since the last call to the batch cache (which
    /// serves their batches from them from now on), publishes how far the writer has
    /// written, and lets the cache evict what is written.
    fn publish_progress(&mut self) {
        let writer = self.writer.as_mut().expect("lease holds the writer");
        // Finished writes are recorded now; a failed one shows at the next wait for it.
        let _ = writer.reap();
        let submitted = writer.take_submitted();
        let mut state = self.log.state.borrow_mut();
        let segment = *state.segments.keys().next_back().expect("active segment");
        for (pos, view) in &submitted {
            self.log.cache.adopt_buffer(
                self.log.id,
                segment,
                *pos,
                view,
                crate::limits::WRITE_BUFFER_BYTES,
            );
        }
        // What has been written only grows, and never passes what was appended.
        debug_assert!(writer.written_offset() >= state.written_offset);
        debug_assert!(writer.written_offset() <= state.log_end);
        state.written_offset = writer.written_offset();
        state.written_bytes = writer.completed_end();
        let written = state.written_offset;
        drop(state);
        self.log.cache.written(self.log.id, written);
    }
}

impl<S: Storage, C: Clock> Drop for WriterLease<'_, S, C> {
    fn drop(&mut self) {
        let mut state = self.log.state.borrow_mut();
        if let Some(writer) = self.writer.take() {
            state.written_offset = writer.written_offset();
            state.written_bytes = writer.completed_end();
            state.writer = Some(writer);
        }
        if self.dirty && state.poison.is_none() {
            state.poison = Some(("write", "operation cancelled half-way".into()));
        }
    }
}

struct SyncRunning<'a, S: Storage, C: Clock>(&'a PartitionLog<S, C>);

impl<S: Storage, C: Clock> Drop for SyncRunning<'_, S, C> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().sync_running = false;
        self.0.synced.notify();
    }
}

impl<S: Storage, C: Clock> PartitionLog<S, C> {
    fn poison(&self, op: &'static str, error: &std::io::Error) -> LogError {
        let mut state = self.state.borrow_mut();
        let reason = error.to_string();
        if state.poison.is_none() {
            let (topic, partition) = crate::log::topic_partition(&self.dir);
            tracing::error!(
                %topic,
                %partition,
                dir = %self.dir.display(),
                op,
                %reason,
                log_end = state.log_end,
                synced_offset = state.synced_offset,
                "partition poisoned: it refuses writes until reopened"
            );
            state.poison = Some((op, reason.clone()));
        }
        LogError::Poisoned { op, reason }
    }

    fn check_writable(&self) -> Result<()> {
        let state = self.state.borrow();
        if state.closed {
            return Err(LogError::Closed);
        }
        match &state.poison {
            Some((op, reason)) => Err(LogError::Poisoned {
                op,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    async fn lease(&self) -> Result<WriterLease<'_, S, C>> {
        let gate = self.gate.enter().await;
        self.check_writable()?;
        let writer = self.state.borrow_mut().writer.take();
        match writer {
            Some(writer) => Ok(WriterLease {
                log: self,
                writer: Some(writer),
                dirty: false,
                _gate: gate,
            }),
            None => Err(LogError::Closed),
        }
    }

    /// Appends one batch (header and payload as built by `tidelog-wire`), assigning it the
    /// next offsets, and returns where it landed. The batch's CRC is checked first; the base
    /// offset is stamped in place (it is outside the CRC), then the batch is copied once into
    /// the write buffer and shared with the batch cache.
    ///
    /// Idempotent producers (`producer_id >= 0` in the header) are checked under the same
    /// write gate that assigns offsets: a retry of one of the producer's last 5 batches (same
    /// epoch, same first and last sequence) is not appended again; the original's offsets
    /// come back with [`AppendInfo::duplicate`] set (after the original is durable, for
    /// [`Durability::Synced`]).
    ///
    /// # Errors
    /// [`LogError::InvalidProducerEpoch`] / [`LogError::OutOfOrderSequence`] when the
    /// producer's epoch or sequence does not follow its state (nothing is written);
    /// [`LogError::InvalidBatch`] / [`LogError::BatchTooLarge`] for a bad batch (nothing is
    /// written); [`LogError::DiskFull`] when the segment cannot grow (nothing is written, the
    /// log stays usable); [`LogError::Poisoned`] after a failed write or fdatasync.
    pub async fn append(&self, batch: BytesMut, durability: Durability) -> Result<AppendInfo> {
        let info = self.append_unsynced(batch).await?;
        if durability == Durability::Synced {
            self.wait_durable(&info).await?;
        }
        Ok(AppendInfo {
            flush_due: info.flush_due && durability == Durability::Buffered,
            ..info
        })
    }

    /// The first half of [`append`](Self::append) for `acks=all` pipelining: assigns the
    /// offsets and puts the batch in the log (visible to readers) but does not wait for it to
    /// be durable; [`wait_durable`](Self::wait_durable) does that. Callers that start appends
    /// in a given order get offsets in that order when each awaits this before starting the
    /// next, which the write gate alone (not FIFO) does not promise for concurrent callers.
    ///
    /// # Errors
    /// As [`append`](Self::append), except the fdatasync ones.
    pub async fn append_unsynced(&self, batch: BytesMut) -> Result<AppendInfo> {
        self.append_checked(batch, true).await
    }

    /// [`append_unsynced`](Self::append_unsynced) for a batch whose CRCs the wire crate
    /// computed over checked input (a validated Kafka Produce batch): they are not checked
    /// again, so storing it costs no CRC pass. Framing and length are still checked.
    ///
    /// # Errors
    /// As [`append_unsynced`](Self::append_unsynced).
    pub async fn append_sealed_unsynced(
        &self,
        batch: tidelog_wire::kafka_records::SealedBatch,
    ) -> Result<AppendInfo> {
        let (head, tail) = batch.into_parts();
        self.append_pieces(head, tail, false, false).await
    }

    async fn append_checked(&self, batch: BytesMut, check_crc: bool) -> Result<AppendInfo> {
        self.append_pieces(batch, Bytes::new(), check_crc, false)
            .await
    }

    /// Appends one batch a follower fetched from its leader, as stored there: its CRCs are
    /// checked, its base offset must be this log's end (the follower fetched from there), and
    /// its idempotent-producer fields are recorded but never refused (the leader decided).
    /// Not durable until [`sync`](Self::sync).
    ///
    /// # Errors
    /// [`LogError::InvalidBatch`] for a bad batch or one that does not start at the log end
    /// (nothing is written); the write errors of [`append`](Self::append).
    ///
    /// The batch stays where it arrived (a slice of the fetch response): its CRCs are checked
    /// there, and only its head (header and the Kafka fields up to the Kafka CRC) is copied
    /// to be stamped; the rest goes into the write buffer straight from the response.
    pub async fn append_replica(&self, batch: Bytes) -> Result<AppendInfo> {
        tidelog_wire::batch::check_crc(&batch)?;
        let split = tidelog_wire::batch::KAFKA_CHAIN_END.min(batch.len());
        let head = BytesMut::from(&batch[..split]);
        self.append_pieces(head, batch.slice(split..), false, true)
            .await
    }

    /// Appends one batch given as `head` (at least its header; the log stamps the base
    /// offsets there) and `tail` (the rest, possibly empty, shared with the caller): the
    /// write buffer copy is the only copy of its bytes.
    async fn append_pieces(
        &self,
        mut batch: BytesMut,
        tail: Bytes,
        check_crc: bool,
        replica: bool,
    ) -> Result<AppendInfo> {
        let len = batch.len() + tail.len();
        if len > self.config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                len,
                max: self.config.max_batch_bytes,
            });
        }
        let meta = BatchMeta::parse(&batch)?;
        if meta.len != len {
            return Err(LogError::BatchLengthMismatch {
                declared: meta.len,
                actual: len,
            });
        }
        if check_crc {
            // Callers that have the CRCs checked hand over whole batches.
            debug_assert!(tail.is_empty());
            tidelog_wire::batch::check_crc(&batch)?;
        }
        let now_ms = self.clock.now_ms();
        let mut lease = self.lease().await?;
        if self.state.borrow().closing {
            // Taken now, it would be answered and then dropped with the write buffer.
            return Err(LogError::Closed);
        }
        let producer = meta.producer();
        if replica {
            let end = self.state.borrow().log_end;
            if u64::try_from(meta.base_offset).ok() != Some(end) {
                return Err(LogError::NotAtEnd {
                    base: meta.base_offset,
                    end,
                });
            }
        }
        if let (Some(producer), false) = (&producer, replica) {
            let verdict = self.state.borrow().producers.check(producer)?;
            if let Verdict::Duplicate {
                first_offset,
                last_offset,
            } = verdict
            {
                drop(lease);
                return Ok(AppendInfo {
                    base_offset: first_offset,
                    last_offset,
                    flush_due: false,
                    duplicate: true,
                });
            }
        }
        if self.needs_roll(len as u64, meta.span(), now_ms) {
            self.roll(&mut lease).await?;
        }
        // The shard's unwritten bytes are bounded: past the budget, wait for this
        // partition's oldest write (the other partitions' appenders do so for theirs).
        while self.cache.over_dirty_budget() {
            let in_flight = Rc::clone(lease.writer().in_flight());
            let Some(fewer) = in_flight.len().checked_sub(1) else {
                break;
            };
            if let Err(e) = in_flight.complete_down_to(fewer).await {
                return Err(self.poison("write", &e));
            }
            lease.publish_progress();
        }
        let base_offset = self.state.borrow().log_end;
        stamp_base_offset(&mut batch, base_offset as i64)?;
        if !replica {
            // A leader's batch carries the epoch it is written in (a follower's came with
            // its leader's stamp): consumers validate their position by it after a failover.
            if let Some(epoch) = self.latest_leader_epoch() {
                let epoch = i32::try_from(epoch).unwrap_or(i32::MAX);
                tidelog_wire::batch::stamp_kafka_leader_epoch(&mut batch, epoch)?;
            }
        }
        let meta = BatchMeta {
            base_offset: base_offset as i64,
            ..meta
        };
        let next_offset = base_offset + meta.span();
        let position = lease.writer().end();
        let segment_bytes = self.tunables.get().segment_bytes;
        let step = self.config.preallocate_bytes;
        lease
            .writer()
            .reserve(position + len as u64, step, segment_bytes)
            .await
            .map_err(|e| LogError::io("preallocate", self.active_path(), e))?;
        lease.dirty = true;
        if let Err(e) = lease
            .writer()
            .append_parts(&[&batch, &tail], next_offset)
            .await
        {
            return Err(self.poison("write", &e));
        }
        lease.dirty = false;
        let flush_due = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            let active = state
                .segments
                .values_mut()
                .next_back()
                .expect("active segment");
            let active_base = active.base_offset;
            active.first_append_ms.get_or_insert(now_ms);
            active.on_batch(&meta, position, self.config.index_interval_bytes);
            // Offsets are dense and only grow: this batch starts where the log ended.
            debug_assert_eq!(state.log_end, base_offset);
            debug_assert!(next_offset > base_offset);
            state.log_end = next_offset;
            state.appended_bytes_total += len as u64;
            state.oldest_unsynced_ms.get_or_insert(now_ms);
            let segment = active_base;
            self.cache.push_appended(
                self.id,
                base_offset,
                next_offset,
                batch.freeze(),
                tail,
                (segment, position),
            );
            if let Some(producer) = &producer {
                state
                    .producers
                    .record(producer, base_offset, next_offset - 1);
            }
            self.flush_due_locked(state, now_ms)
        };
        lease.publish_progress();
        drop(lease);
        bump(&self.counters.appends, 1);
        bump(&self.counters.appended_bytes, len as u64);
        bump(&self.counters.appended_records, next_offset - base_offset);
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            flush_due,
            duplicate: false,
        })
    }

    /// Makes `epoch` the replica's latest leader epoch, starting at the log end (under the
    /// write gate, so no append slips in between), durably, before the caller appends in
    /// it. Returns false when the log already knows this epoch or a later one.
    ///
    /// # Errors
    /// The I/O error of persisting the cache (the epoch is then not assigned).
    pub async fn assign_leader_epoch(&self, epoch: u32) -> Result<bool> {
        let _lease = self.lease().await?;
        let before = self.epochs.borrow().clone();
        let mut after = before.clone();
        if !after.assign(epoch, self.log_end()) {
            return Ok(false);
        }
        after.persist(&self.storage, &self.dir).await.map_err(|e| {
            LogError::io(
                "write",
                self.dir.join(crate::log::epochs::LEADER_EPOCHS_FILE),
                e,
            )
        })?;
        *self.epochs.borrow_mut() = after;
        let (topic, partition) = crate::log::topic_partition(&self.dir);
        tracing::info!(%topic, %partition, epoch, start = self.log_end(),
            "leader epoch starts (recorded before any batch of it)");
        Ok(true)
    }

    /// The replica's leader-epoch cache.
    pub fn leader_epochs(&self) -> crate::log::epochs::LeaderEpochs {
        self.epochs.borrow().clone()
    }

    /// The replica's latest leader epoch.
    pub fn latest_leader_epoch(&self) -> Option<u32> {
        self.epochs.borrow().latest().map(|(e, _)| e)
    }

    /// Kafka's OffsetForLeaderEpoch answer for `requested` (see `log::epochs`).
    pub fn epoch_end_offset(&self, requested: i64) -> (i64, i64) {
        self.epochs
            .borrow()
            .end_offset_for(requested, self.log_end())
    }

    /// Waits until the batch [`append_unsynced`](Self::append_unsynced) returned `info` for
    /// is durable (group commit: concurrent waiters share fdatasyncs). For a duplicate, the
    /// original is what becomes durable.
    ///
    /// # Errors
    /// [`LogError::Poisoned`] when a write or fdatasync failed; [`LogError::Closed`] when the
    /// log closed first.
    pub async fn wait_durable(&self, info: &AppendInfo) -> Result<()> {
        self.sync_to(info.last_offset + 1).await
    }

    fn active_path(&self) -> PathBuf {
        let state = self.state.borrow();
        let active = state.segments.values().next_back().expect("active segment");
        active.path.clone()
    }

    fn needs_roll(&self, len: u64, span: u64, now_ms: i64) -> bool {
        let state = self.state.borrow();
        let active = state.segments.values().next_back().expect("active segment");
        if active.size == 0 {
            return false;
        }
        let tunables = self.tunables.get();
        let full = active.size + len > tunables.segment_bytes;
        let old = active
            .first_append_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= tunables.segment_ms);
        let offsets_full =
            active.next_offset + span - active.base_offset > crate::limits::SEGMENT_OFFSETS_MAX;
        full || old || offsets_full
    }

    /// Seals the active segment and starts a new one at the log end. The new file is created
    /// first, so running out of space leaves the old segment active and intact. What is left
    /// of sealing (trimming, index files) waits for [`seal_pending`](Self::seal_pending),
    /// outside the write gate; a roll that finds an earlier one still waiting does it first.
    async fn roll(&self, lease: &mut WriterLease<'_, S, C>) -> Result<()> {
        self.seal_pending().await;
        let new_base = self.state.borrow().log_end;
        let old_path = self.active_path();
        lease.dirty = true;
        if let Err(e) = lease.writer().flush().await {
            return Err(self.poison("write", &e));
        }
        // The old segment's last buffers go to the cache before its writer is replaced.
        lease.publish_progress();
        let old_file = lease.writer().file().clone();
        let started = self.clock.now_us();
        if let Err(e) = old_file.fdatasync().await {
            return Err(self.poison("fdatasync", &e));
        }
        bump(&self.counters.fsyncs, 1);
        self.counters
            .fsync_latency
            .observe(self.clock.now_us().saturating_sub(started));
        lease.dirty = false;
        let new_segment = create_segment(&self.storage, &self.dir, new_base).await?;
        let reserve = self
            .config
            .preallocate_bytes
            .min(self.tunables.get().segment_bytes);
        let new_file = new_segment
            .file
            .clone()
            .expect("a new segment holds its file");
        if let Err(e) = new_file.preallocate(reserve).await {
            let _ = self.storage.remove_file(&new_segment.path).await;
            return Err(LogError::io("preallocate", &new_segment.path, e));
        }
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        // The old segment is complete and durable; its trimming and index files wait for
        // `seal`, outside the gate.
        let (old_base, old_size, offset_index, time_index) = {
            let mut state = self.state.borrow_mut();
            let old = state
                .segments
                .values_mut()
                .next_back()
                .expect("active segment");
            old.finish_time_index();
            old.sealed = true;
            // A sealed segment holds no file: its handle moves to the shard's cache (recent
            // data, likely read soon), which bounds how many stay open.
            if let Some(file) = old.file.take() {
                self.files.insert(self.id, old.base_offset, file);
            }
            (
                old.base_offset,
                old.size,
                old.offset_index.encode(),
                old.time_index.encode(),
            )
        };
        let writer = SegmentWriter::new(new_file, 0, &[], reserve, new_base);
        let in_flight = Rc::clone(writer.in_flight());
        lease.writer = Some(writer);
        let mut state = self.state.borrow_mut();
        state.in_flight = in_flight;
        state.segments.insert(new_base, new_segment);
        state.written_offset = new_base;
        state.written_bytes = 0;
        state.synced_offset = state.synced_offset.max(new_base);
        state.synced_bytes_total = state.appended_bytes_total;
        state.oldest_unsynced_ms = None;
        drop(state);
        bump(&self.counters.rolls, 1);
        *self.pending_seal.borrow_mut() = Some(Sealing {
            file: old_file,
            path: old_path,
            base: old_base,
            size: old_size,
            offset_index,
            time_index,
        });
        Ok(())
    }

    /// Finishes sealing the last rolled segment, if a roll left that to do: the housekeeping
    /// task calls this every flush check, and `close` before closing. Appends go on
    /// meanwhile, so a roll stalls them only for the old segment's last flush and fdatasync
    /// and the new segment's creation.
    pub async fn seal_pending(&self) {
        let pending = self.pending_seal.borrow_mut().take();
        if let Some(sealing) = pending {
            self.seal(sealing).await;
        }
    }

    /// The rest of a roll, done with the write gate free so that appends to the new segment
    /// go on meanwhile: cuts the sealed segment's preallocated zeros and persists its
    /// indexes. The segment is already complete and durable; a failure here (or a caller
    /// that gives up half-way) costs only an index rebuild at the next open, and index files
    /// of a segment that retention deleted meanwhile are removed at the next open too.
    async fn seal(&self, sealing: Sealing<S::File>) {
        let Sealing {
            file,
            path,
            base,
            size,
            offset_index,
            time_index,
        } = sealing;
        let sealed = async {
            file.truncate(size).await?;
            file.fdatasync().await?;
            let index_path = segment_path(&self.dir, base, INDEX_SUFFIX);
            write_index_file(&self.storage, &index_path, &offset_index).await?;
            let time_path = segment_path(&self.dir, base, TIME_INDEX_SUFFIX);
            write_index_file(&self.storage, &time_path, &time_index).await?;
            self.storage.sync_dir(&self.dir).await
        };
        if let Err(e) = sealed.await {
            let (topic, partition) = crate::log::topic_partition(path.parent().unwrap_or(&path));
            tracing::warn!(%topic, %partition, path = %path.display(), error = %e,
                "sealing segment failed; indexes will be rebuilt");
        }
    }

    fn flush_due_locked(&self, state: &State<S::File>, now_ms: i64) -> bool {
        let unsynced = state.appended_bytes_total - state.synced_bytes_total;
        unsynced > 0
            && (unsynced >= self.config.flush_bytes
                || state
                    .oldest_unsynced_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.flush_interval_ms))
    }

    /// Hands appended bytes still in the write buffer to the kernel, without waiting and
    /// without fdatasync: the housekeeping does it every flush check, so that a process
    /// crash (`kill -9`) normally loses at most the `acks=0/1` appends of the last check
    /// (writes handed to the kernel usually complete when the process dies); a power loss
    /// still takes what the flush policy has not fdatasynced. Returns whether there was anything.
    ///
    /// # Errors
    /// [`LogError::Poisoned`] when a write failed.
    pub async fn write_behind(&self) -> Result<bool> {
        let buffered = {
            let state = self.state.borrow();
            state
                .writer
                .as_ref()
                .is_some_and(SegmentWriter::has_unsubmitted)
        };
        if !buffered {
            return Ok(false);
        }
        let mut lease = self.lease().await?;
        lease.dirty = true;
        if let Err(e) = lease.writer().submit().await {
            return Err(self.poison("write", &e));
        }
        lease.dirty = false;
        lease.publish_progress();
        Ok(true)
    }

    /// Records the writes that finished since anyone looked (without waiting, without the
    /// gate), so that what they wrote is served from disk and may leave the cache.
    ///
    /// # Errors
    /// [`LogError::Poisoned`] when one of them failed.
    pub fn observe_writes(&self) -> Result<()> {
        let in_flight = Rc::clone(&self.state.borrow().in_flight);
        if let Err(e) = in_flight.reap() {
            return Err(self.poison("write", &e));
        }
        self.note_written(&in_flight);
        Ok(())
    }

    /// Publishes how far `in_flight` (the active segment's writes, else nothing) has
    /// written, and lets the cache evict what is written.
    fn note_written(&self, in_flight: &Rc<InFlightWrites<S::File>>) {
        let written = {
            let mut state = self.state.borrow_mut();
            if !Rc::ptr_eq(&state.in_flight, in_flight) {
                return; // a rolled segment's: the roll wrote and synced it all
            }
            // What has been written only grows, and never passes what was appended.
            let written = in_flight.written_offset().max(state.written_offset);
            debug_assert!(written <= state.log_end);
            state.written_offset = written;
            state.written_bytes = state.written_bytes.max(in_flight.completed_end());
            written
        };
        self.cache.written(self.id, written);
    }

    /// True when the flush policy (bytes or interval) wants buffered appends made durable.
    pub fn flush_due(&self) -> bool {
        let now_ms = self.clock.now_ms();
        self.flush_due_locked(&self.state.borrow(), now_ms)
    }

    /// Runs [`sync`](Self::sync) if the flush policy says so; returns whether it did.
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub async fn maybe_flush(&self) -> Result<bool> {
        self.observe_writes()?;
        if !self.flush_due() {
            self.write_behind().await?;
            return Ok(false);
        }
        self.sync().await?;
        Ok(true)
    }

    /// Makes every batch appended before this call durable (group commit).
    ///
    /// # Errors
    /// [`LogError::Poisoned`] when this or an earlier write or fdatasync failed.
    pub async fn sync(&self) -> Result<()> {
        let target = self.state.borrow().log_end;
        self.sync_to(target).await
    }

    async fn sync_to(&self, target: u64) -> Result<()> {
        loop {
            {
                let state = self.state.borrow();
                if let Some((op, reason)) = &state.poison {
                    return Err(LogError::Poisoned {
                        op,
                        reason: reason.clone(),
                    });
                }
                if state.synced_offset >= target {
                    return Ok(());
                }
                if state.closed {
                    return Err(LogError::Closed);
                }
            }
            if self.state.borrow().sync_running {
                let listener = self.synced.listen();
                listener.await;
                continue;
            }
            self.state.borrow_mut().sync_running = true;
            let _running = SyncRunning(self);
            let (in_flight, target_end, file, covered_offset, covered_bytes) = {
                let mut lease = self.lease().await?;
                lease.dirty = true;
                let end = match lease.writer().submit().await {
                    Ok(end) => end,
                    Err(e) => return Err(self.poison("write", &e)),
                };
                lease.dirty = false;
                lease.publish_progress();
                let state = self.state.borrow();
                (
                    Rc::clone(lease.writer().in_flight()),
                    end,
                    lease.writer().file().clone(),
                    state.log_end,
                    state.appended_bytes_total,
                )
            };
            // The gate is free again: appends fill the buffer while the writes land and the
            // fdatasync runs. Waiting here never drops a write (it stays queued).
            if let Err(e) = in_flight.complete_through(target_end).await {
                return Err(self.poison("write", &e));
            }
            self.note_written(&in_flight);
            let started = self.clock.now_us();
            if let Err(e) = file.fdatasync().await {
                return Err(self.poison("fdatasync", &e));
            }
            bump(&self.counters.fsyncs, 1);
            self.counters
                .fsync_latency
                .observe(self.clock.now_us().saturating_sub(started));
            let mut state = self.state.borrow_mut();
            state.synced_offset = state.synced_offset.max(covered_offset);
            state.synced_bytes_total = state.synced_bytes_total.max(covered_bytes);
            // Durable never passes written, written never passes appended.
            debug_assert!(state.synced_offset <= state.written_offset);
            debug_assert!(state.written_offset <= state.log_end);
            state.oldest_unsynced_ms = if state.synced_bytes_total < state.appended_bytes_total {
                Some(self.clock.now_ms())
            } else {
                None
            };
        }
    }

    /// Writes the recovery point (the synced offset) if it moved since the last checkpoint:
    /// to a temporary file, fdatasynced, renamed over the old one, the directory synced, so a
    /// crash leaves one or the other (an older one only makes recovery more willing to cut, as before recovery
    /// points existed). A failure is logged and retried at the next checkpoint. Returns
    /// whether a new recovery point is in place.
    pub async fn checkpoint_recovery_point(&self) -> bool {
        let target = {
            let mut state = self.state.borrow_mut();
            if state.checkpoint_running || state.synced_offset <= state.recovery_point {
                return false;
            }
            state.checkpoint_running = true;
            state.synced_offset
        };
        let path = self.dir.join(recovery::RECOVERY_POINT_FILE);
        let written = self
            .persist(&path, &recovery::encode_recovery_point(target))
            .await;
        let mut state = self.state.borrow_mut();
        state.checkpoint_running = false;
        match written {
            Ok(()) => {
                state.recovery_point = state.recovery_point.max(target);
                true
            }
            // A deleted partition's directory is gone (renamed to a tombstone) as it closes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                let (topic, partition) =
                    crate::log::topic_partition(path.parent().unwrap_or(&path));
                tracing::warn!(%topic, %partition, path = %path.display(), error = %e,
                    "writing the recovery point failed");
                false
            }
        }
    }

    /// Whether housekeeping should write a producer-state snapshot ([`SnapshotWhen::Stale`]).
    pub fn producer_snapshot_stale(&self) -> bool {
        self.snapshot_wanted(SnapshotWhen::Stale)
    }

    fn snapshot_wanted(&self, when: SnapshotWhen) -> bool {
        let mark = self.producer_snapshot.get();
        let state = self.state.borrow();
        let active_base = state.segments.keys().next_back().copied().unwrap_or(0);
        state.producers.version() != mark.version
            || mark.covered < active_base
            || (when == SnapshotWhen::Behind && mark.covered != state.log_end)
    }

    /// Writes the producer-state snapshot (temporary file, fdatasync, rename, directory sync)
    /// when the state changed since the last one and everything appended is synced (so the
    /// snapshot covers only durable batches, which recovery never cuts). Returns whether a
    /// new snapshot is in place. Failures are logged; the next open rebuilds from the log.
    pub async fn checkpoint_producer_state(&self, when: SnapshotWhen) -> bool {
        let mark = self.producer_snapshot.get();
        if mark.running || !self.snapshot_wanted(when) {
            return false;
        }
        let (covered, bytes, version) = {
            let state = self.state.borrow();
            let version = state.producers.version();
            if state.synced_offset != state.log_end {
                return false;
            }
            let payload = state.producers.encode();
            (
                state.log_end,
                recovery::encode_producer_snapshot(state.log_end, &payload),
                version,
            )
        };
        self.producer_snapshot.set(SnapshotMark {
            running: true,
            ..mark
        });
        let path = self.dir.join(recovery::PRODUCER_STATE_FILE);
        let written = self.persist(&path, &bytes).await;
        match written {
            Ok(()) => {
                self.producer_snapshot.set(SnapshotMark {
                    version,
                    covered,
                    running: false,
                });
                true
            }
            Err(e) => {
                self.producer_snapshot.set(mark);
                if e.kind() != std::io::ErrorKind::NotFound {
                    let (topic, partition) = crate::log::topic_partition(&self.dir);
                    tracing::warn!(%topic, %partition, covered, error = %e,
                        "writing the producer-state snapshot failed");
                }
                false
            }
        }
    }

    /// Writes the small file `path` in the partition directory durably: temporary file,
    /// fdatasync, rename, then the directory sync that makes the rename durable.
    async fn persist(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        write_index_file(&self.storage, path, bytes).await?;
        self.storage.sync_dir(&self.dir).await
    }

    /// Records the active segment for the next open (module `clean`) when everything
    /// appended is durable. Called by `close` under the gate. A failure only costs the next
    /// open a scan.
    async fn write_clean_shutdown(&self) {
        let file = {
            let state = self.state.borrow();
            let durable = state.poison.is_none()
                && state.synced_offset == state.log_end
                && state.recovery_point == state.log_end
                && self.pending_seal.borrow().is_none();
            let active = state.segments.values().next_back();
            match active.and_then(|s| s.file.clone()) {
                Some(file) if durable => file,
                _ => return,
            }
        };
        let path = self.dir.join(clean::CLEAN_SHUTDOWN_FILE);
        let written = async {
            let file_len = file.size().await?;
            // Taken after the await: the gate is held, so the segment cannot have changed.
            let bytes = {
                let state = self.state.borrow();
                let active = state
                    .segments
                    .values()
                    .next_back()
                    .ok_or_else(|| std::io::Error::other("no active segment"))?;
                clean::CleanShutdown::of(active, file_len).encode()
            };
            self.persist(&path, &bytes).await
        }
        .await;
        if let Err(e) = written {
            if e.kind() != std::io::ErrorKind::NotFound {
                let (topic, partition) = crate::log::topic_partition(&self.dir);
                tracing::warn!(%topic, %partition, path = %path.display(), error = %e,
                    "writing the clean-shutdown record failed: the next open scans");
            }
        }
    }

    /// Deletes the oldest sealed segments beyond the retention limits (size, then age) and
    /// moves the log start. The active segment is never deleted. Returns how many went.
    ///
    /// # Errors
    /// I/O errors removing files (the log start has moved already: the files are only
    /// garbage, removed again at the next open).
    pub async fn enforce_retention(&self) -> Result<usize> {
        let now_ms = self.clock.now_ms();
        let doomed: Vec<(u64, PathBuf)> = {
            let _lease = self.lease().await?;
            let mut state = self.state.borrow_mut();
            let mut total: u64 = state.segments.values().map(|s| s.size).sum();
            let mut doomed = Vec::new();
            let sealed: Vec<(u64, u64, i64)> = state
                .segments
                .values()
                .filter(|s| s.sealed)
                .map(|s| (s.base_offset, s.size, s.max_timestamp))
                .collect();
            for (base, size, max_timestamp) in sealed {
                let tunables = self.tunables.get();
                let by_size = tunables
                    .retention_bytes
                    .is_some_and(|limit| total - size >= limit);
                let by_age = tunables
                    .retention_ms
                    .is_some_and(|ms| max_timestamp < now_ms.saturating_sub(ms));
                if !(by_size || by_age) {
                    break;
                }
                total -= size;
                if let Some(segment) = state.segments.remove(&base) {
                    doomed.push((base, segment.path));
                }
                self.files.forget(self.id, base);
                // A read-ahead of a deleted segment would keep its file open (and its space
                // taken) until the next read.
                self.forget_readahead(Some(base));
            }
            if let Some(&first) = state.segments.keys().next() {
                // Retention only moves the start forward (a DeleteRecords may have moved it
                // past the first segment's base already), never past the high watermark.
                debug_assert!(first <= state.log_end);
                state.log_start = state.log_start.max(first);
                self.cache.drop_below(self.id, state.log_start);
            }
            doomed
        };
        self.remove_segments(&doomed, "retention deleted segments")
            .await
    }

    /// Appends `records` (key, value, timestamp) as synced batches of at most half the
    /// batch limit each, and returns the offset the first one got: a snapshot of an internal
    /// log's live state, to pass to [`truncate_before`](Self::truncate_before) afterwards.
    ///
    /// # Errors
    /// As [`append`](Self::append); a record larger than the batch limit is refused.
    pub async fn append_snapshot(&self, records: &[(Vec<u8>, Vec<u8>, i64)]) -> Result<u64> {
        let start = self.log_end();
        let budget = self.config.max_batch_bytes / 2;
        let mut builder = tidelog_wire::batch::BatchBuilder::new();
        let mut bytes = 0usize;
        for (key, value, timestamp) in records {
            let size = key.len() + value.len() + 32;
            if bytes > 0 && bytes + size > budget {
                let mut full =
                    std::mem::replace(&mut builder, tidelog_wire::batch::BatchBuilder::new());
                self.append(full.finish(), Durability::Synced).await?;
                bytes = 0;
            }
            builder.push(Some(key), value, *timestamp, &[]);
            bytes += size;
        }
        if bytes > 0 {
            self.append(builder.finish(), Durability::Synced).await?;
        }
        Ok(start)
    }

    /// Deletes every sealed segment that lies wholly below `offset` and moves the log start
    /// to the first segment left: for internal logs whose records below `offset` are all
    /// superseded by later ones (a snapshot appended at `offset`). Returns how many went.
    ///
    /// # Errors
    /// As [`enforce_retention`](Self::enforce_retention).
    pub async fn truncate_before(&self, offset: u64) -> Result<usize> {
        let doomed: Vec<(u64, PathBuf)> = {
            let _lease = self.lease().await?;
            let mut state = self.state.borrow_mut();
            let doomed = self.take_segments_below(&mut state, offset);
            if let Some(&first) = state.segments.keys().next() {
                debug_assert!(first <= state.log_end);
                state.log_start = state.log_start.max(first);
                self.cache.drop_below(self.id, state.log_start);
            }
            doomed
        };
        self.remove_segments(&doomed, "superseded segments deleted (snapshot)")
            .await
    }

    /// Takes the sealed segments that lie wholly below `offset` out of the log (their files
    /// forgotten, a read-ahead of them dropped) and returns them for
    /// [`remove_segments`](Self::remove_segments); the caller holds the write gate.
    fn take_segments_below(&self, state: &mut State<S::File>, offset: u64) -> Vec<(u64, PathBuf)> {
        let bases: Vec<u64> = state.segments.keys().copied().collect();
        let mut doomed = Vec::new();
        for pair in bases.windows(2) {
            let (base, next) = (pair[0], pair[1]);
            let sealed = state.segments.get(&base).is_some_and(|s| s.sealed);
            if next > offset || !sealed {
                break;
            }
            if let Some(segment) = state.segments.remove(&base) {
                doomed.push((base, segment.path));
            }
            self.files.forget(self.id, base);
            self.forget_readahead(Some(base));
        }
        doomed
    }

    /// Kafka's DeleteRecords: moves the log start to `offset` (records below it are no longer
    /// readable) and deletes the sealed segments wholly below it. The new start is durable
    /// (file [`LOG_START_FILE`](super::recovery::LOG_START_FILE), written and synced) before
    /// anything is dropped or this returns. An offset at or below the start changes nothing.
    /// Returns the log start after it.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] past the log end (`limit`: the high watermark when the
    /// caller serves only below it); I/O errors persisting the start (nothing moved then).
    pub async fn delete_records_before(&self, offset: u64, limit: u64) -> Result<u64> {
        let _lease = self.lease().await?;
        let (start, end) = (self.log_start(), self.log_end().min(limit));
        if offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start,
                end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        let path = self.dir.join(recovery::LOG_START_FILE);
        self.persist(&path, &recovery::encode_log_start(offset))
            .await
            .map_err(|e| LogError::io("write the log start", &path, e))?;
        let doomed: Vec<(u64, PathBuf)> = {
            let mut state = self.state.borrow_mut();
            state.log_start = state.log_start.max(offset);
            let doomed = self.take_segments_below(&mut state, offset);
            self.cache.drop_below(self.id, state.log_start);
            doomed
        };
        let (topic, partition) = crate::log::topic_partition(&self.dir);
        tracing::info!(%topic, %partition, log_start = offset, "records deleted: log start moved");
        self.remove_segments(&doomed, "segments below a DeleteRecords deleted")
            .await?;
        Ok(offset)
    }

    /// Removes the files of segments already taken out of the log, then syncs the directory.
    async fn remove_segments(&self, doomed: &[(u64, PathBuf)], why: &'static str) -> Result<usize> {
        for (base, path) in doomed {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let file = segment_path(&self.dir, *base, suffix);
                match self.storage.remove_file(&file).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io("remove", path, e)),
                }
            }
        }
        if !doomed.is_empty() {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        }
        if let (Some((first, _)), Some((last, _))) = (doomed.first(), doomed.last()) {
            let (topic, partition) = crate::log::topic_partition(&self.dir);
            tracing::info!(
                %topic,
                %partition,
                dir = %self.dir.display(),
                segments = doomed.len(),
                first_base_offset = first,
                last_base_offset = last,
                log_start = self.log_start(),
                "{why}"
            );
        }
        bump(&self.counters.segments_deleted, doomed.len() as u64);
        Ok(doomed.len())
    }

    /// Refuses further appends, makes everything appended durable, and refuses further use.
    /// Closing a closed log does nothing: its files may belong to a log opened since, which
    /// a second clean-shutdown record, written from this one's state, would describe
    /// wrongly. A close that finds another under way waits for it to end, so that no caller
    /// goes on (to cut or reopen the files) while the first still writes them.
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub async fn close(&self) -> Result<()> {
        loop {
            let ended = {
                let mut state = self.state.borrow_mut();
                if state.closed {
                    return Ok(());
                }
                if !state.closing {
                    // From here appends are refused: one taken after the sync below would
                    // be answered and then dropped with the write buffer.
                    state.closing = true;
                    break;
                }
                self.close_ended.listen()
            };
            ended.await;
        }
        /// Ends the close on every path: a caller that drops the close half-way leaves
        /// the log open and writable (nothing was lost), and wakes the waiting closes,
        /// one of which then closes it.
        struct Closing<'a, S: Storage, C: Clock>(&'a PartitionLog<S, C>);
        impl<S: Storage, C: Clock> Drop for Closing<'_, S, C> {
            fn drop(&mut self) {
                self.0.state.borrow_mut().closing = false;
                self.0.close_ended.notify();
            }
        }
        let _closing = Closing(self);
        self.seal_pending().await;
        let result = if self.check_writable().is_ok() {
            self.sync().await
        } else {
            Ok(())
        };
        if result.is_ok() {
            self.checkpoint_recovery_point().await;
            self.checkpoint_producer_state(SnapshotWhen::Behind).await;
        }
        let _gate = self.gate.enter().await;
        // Under the gate: no append can follow the record.
        if result.is_ok() {
            self.write_clean_shutdown().await;
        }
        let mut state = self.state.borrow_mut();
        state.closed = true;
        drop(state);
        self.cache.forget_log(self.id);
        // Its buffer (up to a fetch's size) and its file handles go with the log's use.
        self.forget_readahead(None);
        self.files.forget_log(self.id);
        result
    }

    /// Closes the log and removes its directory with every file in it.
    ///
    /// # Errors
    /// I/O errors removing the directory.
    pub async fn delete(self) -> Result<()> {
        {
            let _gate = self.gate.enter().await;
            let mut state = self.state.borrow_mut();
            state.closed = true;
            self.cache.forget_log(self.id);
        }
        self.forget_readahead(None);
        self.files.forget_log(self.id);
        self.storage
            .remove_dir_all(&self.dir)
            .await
            .map_err(|e| LogError::io("remove directory", &self.dir, e))?;
        if let Some(parent) = self.dir.parent() {
            let _ = self.storage.sync_dir(parent).await;
        }
        Ok(())
    }
}
