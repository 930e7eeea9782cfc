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

/// The ipkeep CNI plugin to exec: IPKEEP_PLUGIN if set (the statically
/// linked build of `cargo build-plugin`, or an installed plugin), else the
/// workspace's own build next to the other binaries.
pub fn plugin() -> PathBuf {
    match std::env::var_os("IPKEEP_PLUGIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.exists(), "IPKEEP_PLUGIN={} is missing", path.display());
            path
        }
        None => bin("ipkeep"),
    }
}

/// The directory of the plugin `plugin()` names (for CNI_PATH).
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("IPKEEP_PLUGIN")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.to_owned()))
        .unwrap_or_else(bin_dir)
}

/// Where `cargo build-plugin` puts the statically linked plugin, if it did:
/// `target/plugin/release/ipkeep` beside `target/<profile>/`.
pub fn static_plugin() -> Option<PathBuf> {
    let dir = bin_dir();
    let path = dir.parent()?.join("plugin/release/ipkeep");
    path.exists().then_some(path)
}

/// Whether an executable asks for the dynamic loader (has an interpreter
/// path); read from its first page, where the ELF program headers and
/// .interp sit.
pub fn is_dynamically_linked(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)?.read(&mut head)?;
    const LOADER: &[u8] = b"/ld-linux";
    Ok(head[..n].windows(LOADER.len()).any(|w| w == LOADER))
}

/// The reference CNI plugins (Debian's containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

#[cfg(test)]
mod tests {
    use super::is_dynamically_linked;

    #[test]
    fn tells_a_dynamically_linked_executable_from_other_files() {
        // Test executables are linked like cargo links everything else here.
        let exe = std::env::current_exe().unwrap();
        assert!(is_dynamically_linked(&exe).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        assert!(!is_dynamically_linked(&script).unwrap());
        assert!(is_dynamically_linked(&dir.path().join("absent")).is_err());
    }
}
