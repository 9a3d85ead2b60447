//! Tidelog's storage engine: durable partition logs on direct I/O.
//!
//! ```text
//! <data-dir>/<topic>/<partition>/
//!     00000000000000000000.log        batches, back to back (see tidelog-wire)
//!     00000000000000000000.index      sparse offset -> position (sealed segments)
//!     00000000000000000000.timeindex  sparse max timestamp -> offset (sealed segments)
//!     00000000000000004096.log        the active segment: preallocated, ends in zeros
//! ```
//!
//! All file I/O and time go through [`io`], so the simulator in [`io::sim`] can replace the
//! disk with seeded faults and crashes.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod broker;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod groups;
pub mod io;
pub mod limits;
pub mod log;
pub mod meta;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod sync;
pub mod topic_configs;

pub use config::LogConfig;
pub use error::{LogError, Result};
pub use log::{AppendInfo, Durability, LogRead, LogStats, PartitionLog, ReadChunk};
