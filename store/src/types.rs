//! openraft's type configuration for ipkeep.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Reply};

pub type NodeId = u64;

/// What the cluster remembers about a member: where its peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// host:port of the member's peer (Raft) listener.
    pub addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = PeerNode,
        // Snapshots live in files, so that a large one is never held whole in memory
        // while it is sent or received.
        SnapshotData = tokio::fs::File,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
