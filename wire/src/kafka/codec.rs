//! The hand-written runtime of the generated Kafka codec: primitive readers and writers.
//!
//! Every length and count read from the wire is checked against the bytes that remain
//! *before* anything is allocated, so a hostile 4-byte request claiming a 2 GiB string or a
//! billion-element array fails with [`DecodeError`] instead of allocating. Arrays are
//! bounded by `count × min_size(element) <= remaining`, where `min_size` is the fewest bytes
//! an element can be encoded in (generated per struct and version).
//!
//! Encodings (Kafka protocol guide): big-endian integers; classic strings are `i16 len`
//! (−1 = null), classic bytes and arrays `i32 len`; in flexible versions ("compact") they
//! are `uvarint(len + 1)` with 0 = null, and every struct ends with a tagged-field section
//! `uvarint count, {uvarint tag, uvarint size, bytes}*` whose unknown tags are skipped.

use bytes::{BufMut, Bytes, BytesMut};

/// A Kafka UUID (topic ids), 16 raw bytes.
pub type Uuid = [u8; 16];

/// Most elements preallocated for one array, whatever its declared count: larger arrays
/// grow as elements actually decode.
pub const ARRAY_PREALLOC_MAX: usize = 1024;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes remain than a fixed-size field needs.
    #[error("truncated: {need} bytes needed, {have} left")]
    Truncated {
        /// Bytes the field needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A string, bytes or tagged-field length exceeds what remains.
    #[error("length {len} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        /// The declared length.
        len: u64,
        /// Bytes left.
        remaining: usize,
    },
    /// An array count cannot fit in what remains.
    #[error(
        "array of {count} elements (at least {min} bytes each) exceeds the {remaining} bytes left"
    )]
    CountTooLarge {
        /// The declared count.
        count: u64,
        /// Fewest bytes per element.
        min: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// An array count above the decoder's element cap.
    #[error("array of {count} elements exceeds the cap of {max}")]
    TooManyElements {
        /// The declared count.
        count: u64,
        /// The decoder's cap.
        max: usize,
    },
    /// A negative length other than −1 (null).
    #[error("invalid length {0}")]
    InvalidLength(i64),
    /// A varint longer than five bytes.
    #[error("varint longer than 5 bytes")]
    VarintTooLong,
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// The API key is not one the broker knows.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// The version is outside what the codec supports for this API.
    #[error("unsupported version {version} of API {api_key}")]
    UnsupportedVersion {
        /// The API key.
        api_key: i16,
        /// The requested version.
        version: i16,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string, bytes or array is longer than its length prefix can express.
    #[error("value of {0} bytes or elements is too long for its length prefix")]
    TooLong(usize),
}

/// Reads Kafka primitives from a `Bytes` buffer; `bytes`/`records` fields are zero-copy
/// slices of it.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
    /// Most elements any one array may declare.
    max_elements: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over all of `buf`; arrays are bounded by the bytes left only.
    pub fn new(buf: &'a Bytes) -> Self {
        Decoder {
            buf,
            pos: 0,
            end: buf.len(),
            max_elements: usize::MAX,
        }
    }

    /// A decoder whose arrays may declare at most `max_elements` elements each: a request
    /// naming a million topics fails at its count, before a single element is decoded.
    pub fn with_max_elements(buf: &'a Bytes, max_elements: usize) -> Self {
        Decoder {
            max_elements,
            ..Decoder::new(buf)
        }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Bytes consumed so far (from the start of the buffer).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The whole underlying buffer.
    pub fn buffer(&self) -> &'a Bytes {
        self.buf
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                need: n,
                have: self.remaining(),
            });
        }
        let buf: &'a Bytes = self.buf;
        let s = &buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array_of<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads a boolean (any non-zero byte is true).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.array_of::<1>()?[0] != 0)
    }
    /// Reads an `int8`.
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array_of()?))
    }
    /// Reads an `int16`.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array_of()?))
    }
    /// Reads a `uint16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array_of()?))
    }
    /// Reads an `int32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array_of()?))
    }
    /// Reads a `uint32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array_of()?))
    }
    /// Reads an `int64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array_of()?))
    }
    /// Reads a `float64`.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.array_of()?))
    }
    /// Reads a `uuid`.
    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        self.array_of()
    }

    /// Reads an unsigned varint of at most 32 bits.
    pub fn uvarint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..5 {
            let byte = self.array_of::<1>()?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintTooLong)
    }

    /// A length prefix: `None` for null.
    fn length(&mut self, flexible: bool, classic_i16: bool) -> Result<Option<usize>, DecodeError> {
        let len: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else if classic_i16 {
            i64::from(self.i16()?)
        } else {
            i64::from(self.i32()?)
        };
        match len {
            -1 => Ok(None),
            l if l < 0 => Err(DecodeError::InvalidLength(l)),
            l => {
                let l = l as u64;
                if l > self.remaining() as u64 {
                    return Err(DecodeError::LengthTooLarge {
                        len: l,
                        remaining: self.remaining(),
                    });
                }
                Ok(Some(l as usize))
            }
        }
    }

    /// Reads a nullable string.
    pub fn nullable_string(&mut self, flexible: bool) -> Result<Option<String>, DecodeError> {
        match self.length(flexible, true)? {
            None => Ok(None),
            Some(len) => {
                let s = self.take(len)?;
                std::str::from_utf8(s)
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| DecodeError::InvalidUtf8)
            }
        }
    }

    /// Reads a string; a null reads as empty (clients send null where Kafka tolerates it).
    pub fn string(&mut self, flexible: bool) -> Result<String, DecodeError> {
        Ok(self.nullable_string(flexible)?.unwrap_or_default())
    }

    /// Reads nullable bytes as a zero-copy slice of the buffer.
    pub fn nullable_bytes(&mut self, flexible: bool) -> Result<Option<Bytes>, DecodeError> {
        match self.length(flexible, false)? {
            None => Ok(None),
            Some(len) => {
                let start = self.pos;
                self.take(len)?;
                Ok(Some(self.buf.slice(start..start + len)))
            }
        }
    }

    /// Reads bytes; null reads as empty.
    pub fn bytes(&mut self, flexible: bool) -> Result<Bytes, DecodeError> {
        Ok(self.nullable_bytes(flexible)?.unwrap_or_default())
    }

    /// Reads an array whose elements take at least `min` bytes each; `None` for null. The
    /// count is checked against the remaining bytes before anything is allocated.
    pub fn array<T>(
        &mut self,
        flexible: bool,
        min: usize,
        mut element: impl FnMut(&mut Decoder<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let count: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        let count = match count {
            -1 => return Ok(None),
            c if c < 0 => return Err(DecodeError::InvalidLength(c)),
            c => c as u64,
        };
        if count > self.max_elements as u64 {
            return Err(DecodeError::TooManyElements {
                count,
                max: self.max_elements,
            });
        }
        let min = min.max(1);
        if count.saturating_mul(min as u64) > self.remaining() as u64 {
            return Err(DecodeError::CountTooLarge {
                count,
                min,
                remaining: self.remaining(),
            });
        }
        let count = count as usize;
        let mut out = Vec::with_capacity(count.min(ARRAY_PREALLOC_MAX));
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    /// Reads a tagged-field section, handing each field's bytes to `field` as a decoder
    /// limited to that field; whatever `field` leaves unread (unknown tags) is skipped.
    pub fn tagged_fields(
        &mut self,
        mut field: impl FnMut(u32, &mut Decoder<'a>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.remaining() {
                return Err(DecodeError::LengthTooLarge {
                    len: size as u64,
                    remaining: self.remaining(),
                });
            }
            let mut sub = Decoder {
                buf: self.buf,
                pos: self.pos,
                end: self.pos + size,
                max_elements: self.max_elements,
            };
            field(tag, &mut sub)?;
            self.pos += size;
        }
        Ok(())
    }
}

/// A length as `u32`, or [`EncodeError::TooLong`].
pub fn len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLong(len))
}

/// Writes an unsigned varint.
pub fn put_uvarint(e: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        e.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    e.put_u8(value as u8);
}

fn put_len(
    e: &mut BytesMut,
    len: Option<usize>,
    flexible: bool,
    classic_i16: bool,
) -> Result<(), EncodeError> {
    match (len, flexible) {
        (None, true) => put_uvarint(e, 0),
        (Some(n), true) => {
            let n1 = len_u32(n)?.checked_add(1).ok_or(EncodeError::TooLong(n))?;
            put_uvarint(e, n1);
        }
        (None, false) if classic_i16 => e.put_i16(-1),
        (None, false) => e.put_i32(-1),
        (Some(n), false) if classic_i16 => {
            e.put_i16(i16::try_from(n).map_err(|_| EncodeError::TooLong(n))?)
        }
        (Some(n), false) => e.put_i32(i32::try_from(n).map_err(|_| EncodeError::TooLong(n))?),
    }
    Ok(())
}

/// Writes a string.
pub fn put_string(e: &mut BytesMut, s: &str, flexible: bool) -> Result<(), EncodeError> {
    put_len(e, Some(s.len()), flexible, true)?;
    e.put_slice(s.as_bytes());
    Ok(())
}

/// Writes a nullable string.
pub fn put_nullable_string(
    e: &mut BytesMut,
    s: Option<&str>,
    flexible: bool,
) -> Result<(), EncodeError> {
    match s {
        Some(s) => put_string(e, s, flexible),
        None => put_len(e, None, flexible, true),
    }
}

/// Writes bytes.
pub fn put_bytes(e: &mut BytesMut, b: &[u8], flexible: bool) -> Result<(), EncodeError> {
    put_len(e, Some(b.len()), flexible, false)?;
    e.put_slice(b);
    Ok(())
}

/// Writes nullable bytes.
pub fn put_nullable_bytes(
    e: &mut BytesMut,
    b: Option<&[u8]>,
    flexible: bool,
) -> Result<(), EncodeError> {
    match b {
        Some(b) => put_bytes(e, b, flexible),
        None => put_len(e, None, flexible, false),
    }
}

/// Writes an array length (`None`: null).
pub fn put_array_len(
    e: &mut BytesMut,
    len: Option<usize>,
    flexible: bool,
) -> Result<(), EncodeError> {
    put_len(e, len, flexible, false)
}

/// A small deterministic generator for the generated `sample` functions.
#[cfg(test)]
pub(crate) struct SampleRng(u64);

#[cfg(test)]
impl SampleRng {
    pub(crate) fn new(seed: u64) -> Self {
        SampleRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn len(&mut self) -> usize {
        (self.next() % 3) as usize
    }
    pub(crate) fn uuid(&mut self) -> Uuid {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next().to_be_bytes());
        out[8..].copy_from_slice(&self.next().to_be_bytes());
        out
    }
    pub(crate) fn string(&mut self) -> String {
        let n = self.next() % 12;
        (0..n)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
    pub(crate) fn bytes(&mut self) -> Bytes {
        let n = self.next() % 40;
        (0..n)
            .map(|_| self.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
}

/// Encodes random values of a message at `version`, decodes them back and compares; also
/// checks `min_size` is a true lower bound and that every truncation fails cleanly.
#[cfg(test)]
pub(crate) fn check_round_trip<T: PartialEq + std::fmt::Debug>(
    version: i16,
    sample: fn(&mut SampleRng, i16) -> T,
    encode: fn(&T, &mut BytesMut, i16) -> Result<(), EncodeError>,
    decode: fn(&mut Decoder<'_>, i16) -> Result<T, DecodeError>,
    min_size: fn(i16) -> usize,
) {
    for seed in 0..40u64 {
        let mut rng = SampleRng::new(seed + 1);
        let value = sample(&mut rng, version);
        let mut buf = BytesMut::new();
        encode(&value, &mut buf, version).expect("encodes");
        let bytes = buf.freeze();
        assert!(
            bytes.len() >= min_size(version),
            "v{version}: {} bytes < min_size {}",
            bytes.len(),
            min_size(version)
        );
        let mut d = Decoder::new(&bytes);
        let back = decode(&mut d, version).expect("decodes");
        assert_eq!(d.remaining(), 0, "v{version}: trailing bytes");
        assert_eq!(back, value, "v{version} seed {seed}");
        if seed < 4 {
            for cut in 0..bytes.len() {
                let short = bytes.slice(..cut);
                let mut d = Decoder::new(&short);
                // Must fail or stop early; never panic or over-allocate.
                let _ = decode(&mut d, version);
            }
        }
    }
}
