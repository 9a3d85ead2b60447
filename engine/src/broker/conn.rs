//! Native-protocol connections: framing, bounds, and request handling on the owning shard.
//!
//! A connection's requests take effect in arrival order and responses keep the order of
//! requests (as Kafka does); a client may pipeline several. Produce requests are pipelined
//! on the broker too: their batches are appended in request order, and an `acks=all`
//! response waits for its fdatasync in a spawned task, queued behind earlier responses, while
//! the connection reads on, so one connection's produces share the log's group commit. At
//! most [`ServerLimits::max_pending_produces`] responses wait per connection (at the limit
//! the oldest is awaited); any other request first waits until every queued response is
//! written. Produces to partitions owned by another shard complete before the next request
//! is read (forwarding does not promise order).
//!
//! One task per connection alternates reading and writing, with a persistent read buffer:
//! when no whole frame is buffered and responses are pending, it races one socket read into
//! that buffer against the oldest pending completion. glommio 0.9's `TcpStream` has no
//! lock-free split; its unbuffered reads copy bytes only inside a poll that returns `Ready`,
//! so dropping the losing read loses nothing (see the Kafka listener's module docs).
//!
//! Every frame is bounded before it is buffered: the 4-byte length prefix is checked against
//! [`ServerLimits::max_frame_bytes`] first, and a frame that fails any check gets an
//! `ErrorResponse` (after the responses already pending) and the connection is closed;
//! other connections never notice.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use tidelog_wire::native::{
    self, Body, BodyT, EndpointT, ErrorCode, FetchResponsePartition, FrameEncoder, FrameLimits,
    HandshakeResponseT, ListOffsetsResponseT, ListOffsetsResultT, MessageT, MetadataResponseT,
    PartitionMetadataT, ProducePartitionResultT, ProduceResponseT, TopicMetadataT, TopicResultT,
};
use tidelog_wire::WireError;

use super::pipeline::{read_or_complete, Pending, PendingQueue, Woke};
use super::shard::{partition_index, ProduceStarted, Shard};
use crate::log::{Durability, ReadChunk};
use crate::meta::TopicConfig;

/// Bounds of the native listener, per shard and per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest frame accepted (whole frame, prefix included).
    pub max_frame_bytes: usize,
    /// Connections a shard serves at once; more are answered `TooManyConnections` and closed.
    pub max_connections_per_shard: usize,
    /// Largest total of batch bytes one fetch response carries.
    pub max_fetch_bytes: usize,
    /// Longest a fetch may wait for `min_bytes`.
    pub max_fetch_wait_ms: u32,
    /// Produce responses one connection may have queued (appended, waiting for their
    /// `acks=all` fdatasync or for earlier responses) before it stops reading requests.
    pub max_pending_produces: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_frame_bytes: 64 << 20,
            max_connections_per_shard: 10_000,
            max_fetch_bytes: 64 << 20,
            max_fetch_wait_ms: 30_000,
            max_pending_produces: 64,
        }
    }
}

/// Accepts connections until the shard stops.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    super::shard::accept_until_stopped(shard, listener, "native", |shard, stream| async move {
        shard.connections.set(shard.connections.get() + 1);
        let mut connection = Connection::new(Rc::clone(&shard), stream);
        if shard.connections.get() > shard.config.limits.max_connections_per_shard {
            let _ = connection
                .send_error(0, ErrorCode::TooManyConnections, "connection limit reached")
                .await;
        } else if let Err(e) = connection.serve().await {
            tracing::debug!(shard = shard.id, error = %e, "connection closed");
        }
        shard.connections.set(shard.connections.get() - 1);
    })
    .await;
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] WireError),
    #[error("peer closed")]
    Closed,
    #[error("shard stopping")]
    Stopping,
}

struct Connection {
    shard: Rc<Shard>,
    stream: TcpStream,
    encoder: FrameEncoder,
    out: BytesMut,
    limits: FrameLimits,
    /// Bytes received and not yet handled: whole frames and the start of the next one. It
    /// persists across reads, so an interrupted read loses nothing.
    inbuf: BytesMut,
    /// Produce responses not yet written, oldest first; at most
    /// [`ServerLimits::max_pending_produces`].
    pending: PendingQueue<(), MessageT>,
}

impl Connection {
    fn new(shard: Rc<Shard>, stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not pin fetched buffers and pending responses
        // forever: a write that makes no progress for this long closes the connection.
        let _ = stream.set_write_timeout(Some(crate::limits::WRITE_STALL_TIMEOUT));
        let limits = FrameLimits {
            max_frame_bytes: shard.config.limits.max_frame_bytes,
            ..FrameLimits::default()
        };
        Connection {
            shard,
            stream,
            encoder: FrameEncoder::new(),
            out: BytesMut::with_capacity(4096),
            limits,
            inbuf: BytesMut::new(),
            pending: PendingQueue::default(),
        }
    }

    async fn serve(&mut self) -> Result<(), ConnectionError> {
        loop {
            let frame = match self.next_frame().await {
                Ok(frame) => frame,
                Err(ConnectionError::Frame(e)) => {
                    let code = ErrorCode::from(&e);
                    self.flush_pending().await?;
                    let _ = self.send_error(0, code, &e.to_string()).await;
                    return Err(e.into());
                }
                Err(ConnectionError::Closed) => {
                    // The peer may only have closed its sending side: answer what it sent.
                    self.flush_pending().await?;
                    return Err(ConnectionError::Closed);
                }
                Err(e) => return Err(e),
            };
            if self.shard.stopped.get() {
                return Ok(());
            }
            if let Err(e) = self.handle(frame).await {
                if matches!(e, ConnectionError::Frame(_)) {
                    self.flush_pending().await?;
                }
                return Err(e);
            }
        }
    }

    /// The next whole frame (prefix included), refusing an oversized one from its length
    /// prefix alone. While waiting for its bytes, writes the pending responses that
    /// complete, oldest first.
    async fn next_frame(&mut self) -> Result<BytesMut, ConnectionError> {
        loop {
            let announced = self.announced_total()?;
            if let Some(total) = announced.filter(|&total| self.inbuf.len() >= total) {
                return Ok(self.inbuf.split_to(total));
            }
            self.write_completed().await?;
            let need = match announced {
                Some(total) => total - self.inbuf.len(),
                None => 4 - self.inbuf.len(),
            };
            let Self {
                stream,
                inbuf,
                pending,
                ..
            } = self;
            match read_or_complete(stream, inbuf, need, FRAME_RESERVE_BYTES, pending).await {
                Woke::Read(Ok(0)) => return Err(ConnectionError::Closed),
                Woke::Read(Ok(_)) => {}
                Woke::Read(Err(e)) => return Err(e.into()),
                Woke::Done(done) => {
                    let ((), message) = done.map_err(|_| ConnectionError::Stopping)?;
                    self.send_message(&message).await?;
                }
            }
        }
    }

    /// The total size the buffered frame announces, checked against the frame limit; `None`
    /// before its prefix has arrived.
    fn announced_total(&self) -> Result<Option<usize>, ConnectionError> {
        let Some(prefix) = self.inbuf.get(..4) else {
            return Ok(None);
        };
        let total = native::peek_frame_len(prefix, &self.limits)?
            .ok_or(WireError::Truncated { need: 4, have: 0 })?;
        Ok(Some(total))
    }

    /// Writes the pending responses that are complete, oldest first, without waiting.
    async fn write_completed(&mut self) -> Result<(), ConnectionError> {
        while let Some(done) = self.pending.pop_completed().await {
            let ((), message) = done.map_err(|_| ConnectionError::Stopping)?;
            self.send_message(&message).await?;
        }
        Ok(())
    }

    /// Waits for every pending response and writes them in order.
    async fn flush_pending(&mut self) -> Result<(), ConnectionError> {
        while !self.pending.is_empty() {
            self.write_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest pending response and writes it.
    async fn write_oldest(&mut self) -> Result<(), ConnectionError> {
        if let Some(done) = self.pending.pop_oldest().await {
            let ((), message) = done.map_err(|_| ConnectionError::Stopping)?;
            self.send_message(&message).await?;
        }
        Ok(())
    }

    async fn send_error(
        &mut self,
        correlation_id: u32,
        error: ErrorCode,
        message: &str,
    ) -> Result<(), ConnectionError> {
        self.out.clear();
        self.encoder
            .encode_error_response(correlation_id, error, message, &mut self.out)?;
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    async fn send_message(&mut self, message: &MessageT) -> Result<(), ConnectionError> {
        self.out.clear();
        self.encoder.encode_message(message, 0, &mut self.out)?;
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    async fn handle(&mut self, frame: BytesMut) -> Result<(), ConnectionError> {
        let decoded = match native::decode_frame(&frame, &self.limits) {
            Ok(decoded) => decoded,
            Err(WireError::UnknownMessageType { correlation_id, .. }) => {
                self.flush_pending().await?;
                return self
                    .send_error(
                        correlation_id,
                        ErrorCode::InvalidRequest,
                        "unknown message type",
                    )
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        let correlation_id = decoded.correlation_id();
        if decoded.body_type() != Body::ProduceRequest {
            // Everything but Produce runs after every earlier response is out.
            self.flush_pending().await?;
        }
        match decoded.body_type() {
            Body::ProduceRequest => {
                let plan = produce_plan(&decoded)?;
                self.produce(correlation_id, frame, plan).await
            }
            Body::FetchRequest => {
                let request = decoded.unpack();
                self.fetch(correlation_id, request).await
            }
            _ => {
                let request = decoded.unpack();
                let body = self.admin(request.body).await;
                match body {
                    Some(body) => {
                        let mut message = MessageT::default();
                        message.correlation_id = correlation_id;
                        message.body = body;
                        self.send_message(&message).await
                    }
                    None => {
                        self.send_error(correlation_id, ErrorCode::InvalidRequest, "not a request")
                            .await
                    }
                }
            }
        }
    }

    async fn admin(&self, body: BodyT) -> Option<BodyT> {
        let shard = &self.shard;
        Some(match body {
            BodyT::HandshakeRequest(request) => {
                let mut response = HandshakeResponseT::default();
                match native::negotiate_version(request.min_version, request.max_version) {
                    Some(version) => response.version = version,
                    None => response.error = ErrorCode::UnsupportedVersion,
                }
                response.shard = shard.id as u16;
                response.shard_count = shard.shards as u16;
                BodyT::HandshakeResponse(Box::new(response))
            }
            BodyT::MetadataRequest(request) => {
                let mut response = MetadataResponseT::default();
                let endpoints = shard
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| {
                        let mut endpoint = EndpointT::default();
                        endpoint.shard = i as u16;
                        endpoint.host = Some(shard.config.advertised_host.clone());
                        endpoint.port = addr.port();
                        endpoint
                    })
                    .collect();
                response.endpoints = Some(endpoints);
                let topics = shard.topics.borrow();
                let wanted: Vec<String> = match request.topics {
                    Some(names) if !names.is_empty() => names,
                    _ => topics.keys().cloned().collect(),
                };
                let metadata = wanted
                    .into_iter()
                    .map(|name| {
                        let mut topic = TopicMetadataT::default();
                        match topics.get(&name) {
                            Some(config) => {
                                topic.partitions = Some(
                                    (0..config.partitions)
                                        .map(|p| {
                                            let mut partition = PartitionMetadataT::default();
                                            partition.partition = p as i32;
                                            partition.shard = shard.owner(&name, p) as u16;
                                            partition
                                        })
                                        .collect(),
                                );
                                topic.retention_ms = config.retention_ms.unwrap_or(-1);
                                topic.retention_bytes =
                                    config.retention_bytes.map_or(-1, |b| b as i64);
                                topic.segment_bytes = config.segment_bytes.map_or(-1, |b| b as i64);
                            }
                            None => topic.error = ErrorCode::UnknownTopicOrPartition,
                        }
                        topic.name = Some(name);
                        topic
                    })
                    .collect();
                response.topics = Some(metadata);
                BodyT::MetadataResponse(Box::new(response))
            }
            BodyT::CreateTopicsRequest(request) => {
                let mut results = Vec::new();
                for spec in request.topics.unwrap_or_default() {
                    let name = spec.name.unwrap_or_default();
                    let partitions = if spec.partitions <= 0 {
                        shard.config.default_partitions
                    } else {
                        spec.partitions as u32
                    };
                    let config = TopicConfig {
                        partitions,
                        retention_ms: (spec.retention_ms >= 0).then_some(spec.retention_ms),
                        retention_bytes: (spec.retention_bytes >= 0)
                            .then_some(spec.retention_bytes as u64),
                        segment_bytes: (spec.segment_bytes >= 0)
                            .then_some(spec.segment_bytes as u64),
                        segment_ms: None,
                    };
                    let (error, message) = shard.create_topic(&name, config).await;
                    let mut result = TopicResultT::default();
                    result.name = Some(name);
                    result.error = error;
                    result.message = Some(message);
                    results.push(result);
                }
                let mut response = native::CreateTopicsResponseT::default();
                response.results = Some(results);
                BodyT::CreateTopicsResponse(Box::new(response))
            }
            BodyT::DeleteTopicsRequest(request) => {
                let mut results = Vec::new();
                for name in request.names.unwrap_or_default() {
                    let (error, message) = shard.delete_topic(&name).await;
                    let mut result = TopicResultT::default();
                    result.name = Some(name);
                    result.error = error;
                    result.message = Some(message);
                    results.push(result);
                }
                let mut response = native::DeleteTopicsResponseT::default();
                response.results = Some(results);
                BodyT::DeleteTopicsResponse(Box::new(response))
            }
            BodyT::ListOffsetsRequest(request) => {
                let mut results = Vec::new();
                for wanted in request.partitions.unwrap_or_default() {
                    let topic = wanted.topic.unwrap_or_default();
                    let mut result = ListOffsetsResultT::default();
                    let listed = match partition_index(wanted.partition) {
                        Ok(p) => shard.list_offset(&topic, p, wanted.timestamp).await,
                        Err(code) => Err(code),
                    };
                    match listed {
                        Ok((offset, timestamp)) => {
                            result.offset = offset;
                            result.timestamp = timestamp;
                        }
                        Err(code) => result.error = code,
                    }
                    result.topic = Some(topic);
                    result.partition = wanted.partition;
                    results.push(result);
                }
                let mut response = ListOffsetsResponseT::default();
                response.partitions = Some(results);
                BodyT::ListOffsetsResponse(Box::new(response))
            }
            BodyT::OffsetCommitRequest(request) => {
                let group = request.group.unwrap_or_default();
                let mut codes = Vec::new();
                let mut valid = Vec::new();
                for o in request.offsets.unwrap_or_default() {
                    let topic = o.topic.unwrap_or_default();
                    let exists =
                        partition_index(o.partition).and_then(|p| shard.check_exists(&topic, p));
                    codes.push((topic.clone(), o.partition, exists.err()));
                    if exists.is_ok() {
                        valid.push((topic, o.partition, o.offset, o.metadata.unwrap_or_default()));
                    }
                }
                let committed = shard.commit_offsets(&group, valid).await;
                let results = codes
                    .into_iter()
                    .map(|(topic, partition, error)| {
                        let mut result = native::PartitionErrorT::default();
                        result.topic = Some(topic);
                        result.partition = partition;
                        result.error = error.unwrap_or(committed);
                        result
                    })
                    .collect();
                let mut response = native::OffsetCommitResponseT::default();
                response.results = Some(results);
                BodyT::OffsetCommitResponse(Box::new(response))
            }
            BodyT::OffsetFetchRequest(request) => {
                let group = request.group.unwrap_or_default();
                let partitions: Vec<(String, i32)> = request
                    .partitions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| (p.topic.unwrap_or_default(), p.partition))
                    .collect();
                let fetched = shard.fetch_offsets(&group, partitions.clone()).await;
                let offsets = partitions
                    .into_iter()
                    .enumerate()
                    .map(|(i, (topic, partition))| {
                        let mut result = native::FetchedOffsetT::default();
                        result.topic = Some(topic);
                        result.partition = partition;
                        result.offset = -1;
                        match &fetched {
                            Ok(found) => {
                                if let Some(Some(committed)) = found.get(i) {
                                    result.offset = committed.offset;
                                    result.metadata = Some(committed.metadata.clone());
                                }
                            }
                            Err(code) => result.error = *code,
                        }
                        result
                    })
                    .collect();
                let mut response = native::OffsetFetchResponseT::default();
                response.offsets = Some(offsets);
                BodyT::OffsetFetchResponse(Box::new(response))
            }
            _ => return None,
        })
    }

    async fn produce(
        &mut self,
        correlation_id: u32,
        frame: BytesMut,
        plan: ProducePlan,
    ) -> Result<(), ConnectionError> {
        let durability = if plan.acks == -1 {
            Durability::Synced
        } else {
            Durability::Buffered
        };
        let mut rest = frame;
        let mut cursor = 0usize;
        // Started one after another, so each partition gets this request's batches before
        // the next request's; only the fdatasync waits are left for later.
        let mut started = Vec::with_capacity(plan.partitions.len());
        let mut waiting = false;
        for part in plan.partitions {
            rest.advance(part.range.start - cursor);
            let region = rest.split_to(part.range.len());
            cursor = part.range.end;
            let produced = match partition_index(part.partition) {
                Ok(p) => {
                    self.shard
                        .produce_unsynced(&part.topic, p, region, durability)
                        .await
                }
                Err(code) => Err(code),
            };
            waiting |= matches!(produced, Ok(ProduceStarted::Unsynced { .. }));
            started.push((part.index, part.topic, part.partition, produced));
        }
        if plan.acks == 0 {
            return Ok(());
        }
        // Appended in frame order (to split the frame without copying); answered in request
        // order.
        started.sort_by_key(|s| s.0);
        let response = if waiting {
            Pending::Waiting(
                glommio::spawn_local(complete_produce(correlation_id, started)).detach(),
            )
        } else {
            let message = complete_produce(correlation_id, started).await;
            if self.pending.is_empty() {
                return self.send_message(&message).await;
            }
            Pending::Ready(message)
        };
        if self.pending.len() >= self.shard.config.limits.max_pending_produces.max(1) {
            self.write_oldest().await?;
        }
        self.pending.push((), response);
        Ok(())
    }

    async fn fetch(
        &mut self,
        correlation_id: u32,
        request: MessageT,
    ) -> Result<(), ConnectionError> {
        let BodyT::FetchRequest(request) = request.body else {
            return Err(WireError::Truncated { need: 0, have: 0 }.into());
        };
        let limits = self.shard.config.limits;
        let wait = Duration::from_millis(request.max_wait_ms.clamp(
            0,
            i32::try_from(limits.max_fetch_wait_ms).unwrap_or(i32::MAX),
        ) as u64);
        let deadline = Instant::now() + wait;
        let max_bytes = (request.max_bytes.max(0) as usize).min(limits.max_fetch_bytes);
        let min_bytes = request.min_bytes.max(0) as usize;
        let wanted = request.partitions.unwrap_or_default();
        loop {
            let listener = self.shard.appended.listen();
            let mut parts = Vec::with_capacity(wanted.len());
            let mut total = 0usize;
            let mut errors = false;
            let mut remote = false;
            for want in &wanted {
                let topic = want.topic.clone().unwrap_or_default();
                let budget = (want.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                let mut part = FetchPart {
                    topic,
                    partition: want.partition,
                    error: ErrorCode::None,
                    high_watermark: -1,
                    log_start: -1,
                    chunks: Vec::new(),
                    bytes: 0,
                };
                let offset = u64::try_from(want.offset).unwrap_or(u64::MAX);
                // Past the budget a partition may still return its first batch while nothing
                // has been returned yet (at least one batch overall).
                let budget = if total == 0 { budget.max(1) } else { budget };
                let fetched = match partition_index(want.partition) {
                    Ok(p) if budget > 0 => self.shard.fetch(&part.topic, p, offset, budget).await,
                    Ok(p) => self
                        .shard
                        .check_exists(&part.topic, p)
                        .map(|()| (0, 0, Vec::new())),
                    Err(code) => Err(code),
                };
                if let Ok(p) = partition_index(want.partition) {
                    remote |= self.shard.owner(&part.topic, p) != self.shard.id;
                }
                match fetched {
                    Ok((high_watermark, log_start, chunks)) => {
                        part.high_watermark = high_watermark as i64;
                        part.log_start = log_start as i64;
                        part.bytes = chunks.iter().map(|c| c.len()).sum();
                        total += part.bytes;
                        part.chunks = chunks;
                    }
                    Err(code) => part.error = code,
                }
                errors |= part.error != ErrorCode::None;
                parts.push(part);
            }
            let now = Instant::now();
            if total >= min_bytes.max(1) || errors || now >= deadline || self.shard.stopped.get() {
                return self.send_fetch(correlation_id, parts).await;
            }
            // Appends on other shards do not wake this one: poll forwarded partitions briefly.
            let nap = if remote {
                (deadline - now).min(REMOTE_POLL)
            } else {
                deadline - now
            };
            futures_lite::future::or(listener, timeout_unit(glommio::timer::sleep(nap))).await;
        }
    }

    async fn send_fetch(
        &mut self,
        correlation_id: u32,
        parts: Vec<FetchPart>,
    ) -> Result<(), ConnectionError> {
        let header: Vec<FetchResponsePartition<'_>> = parts
            .iter()
            .map(|p| FetchResponsePartition {
                topic: &p.topic,
                partition: p.partition,
                error: p.error,
                high_watermark: p.high_watermark,
                log_start: p.log_start,
                batches_len: p.bytes,
            })
            .collect();
        self.out.clear();
        self.encoder
            .encode_fetch_response(correlation_id, &header, &mut self.out)?;
        self.stream.write_all(&self.out).await?;
        // The batches go out exactly as stored: cache buffers and DMA read buffers, uncopied.
        for part in &parts {
            for chunk in &part.chunks {
                self.stream.write_all(chunk).await?;
            }
        }
        Ok(())
    }
}

/// Waits for every started partition of one produce (each in its own task, so their
/// fdatasyncs overlap) and builds the response.
async fn complete_produce(
    correlation_id: u32,
    started: Vec<(usize, String, i32, Result<ProduceStarted, ErrorCode>)>,
) -> MessageT {
    let finishing: Vec<_> = started
        .into_iter()
        .map(|(_, topic, partition, started)| {
            let finish = match started {
                Ok(ProduceStarted::Done { base, log_start }) => Err(Ok((base, log_start))),
                Ok(started) => Ok(glommio::spawn_local(started.finish()).detach()),
                Err(code) => Err(Err(code)),
            };
            (topic, partition, finish)
        })
        .collect();
    let mut results = Vec::with_capacity(finishing.len());
    for (topic, partition, finish) in finishing {
        let mut result = ProducePartitionResultT::default();
        let finished = match finish {
            Ok(task) => task.await.unwrap_or(Err(ErrorCode::ShuttingDown)),
            Err(done) => done,
        };
        match finished {
            Ok((base_offset, log_start)) => {
                result.base_offset = base_offset as i64;
                result.log_start = log_start as i64;
            }
            Err(code) => result.error = code,
        }
        result.topic = Some(topic);
        result.partition = partition;
        results.push(result);
    }
    let mut response = ProduceResponseT::default();
    response.partitions = Some(results);
    let mut message = MessageT::default();
    message.correlation_id = correlation_id;
    message.body = BodyT::ProduceResponse(Box::new(response));
    message
}

async fn timeout_unit(sleep: impl std::future::Future<Output = ()>) {
    sleep.await;
}

/// Bytes reserved for a frame before its bytes arrive: typical frames (produce batches up to
/// 1 MiB) land in one allocation, larger ones grow as they are received.
const FRAME_RESERVE_BYTES: usize = 1 << 20;

/// How often a long-polling fetch re-reads partitions owned by other shards.
const REMOTE_POLL: Duration = Duration::from_millis(5);

struct FetchPart {
    topic: String,
    partition: i32,
    error: ErrorCode,
    high_watermark: i64,
    log_start: i64,
    chunks: Vec<ReadChunk<glommio::io::ReadResult>>,
    /// Bytes of `chunks`.
    bytes: usize,
}

struct ProducePart {
    /// Position in the request: results are answered in this order.
    index: usize,
    topic: String,
    partition: i32,
    /// Bytes of this partition's batches within the frame.
    range: std::ops::Range<usize>,
}

struct ProducePlan {
    acks: i8,
    partitions: Vec<ProducePart>,
}

/// Where each partition's batches lie in the frame, in frame order, so the frame can be
/// split into per-partition buffers without copying.
fn produce_plan(decoded: &native::DecodedFrame<'_>) -> Result<ProducePlan, WireError> {
    let request = decoded
        .message
        .body_as_produce_request()
        .ok_or(WireError::Truncated { need: 0, have: 0 })?;
    let body_start = decoded.frame_len - decoded.body.len();
    let mut partitions = Vec::new();
    for (index, part) in request.partitions().iter().flatten().enumerate() {
        let bytes = decoded.batches(part.batches())?;
        let start = body_start + part.batches().map_or(0, |r| r.offset() as usize);
        partitions.push(ProducePart {
            index,
            topic: part.topic().unwrap_or_default().to_owned(),
            partition: part.partition(),
            range: start..start + bytes.len(),
        });
    }
    partitions.sort_by_key(|p| p.range.start);
    if partitions
        .windows(2)
        .any(|w| w[0].range.end > w[1].range.start)
    {
        return Err(WireError::BodyRefOutOfBounds {
            offset: 0,
            len: 0,
            body_len: decoded.body.len(),
        });
    }
    Ok(ProducePlan {
        acks: request.acks(),
        partitions,
    })
}
