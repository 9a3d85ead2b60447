use super::*;
use proptest::prelude::*;

type OwnedRecord = (Option<Vec<u8>>, Vec<u8>, i64, Vec<(String, Vec<u8>)>);

fn build(records: &[OwnedRecord]) -> bytes::BytesMut {
    let mut b = BatchBuilder::new();
    push_all(&mut b, records);
    b.finish()
}

fn push_all(b: &mut BatchBuilder, records: &[OwnedRecord]) {
    for (k, v, ts, hs) in records {
        let hs: Vec<(&str, &[u8])> = hs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        b.push(k.as_deref(), v, *ts, &hs);
    }
}

/// Decodes a verified native batch back into owned records.
fn decode(view: &BatchView<'_>) -> Vec<OwnedRecord> {
    view.records()
        .unwrap()
        .map(|r| {
            (
                r.key.map(<[u8]>::to_vec),
                r.value.to_vec(),
                r.timestamp,
                r.headers
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect(),
            )
        })
        .collect()
}

/// Recomputes the CRC after a test mutated a header field.
fn reseal(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn sample() -> Vec<OwnedRecord> {
    vec![
        (
            Some(b"k1".to_vec()),
            b"hello".to_vec(),
            1_000,
            vec![("trace".into(), b"abc".to_vec())],
        ),
        (None, b"world".to_vec(), 999, vec![]),
        (
            Some(vec![]),
            vec![],
            1_005,
            vec![("".into(), vec![]), ("h".into(), b"\x00\xff".to_vec())],
        ),
    ]
}

#[test]
fn header_field_positions() {
    let h = BatchHeader::new(
        0x0102_0304_0506_0708,
        0x1112_1314,
        0x2122_2324,
        0x31,
        PayloadFormat(0x32),
        Compression(0x33),
        0x34,
        0x4142_4344,
        0x5152_5354,
        0x6162,
        0x7172,
        0x0A0B_0C0D_0E0F_1011,
        0x1A1B_1C1D_1E1F_2021,
        0x2A2B_2C2D_2E2F_3031,
        0x3A3B_3C3D,
        0x4A4B_4C4D,
    );
    let b = &h.0;
    assert_eq!(b.len(), HEADER_LEN);
    let le = |at: usize, v: &[u8]| assert_eq!(&b[at..at + v.len()], v, "field at byte {at}");
    le(0, &0x0102_0304_0506_0708_i64.to_le_bytes());
    le(8, &0x1112_1314_u32.to_le_bytes());
    le(12, &0x2122_2324_u32.to_le_bytes());
    le(16, &[0x31]);
    le(17, &[0x32]);
    le(18, &[0x33]);
    le(19, &[0x34]);
    le(20, &0x4142_4344_i32.to_le_bytes());
    le(24, &0x5152_5354_i32.to_le_bytes());
    le(28, &0x6162_i16.to_le_bytes());
    le(30, &0x7172_u16.to_le_bytes());
    le(32, &0x0A0B_0C0D_0E0F_1011_i64.to_le_bytes());
    le(40, &0x1A1B_1C1D_1E1F_2021_i64.to_le_bytes());
    le(48, &0x2A2B_2C2D_2E2F_3031_i64.to_le_bytes());
    le(56, &0x3A3B_3C3D_i32.to_le_bytes());
    le(60, &0x4A4B_4C4D_u32.to_le_bytes());
}

#[test]
fn build_verify_iterate() {
    let records = sample();
    let batch = build(&records);
    let view = verify(&batch, &VerifyLimits::default()).unwrap();
    let h = view.header();
    assert_eq!(h.format_version(), FORMAT_VERSION);
    assert_eq!(h.payload_format(), PayloadFormat::Native);
    assert_eq!(h.compression(), Compression::None);
    assert_eq!(h.batch_len() as usize, batch.len());
    assert_eq!(h.record_count(), 3);
    assert_eq!(h.last_offset_delta(), 2);
    assert_eq!(h.first_timestamp(), 1_000);
    assert_eq!(h.max_timestamp(), 1_005);
    assert_eq!(
        (h.producer_id(), h.producer_epoch(), h.base_sequence()),
        (-1, -1, -1)
    );
    assert_eq!(view.bytes(), &batch[..]);
    assert_eq!(view.payload(), &batch[HEADER_LEN..]);
    assert_eq!(
        (view.base_offset(), view.last_offset(), view.next_offset()),
        (0, 2, 3)
    );
    assert_eq!(view.record_count(), 3);
    assert_eq!(decode(&view), records);
    let offsets: Vec<i64> = view.records().unwrap().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!(view.records().unwrap().len(), 3);
    assert_eq!(view.records().unwrap().next_back().unwrap().offset, 2);
}

#[test]
fn stamping_base_offset_keeps_crc_valid() {
    let mut batch = build(&sample());
    let crc_before = peek_header(&batch).unwrap().crc();
    stamp_base_offset(&mut batch, 1_000_000).unwrap();
    assert_eq!(compute_crc(&batch), crc_before);
    let view = verify(&batch, &VerifyLimits::default()).unwrap();
    assert_eq!(view.base_offset(), 1_000_000);
    assert_eq!(view.next_offset(), 1_000_003);
    let offsets: Vec<i64> = view.records().unwrap().map(|r| r.offset).collect();
    assert_eq!(offsets, [1_000_000, 1_000_001, 1_000_002]);

    let mut short = [0u8; HEADER_LEN - 1];
    assert_eq!(
        stamp_base_offset(&mut short, 1),
        Err(WireError::Truncated {
            need: HEADER_LEN,
            have: HEADER_LEN - 1
        })
    );
}

#[test]
fn stamping_kafka_payload_writes_both_offsets() {
    let kafka: Vec<u8> = (0u8..80).collect();
    let mut batch = encode_kafka_wrapped(&kafka, 2, 1, 0, 0, -1, -1, -1, Compression::None);
    let crc_before = peek_header(&batch).unwrap().crc();
    stamp_base_offset(&mut batch, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(compute_crc(&batch), crc_before);
    assert_eq!(&batch[0..8], &0x0102_0304_0506_0708i64.to_le_bytes());
    assert_eq!(&batch[KAFKA_BASE_OFFSET_RANGE], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&batch[72..], &kafka[8..]);
    let view = verify(&batch, &VerifyLimits::default()).unwrap();
    assert_eq!(view.base_offset(), 0x0102_0304_0506_0708);

    // A Kafka payload too short to hold a baseOffset is covered whole and left alone.
    let mut short = encode_kafka_wrapped(b"abc", 1, 0, 0, 0, -1, -1, -1, Compression::None);
    stamp_base_offset(&mut short, 7).unwrap();
    assert_eq!(&short[HEADER_LEN..], b"abc");
    verify(&short, &VerifyLimits::default()).unwrap();
    short[HEADER_LEN] ^= 1;
    assert!(verify(&short, &VerifyLimits::default()).is_err());
}

#[test]
fn kafka_crc_skips_only_the_kafka_base_offset() {
    let kafka: Vec<u8> = (0u8..40).collect();
    let batch = encode_kafka_wrapped(&kafka, 1, 0, 0, 0, -1, -1, -1, Compression::None);
    let mut expected = crc32c::crc32c(&batch[CRC_START..HEADER_LEN]);
    expected = crc32c::crc32c_append(expected, &batch[HEADER_LEN + 8..]);
    assert_eq!(peek_header(&batch).unwrap().crc(), expected);
    // The same bytes as a native batch are covered from byte 12 to the end.
    let mut native = batch.to_vec();
    native[17] = PayloadFormat::Native.0;
    assert_eq!(compute_crc(&native), crc32c::crc32c(&native[CRC_START..]));
}

#[test]
fn null_key_empty_key_empty_value() {
    let mut b = BatchBuilder::new();
    b.push(None, b"", 0, &[]);
    b.push(Some(b""), b"", 0, &[]);
    b.push(Some(b"k"), b"v", 0, &[]);
    b.push(None, b"v", 0, &[("k", b"")]);
    let batch = b.finish();
    let view = verify(&batch, &VerifyLimits::default()).unwrap();
    let r: Vec<RecordView<'_>> = view.records().unwrap().collect();
    assert_eq!((r[0].key, r[0].value), (None, &b""[..]));
    assert_eq!((r[1].key, r[1].value), (Some(&b""[..]), &b""[..]));
    assert_eq!((r[2].key, r[2].value), (Some(&b"k"[..]), &b"v"[..]));
    assert!(r[0].headers.is_empty());
    assert_eq!(r[3].headers.len(), 1);
    assert_eq!(r[3].headers.iter().collect::<Vec<_>>(), [("k", &b""[..])]);
}

#[test]
fn builder_is_reusable_and_resets() {
    let mut b = BatchBuilder::new();
    assert!(b.is_empty());
    b.producer(42, 3, 7);
    b.push(Some(b"a"), b"1", 10, &[]);
    b.push(Some(b"b"), b"2", 5, &[]);
    assert_eq!(b.len(), 2);
    let first = b.finish();
    assert!(b.is_empty());
    b.push(None, b"3", 20, &[]);
    let second = b.finish();

    let v1 = verify(&first, &VerifyLimits::default()).unwrap();
    let h1 = v1.header();
    assert_eq!(
        (h1.producer_id(), h1.producer_epoch(), h1.base_sequence()),
        (42, 3, 7)
    );
    assert_eq!((h1.first_timestamp(), h1.max_timestamp()), (10, 10));
    let v2 = verify(&second, &VerifyLimits::default()).unwrap();
    let h2 = v2.header();
    assert_eq!(
        (h2.producer_id(), h2.producer_epoch(), h2.base_sequence()),
        (-1, -1, -1)
    );
    assert_eq!(decode(&v2), vec![(None, b"3".to_vec(), 20, vec![])]);
}

#[test]
fn empty_builder_batch_is_rejected() {
    let batch = BatchBuilder::new().finish();
    let h = BatchHeader(batch[..HEADER_LEN].try_into().unwrap());
    assert_eq!((h.record_count(), h.last_offset_delta()), (0, -1));
    assert!(verify(&batch, &VerifyLimits::default()).is_err());
}

#[test]
fn trailing_bytes_are_ignored() {
    let batch = build(&sample());
    let mut buf = batch.to_vec();
    buf.extend_from_slice(&build(&sample()));
    let view = verify(&buf, &VerifyLimits::default()).unwrap();
    assert_eq!(view.bytes(), &batch[..]);
    assert_eq!(view.batch_len(), batch.len());
}

#[test]
fn kafka_wrapped() {
    let kafka = b"opaque kafka record batch v2 bytes";
    let batch = encode_kafka_wrapped(kafka, 5, 6, 100, 200, 9, 1, 17, Compression::Zstd);
    let view = verify(&batch, &VerifyLimits::default()).unwrap();
    let h = view.header();
    assert_eq!(h.payload_format(), PayloadFormat::Kafka);
    assert_eq!(h.compression(), Compression::Zstd);
    assert_eq!((h.record_count(), h.last_offset_delta()), (5, 6));
    assert_eq!((h.first_timestamp(), h.max_timestamp()), (100, 200));
    assert_eq!(
        (h.producer_id(), h.producer_epoch(), h.base_sequence()),
        (9, 1, 17)
    );
    assert_eq!(view.payload(), kafka);
    assert_eq!(view.next_offset(), 7);
    assert!(matches!(
        view.records(),
        Err(WireError::WrongPayloadFormat {
            expected: PayloadFormat::Native,
            found: PayloadFormat::Kafka
        })
    ));
}

#[test]
fn header_checks() {
    let good = build(&sample());
    let limits = VerifyLimits::default();
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.to_vec();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        reseal(&mut b);
        b
    };
    assert_eq!(
        peek_header(&good[..10]).unwrap_err(),
        WireError::Truncated {
            need: HEADER_LEN,
            have: 10
        }
    );
    assert_eq!(
        verify(&with(16, &[2]), &limits).unwrap_err(),
        WireError::UnsupportedVersion(2)
    );
    assert_eq!(
        verify(&with(17, &[2]), &limits).unwrap_err(),
        WireError::UnknownPayloadFormat(2)
    );
    assert_eq!(
        verify(&with(18, &[5]), &limits).unwrap_err(),
        WireError::UnknownCompression(5)
    );
    assert_eq!(
        verify(&with(18, &[1]), &limits).unwrap_err(),
        WireError::UnsupportedCompression {
            format: PayloadFormat::Native,
            compression: Compression::Gzip
        }
    );
    assert!(matches!(
        verify(&with(19, &[1]), &limits),
        Err(WireError::ReservedNonZero {
            field: "flags",
            value: 1
        })
    ));
    assert!(matches!(
        verify(&with(30, &[1, 0]), &limits),
        Err(WireError::ReservedNonZero {
            field: "reserved",
            ..
        })
    ));
    assert!(matches!(
        verify(&with(60, &[0, 0, 0, 1]), &limits),
        Err(WireError::ReservedNonZero {
            field: "reserved2",
            ..
        })
    ));
    assert!(matches!(
        verify(&with(12, &63u32.to_le_bytes()), &limits),
        Err(WireError::BadLength { batch_len: 63, .. })
    ));
    assert!(matches!(
        verify(&with(20, &0i32.to_le_bytes()), &limits),
        Err(WireError::BadRecordCount {
            record_count: 0,
            ..
        })
    ));
    // 4 records cannot fit in offsets [0, 2].
    assert!(matches!(
        verify(&with(20, &4i32.to_le_bytes()), &limits),
        Err(WireError::BadRecordCount {
            record_count: 4,
            ..
        })
    ));
    assert_eq!(
        verify(&with(24, &(-1i32).to_le_bytes()), &limits).unwrap_err(),
        WireError::BadOffsetDelta(-1)
    );
    assert_eq!(
        verify(&with(24, &i32::MAX.to_le_bytes()), &limits).unwrap_err(),
        WireError::BadOffsetDelta(i32::MAX)
    );
    // Header and payload disagree.
    assert!(matches!(
        verify(&with(20, &2i32.to_le_bytes()), &limits),
        Err(WireError::RecordCountMismatch {
            header: 2,
            payload: 3
        })
    ));
    assert!(matches!(
        verify(&with(24, &3i32.to_le_bytes()), &limits),
        Err(WireError::BadRecordOffset {
            index: 2,
            offset_delta: 2,
            last_offset_delta: 3
        })
    ));
    // Untouched CRC.
    let mut bad_crc = good.to_vec();
    bad_crc[8] ^= 1;
    assert!(matches!(
        verify(&bad_crc, &limits),
        Err(WireError::CrcMismatch { .. })
    ));
    // Garbage payload with a valid CRC.
    let mut garbage = good.to_vec();
    garbage[HEADER_LEN..].fill(0xAB);
    reseal(&mut garbage);
    assert!(matches!(
        verify(&garbage, &limits),
        Err(WireError::InvalidPayload(_))
    ));
}

#[test]
fn limits_are_enforced() {
    let batch = build(&sample());
    let tight = VerifyLimits {
        max_batch_len: batch.len() - 1,
        ..VerifyLimits::default()
    };
    assert!(matches!(
        verify(&batch, &tight),
        Err(WireError::TooLarge { .. })
    ));
    let tight = VerifyLimits {
        max_records: 2,
        ..VerifyLimits::default()
    };
    assert!(matches!(
        verify(&batch, &tight),
        Err(WireError::TooManyRecords {
            record_count: 3,
            max: 2
        })
    ));
    // Headers are nested three tables deep.
    let tight = VerifyLimits {
        max_depth: 2,
        ..VerifyLimits::default()
    };
    assert!(matches!(
        verify(&batch, &tight),
        Err(WireError::InvalidPayload(_))
    ));
    let ok = VerifyLimits {
        max_depth: 3,
        ..VerifyLimits::default()
    };
    verify(&batch, &ok).unwrap();
}

#[test]
fn many_tiny_records_pass_the_verifier_budget() {
    // Worst ratio of verifier work to buffer bytes: empty records.
    let mut b = BatchBuilder::new();
    for _ in 0..10_000 {
        b.push(None, b"", 0, &[]);
    }
    let batch = b.finish();
    let view = verify(&batch, &VerifyLimits::default()).unwrap();
    assert_eq!(view.records().unwrap().count(), 10_000);
    let mut b = BatchBuilder::new();
    for _ in 0..1_000 {
        b.push(None, b"", 0, &[("", b""), ("", b""), ("", b"")]);
    }
    let batch = b.finish();
    verify(&batch, &VerifyLimits::default()).unwrap();
}

fn arb_records() -> impl Strategy<Value = Vec<OwnedRecord>> {
    let header = (
        "[a-z\u{e9}\u{1F600}]{0,8}",
        proptest::collection::vec(any::<u8>(), 0..16),
    );
    let record = (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        proptest::collection::vec(any::<u8>(), 0..2048),
        any::<i64>(),
        proptest::collection::vec(header, 0..4),
    );
    proptest::collection::vec(record, 1..24)
}

proptest! {
    #[test]
    fn prop_round_trip(records in arb_records(), base in 0i64..i64::MAX / 2) {
        let mut b = BatchBuilder::new();
        // Exercise reuse: encode a throwaway batch first.
        b.push(Some(b"junk"), b"junk", 1, &[("junk", b"junk")]);
        let _ = b.finish();
        push_all(&mut b, &records);
        let estimate = b.estimated_size();
        let mut batch = b.finish();
        prop_assert!(batch.len() <= estimate, "len {} > estimate {}", batch.len(), estimate);
        stamp_base_offset(&mut batch, base).unwrap();
        let view = verify(&batch, &VerifyLimits::default()).unwrap();
        prop_assert_eq!(view.record_count() as usize, records.len());
        prop_assert_eq!(view.header().first_timestamp(), records[0].2);
        prop_assert_eq!(view.header().max_timestamp(), records.iter().map(|r| r.2).max().unwrap());
        prop_assert_eq!(view.next_offset(), base + records.len() as i64);
        prop_assert_eq!(decode(&view), records);
        for (i, r) in view.records().unwrap().enumerate() {
            prop_assert_eq!(r.offset, base + i as i64);
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = peek_header(&buf);
        if let Ok(view) = verify(&buf, &VerifyLimits::default()) {
            prop_assert!(view.batch_len() <= buf.len());
            if let Ok(records) = view.records() {
                for r in records {
                    let _ = (r.key, r.value, r.headers.iter().count());
                }
            }
        }
    }

    /// Random payloads behind a plausible header with a correct CRC, so the
    /// flatbuffers verifier (not the CRC) is what has to reject them.
    #[test]
    fn prop_arbitrary_payload_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        record_count in 1i32..4,
    ) {
        let mut batch = encode_kafka_wrapped(
            &payload, record_count, record_count - 1, 0, 0, -1, -1, -1, Compression::None,
        );
        batch[17] = PayloadFormat::Native.0;
        reseal(&mut batch);
        if let Ok(view) = verify(&batch, &VerifyLimits::default()) {
            for r in view.records().unwrap() {
                let _ = (r.key, r.value, r.headers.iter().count());
            }
        }
    }

    #[test]
    fn prop_single_bit_flips(records in arb_records(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let batch = build(&records);
        let limits = VerifyLimits::default();
        // Bits of base_offset are not covered: the batch stays valid.
        let mut b = batch.to_vec();
        b[pos.index(8)] ^= 1 << bit;
        prop_assert!(verify(&b, &limits).is_ok());
        // Any bit from the crc field to the end is detected.
        let mut b = batch.to_vec();
        let at = 8 + pos.index(batch.len() - 8);
        b[at] ^= 1 << bit;
        prop_assert!(verify(&b, &limits).is_err(), "flip at byte {} bit {} not detected", at, bit);
    }

    #[test]
    fn prop_stamping_keeps_batches_valid(
        records in arb_records(),
        kafka in proptest::collection::vec(any::<u8>(), 0..256),
        base in any::<i64>(),
    ) {
        let limits = VerifyLimits::default();
        let mut native = build(&records);
        stamp_base_offset(&mut native, base).unwrap();
        prop_assert_eq!(verify(&native, &limits).unwrap().base_offset(), base);
        let mut wrapped = encode_kafka_wrapped(&kafka, 1, 0, 0, 0, -1, -1, -1, Compression::None);
        stamp_base_offset(&mut wrapped, base).unwrap();
        let view = verify(&wrapped, &limits).unwrap();
        prop_assert_eq!(view.base_offset(), base);
        if kafka.len() >= 8 {
            prop_assert_eq!(&wrapped[KAFKA_BASE_OFFSET_RANGE], &base.to_be_bytes());
        } else {
            prop_assert_eq!(view.payload(), &kafka[..]);
        }
    }

    #[test]
    fn prop_kafka_bit_flips(
        kafka in proptest::collection::vec(any::<u8>(), 8..256),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let batch = encode_kafka_wrapped(&kafka, 1, 0, 0, 0, -1, -1, -1, Compression::None);
        let limits = VerifyLimits::default();
        let at = pos.index(batch.len());
        let mut b = batch.to_vec();
        b[at] ^= 1 << bit;
        let excluded = BASE_OFFSET_RANGE.contains(&at) || KAFKA_BASE_OFFSET_RANGE.contains(&at);
        if excluded {
            prop_assert!(verify(&b, &limits).is_ok(), "flip at byte {} bit {} rejected", at, bit);
        } else {
            prop_assert!(verify(&b, &limits).is_err(), "flip at byte {} bit {} not detected", at, bit);
        }
    }

    #[test]
    fn prop_truncation_is_rejected(records in arb_records(), cut in any::<prop::sample::Index>()) {
        let batch = build(&records);
        let len = cut.index(batch.len());
        prop_assert!(verify(&batch[..len], &VerifyLimits::default()).is_err());
    }
}

/// Writes valid batches as a seed corpus for the `batch_view` fuzz target,
/// so the fuzzer starts past the CRC check:
/// `TIDELOG_FUZZ_SEEDS=wire/fuzz/corpus/batch_view cargo test -p tidelog-wire -- --ignored write_fuzz_seeds`
#[test]
#[ignore = "writes files; run by hand to seed the fuzz corpus"]
fn write_fuzz_seeds() {
    let dir = std::env::var("TIDELOG_FUZZ_SEEDS").expect("set TIDELOG_FUZZ_SEEDS");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds = vec![build(&sample()).to_vec()];
    let mut b = BatchBuilder::new();
    b.push(None, b"", 0, &[]);
    seeds.push(b.finish().to_vec());
    b.producer(1, 2, 3);
    b.push(Some(b"key"), b"value", -5, &[("h", b"v")]);
    b.push(Some(b""), b"x", i64::MAX, &[]);
    seeds.push(b.finish().to_vec());
    seeds.push(encode_kafka_wrapped(b"kafka", 1, 0, 0, 0, -1, -1, -1, Compression::Lz4).to_vec());
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i}"), seed).unwrap();
    }
}
