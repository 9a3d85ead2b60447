//! Feeds arbitrary bytes to `verify` and, when a batch is accepted, touches
//! every byte slice of every record and header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_wire::batch::{peek_header, verify, VerifyLimits};

fn touch(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    let Ok(view) = verify(data, &VerifyLimits::default()) else {
        return;
    };
    assert!(view.batch_len() <= data.len());
    let mut sum = touch(view.bytes()) ^ touch(view.payload());
    let _ = (view.last_offset(), view.next_offset());
    if let Ok(records) = view.records() {
        let mut n = 0usize;
        for r in records {
            n += 1;
            sum ^= r.offset as u64 ^ r.timestamp as u64;
            sum ^= r.key.map_or(0, touch) ^ touch(r.value);
            for (k, v) in r.headers {
                sum ^= touch(k.as_bytes()) ^ touch(v);
            }
        }
        assert_eq!(n, view.record_count() as usize);
    }
    std::hint::black_box(sum);
});
