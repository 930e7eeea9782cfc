//! `ipkeepctl`, the ipkeep admin CLI: talks to the local `ipkeepd` over its
//! unix socket. Tables for people by default, `--output json` for scripts.

mod table;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipkeep_api::message::{IpEntry, IpListRequest, MemberInfo, NodeStatus, Request, Response};
use ipkeep_api::model::{Dns, GatewaySpec, IpRange, Route, SubnetInfo, SubnetSpec};
use ipkeep_api::{expect_response, Client, ClientError};
use ipnet::IpNet;
use serde::Serialize;
use table::{utc, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// ipkeepctl: manage ipkeep's subnets and addresses.
#[derive(Debug, Parser)]
#[command(name = "ipkeepctl", version)]
struct Cli {
    /// The node daemon's socket.
    #[arg(long, global = true, env = "IPKEEP_SOCKET", default_value = ipkeep_api::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    /// How long to wait for the daemon, in milliseconds.
    #[arg(long, global = true, default_value_t = 15_000)]
    timeout_ms: u64,

    /// Reads reflect every write committed before them, wherever it was
    /// made (the node first catches up with the leader). Default: this
    /// node's replica, which may lag a follower's by a few milliseconds.
    #[arg(long, global = true)]
    linearizable: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// This node's view of the cluster: id, role, leader, term, log indexes.
    Status,
    /// Subnets: create, list, show, delete.
    #[command(subcommand)]
    Subnet(SubnetCommand),
    /// Held addresses.
    #[command(subcommand)]
    Ip(IpCommand),
    /// Cluster members: list, add (as learner), promote, remove.
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
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

#[derive(Debug, Subcommand)]
enum SubnetCommand {
    /// Create a subnet.
    Create(SubnetCreate),
    /// List subnets with their use.
    List,
    /// Show one subnet.
    Show { name: String },
    /// Delete a subnet (refused while any of its addresses is held).
    Delete { name: String },
}

#[derive(Debug, Args)]
struct SubnetCreate {
    name: String,
    /// The subnet, e.g. 10.22.0.0/16 or fd00:22::/64.
    #[arg(long, value_parser = parse_cidr)]
    cidr: IpNet,
    /// Gateway address [default: the subnet's first address].
    #[arg(long, conflicts_with = "no_gateway")]
    gateway: Option<IpAddr>,
    /// No gateway: results carry none and no address is kept for it.
    #[arg(long)]
    no_gateway: bool,
    /// Addresses never handed out: ADDR, FIRST-LAST or CIDR (repeatable).
    #[arg(long, value_parser = parse_range)]
    exclude: Vec<IpRange>,
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
}

#[derive(Debug, Subcommand)]
enum IpCommand {
    /// List held addresses: address, pod, container, interface, node, since.
    List(IpFilter),
}

#[derive(Debug, Args)]
struct IpFilter {
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

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.22.0.0/16)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set; the network is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

fn parse_range(s: &str) -> Result<IpRange, String> {
    s.parse()
}

fn parse_route(s: &str) -> Result<Route, String> {
    s.parse()
}

struct Session {
    client: Client,
    output: Output,
    linearizable: bool,
}

impl Session {
    fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.client.call(request)
    }

    /// A read, made linearizable when asked.
    fn read(&mut self, request: Request) -> Result<Response, ClientError> {
        if self.linearizable {
            self.client.call(&Request::Linearize(Box::new(request)))
        } else {
            self.client.call(&request)
        }
    }

    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Table => print!("{}", table()),
        }
        Ok(())
    }
}

fn subnet_table(subnets: &[SubnetInfo]) -> String {
    let mut t = Table::new(&["NAME", "CIDR", "GATEWAY", "HELD", "FREE", "ASSIGNABLE"]);
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
            s.usage.assignable.to_string(),
        ]);
    }
    t.render()
}

fn subnet_detail(s: &SubnetInfo) -> String {
    let sub = &s.subnet;
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut out = String::new();
    out.push_str(&format!("name:        {}\n", sub.name));
    out.push_str(&format!("cidr:        {}\n", sub.cidr));
    out.push_str(&format!(
        "gateway:     {}\n",
        sub.gateway
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into())
    ));
    out.push_str(&format!(
        "exclude:     {}\n",
        list(sub.exclude.iter().map(|r| r.to_string()).collect())
    ));
    out.push_str(&format!(
        "routes:      {}\n",
        list(sub.routes.iter().map(|r| r.to_string()).collect())
    ));
    out.push_str(&format!(
        "nameservers: {}\n",
        list(sub.dns.nameservers.iter().map(|a| a.to_string()).collect())
    ));
    out.push_str(&format!(
        "domain:      {}\n",
        sub.dns.domain.clone().unwrap_or_else(|| "-".into())
    ));
    out.push_str(&format!("search:      {}\n", list(sub.dns.search.clone())));
    out.push_str(&format!("dns options: {}\n", list(sub.dns.options.clone())));
    out.push_str(&format!(
        "addresses:   {} held, {} free, {} assignable\n",
        s.usage.held, s.usage.free, s.usage.assignable
    ));
    out
}

fn subnet(session: &mut Session, command: SubnetCommand) -> anyhow::Result<()> {
    match command {
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
                routes: c.route,
                dns: Dns {
                    nameservers: c.nameserver,
                    domain: c.domain,
                    search: c.search,
                    options: c.dns_option,
                },
            };
            let response = session.call(&Request::SubnetCreate(spec))?;
            let info = expect_response!(response, Response::Subnet(s) => s, "Subnet")?;
            session.print(&info, || subnet_detail(&info))
        }
        SubnetCommand::List => {
            let response = session.read(Request::SubnetList)?;
            let list = expect_response!(response, Response::Subnets(s) => s, "Subnets")?;
            session.print(&list, || subnet_table(&list))
        }
        SubnetCommand::Show { name } => {
            let response = session.read(Request::SubnetShow { name })?;
            let info = expect_response!(response, Response::Subnet(s) => s, "Subnet")?;
            session.print(&info, || subnet_detail(&info))
        }
        SubnetCommand::Delete { name } => {
            let response = session.call(&Request::SubnetDelete { name: name.clone() })?;
            expect_response!(response, Response::SubnetDeleted => (), "SubnetDeleted")?;
            session.print(&serde_json::json!({"deleted": name}), || {
                format!("subnet {name} deleted\n")
            })
        }
    }
}

/// Page size of `ip list`; the whole list is fetched page by page.
const IP_PAGE: u32 = 5_000;

#[derive(Serialize)]
struct IpRow<'a> {
    #[serde(flatten)]
    entry: &'a IpEntry,
    since: String,
}

fn ip(session: &mut Session, command: IpCommand) -> anyhow::Result<()> {
    let IpCommand::List(filter) = command;
    let mut request = IpListRequest {
        subnet: filter.subnet,
        namespace: filter.namespace,
        node: filter.node,
        after: None,
        limit: IP_PAGE,
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
    let rows: Vec<IpRow> = entries
        .iter()
        .map(|e| IpRow {
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
        "node:          {} ({})\nrole:          {}\nleader:        {}\nterm:          {}\nlast log:      {}\napplied:       {}\nsnapshot:      {}\npurged:        {}\nvoters:        {}\nlearners:      {}\n",
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
    )
}

fn member_table(members: &[MemberInfo]) -> String {
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

fn member(session: &mut Session, command: MemberCommand) -> anyhow::Result<()> {
    let response = match command {
        MemberCommand::List => session.read(Request::MemberList)?,
        MemberCommand::Add { id, addr } => session.call(&Request::MemberAdd { id, addr })?,
        MemberCommand::Promote { id } => session.call(&Request::MemberPromote { id })?,
        MemberCommand::Remove { id } => session.call(&Request::MemberRemove { id })?,
    };
    let members = expect_response!(response, Response::Members(m) => m, "Members")?;
    session.print(&members, || member_table(&members))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::connect(&cli.socket, Duration::from_millis(cli.timeout_ms))
        .context("is ipkeepd running? (--socket or IPKEEP_SOCKET point to its socket)")?;
    let mut session = Session {
        client,
        output: cli.output,
        linearizable: cli.linearizable,
    };
    match cli.command {
        Command::Member(c) => member(&mut session, c),
        Command::Status => {
            let response = session.read(Request::NodeStatus)?;
            let status = expect_response!(response, Response::NodeStatus(s) => s, "NodeStatus")?;
            session.print(&status, || status_table(&status))
        }
        Command::Subnet(c) => subnet(&mut session, c),
        Command::Ip(c) => ip(&mut session, c),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api(api)) => {
                    eprintln!("error [{}]: {}: {}", api.code, api.msg, api.details)
                }
                _ => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
