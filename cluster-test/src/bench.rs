//! The benchmark behind `ipkeep-bench`: ADD and DEL latency through the
//! exec'd plugin, sequential and with concurrent callers, for the reference
//! host-local plugin and for ipkeep on one node and on three voters, in one
//! run on one machine; and plugin start-up (VERSION). Figures are printed,
//! never asserted: this is a measurement, not a test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterOptions};
use crate::cni::{ipam_only_conf, CniCall};
use crate::daemon::{Daemon, DaemonOptions};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Calls per row (each row: this many ADDs, then as many DELs).
    pub calls: usize,
    /// Concurrent callers of the concurrent rows.
    pub concurrency: Vec<usize>,
    /// Where the table (bench.txt), the JSON (bench.json) and the daemons go.
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub target: String,
    pub command: String,
    pub callers: usize,
    pub calls: usize,
    pub failures: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub calls_per_s: f64,
    /// ipkeep's p50 over host-local's p50 in the same row (None for host-local).
    pub p50_ratio: Option<f64>,
    /// ipkeep's throughput over host-local's in the same row.
    pub throughput_ratio: Option<f64>,
}

/// Something that answers CNI calls: how to build one call of it.
trait Target: Sync {
    fn name(&self) -> String;
    fn call(&self, command: &str, container: &str) -> CniCall;
}

struct HostLocal {
    data_dir: PathBuf,
}

impl Target for HostLocal {
    fn name(&self) -> String {
        "host-local".into()
    }
    fn call(&self, command: &str, container: &str) -> CniCall {
        let ipam = json!({
            "type": "host-local",
            "ranges": [[{"subnet": "10.88.0.0/16"}]],
            "dataDir": self.data_dir,
        });
        CniCall::reference("host-local", command)
            .attachment(container, "eth0", "/var/run/netns/bench")
            .stdin(&ipam_only_conf("1.0.0", "bench", ipam))
    }
}

struct Ipkeep {
    label: String,
    socket: PathBuf,
    log: PathBuf,
}

impl Target for Ipkeep {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn call(&self, command: &str, container: &str) -> CniCall {
        let ipam = json!({
            "type": "ipkeep",
            "subnet": "bench",
            "socket": self.socket,
            "logFile": self.log,
            "logLevel": "warn",
        });
        CniCall::ipkeep(command)
            .attachment(container, "eth0", "/var/run/netns/bench")
            .stdin(&ipam_only_conf("1.0.0", "bench", ipam))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

/// Runs `calls` calls of `command` from `callers` threads; container ids
/// are `prefix-N`, so that a DEL row releases what its ADD row took.
fn measure(target: &dyn Target, command: &str, prefix: &str, calls: usize, callers: usize) -> Row {
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..callers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= calls {
                            return mine;
                        }
                        let call = target.call(command, &format!("{prefix}-{i}"));
                        let t = Instant::now();
                        let out = call.run();
                        mine.push(t.elapsed());
                        if !out.ok() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("bench worker"))
            .collect()
    });
    let wall = started.elapsed();
    latencies.sort();
    Row {
        target: target.name(),
        command: command.into(),
        callers,
        calls,
        failures: failures.into_inner(),
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        calls_per_s: calls as f64 / wall.as_secs_f64(),
        p50_ratio: None,
        throughput_ratio: None,
    }
}

fn rows_for(target: &dyn Target, options: &BenchOptions, tag: &str) -> Vec<Row> {
    let mut rows = vec![measure(target, "VERSION", "v", options.calls, 1)];
    let mut callers = vec![1];
    callers.extend(&options.concurrency);
    for c in callers {
        let prefix = format!("{tag}-c{c}");
        rows.push(measure(target, "ADD", &prefix, options.calls, c));
        rows.push(measure(target, "DEL", &prefix, options.calls, c));
    }
    rows
}

/// Fills in each ipkeep row's ratios to the host-local row of the same
/// command and callers.
fn add_ratios(rows: &mut [Row]) {
    let reference: Vec<Row> = rows
        .iter()
        .filter(|r| r.target == "host-local")
        .cloned()
        .collect();
    for row in rows.iter_mut().filter(|r| r.target != "host-local") {
        if let Some(base) = reference
            .iter()
            .find(|b| b.command == row.command && b.callers == row.callers)
        {
            row.p50_ratio = Some(row.p50_ms / base.p50_ms);
            row.throughput_ratio = Some(row.calls_per_s / base.calls_per_s);
        }
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<22} {:<8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10}\n",
        "target",
        "command",
        "callers",
        "fails",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "calls/s",
        "p50 ratio",
        "tput ratio"
    );
    let ratio = |r: Option<f64>| r.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in rows {
        out.push_str(&format!(
            "{:<22} {:<8} {:>7} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>9} {:>10}\n",
            r.target,
            r.command,
            r.callers,
            r.failures,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.calls_per_s,
            ratio(r.p50_ratio),
            ratio(r.throughput_ratio)
        ));
    }
    out
}

/// Runs every row and writes bench.txt and bench.json into `options.out`.
pub fn run(options: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(&options.out)?;
    crate::raise_fd_limit();
    let mut rows = Vec::new();

    let host_local = HostLocal {
        data_dir: options.out.join("host-local"),
    };
    eprintln!("bench: host-local");
    rows.extend(rows_for(&host_local, options, "hl"));

    eprintln!("bench: ipkeep, one node");
    let single = Daemon::start(DaemonOptions {
        default_subnet: "bench=10.89.0.0/16".into(),
        ..Default::default()
    });
    let target = Ipkeep {
        label: "ipkeep 1 node".into(),
        socket: single.socket(),
        log: options.out.join("plugin-single.log"),
    };
    rows.extend(rows_for(&target, options, "one"));
    drop(single);

    eprintln!("bench: ipkeep, three voters (called on the leader's node and on a follower's)");
    let cluster_dir = options.out.join("cluster");
    std::fs::create_dir_all(&cluster_dir)?;
    let cluster = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "bench=10.87.0.0/16".into(),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            ..Default::default()
        },
        &cluster_dir,
    );
    let leader = leader_of(&cluster.node(1).socket()).unwrap_or(1);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap_or(2);
    for (label, id) in [
        ("ipkeep 3v on leader", leader),
        ("ipkeep 3v on follower", follower),
    ] {
        let target = Ipkeep {
            label: label.into(),
            socket: cluster.node(id).socket(),
            log: options.out.join(format!("plugin-n{id}.log")),
        };
        rows.extend(rows_for(&target, options, &format!("n{id}")));
    }
    drop(cluster);

    add_ratios(&mut rows);
    write_outputs(&options.out, &rows)?;
    Ok(rows)
}

fn leader_of(socket: &Path) -> Option<u64> {
    let mut client = ipkeep_api::Client::connect(socket, Duration::from_secs(5)).ok()?;
    match client
        .call(&ipkeep_api::message::Request::NodeStatus)
        .ok()?
    {
        ipkeep_api::message::Response::NodeStatus(s) => s.leader,
        _ => None,
    }
}

fn write_outputs(dir: &Path, rows: &[Row]) -> anyhow::Result<()> {
    std::fs::write(dir.join("bench.txt"), table(rows))?;
    let json: Value = serde_json::to_value(rows)?;
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
