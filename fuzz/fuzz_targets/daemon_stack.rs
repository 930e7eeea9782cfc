//! Runs a decode the way the daemon runs it: on a thread with its decoders'
//! stack (libFuzzer's own thread has the process's main stack, several times
//! larger, on which a deeply nested frame that aborts the daemon decodes
//! fine and is never reported).

use ipkeep_api::nesting::DECODE_STACK_BYTES;

pub fn decode_on_daemon_stack(data: &[u8], decode: fn(&[u8])) {
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .stack_size(DECODE_STACK_BYTES)
            .spawn_scoped(scope, || decode(data))
            .expect("decoder thread");
        if let Err(panic) = decoder.join() {
            std::panic::resume_unwind(panic);
        }
    });
}
