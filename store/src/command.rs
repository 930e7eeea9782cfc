//! What goes through the Raft log, and what applying it answers.

use ipkeep_api::message::{AddRequest, AddResult, DelResult, GcResult};
use ipkeep_api::model::{AttachmentKey, SubnetInfo, SubnetSpec};
use ipkeep_api::ApiError;
use serde::{Deserialize, Serialize};

/// A decision to be made by every replica alike. Whatever a decision needs
/// from outside the state (the time, the node that asked) is in the command,
/// stamped by the daemon that proposes it: applying reads no clock, no
/// randomness and does no I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Add {
        request: AddRequest,
        /// The node whose daemon received the ADD.
        node: String,
        /// Milliseconds since the Unix epoch, when the ADD was proposed.
        at_ms: u64,
    },
    Del {
        key: AttachmentKey,
    },
    /// Release `node`'s attachments of `network` that are not in `valid`.
    Gc {
        network: String,
        node: String,
        valid: Vec<(String, String)>,
    },
    CreateSubnet {
        spec: SubnetSpec,
    },
    DeleteSubnet {
        name: String,
    },
}

impl Command {
    /// Sets the time of an ADD to `now_ms`. The node that hands the command to
    /// Raft (the leader) calls this, so that one clock stamps every decision.
    pub fn stamped(mut self, now_ms: u64) -> Command {
        if let Command::Add { at_ms, .. } = &mut self {
            *at_ms = now_ms;
        }
        self
    }
}

/// The answer of applying one log entry, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Added(AddResult),
    Deleted(DelResult),
    Collected(GcResult),
    SubnetCreated(SubnetInfo),
    SubnetDeleted,
    /// The command was refused; nothing changed.
    Failed(ApiError),
    /// A blank or membership entry.
    Done,
}
