//! Damaged segment files on a real filesystem: flipped bytes and cut files must never be
//! served, and recovery must keep exactly the intact prefix.

use std::path::{Path, PathBuf};

use tidelog_engine::io::dma::DmaStorage;
use tidelog_engine::io::sim::SimRng;
use tidelog_engine::io::SystemClock;
use tidelog_engine::{Durability, LogConfig, LogError, PartitionLog};
use tidelog_tests::{
    file_batches, flip_byte, run_glommio, scan_log, test_seed, FileBatch, LogScan, Oracle, Shape,
};
use tidelog_wire::batch::HEADER_LEN;

use crate::test_dir;

type Log = PartitionLog<DmaStorage, SystemClock>;

fn active_config() -> LogConfig {
    LogConfig {
        preallocate_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

fn small_segments_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        preallocate_bytes: 64 << 10,
        max_batch_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

/// Leaves the closed log as a crash would, so that damage to the end of the active segment
/// reads as what it models, a torn tail: no recovery point covering it (with the point in
/// place the same bytes are damage to durable data, which recovery keeps) and no
/// clean-shutdown record (a crash never leaves one; with it the open would not scan).
fn as_after_a_crash(dir: &Path) {
    std::fs::remove_file(dir.join(tidelog_engine::log::RECOVERY_POINT_FILE))
        .expect("a closed log has a recovery point");
    std::fs::remove_file(dir.join(tidelog_engine::log::CLEAN_SHUTDOWN_FILE))
        .expect("a cleanly closed log has a clean-shutdown record");
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join(format!("{:020}.log", 0))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// Appends batches `seqs` (synced) and checks they land back to back from `log_end`.
async fn append_seqs(log: &Log, oracle: &Oracle, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let expected_base = log.log_end();
        let info = log
            .append(oracle.build(seq), Durability::Synced)
            .await
            .unwrap_or_else(|e| panic!("append seq {seq}: {e}"));
        assert_eq!(
            info.base_offset, expected_base,
            "seq {seq} landed elsewhere"
        );
    }
}

/// Opens the log in its own executor, appends `seqs` (synced, each landing at the log end)
/// and closes it. Writing and reading back happen on separate executors, as they would across
/// a broker restart.
fn write_phase(dir: &Path, seed: u64, seqs: std::ops::Range<u64>, config: LogConfig) {
    let dir = dir.to_path_buf();
    run_glommio(move || async move {
        let oracle = Oracle::new(seed);
        let log = open(&dir, config).await;
        append_seqs(&log, &oracle, seqs).await;
        log.close().await.expect("close");
    });
}

/// Opens (recovers) the log in its own executor, scans it whole, closes it.
fn read_phase(dir: &Path, seed: u64, config: LogConfig) -> LogScan {
    let dir = dir.to_path_buf();
    run_glommio(move || async move {
        let mut oracle = Oracle::new(seed);
        let log = open(&dir, config).await;
        let scan = scan_log(&log, &mut oracle, Some(0))
            .await
            .unwrap_or_else(|e| panic!("scanning the recovered log: {e:#}"));
        log.close().await.expect("close");
        scan
    })
}

async fn open(dir: &Path, config: LogConfig) -> Log {
    PartitionLog::open(DmaStorage, SystemClock, dir, config)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// (a) A flipped byte anywhere in the last batch of the active segment. Without a recovery
/// point covering it (a torn tail), recovery cuts the log right before it and the next
/// append takes its offset. With one (the batch was durable: damage, not a torn write), the
/// log keeps its end, the batch's offsets read as corrupt, and the next append takes new
/// offsets (rounds alternate).
#[test]
fn flipped_byte_in_last_batch_is_cut_at_recovery() {
    let seed = test_seed("flipped_byte_in_last_batch");
    let mut rng = SimRng::new(seed);
    for round in 0..6 {
        let round_seed = rng.next_u64();
        let batches = 3 + rng.below(15);
        let flip_at = rng.next_u64();
        let mask = 1u8 << rng.below(8);
        let root = test_dir("flip-last");
        let dir = root.path().to_path_buf();
        write_phase(&dir, round_seed, 0..batches, active_config());
        let path = first_segment(&dir);
        let on_disk = file_batches(&std::fs::read(&path).expect("read segment"));
        assert_eq!(on_disk.len() as u64, batches, "batches in the segment file");
        let last = *on_disk.last().expect("a batch");
        let pos = last.pos + flip_at % last.len;
        flip_byte(&path, pos, mask).expect("flip byte");
        if round % 2 == 1 {
            let check_dir = dir.clone();
            run_glommio(move || async move {
                let mut oracle = Oracle::new(round_seed);
                let log = open(&check_dir, active_config()).await;
                assert_eq!(
                    log.log_end(),
                    last.last_offset + 1,
                    "durable offsets are kept (byte {pos} of {last:?})"
                );
                assert!(
                    matches!(
                        log.read(last.base_offset, 1 << 20).await,
                        Err(LogError::Corrupt { .. })
                    ),
                    "the damaged batch reads as corrupt"
                );
                let info = log
                    .append(oracle.build(batches), Durability::Synced)
                    .await
                    .expect("append after recovery");
                assert_eq!(info.base_offset, last.last_offset + 1, "no offset reused");
                let scan = scan_log(&log, &mut oracle, Some(0)).await;
                assert!(scan.is_err(), "a whole scan meets the damaged batch");
                log.close().await.expect("close");
            });
            println!("round {round}: damage below the recovery point kept");
            continue;
        }
        as_after_a_crash(&dir);

        let check_dir = dir.clone();
        run_glommio(move || async move {
            let mut oracle = Oracle::new(round_seed);
            let log = open(&check_dir, active_config()).await;
            assert_eq!(
                log.log_end(),
                last.base_offset,
                "recovery must cut the log at the damaged batch (byte {pos} of {last:?})"
            );
            let scan = scan_log(&log, &mut oracle, Some(0))
                .await
                .unwrap_or_else(|e| panic!("reading the intact prefix: {e:#}"));
            assert_eq!(scan.batches.len() as u64, batches - 1);
            let at_damaged = log.read(last.base_offset, 1 << 20).await.expect("read");
            assert!(at_damaged.is_empty(), "the damaged batch was served");
            // The offset is free again: the batch is appended anew at the same place.
            append_seqs(&log, &oracle, batches - 1..batches).await;
            log.close().await.expect("close");
        });
        let scan = read_phase(&dir, round_seed, active_config());
        assert_eq!(scan.batches.len() as u64, batches);
        assert_eq!(
            scan.batches.last().map(|b| b.base_offset),
            Some(last.base_offset),
            "the re-appended batch took the damaged batch's offset"
        );
        let summary = format!("{batches} batches, flipped byte {pos} of last batch {last:?}");
        println!("round {round}: {summary}");
    }
}

/// Builds a log of several 64 KiB segments, closes it, flips `mask` at the byte
/// `pick(batch)` of a batch in the middle of a sealed segment (not the last), and returns
/// the damaged batch with its segment's index.
fn damage_sealed_segment(
    dir: &Path,
    rng: &mut SimRng,
    oracle_seed: u64,
    pick: fn(&FileBatch, &mut SimRng) -> u64,
) -> (FileBatch, usize, u64) {
    let build_dir = dir.to_path_buf();
    let appended = run_glommio(move || async move {
        let oracle = Oracle::with_shape(oracle_seed, Shape::Small);
        let log = open(&build_dir, small_segments_config()).await;
        let mut seq = 0;
        while log.segment_count() < 6 {
            append_seqs(&log, &oracle, seq..seq + 1).await;
            seq += 1;
        }
        log.close().await.expect("close");
        seq
    });
    let segments = segment_files(dir);
    assert!(segments.len() >= 6, "expected several segments");
    let victim = rng.below(segments.len() as u64 - 1) as usize;
    let bytes = std::fs::read(&segments[victim]).expect("read segment");
    let on_disk = file_batches(&bytes);
    assert!(on_disk.len() >= 3, "a sealed segment holds several batches");
    assert_eq!(
        on_disk.iter().map(|b| b.len).sum::<u64>(),
        bytes.len() as u64,
        "a sealed segment is cut to its batches"
    );
    let batch = on_disk[on_disk.len() / 2];
    let pos = pick(&batch, rng);
    flip_byte(&segments[victim], pos, 1 << rng.below(8)).expect("flip byte");
    (batch, victim, appended)
}

/// Reads every batch one at a time (max_bytes 1) and returns, per offset, the result.
async fn read_each(log: &Log, oracle: &mut Oracle, skip: &FileBatch) -> usize {
    let mut offset = log.log_start();
    let mut read = 0;
    while offset < log.log_end() {
        if offset == skip.base_offset {
            // Its length is known from the intact neighbours: the next batch's offset.
            offset = next_after(log, skip.base_offset).await;
            continue;
        }
        let got = log
            .read(offset, 1)
            .await
            .unwrap_or_else(|e| panic!("read of intact offset {offset} failed: {e}"));
        let chunk = got.chunks[0].to_vec();
        let info = oracle
            .check(&chunk[..tidelog_tests::batch_len(&chunk) as usize], offset)
            .unwrap_or_else(|e| panic!("batch at {offset}: {e:#}"));
        offset = info.last_offset + 1;
        read += 1;
    }
    read
}

/// The base offset of the batch after the one at `base`, from the segment files.
async fn next_after(log: &Log, base: u64) -> u64 {
    for path in segment_files(log.dir()) {
        let bytes = std::fs::read(&path).expect("read segment");
        let batches = file_batches(&bytes);
        if let Some(i) = batches.iter().position(|b| b.base_offset == base) {
            return match batches.get(i + 1) {
                Some(next) => next.base_offset,
                None => panic!("damaged batch is the last of its segment"),
            };
        }
    }
    panic!("batch {base} not found in any segment file");
}

/// (b) A flipped byte in the payload of a batch in a sealed segment: reading that offset
/// fails with `Corrupt`, every other batch still reads fine.
#[test]
fn flipped_byte_in_sealed_segment_is_reported_corrupt() {
    let seed = test_seed("flipped_byte_in_sealed_segment");
    let mut rng = SimRng::new(seed);
    for round in 0..3 {
        let root = test_dir("flip-sealed");
        let oracle_seed = rng.next_u64();
        let (damaged, victim, appended) =
            damage_sealed_segment(root.path(), &mut rng, oracle_seed, |b, rng| {
                b.pos + HEADER_LEN as u64 + rng.below(b.len - HEADER_LEN as u64)
            });
        let dir = root.path().to_path_buf();
        let read = run_glommio(move || async move {
            let mut oracle = Oracle::with_shape(oracle_seed, Shape::Small);
            let log = open(&dir, small_segments_config()).await;
            let result = log.read(damaged.base_offset, 1 << 20).await;
            assert!(
                matches!(result, Err(LogError::Corrupt { .. })),
                "reading damaged batch {damaged:?} gave {result:?}"
            );
            let read = read_each(&log, &mut oracle, &damaged).await;
            log.close().await.expect("close");
            read
        });
        assert_eq!(read as u64, appended - 1, "every other batch reads back");
        println!(
            "round {round}: damaged {damaged:?} in segment {victim}, {read} other batches read"
        );
    }
}

/// (c) The active segment cut at a random byte: recovery keeps exactly the batches that lie
/// wholly before the cut, and appending continues right after them.
#[test]
fn cut_active_segment_recovers_to_last_whole_batch() {
    let seed = test_seed("cut_active_segment");
    let mut rng = SimRng::new(seed);
    for round in 0..8 {
        let round_seed = rng.next_u64();
        let batches = 2 + rng.below(20);
        let cut_pick = rng.next_u64();
        let root = test_dir("cut");
        let dir = root.path().to_path_buf();
        write_phase(&dir, round_seed, 0..batches, active_config());
        let path = first_segment(&dir);
        let on_disk = file_batches(&std::fs::read(&path).expect("read segment"));
        assert_eq!(on_disk.len() as u64, batches);
        let data_end = on_disk.last().map_or(0, |b| b.pos + b.len);
        // Mostly inside the data, sometimes in the zero padding after it.
        let cut = cut_pick % (data_end + 8192);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open segment");
        file.set_len(cut).expect("cut segment");
        file.sync_all().expect("sync");
        drop(file);
        as_after_a_crash(&dir);
        let whole = on_disk.iter().filter(|b| b.pos + b.len <= cut).count();
        let expected_end = on_disk.get(whole).map_or_else(
            || on_disk.last().map_or(0, |b| b.last_offset + 1),
            |b| b.base_offset,
        );

        let scan = read_phase(&dir, round_seed, active_config());
        assert_eq!(
            scan.log_end, expected_end,
            "cut at byte {cut}: log must end after the last whole batch"
        );
        assert_eq!(scan.batches.len(), whole, "cut at byte {cut}");
        let next = whole as u64;
        write_phase(&dir, round_seed, next..next + 2, active_config());
        let rescan = read_phase(&dir, round_seed, active_config());
        assert_eq!(
            rescan.batches.len(),
            whole + 2,
            "appends continue after the cut"
        );
        let summary = format!("{batches} batches ({data_end} bytes), cut at {cut}: {whole} kept");
        println!("round {round}: {summary}");
    }
}
