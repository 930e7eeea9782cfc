//! Reused connections to other nodes, for forwarded writes and reads. Many
//! callers may forward at once, so a node keeps several idle connections per
//! peer; a connection that fails, or whose call was abandoned, is dropped
//! (it is owned by the call), never returned to the pool.

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

    /// An idle connection to `addr` that still looks open; the others are
    /// dropped on the way.
    fn take(&self, addr: &str) -> Option<PeerConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(addr)?;
        while let Some(conn) = conns.pop() {
            if conn.looks_idle_and_open() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, addr: &str, conn: PeerConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(addr.to_owned()).or_default();
        if conns.len() < IDLE_PER_PEER {
            conns.push(conn);
        }
    }

    /// Sends a request to the node at `addr` and waits for its answer.
    ///
    /// Exactly one attempt: once a request has gone out, a failure cannot
    /// tell whether the peer acted on it, so retrying here would send a
    /// write twice behind the caller's back. Callers retry knowingly.
    pub async fn call(
        &self,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, ConnError> {
        let mut conn = match self.take(addr) {
            Some(conn) => conn,
            None => {
                PeerConn::connect(addr, &self.secret, self.my_id, CONNECT_TIMEOUT.min(timeout))
                    .await?
            }
        };
        let response = conn.call(request, timeout).await?;
        self.give_back(addr, conn);
        Ok(response)
    }
}
