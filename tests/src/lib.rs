//! Integration tests for Tidelog: shared helpers.
//!
//! Batches used by the storage tests are a pure function of `(seed, seq)`: every record value
//! starts with the batch's sequence number, the record's index and the record count, and the
//! rest of the batch (sizes, keys, timestamps, filler bytes) is derived from the same pair.
//! So any batch read back from a log can be decoded to its `seq`, rebuilt from scratch and
//! compared byte for byte, without the reader having to remember what was written.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use tidelog_engine::io::sim::SimRng;
use tidelog_engine::io::{Clock, Storage};
use tidelog_engine::{Durability, LogConfig, PartitionLog};
use tidelog_wire::batch::{stamp_base_offset, verify, BatchBuilder, VerifyLimits, HEADER_LEN};

/// Timestamp of `seq` 0 (fixed, so batches are reproducible).
pub const TS_BASE: i64 = 1_700_000_000_000;
/// Bytes at the start of every record value: seq (u64), index (u32), count (u32).
pub const VALUE_PREFIX: usize = 16;
/// Largest batch produced by [`build_batch`] (well under the default `max_batch_bytes`).
pub const MAX_TEST_BATCH: usize = 256 << 10;

/// The seed of a randomized test: `TIDELOG_SEED` if set, else fresh. Printed so that a
/// failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("TIDELOG_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TIDELOG_SEED={s:?} is not a u64")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            SimRng::new(nanos ^ u64::from(std::process::id())).next_u64()
        }
    };
    println!("{test}: seed {seed} (replay with TIDELOG_SEED={seed})");
    seed
}

/// Glommio executors lock io memory; the machine's memlock limit is small, so the tests of
/// this binary run their executors one at a time.
static EXECUTOR: Mutex<()> = Mutex::new(());

/// Runs `f` on a fresh glommio executor thread (small io memory) and returns its result.
pub fn run_glommio<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let _one_at_a_time = EXECUTOR.lock().unwrap_or_else(|e| e.into_inner());
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn glommio executor")
        .join()
        .expect("glommio executor panicked")
}

fn mix(a: u64, b: u64) -> u64 {
    SimRng::new(a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// Size profile of test batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One 100-byte record, a few small records, or a ~200 KiB batch of up to 16 records
    /// (spanning write-buffer pages).
    Mixed,
    /// 1 to 8 records of 100 to 1500 bytes (at most ~13 KiB), for tiny segments.
    Small,
    /// One record of 64 000 bytes (a batch of about 64 KiB).
    Fixed64K,
}

/// Value lengths of the records of batch `seq`.
pub fn batch_shape(shape: Shape, seed: u64, seq: u64) -> Vec<usize> {
    let mut rng = SimRng::new(mix(seed, seq));
    if shape == Shape::Small {
        let n = 1 + rng.below(8) as usize;
        return (0..n).map(|_| 100 + rng.below(1401) as usize).collect();
    }
    if shape == Shape::Fixed64K {
        return vec![64_000];
    }
    match rng.below(10) {
        0..=3 => vec![100],
        4..=6 => {
            let n = 2 + rng.below(39) as usize;
            (0..n).map(|_| 50 + rng.below(1951) as usize).collect()
        }
        _ => {
            let n = 1 + rng.below(16) as usize;
            let each = (200 << 10) / n;
            (0..n)
                .map(|_| each - rng.below(each as u64 / 4) as usize)
                .collect()
        }
    }
}

/// Whether the crash appender appends batch `seq` with [`Durability::Synced`].
pub fn durability(seed: u64, seq: u64) -> Durability {
    if mix(seed ^ 0xD0_0D, seq) % 10 < 7 {
        Durability::Synced
    } else {
        Durability::Buffered
    }
}

fn fill_value(seq: u64, index: u32, count: u32, len: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(len.max(VALUE_PREFIX));
    value.extend_from_slice(&seq.to_le_bytes());
    value.extend_from_slice(&index.to_le_bytes());
    value.extend_from_slice(&count.to_le_bytes());
    let mut state = mix(seq, u64::from(index) + 1);
    while value.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        value.push((state >> 56) as u8);
    }
    value
}

/// The [`Shape::Mixed`] batch with sequence number `seq` (base offset 0, CRC set).
pub fn build_batch(seed: u64, seq: u64) -> BytesMut {
    build_batch_of(Shape::Mixed, seed, seq)
}

/// The batch of the given shape with sequence number `seq` (base offset 0, CRC set).
pub fn build_batch_of(shape: Shape, seed: u64, seq: u64) -> BytesMut {
    let shape = batch_shape(shape, seed, seq);
    let count = shape.len() as u32;
    let mut builder = BatchBuilder::new();
    for (index, &len) in shape.iter().enumerate() {
        let value = fill_value(seq, index as u32, count, len);
        let key = format!("k{seq}-{index}");
        let ts = TS_BASE + seq as i64 * 10 + index as i64;
        let seq_bytes = seq.to_le_bytes();
        let headers: &[(&str, &[u8])] = if index == 0 {
            &[("seq", &seq_bytes)]
        } else {
            &[]
        };
        builder.push(Some(key.as_bytes()), &value, ts, headers);
    }
    let batch = builder.finish();
    assert!(batch.len() <= MAX_TEST_BATCH, "test batch too large");
    batch
}

/// What [`Oracle::check`] learned about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Sequence number decoded from its records.
    pub seq: u64,
    /// First offset.
    pub base_offset: u64,
    /// Last offset.
    pub last_offset: u64,
    /// Bytes, header included.
    pub len: usize,
}

/// Knows what every batch must look like; remembers the batches it has already compared
/// byte for byte, so that re-checking a long log stays cheap.
#[derive(Debug)]
pub struct Oracle {
    seed: u64,
    shape: Shape,
    /// seq -> (batch_len, crc) of batches already compared in full.
    seen: HashMap<u64, (usize, u32)>,
}

impl Oracle {
    /// The oracle of the [`Shape::Mixed`] batches made with `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_shape(seed, Shape::Mixed)
    }

    /// The oracle of the batches of `shape` made with `seed`.
    pub fn with_shape(seed: u64, shape: Shape) -> Self {
        Oracle {
            seed,
            shape,
            seen: HashMap::new(),
        }
    }

    /// The batch with sequence number `seq`.
    pub fn build(&self, seq: u64) -> BytesMut {
        build_batch_of(self.shape, self.seed, seq)
    }

    /// Verifies the batch at the start of `bytes` (CRC, structure), checks that its base
    /// offset is `expected_base` and that it is exactly the batch [`build_batch`] makes for
    /// the `seq` its records carry (byte for byte the first time a seq is seen, then by
    /// length and CRC, which the verification has just matched to the content).
    pub fn check(&mut self, bytes: &[u8], expected_base: u64) -> anyhow::Result<BatchInfo> {
        let view = verify(bytes, &VerifyLimits::default()).context("batch fails verification")?;
        ensure!(
            view.base_offset() == expected_base as i64,
            "batch base offset {} but expected {expected_base}",
            view.base_offset()
        );
        let first = view
            .records()?
            .next()
            .context("batch without records")?
            .value;
        ensure!(first.len() >= VALUE_PREFIX, "record value too short");
        let seq = u64::from_le_bytes(first[..8].try_into().expect("8 bytes"));
        let fingerprint = (view.batch_len(), view.header().crc());
        match self.seen.get(&seq) {
            Some(&known) => ensure!(
                known == fingerprint,
                "batch at offset {expected_base} claims seq {seq} but differs from the batch of that seq"
            ),
            None => {
                let mut expected = self.build(seq);
                stamp_base_offset(&mut expected, expected_base as i64)?;
                if view.bytes() != &expected[..] {
                    bail!(
                        "batch at offset {expected_base} claims seq {seq} but differs from the batch \
                         of that seq ({} bytes read, {} expected)",
                        view.bytes().len(),
                        expected.len()
                    );
                }
                self.seen.insert(seq, fingerprint);
            }
        }
        Ok(BatchInfo {
            seq,
            base_offset: expected_base,
            last_offset: view.last_offset() as u64,
            len: view.batch_len(),
        })
    }
}

/// Splits a run of whole batches (as returned by a log read) into batches.
pub fn split_batches(mut bytes: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        ensure!(bytes.len() >= HEADER_LEN, "partial header in a read chunk");
        let len = batch_len(bytes) as usize;
        ensure!(
            len >= HEADER_LEN && len <= bytes.len(),
            "batch length {len} does not fit"
        );
        out.push(&bytes[..len]);
        bytes = &bytes[len..];
    }
    Ok(out)
}

/// `batch_len` of the header at the start of `bytes`.
pub fn batch_len(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"))
}

/// A batch found in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBatch {
    /// Byte position in the file.
    pub pos: u64,
    /// Length in bytes.
    pub len: u64,
    /// Base offset from its header.
    pub base_offset: u64,
    /// Last offset (base offset plus `last_offset_delta` from its header).
    pub last_offset: u64,
}

/// Walks the batch headers of a segment file (raw bytes) until the zero padding or the end.
pub fn file_batches(file: &[u8]) -> Vec<FileBatch> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= file.len() {
        let header = &file[pos..pos + HEADER_LEN];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let len = batch_len(header) as usize;
        if len < HEADER_LEN || pos + len > file.len() {
            break;
        }
        let base = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let delta = i32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
        out.push(FileBatch {
            pos: pos as u64,
            len: len as u64,
            base_offset: base,
            last_offset: base.wrapping_add(delta as u64),
        });
        pos += len;
    }
    out
}

/// XORs one byte of a file with `mask` (non-zero) and makes it durable.
pub fn flip_byte(path: &Path, pos: u64, mask: u8) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    assert!(mask != 0);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8];
    file.seek(SeekFrom::Start(pos))?;
    file.read_exact(&mut b)?;
    b[0] ^= mask;
    file.seek(SeekFrom::Start(pos))?;
    file.write_all(&b)?;
    file.sync_all()
}

/// Summary of a full scan of a log by [`scan_log`].
#[derive(Debug, Clone, Default)]
pub struct LogScan {
    /// First offset.
    pub log_start: u64,
    /// Offset after the last batch.
    pub log_end: u64,
    /// Every batch, in offset order.
    pub batches: Vec<BatchInfo>,
    /// Bytes of batches read.
    pub bytes: u64,
    /// Segments of the log.
    pub segments: usize,
}

/// Reads a log from its start to its end, checking that offsets are contiguous and every
/// batch is the one the oracle expects ([`Oracle::check`]); `first_seq` is the seq the first batch must
/// carry (seqs then increase by one per batch), `None` for no seq check.
pub async fn scan_log<S: Storage, C: Clock>(
    log: &PartitionLog<S, C>,
    oracle: &mut Oracle,
    first_seq: Option<u64>,
) -> anyhow::Result<LogScan> {
    let log_start = log.log_start();
    let log_end = log.log_end();
    let mut scan = LogScan {
        log_start,
        log_end,
        segments: log.segment_count(),
        ..LogScan::default()
    };
    let mut offset = log_start;
    let mut next_seq = first_seq;
    while offset < log_end {
        let read = log
            .read(offset, 1 << 20)
            .await
            .with_context(|| format!("read at offset {offset} (log end {log_end})"))?;
        ensure!(
            !read.is_empty(),
            "read at {offset} below the log end {log_end} returned nothing"
        );
        for chunk in &read.chunks {
            for batch in split_batches(&chunk.to_vec())? {
                let info = oracle
                    .check(batch, offset)
                    .with_context(|| format!("batch at offset {offset}"))?;
                if let Some(expected) = next_seq {
                    ensure!(
                        info.seq == expected,
                        "batch at offset {offset} has seq {} but {expected} was expected",
                        info.seq
                    );
                }
                next_seq = Some(info.seq + 1);
                offset = info.last_offset + 1;
                scan.bytes += info.len as u64;
                scan.batches.push(info);
            }
        }
        ensure!(
            offset == read.next_offset,
            "read reported next offset {} but its batches end at {offset}",
            read.next_offset
        );
    }
    ensure!(
        offset == log_end,
        "batches end at {offset}, past the log end {log_end}"
    );
    Ok(scan)
}

/// The crash appender's log configuration: 4 MiB segments so they roll during a test.
pub fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        preallocate_bytes: 1 << 20,
        ..LogConfig::default()
    }
}
