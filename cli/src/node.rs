//! `ipkeepctl node forget NAME`: a node gone for good gives back its addresses.

use clap::Subcommand;
use ipkeep_api::expect_response;
use ipkeep_api::message::{Request, Response};

use crate::session::Session;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Release every attachment a node held (its sticky bindings stay), and
    /// remove it from the members with --member. Refused while the node
    /// still answers, unless --force.
    Forget {
        /// The node's name, as `ipkeepctl ip list` shows it.
        name: String,
        /// Its Raft id, to remove it from the members too.
        #[arg(long)]
        member: Option<u64>,
        /// Even though it answers (its pods are known to be gone).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(session: &mut Session, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Forget {
            name,
            member,
            force,
        } => {
            let response = session.call(&Request::NodeForget {
                name: name.clone(),
                member,
                force,
            })?;
            let result = expect_response!(response, Response::Forgotten(r) => r, "Forgotten")?;
            session.print(&result, || {
                let mut t = Table::new(&["ADDRESSES", "CONTAINER", "IFNAME", "NETWORK"]);
                for (key, addresses) in &result.released {
                    t.row(vec![
                        addresses
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        key.container_id.chars().take(12).collect(),
                        key.ifname.clone(),
                        key.network.clone(),
                    ]);
                }
                let member = match result.removed_member {
                    Some(id) => format!("; member {id} removed"),
                    None => String::new(),
                };
                format!(
                    "node {name} forgotten: {} attachment(s) released{member}\n{}",
                    result.released.len(),
                    t.render()
                )
            })
        }
    }
}
