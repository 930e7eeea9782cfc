//! The IPAM state held by every replica, with the indexes that make its
//! decisions fast. Every index is rebuilt from the stored records alone
//! ([`State::from_records`]), never from anything remembered elsewhere.
//!
//! Every assignable address of a subnet is in exactly one place: the
//! subnet's free list, a pool's free list, a reservation, held by an
//! attachment, or bound to a pod name and idle. Mutations move addresses
//! between these places, keep the counters, and journal the record writes
//! they imply; the storage layer commits the journal atomically with the
//! last-applied log id.
//!
//! Its rooms: this file holds the state, its indexes and the moves between
//! them, with the reads; [`apply`] takes each command to its decision;
//! `alloc` is the allocator (ADD's choice of address, DEL, GC); `admin`
//! the operator's commands (subnets, pools, reservations, bindings,
//! restore); `audit` the digest and the self-check.

mod admin;
mod alloc;
pub mod apply;
mod audit;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound::{Excluded, Included, Unbounded};

use ipkeep_api::message::{IpEntry, IpListRequest, IpPage};
use ipkeep_api::model::{
    Allocation, AttachmentKey, Binding, HistoryEntry, Pool, PoolInfo, ReleaseReason, Reservation,
    Subnet, SubnetInfo,
};
use ipkeep_api::Mac;

use crate::held::{FirstOf, Held, HeldRef, LookupKey};
use crate::history::HistoryLog;
use crate::pool::PoolState;
use crate::records::{self, Change, Record, RecordError};
use crate::subnet::{addr_to_u128, SubnetState};

/// Most entries one page of `ip list` carries.
pub const MAX_PAGE: u32 = 10_000;

/// How long a DEL fences off ADDs of the same attachment issued before it,
/// counted on the leader's clock from when the DEL was applied. A stale ADD
/// is late by at most a write timeout (seconds); a minute is ample, and
/// keeps the tombstones few.
pub const TOMBSTONE_WINDOW_MS: u64 = 60_000;

/// A recent DEL of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tombstone {
    /// When the DEL's caller issued it: ADDs issued before are void.
    issued_us: u64,
    /// The leader's stamp when the DEL was applied: the tombstone's age.
    buried_ms: u64,
}

/// A pod name: (namespace, name). Sticky bindings are keyed by it.
pub type PodName = (String, String);

/// How an allocation got one of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The pod's sticky binding.
    Binding,
    /// The next free address after the cursor (moves the cursor).
    Next,
    /// An address asked for explicitly (leaves the cursor).
    Exact,
}

/// A live allocation's record, rebuilt from its packed block.
fn allocation_record(held: &Held) -> Record {
    Record::Allocation(held.to_allocation())
}

/// Every record of a state as it was when [`State::capture`] took it.
pub struct CapturedRecords {
    before: Vec<Record>,
    allocations: Vec<Held>,
    after: Vec<Record>,
}

impl CapturedRecords {
    /// The records, in the order [`State::records`] gives them.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.before
            .iter()
            .cloned()
            .chain(self.allocations.iter().map(allocation_record))
            .chain(self.after.iter().cloned())
    }
}

#[derive(Debug, Clone, Default)]
pub struct State {
    subnets: BTreeMap<String, SubnetState>,
    pools: BTreeMap<String, PoolState>,
    /// Live allocations, packed (see [`crate::held`]), by attachment key.
    allocations: BTreeSet<Held>,
    /// address -> the allocation holding it (invariant 1: at most one); the
    /// same block as in `allocations`.
    holders: BTreeMap<IpAddr, Held>,
    bindings: BTreeMap<PodName, Binding>,
    /// address -> the pod name it is bound to.
    bound: BTreeMap<IpAddr, PodName>,
    /// first address -> reservation.
    reservations: BTreeMap<IpAddr, Reservation>,
    /// (subnet, namespace) -> addresses held or bound by the namespace's pods.
    usage: BTreeMap<(String, String), u64>,
    history: HistoryLog,
    /// attachment -> its latest DEL (or GC), for a minute.
    tombstones: BTreeMap<AttachmentKey, Tombstone>,
    /// (buried_ms, attachment), oldest first, for pruning.
    tombstones_by_time: BTreeSet<(u64, AttachmentKey)>,
}

fn inconsistent(key: impl Into<String>, reason: impl Into<String>) -> RecordError {
    RecordError::Inconsistent {
        key: key.into(),
        reason: reason.into(),
    }
}

fn namespace_of(allocation_pod: &ipkeep_api::model::PodRef) -> String {
    allocation_pod.namespace.clone().unwrap_or_default()
}

impl State {
    /// No subnet, hence nothing at all (every other object lives in one),
    /// except tombstones and history, which a backup may replace.
    pub fn is_empty(&self) -> bool {
        self.subnets.is_empty() && self.allocations.is_empty() && self.bindings.is_empty()
    }

    /// Rebuilds the state and all its indexes from stored records, refusing
    /// records that contradict each other (an address in two places, an
    /// object in a subnet that does not exist): those mean the store is
    /// damaged, and serving from it could hand out an address twice.
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Result<State, RecordError> {
        let mut builder = StateBuilder::default();
        for record in records {
            builder.push(record);
        }
        builder.finish()
    }

    /// Every record of the state, the inverse of [`State::from_records`].
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.records_before_allocations()
            .chain(self.allocation_records())
            .chain(self.records_after_allocations())
    }

    /// The state's records, taken quickly enough to hold a lock for: the
    /// live allocations, nearly all of a large state, as their shared
    /// blocks (a pointer each), the rest as records. A snapshot build
    /// takes this under the state machine's lock and encodes it after
    /// releasing the lock, so writes wait for the copy, not the encoding.
    pub fn capture(&self) -> CapturedRecords {
        CapturedRecords {
            before: self.records_before_allocations().collect(),
            allocations: self.allocations.iter().cloned().collect(),
            after: self.records_after_allocations().collect(),
        }
    }

    fn allocation_records(&self) -> impl Iterator<Item = Record> + '_ {
        self.allocations.iter().map(allocation_record)
    }

    fn records_before_allocations(&self) -> impl Iterator<Item = Record> + '_ {
        let subnets = self
            .subnets
            .values()
            .map(|s| Record::Subnet(s.subnet.clone()));
        let cursors = self.subnets.values().filter_map(|s| {
            s.cursor().map(|at| Record::Cursor {
                subnet: s.name().to_owned(),
                at,
            })
        });
        let pools = self.pools.values().map(|p| Record::Pool(p.pool.clone()));
        let pool_cursors = self.pools.values().filter_map(|p| {
            p.cursor().map(|at| Record::PoolCursor {
                pool: p.name().to_owned(),
                at,
            })
        });
        let reservations = self.reservations.values().cloned().map(Record::Reservation);
        let bindings = self.bindings.values().cloned().map(Record::Binding);
        subnets
            .chain(cursors)
            .chain(pools)
            .chain(pool_cursors)
            .chain(reservations)
            .chain(bindings)
    }

    fn records_after_allocations(&self) -> impl Iterator<Item = Record> + '_ {
        self.history
            .records()
            .chain(
                self.tombstones
                    .iter()
                    .map(|(key, tombstone)| Record::Tombstone {
                        key: key.clone(),
                        issued_us: tombstone.issued_us,
                        buried_ms: tombstone.buried_ms,
                    }),
            )
    }

    pub fn record_count(&self) -> usize {
        self.subnets.len() * 2
            + self.pools.len() * 2
            + self.reservations.len()
            + self.bindings.len()
            + self.allocations.len()
            + self.history.len()
            + self.tombstones.len()
    }

    /// When the latest DEL of an attachment was issued, within the window.
    pub fn tombstone(&self, key: &AttachmentKey) -> Option<u64> {
        self.tombstones.get(key).map(|t| t.issued_us)
    }

    /// Remembers a DEL of an attachment issued at `issued_us` (the caller's
    /// clock: the fence), and forgets those buried longer ago than the
    /// window. The age is measured on the leader's stamp `at_ms` alone, so
    /// a node whose clock runs fast cannot age every other node's fences.
    pub(crate) fn bury(
        &mut self,
        key: AttachmentKey,
        issued_us: u64,
        at_ms: u64,
        journal: &mut Vec<Change>,
    ) {
        let horizon = at_ms.saturating_sub(TOMBSTONE_WINDOW_MS);
        while let Some((buried_ms, old)) = self.tombstones_by_time.first().cloned() {
            if buried_ms >= horizon {
                break;
            }
            self.tombstones_by_time.remove(&(buried_ms, old.clone()));
            self.tombstones.remove(&old);
            journal.push(Change::Delete(records::tombstone_key(&old)));
        }
        match self.tombstones.get(&key) {
            Some(previous) if previous.issued_us >= issued_us => return,
            Some(previous) => {
                self.tombstones_by_time
                    .remove(&(previous.buried_ms, key.clone()));
            }
            None => {}
        }
        let tombstone = Tombstone {
            issued_us,
            buried_ms: at_ms,
        };
        self.tombstones_by_time.insert((at_ms, key.clone()));
        self.tombstones.insert(key.clone(), tombstone);
        journal.push(
            Record::Tombstone {
                key,
                issued_us,
                buried_ms: at_ms,
            }
            .to_change(),
        );
    }

    // ---- reads ------------------------------------------------------------

    pub fn subnet(&self, name: &str) -> Option<&SubnetState> {
        self.subnets.get(name)
    }

    pub fn subnets(&self) -> impl Iterator<Item = &SubnetState> {
        self.subnets.values()
    }

    /// The subnet an address belongs to.
    pub fn subnet_of(&self, addr: IpAddr) -> Option<&SubnetState> {
        self.subnets.values().find(|s| s.contains(addr))
    }

    pub fn subnet_info(&self, name: &str) -> Option<SubnetInfo> {
        self.subnets.get(name).map(|s| SubnetInfo {
            subnet: s.subnet.clone(),
            usage: s.usage(),
            by_namespace: self
                .usage
                .range((name.to_owned(), String::new())..)
                .take_while(|((sub, _), _)| sub == name)
                .filter(|(_, n)| **n > 0)
                .map(|((_, ns), n)| (ns.clone(), *n))
                .collect(),
        })
    }

    pub fn pool(&self, name: &str) -> Option<&PoolState> {
        self.pools.get(name)
    }

    pub fn pools(&self) -> impl Iterator<Item = &PoolState> {
        self.pools.values()
    }

    /// The pools of a subnet, in name order.
    pub fn pools_of<'a>(&'a self, subnet: &str) -> impl Iterator<Item = &'a PoolState> + 'a {
        let subnet = subnet.to_owned();
        self.pools.values().filter(move |p| p.pool.subnet == subnet)
    }

    pub fn pool_info(&self, name: &str) -> Option<PoolInfo> {
        self.pools.get(name).map(|p| PoolInfo {
            pool: p.pool.clone(),
            usage: p.usage(),
        })
    }

    /// The pool an address of a subnet belongs to.
    pub fn pool_containing(&self, subnet: &str, addr: IpAddr) -> Option<&PoolState> {
        self.pools_of(subnet).find(|p| p.contains(addr))
    }

    pub fn allocation(&self, key: &AttachmentKey) -> Option<Allocation> {
        self.held(key).map(|a| a.to_allocation())
    }

    /// An allocation, read in place.
    pub fn held(&self, key: &AttachmentKey) -> Option<HeldRef<'_>> {
        self.allocations.get(key as &dyn LookupKey)
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn holder(&self, addr: IpAddr) -> Option<AttachmentKey> {
        self.holders.get(&addr).map(Held::key)
    }

    pub fn binding(&self, pod: &PodName) -> Option<&Binding> {
        self.bindings.get(pod)
    }

    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values()
    }

    /// The pod name an address is bound to.
    pub fn bound_to(&self, addr: IpAddr) -> Option<&PodName> {
        self.bound.get(&addr)
    }

    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// The reservation covering an address.
    pub fn reservation_at(&self, addr: IpAddr) -> Option<&Reservation> {
        self.reservations
            .range(..=addr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.range.contains(addr))
    }

    pub fn reservation_starting(&self, start: IpAddr) -> Option<&Reservation> {
        self.reservations.get(&start)
    }

    /// Addresses held or bound by a namespace's pods in a subnet.
    pub fn usage_of(&self, subnet: &str, namespace: &str) -> u64 {
        self.usage
            .get(&(subnet.to_owned(), namespace.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn history_of(&self, addr: IpAddr) -> Vec<HistoryEntry> {
        self.history.of(addr)
    }

    /// Every allocation, in key order (a scan: for the reconciler's periodic
    /// pass and for forgetting a node, not for a plugin's request).
    pub fn allocations(&self) -> impl Iterator<Item = HeldRef<'_>> {
        self.allocations.iter()
    }

    /// The allocations of one network, found by key range, not by a scan.
    pub fn allocations_of_network<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = HeldRef<'a>> + 'a {
        self.allocations
            .range::<dyn LookupKey, _>((Included(&FirstOf(network) as &dyn LookupKey), Unbounded))
            .take_while(move |a| a.network() == network)
    }

    /// The held addresses between two addresses, lowest first, at most `limit`.
    pub fn held_between(
        &self,
        start: IpAddr,
        end: IpAddr,
        limit: usize,
    ) -> Vec<(IpAddr, AttachmentKey)> {
        self.holders
            .range(start..=end)
            .map(|(a, k)| (*a, k.key()))
            .take(limit)
            .collect()
    }

    /// The bound addresses between two addresses, lowest first, at most `limit`.
    pub fn bound_between(
        &self,
        start: IpAddr,
        end: IpAddr,
        limit: usize,
    ) -> Vec<(IpAddr, &PodName)> {
        self.bound
            .range(start..=end)
            .map(|(a, p)| (*a, p))
            .take(limit)
            .collect()
    }

    /// The held addresses of a subnet, lowest first, at most `limit`.
    pub fn held_in_subnet(&self, name: &str, limit: usize) -> Vec<IpAddr> {
        let Some(sub) = self.subnets.get(name) else {
            return vec![];
        };
        let cidr = sub.subnet.cidr;
        self.held_between(cidr.network(), cidr.broadcast(), limit)
            .into_iter()
            .map(|(a, _)| a)
            .collect()
    }

    /// One entry of `ip list`.
    pub fn ip_entry(&self, address: IpAddr) -> Option<IpEntry> {
        let a = self.holders.get(&address)?;
        Some(IpEntry {
            address,
            subnet: a.subnet_of(address).unwrap_or_default().to_owned(),
            key: a.key(),
            pod: a.pod(),
            node: a.node().to_owned(),
            since_ms: a.since_ms(),
        })
    }

    /// One page of held addresses, lowest first, filtered.
    pub fn ip_page(&self, req: &IpListRequest) -> IpPage {
        let limit = req.limit.clamp(1, MAX_PAGE) as usize;
        let (low, high) = match req.subnet.as_deref().and_then(|n| self.subnets.get(n)) {
            Some(s) => (
                Included(s.subnet.cidr.network()),
                Included(s.subnet.cidr.broadcast()),
            ),
            None if req.subnet.is_some() => {
                return IpPage {
                    entries: vec![],
                    next: None,
                }
            }
            None => (Unbounded, Unbounded),
        };
        let low = match req.after {
            Some(after) => Excluded(after),
            None => low,
        };
        let mut entries = Vec::new();
        for (address, a) in self.holders.range((low, high)) {
            if req.namespace.is_some() && a.namespace() != req.namespace.as_deref() {
                continue;
            }
            if req.node.as_ref().is_some_and(|n| n != a.node()) {
                continue;
            }
            if let Some(entry) = self.ip_entry(*address) {
                entries.push(entry);
            }
            if entries.len() == limit {
                break;
            }
        }
        let next = (entries.len() == limit).then(|| entries[limit - 1].address);
        IpPage { entries, next }
    }

    // ---- moving addresses ---------------------------------------------------

    /// Takes an address off the free list it is on (its pool's, or its
    /// subnet's); false if it was not free.
    fn take(
        &mut self,
        subnet: &str,
        addr: IpAddr,
        move_cursor: bool,
        journal: &mut Vec<Change>,
    ) -> bool {
        let pool = self
            .pool_containing(subnet, addr)
            .map(|p| p.name().to_owned());
        match pool {
            Some(pool) => {
                let p = self.pools.get_mut(&pool).expect("pool exists");
                let taken = p.take_free(addr, move_cursor);
                if taken && move_cursor {
                    journal.push(Record::PoolCursor { pool, at: addr }.to_change());
                }
                taken
            }
            None => {
                let Some(s) = self.subnets.get_mut(subnet) else {
                    return false;
                };
                let taken = s.take_free(addr, move_cursor);
                if taken && move_cursor {
                    journal.push(
                        Record::Cursor {
                            subnet: subnet.to_owned(),
                            at: addr,
                        }
                        .to_change(),
                    );
                }
                taken
            }
        }
    }

    /// Puts an address back on the free list it belongs to.
    fn give_back(&mut self, subnet: &str, addr: IpAddr) {
        let pool = self
            .pool_containing(subnet, addr)
            .map(|p| p.name().to_owned());
        match pool {
            Some(pool) => {
                self.pools
                    .get_mut(&pool)
                    .expect("pool exists")
                    .put_free(addr);
            }
            None => {
                if let Some(s) = self.subnets.get_mut(subnet) {
                    s.put_free(addr);
                }
            }
        }
    }

    fn adjust(counter: &mut u64, by: i64) {
        *counter = counter.saturating_add_signed(by);
    }

    fn count_held(&mut self, subnet: &str, addr: IpAddr, by: i64) {
        let pool = self
            .pool_containing(subnet, addr)
            .map(|p| p.name().to_owned());
        if let Some(s) = self.subnets.get_mut(subnet) {
            Self::adjust(&mut s.held, by);
        }
        if let Some(p) = pool.and_then(|p| self.pools.get_mut(&p)) {
            Self::adjust(&mut p.held, by);
        }
    }

    fn count_bound_idle(&mut self, subnet: &str, addr: IpAddr, by: i64) {
        let pool = self
            .pool_containing(subnet, addr)
            .map(|p| p.name().to_owned());
        if let Some(s) = self.subnets.get_mut(subnet) {
            Self::adjust(&mut s.bound_idle, by);
        }
        if let Some(p) = pool.and_then(|p| self.pools.get_mut(&p)) {
            Self::adjust(&mut p.bound_idle, by);
        }
    }

    fn count_usage(&mut self, subnet: &str, namespace: &str, by: i64) {
        let key = (subnet.to_owned(), namespace.to_owned());
        let counter = self.usage.entry(key.clone()).or_default();
        Self::adjust(counter, by);
        if *counter == 0 {
            self.usage.remove(&key);
        }
    }

    // ---- journaled mutations -------------------------------------------------

    pub(crate) fn insert_subnet(&mut self, subnet: Subnet, journal: &mut Vec<Change>) {
        journal.push(Record::Subnet(subnet.clone()).to_change());
        self.subnets
            .insert(subnet.name.clone(), SubnetState::new(subnet));
    }

    /// Replaces the parts of a subnet that do not move addresses (tenancy,
    /// stickiness, routes, DNS).
    pub(crate) fn replace_subnet_settings(&mut self, subnet: Subnet, journal: &mut Vec<Change>) {
        journal.push(Record::Subnet(subnet.clone()).to_change());
        if let Some(s) = self.subnets.get_mut(&subnet.name) {
            s.subnet = subnet;
        }
    }

    pub(crate) fn remove_subnet(&mut self, name: &str, journal: &mut Vec<Change>) {
        if self.subnets.remove(name).is_some() {
            journal.push(Change::Delete(records::subnet_key(name)));
            journal.push(Change::Delete(records::cursor_key(name)));
        }
    }

    /// Adds a pool whose addresses the caller has checked are free in its subnet.
    pub(crate) fn insert_pool(&mut self, pool: Pool, journal: &mut Vec<Change>) {
        let Some(sub) = self.subnets.get_mut(&pool.subnet) else {
            return;
        };
        let state = PoolState::new(pool.clone(), sub);
        for (s, e) in state.members().iter() {
            let v4 = sub.subnet.cidr.addr().is_ipv4();
            sub.take_range(
                crate::subnet::u128_to_addr(s, v4),
                crate::subnet::u128_to_addr(e, v4),
            );
        }
        sub.pooled += state.members().len();
        journal.push(Record::Pool(pool.clone()).to_change());
        self.pools.insert(pool.name.clone(), state);
    }

    /// Removes a pool none of whose addresses is held or bound.
    pub(crate) fn remove_pool(&mut self, name: &str, journal: &mut Vec<Change>) {
        let Some(pool) = self.pools.remove(name) else {
            return;
        };
        if let Some(sub) = self.subnets.get_mut(&pool.pool.subnet) {
            sub.put_set(pool.members());
            sub.pooled -= pool.members().len();
        }
        journal.push(Change::Delete(records::pool_key(name)));
        journal.push(Change::Delete(records::pool_cursor_key(name)));
    }

    /// Replaces a pool's ranges; the caller has checked the addresses that
    /// leave are free in the pool and those that join are free in the subnet.
    pub(crate) fn resize_pool(
        &mut self,
        name: &str,
        ranges: Vec<ipkeep_api::model::IpRange>,
        journal: &mut Vec<Change>,
    ) {
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let Some(sub) = self.subnets.get_mut(&pool.pool.subnet) else {
            return;
        };
        let (left, joined) = pool.resize(ranges, sub);
        sub.put_set(&left);
        let v4 = sub.subnet.cidr.addr().is_ipv4();
        for (s, e) in joined.iter() {
            sub.take_range(
                crate::subnet::u128_to_addr(s, v4),
                crate::subnet::u128_to_addr(e, v4),
            );
        }
        sub.pooled = sub.pooled - left.len() + joined.len();
        journal.push(Record::Pool(pool.pool.clone()).to_change());
    }

    /// Adds a reservation whose assignable addresses the caller has checked
    /// are free in the subnet.
    pub(crate) fn insert_reservation(
        &mut self,
        reservation: Reservation,
        journal: &mut Vec<Change>,
    ) {
        let Some(sub) = self.subnets.get_mut(&reservation.subnet) else {
            return;
        };
        let (s, e) = (
            addr_to_u128(reservation.range.start),
            addr_to_u128(reservation.range.end),
        );
        let set = sub.assignable_in(&[(s, e)]);
        sub.take_range(reservation.range.start, reservation.range.end);
        sub.reserved += set.len();
        journal.push(Record::Reservation(reservation.clone()).to_change());
        self.reservations
            .insert(reservation.range.start, reservation);
    }

    pub(crate) fn remove_reservation(
        &mut self,
        start: IpAddr,
        journal: &mut Vec<Change>,
    ) -> Option<Reservation> {
        let reservation = self.reservations.remove(&start)?;
        if let Some(sub) = self.subnets.get_mut(&reservation.subnet) {
            let set = sub.assignable_in(&[(
                addr_to_u128(reservation.range.start),
                addr_to_u128(reservation.range.end),
            )]);
            sub.put_set(&set);
            sub.reserved -= set.len();
        }
        journal.push(Change::Delete(records::reservation_key(start)));
        Some(reservation)
    }

    /// Records an allocation. `sources` says, address by address, where it
    /// comes from; the caller has checked each is available that way.
    pub(crate) fn hold(
        &mut self,
        allocation: Allocation,
        sources: &[Source],
        journal: &mut Vec<Change>,
    ) {
        let ns = namespace_of(&allocation.pod);
        let mut touched_bindings = BTreeSet::new();
        for (held, source) in allocation.addresses.iter().zip(sources) {
            match source {
                Source::Binding => {
                    if let Some(pod) = self.bound.get(&held.address).cloned() {
                        if let Some(b) = self.bindings.get_mut(&pod) {
                            b.holder = Some(allocation.key.clone());
                            touched_bindings.insert(pod);
                        }
                    }
                    self.count_bound_idle(&held.subnet, held.address, -1);
                }
                Source::Next | Source::Exact => {
                    let taken =
                        self.take(&held.subnet, held.address, *source == Source::Next, journal);
                    debug_assert!(taken, "caller checked {} is free", held.address);
                    self.count_usage(&held.subnet, &ns, 1);
                }
            }
            self.count_held(&held.subnet, held.address, 1);
        }
        for pod in touched_bindings {
            if let Some(b) = self.bindings.get(&pod) {
                journal.push(Record::Binding(b.clone()).to_change());
            }
        }
        self.insert_held(&allocation);
        journal.push(Record::Allocation(allocation).to_change());
    }

    /// Indexes an allocation whose addresses the caller has accounted for.
    fn insert_held(&mut self, allocation: &Allocation) {
        self.index_held(Held::pack(allocation));
    }

    fn index_held(&mut self, held: Held) {
        for address in held.addresses() {
            self.holders.insert(address, held.clone());
        }
        self.allocations.insert(held);
    }

    /// Removes an allocation: addresses bound to the pod's name stay bound
    /// (idle), the others go back to their free lists. Each release goes into
    /// the address's history. None if there was no such allocation.
    pub(crate) fn release(
        &mut self,
        key: &AttachmentKey,
        reason: ReleaseReason,
        at_ms: u64,
        journal: &mut Vec<Change>,
    ) -> Option<Allocation> {
        let held = self.allocations.take(key as &dyn LookupKey)?;
        let allocation = held.to_allocation();
        for a in &allocation.addresses {
            if self.holders.get(&a.address) == Some(&held) {
                self.holders.remove(&a.address);
            }
        }
        let ns = namespace_of(&allocation.pod);
        let mut touched_bindings = BTreeSet::new();
        for held in &allocation.addresses {
            self.count_held(&held.subnet, held.address, -1);
            let binding = self.bound.get(&held.address).cloned().filter(|pod| {
                self.bindings
                    .get(pod)
                    .is_some_and(|b| b.holder.as_ref() == Some(key))
            });
            match binding {
                Some(pod) => {
                    self.count_bound_idle(&held.subnet, held.address, 1);
                    touched_bindings.insert(pod);
                }
                None => {
                    self.give_back(&held.subnet, held.address);
                    self.count_usage(&held.subnet, &ns, -1);
                }
            }
            self.history.push(
                HistoryEntry {
                    address: held.address,
                    subnet: held.subnet.clone(),
                    key: key.clone(),
                    pod: allocation.pod.clone(),
                    node: allocation.node.clone(),
                    from_ms: allocation.since_ms,
                    to_ms: at_ms,
                    reason,
                },
                journal,
            );
        }
        for pod in touched_bindings {
            if let Some(b) = self.bindings.get_mut(&pod) {
                b.holder = None;
                b.last_used_ms = at_ms;
                journal.push(Record::Binding(b.clone()).to_change());
            }
        }
        journal.push(Change::Delete(records::allocation_key(key)));
        Some(allocation)
    }

    /// Binds addresses the pod holds now to its name (or adds them to its
    /// binding, for another address family).
    pub(crate) fn bind(&mut self, new: Binding, journal: &mut Vec<Change>) {
        let pod = (new.namespace.clone(), new.name.clone());
        for a in &new.addresses {
            self.bound.insert(a.address, pod.clone());
        }
        let binding = match self.bindings.get_mut(&pod) {
            Some(existing) => {
                existing.addresses.extend(new.addresses);
                existing.holder = new.holder;
                existing.last_used_ms = new.last_used_ms;
                existing
            }
            None => self.bindings.entry(pod).or_insert(new),
        };
        journal.push(Record::Binding(binding.clone()).to_change());
    }

    /// Keeps the MAC a bound pod runs with, so that it comes back with it.
    pub(crate) fn remember_mac(&mut self, pod: &PodName, mac: Mac, journal: &mut Vec<Change>) {
        if let Some(b) = self.bindings.get_mut(pod) {
            if b.mac != Some(mac) {
                b.mac = Some(mac);
                journal.push(Record::Binding(b.clone()).to_change());
            }
        }
    }

    /// Frees an idle binding: its addresses go back to their free lists.
    pub(crate) fn unbind(&mut self, pod: &PodName, journal: &mut Vec<Change>) -> Option<Binding> {
        let binding = self.bindings.remove(pod)?;
        for a in &binding.addresses {
            self.bound.remove(&a.address);
            self.give_back(&a.subnet, a.address);
            self.count_bound_idle(&a.subnet, a.address, -1);
            self.count_usage(&a.subnet, &binding.namespace, -1);
        }
        journal.push(Change::Delete(records::binding_key(&pod.0, &pod.1)));
        Some(binding)
    }
}

/// Gathers stored records into a state one at a time, so that a restart or
/// a snapshot install holds each live allocation only in its packed form,
/// never a whole store's worth of decoded records. Objects that depend on
/// others (cursors, pools, reservations, bindings, allocations) wait until
/// [`StateBuilder::finish`], when every subnet is known, whatever order the
/// records came in.
#[derive(Default)]
pub struct StateBuilder {
    state: State,
    cursors: Vec<(String, IpAddr)>,
    pools: Vec<Pool>,
    pool_cursors: Vec<(String, IpAddr)>,
    reservations: Vec<Reservation>,
    bindings: Vec<Binding>,
    allocations: Vec<Held>,
}

impl StateBuilder {
    pub fn push(&mut self, record: Record) {
        let state = &mut self.state;
        match record {
            Record::Subnet(s) => {
                state.subnets.insert(s.name.clone(), SubnetState::new(s));
            }
            Record::Cursor { subnet, at } => self.cursors.push((subnet, at)),
            Record::Pool(p) => self.pools.push(p),
            Record::PoolCursor { pool, at } => self.pool_cursors.push((pool, at)),
            Record::Reservation(r) => self.reservations.push(r),
            Record::Binding(b) => self.bindings.push(b),
            // Packed on arrival: a restart holds a million of these at
            // once, before the bindings they depend on are in.
            Record::Allocation(a) => self.allocations.push(Held::pack(&a)),
            Record::History { seq, entry } => state.history.insert(seq, entry),
            Record::Tombstone {
                key,
                issued_us,
                buried_ms,
            } => {
                state.tombstones_by_time.insert((buried_ms, key.clone()));
                state.tombstones.insert(
                    key,
                    Tombstone {
                        issued_us,
                        buried_ms,
                    },
                );
            }
        }
    }

    /// The state, its indexes built, or the first contradiction found.
    pub fn finish(self) -> Result<State, RecordError> {
        let StateBuilder {
            mut state,
            cursors,
            pools,
            pool_cursors,
            reservations,
            bindings,
            mut allocations,
        } = self;
        for (subnet, at) in cursors {
            state
                .subnets
                .get_mut(&subnet)
                .ok_or_else(|| inconsistent(format!("c/{subnet}"), "cursor of an unknown subnet"))?
                .set_cursor(Some(at));
        }
        for pool in pools {
            let key = format!("p/{}", pool.name);
            let sub = state.subnets.get(&pool.subnet).ok_or_else(|| {
                inconsistent(&key, format!("pool in unknown subnet {}", pool.subnet))
            })?;
            let members = crate::pool::addresses_of(&pool, sub);
            let v4 = sub.subnet.cidr.addr().is_ipv4();
            let all_free = members.iter().all(|(s, e)| {
                sub.free_in(
                    crate::subnet::u128_to_addr(s, v4),
                    crate::subnet::u128_to_addr(e, v4),
                ) == e - s + 1
            });
            if !all_free {
                return Err(inconsistent(
                    &key,
                    "its addresses are not all free in the subnet",
                ));
            }
            state.insert_pool(pool, &mut Vec::new());
        }
        for (pool, at) in pool_cursors {
            state
                .pools
                .get_mut(&pool)
                .ok_or_else(|| inconsistent(format!("k/{pool}"), "cursor of an unknown pool"))?
                .set_cursor(Some(at));
        }
        for r in reservations {
            if !state.subnets.contains_key(&r.subnet) {
                return Err(inconsistent(
                    format!("r/{}", r.range),
                    format!("reservation in unknown subnet {}", r.subnet),
                ));
            }
            state.insert_reservation(r, &mut Vec::new());
        }
        for b in bindings {
            let key = format!("b/{}/{}", b.namespace, b.name);
            for a in &b.addresses {
                if !state.subnets.contains_key(&a.subnet)
                    || !state.take(&a.subnet, a.address, false, &mut Vec::new())
                {
                    return Err(inconsistent(
                        &key,
                        format!("binds {} which is not free in {}", a.address, a.subnet),
                    ));
                }
                state
                    .bound
                    .insert(a.address, (b.namespace.clone(), b.name.clone()));
                state.count_bound_idle(&a.subnet, a.address, 1);
                *state
                    .usage
                    .entry((a.subnet.clone(), b.namespace.clone()))
                    .or_default() += 1;
            }
            state
                .bindings
                .insert((b.namespace.clone(), b.name.clone()), b);
        }
        // A million allocations at a restart: each is checked and counted
        // in place in its packed block, and the two indexes are built at
        // the end from sorted runs instead of a million inserts each.
        let mut holders: Vec<(IpAddr, Held)> = Vec::with_capacity(allocations.len());
        let mut usage: HashMap<(&str, &str), u64> = HashMap::new();
        for packed in &allocations {
            let key = || packed.key().to_string();
            let ns = packed.namespace().unwrap_or_default();
            for (subnet, address) in packed.subnet_addresses() {
                if !state.subnets.contains_key(subnet) {
                    return Err(inconsistent(
                        key(),
                        format!("holds {address} in unknown subnet {subnet}"),
                    ));
                }
                let from_binding = state
                    .bound
                    .get(&address)
                    .and_then(|pod| state.bindings.get(pod))
                    .and_then(|b| b.holder.as_ref())
                    .is_some_and(|holder| *holder == packed.key());
                if from_binding {
                    state.count_bound_idle(subnet, address, -1);
                } else {
                    if !state.take(subnet, address, false, &mut Vec::new()) {
                        return Err(inconsistent(
                            key(),
                            format!(
                                "holds {address} which is not assignable in {subnet} or is held twice"
                            ),
                        ));
                    }
                    *usage.entry((subnet, ns)).or_default() += 1;
                }
                state.count_held(subnet, address, 1);
                holders.push((address, packed.clone()));
            }
        }
        // An address held twice is refused by `take` above, except one
        // listed twice by the allocation its binding names.
        holders.sort_unstable_by_key(|(address, _)| *address);
        if let Some(twice) = holders.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(inconsistent(
                twice[1].1.key().to_string(),
                format!("holds {} which is held twice", twice[1].0),
            ));
        }
        state.holders = holders.into_iter().collect();
        for ((subnet, ns), count) in usage {
            *state
                .usage
                .entry((subnet.to_owned(), ns.to_owned()))
                .or_default() += count;
        }
        // Read from a store they arrive in key order, so this sort only
        // confirms it; the same attachment twice means a damaged store.
        allocations.sort_unstable();
        if let Some(twice) = allocations.windows(2).find(|w| w[0] == w[1]) {
            return Err(inconsistent(
                twice[1].key().to_string(),
                "the same attachment is stored twice",
            ));
        }
        state.allocations = allocations.into_iter().collect();
        for ((ns, name), b) in &state.bindings {
            if let Some(holder) = &b.holder {
                let holds_all = state.held(holder).is_some_and(|a| {
                    b.addresses
                        .iter()
                        .all(|x| a.addresses().any(|y| y == x.address))
                });
                if !holds_all {
                    return Err(inconsistent(
                        format!("b/{ns}/{name}"),
                        format!("names holder {holder}, which does not hold its addresses"),
                    ));
                }
            }
        }
        Ok(state)
    }
}
