//! The objects ipkeep manages, as the node API and `ipkeepctl --output json`
//! show them. The store keeps them; the rules that validate them live there.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::mac::Mac;

/// A route handed to pods of a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    /// Next hop; when absent the pod uses the subnet's gateway.
    pub gw: Option<IpAddr>,
}

impl FromStr for Route {
    type Err = String;

    /// `DST` or `DST,GW`, e.g. `0.0.0.0/0` or `10.96.0.0/12,10.22.0.254`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (dst, gw) = match s.split_once(',') {
            Some((dst, gw)) => (dst, Some(gw)),
            None => (s, None),
        };
        let dst: IpNet = dst
            .trim()
            .parse()
            .map_err(|_| format!("{dst:?} is not a destination in CIDR notation"))?;
        let gw = gw
            .map(|gw| {
                gw.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{gw:?} is not an IP address"))
            })
            .transpose()?;
        Ok(Route {
            dst: dst.trunc(),
            gw,
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gw {
            Some(gw) => write!(f, "{} via {}", self.dst, gw),
            None => write!(f, "{}", self.dst),
        }
    }
}

/// DNS settings handed to pods of a subnet (the CNI result's `dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<IpAddr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    /// Merges another subnet's DNS into this one (dual stack): lists are
    /// united in order without repeats, the first domain wins.
    pub fn merge(&mut self, other: &Dns) {
        fn unite<T: PartialEq + Clone>(into: &mut Vec<T>, from: &[T]) {
            for item in from {
                if !into.contains(item) {
                    into.push(item.clone());
                }
            }
        }
        unite(&mut self.nameservers, &other.nameservers);
        unite(&mut self.search, &other.search);
        unite(&mut self.options, &other.options);
        if self.domain.is_none() {
            self.domain.clone_from(&other.domain);
        }
    }
}

/// An inclusive range of addresses: `10.0.0.5`, `10.0.0.5-10.0.0.9` or `10.0.0.0/28`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl IpRange {
    pub fn single(addr: IpAddr) -> Self {
        IpRange {
            start: addr,
            end: addr,
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.start.is_ipv4() && self.start <= addr && addr <= self.end
    }

    /// Both ends of one family, the start not after the end (a range from
    /// the wire is not parsed, so it is checked).
    pub fn check(&self) -> Result<(), String> {
        if self.start.is_ipv4() != self.end.is_ipv4() {
            return Err(format!("{self} mixes IPv4 and IPv6"));
        }
        if self.start > self.end {
            return Err(format!("{}-{} starts after it ends", self.start, self.end));
        }
        Ok(())
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| format!("{s:?} is not a CIDR (expected e.g. 10.0.0.0/28)"))?;
            return Ok(IpRange {
                start: net.network(),
                end: net.broadcast(),
            });
        }
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s, s),
        };
        let parse = |v: &str| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("{v:?} is not an IP address"))
        };
        let range = IpRange {
            start: parse(start)?,
            end: parse(end)?,
        };
        range.check()?;
        Ok(range)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// How a subnet's gateway is chosen when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewaySpec {
    /// The first address of the subnet (as host-local does).
    Auto,
    /// No gateway: nothing is reserved and results carry none.
    None,
    /// This address, which must be inside the subnet.
    Address(IpAddr),
}

/// Who may use a subnet, and how much of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    /// Namespaces whose pods may use the subnet; empty: every namespace.
    pub namespaces: Vec<String>,
    /// Most addresses a namespace may hold or keep bound in the subnet.
    pub quotas: BTreeMap<String, u64>,
}

impl Tenancy {
    pub fn allows(&self, namespace: Option<&str>) -> bool {
        self.namespaces.is_empty()
            || namespace.is_some_and(|ns| self.namespaces.iter().any(|n| n == ns))
    }
}

/// Sticky addresses: the first ADD of a pod name binds its address to that
/// name (namespace/name), and later ADDs of the same name get it again, on
/// any node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sticky {
    /// A binding unused for this long is freed; None keeps it until released.
    pub idle_ttl_ms: Option<u64>,
}

/// What an operator asks for when creating a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub name: String,
    pub cidr: IpNet,
    pub gateway: GatewaySpec,
    pub exclude: Vec<IpRange>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    pub tenancy: Tenancy,
    pub sticky: Option<Sticky>,
    /// The MTU of pod interfaces that ipkeep creates itself (main-plugin
    /// mode); None: the link's default, or the network configuration's.
    pub mtu: Option<u32>,
}

impl SubnetSpec {
    /// A subnet with nothing but its name and CIDR: the gateway chosen
    /// automatically, no exclusions, routes, DNS, tenancy, stickiness or MTU.
    pub fn plain(name: impl Into<String>, cidr: IpNet) -> SubnetSpec {
        SubnetSpec {
            name: name.into(),
            cidr,
            gateway: GatewaySpec::Auto,
            exclude: vec![],
            routes: vec![],
            dns: Dns::default(),
            tenancy: Tenancy::default(),
            sticky: None,
            mtu: None,
        }
    }
}

/// A subnet as the cluster stores it: the spec with its gateway settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub name: String,
    pub cidr: IpNet,
    pub gateway: Option<IpAddr>,
    pub exclude: Vec<IpRange>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    pub tenancy: Tenancy,
    pub sticky: Option<Sticky>,
    /// The MTU of pod interfaces that ipkeep creates itself (main-plugin
    /// mode); None: the link's default, or the network configuration's.
    pub mtu: Option<u32>,
}

/// Changes to a subnet that leave its addresses where they are. Fields left
/// None are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetUpdate {
    pub namespaces: Option<Vec<String>>,
    /// Quotas to set (Some) or remove (None), by namespace.
    pub quotas: Vec<(String, Option<u64>)>,
    /// Some(None) makes the subnet not sticky; existing bindings stay.
    pub sticky: Option<Option<Sticky>>,
    pub routes: Option<Vec<Route>>,
    pub dns: Option<Dns>,
    /// Some(None) removes the subnet's MTU.
    pub mtu: Option<Option<u32>>,
}

/// Which pods a pool's addresses are for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPattern {
    /// Exactly this pod name, e.g. `etcd-0`.
    Name(String),
    /// Every pod whose name starts with this, written `etcd-*`.
    Prefix(String),
}

impl PodPattern {
    pub fn matches(&self, pod: &str) -> bool {
        match self {
            PodPattern::Name(n) => n == pod,
            PodPattern::Prefix(p) => pod.starts_with(p.as_str()),
        }
    }

    /// Whether some pod name matches both patterns.
    pub fn overlaps(&self, other: &PodPattern) -> bool {
        match (self, other) {
            (PodPattern::Name(a), PodPattern::Name(b)) => a == b,
            (PodPattern::Name(n), p @ PodPattern::Prefix(_))
            | (p @ PodPattern::Prefix(_), PodPattern::Name(n)) => p.matches(n),
            (PodPattern::Prefix(a), PodPattern::Prefix(b)) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
        }
    }
}

impl FromStr for PodPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (body, prefix) = match s.strip_suffix('*') {
            Some(p) => (p, true),
            None => (s, false),
        };
        if body.is_empty() {
            return Err(format!("{s:?} matches no pod name (write NAME or PREFIX*)"));
        }
        if body
            .chars()
            .any(|c| c.is_whitespace() || c == '*' || c == '/' || c.is_control())
        {
            return Err(format!("{s:?} is not a pod name or PREFIX*"));
        }
        Ok(if prefix {
            PodPattern::Prefix(body.into())
        } else {
            PodPattern::Name(body.into())
        })
    }
}

impl fmt::Display for PodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodPattern::Name(n) => write!(f, "{n}"),
            PodPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// The pods a pool selects: those of `namespace` (any, when None) whose
/// names match one of `pods` (any, when empty). A pool selects something.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSelector {
    pub namespace: Option<String>,
    pub pods: Vec<PodPattern>,
}

impl PodSelector {
    pub fn selects(&self, pod: &PodRef) -> bool {
        if self.namespace.is_some() && self.namespace != pod.namespace {
            return false;
        }
        if self.pods.is_empty() {
            return true;
        }
        pod.name
            .as_deref()
            .is_some_and(|name| self.pods.iter().any(|p| p.matches(name)))
    }

    /// Whether some pod is selected by both.
    pub fn overlaps(&self, other: &PodSelector) -> bool {
        let namespaces_meet = match (&self.namespace, &other.namespace) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let names_meet = self.pods.is_empty()
            || other.pods.is_empty()
            || self
                .pods
                .iter()
                .any(|a| other.pods.iter().any(|b| a.overlaps(b)));
        namespaces_meet && names_meet
    }
}

impl fmt::Display for PodSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.namespace.as_deref().unwrap_or("*");
        if self.pods.is_empty() {
            write!(f, "{ns}/*")
        } else {
            let pods: Vec<String> = self.pods.iter().map(|p| p.to_string()).collect();
            write!(f, "{ns}/{}", pods.join(","))
        }
    }
}

/// A named set of addresses of one subnet, kept for the pods it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub subnet: String,
    pub addresses: Vec<IpRange>,
    pub selector: PodSelector,
    pub sticky: Option<Sticky>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// Addresses of the pool that can be handed out.
    pub size: u128,
    pub held: u64,
    /// Bound to a pod name and not in use right now.
    pub bound_idle: u64,
    pub free: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub pool: Pool,
    pub usage: PoolUsage,
}

/// A sticky address: bound to a pod name, kept across that pod's deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<AllocatedAddress>,
    /// The MAC kept with the addresses (main-plugin mode): the pod comes
    /// back with it.
    pub mac: Option<Mac>,
    /// The pool the addresses came from; None: the subnet's own sticky addresses.
    pub pool: Option<String>,
    /// The attachment using the binding now, if the pod is running.
    pub holder: Option<AttachmentKey>,
    pub since_ms: u64,
    pub last_used_ms: u64,
    pub idle_ttl_ms: Option<u64>,
}

/// Addresses kept from being handed out (a router, a VIP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub range: IpRange,
    pub subnet: String,
    pub note: String,
    pub since_ms: u64,
}

/// Why an attachment's addresses were released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    Del,
    Gc,
    Reconciler,
    NodeForgotten,
    Operator,
}

impl fmt::Display for ReleaseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleaseReason::Del => "DEL",
            ReleaseReason::Gc => "GC",
            ReleaseReason::Reconciler => "reconciler",
            ReleaseReason::NodeForgotten => "node forgotten",
            ReleaseReason::Operator => "operator",
        })
    }
}

/// A past holder of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub address: IpAddr,
    pub subnet: String,
    pub key: AttachmentKey,
    pub pod: PodRef,
    pub node: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub reason: ReleaseReason,
}

/// How much of a subnet is in use. Counts are u128 because an IPv6 /64 has
/// 2^64 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetUsage {
    /// Addresses that can be handed out (the CIDR minus network, broadcast,
    /// gateway and excluded ranges).
    pub assignable: u128,
    pub held: u64,
    /// Free in the subnet's general free list (not reserved, not in a pool, not bound).
    pub free: u128,
    pub reserved: u128,
    /// Addresses set aside in pools.
    pub pooled: u128,
    /// Bound to a pod name and not in use right now.
    pub bound_idle: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetInfo {
    pub subnet: Subnet,
    pub usage: SubnetUsage,
    /// Addresses held or bound per namespace (what quotas count).
    pub by_namespace: BTreeMap<String, u64>,
}

/// What identifies an attachment: the network (the conflist's `name`), the
/// container id and the interface name, as the CNI spec keys attachments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// The pod as CNI_ARGS describe it (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, "{ns}/{name}"),
            (None, Some(name)) => write!(f, "{name}"),
            (Some(ns), None) => write!(f, "{ns}/-"),
            (None, None) => write!(f, "-"),
        }
    }
}

/// One address held by an attachment, and the subnet it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedAddress {
    pub subnet: String,
    pub address: IpAddr,
}

/// An attachment's addresses, and who holds them, where and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub key: AttachmentKey,
    pub addresses: Vec<AllocatedAddress>,
    pub pod: PodRef,
    /// The node whose daemon asked for the address.
    pub node: String,
    /// CNI_NETNS as given on ADD.
    pub netns: String,
    /// The MAC of the pod's interface, when ipkeep creates it (main-plugin mode).
    pub mac: Option<Mac>,
    /// Milliseconds since the Unix epoch, stamped by the daemon that proposed the ADD.
    pub since_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        let r: IpRange = "10.0.0.5-10.0.0.9".parse().unwrap();
        assert!(r.contains("10.0.0.7".parse().unwrap()));
        assert!(!r.contains("10.0.0.10".parse().unwrap()));
        let r: IpRange = "10.0.0.0/30".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.0-10.0.0.3");
        assert!("10.0.0.9-10.0.0.5".parse::<IpRange>().is_err());
        assert!("10.0.0.1-fd00::1".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
    }

    #[test]
    fn routes_parse() {
        let r: Route = "0.0.0.0/0".parse().unwrap();
        assert_eq!(r.gw, None);
        let r: Route = "10.96.0.0/12,10.22.0.254".parse().unwrap();
        assert_eq!(r.gw, Some("10.22.0.254".parse().unwrap()));
        assert!("10.96.0.0/12,x".parse::<Route>().is_err());
    }

    #[test]
    fn dns_merges_without_repeats() {
        let mut a = Dns {
            nameservers: vec!["10.0.0.10".parse().unwrap()],
            domain: None,
            search: vec!["svc".into()],
            options: vec![],
        };
        let b = Dns {
            nameservers: vec!["fd00::10".parse().unwrap(), "10.0.0.10".parse().unwrap()],
            domain: Some("cluster.local".into()),
            search: vec!["svc".into()],
            options: vec!["ndots:5".into()],
        };
        a.merge(&b);
        assert_eq!(a.nameservers.len(), 2);
        assert_eq!(a.search, vec!["svc".to_string()]);
        assert_eq!(a.domain.as_deref(), Some("cluster.local"));
    }
}
