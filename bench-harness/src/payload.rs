//! Record values: seeded pseudo-random bytes with the send timestamp in the first 8.
//!
//! Each producer fills one pool of `record_size + POOL_SLACK` bytes from its seed at start and
//! cuts every value from it at a moving offset, so values differ from record to record without
//! spending time on randomness per record, and the same `--seed` gives the same bytes.

/// Extra pool bytes beyond one record: the number of distinct value offsets.
const POOL_SLACK: usize = 4096;

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
}

/// Makes the values of one producer.
#[derive(Debug)]
pub struct Payloads {
    pool: Vec<u8>,
    value: Vec<u8>,
    next: usize,
}

impl Payloads {
    /// Values of `record_size` bytes (≥ 8) from the stream of `seed`.
    pub fn new(seed: u64, record_size: usize) -> Self {
        assert!(record_size >= 8, "a value carries an 8-byte timestamp");
        let mut rng = SplitMix64::new(seed);
        let mut pool = vec![0u8; record_size + POOL_SLACK];
        for chunk in pool.chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Self {
            pool,
            value: vec![0u8; record_size],
            next: 0,
        }
    }

    /// The next value, stamped with `timestamp_ns`.
    pub fn next(&mut self, timestamp_ns: u64) -> &[u8] {
        let size = self.value.len();
        let start = self.next;
        self.next = (self.next + 1) % POOL_SLACK;
        self.value.copy_from_slice(&self.pool[start..start + size]);
        self.value[..8].copy_from_slice(&timestamp_ns.to_le_bytes());
        &self.value
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
}
