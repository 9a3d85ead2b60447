//! Feeds arbitrary bytes to the Kafka request decoder the broker runs: the header, then
//! the body of whatever API and version the header names. Anything decoded is re-encoded
//! and decoded again, which must give the same value (the codec is canonical on what it
//! accepts). Allocation is bounded by the codec's length checks; libFuzzer's -rss_limit_mb
//! catches any that is not.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidelog_wire::kafka::{decode_request_header, generated, Decoder};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let mut d = Decoder::new(&bytes);
    let Ok(header) = decode_request_header(&mut d) else {
        return;
    };
    let (key, version) = (header.request_api_key, header.request_api_version);
    let Ok(body) = generated::decode_request_body(key, version, &mut d) else {
        return;
    };
    // Round trip the Metadata and Produce bodies, the commonest requests.
    match body {
        generated::RequestBody::Metadata(m) => {
            let mut out = BytesMut::new();
            m.encode(&mut out, version).expect("re-encodes");
            let again = out.freeze();
            let mut d2 = Decoder::new(&again);
            let back = generated::metadata_request::MetadataRequest::decode(&mut d2, version)
                .expect("re-decodes");
            assert_eq!(back, m);
        }
        generated::RequestBody::Produce(p) => {
            let mut out = BytesMut::new();
            p.encode(&mut out, version).expect("re-encodes");
            let again = out.freeze();
            let mut d2 = Decoder::new(&again);
            let back = generated::produce_request::ProduceRequest::decode(&mut d2, version)
                .expect("re-decodes");
            assert_eq!(back, p);
        }
        other => {
            std::hint::black_box(format!("{other:?}").len());
        }
    }
});
