//! What goes through the Raft log, and what applying it answers.

use ipkeep_api::message::{AddRequest, AddResult, DelResult, GcResult, PoolRequest};
use ipkeep_api::model::{AttachmentKey, IpRange, PoolInfo, SubnetInfo, SubnetSpec, SubnetUpdate};
use ipkeep_api::ApiError;
use serde::{Deserialize, Serialize};

/// A decision to be made by every replica alike. Whatever a decision needs
/// from outside the state (the time, the node that asked) is in the command,
/// stamped by the node that hands it to Raft: applying reads no clock, no
/// randomness and does no I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Add {
        request: AddRequest,
        /// The node whose daemon received the ADD.
        node: String,
        /// Milliseconds since the Unix epoch, stamped by the leader.
        at_ms: u64,
        /// Microseconds since the Unix epoch when the receiving daemon got
        /// the request: an ADD issued before a DEL of the same attachment is
        /// stale (its caller gave up on it) and must not commit after it.
        issued_us: u64,
    },
    Del {
        key: AttachmentKey,
        at_ms: u64,
        /// When the receiving daemon got the DEL (see `Add::issued_us`).
        issued_us: u64,
    },
    /// Release `node`'s attachments of `network` that are not in `valid`.
    Gc {
        network: String,
        node: String,
        valid: Vec<(String, String)>,
        at_ms: u64,
        issued_us: u64,
    },
    CreateSubnet {
        spec: SubnetSpec,
    },
    DeleteSubnet {
        name: String,
    },
    UpdateSubnet {
        name: String,
        update: SubnetUpdate,
    },
    CreatePool {
        request: PoolRequest,
    },
    DeletePool {
        name: String,
    },
    ResizePool {
        name: String,
        addresses: Vec<IpRange>,
    },
    Reserve {
        range: IpRange,
        note: String,
        at_ms: u64,
    },
    Unreserve {
        range: IpRange,
    },
    ReleaseBinding {
        namespace: String,
        name: String,
    },
    /// Frees the idle bindings whose TTL has passed at `at_ms`.
    /// A node's reconciler found these attachments' namespaces gone for
    /// longer than the grace period: release each that is still the same
    /// attachment (held since `since_ms`), keeping sticky bindings.
    Reclaim {
        attachments: Vec<(AttachmentKey, u64)>,
        at_ms: u64,
        issued_us: u64,
    },
    /// A node gone for good: release every attachment it held.
    ForgetNode {
        node: String,
        at_ms: u64,
        issued_us: u64,
    },
    /// Load a backup (`ipkeepctl snapshot save`) into a new, empty cluster:
    /// every record as the backup holds it.
    Restore {
        records: Vec<(Vec<u8>, Vec<u8>)>,
    },
    ExpireBindings {
        at_ms: u64,
    },
    /// Several ADDs and DELs that reached the leader together, applied in
    /// order as if each were an entry of its own: one log entry, one
    /// append and one replication for all of them (see the raft crate's
    /// write batcher). Answered by [`Reply::Batch`], one reply each. Kept
    /// last: bincode numbers variants in order, and entries already in a
    /// log must still decode.
    Batch(#[serde(deserialize_with = "ipkeep_api::nesting::bounded")] Vec<Command>),
}

impl Command {
    /// Sets the command's time to `now_ms`. The node that hands the command
    /// to Raft (the leader) calls this, so that one clock stamps decisions.
    pub fn stamped(mut self, now_ms: u64) -> Command {
        match &mut self {
            Command::Add { at_ms, .. }
            | Command::Del { at_ms, .. }
            | Command::Gc { at_ms, .. }
            | Command::Reserve { at_ms, .. }
            | Command::Reclaim { at_ms, .. }
            | Command::ForgetNode { at_ms, .. }
            | Command::ExpireBindings { at_ms } => *at_ms = now_ms,
            Command::Batch(commands) => {
                *commands = std::mem::take(commands)
                    .into_iter()
                    .map(|command| command.stamped(now_ms))
                    .collect();
            }
            _ => {}
        }
        self
    }

    /// Checks every field the command would carry into the log (see
    /// `ipkeep_api::fields`): the node that receives a request checks it,
    /// and the leader checks again whatever a peer forwards.
    pub fn check_fields(&self) -> Result<(), ApiError> {
        use ipkeep_api::fields::*;
        let node_name =
            |node: &str| check_text(node, MAX_NODE_NAME).map_err(|r| ApiError::invalid("node", r));
        match self {
            Command::Add { request, node, .. } => {
                check_add(request)?;
                node_name(node)
            }
            Command::Del { key, .. } => check_key(key),
            Command::Gc {
                network,
                node,
                valid,
                ..
            } => {
                ipkeep_api::names::check_cni_identifier(network)
                    .map_err(|r| ApiError::invalid("name", r))?;
                check_gc_valid(valid)?;
                node_name(node)
            }
            Command::CreateSubnet { spec } => check_subnet_spec(spec),
            Command::UpdateSubnet { name, update } => {
                check_pod_field("name", name)?;
                check_subnet_update(update)
            }
            Command::DeleteSubnet { name } | Command::DeletePool { name } => {
                check_pod_field("name", name)
            }
            Command::ResizePool { name, addresses } => {
                check_pod_field("name", name)?;
                check_ranges("addresses", addresses)
            }
            Command::CreatePool { request } => check_pool(request),
            Command::Reserve { range, note, .. } => {
                check_ranges("range", std::slice::from_ref(range))?;
                check_text(note, MAX_NOTE).map_err(|r| ApiError::invalid("note", r))
            }
            Command::Unreserve { range } => check_ranges("range", std::slice::from_ref(range)),
            Command::ReleaseBinding { namespace, name } => {
                check_pod_field("namespace", namespace)?;
                check_pod_field("name", name)
            }
            Command::Reclaim { attachments, .. } => {
                attachments.iter().try_for_each(|(key, _)| check_key(key))
            }
            Command::ForgetNode { node, .. } => {
                check_pod_field("node", node)?;
                node_name(node)
            }
            Command::Restore { .. } | Command::ExpireBindings { .. } => Ok(()),
            // Formed by the leader's batcher alone, from writes it checked.
            Command::Batch(_) => Err(ApiError::invalid(
                "command",
                "a batch of writes is formed by the leader, never sent to it",
            )),
        }
    }

    /// May this command share a log entry with others? The node API's hot
    /// path (ADD and DEL) may; the rest are rare, and some (a restore) are
    /// large enough to want an entry of their own.
    pub fn may_share_an_entry(&self) -> bool {
        matches!(self, Command::Add { .. } | Command::Del { .. })
    }
}

/// The answer of applying one log entry, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Added(AddResult),
    Deleted(DelResult),
    Collected(GcResult),
    Subnet(SubnetInfo),
    Pool(PoolInfo),
    /// The pod names whose bindings were freed.
    Expired(Vec<(String, String)>),
    /// The command was refused; nothing changed.
    Failed(ApiError),
    /// Done; nothing more to say (also blank and membership entries).
    Done,
    /// The replies to a [`Command::Batch`], in its order.
    Batch(#[serde(deserialize_with = "ipkeep_api::nesting::bounded")] Vec<Reply>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipkeep_api::codec;
    use ipkeep_api::nesting::{DECODE_STACK_BYTES, MAX_NESTING};

    /// A batch holding batches, as a peer could forward it: refused while
    /// decoding past the nesting bound, on a thread with the daemon's
    /// decoder stack, instead of overflowing it.
    #[test]
    fn batches_nested_past_the_bound_are_refused_while_decoding() {
        let leaf = Command::ExpireBindings { at_ms: 1 };
        let one = codec::encode(&Command::Batch(vec![leaf.clone()])).unwrap();
        let leaf_bytes = codec::encode(&leaf).unwrap();
        let wrapper = &one[..one.len() - leaf_bytes.len()];
        let nested = |depth: usize| {
            let mut bytes = wrapper.repeat(depth);
            bytes.extend_from_slice(&leaf_bytes);
            bytes
        };
        let shallow = nested(2);
        assert!(codec::decode::<Command>(&shallow, 1 << 20).is_ok());
        let deep = nested(MAX_NESTING as usize + 1);
        assert!(codec::decode::<Command>(&deep, 1 << 20).is_err());
        let very_deep = nested(20_000);
        let decoded = std::thread::Builder::new()
            .stack_size(DECODE_STACK_BYTES)
            .spawn(move || codec::decode::<Command>(&very_deep, 1 << 20).is_err())
            .unwrap()
            .join()
            .expect("the decoder thread survives");
        assert!(decoded);
    }
}
