//! The objects ipkeep manages, as the node API and `ipkeepctl --output json`
//! show them. The store keeps them; the rules that validate them live there.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

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
        let (start, end) = (parse(start)?, parse(end)?);
        if start.is_ipv4() != end.is_ipv4() {
            return Err(format!("{s:?} mixes IPv4 and IPv6"));
        }
        if start > end {
            return Err(format!("{s:?} starts after it ends"));
        }
        Ok(IpRange { start, end })
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

/// What an operator asks for when creating a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub name: String,
    pub cidr: IpNet,
    pub gateway: GatewaySpec,
    pub exclude: Vec<IpRange>,
    pub routes: Vec<Route>,
    pub dns: Dns,
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
}

/// How much of a subnet is in use. Counts are u128 because an IPv6 /64 has
/// 2^64 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetUsage {
    /// Addresses that can be handed out (the CIDR minus network, broadcast,
    /// gateway and excluded ranges).
    pub assignable: u128,
    pub held: u64,
    pub free: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetInfo {
    pub subnet: Subnet,
    pub usage: SubnetUsage,
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
