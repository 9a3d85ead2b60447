//! Kafka's batch codecs (docs/KAFKA.md §2: `attributes` bits 0-2), for clients: a producer
//! compresses the records section of a batch, a consumer decompresses it. The broker stores
//! compressed batches verbatim and never links this (feature `codecs`).
//!
//! * gzip: a gzip member (flate2);
//! * snappy: raw snappy as librdkafka writes it; reading also takes the xerial framing that
//!   the Java client writes (`\x82SNAPPY\0`, two version ints, then length-prefixed blocks);
//! * lz4: the LZ4 frame format with independent 64 KiB blocks, as Kafka >= 0.10 writes it;
//! * zstd: one zstd frame.
//!
//! Decompression is bounded: data that would inflate past the caller's limit is an error,
//! never an allocation of that size. Everything works on memory; no I/O.

use std::io::{Read, Write};

use crate::batch::Compression;

/// What went wrong (de)compressing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Codec 5, 6 or 7: no such compression.
    #[error("unknown compression codec {0}")]
    Unknown(u8),
    /// The data inflates past the caller's limit.
    #[error("{codec} data inflates past {limit} bytes")]
    TooLarge {
        /// The codec's name.
        codec: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The data does not decode.
    #[error("corrupt {codec} data: {why}")]
    Corrupt {
        /// The codec's name.
        codec: &'static str,
        /// What the decoder said.
        why: String,
    },
}

/// The lowercase name Kafka's configuration uses for a codec (`compression.type`).
pub fn name(codec: Compression) -> &'static str {
    match codec {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
        _ => "unknown",
    }
}

/// The codec of `attributes`' bits 0-2.
///
/// # Errors
/// [`CodecError::Unknown`] for 5, 6 and 7.
pub fn compression_of(attributes: i16) -> Result<Compression, CodecError> {
    let codec = (attributes & super::CODEC_MASK) as u8;
    match Compression(codec) {
        c if c.variant_name().is_some() => Ok(c),
        _ => Err(CodecError::Unknown(codec)),
    }
}

/// The zstd level (librdkafka's default).
const ZSTD_LEVEL: i32 = 3;

/// Appends `data` compressed with `codec` to `out` (`Compression::None` copies it).
///
/// # Errors
/// [`CodecError::Unknown`] for a codec number Kafka does not define.
pub fn compress(codec: Compression, data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let io = |e: std::io::Error| -> ! {
        // Writers into a Vec fail only on allocation failure, which aborts anyway.
        unreachable!("compressing into memory cannot fail: {e}")
    };
    match codec {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            w.write_all(data).unwrap_or_else(|e| io(e));
            w.finish().unwrap_or_else(|e| io(e));
        }
        Compression::Snappy => {
            let start = out.len();
            out.resize(start + snap::raw::max_compress_len(data.len()), 0);
            let n = snap::raw::Encoder::new()
                .compress(data, &mut out[start..])
                .unwrap_or_else(|e| io(e.into()));
            out.truncate(start + n);
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut w = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            w.write_all(data).unwrap_or_else(|e| io(e));
            w.finish().unwrap_or_else(|e| io(e.into()));
        }
        Compression::Zstd => {
            let mut w =
                zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).unwrap_or_else(|e| io(e));
            w.write_all(data).unwrap_or_else(|e| io(e));
            w.finish().unwrap_or_else(|e| io(e));
        }
        Compression(other) => return Err(CodecError::Unknown(other)),
    }
    Ok(())
}

/// `data` decompressed with `codec`, at most `limit` bytes.
///
/// # Errors
/// Corrupt data, or more than `limit` bytes.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let name = name(codec);
    let corrupt = |why: String| CodecError::Corrupt { codec: name, why };
    match codec {
        Compression::None => bounded_copy(data, limit, name),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data), limit, name),
        Compression::Snappy => {
            if data.starts_with(XERIAL_MAGIC) {
                return xerial(data, limit);
            }
            let mut out = Vec::new();
            snappy_block(data, limit, &mut out)?;
            Ok(out)
        }
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit, name),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| corrupt(e.to_string()))?;
            read_bounded(d, limit, name)
        }
        Compression(other) => Err(CodecError::Unknown(other)),
    }
}

fn bounded_copy(data: &[u8], limit: usize, codec: &'static str) -> Result<Vec<u8>, CodecError> {
    if data.len() > limit {
        return Err(CodecError::TooLarge { codec, limit });
    }
    Ok(data.to_vec())
}

fn read_bounded(r: impl Read, limit: usize, codec: &'static str) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CodecError::Corrupt {
            codec,
            why: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { codec, limit });
    }
    Ok(out)
}

/// The xerial snappy stream header.
pub const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\0";
/// Header bytes: magic, version, compatible version.
const XERIAL_HEADER_LEN: usize = 16;

/// One raw snappy block appended to `out`, `out` staying within `limit`.
fn snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let corrupt = |why: String| CodecError::Corrupt {
        codec: "snappy",
        why,
    };
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
    if out.len() + n > limit {
        return Err(CodecError::TooLarge {
            codec: "snappy",
            limit,
        });
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(())
}

fn xerial(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let corrupt = |why: &str| CodecError::Corrupt {
        codec: "snappy",
        why: why.into(),
    };
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("short xerial header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| corrupt("short xerial block length"))?;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt("xerial block past the end"))?;
        snappy_block(block, limit, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in ALL {
            let mut packed = b"prefix".to_vec();
            compress(codec, &data, &mut packed).expect("known codec");
            assert_eq!(&packed[..6], b"prefix", "{codec:?} appends");
            if codec != Compression::None {
                assert!(packed.len() < data.len() / 2, "{codec:?} compresses");
            }
            let back = decompress(codec, &packed[6..], data.len()).expect("decompresses");
            assert_eq!(back, data, "{codec:?}");
            let e = decompress(codec, &packed[6..], data.len() - 1).expect_err("over the limit");
            assert!(matches!(e, CodecError::TooLarge { .. }), "{codec:?}: {e}");
            assert_eq!(compression_of(i16::from(codec.0)).expect("known"), codec);
        }
        assert!(compression_of(5).is_err());
        assert!(compress(Compression(5), b"x", &mut Vec::new()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics_or_exceeds_the_limit(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), codec in 0usize..5) {
            if let Ok(out) = decompress(ALL[codec], &bytes, 4096) {
                proptest::prop_assert!(out.len() <= 4096);
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in ALL.into_iter().skip(1) {
            for junk in [
                &b""[..],
                b"\x00",
                b"\xff\xff\xff\xff\xff\xff\xff\xff",
                b"hello world",
            ] {
                let _ = decompress(codec, junk, 1 << 20);
            }
            let mut packed = Vec::new();
            compress(codec, b"some bytes some bytes some bytes", &mut packed).expect("known");
            let cut = &packed[..packed.len() / 2];
            assert!(
                decompress(codec, cut, 1 << 20).is_err(),
                "{codec:?} truncated"
            );
        }
    }

    #[test]
    fn xerial_framed_snappy_reads() {
        let parts: [&[u8]; 2] = [b"first block, ", b"second block"];
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend(1i32.to_be_bytes());
        framed.extend(1i32.to_be_bytes());
        for p in parts {
            let block = snap::raw::Encoder::new()
                .compress_vec(p)
                .expect("compresses");
            framed.extend((block.len() as u32).to_be_bytes());
            framed.extend(block);
        }
        let back = decompress(Compression::Snappy, &framed, 1024).expect("reads");
        assert_eq!(back, b"first block, second block");
        assert!(
            decompress(Compression::Snappy, &framed, 10).is_err(),
            "bounded"
        );
        assert!(decompress(Compression::Snappy, &framed[..framed.len() - 1], 1024).is_err());
    }
}
