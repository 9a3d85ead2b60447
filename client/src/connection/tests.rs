//! Connection tests against a tiny blocking server thread that speaks the wire codec.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::BytesMut;
use glommio::Placement;
use tidelog_wire::native::{
    decode_frame, BodyT, ErrorCode, ErrorResponseT, FrameEncoder, HandshakeResponseT, MessageT,
    MetadataRequestT, MetadataResponseT, TopicMetadataT,
};

use super::*;

/// Runs `f` on a fresh glommio executor that fits the locked-memory limit.
pub(crate) fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    tidelog_engine::runtime::executor_builder(Placement::Unbound, 1)
        .expect("memlock")
        .spawn(move || async move { f().await })
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

fn read_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = u32::from_le_bytes(len) as usize;
    let mut frame = len.to_vec();
    frame.resize(4 + n, 0);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

pub(crate) fn write_msg(s: &mut std::net::TcpStream, cid: u32, body: BodyT) {
    let mut msg = MessageT::default();
    msg.correlation_id = cid;
    msg.body = body;
    let mut out = BytesMut::new();
    FrameEncoder::new()
        .encode_message(&msg, 0, &mut out)
        .expect("encode");
    s.write_all(&out).expect("write");
}

fn handshake_response() -> BodyT {
    let mut hs = HandshakeResponseT::default();
    hs.version = 1;
    hs.shard = 3;
    hs.shard_count = 4;
    BodyT::HandshakeResponse(Box::new(hs))
}

/// Serves one connection: answers the handshake, then hands each later request to `serve`
/// (which may answer, hold, or return `false` to close the connection).
pub(crate) fn server<S>(mut serve: S) -> SocketAddr
where
    S: FnMut(&mut std::net::TcpStream, u32, BodyT, &[u8]) -> bool + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        while let Some(frame) = read_frame(&mut s) {
            let msg = decode_frame(&frame, &FrameLimits::default())
                .expect("client frame decodes")
                .unpack();
            if let BodyT::HandshakeRequest(_) = msg.body {
                write_msg(&mut s, msg.correlation_id, handshake_response());
            } else if !serve(&mut s, msg.correlation_id, msg.body, &frame) {
                return;
            }
        }
    });
    addr
}

fn metadata_request(topic: &str) -> BodyT {
    let mut m = MetadataRequestT::default();
    m.topics = Some(vec![topic.to_owned()]);
    BodyT::MetadataRequest(Box::new(m))
}

fn metadata_response(topic: &str) -> BodyT {
    let mut t = TopicMetadataT::default();
    t.name = Some(topic.to_owned());
    let mut m = MetadataResponseT::default();
    m.topics = Some(vec![t]);
    BodyT::MetadataResponse(Box::new(m))
}

fn topic_of(resp: &Response) -> String {
    let frame = resp.frame().expect("frame");
    let m = frame.message.body_as_metadata_response().expect("metadata");
    m.topics()
        .expect("topics")
        .get(0)
        .name()
        .expect("name")
        .to_owned()
}

fn encode_call(
    body: BodyT,
) -> impl FnOnce(u32, &mut FrameEncoder, &mut BytesMut) -> Result<usize, WireError> {
    move |cid, enc, out| {
        let mut msg = MessageT::default();
        msg.body = body;
        encode_owned(&msg, cid, enc, out)
    }
}

#[test]
fn handshake_reports_the_shard_and_responses_route_by_correlation_id() {
    // Holds the first metadata request and answers both in reverse order.
    let mut held: Option<(u32, String)> = None;
    let addr = server(move |s, cid, body, _| {
        let BodyT::MetadataRequest(m) = body else {
            return false;
        };
        let topic = m.topics.unwrap_or_default().remove(0);
        match held.take() {
            None => held = Some((cid, topic)),
            Some((first_cid, first_topic)) => {
                write_msg(s, cid, metadata_response(&topic));
                write_msg(s, first_cid, metadata_response(&first_topic));
            }
        }
        true
    });
    run(move || async move {
        let conn = Connection::connect(addr, "test").await.expect("connect");
        let info = conn.handshake_info();
        assert_eq!((info.version, info.shard, info.shard_count), (1, 3, 4));
        let a = conn
            .start_request(encode_call(metadata_request("a")), &[])
            .await
            .expect("a");
        let b = conn
            .start_request(encode_call(metadata_request("b")), &[])
            .await
            .expect("b");
        assert_eq!(conn.in_flight(), 2);
        let b = b.wait().await.expect("b answered");
        let a = a.wait().await.expect("a answered");
        assert_eq!(topic_of(&a), "a");
        assert_eq!(topic_of(&b), "b");
        assert_eq!(conn.in_flight(), 0);
    });
}

#[test]
fn error_response_becomes_a_protocol_error() {
    let addr = server(|s, cid, _, _| {
        let mut e = ErrorResponseT::default();
        e.error = ErrorCode::InvalidRequest;
        e.message = Some("nope".into());
        write_msg(s, cid, BodyT::ErrorResponse(Box::new(e)));
        true
    });
    run(move || async move {
        let conn = Connection::connect(addr, "test").await.expect("connect");
        let err = conn.call(metadata_request("x")).await.expect_err("error");
        assert!(matches!(
            err,
            ClientError::Protocol { code: ErrorCode::InvalidRequest, ref message } if message == "nope"
        ));
        assert!(
            !conn.is_closed(),
            "an error response does not break the connection"
        );
    });
}

#[test]
fn server_closing_fails_requests_in_flight() {
    let addr = server(|_, _, _, _| false);
    run(move || async move {
        let conn = Connection::connect(addr, "test").await.expect("connect");
        let err = conn.call(metadata_request("x")).await.expect_err("closed");
        assert!(matches!(err, ClientError::ConnectionClosed { .. }), "{err}");
        assert!(err.is_retriable());
        assert!(conn.is_closed());
        let again = conn.call(metadata_request("x")).await.expect_err("closed");
        assert!(matches!(again, ClientError::ConnectionClosed { .. }));
    });
}

#[test]
fn oversized_frame_from_the_server_closes_the_connection() {
    let addr = server(|s, _, _, _| {
        let huge = u32::try_from(FRAME_BYTES_MAX).expect("fits");
        s.write_all(&huge.to_le_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    run(move || async move {
        let conn = Connection::connect(addr, "test").await.expect("connect");
        let err = conn
            .call(metadata_request("x"))
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ClientError::Wire(WireError::FrameTooLarge { .. })),
            "{err}"
        );
        assert!(conn.is_closed());
    });
}

#[test]
fn in_flight_requests_are_bounded() {
    // Never answers list-offsets requests.
    let addr = server(|_, _, body, _| matches!(body, BodyT::ListOffsetsRequest(_)));
    run(move || async move {
        let conn = Connection::connect(addr, "test").await.expect("connect");
        let list = || BodyT::ListOffsetsRequest(Box::default());
        let mut held = Vec::new();
        for _ in 0..IN_FLIGHT_MAX {
            held.push(
                conn.start_request(encode_call(list()), &[])
                    .await
                    .expect("slot"),
            );
        }
        assert_eq!(conn.in_flight(), IN_FLIGHT_MAX);
        let blocked = futures_lite::future::or(
            async { conn.start_request(encode_call(list()), &[]).await.is_ok() },
            async {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                false
            },
        )
        .await;
        assert!(!blocked, "a request past IN_FLIGHT_MAX waits for a slot");
        held.pop();
        assert_eq!(
            conn.in_flight(),
            IN_FLIGHT_MAX - 1,
            "a dropped waiter frees its entry"
        );
        let next = conn.start_request(encode_call(list()), &[]).await;
        assert!(next.is_ok(), "the freed slot is reused");
    });
}

#[test]
fn request_times_out_and_forgets_its_entry() {
    let addr = server(|_, _, _, _| true);
    run(move || async move {
        let options = ConnectOptions {
            request_timeout: Duration::from_millis(100),
            ..ConnectOptions::default()
        };
        let conn = Connection::connect_with(addr, "test", options)
            .await
            .expect("connect");
        let err = conn.call(metadata_request("x")).await.expect_err("timeout");
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        assert_eq!(conn.in_flight(), 0);
    });
}

#[test]
fn connect_refused_is_a_connect_error() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    run(move || async move {
        let err = Connection::connect(addr, "test")
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    });
}
