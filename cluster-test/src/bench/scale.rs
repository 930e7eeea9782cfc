//! ipkeep with many live allocations: three voters on a /12, filled through
//! the node API to each level in turn, then measured as an operator would
//! see it: resident memory, data directory size, the last snapshot build,
//! a wiped node's rejoin by snapshot install, a node's restart to its first
//! acknowledged ADD, and ADD latency through the exec'd plugin.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plugin::{Ipkeep, Target};
use super::{api, percentile};
use crate::cluster::{Cluster, ClusterOptions};
use crate::procfs;

/// A /12: 1,048,574 usable addresses.
pub const SUBNET: &str = "scale";
const CIDR: &str = "10.64.0.0/12";
/// Connections filling the state.
const FILL_CLIENTS: usize = 64;
/// Sequential plugin ADDs measured at each level.
const PROBE_CALLS: usize = 200;
const LIMIT: Duration = Duration::from_secs(300);
/// Longest wait for the daemons to go idle after a fill.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// Writes per round, and their clients, while a follower is down: few
/// clients, so that the writes make many Raft entries (each its own or
/// nearly) and the leader snapshots and purges soon.
const CHURN_ROUND: usize = 2_000;
const CHURN_CLIENTS: usize = 2;

#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub live: usize,
    pub fill_failures: usize,
    pub fill_per_s: f64,
    /// From caught up to the daemons gone idle, before the measurements.
    pub settle_ms: u64,
    /// Resident memory of the leader's daemon, and the largest of the three.
    pub leader_rss_mib: f64,
    pub max_rss_mib: f64,
    /// Disk used by the leader's data directory.
    pub data_dir_mib: f64,
    /// The leader's last snapshot: its index, build time and size.
    pub snapshot_index: Option<u64>,
    pub snapshot_build_ms: Option<u64>,
    pub snapshot_mib: Option<f64>,
    /// A wiped follower added back as a learner: from `member add` to
    /// caught up, and the snapshot install inside it.
    pub rejoin_ms: Option<f64>,
    pub snapshot_install_ms: Option<u64>,
    /// The rejoined daemon's peak resident memory (VmHWM).
    pub rejoin_peak_mib: Option<f64>,
    /// kill -9 of a follower, restart, until an ADD through it is acknowledged.
    pub restart_to_serving_ms: Option<f64>,
    /// A follower down while the others write past its log: from its
    /// restart to caught up, the snapshot install inside it (over the state
    /// it loaded from its own disk), and its peak resident memory (VmHWM).
    pub lagged_catch_up_ms: Option<f64>,
    pub lagged_install_ms: Option<u64>,
    pub lagged_peak_mib: Option<f64>,
    /// Terms the cluster went through from that restart to caught up: 0
    /// unless an election took place (the returning node's, say).
    pub lagged_new_terms: Option<u64>,
    /// Sequential ADDs through the exec'd plugin on the leader's node.
    pub add_p50_ms: f64,
    pub add_p99_ms: f64,
    pub add_failures: usize,
}

pub fn start_cluster(dir: &Path) -> Cluster {
    Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: format!("{SUBNET}={CIDR}"),
            // The daemon's defaults: what an operator would run.
            snapshot_every: 10_000,
            keep_logs: 1_000,
            ..Default::default()
        },
        dir,
    )
}

fn rss_mib(pid: u32) -> Option<f64> {
    Some(crate::procfs::status_kib(pid, "VmRSS")? as f64 / 1024.0)
}

/// Disk blocks used under `dir`, in MiB.
fn disk_mib(dir: &Path) -> f64 {
    let mut bytes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.blocks() * 512;
            }
        }
    }
    bytes as f64 / (1 << 20) as f64
}

fn plugin_on(cluster: &Cluster, id: u64, log_dir: &Path) -> Ipkeep {
    Ipkeep {
        label: format!("scale n{id}"),
        subnet: SUBNET.into(),
        socket: cluster.node(id).socket(),
        log: log_dir.join(format!("plugin-scale-n{id}.log")),
    }
}

/// Sequential plugin ADDs then DELs (so the level stays where it is):
/// p50, p99 and failures of the ADDs.
/// Waits until the daemons together use under a tenth of a core over a
/// quarter second (or `limit` passes); returns how long that took.
fn wait_idle(cluster: &Cluster, limit: Duration) -> u64 {
    let started = Instant::now();
    let window = Duration::from_millis(250);
    // Clock ticks are 10 ms: a tenth of a core over 250 ms is 2.5 ticks.
    const IDLE_TICKS: u64 = 2;
    let ticks = || -> u64 {
        cluster
            .ids()
            .into_iter()
            .filter_map(|id| procfs::cpu_ticks(cluster.node(id).pid()?))
            .sum()
    };
    while started.elapsed() < limit {
        let before = ticks();
        std::thread::sleep(window);
        if ticks().saturating_sub(before) <= IDLE_TICKS {
            break;
        }
    }
    started.elapsed().as_millis() as u64
}

fn probe_latency(target: &Ipkeep, tag: &str) -> (f64, f64, usize) {
    let mut latencies = Vec::with_capacity(PROBE_CALLS);
    let mut failures = 0;
    for i in 0..PROBE_CALLS {
        let t = Instant::now();
        let out = target.call("ADD", &format!("{tag}-{i}")).run();
        latencies.push(t.elapsed());
        if !out.ok() {
            failures += 1;
        }
    }
    for i in 0..PROBE_CALLS {
        target.call("DEL", &format!("{tag}-{i}")).run();
    }
    latencies.sort();
    (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        failures,
    )
}

/// A rejoin: from `member add` to caught up, the snapshot install inside it,
/// and the rejoined daemon's peak resident memory (through the install and
/// the replay of the log after it).
struct Rejoined {
    took_ms: f64,
    install_ms: Option<u64>,
    peak_mib: Option<f64>,
}

/// A daemon's peak resident memory so far (VmHWM), in MiB.
fn peak_mib(cluster: &Cluster, id: u64) -> Option<f64> {
    cluster
        .node(id)
        .pid()
        .and_then(|pid| crate::procfs::status_kib(pid, "VmHWM"))
        .map(|kib| kib as f64 / 1024.0)
}

/// A follower is removed, wiped, started empty and added back as a learner;
/// it can only catch up by installing the leader's snapshot.
fn rejoin(cluster: &mut Cluster, victim: u64) -> Option<Rejoined> {
    let id = victim.to_string();
    cluster.wipe(victim);
    cluster
        .ctl_until_ok(victim, &["member", "remove", &id], LIMIT)
        .ok()?;
    cluster.spawn(victim);
    cluster.wait_serving(victim, LIMIT);
    let addr = cluster.node(victim).addr();
    let started = Instant::now();
    cluster
        .ctl_until_ok(victim, &["member", "add", &id, &addr], LIMIT)
        .ok()?;
    if !cluster.wait_caught_up(LIMIT) {
        return None;
    }
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let install_ms = cluster
        .status(victim)
        .and_then(|s| s.last_snapshot_installed)
        .map(|t| t.millis);
    let peak_mib = peak_mib(cluster, victim);
    cluster
        .ctl_until_ok(victim, &["member", "promote", &id], LIMIT)
        .ok()?;
    Some(Rejoined {
        took_ms: took,
        install_ms,
        peak_mib,
    })
}

/// A follower that comes back after the leader purged the log it missed:
/// from its restart to caught up, the install, and the daemon's peak memory.
struct Lagged {
    catch_up_ms: f64,
    new_terms: Option<u64>,
    install_ms: Option<u64>,
    peak_mib: Option<f64>,
}

/// kill -9 of `victim`; the cluster goes on writing (ADD then DEL, the live
/// level unchanged) until the leader has purged the entry after the
/// victim's last; then the victim restarts. It loads its own state from
/// disk and can catch up only by installing the leader's snapshot over
/// it: the case in which a daemon holds two states at once. `None` when
/// any step does not happen within its limit.
fn lag_and_return(cluster: &mut Cluster, victim: u64) -> Option<Lagged> {
    let seen = cluster.status(victim)?;
    let last = seen.last_log_index.max(seen.last_applied)?;
    cluster.kill9(victim);
    let started = Instant::now();
    let mut round = 0;
    loop {
        let leader = cluster.wait_for_leader(LIMIT);
        let purged = cluster.status(leader).and_then(|s| s.purged_index);
        if purged.is_some_and(|p| p > last) {
            break;
        }
        if started.elapsed() > LIMIT {
            eprintln!("bench: the leader did not purge past {last} in {LIMIT:?}");
            return None;
        }
        let socket = cluster.node(leader).socket();
        api::churn(
            &socket,
            SUBNET,
            CHURN_CLIENTS,
            round * CHURN_ROUND,
            CHURN_ROUND,
        );
        round += 1;
    }
    eprintln!(
        "bench: leader purged past node {victim}'s log after {} churn writes",
        round * CHURN_ROUND * 2
    );
    let term = |cluster: &Cluster| {
        let leader = cluster.wait_for_leader(LIMIT);
        cluster.status(leader).map(|s| s.term)
    };
    let term_before = term(cluster);
    let started = Instant::now();
    cluster.spawn(victim);
    cluster.wait_serving(victim, LIMIT);
    if !cluster.wait_caught_up(LIMIT) {
        return None;
    }
    let catch_up_ms = started.elapsed().as_secs_f64() * 1000.0;
    let new_terms = term(cluster)
        .zip(term_before)
        .map(|(after, before)| after.saturating_sub(before));
    let install_ms = cluster
        .status(victim)
        .and_then(|s| s.last_snapshot_installed)
        .filter(|t| t.index > last)
        .map(|t| t.millis);
    let peak_mib = peak_mib(cluster, victim);
    Some(Lagged {
        catch_up_ms,
        new_terms,
        install_ms,
        peak_mib,
    })
}

/// kill -9 of `victim`, restart, ADDs through it until one is acknowledged.
fn restart_to_serving(cluster: &mut Cluster, victim: u64, log_dir: &Path) -> Option<f64> {
    cluster.kill9(victim);
    let target = plugin_on(cluster, victim, log_dir);
    let started = Instant::now();
    cluster.spawn(victim);
    let mut attempt = 0;
    while started.elapsed() < LIMIT {
        attempt += 1;
        if target
            .call("ADD", &format!("restart-{victim}-{attempt}"))
            .run()
            .ok()
        {
            let took = started.elapsed().as_secs_f64() * 1000.0;
            target
                .call("DEL", &format!("restart-{victim}-{attempt}"))
                .run();
            return Some(took);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Fills the cluster to each of `levels` (ascending) and measures it there.
pub fn measure(cluster: &mut Cluster, levels: &[usize], log_dir: &Path) -> Vec<ScaleRow> {
    let mut rows = Vec::new();
    let mut live = 0;
    for &level in levels {
        let leader = cluster.wait_for_leader(LIMIT);
        eprintln!("bench: filling to {level} live allocations");
        let (fill_failures, took) = api::fill(
            &cluster.node(leader).socket(),
            SUBNET,
            FILL_CLIENTS,
            live,
            level - live,
        );
        let fill_per_s = (level - live - fill_failures) as f64 / took.as_secs_f64();
        live = level;
        cluster.wait_caught_up(LIMIT);
        // Each node builds a snapshot as the fill crosses --snapshot-every,
        // often in its last seconds; memory and latency are the level's,
        // not those of three builds at once on two cores.
        let settle_ms = wait_idle(cluster, SETTLE_LIMIT);
        eprintln!("bench: the daemons went idle {settle_ms} ms after the fill");

        let leader = cluster.wait_for_leader(LIMIT);
        let rss: Vec<(u64, f64)> = cluster
            .ids()
            .into_iter()
            .filter_map(|id| Some((id, rss_mib(cluster.node(id).pid()?)?)))
            .collect();
        let leader_status = cluster.status(leader);
        let built = leader_status.as_ref().and_then(|s| s.last_snapshot_built);
        let (add_p50_ms, add_p99_ms, add_failures) = probe_latency(
            &plugin_on(cluster, leader, log_dir),
            &format!("probe-{level}"),
        );
        let followers: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let restart_to_serving_ms = followers
            .first()
            .and_then(|&f| restart_to_serving(cluster, f, log_dir));
        let rejoined = followers.last().and_then(|&f| rejoin(cluster, f));
        let lagged = followers.first().and_then(|&f| lag_and_return(cluster, f));
        rows.push(ScaleRow {
            live: level,
            fill_failures,
            fill_per_s,
            settle_ms,
            leader_rss_mib: rss
                .iter()
                .find(|(id, _)| *id == leader)
                .map_or(f64::NAN, |(_, r)| *r),
            max_rss_mib: rss.iter().map(|(_, r)| *r).fold(f64::NAN, f64::max),
            data_dir_mib: disk_mib(&cluster.node(leader).data_dir()),
            snapshot_index: built.map(|b| b.index),
            snapshot_build_ms: built.map(|b| b.millis),
            snapshot_mib: built.map(|b| b.bytes as f64 / (1 << 20) as f64),
            rejoin_ms: rejoined.as_ref().map(|r| r.took_ms),
            snapshot_install_ms: rejoined.as_ref().and_then(|r| r.install_ms),
            rejoin_peak_mib: rejoined.as_ref().and_then(|r| r.peak_mib),
            restart_to_serving_ms,
            lagged_catch_up_ms: lagged.as_ref().map(|l| l.catch_up_ms),
            lagged_install_ms: lagged.as_ref().and_then(|l| l.install_ms),
            lagged_peak_mib: lagged.as_ref().and_then(|l| l.peak_mib),
            lagged_new_terms: lagged.as_ref().and_then(|l| l.new_terms),
            add_p50_ms,
            add_p99_ms,
            add_failures,
        });
    }
    rows
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

pub fn table(rows: &[ScaleRow]) -> String {
    let mut out = format!(
        "{:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6}\n",
        "live",
        "fill/s",
        "rss MiB",
        "max rss",
        "disk MiB",
        "snap idx",
        "build ms",
        "snap MiB",
        "rejoin ms",
        "install ms",
        "peak MiB",
        "restart ms",
        "lagged ms",
        "lag inst",
        "lag peak",
        "lag terms",
        "ADD p50",
        "ADD p99",
        "fails"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>9} {:>8.0} {:>9.1} {:>9.1} {:>8.1} {:>9} {:>9} {:>8} {:>9} {:>10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8.2} {:>8.2} {:>6}\n",
            r.live,
            r.fill_per_s,
            r.leader_rss_mib,
            r.max_rss_mib,
            r.data_dir_mib,
            opt(r.snapshot_index),
            opt(r.snapshot_build_ms),
            opt(r.snapshot_mib.map(|m| format!("{m:.1}"))),
            opt(r.rejoin_ms.map(|m| format!("{m:.0}"))),
            opt(r.snapshot_install_ms),
            opt(r.rejoin_peak_mib.map(|m| format!("{m:.1}"))),
            opt(r.restart_to_serving_ms.map(|m| format!("{m:.0}"))),
            opt(r.lagged_catch_up_ms.map(|m| format!("{m:.0}"))),
            opt(r.lagged_install_ms),
            opt(r.lagged_peak_mib.map(|m| format!("{m:.1}"))),
            opt(r.lagged_new_terms),
            r.add_p50_ms,
            r.add_p99_ms,
            r.add_failures
        ));
    }
    out
}
