//! The Kafka-protocol listener: existing Kafka clients talk to Tidelog unchanged.
//!
//! Every shard is a virtual Kafka broker: node id = shard, its own advertised port, leader of
//! the partitions it owns and coordinator of the groups whose offset slot it owns. Metadata
//! tells clients so, and they then send produce, fetch and group traffic straight to the
//! owning core; a request for a partition or group this shard does not own is answered
//! `NOT_LEADER_OR_FOLLOWER` / `NOT_COORDINATOR` (clients refresh metadata and retry), never
//! forwarded. The shared bootstrap port (SO_REUSEPORT) lands on any shard and answers
//! ApiVersions and Metadata there.
//!
//! Requests on a connection take effect in request order and their responses go out in
//! request order, as Kafka promises. Produce requests are pipelined: once a Produce is read,
//! its batches are appended (offsets assigned, in request order) and, instead of waiting for
//! the `acks=all` fdatasync, its response is queued and the next request is read, so the
//! produces of one connection share the log's group commit. At most
//! [`KafkaLimits::max_pending_produces`] responses wait per connection; at the limit the
//! oldest is awaited. Any other request first waits until every queued response is written,
//! then runs as before (so a Fetch or ListOffsets sees all earlier produces).
//!
//! Structure: one task per connection that alternates between reading and writing, not a
//! reader and a writer task. glommio 0.9's `TcpStream` cannot be split into halves (only
//! `futures_lite::io::split`, which locks), and every handler writes to the socket itself
//! (fetch streams record pieces uncopied), so the task keeps a persistent read buffer and,
//! when no whole request is buffered and responses are pending, races one socket read into
//! that buffer against the oldest pending completion. That race loses nothing: glommio's
//! unbuffered stream copies bytes into the caller's slice only inside a poll that returns
//! `Ready`, the buffer is trimmed back to the bytes received whichever side wins, and a
//! partially received request simply stays buffered. Completions are spawned tasks, so the
//! fdatasyncs progress while the connection reads.
//!
//! Bounds: the request size is checked from its 4-byte prefix before the request is
//! buffered ([`KafkaLimits::max_request_bytes`]), the buffer grows only with bytes that
//! arrive, and the generated codec checks every length and count against the bytes left.
//! A request that does not decode, an unknown API key or an unadvertised version closes the
//! connection (as Kafka does); ApiVersions at an unknown version gets the v0 error answer
//! clients use to downgrade.

mod admin;
mod data;
mod groups;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use tidelog_wire::kafka::codec::EncodeError;
use tidelog_wire::kafka::generated::produce_response::ProduceResponse;
use tidelog_wire::kafka::generated::{self, RequestBody};
use tidelog_wire::kafka::{self as kwire, DecodeError, Decoder};
use tidelog_wire::native::ErrorCode;

use super::pipeline::{read_or_complete, PendingQueue, Woke};
use super::shard::Shard;

/// Bounds of the Kafka listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaLimits {
    /// Largest request accepted (Kafka's `socket.request.max.bytes`); larger closes the
    /// connection before any of it is buffered.
    pub max_request_bytes: usize,
    /// Kafka connections a shard serves at once; more are closed at once.
    pub max_connections_per_shard: usize,
    /// Largest total of record bytes one fetch response carries.
    pub max_fetch_bytes: usize,
    /// Longest a fetch waits for `min_bytes`.
    pub max_fetch_wait_ms: u32,
    /// Largest batch a producer may send (`max.message.bytes`); the log's
    /// `max_batch_bytes` minus the 64-byte Tidelog header caps it too.
    pub max_batch_bytes: usize,
    /// Produce responses one connection may have queued (appended, waiting for their
    /// `acks=all` fdatasync or for earlier responses) before it stops reading requests.
    pub max_pending_produces: usize,
    /// Partitions one Produce or Fetch request may name; more closes the connection (each
    /// costs a response entry, so this bounds what a small request can make us hold).
    pub max_partitions_per_request: usize,
}

impl Default for KafkaLimits {
    fn default() -> Self {
        KafkaLimits {
            max_request_bytes: 100 << 20,
            max_connections_per_shard: 10_000,
            max_fetch_bytes: 64 << 20,
            max_fetch_wait_ms: 30_000,
            max_batch_bytes: 8 << 20,
            max_pending_produces: 64,
            max_partitions_per_request: 10_000,
        }
    }
}

pub(crate) use tidelog_wire::kafka::code;

/// The APIs and version ranges advertised in ApiVersions (KAFKA.md §1.4); nothing else is
/// answered. Produce 0–2 are advertised only because librdkafka before 2.11.1 gates its
/// compression support on Produce v0 being listed (KAFKA-18659); they are refused.
pub const ADVERTISED: &[(i16, i16, i16)] = &[
    (0, 0, 10), // Produce
    (1, 4, 12), // Fetch
    (2, 1, 7),  // ListOffsets
    (3, 0, 12), // Metadata
    (8, 2, 9),  // OffsetCommit
    (9, 1, 9),  // OffsetFetch
    (10, 0, 4), // FindCoordinator
    (11, 0, 7), // JoinGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 5), // LeaveGroup
    (14, 0, 5), // SyncGroup
    (15, 0, 5), // DescribeGroups
    (16, 0, 4), // ListGroups
    (18, 0, 4), // ApiVersions
    (19, 2, 7), // CreateTopics
    (20, 1, 6), // DeleteTopics
    (22, 0, 4), // InitProducerId
    (23, 2, 4), // OffsetForLeaderEpoch
];

/// Lowest Produce version actually served (v3: RecordBatch v2 only).
const PRODUCE_MIN_SERVED: i16 = 3;

/// The Produce API key.
const PRODUCE_KEY: i16 = 0;

fn advertised(api_key: i16) -> Option<(i16, i16)> {
    ADVERTISED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Accepts Kafka connections until the shard stops.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    super::shard::accept_until_stopped(shard, listener, "kafka", |shard, stream| async move {
        let count = shard.kafka_connections.get() + 1;
        shard.kafka_connections.set(count);
        if count <= shard.config.kafka_limits.max_connections_per_shard {
            let mut connection = KafkaConnection::new(Rc::clone(&shard), stream);
            if let Err(e) = connection.serve().await {
                tracing::debug!(shard = shard.id, error = %e, "kafka connection closed");
            }
        }
        shard
            .kafka_connections
            .set(shard.kafka_connections.get() - 1);
    })
    .await;
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KafkaConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("request does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("response does not encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("request of {0} bytes is outside [8, limit]")]
    Size(i64),
    #[error("unsupported API {api_key} v{version}")]
    Unsupported { api_key: i16, version: i16 },
    #[error("request names {0} partitions, more than the limit")]
    TooManyPartitions(usize),
    #[error("peer closed")]
    Closed,
    #[error("shard stopping")]
    Stopping,
}

/// The parts of a request header handlers need.
#[derive(Debug, Clone)]
pub(crate) struct RequestMeta {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

pub(crate) struct KafkaConnection {
    pub shard: Rc<Shard>,
    stream: TcpStream,
    pub out: BytesMut,
    /// Bytes received and not yet handled: whole requests and the start of the next one.
    /// It persists across reads, so an interrupted read loses nothing.
    inbuf: BytesMut,
    /// Produce responses not yet written, oldest first; at most
    /// [`KafkaLimits::max_pending_produces`].
    pub(crate) pending: PendingQueue<RequestMeta, ProduceResponse>,
    /// Host advertised to this client for every node.
    pub advertised_host: String,
    /// The client's address (for group member descriptions).
    pub client_host: String,
}

impl KafkaConnection {
    fn new(shard: Rc<Shard>, stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not pin fetched buffers and pending responses
        // forever: a write that makes no progress for this long closes the connection.
        let _ = stream.set_write_timeout(Some(crate::limits::WRITE_STALL_TIMEOUT));
        let advertised_host = match &shard.config.kafka_advertised_host {
            Some(host) => host.clone(),
            None => stream
                .local_addr()
                .map(advertise_for)
                .unwrap_or_else(|_| "localhost".into()),
        };
        let client_host = stream
            .peer_addr()
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default();
        KafkaConnection {
            shard,
            stream,
            out: BytesMut::with_capacity(4096),
            inbuf: BytesMut::new(),
            pending: PendingQueue::default(),
            advertised_host,
            client_host,
        }
    }

    async fn serve(&mut self) -> Result<(), KafkaConnError> {
        let result = self.serve_requests().await;
        if let Err(
            KafkaConnError::Closed
            | KafkaConnError::Decode(_)
            | KafkaConnError::Size(_)
            | KafkaConnError::Unsupported { .. }
            | KafkaConnError::TooManyPartitions(_),
        ) = &result
        {
            // The requests before the bad one (or the peer's half-close) are still answered.
            self.flush_pending().await?;
        }
        result
    }

    async fn serve_requests(&mut self) -> Result<(), KafkaConnError> {
        loop {
            let request = self.next_request().await?;
            if self.shard.stopped.get() {
                return Ok(());
            }
            self.handle(request).await?;
        }
    }

    /// The next whole request (without its size prefix). While waiting for its bytes, writes
    /// the pending responses that complete, oldest first.
    async fn next_request(&mut self) -> Result<Bytes, KafkaConnError> {
        loop {
            if let Some(request) = self.take_buffered_request()? {
                return Ok(request);
            }
            self.write_completed().await?;
            let need = match self.announced_total()? {
                Some(total) => total - self.inbuf.len(),
                None => 4 - self.inbuf.len(),
            };
            let Self {
                stream,
                inbuf,
                pending,
                ..
            } = self;
            match read_or_complete(stream, inbuf, need, REQUEST_RESERVE_BYTES, pending).await {
                Woke::Read(Ok(0)) => return Err(KafkaConnError::Closed),
                Woke::Read(Ok(_)) => {}
                Woke::Read(Err(e)) => return Err(e.into()),
                Woke::Done(done) => {
                    let (meta, response) = done.map_err(|_| KafkaConnError::Stopping)?;
                    self.respond(&meta, |out, v| response.encode(out, v))
                        .await?;
                }
            }
        }
    }

    /// The total size (prefix included) the buffered request announces, checked against
    /// [`KafkaLimits::max_request_bytes`]; `None` before its prefix has arrived.
    fn announced_total(&self) -> Result<Option<usize>, KafkaConnError> {
        let Some(prefix) = self.inbuf.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let max = self.shard.config.kafka_limits.max_request_bytes;
        match usize::try_from(size) {
            Ok(n) if (8..=max).contains(&n) => Ok(Some(n + 4)),
            _ => Err(KafkaConnError::Size(i64::from(size))),
        }
    }

    /// Takes one whole request off the read buffer, if one is there.
    fn take_buffered_request(&mut self) -> Result<Option<Bytes>, KafkaConnError> {
        match self.announced_total()? {
            Some(total) if self.inbuf.len() >= total => {
                self.inbuf.advance(4);
                Ok(Some(self.inbuf.split_to(total - 4).freeze()))
            }
            _ => Ok(None),
        }
    }

    /// Writes the pending responses that are complete, oldest first, without waiting.
    async fn write_completed(&mut self) -> Result<(), KafkaConnError> {
        while let Some(done) = self.pending.pop_completed().await {
            let (meta, response) = done.map_err(|_| KafkaConnError::Stopping)?;
            self.respond(&meta, |out, v| response.encode(out, v))
                .await?;
        }
        Ok(())
    }

    /// Waits for every pending response and writes them in order.
    pub(crate) async fn flush_pending(&mut self) -> Result<(), KafkaConnError> {
        while !self.pending.is_empty() {
            self.write_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest pending response and writes it.
    pub(crate) async fn write_oldest(&mut self) -> Result<(), KafkaConnError> {
        if let Some(done) = self.pending.pop_oldest().await {
            let (meta, response) = done.map_err(|_| KafkaConnError::Stopping)?;
            self.respond(&meta, |out, v| response.encode(out, v))
                .await?;
        }
        Ok(())
    }

    async fn handle(&mut self, request: Bytes) -> Result<(), KafkaConnError> {
        let Some((api_key, version, correlation_id)) = kwire::peek_request_ids(&request) else {
            return Err(KafkaConnError::Size(request.len() as i64));
        };
        if api_key != PRODUCE_KEY {
            // Everything but Produce runs after every earlier response is out.
            self.flush_pending().await?;
        }
        if api_key == kwire::API_VERSIONS_KEY && !(0..=4).contains(&version) {
            return self.api_versions_unsupported(correlation_id).await;
        }
        let served = match advertised(api_key) {
            Some((lo, hi)) if api_key == PRODUCE_KEY => {
                (lo.max(PRODUCE_MIN_SERVED)..=hi).contains(&version)
            }
            Some((lo, hi)) => (lo..=hi).contains(&version),
            None => false,
        };
        if !served {
            tracing::debug!(api_key, version, "unsupported Kafka request: closing");
            return Err(KafkaConnError::Unsupported { api_key, version });
        }
        let mut d = Decoder::new(&request);
        let header = kwire::decode_request_header(&mut d)?;
        let body = generated::decode_request_body(api_key, version, &mut d)?;
        // Trailing bytes are tolerated (librdkafka's Metadata quirk, KAFKA.md §1.6.3).
        let meta = RequestMeta {
            api_key,
            version,
            correlation_id,
            client_id: header.client_id.unwrap_or_default(),
        };
        match body {
            RequestBody::ApiVersions(_) => self.api_versions(&meta).await,
            RequestBody::Metadata(r) => self.metadata(&meta, r).await,
            RequestBody::Produce(r) => {
                let n = r.topic_data.iter().map(|t| t.partition_data.len()).sum();
                self.check_partitions(n)?;
                self.produce(&meta, r).await
            }
            RequestBody::Fetch(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len()).sum();
                self.check_partitions(n)?;
                self.fetch(&meta, r).await
            }
            RequestBody::ListOffsets(r) => self.list_offsets(&meta, r).await,
            RequestBody::InitProducerId(r) => self.init_producer_id(&meta, r).await,
            RequestBody::CreateTopics(r) => self.create_topics(&meta, r).await,
            RequestBody::DeleteTopics(r) => self.delete_topics(&meta, r).await,
            RequestBody::OffsetForLeaderEpoch(r) => self.offset_for_leader_epoch(&meta, r).await,
            RequestBody::FindCoordinator(r) => self.find_coordinator(&meta, r).await,
            RequestBody::JoinGroup(r) => self.join_group(&meta, r).await,
            RequestBody::SyncGroup(r) => self.sync_group(&meta, r).await,
            RequestBody::Heartbeat(r) => self.heartbeat(&meta, r).await,
            RequestBody::LeaveGroup(r) => self.leave_group(&meta, r).await,
            RequestBody::OffsetCommit(r) => self.offset_commit(&meta, r).await,
            RequestBody::OffsetFetch(r) => self.offset_fetch(&meta, r).await,
            RequestBody::DescribeGroups(r) => self.describe_groups(&meta, r).await,
            RequestBody::ListGroups(r) => self.list_groups(&meta, r).await,
        }
    }

    fn check_partitions(&self, n: usize) -> Result<(), KafkaConnError> {
        if n > self.shard.config.kafka_limits.max_partitions_per_request {
            return Err(KafkaConnError::TooManyPartitions(n));
        }
        Ok(())
    }

    /// Starts a response in `self.out`: size placeholder and header.
    pub(crate) fn begin(&mut self, meta: &RequestMeta) {
        self.out.clear();
        self.out.put_i32(0);
        self.out.put_i32(meta.correlation_id);
        if kwire::response_header_version(meta.api_key, meta.version) >= 1 {
            self.out.put_u8(0);
        }
    }

    /// Patches the size prefix (`extra`: bytes sent after `self.out`) and sends `self.out`.
    pub(crate) async fn finish(&mut self, extra: usize) -> Result<(), KafkaConnError> {
        let size = self.out.len() - 4 + extra;
        let size = i32::try_from(size).map_err(|_| EncodeError::TooLong(size))?;
        self.out[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Encodes and sends a whole response.
    pub(crate) async fn respond(
        &mut self,
        meta: &RequestMeta,
        encode: impl FnOnce(&mut BytesMut, i16) -> Result<(), EncodeError>,
    ) -> Result<(), KafkaConnError> {
        self.begin(meta);
        encode(&mut self.out, meta.version)?;
        self.finish(0).await
    }

    async fn api_versions_unsupported(
        &mut self,
        correlation_id: i32,
    ) -> Result<(), KafkaConnError> {
        // v0 body: error 35 and the ApiVersions range, so the client retries lower.
        self.out.clear();
        self.out.put_i32(0);
        self.out.put_i32(correlation_id);
        self.out.put_i16(code::UNSUPPORTED_VERSION);
        self.out.put_i32(1);
        self.out.put_i16(kwire::API_VERSIONS_KEY);
        self.out.put_i16(0);
        self.out.put_i16(4);
        self.finish(0).await
    }

    async fn api_versions(&mut self, meta: &RequestMeta) -> Result<(), KafkaConnError> {
        use generated::api_versions_response::{ApiVersion, ApiVersionsResponse};
        let api_keys = ADVERTISED
            .iter()
            .map(|&(api_key, min_version, max_version)| ApiVersion {
                api_key,
                min_version,
                max_version,
            })
            .collect();
        let response = ApiVersionsResponse {
            api_keys,
            ..Default::default()
        };
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// Host and port advertised for node `shard`.
    pub(crate) fn node(&self, shard: usize) -> (String, i32) {
        let port = self
            .shard
            .kafka_endpoints
            .get(shard)
            .map_or(0, |addr| i32::from(addr.port()));
        (self.advertised_host.clone(), port)
    }
}

/// The host to advertise to a client that reached us at `local`: loopback becomes
/// `localhost` (we listen on both families, and clients resolve it however they like), an
/// IPv4-mapped address its IPv4 form.
fn advertise_for(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if ip.is_loopback() {
        "localhost".into()
    } else {
        ip.to_string()
    }
}

/// The Kafka error code for a native/engine error code.
pub(crate) fn kafka_code(error: ErrorCode) -> i16 {
    match error {
        ErrorCode::None => code::NONE,
        ErrorCode::UnknownTopicOrPartition => code::UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode::NotOwner => code::NOT_LEADER_OR_FOLLOWER,
        ErrorCode::OffsetOutOfRange => code::OFFSET_OUT_OF_RANGE,
        ErrorCode::CorruptBatch => code::CORRUPT_MESSAGE,
        ErrorCode::RecordTooLarge => code::MESSAGE_TOO_LARGE,
        ErrorCode::InvalidTopic => code::INVALID_TOPIC_EXCEPTION,
        ErrorCode::TopicAlreadyExists => code::TOPIC_ALREADY_EXISTS,
        ErrorCode::InvalidConfig => code::INVALID_CONFIG,
        ErrorCode::InvalidRequest => code::INVALID_REQUEST,
        ErrorCode::DiskFull | ErrorCode::StorageError => code::KAFKA_STORAGE_ERROR,
        ErrorCode::ShuttingDown => code::NOT_LEADER_OR_FOLLOWER,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// Bytes reserved for a request before its bytes arrive.
const REQUEST_RESERVE_BYTES: usize = 1 << 20;
