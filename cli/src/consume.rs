//! `tidelog consume`: prints records, one per line, optionally with partition, offset and key
//! in front (tab-separated, like kcat).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tidelog_client::{Client, Consumer, ConsumerConfig, ConsumerRecord, StartAt};

use crate::connect::{explain, on_executor, BrokerArgs};

/// Longest single fetch wait, so SIGINT and `--timeout-ms` are noticed promptly.
const POLL_WAIT_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the earliest offset (default: only records that arrive from now on; with
    /// --group: where the group left off, or here if it has no committed offset).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    offset: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Consumer group: start from its committed offsets and commit progress periodically and
    /// at exit.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Exit after this many records.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Print the key (empty for records without one).
    #[arg(long)]
    print_key: bool,
    /// Print the partition.
    #[arg(long)]
    print_partition: bool,
    /// Print the offset.
    #[arg(long)]
    print_offset: bool,
    /// Output format: `text` (the value, after the --print-* columns, tab-separated) or
    /// `json` (one object per line: topic, partition, offset, timestamp, key, value; key
    /// and value as UTF-8 strings, or `{"base64": ...}` when they are not UTF-8; a null key
    /// is null).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Exit after this many milliseconds without a record (default: run until SIGINT).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// With --group: commit at least this often.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    commit_interval_ms: u64,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub fn run(args: ConsumeArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    on_executor(move || consume(args, stop))
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tab-separated columns, the value last.
    Text,
    /// One JSON object per record.
    Json,
}

struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    key: bool,
    partition: bool,
    offset: bool,
    format: Format,
}

/// `bytes` as a JSON value: a string when they are UTF-8, else `{"base64": "..."}`.
fn json_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => json_string(text),
        Err(_) => format!("{{\"base64\":\"{}\"}}", base64(bytes)),
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Printer {
    fn record(&mut self, r: &ConsumerRecord) -> std::io::Result<()> {
        if self.format == Format::Json {
            let key = r
                .key
                .as_deref()
                .map_or_else(|| "null".to_owned(), json_bytes);
            return writeln!(
                self.out,
                "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{key},\"value\":{}}}",
                json_string(&r.topic),
                r.partition,
                r.offset,
                r.timestamp,
                json_bytes(&r.value)
            );
        }
        if self.partition {
            write!(self.out, "{}\t", r.partition)?;
        }
        if self.offset {
            write!(self.out, "{}\t", r.offset)?;
        }
        if self.key {
            if let Some(k) = &r.key {
                self.out.write_all(k)?;
            }
            self.out.write_all(b"\t")?;
        }
        self.out.write_all(&r.value)?;
        self.out.write_all(b"\n")
    }
}

/// Where each partition starts, per the flags.
async fn starts(a: &ConsumeArgs, client: &Client, partitions: &[i32]) -> Result<Vec<StartAt>> {
    let fallback = if a.from_beginning {
        StartAt::Earliest
    } else {
        StartAt::Latest
    };
    if let Some(o) = a.offset {
        return Ok(partitions.iter().map(|_| StartAt::Offset(o)).collect());
    }
    let Some(group) = &a.group else {
        return Ok(partitions.iter().map(|_| fallback.clone()).collect());
    };
    let wanted: Vec<(&str, i32)> = partitions.iter().map(|&p| (a.topic.as_str(), p)).collect();
    let committed = client
        .fetch_committed(group, &wanted)
        .await
        .map_err(|e| explain(e, &a.broker.broker))
        .with_context(|| format!("cannot read the committed offsets of group {group}"))?;
    Ok(committed
        .iter()
        .map(|c| c.offset.map_or_else(|| fallback.clone(), StartAt::Offset))
        .collect())
}

async fn commit(
    client: &Client,
    a: &ConsumeArgs,
    group: &str,
    positions: &BTreeMap<i32, i64>,
) -> Result<()> {
    let offsets: Vec<(&str, i32, i64)> = positions
        .iter()
        .map(|(&p, &o)| (a.topic.as_str(), p, o))
        .collect();
    client
        .commit_offsets(group, &offsets)
        .await
        .map_err(|e| explain(e, &a.broker.broker))
        .with_context(|| format!("cannot commit the offsets of group {group}"))
}

async fn consume(a: ConsumeArgs, stop: Arc<AtomicBool>) -> Result<()> {
    let broker = a.broker.broker.clone();
    let client = a.broker.connect().await?;
    let info = client
        .topic(&a.topic)
        .await
        .map_err(|e| explain(e, &broker))?;
    let partitions: Vec<i32> = match a.partition {
        Some(p) if info.partitions.contains_key(&p) => vec![p],
        Some(p) => bail!(
            "topic {} has no partition {p} (it has {})",
            a.topic,
            info.partition_count()
        ),
        None => info.partitions.keys().copied().collect(),
    };
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default())?;
    let assignment: Vec<(&str, i32, StartAt)> = partitions
        .iter()
        .zip(starts(&a, &client, &partitions).await?)
        .map(|(&p, s)| (a.topic.as_str(), p, s))
        .collect();
    consumer
        .assign(&assignment)
        .await
        .map_err(|e| explain(e, &broker))?;
    // Next offset per partition after what was printed: what a group commits. The
    // consumer's own positions run ahead when --count stops in the middle of a fetch.
    let mut positions: BTreeMap<i32, i64> = partitions
        .iter()
        .filter_map(|&p| consumer.position(&a.topic, p).map(|o| (p, o)))
        .collect();
    let mut printer = Printer {
        out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
        key: a.print_key,
        partition: a.print_partition,
        offset: a.print_offset,
        format: a.format,
    };
    let timeout = a.timeout_ms.map(Duration::from_millis);
    let commit_interval = Duration::from_millis(a.commit_interval_ms);
    let mut printed: u64 = 0;
    let mut last_record = Instant::now();
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    let mut flowing = false;
    'outer: loop {
        if stop.load(Ordering::Relaxed) || a.count.is_some_and(|n| printed >= n) {
            break;
        }
        // A poll waits for every shard's answer, and a shard with nothing new holds its
        // answer for the whole wait: while records flow, ask without waiting.
        let mut wait = if flowing {
            Duration::ZERO
        } else {
            POLL_WAIT_MAX
        };
        if let Some(t) = timeout {
            let left = t.saturating_sub(last_record.elapsed());
            if left.is_zero() {
                break;
            }
            wait = wait.min(left);
        }
        let records = consumer.poll(wait).await.map_err(|e| explain(e, &broker))?;
        flowing = !records.is_empty();
        if flowing {
            last_record = Instant::now();
        }
        for r in &records {
            if a.count.is_some_and(|n| printed >= n) {
                break;
            }
            if let Err(e) = printer.record(r) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    break 'outer;
                }
                return Err(e).context("cannot write to stdout");
            }
            positions.insert(r.partition, r.offset + 1);
            printed += 1;
            uncommitted = true;
        }
        match printer.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            other => other.context("cannot write to stdout")?,
        }
        if let Some(group) = &a.group {
            if uncommitted && last_commit.elapsed() >= commit_interval {
                commit(&client, &a, group, &positions).await?;
                last_commit = Instant::now();
                uncommitted = false;
            }
        }
    }
    match printer.out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write to stdout")?,
    }
    if let Some(group) = &a.group {
        commit(&client, &a, group, &positions).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{base64, json_bytes};

    #[test]
    fn json_values_escape_and_fall_back_to_base64() {
        assert_eq!(json_bytes(b"a\"b\\c\nd\x01"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_bytes(&[0xff, 0x00, 0x10]), r#"{"base64":"/wAQ"}"#);
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }
}
