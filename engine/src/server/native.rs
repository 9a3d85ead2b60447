//! The native-protocol listener: framing, bounds, and request handling through the shard's
//! door (requests for partitions on other shards are forwarded there).
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
//! The connection loop (reading, pipelining, writing in order) is
//! [`super::pipeline::Connection`], shared with the Kafka listener.
//!
//! Every frame is bounded before it is buffered: the 4-byte length prefix is checked against
//! [`ServerLimits::max_frame_bytes`] first, and a frame that fails any check gets an
//! `ErrorResponse` (after the responses already pending) and the connection is closed;
//! other connections never notice.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use glommio::net::TcpStream;
use tidelog_wire::native::{
    self, Body, BodyT, EndpointT, ErrorCode, FetchResponsePartition, FrameEncoder, FrameLimits,
    HandshakeResponseT, ListOffsetsResponseT, ListOffsetsResultT, MessageT, MetadataResponseT,
    PartitionMetadataT, ProducePartitionResultT, ProduceResponseT, TopicMetadataT, TopicResultT,
};
use tidelog_wire::WireError;

use super::pipeline::{ConnError, Connection, Pending, Protocol};
use super::{FetchBounds, Server};
use crate::groups::OffsetCommit;
use crate::log::memory::{MemoryWait, ReadPermit};
use crate::log::Durability;
use crate::meta::{Limit, TopicConfig};
use crate::shard::{partition_index, AppendStarted, Batches, Chunk, Fetched, Route, ShardError};

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

/// The native error code for a shard error.
pub(crate) fn error_code(error: &ShardError) -> ErrorCode {
    match error {
        ShardError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        ShardError::NotOwner => ErrorCode::NotOwner,
        ShardError::OffsetOutOfRange(_) => ErrorCode::OffsetOutOfRange,
        // Stored bytes that fail their checks: final (not retriable) for native clients.
        ShardError::CorruptBatch(_) | ShardError::CorruptStored(_) => ErrorCode::CorruptBatch,
        ShardError::BatchTooLarge(_) => ErrorCode::RecordTooLarge,
        ShardError::DiskFull(_) => ErrorCode::DiskFull,
        // The native protocol has no idempotence codes yet (adding them means regenerating
        // native.fbs); the Kafka listener has codes of its own for these.
        ShardError::InvalidProducerEpoch(_)
        | ShardError::OutOfOrderSequence(_)
        | ShardError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        ShardError::InvalidTopic(_) => ErrorCode::InvalidTopic,
        ShardError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
        ShardError::InvalidConfig(_) | ShardError::InvalidReplicationFactor(_) => {
            ErrorCode::InvalidConfig
        }
        ShardError::NotController(_) => ErrorCode::ShuttingDown,
        ShardError::FencedLeaderEpoch(_) => ErrorCode::FencedLeaderEpoch,
        ShardError::UnknownLeaderEpoch(_) => ErrorCode::UnknownLeaderEpoch,
        ShardError::NotEnoughReplicas(_) | ShardError::NotEnoughReplicasAfterAppend(_) => {
            ErrorCode::RequestTimedOut
        }
        ShardError::ReplicationTimedOut(_) => ErrorCode::RequestTimedOut,
        ShardError::PartitionLimit(_) => ErrorCode::InvalidPartitions,
        ShardError::ShuttingDown(_) | ShardError::CoordinatorLoading => ErrorCode::ShuttingDown,
        ShardError::Storage(_) => ErrorCode::StorageError,
        _ => ErrorCode::Unknown,
    }
}

/// Checks every batch of one partition's produced `region` as consumers will need it,
/// before anything is stored: CRC and native record structure (`verify`), offsets dense
/// (a batch claims exactly one offset per record, so a tiny batch cannot claim 2^31
/// offsets), and a Kafka-format payload valid as a produced Kafka batch. A batch stored
/// unverified used to poison every Kafka consumer of the partition at that offset.
fn check_produced(region: &[u8]) -> Result<(), ShardError> {
    let limits = tidelog_wire::batch::VerifyLimits::default();
    let mut rest = region;
    while !rest.is_empty() {
        let view = tidelog_wire::batch::verify(rest, &limits)
            .map_err(|e| ShardError::CorruptBatch(format!("produced batch: {e}")))?;
        let header = view.header();
        let claimed = i64::from(header.last_offset_delta()) + 1;
        if claimed != i64::from(header.record_count()) {
            return Err(ShardError::CorruptBatch(format!(
                "produced batch claims {claimed} offsets for {} records",
                header.record_count()
            )));
        }
        if header.payload_format() == tidelog_wire::batch::PayloadFormat::Kafka {
            let payload = view
                .bytes()
                .get(tidelog_wire::batch::HEADER_LEN..)
                .unwrap_or_default();
            tidelog_wire::kafka_records::validate_produce_batch(payload, i16::MAX, usize::MAX)
                .map_err(|e| ShardError::CorruptBatch(format!("produced Kafka batch: {e}")))?;
        }
        rest = rest.get(view.batch_len()..).unwrap_or_default();
    }
    Ok(())
}

/// A native retention value (`-1`, the field's default: the broker's default; `-2`: no
/// limit; `0..`: a limit) as a topic's [`Limit`].
fn limit_from_native(value: i64, what: &str) -> Result<Limit, ShardError> {
    match value {
        NATIVE_LIMIT_DEFAULT => Ok(Limit::Default),
        NATIVE_LIMIT_UNLIMITED => Ok(Limit::Unlimited),
        v => u64::try_from(v).map(Limit::At).map_err(|_| {
            ShardError::InvalidConfig(format!(
                "{what} {v}: -1 (broker default), -2 (no limit) or a limit of 0 or more"
            ))
        }),
    }
}

/// [`limit_from_native`]'s inverse.
fn limit_to_native(limit: Limit) -> i64 {
    match limit {
        Limit::Default => NATIVE_LIMIT_DEFAULT,
        Limit::Unlimited => NATIVE_LIMIT_UNLIMITED,
        Limit::At(v) => i64::try_from(v).unwrap_or(i64::MAX),
    }
}

/// The native protocol's retention value for "the broker's default" (the field's default).
const NATIVE_LIMIT_DEFAULT: i64 = -1;
/// The native protocol's retention value for "no limit".
const NATIVE_LIMIT_UNLIMITED: i64 = -2;

/// A topic admin outcome as (code, message); the message is empty on success.
fn admin_outcome(outcome: Result<(), ShardError>) -> (ErrorCode, String) {
    match outcome {
        Ok(()) => (ErrorCode::None, String::new()),
        Err(e) => (error_code(&e), e.to_string()),
    }
}

/// Serves one accepted native connection to its end.
pub(super) async fn serve_connection(server: Rc<Server>, stream: TcpStream) {
    let count = server.native_connections.get() + 1;
    server.native_connections.set(count);
    server.publish_connections();
    let limits = server.config.limits;
    let shard_id = server.shard.id();
    let proto = Native {
        server: Rc::clone(&server),
        encoder: FrameEncoder::new(),
        limits: FrameLimits {
            max_frame_bytes: limits.max_frame_bytes,
            ..FrameLimits::default()
        },
    };
    let mut connection = Connection::new(
        stream,
        proto,
        limits.max_pending_produces,
        server.config.timeouts,
        Rc::clone(&server.request_memory),
    );
    if count > limits.max_connections_per_shard {
        let _ = connection
            .send_error(0, ErrorCode::TooManyConnections, "connection limit reached")
            .await;
    } else if let Err(e) = connection.serve().await {
        tracing::debug!(shard = shard_id, error = %e, "connection closed");
    }
    server
        .native_connections
        .set(server.native_connections.get() - 1);
    server.publish_connections();
}

/// The native protocol's per-connection state.
pub(super) struct Native {
    server: Rc<Server>,
    encoder: FrameEncoder,
    limits: FrameLimits,
}

impl Protocol for Native {
    type Meta = ();
    type Response = MessageT;
    type Error = WireError;
    /// Typical frames (produce batches up to 1 MiB) land in one allocation, larger ones grow
    /// as they are received.
    const FRAME_RESERVE_BYTES: usize = 1 << 20;

    fn announced(&self, buffered: &[u8]) -> Result<Option<usize>, WireError> {
        let Some(prefix) = buffered.get(..4) else {
            return Ok(None);
        };
        let total = native::peek_frame_len(prefix, &self.limits)?
            .ok_or(WireError::Truncated { need: 4, have: 0 })?;
        Ok(Some(total))
    }

    fn encode(&mut self, (): &(), message: &MessageT, out: &mut BytesMut) -> Result<(), WireError> {
        self.encoder.encode_message(message, 0, out)
    }

    fn stopped(&self) -> bool {
        self.server.shard.is_stopped()
    }

    async fn handle(
        conn: &mut Connection<Self>,
        frame: BytesMut,
    ) -> Result<(), ConnError<WireError>> {
        conn.handle_frame(frame).await
    }

    async fn refuse(conn: &mut Connection<Self>, error: &WireError) {
        let _ = conn
            .send_error(0, ErrorCode::from(error), &error.to_string())
            .await;
    }
}

impl Connection<Native> {
    async fn send_error(
        &mut self,
        correlation_id: u32,
        error: ErrorCode,
        message: &str,
    ) -> Result<(), ConnError<WireError>> {
        self.out.clear();
        self.proto
            .encoder
            .encode_error_response(correlation_id, error, message, &mut self.out)
            .map_err(ConnError::Protocol)?;
        let until = self.response_until(self.out.len());
        super::write_by(&mut self.stream, &self.out, until).await?;
        Ok(())
    }

    async fn send_message(&mut self, message: &MessageT) -> Result<(), ConnError<WireError>> {
        self.send(&(), message).await
    }

    async fn handle_frame(&mut self, frame: BytesMut) -> Result<(), ConnError<WireError>> {
        let decoded = match native::decode_frame(&frame, &self.proto.limits) {
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
            Err(e) => return Err(ConnError::Protocol(e)),
        };
        let correlation_id = decoded.correlation_id();
        if decoded.body_type() != Body::ProduceRequest {
            // Everything but Produce runs after every earlier response is out.
            self.flush_pending().await?;
        }
        match decoded.body_type() {
            Body::ProduceRequest => {
                let plan = produce_plan(&decoded).map_err(ConnError::Protocol)?;
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
        let server = Rc::clone(&self.proto.server);
        let shard = &server.shard;
        Some(match body {
            BodyT::HandshakeRequest(request) => {
                let mut response = HandshakeResponseT::default();
                match native::negotiate_version(request.min_version, request.max_version) {
                    Some(version) => response.version = version,
                    None => response.error = ErrorCode::UnsupportedVersion,
                }
                response.shard = shard.id() as u16;
                response.shard_count = shard.shards() as u16;
                BodyT::HandshakeResponse(Box::new(response))
            }
            BodyT::MetadataRequest(request) => {
                let mut response = MetadataResponseT::default();
                let view = shard.view();
                let endpoints = match &view {
                    None => server
                        .endpoints
                        .native
                        .iter()
                        .enumerate()
                        .map(|(i, addr)| {
                            let mut endpoint = EndpointT::default();
                            endpoint.shard = i as u16;
                            endpoint.host = Some(server.config.advertised_host.clone());
                            endpoint.port = addr.port();
                            endpoint
                        })
                        .collect(),
                    // Every shard of every live node, as Kafka Metadata lists its brokers.
                    Some(view) => view
                        .live_shards()
                        .filter_map(|(node, s)| {
                            let mut endpoint = EndpointT::default();
                            endpoint.shard = s as u16;
                            endpoint.host = Some(node.native_host.clone());
                            endpoint.port = *node.native_ports.get(s)?;
                            endpoint.node = node.id;
                            Some(endpoint)
                        })
                        .collect(),
                };
                response.endpoints = Some(endpoints);
                // A partition's owner: its shard here, or in a cluster its live leader's
                // shard on that node (node 0: no leader now).
                let owner_of = |name: &str, p: u32| -> (u64, u16) {
                    let Some(view) = &view else {
                        return (0, shard.owner(name, p) as u16);
                    };
                    let leader = view
                        .leader_of(name, p)
                        .filter(|n| view.state.is_live(*n))
                        .and_then(|n| view.state.nodes.get(&n));
                    match leader {
                        Some(node) => (
                            node.id,
                            crate::meta::shard_for(name, p, node.shards()) as u16,
                        ),
                        None => (0, 0),
                    }
                };
                let topics = shard.topics();
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
                                            (partition.node, partition.shard) = owner_of(&name, p);
                                            partition
                                        })
                                        .collect(),
                                );
                                topic.retention_ms = limit_to_native(config.retention_ms);
                                topic.retention_bytes = limit_to_native(config.retention_bytes);
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
                        server.config.default_partitions
                    } else {
                        spec.partitions as u32
                    };
                    let created = match (
                        limit_from_native(spec.retention_ms, "retention_ms"),
                        limit_from_native(spec.retention_bytes, "retention_bytes"),
                    ) {
                        (Ok(retention_ms), Ok(retention_bytes)) => {
                            let config = TopicConfig {
                                partitions,
                                retention_ms,
                                retention_bytes,
                                segment_bytes: (spec.segment_bytes >= 0)
                                    .then_some(spec.segment_bytes as u64),
                                segment_ms: None,
                                overrides: Default::default(),
                            };
                            shard.create_topic(&name, config).await
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                    let (error, message) = admin_outcome(created);
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
                    let (error, message) = admin_outcome(shard.delete_topic(&name).await);
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
                        Ok(p) => shard
                            .list_offset(&topic, p, wanted.timestamp, Route::Forward)
                            .await
                            .map_err(|e| error_code(&e)),
                        Err(e) => Err(error_code(&e)),
                    };
                    match listed {
                        Ok(listed) => {
                            result.offset = listed.offset;
                            result.timestamp = listed.timestamp;
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
                    codes.push((
                        topic.clone(),
                        o.partition,
                        exists.as_ref().err().map(error_code),
                    ));
                    if exists.is_ok() {
                        valid.push(OffsetCommit {
                            topic,
                            partition: o.partition,
                            offset: o.offset,
                            metadata: o.metadata.unwrap_or_default(),
                        });
                    }
                }
                let committed = match shard.commit_offsets(&group, valid).await {
                    Ok(()) => ErrorCode::None,
                    Err(e) => error_code(&e),
                };
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
            BodyT::FindCoordinatorRequest(request) => {
                let group = request.group.unwrap_or_default();
                let mut response = native::FindCoordinatorResponseT::default();
                match shard.coordinator_endpoint(&group) {
                    Ok(endpoint) => response.endpoint = endpoint,
                    Err(e) => response.error = error_code(&e),
                }
                BodyT::FindCoordinatorResponse(Box::new(response))
            }
            BodyT::OffsetFetchRequest(request) => {
                let group = request.group.unwrap_or_default();
                let partitions: Vec<(String, i32)> = request
                    .partitions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| (p.topic.unwrap_or_default(), p.partition))
                    .collect();
                let fetched = shard
                    .fetch_offsets(&group, partitions.clone())
                    .await
                    .map_err(|e| error_code(&e));
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
    ) -> Result<(), ConnError<WireError>> {
        let durability = if plan.acks == -1 {
            Durability::Synced
        } else {
            Durability::Buffered
        };
        let shard = Rc::clone(&self.proto.server.shard);
        let home = self.frame_home();
        let mut rest = frame;
        // The frame's first byte (the size prefix, read already): what the ledger keeps of
        // the read buffer while stored batches share it.
        let anchor = rest.split_to(1).freeze();
        let mut cursor = 1usize;
        // Started one after another, so each partition gets this request's batches before
        // the next request's; only the fdatasync waits are left for later.
        let mut started = Vec::with_capacity(plan.partitions.len());
        let mut waiting = false;
        for part in plan.partitions {
            rest.advance(part.range.start - cursor);
            let mut region = rest.split_to(part.range.len());
            cursor = part.range.end;
            // The batch cache keeps the batches as a slice of the request when the shard's
            // ledger of such read buffers allows it; else they get a buffer of their own.
            let shared =
                (self.proto.server.pinned.borrow_mut()).may_share(home, &anchor, region.len());
            if !shared {
                region = BytesMut::from(&region[..]);
            }
            let produced = match check_produced(&region).and(partition_index(part.partition)) {
                Ok(p) => {
                    shard
                        .append(
                            &part.topic,
                            p,
                            Batches::Stored(region),
                            durability,
                            Route::Forward,
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            waiting |= produced.as_ref().is_ok_and(AppendStarted::is_waiting);
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
            Pending::Ready(complete_produce(correlation_id, started).await)
        };
        self.queue((), response).await
    }

    async fn fetch(
        &mut self,
        correlation_id: u32,
        request: MessageT,
    ) -> Result<(), ConnError<WireError>> {
        let BodyT::FetchRequest(request) = request.body else {
            return Err(ConnError::Protocol(WireError::Truncated {
                need: 0,
                have: 0,
            }));
        };
        let server = Rc::clone(&self.proto.server);
        let shard = &server.shard;
        let limits = server.config.limits;
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
        let wanted = request.partitions.unwrap_or_default();
        let bell = shard.doorbell(
            wanted
                .iter()
                .map(|w| (w.topic.as_deref().unwrap_or_default(), w.partition)),
        );
        loop {
            let listener = bell.listen();
            let mut parts = Vec::with_capacity(wanted.len());
            let mut total = 0usize;
            let mut errors = false;
            let mut remote = false;
            let mut holding = false;
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
                    memory: ReadPermit::default(),
                    replica: None,
                };
                let offset = u64::try_from(want.offset).unwrap_or(u64::MAX);
                // Past the budget a partition may still return its first batch while nothing
                // has been returned yet (at least one batch overall).
                let budget = if total == 0 { budget.max(1) } else { budget };
                let fetched = match partition_index(want.partition) {
                    Ok(p) => {
                        remote |= shard.owner(&part.topic, p) != shard.id();
                        if budget == 0 {
                            // Past the response's byte budget: only say whether it exists
                            // (no hop to its owner, no bounds), as this listener always has.
                            shard.check_exists(&part.topic, p).map(|()| Fetched {
                                high_watermark: 0,
                                log_start: 0,
                                chunks: Vec::new(),
                                memory: ReadPermit::default(),
                            })
                        } else {
                            // Holding read memory for earlier partitions, never wait for
                            // more (see `log::memory`).
                            let wait = if holding {
                                MemoryWait::IfFree
                            } else {
                                MemoryWait::Wait
                            };
                            if request.replica_node != 0 {
                                // A follower fetching from its leader (this shard only).
                                match shard
                                    .replica_read(
                                        &part.topic,
                                        p,
                                        offset,
                                        budget,
                                        request.replica_node,
                                        want.leader_epoch,
                                        want.last_fetched_epoch,
                                        wait,
                                    )
                                    .await
                                {
                                    Ok(read) => {
                                        if read.answer.diverging.is_some() {
                                            errors = true;
                                        }
                                        part.replica = Some(read.answer);
                                        Ok(read.fetched)
                                    }
                                    Err(e) => {
                                        // A follower below the log start is told where it
                                        // begins, to start over there.
                                        if let (ShardError::OffsetOutOfRange(_), Ok(bounds)) =
                                            (&e, shard.bounds(&part.topic, p))
                                        {
                                            part.log_start = bounds.log_start as i64;
                                        }
                                        Err(e)
                                    }
                                }
                            } else {
                                shard
                                    .read(&part.topic, p, offset, budget, Route::Forward, wait)
                                    .await
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
                match fetched {
                    Ok(read) => {
                        part.high_watermark = read.high_watermark as i64;
                        part.log_start = read.log_start as i64;
                        part.bytes = read.len();
                        total += part.bytes;
                        part.chunks = read.chunks;
                        holding |= read.memory.bytes() > 0;
                        part.memory = read.memory;
                    }
                    Err(e) => part.error = error_code(&e),
                }
                errors |= part.error != ErrorCode::None;
                parts.push(part);
            }
            let now = Instant::now();
            if total >= min_bytes.max(1) || errors || now >= deadline || shard.is_stopped() {
                return self.send_fetch(correlation_id, parts).await;
            }
            // Not enough yet: what was read (and its read memory) goes back while waiting; the
            // next round reads again.
            drop(parts);
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
    ) -> Result<(), ConnError<WireError>> {
        let header: Vec<FetchResponsePartition<'_>> = parts
            .iter()
            .map(|p| FetchResponsePartition {
                topic: &p.topic,
                partition: p.partition,
                error: p.error,
                high_watermark: p.high_watermark,
                log_start: p.log_start,
                batches_len: p.bytes,
                replica: p.replica.as_ref(),
            })
            .collect();
        self.out.clear();
        self.proto
            .encoder
            .encode_fetch_response(correlation_id, &header, &mut self.out)
            .map_err(ConnError::Protocol)?;
        // One deadline for the whole response, however it trickles out.
        let total = self.out.len() + parts.iter().map(|p| p.bytes).sum::<usize>();
        let until = self.response_until(total);
        super::write_by(&mut self.stream, &self.out, until).await?;
        // The batches go out exactly as stored: cache buffers and DMA read buffers, uncopied.
        for part in &parts {
            for chunk in &part.chunks {
                for piece in chunk.pieces() {
                    if !piece.is_empty() {
                        super::write_by(&mut self.stream, piece, until).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Waits for every started partition of one produce (each in its own task, so their
/// fdatasyncs overlap) and builds the response.
async fn complete_produce(
    correlation_id: u32,
    started: Vec<(usize, String, i32, Result<AppendStarted, ShardError>)>,
) -> MessageT {
    let finishing: Vec<_> = started
        .into_iter()
        .map(|(_, topic, partition, started)| {
            let finish = match started {
                Ok(started) => Ok(glommio::spawn_local(started.durable()).detach()),
                Err(e) => Err(e),
            };
            (topic, partition, finish)
        })
        .collect();
    let mut results = Vec::with_capacity(finishing.len());
    for (topic, partition, finish) in finishing {
        let mut result = ProducePartitionResultT::default();
        let finished = match finish {
            // A wait that never finished (its task died) is not durable: never acknowledge it.
            Ok(task) => task.await.unwrap_or(Err(ShardError::ShuttingDown(
                "the durability wait did not complete",
            ))),
            Err(e) => Err(e),
        };
        match finished {
            Ok(appended) => {
                result.base_offset = appended.base_offset as i64;
                result.log_start = appended.log_start as i64;
            }
            Err(e) => result.error = error_code(&e),
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

/// How often a long-polling fetch re-reads partitions owned by other shards.
const REMOTE_POLL: Duration = Duration::from_millis(5);

struct FetchPart {
    topic: String,
    partition: i32,
    error: ErrorCode,
    high_watermark: i64,
    log_start: i64,
    chunks: Vec<Chunk>,
    /// Bytes of `chunks`.
    bytes: usize,
    /// The shard's read memory `chunks` hold, until they are sent.
    memory: ReadPermit,
    /// A replica fetch's extra answer.
    replica: Option<tidelog_wire::native::ReplicaAnswer>,
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
