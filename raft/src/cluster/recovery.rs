//! A node that starts over under its own id after its state was found
//! behind its log's purge point (`ipkeep_store::storage::quarantine`).
//!
//! It joins as it is (its leader finds its log empty and sends it a
//! snapshot), but until it has applied every entry its old log held it
//! neither campaigns nor grants votes: those entries may have counted
//! towards a commit, and its vote could otherwise elect a leader without
//! them. Once applied, the marker goes and the node is an ordinary member.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::elections::{ElectionHolds, Hold};
use crate::cluster::node::Node;

/// Holds elections and votes off until the node has applied `target`;
/// the receiver is true meanwhile. Returns at once (false) when `target`
/// is None.
pub fn hold_until_applied(
    node: Arc<Node>,
    holds: ElectionHolds,
    target: Option<u64>,
    data_dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (recovering, watching) = watch::channel(target.is_some());
    let Some(target) = target else {
        return watching;
    };
    holds.set(Hold::Recovering, true);
    tracing::warn!(
        target,
        "recovering: this node votes and campaigns again once it has applied entry {target}"
    );
    tokio::spawn(async move {
        let mut metrics = node.raft.metrics();
        let applied = metrics.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= target));
        tokio::select! {
            _ = stop.changed() => return,
            reached = applied => if reached.is_err() { return },
        }
        if let Err(e) = ipkeep_store::storage::finish_recovery(&data_dir) {
            tracing::error!(error = %e, "cannot remove the recovery marker; still not voting");
            return;
        }
        holds.set(Hold::Recovering, false);
        recovering.send_replace(false);
        tracing::info!(target, "recovered: this node votes and campaigns again");
    });
    watching
}
