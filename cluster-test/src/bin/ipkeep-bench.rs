//! ipkeep-bench: ADD/DEL latency and throughput through the exec'd plugin,
//! host-local against ipkeep on one node, on three voters and on a learner;
//! node-API throughput; write unavailability after kill -9 of the leader;
//! and, with --scale, memory, disk, snapshots and restart with many live
//! allocations. Needs root (the cluster nodes run in network namespaces).
//!
//!     cargo build --release --workspace --bins
//!     sudo target/release/ipkeep-bench --scale 100000,1000000

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ipkeep_cluster_test::bench::{render, run, BenchOptions};

#[derive(Debug, Parser)]
#[command(name = "ipkeep-bench", version)]
struct Args {
    /// Calls per row (that many ADDs, then as many DELs).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(10..))]
    calls: u64,
    /// Concurrent callers for the concurrent rows, comma-separated.
    #[arg(long, default_value = "8,32,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Concurrent node-API clients, one row each, comma-separated.
    #[arg(long, default_value = "1,8,64,256", value_delimiter = ',')]
    api_clients: Vec<usize>,
    /// Calls per node-API row.
    #[arg(long, default_value_t = 10_000)]
    api_calls: usize,
    /// kill -9 of the leader, this many times (0: skip).
    #[arg(long, default_value_t = 5)]
    failover_trials: usize,
    /// Live-allocation levels to measure, comma-separated and ascending, at
    /// most 1,000,000 (a /12). Slow: filling to a million takes minutes.
    #[arg(long, value_delimiter = ',')]
    scale: Vec<usize>,
    /// The ipkeep plugin to exec [default: the static build of `cargo
    /// build-plugin` if there is one, else target/release/ipkeep].
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Directory for bench.txt, bench.json and the daemons' data [default: a new one under /tmp].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.concurrency.contains(&0) || args.api_clients.contains(&0) {
        eprintln!("error: --concurrency, --api-clients: every value must be at least 1");
        return ExitCode::from(2);
    }
    if !args.scale.is_sorted() || args.scale.iter().any(|&n| n == 0 || n > 1_000_000) {
        eprintln!("error: --scale: levels must be ascending, each from 1 to 1000000 (a /12)");
        return ExitCode::from(2);
    }
    let host_local =
        std::path::Path::new(ipkeep_cluster_test::bins::REFERENCE_PLUGINS).join("host-local");
    if !host_local.exists() {
        eprintln!(
            "error: {} is missing: the baseline comes from Debian's containernetworking-plugins (apt-get install containernetworking-plugins)",
            host_local.display()
        );
        return ExitCode::from(2);
    }
    if let Some(plugin) = args
        .plugin
        .or_else(ipkeep_cluster_test::bins::static_plugin)
    {
        if !plugin.exists() {
            eprintln!("error: --plugin: {} does not exist", plugin.display());
            return ExitCode::from(2);
        }
        // Read by every CniCall; set before any thread starts.
        std::env::set_var("IPKEEP_PLUGIN", plugin);
    }
    let out = args.out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ipkeep-bench-{}", std::process::id()))
    });
    let options = BenchOptions {
        calls: args.calls as usize,
        concurrency: args.concurrency,
        api_clients: args.api_clients,
        api_calls: args.api_calls,
        failover_trials: args.failover_trials,
        scale: args.scale,
        out: out.clone(),
    };
    match run(&options) {
        Ok(report) => {
            print!("{}", render(&report));
            println!(
                "written: {}/bench.txt, {}/bench.json",
                out.display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
