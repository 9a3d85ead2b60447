//! The data path over the Kafka protocol: Produce and Fetch, on the owning shard only.
//!
//! Produce validates each partition's single RecordBatch v2 (KAFKA.md §2) and stores it
//! verbatim behind a Tidelog header; the log stamps the Kafka base offset in place. Fetch
//! writes the response's header bytes, then the stored Kafka batches themselves: batch-cache
//! `Bytes`, cached write buffers and DMA read buffers sliced past each 64-byte Tidelog
//! header, never copied.
//! Batches written with the native protocol are converted to Kafka v2 on the way out (the
//! one copy on this path, and only for them).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tidelog_wire::batch::{peek_header, verify, PayloadFormat, VerifyLimits, HEADER_LEN};
use tidelog_wire::kafka::codec::{put_array_len, put_string, put_uvarint, EncodeError};
use tidelog_wire::kafka::generated::{
    fetch_request::FetchRequest,
    produce_request::ProduceRequest,
    produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse},
};
use tidelog_wire::kafka_records::{native_to_kafka, seal_produce_batch_with};

use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use crate::log::memory::{MemoryWait, ReadPermit};
use crate::log::{Durability, ReadChunk};
use crate::server::pipeline::Pending;
use crate::server::write_by;
use crate::server::FetchBounds;
use crate::shard::{partition_index, AppendStarted, Batches, Chunk, Route, Shard};

/// Record-data pieces up to this size are copied into the response buffer rather than
/// written on their own (a split batch's 21-byte Kafka head; a syscall costs more).
const INLINE_PIECE_BYTES: usize = 64;

/// How far into a fetch's wait appends are re-checked even without a wake-up.
const FETCH_RECHECK: Duration = Duration::from_millis(100);

/// An `acks=all` append that is in the log and waits for its fdatasync.
struct Unsynced {
    topic_index: usize,
    partition_index: usize,
    started: AppendStarted,
}

/// Waits for every unsynced append of one request at once (each in its own task, so the
/// partitions' fdatasyncs overlap) and completes the response.
async fn complete_synced(
    mut response: ProduceResponse,
    unsynced: Vec<Unsynced>,
    done: ProduceDone,
) -> ProduceResponse {
    let waits: Vec<_> = unsynced
        .into_iter()
        .map(|u| {
            let at = (u.topic_index, u.partition_index);
            let task = glommio::spawn_local(u.started.durable());
            (at, task.detach())
        })
        .collect();
    for ((topic_index, partition_index), wait) in waits {
        // A wait that never finished (its task died) is not durable: never acknowledge it.
        let failure = match wait.await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => (error_code(&e), e.to_string()),
            None => (
                code::KAFKA_STORAGE_ERROR,
                "the durability wait did not complete".to_owned(),
            ),
        };
        if let Some(result) = response
            .responses
            .get_mut(topic_index)
            .and_then(|t| t.partition_responses.get_mut(partition_index))
        {
            result.error_code = failure.0;
            result.base_offset = -1;
            result.log_start_offset = -1;
            result.error_message = Some(failure.1);
        }
    }
    done.record(&response);
    response
}

/// Most bytes a produced batch may inflate to when the topic recompresses it.
const RECOMPRESS_INFLATED_MAX: usize = 64 << 20;

/// `records` recompressed with `target` (when the topic names a codec), and the produce
/// version to validate them at (zstd needs v7, which the recompression, not the producer,
/// chose). An error is (Kafka error code, message) for the partition.
fn recompress_for(
    records: &Bytes,
    target: Option<tidelog_wire::batch::Compression>,
    version: i16,
) -> Result<(Bytes, i16), (i16, String)> {
    let Some(target) = target else {
        return Ok((records.clone(), version));
    };
    let recompressed =
        tidelog_wire::kafka_records::recompress(records, target, RECOMPRESS_INFLATED_MAX).map_err(
            |e| {
                (
                    code::CORRUPT_MESSAGE,
                    format!("recompressing the batch: {e}"),
                )
            },
        )?;
    let version = if target == tidelog_wire::batch::Compression::Zstd {
        version.max(tidelog_wire::kafka_records::ZSTD_MIN_PRODUCE_VERSION)
    } else {
        version
    };
    Ok((recompressed, version))
}

/// Records a produce's latency and error codes once its response is complete.
struct ProduceDone {
    shard: Rc<crate::shard::Shard>,
    acks: i8,
    started_us: u64,
}

impl ProduceDone {
    fn record(&self, response: &ProduceResponse) {
        use crate::io::Clock as _;
        let metrics = &self.shard.metrics;
        let took = crate::io::SystemClock
            .now_us()
            .saturating_sub(self.started_us);
        metrics.latency(0, self.acks, took);
        for topic in &response.responses {
            for p in &topic.partition_responses {
                metrics.error(0, p.error_code);
            }
        }
    }
}

/// A piece of record data sent after the response bytes before it.
enum Piece {
    Cache(Bytes),
    Disk(crate::io::dma::DmaBytes),
    Owned(Bytes),
}

impl std::ops::Deref for Piece {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Piece::Cache(b) | Piece::Owned(b) => b,
            Piece::Disk(r) => r,
        }
    }
}

struct FetchedPartition {
    partition: i32,
    error: i16,
    high_watermark: i64,
    log_start: i64,
    pieces: Vec<Piece>,
    bytes: usize,
    /// The shard's read memory `pieces` hold, until they are sent.
    memory: ReadPermit,
}

impl KafkaConnection {
    pub(super) async fn produce(
        &mut self,
        meta: &RequestMeta,
        request: ProduceRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = Rc::clone(self.shard());
        let limits = self.server().config.kafka_limits;
        let acks = request.acks;
        let done = ProduceDone {
            shard: Rc::clone(&shard),
            acks: i8::try_from(acks).unwrap_or(-2),
            started_us: {
                use crate::io::Clock as _;
                crate::io::SystemClock.now_us()
            },
        };
        let durability = if acks == -1 {
            Durability::Synced
        } else {
            Durability::Buffered
        };
        // A Kafka batch is stored behind a Tidelog header, within the log's batch limit.
        let max_batch = limits.max_batch_bytes.min(
            shard
                .log_defaults()
                .max_batch_bytes
                .saturating_sub(tidelog_wire::batch::HEADER_LEN),
        );
        let mut response = ProduceResponse::default();
        // Appends are started here, one after another, so every partition gets this
        // request's batches before the next request's (the write gate is not FIFO). They
        // return once the batch is in the log; the `acks=all` fdatasyncs are awaited by a
        // task whose response is queued behind earlier ones (module docs of `kafka`).
        let mut unsynced = Vec::new();
        for topic in request.topic_data {
            let topic_index = response.responses.len();
            let mut results = Vec::with_capacity(topic.partition_data.len());
            // The topic's `max.message.bytes`, within the broker's own cap, and its rules for
            // timestamps (LogAppendTime stamps every batch with this request's time).
            let config = shard.topics().get(&topic.name).copied();
            let max_batch = config
                .and_then(|config| config.max_message_bytes())
                .map_or(max_batch, |topic_max| topic_max.min(max_batch));
            let target = config.and_then(|config| config.compression_target());
            let policy = config
                .map(|config| {
                    use crate::io::Clock as _;
                    config.timestamp_policy(|| crate::io::SystemClock.now_ms())
                })
                .unwrap_or_default();
            for part in topic.partition_data {
                let mut result = PartitionProduceResponse {
                    index: part.index,
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: -1,
                    ..Default::default()
                };
                if !(-1..=1).contains(&acks) {
                    result.error_code = code::INVALID_REQUIRED_ACKS;
                    results.push(result);
                    continue;
                }
                let index = match partition_index(part.index)
                    .and_then(|index| shard.bounds(&topic.name, index).map(|_| index))
                {
                    Ok(index) => index,
                    Err(e) => {
                        result.error_code = error_code(&e);
                        results.push(result);
                        continue;
                    }
                };
                let records = part.records.unwrap_or_default();
                // The batch cache keeps the records as a slice of the request when the
                // shard's ledger of such read buffers allows it (the one copy is then the
                // write buffer's); else they are copied once more, into their own buffer.
                let home = self.frame_home();
                let records = self
                    .server()
                    .pinned
                    .borrow_mut()
                    .share_or_copy(home, records);
                // `compression.type` naming a codec: the batch is stored recompressed.
                let (records, version) = match recompress_for(&records, target, meta.version) {
                    Ok(done) => done,
                    Err(refused) => {
                        result.error_code = refused.0;
                        result.error_message = Some(refused.1);
                        results.push(result);
                        continue;
                    }
                };
                let appended = match seal_produce_batch_with(&records, version, max_batch, &policy)
                {
                    Ok((_, sealed)) => {
                        let batch = Batches::Kafka(sealed);
                        shard
                            .append(&topic.name, index, batch, durability, Route::Local)
                            .await
                            .map_err(|e| (error_code(&e), e.to_string()))
                    }
                    Err(e) => Err((e.kafka_code(), e.to_string())),
                };
                match appended {
                    Ok(started) => {
                        let at = started.appended();
                        result.base_offset = at.base_offset as i64;
                        result.log_start_offset = at.log_start as i64;
                        if let Some(stamp) = policy.log_append_time {
                            result.log_append_time_ms = stamp;
                        }
                        if started.is_waiting() {
                            unsynced.push(Unsynced {
                                topic_index,
                                partition_index: results.len(),
                                started,
                            });
                        }
                    }
                    Err((error, message)) => {
                        result.error_code = error;
                        result.error_message = Some(message);
                    }
                }
                results.push(result);
            }
            response.responses.push(TopicProduceResponse {
                name: topic.name,
                partition_responses: results,
            });
        }
        if acks == 0 {
            // acks=0 gets no response at all (its appends are not waited for either).
            done.record(&response);
            return Ok(());
        }
        let response = if unsynced.is_empty() {
            done.record(&response);
            Pending::Ready(response)
        } else {
            Pending::Waiting(
                glommio::spawn_local(complete_synced(response, unsynced, done)).detach(),
            )
        };
        self.queue(meta.clone(), response).await
    }

    pub(super) async fn fetch(
        &mut self,
        meta: &RequestMeta,
        request: FetchRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = Rc::clone(self.shard());
        let limits = self.server().config.kafka_limits;
        let FetchBounds {
            deadline,
            max_bytes,
            min_bytes,
        } = FetchBounds::new(
            request.max_wait_ms,
            request.max_bytes,
            request.min_bytes,
            limits.max_fetch_wait_ms,
            limits.max_fetch_bytes,
        );
        let bell = shard.doorbell(request.topics.iter().flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.as_str(), p.partition))
        }));
        loop {
            let listener = bell.listen();
            let mut topics = Vec::with_capacity(request.topics.len());
            let mut total = 0usize;
            let mut errors = false;
            let mut holding = false;
            for topic in &request.topics {
                let mut parts = Vec::with_capacity(topic.partitions.len());
                for want in &topic.partitions {
                    let budget = (want.partition_max_bytes.max(0) as usize)
                        .min(max_bytes.saturating_sub(total));
                    // At least one batch overall, even past the limits (KIP-74).
                    let budget = if total == 0 { budget.max(1) } else { budget };
                    // Holding read memory for earlier partitions, never wait for more
                    // (see `log::memory`).
                    let wait = if holding {
                        MemoryWait::IfFree
                    } else {
                        MemoryWait::Wait
                    };
                    let part = read_partition(
                        &shard,
                        &topic.topic,
                        want.partition,
                        want.fetch_offset,
                        budget,
                        wait,
                    )
                    .await;
                    holding |= part.memory.bytes() > 0;
                    total += part.bytes;
                    errors |= part.error != code::NONE;
                    parts.push(part);
                }
                topics.push((topic.topic.as_str(), parts));
            }
            let now = Instant::now();
            if total >= min_bytes.max(1) || errors || now >= deadline || shard.is_stopped() {
                return self.send_fetch(meta, topics).await;
            }
            drop(topics);
            let nap = (deadline - now).min(FETCH_RECHECK);
            futures_lite::future::or(listener, async {
                glommio::timer::sleep(nap).await;
            })
            .await;
        }
    }

    async fn send_fetch(
        &mut self,
        meta: &RequestMeta,
        topics: Vec<(&str, Vec<FetchedPartition>)>,
    ) -> Result<(), KafkaConnError> {
        let version = meta.version;
        let flexible = version >= 12;
        let shard = Rc::clone(self.shard());
        self.begin(meta);
        let out = &mut self.out;
        out.put_i32(0); // throttle_time_ms
        if version >= 7 {
            out.put_i16(code::NONE);
            out.put_i32(0); // session_id: sessionless
        }
        put_array_len(out, Some(topics.len()), flexible)?;
        // (position in `out` after which it goes, piece); pieces no longer than
        // INLINE_PIECE_BYTES (a split batch's Kafka head) are copied into `out` instead, so
        // they share a write with the bytes around them.
        let mut sends: Vec<(usize, Piece)> = Vec::new();
        let mut extra = 0usize;
        // The read memory of the pieces, held until they are written.
        let mut held: Vec<ReadPermit> = Vec::new();
        for (name, parts) in topics {
            put_string(out, name, flexible)?;
            put_array_len(out, Some(parts.len()), flexible)?;
            for part in parts {
                shard.metrics.error(1, part.error);
                out.put_i32(part.partition);
                out.put_i16(part.error);
                out.put_i64(part.high_watermark);
                // No transactions: the last stable offset is the high watermark.
                out.put_i64(part.high_watermark);
                if version >= 5 {
                    out.put_i64(part.log_start);
                }
                put_array_len(out, Some(0), flexible)?; // aborted_transactions
                if version >= 11 {
                    out.put_i32(-1); // preferred_read_replica
                }
                let len = part.bytes;
                if flexible {
                    let n = u32::try_from(len + 1).map_err(|_| EncodeError::TooLong(len))?;
                    put_uvarint(out, n);
                } else {
                    out.put_i32(i32::try_from(len).map_err(|_| EncodeError::TooLong(len))?);
                }
                held.push(part.memory);
                for piece in part.pieces {
                    if piece.len() <= INLINE_PIECE_BYTES {
                        out.put_slice(&piece);
                    } else {
                        extra += piece.len();
                        sends.push((out.len(), piece));
                    }
                }
                if flexible {
                    out.put_u8(0); // partition tagged fields
                }
            }
            if flexible {
                out.put_u8(0); // topic tagged fields
            }
        }
        if flexible {
            out.put_u8(0); // response tagged fields
        }
        let size = self.out.len() - 4 + extra;
        let size = i32::try_from(size).map_err(|_| EncodeError::TooLong(size))?;
        self.out[..4].copy_from_slice(&size.to_be_bytes());
        // One deadline for the whole response, however it trickles out.
        let until = self.response_until(self.out.len() + extra);
        let mut sent = 0usize;
        for (at, piece) in sends {
            if at > sent {
                write_by(&mut self.stream, &self.out[sent..at], until).await?;
            }
            sent = at;
            write_by(&mut self.stream, &piece, until).await?;
        }
        write_by(&mut self.stream, &self.out[sent..], until).await?;
        drop(held);
        Ok(())
    }
}

/// Reads one partition for a fetch and cuts its stored batches into Kafka record data.
async fn read_partition(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    budget: usize,
    wait: MemoryWait,
) -> FetchedPartition {
    let mut part = FetchedPartition {
        partition,
        error: code::NONE,
        high_watermark: -1,
        log_start: -1,
        pieces: Vec::new(),
        bytes: 0,
        memory: ReadPermit::default(),
    };
    let index = match partition_index(partition) {
        Ok(index) => index,
        Err(e) => {
            part.error = error_code(&e);
            return part;
        }
    };
    let read = match u64::try_from(offset) {
        Ok(offset) => {
            shard
                .read(topic, index, offset, budget, Route::Local, wait)
                .await
        }
        Err(_) => Err(crate::shard::ShardError::OffsetOutOfRange(format!(
            "offset {offset} is negative"
        ))),
    };
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            part.error = error_code(&e);
            // The bounds go with an error too (clients reset from them).
            if let Ok(bounds) = shard.bounds(topic, index) {
                part.high_watermark = bounds.high_watermark as i64;
                part.log_start = bounds.log_start as i64;
            }
            return part;
        }
    };
    part.high_watermark = read.high_watermark as i64;
    part.log_start = read.log_start as i64;
    part.memory = read.memory;
    for chunk in read.chunks {
        if let Err(e) = cut_chunk(chunk, &mut part) {
            tracing::warn!(topic, partition, error = %e, "unservable stored batch");
            if part.pieces.is_empty() {
                part.error = code::CORRUPT_MESSAGE;
            }
            break;
        }
    }
    part
}

/// Splits a chunk of whole stored batches into Kafka record data: Kafka batches as slices
/// past their Tidelog header (no copy), native batches converted.
fn cut_chunk(chunk: Chunk, part: &mut FetchedPartition) -> Result<(), tidelog_wire::WireError> {
    // A Kafka produce's batch held in two pieces: its Kafka bytes are the head past the
    // Tidelog header, then the tail, both shared.
    if let ReadChunk::Split { head, tail } = &chunk {
        let header = peek_header(head)?;
        if header.payload_format() != PayloadFormat::Kafka || head.len() < HEADER_LEN {
            return Err(tidelog_wire::WireError::WrongPayloadFormat {
                expected: PayloadFormat::Kafka,
                found: header.payload_format(),
            });
        }
        for piece in [head.slice(HEADER_LEN..), tail.clone()] {
            part.bytes += piece.len();
            part.pieces.push(Piece::Cache(piece));
        }
        return Ok(());
    }
    let Some(whole) = chunk.contiguous() else {
        return Ok(());
    };
    let mut at = 0usize;
    let len = whole.len();
    while at < len {
        let header = peek_header(&whole[at..])?;
        let batch_len = header.batch_len() as usize;
        let end = at.checked_add(batch_len).filter(|&e| e <= len).ok_or(
            tidelog_wire::WireError::Truncated {
                need: batch_len,
                have: len - at,
            },
        )?;
        if header.payload_format() == PayloadFormat::Kafka {
            let start = at + tidelog_wire::batch::HEADER_LEN;
            let piece = match &chunk {
                ReadChunk::Cache(bytes) => Piece::Cache(bytes.slice(start..end)),
                ReadChunk::Split { .. } => return Ok(()),
                ReadChunk::Disk(result) => match result.slice(start, end - start) {
                    Some(slice) => Piece::Disk(slice),
                    None => {
                        return Err(tidelog_wire::WireError::Truncated {
                            need: end,
                            have: len,
                        })
                    }
                },
            };
            part.bytes += piece.len();
            part.pieces.push(piece);
        } else {
            let view = verify(&whole[at..end], &VerifyLimits::default())?;
            let mut converted = BytesMut::new();
            native_to_kafka(&view, &mut converted)?;
            part.bytes += converted.len();
            part.pieces.push(Piece::Owned(converted.freeze()));
        }
        at = end;
    }
    Ok(())
}
