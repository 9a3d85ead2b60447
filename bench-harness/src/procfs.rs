//! The broker's CPU time and resident memory from /proc, for `--broker-pid`: a throughput
//! figure means more next to what it cost the broker.
//!
//! `/proc/PID/stat` fields 14 and 15 (`utime`, `stime`) are in clock ticks of `USER_HZ`, which
//! Linux fixes at 100 for user space on every architecture it exports /proc on; `/proc/PID/status`
//! has `VmRSS` in kB.

use std::path::PathBuf;

/// Clock ticks per second of the `utime`/`stime` fields (the kernel's `USER_HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `pid`'s CPU time and RSS; `None` once the process is gone or /proc is unreadable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    Some(ProcSample {
        cpu_s: parse_stat_cpu_s(&stat)?,
        rss_bytes: parse_status_rss(&status)?,
    })
}

/// `utime + stime` of a `/proc/PID/stat` line, in seconds.
///
/// The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so
/// the fields are counted from the last `)`.
pub fn parse_stat_cpu_s(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is index 11 and stime index 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The broker's usage over the measured part of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BrokerUsage {
    /// CPU seconds from the measured start (after warm-up) to the end of the run.
    pub cpu_s: f64,
    /// Highest RSS seen (samples at the start, every second, and at the end).
    pub rss_max_bytes: u64,
    /// RSS at the end of the run.
    pub rss_end_bytes: u64,
    /// RSS at the measured start.
    pub rss_start_bytes: u64,
}

impl BrokerUsage {
    /// Usage between two samples, with the peak RSS seen in between.
    pub fn between(start: ProcSample, end: ProcSample, rss_max_bytes: u64) -> Self {
        Self {
            cpu_s: (end.cpu_s - start.cpu_s).max(0.0),
            rss_max_bytes: rss_max_bytes.max(start.rss_bytes).max(end.rss_bytes),
            rss_end_bytes: end.rss_bytes,
            rss_start_bytes: start.rss_bytes,
        }
    }

    /// CPU seconds per decimal GB of records moved (produced plus consumed); `None` for none.
    pub fn cpu_s_per_gb(&self, bytes_moved: u64) -> Option<f64> {
        (bytes_moved > 0).then(|| self.cpu_s / (bytes_moved as f64 / 1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (tide (log) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    4 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_s(stat), Some(3.0));
        assert_eq!(parse_stat_cpu_s("no name here"), None);
        assert_eq!(parse_stat_cpu_s("1 (x) S 1"), None, "truncated");
    }

    #[test]
    fn status_rss() {
        let status = "Name:\ttidelog\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthread\n"), None);
    }

    #[test]
    fn own_process_is_readable_and_cpu_grows() {
        let pid = std::process::id();
        let a = sample(pid).expect("own /proc entry");
        assert!(a.rss_bytes > 0);
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = sample(pid).expect("own /proc entry");
        assert!(b.cpu_s >= a.cpu_s);
        assert_eq!(sample(u32::MAX), None, "no such process");
    }

    #[test]
    fn usage_between_samples() {
        let a = ProcSample {
            cpu_s: 1.5,
            rss_bytes: 100,
        };
        let b = ProcSample {
            cpu_s: 4.0,
            rss_bytes: 300,
        };
        let u = BrokerUsage::between(a, b, 500);
        assert_eq!(u.cpu_s, 2.5);
        assert_eq!(
            (u.rss_max_bytes, u.rss_end_bytes, u.rss_start_bytes),
            (500, 300, 100)
        );
        assert_eq!(u.cpu_s_per_gb(2_000_000_000), Some(1.25));
        assert_eq!(u.cpu_s_per_gb(0), None);
    }
}
