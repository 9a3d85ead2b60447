//! The shard-wide batch cache (issue 13) in a real broker: recently produced data is read
//! from memory, not from the disk, even after a consumer has caught up through far more old
//! data than the cache holds. Disk reads are measured from outside, by the broker process's
//! `read_bytes` in `/proc/<pid>/io` (bytes it caused to be fetched from storage; O_DIRECT
//! reads count). Before the batch cache, each partition kept only its last 8 MiB in memory,
//! so reading the fresh topic below from its start went to the disk for half of it.

use std::net::SocketAddr;

use tidelog_wire::native::{BodyT, ErrorCode};

use crate::broker_process::{serial, Broker, Serve};
use crate::native_broker::{batch, create_topic, fetch, owners, values_of, Peer};
use crate::test_dir;

const CACHE_BYTES: u64 = 64 << 20;
const OLD: &str = "old-data";
const FRESH: &str = "fresh-data";
const VALUE_BYTES: usize = 32 << 10;
const RECORDS_PER_BATCH: usize = 16;

pub(crate) fn value(topic: &str, i: usize) -> Vec<u8> {
    let mut value = format!("{topic} record {i}:").into_bytes();
    value.resize(VALUE_BYTES, b'a' + (i % 26) as u8);
    value
}

/// Bytes the process has caused to be read from storage so far.
pub(crate) fn disk_read_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/<pid>/io");
    io.lines()
        .find_map(|line| line.strip_prefix("read_bytes: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("read_bytes in /proc/<pid>/io")
}

/// Produces `mib` MiB of records to partition 0 of `topic` (acks=all batches).
pub(crate) fn produce(endpoint: SocketAddr, topic: &str, mib: usize) -> usize {
    let mut producer = Peer::connect(endpoint);
    let records = (mib << 20) / VALUE_BYTES;
    for first in (0..records).step_by(RECORDS_PER_BATCH) {
        let values: Vec<Vec<u8>> = (first..first + RECORDS_PER_BATCH)
            .map(|i| value(topic, i))
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let response = producer
            .produce(topic, 0, -1, &batch(&refs))
            .expect("acks=all answers");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response: {:?}", response.body);
        };
        let result = &produced.partitions.expect("partitions")[0];
        assert_eq!(result.error, ErrorCode::None, "{topic} batch at {first}");
        assert_eq!(result.base_offset, first as i64);
    }
    records
}

/// Reads partition 0 of `topic` from offset 0 to `records`, checking every record.
pub(crate) fn read_all(endpoint: SocketAddr, topic: &str, records: usize) {
    let mut peer = Peer::connect(endpoint);
    let mut next = 0i64;
    while (next as usize) < records {
        let (error, bytes) = fetch(&mut peer, topic, 0, next, 0);
        assert_eq!(error, ErrorCode::None, "fetch {topic} at offset {next}");
        let got = values_of(&bytes);
        assert!(!got.is_empty(), "no records of {topic} at offset {next}");
        for (offset, bytes) in got {
            assert_eq!(offset, next, "offsets follow each other");
            assert!(
                bytes == value(topic, offset as usize),
                "{topic} record {offset} differs"
            );
            next += 1;
        }
    }
}

#[test]
fn fresh_data_is_read_from_memory_after_a_catch_up_scan_of_older_data() {
    let _serial = serial();
    let dir = test_dir("batch-cache");
    let data = dir.path().join("data");
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.extra = ["--cache-bytes", &CACHE_BYTES.to_string()]
        .map(String::from)
        .to_vec();
    let broker = Broker::start_with(&data, 0, serve.clone());
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    let mut bootstrap = Peer::connect(addr);
    assert_eq!(create_topic(&mut bootstrap, OLD, 1), ErrorCode::None);
    let endpoint = owners(&mut bootstrap, OLD)[0];
    // Old data: half again as much as the cache holds, and not in memory after a restart.
    let old_records = produce(endpoint, OLD, 96);
    let data = broker.stop();

    let broker = Broker::start_with(&data, 1, serve);
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    let mut bootstrap = Peer::connect(addr);
    assert_eq!(create_topic(&mut bootstrap, FRESH, 1), ErrorCode::None);
    let endpoint = owners(&mut bootstrap, FRESH)[0];
    let fresh_records = produce(endpoint, FRESH, 16);

    // A consumer catches up through the old data: from the disk.
    let read_from_disk = |topic: &str, records: usize| {
        let before = disk_read_bytes(broker.pid());
        read_all(endpoint, topic, records);
        disk_read_bytes(broker.pid()) - before
    };
    let scanned = read_from_disk(OLD, old_records);
    assert!(
        scanned >= 80 << 20,
        "the old data was not in memory, yet only {scanned} bytes were read from disk"
    );

    // The fresh data, 16 MiB from its start, comes from memory: the scan took only the
    // cache's cold share.
    let fresh = read_from_disk(FRESH, fresh_records);
    assert!(
        fresh < 1 << 20,
        "reading 16 MiB just produced read {fresh} bytes from disk"
    );

    // Read once, the old data did not displace it; read again, it still comes from disk.
    let again = read_from_disk(OLD, old_records);
    assert!(
        again >= 64 << 20,
        "a second scan read {again} bytes from disk"
    );
    drop(broker);
}
