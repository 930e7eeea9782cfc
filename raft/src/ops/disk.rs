//! The data directory's free space, checked before every write.
//!
//! sled poisons a database on its first failed write (every later call
//! returns that error until it is reopened), and openraft stops a node whose
//! log cannot be written. So ipkeep must never let sled run out of space: a
//! write is refused, with error 11 and a message that says why, while the
//! data directory has less than a floor of free space left, and accepted
//! again by itself once space returns.

use std::path::{Path, PathBuf};

use std::time::Duration;

use ipkeep_api::message::DiskStatus;
use ipkeep_api::ApiError;
use openraft::ServerState;
use tokio::sync::watch;

use crate::cluster::elections::{ElectionHolds, Hold};
use crate::cluster::node::Node;

#[derive(Debug, Clone)]
pub struct DiskGuard {
    pub dir: PathBuf,
    floor: u64,
}

pub use ipkeep_api::os::available_bytes;

impl DiskGuard {
    /// Free space against the floor, now.
    pub fn status(&self) -> Option<DiskStatus> {
        let free = available_bytes(&self.dir).ok()?;
        Some(DiskStatus {
            free_bytes: free,
            floor_bytes: self.floor,
            low: self.floor > 0 && free < self.floor,
        })
    }

    pub fn new(dir: &Path, floor: u64) -> DiskGuard {
        DiskGuard {
            dir: dir.to_owned(),
            floor,
        }
    }

    /// Ok when a write may go to disk; error 11 naming the directory, what
    /// is free and the floor when it may not.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.floor == 0 {
            return Ok(());
        }
        match available_bytes(&self.dir) {
            Ok(free) if free >= self.floor => Ok(()),
            Ok(free) => Err(ApiError::try_again(format!(
                "the data directory {} has {} free, under the floor of {} (--min-free-space): writes are refused so that the store cannot fail half-way; free some space and they resume by themselves",
                self.dir.display(),
                human(free),
                human(self.floor),
            ))),
            // Not knowing is no reason to refuse: sled's own error would say more.
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free space");
                Ok(())
            }
        }
    }
}

/// How often the watcher looks at the free space.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Watches this node's free space. Under the floor, the node takes no
/// writes (see [`DiskGuard::check`]), refuses replicated entries (the peer
/// server), starts no election, and, as leader, sends no heartbeats, so
/// that a healthy voter's election timer runs out and it takes over: a
/// leader that stays leader with a full disk answers "try again" to every
/// write in the cluster. (openraft 0.9 has no leadership transfer; going
/// quiet is how a leader hands over.) When space returns, all of it is
/// undone. Returns when `stop` turns.
///
/// Elections come back `grace` after the space does: a follower that
/// refused entries has heard from no leader meanwhile (openraft's
/// replication backs off, heartbeats included), and campaigning before the
/// leader's next message would depose a healthy leader for nothing.
pub async fn watch(
    node: std::sync::Arc<Node>,
    holds: ElectionHolds,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let mut low = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let Some(status) = node.disk.status() else {
            continue;
        };
        if status.low == low {
            continue;
        }
        low = status.low;
        node.raft.runtime_config().heartbeat(!low);
        if low {
            holds.set(Hold::DiskLow, true);
        } else {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            if node.disk.status().is_some_and(|s| s.low) {
                // Low again before the grace was over: as before.
                low = true;
                node.raft.runtime_config().heartbeat(false);
                continue;
            }
            holds.set(Hold::DiskLow, false);
        }
        let leading = node.raft.metrics().borrow().state == ServerState::Leader;
        if low {
            tracing::warn!(
                dir = %node.disk.dir.display(),
                free = %human(status.free_bytes),
                floor = %human(status.floor_bytes),
                leading,
                "the data directory is under its free-space floor: this node takes no writes, refuses replicated entries and starts no election{}",
                if leading { "; it stops its heartbeats so that a healthy voter takes the lead" } else { "" }
            );
        } else {
            tracing::info!(
                free = %human(status.free_bytes),
                "free space is back over the floor: writes, replication and elections resume"
            );
        }
    }
}

pub use ipkeep_api::units::bytes as human;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_disk_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
        assert!(DiskGuard::new(dir.path(), 1).check().is_ok());
        let err = DiskGuard::new(dir.path(), u64::MAX).check().unwrap_err();
        assert_eq!(err.code, 11);
        assert!(err.to_string().contains("--min-free-space"), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
