//! Start-up checks that turn the usual ways a broker fails to start into one actionable line.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// io_uring must be available to this process.
pub fn io_uring() -> Result<()> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        match text.trim() {
            "0" => {}
            "1" => {
                // 1 allows only processes in the io_uring group or with CAP_SYS_ADMIN.
                // SAFETY: geteuid has no preconditions and cannot fail.
                if unsafe { libc::geteuid() } != 0 {
                    bail!(
                        "io_uring is restricted on this host (kernel.io_uring_disabled = 1): run \
                         as root, join the io_uring group, or `sysctl kernel.io_uring_disabled=0`"
                    );
                }
            }
            other => bail!(
                "io_uring is disabled on this host (kernel.io_uring_disabled = {other}): \
                 enable it with `sysctl kernel.io_uring_disabled=0`"
            ),
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one (connections, segment files and
/// index files all take descriptors; the usual soft default of 1,024 runs out first) and
/// returns the limit in force.
pub fn raise_nofile() -> u64 {
    raise_to_hard_limit(libc::RLIMIT_NOFILE)
}

/// Raises the soft locked-memory limit to the hard one when that is allowed, so glommio can
/// register its I/O buffers; the engine sizes them to whatever limit remains.
pub fn raise_memlock() -> u64 {
    raise_to_hard_limit(libc::RLIMIT_MEMLOCK)
}

/// Raises the soft limit of `resource` to its hard limit when allowed; returns the soft
/// limit in force afterwards.
fn raise_to_hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(resource, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(resource, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The data directory must exist (it is created) and live on a filesystem with O_DIRECT.
/// The memory this process may use: the machine's (`MemTotal`), or its cgroup's limit
/// (`memory.max`, cgroup v2) when that is lower. `None` when neither can be read.
pub fn usable_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

pub fn data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    // Named like the broker's own files ("__" leads no topic name), so that no topic a client
    // creates can collide with it (a topic ".tidelog-odirect-probe", a legal Kafka name, made
    // this open fail with EISDIR and the broker unable to start).
    let probe = dir.join("__odirect-probe");
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let result = match opened {
        Ok(mut file) => file
            .write_all(&[])
            .with_context(|| format!("cannot write in {}", dir.display())),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(anyhow::anyhow!(
            "the filesystem of {} does not support O_DIRECT (tmpfs or overlayfs?): put \
             --data-dir on ext4 or xfs",
            dir.display()
        )),
        Err(e) => Err(e).with_context(|| format!("cannot write in {}", dir.display())),
    };
    let _ = std::fs::remove_file(&probe);
    result
}

/// How long `serve` waits for a port held by listeners that are going away: a broker killed
/// with `kill -9` exits at once, but its io_uring is torn down by the kernel afterwards, and
/// until then the sockets its pending accepts hold stay bound (LISTEN) on its ports.
pub const PORT_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// The port must be free. Shards bind it with SO_REUSEPORT, which would let a second broker
/// (or the dying listeners of one just killed, whose queues nobody accepts from) share it
/// silently; this plain bind (SO_REUSEADDR only, so TIME_WAIT does not count) refuses that.
/// A port still held is retried for up to [`PORT_RELEASE_WAIT`], so a supervisor's restart
/// right after `kill -9` starts once the old sockets are gone.
pub fn port_free(addr: std::net::SocketAddr) -> Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    let mut told = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if std::time::Instant::now() >= deadline {
                    bail!(
                        "{addr} is already in use (another broker running?): stop it or pick \
                         another port (--native-addr, --kafka-addr, --kafka-node-port-base)"
                    );
                }
                if !told {
                    eprintln!(
                        "tidelog: waiting up to {PORT_RELEASE_WAIT:?} for {addr} to be released"
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind {addr}")),
        }
    }
}

/// Explains a failure to bind, the commonest start-up error.
pub fn explain_startup(error: &str, native_addr: &str) -> String {
    if error.contains("Address already in use") || error.contains("os error 98") {
        format!(
            "{native_addr} is already in use (another broker running?): stop it or pick another \
             port with --native-addr"
        )
    } else if error.contains("locked-memory") {
        error.to_string()
    } else {
        format!("broker failed to start: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_memory_is_read_from_the_machine() {
        let bytes = usable_memory().expect("/proc/meminfo is readable on Linux");
        assert!(bytes >= 64 << 20, "implausibly little memory: {bytes}");
    }

    #[test]
    fn data_dir_on_a_real_filesystem_passes() {
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.with_file_name("checks-data-dir");
        data_dir(&dir).expect("target/ is on a real filesystem");
        assert!(dir.is_dir());
    }

    #[test]
    fn a_held_port_is_reported_in_use() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr");
        let error = port_free(addr).expect_err("port is held");
        assert!(error.to_string().contains("--native-addr"), "{error}");
        drop(held);
        port_free(addr).expect("free again");
    }

    #[test]
    fn port_in_use_gets_an_actionable_message() {
        let text = explain_startup(
            "bind 127.0.0.1:9292: Address already in use (os error 98)",
            "127.0.0.1:9292",
        );
        assert!(text.contains("--native-addr"), "{text}");
    }
}
