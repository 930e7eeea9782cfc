//! Subnets: the rules a spec must meet to become a subnet, and a subnet's
//! allocation state (its free set, cursor and counts).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipkeep_api::model::{
    Dns, GatewaySpec, IpRange, Route, Sticky, Subnet, SubnetSpec, SubnetUsage, Tenancy,
};
use ipkeep_api::names::check_object_name;
use ipkeep_api::ApiError;
use ipnet::IpNet;

use crate::free_set::FreeSet;

pub fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn u128_to_addr(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// The addresses of a CIDR that may be handed out at all: IPv4 leaves out the
/// network and broadcast addresses (except /31 and /32, RFC 3021), IPv6 the
/// subnet-router anycast address (except /127 and /128), as host-local does.
pub fn host_bounds(cidr: &IpNet) -> (u128, u128) {
    let first = addr_to_u128(cidr.network());
    let last = addr_to_u128(cidr.broadcast());
    match cidr {
        IpNet::V4(n) if n.prefix_len() <= 30 => (first + 1, last - 1),
        IpNet::V6(n) if n.prefix_len() <= 126 => (first + 1, last),
        _ => (first, last),
    }
}

fn check_dns_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 253 {
        return Err(ApiError::invalid(
            field,
            format!("{value:?} must be 1 to 253 characters"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(
            field,
            format!("{value:?} must not contain spaces"),
        ));
    }
    Ok(())
}

pub fn check_dns(dns: &Dns) -> Result<(), ApiError> {
    if let Some(domain) = &dns.domain {
        check_dns_name("dns.domain", domain)?;
    }
    for search in &dns.search {
        check_dns_name("dns.search", search)?;
    }
    for option in &dns.options {
        check_dns_name("dns.options", option)?;
    }
    Ok(())
}

pub fn check_namespace(field: &str, ns: &str) -> Result<(), ApiError> {
    check_object_name(ns).map_err(|r| ApiError::invalid(field, format!("namespace {r}")))
}

pub fn check_tenancy(t: &Tenancy) -> Result<(), ApiError> {
    for ns in &t.namespaces {
        check_namespace("namespaces", ns)?;
    }
    for ns in t.quotas.keys() {
        check_namespace("quotas", ns)?;
    }
    Ok(())
}

pub fn check_sticky(field: &str, sticky: Option<Sticky>) -> Result<(), ApiError> {
    if let Some(Sticky {
        idle_ttl_ms: Some(0),
    }) = sticky
    {
        return Err(ApiError::invalid(
            field,
            "the idle TTL must be above 0 (leave it out to keep bindings until released)",
        ));
    }
    Ok(())
}

pub fn check_routes(cidr: &IpNet, routes: &[Route]) -> Result<(), ApiError> {
    let v4 = cidr.addr().is_ipv4();
    for route in routes {
        if route.dst.addr().is_ipv4() != v4 {
            return Err(ApiError::invalid(
                "routes",
                format!("{} is not of the same IP family as {cidr}", route.dst),
            ));
        }
        if let Some(gw) = route.gw {
            if gw.is_ipv4() != v4 {
                return Err(ApiError::invalid(
                    "routes",
                    format!(
                        "next hop {gw} of {} is not of the same IP family as {cidr}",
                        route.dst
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Linux takes 68 (IPv4) or 1280 (IPv6) up to 65535 bytes.
pub(crate) fn check_mtu(cidr: &IpNet, mtu: Option<u32>) -> Result<(), ApiError> {
    let Some(mtu) = mtu else { return Ok(()) };
    let min = if cidr.addr().is_ipv4() { 68 } else { 1280 };
    if !(min..=65535).contains(&mtu) {
        return Err(ApiError::invalid(
            "mtu",
            format!("{mtu} is outside {min}..=65535, what Linux accepts for {cidr}"),
        ));
    }
    Ok(())
}

/// Checks a spec and settles its gateway. Pure: the daemon calls it before
/// proposing (for a quick, clear error) and the state machine calls it again
/// when applying, with the same result on every replica.
pub fn settle(spec: &SubnetSpec) -> Result<Subnet, ApiError> {
    check_object_name(&spec.name).map_err(|r| ApiError::invalid("name", r))?;
    let cidr = spec.cidr;
    if cidr.trunc() != cidr {
        return Err(ApiError::invalid(
            "cidr",
            format!("{cidr} has host bits set; the network is {}", cidr.trunc()),
        ));
    }
    let v4 = cidr.addr().is_ipv4();
    let same_family = |a: IpAddr| a.is_ipv4() == v4;
    let (first, last) = host_bounds(&cidr);
    let in_hosts = |a: IpAddr| {
        let v = addr_to_u128(a);
        same_family(a) && first <= v && v <= last
    };

    let gateway = match spec.gateway {
        GatewaySpec::None => None,
        GatewaySpec::Auto => (first < last).then(|| u128_to_addr(first, v4)),
        GatewaySpec::Address(gw) => {
            if !in_hosts(gw) {
                return Err(ApiError::invalid(
                    "gateway",
                    format!("{gw} is not a host address of {cidr}"),
                ));
            }
            Some(gw)
        }
    };

    for range in &spec.exclude {
        if !cidr.contains(&range.start) || !cidr.contains(&range.end) {
            return Err(ApiError::invalid(
                "exclude",
                format!("{range} is not inside {cidr}"),
            ));
        }
    }

    check_routes(&cidr, &spec.routes)?;
    check_dns(&spec.dns)?;
    check_tenancy(&spec.tenancy)?;
    check_sticky("sticky", spec.sticky)?;
    check_mtu(&cidr, spec.mtu)?;

    let subnet = Subnet {
        name: spec.name.clone(),
        cidr,
        gateway,
        exclude: spec.exclude.clone(),
        routes: spec
            .routes
            .iter()
            .map(|r| Route {
                dst: r.dst.trunc(),
                gw: r.gw,
            })
            .collect(),
        dns: spec.dns.clone(),
        tenancy: spec.tenancy.clone(),
        sticky: spec.sticky,
        mtu: spec.mtu,
    };
    if SubnetState::new(subnet.clone()).usage().assignable == 0 {
        return Err(ApiError::invalid(
            "cidr",
            format!(
                "{cidr} leaves no address to hand out once its gateway and exclusions are taken"
            ),
        ));
    }
    Ok(subnet)
}

/// A subnet and the state of its addresses. The free list holds only the
/// addresses anyone may get: not held, not bound to a pod name, not in a
/// pool, not reserved. The state keeps the counters up to date.
#[derive(Debug, Clone)]
pub struct SubnetState {
    pub subnet: Subnet,
    free: FreeSet,
    assignable: u128,
    cursor: Option<u128>,
    pub(crate) held: u64,
    pub(crate) reserved: u128,
    pub(crate) pooled: u128,
    pub(crate) bound_idle: u64,
}

impl SubnetState {
    /// A subnet with nothing held: every host address free but the gateway and
    /// the excluded ranges.
    pub fn new(subnet: Subnet) -> SubnetState {
        let (first, last) = host_bounds(&subnet.cidr);
        let mut state = SubnetState {
            subnet,
            free: FreeSet::default(),
            assignable: 0,
            cursor: None,
            held: 0,
            reserved: 0,
            pooled: 0,
            bound_idle: 0,
        };
        state.free = state.assignable_in(&[(first, last)]);
        state.assignable = state.free.len();
        state
    }

    fn is_v4(&self) -> bool {
        self.subnet.cidr.addr().is_ipv4()
    }

    pub fn name(&self) -> &str {
        &self.subnet.name
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.subnet.cidr.contains(&addr)
    }

    /// The assignable addresses within some ranges (clipped to the host
    /// addresses, without the gateway and the excluded ranges).
    pub fn assignable_in(&self, ranges: &[(u128, u128)]) -> FreeSet {
        let (first, last) = host_bounds(&self.subnet.cidr);
        let mut set = FreeSet::default();
        for &(start, end) in ranges {
            set.insert_range(start.max(first), end.min(last));
        }
        if let Some(gw) = self.subnet.gateway {
            set.take(addr_to_u128(gw));
        }
        for IpRange { start, end } in &self.subnet.exclude {
            set.remove_range(addr_to_u128(*start), addr_to_u128(*end));
        }
        set
    }

    /// Whether the subnet may hand out this address at all (a host address,
    /// not the gateway, not excluded), whatever its state.
    pub fn is_assignable(&self, addr: IpAddr) -> bool {
        let (first, last) = host_bounds(&self.subnet.cidr);
        let v = addr_to_u128(addr);
        addr.is_ipv4() == self.is_v4()
            && first <= v
            && v <= last
            && self.subnet.gateway != Some(addr)
            && !self.subnet.exclude.iter().any(|r| r.contains(addr))
    }

    pub fn is_free(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.is_v4() && self.free.contains(addr_to_u128(addr))
    }

    /// The address the next ADD would get from the free list, without taking it.
    pub fn peek_next(&self) -> Option<IpAddr> {
        self.free
            .next_after(self.cursor)
            .map(|v| u128_to_addr(v, self.is_v4()))
    }

    /// Takes a free address; moves the cursor to it when it was chosen as the
    /// next free one (an address asked for explicitly leaves the cursor).
    pub fn take_free(&mut self, addr: IpAddr, move_cursor: bool) -> bool {
        if addr.is_ipv4() != self.is_v4() || !self.free.take(addr_to_u128(addr)) {
            return false;
        }
        if move_cursor {
            self.cursor = Some(addr_to_u128(addr));
        }
        true
    }

    /// Gives an assignable address back to the free list; false if it was free.
    pub fn put_free(&mut self, addr: IpAddr) -> bool {
        self.is_assignable(addr) && self.free.put(addr_to_u128(addr))
    }

    /// Takes every free address of a range off the free list; returns how many.
    pub fn take_range(&mut self, start: IpAddr, end: IpAddr) -> u128 {
        self.free
            .remove_range(addr_to_u128(start), addr_to_u128(end))
    }

    /// Gives a set of addresses back to the free list; returns how many.
    pub fn put_set(&mut self, set: &FreeSet) -> u128 {
        set.iter().map(|(s, e)| self.free.insert_range(s, e)).sum()
    }

    /// How many addresses of a range are on the free list.
    pub fn free_in(&self, start: IpAddr, end: IpAddr) -> u128 {
        self.free.count_in(addr_to_u128(start), addr_to_u128(end))
    }

    pub fn cursor(&self) -> Option<IpAddr> {
        self.cursor.map(|v| u128_to_addr(v, self.is_v4()))
    }

    pub fn set_cursor(&mut self, cursor: Option<IpAddr>) {
        self.cursor = cursor.map(addr_to_u128);
    }

    /// The free addresses, as inclusive ranges in order.
    pub fn free_ranges(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.free.iter()
    }

    pub fn usage(&self) -> SubnetUsage {
        SubnetUsage {
            assignable: self.assignable,
            held: self.held,
            free: self.free.len(),
            reserved: self.reserved,
            pooled: self.pooled,
            bound_idle: self.bound_idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cidr: &str) -> SubnetSpec {
        SubnetSpec::plain("s", cidr.parse().unwrap())
    }

    #[test]
    fn ipv4_leaves_out_network_broadcast_and_gateway() {
        let s = settle(&spec("10.0.0.0/29")).unwrap();
        assert_eq!(s.gateway, Some("10.0.0.1".parse().unwrap()));
        let st = SubnetState::new(s);
        assert_eq!(st.usage().assignable, 5); // .2 .. .6
        assert_eq!(st.peek_next(), Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ipv6_and_tiny_subnets() {
        let st = SubnetState::new(settle(&spec("fd00::/64")).unwrap());
        assert_eq!(st.usage().assignable, (1u128 << 64) - 2);
        let mut s = spec("10.0.0.0/31");
        s.gateway = GatewaySpec::None;
        assert_eq!(SubnetState::new(settle(&s).unwrap()).usage().assignable, 2);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = settle(&spec("10.0.0.5/24")).unwrap_err();
        assert!(e.details.starts_with("cidr:"), "{e}");
        let mut s = spec("10.0.0.0/24");
        s.gateway = GatewaySpec::Address("10.0.1.1".parse().unwrap());
        assert!(settle(&s).unwrap_err().details.starts_with("gateway:"));
        let mut s = spec("10.0.0.0/24");
        s.exclude = vec!["10.0.1.0-10.0.1.5".parse().unwrap()];
        assert!(settle(&s).unwrap_err().details.starts_with("exclude:"));
        let mut s = spec("10.0.0.0/24");
        s.routes = vec![Route {
            dst: "fd00::/8".parse().unwrap(),
            gw: None,
        }];
        assert!(settle(&s).unwrap_err().details.starts_with("routes:"));
        let mut s = spec("10.0.0.0/30");
        s.exclude = vec!["10.0.0.2".parse().unwrap()];
        assert!(
            settle(&s).unwrap_err().details.starts_with("cidr:"),
            "nothing left"
        );
        let mut s = spec("10.0.0.0/24");
        s.name = "bad name".into();
        assert!(settle(&s).unwrap_err().details.starts_with("name:"));
    }

    #[test]
    fn take_and_put_keep_the_free_list() {
        let mut st = SubnetState::new(settle(&spec("10.0.0.0/29")).unwrap());
        let a = st.peek_next().unwrap();
        assert!(st.take_free(a, true));
        assert!(!st.take_free(a, true));
        assert_eq!(st.peek_next(), Some("10.0.0.3".parse().unwrap()));
        assert!(st.put_free(a));
        assert!(!st.put_free(a));
        assert!(
            !st.put_free("10.0.0.1".parse().unwrap()),
            "the gateway is never free"
        );
        assert_eq!(st.usage().free, st.usage().assignable);
    }

    #[test]
    fn assignable_in_leaves_out_gateway_and_exclusions() {
        let mut s = spec("10.0.0.0/24");
        s.exclude = vec!["10.0.0.5-10.0.0.6".parse().unwrap()];
        let st = SubnetState::new(settle(&s).unwrap());
        let a = |x: &str| addr_to_u128(x.parse().unwrap());
        let set = st.assignable_in(&[(a("10.0.0.0"), a("10.0.0.9"))]);
        assert_eq!(set.len(), 6); // .2 .3 .4 .7 .8 .9: .0 is the network, .1 the gateway
    }
}
