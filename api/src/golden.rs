//! Golden files for the tests that pin a persisted or wire format (the
//! log, snapshots, peer frames): today's encoding must equal the checked-in
//! bytes. A format change needs a new version and a reader of the old bytes
//! (docs/compatibility.md); only then does `IPKEEP_WRITE_FIXTURES=1` on the
//! format tests write new golden files.

use std::path::Path;

/// Compares `bytes` with the golden file at `path`, or writes the file when
/// `IPKEEP_WRITE_FIXTURES=1`. Panics, naming the first differing byte, when
/// they differ: it is only for tests.
pub fn check(path: &Path, bytes: &[u8]) {
    if std::env::var("IPKEEP_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("fixtures directory");
        }
        std::fs::write(path, bytes).expect("write golden file");
        return;
    }
    let pinned = std::fs::read(path)
        .unwrap_or_else(|e| panic!("golden file {} cannot be read: {e}", path.display()));
    if pinned != bytes {
        let at = pinned
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(pinned.len().min(bytes.len()));
        panic!(
            "a persisted or wire format changed: today's encoding ({} bytes) differs from the \
             golden file {} ({} bytes) from byte {at}. A format change needs a new version and \
             a reader of the old bytes (docs/compatibility.md); it must never happen by \
             accident, e.g. by a field added to an api type the log or the wire carries",
            bytes.len(),
            path.display(),
            pinned.len()
        );
    }
}
