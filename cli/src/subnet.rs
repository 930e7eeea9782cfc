//! `ipkeepctl subnet ...`

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use ipkeep_api::expect_response;
use ipkeep_api::message::{Request, Response};
use ipkeep_api::model::{
    Dns, GatewaySpec, IpRange, PoolInfo, Route, Sticky, SubnetInfo, SubnetSpec, SubnetUpdate,
    Tenancy,
};
use ipnet::IpNet;

use crate::parse;
use crate::session::{list, Session};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    /// Create a subnet.
    Create(Create),
    /// List subnets with their use.
    List,
    /// Show one subnet: settings, use, use per namespace.
    Show { name: String },
    /// Change who may use a subnet, its quotas, stickiness, routes or DNS.
    Update(Update),
    /// Delete a subnet (refused while any of its addresses is held, pooled or bound).
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct Create {
    name: String,
    /// The subnet, e.g. 10.22.0.0/16 or fd00:22::/64.
    #[arg(long, value_parser = parse::cidr)]
    cidr: IpNet,
    /// Gateway address [default: the subnet's first address].
    #[arg(long, conflicts_with = "no_gateway")]
    gateway: Option<IpAddr>,
    /// No gateway: results carry none and no address is kept for it.
    #[arg(long)]
    no_gateway: bool,
    /// Addresses never handed out: ADDR, FIRST-LAST or CIDR (repeatable).
    #[arg(long, value_parser = parse::range)]
    exclude: Vec<IpRange>,
    #[command(flatten)]
    settings: Settings,
}

/// Settings shared by create and update.
#[derive(Debug, Args)]
pub struct Settings {
    /// Route handed to pods: DST or DST,GW (repeatable).
    #[arg(long, value_parser = parse_route)]
    route: Vec<Route>,
    /// DNS server handed to pods (repeatable).
    #[arg(long)]
    nameserver: Vec<IpAddr>,
    /// DNS domain.
    #[arg(long)]
    domain: Option<String>,
    /// DNS search domain (repeatable).
    #[arg(long)]
    search: Vec<String>,
    /// Resolver option, e.g. ndots:5 (repeatable).
    #[arg(long)]
    dns_option: Vec<String>,
    /// Only pods of this namespace may use the subnet (repeatable) [default: every namespace].
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// At most COUNT addresses for a namespace: NAMESPACE=COUNT (repeatable).
    #[arg(long, value_parser = parse::quota)]
    quota: Vec<(String, u64)>,
    /// Sticky addresses: a pod name keeps its address across deletions.
    #[arg(long)]
    sticky: bool,
    /// With --sticky: free a name's address after it has been unused this long (e.g. 24h).
    #[arg(long, value_parser = parse::duration, requires = "sticky")]
    sticky_ttl: Option<Duration>,
    /// MTU of the pod interfaces ipkeep creates (main-plugin mode).
    #[arg(long)]
    mtu: Option<u32>,
}

#[derive(Debug, Args)]
pub struct Update {
    name: String,
    /// Every namespace may use the subnet again.
    #[arg(long, conflicts_with = "namespaces")]
    all_namespaces: bool,
    /// Remove a namespace's quota (repeatable).
    #[arg(long)]
    no_quota: Vec<String>,
    /// Stop binding new addresses to pod names (existing bindings stay).
    #[arg(long, conflicts_with = "sticky")]
    no_sticky: bool,
    /// Remove the subnet's MTU.
    #[arg(long, conflicts_with = "mtu")]
    no_mtu: bool,
    #[command(flatten)]
    settings: Settings,
}

fn parse_route(s: &str) -> Result<Route, String> {
    s.parse()
}

impl Settings {
    fn sticky(&self) -> Option<Sticky> {
        self.sticky.then(|| Sticky {
            idle_ttl_ms: self.sticky_ttl.map(|d| d.as_millis() as u64),
        })
    }

    fn dns(&self) -> Dns {
        Dns {
            nameservers: self.nameserver.clone(),
            domain: self.domain.clone(),
            search: self.search.clone(),
            options: self.dns_option.clone(),
        }
    }

    fn dns_given(&self) -> bool {
        !self.dns().is_empty()
    }
}

pub fn table(subnets: &[SubnetInfo]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "CIDR",
        "GATEWAY",
        "HELD",
        "FREE",
        "POOLED",
        "RESERVED",
        "ASSIGNABLE",
    ]);
    for s in subnets {
        t.row(vec![
            s.subnet.name.clone(),
            s.subnet.cidr.to_string(),
            s.subnet
                .gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            s.usage.held.to_string(),
            s.usage.free.to_string(),
            s.usage.pooled.to_string(),
            s.usage.reserved.to_string(),
            s.usage.assignable.to_string(),
        ]);
    }
    t.render()
}

pub fn detail(s: &SubnetInfo) -> String {
    let sub = &s.subnet;
    let quotas: Vec<String> = sub
        .tenancy
        .quotas
        .iter()
        .map(|(ns, q)| format!("{ns}={q}"))
        .collect();
    let usage: Vec<String> = s
        .by_namespace
        .iter()
        .map(|(ns, n)| format!("{}={n}", if ns.is_empty() { "(none)" } else { ns }))
        .collect();
    let sticky = match sub.sticky {
        None => "no".to_owned(),
        Some(Sticky { idle_ttl_ms: None }) => "yes".to_owned(),
        Some(Sticky {
            idle_ttl_ms: Some(ms),
        }) => format!("yes, freed after {} unused", parse::show_duration(ms)),
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13}{v}\n"));
    line("name:", sub.name.clone());
    line("cidr:", sub.cidr.to_string());
    line(
        "gateway:",
        sub.gateway
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    line("exclude:", list(&sub.exclude));
    line("routes:", list(&sub.routes));
    line("nameservers:", list(&sub.dns.nameservers));
    line(
        "domain:",
        sub.dns.domain.clone().unwrap_or_else(|| "-".into()),
    );
    line("search:", list(&sub.dns.search));
    line("dns options:", list(&sub.dns.options));
    line(
        "namespaces:",
        if sub.tenancy.namespaces.is_empty() {
            "all".into()
        } else {
            list(&sub.tenancy.namespaces)
        },
    );
    line("quotas:", list(&quotas));
    line("sticky:", sticky);
    line(
        "mtu:",
        sub.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
    );
    line(
        "addresses:",
        format!(
            "{} held, {} free, {} pooled, {} reserved, {} kept for stopped pods, {} assignable",
            s.usage.held,
            s.usage.free,
            s.usage.pooled,
            s.usage.reserved,
            s.usage.bound_idle,
            s.usage.assignable
        ),
    );
    line("by namespace:", list(&usage));
    out
}

/// A subnet at a glance: its settings, its addresses by state, and its use
/// per pool and per namespace.
fn show(session: &mut Session, name: String) -> anyhow::Result<()> {
    let response = session.read(Request::SubnetShow { name: name.clone() })?;
    let info = expect_response!(response, Response::Subnet(s) => s, "Subnet")?;
    let response = session.read(Request::PoolList)?;
    let pools: Vec<PoolInfo> = expect_response!(response, Response::Pools(p) => p, "Pools")?
        .into_iter()
        .filter(|p| p.pool.subnet == name)
        .collect();
    // Serialized as it is, not through serde_json::Value: a Value holds no
    // number past u64, and an IPv6 subnet's counts can be (a /48 has 2^80
    // addresses).
    #[derive(serde::Serialize)]
    struct Shown<'a> {
        #[serde(flatten)]
        info: &'a ipkeep_api::model::SubnetInfo,
        pools: &'a [PoolInfo],
    }
    let shown = Shown {
        info: &info,
        pools: &pools,
    };
    session.print(&shown, || {
        let mut out = detail(&info);
        if !pools.is_empty() {
            let mut t = Table::new(&["POOL", "SIZE", "HELD", "KEPT", "FREE", "SELECTS"]);
            for p in &pools {
                t.row(vec![
                    p.pool.name.clone(),
                    p.usage.size.to_string(),
                    p.usage.held.to_string(),
                    p.usage.bound_idle.to_string(),
                    p.usage.free.to_string(),
                    p.pool.selector.to_string(),
                ]);
            }
            out.push('\n');
            out.push_str(&t.render());
        }
        out
    })
}

pub fn run(session: &mut Session, command: SubnetCommand) -> anyhow::Result<()> {
    let response = match command {
        SubnetCommand::Create(c) => {
            let gateway = match (c.no_gateway, c.gateway) {
                (true, _) => GatewaySpec::None,
                (false, Some(gw)) => GatewaySpec::Address(gw),
                (false, None) => GatewaySpec::Auto,
            };
            let spec = SubnetSpec {
                name: c.name,
                cidr: c.cidr,
                gateway,
                exclude: c.exclude,
                routes: c.settings.route.clone(),
                dns: c.settings.dns(),
                tenancy: Tenancy {
                    namespaces: c.settings.namespaces.clone(),
                    quotas: c.settings.quota.iter().cloned().collect(),
                },
                sticky: c.settings.sticky(),
                mtu: c.settings.mtu,
            };
            session.call(&Request::SubnetCreate(spec))?
        }
        SubnetCommand::List => {
            let response = session.read(Request::SubnetList)?;
            let subnets = expect_response!(response, Response::Subnets(s) => s, "Subnets")?;
            return session.print(&subnets, || table(&subnets));
        }
        SubnetCommand::Show { name } => return show(session, name),
        SubnetCommand::Update(u) => {
            let s = &u.settings;
            let mut quotas: Vec<(String, Option<u64>)> = s
                .quota
                .iter()
                .map(|(ns, q)| (ns.clone(), Some(*q)))
                .collect();
            quotas.extend(u.no_quota.iter().map(|ns| (ns.clone(), None)));
            let update = SubnetUpdate {
                namespaces: if u.all_namespaces {
                    Some(vec![])
                } else if s.namespaces.is_empty() {
                    None
                } else {
                    Some(s.namespaces.clone())
                },
                quotas,
                sticky: if u.no_sticky {
                    Some(None)
                } else {
                    s.sticky().map(Some)
                },
                routes: (!s.route.is_empty()).then(|| s.route.clone()),
                dns: s.dns_given().then(|| s.dns()),
                mtu: if u.no_mtu {
                    Some(None)
                } else {
                    s.mtu.map(Some)
                },
            };
            session.call(&Request::SubnetUpdate {
                name: u.name,
                update,
            })?
        }
        SubnetCommand::Delete { name } => {
            let response = session.call(&Request::SubnetDelete { name: name.clone() })?;
            expect_response!(response, Response::SubnetDeleted => (), "SubnetDeleted")?;
            return session.print(&serde_json::json!({"deleted": name}), || {
                format!("subnet {name} deleted\n")
            });
        }
    };
    let info = expect_response!(response, Response::Subnet(s) => s, "Subnet")?;
    session.print(&info, || detail(&info))
}
