//! The peer listener: authenticates each connection, then serves openraft's
//! RPCs and forwarded writes on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admission::{Handshake, PeerAdmission};
use super::auth::ClusterSecret;
use super::conn::PeerConn;
use super::wire::{PeerRequest, PeerResponse};
use crate::cluster::node::Node;
use crate::ops::refusals::{Refusals, SUMMARY_PERIOD};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Peer connections served at once. A cluster needs a few per peer; the
/// limit keeps a flood of unauthenticated connections from exhausting the
/// daemon's memory or file descriptors.
const MAX_PEER_CONNECTIONS: usize = 512;

pub struct PeerServer {
    listener: TcpListener,
}

impl PeerServer {
    pub async fn bind(addr: &str) -> anyhow::Result<PeerServer> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the peer listener on {addr} (--listen)"))?;
        Ok(PeerServer { listener })
    }

    /// `recovering`: true while this node may not grant votes (see
    /// `recovery`).
    pub async fn serve(
        self,
        node: Arc<Node>,
        secret: ClusterSecret,
        recovering: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut connections = JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_CONNECTIONS));
        let admission = PeerAdmission::default();
        let refusals = Arc::new(Refusals::new("peer", node.metrics.refused.clone()));
        let mut summary = tokio::time::interval(SUMMARY_PERIOD);
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => break,
                _ = summary.tick() => {
                    refusals.flush();
                    continue;
                }
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, from)) => {
                    let source = from.ip().to_string();
                    let handshake = match admission.admit(from.ip()) {
                        Ok(handshake) => handshake,
                        Err(refused) => {
                            refusals.refused(&source, refused.reason());
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        refusals.refused(&source, "over the listener's connection limit");
                        continue;
                    };
                    let (node, secret, refusals) = (node.clone(), secret.clone(), refusals.clone());
                    let recovering = recovering.clone();
                    connections.spawn(async move {
                        serve_connection(
                            node,
                            secret,
                            stream,
                            from,
                            handshake,
                            &refusals,
                            &recovering,
                        )
                        .await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            while connections.try_join_next().is_some() {}
        }
        connections.abort_all();
    }
}

async fn serve_connection(
    node: Arc<Node>,
    secret: ClusterSecret,
    stream: tokio::net::TcpStream,
    from: SocketAddr,
    handshake: Handshake,
    refusals: &Refusals,
    recovering: &watch::Receiver<bool>,
) {
    let mut conn = match PeerConn::accept(stream, &secret, node.id, HANDSHAKE_TIMEOUT).await {
        Ok(conn) => {
            drop(handshake);
            conn
        }
        Err(e) => {
            // Nothing the peer sent has been decoded, let alone applied.
            handshake.failed();
            tracing::debug!(peer = %from, error = %e, "refused a peer connection");
            refusals.refused_with(
                &from.ip().to_string(),
                "failed authentication",
                Some(e.to_string()),
            );
            return;
        }
    };
    loop {
        let request: PeerRequest = match conn.recv().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(peer = %from, peer_id = conn.peer_id, error = %e, "closing a peer connection");
                return;
            }
        };
        let response = handle(&node, request, recovering).await;
        if let Err(e) = conn.send(&response).await {
            tracing::debug!(peer = %from, error = %e, "peer went away before its answer");
            return;
        }
    }
}

async fn handle(
    node: &Node,
    request: PeerRequest,
    recovering: &watch::Receiver<bool>,
) -> PeerResponse {
    if matches!(request, PeerRequest::Vote(_)) && *recovering.borrow() {
        return PeerResponse::Refused(
            "this node is recovering and votes again once it has applied the entries it lost"
                .into(),
        );
    }
    // Entries and snapshots are written to disk: under the floor they are
    // refused (the leader backs off and sends them again once space has
    // returned), so that a full disk stops replication to this node, not
    // the node. Heartbeats and votes write next to nothing and go on.
    let writes = match &request {
        PeerRequest::Append(r) => !r.entries.is_empty(),
        PeerRequest::Snapshot(_) => true,
        _ => false,
    };
    if writes {
        if let Err(e) = node.disk.check() {
            return PeerResponse::Refused(e.details);
        }
    }
    match request {
        PeerRequest::Append(r) => PeerResponse::Append(node.raft.append_entries(r).await),
        PeerRequest::Vote(r) => PeerResponse::Vote(node.raft.vote(r).await),
        PeerRequest::Snapshot(r) => PeerResponse::Snapshot(node.raft.install_snapshot(r).await),
        PeerRequest::Propose(command) => PeerResponse::Proposed(node.commit_here(command).await),
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.read_index_here().await),
        PeerRequest::Membership(change) => {
            PeerResponse::Membership(node.membership_here(change).await)
        }
        PeerRequest::Status => PeerResponse::Status(node.status()),
    }
}
