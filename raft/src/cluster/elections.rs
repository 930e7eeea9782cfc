//! Holds this node's elections off while it installs a snapshot.
//!
//! openraft 0.9 sends a follower nothing while a snapshot to it is
//! outstanding, heartbeats included: they go through the same replication
//! stream, which waits for the install's answer. A voter whose install
//! outlasts its election timeout (leader lease plus 300-600 ms; a large
//! state's install does) would start an election as soon as it was done,
//! and its higher term would depose the healthy leader: writes would stop
//! for a new election after every such install (the `lag terms` column of
//! `ipkeep-bench --scale` counts them, for a follower restarted after the
//! leader had purged its log). The node still grants votes meanwhile; it
//! only does not ask.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// A reason for this node to start no election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A snapshot from the leader is being installed.
    Installing,
    /// The data directory is under its free-space floor: as leader, this
    /// node could commit nothing.
    DiskLow,
    /// Starting over after its state fell behind its log (`recovery`).
    Recovering,
}

impl Hold {
    fn bit(self) -> u8 {
        match self {
            Hold::Installing => 1,
            Hold::DiskLow => 2,
            Hold::Recovering => 4,
        }
    }
}

/// Elections are on while no hold is set.
#[derive(Clone)]
pub struct ElectionHolds {
    held: Arc<Mutex<u8>>,
    set_elect: Arc<dyn Fn(bool) + Send + Sync>,
}

impl ElectionHolds {
    pub fn new(set_elect: impl Fn(bool) + Send + Sync + 'static) -> ElectionHolds {
        ElectionHolds {
            held: Arc::default(),
            set_elect: Arc::new(set_elect),
        }
    }

    pub fn set(&self, hold: Hold, on: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let before = *held == 0;
        if on {
            *held |= hold.bit();
        } else {
            *held &= !hold.bit();
        }
        let after = *held == 0;
        if before != after {
            (self.set_elect)(after);
        }
    }
}

/// Turns elections off (`set_elect(false)`) when `installs` goes up, and on
/// again `grace` after it comes down, unless another install began within
/// it. The grace covers the round trip in which the leader hears the
/// install's answer and sends again: until its next message arrives, the
/// election timer still counts from before the install. Returns when the
/// store is gone.
pub async fn hold_during_installs(
    mut installs: watch::Receiver<bool>,
    grace: Duration,
    set_elect: impl Fn(bool),
) {
    loop {
        if installs.wait_for(|up| *up).await.is_err() {
            return;
        }
        set_elect(false);
        tracing::info!("installing a snapshot: this node starts no election until it is done");
        loop {
            if installs.wait_for(|up| !*up).await.is_err() {
                return;
            }
            match tokio::time::timeout(grace, installs.wait_for(|up| *up)).await {
                // No new install within the grace.
                Err(_) => break,
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return,
            }
        }
        set_elect(true);
        tracing::info!("snapshot installed: elections back on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    const GRACE: Duration = Duration::from_millis(50);
    const LIMIT: Duration = Duration::from_secs(10);

    async fn next(rx: &mut mpsc::UnboundedReceiver<bool>) -> bool {
        tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("no change of the election switch")
            .expect("the holder stopped")
    }

    #[tokio::test]
    async fn elections_are_off_during_an_install_and_on_again_after_a_grace() {
        let (installs, watching) = watch::channel(false);
        let (switched, mut switches) = mpsc::unbounded_channel();
        let holder = tokio::spawn(hold_during_installs(watching, GRACE, move |on| {
            let _ = switched.send(on);
        }));

        installs.send_replace(true);
        assert!(!next(&mut switches).await, "elections stayed on");
        let done = tokio::time::Instant::now();
        installs.send_replace(false);
        assert!(next(&mut switches).await, "elections stayed off");
        assert!(
            done.elapsed() >= GRACE,
            "elections back on before the grace"
        );

        // A second install inside the grace keeps them off until it is done.
        installs.send_replace(true);
        assert!(!next(&mut switches).await);
        installs.send_replace(false);
        installs.send_replace(true);
        assert!(
            tokio::time::timeout(GRACE * 4, switches.recv())
                .await
                .is_err(),
            "elections came back on during an install"
        );
        installs.send_replace(false);
        assert!(next(&mut switches).await);

        drop(installs);
        tokio::time::timeout(LIMIT, holder)
            .await
            .expect("the holder outlived the store")
            .unwrap();
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;

    #[test]
    fn elections_are_on_only_while_no_hold_is_set() {
        let switched = Arc::new(Mutex::new(Vec::new()));
        let holds = ElectionHolds::new({
            let switched = switched.clone();
            move |on| switched.lock().unwrap().push(on)
        });
        holds.set(Hold::DiskLow, true);
        holds.set(Hold::Installing, true);
        holds.set(Hold::DiskLow, false);
        assert_eq!(*switched.lock().unwrap(), vec![false], "still installing");
        holds.set(Hold::Installing, false);
        holds.set(Hold::Installing, false);
        assert_eq!(*switched.lock().unwrap(), vec![false, true]);
    }
}
