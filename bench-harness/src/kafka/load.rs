//! The benchmark's Kafka producers and consumers: the same workloads and measurements as the
//! native ones in [`crate::run`], over [`KafkaClient`].
//!
//! ```text
//!  producer i: send loop ─▶ per-partition BatchBuilder (+ the records' send times)
//!              full (--batch-bytes) or lingered (--linger-ms) ─▶ batch task:
//!              window permit (--max-in-flight per partition) ─▶ Produce to the leader's
//!              connection ─▶ response (acks=0: written) ─▶ latency of every record
//!              closed loop: the send loop waits for a permit (back-pressure); open loop:
//!              the batch task waits, the send loop keeps to the clock, and batches queued
//!              beyond PRODUCER_BACKLOG_BYTES_MAX are dropped and counted as buffer_full
//!  consumer j: partitions grouped by leader ─▶ one sessionless Fetch per leader in flight
//!              at once ─▶ batches decoded, records below the position skipped
//! ```
//!
//! A send loop allocates nothing per record: values are copied into the open batch's buffer
//! (reserved for the whole batch) and send times into a vector reserved likewise.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use glommio::sync::{Semaphore, StaticPermit};
use tidelog_client::{Acks, ClientError};
use tidelog_wire::kafka::generated::{
    fetch_request::{FetchPartition, FetchRequest, FetchTopic},
    fetch_response::FetchResponse,
    produce_response::ProduceResponse,
};
use tidelog_wire::kafka::Decoder;

use super::batch::{self, BatchBuilder, BATCH_HEADER_LEN, RECORD_OVERHEAD_MAX};
use super::client::{api, KafkaClient, EARLIEST, LATEST, RETRY_BACKOFF};
use super::{check, code, KafkaError, FETCH_BYTES_MAX, FETCH_PARTITION_BYTES_MAX};
use crate::args::Mode;
use crate::payload::{self, Payloads};
use crate::run::{
    producer_partitions, records_for, Shared, WorkerResult, POLL_WAIT, STALL_TIMEOUT,
};
use crate::stats::{now_ns, Live};

/// Attempts of a Produce after a retriable error (each after a metadata refresh).
const PRODUCE_RETRIES: usize = 5;
/// Open loop: record bytes in batches waiting for a window permit, per producer, before
/// further batches are dropped (the native producer's backlog bound).
const PRODUCER_BACKLOG_BYTES_MAX: usize = tidelog_client::limits::PRODUCER_BACKLOG_BYTES_DEFAULT;
/// Produce `timeout_ms`.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// The Kafka `acks` of `acks`.
pub fn kafka_acks(acks: Acks) -> i16 {
    match acks {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => -1,
    }
}

/// What a producer's batch tasks share.
struct ProducerCtx {
    client: Rc<KafkaClient>,
    shared: Arc<Shared>,
    acks: i16,
    result: RefCell<WorkerResult>,
    /// Batch tasks not finished.
    outstanding: Cell<usize>,
    /// Open loop: bytes of batches waiting for a permit.
    backlog_bytes: Cell<usize>,
}

impl ProducerCtx {
    fn error(&self, e: &KafkaError, n: u64) {
        self.result.borrow_mut().errors.add(e.kind(), n);
        Live::add(&self.shared.live.errors, n);
    }
}

/// A partition's open batch.
struct OpenBatch {
    partition: i32,
    batch: BatchBuilder,
    /// Send time of each record in the batch.
    times: Vec<u64>,
    /// When the batch must go (ns, [`now_ns`]); `u64::MAX` while empty.
    linger_until: u64,
    /// `--max-in-flight` permits.
    window: Rc<Semaphore>,
}

/// Producer `i` over Kafka: sends its share, then flushes and waits for every batch.
pub(crate) async fn produce(
    client: Rc<KafkaClient>,
    shared: Arc<Shared>,
    i: usize,
    start: Instant,
) -> Result<WorkerResult> {
    let plan = &shared.plan;
    let partitions = shared.partition_count();
    let parts = producer_partitions(i, plan.producers, partitions);
    // One record always fits: a batch holds at least one, however small --batch-bytes is.
    let capacity = plan
        .batch_bytes
        .max(BATCH_HEADER_LEN + plan.record_size + RECORD_OVERHEAD_MAX);
    let times_capacity = (plan.batch_bytes / plan.record_size).max(1) + 1;
    let mut open: Vec<OpenBatch> = parts
        .iter()
        .map(|p| OpenBatch {
            partition: *p,
            batch: BatchBuilder::with_capacity(capacity),
            times: Vec::with_capacity(times_capacity),
            linger_until: u64::MAX,
            window: Rc::new(Semaphore::new(plan.max_in_flight.max(1) as u64)),
        })
        .collect();
    let ctx = Rc::new(ProducerCtx {
        client,
        shared: Arc::clone(&shared),
        acks: kafka_acks(plan.acks),
        result: RefCell::new(WorkerResult::default()),
        outstanding: Cell::new(0),
        backlog_bytes: Cell::new(0),
    });
    let open_loop = plan.rate.is_some();
    let linger_ns = u64::try_from(plan.linger.as_nanos()).unwrap_or(u64::MAX);
    let quota = plan
        .records
        .map_or(u64::MAX, |n| records_for(i, plan.producers, n));
    let deadline = plan.duration.map(|d| start + d);
    let interval_ns = plan
        .rate
        .map(|r| (1e9 * plan.producers as f64 / r).max(1.0) as u64);
    let start_ns = now_ns();
    // Record timestamps (ms since the epoch) follow the monotonic clock from here.
    let wall_ms_at_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let wall_ms = |t: u64| wall_ms_at_start + (t.saturating_sub(start_ns) / 1_000_000) as i64;
    let mut payloads = Payloads::new(plan.seed.wrapping_add(i as u64), plan.record_size);
    let mut sent = 0u64;
    while sent < quota {
        let t0 = match interval_ns {
            Some(interval) => {
                let intended = start_ns + sent * interval;
                if deadline.is_some_and(|d| start + Duration::from_nanos(intended - start_ns) >= d)
                {
                    break;
                }
                // Sleep until the next send, waking for batches whose linger ends first, or
                // for a window permit that a lingered batch waits for.
                loop {
                    let now = now_ns();
                    send_lingered(&ctx, &mut open, now, true, capacity).await;
                    if intended <= now {
                        break;
                    }
                    let wake = open
                        .iter()
                        .map(|b| b.linger_until)
                        .filter(|l| *l > now)
                        .min()
                        .unwrap_or(u64::MAX)
                        .min(intended);
                    let nap = glommio::timer::sleep(Duration::from_nanos(wake - now));
                    match open.iter().position(|b| b.linger_until <= now) {
                        Some(k) => {
                            let window = Rc::clone(&open[k].window);
                            let permit = futures_lite::future::or(
                                async { window.acquire_static_permit(1).await.ok() },
                                async {
                                    nap.await;
                                    None
                                },
                            )
                            .await;
                            if permit.is_some() {
                                dispatch(&ctx, &mut open[k], true, capacity, permit).await;
                            }
                        }
                        None => nap.await,
                    }
                }
                if sent.is_multiple_of(64) {
                    // Behind schedule the loop above never sleeps: let the batch writers and
                    // ack handlers run.
                    glommio::yield_if_needed().await;
                }
                intended
            }
            None => {
                if sent.is_multiple_of(64) {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    send_lingered(&ctx, &mut open, now_ns(), false, capacity).await;
                    glommio::yield_if_needed().await;
                }
                now_ns()
            }
        };
        let index = (sent % open.len() as u64) as usize;
        let value = payloads.next(t0);
        let ts = wall_ms(t0);
        let b = &mut open[index];
        if !b.batch.is_empty()
            && b.batch.len() + b.batch.record_len(value.len(), ts) > plan.batch_bytes
        {
            dispatch(&ctx, b, open_loop, capacity, None).await;
        }
        if b.batch.is_empty() {
            b.linger_until = t0.saturating_add(linger_ns);
        }
        b.batch.push(value, ts);
        b.times.push(t0);
        sent += 1;
        if b.linger_until <= t0 && b.window.available() > 0 {
            dispatch(&ctx, b, open_loop, capacity, None).await;
        }
    }
    for b in &mut open {
        dispatch(&ctx, b, open_loop, capacity, None).await;
    }
    while ctx.outstanding.get() > 0 {
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
    let mut result = std::mem::take(&mut *ctx.result.borrow_mut());
    result.produce_end = Some(Instant::now());
    shared.producer_done();
    Ok(result)
}

/// Sends the batches whose linger ended by `now` where a window permit is free. A lingered
/// batch without one keeps filling up instead (as Kafka's accumulator does), so a slow broker
/// gets fewer, larger requests rather than a queue of small ones.
async fn send_lingered(
    ctx: &Rc<ProducerCtx>,
    open: &mut [OpenBatch],
    now: u64,
    open_loop: bool,
    capacity: usize,
) {
    for b in open {
        if b.linger_until <= now && b.window.available() > 0 {
            dispatch(ctx, b, open_loop, capacity, None).await;
        }
    }
}

/// Finishes `b`'s batch, if any, and hands it to a batch task with a window permit: `permit`,
/// else a free one; without a free one, closed loop waits here (the back-pressure) and open
/// loop leaves the wait to the task, within [`PRODUCER_BACKLOG_BYTES_MAX`].
async fn dispatch(
    ctx: &Rc<ProducerCtx>,
    b: &mut OpenBatch,
    open_loop: bool,
    capacity: usize,
    permit: Option<StaticPermit>,
) {
    if b.batch.is_empty() {
        return;
    }
    let batch = b.batch.finish(capacity);
    let cap = b.times.capacity();
    let times = std::mem::replace(&mut b.times, Vec::with_capacity(cap));
    b.linger_until = u64::MAX;
    let permit = match permit.or_else(|| b.window.try_acquire_static_permit(1).ok()) {
        Some(p) => Some(p),
        None if open_loop => {
            let queued = ctx.backlog_bytes.get();
            if queued + batch.len() > PRODUCER_BACKLOG_BYTES_MAX {
                let n = times.len() as u64;
                ctx.result.borrow_mut().errors.add("buffer_full", n);
                Live::add(&ctx.shared.live.errors, n);
                return;
            }
            ctx.backlog_bytes.set(queued + batch.len());
            None
        }
        None => match b.window.acquire_static_permit(1).await {
            Ok(p) => Some(p),
            Err(_) => return,
        },
    };
    ctx.outstanding.set(ctx.outstanding.get() + 1);
    let task = send_batch(
        Rc::clone(ctx),
        b.partition,
        batch,
        times,
        permit,
        Rc::clone(&b.window),
    );
    glommio::spawn_local(task).detach();
}

/// One batch: waits for a window permit (open loop), produces it with bounded retries, and
/// records every record's latency or error.
async fn send_batch(
    ctx: Rc<ProducerCtx>,
    partition: i32,
    batch: Bytes,
    times: Vec<u64>,
    permit: Option<StaticPermit>,
    window: Rc<Semaphore>,
) {
    let _permit = match permit {
        Some(p) => Some(p),
        None => {
            let p = window.acquire_static_permit(1).await.ok();
            ctx.backlog_bytes
                .set(ctx.backlog_bytes.get().saturating_sub(batch.len()));
            p
        }
    };
    let n = times.len() as u64;
    let mut attempt = 0;
    let outcome = loop {
        match produce_once(&ctx, partition, &batch).await {
            Ok(()) => break Ok(()),
            Err(e) if e.is_retriable() && attempt < PRODUCE_RETRIES => {
                ctx.error(&e, 1);
                attempt += 1;
                glommio::timer::sleep(RETRY_BACKOFF * attempt as u32).await;
                // A failed refresh shows in the next attempt.
                let _ = ctx.client.refresh(false).await;
            }
            Err(e) => break Err(e),
        }
    };
    match outcome {
        Ok(()) => {
            let now = now_ns();
            let size = ctx.shared.plan.record_size as u64;
            let mut r = ctx.result.borrow_mut();
            for t0 in &times {
                r.produce_latency.record_ns(*t0, now);
            }
            r.produced += n;
            r.produced_bytes += n * size;
            Live::add(&ctx.shared.live.produced, n);
            Live::add(&ctx.shared.live.produced_bytes, n * size);
        }
        Err(e) => ctx.error(&e, n),
    }
    ctx.outstanding.set(ctx.outstanding.get() - 1);
}

/// One Produce of `batch` to `partition`'s leader; with acks=0, done once written.
async fn produce_once(ctx: &ProducerCtx, partition: i32, batch: &Bytes) -> super::Result<()> {
    let node = ctx.client.leader(partition).await?;
    let v = node.versions.produce;
    let topic = ctx.client.topic();
    let mut prefix = BytesMut::with_capacity(48 + topic.len());
    batch::produce_prefix(
        &mut prefix,
        v,
        ctx.acks,
        PRODUCE_TIMEOUT_MS,
        topic,
        partition,
        batch.len(),
    );
    let parts: [&[u8]; 3] = [&prefix, batch, batch::produce_suffix(v)];
    let Some(pending) = node
        .conn
        .send(api::PRODUCE, v, &parts, ctx.acks != 0)
        .await?
    else {
        return Ok(());
    };
    let body = pending.wait().await?;
    let r = ProduceResponse::decode(&mut Decoder::new(&body), v)
        .map_err(|e| KafkaError::Malformed(format!("Produce: {e}")))?;
    let p = r
        .responses
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| KafkaError::Malformed(format!("Produce without partition {partition}")))?;
    check("Produce", p.error_code)
}

/// A Kafka consumer set up and positioned, waiting for the start.
pub(crate) struct ReadyConsumer {
    client: KafkaClient,
    partitions: Vec<i32>,
    /// Next offset to read, per partition.
    positions: Vec<i64>,
    /// Consume mode: the end offsets taken at start.
    ends: Option<Vec<i64>>,
}

/// Connects a consumer of `partitions` and positions it (consume: at the earliest offsets,
/// with the latest as ends; e2e: at the latest).
pub(crate) async fn ready_consumer(shared: &Shared, partitions: Vec<i32>) -> Result<ReadyConsumer> {
    let plan = &shared.plan;
    let client = KafkaClient::connect(plan.broker, &plan.topic).await?;
    client.refresh(false).await?;
    let from = if plan.mode == Mode::Consume {
        EARLIEST
    } else {
        LATEST
    };
    let positions = client.list_offsets(&partitions, from).await?;
    let ends = if plan.mode == Mode::Consume {
        Some(client.list_offsets(&partitions, LATEST).await?)
    } else {
        None
    };
    Ok(ReadyConsumer {
        client,
        partitions,
        positions,
        ends,
    })
}

/// A Kafka consumer: reads its partitions to the end offsets (consume: taken at start; e2e:
/// taken once the producers are done), one fetch per leader node in flight.
pub(crate) async fn consume(
    shared: Arc<Shared>,
    ready: ReadyConsumer,
    start: Instant,
) -> Result<WorkerResult> {
    let plan = &shared.plan;
    let live = &shared.live;
    let ReadyConsumer {
        client,
        partitions,
        mut positions,
        mut ends,
    } = ready;
    let starts = positions.clone();
    let deadline = match plan.mode {
        Mode::Consume => plan.duration.map(|d| start + d),
        _ => None,
    };
    let e2e = plan.mode == Mode::E2e;
    let mut r = WorkerResult::default();
    let mut last_progress = Instant::now();
    let mut attempt = 0usize;
    loop {
        if ends.is_none() && shared.producers_running() == 0 {
            ends = Some(client.list_offsets(&partitions, LATEST).await?);
            last_progress = Instant::now();
        }
        if let Some(ends) = &ends {
            if positions.iter().zip(ends).all(|(p, e)| p >= e) {
                break;
            }
            if e2e && last_progress.elapsed() > STALL_TIMEOUT {
                bail!("consumer stalled: no record for {STALL_TIMEOUT:?} before the end offsets");
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d)
            || plan
                .records
                .is_some_and(|n| plan.mode == Mode::Consume && Live::get(&live.consumed) >= n)
        {
            break;
        }
        // Partitions still to read, by leader node.
        let mut by_node: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (k, p) in partitions.iter().enumerate() {
            let wanted = ends.as_ref().is_none_or(|e| positions[k] < e[k]);
            if wanted {
                by_node.entry(client.leader_id(*p)).or_default().push(k);
            }
        }
        let mut round = Round::default();
        match fetch_round(
            &client,
            &by_node,
            &partitions,
            &mut positions,
            e2e,
            &mut round,
        )
        .await
        {
            Ok(()) => attempt = 0,
            Err(e) if e.is_retriable() && attempt < PRODUCE_RETRIES => {
                r.errors.add(e.kind(), 1);
                Live::add(&live.errors, 1);
                attempt += 1;
                glommio::timer::sleep(RETRY_BACKOFF * attempt as u32).await;
                let _ = client.refresh(false).await;
            }
            Err(e) => return Err(anyhow!(e)).context("fetch"),
        }
        if round.records == 0 {
            continue;
        }
        last_progress = Instant::now();
        r.consumed += round.records;
        r.consumed_bytes += round.bytes;
        r.e2e_latency.merge(&round.e2e);
        Live::add(&live.consumed, round.records);
        Live::add(&live.consumed_bytes, round.bytes);
    }
    r.consume_end = Some(Instant::now());
    if let Some(ends) = &ends {
        r.consume_expected = ends
            .iter()
            .zip(&starts)
            .map(|(e, s)| u64::try_from(e - s).unwrap_or(0))
            .sum();
    }
    Ok(r)
}

/// What one round of fetches read.
#[derive(Default)]
struct Round {
    records: u64,
    bytes: u64,
    e2e: crate::stats::Latency,
}

/// Sends one Fetch per leader node (all in flight at once), then reads the answers in turn.
async fn fetch_round(
    client: &KafkaClient,
    by_node: &BTreeMap<i32, Vec<usize>>,
    partitions: &[i32],
    positions: &mut [i64],
    e2e: bool,
    round: &mut Round,
) -> super::Result<()> {
    let mut pending = Vec::with_capacity(by_node.len());
    for (node, ks) in by_node {
        if *node < 0 {
            return Err(KafkaError::Code {
                api: "Metadata",
                code: code::LEADER_NOT_AVAILABLE,
            });
        }
        let c = client.node(*node).await?;
        let v = c.versions.fetch;
        let request = FetchRequest {
            replica_id: -1,
            max_wait_ms: POLL_WAIT.as_millis() as i32,
            min_bytes: 1,
            max_bytes: FETCH_BYTES_MAX as i32,
            isolation_level: 0,
            session_id: 0,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: client.topic().to_owned(),
                partitions: ks
                    .iter()
                    .map(|k| FetchPartition {
                        partition: partitions[*k],
                        current_leader_epoch: -1,
                        fetch_offset: positions[*k],
                        last_fetched_epoch: -1,
                        log_start_offset: -1,
                        partition_max_bytes: FETCH_PARTITION_BYTES_MAX as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut body = BytesMut::new();
        request
            .encode(&mut body, v)
            .map_err(|e| KafkaError::Malformed(format!("encode Fetch: {e}")))?;
        let p = c.conn.send(api::FETCH, v, &[&body], true).await?;
        pending.push((p, v));
    }
    for (p, v) in pending {
        let Some(p) = p else { continue };
        let body = p.wait().await?;
        let resp = FetchResponse::decode(&mut Decoder::new(&body), v)
            .map_err(|e| KafkaError::Malformed(format!("Fetch: {e}")))?;
        check("Fetch", resp.error_code)?;
        for t in resp.responses.iter().filter(|t| t.topic == client.topic()) {
            for pd in &t.partitions {
                check("Fetch", pd.error_code)?;
                let Some(k) = partitions.iter().position(|p| *p == pd.partition_index) else {
                    continue;
                };
                let Some(records) = &pd.records else { continue };
                let now = now_ns();
                let (n, bytes) = read_batches(records, &mut positions[k], |value| {
                    if e2e {
                        if let Some(sent) = payload::timestamp_ns(value) {
                            round.e2e.record_ns(sent, now);
                        }
                    }
                })?;
                round.records += n;
                round.bytes += bytes;
            }
        }
    }
    Ok(())
}

/// `attributes` bit 5: a control batch (transaction marker), skipped.
const CONTROL: i16 = 1 << 5;

/// Walks the whole batches of one partition's fetched `records` (a trailing partial batch is
/// ignored, as Kafka allows), calls `f` with the value of each record at or after `*position`,
/// and moves `*position` past each batch. Returns (records, value bytes) seen.
///
/// # Errors
/// A compressed or pre-v2 batch ([`KafkaError::Unsupported`]), a malformed one.
pub fn read_batches(
    records: &[u8],
    position: &mut i64,
    mut f: impl FnMut(&[u8]),
) -> super::Result<(u64, u64)> {
    let mut at = 0usize;
    let (mut n, mut bytes) = (0u64, 0u64);
    while records.len() - at >= BATCH_HEADER_LEN {
        let head = &records[at..at + BATCH_HEADER_LEN];
        let base = i64::from_be_bytes(head[0..8].try_into().unwrap_or_default());
        let length = i32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
        let total = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|t| *t >= BATCH_HEADER_LEN)
            .ok_or_else(|| KafkaError::Malformed(format!("batch length {length}")))?;
        if total > records.len() - at {
            break;
        }
        let whole = &records[at..at + total];
        at += total;
        if head[16] != 2 {
            return Err(KafkaError::Unsupported(format!(
                "a magic v{} message set (tidelog-bench reads RecordBatch v2 only)",
                head[16]
            )));
        }
        let attributes = i16::from_be_bytes([head[21], head[22]]);
        let last_delta = i32::from_be_bytes(head[23..27].try_into().unwrap_or_default());
        let next = base.saturating_add(i64::from(last_delta)).saturating_add(1);
        if attributes & CONTROL == 0 && next > *position {
            let decoded =
                tidelog_client::kafka::decode_records(whole, base).map_err(|e| match e {
                    ClientError::UnsupportedCompression(c) => KafkaError::Unsupported(format!(
                    "a {c:?}-compressed batch: tidelog-bench's Kafka consumer reads uncompressed \
                     batches only (produce them with tidelog-bench or compression none)"
                )),
                    e => KafkaError::Malformed(format!("batch at offset {base}: {e}")),
                })?;
            for rec in decoded.iter().filter(|r| r.offset >= *position) {
                let value = whole.get(rec.value.clone()).unwrap_or_default();
                f(value);
                n += 1;
                bytes += (value.len() + rec.key.as_ref().map_or(0, |k| k.len())) as u64;
            }
        }
        *position = (*position).max(next);
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_at(base: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(256);
        for v in values {
            b.push(v, 1);
        }
        let mut bytes = b.finish(0).to_vec();
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        bytes
    }

    #[test]
    fn batches_are_read_from_the_position_on() {
        let mut records = batch_at(10, &[b"a", b"bb", b"ccc"]);
        records.extend(batch_at(13, &[b"dddd"]));
        let partial = batch_at(14, &[b"eeeee"]);
        records.extend(&partial[..partial.len() - 1]);
        let mut position = 11;
        let mut seen = Vec::new();
        let (n, bytes) =
            read_batches(&records, &mut position, |v| seen.push(v.to_vec())).expect("reads");
        assert_eq!(seen, [b"bb".to_vec(), b"ccc".to_vec(), b"dddd".to_vec()]);
        assert_eq!((n, bytes), (3, 9));
        assert_eq!(
            position, 14,
            "past the last whole batch, not the partial one"
        );
    }

    #[test]
    fn compressed_and_corrupt_batches_are_errors() {
        let mut records = batch_at(0, &[b"x"]);
        records[22] |= 1; // gzip, with a valid CRC so that the codec is what fails
        tidelog_wire::kafka_records::seal_kafka_crc(&mut records);
        let e = read_batches(&records, &mut 0, |_| {}).expect_err("gzip");
        assert!(matches!(e, KafkaError::Unsupported(_)), "{e}");
        let mut records = batch_at(0, &[b"x"]);
        let last = records.len() - 2;
        records[last] ^= 0xff;
        let e = read_batches(&records, &mut 0, |_| {}).expect_err("crc");
        assert!(matches!(e, KafkaError::Malformed(_)), "{e}");
        let mut records = batch_at(0, &[b"x"]);
        records[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(
            read_batches(&records, &mut 0, |_| {}).is_err(),
            "short length"
        );
    }

    #[test]
    fn acks_map_to_kafka() {
        assert_eq!(kafka_acks(Acks::None), 0);
        assert_eq!(kafka_acks(Acks::Leader), 1);
        assert_eq!(kafka_acks(Acks::All), -1);
    }
}
