//! Restarts of a real broker: a clean one reads (almost) nothing of the logs back, a crash
//! scans the active segment, and either serves every record. Disk reads are the broker
//! process's `read_bytes` in `/proc/<pid>/io` (O_DIRECT reads count) once its shard has
//! logged its recovery summary, whose `clean` count tells the two opens apart. Before
//! the clean-shutdown record (5f3291f), a clean restart scanned the active segment and, with
//! no idempotent producer, the last three segments again for producer state: a broker holding
//! 3.4 GB read 6 GB back.

use std::net::SocketAddr;

use tidelog_wire::native::ErrorCode;

use crate::batch_cache::{disk_read_bytes, produce, read_all};
use crate::broker_process::{serial, Broker, Serve};
use crate::native_broker::{create_topic, owners, Peer};
use crate::test_dir;

const TOPIC: &str = "restarted";
/// More than the broker reads of its own files at start-up, far less than the data.
const START_UP_READ_BYTES_MAX: u64 = 4 << 20;

/// Waits for the one shard's recovery summary (the native port may accept connections
/// before the partitions are open) and returns it.
fn recovered(broker: &Broker) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let log = broker.stderr();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("shard recovered its partitions"))
        {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery summary: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts the broker on `data` and waits for its recovery: the broker, its recovery
/// summary, and the bytes it read from storage until then.
fn restart(data: &std::path::Path, run: usize, serve: Serve) -> (Broker, String, u64) {
    let broker = Broker::start_with(data, run, serve);
    let summary = recovered(&broker);
    let read = disk_read_bytes(broker.pid());
    (broker, summary, read)
}

/// The partition's endpoint on a running broker.
fn endpoint(broker: &Broker) -> SocketAddr {
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    owners(&mut Peer::connect(addr), TOPIC)[0]
}

#[test]
fn a_clean_restart_reads_no_log_back_and_a_crash_scans() {
    let _serial = serial();
    let dir = test_dir("restart");
    let data = dir.path().join("data");
    let mut serve = Serve::new();
    serve.shards = 1;
    let broker = Broker::start_with(&data, 0, serve.clone());
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    assert_eq!(
        create_topic(&mut Peer::connect(addr), TOPIC, 1),
        ErrorCode::None
    );
    let records = produce(endpoint(&broker), TOPIC, 48);
    let data = broker.stop();

    let (broker, summary, read) = restart(&data, 1, serve.clone());
    assert!(
        summary.contains("partitions=1 offline=0 clean=1"),
        "the clean restart did not open from its record: {summary}"
    );
    assert!(
        read < START_UP_READ_BYTES_MAX,
        "a clean restart read {read} bytes back (48 MiB in the active segment)"
    );
    read_all(endpoint(&broker), TOPIC, records);

    // A crash leaves no record: the next start checks the active segment batch by batch.
    let data = broker.kill_9();
    let (broker, summary, read) = restart(&data, 2, serve);
    assert!(
        summary.contains("partitions=1 offline=0 clean=0"),
        "a restart after kill -9 must scan: {summary}"
    );
    assert!(
        read >= 40 << 20,
        "the crash restart scanned yet read only {read} bytes: is read_bytes measured?"
    );
    read_all(endpoint(&broker), TOPIC, records);
}
