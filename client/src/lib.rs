//! The Tidelog native client: connections, admin, producer and consumer on glommio.
//!
//! Everything here is `!Send` and runs on the glommio executor that created it, like the
//! broker's shards: one client per thread.
//!
//! * [`Connection`]: one TCP connection to one shard; handshake, pipelined requests routed by
//!   correlation id (at most [`limits::IN_FLIGHT_MAX`] in flight).
//! * [`Client`]: metadata, one lazy connection per shard endpoint, partition routing, bounded
//!   retries with metadata refresh; topic admin, `list_offsets`, offset commit and fetch.
//! * [`Producer`]: per-partition batching (size or linger), bounded buffer and backlog,
//!   bounded pipelining per partition; [`Partitioner::KeyHash`] is `crc32c(key) % partitions`
//!   (not Kafka's murmur2).
//! * [`Consumer`]: assigned partitions, long-poll fetch per shard, native and Kafka v2
//!   (uncompressed) batches.
//!
//! The broker serves one request at a time per connection, so a consumer's long poll delays
//! other requests on the same shard connection: give a consumer that runs beside a producer its
//! own [`Client`].
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod connection;
mod error;
pub mod limits;
pub mod socket;
mod sync;

pub use connection::{ConnectOptions, Connection, HandshakeInfo, PendingResponse, Response};
pub use error::{ClientError, Result};

mod client;
pub mod kafka;
mod partitioner;

pub use client::{
    Client, ClientConfig, CommittedOffset, Endpoint, Metadata, TopicInfo, EARLIEST, LATEST,
};
pub use partitioner::Partitioner;
mod producer;

pub use producer::{Acks, BatchReport, Delivery, Producer, ProducerConfig, RecordMetadata};
mod consumer;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, RecordRef, StartAt};
