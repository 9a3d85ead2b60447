//! Partition log tests on the simulated disk: a model-based property test of random
//! append / read / sync / reopen / crash / cut-the-tail sequences, and focused unit tests.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::future::block_on;
use proptest::prelude::*;
use tidelog_wire::batch::{verify, BatchBuilder, VerifyLimits};

use super::memory::MemoryWait;
use super::*;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::io::sim::{Faults, SimClock, SimDisk};
use crate::io::Storage;

type SimLog = PartitionLog<SimDisk, SimClock>;

const T0: i64 = 1_700_000_000_000;

fn dir() -> PathBuf {
    PathBuf::from("/data/topic/0")
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        index_interval_bytes: 1024,
        preallocate_bytes: 64 << 10,
        max_batch_bytes: 64 << 10,
        flush_bytes: 128 << 10,
        ..LogConfig::default()
    }
}

/// A batch whose every record value starts with `seq` and the record index, so content
/// can be checked without a model.
fn make_batch(seq: u64, records: usize, value_len: usize, ts: i64) -> BytesMut {
    make_idempotent_batch(seq, records, value_len, ts, None)
}

/// [`make_batch`] with the idempotent producer fields `(producer_id, epoch, first_seq)`.
fn make_idempotent_batch(
    seq: u64,
    records: usize,
    value_len: usize,
    ts: i64,
    producer: Option<(i64, i16, i32)>,
) -> BytesMut {
    let mut builder = BatchBuilder::new();
    if let Some((id, epoch, first_seq)) = producer {
        builder.producer(id, epoch, first_seq);
    }
    for i in 0..records {
        let mut value = seq.to_le_bytes().to_vec();
        value.extend_from_slice(&(i as u32).to_le_bytes());
        value.resize(value_len.max(12), (seq as u8).wrapping_add(i as u8));
        builder.push(Some(&seq.to_le_bytes()), &value, ts + i as i64, &[]);
    }
    builder.finish()
}

thread_local! {
    /// One small file cache shared by every log a test thread opens, as a shard's is: sealed
    /// segments are evicted and reopened all the time, and logs reopened after a crash must
    /// never get an earlier open's handles.
    static FILES: files::SegmentFiles<crate::io::sim::SimFile> = files::SegmentFiles::new(2);
}

fn shared_files() -> files::SegmentFiles<crate::io::sim::SimFile> {
    FILES.with(Clone::clone)
}

/// The batch cache of [`open`]ed logs: small, so that reads go to the disk as soon as a
/// few batches are written (each log gets its own).
const TEST_CACHE_BYTES: usize = 64 << 10;

fn open(disk: &SimDisk, clock: &SimClock, config: LogConfig) -> SimLog {
    open_cached(disk, clock, config, TEST_CACHE_BYTES)
}

/// [`open`] with a batch cache of `cache_bytes`.
fn open_cached(disk: &SimDisk, clock: &SimClock, config: LogConfig, cache_bytes: usize) -> SimLog {
    let shared = LogResources {
        files: shared_files(),
        memory: memory::ReadMemory::new(crate::limits::READ_MEMORY_BYTES_PER_SHARD),
        cache: cache::BatchCache::new(cache_bytes),
    };
    block_on(PartitionLog::open_with(
        disk.clone(),
        clock.clone(),
        &dir(),
        config,
        shared,
    ))
    .expect("open")
}

/// Reads every batch from `from` to the log end, returning (base offset, bytes).
fn read_all(log: &SimLog, from: u64) -> Vec<(u64, Vec<u8>)> {
    read_all_by(log, from, 50_000)
}

/// [`read_all`] asking for `max_bytes` per read.
fn read_all_by(log: &SimLog, from: u64, max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = block_on(log.read(offset, max_bytes)).expect("read");
        if read.is_empty() {
            assert_eq!(offset, log.log_end());
            return out;
        }
        for chunk in &read.chunks {
            let chunk = chunk.to_vec();
            let mut bytes: &[u8] = &chunk;
            while !bytes.is_empty() {
                let view = verify(bytes, &VerifyLimits::default()).expect("served batches verify");
                out.push((view.base_offset() as u64, view.bytes().to_vec()));
                bytes = &bytes[view.batch_len()..];
            }
        }
        assert!(read.next_offset > offset, "reads make progress");
        offset = read.next_offset;
    }
}

/// What the log must hold: batches with offsets, content without the base offset.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<(u64, u64, Vec<u8>)>,
    synced: usize,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.1)
    }

    fn check(&self, log: &SimLog) {
        assert_eq!(log.log_end(), self.end());
        let all = read_all(log, log.log_start());
        let skip = self
            .batches
            .iter()
            .take_while(|b| b.0 < log.log_start())
            .count();
        assert_eq!(all.len(), self.batches.len() - skip);
        for ((base, bytes), (m_base, _, m_bytes)) in all.iter().zip(&self.batches[skip..]) {
            assert_eq!(base, m_base);
            assert_eq!(&bytes[8..], &m_bytes[8..], "content of batch at {base}");
        }
    }

    /// After a crash the log must be a prefix of the model that keeps every synced batch.
    fn absorb_recovery(&mut self, log: &SimLog) {
        let end = log.log_end();
        let kept = self.batches.iter().take_while(|b| b.1 <= end).count();
        assert!(
            kept >= self.synced,
            "lost synced batches: kept {kept} < {}",
            self.synced
        );
        assert_eq!(
            self.batches.get(kept.wrapping_sub(1)).map_or(0, |b| b.1),
            end,
            "recovered end is a batch boundary"
        );
        self.batches.truncate(kept);
        self.synced = kept;
        self.check(log);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        synced: bool,
    },
    Read {
        pick: usize,
        max_bytes: usize,
    },
    Sync,
    Reopen,
    Crash,
    CutTail {
        at: usize,
    },
    Tick {
        ms: i64,
    },
    /// The next sync fails; the partition must poison itself and recover on reopen.
    FailedSync,
    /// The idempotent producer re-sends one of its batches: one of the last two is a
    /// duplicate (always within the scanned tail), one older than five is out of order.
    Retry {
        pick: usize,
        old: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..20, 1usize..3000, any::<bool>())
            .prop_map(|(records, value_len, synced)| Op::Append { records, value_len, synced }),
        3 => (any::<usize>(), 1usize..100_000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Sync),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, old)| Op::Retry { pick, old }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => any::<usize>().prop_map(|at| Op::CutTail { at }),
        1 => (0i64..2000).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::FailedSync),
    ]
}

fn active_segment(disk: &SimDisk) -> (PathBuf, u64) {
    let path = disk
        .file_paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment");
    let base = segment::parse_segment_name(
        path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
        "log",
    )
    .expect("segment name");
    (path, base)
}

fn run_ops(seed: u64, ops: Vec<Op>) {
    let disk = SimDisk::new(seed);
    let clock = SimClock::new(T0);
    let mut log = open(&disk, &clock, small_config());
    let mut model = Model::default();
    let mut seq = 0u64;
    // Every append comes from idempotent producer 1, epoch 0: first sequence of each model
    // batch, kept aligned with `model.batches`.
    let mut first_seqs: Vec<i32> = Vec::new();
    for op in ops {
        first_seqs.truncate(model.batches.len());
        match op {
            Op::Append {
                records,
                value_len,
                synced,
            } => {
                seq += 1;
                let first_seq = match (model.batches.last(), first_seqs.last()) {
                    (Some((base, next, _)), Some(first)) => first + (next - base) as i32,
                    _ => 0,
                };
                let batch = make_idempotent_batch(
                    seq,
                    records,
                    value_len,
                    clock.now(),
                    Some((1, 0, first_seq)),
                );
                let bytes = batch.to_vec();
                let durability = if synced {
                    Durability::Synced
                } else {
                    Durability::Buffered
                };
                let info = block_on(log.append(batch, durability)).expect("append");
                assert!(!info.duplicate);
                first_seqs.push(first_seq);
                assert_eq!(info.base_offset, model.end());
                assert_eq!(info.last_offset, info.base_offset + records as u64 - 1);
                model
                    .batches
                    .push((info.base_offset, info.last_offset + 1, bytes));
                if synced {
                    model.synced = model.batches.len();
                }
            }
            Op::Read { pick, max_bytes } => {
                if model.batches.is_empty() {
                    continue;
                }
                let (base, next, _) = model.batches[pick % model.batches.len()];
                let offset = base + (pick as u64 % (next - base));
                let read = block_on(log.read(offset, max_bytes)).expect("read");
                let first = model
                    .batches
                    .iter()
                    .position(|b| b.1 > offset)
                    .expect("batch");
                let mut expected = model.batches[first..].iter();
                let mut total = 0;
                for chunk in &read.chunks {
                    let chunk = chunk.to_vec();
                    let mut bytes: &[u8] = &chunk;
                    while !bytes.is_empty() {
                        let view = verify(bytes, &VerifyLimits::default()).expect("verify");
                        let (m_base, _, m_bytes) = expected.next().expect("no extra batches");
                        assert_eq!(view.base_offset() as u64, *m_base);
                        assert_eq!(&view.bytes()[8..], &m_bytes[8..]);
                        total += view.batch_len();
                        bytes = &bytes[view.batch_len()..];
                    }
                }
                assert!(total > 0, "at least one batch");
                let first_len = model.batches[first].2.len();
                assert!(total <= max_bytes.max(first_len), "byte limit respected");
            }
            Op::Sync => {
                block_on(log.sync()).expect("sync");
                model.synced = model.batches.len();
            }
            Op::Reopen => {
                block_on(log.close()).expect("close");
                model.synced = model.batches.len();
                log = open(&disk, &clock, small_config());
                model.check(&log);
            }
            Op::Crash => {
                disk.crash();
                log = open(&disk, &clock, small_config());
                model.absorb_recovery(&log);
            }
            Op::CutTail { at } => {
                block_on(log.sync()).expect("sync");
                model.synced = model.batches.len();
                let (path, base) = active_segment(&disk);
                let in_active: Vec<_> = model.batches.iter().filter(|b| b.0 >= base).collect();
                let size: usize = in_active.iter().map(|b| b.2.len()).sum();
                let cut = at % (size + 1);
                let mut end = 0;
                let mut survivors = model.batches.len() - in_active.len();
                for batch in &in_active {
                    end += batch.2.len();
                    if end > cut {
                        break;
                    }
                    survivors += 1;
                }
                disk.crash();
                assert!(disk.set_file_len(&path, cut));
                // The cut models a torn tail, which lies above the recovery point; with the
                // point in place (a reopen wrote it) the cut would be damage to durable
                // data, which recovery keeps rather than cuts (tested on its own below).
                let _ = block_on(disk.remove_file(&dir().join(RECOVERY_POINT_FILE)));
                block_on(disk.sync_dir(&dir())).expect("sync");
                log = open(&disk, &clock, small_config());
                model.batches.truncate(survivors);
                model.synced = survivors;
                model.check(&log);
            }
            Op::Tick { ms } => clock.advance(ms),
            Op::Retry { pick, old } => {
                let n = model.batches.len();
                let index = match (old, n) {
                    (true, 6..) => pick % (n - 5),
                    (false, 1..) => n - 1 - pick % n.min(2),
                    _ => continue,
                };
                let (base, next, bytes) = &model.batches[index];
                let (base, next) = (*base, *next);
                let end = log.log_end();
                let retried = block_on(log.append(BytesMut::from(&bytes[..]), Durability::Synced));
                assert_eq!(log.log_end(), end, "a retry appends nothing");
                if old {
                    assert!(
                        matches!(retried, Err(LogError::OutOfOrderSequence { .. })),
                        "{retried:?}"
                    );
                } else {
                    let info = retried.expect("duplicate");
                    assert!(info.duplicate);
                    assert_eq!((info.base_offset, info.last_offset), (base, next - 1));
                    assert!(log.synced_offset() >= next);
                    model.synced = model.synced.max(index + 1);
                }
            }
            Op::FailedSync => {
                disk.set_faults(Faults {
                    fsync_error_ppm: 1_000_000,
                    ..Faults::default()
                });
                let synced = block_on(log.sync());
                disk.set_faults(Faults::default());
                if log.synced_offset() < log.log_end() || synced.is_err() {
                    assert!(
                        matches!(synced, Err(LogError::Poisoned { .. })),
                        "{synced:?}"
                    );
                    let refused =
                        block_on(log.append(make_batch(0, 1, 1, 0), Durability::Buffered));
                    assert!(matches!(refused, Err(LogError::Poisoned { .. })));
                    disk.crash();
                    log = open(&disk, &clock, small_config());
                    model.absorb_recovery(&log);
                }
            }
        }
    }
    model.check(&log);
}

trait Now {
    fn now(&self) -> i64;
}

impl Now for SimClock {
    fn now(&self) -> i64 {
        crate::io::Clock::now_ms(self)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_match_the_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(seed, ops);
    }
}

/// A log on a simulated disk whose writes and fdatasyncs yield a few times, so that tasks
/// racing its close interleave with it.
fn yielding_log(seed: u64) -> (SimDisk, SimClock, Rc<PartitionLog<SimDisk, SimClock>>) {
    let disk = SimDisk::new(seed);
    disk.set_faults(Faults {
        write_yields: 3,
        fsync_yields: 3,
        ..Faults::default()
    });
    let clock = SimClock::new(T0);
    let log = Rc::new(open(&disk, &clock, small_config()));
    (disk, clock, log)
}

/// Appends racing a close are refused or made durable by it, never answered and then lost.
/// Before, an append taken after the close's sync (while it wrote its checkpoints) went into
/// the write buffer, was answered, and was dropped with the log: a leader that took appends
/// while a follower-era rewrite closed its log lost them at the reopen.
#[test]
fn appends_racing_a_close_are_refused_or_made_durable() {
    let (disk, clock, log) = yielding_log(12);
    block_on(log.append(make_batch(0, 4, 100, T0), Durability::Buffered)).expect("append");
    let answered = Rc::new(std::cell::Cell::new(log.log_end()));
    let refused = Rc::new(std::cell::Cell::new(false));
    block_on(async {
        let executor = async_executor::LocalExecutor::new();
        let close = executor.spawn({
            let log = Rc::clone(&log);
            async move {
                // A few appends first, then the close in the middle of them.
                for _ in 0..5 {
                    futures_lite::future::yield_now().await;
                }
                log.close().await.expect("close")
            }
        });
        let appends = executor.spawn({
            let (log, answered, refused) =
                (Rc::clone(&log), Rc::clone(&answered), Rc::clone(&refused));
            async move {
                for i in 1..500 {
                    match log
                        .append(make_batch(i, 4, 100, T0), Durability::Buffered)
                        .await
                    {
                        Ok(info) => answered.set(info.last_offset + 1),
                        Err(LogError::Closed) => {
                            refused.set(true);
                            break;
                        }
                        Err(e) => panic!("append: {e}"),
                    }
                    futures_lite::future::yield_now().await;
                }
            }
        });
        executor
            .run(async move {
                close.await;
                appends.await;
            })
            .await;
    });
    assert!(refused.get(), "the close ended the appends");
    let answered = answered.get();
    assert!(
        answered > 4,
        "appends were answered before the close: {answered}"
    );
    let reopened = open(&disk, &clock, small_config());
    assert!(
        reopened.log_end() >= answered,
        "appends answered up to {answered}, the reopened log ends at {}",
        reopened.log_end()
    );
}

/// A close that finds another under way returns only once that one has ended: a follower's
/// rewrite goes on to cut and reopen the files when its close returns, and the first close
/// would then still be writing its checkpoints and clean-shutdown record over them.
#[test]
fn a_second_close_waits_for_the_first() {
    let (disk, clock, log) = yielding_log(13);
    for i in 0..5 {
        block_on(log.append(make_batch(i, 4, 100, T0), Durability::Buffered)).expect("append");
    }
    let closed_when_second_returned = Rc::new(std::cell::Cell::new(None));
    block_on(async {
        let executor = async_executor::LocalExecutor::new();
        let first = executor.spawn({
            let log = Rc::clone(&log);
            async move { log.close().await.expect("first close") }
        });
        let second = executor.spawn({
            let (log, seen) = (Rc::clone(&log), Rc::clone(&closed_when_second_returned));
            async move {
                // Starts while the first is in its sync.
                futures_lite::future::yield_now().await;
                log.close().await.expect("second close");
                seen.set(Some(log.is_closed()));
            }
        });
        executor
            .run(async move {
                first.await;
                second.await;
            })
            .await;
    });
    assert_eq!(
        closed_when_second_returned.get(),
        Some(true),
        "the second close returned while the first was still under way"
    );
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(reopened.log_end(), 20);
}

#[test]
fn a_sync_waits_for_its_writes_without_holding_up_appends() {
    let disk = SimDisk::new(8);
    // Writes take a while to complete; fdatasync is instant, so waiting for the writes is
    // the only thing that takes time in a sync.
    disk.set_faults(Faults {
        write_yields: 50,
        ..Faults::default()
    });
    let clock = SimClock::new(T0);
    let log = Rc::new(open(&disk, &clock, small_config()));
    for i in 0..3 {
        block_on(log.append(make_batch(i, 4, 100, T0), Durability::Buffered)).expect("append");
    }
    let covered = log.log_end();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    block_on(async {
        let executor = async_executor::LocalExecutor::new();
        let sync = executor.spawn({
            let (log, order) = (Rc::clone(&log), Rc::clone(&order));
            async move {
                log.sync().await.expect("sync");
                order.borrow_mut().push("synced");
            }
        });
        let appends = executor.spawn({
            let (log, order) = (Rc::clone(&log), Rc::clone(&order));
            async move {
                for i in 3..8 {
                    let batch = make_batch(i, 4, 100, T0);
                    log.append(batch, Durability::Buffered)
                        .await
                        .expect("append");
                    order.borrow_mut().push("appended");
                }
            }
        });
        executor
            .run(async move {
                sync.await;
                appends.await;
            })
            .await;
    });
    let order = order.borrow();
    assert_eq!(
        order.iter().position(|e| *e == "synced"),
        Some(5),
        "appends went on while the sync waited for its writes: {order:?}"
    );
    assert!(log.synced_offset() >= covered);
}

#[test]
fn appenders_wait_for_their_writes_past_the_shards_dirty_budget() {
    let disk = SimDisk::new(12);
    disk.set_faults(Faults {
        write_yields: 1_000_000,
        ..Faults::default()
    });
    let clock = SimClock::new(T0);
    let config = LogConfig {
        segment_bytes: 256 << 20,
        max_batch_bytes: 1 << 20,
        ..small_config()
    };
    let dirty = 3 << 20;
    let cache = cache::BatchCache::new(1 << 30).with_dirty_budget(dirty);
    let open_at = |dir: &str| {
        let shared = LogResources {
            files: shared_files(),
            memory: memory::ReadMemory::new(crate::limits::READ_MEMORY_BYTES_PER_SHARD),
            cache: cache.clone(),
        };
        block_on(PartitionLog::open_with(
            disk.clone(),
            clock.clone(),
            Path::new(dir),
            config.clone(),
            shared,
        ))
        .expect("open")
    };
    let logs = [open_at("/data/a/0"), open_at("/data/b/0")];
    // A slow disk: a write finishes only after many polls, so writes pile up unless the
    // appenders wait for them.
    disk.set_faults(Faults {
        write_yields: 20_000,
        ..Faults::default()
    });
    let mut most = 0;
    for i in 0..60 {
        let log = &logs[i % 2];
        block_on(log.append(make_batch(i as u64, 2, 150_000, T0), Durability::Buffered))
            .expect("append");
        most = most.max(cache.stats().pinned_bytes);
    }
    // Each partition may hold a buffer and a batch beyond the budget.
    let bound = dirty + 2 * ((1 << 20) + 310_000);
    assert!(most <= bound, "{most} unwritten bytes, bound {bound}");
    assert!(most > dirty / 2, "the appends did fill the budget: {most}");
}

#[test]
fn the_housekeeping_tick_hands_buffered_appends_to_the_kernel_without_a_sync() {
    let disk = SimDisk::new(11);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    block_on(log.append(make_batch(1, 4, 100, T0), Durability::Buffered)).expect("append");
    assert!(!log.flush_due(), "a fresh small append: no fdatasync due");
    assert!(!block_on(log.maybe_flush()).expect("tick"), "no sync");
    assert_eq!(log.synced_offset(), 0, "nothing fdatasynced");
    assert_eq!(log.stats().fsyncs, 0);
    // The process dies (no close, no power loss): what reached the kernel is on the file.
    drop(log);
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(reopened.log_end(), 4, "the tick wrote the buffered batch");
    assert_eq!(read_all(&reopened, 0).len(), 1);
}

#[test]
fn a_sync_dropped_while_it_waits_for_writes_hands_them_to_the_next() {
    let disk = SimDisk::new(9);
    disk.set_faults(Faults {
        write_yields: 20,
        ..Faults::default()
    });
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    block_on(log.append(make_batch(1, 4, 100, T0), Durability::Buffered)).expect("append");
    let mut first = Box::pin(log.sync());
    for _ in 0..3 {
        assert!(
            block_on(futures_lite::future::poll_once(&mut first)).is_none(),
            "still waiting for the write"
        );
    }
    drop(first);
    assert_eq!(log.synced_offset(), 0);
    assert!(
        log.poisoned().is_none(),
        "waiting outside the gate: nothing half-done"
    );
    block_on(log.sync()).expect("the next sync completes the same write");
    assert_eq!(log.synced_offset(), log.log_end());
    block_on(log.close()).expect("close");
    drop(log);
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(reopened.log_end(), 4, "the write landed and survives");
}

#[test]
fn appends_over_the_in_flight_bound_wait_beside_a_sync() {
    let disk = SimDisk::new(10);
    disk.set_faults(Faults {
        write_yields: 5,
        ..Faults::default()
    });
    let clock = SimClock::new(T0);
    let config = LogConfig {
        segment_bytes: 64 << 20,
        max_batch_bytes: 1 << 20,
        ..small_config()
    };
    let log = Rc::new(open(&disk, &clock, config.clone()));
    let expected: Vec<Vec<u8>> = (0..24)
        .map(|i| make_batch(i, 2, 300_000, T0).to_vec())
        .collect();
    block_on(async {
        let executor = async_executor::LocalExecutor::new();
        let syncs = executor.spawn({
            let log = Rc::clone(&log);
            async move {
                for _ in 0..10 {
                    log.sync().await.expect("sync");
                    futures_lite::future::yield_now().await;
                }
            }
        });
        let appends = executor.spawn({
            let (log, expected) = (Rc::clone(&log), expected.clone());
            async move {
                // 7 MB: more than the write buffers in flight allow, so appends wait
                // for writes that a sync may be driving.
                for batch in expected {
                    let batch = BytesMut::from(&batch[..]);
                    log.append(batch, Durability::Buffered)
                        .await
                        .expect("append");
                }
            }
        });
        executor
            .run(async move {
                syncs.await;
                appends.await;
            })
            .await;
    });
    block_on(log.sync()).expect("sync");
    let read = read_all(&log, 0);
    assert_eq!(read.len(), expected.len());
    for ((_, got), want) in read.iter().zip(&expected) {
        assert_eq!(&got[8..], &want[8..]);
    }
}

#[test]
fn group_commit_shares_fdatasync_between_concurrent_appenders() {
    let disk = SimDisk::new(7);
    disk.set_faults(Faults {
        fsync_yields: 3,
        ..Faults::default()
    });
    let clock = SimClock::new(T0);
    let log = Rc::new(open(&disk, &clock, small_config()));
    let appenders = 16;
    block_on(async {
        let executor = async_executor::LocalExecutor::new();
        let tasks: Vec<_> = (0..appenders)
            .map(|i| {
                let log = Rc::clone(&log);
                executor.spawn(async move {
                    let batch = make_batch(i, 4, 100, T0);
                    log.append(batch, Durability::Synced).await
                })
            })
            .collect();
        executor
            .run(async {
                for task in tasks {
                    task.await.expect("append");
                }
            })
            .await;
    });
    let fsyncs = log.stats().fsyncs;
    assert!(
        fsyncs <= 3,
        "{appenders} concurrent synced appends took {fsyncs} fdatasyncs"
    );
    assert_eq!(log.synced_offset(), log.log_end());
}

#[test]
fn failed_fdatasync_poisons_the_partition() {
    let disk = SimDisk::new(11);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    block_on(log.append(make_batch(1, 3, 100, T0), Durability::Synced)).expect("append");
    disk.set_faults(Faults {
        fsync_error_ppm: 1_000_000,
        ..Faults::default()
    });
    let failed = block_on(log.append(make_batch(2, 3, 100, T0), Durability::Synced));
    assert!(
        matches!(
            failed,
            Err(LogError::Poisoned {
                op: "fdatasync",
                ..
            })
        ),
        "{failed:?}"
    );
    disk.set_faults(Faults::default());
    let refused = block_on(log.append(make_batch(3, 3, 100, T0), Durability::Buffered));
    assert!(
        matches!(refused, Err(LogError::Poisoned { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        block_on(log.sync()),
        Err(LogError::Poisoned { .. })
    ));
    assert!(log.poisoned().is_some());
    // Reopening recovers what was durable before the failure.
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(reopened.log_end(), 3);
    assert_eq!(read_all(&reopened, 0).len(), 1);
}

#[test]
fn failed_write_poisons_the_partition() {
    let disk = SimDisk::new(12);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    disk.set_faults(Faults {
        write_error_ppm: 1_000_000,
        ..Faults::default()
    });
    let failed = block_on(log.append(make_batch(1, 3, 100, T0), Durability::Synced));
    assert!(
        matches!(failed, Err(LogError::Poisoned { op: "write", .. })),
        "{failed:?}"
    );
    let refused = block_on(log.append(make_batch(2, 3, 100, T0), Durability::Buffered));
    assert!(matches!(refused, Err(LogError::Poisoned { .. })));
}

#[test]
fn disk_full_fails_the_append_and_keeps_the_data() {
    let disk = SimDisk::new(13);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    disk.set_capacity(Some(disk.allocated_bytes() + (200 << 10)));
    let mut acked = 0;
    let full = loop {
        match block_on(log.append(make_batch(acked, 8, 1000, T0), Durability::Synced)) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 1000, "never ran out of space");
    };
    assert!(matches!(full, LogError::DiskFull { .. }), "{full:?}");
    assert!(log.poisoned().is_none());
    assert_eq!(read_all(&log, 0).len(), acked as usize);
    disk.set_capacity(None);
    block_on(log.append(make_batch(99, 1, 10, T0), Durability::Synced))
        .expect("append after space freed");
    drop(log);
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(read_all(&reopened, 0).len(), acked as usize + 1);
}

#[test]
fn deleting_a_partition_removes_its_files() {
    let disk = SimDisk::new(14);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..40 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
    }
    assert!(!disk.file_paths().is_empty());
    block_on(log.delete()).expect("delete");
    assert!(
        disk.file_paths().iter().all(|p| !p.starts_with(dir())),
        "{:?}",
        disk.file_paths()
    );
}

#[test]
fn reads_outside_the_log_are_out_of_range() {
    let disk = SimDisk::new(1);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    block_on(log.append(make_batch(1, 5, 10, T0), Durability::Buffered)).expect("append");
    let past = block_on(log.read(6, 1000));
    assert!(matches!(
        past,
        Err(LogError::OffsetOutOfRange {
            requested: 6,
            start: 0,
            end: 5
        })
    ));
    let at_end = block_on(log.read(5, 1000)).expect("read at end");
    assert!(at_end.is_empty());
    assert_eq!(at_end.high_watermark, 5);
}

#[test]
fn recent_reads_hit_the_cache_and_old_reads_the_disk() {
    let disk = SimDisk::new(2);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..100 {
        block_on(log.append(make_batch(i, 10, 200, T0), Durability::Buffered)).expect("append");
    }
    block_on(log.sync()).expect("sync");
    let before = log.stats();
    let recent = block_on(log.read(log.log_end() - 1, 1 << 20)).expect("read");
    assert!(!recent.is_empty());
    assert_eq!(
        recent.memory.bytes(),
        0,
        "a cache read takes no read memory"
    );
    let old = block_on(log.read(0, 1 << 20)).expect("read");
    assert!(matches!(old.chunks[0], ReadChunk::Disk(_)));
    let after = log.stats();
    assert_eq!(after.cache_reads, before.cache_reads + 1);
    assert_eq!(after.disk_reads, before.disk_reads + 1);
}

#[test]
fn sequential_disk_reads_are_read_ahead_and_serve_the_same_bytes() {
    let disk = SimDisk::new(5);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..150 {
        block_on(log.append(make_batch(i, 10, 150, T0), Durability::Buffered)).expect("append");
    }
    block_on(log.sync()).expect("sync");
    // Far below the batch cache: every read goes to the disk.
    let before = log.stats();
    let sequential = read_all_by(&log, 0, 6000);
    let stats = log.stats();
    let reads = stats.disk_reads - before.disk_reads;
    let hits = stats.readahead_hits - before.readahead_hits;
    assert!(reads > 10, "{reads} disk reads");
    assert!(
        hits >= reads - 3,
        "all but the first reads (and a segment change) find their bytes read ahead: {hits} of {reads}"
    );
    // The same batches, read one at a time out of order (no read-ahead applies).
    let mut scattered: Vec<(u64, Vec<u8>)> = Vec::new();
    let offsets: Vec<u64> = sequential.iter().map(|(o, _)| *o).collect();
    for (k, offset) in offsets.iter().enumerate().rev() {
        let read = block_on(log.read(*offset, 1)).expect("read");
        let chunk = read.chunks[0].to_vec();
        let bytes: &[u8] = &chunk;
        let view = verify(bytes, &VerifyLimits::default()).expect("verifies");
        assert_eq!(view.base_offset() as u64, *offset);
        scattered.push((*offset, view.bytes().to_vec()));
        assert_eq!(scattered.last(), sequential.get(k));
    }
    assert_eq!(scattered.len(), sequential.len());
    // A read that jumps elsewhere drops a pending read-ahead instead of serving it.
    let _ = block_on(log.read(0, 2000)).expect("read");
    let second = block_on(log.read(offsets[3], 2000)).expect("read");
    let chunk = second.chunks[0].to_vec();
    let bytes: &[u8] = &chunk;
    assert_eq!(
        verify(bytes, &VerifyLimits::default())
            .expect("ok")
            .base_offset() as u64,
        offsets[3]
    );
}

#[test]
fn a_rolled_segment_is_sealed_outside_the_append() {
    let disk = SimDisk::new(4);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    let index_files = || {
        block_on(crate::io::Storage::list_dir(&disk, &dir()))
            .expect("list")
            .into_iter()
            .filter(|n| n.ends_with(".index"))
            .count()
    };
    let mut i = 0;
    while log.segment_count() < 2 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
        i += 1;
    }
    assert_eq!(
        index_files(),
        0,
        "the append that rolled did not wait for the index files"
    );
    block_on(log.seal_pending());
    assert_eq!(index_files(), 1, "sealing wrote the rolled segment's index");
    block_on(log.seal_pending());
    assert_eq!(index_files(), 1, "nothing more to seal");
    // A second roll before any housekeeping seals the first one on the way.
    while log.segment_count() < 4 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
        i += 1;
    }
    assert_eq!(
        index_files(),
        2,
        "the third segment's roll sealed the second"
    );
    block_on(log.close()).expect("close");
    assert_eq!(index_files(), 3, "close seals the last rolled segment");
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(read_all(&reopened, 0).len(), i as usize);
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let disk = SimDisk::new(3);
    let clock = SimClock::new(T0);
    let config = LogConfig {
        segment_ms: 60_000,
        ..small_config()
    };
    let log = open(&disk, &clock, config.clone());
    for i in 0..40 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
    }
    let by_size = log.segment_count();
    assert!(
        by_size >= 2,
        "400 KB over 256 KiB segments rolled {by_size} times"
    );
    clock.advance(60_001);
    block_on(log.append(make_batch(99, 1, 10, T0), Durability::Buffered)).expect("append");
    assert_eq!(
        log.segment_count(),
        by_size + 1,
        "an old active segment rolls"
    );
    block_on(log.close()).expect("close");
    let reopened = open(&disk, &clock, config);
    assert_eq!(reopened.segment_count(), by_size + 1);
    assert_eq!(read_all(&reopened, 0).len(), 41);
}

/// DeleteRecords: the start moves inside a segment, whole segments below go, reads below
/// it are out of range, the start survives a crash (it is persisted before the call
/// returns), and retention afterwards never moves it back to a segment base below it.
#[test]
fn deleted_records_stay_deleted_across_a_crash_and_retention() {
    let disk = SimDisk::new(41);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..100 {
        block_on(log.append(make_batch(i, 10, 1000, T0 + i as i64), Durability::Synced))
            .expect("append");
    }
    let end = log.log_end();
    let segments = log.segment_count();
    assert!(matches!(
        block_on(log.delete_records_before(end + 1, end)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        block_on(log.delete_records_before(555, end)).expect("delete"),
        555
    );
    assert_eq!(log.log_start(), 555);
    assert!(log.segment_count() < segments, "whole segments below went");
    assert!(matches!(
        block_on(log.read(554, 1000)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        block_on(log.delete_records_before(100, end)).expect("no-op"),
        555,
        "an offset below the start changes nothing"
    );
    disk.crash();
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.log_start(), 555, "the start survived the crash");
    assert!(matches!(
        block_on(log.read(554, 1000)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let first = read_all(&log, 555);
    assert_eq!(
        first.first().map(|b| b.0),
        Some(550),
        "the batch holding 555 is served"
    );
    // Retention by size with a limit that keeps the segment holding 555: the start stays.
    let keep_all = LogConfig {
        retention_bytes: Some(u64::MAX >> 1),
        ..small_config()
    };
    log.retune(&keep_all).expect("valid");
    block_on(log.enforce_retention()).expect("retention");
    assert_eq!(
        log.log_start(),
        555,
        "retention does not move the start back"
    );
    // Retention that deletes more moves it forward past it.
    let tight = LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    log.retune(&tight).expect("valid");
    assert!(block_on(log.enforce_retention()).expect("retention") > 0);
    assert!(log.log_start() > 555);
}

#[test]
fn retention_deletes_whole_sealed_segments_by_size_and_time() {
    let disk = SimDisk::new(4);
    let clock = SimClock::new(T0);
    let config = LogConfig {
        retention_bytes: Some(300 << 10),
        retention_ms: None,
        ..small_config()
    };
    let log = open(&disk, &clock, config);
    for i in 0..100 {
        block_on(log.append(make_batch(i, 10, 1000, T0 + i as i64), Durability::Buffered))
            .expect("append");
    }
    let segments = log.segment_count();
    let deleted = block_on(log.enforce_retention()).expect("retention");
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), segments - deleted);
    assert!(log.size_bytes() <= (300 << 10) + (256 << 10));
    assert!(log.log_start() > 0);
    let below = block_on(log.read(0, 1000));
    assert!(matches!(below, Err(LogError::OffsetOutOfRange { .. })));
    let remaining = read_all(&log, log.log_start());
    assert_eq!(remaining.first().map(|b| b.0), Some(log.log_start()));
    let files = disk
        .file_paths()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count();
    assert_eq!(files, log.segment_count(), "segment files deleted");

    // By time: every sealed segment is older than the retention.
    let disk = SimDisk::new(5);
    let config = LogConfig {
        retention_bytes: None,
        retention_ms: Some(1000),
        ..small_config()
    };
    let log = open(&disk, &clock, config);
    for i in 0..60 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
    }
    clock.advance(10_000);
    let deleted = block_on(log.enforce_retention()).expect("retention");
    assert!(deleted >= 1);
    assert_eq!(log.segment_count(), 1, "only the active segment stays");
    assert!(log.log_start() > 0);
}

#[test]
fn sealed_segments_are_opened_on_demand_within_the_shard_bound() {
    let disk = SimDisk::new(6);
    let clock = SimClock::new(T0);
    let files = files::SegmentFiles::new(3);
    let config = LogConfig {
        retention_bytes: Some(600 << 10),
        retention_ms: None,
        segment_bytes: 64 << 10,
        max_batch_bytes: 32 << 10,
        ..small_config()
    };
    let opened = |files: &files::SegmentFiles<_>| {
        block_on(PartitionLog::open_with(
            disk.clone(),
            clock.clone(),
            &dir(),
            config.clone(),
            LogResources {
                files: files.clone(),
                memory: memory::ReadMemory::new(1 << 30),
                cache: cache::BatchCache::new(TEST_CACHE_BYTES),
            },
        ))
        .expect("open")
    };
    let log = opened(&files);
    let mut expected = Vec::new();
    for i in 0..120 {
        let batch = make_batch(i, 10, 1000, T0 + i as i64);
        expected.push(batch.to_vec());
        block_on(log.append(batch, Durability::Buffered)).expect("append");
    }
    block_on(log.sync()).expect("sync");
    let segments = log.segment_count();
    assert!(segments > 10, "{segments} segments");
    assert!(files.stats().open <= 3, "rolls keep at most the bound open");
    // Every batch reads back, twice over (the second pass reopens what the first evicted).
    for _ in 0..2 {
        let read = read_all(&log, 0);
        assert_eq!(read.len(), expected.len());
        for ((offset, bytes), want) in read.iter().zip(&expected) {
            assert_eq!(&bytes[8..], &want[8..], "batch at {offset}");
        }
        assert!(files.stats().open <= 3);
    }
    let evicted = files.stats().evictions;
    assert!(evicted > 0, "a cache of 3 cannot hold {segments} segments");
    // Deleted segments leave the cache at once (their space is freed).
    block_on(log.enforce_retention()).expect("retention");
    let start = log.log_start();
    assert!(start > 0);
    block_on(log.close()).expect("close");
    assert_eq!(files.stats().open, 0, "a closed log keeps no file open");
    drop(log);
    let log = opened(&files);
    // Recovery stats every segment but keeps open only what the producer-state rebuild read.
    assert!(
        files.stats().open <= 3,
        "opening a log keeps at most the bound open"
    );
    let read = read_all(&log, start);
    assert_eq!(read.first().map(|r| r.0), Some(start));
    drop(log);
    assert_eq!(files.stats().open, 0, "a dropped log keeps no file open");
}

#[test]
fn disk_reads_hold_the_shards_read_memory_until_dropped() {
    let disk = SimDisk::new(7);
    let clock = SimClock::new(T0);
    let memory = memory::ReadMemory::new(1 << 20);
    let config = LogConfig {
        segment_bytes: 4 << 20,
        ..small_config()
    };
    let log = block_on(PartitionLog::open_with(
        disk.clone(),
        clock.clone(),
        &dir(),
        config,
        LogResources {
            files: shared_files(),
            memory: memory.clone(),
            cache: cache::BatchCache::new(16 << 10),
        },
    ))
    .expect("open");
    for i in 0..200 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
    }
    block_on(log.sync()).expect("sync");
    // A disk read holds its buffer's bytes (at least what it returns) while it is kept.
    let first = block_on(log.read(0, 100 << 10)).expect("read");
    assert!(matches!(first.chunks[..], [ReadChunk::Disk(_)]));
    let held = memory.stats().held;
    assert!(
        held >= first.len() && held == first.memory.bytes(),
        "{held}"
    );
    // A second sequential read would read ahead, but not past half the budget.
    let second = block_on(log.read(first.next_offset, 100 << 10)).expect("read");
    assert!(memory.stats().held <= 1 << 20);
    // A reader holding memory does not wait for more: it goes without.
    let filler = memory.try_take(512 << 10).expect("half is free");
    // (A read elsewhere drops the read-ahead and its memory: drop it now to count exactly.)
    log.forget_readahead(None);
    let free = (1 << 20) - memory.stats().held;
    let big = block_on(log.read_within(0, free + (64 << 10), MemoryWait::IfFree));
    assert!(
        matches!(big, Err(LogError::MemoryBusy)),
        "a read past the free memory was not refused: {:?}",
        big.as_ref()
            .map(|r| (r.len(), r.memory.bytes()))
            .map_err(|e| e.to_string())
    );
    drop((first, second, filler));
    log.forget_readahead(None);
    assert_eq!(memory.stats().held, 0, "every byte comes back");
    let big = block_on(log.read_within(0, 400 << 10, MemoryWait::IfFree))
        .map_err(|e| e.to_string())
        .expect("room now");
    assert!(big.len() > 300 << 10);
    // Tail-cache reads allocate nothing and hold nothing.
    drop(big);
    let tail = block_on(log.read(log.log_end() - 10, 1 << 20)).expect("read");
    assert!(matches!(tail.chunks[..], [ReadChunk::Cache(_)]));
    assert_eq!(tail.memory.bytes(), 0);
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let disk = SimDisk::new(6);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..200u64 {
        block_on(log.append(
            make_batch(i, 5, 500, T0 + 1000 * i as i64),
            Durability::Buffered,
        ))
        .expect("append");
    }
    let end = log.log_end();
    let at = |ts| block_on(log.offset_for_timestamp(ts, end)).expect("lookup");
    // Batch i holds timestamps T0 + 1000 i .. T0 + 1000 i + 4, offsets 5 i .. 5 i + 4: the
    // answer is the record, not its batch.
    assert_eq!(
        at(T0 + 1000 * 37 + 2),
        Some((37 * 5 + 2, T0 + 1000 * 37 + 2))
    );
    assert_eq!(at(T0 + 1000 * 37 + 10), Some((38 * 5, T0 + 1000 * 38)));
    assert_eq!(at(0), Some((0, T0)));
    assert_eq!(at(T0 + 1_000_000), None, "every record is older");
    // Records at or past `end` (e.g. above the high watermark) are not answered.
    assert_eq!(
        block_on(log.offset_for_timestamp(T0 + 1000 * 37 + 2, 37 * 5 + 2)).expect("lookup"),
        None
    );
    assert_eq!(
        block_on(log.offset_for_timestamp(T0 + 1000 * 37 + 1, 37 * 5 + 2)).expect("lookup"),
        Some((37 * 5 + 1, T0 + 1000 * 37 + 1))
    );
}

#[test]
fn max_timestamp_lookup_finds_the_record_holding_it() {
    let disk = SimDisk::new(61);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    assert_eq!(
        block_on(log.offset_of_max_timestamp(0)).expect("lookup"),
        None,
        "an empty log has none"
    );
    // Timestamps rise to a peak at batch 120 (records 600..605, peak record 604), then fall:
    // the peak sits in the middle of the log, in an older segment than the end.
    for i in 0..200u64 {
        let ts = T0 + 1000 * (i as i64).min(240 - i as i64);
        block_on(log.append(make_batch(i, 5, 500, ts), Durability::Buffered)).expect("append");
    }
    let peak = T0 + 1000 * 120 + 4;
    let end = log.log_end();
    assert_eq!(
        block_on(log.offset_of_max_timestamp(end)).expect("lookup"),
        Some((604, peak))
    );
    // With the peak's batch past `end` (a high watermark, at a batch boundary), the largest
    // readable timestamp is answered.
    assert_eq!(
        block_on(log.offset_of_max_timestamp(600)).expect("lookup"),
        Some((599, T0 + 1000 * 119 + 4))
    );
}

#[test]
fn damaged_index_is_rebuilt() {
    let disk = SimDisk::new(8);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..60 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
    }
    block_on(log.close()).expect("close");
    let index = disk
        .file_paths()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "index"))
        .expect("a sealed segment index");
    assert!(disk.flip_bit(&index, 20, 3));
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(read_all(&reopened, 0).len(), 60);
}

#[test]
fn flipped_bit_in_sealed_segment_is_reported_not_served() {
    let disk = SimDisk::new(9);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..60 {
        block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered)).expect("append");
    }
    block_on(log.close()).expect("close");
    let first: &Path = &segment::segment_path(&dir(), 0, "log");
    assert!(disk.flip_bit(first, 5000, 1));
    let reopened = open(&disk, &clock, small_config());
    let mut saw_corrupt = false;
    for offset in 0..20 {
        match block_on(reopened.read(offset, 100)) {
            Err(LogError::Corrupt { .. }) => saw_corrupt = true,
            Ok(read) => {
                for chunk in &read.chunks {
                    verify(&chunk.to_vec(), &VerifyLimits::default())
                        .expect("served bytes are valid");
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(saw_corrupt);
}

/// A sealed segment whose file is shorter than the log recorded (cut on the disk while the
/// broker was down) reports the missing part as corrupt. Before, a read past the file's end
/// read the same short buffer again forever: the shard spun on one consumer's fetch (the
/// recovery fuzz target found it). The reads run on their own thread so that a spin fails
/// the test instead of hanging it.
#[test]
fn a_sealed_segment_cut_short_on_disk_is_reported_not_spun_on() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let disk = SimDisk::new(11);
        let clock = SimClock::new(T0);
        let log = open(&disk, &clock, small_config());
        for i in 0..60 {
            block_on(log.append(make_batch(i, 10, 1000, T0), Durability::Buffered))
                .expect("append");
        }
        // Every batch has the same size: the cut lands inside segment 0's last batch header,
        // after every index entry, so the indexes still load and nothing is scanned.
        let batch_len = block_on(log.read(0, 1)).expect("read").chunks[0]
            .to_vec()
            .len();
        block_on(log.close()).expect("close");
        let first: &Path = &segment::segment_path(&dir(), 0, "log");
        let sealed = disk.file_len(first).expect("segment 0 exists");
        assert_eq!(sealed % batch_len, 0, "segment 0 holds whole batches");
        let batches = sealed / batch_len;
        assert!(batches > 2, "segment 0 holds {batches} batches");
        assert!(disk.set_file_len(first, sealed - batch_len + 10));
        let reopened = open(&disk, &clock, small_config());
        let mut corrupt = 0;
        for offset in (0..batches as u64 * 10).step_by(10) {
            match block_on(reopened.read(offset, 100)) {
                Err(LogError::Corrupt { .. }) => corrupt += 1,
                Ok(read) => {
                    for chunk in &read.chunks {
                        verify(&chunk.to_vec(), &VerifyLimits::default())
                            .expect("served bytes are valid");
                    }
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let _ = done.send(corrupt);
    });
    let corrupt = finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the reads finish (a read past the file's end spun)");
    assert!(corrupt > 0, "the missing part is reported");
}

#[test]
fn flush_policy_asks_for_sync_by_bytes_and_interval() {
    let disk = SimDisk::new(10);
    let clock = SimClock::new(T0);
    let config = LogConfig {
        flush_bytes: 10_000,
        flush_interval_ms: 50,
        ..small_config()
    };
    let log = open(&disk, &clock, config);
    let info =
        block_on(log.append(make_batch(1, 1, 100, T0), Durability::Buffered)).expect("append");
    assert!(!info.flush_due);
    clock.advance(50);
    assert!(log.flush_due());
    assert!(block_on(log.maybe_flush()).expect("flush"));
    assert_eq!(log.synced_offset(), log.log_end());
    let info =
        block_on(log.append(make_batch(2, 10, 2000, T0), Durability::Buffered)).expect("append");
    assert!(info.flush_due, "20 KB unsynced is over flush_bytes");
}

#[test]
fn a_batch_larger_than_the_read_window_is_read_whole_from_disk() {
    let disk = SimDisk::new(15);
    let clock = SimClock::new(T0);
    let config = LogConfig {
        max_batch_bytes: 512 << 10,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = open_cached(&disk, &clock, config, 1);
    block_on(log.append(make_batch(1, 3, 100, T0), Durability::Buffered)).expect("append");
    let big = make_batch(2, 30, 10_000, T0);
    let big_len = big.len();
    block_on(log.append(big, Durability::Buffered)).expect("append");
    block_on(log.append(make_batch(3, 3, 100, T0), Durability::Buffered)).expect("append");
    block_on(log.sync()).expect("sync");
    // Offset 10 lies inside the big batch (offsets 3..33); the window read is ~65 KiB.
    let read = block_on(log.read(10, 1)).expect("read");
    assert!(matches!(read.chunks[0], ReadChunk::Disk(_)));
    assert_eq!(read.len(), big_len);
    assert_eq!(read.next_offset, 33);
}

#[test]
fn damaged_base_offset_on_disk_is_reported_not_served() {
    let disk = SimDisk::new(16);
    let clock = SimClock::new(T0);
    let config = small_config();
    let log = open_cached(&disk, &clock, config.clone(), 1);
    let mut sizes = Vec::new();
    for i in 0..10 {
        let batch = make_batch(i, 5, 100, T0);
        sizes.push(batch.len());
        block_on(log.append(batch, Durability::Buffered)).expect("append");
    }
    block_on(log.close()).expect("close");
    // A cache of one byte keeps nothing the reopening reads.
    let reopened = open_cached(&disk, &clock, config, 1);
    // Batch 3 starts after batches 0..3; bit 1 of byte 0 of its base offset flips.
    let position: usize = sizes[..3].iter().sum();
    assert!(disk.flip_bit(&segment::segment_path(&dir(), 0, "log"), position, 1));
    let read = block_on(reopened.read(15, 1 << 20));
    assert!(matches!(read, Err(LogError::Corrupt { .. })), "{read:?}");
    assert!(
        block_on(reopened.read(0, 100)).is_ok(),
        "batches before it still read"
    );
}

#[test]
fn duplicate_after_reopen_returns_the_original_offsets() {
    let disk = SimDisk::new(7);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    block_on(log.append(make_batch(1, 3, 10, T0), Durability::Buffered)).expect("plain");
    let first = make_idempotent_batch(2, 2, 10, T0, Some((9, 0, 0)));
    let info = block_on(log.append(first.clone(), Durability::Buffered)).expect("first");
    assert_eq!(
        (info.base_offset, info.last_offset, info.duplicate),
        (3, 4, false)
    );
    let second = make_idempotent_batch(3, 1, 10, T0, Some((9, 0, 2)));
    block_on(log.append(second, Durability::Synced)).expect("second");
    assert_eq!(log.producer_count(), 1);
    block_on(log.close()).expect("close");

    let log = open(&disk, &clock, small_config());
    assert_eq!(log.producer_count(), 1);
    let info = block_on(log.append(first, Durability::Synced)).expect("retry");
    assert_eq!(
        (info.base_offset, info.last_offset, info.duplicate),
        (3, 4, true)
    );
    assert_eq!(log.log_end(), 6);
    let gap = make_idempotent_batch(4, 1, 10, T0, Some((9, 0, 4)));
    assert!(matches!(
        block_on(log.append(gap, Durability::Buffered)),
        Err(LogError::OutOfOrderSequence { expected: 3, .. })
    ));
    let zombie = make_idempotent_batch(5, 1, 10, T0, Some((9, -1, 3)));
    assert!(matches!(
        block_on(log.append(zombie, Durability::Buffered)),
        Err(LogError::InvalidProducerEpoch { current: 0, .. })
    ));
    let bumped = make_idempotent_batch(6, 1, 10, T0, Some((9, 1, 0)));
    let info = block_on(log.append(bumped, Durability::Buffered)).expect("new epoch");
    assert_eq!((info.base_offset, info.duplicate), (6, false));
    assert_eq!(log.log_end(), 7);
}

#[test]
fn producer_state_is_rebuilt_from_a_bounded_tail() {
    let disk = SimDisk::new(8);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    // Producer 5 writes once, then enough other data follows to push its batch out of the
    // scanned tail.
    let early = make_idempotent_batch(1, 1, 10, T0, Some((5, 0, 0)));
    block_on(log.append(early.clone(), Durability::Buffered)).expect("early");
    for i in 0..40 {
        block_on(log.append(make_batch(i, 10, 6000, T0), Durability::Buffered)).expect("fill");
    }
    assert!(log.segment_count() > PRODUCER_STATE_SEGMENTS + 1);
    block_on(log.close()).expect("close");
    // No snapshot (as after a crash before the first one): only the tail is scanned.
    assert!(disk.set_file_len(&dir().join(PRODUCER_STATE_FILE), 0));
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.producer_count(), 0);
    // Without state any sequence is accepted, so the retry is appended again (Kafka
    // behaves the same once retention removed the producer's batches).
    let info = block_on(log.append(early, Durability::Buffered)).expect("retry");
    assert!(!info.duplicate);
}

/// The producer state comes back from its snapshot plus the batches after it, so a producer
/// whose batches left the scanned tail is still known (its retry is still a duplicate),
/// without re-reading the log; a snapshot covering more than the log holds is removed and
/// the state rebuilt from the log. Before, every open re-read the tail (up to 3 GiB).
#[test]
fn producer_state_comes_back_from_its_snapshot() {
    let disk = SimDisk::new(12);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    let early = make_idempotent_batch(1, 1, 10, T0, Some((5, 0, 0)));
    block_on(log.append(early.clone(), Durability::Buffered)).expect("early");
    for i in 0..40 {
        block_on(log.append(make_batch(i, 10, 6000, T0), Durability::Buffered)).expect("fill");
    }
    block_on(log.close()).expect("close");
    // A batch after the snapshot: appended by a later run that crashed before a snapshot.
    let log = open(&disk, &clock, small_config());
    assert_eq!(
        log.producer_count(),
        1,
        "from the snapshot, beyond the tail"
    );
    let late = make_idempotent_batch(2, 1, 10, T0, Some((6, 0, 0)));
    block_on(log.append(late.clone(), Durability::Synced)).expect("late");
    drop(log);
    disk.crash();
    let log = open(&disk, &clock, small_config());
    assert_eq!(
        log.producer_count(),
        2,
        "the snapshot plus the batches after it"
    );
    let retry = block_on(log.append(early, Durability::Buffered)).expect("retry");
    assert!(retry.duplicate, "the early producer's retry is recognised");
    let retry = block_on(log.append(late, Durability::Buffered)).expect("retry");
    assert!(retry.duplicate);
    block_on(log.close()).expect("close");
    // A snapshot claiming more than the log holds is stale: removed, state rebuilt.
    let snapshot = dir().join(PRODUCER_STATE_FILE);
    let mut bytes = vec![0u8; disk.file_len(&snapshot).expect("snapshot")];
    bytes[..4].copy_from_slice(b"TLPS");
    bytes[4] = 1;
    bytes[5..13].copy_from_slice(&1_000_000u64.to_le_bytes());
    let payload = 0u32.to_le_bytes();
    bytes[13..17].copy_from_slice(&4u32.to_le_bytes());
    bytes[17..21].copy_from_slice(&payload);
    let crc = crc32c::crc32c(&bytes[..21]);
    bytes[21..25].copy_from_slice(&crc.to_le_bytes());
    disk.install(&snapshot, &bytes);
    let log = open(&disk, &clock, small_config());
    assert!(
        disk.file_len(&snapshot).is_none(),
        "the stale snapshot is removed"
    );
    assert_eq!(
        log.producer_count(),
        1,
        "rebuilt from the bounded tail: only the late producer is in it"
    );
}

/// A validated Kafka batch behind its Tidelog header, CRCs chained (what the Kafka
/// listener appends).
fn sealed_kafka_batch(seq: u64) -> tidelog_wire::kafka_records::SealedBatch {
    use tidelog_wire::kafka_records::{native_to_kafka, seal_produce_batch};
    let native = make_batch(seq, 5, 100, T0);
    let view = verify(&native, &VerifyLimits::default()).expect("native batch");
    let mut kafka = BytesMut::new();
    native_to_kafka(&view, &mut kafka).expect("convert");
    let (_, sealed) = seal_produce_batch(&kafka.freeze(), 9, 1 << 20).expect("valid Kafka batch");
    sealed
}

/// Sealed batches skip the CRC check on append, so recovery must be what catches a record
/// damaged on disk: the chained Kafka CRC. Flipping one bit in the last batch's records
/// (past the bytes the Tidelog CRC covers) is found at reopen: without a recovery point it
/// is cut as a torn tail; with one (the batch was durable) its offsets are kept unreadable.
#[test]
fn a_damaged_record_of_a_sealed_kafka_batch_is_found_at_recovery() {
    let disk = SimDisk::new(11);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    let mut len = 0;
    for seq in 0..3 {
        let batch = sealed_kafka_batch(seq);
        len = batch.len();
        block_on(log.append_sealed_unsynced(batch)).expect("append");
    }
    block_on(log.sync()).expect("sync");
    assert_eq!(read_all(&log, 0).len(), 3);
    block_on(log.close()).expect("close");
    let active = segment::segment_path(&dir(), 0, "log");
    let in_records = 2 * len + len - 3;
    assert!(in_records > 2 * len + tidelog_wire::batch::KAFKA_CHAIN_END);
    assert!(disk.flip_bit(&active, in_records, 2));
    assert_eq!(
        log.recovery_point(),
        15,
        "close checkpointed the recovery point"
    );
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(
        reopened.log_end(),
        15,
        "durable offsets are kept, never reused"
    );
    assert!(matches!(
        block_on(reopened.read(10, 1 << 20)),
        Err(LogError::Corrupt { .. })
    ));
    let batches = read_all_until(&reopened, 0, 10);
    assert_eq!(batches.len(), 2);
    for (_, bytes) in &batches {
        tidelog_wire::batch::check_crc(bytes).expect("what is served checks");
    }
    block_on(reopened.close()).expect("close");
    // Without a recovery point the same damage is indistinguishable from a torn tail.
    block_on(disk.remove_file(&dir().join(RECOVERY_POINT_FILE))).expect("remove");
    block_on(disk.sync_dir(&dir())).expect("sync");
    let reopened = open(&disk, &clock, small_config());
    assert_eq!(
        reopened.log_end(),
        15,
        "the sealed damaged segment is trusted now"
    );
}

/// The batches from `from` up to `end`, one read per batch (reads past `end` may fail).
fn read_all_until(log: &SimLog, from: u64, end: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < end {
        let read = block_on(log.read(offset, 1)).expect("read below the damage");
        let chunk = read.chunks[0].to_vec();
        let view = verify(&chunk, &VerifyLimits::default()).expect("served batches verify");
        out.push((view.base_offset() as u64, view.bytes().to_vec()));
        offset = read.next_offset;
    }
    out
}

/// Five durable batches of five records, the recovery point checkpointed, then one bit
/// flipped in the second batch: before recovery points, recovery cut the log there,
/// dropping four acknowledged batches and handing their offsets to new records. Now the
/// damaged batch's offsets are reported and never served, the batches after it are served,
/// and new records get new offsets; the same holds at the next open.
#[test]
fn damage_below_the_recovery_point_is_skipped_and_kept_not_cut() {
    let disk = SimDisk::new(21);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    let mut lens = Vec::new();
    for seq in 0..5 {
        let batch = make_batch(seq, 5, 100, T0);
        lens.push(batch.len());
        block_on(log.append(batch, Durability::Synced)).expect("append");
    }
    assert!(block_on(log.checkpoint_recovery_point()));
    assert_eq!(log.recovery_point(), 25);
    disk.crash();
    let active = segment::segment_path(&dir(), 0, "log");
    assert!(disk.flip_bit(&active, lens[0] + lens[1] / 2, 3));
    for round in 0..2 {
        let log = open(&disk, &clock, small_config());
        assert_eq!(log.log_end(), 25 + 5 * round, "nothing acknowledged is cut");
        assert!(matches!(
            block_on(log.read(5, 1 << 20)),
            Err(LogError::Corrupt { .. })
        ));
        let after = read_all(&log, 10);
        assert_eq!(
            after.iter().map(|b| b.0).collect::<Vec<_>>()[..3],
            [10, 15, 20],
            "the batches after the damage are served"
        );
        let first = block_on(log.read(0, 1)).expect("read before the damage");
        assert_eq!(first.next_offset, 5);
        if round == 0 {
            let info = block_on(log.append(make_batch(9, 5, 100, T0), Durability::Synced))
                .expect("append after recovery");
            assert_eq!(info.base_offset, 25, "no offset is reused");
        }
        block_on(log.close()).expect("close");
    }
}

/// Damage below the recovery point that runs to the end of the data (nothing valid after
/// it): the log resumes at the recovery point rather than at the damage.
#[test]
fn damage_to_the_end_resumes_at_the_recovery_point() {
    let disk = SimDisk::new(22);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    let mut lens = Vec::new();
    for seq in 0..3 {
        let batch = make_batch(seq, 4, 100, T0);
        lens.push(batch.len());
        block_on(log.append(batch, Durability::Synced)).expect("append");
    }
    block_on(log.close()).expect("close");
    let active = segment::segment_path(&dir(), 0, "log");
    // The last batch's header: its length field no longer fits.
    assert!(disk.flip_bit(&active, lens[0] + lens[1] + 9, 7));
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.log_end(), 12);
    assert!(
        block_on(log.read(8, 1 << 20)).is_err(),
        "the lost offsets are not served"
    );
    let info = block_on(log.append(make_batch(5, 1, 10, T0), Durability::Synced)).expect("append");
    assert_eq!(info.base_offset, 12);
    block_on(log.close()).expect("close");
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.log_end(), 13);
    assert_eq!(read_all(&log, 12).len(), 1);
}

/// A crash right after a checkpoint drops only unsynced appends: the recovery point never
/// passes what was fdatasynced, so recovery sees no damage and cuts the torn tail.
#[test]
fn the_recovery_point_never_passes_the_synced_offset() {
    let disk = SimDisk::new(23);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    block_on(log.append(make_batch(0, 3, 100, T0), Durability::Synced)).expect("append");
    block_on(log.append(make_batch(1, 3, 100, T0), Durability::Buffered)).expect("append");
    assert!(block_on(log.checkpoint_recovery_point()));
    assert_eq!(
        log.recovery_point(),
        3,
        "the synced offset, not the log end"
    );
    disk.crash();
    let log = open(&disk, &clock, small_config());
    assert!(log.log_end() >= 3);
    assert_eq!(read_all(&log, 0).len() as u64, log.log_end() / 3);
}

/// A sealed Kafka batch is stored with one copy: the batch cache keeps the producer's records
/// as the very buffer they arrived in (a `Split` chunk whose tail is that memory), and the
/// bytes served from the cache equal those read back from the disk after a reopen.
#[test]
fn sealed_kafka_batches_keep_the_producers_records_uncopied() {
    use tidelog_wire::kafka_records::{native_to_kafka, seal_produce_batch};
    let disk = SimDisk::new(12);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    let native = make_batch(1, 20, 200, T0);
    let view = verify(&native, &VerifyLimits::default()).expect("native batch");
    let mut kafka = BytesMut::new();
    native_to_kafka(&view, &mut kafka).expect("convert");
    let records = kafka.freeze();
    let (_, sealed) = seal_produce_batch(&records, 9, 1 << 20).expect("valid Kafka batch");
    block_on(log.append_sealed_unsynced(sealed)).expect("append");
    let cached = block_on(log.read(0, 1 << 20)).expect("read");
    let ReadChunk::Split { head, tail } = &cached.chunks[0] else {
        panic!("a sealed batch is cached in two pieces");
    };
    assert_eq!(
        tail.as_ptr(),
        records[21..].as_ptr(),
        "the records in the cache are the request's bytes, not a copy"
    );
    assert_eq!(head.len(), tidelog_wire::batch::KAFKA_CHAIN_END);
    let whole = cached.chunks[0].to_vec();
    tidelog_wire::batch::check_crc(&whole).expect("the pieces form a valid batch");
    assert_eq!(
        &whole[tidelog_wire::batch::HEADER_LEN + 21..],
        &records[21..]
    );
    block_on(log.close()).expect("close");
    let reopened = open(&disk, &clock, small_config());
    let from_disk = block_on(reopened.read(0, 1 << 20)).expect("read");
    assert!(matches!(from_disk.chunks[0], ReadChunk::Disk(_)));
    assert_eq!(
        from_disk.chunks[0].to_vec(),
        whole,
        "disk and cache serve the same bytes"
    );
}

/// A clean close leaves a record of the active segment and a producer-state snapshot that
/// covers the log end, so the next open reads back nothing but the last page or two of the
/// active segment. Before, it read the whole active segment and, with no idempotent producer, the
/// last three segments (a clean restart of a broker holding 3.4 GB read 6 GB back). The log
/// it opens serves, indexes and appends as a scanned one does, and a crash after that open
/// scans again (the record is gone) without losing a synced batch.
#[test]
fn a_clean_close_lets_the_next_open_read_back_no_log() {
    let disk = SimDisk::new(31);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..60u64 {
        let batch = make_batch(i, 10, 1500, T0 + 1000 * i as i64);
        block_on(log.append(batch, Durability::Buffered)).expect("append");
    }
    assert!(log.segment_count() > PRODUCER_STATE_SEGMENTS + 1);
    let expected = read_all(&log, 0);
    block_on(log.close()).expect("close");
    let log_bytes_read = || -> u64 {
        disk.file_paths()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .map(|p| disk.bytes_read(p))
            .sum()
    };
    let before = log_bytes_read();
    let log = open(&disk, &clock, small_config());
    let read_back = log_bytes_read() - before;
    // The last page, for the write head and for the check that zeros follow the recorded
    // end (which may reach into the next page): at most three pages.
    assert!(
        read_back <= 3 * crate::limits::IO_ALIGNMENT as u64,
        "a clean open read {read_back} bytes of the log"
    );
    assert!(
        disk.file_len(&dir().join(CLEAN_SHUTDOWN_FILE)).is_none(),
        "the record is consumed by the open"
    );
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(
        block_on(log.offset_for_timestamp(T0 + 1000 * 57 + 2, log.log_end())).expect("lookup"),
        Some((57 * 10 + 2, T0 + 1000 * 57 + 2)),
        "the active segment's time index came back"
    );
    let mut all = expected;
    for i in 60..80u64 {
        let batch = make_batch(i, 10, 1500, T0 + 1000 * i as i64);
        let info = block_on(log.append(batch, Durability::Synced)).expect("append");
        assert_eq!(
            info.base_offset,
            10 * i,
            "offsets go on from the recorded end"
        );
    }
    all.extend(read_all(&log, 600));
    assert_eq!(read_all(&log, 0), all);
    drop(log);
    disk.crash();
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.log_end(), 800, "every synced batch survives the crash");
    assert_eq!(read_all(&log, 0), all);
}

/// A clean-shutdown record left in place by a build that did not know it (a downgrade, then
/// an upgrade) is not trusted once batches follow its end, even when the file length and the
/// recovery point say nothing changed (that build crashed before its next checkpoint, and
/// preallocation made the lengths agree): the bytes after the recorded end are not zeros.
/// Trusting it would cut batches that were synced.
#[test]
fn a_record_with_batches_after_its_end_is_not_trusted() {
    let disk = SimDisk::new(41);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for i in 0..5 {
        block_on(log.append(make_batch(i, 5, 100, T0), Durability::Synced)).expect("append");
    }
    block_on(log.close()).expect("close");
    let saved = |name: &str| block_on(segment::read_whole(&disk, &dir().join(name))).expect(name);
    let record = saved(CLEAN_SHUTDOWN_FILE);
    let recovery_point = saved(RECOVERY_POINT_FILE);
    let (active, _) = active_segment(&disk);
    let recorded_len = disk.file_len(&active).expect("segment");
    // The other build's run: more synced batches in the same segment.
    let log = open(&disk, &clock, small_config());
    for i in 5..8 {
        block_on(log.append(make_batch(i, 5, 100, T0), Durability::Synced)).expect("append");
    }
    let expected = read_all(&log, 0);
    assert_eq!(expected.len(), 8);
    drop(log);
    disk.crash();
    disk.install(&dir().join(CLEAN_SHUTDOWN_FILE), &record);
    disk.install(&dir().join(RECOVERY_POINT_FILE), &recovery_point);
    assert!(disk.set_file_len(&active, recorded_len));
    let log = open(&disk, &clock, small_config());
    assert!(!log.opened_clean(), "the stale record was trusted");
    assert_eq!(
        log.log_end(),
        40,
        "the synced batches after the record are kept"
    );
    assert_eq!(read_all(&log, 0), expected);
}

/// A follower's truncation: after `truncate_closed` and a power loss at any later moment, the
/// reopened log ends exactly at the cut (a batch boundary: in the active segment, in a sealed
/// one, at a segment's base), serves every batch below it unchanged, and the next append
/// takes the cut's offset. Each seed's crash may undo any unsynced removal, so this fails if
/// a directory sync after a removal, or the recovery point's lowering, is left out.
#[test]
fn a_truncated_log_ends_at_the_cut_after_any_crash() {
    for seed in 0..24u64 {
        let disk = SimDisk::new(seed);
        let clock = SimClock::new(T0);
        let log = open(&disk, &clock, small_config());
        for seq in 0..120u64 {
            block_on(log.append(make_batch(seq, 4, 3000, T0), Durability::Synced)).expect("append");
        }
        let all = read_all(&log, 0);
        assert!(log.segment_count() >= 3, "several segments");
        block_on(log.close()).expect("close");
        drop(log);
        // Cut at a batch boundary picked by the seed (sealed segments and the active one).
        let cut_batch = 1 + (seed as usize * 37) % (all.len() - 1);
        let cut = all[cut_batch].0;
        let end = block_on(truncate_closed(&disk, &dir(), cut)).expect("truncate");
        assert_eq!(end, cut, "seed {seed}: a batch boundary is cut exactly");
        disk.crash();
        let log = open(&disk, &clock, small_config());
        assert_eq!(log.log_end(), cut, "seed {seed}");
        assert_eq!(read_all(&log, 0), all[..cut_batch].to_vec(), "seed {seed}");
        let next = block_on(log.append(make_batch(999, 1, 10, T0), Durability::Synced))
            .expect("append after the cut");
        assert_eq!(next.base_offset, cut, "seed {seed}");
        block_on(log.close()).expect("close");
    }
}

/// A cut inside a batch removes that batch too (the log ends at or below the offset asked
/// for); a cut at or past the end changes nothing; a cut below the log's start is refused.
#[test]
fn a_cut_inside_a_batch_takes_the_whole_batch() {
    let disk = SimDisk::new(3);
    let clock = SimClock::new(T0);
    let log = open(&disk, &clock, small_config());
    for seq in 0..10u64 {
        block_on(log.append(make_batch(seq, 4, 100, T0), Durability::Synced)).expect("append");
    }
    let end = log.log_end();
    block_on(log.close()).expect("close");
    drop(log);
    assert_eq!(
        block_on(truncate_closed(&disk, &dir(), end + 5)).expect("past end"),
        end
    );
    assert_eq!(
        block_on(truncate_closed(&disk, &dir(), 22)).expect("inside"),
        20
    );
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.log_end(), 20);
    assert_eq!(log.recovery_point(), 20, "lowered to the cut");
    block_on(log.close()).expect("close");
    drop(log);
    assert_eq!(
        block_on(truncate_closed(&disk, &dir(), 0)).expect("to zero"),
        0
    );
    let log = open(&disk, &clock, small_config());
    assert_eq!(log.log_end(), 0);
}

/// Leader epochs are recorded at the log end before their batches, survive a power loss,
/// answer OffsetForLeaderEpoch, and lose the epochs a truncation cut away.
#[test]
fn leader_epochs_survive_crashes_and_follow_truncation() {
    for seed in 0..8u64 {
        let disk = SimDisk::new(seed);
        let clock = SimClock::new(T0);
        let log = open(&disk, &clock, small_config());
        assert!(block_on(log.assign_leader_epoch(0)).expect("epoch 0"));
        for seq in 0..5u64 {
            block_on(log.append(make_batch(seq, 2, 10, T0), Durability::Synced)).expect("append");
        }
        assert!(block_on(log.assign_leader_epoch(3)).expect("epoch 3"));
        assert!(
            !block_on(log.assign_leader_epoch(2)).expect("older"),
            "not above the latest"
        );
        for seq in 5..8u64 {
            block_on(log.append(make_batch(seq, 2, 10, T0), Durability::Synced)).expect("append");
        }
        disk.crash();
        let log = open(&disk, &clock, small_config());
        assert_eq!(log.latest_leader_epoch(), Some(3), "seed {seed}");
        assert_eq!(log.epoch_end_offset(0), (0, 10));
        assert_eq!(log.epoch_end_offset(3), (3, 16));
        assert_eq!(log.epoch_end_offset(4), (-1, -1));
        block_on(log.close()).expect("close");
        drop(log);
        // A follower cuts back into epoch 0: epoch 3 goes with its batches.
        assert_eq!(block_on(truncate_closed(&disk, &dir(), 8)).expect("cut"), 8);
        disk.crash();
        let log = open(&disk, &clock, small_config());
        assert_eq!(log.latest_leader_epoch(), Some(0), "seed {seed}");
        assert_eq!(log.epoch_end_offset(0), (0, 8));
    }
}

/// A follower behind its leader's retention empties its log to start at the leader's log
/// start; after a power loss the log is empty there and the next append takes that offset.
#[test]
fn a_reset_log_starts_at_the_given_offset_after_a_crash() {
    for seed in 0..8u64 {
        let disk = SimDisk::new(seed);
        let clock = SimClock::new(T0);
        let log = open(&disk, &clock, small_config());
        for seq in 0..40u64 {
            block_on(log.append(make_batch(seq, 4, 3000, T0), Durability::Synced)).expect("append");
        }
        assert!(block_on(log.assign_leader_epoch(2)).expect("epoch"));
        block_on(log.close()).expect("close");
        drop(log);
        block_on(reset_closed(&disk, &dir(), 5000)).expect("reset");
        disk.crash();
        let log = open(&disk, &clock, small_config());
        assert_eq!(
            (log.log_start(), log.log_end()),
            (5000, 5000),
            "seed {seed}"
        );
        assert_eq!(
            log.latest_leader_epoch(),
            None,
            "the follower learns epochs again"
        );
        let next =
            block_on(log.append(make_batch(1, 1, 10, T0), Durability::Synced)).expect("append");
        assert_eq!(next.base_offset, 5000);
    }
}
