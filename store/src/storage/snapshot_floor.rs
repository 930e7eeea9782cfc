//! How far the Raft log may be purged on disk: no further than the state a
//! restart can rebuild without it.
//!
//! openraft 0.9.25 installs a snapshot on a follower by queueing the install
//! to the state machine and then purging the log up to the snapshot at once.
//! Made durable in that order, a crash while the snapshot is still being
//! copied, checked and published leaves a log purged past anything the node
//! holds: the entries between its state and the purge point are gone, and
//! the node cannot start. So the log store keeps a purge beyond the floor
//! pending (openraft is told it is done: the entries it keeps are only
//! extra) and carries it out once the state machine has published a
//! snapshot that covers it.
//!
//! The floor is the last index that a restart recovers without the log: the
//! index of the published snapshot, or the state's last-applied as read from
//! disk at open. A failed install is reported too, so that a log write
//! waiting for a purge is not left waiting for a snapshot that never comes.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Floor {
    /// The last index a restart recovers without the log (None: none).
    pub covered: Option<u64>,
    /// Installs that failed so far.
    pub failed_installs: u64,
}

impl Floor {
    /// Whether a purge up to and including `index` may be made durable.
    pub fn covers(&self, index: u64) -> bool {
        self.covered.is_some_and(|c| c >= index)
    }
}

/// The state machine's side: raises the floor.
#[derive(Debug)]
pub(super) struct FloorRaiser(watch::Sender<Floor>);

/// The log store's side: reads and awaits the floor.
#[derive(Debug, Clone)]
pub(super) struct FloorWatch(watch::Receiver<Floor>);

pub(super) fn new(covered: Option<u64>) -> (FloorRaiser, FloorWatch) {
    let (tx, rx) = watch::channel(Floor {
        covered,
        failed_installs: 0,
    });
    (FloorRaiser(tx), FloorWatch(rx))
}

impl FloorRaiser {
    /// A snapshot covering up to `index` is durably published.
    pub fn published(&self, index: Option<u64>) {
        self.0.send_if_modified(|floor| {
            if index > floor.covered {
                floor.covered = index;
                true
            } else {
                false
            }
        });
    }

    /// An install failed: nothing new is covered.
    pub fn install_failed(&self) {
        self.0.send_modify(|floor| floor.failed_installs += 1);
    }
}

impl FloorWatch {
    pub fn now(&self) -> Floor {
        *self.0.borrow()
    }

    /// Waits until the floor covers `index`; Err when an install fails
    /// after `failed_before` failures were counted (or the state machine is
    /// gone), as the snapshot that was to cover it will then not come.
    pub async fn covering(&self, index: u64, failed_before: u64) -> Result<(), NotCovered> {
        let mut rx = self.0.clone();
        let floor = rx
            .wait_for(|f| f.covers(index) || f.failed_installs != failed_before)
            .await
            .map_err(|_| NotCovered { index })?;
        if floor.covers(index) {
            Ok(())
        } else {
            Err(NotCovered { index })
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the log cannot be purged up to entry {index}: the snapshot that was to cover it was not installed")]
pub(super) struct NotCovered {
    pub index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_a_snapshot_covers_it_or_an_install_fails() {
        let (raiser, watch) = new(Some(10));
        assert!(watch.now().covers(10));
        assert!(!watch.now().covers(11));
        watch.covering(5, 0).await.expect("covered already");

        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.covering(20, 0).await }
        });
        raiser.published(Some(15));
        raiser.published(Some(20));
        waiting
            .await
            .unwrap()
            .expect("covered by the second snapshot");

        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.covering(30, 0).await }
        });
        raiser.install_failed();
        assert!(waiting.await.unwrap().is_err());
        raiser.published(Some(12));
        assert_eq!(watch.now().covered, Some(20), "the floor never goes back");
    }
}
