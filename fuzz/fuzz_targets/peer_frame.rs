//! Frames between peers after the handshake: the request and response
//! bodies an authenticated (but buggy or compromised) peer could send.
#![no_main]

use ipkeep_api::codec;
use ipkeep_raft::peer::conn::MAX_PEER_FRAME;
use ipkeep_raft::peer::wire::{PeerRequest, PeerResponse};
use libfuzzer_sys::fuzz_target;

#[path = "daemon_stack.rs"]
mod daemon_stack;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    daemon_stack::decode_on_daemon_stack(data, |data| {
        let (header, body) = data.split_at(4);
        let header: [u8; 4] = header.try_into().expect("4 bytes");
        if codec::frame_len(header, MAX_PEER_FRAME).is_err() {
            return;
        }
        let _ = codec::decode_frame_body::<PeerRequest>(body);
        let _ = codec::decode_frame_body::<PeerResponse>(body);
    });
});
