//! Every decoder of what one node receives from another: a peer frame (hello, Raft
//! message, or a broker-only node's request or answer), a metadata command (a Raft entry's
//! data), a metadata snapshot and a proposal's outcome. None may
//! panic or allocate past its input; whatever decodes must encode back to bytes that decode
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_engine::cluster::controller::observer::{decode_outcome, encode_outcome};
use tidelog_engine::cluster::transport::{decode_frame, Frame};
use tidelog_engine::cluster::{codec, ClusterState, Command};

fuzz_target!(|data: &[u8]| {
    match decode_frame(data) {
        Ok(Frame::Raft(m)) => {
            let again = codec::encode_message(&m);
            assert_eq!(codec::decode_message(&again).ok(), Some(m));
        }
        Ok(frame) => {
            let again = frame.encode();
            assert_eq!(decode_frame(&again[4..]).ok(), Some(frame));
        }
        Err(_) => {}
    }
    if let Ok(o) = decode_outcome(data) {
        assert_eq!(decode_outcome(&encode_outcome(&o)), Ok(o));
    }
    if let Ok(c) = Command::decode(data) {
        assert_eq!(Command::decode(&c.encode()), Ok(c));
    }
    if let Ok(s) = ClusterState::decode(data) {
        assert_eq!(ClusterState::decode(&s.encode()), Ok(s));
    }
});
