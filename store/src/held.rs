//! Live allocations as the state holds them in memory: compact, with the
//! strings that repeat across attachments (network, interface, subnet, node
//! and namespace names) shared rather than copied.
//!
//! A replica keeps every live allocation in memory, so what one costs bounds
//! how many a node can hold. As [`Allocation`] (the record's shape, owned
//! strings throughout) plus an address index holding a second copy of the
//! key, one cost about 1.2 KB; this form a third of that
//! (`cargo bench -p ipkeep-store --bench memory`). Records, replies and
//! listings still deal in [`Allocation`]: it is rebuilt on the way out.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipkeep_api::model::{AllocatedAddress, Allocation, AttachmentKey, PodRef};
use ipkeep_api::Mac;

/// One shared copy of each low-cardinality string. Interning changes no
/// decision (strings compare by content), only how many copies exist; a
/// string goes when the last allocation using it does.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// Drops the interner's copies of those of `shared` that nothing else
    /// uses any more (`shared` holds one reference to each).
    fn forget_unused(&mut self, mut shared: Vec<Arc<str>>) {
        shared.sort_by_key(|s| Arc::as_ptr(s).cast::<u8>());
        shared.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for s in shared {
            if Arc::strong_count(&s) == 2 {
                self.strings.remove(&s);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// An attachment key; orders exactly as [`AttachmentKey`] does (network,
/// then container id, then interface), so ranges by network still work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldKey {
    network: Arc<str>,
    container_id: Box<str>,
    ifname: Arc<str>,
}

impl HeldKey {
    /// A key to look up with; its strings are not interned.
    pub fn probe(key: &AttachmentKey) -> HeldKey {
        HeldKey {
            network: Arc::from(key.network.as_str()),
            container_id: key.container_id.as_str().into(),
            ifname: Arc::from(key.ifname.as_str()),
        }
    }

    /// The lowest key of a network.
    pub fn first_of(network: &str) -> HeldKey {
        HeldKey {
            network: Arc::from(network),
            container_id: "".into(),
            ifname: Arc::from(""),
        }
    }

    fn interned(key: &AttachmentKey, strings: &mut Interner) -> HeldKey {
        HeldKey {
            network: strings.intern(&key.network),
            container_id: key.container_id.as_str().into(),
            ifname: strings.intern(&key.ifname),
        }
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn to_key(&self) -> AttachmentKey {
        AttachmentKey {
            network: self.network.to_string(),
            container_id: self.container_id.to_string(),
            ifname: self.ifname.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldAddress {
    subnet: Arc<str>,
    address: IpAddr,
}

/// The pod; absent altogether when CNI_ARGS named none (a bare runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldPod {
    namespace: Option<Arc<str>>,
    name: Option<Box<str>>,
    uid: Option<Box<str>>,
}

/// Everything of an allocation but its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBody {
    addresses: Box<[HeldAddress]>,
    pod: Option<Box<HeldPod>>,
    node: Arc<str>,
    netns: Box<str>,
    mac: Option<Mac>,
    since_ms: u64,
}

/// Splits an allocation into its compact key and body, sharing strings
/// through `strings`.
pub fn compact(allocation: &Allocation, strings: &mut Interner) -> (Arc<HeldKey>, HeldBody) {
    let key = Arc::new(HeldKey::interned(&allocation.key, strings));
    let pod = &allocation.pod;
    let pod = (pod.namespace.is_some() || pod.name.is_some() || pod.uid.is_some()).then(|| {
        Box::new(HeldPod {
            namespace: pod.namespace.as_deref().map(|n| strings.intern(n)),
            name: pod.name.as_deref().map(Box::from),
            uid: pod.uid.as_deref().map(Box::from),
        })
    });
    let body = HeldBody {
        addresses: allocation
            .addresses
            .iter()
            .map(|a| HeldAddress {
                subnet: strings.intern(&a.subnet),
                address: a.address,
            })
            .collect(),
        pod,
        node: strings.intern(&allocation.node),
        netns: allocation.netns.as_str().into(),
        mac: allocation.mac,
        since_ms: allocation.since_ms,
    };
    (key, body)
}

/// Drops an allocation that has left the state, and the interner's copies
/// of the strings only it used.
pub fn forget(key: Arc<HeldKey>, body: HeldBody, strings: &mut Interner) {
    let mut shared = vec![body.node.clone()];
    shared.extend(body.addresses.iter().map(|a| a.subnet.clone()));
    shared.extend(body.pod.as_ref().and_then(|p| p.namespace.clone()));
    // The key may still be shared (a caller's copy): then so are its strings.
    if let Ok(key) = Arc::try_unwrap(key) {
        shared.push(key.network);
        shared.push(key.ifname);
    }
    drop(body);
    strings.forget_unused(shared);
}

/// A live allocation, read in place.
#[derive(Debug, Clone, Copy)]
pub struct HeldRef<'a> {
    pub(crate) key: &'a HeldKey,
    pub(crate) body: &'a HeldBody,
}

impl<'a> HeldRef<'a> {
    pub fn key(&self) -> AttachmentKey {
        self.key.to_key()
    }

    pub fn held_key(&self) -> &'a HeldKey {
        self.key
    }

    pub fn node(&self) -> &'a str {
        &self.body.node
    }

    pub fn netns(&self) -> &'a str {
        &self.body.netns
    }

    pub fn since_ms(&self) -> u64 {
        self.body.since_ms
    }

    /// The pod's namespace, if CNI_ARGS named one.
    pub fn namespace(&self) -> Option<&'a str> {
        self.body.pod.as_ref()?.namespace.as_deref()
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + 'a {
        self.body.addresses.iter().map(|a| a.address)
    }

    /// The subnet an address of this allocation came from.
    pub fn subnet_of(&self, address: IpAddr) -> Option<&'a str> {
        self.body
            .addresses
            .iter()
            .find(|a| a.address == address)
            .map(|a| &*a.subnet)
    }

    pub fn pod(&self) -> PodRef {
        match &self.body.pod {
            None => PodRef::default(),
            Some(p) => PodRef {
                namespace: p.namespace.as_deref().map(str::to_owned),
                name: p.name.as_deref().map(str::to_owned),
                uid: p.uid.as_deref().map(str::to_owned),
            },
        }
    }

    pub fn to_allocation(&self) -> Allocation {
        Allocation {
            key: self.key(),
            addresses: self
                .body
                .addresses
                .iter()
                .map(|a| AllocatedAddress {
                    subnet: a.subnet.to_string(),
                    address: a.address,
                })
                .collect(),
            pod: self.pod(),
            node: self.body.node.to_string(),
            netns: self.body.netns.to_string(),
            mac: self.body.mac,
            since_ms: self.body.since_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(container: &str, pod: PodRef) -> Allocation {
        Allocation {
            key: AttachmentKey {
                network: "net".into(),
                container_id: container.into(),
                ifname: "eth0".into(),
            },
            addresses: vec![
                AllocatedAddress {
                    subnet: "v4".into(),
                    address: "10.0.0.5".parse().unwrap(),
                },
                AllocatedAddress {
                    subnet: "v6".into(),
                    address: "fd00::5".parse().unwrap(),
                },
            ],
            pod,
            node: "n1".into(),
            netns: "/run/netns/x".into(),
            mac: Some(Mac([0x0a, 0x58, 1, 2, 3, 4])),
            since_ms: 42,
        }
    }

    #[test]
    fn an_allocation_comes_back_whole() {
        let mut strings = Interner::default();
        for pod in [
            PodRef::default(),
            PodRef {
                namespace: Some("db".into()),
                name: Some("etcd-0".into()),
                uid: Some("u-1".into()),
            },
            PodRef {
                namespace: None,
                name: Some("bare".into()),
                uid: None,
            },
        ] {
            let a = allocation("c1", pod);
            let (key, body) = compact(&a, &mut strings);
            let back = HeldRef {
                key: &key,
                body: &body,
            };
            assert_eq!(back.to_allocation(), a);
            assert_eq!(key.to_key(), a.key);
        }
    }

    #[test]
    fn strings_are_shared_and_go_with_their_last_user() {
        let mut strings = Interner::default();
        let first = compact(&allocation("c1", PodRef::default()), &mut strings);
        let second = compact(&allocation("c2", PodRef::default()), &mut strings);
        // net, eth0, v4, v6, n1: once each, however many allocations use them.
        assert_eq!(strings.len(), 5);
        assert!(Arc::ptr_eq(&first.0.network, &second.0.network));
        forget(first.0, first.1, &mut strings);
        assert_eq!(strings.len(), 5, "the second allocation still uses them");
        forget(second.0, second.1, &mut strings);
        assert!(strings.is_empty());
        // A string used twice by one allocation goes with it too.
        let mut twice = allocation("c3", PodRef::default());
        twice.node = "net".into();
        let third = compact(&twice, &mut strings);
        assert_eq!(strings.len(), 4);
        forget(third.0, third.1, &mut strings);
        assert!(strings.is_empty());
    }

    #[test]
    fn keys_order_as_attachment_keys_do() {
        let keys = [("a", "z", "eth0"), ("a", "za", "eth0"), ("ab", "", "")];
        for pair in keys.windows(2) {
            let key = |(n, c, i): (&str, &str, &str)| AttachmentKey {
                network: n.into(),
                container_id: c.into(),
                ifname: i.into(),
            };
            let (x, y) = (key(pair[0]), key(pair[1]));
            assert_eq!(
                HeldKey::probe(&x).cmp(&HeldKey::probe(&y)),
                x.cmp(&y),
                "{x} vs {y}"
            );
        }
    }
}
