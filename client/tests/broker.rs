//! End to end against an in-process broker (`tidelog_engine::broker`): 2 shards on loopback.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use glommio::Placement;
use tidelog_client::{
    Acks, Client, Consumer, ConsumerConfig, Partitioner, Producer, ProducerConfig, StartAt,
};
use tidelog_engine::broker::{self, BrokerConfig, BrokerHandle};

const TOPIC: &str = "e2e";
const PARTITIONS: u32 = 3;
const RECORDS: usize = 10_000;

fn start_broker(name: &str) -> BrokerHandle {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = BrokerConfig::new(&dir);
    config.native_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.shards = 2;
    config.pin_cpus = false;
    // Keep each partition's preallocation small: the default is sized for production disks.
    config.log_defaults.preallocate_bytes = 1 << 20;
    broker::start(config).expect("broker starts")
}

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    tidelog_engine::runtime::executor_builder(Placement::Unbound, 1)
        .expect("memlock")
        .spawn(move || async move { f().await })
        .expect("spawn executor")
        .join()
        .expect("client executor");
}

#[test]
fn producer_and_consumer_move_10k_records_through_two_shards() {
    let broker = start_broker("client-e2e");
    let addr = broker.native_addr();
    run(move || async move {
        let client = Client::connect(addr).await.expect("connect");
        client
            .create_topic(TOPIC, PARTITIONS, -1, -1)
            .await
            .expect("create topic");
        let info = client.topic(TOPIC).await.expect("metadata");
        assert_eq!(info.partition_count(), PARTITIONS as usize);
        let shards: HashSet<u64> = info.partitions.values().copied().collect();
        assert_eq!(shards.len(), 2, "3 partitions spread over both shards");

        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(5),
                batch_bytes: 16 << 10,
                max_in_flight: 4,
                partitioner: Partitioner::KeyHash,
                ..ProducerConfig::default()
            },
        )
        .expect("producer");
        let deliveries: Vec<_> = (0..RECORDS)
            .map(|i| {
                let key = format!("key-{i}");
                let value = format!("value-{i}");
                producer.send(TOPIC, Some(key.as_bytes()), value.as_bytes(), None)
            })
            .collect();
        producer.flush().await;
        assert_eq!(producer.outstanding(), 0);
        // What each partition must hold, by offset.
        let mut produced: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
        for (i, d) in deliveries.into_iter().enumerate() {
            let md = d.await.expect("acknowledged");
            let old = produced
                .entry(md.partition)
                .or_default()
                .insert(md.offset, format!("value-{i}"));
            assert!(old.is_none(), "offset {} given twice", md.offset);
        }
        assert_eq!(
            produced.len(),
            PARTITIONS as usize,
            "every partition got records"
        );
        for (p, offsets) in &produced {
            let expected: Vec<i64> = (0..offsets.len() as i64).collect();
            let got: Vec<i64> = offsets.keys().copied().collect();
            assert_eq!(got, expected, "partition {p} offsets are dense from 0");
        }

        let mut consumer =
            Consumer::new(client.clone(), ConsumerConfig::default()).expect("consumer");
        let assignment: Vec<(&str, i32, StartAt)> = (0..PARTITIONS as i32)
            .map(|p| (TOPIC, p, StartAt::Earliest))
            .collect();
        consumer.assign(&assignment).await.expect("assign");
        let mut consumed: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
        let mut total = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while total < RECORDS {
            assert!(Instant::now() < deadline, "consumed only {total} records");
            for r in consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll")
            {
                let value = String::from_utf8(r.value.to_vec()).expect("utf8");
                let key = r.key.expect("keyed");
                assert_eq!(&key[..], value.replace("value", "key").as_bytes());
                consumed
                    .entry(r.partition)
                    .or_default()
                    .push((r.offset, value));
                total += 1;
            }
        }
        assert!(consumer
            .poll(Duration::from_millis(50))
            .await
            .expect("poll")
            .is_empty());
        for (p, records) in &consumed {
            let expected: Vec<(i64, String)> =
                produced[p].iter().map(|(o, v)| (*o, v.clone())).collect();
            assert_eq!(
                records, &expected,
                "partition {p}: in order, none lost or duplicated"
            );
            assert_eq!(consumer.position(TOPIC, *p), Some(records.len() as i64));
        }

        assert_eq!(
            client
                .list_offsets(TOPIC, 0, tidelog_client::LATEST)
                .await
                .expect("latest"),
            produced[&0].len() as i64
        );
        assert_eq!(
            client
                .list_offsets(TOPIC, 0, tidelog_client::EARLIEST)
                .await
                .expect("earliest"),
            0
        );
    });
    broker.shutdown().expect("broker stops");
}

/// With no linger and one request in flight, records sent while the window is full gather in
/// the open batch instead of each becoming a one-record request queued behind the window.
#[test]
fn a_full_window_lets_the_lingered_batch_grow() {
    const N: u64 = 5_000;
    let broker = start_broker("client-linger");
    let addr = broker.native_addr();
    run(move || async move {
        let client = Client::connect(addr).await.expect("connect");
        client
            .create_topic("linger", 1, -1, -1)
            .await
            .expect("create topic");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::ZERO,
                max_in_flight: 1,
                ..ProducerConfig::default()
            },
        )
        .expect("producer");
        let batches = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let records = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let (b, r) = (batches.clone(), records.clone());
        producer.on_batch(move |report| {
            assert!(report.result.is_ok(), "batch failed: {:?}", report.result);
            b.set(b.get() + 1);
            r.set(r.get() + report.records as u64);
        });
        let mut sent = 0;
        while sent < N {
            // Bursts of 100 between yields, so the linger timers get to run.
            for _ in 0..100 {
                producer
                    .send_nowait("linger", None, &sent.to_le_bytes(), Some(0), None)
                    .expect("send");
                sent += 1;
            }
            glommio::yield_if_needed().await;
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        producer.flush().await;
        assert_eq!(records.get(), N);
        // Each acks=all request waits for an fdatasync; one-record batches would need N.
        assert!(
            batches.get() < N / 5,
            "{} batches for {N} records: lingered batches did not grow",
            batches.get()
        );
    });
    broker.shutdown().expect("broker stops");
}
