//! Hostile clients against a real `tidelog serve` process: each attack must leave the broker
//! up, every shard answering, and its resident memory under a stated bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::broker_process::{free_ports_below_ephemeral, serial, Broker, Kafka, Serve};

/// Raises this process's open-files limit to its hard limit (the attacks open thousands of
/// sockets).
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own; no other memory.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// A connection to `addr` from 127.0.0.2: a well-behaved client on another address than
/// the attackers' (127.0.0.1), whose connections are capped per address.
fn connect_as_bystander(addr: &str) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: std::net::SocketAddr = "127.0.0.2:0".parse().expect("addr");
    socket.bind(&local.into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
}

/// ApiVersions v0 on `addr` from a bystander: answered with error 0.
fn answers(addr: &str) -> bool {
    let Ok(mut s) = connect_as_bystander(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // size, api key 18, version 0, correlation 7, client id "t".
    let mut req = Vec::new();
    req.extend_from_slice(&11i32.to_be_bytes());
    req.extend_from_slice(&18i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&7i32.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.push(b't');
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut head = [0u8; 10];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    i32::from_be_bytes([head[4], head[5], head[6], head[7]]) == 7 && head[8] == 0 && head[9] == 0
}

fn every_shard_answers(bootstrap: u16, shards: u16, native: &str) {
    for port in std::iter::once(bootstrap).chain((0..shards).map(|s| bootstrap + 1 + s)) {
        assert!(
            answers(&format!("127.0.0.1:{port}")),
            "Kafka port {port} answers"
        );
    }
    let mut native = connect_as_bystander(native).expect("native port accepts");
    native
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(native.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the native port keeps a bystander's connection open"
    );
}

/// 1,000 connections each announce a 100 MB Kafka request and send 2 MB of it; 5,000 more
/// connect and stay idle, all from one address. The broker holds at most its request memory
/// (256 MiB per shard) for the frames and at most its per-address cap of connections, answers
/// a client on another address on every shard meanwhile, and frees it all when they go.
/// Before, each announced frame was allocated and zeroed whole as its first bytes arrived
/// (100 GB), and one address could take every connection slot.
#[test]
fn announced_giant_frames_and_idle_crowds_do_not_exhaust_the_broker() {
    let _one = serial();
    let nofile = raise_nofile();
    let tmp = crate::test_dir("hostile-frames");
    let base = free_ports_below_ephemeral(4);
    let mut serve = Serve::new();
    serve.shards = 2;
    serve.native_addr = format!("127.0.0.1:{}", base + 3);
    serve.kafka = Kafka::At(format!("127.0.0.1:{base}"));
    let mut broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let before = broker.rss_bytes();
    let bootstrap = format!("127.0.0.1:{base}");
    let giants = 1000.min((nofile as usize).saturating_sub(200) / 2);
    let mut held = Vec::with_capacity(giants);
    let chunk = vec![0u8; 64 << 10];
    for _ in 0..giants {
        let mut s = TcpStream::connect(&bootstrap).expect("connect");
        s.write_all(&(100_000_000i32).to_be_bytes())
            .expect("prefix");
        s.set_nonblocking(true).expect("nonblocking");
        // Up to 2 MB each, as far as the broker takes it (it stops reading past its budget).
        let mut sent = 0;
        while sent < 2 << 20 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        held.push(s);
    }
    let idle_count = 5000.min((nofile as usize).saturating_sub(200 + giants));
    let idle: Vec<TcpStream> = (0..idle_count)
        .map(|_| TcpStream::connect(&bootstrap).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    broker.assert_alive("the attack");
    every_shard_answers(base, 2, &format!("127.0.0.1:{}", base + 3));
    let during = broker.rss_bytes();
    // Two shards' request memory plus slack for connection state.
    let bound = 2 * 256 * (1 << 20) + (256 << 20);
    assert!(
        during.saturating_sub(before) < bound,
        "RSS grew by {} MiB during the attack (bound {} MiB; {giants} giant frames, {idle_count} idle)",
        during.saturating_sub(before) >> 20,
        bound >> 20
    );
    drop(held);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(&bootstrap) {
        assert!(
            Instant::now() < deadline,
            "the broker answers after the attack"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.assert_alive("the attackers left");
    eprintln!(
        "hostile frames: RSS {} MiB before, {} MiB during ({giants} x 100 MB announced, {idle_count} idle)",
        before >> 20,
        during >> 20
    );
}

/// Twelve consumers each ask for 64 MiB of old (on-disk) data and never read the response.
/// Every response holds its disk-read buffer until it is sent, so before the shard's read
/// memory existed the broker grew by 12 x 64 MiB; now the reads past the budget (256 MiB per
/// shard) wait, the broker grows by at most about that, a tail consumer on another address is
/// served from the cache meanwhile, and disk reads resume when the stalled consumers go.
#[test]
fn stalled_consumers_of_old_data_hold_at_most_the_shards_read_memory() {
    use crate::native_broker::{batch, create_topic, fetch, fetch_request, owners, Peer};
    use tidelog_wire::native::{BodyT, ErrorCode};
    const TOPIC: &str = "old-data";
    let _one = serial();
    let tmp = crate::test_dir("hostile-stalled-fetch");
    let mut serve = Serve::new();
    serve.shards = 1;
    let mut broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let addr: std::net::SocketAddr = broker.addr.parse().expect("addr");
    let mut bootstrap = Peer::connect(addr);
    assert_eq!(create_topic(&mut bootstrap, TOPIC, 1), ErrorCode::None);
    let endpoint = owners(&mut bootstrap, TOPIC)[0];
    let mut producer = Peer::connect(endpoint);
    // 80 MiB: ten times the tail cache, so offset 0 is read from disk.
    let value = vec![b'x'; 1000 << 10];
    for i in 0..80 {
        let response = producer
            .produce(TOPIC, 0, 1, &batch(&[&value]))
            .expect("acks=1 answers");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response");
        };
        assert_eq!(
            produced.partitions.expect("partitions")[0].error,
            ErrorCode::None,
            "batch {i}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = broker.rss_bytes();
    let stalled: Vec<Peer> = (0..12)
        .map(|_| {
            let mut peer = Peer::connect(endpoint);
            peer.send(fetch_request(TOPIC, 0, 0, 0, 64 << 20));
            peer
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    broker.assert_alive("the stalled fetches");
    let during = broker.rss_bytes();
    // One shard's read memory plus slack for buffers in flight.
    let bound = (256 << 20) + (128 << 20);
    assert!(
        during.saturating_sub(before) < bound,
        "RSS grew by {} MiB with 12 stalled 64 MiB fetches (bound {} MiB)",
        during.saturating_sub(before) >> 20,
        bound >> 20
    );
    // The tail is served from the cache, whatever the disk readers wait for.
    let started = Instant::now();
    let mut tail = Peer::connect(endpoint);
    let (error, bytes) = fetch(&mut tail, TOPIC, 0, 79, 0);
    assert_eq!(error, ErrorCode::None);
    assert!(!bytes.is_empty(), "the last batch is served");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a tail fetch waited {:?} behind stalled disk reads",
        started.elapsed()
    );
    drop(stalled);
    // With the stalled consumers gone, their memory comes back and disk reads go on.
    let mut reader = Peer::connect(endpoint);
    let (error, bytes) = fetch(&mut reader, TOPIC, 0, 0, 0);
    assert_eq!(error, ErrorCode::None);
    assert!(!bytes.is_empty(), "offset 0 is served again");
    broker.assert_alive("the stalled consumers left");
    eprintln!(
        "stalled fetches: RSS {} MiB before, {} MiB during",
        before >> 20,
        during >> 20
    );
}
