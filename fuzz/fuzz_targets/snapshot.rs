//! Snapshots and backups: what a follower receives from a leader and what
//! `ipkeepd --restore` reads. The input is used twice: as is (it must fail
//! the checksum or decode), and with a valid checksum appended, so that the
//! fuzzer reaches the record decoders behind the checksum.
#![no_main]

use ipkeep_store::storage::backup;
use libfuzzer_sys::fuzz_target;

#[path = "daemon_stack.rs"]
mod daemon_stack;

fuzz_target!(|data: &[u8]| {
    daemon_stack::decode_on_daemon_stack(data, |data| {
        let _ = backup::decode_bytes(data);
        let mut sealed = data.to_vec();
        sealed.extend_from_slice(&crc32(data).to_be_bytes());
        let _ = backup::decode_bytes(&sealed);
    });
});

/// CRC-32 (IEEE), as the snapshot file uses; bitwise, fuzz inputs are small.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}
