//! What installing a snapshot of many live allocations costs a node: one
//! process applies the allocations to a store on disk and builds a snapshot;
//! a second, fresh process (so that its peak is the install's alone) opens an
//! empty store, receives that snapshot as openraft hands it over and installs
//! it, then prints the time until it serves, the time until sled's tree is
//! rewritten from it behind, and its resident memory before, once serving
//! and at the peak (VmHWM). Prints figures; asserts nothing
//! (`cargo bench -p ipkeep-store --bench snapshot_install`; set
//! `IPKEEP_INSTALL_LIVE` for another size than a million).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ipkeep_api::message::AddRequest;
use ipkeep_api::model::{AttachmentKey, PodRef, SubnetSpec};
use ipkeep_store::storage::{self, StorageOptions};
use ipkeep_store::types::{Entry, LogId, SnapshotMeta};
use ipkeep_store::Command;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};
use tokio::io::AsyncWriteExt;

mod common;
use common::status_kib;

const STAGE_ENV: &str = "IPKEEP_INSTALL_STAGE";
const LIVE_ENV: &str = "IPKEEP_INSTALL_LIVE";
const ENTRIES_PER_APPLY: usize = 1_000;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

/// An attachment shaped as the node-API benchmark sends them.
fn add(i: usize) -> Command {
    Command::Add {
        request: AddRequest {
            key: AttachmentKey {
                network: "k8s-pod-network".into(),
                container_id: format!("scale-{i}"),
                ifname: "eth0".into(),
            },
            netns: "/var/run/netns/bench".into(),
            subnets: vec![vec!["pods".into()]],
            pod: PodRef::default(),
            requested: vec![],
            mac: Default::default(),
            timing: Default::default(),
        },
        node: "worker-17.example.internal".into(),
        at_ms: 1_700_000_000_000,
        issued_us: 1_700_000_000_000_000,
    }
}

async fn build(dir: &Path, live: usize) -> (PathBuf, SnapshotMeta) {
    let (_log, mut machine) =
        storage::open(&dir.join("source"), &StorageOptions::default()).expect("open source");
    let subnet = Command::CreateSubnet {
        spec: SubnetSpec::plain("pods", "10.64.0.0/12".parse().expect("cidr")),
    };
    machine
        .apply(vec![entry(1, subnet)])
        .await
        .expect("apply subnet");
    let mut index = 2;
    let mut i = 0;
    while i < live {
        let n = ENTRIES_PER_APPLY.min(live - i);
        let entries: Vec<Entry> = (0..n)
            .map(|k| {
                index += 1;
                entry(index - 1, add(i + k))
            })
            .collect();
        machine.apply(entries).await.expect("apply adds");
        i += n;
    }
    let started = Instant::now();
    let snapshot = machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let file = dir.join("sent.snap");
    let mut data = snapshot.snapshot.into_std().await;
    let mut out = std::fs::File::create(&file).expect("create copy");
    std::io::copy(&mut data, &mut out).expect("copy snapshot");
    println!(
        "built a snapshot of {live} allocations in {:.0} ms: {:.1} MiB",
        started.elapsed().as_secs_f64() * 1e3,
        out.metadata().map_or(0, |m| m.len()) as f64 / (1 << 20) as f64
    );
    (file, snapshot.meta)
}

async fn install(dir: &Path, file: &Path, meta: &SnapshotMeta) {
    let (log, mut machine) =
        storage::open(&dir.join("target"), &StorageOptions::default()).expect("open target");
    let before = status_kib("VmRSS");
    let started = Instant::now();
    // Received as openraft receives it: chunks written into the file the
    // store handed out.
    let mut receiving = machine.begin_receiving_snapshot().await.expect("begin");
    let bytes = tokio::fs::read(file).await.expect("read sent snapshot");
    for chunk in bytes.chunks(1 << 20) {
        receiving.write_all(chunk).await.expect("receive chunk");
    }
    drop(bytes);
    machine
        .install_snapshot(meta, receiving)
        .await
        .expect("install");
    let took = started.elapsed();
    let (applied, _) = machine.applied_state().await.expect("applied state");
    let serving_rss = status_kib("VmRSS");
    // The store's writer rewrites sled's tree from the snapshot behind the
    // install; closing the store waits for it.
    drop(log);
    drop(machine);
    let rewritten = started.elapsed();
    println!(
        "installed it in {:.0} ms (applied up to {:?}), sled's tree rewritten from it by {:.0} ms: \
         resident {:.0} MiB before, {:.0} MiB once serving, peak {:.0} MiB",
        took.as_secs_f64() * 1e3,
        applied.map(|l| l.index),
        rewritten.as_secs_f64() * 1e3,
        mib(before),
        mib(serving_rss),
        mib(status_kib("VmHWM")),
    );
}

fn main() {
    let live: usize = std::env::var(LIVE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(stage) = std::env::var(STAGE_ENV) {
        let dir = PathBuf::from(std::env::args().nth(1).expect("work directory argument"));
        let meta_path = dir.join("meta.json");
        match stage.as_str() {
            "build" => runtime.block_on(async {
                let (_, meta) = build(&dir, live).await;
                let json = serde_json::to_vec(&meta).expect("meta to json");
                std::fs::write(&meta_path, json).expect("write meta");
            }),
            _ => runtime.block_on(async {
                let meta: SnapshotMeta =
                    serde_json::from_slice(&std::fs::read(&meta_path).expect("read meta"))
                        .expect("meta from json");
                install(&dir, &dir.join("sent.snap"), &meta).await;
            }),
        }
        std::io::stdout().flush().ok();
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let me = std::env::current_exe().expect("own path");
    for stage in ["build", "install"] {
        let status = std::process::Command::new(&me)
            .arg(dir.path())
            .env(STAGE_ENV, stage)
            .status()
            .expect("run a stage");
        assert!(status.success(), "{stage}: {status}");
    }
}
