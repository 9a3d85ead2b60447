//! Tidelog wire formats: a pure codec crate (no I/O, no async).
//!
//! The unit of storage and transfer is the *batch*: a fixed 64-byte
//! little-endian [`BatchHeader`](batch::BatchHeader) followed by a payload.
//! The broker appends batches to the log verbatim; it only ever rewrites
//! `base_offset` (and, for Kafka payloads, the Kafka batch's own big-endian
//! `baseOffset` at bytes 64..72), which is why the CRC skips them.
//!
//! ```text
//!  byte  0        8        12          16  17  18  19  20             24                 28       30
//!       +--------+--------+-----------+---+---+---+---+--------------+------------------+--------+--------+
//!       |base_off|  crc   | batch_len |ver|fmt|cmp|flg| record_count | last_offset_delta| epoch  | rsvd   |
//!       |  i64   |  u32   |   u32     |u8 |u8 |u8 |u8 |     i32      |       i32        |  i16   |  u16   |
//!       +--------+--------+-----------+---+---+---+---+--------------+------------------+--------+--------+
//!  byte 32                40                48               56               60               64
//!       +-----------------+-----------------+----------------+----------------+----------------+
//!       | first_timestamp |  max_timestamp  |  producer_id   | base_sequence  |   reserved2    |
//!       |      i64        |      i64        |      i64       |      i32       |      u32       |
//!       +-----------------+-----------------+----------------+----------------+----------------+
//!  byte 64                                                                    batch_len
//!       +---------------------------------------------------------------------+
//!       | payload (batch_len - 64 bytes)                                      |
//!       |   Native: flatbuffers RecordBatch { records: [Record] }             |
//!       |   Kafka:  Kafka RecordBatch v2, verbatim                            |
//!       +---------------------------------------------------------------------+
//!
//!       |<- not  ->|<-------------- CRC-32C (Castagnoli) over [12 .. batch_len) ---------------->|
//!       | covered  |
//!
//!       Kafka payloads: CRC over [12 .. 64) ++ [72 .. batch_len); bytes 64..72 are the
//!       Kafka baseOffset, stamped with the same offset as base_offset.
//! ```
//!
//! * `base_offset` is assigned by the broker on append ([`batch::stamp_base_offset`]).
//! * `crc` covers everything from `batch_len` to the end of the payload, except
//!   the Kafka `baseOffset` of a Kafka payload ([`batch::compute_crc`]).
//! * Native records store `offset_delta` (relative to `base_offset`) and
//!   `timestamp_delta` (relative to `first_timestamp`).
//!
//! Encoding: [`batch::BatchBuilder`] (native) and [`batch::encode_kafka_wrapped`].
//! Decoding: [`batch::peek_header`] (header only, cheap) and [`batch::verify`]
//! (full check, returns a zero-copy [`batch::BatchView`]).
//!
//! The native protocol's frames (a flatbuffers header followed by raw
//! batches) live in [`native`].
//!
//! The schemas live in `wire/schema/tidelog.fbs` and `wire/schema/native.fbs`;
//! the flatc output is committed under `src/generated/` (regenerate with
//! `wire/schema/generate.sh`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

// The flatc object API names `alloc::` paths from nested modules, which only
// resolve when the crate root links `alloc` into the extern prelude.
extern crate alloc;

pub mod batch;
mod error;
mod generated;
/// The Kafka protocol codec (generated from Kafka's JSON message specs).
pub mod kafka;
pub mod kafka_records;
pub mod native;

pub use error::WireError;
