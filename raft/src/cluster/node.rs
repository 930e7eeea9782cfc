//! A running node: its Raft handle, its replica of the state, and the paths
//! that take writes, linearizable reads and membership changes to the leader
//! from wherever they arrive.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use ipkeep_api::message::{ClusterStatus, MemberHealth, MemberInfo, NodeStatus};
use ipkeep_api::{code, ApiError};
use ipkeep_store::storage::snapshot_stats::SnapshotStats;
use ipkeep_store::storage::{LogStore, SharedReplica};
use ipkeep_store::types::{PeerNode, Raft};
use ipkeep_store::{Command, Reply};
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::cluster::write_batch::WriteBatcher;
use crate::jobs::reconciler::Leaks;
use crate::ops::disk::DiskGuard;
use crate::ops::metrics::Metrics;
use crate::peer::pool::PeerPool;
use crate::peer::wire::{Committed, ForwardError, MembershipChange, PeerRequest, PeerResponse};

/// Most voters a cluster may have: consensus cost grows with every voter,
/// and five already survive two failures. More nodes join as learners.
pub const MAX_VOTERS: usize = 5;
/// A learner further behind than this is not promoted (it would slow commits).
const PROMOTE_MAX_LAG: u64 = 1_000;
/// Pause before retrying a leader that could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub struct Node {
    pub id: u64,
    pub name: String,
    pub raft: Raft,
    pub machine: SharedReplica,
    pub snapshot_stats: SnapshotStats,
    pub write_timeout: Duration,
    /// Connections to other nodes; None when the node has no cluster secret
    /// (it then runs a single-node cluster).
    pub peers: Option<PeerPool>,
    /// The log, for the commit index the metrics show.
    pub log: LogStore,
    pub metrics: Metrics,
    /// What this node's reconciler suspects of leaking.
    pub leaks: Leaks,
    /// Free space in the data directory, checked before every write.
    pub disk: DiskGuard,
    /// Gathers concurrent ADDs and DELs into shared entries (on the leader).
    pub writes: WriteBatcher,
}

/// How long `ipkeepctl status` waits for each member.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

pub use ipkeep_api::clock::{now_ms, now_us};

fn not_leader(leader: Option<u64>) -> ForwardError {
    ForwardError::NotLeader { leader }
}

/// Why a membership change did not happen on this attempt.
enum MembershipError {
    /// An earlier change has not committed yet; try again after it.
    InProgress,
    Other(ForwardError),
}

impl From<ForwardError> for MembershipError {
    fn from(e: ForwardError) -> Self {
        MembershipError::Other(e)
    }
}

/// How long to wait for an earlier membership change to commit before
/// looking again.
const MEMBERSHIP_RETRY_PAUSE: Duration = Duration::from_millis(50);

fn write_error(e: RaftError<u64, ClientWriteError<u64, PeerNode>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f.leader_id),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ForwardError::Api(ApiError::conflict(e.to_string()))
        }
        RaftError::Fatal(fatal) => ForwardError::Api(ApiError::try_again(format!(
            "raft has stopped on this node: {fatal}"
        ))),
    }
}

/// Puts one command through Raft as one entry, if this node is the leader.
pub async fn commit_entry(
    raft: &Raft,
    write_timeout: Duration,
    command: Command,
) -> Result<Committed, ForwardError> {
    let write = raft.client_write(command.stamped(now_ms()));
    match tokio::time::timeout(write_timeout, write).await {
        Err(_) => Err(ForwardError::Api(ApiError::try_again(format!(
            "the leader could not commit within {write_timeout:?}: no quorum"
        )))),
        Ok(Ok(response)) => Ok(Committed {
            reply: response.data,
            index: response.log_id.index,
        }),
        Ok(Err(e)) => Err(write_error(e)),
    }
}

impl Node {
    // ---- on the leader --------------------------------------------------

    /// Commits a command on this node if it is the leader; stamps the time.
    /// ADDs and DELs go through the batcher, which lets concurrent ones
    /// share an entry.
    pub async fn commit_here(&self, command: Command) -> Result<Committed, ForwardError> {
        // Again on the leader: a peer's forward is checked like a request.
        command.check_fields().map_err(ForwardError::Api)?;
        self.disk.check().map_err(ForwardError::Api)?;
        if command.may_share_an_entry() {
            self.writes.commit(command).await
        } else {
            commit_entry(&self.raft, self.write_timeout, command).await
        }
    }

    /// The index a linearizable read must wait for, if this node is the
    /// leader (confirmed by a quorum).
    pub async fn read_index_here(&self) -> Result<u64, ForwardError> {
        match tokio::time::timeout(self.write_timeout, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ForwardError::Api(ApiError::try_again(
                "leadership not confirmed by a quorum in time",
            ))),
            Ok(Ok(log_id)) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(not_leader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(ForwardError::Api(ApiError::try_again(e.to_string())))
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Err(ForwardError::Api(ApiError::try_again(f.to_string())))
            }
        }
    }

    /// Applies a membership change, if this node is the leader. Another
    /// change still committing (a retry of this one, often, after a forward
    /// was given up) is waited for, then the change is judged again against
    /// the membership it left: the caller's time bounds the wait.
    pub async fn membership_here(&self, change: MembershipChange) -> Result<(), ForwardError> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            match self.membership_once(change.clone()).await {
                Err(MembershipError::InProgress) if Instant::now() >= deadline => {
                    return Err(ForwardError::Api(ApiError::try_again(format!(
                        "another membership change did not commit within {:?}",
                        self.write_timeout
                    ))));
                }
                Err(MembershipError::InProgress) => {
                    tokio::time::sleep(MEMBERSHIP_RETRY_PAUSE).await;
                }
                Err(MembershipError::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn membership_once(&self, change: MembershipChange) -> Result<(), MembershipError> {
        if self.raft.current_leader().await != Some(self.id) {
            return Err(not_leader(self.raft.current_leader().await).into());
        }
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let is_member = |id: u64| membership.nodes().any(|(n, _)| *n == id);
        let api = |e: ApiError| Err(ForwardError::Api(e).into());
        let outcome = match change {
            MembershipChange::AddLearner { id, addr } => {
                if voters.contains(&id) {
                    return api(ApiError::conflict(format!("node {id} is already a voter")));
                }
                self.raft
                    .add_learner(id, PeerNode { addr }, false)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Promote { id } => {
                if voters.contains(&id) {
                    return Ok(());
                }
                if !is_member(id) {
                    return api(ApiError::not_found(format!(
                        "node {id} is not a member; add it first with `ipkeepctl member add`"
                    )));
                }
                if voters.len() >= MAX_VOTERS {
                    return api(ApiError::conflict(format!(
                        "the cluster has {} voters already, the most it may have; more nodes join as learners",
                        voters.len()
                    )));
                }
                let last = metrics.last_log_index.unwrap_or(0);
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
                    .unwrap_or(0);
                if last.saturating_sub(matched) > PROMOTE_MAX_LAG {
                    return api(ApiError::try_again(format!(
                        "learner {id} is {} entries behind; promote it once it has caught up (ipkeepctl member list)",
                        last - matched
                    )));
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Remove { id } => {
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return api(ApiError::conflict(format!(
                            "node {id} is the last voter; a cluster needs one"
                        )));
                    }
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map(|_| ())
                } else if is_member(id) {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map(|_| ())
                } else {
                    return api(ApiError::not_found(format!("node {id} is not a member")));
                }
            }
        };
        outcome.map_err(|e| match e {
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )) => MembershipError::InProgress,
            e => MembershipError::Other(write_error(e)),
        })
    }

    // ---- from any node ----------------------------------------------------

    /// The peer address of a member, from the membership this node knows.
    fn member_addr(&self, id: u64) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.get_node(&id).map(|n| n.addr.clone())
    }

    /// Runs `local` here if this node leads, or sends `remote` to the leader,
    /// following leadership as it moves, until the write timeout. A node
    /// that cannot get an answer from a leader in time (the minority side of
    /// a partition) answers "try again later" (CNI 11), never a guess.
    async fn at_leader<T, F, Fut>(
        &self,
        what: &str,
        local: F,
        remote: impl Fn() -> PeerRequest,
        unpack: fn(PeerResponse) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ForwardError>>,
    {
        let deadline = Instant::now() + self.write_timeout;
        let mut problem = String::from("no leader is known");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::try_again(format!(
                    "{what}: no answer from a leader within {:?} ({problem})",
                    self.write_timeout
                )));
            }
            let leader = match tokio::time::timeout(remaining, local()).await {
                Err(_) => {
                    problem = "the leader did not answer".into();
                    continue;
                }
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(ForwardError::Api(e))) => return Err(e),
                Ok(Err(ForwardError::NotLeader { leader })) => leader,
            };
            let Some(leader) = leader.filter(|l| *l != self.id) else {
                problem = "an election is in progress".into();
                self.await_leader_change(remaining.min(Duration::from_millis(200)))
                    .await;
                continue;
            };
            let (Some(peers), Some(addr)) = (&self.peers, self.member_addr(leader)) else {
                return Err(ApiError::try_again(format!(
                    "{what}: node {leader} leads but this node cannot reach it (no cluster secret or address)"
                )));
            };
            // A forward to a leader that died or was cut off would wait out
            // the whole timeout; give it up as soon as another leader is known.
            let request = remote();
            let outcome = tokio::select! {
                r = peers.call(&addr, &request, remaining) => Some(r),
                _ = self.await_leader_change(remaining) => None,
            };
            let Some(outcome) = outcome else {
                problem = format!("leadership moved away from node {leader}");
                continue;
            };
            match outcome {
                Ok(response) => match unpack(response) {
                    Some(Ok(value)) => return Ok(value),
                    Some(Err(ForwardError::Api(e))) => return Err(e),
                    Some(Err(ForwardError::NotLeader { .. })) => {
                        problem = format!("node {leader} no longer leads");
                        self.await_leader_change(remaining.min(Duration::from_millis(200)))
                            .await;
                    }
                    None => {
                        return Err(ApiError::internal(format!(
                            "{what}: unexpected answer from node {leader}"
                        )))
                    }
                },
                Err(e) => {
                    problem = format!("cannot reach leader {leader} at {addr}: {e}");
                    tokio::time::sleep(RETRY_PAUSE.min(remaining)).await;
                }
            }
        }
    }

    /// Waits (at most `limit`) for this node's view of the leader to change.
    async fn await_leader_change(&self, limit: Duration) {
        let mut metrics = self.raft.metrics();
        let before = metrics.borrow().current_leader;
        let _ = tokio::time::timeout(limit, async {
            while metrics.changed().await.is_ok() {
                if metrics.borrow().current_leader != before {
                    return;
                }
            }
        })
        .await;
    }

    /// Waits (bounded by the write timeout) until this node has applied `index`.
    async fn await_applied(&self, index: u64) {
        let _ = self
            .raft
            .wait(Some(self.write_timeout))
            .applied_index_at_least(Some(index), "read your write")
            .await;
    }

    /// Commits a command through Raft, from whichever node received it, and
    /// returns what applying it answered. A retried command is harmless:
    /// every command is idempotent. Once it returns, this node's replica
    /// shows the write.
    pub async fn propose(&self, command: Command) -> Result<Reply, ApiError> {
        command.check_fields()?;
        // Every node writes every entry: this one must have room too.
        self.disk.check()?;
        let committed = self
            .at_leader(
                "write",
                || self.commit_here(command.clone()),
                || PeerRequest::Propose(command.clone()),
                |r| match r {
                    PeerResponse::Proposed(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        self.await_applied(committed.index).await;
        match committed.reply {
            Reply::Failed(e) => Err(e),
            other => Ok(other),
        }
    }

    /// A linearizable read barrier: returns once this node has applied
    /// everything committed before the call.
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        let index = self
            .at_leader(
                "linearizable read",
                || self.read_index_here(),
                || PeerRequest::ReadIndex,
                |r| match r {
                    PeerResponse::ReadIndex(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        self.await_applied(index).await;
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        if applied < index {
            return Err(ApiError::try_again(format!(
                "this node has applied up to {applied}, behind the leader's {index}"
            )));
        }
        Ok(())
    }

    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ApiError> {
        if self.peers.is_none() {
            return Err(ApiError::new(
                code::INVALID_REQUEST,
                "no cluster secret",
                "membership changes need a cluster secret on every node (--cluster-secret-file)",
            ));
        }
        // A leader that removes itself steps down as the change commits, and
        // a forward is given up (and sent again to the next leader) when
        // leadership moves before the answer arrives: the second attempt then
        // finds the node gone. Gone is what was asked, so a node that was a
        // member when the request came is not "not found" afterwards.
        let removing_a_member = match change {
            MembershipChange::Remove { id } => self.member_addr(id).is_some(),
            _ => false,
        };
        let outcome = self
            .at_leader(
                "membership change",
                || self.membership_here(change.clone()),
                || PeerRequest::Membership(change.clone()),
                |r| match r {
                    PeerResponse::Membership(r) => Some(r),
                    _ => None,
                },
            )
            .await;
        match outcome {
            Err(e) if removing_a_member && e.code == code::NOT_FOUND => Ok(()),
            other => other,
        }
    }

    /// Can a write be committed now? Confirms a leader with a quorum.
    pub async fn ensure_writable(&self) -> Result<(), ApiError> {
        self.disk.check()?;
        self.read_barrier().await
    }

    // ---- views --------------------------------------------------------------

    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = metrics.last_log_index.unwrap_or(0);
        membership
            .nodes()
            .map(|(id, node)| {
                // Replication progress is known on the leader only.
                let matched = metrics.replication.as_ref().map(|r| {
                    if *id == self.id {
                        last
                    } else {
                        r.get(id).cloned().flatten().map(|l| l.index).unwrap_or(0)
                    }
                });
                MemberInfo {
                    id: *id,
                    addr: node.addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    leader: metrics.current_leader == Some(*id),
                    matched,
                    lag: matched.map(|m| last.saturating_sub(m)),
                }
            })
            .collect()
    }

    /// Every member asked for its own status over the peer network, at
    /// once, each within a second: who answers, and how far behind it is.
    pub async fn cluster_status(&self) -> ClusterStatus {
        let this = self.status();
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let asks = membership.nodes().map(|(id, peer)| {
            let (id, addr) = (*id, peer.addr.clone());
            let this = &this;
            async move {
                let answer = if id == self.id {
                    Ok(this.clone())
                } else if let Some(peers) = &self.peers {
                    match peers
                        .call(&addr, &PeerRequest::Status, STATUS_TIMEOUT)
                        .await
                    {
                        Ok(PeerResponse::Status(s)) => Ok(s),
                        Ok(_) => Err("answered something else".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    Err("no cluster secret on this node".to_owned())
                };
                (id, addr, answer)
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let longest = answers
            .iter()
            .filter_map(|(_, _, a)| a.as_ref().ok().and_then(|s| s.last_log_index))
            .max();
        let members = answers
            .into_iter()
            .map(|(id, addr, answer)| {
                let role = if voters.contains(&id) {
                    "voter"
                } else {
                    "learner"
                }
                .to_owned();
                match answer {
                    Ok(status) => MemberHealth {
                        id,
                        addr,
                        role,
                        lag: longest.map(|l| l.saturating_sub(status.last_applied.unwrap_or(0))),
                        status: Some(status),
                        error: None,
                    },
                    Err(e) => MemberHealth {
                        id,
                        addr,
                        role,
                        status: None,
                        error: Some(e),
                        lag: None,
                    },
                }
            })
            .collect();
        ClusterStatus { this, members }
    }

    pub fn committed_index(&self) -> Option<u64> {
        self.log.committed_index()
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
            last_snapshot_built: self.snapshot_stats.last_built(),
            last_snapshot_installed: self.snapshot_stats.last_installed(),
            disk: self.disk.status(),
        }
    }
}
