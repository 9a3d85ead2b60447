//! Record values: seeded bytes with the send timestamp in the first 8; and keys.
//!
//! Each producer fills one pool from its seed at start and cuts every value from it, one
//! after the other, so no time goes to randomness per record and the same `--seed` gives the
//! same bytes. The pool ([`POOL_BYTES`], the largest batch a Tidelog partition accepts by
//! default) is as large as a batch, so the values of one batch never repeat each other's
//! bytes and a codec sees only what the payload kind puts there. (A 4 MiB pool cost the
//! generator ~10% of its throughput in cache misses; 1 MiB is within noise of a 5 KiB one.)
//!
//! * [`PayloadKind::Random`]: uniform random bytes, incompressible (the honest case for
//!   throughput figures, and the worst case for a codec);
//! * [`PayloadKind::Text`]: log lines (timestamps, levels, services, paths, status codes,
//!   latencies) that compress about as well as real application logs (zstd level 3: 3.6×).
//!
//! With a size range each value's length is drawn from the same seeded stream.

use crate::args::{KeyMode, PayloadKind};

/// Bytes of the value pool (plus one largest value, so a value never wraps).
pub const POOL_BYTES: usize = 1 << 20;

/// SplitMix64: small, fast and good enough for payload bytes (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Makes the values of one producer.
#[derive(Debug)]
pub struct Payloads {
    pool: Vec<u8>,
    value: Vec<u8>,
    next: usize,
    /// Smallest value; `value.len()` is the largest.
    min: usize,
    rng: SplitMix64,
}

impl Payloads {
    /// Random values of `record_size` bytes (≥ 8) from the stream of `seed`.
    // Kept for fixed-size callers beside run.rs (the tests; other protocols' producers).
    #[allow(dead_code)]
    pub fn new(seed: u64, record_size: usize) -> Self {
        Self::ranged(seed, record_size, record_size, PayloadKind::Random)
    }

    /// Values of `min..=max` bytes (`8 <= min <= max`), each length drawn uniformly.
    pub fn ranged(seed: u64, min: usize, record_size: usize, kind: PayloadKind) -> Self {
        assert!(min >= 8, "a value carries an 8-byte timestamp");
        assert!(min <= record_size, "an empty size range");
        let mut rng = SplitMix64::new(seed);
        let len = POOL_BYTES + record_size;
        let pool = match kind {
            PayloadKind::Random => {
                let mut pool = vec![0u8; len];
                for chunk in pool.chunks_mut(8) {
                    let bytes = rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
                pool
            }
            PayloadKind::Text => log_lines(&mut rng, len),
        };
        Self {
            pool,
            value: vec![0u8; record_size],
            next: 0,
            min,
            rng,
        }
    }

    /// The next value, stamped with `timestamp_ns`.
    pub fn next(&mut self, timestamp_ns: u64) -> &[u8] {
        let max = self.value.len();
        let size = if self.min == max {
            max
        } else {
            self.min + (self.rng.next_u64() % (max - self.min + 1) as u64) as usize
        };
        if self.next + size > POOL_BYTES {
            self.next = 0;
        }
        let start = self.next;
        self.next += size;
        self.value[..size].copy_from_slice(&self.pool[start..start + size]);
        self.value[..8].copy_from_slice(&timestamp_ns.to_le_bytes());
        &self.value[..size]
    }
}

/// `len` bytes of seeded application-log lines.
fn log_lines(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "DEBUG"];
    const SERVICES: [&str; 6] = ["api", "billing", "search", "auth", "orders", "gateway"];
    const VERBS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
    const PATHS: [&str; 5] = ["items", "users", "carts", "sessions", "invoices"];
    const STATUS: [u16; 6] = [200, 200, 200, 201, 404, 500];
    use std::io::Write as _;
    let mut out = Vec::with_capacity(len + 256);
    let mut ms = 1_764_000_000_000u64;
    while out.len() < len {
        ms += rng.below(40);
        let pick = |rng: &mut SplitMix64, n: usize| rng.below(n as u64) as usize;
        let _ = writeln!(
            out,
            "{ms} {} svc={} host=node-{:02} req={:016x} {} /v1/{}/{} status={} ms={}",
            LEVELS[pick(rng, LEVELS.len())],
            SERVICES[pick(rng, SERVICES.len())],
            rng.below(32),
            rng.next_u64(),
            VERBS[pick(rng, VERBS.len())],
            PATHS[pick(rng, PATHS.len())],
            rng.below(100_000),
            STATUS[pick(rng, STATUS.len())],
            rng.below(900),
        );
    }
    out.truncate(len);
    out
}

/// Bytes of every key.
pub const KEY_BYTES: usize = 16;
/// Distinct keys of [`KeyMode::RoundRobin`].
pub const ROUND_ROBIN_KEYS: u64 = 1024;

/// Makes the keys of one producer.
#[derive(Debug)]
pub struct Keys {
    mode: KeyMode,
    rng: SplitMix64,
    /// Round robin: the seeded first 8 bytes shared by every key of this producer.
    prefix: [u8; 8],
    key: [u8; KEY_BYTES],
    sent: u64,
}

impl Keys {
    /// Keys of `mode` from the stream of `seed`.
    pub fn new(mode: KeyMode, seed: u64) -> Self {
        // Another stream than the values' one, so the keys do not repeat value bytes.
        let mut rng = SplitMix64::new(seed ^ 0x6b65_7973_6b65_7973);
        let prefix = rng.next_u64().to_le_bytes();
        Self {
            mode,
            rng,
            prefix,
            key: [0; KEY_BYTES],
            sent: 0,
        }
    }

    /// The next key (`None` for [`KeyMode::None`]).
    pub fn next(&mut self) -> Option<&[u8]> {
        let n = self.sent;
        self.sent += 1;
        match self.mode {
            KeyMode::None => return None,
            KeyMode::Random => {
                self.key[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                self.key[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
            }
            KeyMode::RoundRobin => {
                self.key[..8].copy_from_slice(&self.prefix);
                self.key[8..].copy_from_slice(&(n % ROUND_ROBIN_KEYS).to_be_bytes());
            }
        }
        Some(&self.key)
    }
}

/// The send timestamp of a value made by [`Payloads::next`].
pub fn timestamp_ns(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_seeded_stamped_and_vary() {
        let mut a = Payloads::new(7, 64);
        let mut b = Payloads::new(7, 64);
        let (v1, v2) = (a.next(42).to_vec(), a.next(43).to_vec());
        assert_eq!(v1, b.next(42), "same seed, same bytes");
        assert_eq!(timestamp_ns(&v1), Some(42));
        assert_eq!(timestamp_ns(&v2), Some(43));
        assert_ne!(v1[8..], v2[8..], "consecutive values differ");
        assert_ne!(
            Payloads::new(8, 64).next(42),
            &v1[..],
            "other seed, other bytes"
        );
        assert_eq!(timestamp_ns(b"short"), None);
    }

    #[test]
    fn random_values_do_not_compress_and_text_values_do() {
        use crate::args::Codec;
        for (kind, ratio) in [
            (PayloadKind::Random, 0.98..1.1),
            (PayloadKind::Text, 0.1..0.5),
        ] {
            let mut p = Payloads::ranged(11, 1024, 1024, kind);
            // One 256 KiB batch's worth of values, as a producer would send them.
            let batch: Vec<u8> = (0..256).flat_map(|t| p.next(t).to_vec()).collect();
            let mut packed = Vec::new();
            tidelog_wire::kafka_records::codec::compress(
                Codec::Zstd.compression(),
                &batch,
                &mut packed,
            )
            .expect("zstd is a known codec");
            let r = packed.len() as f64 / batch.len() as f64;
            assert!(ratio.contains(&r), "{kind:?}: zstd ratio {r:.3}");
        }
    }

    #[test]
    fn ranged_sizes_stay_in_range_and_are_seeded() {
        let mut a = Payloads::ranged(3, 16, 64, PayloadKind::Random);
        let mut b = Payloads::ranged(3, 16, 64, PayloadKind::Random);
        let sizes: Vec<usize> = (0..1000).map(|t| a.next(t).len()).collect();
        assert!(sizes.iter().all(|n| (16..=64).contains(n)));
        assert!(
            sizes.contains(&16) && sizes.contains(&64),
            "both ends are drawn"
        );
        let again: Vec<usize> = (0..1000).map(|t| b.next(t).len()).collect();
        assert_eq!(sizes, again, "same seed, same sizes");
        assert_eq!(timestamp_ns(a.next(99)), Some(99));
    }

    #[test]
    fn keys_by_mode() {
        assert_eq!(Keys::new(KeyMode::None, 1).next(), None);
        let mut rr = Keys::new(KeyMode::RoundRobin, 1);
        let first = rr.next().expect("a key").to_vec();
        assert_eq!(first.len(), KEY_BYTES);
        let distinct: std::collections::HashSet<Vec<u8>> = (1..ROUND_ROBIN_KEYS)
            .map(|_| rr.next().expect("a key").to_vec())
            .collect();
        assert_eq!(distinct.len() as u64, ROUND_ROBIN_KEYS - 1);
        assert!(!distinct.contains(&first));
        assert_eq!(rr.next().expect("a key"), &first[..], "wraps around");
        let mut r1 = Keys::new(KeyMode::Random, 5);
        let mut r2 = Keys::new(KeyMode::Random, 5);
        let (k1, k2) = (
            r1.next().expect("a key").to_vec(),
            r1.next().expect("a key").to_vec(),
        );
        assert_ne!(k1, k2);
        assert_eq!(r2.next().expect("a key"), &k1[..], "seeded");
    }
}
