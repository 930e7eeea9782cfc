//! `ipkeepctl pool ...` and `ipkeepctl binding ...`

use std::time::Duration;

use clap::{Args, Subcommand};
use ipkeep_api::expect_response;
use ipkeep_api::message::{PoolRequest, Request, Response};
use ipkeep_api::model::{Binding, IpRange, PodPattern, PodSelector, PoolInfo, Sticky};

use crate::parse;
use crate::session::{list, Session};
use crate::table::{utc, Table};

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Set addresses of a subnet aside for the pods a pool selects.
    Create(Create),
    List,
    Show {
        name: String,
    },
    /// Delete a pool (refused while any of its addresses is held or bound).
    Delete {
        name: String,
    },
    /// Give a pool another set of addresses.
    Resize {
        name: String,
        /// The pool's new addresses, e.g. 10.0.0.10-10.0.0.40,10.0.0.50.
        #[arg(long, required = true, value_delimiter = ',', value_parser = parse::range)]
        addresses: Vec<IpRange>,
    },
}

#[derive(Debug, Args)]
pub struct Create {
    name: String,
    #[arg(long)]
    subnet: String,
    /// The pool's addresses: ADDR, FIRST-LAST or CIDR, comma-separated.
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse::range)]
    addresses: Vec<IpRange>,
    /// Only pods of this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only these pods: names and PREFIX* patterns, comma-separated (e.g. 'etcd-*').
    #[arg(long, value_delimiter = ',', value_parser = parse::pod_pattern)]
    pods: Vec<PodPattern>,
    /// A pod name keeps its address across deletions, on any node.
    #[arg(long)]
    sticky: bool,
    /// With --sticky: free a name's address after it has been unused this long.
    #[arg(long, value_parser = parse::duration, requires = "sticky")]
    sticky_ttl: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum BindingCommand {
    /// Sticky addresses: pod name, addresses, whether the pod runs now.
    List {
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Free a pod name's sticky addresses (refused while the pod runs).
    Release {
        /// NAMESPACE/NAME
        #[arg(value_parser = parse::pod)]
        pod: (String, String),
    },
}

fn sticky_text(s: Option<Sticky>) -> String {
    match s {
        None => "no".into(),
        Some(Sticky { idle_ttl_ms: None }) => "yes".into(),
        Some(Sticky {
            idle_ttl_ms: Some(ms),
        }) => format!("yes, ttl {}", parse::show_duration(ms)),
    }
}

fn table(pools: &[PoolInfo]) -> String {
    let mut t = Table::new(&[
        "NAME", "SUBNET", "PODS", "STICKY", "SIZE", "HELD", "KEPT", "FREE",
    ]);
    for p in pools {
        t.row(vec![
            p.pool.name.clone(),
            p.pool.subnet.clone(),
            p.pool.selector.to_string(),
            sticky_text(p.pool.sticky),
            p.usage.size.to_string(),
            p.usage.held.to_string(),
            p.usage.bound_idle.to_string(),
            p.usage.free.to_string(),
        ]);
    }
    t.render()
}

fn detail(p: &PoolInfo) -> String {
    format!(
        "name:       {}\nsubnet:     {}\naddresses:  {}\npods:       {}\nsticky:     {}\nuse:        {} of {} held, {} kept for stopped pods, {} free\n",
        p.pool.name,
        p.pool.subnet,
        list(&p.pool.addresses),
        p.pool.selector,
        sticky_text(p.pool.sticky),
        p.usage.held,
        p.usage.size,
        p.usage.bound_idle,
        p.usage.free
    )
}

pub fn run(session: &mut Session, command: PoolCommand) -> anyhow::Result<()> {
    let response = match command {
        PoolCommand::Create(c) => session.call(&Request::PoolCreate(PoolRequest {
            name: c.name,
            subnet: c.subnet,
            addresses: c.addresses,
            selector: PodSelector {
                namespace: c.namespace,
                pods: c.pods,
            },
            sticky: c.sticky.then(|| Sticky {
                idle_ttl_ms: c.sticky_ttl.map(|d| d.as_millis() as u64),
            }),
        }))?,
        PoolCommand::List => {
            let response = session.read(Request::PoolList)?;
            let pools = expect_response!(response, Response::Pools(p) => p, "Pools")?;
            return session.print(&pools, || table(&pools));
        }
        PoolCommand::Show { name } => session.read(Request::PoolShow { name })?,
        PoolCommand::Delete { name } => {
            let response = session.call(&Request::PoolDelete { name: name.clone() })?;
            expect_response!(response, Response::Done => (), "Done")?;
            return session.print(&serde_json::json!({"deleted": name}), || {
                format!("pool {name} deleted\n")
            });
        }
        PoolCommand::Resize { name, addresses } => {
            session.call(&Request::PoolResize { name, addresses })?
        }
    };
    let info = expect_response!(response, Response::Pool(p) => p, "Pool")?;
    session.print(&info, || detail(&info))
}

fn binding_table(bindings: &[Binding]) -> String {
    let mut t = Table::new(&[
        "POD",
        "ADDRESSES",
        "POOL",
        "RUNNING AS",
        "SINCE",
        "LAST USED",
        "TTL",
    ]);
    for b in bindings {
        let addresses: Vec<String> = b.addresses.iter().map(|a| a.address.to_string()).collect();
        t.row(vec![
            format!("{}/{}", b.namespace, b.name),
            addresses.join(","),
            b.pool.clone().unwrap_or_else(|| "-".into()),
            b.holder
                .as_ref()
                .map(|h| h.container_id.chars().take(12).collect())
                .unwrap_or_else(|| "-".into()),
            utc(b.since_ms),
            utc(b.last_used_ms),
            b.idle_ttl_ms
                .map(parse::show_duration)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

pub fn run_binding(session: &mut Session, command: BindingCommand) -> anyhow::Result<()> {
    match command {
        BindingCommand::List { namespace } => {
            let response = session.read(Request::BindingList { namespace })?;
            let bindings = expect_response!(response, Response::Bindings(b) => b, "Bindings")?;
            session.print(&bindings, || binding_table(&bindings))
        }
        BindingCommand::Release {
            pod: (namespace, name),
        } => {
            let response = session.call(&Request::BindingRelease {
                namespace: namespace.clone(),
                name: name.clone(),
            })?;
            expect_response!(response, Response::Done => (), "Done")?;
            session.print(
                &serde_json::json!({"released": format!("{namespace}/{name}")}),
                || format!("sticky addresses of {namespace}/{name} released\n"),
            )
        }
    }
}
