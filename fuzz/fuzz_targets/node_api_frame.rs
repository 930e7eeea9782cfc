//! Frames on the node API socket: what a caller sends the daemon (requests,
//! limited to MAX_REQUEST_FRAME) and what the daemon sends back (responses,
//! as the plugin and ipkeepctl decode them).
#![no_main]

use std::io::Cursor;

use ipkeep_api::codec::{self, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use ipkeep_api::message::{Request, Response};
use libfuzzer_sys::fuzz_target;

#[path = "daemon_stack.rs"]
mod daemon_stack;

fuzz_target!(|data: &[u8]| {
    daemon_stack::decode_on_daemon_stack(data, |data| {
        let _ = codec::read_frame::<_, Request>(&mut Cursor::new(data), MAX_REQUEST_FRAME);
        let _ = codec::read_frame::<_, Response>(&mut Cursor::new(data), MAX_RESPONSE_FRAME);
    });
});
