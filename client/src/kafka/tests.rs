use super::*;

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

struct Rec<'a> {
    ts_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [(&'a [u8], &'a [u8])],
}

/// A Kafka RecordBatch v2 built by hand, byte by byte.
fn batch(attributes: i16, base_ts: i64, max_ts: i64, records: &[Rec<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        let mut rec = vec![0u8]; // attributes
        varint(&mut rec, r.ts_delta);
        varint(&mut rec, r.offset_delta);
        field(&mut rec, r.key);
        field(&mut rec, r.value);
        varint(&mut rec, r.headers.len() as i64);
        for (k, v) in r.headers {
            field(&mut rec, Some(k));
            field(&mut rec, Some(v));
        }
        varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&attributes.to_be_bytes());
    let last = records.last().map_or(0, |r| r.offset_delta) as i32;
    after_crc.extend_from_slice(&last.to_be_bytes());
    after_crc.extend_from_slice(&base_ts.to_be_bytes());
    after_crc.extend_from_slice(&max_ts.to_be_bytes());
    after_crc.extend_from_slice(&(-1i64).to_be_bytes());
    after_crc.extend_from_slice(&(-1i16).to_be_bytes());
    after_crc.extend_from_slice(&(-1i32).to_be_bytes());
    after_crc.extend_from_slice(&(records.len() as i32).to_be_bytes());
    after_crc.extend_from_slice(&body);
    let mut out = Vec::new();
    out.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = (4 + 1 + 4 + after_crc.len()) as i32;
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
    out.extend_from_slice(&after_crc);
    out
}

fn two_records() -> Vec<u8> {
    batch(
        0,
        1_000,
        1_300,
        &[
            Rec {
                ts_delta: 0,
                offset_delta: 0,
                key: None,
                value: Some(b"first"),
                headers: &[],
            },
            Rec {
                ts_delta: 300,
                offset_delta: 1,
                key: Some(b"k"),
                value: Some(&[7u8; 200]), // a value length needing a 2-byte varint
                headers: &[(b"h", b"v")],
            },
        ],
    )
}

#[test]
fn decodes_hand_built_records() {
    let b = two_records();
    let records = decode_records(&b, 100).expect("decodes");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].offset, 100);
    assert_eq!(records[0].timestamp, 1_000);
    assert_eq!(records[0].key, None);
    assert_eq!(&b[records[0].value.clone()], b"first");
    assert_eq!(records[1].offset, 101);
    assert_eq!(records[1].timestamp, 1_300);
    assert_eq!(&b[records[1].key.clone().expect("key")], b"k");
    assert_eq!(&b[records[1].value.clone()], &[7u8; 200][..]);
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let b = batch(
        LOG_APPEND_TIME,
        5,
        9_999,
        &[Rec {
            ts_delta: 1,
            offset_delta: 0,
            key: None,
            value: None,
            headers: &[],
        }],
    );
    let records = decode_records(&b, 0).expect("decodes");
    assert_eq!(records[0].timestamp, 9_999);
    assert!(records[0].value.is_empty());
}

#[test]
fn compressed_batches_are_refused_clearly() {
    let b = batch(
        4, // zstd
        0,
        0,
        &[Rec {
            ts_delta: 0,
            offset_delta: 0,
            key: None,
            value: Some(b"x"),
            headers: &[],
        }],
    );
    assert!(matches!(
        decode_records(&b, 0),
        Err(ClientError::UnsupportedCompression(Compression::Zstd))
    ));
}

#[test]
fn damaged_batches_are_errors_never_panics() {
    let good = two_records();
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(
        decode_records(&bad_crc, 0),
        Err(ClientError::KafkaBatch("crc mismatch"))
    ));
    for cut in 0..good.len() {
        assert!(decode_records(&good[..cut], 0).is_err(), "cut at {cut}");
    }
    let mut magic = good.clone();
    magic[16] = 1;
    assert!(decode_records(&magic, 0).is_err());
}
