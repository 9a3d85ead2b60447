//! Storage-engine throughput on a real disk: appends (buffered, fdatasync each, group commit)
//! and reads (tail cache, DMA reads of old offsets).
//!
//! Everything runs inside one glommio `LocalExecutor` on the bench thread; `iter_custom`
//! times N iterations inside the executor. Data goes to a fresh directory per measured run
//! under `$TIDELOG_BENCH_DIR` (default: cargo's `target/tmp`), which must not be tmpfs
//! (O_DIRECT), and is deleted afterwards.
//!
//! Batches are encoded once. `append` stamps the base offset into the batch in place and
//! keeps the buffer in the tail cache, so every append needs its own `BytesMut`: the copies
//! are made *outside* the timed region, in a pool of up to [`ROUND_BATCHES`] batches. Copying
//! is what the network layer does when a batch arrives, not what the log costs, and
//! subtracting a separately measured copy time would add that measurement's noise to every
//! figure. When one measured run needs more batches than a pool holds, it is timed in rounds
//! that each end with `sync()`, so no write issued in a round completes on untimed time (the
//! extra fdatasync per ~512 MiB is counted against the log, a bias of well under 1%).

use std::cell::Cell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use tidelog_engine::io::dma::DmaStorage;
use tidelog_engine::io::SystemClock;
use tidelog_engine::{Durability, LogConfig, PartitionLog, ReadChunk};
use tidelog_wire::batch::BatchBuilder;

/// Records per batch.
const RECORDS: usize = 64;
/// Value bytes per record.
const RECORD_BYTES: usize = 1024;
/// Most batch copies prepared at once (~530 MiB); see the module docs.
const ROUND_BATCHES: u64 = 8192;
/// Largest read, as a consumer fetch would ask.
const READ_MAX_BYTES: usize = 1 << 20;

type Log = PartitionLog<DmaStorage, SystemClock>;

thread_local! {
    /// One executor for the whole bench binary: locked memory is capped at 8 MiB, so only
    /// one 4 MiB io_memory pool may exist at a time.
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(4 << 20)
        .make()
        .expect("glommio executor (io_uring, 4 MiB locked io_memory)");
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    thread_local!(static PRIMED: Cell<bool> = const { Cell::new(false) });
    EXECUTOR.with(|ex| {
        if !PRIMED.with(|p| p.replace(true)) {
            ex.run(prime_iopoll_probe());
        }
        ex.run(future)
    })
}

/// Works around a false positive in glommio 0.9's IOPOLL probe (see the bench report):
/// glommio decides once per block device, on the first `DmaFile` opened, whether the device
/// supports polled I/O, by reading the first block of *that* file. When that file is empty
/// (a fresh segment) the read stops at EOF without reaching the device and "succeeds", so
/// every later read and write of the device goes to the IOPOLL ring; on a device without
/// poll queues (virtio here) O_DIRECT reads of written data then fail with EOPNOTSUPP
/// (writes into fallocated extents happen to work: the kernel drops the polled flag for
/// them). Opening a non-empty file first makes the probe do real I/O and answer truly.
async fn prime_iopoll_probe() {
    let path = data_root().join(format!("iopoll-probe-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; 4096]).expect("write iopoll probe file");
    let file = glommio::io::DmaFile::open(&path)
        .await
        .expect("open iopoll probe file");
    file.close().await.expect("close iopoll probe file");
    std::fs::remove_file(&path).expect("remove iopoll probe file");
}

/// One batch of 64 records with 1 KiB values (about 66 KiB with the flatbuffers framing).
fn batch() -> BytesMut {
    let mut builder = BatchBuilder::new();
    for i in 0..RECORDS {
        let value = vec![(i % 251) as u8; RECORD_BYTES];
        builder.push(None, &value, 1_700_000_000_000 + i as i64, &[]);
    }
    builder.finish()
}

fn pool(template: &BytesMut, n: u64) -> Vec<BytesMut> {
    (0..n).map(|_| template.clone()).collect()
}

/// Where bench data goes: a real filesystem, not tmpfs (O_DIRECT needs one).
fn data_root() -> PathBuf {
    let root = std::env::var_os("TIDELOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tidelog-bench"));
    std::fs::create_dir_all(&root).expect("create bench data directory");
    assert!(
        !is_tmpfs(&root),
        "{} is on tmpfs, which has no O_DIRECT: set TIDELOG_BENCH_DIR to a real disk",
        root.display()
    );
    root
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer to a
    // zeroed `statfs`, both alive for the duration of the call.
    let stat = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut stat) != 0 {
            return false;
        }
        stat
    };
    stat.f_type == libc::TMPFS_MAGIC
}

/// A fresh, empty directory for one measured run.
fn fresh_dir(name: &str) -> PathBuf {
    thread_local!(static RUN: Cell<u64> = const { Cell::new(0) });
    let n = RUN.with(|r| {
        r.set(r.get() + 1);
        r.get()
    });
    let dir = data_root().join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn open(dir: &Path, config: LogConfig) -> Log {
    PartitionLog::open(DmaStorage, SystemClock, dir, config)
        .await
        .expect("open partition log")
}

async fn delete(log: Log) {
    log.delete().await.expect("delete partition log");
}

/// Counters summed over the measured runs of one benchmark.
#[derive(Default)]
struct Totals {
    appends: Cell<u64>,
    fsyncs: Cell<u64>,
    rolls: Cell<u64>,
}

impl Totals {
    fn add(&self, log: &Log) {
        let stats = log.stats();
        self.appends.set(self.appends.get() + stats.appends);
        self.fsyncs.set(self.fsyncs.get() + stats.fsyncs);
        self.rolls.set(self.rolls.get() + stats.rolls);
    }

    fn report(&self, name: &str) {
        let appends = self.appends.get().max(1);
        eprintln!(
            "{name}: {:.3} fsyncs per append ({} fsyncs / {} appends, {} segment rolls)",
            self.fsyncs.get() as f64 / appends as f64,
            self.fsyncs.get(),
            self.appends.get(),
            self.rolls.get(),
        );
    }
}

/// `iters` sequential appends with `durability`, then `sync()`; returns the timed total.
fn sequential_appends(
    name: &str,
    template: &BytesMut,
    durability: Durability,
    config: &LogConfig,
    iters: u64,
    totals: &Totals,
) -> Duration {
    let dir = fresh_dir(name);
    run(async {
        let log = open(&dir, config.clone()).await;
        let mut elapsed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let round = left.min(ROUND_BATCHES);
            let batches = pool(template, round);
            let start = Instant::now();
            for batch in batches {
                log.append(batch, durability).await.expect("append");
            }
            log.sync().await.expect("sync");
            elapsed += start.elapsed();
            left -= round;
        }
        totals.add(&log);
        delete(log).await;
        elapsed
    })
}

/// `tasks` concurrent appenders, each doing `iters` Synced appends; returns the timed total.
fn group_commit(template: &BytesMut, tasks: u64, iters: u64, totals: &Totals) -> Duration {
    let dir = fresh_dir("group-commit");
    run(async {
        let log = Rc::new(open(&dir, LogConfig::default()).await);
        let mut elapsed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let round = left.min((ROUND_BATCHES / tasks).max(1));
            let pools: Vec<_> = (0..tasks).map(|_| pool(template, round)).collect();
            let start = Instant::now();
            let handles: Vec<_> = pools
                .into_iter()
                .map(|batches| {
                    let log = Rc::clone(&log);
                    glommio::spawn_local(async move {
                        for batch in batches {
                            log.append(batch, Durability::Synced).await.expect("append");
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.await;
            }
            elapsed += start.elapsed();
            left -= round;
        }
        totals.add(&log);
        let log = Rc::try_unwrap(log).unwrap_or_else(|_| panic!("appender tasks finished"));
        delete(log).await;
        elapsed
    })
}

fn appends(c: &mut Criterion) {
    let template = batch();
    let len = template.len() as u64;
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(len));
    // `no_sync_prealloc_1GiB` is `no_sync` with one fallocate for the whole segment instead
    // of one per 32 MiB (`LogConfig::preallocate_bytes`): it measures what the preallocation
    // step costs the write pipeline (see the report in `storage-report.sh`'s output).
    let whole_segment = LogConfig {
        preallocate_bytes: LogConfig::default().segment_bytes,
        ..LogConfig::default()
    };
    for (name, durability, config) in [
        ("no_sync", Durability::Buffered, LogConfig::default()),
        ("fdatasync_each", Durability::Synced, LogConfig::default()),
        ("no_sync_prealloc_1GiB", Durability::Buffered, whole_segment),
    ] {
        let totals = Totals::default();
        group.bench_function(format!("64KiB_batches_1KiB_records/{name}"), |b| {
            b.iter_custom(|iters| {
                sequential_appends(name, &template, durability, &config, iters, &totals)
            })
        });
        totals.report(&format!("append/64KiB_batches_1KiB_records/{name}"));
    }
    for tasks in [1u64, 4, 16] {
        // One iteration: one Synced append by each of the `tasks` appenders.
        group.throughput(Throughput::Bytes(len * tasks));
        let totals = Totals::default();
        group.bench_function(format!("group_commit/{tasks}"), |b| {
            b.iter_custom(|iters| group_commit(&template, tasks, iters, &totals))
        });
        totals.report(&format!("append/group_commit/{tasks}"));
    }
    group.finish();
}

/// A log holding `bytes` of batches, synced, with a batch cache of `cache_bytes`.
fn filled_log(name: &str, template: &BytesMut, bytes: u64, cache_bytes: usize) -> Log {
    let dir = fresh_dir(name);
    let config = LogConfig::default();
    run(async {
        let shared = tidelog_engine::log::LogResources::standalone(cache_bytes);
        let log = PartitionLog::open_with(DmaStorage, SystemClock, &dir, config, shared)
            .await
            .expect("open partition log");
        for batch in pool(template, bytes.div_ceil(template.len() as u64)) {
            log.append(batch, Durability::Buffered)
                .await
                .expect("append");
        }
        log.sync().await.expect("sync");
        log
    })
}

fn cache_ptrs(chunks: &[ReadChunk<tidelog_engine::io::dma::DmaBytes>]) -> Vec<*const u8> {
    chunks
        .iter()
        .map(|chunk| match chunk {
            ReadChunk::Cache(bytes) => bytes.as_ptr(),
            ReadChunk::Split { head, .. } => head.as_ptr(),
            // The cache serves adopted write buffers as storage buffers.
            ReadChunk::Disk(buf) => buf.as_ptr(),
        })
        .collect()
}

fn reads(c: &mut Criterion) {
    let template = batch();
    let len = template.len();
    // Whole batches up to 1 MiB: a read starting at a batch returns this many.
    let per_read = (READ_MAX_BYTES / len) as u64;
    let read_bytes = per_read * len as u64;
    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(read_bytes));

    // Batch cache: 16 MiB of recent batches, all of them cached.
    let log = filled_log("read-cache", &template, 16 << 20, 64 << 20);
    let batches = log.log_end() / RECORDS as u64;
    let starts: Vec<u64> = (0..batches - per_read)
        .map(|b| b * RECORDS as u64)
        .collect();
    run(async {
        // Zero-copy: two reads of the same offset hand out the cache's own bytes.
        let first = log.read(starts[0], READ_MAX_BYTES).await.expect("read");
        let second = log.read(starts[0], READ_MAX_BYTES).await.expect("read");
        assert_eq!(first.len() as u64, read_bytes);
        let (a, b) = (cache_ptrs(&first.chunks), cache_ptrs(&second.chunks));
        assert_eq!(
            a, b,
            "batch-cache reads must share the cached bytes, not copy"
        );
        eprintln!(
            "read/batch_cache: zero-copy check passed ({} chunks, same addresses on two reads, first {:?})",
            a.len(),
            a[0]
        );
    });
    group.bench_function("batch_cache", |b| {
        b.iter_custom(|iters| {
            run(async {
                let start = Instant::now();
                for i in 0..iters {
                    let offset = starts[i as usize % starts.len()];
                    let read = log.read(offset, READ_MAX_BYTES).await.expect("read");
                    black_box(read.len());
                }
                start.elapsed()
            })
        })
    });
    let stats = log.stats();
    assert_eq!(stats.disk_reads, 0, "batch-cache bench hit the disk");
    run(delete(log));

    // Disk: 64 MiB of batches and a 64 KiB batch cache, read sequentially from the start as a
    // lagging consumer would (wrapping before the cached tail).
    let log = filled_log("read-disk", &template, 64 << 20, 64 << 10);
    let wrap_at = log.log_end() - 4 * per_read * RECORDS as u64;
    let next = Cell::new(0u64);
    group.bench_function("disk", |b| {
        b.iter_custom(|iters| {
            run(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let read = log.read(next.get(), READ_MAX_BYTES).await.expect("read");
                    debug_assert!(matches!(read.chunks[..], [ReadChunk::Disk(_)]));
                    black_box(read.len());
                    next.set(if read.next_offset >= wrap_at {
                        0
                    } else {
                        read.next_offset
                    });
                }
                start.elapsed()
            })
        })
    });
    let stats = log.stats();
    assert_eq!(
        stats.cache_reads, 0,
        "disk bench was served by the tail cache"
    );
    run(delete(log));
    group.finish();
}

/// One small read (one batch) from each of 64 sealed 1 MiB segments in turn: with a file
/// cache holding them all (every read finds its file open) and with a cache of one (every
/// read opens its segment's file and closes another): what `--max-open-segment-files` costs
/// a consumer far behind when it is too small.
fn sealed_reads(c: &mut Criterion) {
    use tidelog_engine::log::files::SegmentFiles;
    let template = batch();
    let mut group = c.benchmark_group("read_sealed_segment");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(template.len() as u64));
    for (name, capacity) in [("file_cached", 1024), ("file_opened_each_read", 1)] {
        let dir = fresh_dir(&format!("read-sealed-{capacity}"));
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let files = SegmentFiles::new(capacity);
        let log = run(async {
            let shared = tidelog_engine::log::LogResources {
                files,
                memory: tidelog_engine::log::memory::ReadMemory::new(256 << 20),
                cache: tidelog_engine::log::cache::BatchCache::new(64 << 10),
            };
            let log = PartitionLog::open_with(DmaStorage, SystemClock, &dir, config, shared)
                .await
                .expect("open partition log");
            for batch in pool(&template, (64u64 << 20).div_ceil(template.len() as u64)) {
                log.append(batch, Durability::Buffered)
                    .await
                    .expect("append");
            }
            log.sync().await.expect("sync");
            log
        });
        // The first offset of every sealed segment but the last few (the tail cache's).
        let per_segment = ((1u64 << 20) / template.len() as u64).max(1) * RECORDS as u64;
        let starts: Vec<u64> = (0..60).map(|s| s * per_segment).collect();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let offset = starts[i as usize % starts.len()];
                        let read = log.read(offset, 1).await.expect("read");
                        black_box(read.len());
                    }
                    start.elapsed()
                })
            })
        });
        let stats = log.segment_files().stats();
        eprintln!("read_sealed_segment/{name}: {stats:?}");
        assert!(stats.open <= capacity);
        run(delete(log));
    }
    group.finish();
}

criterion_group!(benches, appends, reads, sealed_reads);
criterion_main!(benches);
