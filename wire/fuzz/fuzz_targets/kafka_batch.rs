//! Feeds arbitrary bytes to `validate_produce_batch` (the Produce hot path) and,
//! when a batch is accepted, checks that wrapping it for the log yields a batch
//! the log accepts and that serves the same Kafka bytes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_wire::batch::{stamp_base_offset, verify, VerifyLimits};
use tidelog_wire::kafka_records::{kafka_payload, seal_produce_batch, validate_produce_batch};

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the produce version, so both zstd rules are reached.
    let (version, records) = match data {
        [a, b, rest @ ..] => (i16::from_be_bytes([*a, *b]), rest),
        _ => (9, data),
    };
    let Ok(validated) = validate_produce_batch(records, version, 1 << 20) else {
        return;
    };
    let (info, sealed) = seal_produce_batch(&bytes::Bytes::copy_from_slice(records), version, 1 << 20)
        .expect("what validates, seals");
    assert_eq!(info, validated);
    assert!(info.record_count > 0);
    assert_eq!(info.last_offset_delta + 1, info.record_count);
    let mut stored = sealed.into_bytes();
    stamp_base_offset(&mut stored, 42).expect("a wrapped batch holds a header");
    verify(&stored, &VerifyLimits::default()).expect("wrapped batches verify");
    let served = kafka_payload(&stored).expect("wrapped batches have a Kafka payload");
    assert_eq!(served.len(), records.len());
    assert_eq!(served[16..], records[16..]);
    assert_eq!(served[..8], 42i64.to_be_bytes());
});
