//! Like `batch_view`, but first rewrites the input's header so that it passes
//! the header and CRC checks (`batch_len` = input length, version 1, native,
//! uncompressed, reserved fields 0, CRC recomputed). The fuzzer still controls
//! `record_count`, `last_offset_delta`, timestamps and the whole payload, so
//! this target exercises the flatbuffers verifier and record iteration, which
//! `batch_view` rarely reaches because random mutations break the CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_wire::batch::{compute_crc, verify, VerifyLimits, FORMAT_VERSION, HEADER_LEN};

fn touch(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_LEN || u32::try_from(data.len()).is_err() {
        return;
    }
    let mut buf = data.to_vec();
    buf[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
    buf[16] = FORMAT_VERSION;
    buf[17] = 0; // native
    buf[18] = 0; // no compression
    buf[19] = 0;
    buf[30..32].fill(0);
    buf[60..64].fill(0);
    let crc = compute_crc(&buf);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());

    let Ok(view) = verify(&buf, &VerifyLimits::default()) else {
        return;
    };
    let mut sum = 0u64;
    let mut n = 0usize;
    for r in view.records().expect("native batch") {
        n += 1;
        sum ^= r.offset as u64 ^ r.timestamp as u64;
        sum ^= r.key.map_or(0, touch) ^ touch(r.value);
        for (k, v) in r.headers {
            sum ^= touch(k.as_bytes()) ^ touch(v);
        }
    }
    assert_eq!(n, view.record_count() as usize);
    std::hint::black_box(sum);
});
