//! Starting, running and stopping a node.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipkeep_store::storage::{self, StorageOptions};
use ipkeep_store::types::{PeerNode, Raft};
use ipkeep_store::Command;
use openraft::{Config, SnapshotPolicy};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::cluster::bootstrap::{bootstrap, FirstTask, Formation};
use crate::cluster::elections::{ElectionHolds, Hold};
use crate::cluster::node::{commit_entry, Node};
use crate::cluster::write_batch::WriteBatcher;
use crate::jobs::reconciler::{Leaks, ReconcileSettings};
use crate::node_api::server::ApiServer;
use crate::ops::config::Args;
use crate::ops::disk::DiskGuard;
use crate::ops::metrics::Metrics;
use crate::ops::metrics_server::MetricsServer;
use crate::peer::pool::PeerPool;
use crate::peer::raft_client::PeerNetwork;
use crate::peer::server::PeerServer;
use crate::peer::ClusterSecret;

fn raft_config(args: &Args) -> anyhow::Result<Config> {
    let config = Config {
        cluster_name: "ipkeep".into(),
        // Failover takes two election timeouts: openraft 0.9 makes a follower
        // refuse votes for election_timeout_max after the last heartbeat (the
        // leader lease), so the first candidate is nearly always refused and
        // the second round wins. 300-600 ms keeps three heartbeats inside the
        // shortest timeout, and a longer timeout only lengthens failover (the
        // failover rows of `ipkeep-bench` measure it).
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(args.snapshot_every),
        max_in_snapshot_log_to_keep: args.keep_logs,
        // Per snapshot chunk (3 MiB by default). openraft's 200 ms default
        // times out under load, and a transfer that times out on the leader
        // but lands on the follower confuses 0.9's replication progress.
        install_snapshot_timeout: 5000,
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

fn formation(args: &Args) -> Formation {
    match (&args.initial_cluster, args.join) {
        (Some(cluster), _) => Formation::Initial(
            cluster
                .0
                .iter()
                .map(|(id, addr)| (*id, PeerNode { addr: addr.clone() }))
                .collect(),
        ),
        (None, true) => Formation::Join,
        (None, false) => Formation::Single,
    }
}

/// A new cluster's first task: restore the backup, or create the default subnet.
fn first_task(args: &Args) -> anyhow::Result<Option<FirstTask>> {
    if let Some(path) = &args.restore {
        let records = ipkeep_store::storage::backup::read(path).with_context(|| {
            format!("--restore {}: not a readable ipkeep backup", path.display())
        })?;
        return Ok(Some(FirstTask {
            done: format!("restored {} records from {}", records.len(), path.display()),
            command: Command::Restore { records },
            required: true,
        }));
    }
    Ok(args.default_subnet.spec().map(|spec| FirstTask {
        done: format!("created the default subnet {} ({})", spec.name, spec.cidr),
        command: Command::CreateSubnet { spec },
        required: false,
    }))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let secret = match &args.cluster_secret_file {
        Some(path) => Some(ClusterSecret::load(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let listen = args.listen();
    let options = StorageOptions {
        cache_capacity: args.cache_mib << 20,
        min_free_space: args.min_free_space,
    };
    let (log_store, state_machine) = match storage::open(&args.data_dir, &options) {
        // A member can start over under its own id: its leader sends it a
        // snapshot. A single node has nobody to take one from.
        Err(e @ storage::OpenError::StateBehindLog { .. }) if secret.is_some() => {
            tracing::warn!(error = %e, "the state is behind the log; starting over from the leader's snapshot");
            storage::quarantine(&args.data_dir).with_context(|| {
                format!(
                    "moving the damaged state in {} aside",
                    args.data_dir.display()
                )
            })?;
            storage::open(&args.data_dir, &options)?
        }
        other => other?,
    };
    let recovery_target = storage::recovery_target(&args.data_dir)
        .with_context(|| format!("reading the recovery marker in {}", args.data_dir.display()))?;
    let machine = state_machine.shared();
    let snapshot_stats = state_machine.snapshot_stats();
    let installs = state_machine.installs();
    let log_sync = log_store.clone();
    let log_view = log_store.clone();
    let network = PeerNetwork {
        secret: secret.clone(),
        my_id: args.node_id,
    };
    let config = Arc::new(raft_config(&args)?);
    let raft = Raft::new(
        args.node_id,
        config.clone(),
        network,
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;
    let election_holds = {
        let raft = raft.clone();
        ElectionHolds::new(move |on| raft.runtime_config().elect(on))
    };
    tokio::spawn({
        let holds = election_holds.clone();
        crate::cluster::elections::hold_during_installs(
            installs,
            Duration::from_millis(config.election_timeout_min),
            move |on| holds.set(Hold::Installing, !on),
        )
    });

    let metrics = Metrics::default();
    let writes = {
        let raft = raft.clone();
        let timeout = args.write_timeout_ms;
        WriteBatcher::start(
            move |command| {
                let raft = raft.clone();
                async move { commit_entry(&raft, timeout, command).await }
            },
            metrics.batches.clone(),
            timeout,
        )
    };
    let node = Arc::new(Node {
        id: args.node_id,
        name: args.node_name().to_owned(),
        raft: raft.clone(),
        machine,
        snapshot_stats,
        write_timeout: args.write_timeout_ms,
        peers: secret.clone().map(|s| PeerPool::new(s, args.node_id)),
        log: log_view,
        metrics,
        leaks: Leaks::new(ReconcileSettings {
            mode: args.reconcile,
            grace: args.leak_grace,
            every: args.reconcile_every,
        }),
        disk: DiskGuard::new(&args.data_dir, args.min_free_space),
        writes,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let recovering = crate::cluster::recovery::hold_until_applied(
        node.clone(),
        election_holds.clone(),
        recovery_target,
        args.data_dir.clone(),
        stop_rx.clone(),
    );
    // Whether this node is new is decided now, before any peer can reach
    // it: once the listener is up, a faster member's leader may replicate
    // the cluster's first entries here before bootstrap looks, and the
    // lowest member would then skip the new cluster's first task.
    let was_initialized = raft.is_initialized().await.context("reading raft state")?;
    // Peers must reach this node before it can take part in an election.
    let peer_serving = match &secret {
        Some(secret) => {
            let server = PeerServer::bind(&listen).await?;
            tracing::info!(listen = %listen, "peer listener up");
            Some(tokio::spawn(server.serve(
                node.clone(),
                secret.clone(),
                recovering,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    bootstrap(
        &node,
        was_initialized,
        // Recovering: it waits, as a joining node does, for its leader.
        &if recovery_target.is_some() {
            Formation::Join
        } else {
            formation(&args)
        },
        &listen,
        &args.data_dir,
        if recovery_target.is_some() {
            None
        } else {
            first_task(&args)?
        },
    )
    .await?;

    let server = ApiServer::bind(&args.socket, args.max_api_connections as usize).await?;
    let expiring = tokio::spawn(crate::jobs::expiry::run(node.clone(), stop_rx.clone()));
    tokio::spawn(crate::ops::disk::watch(
        node.clone(),
        election_holds,
        // An election timeout, plus the longest replication back-off.
        Duration::from_millis(config.election_timeout_max + 500),
        stop_rx.clone(),
    ));
    let reconciling = tokio::spawn(crate::jobs::reconciler::run(node.clone(), stop_rx.clone()));
    let metrics_serving = match &args.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::bind(addr).await?;
            tracing::info!(listen = ?server.local_addr(), "metrics at /metrics");
            Some(tokio::spawn(server.serve(node.clone(), stop_rx.clone())))
        }
        None => None,
    };
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
    let _ = expiring.await;
    let _ = reconciling.await;
    if let Some(m) = metrics_serving {
        let _ = m.await;
    }
    if let Some(peer_serving) = peer_serving {
        let _ = peer_serving.await;
    }
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
