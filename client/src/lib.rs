//! The Tidelog native client: connections, admin, producer and consumer on glommio.
//!
//! Everything here is `!Send` and runs on the glommio executor that created it, like the
//! broker's shards: one client per thread.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod connection;
mod error;
pub mod limits;
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

pub use producer::{Acks, Delivery, Producer, ProducerConfig, RecordMetadata};
mod consumer;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, StartAt};
