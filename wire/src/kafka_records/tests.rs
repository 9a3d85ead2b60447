use super::*;
use crate::batch::{stamp_base_offset, verify, BatchBuilder, VerifyLimits};
use proptest::prelude::*;

type OwnedRecord = (Option<Vec<u8>>, Vec<u8>, i64, Vec<(String, Vec<u8>)>);

/// A Kafka batch decoded by a reader written independently of the encoder.
#[derive(Debug, PartialEq)]
struct Decoded {
    base_offset: i64,
    leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// `(offset, record)`.
    records: Vec<(i64, OwnedRecord)>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn i8(&mut self) -> i8 {
        self.take(1)[0] as i8
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn varlong(&mut self) -> i64 {
        let mut raw = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.take(1)[0];
            raw |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            }
        }
        panic!("varint too long");
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.varlong();
        (len >= 0).then(|| self.take(len as usize).to_vec())
    }
}

fn decode_kafka(batch: &[u8]) -> Decoded {
    let mut r = Reader(batch);
    let base_offset = r.i64();
    let batch_length = r.i32();
    assert_eq!(batch_length as usize + 12, batch.len());
    let leader_epoch = r.i32();
    assert_eq!(r.i8(), 2);
    let crc = r.i32() as u32;
    assert_eq!(crc, crc32c::crc32c(&batch[21..]));
    let attributes = r.i16();
    let last_offset_delta = r.i32();
    let base_timestamp = r.i64();
    let max_timestamp = r.i64();
    let producer_id = r.i64();
    let producer_epoch = r.i16();
    let base_sequence = r.i32();
    let count = r.i32();
    let mut records = Vec::new();
    for _ in 0..count {
        let len = r.varlong() as usize;
        let before = r.0.len();
        assert_eq!(r.i8(), 0);
        let ts = base_timestamp.wrapping_add(r.varlong());
        let offset = base_offset.wrapping_add(r.varlong());
        let key = r.bytes();
        let value = r.bytes().unwrap();
        let headers = (0..r.varlong())
            .map(|_| {
                let k = String::from_utf8(r.bytes().unwrap()).unwrap();
                (k, r.bytes().unwrap())
            })
            .collect();
        assert_eq!(before - r.0.len(), len, "record length prefix");
        records.push((offset, (key, value, ts, headers)));
    }
    assert!(r.0.is_empty(), "bytes after the last record");
    Decoded {
        base_offset,
        leader_epoch,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        records,
    }
}

/// The test encoder: records through a native batch and [`native_to_kafka`].
fn encode(records: &[OwnedRecord], base: i64, producer: (i64, i16, i32)) -> BytesMut {
    let mut b = BatchBuilder::new();
    for (k, v, ts, hs) in records {
        let hs: Vec<(&str, &[u8])> = hs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        b.push(k.as_deref(), v, *ts, &hs);
    }
    b.producer(producer.0, producer.1, producer.2);
    let mut native = b.finish();
    stamp_base_offset(&mut native, base).unwrap();
    let view = verify(&native, &VerifyLimits::default()).unwrap();
    let mut out = BytesMut::from(&b"prefix"[..]);
    native_to_kafka(&view, &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix", "appends after existing bytes");
    let _ = out.split_to(6);
    out
}

fn simple() -> BytesMut {
    encode(
        &[
            (Some(b"k".to_vec()), b"v1".to_vec(), 10, vec![]),
            (None, b"v2".to_vec(), 12, vec![("h".into(), b"x".to_vec())]),
        ],
        0,
        (7, 1, 0),
    )
}

fn set_i16(b: &mut [u8], pos: usize, v: i16) {
    b[pos..pos + 2].copy_from_slice(&v.to_be_bytes());
}
fn set_i32(b: &mut [u8], pos: usize, v: i32) {
    b[pos..pos + 4].copy_from_slice(&v.to_be_bytes());
}
fn set_i64(b: &mut [u8], pos: usize, v: i64) {
    b[pos..pos + 8].copy_from_slice(&v.to_be_bytes());
}
/// Recomputes the Kafka CRC after a header field was changed.
fn reseal(b: &mut [u8]) {
    seal_kafka_crc(b);
}
fn with_attributes(b: &mut [u8], attributes: i16) {
    set_i16(b, at::ATTRIBUTES, attributes);
    reseal(b);
}

const MAX: usize = 1 << 20;

#[test]
fn accepts_a_valid_batch() {
    let b = simple();
    let info = validate_produce_batch(&b, 9, MAX).unwrap();
    assert_eq!(
        info,
        KafkaBatchInfo {
            record_count: 2,
            last_offset_delta: 1,
            base_timestamp: 10,
            max_timestamp: 12,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 0,
            compression: Compression::None,
        }
    );
    // Exactly at the size limit is fine.
    validate_produce_batch(&b, 3, b.len()).unwrap();
}

#[test]
fn rejects_each_checklist_item() {
    let good = simple();
    let v = |b: &[u8]| validate_produce_batch(b, 9, MAX).unwrap_err();

    assert_eq!(v(&[]), KafkaBatchError::NoBatch { len: 0 });
    assert_eq!(v(&good[..60]).kafka_code(), INVALID_RECORD);

    let mut b = good.to_vec();
    b[at::MAGIC] = 1;
    assert_eq!(v(&b), KafkaBatchError::BadMagic(1));

    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    assert!(matches!(v(&two), KafkaBatchError::NotOneBatch { .. }));
    assert!(matches!(
        v(&good[..good.len() - 1]),
        KafkaBatchError::NotOneBatch { .. }
    ));
    let mut b = good.to_vec();
    set_i32(&mut b, at::BATCH_LENGTH, -1);
    assert!(matches!(v(&b), KafkaBatchError::NotOneBatch { .. }));

    let e = validate_produce_batch(&good, 9, good.len() - 1).unwrap_err();
    assert_eq!(e.kafka_code(), MESSAGE_TOO_LARGE);

    let mut b = good.to_vec();
    *b.last_mut().unwrap() ^= 1;
    assert_eq!(v(&b).kafka_code(), CORRUPT_MESSAGE);

    for (count, delta) in [(0, -1), (3, 1), (-1, -2), (i32::MIN, i32::MAX)] {
        let mut b = good.to_vec();
        set_i32(&mut b, at::RECORD_COUNT, count);
        set_i32(&mut b, at::LAST_OFFSET_DELTA, delta);
        reseal(&mut b);
        assert!(
            matches!(v(&b), KafkaBatchError::InconsistentOffsets { .. }),
            "{count} {delta}"
        );
    }

    let mut b = good.to_vec();
    with_attributes(&mut b, CONTROL);
    assert_eq!(v(&b), KafkaBatchError::ControlBatch);
    with_attributes(&mut b, TRANSACTIONAL);
    assert_eq!(v(&b), KafkaBatchError::Transactional);
    for codec in 5..8 {
        with_attributes(&mut b, codec);
        assert_eq!(v(&b), KafkaBatchError::UnknownCompression(codec as u8));
        assert_eq!(v(&b).kafka_code(), UNSUPPORTED_COMPRESSION_TYPE);
    }
    with_attributes(&mut b, 4);
    assert_eq!(
        validate_produce_batch(&b, 6, MAX),
        Err(KafkaBatchError::ZstdNeedsV7(6))
    );
    assert_eq!(
        validate_produce_batch(&b, 7, MAX).unwrap().compression,
        Compression::Zstd
    );
    for codec in 1..4 {
        with_attributes(&mut b, codec);
        assert_eq!(
            validate_produce_batch(&b, 3, MAX).unwrap().compression,
            Compression(codec as u8)
        );
    }
    with_attributes(&mut b, LOG_APPEND_TIME);
    assert_eq!(v(&b), KafkaBatchError::LogAppendTime);
    assert_eq!(v(&b).kafka_code(), INVALID_TIMESTAMP);

    let mut b = good.to_vec();
    set_i32(&mut b, at::BASE_SEQUENCE, -1);
    reseal(&mut b);
    assert!(matches!(v(&b), KafkaBatchError::MissingSequence { .. }));
    set_i64(&mut b, at::PRODUCER_ID, -1);
    reseal(&mut b);
    validate_produce_batch(&b, 3, MAX).unwrap();
}

#[test]
fn wrap_stamp_and_serve() {
    let mut kafka = simple();
    set_i32(&mut kafka, at::LEADER_EPOCH, 99);
    let info = validate_produce_batch(&kafka, 9, MAX).unwrap();
    let mut stored = wrap_for_log(&bytes::Bytes::copy_from_slice(&kafka), &info).into_bytes();
    let view = verify(&stored, &VerifyLimits::default()).unwrap();
    let h = view.header();
    assert_eq!(h.payload_format(), PayloadFormat::Kafka);
    assert_eq!((h.record_count(), h.last_offset_delta()), (2, 1));
    assert_eq!((h.first_timestamp(), h.max_timestamp()), (10, 12));
    assert_eq!(
        (h.producer_id(), h.producer_epoch(), h.base_sequence()),
        (7, 1, 0)
    );
    stamp_base_offset(&mut stored, 1234).unwrap();
    verify(&stored, &VerifyLimits::default()).unwrap();
    let served = kafka_payload(&stored).unwrap();
    let decoded = decode_kafka(served);
    assert_eq!(decoded.base_offset, 1234);
    assert_eq!(decoded.leader_epoch, 0);
    assert_eq!(decoded.records[1].0, 1235);
    // The served bytes are themselves a valid produce batch.
    validate_produce_batch(served, 9, MAX).unwrap();
    assert_eq!(&served[16..], &kafka[16..]);

    // Native batches have no Kafka payload; Kafka batches convert to nothing.
    let mut b = BatchBuilder::new();
    b.push(None, b"x", 0, &[]);
    let native = b.finish();
    assert!(matches!(
        kafka_payload(&native),
        Err(WireError::WrongPayloadFormat { .. })
    ));
    assert!(matches!(
        kafka_payload(&stored[..stored.len() - 1]),
        Err(WireError::Truncated { .. })
    ));
    let view = verify(&stored, &VerifyLimits::default()).unwrap();
    let mut out = BytesMut::new();
    assert!(native_to_kafka(&view, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn varints_match_kafka() {
    for (v, bytes) in [
        (0i64, &[0u8][..]),
        (-1, &[1]),
        (1, &[2]),
        (63, &[0x7e]),
        (-64, &[0x7f]),
        (64, &[0x80, 0x01]),
        (i64::MIN, &[0xff; 9][..]),
    ] {
        let mut out = BytesMut::new();
        put_varint(&mut out, v);
        if v == i64::MIN {
            assert_eq!(out.len(), 10);
        } else {
            assert_eq!(&out[..], bytes, "{v}");
        }
        assert_eq!(varint_len(v), out.len());
        assert_eq!(Reader(&out).varlong(), v);
    }
}

fn arb_records() -> impl Strategy<Value = Vec<OwnedRecord>> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..40);
    let header = ("[a-z]{0,6}", proptest::collection::vec(any::<u8>(), 0..10));
    let record = (
        proptest::option::of(bytes.clone()),
        bytes,
        any::<i64>(),
        proptest::collection::vec(header, 0..3),
    );
    proptest::collection::vec(record, 1..20)
}

proptest! {
    #[test]
    fn prop_native_to_kafka_round_trips(
        records in arb_records(),
        base in 0i64..i64::MAX / 2,
        producer_id in -1i64..1000,
        producer_epoch in any::<i16>(),
        base_sequence in 0i32..i32::MAX,
    ) {
        let kafka = encode(&records, base, (producer_id, producer_epoch, base_sequence));
        let d = decode_kafka(&kafka);
        prop_assert_eq!(d.base_offset, base);
        prop_assert_eq!(d.leader_epoch, 0);
        prop_assert_eq!(d.attributes, 0);
        prop_assert_eq!(d.last_offset_delta as usize, records.len() - 1);
        prop_assert_eq!(d.base_timestamp, records[0].2);
        prop_assert_eq!(d.max_timestamp, records.iter().map(|r| r.2).max().unwrap());
        prop_assert_eq!((d.producer_id, d.producer_epoch, d.base_sequence),
            (producer_id, producer_epoch, base_sequence));
        for (i, (offset, record)) in d.records.iter().enumerate() {
            prop_assert_eq!(*offset, base + i as i64);
            prop_assert_eq!(record, &records[i]);
        }
        // What the converter writes, the validator accepts, and survives the log round trip.
        let info = validate_produce_batch(&kafka, 9, MAX).unwrap();
        let mut stored = wrap_for_log(&bytes::Bytes::copy_from_slice(&kafka), &info).into_bytes();
        stamp_base_offset(&mut stored, base + 1).unwrap();
        verify(&stored, &VerifyLimits::default()).unwrap();
        let served = kafka_payload(&stored).unwrap();
        prop_assert_eq!(&served[8..], &kafka[8..]);
        prop_assert_eq!(decode_kafka(served).base_offset, base + 1);
    }

    /// Every single-bit flip in the CRC-covered range is caught; flips outside it
    /// (baseOffset, batchLength, leader epoch, magic) are caught by framing or ignored.
    #[test]
    fn prop_bit_flips(records in arb_records(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let kafka = encode(&records, 0, (-1, -1, -1));
        let at = pos.index(kafka.len());
        let mut b = kafka.to_vec();
        b[at] ^= 1 << bit;
        let result = validate_produce_batch(&b, 9, MAX);
        match at {
            0..=7 | 12..=15 => prop_assert!(result.is_ok()),
            8..=11 => prop_assert_eq!(result.unwrap_err().kafka_code(), INVALID_RECORD),
            16 => prop_assert!(matches!(result, Err(KafkaBatchError::BadMagic(_)))),
            _ => prop_assert!(result.is_err(), "flip at {} bit {} accepted", at, bit),
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(
        mut buf in proptest::collection::vec(any::<u8>(), 0..200),
        version in any::<i16>(),
        fix_framing in any::<bool>(),
    ) {
        if fix_framing && buf.len() >= BATCH_OVERHEAD {
            let len = buf.len() as i32 - 12;
            set_i32(&mut buf, at::BATCH_LENGTH, len);
            buf[at::MAGIC] = 2;
            reseal(&mut buf);
        }
        if let Ok(info) = validate_produce_batch(&buf, version, MAX) {
            let stored = wrap_for_log(&bytes::Bytes::copy_from_slice(&buf), &info).into_bytes();
            verify(&stored, &VerifyLimits::default()).unwrap();
            prop_assert_eq!(kafka_payload(&stored).unwrap().len(), buf.len());
        }
    }
}

#[test]
fn a_record_count_the_bytes_cannot_hold_is_refused() {
    // Two small records, but the header claims a million (with a matching last offset delta
    // and a valid CRC): accepting it would move the log end by a million offsets.
    let mut b = simple();
    set_i32(&mut b, at::RECORD_COUNT, 1_000_000);
    set_i32(&mut b, at::LAST_OFFSET_DELTA, 999_999);
    reseal(&mut b);
    let err = validate_produce_batch(&b, 9, MAX).unwrap_err();
    assert_eq!(err.kafka_code(), INVALID_RECORD, "{err}");
    // The true count passes.
    assert!(validate_produce_batch(&simple(), 9, MAX).is_ok());
}

/// A compressed batch's records are not inflated by validation, so its claimed count was not
/// bounded at all: a ~130-byte gzip batch claiming 2^31 - 1 records made the partition roll a
/// segment every two batches. Now the claim must fit what the codec can squeeze into the
/// bytes (and never exceeds BATCH_RECORDS_MAX), whatever the codec.
#[test]
fn a_compressed_batch_cannot_claim_more_records_than_its_codec_could_hold() {
    let bytes_of = |compression: i16, count: i32| {
        let mut b = simple();
        with_attributes(&mut b, compression);
        set_i32(&mut b, at::RECORD_COUNT, count);
        set_i32(&mut b, at::LAST_OFFSET_DELTA, count - 1);
        reseal(&mut b);
        b
    };
    for codec in 1..=4i16 {
        let bomb = bytes_of(codec, i32::MAX);
        let err = validate_produce_batch(&bomb, 9, MAX).unwrap_err();
        assert_eq!(err.kafka_code(), INVALID_RECORD, "codec {codec}: {err}");
        let capped = bytes_of(codec, BATCH_RECORDS_MAX as i32 + 1);
        assert!(
            validate_produce_batch(&capped, 9, MAX).is_err(),
            "codec {codec}: past the absolute cap"
        );
    }
    // A plausible claim for the bytes passes the count check (gzip: a few hundred records
    // per compressed byte at most).
    let plausible = bytes_of(1, 100);
    assert!(validate_produce_batch(&plausible, 9, MAX).is_ok());
}

/// The chained CRCs of a wrapped batch cover every byte an unchained CRC covered: flipping
/// any bit the broker does not stamp (base offsets) fails `check_crc`, whether it lands in
/// the Tidelog-covered head or the Kafka-covered records; yet the Tidelog CRC itself covers
/// only the head (so computing it is no pass over the records).
#[test]
fn chained_crcs_cover_every_unstamped_byte() {
    use crate::batch::{check_crc, compute_crc, FLAG_KAFKA_CRC_CHAIN, KAFKA_CHAIN_END};
    let kafka = simple();
    let info = validate_produce_batch(&kafka, 9, MAX).unwrap();
    let stored = wrap_for_log(&bytes::Bytes::copy_from_slice(&kafka), &info).into_bytes();
    assert_eq!(peek_header(&stored).unwrap().flags(), FLAG_KAFKA_CRC_CHAIN);
    check_crc(&stored).unwrap();
    let mut records_changed = stored.clone();
    let last = records_changed.len() - 1;
    records_changed[last] ^= 1;
    assert_eq!(
        compute_crc(&records_changed),
        compute_crc(&stored),
        "the Tidelog CRC of a chained batch stops at the Kafka CRC"
    );
    for pos in (crate::batch::CRC_START..stored.len())
        .filter(|p| !crate::batch::KAFKA_BASE_OFFSET_RANGE.contains(p))
    {
        let mut flipped = stored.clone();
        flipped[pos] ^= 0x10;
        assert!(
            check_crc(&flipped).is_err() || peek_header(&flipped).is_err(),
            "a flip at byte {pos} (chain ends at {KAFKA_CHAIN_END}) went unnoticed"
        );
    }
}

/// Batches stored before the chain (flags 0, one CRC over everything) still verify, and
/// the chain flag is refused on a native batch.
#[test]
fn unchained_kafka_batches_still_verify_and_native_batches_cannot_chain() {
    use crate::batch::{check_crc, BatchBuilder, FLAG_KAFKA_CRC_CHAIN};
    let kafka = simple();
    let info = validate_produce_batch(&kafka, 9, MAX).unwrap();
    let mut old = wrap_for_log(&bytes::Bytes::copy_from_slice(&kafka), &info).into_bytes();
    old[19] = 0; // flags as written before the chain
    let crc = crate::batch::compute_crc(&old);
    old[8..12].copy_from_slice(&crc.to_le_bytes());
    check_crc(&old).unwrap();
    verify(&old, &VerifyLimits::default()).unwrap();
    let last = old.len() - 1;
    old[last] ^= 1;
    assert!(check_crc(&old).is_err());

    let mut builder = BatchBuilder::new();
    builder.push(None, b"v", 1, &[]);
    let mut native = builder.finish();
    native[19] = FLAG_KAFKA_CRC_CHAIN;
    assert!(matches!(
        peek_header(&native),
        Err(WireError::ReservedNonZero { field: "flags", .. })
    ));
}

/// The log stamps the leader epoch a batch is appended in into its `partitionLeaderEpoch`:
/// on a sealed head (the chained CRC is refreshed from the head alone) and on a whole
/// unchained batch, both verify afterwards and the Kafka header reads the epoch back; a
/// native batch is left alone, and a head too short for its chain is refused.
#[test]
fn the_leader_epoch_is_stamped_and_the_crcs_stay_valid() {
    use crate::batch::{check_crc, stamp_kafka_leader_epoch, BatchBuilder, KAFKA_CHAIN_END};
    let kafka = simple();
    let info = validate_produce_batch(&kafka, 9, MAX).unwrap();
    let sealed = wrap_for_log(&bytes::Bytes::copy_from_slice(&kafka), &info);
    let (mut head, tail) = sealed.into_parts();
    assert!(stamp_kafka_leader_epoch(&mut head, 7).unwrap());
    let mut stored = head.to_vec();
    stored.extend_from_slice(&tail);
    check_crc(&stored).unwrap();
    let header = RecordBatchHeader::read(&stored[HEADER_LEN..]).unwrap();
    assert_eq!(header.partition_leader_epoch, 7);
    assert!(stamp_kafka_leader_epoch(&mut head[..KAFKA_CHAIN_END - 1], 8).is_err());

    let mut old = stored.clone();
    old[19] = 0; // unchained: one CRC over the whole batch
    let crc = crate::batch::compute_crc(&old);
    old[8..12].copy_from_slice(&crc.to_le_bytes());
    assert!(stamp_kafka_leader_epoch(&mut old, 9).unwrap());
    check_crc(&old).unwrap();
    assert_eq!(
        RecordBatchHeader::read(&old[HEADER_LEN..])
            .unwrap()
            .partition_leader_epoch,
        9
    );

    let mut builder = BatchBuilder::new();
    builder.push(None, b"v", 1, &[]);
    let mut native = builder.finish();
    let before = native.clone();
    assert!(!stamp_kafka_leader_epoch(&mut native, 3).unwrap());
    assert_eq!(native, before);
}

/// LogAppendTime: the stored batch carries the LogAppendTime bit and the append time as
/// `maxTimestamp` (in both headers), every CRC holds, and decoding gives every record the
/// append time. CreateTime bounds refuse a batch outside the window with INVALID_TIMESTAMP.
#[test]
fn timestamp_policies_stamp_or_bound_the_batch() {
    let kafka = bytes::Bytes::copy_from_slice(&simple());
    let policy = TimestampPolicy {
        log_append_time: Some(5_000),
        create_time_bounds: None,
    };
    let (info, sealed) = seal_produce_batch_with(&kafka, 9, MAX, &policy).unwrap();
    assert_eq!(info.max_timestamp, 5_000);
    let mut stored = sealed.into_bytes();
    stamp_base_offset(&mut stored, 7).unwrap();
    let view = verify(&stored, &VerifyLimits::default()).unwrap();
    assert_eq!(
        view.header().max_timestamp(),
        5_000,
        "the time index sees the stamp"
    );
    let served = kafka_payload(&stored).unwrap();
    let header = RecordBatchHeader::read(served).unwrap();
    assert_ne!(header.attributes & LOG_APPEND_TIME, 0);
    assert_eq!(header.max_timestamp, 5_000);
    assert_eq!(kafka_crc(served), header.crc, "the Kafka CRC was redone");
    let records = decode_records(served, 7).unwrap();
    assert!(records.iter().all(|r| r.timestamp == 5_000), "{records:?}");
    assert_eq!(
        &kafka[..],
        &simple()[..],
        "the producer's bytes are untouched"
    );

    // CreateTime windows: records at 10 and 12.
    let window = |now, before, after| TimestampPolicy {
        log_append_time: None,
        create_time_bounds: Some((now, before, after)),
    };
    assert!(seal_produce_batch_with(&kafka, 9, MAX, &window(11, 1, 1)).is_ok());
    for refused in [window(100, 50, 0), window(0, 0, 11)] {
        let e = seal_produce_batch_with(&kafka, 9, MAX, &refused).unwrap_err();
        assert!(
            matches!(e, KafkaBatchError::TimestampOutOfRange { .. }),
            "{e}"
        );
        assert_eq!(e.kafka_code(), INVALID_TIMESTAMP);
    }
}
