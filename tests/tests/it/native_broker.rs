//! The broker on 127.0.0.1 with two shards, spoken to with raw native frames from a blocking
//! socket: handshake, topic admin, produce and fetch on the owning shard's endpoint, long
//! poll, and hostile input that must close only the offending connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tidelog_engine::broker::{self, BrokerConfig, BrokerHandle};
use tidelog_wire::batch::{verify, BatchBuilder, VerifyLimits};
use tidelog_wire::native::{
    self, BodyT, CreateTopicsRequestT, ErrorCode, FetchPartitionT, FetchRequestT, FrameEncoder,
    FrameLimits, HandshakeRequestT, MessageT, MetadataRequestT, ProduceRequestPartition,
    TopicSpecT,
};

pub(crate) struct Peer {
    stream: TcpStream,
    encoder: FrameEncoder,
    next_id: u32,
}

impl Peer {
    pub(crate) fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Peer {
            stream,
            encoder: FrameEncoder::new(),
            next_id: 1,
        }
    }

    /// Reads one frame: the owned header and the body bytes.
    pub(crate) fn read(&mut self) -> std::io::Result<(MessageT, Vec<u8>)> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let limits = FrameLimits::default();
        let total = native::peek_frame_len(&prefix, &limits)
            .expect("valid length")
            .expect("4 bytes");
        let mut frame = vec![0u8; total];
        frame[..4].copy_from_slice(&prefix);
        self.stream.read_exact(&mut frame[4..])?;
        let decoded = native::decode_frame(&frame, &limits).expect("valid frame");
        Ok((decoded.unpack(), decoded.body.to_vec()))
    }

    pub(crate) fn call(&mut self, body: BodyT) -> (MessageT, Vec<u8>) {
        let id = self.send(body);
        let (response, body) = self.read().expect("response");
        assert_eq!(response.correlation_id, id);
        (response, body)
    }

    /// Sends a request without reading its response; returns its correlation id.
    pub(crate) fn send(&mut self, body: BodyT) -> u32 {
        let mut message = MessageT::default();
        message.correlation_id = self.next_id;
        self.next_id += 1;
        message.body = body;
        let mut out = BytesMut::new();
        self.encoder
            .encode_message(&message, 0, &mut out)
            .expect("encode");
        self.stream.write_all(&out).expect("send");
        message.correlation_id
    }

    /// Sends a produce request without reading its response; returns its correlation id.
    pub(crate) fn send_produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i8,
        batches: &[u8],
    ) -> u32 {
        self.try_send_produce(topic, partition, acks, batches)
            .expect("send")
    }

    /// [`Peer::send_produce`], reporting a broken connection instead of panicking.
    pub(crate) fn try_send_produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i8,
        batches: &[u8],
    ) -> std::io::Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        let parts = [ProduceRequestPartition {
            topic,
            partition,
            batches_len: batches.len(),
        }];
        self.encoder
            .encode_produce_request(id, acks, 5000, &parts, &mut out)
            .expect("encode");
        out.extend_from_slice(batches);
        self.stream.write_all(&out)?;
        Ok(id)
    }

    pub(crate) fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i8,
        batches: &[u8],
    ) -> Option<MessageT> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        let parts = [ProduceRequestPartition {
            topic,
            partition,
            batches_len: batches.len(),
        }];
        self.encoder
            .encode_produce_request(id, acks, 5000, &parts, &mut out)
            .expect("encode");
        self.stream.write_all(&out).expect("send header");
        self.stream.write_all(batches).expect("send body");
        if acks == 0 {
            return None;
        }
        let (response, _) = self.read().expect("response");
        assert_eq!(response.correlation_id, id);
        Some(response)
    }
}

fn start(dir: &std::path::Path) -> BrokerHandle {
    start_with_shards(dir, 2)
}

fn start_with_shards(dir: &std::path::Path, shards: usize) -> BrokerHandle {
    let mut config = BrokerConfig::new(dir);
    config.native_addr = "127.0.0.1:0".parse().expect("addr");
    config.shards = shards;
    config.pin_cpus = false;
    config.log_defaults.preallocate_bytes = 1 << 20;
    broker::start(config).expect("broker starts")
}

pub(crate) fn batch(values: &[&[u8]]) -> BytesMut {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(None, value, 1_700_000_000_000, &[]);
    }
    builder.finish()
}

pub(crate) fn create_topic(peer: &mut Peer, name: &str, partitions: i32) -> ErrorCode {
    let mut spec = TopicSpecT::default();
    spec.name = Some(name.into());
    spec.partitions = partitions;
    let mut request = CreateTopicsRequestT::default();
    request.topics = Some(vec![spec]);
    let (response, _) = peer.call(BodyT::CreateTopicsRequest(Box::new(request)));
    let BodyT::CreateTopicsResponse(response) = response.body else {
        panic!("not a create-topics response: {:?}", response.body);
    };
    response.results.expect("results")[0].error
}

/// partition -> owning shard's endpoint, from metadata.
pub(crate) fn owners(peer: &mut Peer, topic: &str) -> Vec<SocketAddr> {
    let mut request = MetadataRequestT::default();
    request.topics = Some(vec![topic.into()]);
    let (response, _) = peer.call(BodyT::MetadataRequest(Box::new(request)));
    let BodyT::MetadataResponse(metadata) = response.body else {
        panic!("not metadata");
    };
    let endpoints = metadata.endpoints.expect("endpoints");
    let topic = &metadata.topics.expect("topics")[0];
    assert_eq!(topic.error, ErrorCode::None);
    topic
        .partitions
        .as_ref()
        .expect("partitions")
        .iter()
        .map(|p| {
            let endpoint = endpoints
                .iter()
                .find(|e| e.shard == p.shard)
                .expect("endpoint");
            let host = endpoint.host.as_deref().expect("host");
            format!("{host}:{}", endpoint.port)
                .parse()
                .expect("endpoint addr")
        })
        .collect()
}

/// A fetch of one partition from `offset`, up to `max_bytes`.
pub(crate) fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    wait_ms: i32,
    max_bytes: i32,
) -> BodyT {
    let mut part = FetchPartitionT::default();
    part.topic = Some(topic.into());
    part.partition = partition;
    part.offset = offset;
    part.max_bytes = max_bytes;
    let mut request = FetchRequestT::default();
    request.max_wait_ms = wait_ms;
    request.min_bytes = 1;
    request.max_bytes = max_bytes.max(4 << 20);
    request.partitions = Some(vec![part]);
    BodyT::FetchRequest(Box::new(request))
}

pub(crate) fn fetch(
    peer: &mut Peer,
    topic: &str,
    partition: i32,
    offset: i64,
    wait_ms: i32,
) -> (ErrorCode, Vec<u8>) {
    let request = fetch_request(topic, partition, offset, wait_ms, 1 << 20);
    let (response, body) = peer.call(request);
    let BodyT::FetchResponse(response) = response.body else {
        panic!("not a fetch response");
    };
    let result = &response.partitions.expect("partitions")[0];
    let bytes = match &result.batches {
        Some(r) => body[r.offset as usize..(r.offset + r.len) as usize].to_vec(),
        None => Vec::new(),
    };
    (result.error, bytes)
}

pub(crate) fn values_of(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let view = verify(rest, &VerifyLimits::default()).expect("fetched batches verify");
        for record in view.records().expect("native") {
            out.push((record.offset, record.value.to_vec()));
        }
        rest = &rest[view.batch_len()..];
    }
    out
}

#[test]
fn produce_and_fetch_through_shard_endpoints_survive_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let broker = start(dir.path());
    let mut bootstrap = Peer::connect(broker.native_addr());
    let mut handshake = HandshakeRequestT::default();
    handshake.min_version = 1;
    handshake.max_version = 7;
    let (response, _) = bootstrap.call(BodyT::HandshakeRequest(Box::new(handshake)));
    let BodyT::HandshakeResponse(hello) = response.body else {
        panic!("not a handshake response");
    };
    assert_eq!(
        (hello.error, hello.version, hello.shard_count),
        (ErrorCode::None, 1, 2)
    );

    assert_eq!(create_topic(&mut bootstrap, "events", 3), ErrorCode::None);
    assert_eq!(
        create_topic(&mut bootstrap, "events", 3),
        ErrorCode::TopicAlreadyExists
    );
    assert_eq!(
        create_topic(&mut bootstrap, "bad name", 1),
        ErrorCode::InvalidTopic
    );
    let endpoints = owners(&mut bootstrap, "events");
    assert_eq!(endpoints.len(), 3);
    assert_eq!(broker.shard_addrs().len(), 2);

    for (partition, endpoint) in endpoints.iter().enumerate() {
        let mut owner = Peer::connect(*endpoint);
        for round in 0..20u32 {
            let value = format!("p{partition}-r{round}");
            let acks = if round % 2 == 0 { -1 } else { 1 };
            let response = owner
                .produce(
                    "events",
                    partition as i32,
                    acks,
                    &batch(&[value.as_bytes(), b"x"]),
                )
                .expect("acked");
            let BodyT::ProduceResponse(produced) = response.body else {
                panic!("not a produce response");
            };
            let result = &produced.partitions.expect("partitions")[0];
            assert_eq!(result.error, ErrorCode::None);
            assert_eq!(result.base_offset, i64::from(round) * 2);
        }
        // The other shard does not own the partition: it forwards to the owner and answers.
        let other = broker
            .shard_addrs()
            .into_iter()
            .find(|a| a != endpoint)
            .expect("other shard");
        let mut stranger = Peer::connect(other);
        let (error, bytes) = fetch(&mut stranger, "events", partition as i32, 0, 0);
        assert_eq!(error, ErrorCode::None);
        let forwarded = values_of(&bytes);
        assert_eq!(forwarded[0], (0, format!("p{partition}-r0").into_bytes()));
        let response = stranger
            .produce(
                "events",
                partition as i32,
                -1,
                &batch(&[b"via the other shard", b"x"]),
            )
            .expect("acked");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response");
        };
        let result = &produced.partitions.expect("partitions")[0];
        assert_eq!((result.error, result.base_offset), (ErrorCode::None, 40));
    }
    // Commit group offsets through shard 0's and shard 1's endpoints alike.
    for (i, addr) in broker.shard_addrs().into_iter().enumerate() {
        let mut peer = Peer::connect(addr);
        let mut commit = native::OffsetCommitRequestT::default();
        commit.group = Some(format!("group-{i}"));
        let mut offset = native::CommitOffsetT::default();
        offset.topic = Some("events".into());
        offset.partition = 1;
        offset.offset = 17 + i as i64;
        offset.metadata = Some("m".into());
        let mut unknown = native::CommitOffsetT::default();
        unknown.topic = Some("nope".into());
        commit.offsets = Some(vec![offset, unknown]);
        let (response, _) = peer.call(BodyT::OffsetCommitRequest(Box::new(commit)));
        let BodyT::OffsetCommitResponse(response) = response.body else {
            panic!("not a commit response");
        };
        let results = response.results.expect("results");
        assert_eq!(results[0].error, ErrorCode::None);
        assert_eq!(results[1].error, ErrorCode::UnknownTopicOrPartition);
    }
    broker.shutdown().expect("clean shutdown");

    let broker = start(dir.path());
    for i in 0..2 {
        let mut peer = Peer::connect(broker.native_addr());
        let mut request = native::OffsetFetchRequestT::default();
        request.group = Some(format!("group-{i}"));
        let mut wanted = native::TopicPartitionT::default();
        wanted.topic = Some("events".into());
        wanted.partition = 1;
        let mut never = native::TopicPartitionT::default();
        never.topic = Some("events".into());
        never.partition = 2;
        request.partitions = Some(vec![wanted, never]);
        let (response, _) = peer.call(BodyT::OffsetFetchRequest(Box::new(request)));
        let BodyT::OffsetFetchResponse(response) = response.body else {
            panic!("not an offset fetch response");
        };
        let offsets = response.offsets.expect("offsets");
        assert_eq!(
            (offsets[0].offset, offsets[0].metadata.as_deref()),
            (17 + i, Some("m"))
        );
        assert_eq!(offsets[1].offset, -1, "nothing committed there");
    }
    let mut bootstrap = Peer::connect(broker.native_addr());
    let endpoints = owners(&mut bootstrap, "events");
    for (partition, endpoint) in endpoints.iter().enumerate() {
        let mut owner = Peer::connect(*endpoint);
        let mut offset = 0i64;
        let mut seen = Vec::new();
        while offset < 42 {
            let (error, bytes) = fetch(&mut owner, "events", partition as i32, offset, 100);
            assert_eq!(error, ErrorCode::None);
            let records = values_of(&bytes);
            assert!(!records.is_empty());
            offset = records.last().expect("records").0 + 1;
            seen.extend(records);
        }
        assert_eq!(seen.len(), 42);
        for (i, (offset, value)) in seen.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            if i % 2 == 0 && i < 40 {
                assert_eq!(value, format!("p{partition}-r{}", i / 2).as_bytes());
            }
        }
        assert_eq!(seen[40].1, b"via the other shard");
        // Fetching at the end long-polls until a produce arrives.
        let started = Instant::now();
        let (error, bytes) = fetch(&mut owner, "events", partition as i32, 42, 200);
        assert_eq!(error, ErrorCode::None);
        assert!(bytes.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "fetch waited for data"
        );
    }
    broker.shutdown().expect("clean shutdown");

    // Three shards now: the same files get new owners, and everything is still there.
    let broker = start_with_shards(dir.path(), 3);
    let mut bootstrap = Peer::connect(broker.native_addr());
    let endpoints = owners(&mut bootstrap, "events");
    for (partition, endpoint) in endpoints.iter().enumerate() {
        let mut owner = Peer::connect(*endpoint);
        let (error, bytes) = fetch(&mut owner, "events", partition as i32, 40, 0);
        assert_eq!(error, ErrorCode::None);
        assert_eq!(values_of(&bytes)[0], (40, b"via the other shard".to_vec()));
    }
    broker.shutdown().expect("clean shutdown");
}

#[test]
fn hostile_frames_close_only_their_connection() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let broker = start(dir.path());
    // Everyone talks to shard 0's own port, so the hostile clients share the good one's shard.
    let shard0 = broker.shard_addrs()[0];
    let mut good = Peer::connect(shard0);
    assert_eq!(create_topic(&mut good, "t", 1), ErrorCode::None);

    let hostile: [&[u8]; 4] = [
        b"\xff\xff\xff\xff",                                 // 4 GiB length prefix
        b"\x02\x00\x00\x00\x00\x00", // frame shorter than its own header field
        b"\x10\x00\x00\x00\x04\x00\x00\x00garbagegarbage!!", // header that is not a flatbuffer
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", // another protocol
    ];
    for bytes in hostile {
        let mut bad = Peer::connect(shard0);
        bad.stream.write_all(bytes).expect("send");
        let mut sink = Vec::new();
        // The broker answers with an error frame or nothing, then closes: EOF within the timeout.
        let read = bad.stream.read_to_end(&mut sink);
        // Closed means EOF, or a reset when unread garbage was still queued; not a timeout.
        let closed = match &read {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "connection must be closed, got {read:?}");
        // A well-behaved client keeps working.
        assert_eq!(
            create_topic(&mut good, "t", 1),
            ErrorCode::TopicAlreadyExists
        );
    }
    // A truncated frame followed by a hang-up does not disturb anyone either.
    let mut truncated = Peer::connect(shard0);
    truncated
        .stream
        .write_all(b"\x00\x01\x00\x00\x00\x00")
        .expect("send");
    drop(truncated);
    let endpoints = owners(&mut good, "t");
    let mut owner = Peer::connect(endpoints[0]);
    let response = owner
        .produce("t", 0, -1, &batch(&[b"still alive"]))
        .expect("acked");
    assert!(matches!(response.body, BodyT::ProduceResponse(_)));
    broker.shutdown().expect("clean shutdown");
}

#[test]
fn pipelined_produces_answer_in_order_and_a_fetch_after_them_sees_them() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let broker = start(dir.path());
    let mut bootstrap = Peer::connect(broker.native_addr());
    assert_eq!(create_topic(&mut bootstrap, "piped", 1), ErrorCode::None);
    let owner = owners(&mut bootstrap, "piped")[0];
    let mut peer = Peer::connect(owner);
    // Twenty produces (acks=all, some acks=1, one acks=0) sent before reading anything,
    // then a fetch: responses come back in request order, offsets in request order.
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let acks = match i % 5 {
            3 => 1,
            4 if i == 9 => 0,
            _ => -1,
        };
        let value = format!("r{i}");
        let id = peer.send_produce("piped", 0, acks, &batch(&[value.as_bytes(), b"x"]));
        if acks != 0 {
            sent.push((id, i));
        }
    }
    let mut part = FetchPartitionT::default();
    part.topic = Some("piped".into());
    part.partition = 0;
    part.max_bytes = 1 << 20;
    let mut request = FetchRequestT::default();
    request.max_bytes = 4 << 20;
    request.partitions = Some(vec![part]);
    let mut message = MessageT::default();
    message.correlation_id = peer.next_id;
    message.body = BodyT::FetchRequest(Box::new(request));
    let mut out = BytesMut::new();
    peer.encoder
        .encode_message(&message, 0, &mut out)
        .expect("encode");
    peer.stream.write_all(&out).expect("send fetch");
    for (id, i) in sent {
        let (response, _) = peer.read().expect("produce response");
        assert_eq!(response.correlation_id, id, "request order");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response");
        };
        let result = &produced.partitions.expect("partitions")[0];
        assert_eq!(
            (result.error, result.base_offset),
            (ErrorCode::None, i64::from(i) * 2)
        );
    }
    let (response, body) = peer.read().expect("fetch response");
    assert_eq!(response.correlation_id, message.correlation_id);
    let BodyT::FetchResponse(fetched) = response.body else {
        panic!("not a fetch response");
    };
    let result = &fetched.partitions.expect("partitions")[0];
    assert_eq!(result.high_watermark, 40, "the fetch sees every produce");
    let bytes = match &result.batches {
        Some(r) => &body[r.offset as usize..(r.offset + r.len) as usize],
        None => &[][..],
    };
    let values = values_of(bytes);
    assert_eq!(values.len(), 40);
    for i in 0..20 {
        assert_eq!(values[i * 2], (i as i64 * 2, format!("r{i}").into_bytes()));
    }
    drop(peer);
    drop(bootstrap);
    broker.shutdown().expect("clean shutdown");
}

/// A native produce is checked as its consumers will need it: a batch whose CRC is right but
/// whose records do not decode (or that claims more offsets than it has records) is refused
/// with `CorruptBatch` and nothing is stored. Before, only the CRC was checked: the batch
/// was stored, and every Kafka consumer of the partition failed at its offset for good.
#[test]
fn produced_batches_that_consumers_could_not_read_are_refused() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let broker = start_with_shards(dir.path(), 1);
    let mut peer = Peer::connect(broker.native_addr());
    assert_eq!(create_topic(&mut peer, "checked", 1), ErrorCode::None);
    let reseal = |b: &mut [u8]| {
        let crc = tidelog_wire::batch::compute_crc(b);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
    };
    let header_len = tidelog_wire::batch::HEADER_LEN;
    // Records that are not a flatbuffer, under a valid CRC.
    let mut garbage = batch(&[b"one", b"two"]);
    for byte in &mut garbage[header_len..] {
        *byte = 0xA5;
    }
    reseal(&mut garbage);
    // A valid payload whose header claims a million offsets for its two records.
    let mut claims = batch(&[b"one", b"two"]);
    claims[20..24].copy_from_slice(&2i32.to_le_bytes());
    claims[24..28].copy_from_slice(&999_999i32.to_le_bytes());
    reseal(&mut claims);
    for bad in [&garbage, &claims] {
        let response = peer.produce("checked", 0, -1, bad).expect("a response");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response");
        };
        let result = &produced.partitions.expect("partitions")[0];
        assert_eq!(result.error, ErrorCode::CorruptBatch);
    }
    let response = peer
        .produce("checked", 0, -1, &batch(&[b"fine"]))
        .expect("a response");
    let BodyT::ProduceResponse(produced) = response.body else {
        panic!("not a produce response");
    };
    let result = &produced.partitions.expect("partitions")[0];
    assert_eq!(
        (result.error, result.base_offset),
        (ErrorCode::None, 0),
        "nothing stored before"
    );
    let (error, bytes) = fetch(&mut peer, "checked", 0, 0, 0);
    assert_eq!(error, ErrorCode::None);
    assert_eq!(values_of(&bytes), vec![(0, b"fine".to_vec())]);
    broker.shutdown().expect("clean shutdown");
}

fn commit(peer: &mut Peer, group: &str, topic: &str, partition: i32, offset: i64) -> ErrorCode {
    let mut request = native::OffsetCommitRequestT::default();
    request.group = Some(group.into());
    let mut position = native::CommitOffsetT::default();
    position.topic = Some(topic.into());
    position.partition = partition;
    position.offset = offset;
    request.offsets = Some(vec![position]);
    let (response, _) = peer.call(BodyT::OffsetCommitRequest(Box::new(request)));
    let BodyT::OffsetCommitResponse(response) = response.body else {
        panic!("not a commit response");
    };
    response.results.expect("results")[0].error
}

fn committed(peer: &mut Peer, group: &str, topic: &str, partition: i32) -> i64 {
    let mut request = native::OffsetFetchRequestT::default();
    request.group = Some(group.into());
    let mut wanted = native::TopicPartitionT::default();
    wanted.topic = Some(topic.into());
    wanted.partition = partition;
    request.partitions = Some(vec![wanted]);
    let (response, _) = peer.call(BodyT::OffsetFetchRequest(Box::new(request)));
    let BodyT::OffsetFetchResponse(response) = response.body else {
        panic!("not an offset fetch response");
    };
    response.offsets.expect("offsets")[0].offset
}

/// A deleted topic's committed offsets go with it: a topic re-created under the name starts
/// with no committed positions (before, its groups resumed at the old topic's offsets, past
/// the new topic's end), also after a restart; other topics keep theirs.
#[test]
fn a_deleted_topics_committed_offsets_are_deleted_with_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let broker = start(dir.path());
    let mut peer = Peer::connect(broker.native_addr());
    assert_eq!(create_topic(&mut peer, "gone", 2), ErrorCode::None);
    assert_eq!(create_topic(&mut peer, "stays", 1), ErrorCode::None);
    // Groups on several slots (so on both shards).
    let groups: Vec<String> = (0..8).map(|i| format!("group-{i}")).collect();
    for group in &groups {
        assert_eq!(commit(&mut peer, group, "gone", 1, 500), ErrorCode::None);
        assert_eq!(commit(&mut peer, group, "stays", 0, 9), ErrorCode::None);
    }
    let mut delete = native::DeleteTopicsRequestT::default();
    delete.names = Some(vec!["gone".into()]);
    let (response, _) = peer.call(BodyT::DeleteTopicsRequest(Box::new(delete)));
    let BodyT::DeleteTopicsResponse(response) = response.body else {
        panic!("not a delete response");
    };
    assert_eq!(response.results.expect("results")[0].error, ErrorCode::None);
    assert_eq!(create_topic(&mut peer, "gone", 2), ErrorCode::None);
    for group in &groups {
        assert_eq!(committed(&mut peer, group, "gone", 1), -1, "{group}");
        assert_eq!(committed(&mut peer, group, "stays", 0), 9, "{group}");
    }
    drop(peer);
    broker.shutdown().expect("clean shutdown");
    let broker = start(dir.path());
    let mut peer = Peer::connect(broker.native_addr());
    for group in &groups {
        assert_eq!(
            committed(&mut peer, group, "gone", 1),
            -1,
            "{group} after a restart"
        );
        assert_eq!(
            committed(&mut peer, group, "stays", 0),
            9,
            "{group} after a restart"
        );
    }
    broker.shutdown().expect("clean shutdown");
}

/// A partition that cannot be opened goes offline with its reason while the broker serves
/// everything else, and a creation is acknowledged only when every shard opened its
/// partitions. Before, one such partition kept the whole broker from starting, and a failed
/// open on another shard was acknowledged as a successful creation.
#[test]
fn a_partition_that_cannot_open_is_offline_and_the_rest_is_served() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let broker = start(dir.path());
    let mut peer = Peer::connect(broker.native_addr());
    assert_eq!(create_topic(&mut peer, "t", 2), ErrorCode::None);
    let endpoints = owners(&mut peer, "t");
    for (partition, endpoint) in endpoints.iter().enumerate() {
        let mut owner = Peer::connect(*endpoint);
        owner
            .produce("t", partition as i32, -1, &batch(&[b"before"]))
            .expect("acked");
    }
    drop(peer);
    broker.shutdown().expect("clean shutdown");
    // Partition 1's directory becomes something no log can be opened in.
    let damaged = dir.path().join("t/1");
    std::fs::remove_dir_all(&damaged).expect("remove");
    std::fs::write(&damaged, b"not a directory").expect("write");
    // A name whose directory cannot be made: every creation of it fails on some shard.
    std::fs::write(dir.path().join("blocked"), b"in the way").expect("write");

    let broker = start(dir.path());
    let mut peer = Peer::connect(broker.native_addr());
    let endpoints = owners(&mut peer, "t");
    let mut healthy = Peer::connect(endpoints[0]);
    let (error, bytes) = fetch(&mut healthy, "t", 0, 0, 0);
    assert_eq!(error, ErrorCode::None);
    assert_eq!(values_of(&bytes), vec![(0, b"before".to_vec())]);
    let response = healthy
        .produce("t", 0, -1, &batch(&[b"after"]))
        .expect("a response");
    let BodyT::ProduceResponse(produced) = response.body else {
        panic!("not a produce response");
    };
    assert_eq!(
        produced.partitions.expect("partitions")[0].error,
        ErrorCode::None
    );
    let mut offline = Peer::connect(endpoints[1]);
    let (error, _) = fetch(&mut offline, "t", 1, 0, 0);
    assert_eq!(
        error,
        ErrorCode::StorageError,
        "the offline partition says so"
    );
    // Other topics work; a creation that fails on a shard is not acknowledged.
    assert_eq!(create_topic(&mut peer, "fine", 2), ErrorCode::None);
    assert_eq!(
        create_topic(&mut peer, "blocked", 2),
        ErrorCode::StorageError
    );
    drop((peer, healthy, offline));
    broker.shutdown().expect("clean shutdown");
}

/// Committed offsets of a group with no members expire after the offsets retention (Kafka's
/// `offsets.retention.minutes`): state keyed by group names a client chose does not grow for
/// ever. Before, every group's offsets were kept for ever.
#[test]
fn committed_offsets_of_empty_groups_expire_after_the_retention() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let mut config = BrokerConfig::new(dir.path());
    config.native_addr = "127.0.0.1:0".parse().expect("addr");
    config.shards = 2;
    config.pin_cpus = false;
    config.log_defaults.preallocate_bytes = 1 << 20;
    config.offsets_retention = Duration::from_millis(300);
    let broker = broker::start(config).expect("broker starts");
    let mut peer = Peer::connect(broker.native_addr());
    assert_eq!(create_topic(&mut peer, "t", 1), ErrorCode::None);
    assert_eq!(
        commit(&mut peer, "short-lived", "t", 0, 42),
        ErrorCode::None
    );
    assert_eq!(committed(&mut peer, "short-lived", "t", 0), 42);
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed(&mut peer, "short-lived", "t", 0) != -1 {
        assert!(Instant::now() < deadline, "the offsets never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(peer);
    broker.shutdown().expect("clean shutdown");
}

/// One client address holds at most its cap of connections per shard; past it new ones are
/// closed at once, and a freed slot is usable again. Before, one host could take every
/// connection slot of the broker.
#[test]
fn connections_per_client_address_are_capped() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let mut config = BrokerConfig::new(dir.path());
    config.native_addr = "127.0.0.1:0".parse().expect("addr");
    config.shards = 1;
    config.pin_cpus = false;
    config.log_defaults.preallocate_bytes = 1 << 20;
    config.max_connections_per_ip = 3;
    let broker = broker::start(config).expect("broker starts");
    let addr = broker.native_addr();
    let served = |peer: &mut Peer| {
        let mut request = MetadataRequestT::default();
        request.topics = Some(Vec::new());
        let (response, _) = peer.call(BodyT::MetadataRequest(Box::new(request)));
        matches!(response.body, BodyT::MetadataResponse(_))
    };
    let mut kept: Vec<Peer> = (0..3).map(|_| Peer::connect(addr)).collect();
    for peer in &mut kept {
        assert!(served(peer));
    }
    let mut refused = TcpStream::connect(addr).expect("connect");
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(refused.read(&mut byte), Ok(0) | Err(_)),
        "the fourth connection from this address is closed"
    );
    drop(kept.pop());
    std::thread::sleep(Duration::from_millis(100));
    let mut again = Peer::connect(addr);
    assert!(served(&mut again), "a freed slot is usable");
    drop((kept, again));
    broker.shutdown().expect("clean shutdown");
}

/// A peer that takes a response a little at a time is cut at the response's deadline
/// (`response_write` plus a second per MiB), not kept as long as each write makes progress:
/// such a peer pinned the fetched buffers for as long as it liked.
#[test]
fn a_consumer_trickling_a_big_fetch_is_cut_at_the_response_deadline() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let mut config = BrokerConfig::new(dir.path());
    config.native_addr = "127.0.0.1:0".parse().expect("addr");
    config.shards = 1;
    config.pin_cpus = false;
    config.log_defaults.preallocate_bytes = 1 << 20;
    config.timeouts.response_write = Duration::from_secs(1);
    let broker = broker::start(config).expect("broker starts");
    let mut peer = Peer::connect(broker.native_addr());
    assert_eq!(create_topic(&mut peer, "big", 4), ErrorCode::None);
    let value = vec![b'v'; 500 << 10];
    for partition in 0..4 {
        for _ in 0..8 {
            peer.produce("big", partition, 1, &batch(&[&value]))
                .expect("acked");
        }
    }
    // One fetch of all 16 MB (far more than the socket buffers hold), then reading 4 KiB
    // every 50 ms (80 KB/s) through a small receive window, so the broker's writes block.
    let parts = (0..4)
        .map(|partition| {
            let mut part = FetchPartitionT::default();
            part.topic = Some("big".into());
            part.partition = partition;
            part.offset = 0;
            part.max_bytes = 16 << 20;
            part
        })
        .collect();
    let mut request = FetchRequestT::default();
    request.max_wait_ms = 0;
    request.max_bytes = 64 << 20;
    request.partitions = Some(parts);
    let mut message = MessageT::default();
    message.correlation_id = 99;
    message.body = BodyT::FetchRequest(Box::new(request));
    let mut out = BytesMut::new();
    FrameEncoder::new()
        .encode_message(&message, 0, &mut out)
        .expect("encode");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .connect(&broker.native_addr().into())
        .expect("connect");
    let mut slow: TcpStream = socket.into();
    slow.write_all(&out).expect("send");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut prefix = [0u8; 4];
    slow.read_exact(&mut prefix).expect("response starts");
    let total = native::peek_frame_len(&prefix, &FrameLimits::default())
        .expect("valid length")
        .expect("4 bytes");
    assert!(total > 12 << 20, "a response of {total} bytes");
    let started = Instant::now();
    let mut taken = 4usize;
    let mut chunk = vec![0u8; 1 << 20];
    // Trickle past the deadline (1 s + 1 s per MiB: 17 s for 16 MiB)...
    while started.elapsed() < Duration::from_secs(20) {
        match slow.read(&mut chunk[..4096]) {
            Ok(0) | Err(_) => break,
            Ok(n) => taken += n,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... then take what is left as fast as possible: a cut connection ends early.
    let end = loop {
        match slow.read(&mut chunk) {
            Ok(0) => break "closed",
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("neither cut nor complete: {e} after {taken} of {total} bytes"),
            Ok(n) => taken += n,
        }
        if taken == total {
            break "complete";
        }
    };
    assert!(
        taken < total,
        "the trickling peer was never cut: it took the whole response ({end}, {taken} bytes)"
    );
    eprintln!("trickling consumer cut ({end}): {taken} of {total} bytes taken");
    // Everyone else is served.
    let (error, _) = fetch(&mut peer, "big", 0, 7, 0);
    assert_eq!(error, ErrorCode::None);
    broker.shutdown().expect("clean shutdown");
}
