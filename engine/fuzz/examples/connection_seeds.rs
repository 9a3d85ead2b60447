//! Writes the seed corpus of the `connection` fuzz target (`seeds/connection`): well-formed
//! conversations of both protocols (admin, produce, fetch, offsets, groups), whole, pipelined,
//! and split at awkward points, in the target's input format (module docs of
//! `fuzz_targets/connection.rs`).
//!
//!   cargo run --example connection_seeds     (from engine/fuzz)

use bytes::{BufMut, BytesMut};
use tidelog_wire::batch::BatchBuilder;
use tidelog_wire::kafka::generated::{
    api_versions_request::ApiVersionsRequest, create_topics_request, fetch_request,
    find_coordinator_request::FindCoordinatorRequest, list_offsets_request, metadata_request,
    produce_request,
};
use tidelog_wire::kafka::{request_header_version, EncodeError, RequestHeader};
use tidelog_wire::kafka_records::RecordBatchBuilder;
use tidelog_wire::native::{
    BodyT, CreateTopicsRequestT, FetchPartitionT, FetchRequestT, FrameEncoder, HandshakeRequestT,
    MessageT, MetadataRequestT, ProduceRequestPartition, TopicSpecT,
};

const TOPIC: &str = "fz";

fn kafka(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_i32(0);
    let header = RequestHeader {
        request_api_key: api_key,
        request_api_version: version,
        correlation_id,
        client_id: Some("seed".into()),
        ..RequestHeader::default()
    };
    header
        .encode(&mut out, request_header_version(api_key, version))
        .expect("header");
    body(&mut out).expect("body");
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.to_vec()
}

fn kafka_conversation() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    frames.push(kafka(18, 0, 1, |e| ApiVersionsRequest::default().encode(e, 0)));
    frames.push(kafka(18, 3, 2, |e| {
        let mut r = ApiVersionsRequest::default();
        r.client_software_name = "seed".into();
        r.client_software_version = "1".into();
        r.encode(e, 3)
    }));
    frames.push(kafka(19, 2, 3, |e| {
        let mut topic = create_topics_request::CreatableTopic::default();
        topic.name = TOPIC.into();
        topic.num_partitions = 1;
        topic.replication_factor = 1;
        let mut r = create_topics_request::CreateTopicsRequest::default();
        r.topics = vec![topic];
        r.timeout_ms = 1000;
        r.encode(e, 2)
    }));
    frames.push(kafka(3, 1, 4, |e| {
        let mut topic = metadata_request::MetadataRequestTopic::default();
        topic.name = Some(TOPIC.into());
        let mut r = metadata_request::MetadataRequest::default();
        r.topics = Some(vec![topic]);
        r.encode(e, 1)
    }));
    let mut batch = RecordBatchBuilder::with_capacity(256);
    batch.push(Some(b"k"), b"value", 1_700_000_000_000);
    batch.push(None, b"second", 1_700_000_000_001);
    let records = batch.finish(256);
    for (acks, correlation) in [(1i16, 5), (-1, 6), (0, 7)] {
        let records = records.clone();
        frames.push(kafka(0, 3, correlation, move |e| {
            let mut part = produce_request::PartitionProduceData::default();
            part.index = 0;
            part.records = Some(records);
            let mut topic = produce_request::TopicProduceData::default();
            topic.name = TOPIC.into();
            topic.partition_data = vec![part];
            let mut r = produce_request::ProduceRequest::default();
            r.acks = acks;
            r.timeout_ms = 1000;
            r.topic_data = vec![topic];
            r.encode(e, 3)
        }));
    }
    frames.push(kafka(1, 4, 8, |e| {
        let mut part = fetch_request::FetchPartition::default();
        part.partition = 0;
        part.fetch_offset = 0;
        part.partition_max_bytes = 1 << 20;
        let mut topic = fetch_request::FetchTopic::default();
        topic.topic = TOPIC.into();
        topic.partitions = vec![part];
        let mut r = fetch_request::FetchRequest::default();
        r.replica_id = -1;
        r.max_wait_ms = 5;
        r.min_bytes = 1;
        r.max_bytes = 1 << 20;
        r.topics = vec![topic];
        r.encode(e, 4)
    }));
    frames.push(kafka(2, 1, 9, |e| {
        let mut part = list_offsets_request::ListOffsetsPartition::default();
        part.partition_index = 0;
        part.timestamp = -2;
        let mut topic = list_offsets_request::ListOffsetsTopic::default();
        topic.name = TOPIC.into();
        topic.partitions = vec![part];
        let mut r = list_offsets_request::ListOffsetsRequest::default();
        r.replica_id = -1;
        r.topics = vec![topic];
        r.encode(e, 1)
    }));
    frames.push(kafka(10, 1, 10, |e| {
        let mut r = FindCoordinatorRequest::default();
        r.key = "group".into();
        r.encode(e, 1)
    }));
    frames
}

fn native(message: MessageT, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameEncoder::new()
        .encode_message(&message, body.len(), &mut out)
        .expect("encode");
    out.extend_from_slice(body);
    out.to_vec()
}

fn message(correlation_id: u32, body: BodyT) -> MessageT {
    let mut m = MessageT::default();
    m.correlation_id = correlation_id;
    m.body = body;
    m
}

fn native_conversation() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    frames.push(native(
        message(1, BodyT::HandshakeRequest(Box::new(HandshakeRequestT::default()))),
        &[],
    ));
    let mut spec = TopicSpecT::default();
    spec.name = Some(TOPIC.into());
    spec.partitions = 1;
    let mut create = CreateTopicsRequestT::default();
    create.topics = Some(vec![spec]);
    frames.push(native(
        message(2, BodyT::CreateTopicsRequest(Box::new(create))),
        &[],
    ));
    let mut metadata = MetadataRequestT::default();
    metadata.topics = Some(vec![TOPIC.into()]);
    frames.push(native(
        message(3, BodyT::MetadataRequest(Box::new(metadata))),
        &[],
    ));
    let mut builder = BatchBuilder::new();
    builder.push(Some(b"k"), b"value", 1_700_000_000_000, &[]);
    builder.push(None, b"second", 1_700_000_000_001, &[]);
    let batch = builder.finish();
    for (acks, correlation) in [(1i8, 4u32), (-1, 5)] {
        let mut out = BytesMut::new();
        let parts = [ProduceRequestPartition {
            topic: TOPIC,
            partition: 0,
            batches_len: batch.len(),
        }];
        FrameEncoder::new()
            .encode_produce_request(correlation, acks, 1000, &parts, &mut out)
            .expect("produce");
        out.extend_from_slice(&batch);
        frames.push(out.to_vec());
    }
    let mut part = FetchPartitionT::default();
    part.topic = Some(TOPIC.into());
    part.partition = 0;
    part.offset = 0;
    part.max_bytes = 1 << 20;
    let mut fetch = FetchRequestT::default();
    fetch.max_wait_ms = 5;
    fetch.min_bytes = 1;
    fetch.max_bytes = 1 << 20;
    fetch.partitions = Some(vec![part]);
    frames.push(native(message(6, BodyT::FetchRequest(Box::new(fetch))), &[]));
    frames
}

/// The target's input: the listener byte, then `bytes` cut into chunks of `sizes` (cycled),
/// each behind its length byte.
fn script(listener: u8, bytes: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = vec![listener];
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, 255).min(rest.len());
        out.push(n as u8);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/connection");
    std::fs::create_dir_all(&dir).expect("seed dir");
    let mut seeds = Vec::new();
    for (listener, frames) in [(1u8, kafka_conversation()), (0u8, native_conversation())] {
        let all: Vec<u8> = frames.concat();
        // Whole frames one at a time (with a pause to read between), pipelined, split.
        let mut one_by_one = vec![listener];
        for frame in &frames {
            let chunked = script(listener, frame, &[255]);
            one_by_one.extend_from_slice(&chunked[1..]);
            one_by_one.push(0);
        }
        seeds.push(one_by_one);
        seeds.push(script(listener, &all, &[255]));
        seeds.push(script(listener, &all, &[1, 3, 7]));
        seeds.push(script(listener, &all, &[4, 200]));
        for frame in &frames {
            seeds.push(script(listener, frame, &[255]));
        }
    }
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write seed");
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
}
