//! How long writes are unavailable when the leader dies: kill -9 of the
//! leader's process, then ADDs through the exec'd plugin on a surviving
//! node, one after another, until one is acknowledged. The figure runs from
//! the kill to that acknowledgement.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plugin::{Ipkeep, Target};
use crate::cluster::Cluster;

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// Milliseconds from each kill to the first acknowledged ADD.
    pub trials_ms: Vec<f64>,
    pub median_ms: f64,
    pub worst_ms: f64,
    /// ADDs that failed (error 11) while there was no leader.
    pub failed_adds: usize,
}

/// Longest one trial may wait for a new leader before giving up.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);

pub fn measure(cluster: &mut Cluster, trials: usize, log_dir: &Path) -> Failover {
    let mut trials_ms = Vec::new();
    let mut failed_adds = 0;
    for trial in 0..trials {
        let leader = cluster.wait_for_leader(TRIAL_LIMIT);
        let Some(survivor) = cluster
            .ids()
            .into_iter()
            .find(|&id| id != leader && cluster.status(id).is_some_and(|s| s.role == "Follower"))
        else {
            break;
        };
        let target = Ipkeep {
            label: format!("failover n{survivor}"),
            subnet: "bench".into(),
            socket: cluster.node(survivor).socket(),
            log: log_dir.join(format!("plugin-failover-n{survivor}.log")),
        };
        cluster.kill9(leader);
        let killed = Instant::now();
        let mut attempt = 0;
        while killed.elapsed() < TRIAL_LIMIT {
            attempt += 1;
            let out = target
                .call("ADD", &format!("failover-{trial}-{attempt}"))
                .run();
            if out.ok() {
                trials_ms.push(killed.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            failed_adds += 1;
        }
        cluster.spawn(leader);
        cluster.wait_serving(leader, TRIAL_LIMIT);
        // The next trial starts from a whole cluster, as a crash in
        // production would: a node still catching up cannot win an election
        // and delays the others' (openraft makes a candidate with a shorter
        // log wait longer).
        cluster.wait_caught_up(TRIAL_LIMIT);
    }
    let mut sorted = trials_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Failover {
        median_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        worst_ms: sorted.last().copied().unwrap_or(f64::NAN),
        trials_ms,
        failed_adds,
    }
}
