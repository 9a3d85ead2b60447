//! The Kafka protocol: a codec generated from Kafka's JSON message specs
//! ([`generated`], by `wire/codegen`) on a hand-written, allocation-bounded runtime
//! ([`codec`]).
//!
//! A request on the wire is `i32 size | header | body`. The header is v1
//! (`api_key, api_version, correlation_id, client_id`) or, for flexible request versions, v2
//! (v1 plus tagged fields; `client_id` keeps its classic encoding). Responses carry header v0
//! (`correlation_id`) or v1 (plus tagged fields) for flexible versions, except ApiVersions,
//! whose response header is always v0 so that any client can read it.

pub mod code;
pub mod codec;
pub mod generated;

pub use codec::{DecodeError, Decoder, EncodeError};
pub use generated::request_header::RequestHeader;
pub use generated::response_header::ResponseHeader;

/// The ApiVersions API key (its response header is always v0).
pub const API_VERSIONS_KEY: i16 = 18;

/// The request header version used by request `api_key` at `api_version`.
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    if generated::request_is_flexible(api_key, api_version) {
        2
    } else {
        1
    }
}

/// The response header version used by the response to `api_key` at `api_version`.
pub fn response_header_version(api_key: i16, api_version: i16) -> i16 {
    if api_key != API_VERSIONS_KEY && generated::response_is_flexible(api_key, api_version) {
        1
    } else {
        0
    }
}

/// Peeks `(api_key, api_version, correlation_id)` from the first 8 bytes of a request,
/// before the rest is decoded (to answer even a request whose body cannot be parsed).
pub fn peek_request_ids(request: &[u8]) -> Option<(i16, i16, i32)> {
    let b = request.get(..8)?;
    Some((
        i16::from_be_bytes([b[0], b[1]]),
        i16::from_be_bytes([b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// Decodes a request header; the decoder is left at the start of the body.
pub fn decode_request_header(d: &mut Decoder<'_>) -> Result<RequestHeader, DecodeError> {
    // The key and version decide the header version; read them without consuming.
    let (api_key, api_version) = {
        let mut probe = Decoder::new(d.buffer());
        probe.skip(d.position())?;
        (probe.i16()?, probe.i16()?)
    };
    RequestHeader::decode(d, request_header_version(api_key, api_version))
}

#[cfg(test)]
mod tests;
