//! Forming a cluster on first start, and the default subnet.
//!
//! - Single: a node with an empty data directory and no member list
//!   initialises a single-node cluster.
//! - Initial: every node of a new cluster is started with the same member
//!   list and initialises with it (openraft allows the same initialisation on
//!   every member).
//! - Join: the node waits, empty, until a member adds it as a learner.
//!
//! A node that already has state ignores all of this and resumes.
//!
//! A new cluster's first task (creating the default subnet, or restoring a
//! backup with `--restore`) is done by one node (the single node, or the
//! member with the lowest id). A marker file written before initialising and
//! removed once the task is committed makes that restartable: a daemon killed
//! in between finishes the job at its next start (creating the same subnet
//! twice is a no-op; a restore into a cluster that has state is refused).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipkeep_api::code;
use ipkeep_store::types::PeerNode;
use ipkeep_store::Command;
use openraft::error::{InitializeError, RaftError};

use crate::cluster::node::Node;

const MARKER: &str = "bootstrap.pending";
/// How long a single node may take to create its default subnet before it
/// starts serving without it (the marker makes the next start retry).
const SINGLE_NODE_LIMIT: Duration = Duration::from_secs(30);

pub enum Formation {
    Single,
    Initial(BTreeMap<u64, PeerNode>),
    Join,
}

/// What a new cluster does first, once it has a leader.
pub struct FirstTask {
    pub command: Command,
    /// For the log: "created the default subnet pods (10.22.0.0/16)".
    pub done: String,
    /// A restore must happen: refuse to start where it cannot.
    pub required: bool,
}

/// `initialized`: whether the node held cluster state when it started,
/// read before its peer listener came up.
pub async fn bootstrap(
    node: &Arc<Node>,
    initialized: bool,
    formation: &Formation,
    listen: &str,
    data_dir: &Path,
    first: Option<FirstTask>,
) -> anyhow::Result<()> {
    let marker = data_dir.join(MARKER);
    // Like the member list, --restore only seeds a new cluster: a node that
    // has state (it restored before, or never was new) resumes and says so.
    let first = match first {
        Some(task) if task.required && initialized && !marker.exists() => {
            tracing::warn!(
                data_dir = %data_dir.display(),
                "--restore ignored: this node already holds cluster state (a backup seeds only a new cluster)"
            );
            None
        }
        other => other,
    };
    if let Some(task) = first.as_ref().filter(|t| t.required) {
        let first_member = match formation {
            Formation::Single => Some(node.id),
            Formation::Initial(members) => members.keys().next().copied(),
            Formation::Join => None,
        };
        if first_member != Some(node.id) {
            anyhow::bail!(
                "--restore is for the member with the lowest id{} of a new cluster; this node {}",
                first_member
                    .map(|id| format!(" ({id})"))
                    .unwrap_or_default(),
                if matches!(formation, Formation::Join) {
                    "joins an existing one"
                } else {
                    "is not it"
                }
            );
        }
        tracing::info!(
            records = restore_size(&task.command),
            "restoring a backup into the new cluster"
        );
    }
    if !initialized {
        let members = match formation {
            Formation::Join => {
                tracing::info!(
                    node_id = node.id,
                    "empty node waiting to be added: run `ipkeepctl member add {} {listen}` on a member",
                    node.id
                );
                return Ok(());
            }
            Formation::Single => BTreeMap::from([(
                node.id,
                PeerNode {
                    addr: listen.to_owned(),
                },
            )]),
            Formation::Initial(members) => members.clone(),
        };
        if members.keys().next() == Some(&node.id) {
            fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
        }
        match node.raft.initialize(members.clone()).await {
            Ok(()) => {
                tracing::info!(node_id = node.id, members = ?members.keys().collect::<Vec<_>>(), "initialised a new cluster")
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(e).context("initialising the cluster"),
        }
    }
    let (Some(task), true) = (first, marker.exists()) else {
        let _ = fs::remove_file(&marker);
        return Ok(());
    };
    match formation {
        // A single node serves only once its first task is done.
        Formation::Single => run_first_task(node, task, marker, Some(SINGLE_NODE_LIMIT)).await,
        // Several nodes may start minutes apart: keep trying in the background.
        _ => {
            let node = node.clone();
            tokio::spawn(async move {
                run_first_task(&node, task, marker, None).await;
            });
        }
    }
    Ok(())
}

async fn run_first_task(node: &Node, task: FirstTask, marker: PathBuf, limit: Option<Duration>) {
    let started = Instant::now();
    loop {
        match node.propose(task.command.clone()).await {
            Ok(_) => {
                tracing::info!("{}", task.done);
                break;
            }
            // A refusal on the merits is final; anything else (no leader yet,
            // a peer connection that dropped while the cluster forms) passes.
            Err(e)
                if matches!(
                    e.code,
                    code::INVALID_REQUEST | code::CONFLICT | code::NOT_FOUND
                ) =>
            {
                tracing::warn!(error = %e, "first task of the new cluster refused: {}", task.done);
                break;
            }
            Err(e) => {
                if limit.is_some_and(|l| started.elapsed() >= l) {
                    tracing::warn!(error = %e, "first task not done yet; the next start retries");
                    return;
                }
                if e.code == code::TRY_AGAIN {
                    tracing::debug!(error = %e, "waiting for a leader");
                } else {
                    tracing::warn!(error = %e, "first task failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if let Err(e) = fs::remove_file(&marker) {
        tracing::warn!(error = %e, marker = %marker.display(), "cannot remove the bootstrap marker");
    }
}

fn restore_size(command: &Command) -> usize {
    match command {
        Command::Restore { records } => records.len(),
        _ => 0,
    }
}
