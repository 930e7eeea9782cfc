//! ADD and DEL latency through the exec'd plugin, sequential and with
//! concurrent callers, and plugin start-up (VERSION): the same rows for the
//! reference host-local plugin and for each ipkeep target.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use super::{percentile, run_concurrently, BenchOptions};
use crate::cni::{ipam_only_conf, CniCall};

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
pub(crate) trait Target: Sync {
    fn name(&self) -> String;
    fn call(&self, command: &str, container: &str) -> CniCall;
}

pub(crate) struct HostLocal {
    pub data_dir: PathBuf,
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

pub(crate) struct Ipkeep {
    pub label: String,
    /// The subnet the ipam config names.
    pub subnet: String,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Target for Ipkeep {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn call(&self, command: &str, container: &str) -> CniCall {
        let ipam = json!({
            "type": "ipkeep",
            "subnet": self.subnet,
            "socket": self.socket,
            "logFile": self.log,
            "logLevel": "warn",
        });
        CniCall::ipkeep(command)
            .attachment(container, "eth0", "/var/run/netns/bench")
            .stdin(&ipam_only_conf("1.0.0", "bench", ipam))
    }
}

/// Runs `calls` calls of `command` from `callers` threads; container ids
/// are `prefix-N`, so that a DEL row releases what its ADD row took.
pub(crate) fn measure(
    target: &dyn Target,
    command: &str,
    prefix: &str,
    calls: usize,
    callers: usize,
) -> Row {
    let timed = run_concurrently(
        callers,
        calls,
        || (),
        |_, i| target.call(command, &format!("{prefix}-{i}")).run().ok(),
    );
    let latencies = timed.latencies;
    let wall = timed.wall;
    Row {
        target: target.name(),
        command: command.into(),
        callers,
        calls,
        failures: timed.failures,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        calls_per_s: calls as f64 / wall.as_secs_f64(),
        p50_ratio: None,
        throughput_ratio: None,
    }
}

pub(crate) fn rows_for(target: &dyn Target, options: &BenchOptions, tag: &str) -> Vec<Row> {
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
pub(crate) fn add_ratios(rows: &mut [Row]) {
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
