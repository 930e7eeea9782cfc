//! A multi-node ipkeep cluster on one machine: each node an `ipkeepd`
//! process in its own network namespace, with its own address on a shared
//! bridge (in a hub namespace), its own data directory and socket. Faults are
//! real: kill -9, SIGSTOP, nftables rules that drop a node's packets, wiped
//! data directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipkeep_api::message::{IpListRequest, NodeStatus, Request, Response};
use ipkeep_api::Client;

use crate::bins::bin;
use crate::ctl::{ctl, CtlOutput};
use crate::history::FinalState;
use crate::netns::{sh, NetNs};
use crate::wait;

pub const PEER_PORT: u16 = 7470;
/// The address of [`Cluster::outsider`].
pub const OUTSIDER_IP: &str = "10.254.0.250";
const SECRET: &str = "chaos-test-cluster-secret-0123456789";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// `NAME=CIDR` of the subnet the cluster is created with.
    pub subnet: String,
    pub write_timeout_ms: u64,
    pub snapshot_every: u64,
    pub keep_logs: u64,
    /// A backup the first member seeds the new cluster with (`--restore`);
    /// `subnet` then only names a subnet the backup holds.
    pub restore: Option<PathBuf>,
    /// Run each node's leak reconciler with this grace period and interval
    /// (e.g. "3s", "500ms"). Off by default: most workloads use namespace
    /// paths that do not exist, which it would rightly release.
    pub reconcile: Option<(String, String)>,
    /// Put each node's data directory on a tmpfs of this many MiB (a small
    /// disk a test can fill, see `tmpfs::fill`).
    pub data_tmpfs_mib: Option<u64>,
    /// More flags for every node's daemon.
    pub extra_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            subnet: "pods=10.200.0.0/23".into(),
            write_timeout_ms: 3000,
            snapshot_every: 500,
            keep_logs: 50,
            restore: None,
            reconcile: None,
            data_tmpfs_mib: None,
            extra_args: vec![],
        }
    }
}

pub struct ClusterNode {
    pub id: u64,
    pub ns: NetNs,
    pub ip: String,
    pub dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started with --join (after a wipe) rather than --initial-cluster.
    joined: bool,
}

impl ClusterNode {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("ipkeepd.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ipkeepd.log")
    }

    pub fn addr(&self) -> String {
        format!("{}:{PEER_PORT}", self.ip)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_serving(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// Where a node's packets are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

pub struct Cluster {
    pub options: ClusterOptions,
    pub dir: PathBuf,
    hub: NetNs,
    pub nodes: Vec<ClusterNode>,
    secret_file: PathBuf,
    /// node -> (addresses it drops from, addresses it drops to)
    cuts: BTreeMap<u64, (BTreeSet<String>, BTreeSet<String>)>,
    outsider_ready: bool,
    /// node -> how far its clock is off (ms), for its daemon and for the
    /// plugin calls made on it (see `ipkeep_api::clock`).
    skews: ClockSkews,
}

/// Shared with the workload, whose plugin calls on a node take its skew.
pub type ClockSkews = std::sync::Arc<std::sync::Mutex<BTreeMap<u64, i64>>>;

fn node_ip(id: u64) -> String {
    format!("10.254.0.{id}")
}

impl Cluster {
    /// Builds the network, starts every node with the same member list, and
    /// waits until the cluster has a leader and its subnet.
    pub fn start(options: ClusterOptions, dir: &Path) -> Cluster {
        assert!((1..=200).contains(&options.nodes), "1 to 200 nodes");
        fs::create_dir_all(dir).expect("run directory");
        let secret_file = dir.join("cluster.secret");
        fs::write(&secret_file, SECRET).expect("secret file");
        let hub = NetNs::new("ikc-hub");
        hub.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        hub.exec(&["ip", "link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for id in 1..=options.nodes as u64 {
            let ns = NetNs::new(&format!("ikc-n{id}"));
            // Both ends are created inside their namespaces, so that clusters
            // running side by side never clash over names on the host.
            let outside = format!("v{id}");
            sh(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &ns.name, "type", "veth", "peer", "name",
                    &outside, "netns", &hub.name,
                ],
            );
            hub.exec(&["ip", "link", "set", &outside, "master", "br0"]);
            hub.exec(&["ip", "link", "set", &outside, "up"]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", node_ip(id)),
                "dev",
                "eth0",
            ]);
            ns.exec(&["ip", "link", "set", "eth0", "up"]);
            let node_dir = dir.join(format!("n{id}"));
            fs::create_dir_all(&node_dir).expect("node directory");
            nodes.push(ClusterNode {
                id,
                ns,
                ip: node_ip(id),
                dir: node_dir,
                child: None,
                paused: false,
                joined: false,
            });
        }
        let mut cluster = Cluster {
            options,
            dir: dir.to_owned(),
            hub,
            nodes,
            secret_file,
            cuts: BTreeMap::new(),
            outsider_ready: false,
            skews: ClockSkews::default(),
        };
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        cluster.wait_for_leader(Duration::from_secs(60));
        let first = cluster.ids()[0];
        let subnet_name = cluster
            .options
            .subnet
            .split('=')
            .next()
            .unwrap_or_default()
            .to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !cluster.ctl(first, &["subnet", "show", &subnet_name]).ok() {
            if std::time::Instant::now() > deadline {
                let tails: Vec<String> = cluster
                    .ids()
                    .iter()
                    .map(|id| format!("node {id}:\n{}", cluster.log_tail(*id, 15)))
                    .collect();
                panic!(
                    "subnet {subnet_name} not on node {first} within 60 s; logs in {}:\n{}",
                    cluster.dir.display(),
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// A network namespace on the nodes' network that is not a node (the
    /// hub itself, given the address [`OUTSIDER_IP`] on first use): where
    /// a test runs a hostile client with an address of its own.
    pub fn outsider(&mut self) -> &NetNs {
        if !self.outsider_ready {
            self.hub.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{OUTSIDER_IP}/24"),
                "dev",
                "br0",
            ]);
            self.outsider_ready = true;
        }
        &self.hub
    }

    /// Gives node `id` a clock `ms` off (0: the system's) from its next
    /// start on, and at once for plugin calls made on it.
    pub fn set_clock_skew(&mut self, id: u64, ms: i64) {
        let mut skews = self.skews.lock().unwrap_or_else(|p| p.into_inner());
        if ms == 0 {
            skews.remove(&id);
        } else {
            skews.insert(id, ms);
        }
    }

    pub fn clock_skews(&self) -> ClockSkews {
        self.skews.clone()
    }

    /// Every serving node's state digest (`Request::StateDigest`).
    pub fn digests(&self) -> Vec<(u64, ipkeep_api::message::StateDigest)> {
        self.ids()
            .into_iter()
            .filter(|&id| self.node(id).is_serving())
            .filter_map(|id| {
                let mut client =
                    Client::connect(&self.node(id).socket(), Duration::from_secs(10)).ok()?;
                match client.call(&Request::StateDigest) {
                    Ok(Response::Digest(d)) => Some((id, d)),
                    _ => None,
                }
            })
            .collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &ClusterNode {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut ClusterNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a node's daemon (its data directory is kept).
    pub fn spawn(&mut self, id: u64) {
        let initial = self.initial_cluster();
        let first_id = self.ids()[0];
        let options = self.options.clone();
        let secret = self.secret_file.clone();
        let skew = self
            .skews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("node log");
        if let Some(mib) = options.data_tmpfs_mib {
            crate::tmpfs::mount(&node.data_dir(), mib);
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns.name])
            .arg(bin("ipkeepd"))
            .args([
                "--node-id",
                &id.to_string(),
                "--node-name",
                &format!("n{id}"),
            ])
            .arg("--data-dir")
            .arg(node.data_dir())
            .arg("--socket")
            .arg(node.socket())
            .args(["--listen", &node.addr()])
            .arg("--cluster-secret-file")
            .arg(&secret)
            .args(["--write-timeout-ms", &options.write_timeout_ms.to_string()])
            .args(["--snapshot-every", &options.snapshot_every.to_string()])
            .args(["--keep-logs", &options.keep_logs.to_string()])
            .args(match &options.reconcile {
                Some((grace, every)) => vec![
                    "--reconcile".to_owned(),
                    "on".to_owned(),
                    "--leak-grace".to_owned(),
                    grace.clone(),
                    "--reconcile-every".to_owned(),
                    every.clone(),
                ],
                None => vec!["--reconcile".to_owned(), "off".to_owned()],
            })
            .args(&options.extra_args)
            // IPKEEP_TEST_RUST_LOG adds detail to a run under study.
            .env(
                "RUST_LOG",
                std::env::var("IPKEEP_TEST_RUST_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match skew {
            Some(ms) => cmd.env(ipkeep_api::clock::SKEW_ENV, ms.to_string()),
            None => cmd.env_remove(ipkeep_api::clock::SKEW_ENV),
        };
        if node.joined {
            cmd.arg("--join").args(["--default-subnet", "none"]);
        } else {
            cmd.args(["--initial-cluster", &initial]);
            match &options.restore {
                Some(backup) => {
                    cmd.args(["--default-subnet", "none"]);
                    if id == first_id {
                        cmd.arg("--restore").arg(backup);
                    }
                }
                None => {
                    cmd.args(["--default-subnet", &options.subnet]);
                }
            }
        }
        // `ip netns exec` execs the daemon in place: the child's pid is ipkeepd's.
        node.child = Some(cmd.spawn().expect("spawn ipkeepd"));
        node.paused = false;
    }

    /// Waits until a started node serves its socket.
    pub fn wait_serving(&self, id: u64, limit: Duration) {
        let socket = self.node(id).socket();
        wait::until(&format!("node {id} to serve its socket"), limit, || {
            status_at(&socket).map(|_| ())
        });
    }

    /// Daemons that exited without being told to (a crash), reaped; their
    /// nodes count as stopped from now on.
    pub fn exited(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((node.id, status.to_string()));
                    node.child = None;
                    node.paused = false;
                }
            }
        }
        out
    }

    pub fn kill9(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(&child, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(child) = &node.child {
            signal(child, libc::SIGSTOP);
            node.paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(child) = &node.child {
            signal(child, libc::SIGCONT);
        }
        node.paused = false;
    }

    /// Kills a node and deletes its data directory; it must rejoin as a new
    /// learner (see `rejoin`).
    pub fn wipe(&mut self, id: u64) {
        self.kill9(id);
        let node = self.node_mut(id);
        let _ = fs::remove_dir_all(node.data_dir());
        node.joined = true;
    }

    pub fn status(&self, id: u64) -> Option<NodeStatus> {
        let node = self.node(id);
        if !node.is_serving() {
            return None;
        }
        status_at(&node.socket())
    }

    /// The node that the serving nodes agree leads, if one does.
    pub fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.ids() {
            if let Some(s) = self.status(id) {
                if s.role == "Leader" {
                    *votes.entry(s.node_id).or_default() += 1;
                } else if let Some(l) = s.leader {
                    *votes.entry(l).or_default() += 1;
                }
            }
        }
        let (leader, count) = votes.into_iter().max_by_key(|(_, c)| *c)?;
        (count * 2 > self.nodes.len() && self.status(leader).is_some_and(|s| s.role == "Leader"))
            .then_some(leader)
    }

    pub fn wait_for_leader(&self, limit: Duration) -> u64 {
        wait::until("a leader", limit, || self.leader())
    }

    /// Runs an ipkeepctl command on a serving node other than `not`,
    /// retrying (membership changes answer "try again" during an election)
    /// until it succeeds or `limit` passes; Err holds the last stderr.
    pub fn ctl_until_ok(&self, not: u64, args: &[&str], limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no serving node to ask");
        while Instant::now() < deadline {
            let via = self
                .ids()
                .into_iter()
                .find(|&i| i != not && self.node(i).is_serving());
            if let Some(id) = via {
                let out = self.ctl(id, args);
                if out.ok() {
                    return Ok(());
                }
                last = out.stderr;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last)
    }

    /// Waits until every running node has applied what the leader has
    /// logged; false if `limit` passes first.
    pub fn wait_caught_up(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let leader_index = self
                .leader()
                .and_then(|l| self.status(l))
                .and_then(|s| s.last_log_index);
            if let Some(target) = leader_index {
                let behind = self
                    .ids()
                    .into_iter()
                    .filter(|&id| self.node(id).is_running())
                    .any(|id| {
                        self.status(id)
                            .and_then(|s| s.last_applied)
                            .is_none_or(|a| a < target)
                    });
                if !behind {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn ctl(&self, id: u64, args: &[&str]) -> CtlOutput {
        ctl(&self.node(id).socket(), args)
    }

    /// Drops packets between `id` and `peers` in the given direction, seen
    /// from `id` (rules live in its namespace).
    pub fn cut(&mut self, id: u64, peers: &[u64], direction: Direction) {
        let ips: Vec<String> = peers.iter().map(|p| node_ip(*p)).collect();
        let entry = self.cuts.entry(id).or_default();
        if matches!(direction, Direction::In | Direction::Both) {
            entry.0.extend(ips.iter().cloned());
        }
        if matches!(direction, Direction::Out | Direction::Both) {
            entry.1.extend(ips.iter().cloned());
        }
        self.apply_rules(id);
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        let ids: Vec<u64> = self.cuts.keys().copied().collect();
        self.cuts.clear();
        for id in ids {
            self.apply_rules(id);
        }
    }

    fn apply_rules(&self, id: u64) {
        let (from, to) = self.cuts.get(&id).cloned().unwrap_or_default();
        let set = |ips: &BTreeSet<String>| ips.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut rules = String::from("flush ruleset\n");
        if !from.is_empty() || !to.is_empty() {
            rules.push_str("table inet ipkeep_chaos {\n");
            rules.push_str("  chain input { type filter hook input priority 0; policy accept;\n");
            if !from.is_empty() {
                rules.push_str(&format!("    ip saddr {{ {} }} drop\n", set(&from)));
            }
            rules.push_str(
                "  }\n  chain output { type filter hook output priority 0; policy accept;\n",
            );
            if !to.is_empty() {
                rules.push_str(&format!("    ip daddr {{ {} }} drop\n", set(&to)));
            }
            rules.push_str("  }\n}\n");
        }
        self.node(id)
            .ns
            .exec_with_stdin(&["nft", "-f", "-"], &rules)
            .unwrap_or_else(|e| panic!("nft in node {id}: {e}\n{rules}"));
    }

    /// Waits until every serving node has applied the same last index.
    pub fn wait_converged(&self, limit: Duration) -> bool {
        let probe = || {
            let statuses: Vec<NodeStatus> = self
                .ids()
                .iter()
                .filter_map(|id| self.status(*id))
                .collect();
            if statuses.len() != self.nodes.len() {
                return None;
            }
            let top = statuses.iter().filter_map(|s| s.last_log_index).max()?;
            statuses
                .iter()
                .all(|s| s.last_applied == Some(top) && s.last_log_index == Some(top))
                .then_some(())
        };
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if probe().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Every node's held addresses, by container id; the nodes that do
    /// not answer are left out (see `silent_nodes`).
    pub fn final_states(&self) -> Vec<FinalState> {
        self.ids()
            .into_iter()
            .filter_map(|id| {
                held_by_container(&self.node(id).socket())
                    .ok()
                    .map(|held| FinalState { node: id, held })
            })
            .collect()
    }

    /// The nodes that do not answer `ip list`, and why.
    pub fn silent_nodes(&self) -> Vec<(u64, String)> {
        self.ids()
            .into_iter()
            .filter_map(|id| {
                held_by_container(&self.node(id).socket())
                    .err()
                    .map(|e| (id, e))
            })
            .collect()
    }

    /// Restarts every stopped node, resumes paused ones, removes all cuts.
    pub fn restore_all(&mut self) {
        self.heal();
        for id in self.ids() {
            let node = self.node(id);
            if node.paused {
                self.resume(id);
            } else if !node.is_running() {
                self.spawn(id);
            }
        }
    }

    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let log = fs::read_to_string(self.node(id).log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

pub fn status_at(socket: &Path) -> Option<NodeStatus> {
    let mut client = Client::connect(socket, Duration::from_secs(2)).ok()?;
    match client.call(&Request::NodeStatus).ok()? {
        Response::NodeStatus(s) => Some(s),
        _ => None,
    }
}

/// A node's held addresses by container id; an error when it does not answer.
fn held_by_container(socket: &Path) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut request = IpListRequest {
        limit: 5000,
        ..Default::default()
    };
    loop {
        let mut client = Client::connect(socket, Duration::from_secs(10))
            .map_err(|e| format!("cannot connect: {e}"))?;
        let page = match client
            .call(&Request::IpList(request.clone()))
            .map_err(|e| format!("ip list: {e}"))?
        {
            Response::Ips(p) => p,
            other => return Err(format!("ip list answered {}", other.kind())),
        };
        for e in page.entries {
            held.entry(e.key.container_id)
                .or_default()
                .push(e.address.to_string());
        }
        match page.next {
            Some(n) => request.after = Some(n),
            None => break,
        }
    }
    for addrs in held.values_mut() {
        addrs.sort();
    }
    Ok(held)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill9(id);
            if self.options.data_tmpfs_mib.is_some() {
                crate::tmpfs::unmount(&self.node(id).data_dir());
            }
        }
        // The namespaces (and with them the links and rules) go with NetNs's drop.
        let _ = &self.hub;
    }
}
