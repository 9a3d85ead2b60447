//! Partition logs: segments, indexes, the shard's batch cache and recovery.

pub mod cache;
pub mod epochs;
pub mod files;
pub mod index;
pub mod memory;
mod partition;
mod producers;
pub mod segment;
mod writer;

pub use partition::{reset_closed, truncate_closed};
pub use partition::{
    AppendInfo, Durability, LogRead, LogResources, LogStats, PartitionLog, ReadChunk, SnapshotWhen,
    Tunables, CLEAN_SHUTDOWN_FILE, PRODUCER_STATE_FILE, PRODUCER_STATE_SEGMENTS,
    RECOVERY_POINT_FILE,
};

#[cfg(test)]
mod tests;

/// The topic and partition of a partition directory (`<data-dir>/<topic>/<partition>`), for
/// log lines: operators search by them, not by paths.
pub(crate) fn topic_partition(dir: &std::path::Path) -> (String, String) {
    let name = |p: Option<&std::path::Path>| {
        p.and_then(std::path::Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    (name(dir.parent()), name(Some(dir)))
}

#[cfg(test)]
mod topic_partition_tests {
    #[test]
    fn log_fields_come_from_the_partition_directory() {
        use std::path::Path;
        let of = super::topic_partition;
        let dir = (String::from("orders.eu"), String::from("7"));
        assert_eq!(of(Path::new("/data/orders.eu/7")), dir);
        assert_eq!(of(Path::new("7")), (String::new(), String::from("7")));
    }
}
