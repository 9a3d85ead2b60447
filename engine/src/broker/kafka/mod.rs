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
//! A connection handles its requests in order, one at a time, as Kafka does (responses must
//! keep request order). Bounds: the request size is checked from its 4-byte prefix before
//! anything is buffered ([`KafkaLimits::max_request_bytes`]), the buffer grows only with bytes
//! that arrive, and the generated codec checks every length and count against the bytes left.
//! A request that does not decode, an unknown API key or an unadvertised version closes the
//! connection (as Kafka does); ApiVersions at an unknown version gets the v0 error answer
//! clients use to downgrade.

mod admin;
mod data;
mod groups;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use tidelog_wire::kafka::codec::EncodeError;
use tidelog_wire::kafka::generated::{self, RequestBody};
use tidelog_wire::kafka::{self as kwire, DecodeError, Decoder};
use tidelog_wire::native::ErrorCode;

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
}

impl Default for KafkaLimits {
    fn default() -> Self {
        KafkaLimits {
            max_request_bytes: 100 << 20,
            max_connections_per_shard: 10_000,
            max_fetch_bytes: 64 << 20,
            max_fetch_wait_ms: 30_000,
            max_batch_bytes: 8 << 20,
        }
    }
}

/// Kafka error codes the listener answers with.
pub(crate) mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
}

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

fn advertised(api_key: i16) -> Option<(i16, i16)> {
    ADVERTISED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Accepts Kafka connections until the shard stops.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stopping.listen().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id, error = %e, "kafka accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.stopped.get() {
            return;
        }
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
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
        .detach();
    }
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
    #[error("peer closed")]
    Closed,
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
    /// Host advertised to this client for every node.
    pub advertised_host: String,
    /// The client's address (for group member descriptions).
    pub client_host: String,
}

impl KafkaConnection {
    fn new(shard: Rc<Shard>, stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
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
            advertised_host,
            client_host,
        }
    }

    async fn serve(&mut self) -> Result<(), KafkaConnError> {
        loop {
            let request = self.read_request().await?;
            if self.shard.stopped.get() {
                return Ok(());
            }
            self.handle(request).await?;
        }
    }

    /// Reads one request (without its size prefix), refusing an oversized one from the
    /// prefix alone and growing the buffer only with bytes that arrive.
    async fn read_request(&mut self) -> Result<Bytes, KafkaConnError> {
        let mut prefix = [0u8; 4];
        match self.stream.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(KafkaConnError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let size = i32::from_be_bytes(prefix);
        let max = self.shard.config.kafka_limits.max_request_bytes;
        let total = match usize::try_from(size) {
            Ok(n) if (8..=max).contains(&n) => n,
            _ => return Err(KafkaConnError::Size(i64::from(size))),
        };
        let mut buf = BytesMut::with_capacity(total.min(REQUEST_RESERVE_BYTES));
        while buf.len() < total {
            let filled = buf.len();
            let chunk = (total - filled).min(READ_CHUNK_BYTES);
            buf.resize(filled + chunk, 0);
            let read = self.stream.read(&mut buf[filled..]).await?;
            if read == 0 {
                return Err(KafkaConnError::Closed);
            }
            buf.truncate(filled + read);
        }
        Ok(buf.freeze())
    }

    async fn handle(&mut self, request: Bytes) -> Result<(), KafkaConnError> {
        let Some((api_key, version, correlation_id)) = kwire::peek_request_ids(&request) else {
            return Err(KafkaConnError::Size(request.len() as i64));
        };
        if api_key == kwire::API_VERSIONS_KEY && !(0..=4).contains(&version) {
            return self.api_versions_unsupported(correlation_id).await;
        }
        let served = match advertised(api_key) {
            Some((lo, hi)) if api_key == 0 => (lo.max(PRODUCE_MIN_SERVED)..=hi).contains(&version),
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
            RequestBody::Produce(r) => self.produce(&meta, r).await,
            RequestBody::Fetch(r) => self.fetch(&meta, r).await,
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

/// Most bytes a request buffer grows by per socket read.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Bytes reserved for a request before its bytes arrive.
const REQUEST_RESERVE_BYTES: usize = 1 << 20;
