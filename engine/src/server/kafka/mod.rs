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
//! The connection loop (persistent read buffer, pipelined responses in request order) is
//! [`super::pipeline::Connection`], shared with the native listener.
//!
//! Bounds: the request size is checked from its 4-byte prefix before the request is
//! buffered ([`KafkaLimits::max_request_bytes`]), the buffer grows only with bytes that
//! arrive, and the generated codec checks every length and count against the bytes left.
//! A request that does not decode, an unknown API key or an unadvertised version closes the
//! connection (as Kafka does); ApiVersions at an unknown version gets the v0 error answer
//! clients use to downgrade.

mod admin;
mod cluster;
mod configs;
mod data;
mod groups;
mod records;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use glommio::net::TcpStream;
use tidelog_wire::kafka::codec::EncodeError;
use tidelog_wire::kafka::generated::produce_response::ProduceResponse;
use tidelog_wire::kafka::generated::{self, RequestBody};
use tidelog_wire::kafka::{self as kwire, DecodeError, Decoder};

use super::pipeline::{ConnError, Connection, Protocol};
use super::Server;
use crate::io::Clock as _;
use crate::shard::{Shard, ShardError};

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
    /// Elements one request may name (partitions of a Produce, Fetch, ListOffsets,
    /// OffsetCommit, OffsetFetch or OffsetForLeaderEpoch; topics of a Metadata, CreateTopics
    /// or DeleteTopics); more closes the connection (each costs a lookup and a response
    /// entry, so this bounds what one request can make us do and hold).
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
    (2, 1, 10), // ListOffsets
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
    (21, 0, 2), // DeleteRecords
    (22, 0, 4), // InitProducerId
    (23, 2, 4), // OffsetForLeaderEpoch
    (32, 0, 4), // DescribeConfigs
    (33, 0, 2), // AlterConfigs
    (35, 0, 4), // DescribeLogDirs
    (37, 0, 3), // CreatePartitions
    (42, 0, 2), // DeleteGroups
    (43, 0, 2), // ElectLeaders
    (44, 0, 1), // IncrementalAlterConfigs
    (45, 0, 0), // AlterPartitionReassignments
    (46, 0, 0), // ListPartitionReassignments
    (47, 0, 0), // OffsetDelete
    (60, 0, 1), // DescribeCluster
    (61, 0, 0), // DescribeProducers
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

/// Serves one accepted Kafka connection to its end.
pub(super) async fn serve_connection(server: Rc<Server>, stream: TcpStream) {
    let count = server.kafka_connections.get() + 1;
    server.kafka_connections.set(count);
    server.publish_connections();
    let limits = server.config.kafka_limits;
    if count <= limits.max_connections_per_shard {
        let advertised_host = match &server.config.kafka_advertised_host {
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
        let shard_id = server.shard.id();
        let proto = Kafka {
            server: Rc::clone(&server),
            advertised_host,
            client_host,
        };
        let mut connection = Connection::new(
            stream,
            proto,
            limits.max_pending_produces,
            server.config.timeouts,
            Rc::clone(&server.request_memory),
        );
        if let Err(e) = connection.serve().await {
            tracing::debug!(shard = shard_id, error = %e, "kafka connection closed");
        }
    }
    server
        .kafka_connections
        .set(server.kafka_connections.get() - 1);
    server.publish_connections();
}

/// Why a Kafka request was refused (the connection closes after the pending responses).
#[derive(Debug, thiserror::Error)]
pub(crate) enum KafkaError {
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
}

/// Why a Kafka connection ended.
pub(crate) type KafkaConnError = ConnError<KafkaError>;

impl From<DecodeError> for KafkaConnError {
    fn from(e: DecodeError) -> Self {
        ConnError::Protocol(KafkaError::Decode(e))
    }
}

impl From<EncodeError> for KafkaConnError {
    fn from(e: EncodeError) -> Self {
        ConnError::Protocol(KafkaError::Encode(e))
    }
}

/// The parts of a request header handlers need.
#[derive(Debug, Clone)]
pub(crate) struct RequestMeta {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

/// The Kafka protocol's per-connection state.
pub(crate) struct Kafka {
    server: Rc<Server>,
    /// Host advertised to this client for every node.
    advertised_host: String,
    /// The client's address (for group member descriptions).
    client_host: String,
}

/// A Kafka connection: the shared loop with the Kafka protocol.
pub(crate) type KafkaConnection = Connection<Kafka>;

impl Protocol for Kafka {
    type Meta = RequestMeta;
    type Response = ProduceResponse;
    type Error = KafkaError;
    const FRAME_RESERVE_BYTES: usize = 1 << 20;

    fn announced(&self, buffered: &[u8]) -> Result<Option<usize>, KafkaError> {
        let Some(prefix) = buffered.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let max = self.server.config.kafka_limits.max_request_bytes;
        match usize::try_from(size) {
            Ok(n) if (8..=max).contains(&n) => Ok(Some(n + 4)),
            _ => Err(KafkaError::Size(i64::from(size))),
        }
    }

    fn encode(
        &mut self,
        meta: &RequestMeta,
        response: &ProduceResponse,
        out: &mut BytesMut,
    ) -> Result<(), KafkaError> {
        begin(out, meta);
        response.encode(out, meta.version)?;
        patch_size(out, 0)?;
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.server.shard.is_stopped()
    }

    async fn handle(
        conn: &mut Connection<Self>,
        mut frame: BytesMut,
    ) -> Result<(), KafkaConnError> {
        frame.advance(4);
        conn.handle_request(frame.freeze()).await
    }

    /// Kafka closes a connection whose request is oversized without a word.
    async fn refuse(_conn: &mut Connection<Self>, _error: &KafkaError) {}
}

/// Starts a response in `out`: size placeholder and header.
fn begin(out: &mut BytesMut, meta: &RequestMeta) {
    out.clear();
    out.put_i32(0);
    out.put_i32(meta.correlation_id);
    if kwire::response_header_version(meta.api_key, meta.version) >= 1 {
        out.put_u8(0);
    }
}

/// Patches the size prefix of the response in `out` (`extra`: bytes sent after `out`).
fn patch_size(out: &mut BytesMut, extra: usize) -> Result<(), EncodeError> {
    let size = out.len() - 4 + extra;
    let size = i32::try_from(size).map_err(|_| EncodeError::TooLong(size))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

impl KafkaConnection {
    /// The listeners' state on this shard.
    pub(crate) fn server(&self) -> &Rc<Server> {
        &self.proto.server
    }

    /// The shard behind this connection.
    pub(crate) fn shard(&self) -> &Rc<Shard> {
        &self.proto.server.shard
    }

    /// The client's address (for group member descriptions).
    pub(crate) fn client_host(&self) -> &str {
        &self.proto.client_host
    }

    async fn handle_request(&mut self, request: Bytes) -> Result<(), KafkaConnError> {
        let Some((api_key, version, correlation_id)) = kwire::peek_request_ids(&request) else {
            return Err(ConnError::Protocol(KafkaError::Size(request.len() as i64)));
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
            return Err(ConnError::Protocol(KafkaError::Unsupported {
                api_key,
                version,
            }));
        }
        // Arrays longer than a request may name fail at their count, before any element is
        // decoded or allocated (the per-request checks below count across arrays).
        let cap = self.server().config.kafka_limits.max_partitions_per_request;
        let mut d = Decoder::with_max_elements(&request, cap);
        let header = kwire::decode_request_header(&mut d)?;
        let body = generated::decode_request_body(api_key, version, &mut d)?;
        // Trailing bytes are tolerated (librdkafka's Metadata quirk, KAFKA.md §1.6.3).
        let meta = RequestMeta {
            api_key,
            version,
            correlation_id,
            client_id: header.client_id.unwrap_or_default(),
        };
        let metrics_shard = Rc::clone(self.shard());
        metrics_shard.metrics.request(api_key);
        // Produce records its own latency (its response may wait for the fdatasync after
        // this returns).
        let started = (api_key != PRODUCE_KEY).then(|| crate::io::SystemClock.now_us());
        let outcome = self.dispatch(&meta, body).await;
        if let Some(started) = started {
            let took = crate::io::SystemClock.now_us().saturating_sub(started);
            metrics_shard.metrics.latency(api_key, -2, took);
        }
        outcome
    }

    async fn dispatch(
        &mut self,
        meta: &RequestMeta,
        body: RequestBody,
    ) -> Result<(), KafkaConnError> {
        let meta = meta.clone();
        match body {
            RequestBody::ApiVersions(_) => self.api_versions(&meta).await,
            RequestBody::Metadata(r) => {
                self.check_partitions(r.topics.as_ref().map_or(0, Vec::len))?;
                self.metadata(&meta, r).await
            }
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
            RequestBody::ListOffsets(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len()).sum();
                self.check_partitions(n)?;
                self.list_offsets(&meta, r).await
            }
            RequestBody::InitProducerId(r) => self.init_producer_id(&meta, r).await,
            RequestBody::DeleteRecords(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len()).sum();
                self.check_partitions(n)?;
                self.delete_records(&meta, r).await
            }
            RequestBody::DescribeLogDirs(r) => {
                let n = r
                    .topics
                    .as_ref()
                    .map_or(0, |t| t.iter().map(|t| t.partitions.len() + 1).sum());
                self.check_partitions(n)?;
                self.describe_log_dirs(&meta, r).await
            }
            RequestBody::DescribeProducers(r) => {
                let n = r.topics.iter().map(|t| t.partition_indexes.len() + 1).sum();
                self.check_partitions(n)?;
                self.describe_producers(&meta, r).await
            }
            RequestBody::DeleteGroups(r) => {
                self.check_partitions(r.groups_names.len())?;
                self.delete_groups(&meta, r).await
            }
            RequestBody::OffsetDelete(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len() + 1).sum();
                self.check_partitions(n)?;
                self.offset_delete(&meta, r).await
            }
            RequestBody::CreatePartitions(r) => {
                self.check_partitions(r.topics.len())?;
                self.create_partitions(&meta, r).await
            }
            RequestBody::DescribeConfigs(r) => {
                self.check_partitions(r.resources.len())?;
                self.describe_configs(&meta, r).await
            }
            RequestBody::AlterConfigs(r) => {
                let n = r.resources.iter().map(|x| x.configs.len() + 1).sum();
                self.check_partitions(n)?;
                self.alter_configs(&meta, r).await
            }
            RequestBody::IncrementalAlterConfigs(r) => {
                let n = r.resources.iter().map(|x| x.configs.len() + 1).sum();
                self.check_partitions(n)?;
                self.incremental_alter_configs(&meta, r).await
            }
            RequestBody::CreateTopics(r) => {
                self.check_partitions(r.topics.len())?;
                self.create_topics(&meta, r).await
            }
            RequestBody::DeleteTopics(r) => {
                self.check_partitions(r.topics.len() + r.topic_names.len())?;
                self.delete_topics(&meta, r).await
            }
            RequestBody::OffsetForLeaderEpoch(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len()).sum();
                self.check_partitions(n)?;
                self.offset_for_leader_epoch(&meta, r).await
            }
            RequestBody::FindCoordinator(r) => self.find_coordinator(&meta, r).await,
            RequestBody::JoinGroup(r) => self.join_group(&meta, r).await,
            RequestBody::SyncGroup(r) => self.sync_group(&meta, r).await,
            RequestBody::Heartbeat(r) => self.heartbeat(&meta, r).await,
            RequestBody::LeaveGroup(r) => self.leave_group(&meta, r).await,
            RequestBody::OffsetCommit(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len()).sum();
                self.check_partitions(n)?;
                self.offset_commit(&meta, r).await
            }
            RequestBody::OffsetFetch(r) => {
                let topics = r.topics.iter().flatten().map(|t| t.partition_indexes.len());
                let groups = r.groups.iter().map(|g| {
                    1 + g
                        .topics
                        .iter()
                        .flatten()
                        .map(|t| t.partition_indexes.len())
                        .sum::<usize>()
                });
                self.check_partitions(topics.sum::<usize>() + groups.sum::<usize>())?;
                self.offset_fetch(&meta, r).await
            }
            RequestBody::ElectLeaders(r) => {
                let n = r
                    .topic_partitions
                    .iter()
                    .flatten()
                    .map(|t| t.partitions.len());
                self.check_partitions(n.sum())?;
                self.elect_leaders(&meta, r).await
            }
            RequestBody::AlterPartitionReassignments(r) => {
                let n = r.topics.iter().map(|t| t.partitions.len());
                self.check_partitions(n.sum())?;
                self.alter_partition_reassignments(&meta, r).await
            }
            RequestBody::ListPartitionReassignments(r) => {
                let n = r.topics.iter().flatten().map(|t| t.partition_indexes.len());
                self.check_partitions(n.sum())?;
                self.list_partition_reassignments(&meta, r).await
            }
            RequestBody::DescribeCluster(r) => self.describe_cluster(&meta, r).await,
            RequestBody::DescribeGroups(r) => self.describe_groups(&meta, r).await,
            RequestBody::ListGroups(r) => self.list_groups(&meta, r).await,
        }
    }

    fn check_partitions(&self, n: usize) -> Result<(), KafkaConnError> {
        if n > self.server().config.kafka_limits.max_partitions_per_request {
            return Err(ConnError::Protocol(KafkaError::TooManyPartitions(n)));
        }
        Ok(())
    }

    /// Starts a response in `self.out`: size placeholder and header.
    pub(crate) fn begin(&mut self, meta: &RequestMeta) {
        begin(&mut self.out, meta);
    }

    /// Patches the size prefix (`extra`: bytes sent after `self.out`) and sends `self.out`.
    pub(crate) async fn finish(&mut self, extra: usize) -> Result<(), KafkaConnError> {
        patch_size(&mut self.out, extra)?;
        let until = self.response_until(self.out.len() + extra);
        crate::server::write_by(&mut self.stream, &self.out, until).await?;
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
            .server()
            .endpoints
            .kafka
            .get(shard)
            .map_or(0, |addr| i32::from(addr.port()));
        (self.proto.advertised_host.clone(), port)
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

/// The Kafka error code for a shard error.
pub(crate) fn error_code(error: &ShardError) -> i16 {
    match error {
        ShardError::UnknownTopicOrPartition => code::UNKNOWN_TOPIC_OR_PARTITION,
        ShardError::NotOwner | ShardError::ShuttingDown(_) => code::NOT_LEADER_OR_FOLLOWER,
        ShardError::OffsetOutOfRange(_) => code::OFFSET_OUT_OF_RANGE,
        // Also stored data that fails its checks: KAFKA_STORAGE_ERROR would be retried
        // silently for ever (librdkafka takes it for a leader change), while CORRUPT_MESSAGE
        // reaches the application in librdkafka (a consumer error), the Java client (a
        // KafkaException from poll) and kafka-python (raised), which can then seek past.
        ShardError::CorruptBatch(_) | ShardError::CorruptStored(_) => code::CORRUPT_MESSAGE,
        ShardError::BatchTooLarge(_) => code::MESSAGE_TOO_LARGE,
        ShardError::InvalidTopic(_) => code::INVALID_TOPIC_EXCEPTION,
        ShardError::TopicExists(_) => code::TOPIC_ALREADY_EXISTS,
        ShardError::InvalidConfig(_) => code::INVALID_CONFIG,
        ShardError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
        ShardError::PartitionLimit(_) => code::POLICY_VIOLATION,
        ShardError::InvalidRequest(_) => code::INVALID_REQUEST,
        ShardError::DiskFull(_) | ShardError::Storage(_) => code::KAFKA_STORAGE_ERROR,
        ShardError::InvalidProducerEpoch(_) => code::INVALID_PRODUCER_EPOCH,
        ShardError::InvalidReplicationFactor(_) => code::INVALID_REPLICATION_FACTOR,
        ShardError::NotController(_) => code::NOT_CONTROLLER,
        ShardError::FencedLeaderEpoch(_) => code::FENCED_LEADER_EPOCH,
        ShardError::UnknownLeaderEpoch(_) => code::UNKNOWN_LEADER_EPOCH,
        ShardError::NotEnoughReplicas(_) => code::NOT_ENOUGH_REPLICAS,
        ShardError::NotEnoughReplicasAfterAppend(_) => code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ShardError::ReplicationTimedOut(_) => code::REQUEST_TIMED_OUT,
        ShardError::OutOfOrderSequence(_) => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        ShardError::ElectionNotNeeded(_) => code::ELECTION_NOT_NEEDED,
        ShardError::CoordinatorLoading => code::COORDINATOR_LOAD_IN_PROGRESS,
        ShardError::PreferredLeaderNotAvailable(_) => code::PREFERRED_LEADER_NOT_AVAILABLE,
        ShardError::InvalidReplicaAssignment(_) => code::INVALID_REPLICA_ASSIGNMENT,
        ShardError::NoReassignmentInProgress(_) => code::NO_REASSIGNMENT_IN_PROGRESS,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}
