// The flatc object API types are `#[non_exhaustive]`, so callers outside this
// crate can only build them with `Default` plus field assignments; the tests
// use the same idiom.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

fn encode(msg: &MessageT, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameEncoder::new()
        .encode_message(msg, body.len(), &mut out)
        .unwrap();
    out.extend_from_slice(body);
    out.to_vec()
}

fn message(correlation_id: u32, body: BodyT) -> MessageT {
    let mut m = MessageT::default();
    m.correlation_id = correlation_id;
    m.body = body;
    m
}

fn roundtrip(msg: &MessageT, body: &[u8]) {
    let frame = encode(msg, body);
    assert_eq!(
        peek_frame_len(&frame, &FrameLimits::default()),
        Ok(Some(frame.len()))
    );
    let decoded = decode_frame(&frame, &FrameLimits::default()).unwrap();
    assert_eq!(decoded.frame_len, frame.len());
    assert_eq!(decoded.body, body);
    assert_eq!(decoded.correlation_id(), msg.correlation_id);
    assert_eq!(decoded.body_type(), msg.body.body_type());
    assert_eq!(&decoded.unpack(), msg);
}

fn tp(topic: &str, partition: i32) -> TopicPartitionT {
    let mut t = TopicPartitionT::default();
    t.topic = Some(topic.into());
    t.partition = partition;
    t
}

/// One message of every kind, with non-default values everywhere.
fn every_kind() -> Vec<MessageT> {
    let mut v = Vec::new();
    let mut id = 0;
    let mut push = |body: BodyT| {
        id += 1;
        v.push(message(id, body));
    };

    let mut x = HandshakeRequestT::default();
    x.min_version = 1;
    x.max_version = 3;
    x.client_id = Some("client-1".into());
    push(BodyT::HandshakeRequest(Box::new(x)));

    let mut x = HandshakeResponseT::default();
    x.error = ErrorCode::UnsupportedVersion;
    x.version = 1;
    x.shard = 3;
    x.shard_count = 8;
    push(BodyT::HandshakeResponse(Box::new(x)));

    let mut x = MetadataRequestT::default();
    x.topics = Some(vec!["a".into(), "b".into()]);
    push(BodyT::MetadataRequest(Box::new(x)));

    let mut e = EndpointT::default();
    e.shard = 2;
    e.host = Some("10.0.0.1".into());
    e.port = 9092;
    let mut p = PartitionMetadataT::default();
    p.partition = 7;
    p.shard = 2;
    let mut t = TopicMetadataT::default();
    t.name = Some("orders".into());
    t.error = ErrorCode::None;
    t.partitions = Some(vec![p]);
    t.retention_ms = 86_400_000;
    t.segment_bytes = 1 << 30;
    let mut x = MetadataResponseT::default();
    x.endpoints = Some(vec![e]);
    x.topics = Some(vec![t]);
    push(BodyT::MetadataResponse(Box::new(x)));

    let mut s = TopicSpecT::default();
    s.name = Some("orders".into());
    s.partitions = 12;
    s.retention_bytes = 1 << 40;
    let mut x = CreateTopicsRequestT::default();
    x.topics = Some(vec![s]);
    push(BodyT::CreateTopicsRequest(Box::new(x)));

    let mut r = TopicResultT::default();
    r.name = Some("orders".into());
    r.error = ErrorCode::TopicAlreadyExists;
    r.message = Some("exists".into());
    let mut x = CreateTopicsResponseT::default();
    x.results = Some(vec![r.clone()]);
    push(BodyT::CreateTopicsResponse(Box::new(x)));

    let mut x = DeleteTopicsRequestT::default();
    x.names = Some(vec!["orders".into(), String::new()]);
    push(BodyT::DeleteTopicsRequest(Box::new(x)));

    let mut x = DeleteTopicsResponseT::default();
    r.error = ErrorCode::UnknownTopicOrPartition;
    x.results = Some(vec![r]);
    push(BodyT::DeleteTopicsResponse(Box::new(x)));

    let mut p = ProducePartitionT::default();
    p.topic = Some("orders".into());
    p.partition = 1;
    p.batches = Some(BodyRefT { offset: 0, len: 0 });
    let mut x = ProduceRequestT::default();
    x.acks = -1;
    x.timeout_ms = 30_000;
    x.partitions = Some(vec![p]);
    push(BodyT::ProduceRequest(Box::new(x)));

    let mut p = ProducePartitionResultT::default();
    p.topic = Some("orders".into());
    p.partition = 1;
    p.error = ErrorCode::StorageError;
    p.base_offset = 42;
    p.log_start = 3;
    let mut x = ProduceResponseT::default();
    x.partitions = Some(vec![p]);
    push(BodyT::ProduceResponse(Box::new(x)));

    let mut p = FetchPartitionT::default();
    p.topic = Some("orders".into());
    p.partition = 1;
    p.offset = 1_000;
    p.max_bytes = 1 << 20;
    let mut x = FetchRequestT::default();
    x.max_wait_ms = 500;
    x.min_bytes = 1;
    x.max_bytes = 50 << 20;
    x.partitions = Some(vec![p]);
    push(BodyT::FetchRequest(Box::new(x)));

    let mut p = FetchPartitionResultT::default();
    p.topic = Some("orders".into());
    p.partition = 1;
    p.error = ErrorCode::OffsetOutOfRange;
    p.high_watermark = 100;
    p.log_start = 10;
    let mut x = FetchResponseT::default();
    x.partitions = Some(vec![p]);
    push(BodyT::FetchResponse(Box::new(x)));

    let mut p = ListOffsetsPartitionT::default();
    p.topic = Some("orders".into());
    p.partition = 2;
    p.timestamp = -2;
    let mut x = ListOffsetsRequestT::default();
    x.partitions = Some(vec![p]);
    push(BodyT::ListOffsetsRequest(Box::new(x)));

    let mut p = ListOffsetsResultT::default();
    p.topic = Some("orders".into());
    p.partition = 2;
    p.error = ErrorCode::None;
    p.offset = 5;
    p.timestamp = 1_700_000_000_000;
    let mut x = ListOffsetsResponseT::default();
    x.partitions = Some(vec![p]);
    push(BodyT::ListOffsetsResponse(Box::new(x)));

    let mut c = CommitOffsetT::default();
    c.topic = Some("orders".into());
    c.partition = 2;
    c.offset = 77;
    c.metadata = Some("m".into());
    let mut x = OffsetCommitRequestT::default();
    x.group = Some("g".into());
    x.offsets = Some(vec![c]);
    push(BodyT::OffsetCommitRequest(Box::new(x)));

    let mut e = PartitionErrorT::default();
    e.topic = Some("orders".into());
    e.partition = 2;
    e.error = ErrorCode::GroupNotFound;
    let mut x = OffsetCommitResponseT::default();
    x.results = Some(vec![e]);
    push(BodyT::OffsetCommitResponse(Box::new(x)));

    let mut x = OffsetFetchRequestT::default();
    x.group = Some("g".into());
    x.partitions = Some(vec![tp("orders", 2), tp("payments", 0)]);
    push(BodyT::OffsetFetchRequest(Box::new(x)));

    let mut f = FetchedOffsetT::default();
    f.topic = Some("orders".into());
    f.partition = 2;
    f.metadata = Some("m".into());
    f.error = ErrorCode::None;
    let mut x = OffsetFetchResponseT::default();
    x.offsets = Some(vec![f]);
    push(BodyT::OffsetFetchResponse(Box::new(x)));

    let mut x = ErrorResponseT::default();
    x.error = ErrorCode::InvalidFrame;
    x.message = Some("bad".into());
    push(BodyT::ErrorResponse(Box::new(x)));

    let mut x = FindCoordinatorRequestT::default();
    x.group = Some("g".into());
    push(BodyT::FindCoordinatorRequest(Box::new(x)));

    let mut x = FindCoordinatorResponseT::default();
    x.endpoint = 2 * 1024 + 1;
    push(BodyT::FindCoordinatorResponse(Box::new(x)));
    v
}

#[test]
fn every_message_kind_round_trips() {
    let all = every_kind();
    // Every member of the union (NONE aside) is covered.
    assert_eq!(all.len(), Body::ENUM_VALUES.len() - 1);
    for msg in &all {
        roundtrip(msg, b"");
    }
}

#[test]
fn defaults_are_minus_one() {
    assert_eq!(TopicMetadataT::default().retention_ms, -1);
    assert_eq!(TopicSpecT::default().segment_bytes, -1);
    assert_eq!(ProducePartitionResultT::default().base_offset, -1);
    assert_eq!(FetchedOffsetT::default().offset, -1);
}

#[test]
fn error_codes_are_stable() {
    let expected = [
        (ErrorCode::None, 0),
        (ErrorCode::Unknown, 1),
        (ErrorCode::InvalidFrame, 2),
        (ErrorCode::UnsupportedVersion, 3),
        (ErrorCode::UnknownTopicOrPartition, 4),
        (ErrorCode::OffsetOutOfRange, 5),
        (ErrorCode::CorruptBatch, 6),
        (ErrorCode::RecordTooLarge, 7),
        (ErrorCode::TopicAlreadyExists, 8),
        (ErrorCode::InvalidTopic, 9),
        (ErrorCode::InvalidPartitions, 10),
        (ErrorCode::InvalidConfig, 11),
        (ErrorCode::RequestTimedOut, 12),
        (ErrorCode::NotOwner, 13),
        (ErrorCode::DiskFull, 14),
        (ErrorCode::StorageError, 15),
        (ErrorCode::InvalidRequest, 16),
        (ErrorCode::GroupNotFound, 17),
        (ErrorCode::TooManyConnections, 18),
        (ErrorCode::ShuttingDown, 19),
        (ErrorCode::FencedLeaderEpoch, 20),
        (ErrorCode::UnknownLeaderEpoch, 21),
    ];
    assert_eq!(ErrorCode::ENUM_VALUES.len(), expected.len());
    for (code, value) in expected {
        assert_eq!(code.0, value);
        assert!(code.description().is_some(), "{code:?}");
        assert!(!code.to_string().is_empty());
    }
    assert_eq!(ErrorCode(99).to_string(), "unknown error code 99");
    assert!(!ErrorCode(99).is_retriable());
    assert!(ErrorCode::NotOwner.is_retriable());
    assert!(ErrorCode::RequestTimedOut.is_retriable());
    assert!(!ErrorCode::StorageError.is_retriable());
    assert!(!ErrorCode::CorruptBatch.is_retriable());
    assert!(ErrorCode::None.is_ok());
    assert_eq!(
        ErrorCode::from(&WireError::BadIdentifier),
        ErrorCode::InvalidFrame
    );
}

#[test]
fn version_negotiation() {
    assert_eq!(negotiate_version(1, 1), Some(1));
    assert_eq!(negotiate_version(0, 5), Some(PROTOCOL_VERSION_MAX));
    assert_eq!(negotiate_version(2, 5), None);
    assert_eq!(negotiate_version(0, 0), None);
    assert_eq!(negotiate_version(3, 1), None);
}

#[test]
fn peek_needs_four_bytes() {
    let limits = FrameLimits::default();
    for n in 0..4 {
        assert_eq!(peek_frame_len(&[0xff; 4][..n], &limits), Ok(None));
    }
    assert!(matches!(
        peek_frame_len(&3u32.to_le_bytes(), &limits),
        Err(WireError::BadFrameLength { frame_len: 3 })
    ));
    assert_eq!(peek_frame_len(&4u32.to_le_bytes(), &limits), Ok(Some(8)));
}

#[test]
fn huge_length_prefix_is_rejected_from_four_bytes() {
    let limits = FrameLimits::default();
    assert!(matches!(
        peek_frame_len(&u32::MAX.to_le_bytes(), &limits),
        Err(WireError::FrameTooLarge { len, max }) if len == u64::from(u32::MAX) + 4 && max == 64 << 20
    ));
    // Exactly at the limit is fine, one more is not.
    let at = (limits.max_frame_bytes - 4) as u32;
    assert_eq!(
        peek_frame_len(&at.to_le_bytes(), &limits),
        Ok(Some(limits.max_frame_bytes))
    );
    assert!(matches!(
        peek_frame_len(&(at + 1).to_le_bytes(), &limits),
        Err(WireError::FrameTooLarge { .. })
    ));
    // decode_frame refuses it from the same 4 bytes.
    assert!(matches!(
        decode_frame(&(at + 1).to_le_bytes(), &limits),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn truncated_frames_are_rejected() {
    let mut out = BytesMut::new();
    let parts = [ProduceRequestPartition {
        topic: "t",
        partition: 0,
        batches_len: 5,
    }];
    let body_len = FrameEncoder::new()
        .encode_produce_request(1, 1, 100, &parts, &mut out)
        .unwrap();
    out.extend_from_slice(b"abcde");
    assert_eq!(body_len, 5);
    let frame = out.to_vec();
    let limits = FrameLimits::default();
    for n in 0..frame.len() {
        let prefix = &frame[..n];
        match peek_frame_len(prefix, &limits) {
            Ok(None) => assert!(n < 4),
            Ok(Some(total)) => assert_eq!(total, frame.len()),
            Err(e) => panic!("{e}"),
        }
        assert!(
            matches!(
                decode_frame(prefix, &limits),
                Err(WireError::Truncated { .. })
            ),
            "prefix of {n} bytes"
        );
    }
    // Trailing bytes (the next frame) are ignored.
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    let d = decode_frame(&two, &limits).unwrap();
    assert_eq!(d.frame_len, frame.len());
    assert_eq!(d.body, b"abcde");
}

/// A produce request whose single partition points at `r`, with a body of
/// `body_len` zero bytes.
fn produce_with_ref(r: Option<BodyRef>, body_len: usize) -> Vec<u8> {
    let mut enc = FrameEncoder::new();
    let fbb = enc.builder();
    let topic = fbb.create_string("t");
    let part = ProducePartition::create(
        fbb,
        &ProducePartitionArgs {
            topic: Some(topic),
            partition: 0,
            batches: r.as_ref(),
        },
    );
    let parts = fbb.create_vector(&[part]);
    let req = ProduceRequest::create(
        fbb,
        &ProduceRequestArgs {
            acks: 1,
            timeout_ms: 0,
            partitions: Some(parts),
        },
    );
    let root = Message::create(
        fbb,
        &MessageArgs {
            correlation_id: 9,
            body_type: Body::ProduceRequest,
            body: Some(req.as_union_value()),
        },
    );
    let mut out = BytesMut::new();
    enc.finish_frame(root, body_len, &mut out).unwrap();
    out.resize(out.len() + body_len, 0);
    out.to_vec()
}

#[test]
fn body_refs_out_of_bounds_are_rejected() {
    let limits = FrameLimits::default();
    let ok = produce_with_ref(Some(BodyRef::new(2, 8)), 10);
    let d = decode_frame(&ok, &limits).unwrap();
    let p = d
        .message
        .body_as_produce_request()
        .unwrap()
        .partitions()
        .unwrap()
        .get(0);
    assert_eq!(d.body_slice(p.batches().unwrap()).unwrap().len(), 8);

    for (offset, len) in [
        (2, 9),
        (11, 0),
        (u32::MAX, 1),
        (u32::MAX, u32::MAX),
        (0, 11),
    ] {
        let frame = produce_with_ref(Some(BodyRef::new(offset, len)), 10);
        assert_eq!(
            decode_frame(&frame, &limits).unwrap_err(),
            WireError::BodyRefOutOfBounds {
                offset,
                len,
                body_len: 10
            }
        );
    }
    assert_eq!(
        decode_frame(&produce_with_ref(None, 10), &limits).unwrap_err(),
        WireError::MissingBody { index: 0 }
    );
}

#[test]
fn fetch_body_refs_out_of_bounds_are_rejected() {
    let mut enc = FrameEncoder::new();
    let parts = [FetchResponsePartition {
        topic: "t",
        partition: 0,
        error: ErrorCode::None,
        high_watermark: 10,
        log_start: 0,
        batches_len: 6,
        replica: None,
    }];
    let mut out = BytesMut::new();
    enc.encode_fetch_response(1, &parts, &mut out).unwrap();
    // Claim a 5-byte body: the frame is shorter than the BodyRef needs.
    let frame_len = u32::from_le_bytes(out[..4].try_into().unwrap()) - 1;
    out[..4].copy_from_slice(&frame_len.to_le_bytes());
    out.extend_from_slice(b"12345");
    assert!(matches!(
        decode_frame(&out, &FrameLimits::default()),
        Err(WireError::BodyRefOutOfBounds {
            offset: 0,
            len: 6,
            body_len: 5
        })
    ));
}

#[test]
fn header_limit_is_exact() {
    let msg = &every_kind()[3];
    let frame = encode(msg, b"xyz");
    let header_len = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
    let mut limits = FrameLimits {
        max_header_bytes: header_len,
        ..FrameLimits::default()
    };
    assert!(decode_frame(&frame, &limits).is_ok());
    limits.max_header_bytes = header_len - 1;
    assert_eq!(
        decode_frame(&frame, &limits).unwrap_err(),
        WireError::HeaderTooLarge {
            len: header_len as u32,
            max: header_len - 1
        }
    );
}

#[test]
fn frame_limit_is_exact() {
    let frame = encode(&every_kind()[0], b"");
    let mut limits = FrameLimits {
        max_frame_bytes: frame.len(),
        ..FrameLimits::default()
    };
    assert!(decode_frame(&frame, &limits).is_ok());
    limits.max_frame_bytes -= 1;
    assert!(matches!(
        decode_frame(&frame, &limits),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn verifier_depth_and_table_limits_are_exact() {
    // The metadata response nests message > response > topic > partition.
    let frame = encode(&every_kind()[3], b"");
    let needed = (1..10)
        .find(|&max_depth| {
            let limits = FrameLimits {
                max_depth,
                ..FrameLimits::default()
            };
            decode_frame(&frame, &limits).is_ok()
        })
        .unwrap();
    assert!(needed <= FrameLimits::default().max_depth);
    let limits = FrameLimits {
        max_depth: needed - 1,
        ..FrameLimits::default()
    };
    assert!(matches!(
        decode_frame(&frame, &limits),
        Err(WireError::InvalidHeader(
            flatbuffers::InvalidFlatbuffer::DepthLimitReached
        ))
    ));

    let tables = (1..20)
        .find(|&max_tables| {
            let limits = FrameLimits {
                max_tables,
                ..FrameLimits::default()
            };
            decode_frame(&frame, &limits).is_ok()
        })
        .unwrap();
    let limits = FrameLimits {
        max_tables: tables - 1,
        ..FrameLimits::default()
    };
    assert!(matches!(
        decode_frame(&frame, &limits),
        Err(WireError::InvalidHeader(
            flatbuffers::InvalidFlatbuffer::TooManyTables
        ))
    ));
}

#[test]
fn header_length_must_fit_the_frame() {
    let mut frame = encode(&every_kind()[0], b"");
    let header_len = u32::from_le_bytes(frame[4..8].try_into().unwrap());
    frame[4..8].copy_from_slice(&(header_len + 1).to_le_bytes());
    assert!(matches!(
        decode_frame(&frame, &FrameLimits::default()),
        Err(WireError::HeaderOutOfBounds { .. })
    ));
    // header_len 0: no identifier.
    let mut frame = 4u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        decode_frame(&frame, &FrameLimits::default()).unwrap_err(),
        WireError::BadIdentifier
    );
}

#[test]
fn identifier_is_required() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = MessageT::default().pack(&mut fbb);
    fbb.finish(root, None);
    let header = fbb.finished_data();
    let mut frame = Vec::new();
    frame.extend_from_slice(&(4 + header.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_le_bytes());
    frame.extend_from_slice(header);
    assert_eq!(
        decode_frame(&frame, &FrameLimits::default()).unwrap_err(),
        WireError::BadIdentifier
    );
}

#[test]
fn empty_or_unknown_body_is_rejected_with_correlation_id() {
    let frame = encode(&message(77, BodyT::NONE), b"");
    assert_eq!(
        decode_frame(&frame, &FrameLimits::default()).unwrap_err(),
        WireError::UnknownMessageType {
            message_type: 0,
            correlation_id: 77
        }
    );

    // A union member from the future: a table the verifier cannot check.
    let mut enc = FrameEncoder::new();
    let fbb = enc.builder();
    let future = ErrorResponse::create(fbb, &ErrorResponseArgs::default());
    let root = Message::create(
        fbb,
        &MessageArgs {
            correlation_id: 78,
            body_type: Body(200),
            body: Some(future.as_union_value()),
        },
    );
    let mut out = BytesMut::new();
    enc.finish_frame(root, 0, &mut out).unwrap();
    let err = decode_frame(&out, &FrameLimits::default()).unwrap_err();
    assert_eq!(
        err,
        WireError::UnknownMessageType {
            message_type: 200,
            correlation_id: 78
        }
    );
    assert_eq!(ErrorCode::from(&err), ErrorCode::UnsupportedVersion);
}

#[test]
fn error_response_helper() {
    let mut out = BytesMut::new();
    FrameEncoder::new()
        .encode_error_response(5, ErrorCode::InvalidFrame, "nope", &mut out)
        .unwrap();
    let d = decode_frame(&out, &FrameLimits::default()).unwrap();
    let e = d.message.body_as_error_response().unwrap();
    assert_eq!(d.correlation_id(), 5);
    assert_eq!(e.error(), ErrorCode::InvalidFrame);
    assert_eq!(e.message(), Some("nope"));
    assert!(d.body.is_empty());
}

#[test]
fn encoder_is_reusable_and_rejects_oversized_bodies() {
    let mut enc = FrameEncoder::new();
    let mut out = BytesMut::new();
    let huge = [ProduceRequestPartition {
        topic: "t",
        partition: 0,
        batches_len: u32::MAX as usize + 1,
    }];
    assert!(matches!(
        enc.encode_produce_request(1, 1, 0, &huge, &mut out),
        Err(WireError::FrameTooLarge { .. })
    ));
    // Fits in a BodyRef but not in frame_len once the header is added.
    let big = [ProduceRequestPartition {
        batches_len: u32::MAX as usize,
        ..huge[0]
    }];
    assert!(matches!(
        enc.encode_produce_request(1, 1, 0, &big, &mut out),
        Err(WireError::FrameTooLarge { .. })
    ));
    assert!(out.is_empty());
    for id in 0..3 {
        let before = out.len();
        enc.encode_error_response(id, ErrorCode::Unknown, "x", &mut out)
            .unwrap();
        let d = decode_frame(&out[before..], &FrameLimits::default()).unwrap();
        assert_eq!(d.correlation_id(), id);
    }
}

#[test]
fn produce_request_carries_real_batches() {
    use crate::batch::{verify, BatchBuilder, VerifyLimits};
    let mut b = BatchBuilder::new();
    let mut batches = Vec::new();
    for i in 0..3u8 {
        for j in 0..=i {
            b.push(Some(&[i]), &[j; 10], 1_000 + i64::from(j), &[]);
        }
        batches.push(b.finish().freeze());
    }
    // Partition 0 gets the first two batches back to back, partition 1 the third.
    let parts = [
        ProduceRequestPartition {
            topic: "orders",
            partition: 0,
            batches_len: batches[0].len() + batches[1].len(),
        },
        ProduceRequestPartition {
            topic: "orders",
            partition: 1,
            batches_len: batches[2].len(),
        },
    ];
    let mut head = BytesMut::new();
    let body_len = FrameEncoder::new()
        .encode_produce_request(3, -1, 1_000, &parts, &mut head)
        .unwrap();
    assert_eq!(body_len, batches.iter().map(|b| b.len()).sum::<usize>());
    let mut frame = head.to_vec();
    for b in &batches {
        frame.extend_from_slice(b);
    }
    let d = decode_frame(&frame, &FrameLimits::default()).unwrap();
    let req = d.message.body_as_produce_request().unwrap();
    assert_eq!(req.acks(), -1);
    let mut counts = Vec::new();
    for p in req.partitions().unwrap() {
        let mut bytes = d.batches(p.batches()).unwrap();
        let mut n = 0;
        while !bytes.is_empty() {
            let view = verify(bytes, &VerifyLimits::default()).unwrap();
            bytes = &bytes[view.batch_len()..];
            n += 1;
        }
        counts.push(n);
    }
    assert_eq!(counts, [2, 1]);
}

fn arb_parts() -> impl Strategy<Value = Vec<(String, i32, Vec<u8>)>> {
    prop::collection::vec(
        (
            ".{0,12}",
            any::<i32>(),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        0..8,
    )
}

proptest! {
    #[test]
    fn produce_request_round_trips(
        correlation_id: u32, acks in -1i8..=1, timeout_ms: i32, parts in arb_parts()
    ) {
        let req: Vec<_> = parts
            .iter()
            .map(|(topic, partition, body)| ProduceRequestPartition {
                topic,
                partition: *partition,
                batches_len: body.len(),
            })
            .collect();
        let mut out = BytesMut::new();
        let body_len = FrameEncoder::new()
            .encode_produce_request(correlation_id, acks, timeout_ms, &req, &mut out)
            .unwrap();
        prop_assert_eq!(body_len, parts.iter().map(|p| p.2.len()).sum::<usize>());
        for (_, _, body) in &parts {
            out.extend_from_slice(body);
        }
        let d = decode_frame(&out, &FrameLimits::default()).unwrap();
        prop_assert_eq!(d.frame_len, out.len());
        prop_assert_eq!(d.correlation_id(), correlation_id);
        let r = d.message.body_as_produce_request().unwrap();
        prop_assert_eq!(r.acks(), acks);
        prop_assert_eq!(r.timeout_ms(), timeout_ms);
        let got = r.partitions().unwrap();
        prop_assert_eq!(got.len(), parts.len());
        for (p, (topic, partition, body)) in got.iter().zip(&parts) {
            prop_assert_eq!(p.topic(), Some(topic.as_str()));
            prop_assert_eq!(p.partition(), *partition);
            prop_assert_eq!(d.body_slice(p.batches().unwrap()).unwrap(), body.as_slice());
        }
    }

    #[test]
    fn fetch_response_round_trips(
        correlation_id: u32,
        parts in prop::collection::vec(
            (".{0,12}", any::<i32>(), 0i16..20, any::<i64>(), any::<i64>(),
             prop::collection::vec(any::<u8>(), 0..64)),
            0..8,
        )
    ) {
        let resp: Vec<_> = parts
            .iter()
            .map(|(topic, partition, error, hw, ls, body)| FetchResponsePartition {
                topic,
                partition: *partition,
                error: ErrorCode(*error),
                high_watermark: *hw,
                log_start: *ls,
                batches_len: body.len(),
                replica: None,
            })
            .collect();
        let mut out = BytesMut::new();
        FrameEncoder::new().encode_fetch_response(correlation_id, &resp, &mut out).unwrap();
        for p in &parts {
            out.extend_from_slice(&p.5);
        }
        let d = decode_frame(&out, &FrameLimits::default()).unwrap();
        prop_assert_eq!(d.correlation_id(), correlation_id);
        let got = d.message.body_as_fetch_response().unwrap().partitions().unwrap();
        prop_assert_eq!(got.len(), parts.len());
        for (p, want) in got.iter().zip(&resp) {
            prop_assert_eq!(p.topic(), Some(want.topic));
            prop_assert_eq!(p.partition(), want.partition);
            prop_assert_eq!(p.error(), want.error);
            prop_assert_eq!(p.high_watermark(), want.high_watermark);
            prop_assert_eq!(p.log_start(), want.log_start);
            prop_assert_eq!(p.batches().is_some(), want.batches_len > 0);
        }
        for (p, (.., body)) in got.iter().zip(&parts) {
            prop_assert_eq!(d.batches(p.batches()).unwrap(), body.as_slice());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = FrameLimits::default();
        let _ = peek_frame_len(&data, &limits);
        if let Ok(d) = decode_frame(&data, &limits) {
            prop_assert!(d.frame_len <= data.len());
            let _ = d.unpack();
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..19,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut frame = encode(&every_kind()[which], b"0123456789");
        for (i, b) in flips {
            let i = i.index(frame.len());
            frame[i] ^= b;
        }
        if let Ok(d) = decode_frame(&frame, &FrameLimits::default()) {
            prop_assert!(d.frame_len <= frame.len());
            let _ = d.unpack();
        }
    }
}
