//! A running node: its Raft handle, its replica of the state, and the write
//! path every mutating request takes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipkeep_api::message::NodeStatus;
use ipkeep_api::ApiError;
use ipkeep_store::storage::SharedMachine;
use ipkeep_store::types::Raft;
use ipkeep_store::{Command, Reply};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

pub struct Node {
    pub id: u64,
    pub name: String,
    pub raft: Raft,
    pub machine: SharedMachine,
    pub write_timeout: Duration,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Commits a command through Raft and returns what applying it answered.
    ///
    /// Bounded by the write timeout: a node that cannot reach a quorum (the
    /// minority side of a partition) answers "try again later" (CNI 11), never
    /// a guess. A timed-out write may still commit later; every command is
    /// idempotent, so the caller's retry gets the same answer.
    pub async fn propose(&self, command: Command) -> Result<Reply, ApiError> {
        let outcome =
            tokio::time::timeout(self.write_timeout, self.raft.client_write(command)).await;
        let reply = match outcome {
            Err(_) => {
                return Err(ApiError::try_again(format!(
                    "no commit within {:?}: the cluster has no quorum or no leader right now",
                    self.write_timeout
                )))
            }
            Ok(Ok(response)) => response.data,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                return Err(ApiError::try_again(match forward.leader_id {
                    Some(leader) => format!("node {} is not the leader; node {leader} is", self.id),
                    None => format!(
                        "node {} knows no leader yet (election in progress)",
                        self.id
                    ),
                }))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                return Err(ApiError::internal(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                return Err(ApiError::try_again(format!(
                    "raft has stopped on this node: {fatal}"
                )))
            }
        };
        match reply {
            Reply::Failed(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Can this node get a write committed now? Confirms leadership with a
    /// quorum (on the leader) within the write timeout.
    pub async fn ensure_writable(&self) -> Result<(), ApiError> {
        match tokio::time::timeout(self.write_timeout, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ApiError::try_again(format!(
                "leadership not confirmed by a quorum within {:?}",
                self.write_timeout
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ApiError::try_again(e.to_string())),
        }
    }

    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let role = match metrics.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        NodeStatus {
            node_id: self.id,
            node_name: self.name.clone(),
            role: role.into(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            voters,
            learners,
        }
    }
}
