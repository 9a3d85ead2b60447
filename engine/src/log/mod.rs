//! Partition logs: segments, indexes, the tail cache and recovery.

mod cache;
pub mod index;
mod partition;
mod producers;
pub mod segment;
mod writer;

pub use partition::{
    AppendInfo, Durability, LogRead, LogStats, PartitionLog, ReadChunk, PRODUCER_STATE_SEGMENTS,
    RECOVERY_POINT_FILE,
};

#[cfg(test)]
mod tests;
