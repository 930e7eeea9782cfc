//! The pod's interface, made over netlink (main-plugin mode): a macvlan on a
//! master link, or a veth pair whose host end sits on a Linux bridge.
//!
//! `netns` runs netlink work inside a namespace, `ops` holds the single
//! netlink requests, `setup` composes them into create, remove and inspect.

mod netns;
mod ops;
mod setup;

pub use netns::NetnsFile;
pub use setup::{create, inspect, remove, Mode, Plan, PlannedRoute};

/// A netlink failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl LinkError {
    pub fn new(what: impl Into<String>) -> Self {
        LinkError(what.into())
    }
}

/// The host end of a pod's veth: derived from the attachment, so that DEL and
/// CHECK find it without stored state. At most 15 bytes (IFNAMSIZ - 1).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("ipk{:011x}", hash & 0x0fff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_and_differ() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a.len(), 14);
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert_ne!(a, host_veth_name("c1", "net1"));
        assert_ne!(a, host_veth_name("c2", "eth0"));
    }
}
