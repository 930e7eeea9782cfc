//! The state machine's decisions: how each command changes the state.
//!
//! Every function here is deterministic: same state and same command, same
//! answer and same changes, on every replica. A refused command changes
//! nothing (invariant 6: a failed ADD leaves nothing behind).

use std::collections::BTreeSet;

use ipkeep_api::message::{AddRequest, AddResult, CheckRequest, DelResult, GcResult, IpAssignment};
use ipkeep_api::model::{AllocatedAddress, Allocation, AttachmentKey, Dns, SubnetSpec};
use ipkeep_api::{code, ApiError};
use ipnet::IpNet;

use crate::command::{Command, Reply};
use crate::records::Change;
use crate::state::State;
use crate::subnet::settle;

/// How many held addresses a refused subnet delete names.
const NAMED_HOLDERS: usize = 10;

impl State {
    /// Applies one command, appending the writes it implies to `journal`.
    pub fn apply(&mut self, command: &Command, journal: &mut Vec<Change>) -> Reply {
        let outcome = match command {
            Command::Add {
                request,
                node,
                at_ms,
            } => self.add(request, node, *at_ms, journal).map(Reply::Added),
            Command::Del { key } => Ok(Reply::Deleted(self.del(key, journal))),
            Command::Gc {
                network,
                node,
                valid,
            } => Ok(Reply::Collected(self.gc(network, node, valid, journal))),
            Command::CreateSubnet { spec } => self.create_subnet(spec, journal),
            Command::DeleteSubnet { name } => self.delete_subnet(name, journal),
        };
        outcome.unwrap_or_else(Reply::Failed)
    }

    /// The ADD result of an existing allocation, from its subnets as they are now.
    pub fn add_result(&self, allocation: &Allocation) -> AddResult {
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        let mut dns = Dns::default();
        for held in &allocation.addresses {
            let Some(sub) = self.subnet(&held.subnet) else {
                continue;
            };
            let prefix = sub.subnet.cidr.prefix_len();
            ips.push(IpAssignment {
                subnet: held.subnet.clone(),
                address: IpNet::new(held.address, prefix).expect("prefix of the subnet's own CIDR"),
                gateway: sub.subnet.gateway,
            });
            for route in &sub.subnet.routes {
                if !routes.contains(route) {
                    routes.push(route.clone());
                }
            }
            dns.merge(&sub.subnet.dns);
        }
        AddResult { ips, routes, dns }
    }

    fn add(
        &mut self,
        request: &AddRequest,
        node: &str,
        at_ms: u64,
        journal: &mut Vec<Change>,
    ) -> Result<AddResult, ApiError> {
        // Invariant 3: a retried ADD of the same attachment gets the same answer.
        if let Some(existing) = self.allocation(&request.key) {
            return Ok(self.add_result(existing));
        }
        if request.subnets.is_empty() || request.subnets.iter().any(|set| set.is_empty()) {
            return Err(ApiError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "ipam: no subnet to allocate from",
            ));
        }
        // Choose one address per set before taking any, so that dual stack is
        // all or nothing.
        let mut chosen: Vec<AllocatedAddress> = Vec::new();
        for set in &request.subnets {
            chosen.push(self.choose_in_set(set)?);
        }
        let mut families = BTreeSet::new();
        for held in &chosen {
            if !families.insert(held.address.is_ipv4()) {
                return Err(ApiError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    format!(
                        "ipam.subnets: more than one {} subnet ({}); list at most one IPv4 and one IPv6 subnet",
                        if held.address.is_ipv4() { "IPv4" } else { "IPv6" },
                        chosen.iter().map(|c| c.subnet.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let allocation = Allocation {
            key: request.key.clone(),
            addresses: chosen,
            pod: request.pod.clone(),
            node: node.to_owned(),
            netns: request.netns.clone(),
            since_ms: at_ms,
        };
        let result = self.add_result(&allocation);
        self.hold(allocation, journal);
        Ok(result)
    }

    /// The next free address of the first subnet of `set` that has one.
    fn choose_in_set(&self, set: &[String]) -> Result<AllocatedAddress, ApiError> {
        let mut unknown = Vec::new();
        let mut full = Vec::new();
        for name in set {
            match self.subnet(name) {
                None => unknown.push(name.as_str()),
                Some(sub) => match sub.peek_next() {
                    Some(address) => {
                        return Ok(AllocatedAddress {
                            subnet: name.clone(),
                            address,
                        })
                    }
                    None => full.push(name.as_str()),
                },
            }
        }
        if full.is_empty() {
            return Err(ApiError::new(
                code::UNKNOWN_SUBNET,
                "unknown subnet",
                format!(
                    "ipam.subnet: no subnet named {} exists; create it with `ipkeepctl subnet create`",
                    unknown.join(", ")
                ),
            ));
        }
        let mut details = format!("no free address left in subnet {}", full.join(", "));
        if !unknown.is_empty() {
            details.push_str(&format!(
                " (and no subnet named {} exists)",
                unknown.join(", ")
            ));
        }
        Err(ApiError::new(code::EXHAUSTED, "subnet exhausted", details))
    }

    fn del(&mut self, key: &AttachmentKey, journal: &mut Vec<Change>) -> DelResult {
        // Invariant 3: DEL of something already gone succeeds and does nothing.
        let released = self
            .release(key, journal)
            .map(|a| a.addresses.iter().map(|h| h.address).collect())
            .unwrap_or_default();
        DelResult { released }
    }

    fn gc(
        &mut self,
        network: &str,
        node: &str,
        valid: &[(String, String)],
        journal: &mut Vec<Change>,
    ) -> GcResult {
        let valid: BTreeSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        let stale: Vec<AttachmentKey> = self
            .allocations_of_network(network)
            .filter(|a| a.node == node)
            .filter(|a| !valid.contains(&(a.key.container_id.as_str(), a.key.ifname.as_str())))
            .map(|a| a.key.clone())
            .collect();
        let mut released = Vec::new();
        for key in stale {
            if let Some(a) = self.release(&key, journal) {
                released.push((key, a.addresses.iter().map(|h| h.address).collect()));
            }
        }
        GcResult { released }
    }

    fn create_subnet(
        &mut self,
        spec: &SubnetSpec,
        journal: &mut Vec<Change>,
    ) -> Result<Reply, ApiError> {
        let subnet = settle(spec)?;
        if let Some(existing) = self.subnet(&subnet.name) {
            // Creating the same subnet twice is a no-op, so that a retried
            // create (or a bootstrap that restarts) succeeds.
            if existing.subnet == subnet {
                return Ok(Reply::SubnetCreated(
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
        Ok(Reply::SubnetCreated(
            self.subnet_info(&name).expect("just inserted"),
        ))
    }

    fn delete_subnet(&mut self, name: &str, journal: &mut Vec<Change>) -> Result<Reply, ApiError> {
        let Some(sub) = self.subnet(name) else {
            return Err(ApiError::not_found(format!("no subnet named {name}")));
        };
        let held = sub.usage().held;
        if held > 0 {
            let named = self.held_in_subnet(name, NAMED_HOLDERS);
            let list: Vec<String> = named
                .iter()
                .map(|a| match self.holder(*a) {
                    Some(k) => format!("{a} ({k})"),
                    None => a.to_string(),
                })
                .collect();
            let more = if held as usize > named.len() {
                format!(" and {} more", held as usize - named.len())
            } else {
                String::new()
            };
            return Err(ApiError::conflict(format!(
                "subnet {name} still has {held} address(es) held: {}{more}; release them (CNI DEL) first",
                list.join(", ")
            )));
        }
        self.remove_subnet(name, journal);
        Ok(Reply::SubnetDeleted)
    }

    /// CHECK: the attachment is held, and holds every address the runtime expects.
    pub fn check(&self, request: &CheckRequest) -> Result<(), ApiError> {
        let Some(allocation) = self.allocation(&request.key) else {
            return Err(ApiError::new(
                code::CHECK_FAILED,
                "attachment not found",
                format!("ipkeep holds no address for {}", request.key),
            ));
        };
        for expected in &request.expect {
            if !allocation.addresses.iter().any(|h| h.address == *expected) {
                let held: Vec<String> = allocation
                    .addresses
                    .iter()
                    .map(|h| h.address.to_string())
                    .collect();
                return Err(ApiError::new(
                    code::CHECK_FAILED,
                    "address mismatch",
                    format!(
                        "prevResult lists {expected} for {} but ipkeep holds {}",
                        request.key,
                        held.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
