//! Feeds arbitrary bytes to the clients' Kafka record decoder (`decode_records`, what the
//! native consumer and the load generator run on fetched batches) and to the header reader:
//! no panic, and every decoded range lies inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_wire::kafka_records::{decode_records, RecordBatchHeader};

fuzz_target!(|data: &[u8]| {
    if let Some(header) = RecordBatchHeader::read(data) {
        let _ = header.total_len();
        let _ = header.next_offset();
    }
    if let Ok(records) = decode_records(data, 7) {
        for record in records {
            assert!(record.value.end <= data.len());
            if let Some(key) = record.key {
                assert!(key.end <= data.len());
            }
        }
    }
});
