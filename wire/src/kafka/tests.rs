//! Tests of the Kafka codec beyond the generated per-message round trips.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::generated::{self, metadata_request::MetadataRequest};
use super::*;

fn request(api_key: i16, version: i16, body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(7);
    b.put_i16(-1);
    if request_header_version(api_key, version) >= 2 {
        b.put_u8(0);
    }
    b.put_slice(body);
    b.freeze()
}

#[test]
fn a_huge_array_count_is_refused_before_allocating() {
    // Metadata v4: topics array claiming 2^31-1 elements in 0 remaining bytes.
    let bytes = request(3, 4, &[0x7f, 0xff, 0xff, 0xff]);
    let mut d = Decoder::new(&bytes);
    let header = decode_request_header(&mut d).expect("header");
    assert_eq!(header.correlation_id, 7);
    let err = generated::decode_request_body(3, 4, &mut d).unwrap_err();
    assert!(matches!(err, DecodeError::CountTooLarge { .. }), "{err}");
}

#[test]
fn an_array_over_the_element_cap_fails_at_its_count() {
    // Metadata v4 naming 20 topics (each a 2-byte length and one character) under a cap of
    // 10: refused at the count, before any element; under a cap of 20 it decodes.
    let mut body = 20i32.to_be_bytes().to_vec();
    for i in 0..20u8 {
        body.extend_from_slice(&1i16.to_be_bytes());
        body.push(b'a' + i);
    }
    body.push(1); // allow auto topic creation
    let bytes = request(3, 4, &body);
    let mut d = Decoder::with_max_elements(&bytes, 10);
    decode_request_header(&mut d).expect("header");
    let err = generated::decode_request_body(3, 4, &mut d).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooManyElements { count: 20, max: 10 }),
        "{err}"
    );
    let mut d = Decoder::with_max_elements(&bytes, 20);
    decode_request_header(&mut d).expect("header");
    generated::decode_request_body(3, 4, &mut d).expect("20 elements under a cap of 20");
}

#[test]
fn a_huge_string_length_is_refused() {
    // CreateTopics v7 (flexible): topics array of 1, name claiming 2^28 bytes.
    let bytes = request(19, 7, &[2, 0x80, 0x80, 0x80, 0x80, 0x01]);
    let mut d = Decoder::new(&bytes);
    decode_request_header(&mut d).expect("header");
    let err = generated::decode_request_body(19, 7, &mut d).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::LengthTooLarge { .. } | DecodeError::CountTooLarge { .. }
        ),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_versions_are_errors() {
    let bytes = request(3, 4, &[]);
    let mut d = Decoder::new(&bytes);
    decode_request_header(&mut d).expect("header");
    assert_eq!(
        generated::decode_request_body(999, 0, &mut d),
        Err(DecodeError::UnknownApiKey(999))
    );
    assert_eq!(
        generated::decode_request_body(3, 99, &mut d),
        Err(DecodeError::UnsupportedVersion {
            api_key: 3,
            version: 99
        })
    );
}

#[test]
fn unknown_tagged_fields_are_skipped() {
    // Metadata v12 with topics null, auto-create true, authorized-ops false, plus an
    // unknown tag 9 of 3 bytes.
    let body = [0u8, 1, 0, 1, 9, 3, 0xaa, 0xbb, 0xcc];
    let bytes = request(3, 12, &body);
    let mut d = Decoder::new(&bytes);
    decode_request_header(&mut d).expect("header");
    let m = MetadataRequest::decode(&mut d, 12).expect("decodes");
    assert_eq!(m.topics, None);
    assert!(m.allow_auto_topic_creation);
    assert_eq!(d.remaining(), 0);
}

#[test]
fn librdkafka_metadata_trailing_bytes_decode() {
    // KAFKA.md 1.6.3: `00 00 00 00 01 00 00` for Metadata v12: an uncompacted count.
    let bytes = request(3, 12, &[0, 0, 0, 0, 1, 0, 0]);
    let mut d = Decoder::new(&bytes);
    decode_request_header(&mut d).expect("header");
    let m = MetadataRequest::decode(&mut d, 12).expect("decodes");
    assert_eq!(m.topics, None);
}

#[test]
fn api_versions_response_header_is_v0() {
    assert_eq!(response_header_version(18, 3), 0);
    assert_eq!(response_header_version(3, 12), 1);
    assert_eq!(response_header_version(3, 8), 0);
    assert_eq!(request_header_version(18, 3), 2);
    assert_eq!(request_header_version(0, 7), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic any request decoder at any version.
    #[test]
    fn arbitrary_request_bodies_never_panic(key in 0i16..24, version in 0i16..18, body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = Bytes::from(body);
        let mut d = Decoder::new(&bytes);
        let _ = generated::decode_request_body(key, version, &mut d);
    }

    /// Decoding then re-encoding then decoding again gives the same request.
    #[test]
    fn decoded_requests_re_encode_canonically(version in 0i16..13, body in proptest::collection::vec(any::<u8>(), 0..48)) {
        let bytes = Bytes::from(body);
        let mut d = Decoder::new(&bytes);
        if let Ok(first) = MetadataRequest::decode(&mut d, version) {
            let mut out = BytesMut::new();
            first.encode(&mut out, version).expect("encodes");
            let again = out.freeze();
            let mut d2 = Decoder::new(&again);
            let second = MetadataRequest::decode(&mut d2, version).expect("re-decodes");
            prop_assert_eq!(first, second);
        }
    }
}
