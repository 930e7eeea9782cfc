//! Where the built binaries are.

use std::path::PathBuf;

/// The directory cargo put the workspace's binaries in: the tests run from
/// `target/<profile>/deps/`, the binaries sit in `target/<profile>/`.
/// IPKEEP_BIN_DIR overrides it (to test installed binaries).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IPKEEP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("test executable has a directory");
    if deps.ends_with("deps") {
        deps.parent().expect("deps has a parent").to_owned()
    } else {
        deps.to_owned()
    }
}

/// A built binary of the workspace; panics with the command to build it.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins), \
         or run the tests with cargo test --workspace",
        path.display()
    );
    path
}

/// The reference CNI plugins (Debian's containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
