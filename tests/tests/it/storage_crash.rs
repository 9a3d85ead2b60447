//! Crash consistency: `kill -9` a process appending to a partition log at random moments,
//! then recover the log and check what survived.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidelog_engine::io::dma::DmaStorage;
use tidelog_engine::io::sim::SimRng;
use tidelog_engine::io::SystemClock;
use tidelog_engine::PartitionLog;
use tidelog_tests::{crash_config, run_glommio, scan_log, test_seed, LogScan, Oracle};

use crate::test_dir;

/// Kill/recover cycles (override with `TIDELOG_CRASH_CYCLES`).
const CYCLES: usize = 25;

/// An acknowledged (synced) append, as the child reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    base: u64,
    last: u64,
    seq: u64,
}

/// What the child printed before it died.
#[derive(Debug, Default)]
struct ChildOutput {
    /// `log_end` of the log as the child recovered it.
    start: Option<(u64, u64)>,
    acks: Vec<Ack>,
}

fn parse_output(stdout: impl Read) -> ChildOutput {
    let mut out = ChildOutput::default();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // A line cut by the kill is not an acknowledgement.
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 {
            fields[i]
                .parse()
                .unwrap_or_else(|_| panic!("bad child line {line:?}"))
        };
        match fields[0] {
            "START" if fields.len() == 3 => out.start = Some((num(1), num(2))),
            "ACK" if fields.len() == 4 => out.acks.push(Ack {
                base: num(1),
                last: num(2),
                seq: num(3),
            }),
            _ => panic!("unexpected child line {line:?}"),
        }
    }
    out
}

/// Waits until no file in `dir` has changed for 100 ms (at most 5 s). A killed process's
/// io_uring ring is torn down by a kernel work item after the process is reaped, so direct
/// writes it had in flight can still land then; a copy taken before they do would be an
/// earlier state than the one the next child recovers.
fn wait_until_files_settle(dir: &Path) {
    let stamp = || -> Vec<(std::ffi::OsString, u64, std::time::SystemTime)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let meta = e.metadata().ok()?;
                        Some((e.file_name(), meta.len(), meta.modified().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = stamp();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = stamp();
        if now == last {
            return;
        }
        last = now;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create snapshot dir");
    for entry in std::fs::read_dir(from).expect("list log dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy log file");
    }
}

/// Opens the log in `dir` (recovering it), scans it whole, closes it.
fn recover_and_scan(dir: PathBuf, mut oracle: Oracle) -> (Oracle, anyhow::Result<LogScan>) {
    run_glommio(move || async move {
        let scan = async {
            let log = PartitionLog::open(DmaStorage, SystemClock, &dir, crash_config()).await?;
            let scan = scan_log(&log, &mut oracle, Some(0)).await;
            log.close().await?;
            scan
        }
        .await;
        (oracle, scan)
    })
}

#[test]
fn kill_9_never_loses_acked_batches_nor_serves_torn_ones() {
    let started = Instant::now();
    let seed = test_seed("storage_crash");
    let cycles = std::env::var("TIDELOG_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CYCLES);
    let mut rng = SimRng::new(seed);
    let mut oracle = Some(Oracle::new(seed));
    let root = test_dir("crash");
    let dir = root.path().join("partition");
    let mut all_acks: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut max_acked_end = 0u64;
    let mut prev_end: Option<u64> = None;
    let mut total_acks = 0usize;
    let mut last_scan = LogScan::default();
    let mut cycles_with_recovered_tail = 0usize;

    for cycle in 0..cycles {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-appender"))
            .arg(&dir)
            .arg(seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crash-appender");
        let stdout = child.stdout.take().expect("child stdout");
        let mut stderr = child.stderr.take().expect("child stderr");
        let out_thread = std::thread::spawn(move || parse_output(stdout));
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let alive_ms = 20 + rng.below(281);
        std::thread::sleep(Duration::from_millis(alive_ms));
        if let Some(status) = child.try_wait().expect("poll child") {
            let stderr = err_thread.join().unwrap_or_default();
            panic!("cycle {cycle}: crash-appender exited by itself ({status}): {stderr}");
        }
        child.kill().expect("kill -9 the child");
        let status = child.wait().expect("reap child");
        assert!(!status.success(), "child was killed, not exited");
        let output = out_thread.join().expect("stdout reader");
        let _ = err_thread.join();
        wait_until_files_settle(&dir);

        // The child recovered exactly what we recovered after the previous kill.
        if let (Some((start_end, start_seq)), Some(prev)) = (output.start, prev_end) {
            assert_eq!(
                start_end, prev,
                "cycle {cycle}: the child recovered log end {start_end}, the test recovered {prev}"
            );
            assert_eq!(
                start_seq,
                last_scan.batches.last().map_or(0, |b| b.seq + 1),
                "cycle {cycle}: the child continues with the wrong seq"
            );
        }
        for ack in &output.acks {
            if let Some(old) = all_acks.insert(ack.base, *ack) {
                panic!(
                    "cycle {cycle}: offset {} acknowledged twice: {old:?} and {ack:?}",
                    ack.base
                );
            }
            max_acked_end = max_acked_end.max(ack.last + 1);
        }
        total_acks += output.acks.len();

        // Most cycles check a copy, so that the child recovers the original itself; every
        // fourth recovers in place.
        let in_place = cycle % 4 == 3;
        let snapshot = root.path().join(format!("snapshot-{cycle}"));
        let check_dir = if in_place {
            dir.clone()
        } else {
            copy_dir(&dir, &snapshot);
            snapshot.clone()
        };
        let (back, scan) = recover_and_scan(check_dir, oracle.take().expect("oracle"));
        oracle = Some(back);
        let scan = scan.unwrap_or_else(|e| panic!("cycle {cycle}: recovered log is bad: {e:#}"));
        if !in_place {
            std::fs::remove_dir_all(&snapshot).expect("remove snapshot");
        }

        assert_eq!(scan.log_start, 0, "cycle {cycle}: nothing is ever deleted");
        assert!(
            scan.log_end >= max_acked_end,
            "cycle {cycle}: log end {} is below the highest acknowledged offset + 1 {max_acked_end}",
            scan.log_end
        );
        let by_base: BTreeMap<u64, _> = scan.batches.iter().map(|b| (b.base_offset, *b)).collect();
        for ack in all_acks.values() {
            let found = by_base.get(&ack.base).unwrap_or_else(|| {
                panic!("cycle {cycle}: acknowledged batch {ack:?} is not at its offset")
            });
            assert_eq!(
                (found.last_offset, found.seq),
                (ack.last, ack.seq),
                "cycle {cycle}: acknowledged batch {ack:?} was replaced by {found:?}"
            );
        }
        if let Some(prev) = prev_end {
            if scan.log_end < prev {
                panic!(
                    "cycle {cycle}: log end went back from {prev} to {}",
                    scan.log_end
                );
            }
        }
        if output.start.is_some() && scan.log_end > prev_end.unwrap_or(0) {
            cycles_with_recovered_tail += 1;
        }
        println!(
            "cycle {cycle:2}: alive {alive_ms:3} ms, {:4} acks, log end {:6}, {:4} batches, {:9} bytes, {} segments{}",
            output.acks.len(),
            scan.log_end,
            scan.batches.len(),
            scan.bytes,
            scan.segments,
            if in_place { " (recovered in place)" } else { "" }
        );
        prev_end = Some(scan.log_end);
        last_scan = scan;
    }

    println!(
        "storage_crash: {cycles} cycles, {total_acks} acks, {} batches, {} bytes, {} segments, {:.1} s",
        last_scan.batches.len(),
        last_scan.bytes,
        last_scan.segments,
        started.elapsed().as_secs_f64()
    );
    assert!(total_acks > 0, "the child never acknowledged an append");
    assert!(
        cycles_with_recovered_tail > 0,
        "no cycle appended anything: the test proves nothing"
    );
    assert!(
        last_scan.segments > 1,
        "the log never rolled a segment: make the test write more"
    );
}
