//! Idempotent producer state of one partition (Kafka's `ProducerStateManager`, reduced).
//!
//! Per producer id: the current epoch and the last [`BATCHES_RETAINED`] batches'
//! sequence and offset ranges. [`ProducerStates::check`] decides, before an append,
//! whether a batch is new, a retried duplicate, or out of order; [`ProducerStates::record`]
//! remembers a batch once it is in the log. The partition calls both under its write gate,
//! so the check and the append are one atomic step.
//!
//! The state lives in memory only. It is rebuilt at open from the batch headers of the log
//! tail (see `PRODUCER_STATE_SEGMENTS` in the partition), so it always describes exactly the
//! batches that survived recovery.

use std::collections::{HashMap, VecDeque};

use crate::error::LogError;

/// Batches remembered per producer: clients keep at most 5 requests in flight
/// (Kafka's `NUM_BATCHES_TO_RETAIN`), so a retry always matches one of these.
pub(crate) const BATCHES_RETAINED: usize = 5;

/// Producers remembered per partition. Producer ids come from clients (a hostile one can
/// send any), so the table is bounded: past it, the producer whose last batch is oldest is
/// forgotten, exactly as a producer Kafka expired (`producer.id.expiration.ms`): its next
/// batch is accepted with any sequence.
pub(crate) const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// The producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Sequence of the last record (`first_seq + last_offset_delta`, wrapping past
    /// `i32::MAX` to 0).
    pub last_seq: i32,
}

impl ProducerBatch {
    /// `None` for batches without a producer (`producer_id < 0`).
    pub(crate) fn new(
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_offset_delta: u32,
    ) -> Option<Self> {
        (producer_id >= 0).then(|| ProducerBatch {
            producer_id,
            epoch,
            first_seq,
            last_seq: add_sequence(first_seq, last_offset_delta),
        })
    }
}

/// `seq + delta` with Kafka's wrap from `i32::MAX` to 0.
fn add_sequence(seq: i32, delta: u32) -> i32 {
    let sum = i64::from(seq.max(0)) + i64::from(delta);
    let wrapped = sum % (i64::from(i32::MAX) + 1);
    // The modulus keeps it within 0..=i32::MAX.
    i32::try_from(wrapped).unwrap_or(0)
}

/// The sequence after `seq`.
fn next_sequence(seq: i32) -> i32 {
    add_sequence(seq, 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedBatch {
    first_seq: i32,
    last_seq: i32,
    first_offset: u64,
    last_offset: u64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first, at most [`BATCHES_RETAINED`].
    batches: VecDeque<CachedBatch>,
}

/// What [`ProducerStates::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Append the batch.
    Append,
    /// The batch was appended before at these offsets: do not append it again.
    Duplicate { first_offset: u64, last_offset: u64 },
}

/// Producer state of one partition.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Bumped at every change: a snapshot is rewritten only when it moved.
    version: u64,
}

/// Bytes of one producer in a snapshot: id, epoch, batch count, then per batch two
/// sequences and two offsets.
const SNAPSHOT_ENTRY_HEAD: usize = 8 + 2 + 1;
const SNAPSHOT_BATCH: usize = 4 + 4 + 8 + 8;

impl ProducerStates {
    /// Decides what to do with `batch`, without changing any state.
    ///
    /// # Errors
    /// [`LogError::InvalidProducerEpoch`] for an epoch older than the producer's current
    /// one; [`LogError::OutOfOrderSequence`] for a sequence that does not follow the last
    /// batch of the same epoch, or a new epoch not starting at 0.
    pub(crate) fn check(&self, batch: &ProducerBatch) -> Result<Verdict, LogError> {
        if batch.first_seq < 0 {
            // An idempotent batch must carry a sequence (Kafka refuses it as INVALID_RECORD).
            return Err(LogError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                sequence: batch.first_seq,
                expected: 0,
            });
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // No state (new producer, or forgotten after a restart beyond the scanned tail):
            // accept any sequence, as Kafka does.
            return Ok(Verdict::Append);
        };
        if batch.epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: entry.epoch,
            });
        }
        let out_of_order = |expected: i32| LogError::OutOfOrderSequence {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            sequence: batch.first_seq,
            expected,
        };
        if batch.epoch > entry.epoch {
            return if batch.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(out_of_order(0))
            };
        }
        let duplicate = entry
            .batches
            .iter()
            .find(|c| c.first_seq == batch.first_seq && c.last_seq == batch.last_seq);
        if let Some(c) = duplicate {
            return Ok(Verdict::Duplicate {
                first_offset: c.first_offset,
                last_offset: c.last_offset,
            });
        }
        match entry.batches.back() {
            Some(last) if batch.first_seq != next_sequence(last.last_seq) => {
                Err(out_of_order(next_sequence(last.last_seq)))
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Remembers `batch`, appended at `first_offset..=last_offset`. A newer epoch replaces
    /// the producer's cached batches; an older one (only possible for a corrupt log) is
    /// ignored.
    pub(crate) fn record(&mut self, batch: &ProducerBatch, first_offset: u64, last_offset: u64) {
        if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
            && !self.producers.contains_key(&batch.producer_id)
        {
            self.forget_least_recent();
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                batches: VecDeque::with_capacity(BATCHES_RETAINED),
            });
        if batch.epoch < entry.epoch {
            return;
        }
        self.version += 1;
        if batch.epoch > entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(CachedBatch {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            first_offset,
            last_offset,
        });
    }

    /// Forgets the producer whose last batch is oldest (lowest last offset). A scan, but only
    /// when the table is full, and it frees one slot per new producer.
    fn forget_least_recent(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.batches.back().map_or(0, |b| b.last_offset))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Number of producers with state.
    /// Every producer kept: (id, epoch, last sequence written), by id.
    pub(crate) fn describe(&self) -> Vec<(i64, i16, i32)> {
        let mut out: Vec<(i64, i16, i32)> = self
            .producers
            .iter()
            .map(|(&id, e)| (id, e.epoch, e.batches.back().map_or(-1, |b| b.last_seq)))
            .collect();
        out.sort_unstable();
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Changes so far (to tell whether a snapshot is stale).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The table as snapshot bytes (see [`decode`](Self::decode)).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + self.producers.len() * (SNAPSHOT_ENTRY_HEAD + BATCHES_RETAINED * SNAPSHOT_BATCH),
        );
        out.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&entry.epoch.to_le_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.to_le_bytes());
                out.extend_from_slice(&b.last_seq.to_le_bytes());
                out.extend_from_slice(&b.first_offset.to_le_bytes());
                out.extend_from_slice(&b.last_offset.to_le_bytes());
            }
        }
        out
    }

    /// A table from snapshot bytes; `None` for anything malformed or over the bounds.
    pub(crate) fn decode(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = rest;
            Some(head)
        }
        let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
            let epoch = i16::from_le_bytes(take(&mut bytes, 2)?.try_into().ok()?);
            let n = usize::from(take(&mut bytes, 1)?[0]);
            if n > BATCHES_RETAINED || id < 0 {
                return None;
            }
            let mut batches = VecDeque::with_capacity(BATCHES_RETAINED);
            for _ in 0..n {
                let b = take(&mut bytes, SNAPSHOT_BATCH)?;
                batches.push_back(CachedBatch {
                    first_seq: i32::from_le_bytes(b[0..4].try_into().ok()?),
                    last_seq: i32::from_le_bytes(b[4..8].try_into().ok()?),
                    first_offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
                    last_offset: u64::from_le_bytes(b[16..24].try_into().ok()?),
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        bytes.is_empty().then_some(ProducerStates {
            producers,
            version: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first_seq: i32, records: u32) -> ProducerBatch {
        ProducerBatch::new(7, epoch, first_seq, records - 1).unwrap()
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(add_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(next_sequence(5), 6);
        assert!(ProducerBatch::new(-1, 0, 0, 0).is_none());
    }

    #[test]
    fn epoch_and_sequence_rules() {
        let mut s = ProducerStates::default();
        // Unknown producer: any sequence.
        assert_eq!(s.check(&batch(3, 40, 2)).ok(), Some(Verdict::Append));
        s.record(&batch(3, 40, 2), 100, 101);
        // Next in order.
        assert_eq!(s.check(&batch(3, 42, 1)).ok(), Some(Verdict::Append));
        // Gap and rewind.
        assert!(matches!(
            s.check(&batch(3, 43, 1)),
            Err(LogError::OutOfOrderSequence { expected: 42, .. })
        ));
        assert!(matches!(
            s.check(&batch(3, 41, 1)),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        // Exact retry.
        assert_eq!(
            s.check(&batch(3, 40, 2)).ok(),
            Some(Verdict::Duplicate {
                first_offset: 100,
                last_offset: 101
            })
        );
        // Old epoch.
        assert!(matches!(
            s.check(&batch(2, 42, 1)),
            Err(LogError::InvalidProducerEpoch { current: 3, .. })
        ));
        // New epoch must start at 0.
        assert!(matches!(
            s.check(&batch(4, 42, 1)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(s.check(&batch(4, 0, 1)).ok(), Some(Verdict::Append));
        s.record(&batch(4, 0, 1), 102, 102);
        // The old epoch's batches are forgotten.
        assert!(matches!(
            s.check(&batch(3, 40, 2)),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn only_the_last_five_batches_are_duplicates() {
        let mut s = ProducerStates::default();
        for i in 0..7u64 {
            s.record(&batch(0, i as i32, 1), 10 + i, 10 + i);
        }
        assert!(matches!(
            s.check(&batch(0, 1, 1)),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        for i in 2..7u64 {
            assert_eq!(
                s.check(&batch(0, i as i32, 1)).ok(),
                Some(Verdict::Duplicate {
                    first_offset: 10 + i,
                    last_offset: 10 + i
                })
            );
        }
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_producer() {
        let mut s = ProducerStates::default();
        let cap = PRODUCERS_PER_PARTITION_MAX as i64;
        for id in 0..cap + 10 {
            let b = ProducerBatch::new(id, 0, 0, 0).expect("idempotent");
            s.record(&b, id as u64, id as u64);
            // Producer 0 keeps writing: it is never the least recent.
            if id % 1000 == 999 {
                let again = ProducerBatch::new(0, 0, (id / 1000) as i32 + 1, 0).expect("b");
                s.record(&again, id as u64, id as u64);
            }
        }
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        assert!(s.producers.contains_key(&0), "the busy producer is kept");
        assert!(
            !s.producers.contains_key(&1),
            "the oldest idle one went first"
        );
        // A forgotten producer's next batch is accepted with any sequence.
        let back = ProducerBatch::new(1, 0, 57, 0).expect("b");
        assert_eq!(s.check(&back).ok(), Some(Verdict::Append));
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut s = ProducerStates::default();
        for id in 0..50i64 {
            for seq in 0..(id % 7) as i32 + 1 {
                let b = ProducerBatch::new(id, (id % 3) as i16, seq, 0).expect("b");
                s.record(
                    &b,
                    (id * 100) as u64 + seq as u64,
                    (id * 100) as u64 + seq as u64,
                );
            }
        }
        let bytes = s.encode();
        let back = ProducerStates::decode(&bytes).expect("decodes");
        assert_eq!(back.len(), 50);
        for id in 0..50i64 {
            let next = ProducerBatch::new(id, (id % 3) as i16, (id % 7) as i32 + 1, 0).expect("b");
            assert_eq!(back.check(&next).ok(), s.check(&next).ok(), "producer {id}");
        }
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ProducerStates::decode(&longer).is_none());
        assert!(ProducerStates::decode(&u32::MAX.to_le_bytes()).is_none());
    }

    #[test]
    fn sequence_wraps_to_zero() {
        let mut s = ProducerStates::default();
        s.record(&batch(0, i32::MAX - 1, 2), 0, 1);
        assert_eq!(s.check(&batch(0, 0, 1)).ok(), Some(Verdict::Append));
        assert!(s.check(&batch(0, i32::MAX, 1)).is_err());
    }
}
