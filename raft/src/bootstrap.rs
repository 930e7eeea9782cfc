//! First start: a node with an empty data directory initialises a
//! single-node cluster and creates the default subnet.
//!
//! A marker file makes the two steps restartable: it is written before the
//! cluster is initialised and removed once the default subnet is committed,
//! so a daemon killed in between finishes the job at its next start
//! (creating the same subnet twice is a no-op).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ipkeep_api::model::SubnetSpec;
use ipkeep_store::types::PeerNode;
use ipkeep_store::Command;
use openraft::ServerState;

use crate::node::Node;

const MARKER: &str = "bootstrap.pending";
/// How long the first election may take before bootstrap gives up for now.
const FIRST_LEADER_WAIT: Duration = Duration::from_secs(30);

pub async fn bootstrap(
    node: &Node,
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
        fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
        let members = BTreeMap::from([(
            node.id,
            PeerNode {
                addr: listen.to_owned(),
            },
        )]);
        node.raft
            .initialize(members)
            .await
            .context("initialising a single-node cluster")?;
        tracing::info!(node_id = node.id, "initialised a new single-node cluster");
    }
    if !marker.exists() {
        return Ok(());
    }
    node.raft
        .wait(Some(FIRST_LEADER_WAIT))
        .state(ServerState::Leader, "first election")
        .await
        .context("waiting for this node to become leader of the new cluster")?;
    if let Some(spec) = default_subnet {
        let name = spec.name.clone();
        let cidr = spec.cidr;
        match node.propose(Command::CreateSubnet { spec }).await {
            Ok(_) => tracing::info!(subnet = %name, %cidr, "created the default subnet"),
            Err(e) if e.code == ipkeep_api::code::CONFLICT => {
                tracing::warn!(subnet = %name, error = %e, "default subnet not created: another subnet is in the way")
            }
            Err(e) => return Err(anyhow::anyhow!("creating the default subnet {name}: {e}")),
        }
    }
    fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    Ok(())
}
