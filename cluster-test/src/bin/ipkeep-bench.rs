//! ipkeep-bench: ADD/DEL latency and throughput through the exec'd plugin,
//! host-local against ipkeep on one node and on three voters, in one run.
//! Needs root (the three voters run in network namespaces).
//!
//!     cargo build --release --workspace --bins
//!     sudo target/release/ipkeep-bench --calls 400 --concurrency 8,32,64

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ipkeep_cluster_test::bench::{run, table, BenchOptions};

#[derive(Debug, Parser)]
#[command(name = "ipkeep-bench", version)]
struct Args {
    /// Calls per row (that many ADDs, then as many DELs).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(10..))]
    calls: u64,
    /// Concurrent callers for the concurrent rows, comma-separated.
    #[arg(long, default_value = "8,32,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Directory for bench.txt, bench.json and the daemons' data [default: a new one under /tmp].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.concurrency.contains(&0) {
        eprintln!("error: --concurrency: every value must be at least 1");
        return ExitCode::from(2);
    }
    let out = args.out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ipkeep-bench-{}", std::process::id()))
    });
    let options = BenchOptions {
        calls: args.calls as usize,
        concurrency: args.concurrency,
        out: out.clone(),
    };
    match run(&options) {
        Ok(rows) => {
            print!("{}", table(&rows));
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
