//! Small disks for tests: a tmpfs mounted on a data directory, and a file
//! that fills it (to the last byte, or to a given free space).

use std::io::Write;
use std::path::Path;
use std::process::Command;

pub fn is_mountpoint(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| {
            mounts
                .lines()
                .any(|l| l.split_whitespace().nth(1) == path.to_str())
        })
        .unwrap_or(false)
}

/// Mounts a tmpfs of `mib` MiB on `dir` (created if need be), unless one
/// is there already.
pub fn mount(dir: &Path, mib: u64) {
    if is_mountpoint(dir) {
        return;
    }
    std::fs::create_dir_all(dir).expect("data dir");
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .expect("exec mount");
    assert!(status.success(), "mounting a tmpfs on {}", dir.display());
}

/// Unmounts what `mount` mounted (lazily: a killed daemon's files may
/// still be open for a moment).
pub fn unmount(dir: &Path) {
    if is_mountpoint(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// Writes zeros into `path` until the filesystem is full.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial chunk too: nothing left at all.
    let _ = file.write_all(&[0u8; 4096]);
}

/// Writes zeros into `path` until the filesystem has at most `leave` bytes
/// free (a disk run down under a node's floor, with room left for the writes
/// already under way).
pub fn fill_leaving(path: &Path, leave: u64) {
    let dir = path.parent().expect("a file in a directory");
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    loop {
        let free = ipkeep_api::os::available_bytes(dir).expect("free space");
        if free <= leave {
            break;
        }
        let n = (free - leave).min(chunk.len() as u64) as usize;
        match file.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}
