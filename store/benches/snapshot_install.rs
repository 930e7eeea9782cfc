//! What installing a snapshot of many live allocations costs a node: one
//! process applies the allocations to a store on disk and builds a snapshot
//! (keeping a copy of the store as it was a few thousand entries earlier),
//! and prints the build's time and peak resident memory;
//! a second, fresh process (so that its peak is the install's alone) opens an
//! empty store, receives that snapshot as openraft hands it over and installs
//! it, then prints the time until it serves, the time until sled's tree is
//! rewritten from it behind, and its resident memory before, once serving
//! and at the peak (VmHWM). A third does the same on the copy: a follower
//! that fell behind, loads its own state at start and installs over it.
//! Prints figures; asserts nothing
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::status_kib;

const STAGE_ENV: &str = "IPKEEP_INSTALL_STAGE";
const LIVE_ENV: &str = "IPKEEP_INSTALL_LIVE";
const ENTRIES_PER_APPLY: usize = 1_000;
/// Allocations the lagging copy misses.
const BEHIND: usize = 5_000;

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

/// Copies a closed store's directory.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy directory");
    for entry in std::fs::read_dir(from).expect("read store directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a store file");
        }
    }
}

/// Applies allocations `from..to` to a store, entry index = allocation + 2.
async fn apply_adds(dir: &Path, from: usize, to: usize) {
    let (log, mut machine) = storage::open(dir, &StorageOptions::default()).expect("open source");
    if from == 0 {
        let subnet = Command::CreateSubnet {
            spec: SubnetSpec::plain("pods", "10.64.0.0/12".parse().expect("cidr")),
        };
        machine
            .apply(vec![entry(1, subnet)])
            .await
            .expect("apply subnet");
    }
    let mut i = from;
    while i < to {
        let n = ENTRIES_PER_APPLY.min(to - i);
        let entries: Vec<Entry> = (i..i + n).map(|k| entry(k as u64 + 2, add(k))).collect();
        machine.apply(entries).await.expect("apply adds");
        i += n;
    }
    // Closing the store waits for its writer: the directory is whole after.
    drop(log);
    drop(machine);
}

async fn build(dir: &Path, live: usize) -> (PathBuf, SnapshotMeta) {
    let source = dir.join("source");
    let behind = live.saturating_sub(BEHIND);
    apply_adds(&source, 0, behind).await;
    copy_dir(&source, &dir.join("behind"));
    apply_adds(&source, behind, live).await;
    let (_log, mut machine) =
        storage::open(&source, &StorageOptions::default()).expect("open source");
    // The peak from here on is the build's (writing 5 to clear_refs resets
    // VmHWM to the current resident size).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS");
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
        "built a snapshot of {live} allocations in {:.0} ms: {:.1} MiB; \
         resident {:.0} MiB before, peak {:.0} MiB while building",
        started.elapsed().as_secs_f64() * 1e3,
        out.metadata().map_or(0, |m| m.len()) as f64 / (1 << 20) as f64,
        mib(before),
        mib(status_kib("VmHWM")),
    );
    (file, snapshot.meta)
}

/// Installs the snapshot in the store at `store` (empty, or the copy left
/// behind) as a follower does, and prints what it took.
async fn install(store: &Path, file: &Path, meta: &SnapshotMeta) {
    let opened = Instant::now();
    let (log, mut machine) = storage::open(store, &StorageOptions::default()).expect("open target");
    let (own, _) = machine.applied_state().await.expect("own applied state");
    println!(
        "{}: opened in {:.0} ms, applied up to {:?}",
        store.display(),
        opened.elapsed().as_secs_f64() * 1e3,
        own.map(|l| l.index)
    );
    let before = status_kib("VmRSS");
    let started = Instant::now();

    // Received as openraft receives it: chunks written into the file the
    // store handed out.
    let mut receiving = machine.begin_receiving_snapshot().await.expect("begin");
    // A chunk at a time, as from the network: the whole file read at once
    // would be the peak of the node that fell behind.
    let mut sent = tokio::fs::File::open(file)
        .await
        .expect("open sent snapshot");
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = sent.read(&mut chunk).await.expect("read sent snapshot");
        if n == 0 {
            break;
        }
        receiving
            .write_all(&chunk[..n])
            .await
            .expect("receive chunk");
    }
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
    // As the daemon does.
    storage::use_one_arena();
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
            store => runtime.block_on(async {
                let meta: SnapshotMeta =
                    serde_json::from_slice(&std::fs::read(&meta_path).expect("read meta"))
                        .expect("meta from json");
                install(&dir.join(store), &dir.join("sent.snap"), &meta).await;
            }),
        }
        std::io::stdout().flush().ok();
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let me = std::env::current_exe().expect("own path");
    // "target" is a new, empty store; "behind" the copy left behind.
    for stage in ["build", "target", "behind"] {
        let status = std::process::Command::new(&me)
            .arg(dir.path())
            .env(STAGE_ENV, stage)
            .status()
            .expect("run a stage");
        assert!(status.success(), "{stage}: {status}");
    }
}
