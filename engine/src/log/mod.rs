//! Partition logs: segments, indexes, the tail cache and recovery.

mod cache;
pub mod index;
mod partition;
pub mod segment;
mod writer;

pub use partition::{AppendInfo, Durability, LogRead, LogStats, PartitionLog, ReadChunk};

#[cfg(test)]
mod tests;
