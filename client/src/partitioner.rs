//! Choosing a partition for a record.

/// How a [`Producer`](crate::Producer) picks the partition of a record sent without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// `crc32c(key) % partitions` for keyed records (round robin for records without a key).
    ///
    /// CRC-32C, not Kafka's murmur2: keys map to different partitions than with a Kafka
    /// client. Compatibility with Kafka's default partitioner is a later issue.
    #[default]
    KeyHash,
    /// Each record goes to the next partition in turn.
    RoundRobin,
}

impl Partitioner {
    /// The partition for a record with `key` among `partitions` (> 0); `counter` is the
    /// producer's round-robin counter, advanced when it is used.
    pub fn partition(self, key: Option<&[u8]>, partitions: u32, counter: &mut u32) -> i32 {
        let partitions = partitions.max(1);
        let index = match (self, key) {
            (Self::KeyHash, Some(k)) => crc32c::crc32c(k) % partitions,
            _ => {
                let p = *counter % partitions;
                *counter = counter.wrapping_add(1);
                p
            }
        };
        // `index < partitions <= u32::MAX`, and partition counts come from i32 metadata.
        i32::try_from(index).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_crc32c_modulo_partitions() {
        let mut c = 0;
        // crc32c("123456789") = 0xe3069283 (the standard check value).
        let p = Partitioner::KeyHash.partition(Some(b"123456789"), 7, &mut c);
        assert_eq!(p as u32, 0xe306_9283 % 7);
        assert_eq!(c, 0, "keyed records do not advance the counter");
        for n in 1..20 {
            let p = Partitioner::KeyHash.partition(Some(b"same key"), n, &mut c);
            assert!((0..n as i32).contains(&p));
            assert_eq!(
                p,
                Partitioner::KeyHash.partition(Some(b"same key"), n, &mut c)
            );
        }
    }

    #[test]
    fn round_robin_and_null_keys_cycle() {
        let mut c = 0;
        let ps: Vec<i32> = (0..6)
            .map(|_| Partitioner::RoundRobin.partition(Some(b"k"), 3, &mut c))
            .collect();
        assert_eq!(ps, [0, 1, 2, 0, 1, 2]);
        let p = Partitioner::KeyHash.partition(None, 3, &mut c);
        assert_eq!(p, 0);
        assert_eq!(
            Partitioner::KeyHash.partition(None, 0, &mut c),
            0,
            "0 is treated as 1"
        );
    }
}
