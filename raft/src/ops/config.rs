//! ipkeepd's command line and the settings derived from it.

use std::path::PathBuf;
use std::time::Duration;

use crate::jobs::reconciler::ReconcileMode;
use clap::{Parser, ValueEnum};
use ipkeep_api::model::SubnetSpec;
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

    /// Address (IP:PORT) this node's peers reach it on; the peer listener
    /// binds it when a cluster secret is set [default: this node's entry in
    /// --initial-cluster, else 127.0.0.1:7470].
    #[arg(long, env = "IPKEEP_LISTEN")]
    pub listen: Option<String>,

    /// Members of a new cluster, as ID=IP:PORT,ID=IP:PORT,... (the same list on
    /// every node). A node that already has state ignores it and resumes.
    #[arg(long, env = "IPKEEP_INITIAL_CLUSTER", value_parser = parse_initial_cluster)]
    pub initial_cluster: Option<InitialCluster>,

    /// Start with an empty data directory and wait to be added by
    /// `ipkeepctl member add` on a member, instead of forming a cluster.
    #[arg(long, env = "IPKEEP_JOIN", conflicts_with = "initial_cluster")]
    pub join: bool,

    /// File holding the cluster secret (at least 16 bytes), the same on every
    /// node. Without it the node runs a single-node cluster and opens no port.
    #[arg(long, env = "IPKEEP_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// An environment file (IPKEEP_*=VALUE lines, as systemd's EnvironmentFile)
    /// to read settings from; flags and the environment take precedence.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Subnet created when a new single-node cluster is initialised, as
    /// NAME=CIDR, or "none".
    #[arg(long, env = "IPKEEP_DEFAULT_SUBNET", default_value = "default=10.22.0.0/16", value_parser = parse_default_subnet)]
    pub default_subnet: DefaultSubnet,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:7472).
    #[arg(long, env = "IPKEEP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// What the leak reconciler does with attachments of this node whose
    /// network namespace is gone: release them after --leak-grace (on), only
    /// list them in `ipkeepctl ip leaks` (report), or nothing (off).
    #[arg(long, env = "IPKEEP_RECONCILE", value_enum, default_value_t = ReconcileMode::On)]
    pub reconcile: ReconcileMode,

    /// How long a namespace must be gone before its addresses are released
    /// (e.g. 300s, 5m).
    #[arg(long, env = "IPKEEP_LEAK_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub leak_grace: Duration,

    /// How often the reconciler looks.
    #[arg(long, env = "IPKEEP_RECONCILE_EVERY", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_every: Duration,

    /// Seed a new cluster from a backup (`ipkeepctl snapshot save`): on an
    /// empty data directory, on the single node or the member with the
    /// lowest id; replaces the default subnet.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,

    /// Node API connections served at once. One process may hold at most
    /// a quarter of them; near the limit, connections idle for a second are
    /// closed to make room.
    #[arg(long, env = "IPKEEP_MAX_API_CONNECTIONS", default_value_t = crate::node_api::admission::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_api_connections: u64,

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

    /// Writes are refused (CNI error 11, saying why) while the data
    /// directory has less free space than this, so that sled never runs out
    /// of space half-way through a write; they resume by themselves when
    /// space returns. 0 turns the check off.
    #[arg(long, env = "IPKEEP_MIN_FREE_SPACE", default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_free_space: u64,

    /// sled's page cache, in MiB. The state is served from memory and sled
    /// only written behind it, so a larger cache speeds up little and costs
    /// resident memory on every node (`ipkeep-bench --scale` shows both).
    #[arg(long, env = "IPKEEP_CACHE_MIB", default_value_t = 32)]
    pub cache_mib: u64,

    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, env = "IPKEEP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing's env-filter syntax); RUST_LOG overrides it.
    #[arg(
        long,
        env = "IPKEEP_LOG_LEVEL",
        default_value = "info,openraft=warn,sled=warn"
    )]
    pub log_level: String,

    /// Development mode: state in ./ipkeep-dev and the socket at
    /// ./ipkeep-dev/ipkeepd.sock, so that no root is needed.
    #[arg(long)]
    pub dev: bool,
}

/// The members a new cluster starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster(pub std::collections::BTreeMap<u64, String>);

fn parse_initial_cluster(s: &str) -> Result<InitialCluster, String> {
    let mut members = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not ID=IP:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| format!("{id:?} is not a node id (a number from 1)"))?;
        addr.parse::<std::net::SocketAddr>()
            .map_err(|_| format!("{addr:?} is not IP:PORT"))?;
        if members.insert(id, addr.to_owned()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return Err("lists no member".into());
    }
    Ok(InitialCluster(members))
}

/// Loads an environment file into the process environment, without
/// overriding variables already set. Called before the flags are parsed.
pub fn load_env_file(path: &std::path::Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or_else(|| {
            format!(
                "--config {} line {}: {line:?} is not KEY=VALUE",
                path.display(),
                n + 1
            )
        })?;
        let value = value.trim().trim_matches('"').trim_matches('\'');
        if std::env::var_os(key.trim()).is_none() {
            std::env::set_var(key.trim(), value);
        }
    }
    Ok(())
}

/// The `--config` value on a command line, found before clap runs (the file
/// supplies values clap reads from the environment).
pub fn config_file_in(args: &[String]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
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
            DefaultSubnet::Create { name, cidr } => Some(SubnetSpec::plain(name.clone(), *cidr)),
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
    let cidr = ipkeep_api::units::network(cidr)?;
    Ok(DefaultSubnet::Create {
        name: name.to_owned(),
        cidr,
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    ipkeep_api::units::duration(s)
}

/// A size: plain bytes, or with a unit (K, M, G, KiB, MiB, GiB; powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64MiB, 512K, 1G, 1048576)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("{s:?}: the unit must be K, M or G (KiB, MiB, GiB)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
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

    /// The peer address of this node.
    pub fn listen(&self) -> String {
        if let Some(l) = &self.listen {
            return l.clone();
        }
        self.initial_cluster
            .as_ref()
            .and_then(|c| c.0.get(&self.node_id).cloned())
            .unwrap_or_else(|| "127.0.0.1:7470".into())
    }

    /// Checks what clap cannot: the flags that only make sense together.
    pub fn check(&self) -> Result<(), String> {
        if let Some(cluster) = &self.initial_cluster {
            let Some(mine) = cluster.0.get(&self.node_id) else {
                return Err(format!(
                    "--initial-cluster does not list this node (--node-id {})",
                    self.node_id
                ));
            };
            if *mine != self.listen() {
                return Err(format!(
                    "--initial-cluster gives node {} the address {mine}, but --listen is {}",
                    self.node_id,
                    self.listen()
                ));
            }
        }
        if (self.initial_cluster.is_some() || self.join) && self.cluster_secret_file.is_none() {
            return Err("a cluster of several nodes needs a shared secret: --cluster-secret-file (or IPKEEP_CLUSTER_SECRET_FILE)".into());
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
