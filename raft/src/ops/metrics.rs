//! The node's Prometheus metrics: request counters and latency histograms
//! kept as requests are served, and gauges read from the state and from
//! openraft at each scrape (so they are never stale).

use std::time::Duration;

use openraft::ServerState;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::node::Node;
use crate::cluster::write_batch::BatchCounters;
use crate::ops::refusals::RefusalCounters;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s: a local read is microseconds, a commit milliseconds,
    // a write waiting for an election seconds.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// What is counted as requests are served.
pub struct Metrics {
    requests: Family<Labels, Counter>,
    latency: HistogramFamily,
    /// What the write batcher proposed.
    pub batches: BatchCounters,
    /// Connections the listeners refused, by listener and reason.
    pub refused: RefusalCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            batches: BatchCounters::default(),
            refused: RefusalCounters::default(),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Sets a gauge family member; gauges are i64, and address counts of an
/// IPv6 subnet saturate there.
fn set(family: &Family<Labels, Gauge>, pairs: &[(&str, &str)], value: impl TryInto<i64>) {
    family
        .get_or_create(&labels(pairs))
        .set(value.try_into().unwrap_or(i64::MAX));
}

impl Metrics {
    /// One node API request: its kind ("add", "del", ...), its outcome's
    /// code (0 when it succeeded) and how long it took.
    pub fn observe(&self, kind: &str, code: u32, elapsed: Duration) {
        let code = code.to_string();
        self.requests
            .get_or_create(&labels(&[("request", kind), ("code", &code)]))
            .inc();
        self.latency
            .get_or_create(&labels(&[("request", kind)]))
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text of everything, now.
    pub fn render(&self, node: &Node) -> String {
        let mut registry = Registry::with_prefix("ipkeep");
        registry.register(
            "requests",
            "Node API requests served, by request and CNI error code (0: success)",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to serve a node API request, including its Raft commit",
            self.latency.clone(),
        );
        registry.register(
            "write_entries",
            "Raft entries this node proposed as leader for ADDs and DELs",
            self.batches.entries.clone(),
        );
        registry.register(
            "batched_writes",
            "ADDs and DELs those entries carried (more than entries: concurrent writes shared them)",
            self.batches.writes.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections the peer and node API listeners refused, by listener and reason",
            self.refused.clone(),
        );
        register_state(&mut registry, node);
        register_raft(&mut registry, node);
        register_disk(&mut registry, node);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &registry);
        let _ = encode_eof(&mut out);
        out
    }
}

fn register_state(registry: &mut Registry, node: &Node) {
    let subnet_addresses = Family::<Labels, Gauge>::default();
    let namespace_addresses = Family::<Labels, Gauge>::default();
    let pool_addresses = Family::<Labels, Gauge>::default();
    {
        let machine = node.machine.read();
        let state = &machine.state;
        for sub in state.subnets() {
            let name = sub.subnet.name.as_str();
            let Some(info) = state.subnet_info(name) else {
                continue;
            };
            let u = &info.usage;
            set(
                &subnet_addresses,
                &[("subnet", name), ("state", "held")],
                u.held,
            );
            set(
                &subnet_addresses,
                &[("subnet", name), ("state", "free")],
                u.free,
            );
            set(
                &subnet_addresses,
                &[("subnet", name), ("state", "reserved")],
                u.reserved,
            );
            set(
                &subnet_addresses,
                &[("subnet", name), ("state", "pooled")],
                u.pooled,
            );
            set(
                &subnet_addresses,
                &[("subnet", name), ("state", "bound_idle")],
                u.bound_idle,
            );
            set(
                &subnet_addresses,
                &[("subnet", name), ("state", "assignable")],
                u.assignable,
            );
            for (ns, n) in &info.by_namespace {
                set(
                    &namespace_addresses,
                    &[("subnet", name), ("namespace", ns)],
                    *n,
                );
            }
        }
        for pool in state.pools() {
            let name = pool.pool.name.as_str();
            let u = pool.usage();
            set(
                &pool_addresses,
                &[("pool", name), ("state", "held")],
                u.held,
            );
            set(
                &pool_addresses,
                &[("pool", name), ("state", "free")],
                u.free,
            );
            set(
                &pool_addresses,
                &[("pool", name), ("state", "bound_idle")],
                u.bound_idle,
            );
            set(
                &pool_addresses,
                &[("pool", name), ("state", "size")],
                u.size,
            );
        }
    }
    registry.register(
        "subnet_addresses",
        "Addresses of a subnet by state (held, free, reserved, pooled, bound_idle, assignable)",
        subnet_addresses,
    );
    registry.register(
        "namespace_addresses",
        "Addresses a namespace holds or keeps bound in a subnet (what quotas count)",
        namespace_addresses,
    );
    registry.register(
        "pool_addresses",
        "Addresses of a pool by state (held, free, bound_idle, size)",
        pool_addresses,
    );
}

fn register_raft(registry: &mut Registry, node: &Node) {
    let m = node.raft.metrics().borrow().clone();
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    let index = |v: Option<u64>| v.map(|i| i as i64).unwrap_or(-1);
    registry.register(
        "raft_term",
        "The node's current Raft term",
        gauge(m.current_term as i64),
    );
    registry.register(
        "raft_leader",
        "The leader this node knows of (-1: none)",
        gauge(m.current_leader.map(|l| l as i64).unwrap_or(-1)),
    );
    registry.register(
        "raft_is_leader",
        "1 on the leader",
        gauge(i64::from(m.state == ServerState::Leader)),
    );
    registry.register(
        "raft_last_log_index",
        "Index of the last entry in this node's log",
        gauge(index(m.last_log_index)),
    );
    registry.register(
        "raft_commit_index",
        "Index of the last entry this node knows committed",
        gauge(index(node.committed_index())),
    );
    registry.register(
        "raft_applied_index",
        "Index of the last entry applied to this node's state",
        gauge(index(m.last_applied.map(|l| l.index))),
    );
    registry.register(
        "raft_snapshot_index",
        "Index of the last entry in this node's snapshot",
        gauge(index(m.snapshot.map(|l| l.index))),
    );
    let millis = |t: Option<ipkeep_api::message::SnapshotTiming>| {
        t.map(|t| i64::try_from(t.millis).unwrap_or(i64::MAX))
            .unwrap_or(-1)
    };
    registry.register(
        "snapshot_last_build_milliseconds",
        "How long this node's last snapshot build took since it started (-1: none yet)",
        gauge(millis(node.snapshot_stats.last_built())),
    );
    registry.register(
        "snapshot_last_install_milliseconds",
        "How long this node's last snapshot install took since it started (-1: none yet)",
        gauge(millis(node.snapshot_stats.last_installed())),
    );
    let lag = Family::<Labels, Gauge>::default();
    if let (Some(replication), Some(last)) = (&m.replication, m.last_log_index) {
        for (id, matched) in replication {
            if *id == node.id {
                continue;
            }
            let behind = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
            set(&lag, &[("follower", &id.to_string())], behind);
        }
    }
    registry.register(
        "raft_replication_lag_entries",
        "On the leader: log entries each follower and learner is behind",
        lag,
    );
}

fn register_disk(registry: &mut Registry, node: &Node) {
    let Some(disk) = node.disk.status() else {
        return;
    };
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    registry.register(
        "disk_free_bytes",
        "Free space in the data directory's filesystem",
        gauge(disk.free_bytes),
    );
    registry.register(
        "disk_floor_bytes",
        "The free space under which the node takes no writes and no replicated entries (--min-free-space)",
        gauge(disk.floor_bytes),
    );
    registry.register(
        "disk_low",
        "1 while the data directory is under its free-space floor",
        gauge(u64::from(disk.low)),
    );
}
