//! Building glommio executors that fit the process's locked-memory limit.
//!
//! glommio registers one region of "io memory" with each io_uring ring; the kernel charges it to
//! `RLIMIT_MEMLOCK`. A request above the limit makes registration fail (glommio then falls back
//! to unregistered buffers), and below 512 KiB glommio refuses to start at all. Each executor
//! registers the region with its three rings (main, latency, poll) and each registration is
//! charged, so we size the region to a quarter of the limit's share per executor, capped at
//! [`IO_MEMORY_MAX`]. Below [`IO_MEMORY_MIN`] we still ask for the minimum and let glommio fall
//! back to unregistered buffers: glommio 0.9's smallest pool (64 KiB) makes DMA reads fail with
//! EOPNOTSUPP on this kernel, while a failed registration falls back cleanly.

use glommio::{LocalExecutorBuilder, Placement};

/// Largest registered io memory per executor.
pub const IO_MEMORY_MAX: usize = 16 << 20;
/// Smallest locked-memory limit glommio starts with.
pub const MEMLOCK_MIN: u64 = 512 << 10;
/// Smallest io memory we ask for (see the module comment).
pub const IO_MEMORY_MIN: usize = 1 << 20;

/// The process's soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return 0;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    }
}

/// Registered io memory per executor for `executors` executors under `limit` bytes.
pub fn io_memory_for(limit: u64, executors: usize) -> usize {
    let share = limit / 4 / executors.max(1) as u64;
    let share = usize::try_from(share).unwrap_or(usize::MAX);
    share.clamp(IO_MEMORY_MIN, IO_MEMORY_MAX)
}

/// Why an executor cannot be built here.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The locked-memory limit is below what glommio needs to start.
    #[error(
        "locked-memory limit is {limit} bytes; glommio needs at least {min}: raise it with \
         `ulimit -l unlimited` or LimitMEMLOCK=infinity in the service unit"
    )]
    MemlockTooLow {
        /// The current soft limit.
        limit: u64,
        /// The minimum.
        min: u64,
    },
}

/// A glommio executor builder whose io memory fits the locked-memory limit, for one of
/// `executors` executors that will run at once.
///
/// # Errors
/// [`RuntimeError::MemlockTooLow`] when glommio would refuse to start.
pub fn executor_builder(
    placement: Placement,
    executors: usize,
) -> Result<LocalExecutorBuilder, RuntimeError> {
    let limit = memlock_limit();
    if limit < MEMLOCK_MIN {
        return Err(RuntimeError::MemlockTooLow {
            limit,
            min: MEMLOCK_MIN,
        });
    }
    Ok(LocalExecutorBuilder::new(placement).io_memory(io_memory_for(limit, executors)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_memory_fits_the_limit() {
        assert_eq!(io_memory_for(8 << 20, 1), 2 << 20);
        assert_eq!(io_memory_for(8 << 20, 2), 1 << 20);
        assert_eq!(io_memory_for(u64::MAX, 16), IO_MEMORY_MAX);
        assert_eq!(io_memory_for(512 << 10, 64), IO_MEMORY_MIN);
    }

    #[test]
    fn executor_runs_dma_io_within_the_limit() {
        use crate::io::{dma::DmaStorage, OpenMode, Storage, StorageFile};
        // Beside the test binary: a real filesystem (O_DIRECT does not work on tmpfs).
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.with_file_name("runtime-smoke");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let builder = executor_builder(Placement::Unbound, 1).expect("memlock sufficient");
        let handle = builder
            .spawn(move || async move {
                let path = dir.join("smoke.bin");
                let file = DmaStorage
                    .open(&path, OpenMode::Create)
                    .await
                    .expect("open");
                let mut buf = file.alloc_write_buf(4096);
                buf.as_mut().fill(7);
                file.write_at(buf, 0).await.expect("write");
                file.fdatasync().await.expect("fdatasync");
                let read = file.read_at(100, 10).await.expect("read");
                assert_eq!(&read[..], &[7u8; 10]);
            })
            .expect("spawn executor");
        handle.join().expect("executor thread");
    }

    #[test]
    fn housekeeping_flushes_buffered_appends_by_interval() {
        use crate::io::{dma::DmaStorage, SystemClock};
        use crate::log::{Durability, PartitionLog};
        use crate::LogConfig;
        use std::rc::Rc;
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.with_file_name("housekeeping-flush");
        let _ = std::fs::remove_dir_all(&dir);
        let builder = executor_builder(Placement::Unbound, 1).expect("memlock sufficient");
        let handle = builder
            .spawn(move || async move {
                let config = LogConfig {
                    flush_interval_ms: 20,
                    preallocate_bytes: 1 << 20,
                    ..LogConfig::default()
                };
                let log = PartitionLog::open(DmaStorage, SystemClock, &dir, config)
                    .await
                    .expect("open");
                let log = Rc::new(log);
                let mut builder = tidelog_wire::batch::BatchBuilder::new();
                builder.push(None, b"buffered", 0, &[]);
                log.append(builder.finish(), Durability::Buffered)
                    .await
                    .expect("append");
                assert_eq!(
                    log.synced_offset(),
                    0,
                    "a buffered append is not synced at once"
                );
                let every = Housekeeping {
                    flush_check: std::time::Duration::from_millis(5),
                    ..Housekeeping::default()
                };
                let task = spawn_housekeeping(Rc::clone(&log), every);
                glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                assert_eq!(log.synced_offset(), 1, "the interval policy synced it");
                log.close().await.expect("close");
                task.await;
            })
            .expect("spawn executor");
        handle.join().expect("executor thread");
    }
}

/// How often a partition's background housekeeping runs.
#[derive(Debug, Clone, Copy)]
pub struct Housekeeping {
    /// Check the flush policy (bytes or interval) this often.
    pub flush_check: std::time::Duration,
    /// Enforce retention this often.
    pub retention_check: std::time::Duration,
    /// Checkpoint the recovery point this often (when it moved): the window in which damage
    /// to just-fdatasynced data would be taken for a torn tail and cut at recovery.
    pub recovery_point_checkpoint: std::time::Duration,
    /// Snapshot the idempotent-producer state this often (when it changed and everything
    /// appended is synced), so an open after a crash reads only the batches after it.
    pub producer_state_checkpoint: std::time::Duration,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Housekeeping {
            flush_check: std::time::Duration::from_millis(10),
            retention_check: std::time::Duration::from_secs(30),
            recovery_point_checkpoint: std::time::Duration::from_secs(1),
            producer_state_checkpoint: std::time::Duration::from_secs(60),
        }
    }
}

/// Runs a partition's background duties on the current glommio executor until the log is
/// closed: finishes sealing a rolled segment (trimming, index files), makes buffered appends
/// durable when the flush policy asks for it, and deletes segments past retention. Errors are logged (a poisoned log stops the task: it refuses all
/// further writes anyway).
pub fn spawn_housekeeping<S, C>(
    log: std::rc::Rc<crate::log::PartitionLog<S, C>>,
    every: Housekeeping,
) -> glommio::task::JoinHandle<()>
where
    S: crate::io::Storage,
    C: crate::io::Clock,
{
    glommio::spawn_local(async move {
        let mut since_retention = std::time::Duration::ZERO;
        let mut since_checkpoint = std::time::Duration::ZERO;
        let mut since_producer_snapshot = std::time::Duration::ZERO;
        loop {
            glommio::timer::sleep(every.flush_check).await;
            if log.is_closed() {
                return;
            }
            log.seal_pending().await;
            if let Err(e) = log.maybe_flush().await {
                let (topic, partition) = crate::log::topic_partition(log.dir());
                tracing::error!(%topic, %partition, error = %e, "background flush failed");
                return;
            }
            since_checkpoint += every.flush_check;
            if since_checkpoint >= every.recovery_point_checkpoint {
                since_checkpoint = std::time::Duration::ZERO;
                log.checkpoint_recovery_point().await;
            }
            since_producer_snapshot += every.flush_check;
            if since_producer_snapshot >= every.producer_state_checkpoint {
                // Retried at the next tick while unsynced appends keep it from being taken.
                if log
                    .checkpoint_producer_state(crate::log::SnapshotWhen::Stale)
                    .await
                    || !log.producer_snapshot_stale()
                {
                    since_producer_snapshot = std::time::Duration::ZERO;
                }
            }
            since_retention += every.flush_check;
            if since_retention >= every.retention_check {
                since_retention = std::time::Duration::ZERO;
                if let Err(e) = log.enforce_retention().await {
                    let (topic, partition) = crate::log::topic_partition(log.dir());
                    tracing::warn!(%topic, %partition, error = %e, "retention failed");
                }
            }
        }
    })
    .detach()
}
