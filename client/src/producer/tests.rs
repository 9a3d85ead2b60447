//! Producer batching against a fake single-shard broker thread.

use std::sync::{Arc, Mutex};

use tidelog_wire::batch::verify;
use tidelog_wire::native::{
    decode_frame, BodyT, EndpointT, FrameLimits, MetadataResponseT, PartitionMetadataT,
    ProducePartitionResultT, ProduceResponseT, TopicMetadataT,
};

use super::*;
use crate::connection::tests::{run, server, write_msg};

/// Batches the fake broker received: (partition, record count).
type Seen = Arc<Mutex<Vec<(i32, i32)>>>;

fn metadata(port: u16) -> BodyT {
    let mut e = EndpointT::default();
    e.shard = 0;
    e.host = Some("127.0.0.1".into());
    e.port = port;
    let mut t = TopicMetadataT::default();
    t.name = Some("t".into());
    t.partitions = Some(
        (0..2)
            .map(|p| {
                let mut pm = PartitionMetadataT::default();
                pm.partition = p;
                pm
            })
            .collect(),
    );
    let mut m = MetadataResponseT::default();
    m.endpoints = Some(vec![e]);
    m.topics = Some(vec![t]);
    BodyT::MetadataResponse(Box::new(m))
}

/// A broker with one shard that owns topic "t" (2 partitions) and assigns offsets densely.
fn fake_broker(seen: Seen) -> std::net::SocketAddr {
    let mut next = [0i64; 2];
    server(move |s, cid, body, raw| {
        match body {
            BodyT::MetadataRequest(_) => {
                write_msg(s, cid, metadata(s.local_addr().expect("addr").port()))
            }
            BodyT::ProduceRequest(_) => {
                let frame = decode_frame(raw, &FrameLimits::default()).expect("frame");
                let req = frame.message.body_as_produce_request().expect("produce");
                let mut results = Vec::new();
                for p in req.partitions().expect("partitions") {
                    let bytes = frame.batches(p.batches()).expect("body");
                    let batch = verify(bytes, &Default::default()).expect("valid batch");
                    let count = batch.record_count();
                    seen.lock().expect("lock").push((p.partition(), count));
                    let slot = &mut next[p.partition() as usize];
                    let mut r = ProducePartitionResultT::default();
                    r.topic = p.topic().map(str::to_owned);
                    r.partition = p.partition();
                    r.base_offset = *slot;
                    *slot += i64::from(count);
                    results.push(r);
                }
                let mut resp = ProduceResponseT::default();
                resp.partitions = Some(results);
                write_msg(s, cid, BodyT::ProduceResponse(Box::new(resp)));
            }
            _ => return false,
        }
        true
    })
}

async fn producer(addr: std::net::SocketAddr, config: ProducerConfig) -> Producer {
    let client = Client::connect(addr).await.expect("connect");
    client.metadata(&["t"]).await.expect("metadata");
    Producer::new(client, config).expect("producer")
}

#[test]
fn linger_gathers_records_into_one_batch() {
    let seen = Seen::default();
    let addr = fake_broker(Arc::clone(&seen));
    let check = Arc::clone(&seen);
    run(move || async move {
        let p = producer(
            addr,
            ProducerConfig {
                linger: Duration::from_millis(100),
                ..ProducerConfig::default()
            },
        )
        .await;
        let deliveries: Vec<Delivery> = (0..10)
            .map(|i| p.send("t", None, format!("v{i}").as_bytes(), Some(1)))
            .collect();
        glommio::timer::sleep(Duration::from_millis(40)).await;
        assert!(check.lock().expect("lock").is_empty(), "still lingering");
        assert_eq!(p.outstanding(), 10);
        for (i, d) in deliveries.into_iter().enumerate() {
            let md = d.await.expect("acked");
            assert_eq!((md.partition, md.offset), (1, i as i64));
        }
        assert_eq!(*check.lock().expect("lock"), [(1, 10)]);
    });
}

#[test]
fn full_batches_go_out_without_waiting_for_linger() {
    let seen = Seen::default();
    let addr = fake_broker(Arc::clone(&seen));
    run(move || async move {
        let p = producer(
            addr,
            ProducerConfig {
                linger: Duration::from_secs(3600),
                batch_bytes: 1, // every record fills a batch
                max_in_flight: 2,
                ..ProducerConfig::default()
            },
        )
        .await;
        let deliveries: Vec<Delivery> = (0..5).map(|_| p.send("t", None, b"x", Some(0))).collect();
        let mut offsets = Vec::new();
        for d in deliveries {
            offsets.push(d.await.expect("acked").offset);
        }
        assert_eq!(offsets, [0, 1, 2, 3, 4]);
    });
    assert_eq!(*seen.lock().expect("lock"), vec![(0, 1); 5]);
}

#[test]
fn flush_sends_lingering_batches_and_key_hash_picks_partitions() {
    let seen = Seen::default();
    let addr = fake_broker(Arc::clone(&seen));
    run(move || async move {
        let p = producer(
            addr,
            ProducerConfig {
                linger: Duration::from_secs(3600),
                ..ProducerConfig::default()
            },
        )
        .await;
        let keys: Vec<String> = (0..20).map(|i| format!("key{i}")).collect();
        let deliveries: Vec<Delivery> = keys
            .iter()
            .map(|k| p.send("t", Some(k.as_bytes()), b"v", None))
            .collect();
        p.flush().await;
        assert_eq!(p.outstanding(), 0);
        for (k, d) in keys.iter().zip(deliveries) {
            let md = d.await.expect("acked");
            assert_eq!(md.partition as u32, crc32c::crc32c(k.as_bytes()) % 2);
        }
    });
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.iter().map(|s| s.1).sum::<i32>(), 20);
    assert!(seen.len() <= 2, "one batch per partition: {seen:?}");
}

#[test]
fn buffer_bounds_are_enforced() {
    let seen = Seen::default();
    let addr = fake_broker(Arc::clone(&seen));
    run(move || async move {
        let client = Client::connect(addr).await.expect("connect");
        let p = Producer::new(
            client.clone(),
            ProducerConfig {
                buffer_bytes: 8,
                backlog_bytes: 8,
                linger: Duration::from_millis(1),
                ..ProducerConfig::default()
            },
        )
        .expect("producer");
        let too_big = p.send("t", None, &[0u8; 9], Some(0)).await;
        assert!(matches!(
            too_big,
            Err(ClientError::RecordTooLarge { size: 9, max: 8 })
        ));
        // Metadata is not cached yet, so these wait in the backlog, which holds 8 bytes.
        let a = p.send("t", None, &[1u8; 5], Some(0));
        let b = p.send("t", None, &[2u8; 5], Some(0));
        assert!(matches!(
            b.await,
            Err(ClientError::BufferFull { backlog_bytes: 5 })
        ));
        assert_eq!(a.await.expect("acked").offset, 0);
        let bad = p.send("t", None, b"x", Some(7)).await;
        assert!(matches!(
            bad,
            Err(ClientError::UnknownTopic {
                partition: Some(7),
                ..
            })
        ));
        assert!(Producer::new(
            client,
            ProducerConfig {
                max_in_flight: 0,
                ..ProducerConfig::default()
            }
        )
        .is_err());
    });
}

#[test]
fn send_nowait_reports_each_batch_once_with_dense_indices() {
    type Reports = std::rc::Rc<std::cell::RefCell<Vec<(i32, Option<u64>, usize, i64)>>>;
    let seen = Seen::default();
    let addr = fake_broker(Arc::clone(&seen));
    run(move || async move {
        let p = producer(
            addr,
            ProducerConfig {
                linger: Duration::from_secs(3600),
                batch_bytes: 300, // a few records per batch
                ..ProducerConfig::default()
            },
        )
        .await;
        let reports = Reports::default();
        let r = std::rc::Rc::clone(&reports);
        p.on_batch(move |b| {
            let base = b.result.expect("acked");
            r.borrow_mut()
                .push((b.partition, b.first_index, b.records, base));
        });
        for i in 0..20u8 {
            p.send_nowait("t", None, &[i; 10], Some(i32::from(i % 2)), Some(7))
                .expect("queued");
        }
        // A per-record send in the same stream takes the next index and also resolves.
        let d = p.send("t", None, b"x", Some(0));
        assert!(p.send_nowait("t", None, b"x", Some(9), None).is_err());
        p.flush().await;
        assert_eq!(d.await.expect("acked").offset, 10);
        let mut per_part = [0u64; 2];
        let mut reports = reports.borrow().clone();
        reports.sort_unstable();
        for (part, first, records, base) in reports {
            let slot = &mut per_part[part as usize];
            assert_eq!(first, Some(*slot), "dense, in order");
            assert_eq!(base, *slot as i64, "offsets follow indices here");
            *slot += records as u64;
        }
        assert_eq!(per_part, [11, 10]);
        assert_eq!(p.outstanding(), 0);
    });
}
