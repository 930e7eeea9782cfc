//! ipkeep-chaos: runs a cluster of real ipkeepd nodes in network namespaces,
//! a plugin workload on every node, and faults on a seeded schedule; then
//! checks that no address was given twice, nothing acknowledged was lost,
//! all nodes agree, and minority nodes answered "try again". Needs root.
//!
//!     cargo build --release --workspace --bins
//!     sudo target/release/ipkeep-chaos --nodes 5 --duration 30m --seed 42

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ipkeep_cluster_test::chaos::{run, ChaosOptions};

#[derive(Debug, Parser)]
#[command(name = "ipkeep-chaos", version)]
struct Args {
    /// Nodes in the cluster (all voters).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(3..=7))]
    nodes: u64,
    /// How long faults are injected: 90s, 10m, 1h (or plain seconds).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the workload [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Plugin-exec'ing workers per node.
    #[arg(long, default_value_t = 2)]
    workers_per_node: usize,
    /// The daemons' write timeout (a minority must answer within it, plus 2 s).
    #[arg(long, default_value_t = 3000)]
    write_timeout_ms: u64,
    /// Directory for the nodes' data and logs, history.json and summary.txt
    /// [default: a new directory under /tmp].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// As every ipkeep flag (ms, s, m, h, d), and plain seconds too.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return ipkeep_api::units::duration(&format!("{s}s"));
    }
    ipkeep_api::units::duration(s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let out = match args.out {
        // Two runs sharing a directory would start, kill and wipe each
        // other's nodes: insist on a fresh one.
        Some(dir)
            if dir.exists()
                && std::fs::read_dir(&dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true) =>
        {
            eprintln!(
                "error: --out {} is not an empty directory; give a new one",
                dir.display()
            );
            return ExitCode::from(2);
        }
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("ipkeep-chaos-")
            .tempdir()
            .expect("temp dir")
            .keep(),
    };
    println!(
        "ipkeep-chaos: seed {seed} (repeat with --seed {seed}), {} nodes, {} s, output in {}",
        args.nodes,
        args.duration.as_secs(),
        out.display()
    );
    let report = run(ChaosOptions {
        nodes: args.nodes as usize,
        duration: args.duration,
        seed,
        workers_per_node: args.workers_per_node,
        out,
        write_timeout_ms: args.write_timeout_ms,
    });
    print!("{}", report.summary);
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
