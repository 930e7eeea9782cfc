//! Starting, running and stopping a node.

use std::sync::Arc;

use anyhow::Context;
use ipkeep_store::storage::{self, StorageOptions};
use ipkeep_store::types::Raft;
use openraft::{Config, SnapshotPolicy};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::api_server::ApiServer;
use crate::bootstrap::bootstrap;
use crate::config::Args;
use crate::network::PeerNetwork;
use crate::node::Node;

fn raft_config(args: &Args) -> anyhow::Result<Config> {
    let config = Config {
        cluster_name: "ipkeep".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(args.snapshot_every),
        max_in_snapshot_log_to_keep: args.keep_logs,
        ..Default::default()
    };
    config.validate().context("raft configuration")
}

/// Why the daemon stopped.
enum Stop {
    Signal(&'static str),
    RaftFailed(String),
}

/// Resolves when SIGTERM or SIGINT arrives, or when Raft stops on its own
/// (a storage failure is fatal to openraft: the process must exit so that its
/// supervisor restarts it from what is on disk).
async fn wait_for_stop(raft: &Raft) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut metrics = raft.metrics();
    let raft_failed = async {
        loop {
            if let Err(fatal) = &metrics.borrow().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".to_owned();
            }
        }
    };
    Ok(tokio::select! {
        _ = term.recv() => Stop::Signal("SIGTERM"),
        _ = int.recv() => Stop::Signal("SIGINT"),
        reason = raft_failed => Stop::RaftFailed(reason),
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let options = StorageOptions {
        cache_capacity: args.cache_mib << 20,
    };
    let (log_store, state_machine) = storage::open(&args.data_dir, &options)?;
    let machine = state_machine.shared();
    let log_sync = log_store.clone();
    let raft = Raft::new(
        args.node_id,
        Arc::new(raft_config(&args)?),
        PeerNetwork,
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;

    let node = Arc::new(Node {
        id: args.node_id,
        name: args.node_name().to_owned(),
        raft: raft.clone(),
        machine,
        write_timeout: args.write_timeout_ms,
    });
    bootstrap(
        &node,
        &args.listen,
        &args.data_dir,
        args.default_subnet.spec(),
    )
    .await?;

    let server = ApiServer::bind(&args.socket).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = tokio::spawn(server.serve(node.clone(), stop_rx));
    tracing::info!(
        node_id = node.id,
        node = %node.name,
        socket = %args.socket.display(),
        data_dir = %args.data_dir.display(),
        "ipkeepd serving"
    );

    let stop = wait_for_stop(&raft).await?;
    match &stop {
        Stop::Signal(sig) => tracing::info!(signal = sig, "shutting down"),
        Stop::RaftFailed(reason) => tracing::error!(%reason, "raft stopped; shutting down"),
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    log_sync.sync().context("flushing the data directory")?;
    match stop {
        Stop::Signal(_) => {
            tracing::info!("stopped");
            Ok(())
        }
        Stop::RaftFailed(reason) => Err(anyhow::anyhow!("raft stopped: {reason}")),
    }
}
