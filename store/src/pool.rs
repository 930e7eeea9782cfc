//! Pools: named sets of a subnet's addresses kept for the pods they select.

use std::net::IpAddr;

use ipkeep_api::message::PoolRequest;
use ipkeep_api::model::{Pool, PoolUsage};
use ipkeep_api::names::check_object_name;
use ipkeep_api::ApiError;

use crate::free_set::FreeSet;
use crate::subnet::{addr_to_u128, check_namespace, check_sticky, u128_to_addr, SubnetState};

/// Checks a pool request against its subnet (the rules that need no other
/// state) and returns the pool with its ranges as given.
pub fn settle(req: &PoolRequest, subnet: &SubnetState) -> Result<Pool, ApiError> {
    check_object_name(&req.name).map_err(|r| ApiError::invalid("name", r))?;
    if req.addresses.is_empty() {
        return Err(ApiError::invalid(
            "addresses",
            "a pool needs at least one address",
        ));
    }
    let cidr = subnet.subnet.cidr;
    for range in &req.addresses {
        if !cidr.contains(&range.start) || !cidr.contains(&range.end) {
            return Err(ApiError::invalid(
                "addresses",
                format!("{range} is not inside subnet {} ({cidr})", subnet.name()),
            ));
        }
    }
    let selector = &req.selector;
    if selector.namespace.is_none() && selector.pods.is_empty() {
        return Err(ApiError::invalid(
            "pods",
            "a pool must select pods: give a namespace, pod names or PREFIX*, or both",
        ));
    }
    if let Some(ns) = &selector.namespace {
        check_namespace("namespace", ns)?;
        if !subnet.subnet.tenancy.allows(Some(ns)) {
            return Err(ApiError::invalid(
                "namespace",
                format!("namespace {ns} may not use subnet {}", subnet.name()),
            ));
        }
    }
    check_sticky("sticky", req.sticky)?;
    Ok(Pool {
        name: req.name.clone(),
        subnet: req.subnet.clone(),
        addresses: req.addresses.clone(),
        selector: req.selector.clone(),
        sticky: req.sticky,
    })
}

/// The assignable addresses of a pool's ranges in its subnet.
pub fn addresses_of(pool: &Pool, subnet: &SubnetState) -> FreeSet {
    let ranges: Vec<(u128, u128)> = pool
        .addresses
        .iter()
        .map(|r| (addr_to_u128(r.start), addr_to_u128(r.end)))
        .collect();
    subnet.assignable_in(&ranges)
}

#[derive(Debug, Clone)]
pub struct PoolState {
    pub pool: Pool,
    /// Every assignable address of the pool, free or not.
    members: FreeSet,
    free: FreeSet,
    cursor: Option<u128>,
    v4: bool,
    pub(crate) held: u64,
    pub(crate) bound_idle: u64,
}

impl PoolState {
    /// A pool with all its addresses free.
    pub fn new(pool: Pool, subnet: &SubnetState) -> PoolState {
        let members = addresses_of(&pool, subnet);
        PoolState {
            free: members.clone(),
            members,
            cursor: None,
            v4: subnet.subnet.cidr.addr().is_ipv4(),
            pool,
            held: 0,
            bound_idle: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.pool.name
    }

    pub fn members(&self) -> &FreeSet {
        &self.members
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.v4 && self.members.contains(addr_to_u128(addr))
    }

    pub fn is_free(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.v4 && self.free.contains(addr_to_u128(addr))
    }

    pub fn peek_next(&self) -> Option<IpAddr> {
        self.free
            .next_after(self.cursor)
            .map(|v| u128_to_addr(v, self.v4))
    }

    pub fn take_free(&mut self, addr: IpAddr, move_cursor: bool) -> bool {
        if !self.contains(addr) || !self.free.take(addr_to_u128(addr)) {
            return false;
        }
        if move_cursor {
            self.cursor = Some(addr_to_u128(addr));
        }
        true
    }

    pub fn put_free(&mut self, addr: IpAddr) -> bool {
        self.contains(addr) && self.free.put(addr_to_u128(addr))
    }

    pub fn cursor(&self) -> Option<IpAddr> {
        self.cursor.map(|v| u128_to_addr(v, self.v4))
    }

    pub fn set_cursor(&mut self, cursor: Option<IpAddr>) {
        self.cursor = cursor.map(addr_to_u128);
    }

    /// Replaces the pool's ranges. The caller has checked that every address
    /// leaving the pool is free in it and every address joining is free in
    /// the subnet. Returns (left, joined) address sets.
    pub fn resize(
        &mut self,
        ranges: Vec<ipkeep_api::model::IpRange>,
        subnet: &SubnetState,
    ) -> (FreeSet, FreeSet) {
        let mut next = self.pool.clone();
        next.addresses = ranges;
        let new_members = addresses_of(&next, subnet);
        let mut left = self.members.clone();
        for (s, e) in new_members.iter() {
            left.remove_range(s, e);
        }
        let mut joined = new_members.clone();
        for (s, e) in self.members.iter() {
            joined.remove_range(s, e);
        }
        for (s, e) in left.iter() {
            self.free.remove_range(s, e);
        }
        for (s, e) in joined.iter() {
            self.free.insert_range(s, e);
        }
        self.members = new_members;
        self.pool = next;
        (left, joined)
    }

    pub fn usage(&self) -> PoolUsage {
        PoolUsage {
            size: self.members.len(),
            held: self.held,
            bound_idle: self.bound_idle,
            free: self.free.len(),
        }
    }
}
