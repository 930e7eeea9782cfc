//! Frees sticky bindings whose idle TTL has passed. The leader looks now and
//! then; when its replica shows an expired binding it proposes a command
//! stamped with its clock, and every replica frees exactly the bindings
//! expired at that time.

use std::sync::Arc;
use std::time::Duration;

use ipkeep_store::Command;
use tokio::sync::watch;

use crate::cluster::node::{now_ms, Node};

const EVERY: Duration = Duration::from_secs(5);

pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if node.raft.current_leader().await != Some(node.id) {
            continue;
        }
        let now = now_ms();
        let due = node.machine.read().state.bindings().any(|b| {
            b.holder.is_none()
                && b.idle_ttl_ms
                    .is_some_and(|ttl| b.last_used_ms.saturating_add(ttl) <= now)
        });
        if !due {
            continue;
        }
        match node.propose(Command::ExpireBindings { at_ms: now }).await {
            Ok(ipkeep_store::Reply::Expired(pods)) => {
                for (ns, name) in pods {
                    tracing::info!(pod = %format!("{ns}/{name}"), "sticky addresses freed after their idle TTL");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring idle bindings failed; will retry"),
        }
    }
}
