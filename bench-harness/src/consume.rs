//! The consumers of a run, one read loop for both protocols.
//!
//! ```text
//!  consumer j:  static: targets t with t % consumers == j, from the run's start offsets
//!               --group, Kafka: joins the group (range assignment), heartbeats in a task,
//!               rejoins when the coordinator rebalances, positions from the group's commits
//!               --group, native: the static split, positions from the group's commits
//!               ─▶ poll until every partition it holds reaches the end offsets (consume:
//!               taken at setup; e2e: taken once the producers are done)
//!               ─▶ group: commits every COMMIT_INTERVAL, on a rebalance and at the end
//! ```

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tidelog_client::{Client, Consumer, ConsumerConfig, StartAt, LATEST};

use crate::args::{Mode, Protocol};
use crate::kafka::client::KafkaClient;
use crate::kafka::consumer::KafkaConsumer;
use crate::kafka::group::GroupMember;
use crate::kafka::KafkaError;
use crate::payload;
use crate::stats::{now_ns, Live};
use crate::work::{consumer_partitions, Shared, Tp, WorkerResult, POLL_WAIT, STALL_TIMEOUT};

/// A group consumer commits its positions this often (and on rebalances and at the end).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts of a fetch after a retriable error, in a row.
const FETCH_RETRIES: usize = 5;

/// A consumer ready to start, of either protocol.
pub(crate) enum LoadConsumer {
    Native {
        client: Client,
        consumer: Consumer,
        tps: Vec<Tp>,
    },
    Kafka(KafkaConsumer),
}

/// Connects consumer `j` and positions it; `None` when it has nothing to read (more static
/// consumers than partitions).
///
/// # Errors
/// Connect, metadata and group errors.
pub(crate) async fn ready(shared: Arc<Shared>, j: usize) -> Result<Option<LoadConsumer>> {
    let plan = &shared.plan;
    let targets = shared.targets();
    let static_share =
        || -> Vec<usize> { consumer_partitions(j, plan.consumers, targets.len() as u32) };
    match plan.protocol {
        Protocol::Native => {
            let share = static_share();
            if share.is_empty() {
                return Ok(None);
            }
            let client = Client::connect(plan.broker).await?;
            // The Kafka consumer's fetch sizes, so that both protocols read alike.
            let config = ConsumerConfig {
                partition_max_bytes: crate::kafka::FETCH_PARTITION_BYTES_MAX,
                max_bytes: crate::kafka::FETCH_BYTES_MAX,
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::new(client.clone(), config)?;
            let assignment: Vec<(&str, i32, StartAt)> = share
                .iter()
                .map(|k| {
                    let (t, p) = targets[*k];
                    (
                        plan.topics[t].as_str(),
                        p,
                        StartAt::Offset(shared.start_of(*k)),
                    )
                })
                .collect();
            consumer.assign(&assignment).await?;
            Ok(Some(LoadConsumer::Native {
                client,
                consumer,
                tps: share.iter().map(|k| targets[*k]).collect(),
            }))
        }
        Protocol::Kafka => {
            let client = Rc::new(KafkaClient::connect(&plan.bootstrap, &plan.topics).await?);
            client.refresh(false).await?;
            let (tps, group) = match &plan.group {
                Some(g) => {
                    let member = GroupMember::new(Rc::clone(&client), g).await?;
                    let tps = member.join().await.context("joining the group")?;
                    glommio::spawn_local(Rc::clone(&member).heartbeat_loop()).detach();
                    (tps, Some(member))
                }
                None => {
                    let share = static_share();
                    if share.is_empty() {
                        return Ok(None);
                    }
                    (share.iter().map(|k| targets[*k]).collect(), None)
                }
            };
            let mut c = KafkaConsumer::new(client, group);
            position(&shared, &mut c, tps).await?;
            Ok(Some(LoadConsumer::Kafka(c)))
        }
    }
}

/// Takes `tps` as `c`'s partitions, each at its group's committed offset, else at the run's
/// start offset.
async fn position(shared: &Shared, c: &mut KafkaConsumer, tps: Vec<Tp>) -> Result<()> {
    let committed = match &c.group {
        Some(g) if !tps.is_empty() => g.committed(&tps).await?,
        _ => vec![None; tps.len()],
    };
    let positions = tps
        .iter()
        .zip(committed)
        .map(|(tp, o)| {
            o.unwrap_or_else(|| shared.target_index(*tp).map_or(0, |i| shared.start_of(i)))
        })
        .collect();
    c.assign(tps, positions);
    Ok(())
}

impl LoadConsumer {
    /// (partition, next offset) of every partition held.
    fn positions(&self, topics: &[String]) -> Vec<(Tp, i64)> {
        match self {
            LoadConsumer::Native { consumer, tps, .. } => tps
                .iter()
                .map(|(t, p)| ((*t, *p), consumer.position(&topics[*t], *p).unwrap_or(0)))
                .collect(),
            LoadConsumer::Kafka(c) => c.offsets(),
        }
    }

    /// The latest offsets of every target of the run.
    async fn end_offsets(&self, shared: &Shared) -> Result<Vec<i64>> {
        let targets = shared.targets();
        match self {
            LoadConsumer::Native { client, .. } => {
                crate::work::native_offsets(client, &shared.plan.topics, targets, LATEST).await
            }
            LoadConsumer::Kafka(c) => Ok(c
                .client
                .list_offsets(targets, crate::kafka::client::LATEST)
                .await?),
        }
    }

    /// Commits the positions for the run's group, if any.
    async fn commit(&self, shared: &Shared) -> Result<()> {
        let Some(group) = &shared.plan.group else {
            return Ok(());
        };
        match self {
            LoadConsumer::Native { consumer, .. } => Ok(consumer.commit(group).await?),
            LoadConsumer::Kafka(c) => match &c.group {
                Some(member) => Ok(member.commit(&c.offsets()).await?),
                None => Ok(()),
            },
        }
    }
}

/// A consumer: reads what it holds to the end offsets.
pub(crate) async fn consume(
    shared: Arc<Shared>,
    mut c: LoadConsumer,
    start: Instant,
) -> Result<WorkerResult> {
    let plan = &shared.plan;
    let live = &shared.live;
    let deadline = match plan.mode {
        Mode::Consume => plan.duration.map(|d| start + plan.warmup + d),
        _ => None,
    };
    let e2e = plan.mode == Mode::E2e;
    let mut r = WorkerResult::default();
    let mut last_progress = Instant::now();
    let mut last_commit = Instant::now();
    let mut attempt = 0usize;
    loop {
        if shared.ends().is_none() && shared.producers_running() == 0 {
            let ends = c.end_offsets(&shared).await?;
            shared.set_ends(ends);
            last_progress = Instant::now();
        }
        let ends = shared.ends();
        let end_of = |tp: Tp| -> Option<i64> {
            let e = ends?;
            shared.target_index(tp).and_then(|i| e.get(i).copied())
        };
        if ends.is_some() {
            let done = c
                .positions(&plan.topics)
                .iter()
                .all(|(tp, pos)| end_of(*tp).is_some_and(|e| *pos >= e));
            if done {
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
        if let LoadConsumer::Kafka(kc) = &mut c {
            if let Some(member) = kc.group.clone().filter(|m| m.needs_rejoin()) {
                // Commit what was read under the old generation, then take the new share.
                let _ = member.commit(&kc.offsets()).await;
                let tps = member.join().await.context("rejoining the group")?;
                position(&shared, kc, tps).await?;
                r.errors.add("kafka:rebalance", 1);
            }
        }
        let now_measuring = || {
            let now = now_ns();
            (now, shared.measuring(now))
        };
        let mut round = WorkerResult::default();
        let polled = match &mut c {
            LoadConsumer::Native { consumer, .. } => {
                let mut clock = None;
                let polled = consumer
                    .poll_each(POLL_WAIT, |rec| {
                        // One clock read per response, when its first record is seen.
                        let (now, measuring) = *clock.get_or_insert_with(now_measuring);
                        round.consumed += 1;
                        round.consumed_bytes +=
                            (rec.value.len() + rec.key.map_or(0, <[u8]>::len)) as u64;
                        if e2e && measuring {
                            if let Some(sent) = payload::timestamp_ns(rec.value) {
                                round.e2e_latency.record_ns(sent, now);
                            }
                        }
                    })
                    .await;
                match polled {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_retriable() => {
                        Err((crate::stats::error_kind(&e), e.to_string()))
                    }
                    Err(e) => return Err(e).context("poll"),
                }
            }
            LoadConsumer::Kafka(kc) => {
                let mut e2e_latency = crate::stats::Latency::default();
                let mut clock = None;
                let polled = kc
                    .poll(
                        |tp, pos| end_of(tp).is_none_or(|e| pos < e),
                        |value| {
                            // One clock read per round, once its first record is seen.
                            let (now, measuring) = *clock.get_or_insert_with(now_measuring);
                            if e2e && measuring {
                                if let Some(sent) = payload::timestamp_ns(value) {
                                    e2e_latency.record_ns(sent, now);
                                }
                            }
                        },
                    )
                    .await;
                round.e2e_latency = e2e_latency;
                match polled {
                    Ok((n, bytes)) => {
                        round.consumed = n;
                        round.consumed_bytes = bytes;
                        Ok(())
                    }
                    Err(e) if e.is_retriable() => Err((e.kind(), e.to_string())),
                    Err(e) => return Err(anyhow!(e)).context("fetch"),
                }
            }
        };
        match polled {
            Ok(()) => attempt = 0,
            Err((kind, why)) => {
                r.errors.add(kind, 1);
                Live::add(&live.errors, 1);
                attempt += 1;
                if attempt > FETCH_RETRIES {
                    bail!("fetch failed {attempt} times in a row: {why}");
                }
                glommio::timer::sleep(crate::kafka::client::RETRY_BACKOFF * attempt as u32).await;
                if let LoadConsumer::Kafka(kc) = &c {
                    let _ = kc.client.refresh(false).await;
                }
                continue;
            }
        }
        if plan.group.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
            if let Err(e) = c.commit(&shared).await {
                r.errors.add(commit_error_kind(&e), 1);
            }
            last_commit = Instant::now();
        }
        if round.consumed == 0 {
            continue;
        }
        last_progress = Instant::now();
        let (_, measuring) = now_measuring();
        Live::add(&live.consumed, round.consumed);
        Live::add(&live.consumed_bytes, round.consumed_bytes);
        if measuring {
            r.consumed += round.consumed;
            r.consumed_bytes += round.consumed_bytes;
            r.e2e_latency.merge(&round.e2e_latency);
        }
    }
    r.consume_end = Some(Instant::now());
    if let Err(e) = c.commit(&shared).await {
        r.errors.add(commit_error_kind(&e), 1);
    }
    if let LoadConsumer::Kafka(KafkaConsumer {
        group: Some(member),
        ..
    }) = &c
    {
        member.leave().await;
    }
    Ok(r)
}

fn commit_error_kind(e: &anyhow::Error) -> String {
    match e.downcast_ref::<KafkaError>() {
        Some(k) => k.kind(),
        None => "commit".into(),
    }
}
