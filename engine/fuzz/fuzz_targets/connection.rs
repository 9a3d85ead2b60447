//! The connection state machine of both listeners, against a real broker in this process (one
//! glommio shard, real loopback sockets, real O_DIRECT files): the input is written over one
//! connection in chunks of its own choosing, so frames arrive split at arbitrary points and
//! several requests arrive pipelined in one read; then the client half-closes and reads what
//! comes back. A panic anywhere in the broker aborts the process (the fuzzer's panic hook),
//! and after every input a fresh connection of each protocol must still be answered.
//!
//! Input: byte 0 picks the listener (bit 0: 0 native, 1 Kafka); then chunks, each a length
//! byte `n` and `n` bytes written at once (`n == 0`: pause and read what has arrived). Seeds:
//! `seeds/connection`, written by `cargo run --example connection_seeds`.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tidelog_engine::broker::{self, BrokerConfig, BrokerHandle};

struct Target {
    native: SocketAddr,
    kafka: SocketAddr,
    _broker: BrokerHandle,
}

fn broker() -> &'static Target {
    static BROKER: OnceLock<Target> = OnceLock::new();
    BROKER.get_or_init(|| {
        // O_DIRECT needs a real filesystem: the build's target directory, not /tmp.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/connection-broker")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("broker data directory");
        let mut config = BrokerConfig::new(&dir);
        config.shards = 1;
        config.pin_cpus = false;
        config.native_addr = "127.0.0.1:0".parse().expect("addr");
        config.kafka_addr = Some("127.0.0.1:0".parse().expect("addr"));
        config.kafka_ipv6_loopback_too = false;
        config.log_defaults.preallocate_bytes = 1 << 20;
        config.log_defaults.segment_bytes = 1 << 20;
        // Long polls and group waits end soon, so an input costs milliseconds.
        config.limits.max_fetch_wait_ms = 5;
        config.kafka_limits.max_fetch_wait_ms = 5;
        config.coordinator.initial_rebalance_delay_ms = 0;
        config.timeouts.request_arrival = Duration::from_millis(200);
        let handle = broker::start(config).expect("broker starts");
        Target {
            native: handle.shard_addrs()[0],
            kafka: handle.kafka_node_addrs()[0],
            _broker: handle,
        }
    })
}

/// Reads whatever the broker sends until it closes or `until` passes.
fn drain(stream: &mut TcpStream, until: Instant) {
    let mut buf = [0u8; 64 << 10];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A well-formed request on a fresh connection is answered.
fn answers(addr: SocketAddr, request: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut prefix = [0u8; 4];
    stream.write_all(request).is_ok() && stream.read_exact(&mut prefix).is_ok()
}

/// Kafka ApiVersions v0, correlation id 1, client id "f".
const KAFKA_PROBE: [u8; 15] = [0, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 1, 0, 1, b'f'];

fn native_probe() -> &'static [u8] {
    static PROBE: OnceLock<Vec<u8>> = OnceLock::new();
    PROBE.get_or_init(|| {
        use tidelog_wire::native::{BodyT, FrameEncoder, MessageT, MetadataRequestT};
        let mut message = MessageT::default();
        message.correlation_id = 1;
        message.body = BodyT::MetadataRequest(Box::new(MetadataRequestT::default()));
        let mut out = bytes::BytesMut::new();
        FrameEncoder::new()
            .encode_message(&message, 0, &mut out)
            .expect("encode the probe");
        out.to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&select, mut script)) = data.split_first() else {
        return;
    };
    let target = broker();
    let addr = if select & 1 == 0 {
        target.native
    } else {
        target.kafka
    };
    let Ok(mut stream) = TcpStream::connect(addr) else {
        panic!("the broker refused a connection");
    };
    let _ = stream.set_nodelay(true);
    while let Some((&n, rest)) = script.split_first() {
        let n = usize::from(n).min(rest.len());
        let (chunk, rest) = rest.split_at(n);
        script = rest;
        if n == 0 {
            drain(&mut stream, Instant::now() + Duration::from_millis(2));
            continue;
        }
        if stream.write_all(chunk).is_err() {
            // The broker closed the connection (a refused frame): fine.
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream, Instant::now() + Duration::from_millis(300));
    drop(stream);
    assert!(
        answers(target.kafka, &KAFKA_PROBE),
        "the Kafka listener stopped answering"
    );
    assert!(
        answers(target.native, native_probe()),
        "the native listener stopped answering"
    );
});
