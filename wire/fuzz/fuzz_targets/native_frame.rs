//! Feeds arbitrary bytes to `peek_frame_len` and `decode_frame` and, when a
//! frame is accepted, touches every field of the header (through the
//! zero-copy accessors and the object API) and every `BodyRef`'s bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_wire::native::{decode_frame, peek_frame_len, Body, DecodedFrame, FrameLimits};

fn touch(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fn touch_str(s: Option<&str>) -> u64 {
    s.map_or(0, |s| touch(s.as_bytes()))
}

/// Reads the hot-path fields with the zero-copy accessors, as the server does.
fn touch_hot(d: &DecodedFrame<'_>) -> u64 {
    let mut sum = 0u64;
    if let Some(req) = d.message.body_as_produce_request() {
        sum ^= req.acks() as u64 ^ req.timeout_ms() as u64;
        for p in req.partitions().unwrap_or_default() {
            sum ^= touch_str(p.topic()) ^ p.partition() as u64;
            let r = p
                .batches()
                .expect("decode_frame checked: produce partitions have batches");
            sum ^= touch(d.body_slice(r).expect("decode_frame checked the BodyRef"));
        }
    }
    if let Some(resp) = d.message.body_as_fetch_response() {
        for p in resp.partitions().unwrap_or_default() {
            sum ^= touch_str(p.topic()) ^ p.partition() as u64 ^ p.error().0 as u64;
            sum ^= p.high_watermark() as u64 ^ p.log_start() as u64;
            sum ^= touch(
                d.batches(p.batches())
                    .expect("decode_frame checked the BodyRef"),
            );
        }
    }
    sum
}

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits {
        // Small enough that the fuzzer reaches the limits.
        max_frame_bytes: 1 << 16,
        max_header_bytes: 1 << 12,
        ..FrameLimits::default()
    };
    let peeked = peek_frame_len(data, &limits);
    let Ok(d) = decode_frame(data, &limits) else {
        return;
    };
    assert_eq!(peeked, Ok(Some(d.frame_len)));
    assert!(d.frame_len <= data.len());
    assert_ne!(d.body_type(), Body::NONE);
    let mut sum = touch(d.body) ^ u64::from(d.correlation_id()) ^ touch_hot(&d);
    // The object API reads every field of every table; its Debug output
    // forces every string and vector.
    let owned = d.unpack();
    sum ^= format!("{owned:?}").len() as u64;
    std::hint::black_box(sum);
});
