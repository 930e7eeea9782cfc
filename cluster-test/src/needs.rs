//! What a test needs of the machine it runs on (root, a program from a
//! Debian package, the reference plugins), and what happens where that is
//! missing: the test is skipped with one line naming what it lacks, so that
//! `cargo test --workspace` as another user, or on a machine without the
//! packages, runs what it can and says what it left out. With
//! `IPKEEP_TEST_REQUIRE_ALL=1` (which `.ci/run` sets) a missing need fails
//! the test instead, so CI cannot pass by skipping.

use std::io::Write;
use std::path::Path;

/// One thing a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root: network namespaces, nftables, tmpfs mounts, dropping privileges.
    Root,
    /// A program on the PATH (or in /usr/sbin, /sbin), and the package it
    /// comes from.
    Program {
        name: &'static str,
        package: &'static str,
    },
    /// A file, and the package it comes from.
    File {
        path: &'static str,
        package: &'static str,
    },
}

impl Need {
    fn met(&self) -> bool {
        match self {
            // SAFETY: geteuid has no preconditions and cannot fail.
            Need::Root => (unsafe { libc::geteuid() }) == 0,
            Need::Program { name, .. } => on_path(name),
            Need::File { path, .. } => Path::new(path).exists(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Need::Root => "root".into(),
            Need::Program { name, package } => format!("{name} (Debian package {package})"),
            Need::File { path, package } => format!("{path} (Debian package {package})"),
        }
    }
}

pub const ROOT: Need = Need::Root;
pub const IP: Need = Need::Program {
    name: "ip",
    package: "iproute2",
};
pub const NFT: Need = Need::Program {
    name: "nft",
    package: "nftables",
};
pub const PING: Need = Need::Program {
    name: "ping",
    package: "iputils-ping",
};
pub const IPTABLES: Need = Need::Program {
    name: "iptables",
    package: "iptables",
};
pub const SETPRIV: Need = Need::Program {
    name: "setpriv",
    package: "util-linux",
};
pub const MOUNT: Need = Need::Program {
    name: "mount",
    package: "mount",
};
pub const REFERENCE_PLUGINS: Need = Need::File {
    path: "/usr/lib/cni/bridge",
    package: "containernetworking-plugins",
};

/// Network namespaces: root and `ip netns`.
pub const NETNS: &[Need] = &[ROOT, IP];
/// A cluster of nodes in namespaces, cut apart with nftables.
pub const CLUSTER: &[Need] = &[ROOT, IP, NFT];
/// A data directory on a small tmpfs.
pub const TMPFS: &[Need] = &[ROOT, MOUNT];

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(name).is_file())
}

/// Whether the calling test may run: true if every need is met. Otherwise
/// it prints one line saying what is missing and returns false, or, under
/// `IPKEEP_TEST_REQUIRE_ALL=1`, panics with that line.
pub fn met(needs: &[&[Need]]) -> bool {
    let missing = missing(needs);
    if missing.is_empty() {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    let line = format!("skipped {test}: needs {}", missing.join(", "));
    if std::env::var("IPKEEP_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{line} (IPKEEP_TEST_REQUIRE_ALL=1 forbids skipping)");
    }
    // Straight to the terminal: libtest hides what a passing test prints
    // through eprintln!, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "{line}");
    false
}

/// What of `needs` this machine lacks, each named once, in order.
fn missing(needs: &[&[Need]]) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for need in needs.iter().flat_map(|set| set.iter()) {
        let described = need.describe();
        if !need.met() && !missing.contains(&described) {
            missing.push(described);
        }
    }
    missing
}

/// Returns from the calling test, after one line saying why, unless the
/// machine has what it needs: `require!(needs::CLUSTER, [needs::PING]);`
#[macro_export]
macro_rules! require {
    ($($needs:expr),+ $(,)?) => {
        if !$crate::needs::met(&[$(&$needs[..]),+]) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABSENT: Need = Need::File {
        path: "/nonexistent/ipkeep-test-need",
        package: "no-such-package",
    };
    const SHELL: Need = Need::Program {
        name: "sh",
        package: "dash",
    };

    #[test]
    fn what_is_missing_is_named_once_with_its_package() {
        assert_eq!(
            missing(&[&[SHELL, ABSENT], &[ABSENT]]),
            vec!["/nonexistent/ipkeep-test-need (Debian package no-such-package)".to_string()]
        );
        assert!(missing(&[&[SHELL]]).is_empty());
    }
}
