//! Every decoder of what one node receives from another: a peer frame (hello or Raft
//! message), a metadata command (a Raft entry's data) and a metadata snapshot. None may
//! panic or allocate past its input; whatever decodes must encode back to bytes that decode
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidelog_engine::cluster::transport::{decode_frame, Frame};
use tidelog_engine::cluster::{codec, ClusterState, Command};

fuzz_target!(|data: &[u8]| {
    if let Ok(Frame::Raft(m)) = decode_frame(data) {
        let again = codec::encode_message(&m);
        assert_eq!(codec::decode_message(&again).ok(), Some(m));
    }
    if let Ok(c) = Command::decode(data) {
        assert_eq!(Command::decode(&c.encode()), Ok(c));
    }
    if let Ok(s) = ClusterState::decode(data) {
        assert_eq!(ClusterState::decode(&s.encode()), Ok(s));
    }
});
