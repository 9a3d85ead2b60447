//! [`Consumer`]: fetches assigned partitions from their shards and decodes both payload
//! formats (native batches and Kafka RecordBatch v2).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tidelog_wire::batch::{peek_header, verify, Compression, PayloadFormat, VerifyLimits};
use tidelog_wire::kafka_records::{inflate, RecordBatchHeader};
use tidelog_wire::native::{BodyT, ErrorCode, FetchPartitionT, FetchRequestT};
use tidelog_wire::WireError;

use crate::client::{unexpected, Client, EARLIEST, LATEST};
use crate::connection::{PendingResponse, Response};
use crate::error::{ClientError, Result};
use crate::limits::{
    FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_PARTITION_BYTES_DEFAULT, INFLATED_BATCH_BYTES_MAX,
};

/// Where an assigned partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The first offset still in the log.
    Earliest,
    /// The offset after the last record (only new records).
    Latest,
    /// This offset.
    Offset(i64),
    /// The group's committed offset, or the earliest offset if the group has none.
    Committed(String),
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Most batch bytes per partition per fetch (a larger first batch still comes whole).
    pub partition_max_bytes: usize,
    /// Most batch bytes per fetch request (one request per shard).
    pub max_bytes: usize,
    /// The broker answers once this many bytes are ready or the wait is over.
    pub min_bytes: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            partition_max_bytes: FETCH_PARTITION_BYTES_DEFAULT,
            max_bytes: FETCH_BYTES_DEFAULT,
            min_bytes: 1,
        }
    }
}

/// One record read by [`Consumer::poll`]. `key` and `value` share the response's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// `None` for a null key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
}

/// One record as [`Consumer::poll_each`] shows it: borrowed from the fetch response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
}

impl RecordRef<'_> {
    /// An owned record whose key and value share `buf`, the fetched buffer, when they lie in
    /// it; the records of a compressed batch lie in the buffer it was inflated into and are
    /// copied.
    pub fn to_record(self, buf: &Bytes) -> ConsumerRecord {
        ConsumerRecord {
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(|k| share_or_copy(buf, k)),
            value: share_or_copy(buf, self.value),
        }
    }
}

/// `part` as a `Bytes` sharing `buf` when it lies inside it, else a copy.
fn share_or_copy(buf: &Bytes, part: &[u8]) -> Bytes {
    let start = buf.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= start + buf.len() {
        buf.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// A consumer of explicitly assigned partitions (no group membership).
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// Next offset to read, by (topic, partition).
    positions: BTreeMap<(String, i32), i64>,
}

impl Consumer {
    /// A consumer reading through `client`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for byte limits that are 0 or above
    /// [`FETCH_BYTES_MAX`].
    pub fn new(client: Client, config: ConsumerConfig) -> Result<Self> {
        for (name, v) in [
            ("partition_max_bytes", config.partition_max_bytes),
            ("max_bytes", config.max_bytes),
        ] {
            if v == 0 || v > FETCH_BYTES_MAX {
                return Err(ClientError::InvalidArgument(format!(
                    "{name} {v} not in 1..={FETCH_BYTES_MAX}"
                )));
            }
        }
        Ok(Self {
            client,
            config,
            positions: BTreeMap::new(),
        })
    }

    /// Adds partitions (replacing the position of ones already assigned), resolving each
    /// start to an offset now.
    ///
    /// # Errors
    /// Errors of `list_offsets` and `fetch_committed`.
    pub async fn assign(&mut self, partitions: &[(&str, i32, StartAt)]) -> Result<()> {
        for (topic, partition, start) in partitions {
            let offset = match start {
                StartAt::Offset(o) => *o,
                StartAt::Earliest => {
                    self.client
                        .list_offsets(topic, *partition, EARLIEST)
                        .await?
                }
                StartAt::Latest => self.client.list_offsets(topic, *partition, LATEST).await?,
                StartAt::Committed(group) => {
                    let committed = self
                        .client
                        .fetch_committed(group, &[(topic, *partition)])
                        .await?;
                    match committed.first().and_then(|c| c.offset) {
                        Some(o) => o,
                        None => {
                            self.client
                                .list_offsets(topic, *partition, EARLIEST)
                                .await?
                        }
                    }
                }
            };
            self.positions
                .insert(((*topic).to_owned(), *partition), offset);
        }
        Ok(())
    }

    /// Stops reading `topic/partition`.
    pub fn unassign(&mut self, topic: &str, partition: i32) {
        self.positions.remove(&(topic.to_owned(), partition));
    }

    /// The next offset to read from `topic/partition`, if assigned.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions.get(&(topic.to_owned(), partition)).copied()
    }

    /// Moves the position of an assigned partition.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.positions.get_mut(&(topic.to_owned(), partition)) {
            *p = offset;
        }
    }

    /// Fetches from every assigned partition (one request per shard, all in flight at once)
    /// and returns the records after each position, in offset order per partition. Waits at
    /// most `max_wait` (capped at half the request timeout) for records to arrive.
    ///
    /// A partition whose owner moved or whose metadata is missing is skipped this time and its
    /// metadata refreshed; other errors are returned.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] (e.g. `OffsetOutOfRange`), decode errors of the batches,
    /// [`ClientError::UnsupportedCompression`], request errors.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumerRecord>> {
        let mut records = Vec::new();
        self.poll_with(max_wait, |buf, r| records.push(r.to_record(buf)))
            .await?;
        Ok(records)
    }

    /// [`poll`](Self::poll) without a record allocated: `f` sees each record in place, in
    /// the fetch response's buffer, and the count is returned. The fast path for consumers
    /// that look at each record once (a benchmark, a log shipper).
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    pub async fn poll_each(
        &mut self,
        max_wait: Duration,
        mut f: impl FnMut(&RecordRef<'_>),
    ) -> Result<usize> {
        let mut n = 0;
        self.poll_with(max_wait, |_, r| {
            n += 1;
            f(r);
        })
        .await?;
        Ok(n)
    }

    async fn poll_with(
        &mut self,
        max_wait: Duration,
        mut sink: impl FnMut(&Bytes, &RecordRef<'_>),
    ) -> Result<()> {
        let max_wait = max_wait.min(self.client.config().request_timeout / 2);
        let max_wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let mut by_shard: BTreeMap<u64, Vec<FetchPartitionT>> = BTreeMap::new();
        let positions: Vec<((String, i32), i64)> = self
            .positions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for ((topic, partition), offset) in positions {
            let shard = match self.client.owner(&topic, partition).await {
                Ok(s) => s,
                Err(e) if e.is_retriable() => {
                    self.client.invalidate(&topic);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut p = FetchPartitionT::default();
            p.topic = Some(topic);
            p.partition = partition;
            p.offset = offset;
            p.max_bytes = clamp_i32(self.config.partition_max_bytes);
            by_shard.entry(shard).or_default().push(p);
        }
        let mut pending: Vec<PendingResponse> = Vec::with_capacity(by_shard.len());
        for (shard, partitions) in by_shard {
            let mut req = FetchRequestT::default();
            req.max_wait_ms = max_wait_ms;
            req.min_bytes = clamp_i32(self.config.min_bytes);
            req.max_bytes = clamp_i32(self.config.max_bytes);
            req.partitions = Some(partitions);
            let started = async {
                let conn = self.client.shard_conn(shard).await?;
                conn.start_call(BodyT::FetchRequest(Box::new(req))).await
            }
            .await;
            match started {
                Ok(p) => pending.push(p),
                Err(e) if e.is_retriable() => tracing::debug!(shard, error = %e, "fetch skipped"),
                Err(e) => return Err(e),
            }
        }
        if pending.is_empty() && !self.positions.is_empty() {
            // Nothing could be asked; do not spin.
            glommio::timer::sleep(max_wait.min(self.client.config().retry_backoff)).await;
        }
        for p in pending {
            match p.wait().await {
                Ok(resp) => self.take_records(&resp, &mut sink)?,
                Err(e) if e.is_retriable() => tracing::debug!(error = %e, "fetch failed"),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn take_records(
        &mut self,
        resp: &Response,
        sink: &mut impl FnMut(&Bytes, &RecordRef<'_>),
    ) -> Result<()> {
        let frame = resp.frame()?;
        let r = frame
            .message
            .body_as_fetch_response()
            .ok_or_else(|| unexpected("FetchResponse", resp))?;
        for p in r.partitions().unwrap_or_default() {
            let topic = p.topic().unwrap_or_default();
            let partition = p.partition();
            let key = (topic.to_owned(), partition);
            let Some(&position) = self.positions.get(&key) else {
                continue;
            };
            match p.error() {
                ErrorCode::None => {}
                ErrorCode::NotOwner | ErrorCode::UnknownTopicOrPartition => {
                    self.client.invalidate(topic);
                    continue;
                }
                code => ClientError::check(code, topic, Some(partition))?,
            }
            let data = frame.batches(p.batches())?;
            let next = decode_batches(data, topic, partition, position, &mut |r| {
                sink(resp.bytes(), r);
            })?;
            self.positions.insert(key, next.max(position));
        }
        Ok(())
    }

    /// Commits the current positions for `group`.
    ///
    /// # Errors
    /// As [`Client::commit_offsets`].
    pub async fn commit(&self, group: &str) -> Result<()> {
        let offsets: Vec<(&str, i32, i64)> = self
            .positions
            .iter()
            .map(|((t, p), o)| (t.as_str(), *p, *o))
            .collect();
        self.client.commit_offsets(group, &offsets).await
    }
}

fn clamp_i32(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Calls `f` with each record at or after `position` of the batches in `data`, and returns
/// the offset after the last whole batch. A batch cut off at the end of `data` is ignored
/// (the next fetch starts at it).
pub(crate) fn decode_batches(
    data: &[u8],
    topic: &str,
    partition: i32,
    position: i64,
    f: &mut dyn FnMut(&RecordRef<'_>),
) -> Result<i64> {
    let limits = VerifyLimits::default();
    let mut rest = data;
    let mut next = position;
    while !rest.is_empty() {
        let header = match peek_header(rest) {
            Ok(h) => h,
            Err(WireError::Truncated { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        let len = header.batch_len() as usize;
        if rest.len() < len {
            break;
        }
        let view = verify(rest, &limits)?;
        match view.payload_format() {
            PayloadFormat::Native => {
                for r in view.records()? {
                    if r.offset >= position {
                        f(&RecordRef {
                            topic,
                            partition,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key,
                            value: r.value,
                        });
                    }
                }
            }
            PayloadFormat::Kafka => {
                // A compressed Kafka batch (what Filebeat and most producers send) is
                // inflated, bounded, when its stored header and its own attributes agree.
                let compression = view.header().compression();
                let own = RecordBatchHeader::read(view.payload()).map(|h| h.compression());
                let inflated;
                let payload = match own {
                    Some(codec) if codec != Compression::None && codec == compression => {
                        inflated = inflate(view.payload(), INFLATED_BATCH_BYTES_MAX)
                            .map_err(|e| ClientError::Inflate(e.to_string()))?;
                        &inflated[..]
                    }
                    _ if compression != Compression::None => {
                        return Err(ClientError::UnsupportedCompression(compression));
                    }
                    _ => view.payload(),
                };
                for r in crate::kafka::decode_records(payload, view.base_offset())? {
                    if r.offset >= position {
                        f(&RecordRef {
                            topic,
                            partition,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key.map(|k| &payload[k]),
                            value: &payload[r.value],
                        });
                    }
                }
            }
            other => return Err(WireError::UnknownPayloadFormat(other.0).into()),
        }
        next = view.next_offset();
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
