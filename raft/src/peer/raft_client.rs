//! openraft's network: each client holds one authenticated connection to its
//! target, reused across RPCs and re-established (with openraft's backoff)
//! when it fails. A node without a cluster secret runs alone and reports
//! every peer unreachable.

use std::time::Duration;

use ipkeep_store::types::{NodeId, PeerNode, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::peer::conn::{ConnError, PeerConn};
use crate::peer::wire::{PeerRequest, PeerResponse};
use crate::peer::ClusterSecret;

/// Longest a new peer connection (TCP and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct PeerNetwork {
    pub secret: Option<ClusterSecret>,
    pub my_id: NodeId,
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    secret: Option<ClusterSecret>,
    my_id: NodeId,
    conn: Option<PeerConn>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            secret: self.secret.clone(),
            my_id: self.my_id,
            conn: None,
        }
    }
}

/// A failed exchange: whether the peer could not be reached at all (openraft
/// then backs off) or the exchange broke on the way.
enum Failure {
    Unreachable(ConnError),
    Broken(ConnError),
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, PeerNode, E> {
        match self {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Broken(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

fn unexpected<E: std::error::Error>(got: &PeerResponse) -> RPCError<NodeId, PeerNode, E> {
    let e = std::io::Error::other(format!("unexpected peer response {got:?}"));
    RPCError::Network(NetworkError::new(&e))
}

impl PeerClient {
    async fn exchange(
        &mut self,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, Failure> {
        let Some(secret) = &self.secret else {
            let e = std::io::Error::other("this node has no cluster secret and runs alone");
            return Err(Failure::Unreachable(ConnError::Io(e)));
        };
        if self.conn.as_ref().is_some_and(|c| !c.in_step()) {
            // openraft dropped the previous RPC at its timeout, after the
            // request went out: its answer may still be on the way, and must
            // not be taken for the answer to this one.
            tracing::debug!(
                target_node = self.target,
                "replacing a peer connection whose last RPC was abandoned"
            );
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                // Connecting and authenticating get their own time, not the
                // RPC's (a heartbeat allows 100 ms): a handshake on a loaded
                // machine can take longer, and giving up on it halfway only
                // makes the next attempt start over.
                let conn = PeerConn::connect(&self.addr, secret, self.my_id, CONNECT_TIMEOUT)
                    .await
                    .map_err(Failure::Unreachable)?;
                self.conn.insert(conn)
            }
        };
        match conn.call(&request, timeout).await {
            Ok(PeerResponse::Refused(reason)) => Err(Failure::Unreachable(ConnError::Io(
                std::io::Error::other(format!("node {} refused: {reason}", self.target)),
            ))),
            Ok(response) => Ok(response),
            Err(e) => {
                // Never reuse a connection whose last exchange failed: its
                // stream may be out of step.
                self.conn = None;
                Err(Failure::Broken(e))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        match self
            .exchange(PeerRequest::Append(rpc), option.hard_ttl())
            .await
            .map_err(Failure::into_rpc)?
        {
            PeerResponse::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .exchange(PeerRequest::Snapshot(rpc), option.hard_ttl())
            .await
            .map_err(Failure::into_rpc)?
        {
            PeerResponse::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        match self
            .exchange(PeerRequest::Vote(rpc), option.hard_ttl())
            .await
            .map_err(Failure::into_rpc)?
        {
            PeerResponse::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Retries an unreachable peer quickly at first (a restarted node should
    /// rejoin at once), then every half second.
    fn backoff(&self) -> Backoff {
        let ramp = [50, 100, 200, 400].into_iter().map(Duration::from_millis);
        Backoff::new(ramp.chain(std::iter::repeat(Duration::from_millis(500))))
    }
}
