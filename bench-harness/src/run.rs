//! Running a plan: glommio executors (one per core), each with its own clients, producers and
//! consumers, started together.
//!
//! ```text
//!  main thread: setup executor (topics exist? create; consumers' start and end offsets)
//!               ─▶ N worker executors ─▶ merge results
//!  worker k:    connects its clients and joins its consumers' group, waits for the others
//!               (without blocking its thread: group heartbeats keep running), then runs
//!               producers i ≡ k (mod N) (crate::produce) and consumers j ≡ k (mod N)
//!               (crate::consume), either protocol
//! ```
//!
//! A run addresses partitions as *targets*: the (topic, partition) pairs of every topic, in
//! topic order. Producers and static consumers split the targets; a Kafka group assigns them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use glommio::Placement;
use tidelog_client::{Client, ClientError, EARLIEST, LATEST};

use crate::args::{Mode, Plan, Protocol};
use crate::kafka;
use crate::stats::Latency;
use crate::work::{native_offsets, Outcome, Phase, Shared, Tp, WorkerResult};

/// Runs the plan to the end.
///
/// # Errors
/// Setup failures (connect, topic), executor failures, a consumer that stalls.
pub fn run(shared: &Arc<Shared>) -> Result<Outcome> {
    let plan = &shared.plan;
    let setup = setup(plan)?;
    let partitions = setup.targets.len() as u32;
    let _ = shared.target_index.set(
        setup
            .targets
            .iter()
            .enumerate()
            .map(|(i, tp)| (*tp, i))
            .collect(),
    );
    let _ = shared.targets.set(setup.targets);
    if let Some(starts) = setup.starts {
        let _ = shared.starts.set(starts);
    }
    if let Some(ends) = setup.ends {
        shared.set_ends(ends);
    }
    let executors = plan.executors.len();
    let mut handles = Vec::with_capacity(executors);
    for (k, cpu) in plan.executors.iter().enumerate() {
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let builder = executor(placement).name(&format!("tidelog-bench-{k}"));
        let shared = Arc::clone(shared);
        let handle = builder
            .spawn(move || async move { worker(shared, k).await })
            .map_err(|e| anyhow!("cannot start executor {k}: {e}"))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(executors);
    let mut first_error = None;
    for (k, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                first_error.get_or_insert(e.context(format!("executor {k}")));
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("executor {k} failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(merge(shared, partitions, results))
}

/// Registered io memory per executor. The generator does only TCP I/O, which glommio never
/// serves from registered memory, so each executor asks for glommio's minimum that works
/// here (1 MiB; its 64 KiB pool breaks DMA reads on this kernel) instead of a share of the
/// locked-memory limit: N executors × 3 rings stay far below a typical 8 MiB limit.
const IO_MEMORY_BYTES: usize = 1 << 20;

/// A glommio executor for the generator (glommio itself refuses to start, with its
/// "memlock resource limit is too low" error, below a 512 KiB limit).
fn executor(placement: Placement) -> glommio::LocalExecutorBuilder {
    glommio::LocalExecutorBuilder::new(placement).io_memory(IO_MEMORY_BYTES)
}

/// What [`setup`] found.
struct Setup {
    targets: Vec<Tp>,
    starts: Option<Vec<i64>>,
    ends: Option<Vec<i64>>,
}

/// Makes sure the topics exist (creating them for produce and e2e); lists their partitions
/// and, for consumers, where they start and (consume) end.
fn setup(asked: &Plan) -> Result<Setup> {
    let plan = asked.clone();
    let handle = executor(Placement::Unbound)
        .name("tidelog-bench-setup")
        .spawn(move || async move {
            match plan.protocol {
                Protocol::Kafka => kafka_setup(&plan).await,
                Protocol::Native => native_setup(&plan).await,
            }
        })
        .map_err(|e| anyhow!("cannot start the setup executor: {e}"))?;
    let setup = handle
        .join()
        .map_err(|e| anyhow!("setup executor failed: {e}"))??;
    let plan = asked;
    if setup.targets.is_empty() {
        bail!("the topics have no partitions");
    }
    let expected = plan.partitions as usize * plan.topics.len();
    if plan.mode.produces() && setup.targets.len() != expected {
        eprintln!(
            "tidelog-bench: the topics exist with {} partitions in all (asked for {expected}); \
             using them",
            setup.targets.len()
        );
    }
    Ok(setup)
}

/// Where consumers without a committed offset start: consume reads what is there (the
/// earliest offset), e2e only what is produced from now on (the latest).
fn reset_to_earliest(plan: &Plan) -> bool {
    plan.mode == Mode::Consume
}

async fn native_setup(plan: &Plan) -> Result<Setup> {
    let client = Client::connect(plan.broker)
        .await
        .with_context(|| format!("cannot connect to {}", plan.broker))?;
    let mut targets = Vec::new();
    for (t, name) in plan.topics.iter().enumerate() {
        let info = match client.topic(name).await {
            Ok(info) => info,
            Err(ClientError::UnknownTopic { .. }) if plan.mode.produces() => {
                match client.create_topic(name, plan.partitions, -1, -1).await {
                    Ok(()) => {}
                    // Another run created it meanwhile: use it.
                    Err(ClientError::Protocol { code, .. })
                        if format!("{code:?}") == "TopicAlreadyExists" => {}
                    Err(e) => return Err(e).with_context(|| format!("cannot create {name}")),
                }
                client.topic(name).await?
            }
            Err(ClientError::UnknownTopic { .. }) => {
                bail!("topic {name} does not exist; produce to it first")
            }
            Err(e) => return Err(e).context("cannot read metadata"),
        };
        targets.extend((0..info.partition_count() as i32).map(|p| (t, p)));
    }
    let (mut starts, mut ends) = (None, None);
    if plan.mode.consumes() {
        let reset = if reset_to_earliest(plan) {
            EARLIEST
        } else {
            LATEST
        };
        let committed: Vec<Option<i64>> = match &plan.group {
            Some(g) => {
                let asked: Vec<(&str, i32)> = targets
                    .iter()
                    .map(|(t, p)| (plan.topics[*t].as_str(), *p))
                    .collect();
                client
                    .fetch_committed(g, &asked)
                    .await?
                    .iter()
                    .map(|c| c.offset)
                    .collect()
            }
            None => vec![None; targets.len()],
        };
        let mut s = Vec::with_capacity(targets.len());
        for ((t, p), committed) in targets.iter().zip(committed) {
            s.push(match committed {
                Some(o) => o,
                None => client.list_offsets(&plan.topics[*t], *p, reset).await?,
            });
        }
        starts = Some(s);
        if plan.mode == Mode::Consume {
            ends = Some(native_offsets(&client, &plan.topics, &targets, LATEST).await?);
        }
    }
    Ok(Setup {
        targets,
        starts,
        ends,
    })
}

async fn kafka_setup(plan: &Plan) -> Result<Setup> {
    let client = kafka::client::KafkaClient::connect(&plan.bootstrap, &plan.topics)
        .await
        .with_context(|| format!("Kafka bootstrap {}", plan.broker))?;
    let counts = match client
        .ensure_topics(plan.partitions, plan.mode.produces())
        .await
    {
        Ok(n) => n,
        Err(kafka::KafkaError::Code {
            code: kafka::code::UNKNOWN_TOPIC_OR_PARTITION,
            ..
        }) => bail!(
            "a topic of {:?} does not exist; produce to it first",
            plan.topics
        ),
        Err(e) => return Err(e).context("cannot set up the topics"),
    };
    let targets: Vec<Tp> = counts
        .iter()
        .enumerate()
        .flat_map(|(t, n)| (0..*n as i32).map(move |p| (t, p)))
        .collect();
    let (mut starts, mut ends) = (None, None);
    if plan.mode.consumes() {
        let client = std::rc::Rc::new(client);
        let reset = if reset_to_earliest(plan) {
            kafka::client::EARLIEST
        } else {
            kafka::client::LATEST
        };
        let reset = client.list_offsets(&targets, reset).await?;
        let committed = match &plan.group {
            Some(g) => {
                let member = kafka::group::GroupMember::new(std::rc::Rc::clone(&client), g).await?;
                member.committed(&targets).await?
            }
            None => vec![None; targets.len()],
        };
        starts = Some(
            committed
                .iter()
                .zip(&reset)
                .map(|(c, r)| c.unwrap_or(*r))
                .collect(),
        );
        if plan.mode == Mode::Consume {
            ends = Some(client.list_offsets(&targets, kafka::client::LATEST).await?);
        }
    }
    Ok(Setup {
        targets,
        starts,
        ends,
    })
}

fn merge(shared: &Shared, partitions: u32, results: Vec<WorkerResult>) -> Outcome {
    let mut all = WorkerResult::default();
    for r in results {
        all.add(r);
    }
    let start = shared.measured_from().unwrap_or_else(Instant::now);
    let plan = &shared.plan;
    let since =
        |end: Option<Instant>| end.map_or(Duration::ZERO, |e| e.saturating_duration_since(start));
    let consume_expected = match (shared.starts.get(), shared.ends()) {
        (Some(s), Some(e)) => s
            .iter()
            .zip(e)
            .map(|(s, e)| u64::try_from(e - s).unwrap_or(0))
            .sum(),
        _ => 0,
    };
    Outcome {
        partitions,
        produce: plan.mode.produces().then(|| Phase {
            records: all.produced,
            bytes: all.produced_bytes,
            elapsed: since(all.produce_end),
            latency: all.produce_latency,
        }),
        consume: plan.mode.consumes().then(|| Phase {
            records: all.consumed,
            bytes: all.consumed_bytes,
            elapsed: since(all.consume_end),
            latency: Latency::default(),
        }),
        e2e: (plan.mode == Mode::E2e).then_some(all.e2e_latency),
        send_lag: (plan.mode.produces() && plan.rate.is_some()).then_some(all.send_lag),
        errors: all.errors,
        consume_expected,
        produced_by_node: all.produced_by_node,
    }
}

async fn worker(shared: Arc<Shared>, k: usize) -> Result<WorkerResult> {
    let setup = worker_setup(&shared, k).await;
    if setup.is_err() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    shared.start_line().await;
    let (producer_client, consumers) = setup?;
    if shared.failed.load(Ordering::SeqCst) {
        return Ok(WorkerResult::default());
    }
    let (start, _) = shared.start();
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let mut producer_tasks = Vec::new();
    if let Some(client) = producer_client {
        for i in (k..plan.producers).step_by(executors) {
            let task = crate::produce::produce(client.clone(), Arc::clone(&shared), i, start);
            producer_tasks.push(glommio::spawn_local(task).detach());
        }
    }
    let mut consumer_tasks = Vec::new();
    for c in consumers {
        let task = crate::consume::consume(Arc::clone(&shared), c, start);
        consumer_tasks.push(glommio::spawn_local(task).detach());
    }
    let mut result = WorkerResult::default();
    for t in producer_tasks {
        let r = t
            .await
            .ok_or_else(|| anyhow!("producer task cancelled"))??;
        result.add(r);
    }
    for t in consumer_tasks {
        let r = t
            .await
            .ok_or_else(|| anyhow!("consumer task cancelled"))??;
        result.add(r);
    }
    Ok(result)
}

type WorkerSetup = (
    Option<crate::produce::ProducerClient>,
    Vec<crate::consume::LoadConsumer>,
);

/// Connects this executor's clients and readies its consumers (a Kafka group: joined, all
/// of this executor's members at once), before the start.
async fn worker_setup(shared: &Arc<Shared>, k: usize) -> Result<WorkerSetup> {
    let plan = &shared.plan;
    let executors = plan.executors.len();
    let producer_client = if (k..plan.producers).step_by(executors).next().is_some() {
        Some(crate::produce::ProducerClient::connect(shared).await?)
    } else {
        None
    };
    let mut ready = Vec::new();
    for j in (k..plan.consumers).step_by(executors) {
        ready.push(glommio::spawn_local(crate::consume::ready(Arc::clone(shared), j)).detach());
    }
    let mut consumers = Vec::new();
    for r in ready {
        if let Some(c) = r
            .await
            .ok_or_else(|| anyhow!("consumer setup cancelled"))??
        {
            consumers.push(c);
        }
    }
    Ok((producer_client, consumers))
}
