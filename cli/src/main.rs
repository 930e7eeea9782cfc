//! `ipkeepctl`, the ipkeep admin CLI: talks to the local `ipkeepd` over its
//! unix socket. Tables for people by default, `--output json` for scripts.

mod ip;
mod member;
mod node;
mod parse;
mod pool;
mod session;
mod snapshot;
mod subnet;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipkeep_api::{Client, ClientError};
use session::{Output, Session};

/// ipkeepctl: manage ipkeep's subnets, pools and addresses, and its cluster.
#[derive(Debug, Parser)]
#[command(name = "ipkeepctl", version)]
struct Cli {
    /// The node daemon's socket.
    #[arg(long, global = true, env = "IPKEEP_SOCKET", default_value = ipkeep_api::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    /// How long to wait for the daemon, in milliseconds.
    #[arg(long, global = true, default_value_t = 15_000)]
    timeout_ms: u64,

    /// Reads reflect every write committed before them, wherever it was
    /// made (the node first catches up with the leader). Default: this
    /// node's replica, which may lag a follower's by a few milliseconds.
    #[arg(long, global = true)]
    linearizable: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// This node's view of the cluster: id, role, leader, term, log indexes.
    Status,
    /// Subnets: create, list, show, update, delete.
    #[command(subcommand)]
    Subnet(subnet::SubnetCommand),
    /// Addresses: held ones, their history, reservations.
    #[command(subcommand)]
    Ip(ip::IpCommand),
    /// Pools: addresses set aside for selected pods.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Sticky addresses kept for pod names.
    #[command(subcommand)]
    Binding(pool::BindingCommand),
    /// Cluster members: list, add (as learner), promote, remove.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Nodes gone for good: forget them and release what they held.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Backups of the cluster's state.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::connect(&cli.socket, Duration::from_millis(cli.timeout_ms))
        .context("is ipkeepd running? (--socket or IPKEEP_SOCKET point to its socket)")?;
    let mut session = Session {
        client,
        output: cli.output,
        linearizable: cli.linearizable,
    };
    match cli.command {
        Command::Status => member::status(&mut session),
        Command::Subnet(c) => subnet::run(&mut session, c),
        Command::Ip(c) => ip::run(&mut session, c),
        Command::Pool(c) => pool::run(&mut session, c),
        Command::Binding(c) => pool::run_binding(&mut session, c),
        Command::Member(c) => member::run(&mut session, c),
        Command::Snapshot(c) => snapshot::run(&mut session, c),
        Command::Node(c) => node::run(&mut session, c),
    }
}

/// The error and its causes on one line, each said once: several of the
/// library errors already end with their cause's text, which anyhow's
/// `{:#}` would print again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api(api)) => {
                    eprintln!("error [{}]: {}: {}", api.code, api.msg, api.details)
                }
                _ => eprintln!("error: {}", error_chain(&e)),
            }
            ExitCode::FAILURE
        }
    }
}
