//! [`Client`]: metadata, routing of partitions to their shard's connection, retries, and the
//! admin and offset operations.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use tidelog_wire::native::{
    BodyT, CommitOffsetT, CreateTopicsRequestT, DeleteTopicsRequestT, ErrorCode,
    FindCoordinatorRequestT, ListOffsetsPartitionT, ListOffsetsRequestT, MetadataRequestT,
    OffsetCommitRequestT, OffsetFetchRequestT, TopicPartitionT, TopicSpecT,
};

use crate::connection::{body_name, ConnectOptions, Connection, Response};
use crate::error::{ClientError, Result};
use crate::limits::{
    CONNECT_TIMEOUT_DEFAULT, REQUEST_TIMEOUT_DEFAULT, RETRIES_DEFAULT, RETRIES_MAX,
    RETRY_BACKOFF_DEFAULT,
};

/// `list_offsets` timestamp for the offset after the last record.
pub const LATEST: i64 = -1;
/// `list_offsets` timestamp for the first offset still in the log.
pub const EARLIEST: i64 = -2;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in the handshake; shows up in the broker's logs.
    pub client_id: String,
    /// Limit on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for one response.
    pub request_timeout: Duration,
    /// Attempts after the first for retriable errors (at most [`RETRIES_MAX`]).
    pub retries: usize,
    /// Retry `n` waits `n * retry_backoff` first.
    pub retry_backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            client_id: "tidelog-client".into(),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            retries: RETRIES_DEFAULT,
            retry_backoff: RETRY_BACKOFF_DEFAULT,
        }
    }
}

/// Endpoint ids per node: a shard's endpoint id is `node * ENDPOINTS_PER_NODE + shard` (the
/// Kafka broker id Tidelog gives it); on a single node (node 0) it is the shard.
pub const ENDPOINTS_PER_NODE: u64 = 1024;

/// The endpoint id of `shard` on `node` (see [`ENDPOINTS_PER_NODE`]).
pub fn endpoint_id(node: u64, shard: u16) -> u64 {
    node.saturating_mul(ENDPOINTS_PER_NODE)
        .saturating_add(u64::from(shard))
}

/// A shard's own listener, as metadata advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The node it is on: 0 on a single node, the node id in a cluster.
    pub node: u64,
    /// The shard.
    pub shard: u16,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// What metadata says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub name: String,
    /// Owning endpoint id of each partition (its shard on a single node; in a cluster its
    /// leader's shard, see [`endpoint_id`]), by partition index.
    pub partitions: BTreeMap<i32, u64>,
    /// Retention by age (-1: broker default or none).
    pub retention_ms: i64,
    /// Retention by size (-1: broker default or none).
    pub retention_bytes: i64,
}

impl TopicInfo {
    /// Number of partitions.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }
}

/// A metadata snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Shard endpoints, by endpoint id (the shard on a single node).
    pub endpoints: BTreeMap<u64, Endpoint>,
    /// Topics that exist, by name.
    pub topics: BTreeMap<String, TopicInfo>,
}

/// A committed offset as `fetch_committed` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed position (next offset to read), `None` if the group has none.
    pub offset: Option<i64>,
}

struct Inner {
    bootstrap: SocketAddr,
    config: ClientConfig,
    metadata: RefCell<Metadata>,
    /// Bumped whenever cached topic metadata changes, so users of it (the producer's
    /// partition tables) can tell their copy is current with one load.
    generation: Cell<u64>,
    /// Resolved endpoint addresses, by endpoint id.
    endpoint_addrs: RefCell<HashMap<u64, SocketAddr>>,
    /// One connection per address, opened lazily.
    conns: RefCell<HashMap<SocketAddr, Connection>>,
    /// Serialises connecting so that concurrent requests share one new connection.
    connecting: Semaphore,
}

/// A client of one broker. Cheap to clone; clones share connections and metadata.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.bootstrap)
            .field("connections", &self.inner.conns.borrow().len())
            .finish()
    }
}

impl Client {
    /// Connects to `bootstrap` (any shard; usually the broker's shared port) with defaults.
    ///
    /// # Errors
    /// As [`Connection::connect`].
    pub async fn connect(bootstrap: SocketAddr) -> Result<Self> {
        Self::connect_with(bootstrap, ClientConfig::default()).await
    }

    /// Connects to `bootstrap` with `config`.
    ///
    /// # Errors
    /// As [`Connection::connect`]; [`ClientError::InvalidArgument`] for `retries` above
    /// [`RETRIES_MAX`].
    pub async fn connect_with(bootstrap: SocketAddr, config: ClientConfig) -> Result<Self> {
        if config.retries > RETRIES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "retries {} above {RETRIES_MAX}",
                config.retries
            )));
        }
        let client = Client {
            inner: Rc::new(Inner {
                bootstrap,
                config,
                metadata: RefCell::new(Metadata::default()),
                generation: Cell::new(0),
                endpoint_addrs: RefCell::new(HashMap::new()),
                conns: RefCell::new(HashMap::new()),
                connecting: Semaphore::new(1),
            }),
        };
        client.conn_to(bootstrap).await?;
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The open connection to `addr`, connecting first if there is none (or it closed).
    async fn conn_to(&self, addr: SocketAddr) -> Result<Connection> {
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        let _one = self
            .inner
            .connecting
            .acquire_permit(1)
            .await
            .map_err(|_| ClientError::Closed)?;
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        let options = ConnectOptions {
            connect_timeout: self.inner.config.connect_timeout,
            request_timeout: self.inner.config.request_timeout,
        };
        let conn = Connection::connect_with(addr, &self.inner.config.client_id, options).await?;
        self.inner.conns.borrow_mut().insert(addr, conn.clone());
        Ok(conn)
    }

    fn open_conn(&self, addr: SocketAddr) -> Option<Connection> {
        let mut conns = self.inner.conns.borrow_mut();
        match conns.get(&addr) {
            Some(c) if !c.is_closed() => Some(c.clone()),
            Some(_) => {
                conns.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// The connection for metadata and admin requests (any shard answers them): the
    /// bootstrap address, or when it does not answer (its node is down), any endpoint the
    /// last metadata listed.
    async fn any_conn(&self) -> Result<Connection> {
        let first = match self.conn_to(self.inner.bootstrap).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let mut others: Vec<SocketAddr> = self
            .inner
            .endpoint_addrs
            .borrow()
            .values()
            .copied()
            .filter(|a| *a != self.inner.bootstrap)
            .collect();
        others.sort_unstable();
        others.dedup();
        for addr in others {
            if let Ok(c) = self.conn_to(addr).await {
                return Ok(c);
            }
        }
        Err(first)
    }

    /// The connection to endpoint `id`'s own listener, as metadata advertises it.
    pub(crate) async fn shard_conn(&self, id: u64) -> Result<Connection> {
        let addr = self.inner.endpoint_addrs.borrow().get(&id).copied();
        let addr = match addr {
            Some(a) => a,
            None => {
                self.metadata(&[]).await?;
                let found = self.inner.endpoint_addrs.borrow().get(&id).copied();
                found.ok_or_else(|| ClientError::Protocol {
                    code: ErrorCode::NotOwner,
                    message: format!("metadata lists no endpoint {id}"),
                })?
            }
        };
        self.conn_to(addr).await
    }

    /// The shard owning `topic/partition` per cached metadata (fetched if the topic is not
    /// cached).
    ///
    /// # Errors
    /// [`ClientError::UnknownTopic`] if metadata does not list it.
    pub async fn owner(&self, topic: &str, partition: i32) -> Result<u64> {
        // Cached: a lookup without cloning the topic's partition map (once per produce request).
        if let Some(t) = self.inner.metadata.borrow().topics.get(topic) {
            if let Some(shard) = t.partitions.get(&partition) {
                return Ok(*shard);
            }
        }
        let info = self.topic(topic).await?;
        info.partitions
            .get(&partition)
            .copied()
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_owned(),
                partition: Some(partition),
            })
    }

    /// Metadata of `topic`, from the cache or fetched.
    ///
    /// # Errors
    /// [`ClientError::UnknownTopic`] if the broker does not know it.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        if let Some(t) = self.cached_topic(topic) {
            return Ok(t);
        }
        let md = self.metadata(&[topic]).await?;
        md.topics
            .get(topic)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_owned(),
                partition: None,
            })
    }

    /// The cached metadata of `topic`, if any.
    pub fn cached_topic(&self, topic: &str) -> Option<TopicInfo> {
        self.inner.metadata.borrow().topics.get(topic).cloned()
    }

    /// The partition count of `topic` per cached metadata, if cached; unlike
    /// [`cached_topic`](Self::cached_topic) it copies nothing.
    pub fn cached_partition_count(&self, topic: &str) -> Option<usize> {
        self.inner
            .metadata
            .borrow()
            .topics
            .get(topic)
            .map(TopicInfo::partition_count)
    }

    /// Changes whenever cached topic metadata changes (a fetch or an invalidation): a copy of
    /// [`cached_partition_count`](Self::cached_partition_count) taken at one generation is
    /// current while the generation is the same.
    pub fn metadata_generation(&self) -> u64 {
        self.inner.generation.get()
    }

    fn bump_generation(&self) {
        let g = &self.inner.generation;
        g.set(g.get().wrapping_add(1));
    }

    /// Forgets cached metadata of `topic`, so the next use fetches it.
    pub fn invalidate(&self, topic: &str) {
        self.inner.metadata.borrow_mut().topics.remove(topic);
        self.bump_generation();
    }

    /// Fetches metadata of `topics` (all topics if empty) and merges it into the cache.
    ///
    /// # Errors
    /// Request errors; topics the broker does not know are left out of the result.
    pub async fn metadata(&self, topics: &[&str]) -> Result<Metadata> {
        let mut req = MetadataRequestT::default();
        req.topics = Some(topics.iter().map(|t| (*t).to_owned()).collect());
        let resp = self
            .any_conn()
            .await?
            .call(BodyT::MetadataRequest(Box::new(req)))
            .await?;
        let md = parse_metadata(&resp)?;
        let mut addrs = HashMap::new();
        for (id, e) in &md.endpoints {
            addrs.insert(*id, resolve(&e.host, e.port)?);
        }
        *self.inner.endpoint_addrs.borrow_mut() = addrs;
        {
            let mut cache = self.inner.metadata.borrow_mut();
            cache.endpoints = md.endpoints.clone();
            for t in topics {
                cache.topics.remove(*t);
            }
            for (name, t) in &md.topics {
                cache.topics.insert(name.clone(), t.clone());
            }
        }
        self.bump_generation();
        Ok(md)
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error, or the retries run out;
    /// before each retry it waits a growing backoff and forgets metadata of `topics` when the
    /// error calls for it.
    pub(crate) async fn retrying<T, F, Fut>(&self, topics: &[&str], mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0usize;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && attempt < self.inner.config.retries => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying");
                    if e.needs_metadata() {
                        for t in topics {
                            self.invalidate(t);
                        }
                    }
                    let backoff = self
                        .inner
                        .config
                        .retry_backoff
                        .saturating_mul(u32::try_from(attempt).unwrap_or(u32::MAX));
                    glommio::timer::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a topic. `retention_ms`/`retention_bytes` of -1 take the broker defaults.
    /// Returns once the topic is visible in metadata (bounded by the retries).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] with `TopicAlreadyExists`, `InvalidTopic`,
    /// `InvalidPartitions`, `InvalidConfig`; request errors.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<()> {
        let partitions = i32::try_from(partitions)
            .map_err(|_| ClientError::InvalidArgument(format!("{partitions} partitions")))?;
        let mut spec = TopicSpecT::default();
        spec.name = Some(name.to_owned());
        spec.partitions = partitions;
        spec.retention_ms = retention_ms;
        spec.retention_bytes = retention_bytes;
        let mut req = CreateTopicsRequestT::default();
        req.topics = Some(vec![spec]);
        let resp = self
            .any_conn()
            .await?
            .call(BodyT::CreateTopicsRequest(Box::new(req)))
            .await?;
        let frame = resp.frame()?;
        let r = frame
            .message
            .body_as_create_topics_response()
            .ok_or_else(|| unexpected("CreateTopicsResponse", &resp))?;
        check_topic_results(r.results(), name)?;
        self.invalidate(name);
        self.retrying(&[name], || self.topic(name)).await?;
        Ok(())
    }

    /// Deletes a topic.
    ///
    /// # Errors
    /// [`ClientError::UnknownTopic`]; request errors.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let mut req = DeleteTopicsRequestT::default();
        req.names = Some(vec![name.to_owned()]);
        let resp = self
            .any_conn()
            .await?
            .call(BodyT::DeleteTopicsRequest(Box::new(req)))
            .await?;
        let frame = resp.frame()?;
        let r = frame
            .message
            .body_as_delete_topics_response()
            .ok_or_else(|| unexpected("DeleteTopicsResponse", &resp))?;
        check_topic_results(r.results(), name)?;
        self.invalidate(name);
        Ok(())
    }

    /// The offset for `timestamp` in `topic/partition`: [`LATEST`] (-1) is the offset after
    /// the last record, [`EARLIEST`] (-2) the first offset still in the log, otherwise the
    /// first offset whose timestamp is at least `timestamp` (ms since the epoch).
    ///
    /// # Errors
    /// [`ClientError::UnknownTopic`]; request errors after the retries.
    pub async fn list_offsets(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        self.retrying(&[topic], || {
            self.list_offsets_once(topic, partition, timestamp)
        })
        .await
    }

    async fn list_offsets_once(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let shard = self.owner(topic, partition).await?;
        let mut p = ListOffsetsPartitionT::default();
        p.topic = Some(topic.to_owned());
        p.partition = partition;
        p.timestamp = timestamp;
        let mut req = ListOffsetsRequestT::default();
        req.partitions = Some(vec![p]);
        let resp = self
            .shard_conn(shard)
            .await?
            .call(BodyT::ListOffsetsRequest(Box::new(req)))
            .await?;
        let frame = resp.frame()?;
        let r = frame
            .message
            .body_as_list_offsets_response()
            .ok_or_else(|| unexpected("ListOffsetsResponse", &resp))?;
        let result = r
            .partitions()
            .unwrap_or_default()
            .iter()
            .find(|p| p.topic() == Some(topic) && p.partition() == partition)
            .ok_or_else(|| missing(topic, partition))?;
        ClientError::check(result.error(), topic, Some(partition))?;
        Ok(result.offset())
    }

    /// The endpoint coordinating `group` (FindCoordinator): the shard leading its
    /// committed-offsets slot, on whichever node. `None` from a broker that predates the
    /// request (every shard of a single node reaches the coordinator itself there).
    ///
    /// # Errors
    /// The broker's error (retriable while the coordinator is being elected); request
    /// errors.
    pub async fn coordinator(&self, group: &str) -> Result<Option<u64>> {
        let mut req = FindCoordinatorRequestT::default();
        req.group = Some(group.to_owned());
        let resp = self
            .any_conn()
            .await?
            .call(BodyT::FindCoordinatorRequest(Box::new(req)))
            .await?;
        let frame = resp.frame()?;
        if frame.message.body_as_error_response().is_some() {
            return Ok(None);
        }
        let r = frame
            .message
            .body_as_find_coordinator_response()
            .ok_or_else(|| unexpected("FindCoordinatorResponse", &resp))?;
        match r.error() {
            ErrorCode::None => Ok(Some(r.endpoint())),
            code => Err(ClientError::Protocol {
                code,
                message: format!("no coordinator for group {group:?}"),
            }),
        }
    }

    /// Commits `offsets` (`(topic, partition, next offset to read)`) for `group`, at the
    /// group's coordinator (on another node, in a cluster); a broker without
    /// FindCoordinator gets each partition's offset at its owning shard.
    ///
    /// # Errors
    /// The first partition's error; request errors after the retries.
    pub async fn commit_offsets(&self, group: &str, offsets: &[(&str, i32, i64)]) -> Result<()> {
        let topics: Vec<&str> = offsets.iter().map(|o| o.0).collect();
        self.retrying(&topics, || self.commit_once(group, offsets))
            .await
    }

    async fn commit_once(&self, group: &str, offsets: &[(&str, i32, i64)]) -> Result<()> {
        let coordinator = self.coordinator(group).await?;
        let mut by_shard: BTreeMap<u64, Vec<CommitOffsetT>> = BTreeMap::new();
        for &(topic, partition, offset) in offsets {
            let shard = match coordinator {
                Some(endpoint) => endpoint,
                None => self.owner(topic, partition).await?,
            };
            let mut c = CommitOffsetT::default();
            c.topic = Some(topic.to_owned());
            c.partition = partition;
            c.offset = offset;
            by_shard.entry(shard).or_default().push(c);
        }
        for (shard, commits) in by_shard {
            let mut req = OffsetCommitRequestT::default();
            req.group = Some(group.to_owned());
            req.offsets = Some(commits);
            let resp = self
                .shard_conn(shard)
                .await?
                .call(BodyT::OffsetCommitRequest(Box::new(req)))
                .await?;
            let frame = resp.frame()?;
            let r = frame
                .message
                .body_as_offset_commit_response()
                .ok_or_else(|| unexpected("OffsetCommitResponse", &resp))?;
            for p in r.results().unwrap_or_default() {
                ClientError::check(
                    p.error(),
                    p.topic().unwrap_or_default(),
                    Some(p.partition()),
                )?;
            }
        }
        Ok(())
    }

    /// The committed offsets of `group` for `partitions`, in the order asked.
    ///
    /// # Errors
    /// The first partition's error (a group without a commit is not one: its offset is
    /// `None`); request errors after the retries.
    pub async fn fetch_committed(
        &self,
        group: &str,
        partitions: &[(&str, i32)],
    ) -> Result<Vec<CommittedOffset>> {
        let topics: Vec<&str> = partitions.iter().map(|p| p.0).collect();
        self.retrying(&topics, || self.fetch_committed_once(group, partitions))
            .await
    }

    async fn fetch_committed_once(
        &self,
        group: &str,
        partitions: &[(&str, i32)],
    ) -> Result<Vec<CommittedOffset>> {
        let coordinator = self.coordinator(group).await?;
        let mut by_shard: BTreeMap<u64, Vec<TopicPartitionT>> = BTreeMap::new();
        for &(topic, partition) in partitions {
            let shard = match coordinator {
                Some(endpoint) => endpoint,
                None => self.owner(topic, partition).await?,
            };
            let mut tp = TopicPartitionT::default();
            tp.topic = Some(topic.to_owned());
            tp.partition = partition;
            by_shard.entry(shard).or_default().push(tp);
        }
        let mut found: HashMap<(String, i32), Option<i64>> = HashMap::new();
        for (shard, tps) in by_shard {
            let mut req = OffsetFetchRequestT::default();
            req.group = Some(group.to_owned());
            req.partitions = Some(tps);
            let resp = self
                .shard_conn(shard)
                .await?
                .call(BodyT::OffsetFetchRequest(Box::new(req)))
                .await?;
            let frame = resp.frame()?;
            let r = frame
                .message
                .body_as_offset_fetch_response()
                .ok_or_else(|| unexpected("OffsetFetchResponse", &resp))?;
            for o in r.offsets().unwrap_or_default() {
                let topic = o.topic().unwrap_or_default();
                let offset = match o.error() {
                    ErrorCode::None => (o.offset() >= 0).then_some(o.offset()),
                    // No commit yet is not a failure of the lookup.
                    ErrorCode::GroupNotFound => None,
                    code => {
                        ClientError::check(code, topic, Some(o.partition()))?;
                        None
                    }
                };
                found.insert((topic.to_owned(), o.partition()), offset);
            }
        }
        partitions
            .iter()
            .map(|&(topic, partition)| {
                let offset = found
                    .get(&(topic.to_owned(), partition))
                    .copied()
                    .ok_or_else(|| missing(topic, partition))?;
                Ok(CommittedOffset {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                })
            })
            .collect()
    }
}

fn missing(topic: &str, partition: i32) -> ClientError {
    ClientError::Protocol {
        code: ErrorCode::InvalidRequest,
        message: format!("response lacks {topic}/{partition}"),
    }
}

pub(crate) fn unexpected(expected: &'static str, resp: &Response) -> ClientError {
    ClientError::UnexpectedResponse {
        expected,
        got: resp
            .frame()
            .map(|f| body_name(f.body_type()))
            .unwrap_or("undecodable frame"),
    }
}

fn check_topic_results(
    results: Option<
        flatbuffers::Vector<
            '_,
            flatbuffers::ForwardsUOffset<tidelog_wire::native::TopicResult<'_>>,
        >,
    >,
    name: &str,
) -> Result<()> {
    let r = results
        .unwrap_or_default()
        .iter()
        .find(|r| r.name() == Some(name))
        .ok_or_else(|| ClientError::Protocol {
            code: ErrorCode::InvalidRequest,
            message: format!("response lacks topic {name}"),
        })?;
    match r.error() {
        ErrorCode::None => Ok(()),
        ErrorCode::UnknownTopicOrPartition => Err(ClientError::UnknownTopic {
            topic: name.to_owned(),
            partition: None,
        }),
        code => Err(ClientError::Protocol {
            code,
            message: r.message().unwrap_or(name).to_owned(),
        }),
    }
}

fn parse_metadata(resp: &Response) -> Result<Metadata> {
    let frame = resp.frame()?;
    let m = frame
        .message
        .body_as_metadata_response()
        .ok_or_else(|| unexpected("MetadataResponse", resp))?;
    let mut md = Metadata::default();
    for e in m.endpoints().unwrap_or_default() {
        md.endpoints.insert(
            endpoint_id(e.node(), e.shard()),
            Endpoint {
                node: e.node(),
                shard: e.shard(),
                host: e.host().unwrap_or_default().to_owned(),
                port: e.port(),
            },
        );
    }
    for t in m.topics().unwrap_or_default() {
        if t.error() != ErrorCode::None {
            continue;
        }
        let name = t.name().unwrap_or_default().to_owned();
        let partitions = t
            .partitions()
            .unwrap_or_default()
            .iter()
            .map(|p| (p.partition(), endpoint_id(p.node(), p.shard())))
            .collect();
        md.topics.insert(
            name.clone(),
            TopicInfo {
                name,
                partitions,
                retention_ms: t.retention_ms(),
                retention_bytes: t.retention_bytes(),
            },
        );
    }
    Ok(md)
}

/// Resolves an advertised endpoint. Addresses parse without a lookup; host names go through
/// the system resolver (blocking, once per metadata refresh).
fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(ClientError::from)?
        .next()
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!("endpoint {host}:{port} resolves to nothing"))
        })
}
