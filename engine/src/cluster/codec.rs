//! Bounded binary encoding of what nodes send each other and what the metadata log stores:
//! a small reader/writer pair, and raft-rs's messages, entries, snapshots and hard states.
//!
//! raft-rs's types are protobuf messages, but protobuf 2's parser is not fit for bytes from
//! the network (RUSTSEC-2024-0437: unbounded recursion on nested unknown groups), so they are
//! written field by field here instead. Every length and count is checked against the bytes
//! left before anything is allocated; decoding never panics.

use bytes::Bytes;
use raft::eraftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {why}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub why: &'static str,
}

/// Result of decoding.
pub type Decoded<T> = Result<T, DecodeError>;

/// Most entries one decoded message may carry (raft-rs sends at most what
/// `max_size_per_msg` allows; this bounds a hostile count).
pub const ENTRIES_PER_MESSAGE_MAX: usize = 65_536;
/// Most voters or learners one decoded configuration may name.
pub const CONF_IDS_MAX: usize = 1024;

/// Appends fixed-width little-endian fields and length-prefixed bytes.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// A writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            out: Vec::with_capacity(n),
        }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    /// A u16.
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// An i64.
    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Bytes behind a u32 length.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.out.extend_from_slice(v);
    }
    /// A string behind a u16 length (callers bound their strings well below 64 KiB).
    pub fn str(&mut self, v: &str) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.out
            .extend_from_slice(&v.as_bytes()[..usize::from(len)]);
    }
}

/// Reads what [`Writer`] wrote, refusing anything short or oversized.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`, naming `what` in its errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { rest: bytes, what }
    }
    /// An error naming what is being decoded.
    pub fn fail<T>(&self, why: &'static str) -> Decoded<T> {
        Err(DecodeError {
            what: self.what,
            why,
        })
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
    /// Fails unless everything was read.
    pub fn finish(&self) -> Decoded<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            self.fail("trailing bytes")
        }
    }
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if self.rest.len() < n {
            return self.fail("truncated");
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    /// One byte.
    pub fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }
    /// A u16.
    pub fn u16(&mut self) -> Decoded<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A u32.
    pub fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A u64.
    pub fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// An i64.
    pub fn i64(&mut self) -> Decoded<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A bool (0 or 1).
    pub fn bool(&mut self) -> Decoded<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => self.fail("bad bool"),
        }
    }
    /// Bytes behind a u32 length.
    pub fn bytes(&mut self) -> Decoded<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    /// A string behind a u16 length.
    pub fn str(&mut self) -> Decoded<&'a str> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => self.fail("string is not UTF-8"),
        }
    }
    /// A count of items each at least `min_item` bytes, at most `max`, and no more than the
    /// bytes left could hold.
    pub fn count(&mut self, min_item: usize, max: usize) -> Decoded<usize> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(min_item.max(1)) > self.rest.len() {
            return self.fail("count out of bounds");
        }
        Ok(n)
    }
}

/// Writes a raft entry.
pub fn put_entry(w: &mut Writer, e: &Entry) {
    w.u8(e.get_entry_type() as u8);
    w.u64(e.term);
    w.u64(e.index);
    w.bytes(&e.data);
    w.bytes(&e.context);
}

/// Smallest encoded entry.
const ENTRY_MIN: usize = 1 + 8 + 8 + 4 + 4;

/// Reads a raft entry.
pub fn get_entry(r: &mut Reader<'_>) -> Decoded<Entry> {
    let mut e = Entry::default();
    e.set_entry_type(match r.u8()? {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return r.fail("unknown entry type"),
    });
    e.term = r.u64()?;
    e.index = r.u64()?;
    e.data = Bytes::copy_from_slice(r.bytes()?);
    e.context = Bytes::copy_from_slice(r.bytes()?);
    Ok(e)
}

fn put_ids(w: &mut Writer, ids: &[u64]) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.u64(*id);
    }
}

fn get_ids(r: &mut Reader<'_>) -> Decoded<Vec<u64>> {
    let n = r.count(8, CONF_IDS_MAX)?;
    (0..n).map(|_| r.u64()).collect()
}

/// Writes a configuration.
pub fn put_conf_state(w: &mut Writer, c: &ConfState) {
    put_ids(w, &c.voters);
    put_ids(w, &c.learners);
    put_ids(w, &c.voters_outgoing);
    put_ids(w, &c.learners_next);
    w.u8(u8::from(c.auto_leave));
}

/// Reads a configuration.
pub fn get_conf_state(r: &mut Reader<'_>) -> Decoded<ConfState> {
    let mut c = ConfState::default();
    c.voters = get_ids(r)?;
    c.learners = get_ids(r)?;
    c.voters_outgoing = get_ids(r)?;
    c.learners_next = get_ids(r)?;
    c.auto_leave = r.bool()?;
    Ok(c)
}

/// Writes a snapshot (its metadata and data).
pub fn put_snapshot(w: &mut Writer, s: &Snapshot) {
    let m = s.get_metadata();
    put_conf_state(w, m.get_conf_state());
    w.u64(m.index);
    w.u64(m.term);
    w.bytes(&s.data);
}

/// Reads a snapshot.
pub fn get_snapshot(r: &mut Reader<'_>) -> Decoded<Snapshot> {
    let mut meta = SnapshotMetadata::default();
    meta.set_conf_state(get_conf_state(r)?);
    meta.index = r.u64()?;
    meta.term = r.u64()?;
    let mut s = Snapshot::default();
    s.set_metadata(meta);
    s.data = Bytes::copy_from_slice(r.bytes()?);
    Ok(s)
}

/// Writes a hard state.
pub fn put_hard_state(w: &mut Writer, h: &HardState) {
    w.u64(h.term);
    w.u64(h.vote);
    w.u64(h.commit);
}

/// Reads a hard state.
pub fn get_hard_state(r: &mut Reader<'_>) -> Decoded<HardState> {
    let mut h = HardState::default();
    h.term = r.u64()?;
    h.vote = r.u64()?;
    h.commit = r.u64()?;
    Ok(h)
}

/// Writes a raft message.
pub fn put_message(w: &mut Writer, m: &Message) {
    w.u8(m.get_msg_type() as u8);
    for v in [
        m.to,
        m.from,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.commit_term,
        m.request_snapshot,
        m.reject_hint,
        m.deprecated_priority,
    ] {
        w.u64(v);
    }
    w.i64(m.priority);
    w.u8(u8::from(m.reject));
    w.bytes(&m.context);
    w.u32(m.entries.len() as u32);
    for e in m.entries.iter() {
        put_entry(w, e);
    }
    match m.snapshot.as_ref() {
        Some(s) => {
            w.u8(1);
            put_snapshot(w, s);
        }
        None => w.u8(0),
    }
}

/// Reads a raft message.
pub fn get_message(r: &mut Reader<'_>) -> Decoded<Message> {
    use protobuf::ProtobufEnum;
    let mut m = Message::default();
    let kind = r.u8()?;
    match MessageType::from_i32(i32::from(kind)) {
        Some(t) => m.set_msg_type(t),
        None => return r.fail("unknown message type"),
    }
    m.to = r.u64()?;
    m.from = r.u64()?;
    m.term = r.u64()?;
    m.log_term = r.u64()?;
    m.index = r.u64()?;
    m.commit = r.u64()?;
    m.commit_term = r.u64()?;
    m.request_snapshot = r.u64()?;
    m.reject_hint = r.u64()?;
    m.deprecated_priority = r.u64()?;
    m.priority = r.i64()?;
    m.reject = r.bool()?;
    m.context = Bytes::copy_from_slice(r.bytes()?);
    let n = r.count(ENTRY_MIN, ENTRIES_PER_MESSAGE_MAX)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(get_entry(r)?);
    }
    m.set_entries(entries.into());
    match r.u8()? {
        0 => {}
        1 => m.set_snapshot(get_snapshot(r)?),
        _ => return r.fail("bad snapshot marker"),
    }
    Ok(m)
}

/// Encodes a raft message alone.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    put_message(&mut w, m);
    w.out
}

/// Decodes exactly one raft message.
///
/// # Errors
/// [`DecodeError`] for anything short, oversized, unknown or trailing.
pub fn decode_message(bytes: &[u8]) -> Decoded<Message> {
    let mut r = Reader::new(bytes, "raft message");
    let m = get_message(&mut r)?;
    r.finish()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = Entry> {
        (
            0u8..3,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(t, term, index, data, ctx)| {
                let mut e = Entry::default();
                e.set_entry_type(match t {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    _ => EntryType::EntryConfChangeV2,
                });
                e.term = term;
                e.index = index;
                e.data = data.into();
                e.context = ctx.into();
                e
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            0i32..19,
            proptest::collection::vec(any::<u64>(), 10),
            any::<i64>(),
            any::<bool>(),
            proptest::collection::vec(entry(), 0..4),
            proptest::option::of((
                proptest::collection::vec(any::<u64>(), 0..4),
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..30),
            )),
        )
            .prop_map(|(kind, v, priority, reject, entries, snap)| {
                use protobuf::ProtobufEnum;
                let mut m = Message::default();
                m.set_msg_type(MessageType::from_i32(kind).unwrap_or(MessageType::MsgHup));
                m.to = v[0];
                m.from = v[1];
                m.term = v[2];
                m.log_term = v[3];
                m.index = v[4];
                m.commit = v[5];
                m.commit_term = v[6];
                m.request_snapshot = v[7];
                m.reject_hint = v[8];
                m.deprecated_priority = v[9];
                m.priority = priority;
                m.reject = reject;
                m.set_entries(entries.into());
                if let Some((voters, index, term, data)) = snap {
                    let mut s = Snapshot::default();
                    s.mut_metadata().mut_conf_state().voters = voters;
                    s.mut_metadata().index = index;
                    s.mut_metadata().term = term;
                    s.data = data.into();
                    m.set_snapshot(s);
                }
                m
            })
    }

    proptest! {
        /// Every message round-trips; every truncation is refused; arbitrary bytes never
        /// panic.
        #[test]
        fn messages_round_trip_and_damage_is_refused(m in message(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
            let bytes = encode_message(&m);
            let back = decode_message(&bytes).expect("decodes");
            prop_assert_eq!(&back, &m);
            for cut in 0..bytes.len() {
                prop_assert!(decode_message(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode_message(&longer).is_err());
            let _ = decode_message(&junk);
        }
    }

    /// A count claiming more items than the bytes could hold is refused before allocating.
    #[test]
    fn a_huge_entry_count_is_refused_without_allocating() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        let mut bytes = encode_message(&m);
        // The entry count sits after type(1) + 10*u64 + i64 + bool + context(4).
        let at = 1 + 80 + 8 + 1 + 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_message(&bytes).is_err());
    }
}
