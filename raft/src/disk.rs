//! The data directory's free space, checked before every write.
//!
//! sled poisons a database on its first failed write (every later call
//! returns that error until it is reopened), and openraft stops a node whose
//! log cannot be written. So ipkeep must never let sled run out of space: a
//! write is refused, with error 11 and a message that says why, while the
//! data directory has less than a floor of free space left, and accepted
//! again by itself once space returns.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ipkeep_api::ApiError;

#[derive(Debug, Clone)]
pub struct DiskGuard {
    dir: PathBuf,
    floor: u64,
}

/// Bytes available to this process on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    // SAFETY: statvfs writes into a zeroed local struct; the path is a valid
    // NUL-terminated string that outlives the call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

impl DiskGuard {
    pub fn new(dir: &Path, floor: u64) -> DiskGuard {
        DiskGuard {
            dir: dir.to_owned(),
            floor,
        }
    }

    /// Ok when a write may go to disk; error 11 naming the directory, what
    /// is free and the floor when it may not.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.floor == 0 {
            return Ok(());
        }
        match available_bytes(&self.dir) {
            Ok(free) if free >= self.floor => Ok(()),
            Ok(free) => Err(ApiError::try_again(format!(
                "the data directory {} has {} free, under the floor of {} (--min-free-space): writes are refused so that the store cannot fail half-way; free some space and they resume by themselves",
                self.dir.display(),
                human(free),
                human(self.floor),
            ))),
            // Not knowing is no reason to refuse: sled's own error would say more.
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free space");
                Ok(())
            }
        }
    }
}

/// 1536 -> "1.5 KiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_disk_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
        assert!(DiskGuard::new(dir.path(), 1).check().is_ok());
        let err = DiskGuard::new(dir.path(), u64::MAX).check().unwrap_err();
        assert_eq!(err.code, 11);
        assert!(err.to_string().contains("--min-free-space"), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 << 20), "64.0 MiB");
    }
}
