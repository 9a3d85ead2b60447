//! Sealed segments hold no file descriptor (issue 12, item 10): a partition of hundreds of
//! segments keeps at most `--max-open-segment-files` of them open while a consumer reads it
//! all, and the broker restarts and serves it under an open-files limit far below its segment
//! count. Before the cache, every sealed segment held its file open from start-up on, so the
//! restart below failed to open the partition (EMFILE).

use std::net::SocketAddr;
use std::path::Path;

use tidelog_wire::native::{BodyT, ErrorCode};

use crate::broker_process::{serial, Broker, Serve};
use crate::native_broker::{batch, create_topic, fetch, owners, values_of, Peer};
use crate::test_dir;

const TOPIC: &str = "many-segments";
/// Each batch nearly fills a 64 KiB segment, so every batch rolls one.
const BATCHES: usize = 400;
const VALUE_BYTES: usize = 40 << 10;
const CACHED_FILES: usize = 8;

fn value(i: usize) -> Vec<u8> {
    let mut value = format!("record {i}:").into_bytes();
    value.resize(VALUE_BYTES, b'a' + (i % 26) as u8);
    value
}

/// Segment log files of the topic (`*.log` under its directory) the process holds open.
fn open_segment_files(pid: u32, data: &Path) -> usize {
    let topic = data.join(TOPIC);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list fds");
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| {
            target.starts_with(&topic) && target.extension().is_some_and(|e| e == "log")
        })
        .count()
}

/// Reads the partition from offset 0 to its end, checking every record's offset and bytes.
fn read_all(endpoint: SocketAddr) {
    let mut peer = Peer::connect(endpoint);
    let mut next = 0i64;
    while (next as usize) < BATCHES {
        let (error, bytes) = fetch(&mut peer, TOPIC, 0, next, 0);
        assert_eq!(error, ErrorCode::None, "fetch at offset {next}");
        let records = values_of(&bytes);
        assert!(!records.is_empty(), "no records at offset {next}");
        for (offset, bytes) in records {
            assert_eq!(offset, next, "offsets follow each other");
            assert!(bytes == value(offset as usize), "record {offset} differs");
            next += 1;
        }
    }
}

#[test]
fn sealed_segments_stay_closed_beyond_the_cache_and_restart_under_a_low_open_files_limit() {
    let _serial = serial();
    let dir = test_dir("open-files");
    let data = dir.path().join("data");
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.extra = [
        "--segment-bytes",
        "65536",
        "--max-batch-bytes",
        "65536",
        "--max-open-segment-files",
        &CACHED_FILES.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let broker = Broker::start_with(&data, 0, serve.clone());
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    let mut bootstrap = Peer::connect(addr);
    assert_eq!(create_topic(&mut bootstrap, TOPIC, 1), ErrorCode::None);
    let endpoint = owners(&mut bootstrap, TOPIC)[0];
    let mut producer = Peer::connect(endpoint);
    for i in 0..BATCHES {
        let response = producer
            .produce(TOPIC, 0, -1, &batch(&[&value(i)]))
            .expect("acks=all answers");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response: {:?}", response.body);
        };
        let result = &produced.partitions.expect("partitions")[0];
        assert_eq!(result.error, ErrorCode::None, "batch {i}");
        assert_eq!(result.base_offset, i as i64);
    }
    let segments = std::fs::read_dir(data.join(TOPIC).join("0"))
        .expect("partition dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(
        segments >= BATCHES - 1,
        "expected a segment per batch, found {segments}"
    );
    read_all(endpoint);
    // The cache, the active segment, and a read-ahead or read still holding its handle.
    let bound = CACHED_FILES + 3;
    let open = open_segment_files(broker.pid(), &data);
    assert!(
        open <= bound,
        "{open} segment files open after reading {segments} segments (bound {bound})"
    );
    let data = broker.stop();

    // Far fewer descriptors than segments: the listeners, the rings, the internal logs and
    // the cache fit; one per segment does not.
    serve.nofile = Some(256);
    let broker = Broker::start_with(&data, 1, serve);
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    let endpoint = owners(&mut Peer::connect(addr), TOPIC)[0];
    read_all(endpoint);
    let stderr = broker.stderr();
    assert!(
        !stderr.contains("failed to open"),
        "something failed to open under the open-files limit: {stderr}"
    );
    let open = open_segment_files(broker.pid(), &data);
    assert!(open <= bound, "{open} segment files open after the restart");
    broker.stop();
}
