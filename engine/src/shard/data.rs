//! The door into the logs: append, read, offsets and group offsets, each local or forwarded
//! to the owning shard as the caller's [`Route`] allows. Every append notifies the shard's
//! `appended` event here, whoever the caller is.

use std::rc::Rc;

use bytes::BytesMut;

use super::mesh::{Forwarded, Reply};
use super::{Chunk, Log, Shard, ShardError};
use crate::error::LogError;
use crate::groups::{self, Committed, OffsetCommit, OffsetStore};
use crate::log::memory::{MemoryWait, ReadPermit};
use crate::log::{AppendInfo, Durability, ReadChunk};
use tidelog_wire::kafka_records::SealedBatch;

/// Whether a request may travel to the owning shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Only this shard's partitions: another owner is [`ShardError::NotOwner`] (the Kafka
    /// listener's rule: clients route by leader).
    Local,
    /// Forward to the owner over the mesh when it is another shard (one hop).
    Forward,
}

/// What an append carries.
#[derive(Debug)]
pub enum Batches {
    /// One or more whole batches in the stored format (Tidelog header first), checked by
    /// the log (framing, length, CRC) before anything is appended.
    Stored(BytesMut),
    /// One validated Kafka batch behind its Tidelog header, CRCs chained and computed by
    /// the wire crate: appended without another CRC pass over its records.
    Kafka(SealedBatch),
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first batch's first record.
    pub base_offset: u64,
    /// The partition's first offset after the append.
    pub log_start: u64,
}

/// A partition read: whole batches, uncopied on the owner.
#[derive(Debug)]
pub struct Fetched {
    /// Offsets below this are readable.
    pub high_watermark: u64,
    /// First readable offset.
    pub log_start: u64,
    /// Whole batches in offset order; empty at the log end.
    pub chunks: Vec<Chunk>,
    /// The shard's read memory the chunks hold: keep it until they are sent.
    pub memory: ReadPermit,
}

impl Fetched {
    /// Bytes of the chunks.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// True when no batch was read.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// The answer to a timestamp lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found (the log end when no record is that recent).
    pub offset: i64,
    /// The timestamp of the record found; -1 for the latest/earliest specials.
    pub timestamp: i64,
}

/// A partition's offset bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// First readable offset.
    pub log_start: u64,
    /// Offsets below this are readable (the log end: one replica).
    pub high_watermark: u64,
}

/// An append that is in the log; [`durable`](Self::durable) completes it.
#[derive(Debug)]
pub struct AppendStarted(Started);

#[derive(Debug)]
enum Started {
    Done(Appended),
    Unsynced {
        log: Rc<Log>,
        base: u64,
        last: AppendInfo,
        /// A replicated partition's leadership and `min.insync.replicas`: the append also
        /// waits for the followers.
        leading: Option<(Rc<super::replica::Leading>, usize)>,
    },
}

impl AppendStarted {
    /// True when [`durable`](Self::durable) still has an fdatasync to wait for.
    pub fn is_waiting(&self) -> bool {
        matches!(self.0, Started::Unsynced { .. })
    }

    /// Where the append landed (known before it is durable).
    pub fn appended(&self) -> Appended {
        match &self.0 {
            Started::Done(appended) => *appended,
            Started::Unsynced { log, base, .. } => Appended {
                base_offset: *base,
                log_start: log.log_start(),
            },
        }
    }

    /// Waits until the append is as durable as asked.
    ///
    /// # Errors
    /// The log's failure (poisoned, closed); the append must then not be acknowledged.
    pub async fn durable(self) -> Result<Appended, ShardError> {
        match self.0 {
            Started::Done(appended) => Ok(appended),
            Started::Unsynced {
                log,
                base,
                last,
                leading,
            } => {
                log.wait_durable(&last).await?;
                if let Some((leading, min_insync)) = leading {
                    wait_replicated(&log, &leading, last.last_offset + 1, min_insync).await?;
                }
                Ok(Appended {
                    base_offset: base,
                    log_start: log.log_start(),
                })
            }
        }
    }
}

impl Shard {
    /// Appends batches to a partition. Returns once they are in the log with offsets
    /// assigned, so appends started one after another land in that order; an `acks=all`
    /// (`Synced`) append on this shard leaves its fdatasync to
    /// [`AppendStarted::durable`], so a connection can pipeline the next request meanwhile.
    /// Anything forwarded completes before this returns (forwarding does not promise order).
    ///
    /// # Errors
    /// Unknown partition, [`ShardError::NotOwner`] on a local-only route, the log's refusal.
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        batches: Batches,
        durability: Durability,
        route: Route,
    ) -> Result<AppendStarted, ShardError> {
        check_client_topic(topic)?;
        self.check_exists(topic, partition)?;
        let owner = self.owner(topic, partition);
        if owner != self.id && route == Route::Forward {
            let batches = match batches {
                Batches::Stored(batches) => batches,
                // Checked again by the owner: the mesh is a trust boundary of its own.
                Batches::Kafka(sealed) => sealed.into_bytes(),
            };
            let request = Forwarded::Produce {
                topic: topic.to_owned(),
                partition,
                durability,
                batches: batches.freeze(),
            };
            return match self.forward(owner, request).await? {
                Reply::Produced(result) => result.map(|a| AppendStarted(Started::Done(a))),
                _ => Err(ShardError::Internal("unexpected reply to a produce")),
            };
        }
        let log = self.local(topic, partition)?;
        if durability == Durability::Synced {
            self.check_min_isr(topic, partition)?;
        }
        let result = match batches {
            Batches::Stored(region) => append_all(&log, region).await,
            Batches::Kafka(sealed) => log
                .append_sealed_unsynced(sealed)
                .await
                .map(|info| (info.base_offset, info))
                .map_err(ShardError::from),
        };
        self.watchers.ring(topic, partition);
        let (base, last) = result?;
        if durability == Durability::Synced {
            let min_insync = self.config.min_insync_replicas.max(1);
            let leading = self.leading(topic, partition).map(|l| (l, min_insync));
            return Ok(AppendStarted(Started::Unsynced {
                log,
                base,
                last,
                leading,
            }));
        }
        Ok(AppendStarted(Started::Done(Appended {
            base_offset: base,
            log_start: log.log_start(),
        })))
    }

    /// Reads whole batches from `offset`, at most about `max_bytes` (at least one batch when
    /// `max_bytes > 0`): zero-copy chunks on the owner, one copy when forwarded. With
    /// `max_bytes == 0` only the bounds are returned. A disk read takes the shard's read
    /// memory first: waiting for it with [`MemoryWait::Wait`]; with [`MemoryWait::IfFree`]
    /// (the caller holds read memory for this response already) returning no batches when
    /// it is spent, so that a response never waits while holding memory. A forwarded read
    /// never waits on the owner (see `Forwarded::Fetch`): it answers no batches there when
    /// the owner's memory is spent, and the caller's long poll asks again.
    ///
    /// # Errors
    /// Unknown partition, [`ShardError::NotOwner`] on a local-only route,
    /// [`ShardError::OffsetOutOfRange`], storage errors.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        route: Route,
        wait: MemoryWait,
    ) -> Result<Fetched, ShardError> {
        check_client_topic(topic)?;
        self.check_exists(topic, partition)?;
        let owner = self.owner(topic, partition);
        if owner != self.id && route == Route::Forward {
            let request = Forwarded::Fetch {
                topic: topic.to_owned(),
                partition,
                offset,
                max_bytes,
            };
            return match self.forward(owner, request).await? {
                Reply::Fetched(Ok(data)) => Ok(Fetched {
                    high_watermark: data.high_watermark,
                    log_start: data.log_start,
                    chunks: if data.bytes.is_empty() {
                        Vec::new()
                    } else {
                        vec![ReadChunk::Cache(data.bytes)]
                    },
                    memory: ReadPermit::default(),
                }),
                Reply::Fetched(Err(e)) => Err(e),
                _ => Err(ShardError::Internal("unexpected reply to a fetch")),
            };
        }
        let log = self.local(topic, partition)?;
        // Consumers read below the high watermark (the log end for one replica).
        let end = self.readable_end(topic, partition, &log);
        if offset > end && offset <= log.log_end() {
            // Offsets above the high watermark exist but are not readable yet.
            return Ok(Fetched {
                high_watermark: end,
                log_start: log.log_start(),
                chunks: Vec::new(),
                memory: ReadPermit::default(),
            });
        }
        let bound = if max_bytes == 0 || offset == end {
            0
        } else {
            max_bytes
        };
        let mut fetched = self.read_log(&log, offset, bound, wait).await?;
        if end < log.log_end() {
            fetched.chunks = trim_chunks(std::mem::take(&mut fetched.chunks), end);
        }
        fetched.high_watermark = end;
        Ok(fetched)
    }

    /// Reads whole batches of a local log from `offset` (up to its end): the consumer and
    /// replica reads' common part. `max_bytes == 0` reads nothing.
    pub(crate) async fn read_log(
        &self,
        log: &Rc<Log>,
        offset: u64,
        max_bytes: usize,
        wait: MemoryWait,
    ) -> Result<Fetched, ShardError> {
        if max_bytes == 0 || offset == log.log_end() {
            return Ok(Fetched {
                high_watermark: log.log_end(),
                log_start: log.log_start(),
                chunks: Vec::new(),
                memory: ReadPermit::default(),
            });
        }
        let read = match log.read_within(offset, max_bytes, wait).await {
            Ok(read) => read,
            // Nothing for this partition in this response; the reader asks again.
            Err(LogError::MemoryBusy) => {
                return Ok(Fetched {
                    high_watermark: log.log_end(),
                    log_start: log.log_start(),
                    chunks: Vec::new(),
                    memory: ReadPermit::default(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Fetched {
            high_watermark: read.high_watermark,
            log_start: read.log_start,
            chunks: read.chunks,
            memory: read.memory,
        })
    }

    /// A partition's bounds, on this shard only.
    ///
    /// # Errors
    /// Unknown partition, [`ShardError::NotOwner`].
    pub fn bounds(&self, topic: &str, partition: u32) -> Result<Bounds, ShardError> {
        let log = self.local(topic, partition)?;
        Ok(Bounds {
            log_start: log.log_start(),
            high_watermark: self.readable_end(topic, partition, &log),
        })
    }

    /// OffsetForLeaderEpoch on this shard: the largest known epoch at or below `requested`
    /// and the offset where the next one starts (the log end for the current one). On a
    /// single node every partition has one epoch, 0, ending at the log end; in a cluster the
    /// answer comes from the replica's leader-epoch cache.
    ///
    /// # Errors
    /// As [`bounds`](Self::bounds).
    pub fn epoch_end_offset(
        &self,
        topic: &str,
        partition: u32,
        requested: i64,
    ) -> Result<(i64, i64), ShardError> {
        let log = self.local(topic, partition)?;
        if self.view.borrow().is_none() {
            return Ok((0, log.log_end() as i64));
        }
        Ok(log.epoch_end_offset(requested))
    }

    /// Resolves a ListOffsets timestamp (-1 latest, -2 earliest, else the first record at or
    /// after it).
    ///
    /// # Errors
    /// Unknown partition, [`ShardError::NotOwner`] on a local-only route, storage errors.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
        route: Route,
    ) -> Result<ListedOffset, ShardError> {
        self.check_exists(topic, partition)?;
        let owner = self.owner(topic, partition);
        if owner != self.id && route == Route::Forward {
            let request = Forwarded::ListOffset {
                topic: topic.to_owned(),
                partition,
                timestamp,
            };
            return match self.forward(owner, request).await? {
                Reply::Listed(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a list-offsets")),
            };
        }
        let log = self.local(topic, partition)?;
        let end = self.readable_end(topic, partition, &log);
        let latest = ListedOffset {
            offset: end as i64,
            timestamp: -1,
        };
        let none = ListedOffset {
            offset: -1,
            timestamp: -1,
        };
        let found = match timestamp {
            -1 => return Ok(latest),
            -2 => {
                return Ok(ListedOffset {
                    offset: log.log_start() as i64,
                    timestamp: -1,
                })
            }
            // MAX_TIMESTAMP (ListOffsets v7): the record with the largest timestamp.
            -3 => log.offset_of_max_timestamp(end).await?,
            // EARLIEST_LOCAL (v8, KIP-405): every record is local, so the log start.
            -4 => {
                return Ok(ListedOffset {
                    offset: log.log_start() as i64,
                    timestamp: -1,
                })
            }
            // LATEST_TIERED (v9, KIP-1005): nothing is tiered, so none, as Kafka answers
            // without remote storage; any other negative timestamp matches no record.
            ts if ts < 0 => return Ok(none),
            ts => log.offset_for_timestamp(ts, end).await?,
        };
        // No readable record at or after the time: offset -1, as Kafka answers (clients
        // read it as "none", e.g. kafka-python's offsets_for_times gives None).
        Ok(found.map_or(none, |(offset, timestamp)| ListedOffset {
            offset: offset as i64,
            timestamp,
        }))
    }

    /// Kafka's DeleteRecords on a partition this shard leads: records below `offset` (-1:
    /// the high watermark) are deleted; answers the new log start (the low watermark).
    /// Durable when this returns. In a cluster the followers move their starts to it at
    /// their next fetch (`shard::replica`).
    ///
    /// # Errors
    /// Unknown partition, [`ShardError::NotOwner`], [`ShardError::OffsetOutOfRange`] past
    /// the high watermark or below -1, storage errors.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<u64, ShardError> {
        let log = self.local(topic, partition)?;
        let end = self.readable_end(topic, partition, &log);
        let target = match offset {
            -1 => end,
            o => u64::try_from(o).map_err(|_| {
                ShardError::OffsetOutOfRange(format!("offset {o} for {topic}-{partition}"))
            })?,
        };
        log.delete_records_before(target, end)
            .await
            .map_err(|e| ShardError::from(&e))
    }

    /// The idempotent producers of a partition this shard leads: (id, epoch, last
    /// sequence).
    ///
    /// # Errors
    /// Unknown partition, [`ShardError::NotOwner`].
    pub fn describe_producers(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<(i64, i16, i32)>, ShardError> {
        Ok(self.local(topic, partition)?.producers())
    }

    /// Commits a group's positions on the group's coordinator shard (forwarding if needed);
    /// durable when this returns.
    ///
    /// # Errors
    /// [`ShardError::InvalidRequest`] for an empty or oversized group name, storage errors.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetCommit>,
    ) -> Result<(), ShardError> {
        check_group(group)?;
        if !self.coordinates_on_this_node(group) {
            return Err(ShardError::NotOwner);
        }
        let owner = self.group_owner(group);
        if owner != self.id {
            let request = Forwarded::CommitOffsets {
                group: group.to_owned(),
                offsets,
            };
            return match self.forward(owner, request).await? {
                Reply::Committed(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to a commit")),
            };
        }
        let store = self.group_store(group)?;
        // Checked again inside the slot's write gate: a topic deleted since the caller's check
        // is refused here rather than committed after its positions were forgotten.
        let exists = |topic: &str| self.topics.borrow().contains_key(topic);
        if !store.commit_where(group, &offsets, exists).await? {
            return Err(ShardError::UnknownTopicOrPartition);
        }
        // In a cluster the commit is answered once every in-sync replica of the slot has it,
        // as an acks=all write: a coordinator elected after this one's death replays it.
        let slot = groups::slot_of(group);
        if let Some(leading) = self.leading(groups::OFFSETS_TOPIC, slot) {
            let log = self.local(groups::OFFSETS_TOPIC, slot)?;
            let min_insync = self.config.min_insync_replicas.max(1);
            wait_replicated(&log, &leading, store.log_end(), min_insync).await?;
        }
        Ok(())
    }

    /// A group's committed positions, one per asked (topic, partition), from its
    /// coordinator shard.
    ///
    /// # Errors
    /// As [`commit_offsets`](Self::commit_offsets).
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Option<Committed>>, ShardError> {
        check_group(group)?;
        if !self.coordinates_on_this_node(group) {
            return Err(ShardError::NotOwner);
        }
        let owner = self.group_owner(group);
        if owner != self.id {
            let request = Forwarded::FetchOffsets {
                group: group.to_owned(),
                partitions,
            };
            return match self.forward(owner, request).await? {
                Reply::Offsets(result) => result,
                _ => Err(ShardError::Internal("unexpected reply to an offset fetch")),
            };
        }
        let store = self.group_store(group)?;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| store.fetch(group, topic, *partition))
            .collect())
    }

    /// Deletes, durably, committed positions of a group this shard coordinates: all of them
    /// (`partitions` `None`: DeleteGroups) or the given ones (OffsetDelete). In a cluster,
    /// answered once the slot's in-sync replicas hold the tombstones, as a commit. Returns how
    /// many positions went.
    ///
    /// # Errors
    /// [`ShardError::NotOwner`] when another shard coordinates the group, storage errors.
    pub async fn delete_group_positions(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<usize, ShardError> {
        let store = self.group_store(group)?;
        let n = store.delete_positions(group, partitions).await?;
        let slot = groups::slot_of(group);
        if let Some(leading) = self.leading(groups::OFFSETS_TOPIC, slot) {
            let log = self.local(groups::OFFSETS_TOPIC, slot)?;
            let min_insync = self.config.min_insync_replicas.max(1);
            wait_replicated(&log, &leading, store.log_end(), min_insync).await?;
        }
        Ok(n)
    }

    /// Groups with committed positions in the slots this shard coordinates (at most
    /// `limits::GROUPS_LISTED_MAX`): ListGroups reports them, as Kafka does, even with no
    /// members.
    pub fn groups_with_positions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, store) in self.offset_stores() {
            let room = crate::limits::GROUPS_LISTED_MAX.saturating_sub(out.len());
            out.extend(store.groups(room));
        }
        out
    }

    /// Whether a group this shard coordinates has committed positions.
    ///
    /// # Errors
    /// [`ShardError::NotOwner`] when another shard coordinates the group.
    pub fn group_has_positions(&self, group: &str) -> Result<bool, ShardError> {
        Ok(self.group_store(group)?.has_positions(group))
    }

    /// Every partition a group this shard coordinates has committed.
    ///
    /// # Errors
    /// [`ShardError::NotOwner`] when another shard coordinates the group.
    pub fn group_committed(&self, group: &str) -> Result<Vec<groups::GroupPosition>, ShardError> {
        let store = self.group_store(group)?;
        Ok(store.committed_by(group))
    }
}

impl Shard {
    /// The offset slot of a group this shard coordinates.
    fn group_store(
        &self,
        group: &str,
    ) -> Result<Rc<OffsetStore<crate::io::dma::DmaStorage, crate::io::SystemClock>>, ShardError>
    {
        let slot = groups::slot_of(group);
        if let Some(reason) = self.offline_slots.get(&slot) {
            return Err(ShardError::Storage(format!(
                "committed offsets of this group are offline: {reason}"
            )));
        }
        // In a cluster a slot this node leads has no store until its log is replayed: the
        // client is told to retry (Kafka's COORDINATOR_LOAD_IN_PROGRESS); a slot led
        // elsewhere is not this shard's.
        let store = self
            .offsets
            .borrow()
            .get(&slot)
            .map(|(_, store)| Rc::clone(store));
        match store {
            Some(store) => Ok(store),
            None if self.view().is_some() && self.coordinates_on_this_node(group) => {
                Err(ShardError::CoordinatorLoading)
            }
            None => Err(ShardError::NotOwner),
        }
    }
}

/// Clients neither write nor read the internal committed-offsets topic (its records are
/// the coordinators' own, in the native format); its replicas fetch it by `replica_read`.
fn check_client_topic(topic: &str) -> Result<(), ShardError> {
    if topic == groups::OFFSETS_TOPIC {
        return Err(ShardError::InvalidTopic(format!(
            "{topic} is internal: committed offsets are read and written through the group \
             APIs"
        )));
    }
    Ok(())
}

pub(super) fn check_group(group: &str) -> Result<(), ShardError> {
    if group.is_empty() || group.len() > groups::GROUP_BYTES_MAX {
        return Err(ShardError::InvalidRequest("group name empty or too long"));
    }
    Ok(())
}

/// Appends every whole batch of `region` without waiting for durability; returns the first
/// batch's base offset and the append whose durability covers all of them.
async fn append_all(log: &Log, mut region: BytesMut) -> Result<(u64, AppendInfo), ShardError> {
    let mut first = None;
    let mut last = None;
    while !region.is_empty() {
        let header = tidelog_wire::batch::peek_header(&region)
            .map_err(|e| ShardError::CorruptBatch(e.to_string()))?;
        let len = header.batch_len() as usize;
        if len > region.len() {
            return Err(ShardError::CorruptBatch(format!(
                "batch of {len} bytes overruns its region of {} bytes",
                region.len()
            )));
        }
        let batch = region.split_to(len);
        let info = log.append_unsynced(batch).await?;
        first.get_or_insert(info.base_offset);
        last = Some(furthest(last, info));
    }
    match (first, last) {
        (Some(first), Some(last)) => Ok((first, last)),
        _ => Err(ShardError::InvalidRequest("a produce with no batches")),
    }
}

/// Of the batches appended so far (`so_far`) and `next`, the one whose durability covers all:
/// the highest last offset. A duplicate idempotent batch reports its original's offsets,
/// which may lie below the batches appended before it in the same request, so the last
/// batch appended is not always the one to wait for.
fn furthest(so_far: Option<AppendInfo>, next: AppendInfo) -> AppendInfo {
    match so_far {
        Some(prev) if prev.last_offset > next.last_offset => prev,
        _ => next,
    }
}

/// The batches of `chunks` that end at or below `end` (a batch boundary): what a consumer may
/// read of a replicated partition below its high watermark. Slices share the chunks' memory.
fn trim_chunks(chunks: Vec<Chunk>, end: u64) -> Vec<Chunk> {
    use crate::io::Sliceable;
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let head = chunk.head();
        let mut pos = 0usize;
        let mut keep = 0usize;
        while pos + tidelog_wire::batch::HEADER_LEN <= head.len()
            || (matches!(chunk, ReadChunk::Split { .. }) && pos == 0)
        {
            let Ok(meta) = crate::log::segment::BatchMeta::parse(&head[pos..]) else {
                break;
            };
            let base = u64::try_from(meta.base_offset).unwrap_or(u64::MAX);
            if base + meta.span() > end {
                break;
            }
            pos += meta.len;
            keep = pos;
            if matches!(chunk, ReadChunk::Split { .. }) {
                break;
            }
        }
        if keep == 0 {
            break;
        }
        let whole = keep >= chunk.len();
        match chunk {
            c if whole => out.push(c),
            ReadChunk::Cache(bytes) => out.push(ReadChunk::Cache(bytes.slice(..keep))),
            ReadChunk::Disk(buf) => out.push(ReadChunk::Disk(buf.slice_of(0..keep))),
            ReadChunk::Split { .. } => {}
        }
        if !whole {
            break;
        }
    }
    out
}

/// Waits until a replicated partition's high watermark passes `end` (every in-sync replica
/// has fdatasynced the append), for at most [`super::replica::REPLICATION_ACK_TIMEOUT`].
async fn wait_replicated(
    log: &Log,
    leading: &super::replica::Leading,
    end: u64,
    min_insync: usize,
) -> Result<(), ShardError> {
    let deadline = std::time::Instant::now() + super::replica::REPLICATION_ACK_TIMEOUT;
    loop {
        let advanced = leading.advanced.listen();
        leading.recompute(log.synced_offset());
        if leading.deposed() {
            return Err(ShardError::NotOwner);
        }
        if leading.high_watermark() >= end {
            // As Kafka checks at completion: the in-sync set may have shrunk below
            // min.insync.replicas since the append was accepted, and then the write is on
            // fewer copies than the producer asked for.
            if leading.isr_len() < min_insync {
                return Err(ShardError::NotEnoughReplicasAfterAppend(format!(
                    "offset {} is on {} in-sync replicas, min.insync.replicas is {min_insync}",
                    end - 1,
                    leading.isr_len()
                )));
            }
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ShardError::ReplicationTimedOut(format!(
                "the in-sync replicas did not confirm offset {} within {} s",
                end - 1,
                super::replica::REPLICATION_ACK_TIMEOUT.as_secs()
            )));
        }
        let _ = crate::cluster::transport_within(left, advanced).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(base_offset: u64, last_offset: u64, duplicate: bool) -> AppendInfo {
        AppendInfo {
            base_offset,
            last_offset,
            flush_due: false,
            duplicate,
        }
    }

    #[test]
    fn a_trailing_duplicate_does_not_lower_the_durability_wait() {
        let new = info(100, 109, false);
        let dup_of_older = info(10, 19, true);
        assert_eq!(
            furthest(Some(new), dup_of_older),
            new,
            "wait for offset 109, not 19"
        );
        let later = info(110, 119, false);
        assert_eq!(furthest(Some(new), later), later);
        assert_eq!(furthest(None, dup_of_older), dup_of_older);
    }

    /// Consumers of a replicated partition never get a batch that ends above the high
    /// watermark: whole batches below it are kept (sharing memory), the rest dropped.
    #[test]
    fn chunks_are_cut_at_the_high_watermark() {
        let mut bytes = BytesMut::new();
        for base in [0i64, 2, 4] {
            let mut builder = tidelog_wire::batch::BatchBuilder::new();
            builder.push(None, b"a", 0, &[]);
            builder.push(None, b"b", 0, &[]);
            let mut batch = builder.finish();
            tidelog_wire::batch::stamp_base_offset(&mut batch, base).unwrap();
            bytes.extend_from_slice(&batch);
        }
        let one = bytes.len() / 3;
        let chunk = || vec![ReadChunk::Cache(bytes.clone().freeze())];
        let lens = |c: Vec<Chunk>| c.iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(lens(trim_chunks(chunk(), 6)), vec![3 * one]);
        assert_eq!(lens(trim_chunks(chunk(), 4)), vec![2 * one]);
        assert_eq!(
            lens(trim_chunks(chunk(), 3)),
            vec![one],
            "a straddling batch goes"
        );
        assert!(trim_chunks(chunk(), 1).is_empty());
        let split = |end| {
            trim_chunks(
                vec![
                    ReadChunk::Split {
                        head: bytes.clone().freeze().slice(..64),
                        tail: bytes.clone().freeze().slice(64..one),
                    },
                    ReadChunk::Cache(bytes.clone().freeze().slice(one..)),
                ],
                end,
            )
        };
        assert_eq!(lens(split(2)), vec![one]);
        assert_eq!(lens(split(4)), vec![one, one]);
        assert!(split(1).is_empty());
    }
}
