//! Zigzag varints (Protocol Buffers' `sint64`), as Kafka records use them for lengths,
//! deltas and counts. (The protocol's flexible versions use unsigned varints instead:
//! `kafka::codec`.)

use bytes::{BufMut, BytesMut};

/// Appends `value` as a zigzag varint.
#[inline]
pub fn put_varint(out: &mut BytesMut, value: i64) {
    let mut raw = zigzag(value);
    while raw >= 0x80 {
        out.put_u8((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.put_u8(raw as u8);
}

/// Bytes [`put_varint`] writes for `value`: one per started group of 7 bits (0 takes one).
#[inline]
pub fn varint_len(value: i64) -> usize {
    (64 - (zigzag(value) | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}
