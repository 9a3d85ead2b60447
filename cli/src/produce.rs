//! `tidelog produce`: each line of stdin becomes a record.
//!
//! stdin is read in large blocking chunks on glommio's blocking-thread pool, one chunk ahead of
//! the executor, so reading overlaps sending. Records go to the batching [`Producer`]; the
//! deliveries are settled in order, which also bounds the bytes and records in flight (the
//! producer's `send` fails rather than waits when its buffers are full).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use tidelog_client::{Acks, ClientError, Delivery, Partitioner, Producer, ProducerConfig};

use crate::connect::{explain, on_executor, BrokerArgs};

/// Bytes of stdin read per chunk at most.
const CHUNK_BYTES: usize = 1 << 20;
/// Record bytes sent and not yet settled; below the producer's buffer so `send` never fails
/// with `BufferFull`.
const PENDING_BYTES_MAX: usize = 16 << 20;
/// Records sent and not yet settled.
const PENDING_RECORDS_MAX: usize = 200_000;

/// `--acks` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AcksArg {
    /// No acknowledgement: fire and forget (offsets unknown).
    #[value(name = "0")]
    None,
    /// After the broker appended the record.
    #[value(name = "1")]
    Leader,
    /// After the record is durable (fdatasync).
    #[value(name = "all", alias = "-1")]
    All,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// When the broker acknowledges a record.
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// Split each line at the first SEP: the part before is the key, the rest the value
    /// (a line without SEP gets no key).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Write every record to this partition (default: by key hash, round robin without keys).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// How long a partition's batch waits for more records before it is sent.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    linger_ms: u64,
    /// Print `OK <partition> <offset> <value>` on stdout for each acknowledged record.
    #[arg(long, short = 'v')]
    verbose: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn run(args: ProduceArgs) -> Result<()> {
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    on_executor(move || produce(args))
}

/// What the stdin reader hands over: complete lines (each ending in `\n`, except the last
/// one at end of input), and the reader's state for the next call.
struct Chunk {
    lines: Vec<u8>,
    eof: bool,
    state: ReaderState,
}

struct ReaderState {
    /// Bytes after the last newline of the previous chunk.
    carry: Vec<u8>,
}

fn read_chunk(mut state: ReaderState) -> std::io::Result<Chunk> {
    let mut buf = std::mem::take(&mut state.carry);
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    loop {
        let start = buf.len();
        buf.resize(start + CHUNK_BYTES, 0);
        let n = match stdin.read(&mut buf[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        buf.truncate(start + n);
        if n == 0 {
            return Ok(Chunk {
                lines: buf,
                eof: true,
                state,
            });
        }
        if let Some(last) = buf[start..].iter().rposition(|&b| b == b'\n') {
            state.carry = buf.split_off(start + last + 1);
            return Ok(Chunk {
                lines: buf,
                eof: false,
                state,
            });
        }
    }
}

struct Pending {
    delivery: Delivery,
    bytes: usize,
    /// The value, kept for `--verbose`.
    value: Option<Vec<u8>>,
}

struct Tally {
    sent: u64,
    failed: u64,
    first_error: Option<ClientError>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    out: Option<std::io::BufWriter<std::io::Stdout>>,
}

impl Tally {
    fn settled(
        &mut self,
        p: Pending,
        result: tidelog_client::Result<tidelog_client::RecordMetadata>,
    ) -> Result<()> {
        self.pending_bytes -= p.bytes;
        match result {
            Ok(md) => {
                if let (Some(out), Some(value)) = (self.out.as_mut(), p.value) {
                    write!(out, "OK {} {} ", md.partition, md.offset)?;
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
        Ok(())
    }

    /// Waits for the oldest record.
    async fn settle_one(&mut self) -> Result<()> {
        if let Some(p) = self.pending.pop_front() {
            let mut p = p;
            let result = (&mut p.delivery).await;
            self.settled(p, result)?;
        }
        Ok(())
    }

    /// Takes the records at the front that are already resolved, without waiting.
    fn settle_ready(&mut self) -> Result<()> {
        while let Some(front) = self.pending.front_mut() {
            let Some(result) = futures_lite::future::block_on(futures_lite::future::poll_once(
                &mut front.delivery,
            )) else {
                break;
            };
            let p = self.pending.pop_front().expect("front exists");
            self.settled(p, result)?;
        }
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
        }
        Ok(())
    }
}

async fn produce(a: ProduceArgs) -> Result<()> {
    let broker = a.broker.broker.clone();
    let client = a.broker.connect().await?;
    let info = client
        .topic(&a.topic)
        .await
        .map_err(|e| explain(e, &broker))?;
    if let Some(p) = a.partition {
        if !info.partitions.contains_key(&p) {
            bail!(
                "topic {} has no partition {p} (it has {})",
                a.topic,
                info.partition_count()
            );
        }
    }
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: a.acks.into(),
            linger: Duration::from_millis(a.linger_ms),
            partitioner: Partitioner::KeyHash,
            ..ProducerConfig::default()
        },
    )?;
    let separator = a.key_separator.as_deref().map(str::as_bytes);
    let mut tally = Tally {
        sent: 0,
        failed: 0,
        first_error: None,
        pending: VecDeque::new(),
        pending_bytes: 0,
        out: a
            .verbose
            .then(|| std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
    };
    let read_next = |state| glommio::executor().spawn_blocking(move || read_chunk(state));
    let mut stopped_early = false;
    let mut next = Some(read_next(ReaderState { carry: Vec::new() }));
    while let Some(reading) = next.take() {
        let chunk = reading.await?;
        if !chunk.eof {
            next = Some(read_next(chunk.state));
        }
        let mut lines = chunk.lines.as_slice();
        if chunk.eof && lines.is_empty() {
            break;
        }
        if lines.last() == Some(&b'\n') {
            lines = &lines[..lines.len() - 1];
        }
        for line in lines.split(|&b| b == b'\n') {
            let (key, value) = match separator {
                Some(sep) => match find(line, sep) {
                    Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
                    None => (None, line),
                },
                None => (None, line),
            };
            let bytes = key.map_or(0, <[u8]>::len) + value.len();
            while !tally.pending.is_empty()
                && (tally.pending_bytes + bytes > PENDING_BYTES_MAX
                    || tally.pending.len() >= PENDING_RECORDS_MAX)
            {
                tally.settle_one().await?;
            }
            let delivery = producer.send(&a.topic, key, value, a.partition);
            tally.sent += 1;
            tally.pending_bytes += bytes;
            tally.pending.push_back(Pending {
                delivery,
                bytes,
                value: a.verbose.then(|| value.to_vec()),
            });
        }
        tally.settle_ready()?;
        if tally.failed > 0 {
            stopped_early = next.is_some();
            // Stop at the first failure rather than push the rest of stdin at a broker that
            // is failing; what was sent is still settled and counted below.
            break;
        }
    }
    producer.flush().await;
    while !tally.pending.is_empty() {
        tally.settle_one().await?;
    }
    if let Some(out) = tally.out.as_mut() {
        out.flush()?;
    }
    if let Some(e) = tally.first_error {
        let stopped = if stopped_early {
            "; stopped reading stdin at the first failure"
        } else {
            ""
        };
        bail!(
            "{} of {} records failed{stopped}: {:#}",
            tally.failed,
            tally.sent,
            explain(e, &broker)
        );
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return haystack.iter().position(|&b| b == needle[0]);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
