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
//! The default subnet is created by one node (the single node, or the member
//! with the lowest id). A marker file written before initialising and removed
//! once the subnet is committed makes that restartable: a daemon killed in
//! between finishes the job at its next start (creating the same subnet twice
//! is a no-op).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipkeep_api::code;
use ipkeep_api::model::SubnetSpec;
use ipkeep_store::types::PeerNode;
use ipkeep_store::Command;
use openraft::error::{InitializeError, RaftError};

use crate::node::Node;

const MARKER: &str = "bootstrap.pending";
/// How long a single node may take to create its default subnet before it
/// starts serving without it (the marker makes the next start retry).
const SINGLE_NODE_LIMIT: Duration = Duration::from_secs(30);

pub enum Formation {
    Single,
    Initial(BTreeMap<u64, PeerNode>),
    Join,
}

pub async fn bootstrap(
    node: &Arc<Node>,
    formation: &Formation,
    listen: &str,
    data_dir: &Path,
    default_subnet: Option<SubnetSpec>,
) -> anyhow::Result<()> {
    let marker = data_dir.join(MARKER);
    let initialized = node
        .raft
        .is_initialized()
        .await
        .context("reading raft state")?;
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
    let (Some(spec), true) = (default_subnet, marker.exists()) else {
        let _ = fs::remove_file(&marker);
        return Ok(());
    };
    match formation {
        // A single node serves only once its default subnet exists.
        Formation::Single => {
            create_default_subnet(node, spec, marker, Some(SINGLE_NODE_LIMIT)).await
        }
        // Several nodes may start minutes apart: keep trying in the background.
        _ => {
            let node = node.clone();
            tokio::spawn(async move {
                create_default_subnet(&node, spec, marker, None).await;
            });
        }
    }
    Ok(())
}

async fn create_default_subnet(
    node: &Node,
    spec: SubnetSpec,
    marker: PathBuf,
    limit: Option<Duration>,
) {
    let started = Instant::now();
    let (name, cidr) = (spec.name.clone(), spec.cidr);
    loop {
        match node
            .propose(Command::CreateSubnet { spec: spec.clone() })
            .await
        {
            Ok(_) => {
                tracing::info!(subnet = %name, %cidr, "created the default subnet");
                break;
            }
            Err(e) if e.code == code::TRY_AGAIN => {
                if limit.is_some_and(|l| started.elapsed() >= l) {
                    tracing::warn!(error = %e, "default subnet not created yet; the next start retries");
                    return;
                }
                tracing::debug!(error = %e, "waiting for a leader to create the default subnet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(subnet = %name, error = %e, "default subnet not created");
                break;
            }
        }
    }
    if let Err(e) = fs::remove_file(&marker) {
        tracing::warn!(error = %e, marker = %marker.display(), "cannot remove the bootstrap marker");
    }
}
