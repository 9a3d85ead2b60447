//! The Kafka listener at the protocol level, with requests built by our generated codec over
//! a plain TCP socket: idempotent-producer semantics across a `kill -9`, producer ids that
//! never repeat after a restart, acks=0 getting no response at all, and pipelined produces
//! answered in request order.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tidelog_wire::kafka::generated::{
    create_topics_request::{CreatableTopic, CreatableTopicConfig, CreateTopicsRequest},
    create_topics_response::CreateTopicsResponse,
    delete_topics_request::DeleteTopicsRequest,
    delete_topics_response::DeleteTopicsResponse,
    fetch_request::{FetchPartition, FetchRequest, FetchTopic},
    fetch_response::FetchResponse,
    init_producer_id_request::InitProducerIdRequest,
    init_producer_id_response::InitProducerIdResponse,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic},
    list_offsets_response::ListOffsetsResponse,
    metadata_request::{MetadataRequest, MetadataRequestTopic},
    metadata_response::MetadataResponse,
    produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
    produce_response::ProduceResponse,
};
use tidelog_wire::kafka::{request_header_version, response_header_version, Decoder};
use tidelog_wire::kafka_records::{kafka_crc, RecordBatchBuilder, RecordBatchHeader};

use crate::broker_process::{free_port, free_ports_below_ephemeral, serial, Broker, Kafka, Serve};

const INIT_PRODUCER_ID: i16 = 22;
const PRODUCE: i16 = 0;
const METADATA: i16 = 3;
const LIST_OFFSETS: i16 = 2;
const FETCH: i16 = 1;
const CREATE_TOPICS: i16 = 19;
const DELETE_TOPICS: i16 = 20;

/// A blocking Kafka connection speaking through the generated codec.
pub(crate) struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub(crate) fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to the Kafka listener");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Conn {
            stream,
            correlation: 0,
        }
    }

    /// Sends one request; returns its correlation id.
    fn send(&mut self, key: i16, version: i16, body: impl FnOnce(&mut BytesMut)) -> i32 {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        buf.put_i16(key);
        buf.put_i16(version);
        buf.put_i32(self.correlation);
        buf.put_i16(4);
        buf.put_slice(b"test");
        if request_header_version(key, version) >= 2 {
            buf.put_u8(0);
        }
        body(&mut buf);
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).expect("send request");
        self.correlation
    }

    /// Reads one response; returns (correlation id, body).
    fn receive(&mut self, key: i16, version: i16) -> (i32, Bytes) {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("response size");
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut buf).expect("response body");
        let correlation = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let skip = if response_header_version(key, version) >= 1 {
            5
        } else {
            4
        };
        (correlation, Bytes::from(buf).slice(skip..))
    }

    pub(crate) fn call(
        &mut self,
        key: i16,
        version: i16,
        body: impl FnOnce(&mut BytesMut),
    ) -> Bytes {
        let sent = self.send(key, version, body);
        let (got, body) = self.receive(key, version);
        assert_eq!(got, sent, "responses come back in request order");
        body
    }

    fn init_producer_id(&mut self, producer_id: i64, epoch: i16) -> InitProducerIdResponse {
        let request = InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            producer_id,
            producer_epoch: epoch,
        };
        let body = self.call(INIT_PRODUCER_ID, 4, |b| {
            request.encode(b, 4).expect("encode");
        });
        InitProducerIdResponse::decode(&mut Decoder::new(&body), 4).expect("decode")
    }

    fn create_by_metadata(&mut self, topic: &str) {
        let request = MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some(topic.into()),
                ..Default::default()
            }]),
            allow_auto_topic_creation: true,
            ..Default::default()
        };
        let body = self.call(METADATA, 12, |b| request.encode(b, 12).expect("encode"));
        let response = MetadataResponse::decode(&mut Decoder::new(&body), 12).expect("decode");
        assert_eq!(response.topics.len(), 1);
        assert_eq!(response.topics[0].error_code, 0, "auto-created");
        assert_eq!(response.topics[0].partitions.len(), 1);
    }

    fn produce_request(topic: &str, acks: i16, batch: Bytes) -> ProduceRequest {
        ProduceRequest {
            acks,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: topic.into(),
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(batch),
                }],
            }],
            ..Default::default()
        }
    }

    /// Produces one batch with acks=all; returns (error code, base offset).
    /// An acks=all produce of `batch` to partition 0; the error code if the answer comes
    /// within `wait`, else `None`.
    pub(crate) fn produce_within(
        &mut self,
        topic: &str,
        batch: Bytes,
        wait: Duration,
    ) -> Option<i16> {
        let request = Conn::produce_request(topic, -1, batch);
        self.send(PRODUCE, 9, |b| request.encode(b, 9).expect("encode"));
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut buf).ok()?;
        let skip = if response_header_version(PRODUCE, 9) >= 1 {
            5
        } else {
            4
        };
        let body = Bytes::from(buf).slice(skip..);
        let response = ProduceResponse::decode(&mut Decoder::new(&body), 9).expect("decode");
        Some(response.responses[0].partition_responses[0].error_code)
    }

    /// One request; its response body if it comes within `wait`, else `None` (the
    /// connection is then no use for further requests).
    pub(crate) fn call_within(
        &mut self,
        key: i16,
        version: i16,
        body: impl FnOnce(&mut BytesMut),
        wait: Duration,
    ) -> Option<Bytes> {
        self.send(key, version, body);
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut buf).ok()?;
        let skip = if response_header_version(key, version) >= 1 {
            5
        } else {
            4
        };
        Some(Bytes::from(buf).slice(skip..))
    }

    /// A non-idempotent Kafka batch of `count` records.
    pub(crate) fn plain_batch(count: i32) -> Bytes {
        batch(-1, -1, -1, count)
    }

    fn produce(&mut self, topic: &str, batch: Bytes) -> (i16, i64) {
        let request = Conn::produce_request(topic, -1, batch);
        let body = self.call(PRODUCE, 9, |b| request.encode(b, 9).expect("encode"));
        let response = ProduceResponse::decode(&mut Decoder::new(&body), 9).expect("decode");
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Fetches partition 0 from `offset` with `max_bytes` per partition and no wait; returns
    /// (error, high watermark, records bytes).
    fn fetch(&mut self, topic: &str, offset: i64, max_bytes: i32) -> (i16, i64, Bytes) {
        let request = FetchRequest {
            replica_id: -1,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: topic.into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: offset,
                    partition_max_bytes: max_bytes,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = self.call(FETCH, 12, |b| request.encode(b, 12).expect("encode"));
        let response = FetchResponse::decode(&mut Decoder::new(&body), 12).expect("decode");
        let p = &response.responses[0].partitions[0];
        (
            p.error_code,
            p.high_watermark,
            p.records.clone().unwrap_or_default(),
        )
    }

    /// ListOffsets (v10) of partition 0 at `timestamp` (-1 latest, -2 earliest, -3 max
    /// timestamp, -4 earliest local, -5 latest tiered).
    fn offset_at(&mut self, topic: &str, timestamp: i64) -> (i16, i64) {
        let request = ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: 0,
                    timestamp,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        let body = self.call(LIST_OFFSETS, 10, |b| request.encode(b, 10).expect("encode"));
        let response = ListOffsetsResponse::decode(&mut Decoder::new(&body), 10).expect("decode");
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.offset)
    }

    /// Creates a one-partition topic with `configs`; returns the topic's error code.
    fn create_topic(&mut self, topic: &str, configs: &[(&str, &str)]) -> i16 {
        let request = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.into(),
                num_partitions: 1,
                replication_factor: -1,
                configs: configs
                    .iter()
                    .map(|(name, value)| CreatableTopicConfig {
                        name: (*name).into(),
                        value: Some((*value).into()),
                    })
                    .collect(),
                ..Default::default()
            }],
            timeout_ms: 30_000,
            validate_only: false,
        };
        let body = self.call(CREATE_TOPICS, 7, |b| request.encode(b, 7).expect("encode"));
        let response = CreateTopicsResponse::decode(&mut Decoder::new(&body), 7).expect("decode");
        response.topics[0].error_code
    }

    fn latest(&mut self, topic: &str) -> i64 {
        let request = ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: 0,
                    timestamp: -1,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        let body = self.call(LIST_OFFSETS, 7, |b| request.encode(b, 7).expect("encode"));
        let response = ListOffsetsResponse::decode(&mut Decoder::new(&body), 7).expect("decode");
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        p.offset
    }
}

/// A Kafka RecordBatch v2 of `count` records from an idempotent producer.
fn batch(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> Bytes {
    let mut builder = RecordBatchBuilder::with_capacity(1024);
    builder.producer(producer_id, epoch, base_sequence);
    for i in 0..count {
        let value = format!("seq-{}", base_sequence + i);
        builder.push(None, value.as_bytes(), 1_700_000_000_000);
    }
    builder.finish(0)
}

fn broker(dir: &std::path::Path, run: usize, kafka: &str) -> Broker {
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.kafka = Kafka::At(kafka.to_owned());
    Broker::start_with(dir, run, serve)
}

/// `serve` settings of one shard with a Kafka listener on a free port, and that address.
fn one_shard_kafka() -> (Serve, String) {
    let kafka = format!("127.0.0.1:{}", free_port());
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.kafka = Kafka::At(kafka.clone());
    (serve, kafka)
}

#[test]
fn idempotent_producers_survive_kill_9_and_ids_never_repeat() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-idempotence");
    let data = tmp.path().join("data");
    let kafka = format!("127.0.0.1:{}", free_port());
    let first = broker(&data, 0, &kafka);
    let mut c = Conn::open(&kafka);
    c.create_by_metadata("idem");
    let init = c.init_producer_id(-1, -1);
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id, init.producer_epoch);
    assert!(pid >= 0);
    assert_eq!(epoch, 0);

    assert_eq!(c.produce("idem", batch(pid, 0, 0, 5)), (0, 0));
    assert_eq!(c.produce("idem", batch(pid, 0, 5, 3)), (0, 5));
    // A retry of an appended batch is answered with its original offset, not appended again.
    assert_eq!(c.produce("idem", batch(pid, 0, 5, 3)), (0, 5), "duplicate");
    assert_eq!(c.latest("idem"), 8);
    // A gap in the sequence is refused.
    assert_eq!(c.produce("idem", batch(pid, 0, 10, 1)).0, 45);
    assert_eq!(c.latest("idem"), 8);

    // acks=0 gets no response: the next response is the next request's.
    let request = Conn::produce_request("idem", 0, batch(pid, 0, 8, 2));
    c.send(PRODUCE, 9, |b| request.encode(b, 9).expect("encode"));
    assert_eq!(c.latest("idem"), 10, "the acks=0 batch was appended");
    // An acks=all append makes everything before it durable too.
    assert_eq!(c.produce("idem", batch(pid, 0, 10, 1)), (0, 10));
    drop(c);

    // kill -9: the producer state is rebuilt from the log.
    let data = first.kill_9();
    let second = broker(&data, 1, &kafka);
    let mut c = Conn::open(&kafka);
    assert_eq!(c.latest("idem"), 11);
    assert_eq!(
        c.produce("idem", batch(pid, 0, 8, 2)),
        (0, 8),
        "duplicate detected after restart"
    );
    assert_eq!(
        c.produce("idem", batch(pid, 0, 10, 1)),
        (0, 10),
        "duplicate"
    );
    assert_eq!(c.produce("idem", batch(pid, 0, 11, 1)), (0, 11));

    // Producer ids never repeat after a crash.
    let other = c.init_producer_id(-1, -1);
    assert_eq!(other.error_code, 0);
    assert!(other.producer_id > pid, "{} after {pid}", other.producer_id);

    // An epoch bump (KIP-360) fences the old epoch once the new one has written.
    let bumped = c.init_producer_id(pid, 0);
    assert_eq!((bumped.producer_id, bumped.producer_epoch), (pid, 1));
    assert_eq!(c.produce("idem", batch(pid, 1, 0, 1)), (0, 12));
    assert_eq!(
        c.produce("idem", batch(pid, 0, 12, 1)).0,
        47,
        "fenced epoch"
    );
    assert_eq!(c.latest("idem"), 13);
    second.stop();
}

/// The Kafka batches in fetched record bytes: (base offset, record count, length).
fn batches_in(records: &[u8]) -> Vec<(i64, i32, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = RecordBatchHeader::read(&records[at..]) {
        let len = head.total_len().expect("a whole header");
        assert!(at + len <= records.len(), "only whole batches are returned");
        out.push((head.base_offset, head.record_count, len));
        at += len;
    }
    assert_eq!(at, records.len(), "no partial batch at the end");
    out
}

#[test]
fn fetch_serves_whole_batches_the_first_even_past_the_limit() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-fetch");
    let kafka = format!("127.0.0.1:{}", free_port());
    let b = broker(&tmp.path().join("data"), 0, &kafka);
    let mut c = Conn::open(&kafka);
    c.create_by_metadata("fetch");
    // Three batches: 3, 400 and 2 records (no producer id).
    assert_eq!(c.produce("fetch", batch(-1, -1, -1, 3)), (0, 0));
    assert_eq!(c.produce("fetch", batch(-1, -1, -1, 400)), (0, 3));
    assert_eq!(c.produce("fetch", batch(-1, -1, -1, 2)), (0, 403));

    // Everything: three whole batches with the broker-assigned base offsets.
    let (error, hw, records) = c.fetch("fetch", 0, 1 << 20);
    assert_eq!((error, hw), (0, 405));
    let found = batches_in(&records);
    assert_eq!(
        found.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
        vec![(0, 3), (3, 400), (403, 2)]
    );
    // Each served batch still has a valid Kafka CRC.
    let mut at = 0;
    for (_, _, len) in &found {
        let b = &records[at..at + len];
        let crc = RecordBatchHeader::read(b).expect("header").crc;
        assert_eq!(crc, kafka_crc(b), "CRC of the batch at {at}");
        at += len;
    }
    // A fetch from inside the big batch, with a limit far below its size, still gets it whole
    // (KIP-74), starting below the fetch offset.
    let big = found[1].2;
    assert!(big > 1000);
    let (error, _, records) = c.fetch("fetch", 100, 100);
    assert_eq!(error, 0);
    let got = batches_in(&records);
    assert_eq!(got.first().map(|b| (b.0, b.1)), Some((3, 400)));
    assert_eq!(got.len(), 1, "nothing past the limit after the first batch");
    // At the end: nothing, no error. Past it: OFFSET_OUT_OF_RANGE.
    assert_eq!(c.fetch("fetch", 405, 1 << 20).0, 0);
    assert!(c.fetch("fetch", 405, 1 << 20).2.is_empty());
    assert_eq!(c.fetch("fetch", 406, 1 << 20).0, 1);
    // ListOffsets: earliest, latest, and by timestamp (all records carry 1_700_000_000_000).
    assert_eq!(c.offset_at("fetch", -2), (0, 0));
    assert_eq!(c.offset_at("fetch", -1), (0, 405));
    assert_eq!(c.offset_at("fetch", 1_700_000_000_000), (0, 0));
    assert_eq!(
        c.offset_at("fetch", 1_700_000_000_001),
        (0, -1),
        "no record at or after the time: -1, as Kafka answers"
    );
    assert_eq!(
        c.offset_at("fetch", -4),
        (0, 0),
        "earliest local: the log start"
    );
    assert_eq!(
        c.offset_at("fetch", -5),
        (0, -1),
        "latest tiered: nothing is tiered"
    );

    // After a restart the tail cache is empty: the same bytes come from disk (DMA buffers
    // sliced past each Tidelog header).
    let (_, _, from_cache) = c.fetch("fetch", 0, 1 << 20);
    drop(c);
    let data = b.stop();
    let b = broker(&data, 1, &kafka);
    let mut c = Conn::open(&kafka);
    let (error, hw, from_disk) = c.fetch("fetch", 0, 1 << 20);
    assert_eq!((error, hw), (0, 405));
    assert_eq!(
        from_disk, from_cache,
        "disk and cache serve identical bytes"
    );
    b.stop();
}

/// Decodes a Produce v9 response body: (error, base offset) of its one partition.
fn produce_result(body: &Bytes) -> (i16, i64) {
    let response = ProduceResponse::decode(&mut Decoder::new(body), 9).expect("decode");
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn pipelined_acks_all_produces_answer_in_order_and_all_land() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-pipeline");
    let kafka = format!("127.0.0.1:{}", free_port());
    let b = broker(&tmp.path().join("data"), 0, &kafka);
    let mut c = Conn::open(&kafka);
    c.create_by_metadata("pipe");
    // An idempotent producer: a batch appended out of request order would be refused with
    // OUT_OF_ORDER_SEQUENCE_NUMBER.
    let id = c.init_producer_id(-1, -1);
    assert_eq!(id.error_code, 0);
    const REQUESTS: i32 = 20;
    const PER_BATCH: i32 = 3;
    let mut sent = Vec::new();
    for i in 0..REQUESTS {
        let request = Conn::produce_request(
            "pipe",
            -1,
            batch(id.producer_id, id.producer_epoch, i * PER_BATCH, PER_BATCH),
        );
        sent.push(c.send(PRODUCE, 9, |b| request.encode(b, 9).expect("encode")));
    }
    for (i, correlation) in sent.iter().enumerate() {
        let (got, body) = c.receive(PRODUCE, 9);
        assert_eq!(got, *correlation, "response {i} in request order");
        assert_eq!(
            produce_result(&body),
            (0, i64::from(i as i32 * PER_BATCH)),
            "request {i}: no error, consecutive base offsets"
        );
    }
    let (error, hw, records) = c.fetch("pipe", 0, 1 << 20);
    assert_eq!((error, hw), (0, i64::from(REQUESTS * PER_BATCH)));
    let found: Vec<(i64, i32)> = batches_in(&records).iter().map(|b| (b.0, b.1)).collect();
    let expected: Vec<(i64, i32)> = (0..REQUESTS)
        .map(|i| (i64::from(i * PER_BATCH), PER_BATCH))
        .collect();
    assert_eq!(found, expected, "every batch readable, in request order");
    drop(c);
    b.stop();
}

#[test]
fn requests_after_pipelined_produces_see_them_and_bad_requests_close_after_them() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-pipeline-reads");
    let kafka = format!("127.0.0.1:{}", free_port());
    let b = broker(&tmp.path().join("data"), 0, &kafka);
    let mut c = Conn::open(&kafka);
    c.create_by_metadata("seen");
    // Ten acks=all produces, then ListOffsets and Fetch, all sent before reading anything.
    let mut produces = Vec::new();
    for _ in 0..10 {
        let request = Conn::produce_request("seen", -1, batch(-1, -1, -1, 2));
        produces.push(c.send(PRODUCE, 9, |b| request.encode(b, 9).expect("encode")));
    }
    let list = ListOffsetsRequest {
        replica_id: -1,
        topics: vec![ListOffsetsTopic {
            name: "seen".into(),
            partitions: vec![ListOffsetsPartition {
                partition_index: 0,
                timestamp: -1,
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    let list_id = c.send(LIST_OFFSETS, 7, |b| list.encode(b, 7).expect("encode"));
    let fetch = FetchRequest {
        replica_id: -1,
        max_bytes: 1 << 20,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: "seen".into(),
            partitions: vec![FetchPartition {
                partition: 0,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let fetch_id = c.send(FETCH, 12, |b| fetch.encode(b, 12).expect("encode"));
    for (i, correlation) in produces.iter().enumerate() {
        let (got, body) = c.receive(PRODUCE, 9);
        assert_eq!(got, *correlation);
        assert_eq!(produce_result(&body), (0, i as i64 * 2));
    }
    let (got, body) = c.receive(LIST_OFFSETS, 7);
    assert_eq!(got, list_id);
    let listed = ListOffsetsResponse::decode(&mut Decoder::new(&body), 7).expect("decode");
    assert_eq!(
        listed.topics[0].partitions[0].offset, 20,
        "ListOffsets sees every produce"
    );
    let (got, body) = c.receive(FETCH, 12);
    assert_eq!(got, fetch_id);
    let fetched = FetchResponse::decode(&mut Decoder::new(&body), 12).expect("decode");
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 20);
    let records = p.records.clone().unwrap_or_default();
    assert_eq!(batches_in(&records).len(), 10, "Fetch sees every produce");

    // Produces followed by a request that closes the connection (an unknown API): the
    // produces are still answered, then the connection closes.
    let mut produces = Vec::new();
    for _ in 0..5 {
        let request = Conn::produce_request("seen", -1, batch(-1, -1, -1, 1));
        produces.push(c.send(PRODUCE, 9, |b| request.encode(b, 9).expect("encode")));
    }
    c.send(999, 0, |_| {});
    for (i, correlation) in produces.iter().enumerate() {
        let (got, body) = c.receive(PRODUCE, 9);
        assert_eq!(got, *correlation);
        assert_eq!(produce_result(&body), (0, 20 + i as i64));
    }
    let mut rest = Vec::new();
    let read = c.stream.read_to_end(&mut rest).expect("clean close");
    assert_eq!(read, 0, "closed after the pending responses");
    drop(c);
    b.stop();
}

#[test]
fn metadata_advertises_every_shard_as_a_node_at_the_advertised_host() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-advertised");
    let kafka = format!("127.0.0.1:{}", free_port());
    let mut serve = Serve::new();
    serve.shards = 2;
    serve.kafka = Kafka::At(kafka.clone());
    serve.extra = vec!["--advertised-host".into(), "broker.example".into()];
    let b = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let mut c = Conn::open(&kafka);
    let request = MetadataRequest {
        topics: None,
        ..Default::default()
    };
    let body = c.call(METADATA, 12, |b| request.encode(b, 12).expect("encode"));
    let response = MetadataResponse::decode(&mut Decoder::new(&body), 12).expect("decode");
    let nodes: Vec<(i32, &str)> = response
        .brokers
        .iter()
        .map(|n| (n.node_id, n.host.as_str()))
        .collect();
    assert_eq!(nodes, vec![(0, "broker.example"), (1, "broker.example")]);
    let ports: std::collections::HashSet<i32> = response.brokers.iter().map(|n| n.port).collect();
    assert_eq!(ports.len(), 2, "each node has a port of its own");
    assert!(
        response.controller_id == 0,
        "a live node is the controller (admin clients need one)"
    );
    b.stop();
}

/// `retention.ms=-1` and `retention.bytes=-1` (Kafka's "keep forever", as confluent-kafka's
/// AdminClient sends them) keep every segment, also after a restart. Before, -1 ms was a limit
/// under which every sealed segment had expired (the first retention pass deleted them), and
/// it was stored as "unset", the broker's 7-day default after a restart (these records are
/// from 2023, so that default deleted them too). Other negative values are refused.
#[test]
fn retention_minus_one_keeps_every_segment_across_a_restart() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-retention-forever");
    let dir = tmp.path().join("data");
    let (mut serve, kafka) = one_shard_kafka();
    serve.extra = ["--retention-check-ms", "50"].map(String::from).to_vec();
    let broker = Broker::start_with(&dir, 0, serve.clone());
    let mut conn = Conn::open(&kafka);
    assert_eq!(
        conn.create_topic("bad", &[("retention.ms", "-2")]),
        40,
        "INVALID_CONFIG"
    );
    assert_eq!(
        conn.create_topic("bad", &[("retention.bytes", "-3")]),
        40,
        "INVALID_CONFIG"
    );
    let configs = [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "1048576"),
    ];
    assert_eq!(conn.create_topic("forever", &configs), 0);
    // About 3 MiB in 48 KiB batches: three sealed segments and the active one.
    let value = "x".repeat(1000);
    let mut records = 0i64;
    for _ in 0..64 {
        let mut builder = RecordBatchBuilder::with_capacity(64 << 10);
        for _ in 0..48 {
            builder.push(None, value.as_bytes(), 1_700_000_000_000);
        }
        let (error, _) = conn.produce("forever", builder.finish(0));
        assert_eq!(error, 0);
        records += 48;
    }
    assert_eq!(conn.latest("forever"), records);
    let earliest_after_passes = |conn: &mut Conn| {
        // Many retention passes at 50 ms apart.
        std::thread::sleep(Duration::from_millis(1500));
        conn.offset_at("forever", -2)
    };
    assert_eq!(earliest_after_passes(&mut conn), (0, 0), "nothing deleted");
    drop(conn);
    let dir = broker.stop();
    let _broker = Broker::start_with(&dir, 1, serve);
    let mut conn = Conn::open(&kafka);
    assert_eq!(
        earliest_after_passes(&mut conn),
        (0, 0),
        "still nothing deleted after a restart"
    );
    assert_eq!(conn.latest("forever"), records);
}

/// A supervisor restarts a broker the moment it died: that start must bind at once, also on
/// ports whose previous connections (closed by the kill) are in TIME_WAIT. Before, the
/// listeners were bound without SO_REUSEADDR and `serve` failed with "already in use" for up
/// to a minute.
#[test]
fn a_restart_right_after_kill_9_binds_its_ports_at_once() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-restart-at-once");
    let dir = tmp.path().join("data");
    // Native port, Kafka bootstrap, Kafka nodes 0 and 1: outside the ephemeral range, so
    // only this broker's own connections can be on them.
    let base = free_ports_below_ephemeral(4);
    let kafka = format!("127.0.0.1:{}", base + 1);
    let mut serve = Serve::new();
    serve.shards = 2;
    serve.native_addr = format!("127.0.0.1:{base}");
    serve.kafka = Kafka::At(kafka.clone());
    for run in 0..3 {
        let broker = Broker::start_at_once(&dir, run, serve.clone());
        // Connections on every listener, each answered (so the broker side has read all).
        let mut conns: Vec<Conn> = (0..4).map(|_| Conn::open(&kafka)).collect();
        for conn in &mut conns {
            conn.create_by_metadata("restarts");
        }
        let natives: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(&broker.addr).expect("native connect"))
            .collect();
        broker.kill_9();
        // The clients see the close and close too: the broker's side goes to TIME_WAIT.
        drop(conns);
        drop(natives);
    }
    let broker = Broker::start_at_once(&dir, 3, serve);
    let mut conn = Conn::open(broker.kafka());
    conn.create_by_metadata("restarts");
}

/// Any name a client may give a topic leaves the broker able to start: a topic named like the
/// start-up probe file (".tidelog-odirect-probe" is a legal Kafka name) made every later
/// `serve` fail with EISDIR.
#[test]
fn topics_named_like_the_brokers_files_do_not_stop_it_from_starting() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-hostile-topic-names");
    let dir = tmp.path().join("data");
    let (serve, kafka) = one_shard_kafka();
    let broker = Broker::start_with(&dir, 0, serve.clone());
    let mut conn = Conn::open(&kafka);
    for name in [
        ".tidelog-odirect-probe",
        ".tidelog-iopoll-probe",
        "__odirect-probe",
    ] {
        let created = conn.create_topic(name, &[]);
        assert!(
            created == 0 || created == 17,
            "{name}: created, or refused as an invalid name (17), not {created}"
        );
    }
    drop(conn);
    let dir = broker.stop();
    let broker = Broker::start_with(&dir, 1, serve);
    let mut conn = Conn::open(broker.kafka());
    conn.create_by_metadata("after-restart");
}

/// Slow and idle peers do not hold the broker's buffers: a request trickling in at a few
/// bytes a second is cut at its arrival deadline, a connection that sends nothing is closed
/// at the idle timeout, and a peer that keeps sending requests is never closed. Before,
/// none of these connections was ever closed by the broker.
#[test]
fn slow_and_idle_connections_are_closed_busy_ones_are_not() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-slow-peers");
    let (mut serve, kafka) = one_shard_kafka();
    serve.extra = [
        "--connections-max-idle-ms",
        "1500",
        "--request-arrival-timeout-ms",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    let _broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    // A slowloris: a 100-byte request announced, one byte every 200 ms.
    let mut slow = TcpStream::connect(&kafka).expect("connect");
    slow.write_all(&100i32.to_be_bytes()).expect("prefix");
    let started = std::time::Instant::now();
    let mut cut = false;
    for _ in 0..40 {
        if slow.write_all(&[0]).is_err() {
            cut = true;
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        if matches!(slow.read(&mut byte), Ok(0)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickling request was never cut");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut at its deadline"
    );
    // An idle connection.
    let mut idle = TcpStream::connect(&kafka).expect("connect");
    assert!(
        closed_within(&mut idle, Duration::from_secs(6)),
        "idle connection closed"
    );
    // A busy one: a request every 500 ms for 4 s (past both timeouts) is always answered.
    let mut busy = Conn::open(&kafka);
    for _ in 0..8 {
        busy.create_by_metadata("busy");
        std::thread::sleep(Duration::from_millis(500));
    }
    busy.create_by_metadata("busy");
}

/// A topic deleted while another client auto-creates it again: the new topic starts empty
/// (no resurrected records), its acknowledged records are there after a restart, and a
/// crash-interrupted deletion's leftovers never come back. Before, the re-create reopened the
/// old partition directory (the old records reappeared) and the deletion then unlinked it
/// under the new topic, so the new topic's acks=all records were gone after a restart.
#[test]
fn a_topic_recreated_while_being_deleted_starts_empty_and_keeps_its_records() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-delete-recreate");
    let dir = tmp.path().join("data");
    let (serve, kafka) = one_shard_kafka();
    let broker = Broker::start_with(&dir, 0, serve.clone());
    let mut admin = Conn::open(&kafka);
    let mut client = Conn::open(&kafka);
    for round in 0..5 {
        assert_eq!(admin.create_topic("again", &[]), 0, "round {round}");
        for _ in 0..20 {
            let (error, _) = client.produce("again", batch(-1, -1, -1, 5));
            assert_eq!(error, 0);
        }
        assert_eq!(client.latest("again"), 100);
        // The deletion, and at once an auto-create from the other connection.
        let request = DeleteTopicsRequest {
            topic_names: vec!["again".into()],
            timeout_ms: 30_000,
            ..Default::default()
        };
        let sent = admin.send(DELETE_TOPICS, 4, |b| request.encode(b, 4).expect("encode"));
        let mut recreated = false;
        for _ in 0..200 {
            let metadata = MetadataRequest {
                topics: Some(vec![MetadataRequestTopic {
                    name: Some("again".into()),
                    ..Default::default()
                }]),
                allow_auto_topic_creation: true,
                ..Default::default()
            };
            let body = client.call(METADATA, 12, |b| metadata.encode(b, 12).expect("encode"));
            let response = MetadataResponse::decode(&mut Decoder::new(&body), 12).expect("decode");
            // Error 0 may still be the old topic; the new one is empty.
            if response.topics[0].error_code == 0 && client.offset_at("again", -1) == (0, 0) {
                recreated = true;
                break;
            }
        }
        let (got, body) = admin.receive(DELETE_TOPICS, 4);
        assert_eq!(got, sent);
        let deleted = DeleteTopicsResponse::decode(&mut Decoder::new(&body), 4).expect("decode");
        assert_eq!(deleted.responses[0].error_code, 0, "deleted");
        // Whether or not the auto-create beat the deletion's end, the topic now is a new,
        // empty one (auto-created again if needed): none of the 100 records come back.
        if !recreated {
            client.create_by_metadata("again");
        }
        assert_eq!(client.offset_at("again", -2), (0, 0));
        assert_eq!(
            client.latest("again"),
            0,
            "round {round}: no resurrected records"
        );
        let (error, base) = client.produce("again", batch(-1, -1, -1, 3));
        assert_eq!((error, base), (0, 0));
        // Clean up for the next round.
        let request = DeleteTopicsRequest {
            topic_names: vec!["again".into()],
            timeout_ms: 30_000,
            ..Default::default()
        };
        admin.call(DELETE_TOPICS, 4, |b| request.encode(b, 4).expect("encode"));
    }
    // A last topic under the name, restarted: its acknowledged records are all there.
    assert_eq!(admin.create_topic("again", &[]), 0);
    let (error, _) = client.produce("again", batch(-1, -1, -1, 7));
    assert_eq!(error, 0);
    drop((admin, client));
    let dir = broker.stop();
    let broker_serve = serve.clone();
    let broker = Broker::start_with(&dir, 1, serve);
    let mut client = Conn::open(broker.kafka());
    assert_eq!(
        client.latest("again"),
        7,
        "the acknowledged records survived the restart"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("__deleted-") || n.starts_with("__orphaned-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no tombstone or orphan left: {leftovers:?}"
    );
    // What a crash can leave: a deletion's tombstone, and a topic directory whose metadata
    // record is gone (deleted, the files not yet renamed). The next start removes the first
    // and moves the second aside, so a topic created under that name starts empty.
    drop(client);
    let dir = broker.stop();
    std::fs::create_dir_all(dir.join("__deleted-again-1/0")).expect("tombstone");
    std::fs::write(dir.join("__deleted-again-1/0/junk"), b"x").expect("junk");
    std::fs::create_dir_all(dir.join("ghost/0")).expect("orphan");
    std::fs::write(dir.join("ghost/0/junk"), b"x").expect("junk");
    let broker = Broker::start_with(&dir, 2, broker_serve);
    let mut client = Conn::open(broker.kafka());
    assert!(
        !dir.join("__deleted-again-1").exists(),
        "the tombstone is removed"
    );
    assert!(!dir.join("ghost").exists(), "the orphan is moved aside");
    let aside = std::fs::read_dir(&dir)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("__orphaned-ghost-"))
        .count();
    assert_eq!(aside, 1, "kept, not deleted");
    client.create_by_metadata("ghost");
    assert_eq!(client.latest("ghost"), 0);
    assert_eq!(client.latest("again"), 7);
}

/// The primary non-loopback IPv4 address of this host, if it has one.
fn non_loopback_ipv4() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// With no authentication yet, the Kafka listener's default is loopback only:
/// `localhost:PORT` (the default's form) accepts on 127.0.0.1 and on ::1 at the bootstrap
/// and node ports, not on the host's other addresses, and the start line says the listener
/// is unauthenticated. Before, the default bound every interface (`[::]:9092`).
#[test]
fn the_default_kafka_listener_is_loopback_only_on_both_families() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-loopback-default");
    let base = free_ports_below_ephemeral(3);
    let mut serve = Serve::new();
    serve.shards = 2;
    serve.kafka = Kafka::At(format!("localhost:{base}"));
    let broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let v6_available = std::net::TcpListener::bind("[::1]:0").is_ok();
    for port in [base, base + 1, base + 2] {
        let mut conn = Conn::open(&format!("127.0.0.1:{port}"));
        conn.create_by_metadata("loopback");
        if v6_available {
            let mut conn = Conn::open(&format!("[::1]:{port}"));
            conn.create_by_metadata("loopback");
        }
        if let Some(ip) = non_loopback_ipv4() {
            let refused = TcpStream::connect_timeout(
                &std::net::SocketAddr::new(ip, port),
                Duration::from_secs(2),
            );
            assert!(
                refused.is_err(),
                "the Kafka port {port} accepts on {ip}, not only on loopback"
            );
        } else {
            eprintln!("no non-loopback address on this host: the refusal is not checked");
        }
    }
    let log = broker.stderr();
    assert!(log.contains("unauthenticated, loopback only"), "{log}");
    if v6_available {
        assert!(log.contains(&format!("and [::1]:{base}")), "{log}");
    }
    broker.stop();
}

/// Stored bytes that fail their checks are reported to Kafka consumers as CORRUPT_MESSAGE,
/// which librdkafka, the Java client and kafka-python hand to the application, and the rest
/// of the partition is still served. Before, the error was KAFKA_STORAGE_ERROR, which
/// librdkafka takes for a leader change and retries silently for ever.
#[test]
fn a_corrupt_stored_batch_is_reported_as_final_and_the_rest_is_served() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-corrupt-stored");
    let dir = tmp.path().join("data");
    let (mut serve, kafka) = one_shard_kafka();
    serve.extra = ["--segment-bytes", "65536", "--max-batch-bytes", "16384"]
        .map(String::from)
        .to_vec();
    let broker = Broker::start_with(&dir, 0, serve.clone());
    let mut conn = Conn::open(&kafka);
    assert_eq!(conn.create_topic("rot", &[]), 0);
    for _ in 0..400 {
        let (error, _) = conn.produce("rot", batch(-1, -1, -1, 5));
        assert_eq!(error, 0);
    }
    let end = conn.latest("rot");
    assert_eq!(end, 2000);
    drop(conn);
    let dir = broker.stop();
    // Rot in the middle of the first (sealed) segment.
    let first = dir.join("rot/0").join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&first).expect("first segment").len();
    tidelog_tests::flip_byte(&first, len / 2, 0x40).expect("flip");
    let broker = Broker::start_with(&dir, 1, serve);
    let mut conn = Conn::open(broker.kafka());
    // Read forward from 0 until the damaged batch.
    let mut offset = 0;
    let error = loop {
        let (error, _, records) = conn.fetch("rot", offset, 1 << 20);
        if error != 0 {
            break error;
        }
        let batches = batches_in(&records);
        let (base, count, _) = *batches.last().expect("records before the damage");
        offset = base + i64::from(count);
        assert!(offset < end, "the damaged batch was served");
    };
    assert_eq!(
        error, 2,
        "CORRUPT_MESSAGE at offset {offset}, not a retriable code"
    );
    assert!(offset > 0, "the good batches before the damage are served");
    // Past the damage, the partition is served as before.
    let (error, _, records) = conn.fetch("rot", end - 5, 1 << 20);
    assert_eq!(error, 0);
    assert_eq!(batches_in(&records)[0].0, end - 5);
    let log = broker.stderr();
    assert!(log.contains("corrupt"), "the damage is logged: {log}");
}

fn metadata_for(conn: &mut Conn, names: &[String], auto: bool) -> MetadataResponse {
    let request = MetadataRequest {
        topics: Some(
            names
                .iter()
                .map(|n| MetadataRequestTopic {
                    name: Some(n.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        allow_auto_topic_creation: auto,
        ..Default::default()
    };
    let body = conn.call(METADATA, 12, |b| request.encode(b, 12).expect("encode"));
    MetadataResponse::decode(&mut Decoder::new(&body), 12).expect("decode")
}

/// Topic counts a client controls are bounded: one Metadata request auto-creates at most 64
/// topics (the rest answer UNKNOWN_TOPIC_OR_PARTITION until asked again), creations past the
/// broker's partition cap are refused with POLICY_VIOLATION before anything is persisted
/// (also after a restart), and a request naming more topics than a request may is refused
/// by closing the connection. Before, one Metadata request could create any number of
/// topics, each with its directories and files.
#[test]
fn topic_and_partition_counts_a_client_controls_are_bounded() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-topic-bounds");
    let dir = tmp.path().join("data");
    let (mut serve, kafka) = one_shard_kafka();
    serve.extra = vec!["--max-partitions-per-shard".into(), "100".into()];
    let broker = Broker::start_with(&dir, 0, serve.clone());
    let mut conn = Conn::open(&kafka);
    let names: Vec<String> = (0..90).map(|i| format!("auto-{i}")).collect();
    let first = metadata_for(&mut conn, &names, true);
    let created = first.topics.iter().filter(|t| t.error_code == 0).count();
    assert_eq!(created, 64, "at most 64 auto-creations per request");
    assert!(first
        .topics
        .iter()
        .all(|t| t.error_code == 0 || t.error_code == 3));
    let second = metadata_for(&mut conn, &names, true);
    assert!(
        second.topics.iter().all(|t| t.error_code == 0),
        "asked again"
    );
    // 90 of 100 partitions held: 10 more fit, the 11th does not.
    for i in 0..10 {
        assert_eq!(conn.create_topic(&format!("fits-{i}"), &[]), 0);
    }
    assert_eq!(
        conn.create_topic("one-too-many", &[]),
        44,
        "POLICY_VIOLATION"
    );
    let third = metadata_for(&mut conn, &["auto-more".to_owned()], true);
    assert_eq!(
        third.topics[0].error_code, 44,
        "auto-creation is capped too"
    );
    drop(conn);
    let dir = broker.stop();
    let broker = Broker::start_with(&dir, 1, serve);
    let mut conn = Conn::open(broker.kafka());
    assert_eq!(
        conn.create_topic("one-too-many", &[]),
        44,
        "after a restart"
    );
    // 20,000 names in one Metadata request: more than a request may name.
    let many: Vec<String> = (0..20_000).map(|i| format!("m{i}")).collect();
    let request = MetadataRequest {
        topics: Some(
            many.iter()
                .map(|n| MetadataRequestTopic {
                    name: Some(n.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        allow_auto_topic_creation: true,
        ..Default::default()
    };
    conn.send(METADATA, 12, |b| request.encode(b, 12).expect("encode"));
    assert!(
        closed_within(&mut conn.stream, Duration::from_secs(5)),
        "the connection is closed"
    );
    let mut other = Conn::open(broker.kafka());
    let still = metadata_for(&mut other, &["auto-1".to_owned()], false);
    assert_eq!(still.topics[0].error_code, 0, "the broker serves on");
    assert_eq!(
        metadata_for(&mut other, &["m1".to_owned()], false).topics[0].error_code,
        3,
        "none of the 20,000 was created"
    );
}

/// Whether the peer closes `stream` within `within` (end of stream or a reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// Hostile requests against one broker process: topic names with `/`, `..`, NUL, 300
/// characters and the broker's own file names; a Metadata request naming 1,000,000 topics;
/// a compressed-looking batch claiming 2^31 offsets. Each is refused (a clear error or a
/// closed connection); the broker stays up, every shard answers, and its resident memory
/// grows by less than 256 MiB through all of it.
#[test]
fn hostile_requests_are_refused_and_the_broker_stays_up_within_its_memory() {
    let _one = serial();
    let tmp = crate::test_dir("kafka-hostile-requests");
    let (serve, kafka) = one_shard_kafka();
    let mut broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let before = broker.rss_bytes();
    let mut conn = Conn::open(&kafka);
    for name in [
        "a/b",
        "..",
        ".",
        "a\0b",
        &"x".repeat(300),
        "__broker.lock",
        "__meta",
        "__offsets",
        "__odirect-probe",
    ] {
        assert_eq!(
            conn.create_topic(name, &[]),
            17,
            "{name:?}: INVALID_TOPIC_EXCEPTION"
        );
    }
    // A million names (about 12 MB): more than a request may name.
    let names: Vec<String> = (0..1_000_000).map(|i| format!("t{i}")).collect();
    let mut big = Conn::open(&kafka);
    let request = MetadataRequest {
        topics: Some(
            names
                .iter()
                .map(|n| MetadataRequestTopic {
                    name: Some(n.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        allow_auto_topic_creation: true,
        ..Default::default()
    };
    drop(names);
    big.send(METADATA, 12, |b| request.encode(b, 12).expect("encode"));
    drop(request);
    assert!(
        closed_within(&mut big.stream, Duration::from_secs(30)),
        "the million-topic Metadata request closes its connection"
    );
    // An offset-claim bomb: a Kafka batch whose header claims 2^31 records.
    assert_eq!(conn.create_topic("bombed", &[]), 0);
    let mut bomb = batch(-1, -1, -1, 2).to_vec();
    // lastOffsetDelta at byte 23 of the batch, records count at byte 57.
    bomb[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
    bomb[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    // With a correct CRC: refused for what it claims, not for damage.
    let crc = kafka_crc(&bomb);
    bomb[17..21].copy_from_slice(&crc.to_be_bytes());
    let (error, _) = conn.produce("bombed", Bytes::from(bomb));
    assert!(
        error == 87 || error == 2,
        "the bomb is refused as an invalid record (87) or corrupt (2), not {error}"
    );
    assert_eq!(conn.latest("bombed"), 0, "nothing claimed");
    broker.assert_alive("the hostile requests");
    let mut after = Conn::open(&kafka);
    after.create_by_metadata("still-serving");
    let grown = broker.rss_bytes().saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "RSS grew by {} MiB through the hostile requests",
        grown >> 20
    );
    broker.stop();
}
