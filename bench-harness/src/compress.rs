//! Kafka's batch codecs (docs/KAFKA.md §2: attributes bits 0-2): the producer compresses the
//! records section of a batch, the consumer decompresses it.
//!
//! * gzip: a gzip member (flate2);
//! * snappy: raw snappy as librdkafka writes it; reading also takes the xerial framing that
//!   the Java client writes (`\x82SNAPPY\0`, two version ints, then length-prefixed blocks);
//! * lz4: the LZ4 frame format with independent 64 KiB blocks, as Kafka ≥ 0.10 writes it;
//! * zstd: one zstd frame.
//!
//! Decompression is bounded: a batch that would inflate past the caller's limit is an error,
//! never an allocation of that size.

use std::io::{Read, Write};

use crate::args::Codec;

/// What went wrong (de)compressing.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    Unknown(u8),
    #[error("{codec} data inflates past {limit} bytes")]
    TooLarge { codec: &'static str, limit: usize },
    #[error("corrupt {codec} data: {why}")]
    Corrupt { codec: &'static str, why: String },
}

/// The codec bits of a batch's `attributes`.
pub fn attribute(codec: Codec) -> i16 {
    match codec {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Snappy => 2,
        Codec::Lz4 => 3,
        Codec::Zstd => 4,
    }
}

/// The codec of `attributes`' bits 0-2.
///
/// # Errors
/// [`CodecError::Unknown`] for 5, 6 and 7.
pub fn from_attributes(attributes: i16) -> Result<Codec, CodecError> {
    Ok(match attributes & 0x7 {
        0 => Codec::None,
        1 => Codec::Gzip,
        2 => Codec::Snappy,
        3 => Codec::Lz4,
        4 => Codec::Zstd,
        c => return Err(CodecError::Unknown(c as u8)),
    })
}

/// The zstd level (librdkafka's default).
const ZSTD_LEVEL: i32 = 3;

/// Appends `data` compressed with `codec` to `out` (`Codec::None` copies it).
pub fn compress(codec: Codec, data: &[u8], out: &mut Vec<u8>) {
    let io = |e: std::io::Error| -> ! {
        // Writers into a Vec fail only on allocation failure, which aborts anyway.
        unreachable!("compressing into memory cannot fail: {e}")
    };
    match codec {
        Codec::None => out.extend_from_slice(data),
        Codec::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            w.write_all(data).unwrap_or_else(|e| io(e));
            w.finish().unwrap_or_else(|e| io(e));
        }
        Codec::Snappy => {
            let start = out.len();
            out.resize(start + snap::raw::max_compress_len(data.len()), 0);
            let n = snap::raw::Encoder::new()
                .compress(data, &mut out[start..])
                .unwrap_or_else(|e| io(e.into()));
            out.truncate(start + n);
        }
        Codec::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut w = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            w.write_all(data).unwrap_or_else(|e| io(e));
            w.finish().unwrap_or_else(|e| io(e.into()));
        }
        Codec::Zstd => {
            let mut w =
                zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).unwrap_or_else(|e| io(e));
            w.write_all(data).unwrap_or_else(|e| io(e));
            w.finish().unwrap_or_else(|e| io(e));
        }
    }
}

/// `data` decompressed with `codec`, at most `limit` bytes.
///
/// # Errors
/// Corrupt data, or more than `limit` bytes.
pub fn decompress(codec: Codec, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let name = codec.name();
    let corrupt = |why: String| CodecError::Corrupt { codec: name, why };
    match codec {
        Codec::None => bounded_copy(data, limit, name),
        Codec::Gzip => read_bounded(flate2::read::GzDecoder::new(data), limit, name),
        Codec::Snappy => {
            if data.starts_with(XERIAL_MAGIC) {
                return xerial(data, limit);
            }
            let mut out = Vec::new();
            snappy_block(data, limit, &mut out)?;
            Ok(out)
        }
        Codec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit, name),
        Codec::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| corrupt(e.to_string()))?;
            read_bounded(d, limit, name)
        }
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
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\0";
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

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in ALL {
            let mut packed = b"prefix".to_vec();
            compress(codec, &data, &mut packed);
            assert_eq!(&packed[..6], b"prefix", "{codec:?} appends");
            if codec != Codec::None {
                assert!(packed.len() < data.len() / 2, "{codec:?} compresses");
            }
            let back = decompress(codec, &packed[6..], data.len()).expect("decompresses");
            assert_eq!(back, data, "{codec:?}");
            let e = decompress(codec, &packed[6..], data.len() - 1).expect_err("over the limit");
            assert!(matches!(e, CodecError::TooLarge { .. }), "{codec:?}: {e}");
            assert_eq!(from_attributes(attribute(codec)).expect("known"), codec);
        }
        assert!(from_attributes(5).is_err());
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
            compress(codec, b"some bytes some bytes some bytes", &mut packed);
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
        let back = decompress(Codec::Snappy, &framed, 1024).expect("reads");
        assert_eq!(back, b"first block, second block");
        assert!(decompress(Codec::Snappy, &framed, 10).is_err(), "bounded");
        assert!(decompress(Codec::Snappy, &framed[..framed.len() - 1], 1024).is_err());
    }
}
