//! Every bound of the client as a named constant, with the relations between them checked at
//! compile time.

use std::time::Duration;

/// Largest frame the client accepts from a server (`4 + frame_len`). A fetch response holds at
/// most the request's `max_bytes` of batches plus its header, so this bounds a fetch.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// Largest flatbuffers header accepted in a frame.
pub const FRAME_HEADER_BYTES_MAX: usize = 1 << 20;
/// Requests awaiting a response on one connection; a further request waits for a slot.
pub const IN_FLIGHT_MAX: usize = 64;
/// Bytes the connection reader asks the socket for at once (its buffer grows to a whole frame).
pub const READ_CHUNK_BYTES: usize = 64 << 10;

/// Default for [`ClientConfig::request_timeout`](crate::ClientConfig).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default for [`ClientConfig::connect_timeout`](crate::ClientConfig).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default for [`ClientConfig::retries`](crate::ClientConfig): attempts after the first one.
pub const RETRIES_DEFAULT: usize = 8;
/// Most retries a configuration may ask for.
pub const RETRIES_MAX: usize = 64;
/// Default for [`ClientConfig::retry_backoff`](crate::ClientConfig); attempt `n` waits `n` times this.
pub const RETRY_BACKOFF_DEFAULT: Duration = Duration::from_millis(50);

/// Default for [`ProducerConfig::batch_bytes`](crate::ProducerConfig).
pub const BATCH_BYTES_DEFAULT: usize = 256 << 10;
/// Largest [`ProducerConfig::batch_bytes`](crate::ProducerConfig) (a batch is sent in one frame).
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// Default for [`ProducerConfig::max_in_flight`](crate::ProducerConfig): batches per partition.
pub const BATCHES_IN_FLIGHT_DEFAULT: usize = 5;
/// Largest [`ProducerConfig::max_in_flight`](crate::ProducerConfig); at most one connection's
/// worth of requests.
pub const BATCHES_IN_FLIGHT_MAX: usize = IN_FLIGHT_MAX;
/// Default for [`ProducerConfig::buffer_bytes`](crate::ProducerConfig): record bytes buffered or
/// in flight across all partitions before `send` starts queueing.
pub const PRODUCER_BUFFER_BYTES_DEFAULT: usize = 32 << 20;
/// Default for [`ProducerConfig::backlog_bytes`](crate::ProducerConfig): record bytes queued
/// behind a full buffer (or behind a metadata lookup) before `send` fails with `BufferFull`.
pub const PRODUCER_BACKLOG_BYTES_DEFAULT: usize = 32 << 20;

/// Default for [`ConsumerConfig::partition_max_bytes`](crate::ConsumerConfig).
pub const FETCH_PARTITION_BYTES_DEFAULT: usize = 1 << 20;
/// Default for [`ConsumerConfig::max_bytes`](crate::ConsumerConfig): one fetch request.
pub const FETCH_BYTES_DEFAULT: usize = 16 << 20;
/// Most bytes one compressed Kafka batch may inflate to; more is an error, never an
/// allocation of that size.
pub const INFLATED_BATCH_BYTES_MAX: usize = 64 << 20;
/// Largest fetch a consumer asks for; the response must fit a frame with room for its header.
pub const FETCH_BYTES_MAX: usize = FRAME_BYTES_MAX - FRAME_HEADER_BYTES_MAX - 8;

const _: () = assert!(FRAME_HEADER_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX + FRAME_HEADER_BYTES_MAX <= FRAME_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX);
const _: () = assert!(BATCHES_IN_FLIGHT_DEFAULT <= BATCHES_IN_FLIGHT_MAX);
const _: () = assert!(FETCH_BYTES_DEFAULT <= FETCH_BYTES_MAX);
const _: () = assert!(FETCH_PARTITION_BYTES_DEFAULT <= FETCH_BYTES_DEFAULT);
const _: () = assert!(RETRIES_DEFAULT <= RETRIES_MAX);
const _: () = assert!(IN_FLIGHT_MAX <= u32::MAX as usize);
