//! What a run measures: latency histograms per executor (merged at the end), error counts by
//! kind, and live counters that the progress line reads every second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tidelog_client::ClientError;

/// Highest latency a histogram holds (longer ones are clamped): one hour in µs.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Nanoseconds since a process-wide origin. Producers and consumers run in one process, so a
/// monotonic clock serves for end-to-end latency (a wall clock could step).
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A latency distribution in µs.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid"))
    }
}

impl Latency {
    /// Records the time from `from_ns` to `to_ns` ([`now_ns`] values).
    pub fn record_ns(&mut self, from_ns: u64, to_ns: u64) {
        let us = to_ns.saturating_sub(from_ns) / 1000;
        self.0.saturating_record(us.clamp(1, LATENCY_US_MAX));
    }

    pub fn merge(&mut self, other: &Latency) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds merge");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let q = |q| self.0.value_at_quantile(q);
        LatencySummary {
            count: self.0.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: self.0.max(),
        }
    }

    /// The percentile curve as HdrHistogram plots it: points `(x, percentile, µs)` where
    /// `percentile = 100 · (1 − 10^−x)`, so x = 1, 2, 3 are p90, p99, p99.9; `steps` points per
    /// decade, up to the decade that holds the last sample (at least 1). Empty without samples.
    pub fn percentile_curve(&self, steps: u32) -> Vec<(f64, f64, u64)> {
        let n = self.0.len();
        if n == 0 {
            return Vec::new();
        }
        // Beyond log10(n) decades every point is the max.
        let decades = (n as f64).log10().ceil().max(1.0);
        let steps = steps.max(1);
        let last = (decades * f64::from(steps)) as u32;
        (0..=last)
            .map(|i| {
                let x = f64::from(i) / f64::from(steps);
                let quantile = 1.0 - 10f64.powf(-x);
                (x, 100.0 * quantile, self.0.value_at_quantile(quantile))
            })
            .collect()
    }
}

/// Percentiles of a [`Latency`], in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99,
            "p999": self.p999, "p9999": self.p9999, "max": self.max,
        })
    }
}

/// Errors by kind (`"timeout"`, `"protocol:NotOwner"`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>, n: u64) {
        *self.0.entry(kind.into()).or_default() += n;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, n) in &other.0 {
            self.add(k.clone(), *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// A short stable name for the kind of a client error.
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Connect { .. } => "connect".into(),
        ClientError::ConnectionClosed { .. } => "connection_closed".into(),
        ClientError::Io { .. } => "io".into(),
        ClientError::Protocol { code, .. } => format!("protocol:{code:?}"),
        ClientError::UnknownTopic { .. } => "unknown_topic".into(),
        ClientError::Timeout(_) => "timeout".into(),
        ClientError::Wire(_) | ClientError::KafkaBatch(_) => "malformed".into(),
        ClientError::RecordTooLarge { .. } => "record_too_large".into(),
        ClientError::BufferFull { .. } => "buffer_full".into(),
        ClientError::Closed => "closed".into(),
        _ => "other".into(),
    }
}

/// Counters shared by every executor and read by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Records acknowledged (acks=0: handed to the socket).
    pub produced: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Records per second and decimal MB per second (like fio) of `records` and `bytes` over
/// `elapsed`.
pub fn rates(records: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let s = elapsed.as_secs_f64().max(1e-9);
    (records as f64 / s, bytes as f64 / 1e6 / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_and_merge() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for us in 1..=1000u64 {
            a.record_ns(0, us * 1000);
        }
        b.record_ns(5_000, 2_000_000_005_000);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1001);
        assert!((495..=505).contains(&s.p50), "{s:?}");
        assert!((985..=995).contains(&s.p99), "{s:?}");
        assert!(s.max >= 1_999_000_000, "{s:?}");
        assert!(s.p9999 >= s.p999 && s.p9999 <= s.max, "{s:?}");
    }

    #[test]
    fn percentile_curve_is_monotonic_and_log_spaced() {
        assert!(Latency::default().percentile_curve(4).is_empty());
        let mut l = Latency::default();
        for us in 1..=10_000u64 {
            l.record_ns(0, us * 1000);
        }
        let curve = l.percentile_curve(2);
        // 10,000 samples: 4 decades, 2 points each, plus x = 0.
        assert_eq!(curve.len(), 9);
        assert_eq!(curve[0].0, 0.0);
        assert!((curve[2].1 - 90.0).abs() < 1e-9, "{curve:?}");
        assert!((curve[4].1 - 99.0).abs() < 1e-9, "{curve:?}");
        assert!(curve.windows(2).all(|w| w[0].2 <= w[1].2), "{curve:?}");
    }

    #[test]
    fn errors_merge_by_kind() {
        let mut a = Errors::default();
        a.add(error_kind(&ClientError::Timeout(Duration::from_secs(1))), 1);
        let mut b = Errors::default();
        b.add(error_kind(&ClientError::Timeout(Duration::from_secs(2))), 1);
        b.add(error_kind(&ClientError::Closed), 1);
        a.merge(&b);
        assert_eq!(a.0.get("timeout"), Some(&2));
        assert_eq!(a.total(), 3);
    }
}
