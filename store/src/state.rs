//! The IPAM state held by every replica, with the indexes that make its
//! decisions fast. Every index is rebuilt from the stored records alone
//! ([`State::from_records`]), never from anything remembered elsewhere.
//!
//! Mutations are journaled: each one appends the record writes it implies to
//! a change list, which the storage layer commits atomically with the
//! last-applied log id.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound::{Excluded, Included, Unbounded};

use ipkeep_api::message::{IpEntry, IpListRequest, IpPage};
use ipkeep_api::model::{Allocation, AttachmentKey, Subnet, SubnetInfo};

use crate::records::{self, Change, Record, RecordError};
use crate::subnet::SubnetState;

/// Most entries one page of `ip list` carries.
pub const MAX_PAGE: u32 = 10_000;

#[derive(Debug, Clone, Default)]
pub struct State {
    subnets: BTreeMap<String, SubnetState>,
    allocations: BTreeMap<AttachmentKey, Allocation>,
    /// address -> the attachment holding it (invariant 1: at most one).
    holders: BTreeMap<IpAddr, AttachmentKey>,
}

impl State {
    /// Rebuilds the state and all its indexes from stored records, refusing
    /// records that contradict each other (an address held twice, an
    /// allocation in a subnet that does not exist): those mean the store is
    /// damaged, and serving from it could hand out an address twice.
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Result<State, RecordError> {
        let mut state = State::default();
        let mut cursors = Vec::new();
        let mut allocations = Vec::new();
        for record in records {
            match record {
                Record::Subnet(s) => {
                    state.subnets.insert(s.name.clone(), SubnetState::new(s));
                }
                Record::Cursor { subnet, at } => cursors.push((subnet, at)),
                Record::Allocation(a) => allocations.push(a),
            }
        }
        for (subnet, at) in cursors {
            let key = String::from_utf8_lossy(&records::cursor_key(&subnet)).into_owned();
            let sub = state
                .subnets
                .get_mut(&subnet)
                .ok_or_else(|| RecordError::Inconsistent {
                    key: key.clone(),
                    reason: format!("cursor of unknown subnet {subnet}"),
                })?;
            sub.set_cursor(Some(at));
        }
        for allocation in allocations {
            let key = allocation.key.to_string();
            for held in &allocation.addresses {
                let sub = state.subnets.get_mut(&held.subnet).ok_or_else(|| {
                    RecordError::Inconsistent {
                        key: key.clone(),
                        reason: format!("holds {} in unknown subnet {}", held.address, held.subnet),
                    }
                })?;
                if !sub.mark_held(held.address) {
                    return Err(RecordError::Inconsistent {
                        key: key.clone(),
                        reason: format!(
                            "holds {} which is not assignable in {} or is held twice",
                            held.address, held.subnet
                        ),
                    });
                }
                state.holders.insert(held.address, allocation.key.clone());
            }
            state.allocations.insert(allocation.key.clone(), allocation);
        }
        Ok(state)
    }

    /// Every record of the state, the inverse of [`State::from_records`].
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
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
        let allocations = self.allocations.values().cloned().map(Record::Allocation);
        subnets.chain(cursors).chain(allocations)
    }

    pub fn record_count(&self) -> usize {
        self.subnets.len() * 2 + self.allocations.len()
    }

    pub fn subnet(&self, name: &str) -> Option<&SubnetState> {
        self.subnets.get(name)
    }

    pub fn subnets(&self) -> impl Iterator<Item = &SubnetState> {
        self.subnets.values()
    }

    pub fn subnet_info(&self, name: &str) -> Option<SubnetInfo> {
        self.subnets.get(name).map(|s| SubnetInfo {
            subnet: s.subnet.clone(),
            usage: s.usage(),
        })
    }

    pub fn allocation(&self, key: &AttachmentKey) -> Option<&Allocation> {
        self.allocations.get(key)
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn holder(&self, addr: IpAddr) -> Option<&AttachmentKey> {
        self.holders.get(&addr)
    }

    /// The allocations of one network, found by key range, not by a scan.
    pub fn allocations_of_network<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = &'a Allocation> + 'a {
        let start = AttachmentKey {
            network: network.to_owned(),
            container_id: String::new(),
            ifname: String::new(),
        };
        self.allocations
            .range(start..)
            .take_while(move |(k, _)| k.network == network)
            .map(|(_, a)| a)
    }

    /// The addresses held in a subnet, lowest first, at most `limit`.
    pub fn held_in_subnet(&self, name: &str, limit: usize) -> Vec<IpAddr> {
        let Some(sub) = self.subnets.get(name) else {
            return vec![];
        };
        let cidr = sub.subnet.cidr;
        self.holders
            .range(cidr.network()..=cidr.broadcast())
            .map(|(a, _)| *a)
            .take(limit)
            .collect()
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
        for (address, key) in self.holders.range((low, high)) {
            let Some(a) = self.allocations.get(key) else {
                continue;
            };
            if req.namespace.is_some() && a.pod.namespace != req.namespace {
                continue;
            }
            if req.node.as_ref().is_some_and(|n| *n != a.node) {
                continue;
            }
            let subnet = a
                .addresses
                .iter()
                .find(|h| h.address == *address)
                .map(|h| h.subnet.clone())
                .unwrap_or_default();
            entries.push(IpEntry {
                address: *address,
                subnet,
                key: key.clone(),
                pod: a.pod.clone(),
                node: a.node.clone(),
                since_ms: a.since_ms,
            });
            if entries.len() == limit {
                break;
            }
        }
        let next = (entries.len() == limit).then(|| entries[limit - 1].address);
        IpPage { entries, next }
    }

    pub(crate) fn insert_subnet(&mut self, subnet: Subnet, journal: &mut Vec<Change>) {
        journal.push(Record::Subnet(subnet.clone()).to_change());
        self.subnets
            .insert(subnet.name.clone(), SubnetState::new(subnet));
    }

    pub(crate) fn remove_subnet(&mut self, name: &str, journal: &mut Vec<Change>) {
        if self.subnets.remove(name).is_some() {
            journal.push(Change::Delete(records::subnet_key(name)));
            journal.push(Change::Delete(records::cursor_key(name)));
        }
    }

    /// Records an allocation whose addresses the caller has checked are free,
    /// moving each subnet's cursor to the address it gave.
    pub(crate) fn hold(&mut self, allocation: Allocation, journal: &mut Vec<Change>) {
        for held in &allocation.addresses {
            let sub = self
                .subnets
                .get_mut(&held.subnet)
                .expect("caller checked the subnet exists");
            let taken = sub.take(held.address);
            debug_assert!(taken, "caller checked {} is free", held.address);
            self.holders.insert(held.address, allocation.key.clone());
            journal.push(
                Record::Cursor {
                    subnet: held.subnet.clone(),
                    at: held.address,
                }
                .to_change(),
            );
        }
        journal.push(Record::Allocation(allocation.clone()).to_change());
        self.allocations.insert(allocation.key.clone(), allocation);
    }

    /// Removes an allocation and frees its addresses; None if there was none.
    pub(crate) fn release(
        &mut self,
        key: &AttachmentKey,
        journal: &mut Vec<Change>,
    ) -> Option<Allocation> {
        let allocation = self.allocations.remove(key)?;
        for held in &allocation.addresses {
            if let Some(sub) = self.subnets.get_mut(&held.subnet) {
                sub.release(held.address);
            }
            if self.holders.get(&held.address) == Some(key) {
                self.holders.remove(&held.address);
            }
        }
        journal.push(Change::Delete(records::allocation_key(key)));
        Some(allocation)
    }
}
