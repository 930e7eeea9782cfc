//! ipkeepd's command line and the settings derived from it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipkeep_api::model::{Dns, GatewaySpec, SubnetSpec};
use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// ipkeepd: the ipkeep node daemon. Holds the cluster's address plan in a Raft
/// group and answers the CNI plugin and ipkeepctl on a unix socket.
#[derive(Debug, Parser)]
#[command(name = "ipkeepd", version)]
pub struct Args {
    /// Where the node keeps its Raft log, state and snapshots.
    #[arg(long, env = "IPKEEP_DATA_DIR", default_value = "/var/lib/ipkeep")]
    pub data_dir: PathBuf,

    /// The node API's unix socket (created mode 0600).
    #[arg(long, env = "IPKEEP_SOCKET", default_value = ipkeep_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// This node's Raft id, unique in the cluster.
    #[arg(long, env = "IPKEEP_NODE_ID", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,

    /// The node name recorded with each allocation [default: the host name].
    #[arg(long, env = "IPKEEP_NODE_NAME")]
    pub node_name: Option<String>,

    /// Address (host:port) this node's peers reach it on.
    #[arg(long, env = "IPKEEP_LISTEN", default_value = "127.0.0.1:7470")]
    pub listen: String,

    /// Subnet created when a new single-node cluster is initialised, as
    /// NAME=CIDR, or "none".
    #[arg(long, env = "IPKEEP_DEFAULT_SUBNET", default_value = "default=10.22.0.0/16", value_parser = parse_default_subnet)]
    pub default_subnet: DefaultSubnet,

    /// Take a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot, for slow followers.
    #[arg(long, default_value_t = 1_000)]
    pub keep_logs: u64,

    /// How long a write may wait for its commit before the caller gets
    /// "try again later" (CNI error 11).
    #[arg(long, default_value = "5000", value_parser = parse_millis)]
    pub write_timeout_ms: Duration,

    /// sled's page cache, in MiB.
    #[arg(long, default_value_t = 64)]
    pub cache_mib: u64,

    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing's env-filter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info,openraft=warn,sled=warn")]
    pub log_level: String,

    /// Development mode: state in ./ipkeep-dev and the socket at
    /// ./ipkeep-dev/ipkeepd.sock, so that no root is needed.
    #[arg(long)]
    pub dev: bool,
}

#[derive(Debug, Clone)]
pub enum DefaultSubnet {
    None,
    Create { name: String, cidr: IpNet },
}

impl DefaultSubnet {
    pub fn spec(&self) -> Option<SubnetSpec> {
        match self {
            DefaultSubnet::None => None,
            DefaultSubnet::Create { name, cidr } => Some(SubnetSpec {
                name: name.clone(),
                cidr: *cidr,
                gateway: GatewaySpec::Auto,
                exclude: vec![],
                routes: vec![],
                dns: Dns::default(),
            }),
        }
    }
}

fn parse_default_subnet(s: &str) -> Result<DefaultSubnet, String> {
    if s == "none" {
        return Ok(DefaultSubnet::None);
    }
    let (name, cidr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=CIDR (e.g. default=10.22.0.0/16) or none"))?;
    ipkeep_api::names::check_object_name(name).map_err(|r| format!("name {r}"))?;
    let cidr: IpNet = cidr
        .parse()
        .map_err(|_| format!("{cidr:?} is not a CIDR (e.g. 10.22.0.0/16)"))?;
    if cidr.trunc() != cidr {
        return Err(format!(
            "{cidr} has host bits set; the network is {}",
            cidr.trunc()
        ));
    }
    Ok(DefaultSubnet::Create {
        name: name.to_owned(),
        cidr,
    })
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if ms == 0 {
        return Err("must be at least 1 ms".into());
    }
    Ok(Duration::from_millis(ms))
}

impl Args {
    /// Applies `--dev` and fills in the defaults that need the system.
    pub fn settle(mut self) -> Args {
        if self.dev {
            let dir = PathBuf::from("ipkeep-dev");
            self.socket = dir.join("ipkeepd.sock");
            self.data_dir = dir;
        }
        if self.node_name.is_none() {
            self.node_name = Some(hostname());
        }
        self
    }

    pub fn node_name(&self) -> &str {
        self.node_name.as_deref().unwrap_or("localhost")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
