use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ipkeep_raft::ops::config::{self, Args, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_logging(args: &Args) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    // Before any thread starts (see its doc: a replaced state's memory is
    // reused by the state replacing it).
    ipkeep_store::storage::use_one_arena();
    let argv: Vec<String> = std::env::args().collect();
    if let Some(path) = config::config_file_in(&argv) {
        if let Err(e) = config::load_env_file(&path) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let args = Args::parse().settle();
    if let Err(e) = args.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    init_logging(&args);
    let open_files = ipkeep_api::os::raise_fd_limit();
    tracing::debug!(open_files, "open file limit");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Frames from outside decode on these threads: the size the decoders
        // are bounded and fuzzed for (tokio's default, made explicit).
        .thread_stack_size(ipkeep_api::nesting::DECODE_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ipkeep_raft::daemon::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
