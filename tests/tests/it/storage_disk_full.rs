//! Running out of disk space: appends fail with `DiskFull`, nothing acknowledged is lost,
//! the partition stays usable (not poisoned) and reopens with everything in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use tidelog_engine::io::dma::DmaStorage;
use tidelog_engine::io::sim::SimDisk;
use tidelog_engine::io::{Clock, Storage, SystemClock};
use tidelog_engine::{Durability, LogConfig, LogError, PartitionLog};
use tidelog_tests::{run_glommio, scan_log, test_seed, LogScan, Oracle, Shape};

use crate::test_dir;

/// Size of the filesystem (or simulated disk).
const DISK_BYTES: u64 = 32 << 20;
/// The disk must be full after at most this many 64 KiB appends (it holds ~512).
const MAX_APPENDS: u64 = 700;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        preallocate_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

/// Appends synced 64 KiB batches until one fails with `DiskFull`; returns the log end after
/// the last acknowledged append and how many were acknowledged.
async fn fill<S: Storage, C: Clock>(log: &PartitionLog<S, C>, oracle: &Oracle) -> (u64, u64) {
    let mut acked_end = log.log_end();
    for seq in 0..MAX_APPENDS {
        match log.append(oracle.build(seq), Durability::Synced).await {
            Ok(info) => {
                assert_eq!(info.base_offset, acked_end, "appends are back to back");
                acked_end = info.last_offset + 1;
            }
            Err(LogError::DiskFull { path }) => {
                assert!(
                    log.poisoned().is_none(),
                    "disk full must not poison the partition: {:?}",
                    log.poisoned()
                );
                // Still full, still refused the same way, still not poisoned.
                let again = log.append(oracle.build(seq), Durability::Synced).await;
                assert!(
                    matches!(again, Err(LogError::DiskFull { .. })),
                    "second append on a full disk gave {again:?}"
                );
                assert!(log.poisoned().is_none(), "{:?}", log.poisoned());
                assert_eq!(
                    log.log_end(),
                    acked_end,
                    "a refused append changed the log end"
                );
                println!(
                    "disk full after {seq} appends ({acked_end} offsets, {} segments) at {}",
                    log.segment_count(),
                    path.display()
                );
                return (acked_end, seq);
            }
            Err(e) => panic!("append {seq} failed with {e} instead of DiskFull"),
        }
    }
    panic!("the disk never filled up after {MAX_APPENDS} appends of 64 KiB");
}

fn check_scan(scan: &LogScan, acked_end: u64, acked: u64) {
    assert_eq!(
        scan.log_end, acked_end,
        "exactly the acknowledged batches are in the log"
    );
    assert_eq!(scan.batches.len() as u64, acked);
}

/// Unmounts the filesystem when dropped, even when the test panics.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        // Files glommio closes lazily may still be open when the executor has gone: fall
        // back to a lazy unmount, which detaches the filesystem now and frees it later.
        let ok = Command::new("umount")
            .arg(&self.0)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
}

fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes and loop-mounts a small ext4 filesystem under `root`.
fn mount_small_ext4(root: &Path) -> Result<Mount, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let image = root.join("disk.img");
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(DISK_BYTES))
        .map_err(|e| format!("create image: {e}"))?;
    run_cmd(Command::new("mkfs.ext4").arg("-q").arg("-F").arg(&image))?;
    run_cmd(
        Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&mnt),
    )?;
    Ok(Mount(mnt))
}

#[test]
fn disk_full_on_real_ext4() {
    let root = test_dir("disk-full");
    let mount = match mount_small_ext4(root.path()) {
        Ok(mount) => mount,
        Err(reason) => {
            println!("SKIPPED real disk-full: {reason}; running the simulated disk instead");
            simulated_disk_full(test_seed("disk_full_fallback"));
            return;
        }
    };
    let dir = mount.0.join("partition");
    let seed = test_seed("disk_full_on_real_ext4");

    // Writes and read-backs run on separate executors, as they would across a restart.
    let fill_dir = dir.clone();
    let (acked_end, acked) = run_glommio(move || async move {
        let oracle = Oracle::with_shape(seed, Shape::Fixed64K);
        let log = PartitionLog::open(DmaStorage, SystemClock, &fill_dir, config())
            .await
            .expect("open");
        let filled = fill(&log, &oracle).await;
        log.close().await.expect("close after disk full");
        filled
    });
    assert!(acked > 0, "nothing fitted on the disk");
    for round in 0..2 {
        let scan_dir = dir.clone();
        let scan = run_glommio(move || async move {
            let mut oracle = Oracle::with_shape(seed, Shape::Fixed64K);
            let log = PartitionLog::open(DmaStorage, SystemClock, &scan_dir, config())
                .await
                .unwrap_or_else(|e| panic!("reopen of a full disk failed: {e}"));
            assert!(log.poisoned().is_none());
            let scan = scan_log(&log, &mut oracle, Some(0))
                .await
                .unwrap_or_else(|e| panic!("acknowledged batches unreadable: {e:#}"));
            log.close().await.expect("close");
            scan
        });
        check_scan(&scan, acked_end, acked);
        println!(
            "reopen {round}: {} batches, {} bytes, {} segments intact",
            scan.batches.len(),
            scan.bytes,
            scan.segments
        );
    }
    drop(mount);
}

fn simulated_disk_full(seed: u64) {
    let disk = SimDisk::new(seed);
    disk.set_capacity(Some(DISK_BYTES));
    let dir = Path::new("/sim/partition");
    let mut oracle = Oracle::with_shape(seed, Shape::Fixed64K);
    futures_lite::future::block_on(async {
        let log = PartitionLog::open(disk.clone(), SystemClock, dir, config())
            .await
            .expect("open");
        let (acked_end, acked) = fill(&log, &oracle).await;
        assert!(acked > 0, "nothing fitted on the disk");
        assert!(disk.allocated_bytes() <= DISK_BYTES);
        let scan = scan_log(&log, &mut oracle, Some(0))
            .await
            .unwrap_or_else(|e| panic!("acknowledged batches unreadable: {e:#}"));
        check_scan(&scan, acked_end, acked);
        log.close().await.expect("close");
        drop(log);
        let log = PartitionLog::open(disk.clone(), SystemClock, dir, config())
            .await
            .unwrap_or_else(|e| panic!("reopen of a full disk failed: {e}"));
        assert!(log.poisoned().is_none());
        let scan = scan_log(&log, &mut oracle, Some(0)).await.expect("scan");
        check_scan(&scan, acked_end, acked);
        println!(
            "simulated disk full: {acked} appends, {} bytes, {} segments intact after reopen",
            scan.bytes, scan.segments
        );
    });
}

#[test]
fn disk_full_on_simulated_disk() {
    simulated_disk_full(test_seed("disk_full_on_simulated_disk"));
}
