//! The messages nodes send each other.

use ipkeep_api::message::NodeStatus;
use ipkeep_api::ApiError;
use ipkeep_store::types::{NodeId, TypeConfig};
use ipkeep_store::{Command, Reply};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write forwarded by a follower or learner, for the leader to commit.
    Propose(Command),
    /// A follower asks the leader for the index a linearizable read must wait for.
    ReadIndex,
    /// A membership change forwarded to the leader.
    Membership(MembershipChange),
    /// The node's own view (`ipkeepctl status` asks every member).
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

/// A write the leader committed: what applying it answered, and its log
/// index (the forwarder waits for its own replica to reach it, so that its
/// caller reads its own write).
#[derive(Debug, Serialize, Deserialize)]
pub struct Committed {
    pub reply: Reply,
    pub index: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// This node is not (or no longer) the leader.
    NotLeader {
        leader: Option<NodeId>,
    },
    Api(ApiError),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Proposed(Result<Committed, ForwardError>),
    ReadIndex(Result<u64, ForwardError>),
    Membership(Result<(), ForwardError>),
    Status(NodeStatus),
    /// The node cannot take this request now (its disk is under the floor):
    /// the sender backs off as from an unreachable node and tries again.
    Refused(String),
}
