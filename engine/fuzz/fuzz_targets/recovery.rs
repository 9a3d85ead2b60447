//! Recovery against damaged files: a partition log is written on the simulated disk, closed
//! cleanly or crashed, then its segment, index and recovery-point files are damaged by the
//! input (bits flipped, files cut or extended); reopening must never panic, and whatever is
//! then read must be whole batches that pass their checks.
//!
//! Input: byte 0 = batches to write (1..=64), byte 1 = how the writer stops (bit 0: crash
//! instead of close, bit 1: sync before), then 4-byte edits: file index, position (u16 LE,
//! scaled to the file), and a byte whose low 3 bits pick the bit to flip (0xFF: cut the
//! file at that position instead).
#![no_main]

use std::path::Path;

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use tidelog_engine::io::sim::{SimClock, SimDisk};
use tidelog_engine::{Durability, LogConfig, PartitionLog};
use tidelog_wire::batch::{verify, BatchBuilder, VerifyLimits};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_batch_bytes: 16 << 10,
        preallocate_bytes: 64 << 10,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let dir = Path::new("/d/t/0");
    let disk = SimDisk::new(u64::from(data[0]) << 8 | u64::from(data[1]));
    let batches = usize::from(data[0] % 64) + 1;
    block_on(async {
        let Ok(log) = PartitionLog::open(disk.clone(), SimClock::new(1_000), dir, config()).await
        else {
            return;
        };
        for i in 0..batches {
            let mut builder = BatchBuilder::new();
            let value = vec![b'a' + (i % 26) as u8; 100 + (i * 997) % 5000];
            builder.push(Some(b"k"), &value, 1_000 + i as i64, &[]);
            let durability = if i % 3 == 0 {
                Durability::Synced
            } else {
                Durability::Buffered
            };
            if log.append(builder.finish(), durability).await.is_err() {
                return;
            }
        }
        if data[1] & 2 != 0 {
            let _ = log.sync().await;
        }
        if data[1] & 1 == 0 {
            let _ = log.close().await;
        }
    });
    if data[1] & 1 != 0 {
        disk.crash();
    }
    let files = disk.file_paths();
    if files.is_empty() {
        return;
    }
    for edit in data[2..].chunks_exact(4) {
        let path = &files[usize::from(edit[0]) % files.len()];
        let len = disk.file_len(path).unwrap_or(0);
        let at = usize::from(u16::from_le_bytes([edit[1], edit[2]]));
        if edit[3] == 0xFF {
            disk.set_file_len(path, at % (len + 4097));
        } else if len > 0 {
            disk.flip_bit(path, at % len, edit[3] & 7);
        }
    }
    block_on(async {
        let Ok(log) = PartitionLog::open(disk.clone(), SimClock::new(2_000), dir, config()).await
        else {
            return;
        };
        let limits = VerifyLimits::default();
        let mut offset = log.log_start();
        let mut reads = 0;
        while offset < log.log_end() && reads < 500 {
            reads += 1;
            match log.read(offset, 64 << 10).await {
                Ok(read) => {
                    for chunk in &read.chunks {
                        let bytes = chunk.to_vec();
                        let mut rest = &bytes[..];
                        while !rest.is_empty() {
                            let view = verify(rest, &limits)
                                .expect("a served batch passes its checks");
                            rest = &rest[view.batch_len()..];
                        }
                    }
                    offset = read.next_offset.max(offset + 1);
                }
                // Damage is reported, not served: skip past it.
                Err(_) => offset += 1,
            }
        }
    });
});
