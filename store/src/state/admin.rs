//! The operator's commands: subnets, pools, reservations, bindings.

use std::net::IpAddr;

use ipkeep_api::message::PoolRequest;
use ipkeep_api::model::{IpRange, Reservation, SubnetSpec, SubnetUpdate};
use ipkeep_api::ApiError;

use crate::command::Reply;
use crate::pool;
use crate::records::{Change, Record};
use crate::state::State;
use crate::subnet::{
    addr_to_u128, check_dns, check_mtu, check_namespace, check_routes, check_sticky, settle,
    u128_to_addr,
};

/// How many holders a refusal names before it says "and N more".
const NAMED: usize = 10;

fn listed(items: Vec<String>, total: usize) -> String {
    let more = total.saturating_sub(items.len());
    if more > 0 {
        format!("{} and {more} more", items.join(", "))
    } else {
        items.join(", ")
    }
}

impl State {
    /// Why the addresses of `ranges` in `subnet` are not all free for a new
    /// pool or reservation: held, bound, reserved, or in a pool.
    fn occupied(
        &self,
        subnet: &str,
        ranges: &[IpRange],
        except_pool: Option<&str>,
    ) -> Option<String> {
        for range in ranges {
            let held = self.held_between(range.start, range.end, NAMED);
            if let Some((addr, key)) = held.first() {
                let who = self
                    .allocation(key)
                    .map(|a| a.pod.to_string())
                    .unwrap_or_default();
                return Some(format!("{addr} is held by {key} (pod {who})"));
            }
            let bound = self.bound_between(range.start, range.end, 1);
            if let Some((addr, (ns, name))) = bound.first() {
                return Some(format!("{addr} is kept for pod {ns}/{name} (sticky)"));
            }
            for r in self.reservations() {
                if r.subnet == subnet && r.range.start <= range.end && range.start <= r.range.end {
                    return Some(format!("{} is reserved ({})", r.range, r.note));
                }
            }
            for p in self.pools_of(subnet) {
                if Some(p.name()) == except_pool {
                    continue;
                }
                let (s, e) = (addr_to_u128(range.start), addr_to_u128(range.end));
                if p.members().count_in(s, e) > 0 {
                    return Some(format!("{range} overlaps pool {}", p.name()));
                }
            }
        }
        None
    }

    pub(super) fn create_subnet(
        &mut self,
        spec: &SubnetSpec,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let subnet = settle(spec)?;
        if let Some(existing) = self.subnet(&subnet.name) {
            // Creating the same subnet twice is a no-op, so that a retried
            // create (or a bootstrap that restarts) succeeds.
            if existing.subnet == subnet {
                return Ok(Reply::Subnet(
                    self.subnet_info(&subnet.name).expect("exists"),
                ));
            }
            return Err(ApiError::conflict(format!(
                "subnet {} already exists with CIDR {}; delete it first or pick another name",
                subnet.name, existing.subnet.cidr
            )));
        }
        if let Some(other) = self.subnets().find(|s| {
            s.subnet.cidr.contains(&subnet.cidr.network())
                || subnet.cidr.contains(&s.subnet.cidr.network())
        }) {
            return Err(ApiError::conflict(format!(
                "cidr: {} overlaps {} of subnet {}; an address must belong to one subnet only",
                subnet.cidr,
                other.subnet.cidr,
                other.name()
            )));
        }
        let name = subnet.name.clone();
        self.insert_subnet(subnet, journal);
        Ok(Reply::Subnet(
            self.subnet_info(&name).expect("just inserted"),
        ))
    }

    pub(super) fn delete_subnet(
        &mut self,
        name: &str,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let Some(sub) = self.subnet(name) else {
            return Err(ApiError::not_found(format!("no subnet named {name}")));
        };
        let held = sub.usage().held as usize;
        if held > 0 {
            let named: Vec<String> = self
                .held_in_subnet(name, NAMED)
                .iter()
                .map(|a| match self.holder(*a) {
                    Some(k) => format!("{a} ({k})"),
                    None => a.to_string(),
                })
                .collect();
            return Err(ApiError::conflict(format!(
                "subnet {name} still has {held} address(es) held: {}; release them (CNI DEL) first",
                listed(named, held)
            )));
        }
        let pools: Vec<String> = self.pools_of(name).map(|p| p.name().to_owned()).collect();
        if !pools.is_empty() {
            return Err(ApiError::conflict(format!(
                "subnet {name} has pools {}; delete them first",
                pools.join(", ")
            )));
        }
        let bound: Vec<String> = self
            .bindings()
            .filter(|b| b.addresses.iter().any(|a| a.subnet == name))
            .map(|b| format!("{}/{}", b.namespace, b.name))
            .collect();
        if !bound.is_empty() {
            let total = bound.len();
            return Err(ApiError::conflict(format!(
                "subnet {name} keeps sticky addresses for {}; release them with `ipkeepctl binding release`",
                listed(bound.into_iter().take(NAMED).collect(), total)
            )));
        }
        let reserved: Vec<IpAddr> = self
            .reservations()
            .filter(|r| r.subnet == name)
            .map(|r| r.range.start)
            .collect();
        for start in reserved {
            self.remove_reservation(start, journal);
        }
        self.remove_subnet(name, journal);
        Ok(Reply::Done)
    }

    /// Replaces an empty state with a backup's records, checked the way a
    /// daemon checks its own store at start: a backup that contradicts
    /// itself is refused whole.
    pub(super) fn restore(
        &mut self,
        records: &[(Vec<u8>, Vec<u8>)],
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        if !self.is_empty() {
            return Err(ApiError::conflict(
                "the cluster already has subnets or allocations; restore a backup into a new cluster",
            ));
        }
        let decoded: Result<Vec<Record>, _> =
            records.iter().map(|(k, v)| Record::decode(k, v)).collect();
        let restored = decoded
            .and_then(State::from_records)
            .map_err(|e| ApiError::invalid("backup", e.to_string()))?;
        // Whatever an empty cluster had (tombstones, history) goes first.
        journal.extend(self.records().map(|r| Change::Delete(r.key())));
        journal.extend(restored.records().map(|r| r.to_change()));
        *self = restored;
        Ok(Reply::Done)
    }

    pub(super) fn update_subnet(
        &mut self,
        name: &str,
        update: &SubnetUpdate,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let Some(sub) = self.subnet(name) else {
            return Err(ApiError::not_found(format!("no subnet named {name}")));
        };
        let mut subnet = sub.subnet.clone();
        if let Some(namespaces) = &update.namespaces {
            for ns in namespaces {
                check_namespace("namespaces", ns)?;
            }
            subnet.tenancy.namespaces = namespaces.clone();
        }
        for (ns, quota) in &update.quotas {
            check_namespace("quotas", ns)?;
            match quota {
                Some(q) => subnet.tenancy.quotas.insert(ns.clone(), *q),
                None => subnet.tenancy.quotas.remove(ns),
            };
        }
        if let Some(sticky) = update.sticky {
            check_sticky("sticky", sticky)?;
            subnet.sticky = sticky;
        }
        if let Some(routes) = &update.routes {
            check_routes(&subnet.cidr, routes)?;
            subnet.routes = routes.clone();
        }
        if let Some(dns) = &update.dns {
            check_dns(dns)?;
            subnet.dns = dns.clone();
        }
        if let Some(mtu) = update.mtu {
            check_mtu(&subnet.cidr, mtu)?;
            subnet.mtu = mtu;
        }
        self.replace_subnet_settings(subnet, journal);
        Ok(Reply::Subnet(self.subnet_info(name).expect("exists")))
    }

    pub(super) fn create_pool(
        &mut self,
        request: &PoolRequest,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let Some(sub) = self.subnet(&request.subnet) else {
            return Err(ApiError::not_found(format!(
                "subnet: no subnet named {}",
                request.subnet
            )));
        };
        let pool = pool::settle(request, sub)?;
        if let Some(existing) = self.pool(&pool.name) {
            if existing.pool == pool {
                return Ok(Reply::Pool(self.pool_info(&pool.name).expect("exists")));
            }
            return Err(ApiError::conflict(format!(
                "pool {} already exists; delete it first or pick another name",
                pool.name
            )));
        }
        if pool::addresses_of(&pool, sub).is_empty() {
            return Err(ApiError::invalid("addresses", "none of these addresses can be handed out (gateway, excluded or network addresses)"));
        }
        if let Some(other) = self
            .pools_of(&pool.subnet)
            .find(|p| p.pool.selector.overlaps(&pool.selector))
        {
            return Err(ApiError::conflict(format!(
                "pods: pool {} already selects pods {} in subnet {}; a pod must have one pool per subnet",
                other.name(),
                other.pool.selector,
                pool.subnet
            )));
        }
        if let Some(why) = self.occupied(&pool.subnet, &pool.addresses, None) {
            return Err(ApiError::conflict(format!(
                "addresses: {why}; a pool's addresses must be free when it is made"
            )));
        }
        let name = pool.name.clone();
        self.insert_pool(pool, journal);
        Ok(Reply::Pool(self.pool_info(&name).expect("just inserted")))
    }

    pub(super) fn delete_pool(
        &mut self,
        name: &str,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let Some(pool) = self.pool(name) else {
            return Err(ApiError::not_found(format!("no pool named {name}")));
        };
        let usage = pool.usage();
        if usage.held > 0 || usage.bound_idle > 0 {
            let mut users: Vec<String> = Vec::new();
            for (s, e) in pool.members().iter() {
                let v4 = pool
                    .pool
                    .addresses
                    .first()
                    .is_some_and(|r| r.start.is_ipv4());
                let (s, e) = (u128_to_addr(s, v4), u128_to_addr(e, v4));
                users.extend(
                    self.held_between(s, e, NAMED)
                        .into_iter()
                        .map(|(a, k)| format!("{a} ({k})")),
                );
                users.extend(
                    self.bound_between(s, e, NAMED)
                        .into_iter()
                        .map(|(a, (ns, n))| format!("{a} (kept for {ns}/{n})")),
                );
            }
            let total = (usage.held + usage.bound_idle) as usize;
            users.truncate(NAMED);
            return Err(ApiError::conflict(format!(
                "pool {name} still has {total} address(es) in use: {}; release them first",
                listed(users, total)
            )));
        }
        self.remove_pool(name, journal);
        Ok(Reply::Done)
    }

    pub(super) fn resize_pool_checked(
        &mut self,
        name: &str,
        addresses: &[IpRange],
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let Some(current) = self.pool(name) else {
            return Err(ApiError::not_found(format!("no pool named {name}")));
        };
        let sub = self
            .subnet(&current.pool.subnet)
            .expect("a pool's subnet exists");
        let request = PoolRequest {
            name: name.to_owned(),
            subnet: current.pool.subnet.clone(),
            addresses: addresses.to_vec(),
            selector: current.pool.selector.clone(),
            sticky: current.pool.sticky,
        };
        let next = pool::settle(&request, sub)?;
        let new_members = pool::addresses_of(&next, sub);
        let v4 = sub.subnet.cidr.addr().is_ipv4();
        // Addresses leaving the pool must not be in use.
        for (s, e) in current.members().iter() {
            let mut leaving = crate::free_set::FreeSet::with_range(s, e);
            for (ns, ne) in new_members.iter() {
                leaving.remove_range(ns, ne);
            }
            for (ls, le) in leaving.iter() {
                let (ls, le) = (u128_to_addr(ls, v4), u128_to_addr(le, v4));
                if let Some((a, k)) = self.held_between(ls, le, 1).first() {
                    return Err(ApiError::conflict(format!(
                        "addresses: {a} would leave pool {name} but is held by {k}"
                    )));
                }
                if let Some((a, (pns, pn))) = self.bound_between(ls, le, 1).first() {
                    return Err(ApiError::conflict(format!(
                        "addresses: {a} would leave pool {name} but is kept for {pns}/{pn}"
                    )));
                }
            }
        }
        // Addresses joining it must be free in the subnet.
        let mut joining: Vec<IpRange> = Vec::new();
        for (s, e) in new_members.iter() {
            let mut j = crate::free_set::FreeSet::with_range(s, e);
            for (cs, ce) in current.members().iter() {
                j.remove_range(cs, ce);
            }
            joining.extend(j.iter().map(|(a, b)| IpRange {
                start: u128_to_addr(a, v4),
                end: u128_to_addr(b, v4),
            }));
        }
        let subnet = current.pool.subnet.clone();
        if let Some(why) = self.occupied(&subnet, &joining, Some(name)) {
            return Err(ApiError::conflict(format!("addresses: {why}")));
        }
        self.resize_pool(name, addresses.to_vec(), journal);
        Ok(Reply::Pool(self.pool_info(name).expect("exists")))
    }

    pub(super) fn reserve(
        &mut self,
        range: &IpRange,
        note: &str,
        at_ms: u64,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let Some(sub) = self.subnet_of(range.start) else {
            return Err(ApiError::invalid(
                "range",
                format!("{} is in no subnet", range.start),
            ));
        };
        if !sub.contains(range.end) {
            return Err(ApiError::invalid(
                "range",
                format!(
                    "{range} does not fit in subnet {} ({})",
                    sub.name(),
                    sub.subnet.cidr
                ),
            ));
        }
        if note.len() > 256 {
            return Err(ApiError::invalid("note", "at most 256 characters"));
        }
        let subnet = sub.name().to_owned();
        if let Some(why) = self.occupied(&subnet, std::slice::from_ref(range), None) {
            return Err(ApiError::conflict(format!(
                "{why}; only free addresses can be reserved"
            )));
        }
        self.insert_reservation(
            Reservation {
                range: *range,
                subnet,
                note: note.to_owned(),
                since_ms: at_ms,
            },
            journal,
        );
        Ok(Reply::Done)
    }

    /// Removes the reservations inside `range`; a reservation the range cuts
    /// through is refused (unreserve it whole).
    pub(super) fn unreserve(
        &mut self,
        range: &IpRange,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let mut inside = Vec::new();
        for r in self.reservations() {
            let overlaps = r.range.start.is_ipv4() == range.start.is_ipv4()
                && r.range.start <= range.end
                && range.start <= r.range.end;
            if !overlaps {
                continue;
            }
            if range.contains(r.range.start) && range.contains(r.range.end) {
                inside.push(r.range.start);
            } else {
                return Err(ApiError::conflict(format!(
                    "range: {range} cuts through the reservation {} ({}); unreserve it whole",
                    r.range, r.note
                )));
            }
        }
        if inside.is_empty() {
            return Err(ApiError::not_found(format!(
                "nothing is reserved in {range}"
            )));
        }
        for start in inside {
            self.remove_reservation(start, journal);
        }
        Ok(Reply::Done)
    }

    pub(super) fn release_binding(
        &mut self,
        namespace: &str,
        name: &str,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let pod = (namespace.to_owned(), name.to_owned());
        let Some(binding) = self.binding(&pod) else {
            return Err(ApiError::not_found(format!(
                "pod {namespace}/{name} has no sticky addresses"
            )));
        };
        if let Some(holder) = &binding.holder {
            return Err(ApiError::conflict(format!(
                "pod {namespace}/{name} is running as {holder}; delete it first, then release its addresses"
            )));
        }
        self.unbind(&pod, journal);
        Ok(Reply::Done)
    }

    pub(super) fn expire_bindings(
        &mut self,
        at_ms: u64,
        journal: &mut Vec<Change>,
    ) -> Vec<(String, String)> {
        let expired: Vec<(String, String)> = self
            .bindings()
            .filter(|b| b.holder.is_none())
            .filter(|b| {
                b.idle_ttl_ms
                    .is_some_and(|ttl| b.last_used_ms.saturating_add(ttl) <= at_ms)
            })
            .map(|b| (b.namespace.clone(), b.name.clone()))
            .collect();
        for pod in &expired {
            self.unbind(pod, journal);
        }
        expired
    }
}
