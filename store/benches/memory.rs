//! What a live allocation costs in the state machine's memory: applies a
//! million ADDs to a /12 and prints the resident-memory growth per
//! allocation, for attachments shaped as Kubernetes makes them (64-hex
//! container id, pod namespace, name and uid, a netns path) and for the
//! bare ones the node-API benchmark sends. Prints figures; asserts nothing
//! (`cargo bench -p ipkeep-store --bench memory`).

use ipkeep_api::message::AddRequest;
use ipkeep_api::model::{AttachmentKey, PodRef, SubnetSpec};
use ipkeep_store::{Command, Reply, State};

mod common;
use common::status_kib;

const LIVE: usize = 1_000_000;

fn add(i: usize, kubernetes: bool) -> Command {
    let (container_id, netns, pod) = if kubernetes {
        (
            format!("{i:064x}"),
            format!("/var/run/netns/cni-{i:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
            PodRef {
                namespace: Some(format!("team-{}", i % 50)),
                name: Some(format!("web-{}-7d9f8c6b5-{i:05x}", i % 300)),
                uid: Some(format!("{i:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6")),
            },
        )
    } else {
        (
            format!("scale-{i}"),
            "/var/run/netns/bench".into(),
            PodRef::default(),
        )
    };
    Command::Add {
        request: AddRequest {
            key: AttachmentKey {
                network: "k8s-pod-network".into(),
                container_id,
                ifname: "eth0".into(),
            },
            netns,
            subnets: vec![vec!["pods".into()]],
            pod,
            requested: vec![],
            mac: Default::default(),
            timing: Default::default(),
        },
        node: "worker-17.example.internal".into(),
        at_ms: 1_700_000_000_000,
        issued_us: 0,
    }
}

fn fill(kubernetes: bool) -> State {
    let mut state = State::default();
    let mut journal = Vec::new();
    state.apply(
        &Command::CreateSubnet {
            spec: SubnetSpec::plain("pods", "10.64.0.0/12".parse().expect("cidr")),
        },
        &mut journal,
    );
    for i in 0..LIVE {
        journal.clear();
        let reply = state.apply(&add(i, kubernetes), &mut journal);
        assert!(matches!(reply, Reply::Added(_)), "{reply:?}");
    }
    state
}

/// Each shape is measured in a process of its own: memory freed by one
/// would otherwise be reused by the next and hide its cost.
const SHAPE_ENV: &str = "IPKEEP_MEMORY_SHAPE";

fn main() {
    if let Ok(shape) = std::env::var(SHAPE_ENV) {
        let kubernetes = shape == "kubernetes";
        let before = status_kib("VmRSS");
        let start = std::time::Instant::now();
        let state = fill(kubernetes);
        let fill_ms = start.elapsed().as_secs_f64() * 1e3;
        let after = status_kib("VmRSS");
        // What a snapshot build walks while it holds the state: every record,
        // encoded.
        let start = std::time::Instant::now();
        let bytes: usize = state
            .records()
            .map(|r| r.key().len() + r.value().len())
            .sum();
        let records_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = std::time::Instant::now();
        let copy = state.clone();
        let clone_ms = start.elapsed().as_secs_f64() * 1e3;
        drop(copy);
        // What a restart or a snapshot install does with the records once
        // read: packs them and builds every index.
        let records: Vec<_> = state.records().collect();
        let start = std::time::Instant::now();
        let rebuilt = State::from_records(records).expect("rebuild");
        let rebuild_ms = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(rebuilt.allocation_count(), state.allocation_count());
        drop(rebuilt);
        let label = if kubernetes {
            "kubernetes-shaped"
        } else {
            "bare (node-API bench)"
        };
        println!(
            "{label:22} {LIVE} live: +{:>5.0} MiB resident, {:>5.0} bytes per allocation; \
             applied in {fill_ms:.0} ms, every record encoded in {records_ms:.0} ms ({} MiB), the state cloned in {clone_ms:.0} ms, rebuilt from its records in {rebuild_ms:.0} ms",
            after.saturating_sub(before) as f64 / 1024.0,
            after.saturating_sub(before) as f64 * 1024.0 / state.allocation_count() as f64,
            bytes >> 20
        );
        return;
    }
    let me = std::env::current_exe().expect("own path");
    for shape in ["bare", "kubernetes"] {
        let status = std::process::Command::new(&me)
            .env(SHAPE_ENV, shape)
            .status()
            .expect("run a shape");
        assert!(status.success(), "{shape}: {status}");
    }
}
