//! `ipkeepctl member ...` and `ipkeepctl status`.

use clap::Subcommand;
use ipkeep_api::expect_response;
use ipkeep_api::message::{DiskStatus, MemberHealth, MemberInfo, NodeStatus, Request, Response};

use crate::session::Session;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List members: id, peer address, voter or learner, leader, replication lag.
    List,
    /// Add a node as a learner. Start it first with --join and the cluster secret.
    Add {
        id: u64,
        /// The node's --listen address, IP:PORT.
        addr: String,
    },
    /// Make a learner a voter (a cluster has at most 5 voters).
    Promote { id: u64 },
    /// Remove a voter or a learner.
    Remove { id: u64 },
}

fn table(members: &[MemberInfo]) -> String {
    let mut t = Table::new(&["ID", "ADDRESS", "ROLE", "LEADER", "MATCHED", "LAG"]);
    let opt = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    for m in members {
        t.row(vec![
            m.id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            if m.leader { "*".into() } else { String::new() },
            opt(m.matched),
            opt(m.lag),
        ]);
    }
    t.render()
}

pub fn run(session: &mut Session, command: MemberCommand) -> anyhow::Result<()> {
    let response = match command {
        MemberCommand::List => session.read(Request::MemberList)?,
        MemberCommand::Add { id, addr } => session.call(&Request::MemberAdd { id, addr })?,
        MemberCommand::Promote { id } => session.call(&Request::MemberPromote { id })?,
        MemberCommand::Remove { id } => session.call(&Request::MemberRemove { id })?,
    };
    let members = expect_response!(response, Response::Members(m) => m, "Members")?;
    session.print(&members, || table(&members))
}

fn status_table(s: &NodeStatus) -> String {
    let opt = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let ids = |v: &[u64]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    format!(
        "node:          {} ({})\nrole:          {}\nleader:        {}\nterm:          {}\nlast log:      {}\napplied:       {}\nsnapshot:      {}\npurged:        {}\nvoters:        {}\nlearners:      {}\ndisk:          {}\n",
        s.node_id,
        s.node_name,
        s.role,
        opt(s.leader),
        s.term,
        opt(s.last_log_index),
        opt(s.last_applied),
        opt(s.snapshot_index),
        opt(s.purged_index),
        ids(&s.voters),
        ids(&s.learners),
        disk(s.disk.as_ref()),
    )
}

/// "12.0 MiB free, under the floor of 64.0 MiB: LOW" or "3.1 GiB free".
fn disk(status: Option<&DiskStatus>) -> String {
    match status {
        None => "-".into(),
        Some(d) if d.low => format!(
            "{} free, under the floor of {}: LOW (no writes, no replicated entries)",
            ipkeep_api::units::bytes(d.free_bytes),
            ipkeep_api::units::bytes(d.floor_bytes)
        ),
        Some(d) => format!("{} free", ipkeep_api::units::bytes(d.free_bytes)),
    }
}

/// This node's view, then every member as it answers for itself.
pub fn status(session: &mut Session) -> anyhow::Result<()> {
    let response = session.read(Request::ClusterStatus)?;
    let cluster = expect_response!(response, Response::ClusterStatus(s) => s, "ClusterStatus")?;
    // JSON: this node's fields at the top level (as before), plus members.
    let mut json = serde_json::to_value(&cluster.this)?;
    json["members"] = serde_json::to_value(&cluster.members)?;
    session.print(&json, || {
        format!(
            "{}\n{}",
            status_table(&cluster.this),
            health_table(&cluster.members)
        )
    })
}

fn health_table(members: &[MemberHealth]) -> String {
    let mut t = Table::new(&[
        "ID", "ADDRESS", "ROLE", "STATE", "TERM", "APPLIED", "LAG", "HEALTH",
    ]);
    let opt = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    for m in members {
        let (state, term, applied) = match &m.status {
            Some(s) => (s.role.clone(), s.term.to_string(), opt(s.last_applied)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let health = match (&m.status, &m.error) {
            (Some(s), _) if s.disk.is_some_and(|d| d.low) => "disk low".to_owned(),
            (Some(_), _) if m.lag.unwrap_or(0) > LAGGING => "behind".to_owned(),
            (Some(_), _) => "ok".to_owned(),
            (None, Some(e)) => format!("unreachable: {e}"),
            (None, None) => "unreachable".to_owned(),
        };
        t.row(vec![
            m.id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            state,
            term,
            applied,
            opt(m.lag),
            health,
        ]);
    }
    t.render()
}

/// More entries than this still to apply: shown as behind.
const LAGGING: u64 = 1_000;
