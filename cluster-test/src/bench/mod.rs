//! The benchmark behind `ipkeep-bench`, all in one run on one machine:
//!
//! - ADD/DEL latency and throughput through the exec'd plugin, sequential
//!   and with concurrent callers, for host-local (the reference) and for
//!   ipkeep on one node, on three voters (called on the leader's node and on
//!   a follower's) and on a learner's node ([`plugin`]);
//! - committed allocations per second through the node API ([`api`]);
//! - write unavailability after kill -9 of the leader ([`failover`]);
//! - memory, disk, snapshots, restart and latency with many live
//!   allocations ([`scale`]).
//!
//! Figures are printed and written (bench.txt, bench.json), never asserted:
//! this is a measurement, not a test.

pub mod api;
pub mod failover;
pub mod plugin;
pub mod scale;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cluster::{Cluster, ClusterOptions};
use crate::daemon::{Daemon, DaemonOptions};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Calls per plugin row (each row: this many ADDs, then as many DELs).
    pub calls: usize,
    /// Concurrent callers of the concurrent plugin rows.
    pub concurrency: Vec<usize>,
    /// Concurrent node-API clients, one row each.
    pub api_clients: Vec<usize>,
    /// Calls per node-API row.
    pub api_calls: usize,
    /// kill -9 of the leader, this many times.
    pub failover_trials: usize,
    /// Live-allocation levels of the scale rows (ascending); empty: none.
    pub scale: Vec<usize>,
    /// Where the table (bench.txt), the JSON (bench.json) and the daemons go.
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The ipkeep plugin exec'd, and whether it is linked statically.
    pub plugin_binary: PluginBinary,
    pub plugin: Vec<plugin::Row>,
    pub node_api: Vec<api::ApiRow>,
    pub failover: Option<failover::Failover>,
    pub scale: Vec<scale::ScaleRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginBinary {
    pub path: PathBuf,
    pub statically_linked: bool,
}

/// What a batch of timed calls gave: each call's latency (sorted), the
/// calls that failed, and the wall time of the whole batch.
pub(crate) struct Timed {
    pub latencies: Vec<Duration>,
    pub failures: usize,
    pub wall: Duration,
}

/// Makes `calls` calls from `workers` threads at once: `op(state, i)` makes
/// call number `i` with its worker's own state (a connection, say) and says
/// whether it succeeded.
pub(crate) fn run_concurrently<S>(
    workers: usize,
    calls: usize,
    init: impl Fn() -> S + Sync,
    op: impl Fn(&mut S, usize) -> bool + Sync,
) -> Timed {
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut state = init();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= calls {
                            return mine;
                        }
                        let t = Instant::now();
                        let ok = op(&mut state, i);
                        mine.push(t.elapsed());
                        if !ok {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bench worker"))
            .collect()
    });
    let wall = started.elapsed();
    latencies.sort();
    Timed {
        latencies,
        failures: failures.into_inner(),
        wall,
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

/// The whole report as text.
pub fn render(report: &Report) -> String {
    let binary = &report.plugin_binary;
    let mut out = format!(
        "== ADD/DEL through the exec'd plugin (ratios: ipkeep / host-local)\nipkeep plugin: {} ({})\n",
        binary.path.display(),
        if binary.statically_linked {
            "statically linked"
        } else {
            "dynamically linked: cargo build-plugin builds the static one"
        }
    );
    out.push_str(&plugin::table(&report.plugin));
    if !report.node_api.is_empty() {
        out.push_str("\n== committed allocations through the node API, 3 voters, clients on the leader's node\n");
        out.push_str(&api::table(&report.node_api));
    }
    if let Some(f) = &report.failover {
        out.push_str(&format!(
            "\n== kill -9 of the leader to the first acknowledged ADD on a follower\ntrials (ms): {}\nmedian {:.0} ms, worst {:.0} ms, ADDs refused meanwhile: {}\n",
            f.trials_ms
                .iter()
                .map(|t| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            f.median_ms,
            f.worst_ms,
            f.failed_adds
        ));
    }
    if !report.scale.is_empty() {
        out.push_str("\n== live allocations, 3 voters on a /12\n");
        out.push_str(&scale::table(&report.scale));
    }
    out
}

/// Runs every part and writes bench.txt and bench.json into `options.out`.
pub fn run(options: &BenchOptions) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&options.out)?;
    crate::raise_fd_limit();
    let path = crate::bins::plugin();
    let statically_linked = !crate::bins::is_dynamically_linked(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut report = Report {
        plugin_binary: PluginBinary {
            path,
            statically_linked,
        },
        plugin: Vec::new(),
        node_api: Vec::new(),
        failover: None,
        scale: Vec::new(),
    };

    let host_local = plugin::HostLocal {
        data_dir: options.out.join("host-local"),
    };
    eprintln!("bench: host-local");
    report
        .plugin
        .extend(plugin::rows_for(&host_local, options, "hl"));

    eprintln!("bench: ipkeep, one node");
    let single = Daemon::start(DaemonOptions {
        default_subnet: "bench=10.89.0.0/16".into(),
        ..Default::default()
    });
    let target = plugin::Ipkeep {
        label: "ipkeep 1 node".into(),
        subnet: "bench".into(),
        socket: single.socket(),
        log: options.out.join("plugin-single.log"),
    };
    report
        .plugin
        .extend(plugin::rows_for(&target, options, "one"));
    drop(single);

    eprintln!("bench: ipkeep, three voters and a learner");
    let mut cluster = voters_and_learner(&options.out.join("cluster"))?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != LEARNER)
        .unwrap_or(2);
    for (label, id) in [
        ("ipkeep 3v on leader", leader),
        ("ipkeep 3v on follower", follower),
        ("ipkeep 3v on learner", LEARNER),
    ] {
        let target = plugin::Ipkeep {
            label: label.into(),
            subnet: "bench".into(),
            socket: cluster.node(id).socket(),
            log: options.out.join(format!("plugin-n{id}.log")),
        };
        report
            .plugin
            .extend(plugin::rows_for(&target, options, &format!("n{id}")));
    }

    eprintln!("bench: node API");
    for &clients in &options.api_clients {
        report.node_api.extend(api::add_del_rows(
            &cluster.node(leader).socket(),
            "bench",
            clients,
            options.api_calls,
        ));
    }

    if options.failover_trials > 0 {
        eprintln!("bench: kill -9 of the leader");
        report.failover = Some(failover::measure(
            &mut cluster,
            options.failover_trials,
            &options.out,
        ));
    }
    drop(cluster);

    if !options.scale.is_empty() {
        let mut cluster = scale::start_cluster(&options.out.join("scale"));
        report.scale = scale::measure(&mut cluster, &options.scale, &options.out);
    }

    plugin::add_ratios(&mut report.plugin);
    write_outputs(&options.out, &report)?;
    Ok(report)
}

/// The learner of the three-voter cluster.
const LEARNER: u64 = 4;

/// Four nodes started as voters; node 4 is then removed, wiped and added
/// back as a learner (a cluster cannot be started with learners).
fn voters_and_learner(dir: &Path) -> anyhow::Result<Cluster> {
    std::fs::create_dir_all(dir)?;
    let mut cluster = Cluster::start(
        ClusterOptions {
            nodes: 4,
            subnet: "bench=10.87.0.0/16".into(),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            ..Default::default()
        },
        dir,
    );
    cluster.wait_for_leader(Duration::from_secs(30));
    let id = LEARNER.to_string();
    // Asked through another node, which forwards to whoever leads (node 4
    // itself, possibly, until it is removed).
    ctl(&cluster, &["member", "remove", &id])?;
    cluster.wipe(LEARNER);
    cluster.spawn(LEARNER);
    cluster.wait_serving(LEARNER, Duration::from_secs(30));
    let addr = cluster.node(LEARNER).addr();
    ctl(&cluster, &["member", "add", &id, &addr])?;
    Ok(cluster)
}

fn ctl(cluster: &Cluster, args: &[&str]) -> anyhow::Result<()> {
    cluster
        .ctl_until_ok(LEARNER, args, Duration::from_secs(60))
        .map_err(|last| anyhow::anyhow!("ipkeepctl {}: {last}", args.join(" ")))
}

fn write_outputs(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(dir.join("bench.txt"), render(report))?;
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    Ok(())
}
