//! `ipkeepctl ip ...`

use std::net::IpAddr;

use clap::{Args, Subcommand};
use ipkeep_api::expect_response;
use ipkeep_api::message::{IpEntry, IpListRequest, Request, Response};
use ipkeep_api::model::IpRange;
use serde::Serialize;

use crate::parse;
use crate::session::Session;
use crate::table::{utc, Table};

#[derive(Debug, Subcommand)]
pub enum IpCommand {
    /// Held addresses: address, pod, container, interface, node, since.
    List(Filter),
    /// Who holds an address now, and who held it before.
    History { address: IpAddr },
    /// Keep addresses from being handed out (a router, a VIP).
    Reserve {
        /// ADDR, FIRST-LAST or CIDR.
        #[arg(value_parser = parse::range)]
        range: IpRange,
        /// Why (shown in errors and listings).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove the reservations inside a range.
    Unreserve {
        #[arg(value_parser = parse::range)]
        range: IpRange,
    },
    /// The reservations.
    Reservations,
    /// Attachments of this node whose network namespace is gone: the
    /// reconciler's suspects, why, and when each will be released.
    Leaks,
}

#[derive(Debug, Args)]
pub struct Filter {
    /// Only this subnet.
    #[arg(long)]
    subnet: Option<String>,
    /// Only pods of this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
}

/// Page size of `ip list`; the whole list is fetched page by page.
const PAGE: u32 = 5_000;

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    entry: &'a IpEntry,
    since: String,
}

fn list(session: &mut Session, filter: Filter) -> anyhow::Result<()> {
    let mut request = IpListRequest {
        subnet: filter.subnet,
        namespace: filter.namespace,
        node: filter.node,
        after: None,
        limit: PAGE,
    };
    let mut entries = Vec::new();
    loop {
        let response = session.read(Request::IpList(request.clone()))?;
        let page = expect_response!(response, Response::Ips(p) => p, "Ips")?;
        entries.extend(page.entries);
        match page.next {
            Some(next) => request.after = Some(next),
            None => break,
        }
    }
    let rows: Vec<Row> = entries
        .iter()
        .map(|e| Row {
            entry: e,
            since: utc(e.since_ms),
        })
        .collect();
    session.print(&rows, || {
        let mut t = Table::new(&[
            "ADDRESS",
            "SUBNET",
            "POD",
            "CONTAINER",
            "IFNAME",
            "NODE",
            "SINCE",
        ]);
        for r in &rows {
            let e = r.entry;
            t.row(vec![
                e.address.to_string(),
                e.subnet.clone(),
                e.pod.to_string(),
                e.key.container_id.chars().take(12).collect(),
                e.key.ifname.clone(),
                e.node.clone(),
                r.since.clone(),
            ]);
        }
        t.render()
    })
}

pub fn run(session: &mut Session, command: IpCommand) -> anyhow::Result<()> {
    match command {
        IpCommand::List(filter) => list(session, filter),
        IpCommand::History { address } => {
            let response = session.read(Request::IpHistory { address })?;
            let history = expect_response!(response, Response::History(h) => h, "History")?;
            session.print(&history, || {
                let mut t = Table::new(&[
                    "FROM",
                    "TO",
                    "POD",
                    "CONTAINER",
                    "IFNAME",
                    "NODE",
                    "RELEASED BY",
                ]);
                if let Some(now) = &history.current {
                    t.row(vec![
                        utc(now.since_ms),
                        "now".into(),
                        now.pod.to_string(),
                        now.key.container_id.chars().take(12).collect(),
                        now.key.ifname.clone(),
                        now.node.clone(),
                        "-".into(),
                    ]);
                }
                for h in &history.past {
                    t.row(vec![
                        utc(h.from_ms),
                        utc(h.to_ms),
                        h.pod.to_string(),
                        h.key.container_id.chars().take(12).collect(),
                        h.key.ifname.clone(),
                        h.node.clone(),
                        h.reason.to_string(),
                    ]);
                }
                format!("{}:\n{}", history.address, t.render())
            })
        }
        IpCommand::Reserve { range, note } => {
            let response = session.call(&Request::IpReserve {
                range,
                note: note.clone(),
            })?;
            expect_response!(response, Response::Done => (), "Done")?;
            session.print(
                &serde_json::json!({"reserved": range.to_string(), "note": note}),
                || format!("{range} reserved\n"),
            )
        }
        IpCommand::Unreserve { range } => {
            let response = session.call(&Request::IpUnreserve { range })?;
            expect_response!(response, Response::Done => (), "Done")?;
            session.print(
                &serde_json::json!({"unreserved": range.to_string()}),
                || format!("{range} unreserved\n"),
            )
        }
        IpCommand::Leaks => {
            let response = session.call(&Request::IpLeaks)?;
            let report = expect_response!(response, Response::Leaks(r) => r, "Leaks")?;
            session.print(&report, || {
                let mut t = Table::new(&[
                    "ADDRESSES",
                    "POD",
                    "CONTAINER",
                    "IFNAME",
                    "MISSING SINCE",
                    "RELEASE AT",
                    "REASON",
                ]);
                for l in &report.suspects {
                    t.row(vec![
                        l.addresses
                            .iter()
                            .map(IpAddr::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        l.pod.to_string(),
                        l.key.container_id.chars().take(12).collect(),
                        l.key.ifname.clone(),
                        utc(l.missing_since_ms),
                        l.release_at_ms
                            .map(utc)
                            .unwrap_or_else(|| "never (report only)".into()),
                        l.reason.clone(),
                    ]);
                }
                format!(
                    "node {}: reconciler {}, grace {} s, {} suspect(s)\n{}",
                    report.node,
                    report.mode,
                    report.grace_ms / 1000,
                    report.suspects.len(),
                    t.render()
                )
            })
        }
        IpCommand::Reservations => {
            let response = session.read(Request::IpReservations)?;
            let reservations =
                expect_response!(response, Response::Reservations(r) => r, "Reservations")?;
            session.print(&reservations, || {
                let mut t = Table::new(&["RANGE", "SUBNET", "SINCE", "NOTE"]);
                for r in &reservations {
                    t.row(vec![
                        r.range.to_string(),
                        r.subnet.clone(),
                        utc(r.since_ms),
                        r.note.clone(),
                    ]);
                }
                t.render()
            })
        }
    }
}
