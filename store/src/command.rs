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
