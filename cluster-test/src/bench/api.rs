//! Committed allocations per second through the node API: clients that
//! speak to `ipkeepd`'s unix socket directly, as the plugin does, minus the
//! plugin's exec. Every ADD answered here is committed through Raft.

use std::path::Path;
use std::time::Duration;

use ipkeep_api::message::{AddRequest, DelRequest, MacWish, Request, Timing};
use ipkeep_api::model::{AttachmentKey, PodRef};
use ipkeep_api::Client;
use serde::Serialize;

use super::{percentile, run_concurrently, Timed};

#[derive(Debug, Clone, Serialize)]
pub struct ApiRow {
    pub command: String,
    pub clients: usize,
    pub calls: usize,
    pub failures: usize,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The network name and namespace path every benchmark attachment uses.
const NETWORK: &str = "bench";
const NETNS: &str = "/var/run/netns/bench";

fn key(container: String) -> AttachmentKey {
    AttachmentKey {
        network: NETWORK.into(),
        container_id: container,
        ifname: "eth0".into(),
    }
}

fn add(subnet: &str, container: String) -> Request {
    Request::Add(AddRequest {
        key: key(container),
        netns: NETNS.into(),
        subnets: vec![vec![subnet.to_owned()]],
        pod: PodRef::default(),
        requested: vec![],
        mac: MacWish::NotNeeded,
        timing: Timing::default(),
    })
}

fn del(container: String) -> Request {
    Request::Del(DelRequest {
        key: key(container),
        timing: Timing::default(),
    })
}

/// Sends `calls` requests (`make(i)` for i in `first..first + calls`) from
/// `clients` connections at once; a failed call is counted and its
/// connection replaced.
fn run(
    socket: &Path,
    clients: usize,
    first: usize,
    calls: usize,
    make: &(dyn Fn(usize) -> Request + Sync),
) -> Timed {
    run_concurrently(
        clients,
        calls,
        || None,
        |client: &mut Option<Client>, i| {
            if client.is_none() {
                *client = Client::connect(socket, Duration::from_secs(30)).ok();
            }
            let answered = client
                .as_mut()
                .is_some_and(|c| c.call(&make(first + i)).is_ok());
            if !answered {
                *client = None;
            }
            answered
        },
    )
}

fn row(command: &str, clients: usize, calls: usize, measured: Timed) -> ApiRow {
    let Timed {
        latencies,
        failures,
        wall,
    } = measured;
    ApiRow {
        command: command.into(),
        clients,
        calls,
        failures,
        per_s: (calls - failures) as f64 / wall.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// An ADD row and the DEL row that releases it, with `clients` connections.
pub fn add_del_rows(socket: &Path, subnet: &str, clients: usize, calls: usize) -> Vec<ApiRow> {
    let name = move |i: usize| format!("api-c{clients}-{i}");
    let adds = run(socket, clients, 0, calls, &|i| add(subnet, name(i)));
    let dels = run(socket, clients, 0, calls, &|i| del(name(i)));
    vec![
        row("ADD", clients, calls, adds),
        row("DEL", clients, calls, dels),
    ]
}

/// ADDs then DELs `count` containers (`churn-FIRST` onward) from `clients`
/// connections: Raft entries that leave the live level where it was.
/// Returns the calls that failed.
pub fn churn(socket: &Path, subnet: &str, clients: usize, first: usize, count: usize) -> usize {
    let name = |i: usize| format!("churn-{i}");
    let adds = run(socket, clients, first, count, &|i| add(subnet, name(i)));
    let dels = run(socket, clients, first, count, &|i| del(name(i)));
    adds.failures + dels.failures
}

/// Allocates `count` addresses (containers `fill-FIRST` onward) and returns
/// how many failed and how long it took.
pub fn fill(
    socket: &Path,
    subnet: &str,
    clients: usize,
    first: usize,
    count: usize,
) -> (usize, Duration) {
    let Timed { failures, wall, .. } = run(socket, clients, first, count, &|i| {
        add(subnet, format!("fill-{i}"))
    });
    (failures, wall)
}

pub fn table(rows: &[ApiRow]) -> String {
    let mut out = format!(
        "{:<8} {:>7} {:>8} {:>6} {:>10} {:>8} {:>8}\n",
        "command", "clients", "calls", "fails", "per s", "p50 ms", "p99 ms"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:>7} {:>8} {:>6} {:>10.0} {:>8.2} {:>8.2}\n",
            r.command, r.clients, r.calls, r.failures, r.per_s, r.p50_ms, r.p99_ms
        ));
    }
    out
}
