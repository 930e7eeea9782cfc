//! The state machine's decisions: how each command changes the state.
//!
//! Every function here is deterministic: same state and same command, same
//! answer and same changes, on every replica. A refused command changes
//! nothing (invariant 6: a failed ADD leaves nothing behind).

use ipkeep_api::code;
use ipkeep_api::message::{AddResult, CheckRequest, IpAssignment};
use ipkeep_api::model::{Allocation, Dns};
use ipkeep_api::ApiError;
use ipnet::IpNet;

use crate::command::{Command, Reply};
use crate::records::Change;
use crate::state::State;

impl State {
    /// Applies one command, appending the writes it implies to `journal`.
    pub fn apply(&mut self, command: &Command, journal: &mut Vec<Change>) -> Reply {
        let outcome = match command {
            Command::Add {
                request,
                node,
                at_ms,
                issued_us,
            } => self
                .add(request, node, *at_ms, *issued_us, journal)
                .map(Reply::Added),
            Command::Del {
                key,
                at_ms,
                issued_us,
            } => Ok(Reply::Deleted(self.del(key, *at_ms, *issued_us, journal))),
            Command::Gc {
                network,
                node,
                valid,
                at_ms,
                issued_us,
            } => Ok(Reply::Collected(
                self.gc(network, node, valid, *at_ms, *issued_us, journal),
            )),
            Command::CreateSubnet { spec } => self.create_subnet(spec, journal),
            Command::DeleteSubnet { name } => self.delete_subnet(name, journal),
            Command::UpdateSubnet { name, update } => self.update_subnet(name, update, journal),
            Command::CreatePool { request } => self.create_pool(request, journal),
            Command::DeletePool { name } => self.delete_pool(name, journal),
            Command::ResizePool { name, addresses } => {
                self.resize_pool_checked(name, addresses, journal)
            }
            Command::Reserve { range, note, at_ms } => self.reserve(range, note, *at_ms, journal),
            Command::Unreserve { range } => self.unreserve(range, journal),
            Command::ReleaseBinding { namespace, name } => {
                self.release_binding(namespace, name, journal)
            }
            Command::Restore { records } => self.restore(records, journal),
            Command::Reclaim {
                attachments,
                at_ms,
                issued_us,
            } => Ok(Reply::Collected(self.reclaim(
                attachments,
                *at_ms,
                *issued_us,
                journal,
            ))),
            Command::ForgetNode {
                node,
                at_ms,
                issued_us,
            } => Ok(Reply::Collected(
                self.forget_node(node, *at_ms, *issued_us, journal),
            )),
            Command::ExpireBindings { at_ms } => {
                Ok(Reply::Expired(self.expire_bindings(*at_ms, journal)))
            }
            Command::Batch(commands) => Ok(Reply::Batch(
                commands
                    .iter()
                    .map(|command| match command {
                        // Only the leader's batcher makes batches, and it
                        // never nests them; refuse rather than recurse.
                        Command::Batch(_) => Reply::Failed(ApiError::invalid(
                            "command",
                            "a batch may not hold another batch",
                        )),
                        command => self.apply(command, journal),
                    })
                    .collect(),
            )),
        };
        outcome.unwrap_or_else(Reply::Failed)
    }

    /// The ADD result of an existing allocation, from its subnets as they are now.
    pub fn add_result(&self, allocation: &Allocation) -> AddResult {
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        let mut dns = Dns::default();
        let mut mtu = None;
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
            mtu = mtu.or(sub.subnet.mtu);
        }
        AddResult {
            ips,
            routes,
            dns,
            mac: allocation.mac,
            mtu,
        }
    }

    /// CHECK: the attachment is held, and holds every address the runtime expects.
    pub fn check(&self, request: &CheckRequest) -> Result<AddResult, ApiError> {
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
        Ok(self.add_result(&allocation))
    }
}
