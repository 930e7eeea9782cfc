//! Live allocations as the state holds them in memory: each one packed into
//! a single shared heap block.
//!
//! A replica keeps every live allocation in memory, so what one costs bounds
//! how many a node can hold. As [`Allocation`] (owned strings throughout),
//! or even as an interned key and boxed fields, one is several small heap
//! blocks, every one with the allocator's rounding and header, and a body in
//! every node of the map. Packed, it is one block, and the map and the
//! address index hold a pointer to it (`cargo bench -p ipkeep-store --bench
//! memory` prints the cost of one). Records, replies and listings still
//! deal in [`Allocation`]: it is rebuilt on the way out.
//!
//! Layout of the block, every string as a LEB128 length then its UTF-8:
//! network, container id, interface (the key, first, so that comparing two
//! keys reads nothing else); `since_ms` (8 bytes, little-endian); the MAC
//! (a presence byte, then 6 bytes if present); node; netns; a byte of flags
//! for which of the pod's namespace, name and uid follow, then those; the
//! number of addresses, then each as its subnet, then 4 or 16 octets after
//! a family byte.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipkeep_api::model::{AllocatedAddress, Allocation, AttachmentKey, PodRef};
use ipkeep_api::Mac;

const POD_NAMESPACE: u8 = 1;
const POD_NAME: u8 = 2;
const POD_UID: u8 = 4;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// One live allocation. Clones share the block. Compares and orders by its
/// attachment key alone, exactly as [`AttachmentKey`] does (network, then
/// container id, then interface), so a map of them ranges by network.
#[derive(Clone)]
pub struct Held(Arc<[u8]>);

/// A live allocation, read in place.
pub type HeldRef<'a> = &'a Held;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_key(out: &mut Vec<u8>, key: &AttachmentKey) {
    put_str(out, &key.network);
    put_str(out, &key.container_id);
    put_str(out, &key.ifname);
}

/// Reads a block front to back. Every block is written by [`Held::pack`]
/// from well-formed fields, so a short or malformed one is a bug in this
/// module, never input: the reads panic rather than invent a value.
struct Reader<'a> {
    bytes: &'a [u8],
}

const PACKED: &str = "a held allocation's block is written by Held::pack";

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }

    fn byte(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn length(&mut self) -> usize {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = self.byte();
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return n;
            }
            shift += 7;
        }
    }

    fn raw(&mut self) -> &'a [u8] {
        let n = self.length();
        self.take(n)
    }

    fn str(&mut self) -> &'a str {
        std::str::from_utf8(self.raw()).expect(PACKED)
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().expect(PACKED)
    }

    fn address(&mut self) -> (&'a str, IpAddr) {
        let subnet = self.str();
        let address = match self.byte() {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>())),
            _ => IpAddr::V6(Ipv6Addr::from(self.array::<16>())),
        };
        (subnet, address)
    }
}

/// Every field of a block, borrowed from it.
struct Fields<'a> {
    network: &'a str,
    container_id: &'a str,
    ifname: &'a str,
    since_ms: u64,
    mac: Option<Mac>,
    node: &'a str,
    netns: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    uid: Option<&'a str>,
    /// The address count, then the addresses, still packed.
    addresses: Reader<'a>,
}

impl Held {
    /// Packs an allocation.
    pub fn pack(allocation: &Allocation) -> Held {
        // Written into a buffer kept per thread, then copied once into the
        // block: one allocation per pack instead of a Vec grown and freed.
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|out| {
            out.clear();
            Held::pack_into(out, allocation);
            Held(Arc::from(&out[..]))
        })
    }

    fn pack_into(out: &mut Vec<u8>, allocation: &Allocation) {
        put_key(out, &allocation.key);
        out.extend_from_slice(&allocation.since_ms.to_le_bytes());
        match allocation.mac {
            Some(mac) => {
                out.push(1);
                out.extend_from_slice(&mac.0);
            }
            None => out.push(0),
        }
        put_str(out, &allocation.node);
        put_str(out, &allocation.netns);
        let pod = &allocation.pod;
        let present = [
            (POD_NAMESPACE, &pod.namespace),
            (POD_NAME, &pod.name),
            (POD_UID, &pod.uid),
        ];
        out.push(
            present
                .iter()
                .filter(|(_, v)| v.is_some())
                .fold(0, |flags, (flag, _)| flags | flag),
        );
        for value in present.iter().filter_map(|(_, v)| v.as_deref()) {
            put_str(out, value);
        }
        put_len(out, allocation.addresses.len());
        for a in &allocation.addresses {
            put_str(out, &a.subnet);
            match a.address {
                IpAddr::V4(v4) => {
                    out.push(FAMILY_V4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(FAMILY_V6);
                    out.extend_from_slice(&v6.octets());
                }
            }
        }
    }

    fn reader(&self) -> Reader<'_> {
        Reader { bytes: &self.0 }
    }

    fn key_parts(&self) -> (&str, &str, &str) {
        let mut r = self.reader();
        (r.str(), r.str(), r.str())
    }

    /// The key's three strings as bytes, unchecked: what comparing reads.
    /// UTF-8 orders bytewise as its strings do, so these order as the key.
    fn key_bytes(&self) -> KeyBytes<'_> {
        let mut r = self.reader();
        (r.raw(), r.raw(), r.raw())
    }

    fn fields(&self) -> Fields<'_> {
        let mut r = self.reader();
        let (network, container_id, ifname) = (r.str(), r.str(), r.str());
        let since_ms = u64::from_le_bytes(r.array::<8>());
        let mac = (r.byte() == 1).then(|| Mac(r.array::<6>()));
        let (node, netns) = (r.str(), r.str());
        let flags = r.byte();
        let mut optional = |flag: u8| (flags & flag != 0).then(|| r.str());
        let (namespace, name, uid) = (
            optional(POD_NAMESPACE),
            optional(POD_NAME),
            optional(POD_UID),
        );
        Fields {
            network,
            container_id,
            ifname,
            since_ms,
            mac,
            node,
            netns,
            namespace,
            name,
            uid,
            addresses: r,
        }
    }

    pub fn network(&self) -> &str {
        self.key_parts().0
    }

    pub fn container_id(&self) -> &str {
        self.key_parts().1
    }

    pub fn ifname(&self) -> &str {
        self.key_parts().2
    }

    pub fn key(&self) -> AttachmentKey {
        let (network, container_id, ifname) = self.key_parts();
        AttachmentKey {
            network: network.to_owned(),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        }
    }

    pub fn node(&self) -> &str {
        self.fields().node
    }

    pub fn netns(&self) -> &str {
        self.fields().netns
    }

    pub fn since_ms(&self) -> u64 {
        self.fields().since_ms
    }

    /// The pod's namespace, if CNI_ARGS named one.
    pub fn namespace(&self) -> Option<&str> {
        self.fields().namespace
    }

    /// Each address with the subnet it came from.
    pub fn subnet_addresses(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        let mut r = self.fields().addresses;
        let count = r.length();
        (0..count).map(move |_| r.address())
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.subnet_addresses().map(|(_, address)| address)
    }

    /// The subnet an address of this allocation came from.
    pub fn subnet_of(&self, address: IpAddr) -> Option<&str> {
        self.subnet_addresses()
            .find(|(_, a)| *a == address)
            .map(|(subnet, _)| subnet)
    }

    pub fn pod(&self) -> PodRef {
        let f = self.fields();
        PodRef {
            namespace: f.namespace.map(str::to_owned),
            name: f.name.map(str::to_owned),
            uid: f.uid.map(str::to_owned),
        }
    }

    pub fn to_allocation(&self) -> Allocation {
        let f = self.fields();
        Allocation {
            key: AttachmentKey {
                network: f.network.to_owned(),
                container_id: f.container_id.to_owned(),
                ifname: f.ifname.to_owned(),
            },
            addresses: self
                .subnet_addresses()
                .map(|(subnet, address)| AllocatedAddress {
                    subnet: subnet.to_owned(),
                    address,
                })
                .collect(),
            pod: PodRef {
                namespace: f.namespace.map(str::to_owned),
                name: f.name.map(str::to_owned),
                uid: f.uid.map(str::to_owned),
            },
            node: f.node.to_owned(),
            netns: f.netns.to_owned(),
            mac: f.mac,
            since_ms: f.since_ms,
        }
    }
}

/// An attachment key's network, container id and interface, as bytes.
type KeyBytes<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Anything that reads as an attachment key: a held allocation, or a key
/// looked up with. The map of allocations borrows each entry as
/// `dyn LookupKey`, so a lookup by [`AttachmentKey`] or by a network's
/// lowest key compares in place, with no block packed to look up with.
pub trait LookupKey {
    fn key_bytes(&self) -> KeyBytes<'_>;
}

impl LookupKey for Held {
    fn key_bytes(&self) -> KeyBytes<'_> {
        Held::key_bytes(self)
    }
}

impl LookupKey for AttachmentKey {
    fn key_bytes(&self) -> KeyBytes<'_> {
        (
            self.network.as_bytes(),
            self.container_id.as_bytes(),
            self.ifname.as_bytes(),
        )
    }
}

/// The lowest key of a network: its name, then empty container id and
/// interface, which sort before every real attachment of that network.
pub struct FirstOf<'a>(pub &'a str);

impl LookupKey for FirstOf<'_> {
    fn key_bytes(&self) -> KeyBytes<'_> {
        (self.0.as_bytes(), b"", b"")
    }
}

impl Ord for dyn LookupKey + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_bytes().cmp(&other.key_bytes())
    }
}

impl PartialOrd for dyn LookupKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn LookupKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_bytes() == other.key_bytes()
    }
}

impl Eq for dyn LookupKey + '_ {}

impl<'a> Borrow<dyn LookupKey + 'a> for Held {
    fn borrow(&self) -> &(dyn LookupKey + 'a) {
        self
    }
}

/// Ordered by key, exactly as [`AttachmentKey`] orders (network, then
/// container id, then interface), and as the borrowed `dyn LookupKey`
/// orders, which the map's lookups rely on.
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_bytes().cmp(&other.key_bytes())
    }
}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equal keys: the same attachment.
impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.key_bytes() == other.key_bytes()
    }
}

impl Eq for Held {}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_allocation().fmt(f)
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
        let long = "x".repeat(300);
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
            PodRef {
                namespace: Some(String::new()),
                name: None,
                uid: Some(long.clone()),
            },
        ] {
            let mut a = allocation("c1", pod.clone());
            let held = Held::pack(&a);
            assert_eq!(held.to_allocation(), a);
            assert_eq!(held.key(), a.key);
            assert_eq!(held.pod(), pod);
            assert_eq!(held.namespace(), pod.namespace.as_deref());
            assert_eq!(held.node(), "n1");
            assert_eq!(held.netns(), "/run/netns/x");
            assert_eq!(held.since_ms(), 42);
            assert_eq!(held.subnet_of("fd00::5".parse().unwrap()), Some("v6"));
            assert_eq!(held.subnet_of("10.0.0.6".parse().unwrap()), None);
            // No MAC, no address, and lengths past one byte of LEB128.
            a.mac = None;
            a.addresses.clear();
            a.netns = long.clone();
            a.key.container_id = "c".repeat(70_000);
            let held = Held::pack(&a);
            assert_eq!(held.to_allocation(), a);
            assert_eq!(held.addresses().count(), 0);
        }
    }

    fn with_key(key: &AttachmentKey) -> Held {
        let mut a = allocation("", PodRef::default());
        a.key = key.clone();
        Held::pack(&a)
    }

    fn lookup(key: &dyn LookupKey) -> &dyn LookupKey {
        key
    }

    #[test]
    fn a_key_finds_its_allocation_and_nothing_else() {
        let a = allocation("c1", PodRef::default());
        let held = Held::pack(&a);
        let mut other = a.key.clone();
        other.ifname = "eth1".into();
        let set: std::collections::BTreeSet<Held> = [held.clone(), with_key(&other)].into();
        assert_eq!(
            set.get(lookup(&a.key)).map(Held::to_allocation),
            Some(a.clone())
        );
        assert_eq!(set.get(lookup(&other)).map(Held::key), Some(other));
        let mut absent = a.key.clone();
        absent.container_id = "c2".into();
        assert!(!set.contains(lookup(&absent)));
        assert!(lookup(&FirstOf("net")) < lookup(&held));
        assert!(lookup(&FirstOf("neu")) > lookup(&held));
        // A network's range starts at its lowest key and holds both.
        let of_net: Vec<_> = set
            .range::<dyn LookupKey, _>((
                std::ops::Bound::Included(lookup(&FirstOf("net"))),
                std::ops::Bound::Unbounded,
            ))
            .collect();
        assert_eq!(of_net.len(), 2);
    }

    #[test]
    fn keys_order_as_attachment_keys_do() {
        let keys = [
            ("a", "z", "eth0"),
            ("a", "za", "eth0"),
            ("a", "za", "eth1"),
            ("ab", "", ""),
            ("b", "", "a"),
            ("b", "\u{e9}", "a"),
            ("b", "\u{1f600}", ""),
        ];
        let key = |(n, c, i): (&str, &str, &str)| AttachmentKey {
            network: n.into(),
            container_id: c.into(),
            ifname: i.into(),
        };
        for pair in keys.windows(2) {
            let (x, y) = (key(pair[0]), key(pair[1]));
            let (hx, hy) = (with_key(&x), with_key(&y));
            assert_eq!(x.cmp(&y), Ordering::Less, "{x} vs {y}");
            assert_eq!(hx.cmp(&hy), Ordering::Less, "{x} vs {y}");
            assert_eq!(hy.cmp(&hx), Ordering::Greater, "{y} vs {x}");
            // Looked up by a bare key, the order is the same.
            assert_eq!(lookup(&x).cmp(lookup(&hy)), Ordering::Less);
            assert_eq!(lookup(&hx).cmp(lookup(&y)), Ordering::Less);
            assert_eq!(lookup(&x).cmp(lookup(&hx)), Ordering::Equal);
        }
    }
}
