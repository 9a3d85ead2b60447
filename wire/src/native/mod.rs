//! The native protocol: length-prefixed frames with a flatbuffers header and
//! a raw body of record batches.
//!
//! ```text
//!  byte 0           4            8                  8 + header_len       4 + frame_len
//!       +-----------+------------+------------------+--------------------+
//!       | frame_len | header_len | header           | body               |
//!       |  u32 LE   |  u32 LE    | flatbuffers      | raw bytes          |
//!       |           |            | Message "TLG1"   | (record batches)   |
//!       +-----------+------------+------------------+--------------------+
//!       |<- prefix (8 bytes) --->|
//!                   |<---- frame_len = 4 + header_len + body_len ------->|
//!                                |<- header_len --->|<- body_len ------->|
//!                                                   ^ BodyRef.offset 0
//! ```
//!
//! * `frame_len` counts the bytes after itself, so a reader needs 4 bytes to
//!   learn the size of the whole frame ([`peek_frame_len`]) and can refuse an
//!   oversized one before buffering or allocating anything.
//! * The header is a flatbuffers [`Message`] with file identifier `"TLG1"`:
//!   a `correlation_id` (echoed in the response) and a `Body` union, one
//!   member per request and response kind. It is always run through the
//!   flatbuffers verifier, bounded by [`FrameLimits`], before any field is read.
//! * The body holds record batches exactly as stored (the `tidelog-wire`
//!   batch format). The header points into it with
//!   `BodyRef { offset: u32, len: u32 }`, relative to the body start; a
//!   `BodyRef` may cover several whole batches back to back. Batches never
//!   pass through a flatbuffers builder, so a fetch response can be sent as
//!   `prefix + header` followed by cached batch buffers in one vectored write,
//!   and a produce request's batches can be appended straight from the
//!   receive buffer.
//!
//! Decoding: [`peek_frame_len`], then [`decode_frame`], which checks every
//! length and every `BodyRef` and returns a zero-copy [`DecodedFrame`].
//! Encoding: [`FrameEncoder`] (a reusable `FlatBufferBuilder`); it writes only
//! the prefix and header, the caller sends the body pieces after them.
//!
//! Version negotiation: a client's first frame is a `HandshakeRequest` with
//! the range of versions it speaks; the server answers with the highest
//! version in both ranges ([`negotiate_version`]) or `UnsupportedVersion`.

use flatbuffers::VerifierOptions;

use crate::WireError;

mod encode;
mod error_code;
#[cfg(test)]
mod tests;

pub use crate::generated::native::*;
pub use encode::{FetchResponsePartition, FrameEncoder, ProduceRequestPartition, ReplicaAnswer};

/// Oldest protocol version this crate speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Newest protocol version this crate speaks.
pub const PROTOCOL_VERSION_MAX: u16 = 1;
/// Bytes before the header: `frame_len` and `header_len`.
pub const FRAME_PREFIX_LEN: usize = 8;
/// Bytes of the `frame_len` field, enough for [`peek_frame_len`].
pub const FRAME_LEN_FIELD: usize = 4;
/// File identifier of the header (`Message`).
pub const HEADER_IDENTIFIER: &[u8; 4] = b"TLG1";

const _: () = assert!(PROTOCOL_VERSION_MIN <= PROTOCOL_VERSION_MAX);
const _: () = assert!(MESSAGE_IDENTIFIER.len() == HEADER_IDENTIFIER.len());

/// Bounds applied to untrusted frames by [`peek_frame_len`] and [`decode_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest accepted frame, counting all of it (`4 + frame_len`).
    pub max_frame_bytes: usize,
    /// Largest accepted flatbuffers header (`header_len`).
    pub max_header_bytes: usize,
    /// Most tables the verifier visits in one header. The decoder also caps
    /// it at `header_len / 4 + 1`, the most an honest header can hold.
    pub max_tables: usize,
    /// Deepest accepted table nesting (an honest message needs 4: message,
    /// body, element of a vector, element of a nested vector).
    pub max_depth: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 << 20,
            max_header_bytes: 1 << 20,
            // Every table is at least 4 bytes (its vtable offset).
            max_tables: (1 << 20) / 4,
            max_depth: 16,
        }
    }
}

/// Total size of the frame at the start of `buf` (`4 + frame_len`), or
/// `Ok(None)` if `buf` holds fewer than 4 bytes.
///
/// Only the `frame_len` field is read, so a server can call this on the first
/// 4 bytes of a connection's data and refuse a huge frame before buffering or
/// allocating for it.
///
/// # Errors
///
/// [`WireError::BadFrameLength`] if `frame_len < 4` (no room for
/// `header_len`), [`WireError::FrameTooLarge`] if the total exceeds
/// `limits.max_frame_bytes`.
pub fn peek_frame_len(buf: &[u8], limits: &FrameLimits) -> Result<Option<usize>, WireError> {
    let Some(frame_len) = read_u32(buf, 0) else {
        return Ok(None);
    };
    if (frame_len as usize) < FRAME_PREFIX_LEN - FRAME_LEN_FIELD {
        return Err(WireError::BadFrameLength { frame_len });
    }
    let total = (frame_len as usize).checked_add(FRAME_LEN_FIELD);
    match total {
        Some(total) if total <= limits.max_frame_bytes => Ok(Some(total)),
        _ => Err(WireError::FrameTooLarge {
            len: u64::from(frame_len) + FRAME_LEN_FIELD as u64,
            max: limits.max_frame_bytes,
        }),
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// The highest version in both `[client_min, client_max]` and
/// [`PROTOCOL_VERSION_MIN`]`..=`[`PROTOCOL_VERSION_MAX`], if any.
pub fn negotiate_version(client_min: u16, client_max: u16) -> Option<u16> {
    let version = client_max.min(PROTOCOL_VERSION_MAX);
    (version >= client_min.max(PROTOCOL_VERSION_MIN)).then_some(version)
}

/// A verified frame borrowed from the buffer passed to [`decode_frame`].
#[derive(Clone, Copy)]
pub struct DecodedFrame<'a> {
    /// The verified header. Its body is a known, non-`NONE` [`Body`] member.
    pub message: Message<'a>,
    /// The frame body; every `BodyRef` in `message` lies within it.
    pub body: &'a [u8],
    /// Total size of the frame (`4 + frame_len`).
    pub frame_len: usize,
}

impl std::fmt::Debug for DecodedFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedFrame")
            .field("correlation_id", &self.message.correlation_id())
            .field("body_type", &self.message.body_type())
            .field("body_len", &self.body.len())
            .field("frame_len", &self.frame_len)
            .finish()
    }
}

impl<'a> DecodedFrame<'a> {
    /// The header's correlation id.
    pub fn correlation_id(&self) -> u32 {
        self.message.correlation_id()
    }

    /// Which message kind the frame carries.
    pub fn body_type(&self) -> Body {
        self.message.body_type()
    }

    /// The body bytes `r` points at.
    ///
    /// # Errors
    ///
    /// [`WireError::BodyRefOutOfBounds`] if `r` does not lie within the body
    /// (never for the `BodyRef`s of a produce request or fetch response of
    /// this frame: [`decode_frame`] checked them).
    pub fn body_slice(&self, r: &BodyRef) -> Result<&'a [u8], WireError> {
        body_slice(self.body, r)
    }

    /// Like [`body_slice`](Self::body_slice) for an optional `BodyRef`:
    /// absent means no bytes.
    ///
    /// # Errors
    ///
    /// As [`body_slice`](Self::body_slice).
    pub fn batches(&self, r: Option<&BodyRef>) -> Result<&'a [u8], WireError> {
        r.map_or(Ok(&[][..]), |r| self.body_slice(r))
    }

    /// An owned copy of the header (allocates; for cold paths and tests).
    pub fn unpack(&self) -> MessageT {
        self.message.unpack()
    }
}

fn body_slice<'a>(body: &'a [u8], r: &BodyRef) -> Result<&'a [u8], WireError> {
    let out_of_bounds = || WireError::BodyRefOutOfBounds {
        offset: r.offset(),
        len: r.len(),
        body_len: body.len(),
    };
    let start = r.offset() as usize;
    let end = start
        .checked_add(r.len() as usize)
        .ok_or_else(out_of_bounds)?;
    body.get(start..end).ok_or_else(out_of_bounds)
}

/// Decodes and verifies the frame at the start of `buf`; bytes after it are
/// ignored, so `buf` may be a receive buffer holding several frames.
///
/// Checks, in order: the frame lengths against `limits` ([`peek_frame_len`]),
/// that the whole frame is present, `header_len <= limits.max_header_bytes`
/// and fits in the frame, the `"TLG1"` identifier, the flatbuffers verifier
/// (bounded by `limits`), that the body is a known member of [`Body`], and
/// that every `BodyRef` of a produce request or fetch response lies within
/// the body. The record batches themselves are not verified here: that is
/// [`batch::verify`](crate::batch::verify)'s job, on the slices the
/// `BodyRef`s select.
///
/// # Errors
///
/// [`WireError::Truncated`] if `buf` holds less than a whole frame;
/// [`WireError::BadFrameLength`], [`WireError::FrameTooLarge`],
/// [`WireError::HeaderTooLarge`], [`WireError::HeaderOutOfBounds`],
/// [`WireError::BadIdentifier`], [`WireError::InvalidHeader`],
/// [`WireError::UnknownMessageType`] (which carries the correlation id, so
/// the server can still answer), [`WireError::MissingBody`] and
/// [`WireError::BodyRefOutOfBounds`] for malformed frames.
pub fn decode_frame<'a>(
    buf: &'a [u8],
    limits: &FrameLimits,
) -> Result<DecodedFrame<'a>, WireError> {
    let truncated = |need| WireError::Truncated {
        need,
        have: buf.len(),
    };
    let frame_len = peek_frame_len(buf, limits)?.ok_or(truncated(FRAME_PREFIX_LEN))?;
    let frame = buf.get(..frame_len).ok_or(truncated(frame_len))?;
    // peek_frame_len guarantees frame_len >= FRAME_PREFIX_LEN.
    let header_len = read_u32(frame, FRAME_LEN_FIELD).ok_or(truncated(FRAME_PREFIX_LEN))?;
    if header_len as usize > limits.max_header_bytes {
        return Err(WireError::HeaderTooLarge {
            len: header_len,
            max: limits.max_header_bytes,
        });
    }
    // Saturating: on 32-bit targets a huge header_len must fail the bounds
    // check below, not overflow.
    let header_end = FRAME_PREFIX_LEN.saturating_add(header_len as usize);
    let (header, body) = match (
        frame.get(FRAME_PREFIX_LEN..header_end),
        frame.get(header_end..),
    ) {
        (Some(header), Some(body)) => (header, body),
        _ => {
            return Err(WireError::HeaderOutOfBounds {
                header_len,
                frame_len: frame_len - FRAME_LEN_FIELD,
            })
        }
    };
    // A flatbuffer starts with the root offset, then the identifier.
    if header.get(4..8) != Some(&HEADER_IDENTIFIER[..]) {
        return Err(WireError::BadIdentifier);
    }
    let opts = VerifierOptions {
        max_depth: limits.max_depth,
        max_tables: limits.max_tables.min(header.len() / 4 + 1),
        // Shared vtables are re-verified for every table that uses them, so
        // an honest header's apparent size is a small multiple of its length;
        // 8x bounds the work a malicious DAG of offsets can cause.
        max_apparent_size: header.len().saturating_mul(8),
        ignore_missing_null_terminator: false,
    };
    let message = root_as_message_with_opts(&opts, header).map_err(WireError::InvalidHeader)?;
    let body_type = message.body_type();
    if body_type == Body::NONE || body_type.variant_name().is_none() {
        return Err(WireError::UnknownMessageType {
            message_type: body_type.0,
            correlation_id: message.correlation_id(),
        });
    }
    check_body_refs(&message, body)?;
    Ok(DecodedFrame {
        message,
        body,
        frame_len,
    })
}

/// Checks that every `BodyRef` of the message lies within `body`. Produce
/// partitions must carry one (their batches are the point of the request);
/// fetch results may omit it (no data, e.g. on error).
fn check_body_refs(message: &Message<'_>, body: &[u8]) -> Result<(), WireError> {
    if let Some(req) = message.body_as_produce_request() {
        for (index, p) in req.partitions().unwrap_or_default().iter().enumerate() {
            let r = p.batches().ok_or(WireError::MissingBody { index })?;
            body_slice(body, r)?;
        }
    }
    if let Some(resp) = message.body_as_fetch_response() {
        for p in resp.partitions().unwrap_or_default() {
            if let Some(r) = p.batches() {
                body_slice(body, r)?;
            }
        }
    }
    Ok(())
}
