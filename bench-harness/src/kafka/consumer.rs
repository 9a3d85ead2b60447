//! The generator's Kafka consumer: sessionless Fetch v4..=12 (read_uncommitted), one request
//! per leader node in flight at once, compressed batches decompressed.
//!
//! ```text
//!  poll(): partitions wanted, grouped by leader ─▶ one Fetch per node, all sent first
//!          ─▶ answers read in turn ─▶ whole batches walked, records below the position
//!          skipped, each value handed to the caller ─▶ positions past each batch
//! ```

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::BytesMut;
use tidelog_wire::batch::Compression;
use tidelog_wire::kafka::generated::{
    fetch_request::{FetchPartition, FetchRequest, FetchTopic},
    fetch_response::FetchResponse,
};
use tidelog_wire::kafka::Decoder;
#[cfg(test)]
use tidelog_wire::kafka_records::seal_kafka_crc;
use tidelog_wire::kafka_records::{codec, inflate, RecordBatchHeader, MAGIC_V2};

#[cfg(test)]
use super::batch::BATCH_HEADER_LEN;
use super::client::{api, by_topic, KafkaClient, Tp};
use super::group::GroupMember;
use super::{check, code, KafkaError, FETCH_BYTES_MAX, FETCH_PARTITION_BYTES_MAX};
#[cfg(test)]
use crate::args::Codec;
use crate::work::POLL_WAIT;

/// Most bytes one batch may inflate to: a batch's records section is bounded by the
/// partition fetch size, and a codec's ratio on benchmark payloads stays far below this.
const INFLATED_BATCH_BYTES_MAX: usize = 64 << 20;

/// A consumer of a set of partitions (given, or assigned by its group).
pub struct KafkaConsumer {
    pub client: Rc<KafkaClient>,
    /// The partitions read and the next offset of each ([`assign`](Self::assign)).
    tps: Vec<Tp>,
    positions: Vec<i64>,
    /// Each partition's index in `tps`.
    index: HashMap<Tp, usize>,
    /// The group this consumer is a member of.
    pub group: Option<Rc<GroupMember>>,
}

impl KafkaConsumer {
    /// A consumer of nothing yet, through `client`, in `group` if any.
    pub fn new(client: Rc<KafkaClient>, group: Option<Rc<GroupMember>>) -> Self {
        KafkaConsumer {
            client,
            tps: Vec::new(),
            positions: Vec::new(),
            index: HashMap::new(),
            group,
        }
    }

    /// Reads `tps` from now on, each from its position in `positions`.
    pub fn assign(&mut self, tps: Vec<Tp>, positions: Vec<i64>) {
        self.index = tps.iter().enumerate().map(|(k, tp)| (*tp, k)).collect();
        self.tps = tps;
        self.positions = positions;
    }

    /// Records and value bytes read by one round of fetches: one Fetch per leader node for
    /// the partitions `want` (given the partition and its position) returns true for, sent
    /// together, then read in turn. `visit` gets every value read.
    ///
    /// # Errors
    /// Request errors, partition errors, malformed or unsupported batches.
    pub async fn poll(
        &mut self,
        want: impl Fn(Tp, i64) -> bool,
        mut visit: impl FnMut(&[u8]),
    ) -> super::Result<(u64, u64)> {
        let mut by_node: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (k, tp) in self.tps.iter().enumerate() {
            if want(*tp, self.positions[k]) {
                by_node
                    .entry(self.client.leader_id(*tp))
                    .or_default()
                    .push(k);
            }
        }
        if by_node.is_empty() {
            glommio::timer::sleep(POLL_WAIT).await;
            return Ok((0, 0));
        }
        let mut pending = Vec::with_capacity(by_node.len());
        for (node, ks) in &by_node {
            if *node < 0 {
                return Err(KafkaError::Code {
                    api: "Metadata",
                    code: code::LEADER_NOT_AVAILABLE,
                });
            }
            let c = self.client.node(*node).await?;
            let v = c.versions.fetch;
            let tps: Vec<Tp> = ks.iter().map(|k| self.tps[*k]).collect();
            let request = FetchRequest {
                replica_id: -1,
                max_wait_ms: POLL_WAIT.as_millis() as i32,
                min_bytes: 1,
                max_bytes: FETCH_BYTES_MAX as i32,
                isolation_level: 0,
                session_id: 0,
                session_epoch: -1,
                topics: by_topic(&tps)
                    .into_iter()
                    .map(|(t, parts)| FetchTopic {
                        topic: self.client.topic(t).to_owned(),
                        partitions: parts
                            .iter()
                            .map(|p| FetchPartition {
                                partition: *p,
                                current_leader_epoch: -1,
                                fetch_offset: self
                                    .index
                                    .get(&(t, *p))
                                    .map_or(0, |k| self.positions[*k]),
                                last_fetched_epoch: -1,
                                log_start_offset: -1,
                                partition_max_bytes: FETCH_PARTITION_BYTES_MAX as i32,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let mut body = BytesMut::new();
            request
                .encode(&mut body, v)
                .map_err(|e| KafkaError::Malformed(format!("encode Fetch: {e}")))?;
            let p = c.conn.send(api::FETCH, v, &[&body], true).await?;
            pending.push((p, v));
        }
        let (mut n, mut bytes) = (0u64, 0u64);
        for (p, v) in pending {
            let Some(p) = p else { continue };
            let body = p.wait().await?;
            let resp = FetchResponse::decode(&mut Decoder::new(&body), v)
                .map_err(|e| KafkaError::Malformed(format!("Fetch: {e}")))?;
            check("Fetch", resp.error_code)?;
            for t in &resp.responses {
                let Some(ti) = self.client.topic_index(&t.topic) else {
                    continue;
                };
                for pd in &t.partitions {
                    check("Fetch", pd.error_code)?;
                    let Some(&k) = self.index.get(&(ti, pd.partition_index)) else {
                        continue;
                    };
                    let Some(records) = &pd.records else { continue };
                    let (rn, rb) = read_batches(records, &mut self.positions[k], &mut visit)?;
                    n += rn;
                    bytes += rb;
                }
            }
        }
        Ok((n, bytes))
    }

    /// (partition, position) of every partition read.
    pub fn offsets(&self) -> Vec<(Tp, i64)> {
        self.tps
            .iter()
            .copied()
            .zip(self.positions.iter().copied())
            .collect()
    }
}

/// Walks the whole batches of one partition's fetched `records` (a trailing partial batch is
/// ignored, as Kafka allows), calls `f` with the value of each record at or after `*position`,
/// and moves `*position` past each batch. Returns (records, key plus value bytes) seen.
/// Control batches (transaction markers) are skipped; compressed ones are inflated (bounded
/// by [`INFLATED_BATCH_BYTES_MAX`]) by the wire crate, which also decodes the records.
///
/// # Errors
/// A pre-v2 batch ([`KafkaError::Unsupported`]), a malformed or corrupt one.
pub fn read_batches(
    records: &[u8],
    position: &mut i64,
    mut f: impl FnMut(&[u8]),
) -> super::Result<(u64, u64)> {
    let mut at = 0usize;
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(head) = records.get(at..).and_then(RecordBatchHeader::read) {
        let total = head
            .total_len()
            .ok_or_else(|| KafkaError::Malformed(format!("batch length {}", head.batch_length)))?;
        let Some(whole) = records.get(at..at + total) else {
            break;
        };
        at += total;
        if head.magic != MAGIC_V2 {
            return Err(KafkaError::Unsupported(format!(
                "a magic v{} message set (tidelog-bench reads RecordBatch v2 only)",
                head.magic
            )));
        }
        let base = head.base_offset;
        let next = head.next_offset();
        if !head.is_control() && next > *position {
            let codec = codec::compression_of(head.attributes)
                .map_err(|e| KafkaError::Unsupported(e.to_string()))?;
            let inflated;
            let batch = if codec == Compression::None {
                whole
            } else {
                inflated = inflate(whole, INFLATED_BATCH_BYTES_MAX)
                    .map_err(|e| KafkaError::Malformed(format!("batch at offset {base}: {e}")))?;
                &inflated[..]
            };
            let decoded = tidelog_client::kafka::decode_records(batch, base)
                .map_err(|e| KafkaError::Malformed(format!("batch at offset {base}: {e}")))?;
            for rec in decoded.iter().filter(|r| r.offset >= *position) {
                let value = batch.get(rec.value.clone()).unwrap_or_default();
                f(value);
                n += 1;
                bytes += (value.len() + rec.key.as_ref().map_or(0, |k| k.len())) as u64;
            }
        }
        *position = (*position).max(next);
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::batch::BatchBuilder;

    fn batch_at(base: i64, values: &[&[u8]], codec: Codec) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(256);
        for (i, v) in values.iter().enumerate() {
            let key = (i % 2 == 0).then_some(&b"key"[..]);
            b.push(key, v, 1);
        }
        let mut bytes = b.finish(0, codec).to_vec();
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        bytes
    }

    #[test]
    fn batches_are_read_from_the_position_on() {
        let mut records = batch_at(10, &[b"a", b"bb", b"ccc"], Codec::None);
        records.extend(batch_at(13, &[b"dddd"], Codec::None));
        let partial = batch_at(14, &[b"eeeee"], Codec::None);
        records.extend(&partial[..partial.len() - 1]);
        let mut position = 11;
        let mut seen = Vec::new();
        let (n, bytes) =
            read_batches(&records, &mut position, |v| seen.push(v.to_vec())).expect("reads");
        assert_eq!(seen, [b"bb".to_vec(), b"ccc".to_vec(), b"dddd".to_vec()]);
        assert_eq!(
            (n, bytes),
            (3, 9 + 3 + 3),
            "keys of records 2 and 3 (index 0 and 2)"
        );
        assert_eq!(
            position, 14,
            "past the last whole batch, not the partial one"
        );
    }

    #[test]
    fn compressed_batches_read_like_plain_ones() {
        let values: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 300]).collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let records = batch_at(100, &refs, codec);
            assert!(records.len() < 50 * 300 / 4, "{codec:?} compressed");
            assert_eq!(
                codec::compression_of(i16::from(records[22])).expect("ok"),
                codec.compression()
            );
            let mut position = 0;
            let mut seen = Vec::new();
            read_batches(&records, &mut position, |v| seen.push(v.to_vec())).expect("reads");
            assert_eq!(seen, values, "{codec:?}");
            assert_eq!(position, 150);
            let mut corrupt = records.clone();
            let last = corrupt.len() - 1;
            corrupt[last] ^= 0x55;
            assert!(
                read_batches(&corrupt, &mut 0, |_| {}).is_err(),
                "{codec:?} crc"
            );
        }
    }

    proptest::proptest! {
        /// Whatever a broker sends as a partition's records, the walk returns or errs.
        #[test]
        fn fetched_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), position in 0i64..20) {
            let mut p = position;
            let _ = read_batches(&bytes, &mut p, |_| {});
        }

        /// A valid batch with any one byte changed is read or refused, never a panic, and
        /// never moves the position backwards.
        #[test]
        fn damaged_compressed_batches_never_panic(at in 0usize..400, byte in proptest::prelude::any::<u8>(), codec in 0usize..5) {
            let codecs = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
            let values: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 40]).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let mut records = batch_at(5, &refs, codecs[codec]);
            let at = at % records.len();
            records[at] = byte;
            if at >= BATCH_HEADER_LEN {
                // A damaged records section under a valid CRC reaches the codec and decoder.
                seal_kafka_crc(&mut records);
            }
            let mut position = 5;
            let _ = read_batches(&records, &mut position, |_| {});
            proptest::prop_assert!(position >= 5);
        }
    }

    #[test]
    fn corrupt_batches_are_errors() {
        let mut records = batch_at(0, &[b"x"], Codec::None);
        records[22] |= 7; // codec 7 does not exist; the CRC is resealed so the codec fails
        seal_kafka_crc(&mut records);
        let e = read_batches(&records, &mut 0, |_| {}).expect_err("codec 7");
        assert!(matches!(e, KafkaError::Unsupported(_)), "{e}");
        let mut records = batch_at(0, &[b"x"], Codec::None);
        let last = records.len() - 2;
        records[last] ^= 0xff;
        let e = read_batches(&records, &mut 0, |_| {}).expect_err("crc");
        assert!(matches!(e, KafkaError::Malformed(_)), "{e}");
        let mut records = batch_at(0, &[b"x"], Codec::None);
        records[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(
            read_batches(&records, &mut 0, |_| {}).is_err(),
            "short length"
        );
    }
}
