//! Power loss at the broker level: a real `tidelog serve` process takes acks=all produces,
//! is killed at a random moment, and its data directory is then replaced by what a disk that
//! lost power at that moment could hold (every write, truncation and directory entry not made
//! durable by an fdatasync or a directory sync may be lost or torn: see
//! `tidelog_engine::io::journal`). The restarted broker must still serve every acknowledged
//! record, at its offset, byte for byte, and never hand out an acknowledged offset again.
//!
//! `kill -9` alone cannot show this: the page cache and O_DIRECT writes survive it, so a
//! broker that never synced would pass. This test fails when the group-commit fdatasync or a
//! directory sync is removed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidelog_engine::io::journal::{PowerLossModel, JOURNAL_ENV};
use tidelog_engine::io::sim::SimRng;
use tidelog_tests::test_seed;
use tidelog_wire::native::{BodyT, ErrorCode};

use crate::broker_process::{serial, Broker, Serve};
use crate::native_broker::{batch, create_topic, fetch, owners, values_of, Peer};
use crate::test_dir;

/// Power cuts per run (override with `TIDELOG_POWER_LOSS_CYCLES`).
const CYCLES: usize = 8;
const TOPIC: &str = "durable";
const PARTITIONS: i32 = 2;
/// Produce requests each producer keeps in flight (so that group commit batches them).
const IN_FLIGHT: usize = 4;

/// offset -> value, per partition, of every acknowledged record.
type Acked = BTreeMap<(i32, i64), Vec<u8>>;
/// (partition, offset, value) of each acknowledgement, as producers see them.
type AckLog = Arc<Mutex<Vec<(i32, i64, Vec<u8>)>>>;

/// Produces one-record acks=all batches to `partition` until the connection breaks,
/// recording each acknowledged one.
fn produce_until_killed(addr: SocketAddr, partition: i32, tag: String, seed: u64, acked: AckLog) {
    let mut rng = SimRng::new(seed);
    let mut peer = Peer::connect(addr);
    let mut pending = std::collections::VecDeque::new();
    for i in 0u64.. {
        while pending.len() < IN_FLIGHT {
            let padding = rng.below(3000) as usize;
            let mut value = format!("{tag}:{i}:{}:", pending.len()).into_bytes();
            value.resize(value.len() + padding, b'a' + (i % 26) as u8);
            let Ok(id) = peer.try_send_produce(TOPIC, partition, -1, &batch(&[&value])) else {
                return;
            };
            pending.push_back((id, value));
        }
        let Ok((response, _)) = peer.read() else {
            return;
        };
        let (id, value) = pending.pop_front().expect("a request in flight");
        assert_eq!(response.correlation_id, id, "responses in order");
        let BodyT::ProduceResponse(produced) = response.body else {
            panic!("not a produce response: {:?}", response.body);
        };
        let result = &produced.partitions.expect("partitions")[0];
        if result.error == ErrorCode::None {
            acked
                .lock()
                .expect("lock")
                .push((partition, result.base_offset, value));
        }
    }
}

/// Every acknowledged record is served at its offset with its bytes.
fn verify(broker: &Broker, acked: &Acked, cycle: usize) {
    let addr: SocketAddr = broker.addr.parse().expect("addr");
    let mut bootstrap = Peer::connect(addr);
    let endpoints = owners(&mut bootstrap, TOPIC);
    for partition in 0..PARTITIONS {
        let mut peer = Peer::connect(endpoints[partition as usize]);
        let mut stored = BTreeMap::new();
        let mut next = 0i64;
        loop {
            let (error, bytes) = fetch(&mut peer, TOPIC, partition, next, 0);
            assert_eq!(
                error,
                ErrorCode::None,
                "fetch of partition {partition} at {next}"
            );
            let values = values_of(&bytes);
            let Some(&(last, _)) = values.last() else {
                break;
            };
            stored.extend(values);
            next = last + 1;
        }
        for ((p, offset), value) in acked.range((partition, 0)..(partition + 1, 0)) {
            assert_eq!(*p, partition);
            match stored.get(offset) {
                Some(found) if found == value => {}
                Some(found) => panic!(
                    "after power loss {cycle}: partition {partition} offset {offset} holds {:?}, \
                     not the acknowledged {:?}",
                    String::from_utf8_lossy(&found[..found.len().min(24)]),
                    String::from_utf8_lossy(&value[..value.len().min(24)]),
                ),
                None => panic!(
                    "after power loss {cycle}: acknowledged record at partition {partition} \
                     offset {offset} is gone (the log ends at {next}; {} acknowledged records \
                     in all)",
                    acked.len()
                ),
            }
        }
    }
}

#[test]
fn acknowledged_records_survive_power_loss_at_random_moments() {
    let _serial = serial();
    let root = test_dir("power-loss");
    let data = root.path().join("data");
    let journal = root.path().join("journal");
    let seed = test_seed("acknowledged_records_survive_power_loss_at_random_moments");
    let cycles = std::env::var("TIDELOG_POWER_LOSS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES);
    let mut rng = SimRng::new(seed);
    let mut serve = Serve::new();
    serve.env = vec![(JOURNAL_ENV.to_owned(), journal.display().to_string())];
    // Small segments, so that power is lost around segment rolls too.
    serve.extra = ["--segment-bytes", "131072", "--max-batch-bytes", "65536"]
        .map(String::from)
        .to_vec();
    let mut acked = Acked::new();
    for cycle in 0..=cycles {
        if journal.exists() {
            std::fs::remove_dir_all(&journal).expect("clear journal");
        }
        std::fs::create_dir_all(&journal).expect("journal dir");
        let mut model = PowerLossModel::scan(&data).expect("scan data dir");
        let broker = Broker::start_with(&data, cycle, serve.clone());
        let addr: SocketAddr = broker.addr.parse().expect("addr");
        if cycle == 0 {
            let mut peer = Peer::connect(addr);
            assert_eq!(create_topic(&mut peer, TOPIC, PARTITIONS), ErrorCode::None);
        } else {
            verify(&broker, &acked, cycle);
        }
        if cycle == cycles {
            break;
        }
        let endpoints = owners(&mut Peer::connect(addr), TOPIC);
        let log = Arc::new(Mutex::new(Vec::new()));
        let producers: Vec<_> = (0..PARTITIONS * 2)
            .map(|i| {
                let partition = i % PARTITIONS;
                let endpoint = endpoints[partition as usize];
                let (tag, log) = (format!("c{cycle}p{i}"), Arc::clone(&log));
                let seed = rng.next_u64();
                std::thread::spawn(move || {
                    produce_until_killed(endpoint, partition, tag, seed, log)
                })
            })
            .collect();
        // Power fails at a random moment, a few hundred acknowledged writes in.
        let started = Instant::now();
        let run_for = Duration::from_millis(150 + rng.below(600));
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(10));
        }
        broker.kill_9();
        for producer in producers {
            producer.join().expect("producer");
        }
        let log = std::mem::take(&mut *log.lock().expect("lock"));
        assert!(!log.is_empty(), "cycle {cycle}: nothing was acknowledged");
        for (partition, offset, value) in log {
            if let Some(previous) = acked.insert((partition, offset), value) {
                panic!(
                    "cycle {cycle}: partition {partition} offset {offset} acknowledged twice \
                     (first {:?})",
                    String::from_utf8_lossy(&previous[..previous.len().min(24)])
                );
            }
        }
        model.replay(&journal).expect("replay journal");
        model
            .lose_power(rng.next_u64())
            .materialise(&data)
            .expect("materialise");
        assert_journal_was_recorded(&journal);
    }
}

/// The broker really wrote a journal (a release build, or an environment that dropped the
/// variable, would make this test pass without testing anything).
fn assert_journal_was_recorded(journal: &Path) {
    let bytes: u64 = std::fs::read_dir(journal)
        .expect("journal dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert!(
        bytes > 0,
        "the broker recorded no power-loss journal: is it a debug build?"
    );
}
