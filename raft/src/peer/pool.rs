//! Reused connections to other nodes, for forwarded writes and reads. Many
//! callers may forward at once, so a node keeps several idle connections per
//! peer; a connection that fails is dropped, never returned to the pool.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::auth::ClusterSecret;
use super::conn::{ConnError, PeerConn};
use super::wire::{PeerRequest, PeerResponse};

/// Idle connections kept per peer.
const IDLE_PER_PEER: usize = 64;
/// Longest a new connection (TCP and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct PeerPool {
    secret: ClusterSecret,
    my_id: u64,
    idle: Mutex<HashMap<String, Vec<PeerConn>>>,
}

impl PeerPool {
    pub fn new(secret: ClusterSecret, my_id: u64) -> PeerPool {
        PeerPool {
            secret,
            my_id,
            idle: Mutex::default(),
        }
    }

    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    fn take(&self, addr: &str) -> Option<PeerConn> {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop)
    }

    fn give_back(&self, addr: &str, conn: PeerConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(addr.to_owned()).or_default();
        if conns.len() < IDLE_PER_PEER {
            conns.push(conn);
        }
    }

    /// Sends a request to the node at `addr` and waits for its answer.
    pub async fn call(
        &self,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, ConnError> {
        // A pooled connection may have been closed by the peer (a restart):
        // such a failure is retried once on a fresh connection.
        if let Some(mut conn) = self.take(addr) {
            if let Ok(response) = conn.call(request, timeout).await {
                self.give_back(addr, conn);
                return Ok(response);
            }
        }
        let mut conn =
            PeerConn::connect(addr, &self.secret, self.my_id, CONNECT_TIMEOUT.min(timeout)).await?;
        let response = conn.call(request, timeout).await?;
        self.give_back(addr, conn);
        Ok(response)
    }
}
