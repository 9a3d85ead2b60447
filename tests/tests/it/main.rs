//! Integration tests of the storage engine against real files (glommio, O_DIRECT), of the
//! `tidelog` command as real processes, and of real Kafka clients against `tidelog serve`.

mod batch_cache;
mod bench_smoke;
mod broker_process;
mod cli;
mod cluster;
mod faults;
mod hostile_clients;
mod kafka_clients;
mod kafka_protocol;
mod native_broker;
mod open_files;
mod power_loss;
mod restart;
mod storage_corruption;
mod storage_crash;
mod storage_disk_full;

/// A fresh directory for test data on the build's real filesystem (O_DIRECT does not work on
/// tmpfs), removed when dropped.
pub fn test_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create test directory")
}
