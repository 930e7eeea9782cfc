//! The state machine store against a state writer held shut, so that the
//! order of queued writes and a snapshot install is the test's, not the
//! scheduler's.

use std::sync::mpsc;
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::command::Command;
use crate::storage::state_writer::Sink;
use crate::storage::{self, StorageOptions};
use crate::test_commands;

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn create_subnet() -> Command {
    test_commands::create_subnet("a", "10.30.0.0/16")
}

fn add(cid: &str) -> Command {
    test_commands::add(cid, "a")
}

/// Opens the directory a store of this test has just closed.
fn reopen(dir: &std::path::Path) -> (storage::LogStore, StateMachineStore) {
    storage::open_again(dir, &StorageOptions::default(), Duration::from_secs(10)).unwrap()
}

/// Writes to the tree once the test opens it.
struct HeldShut {
    tree: sled::Tree,
    opened: Option<mpsc::Receiver<()>>,
}

impl Sink for HeldShut {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String> {
        if let Some(gate) = self.opened.take() {
            gate.recv().map_err(|_| "gate dropped".to_string())?;
        }
        self.tree.write(changes)
    }

    fn refill(&mut self, snapshot: &std::path::Path) -> Result<(), String> {
        if let Some(gate) = self.opened.take() {
            gate.recv().map_err(|_| "gate dropped".to_string())?;
        }
        self.tree.refill(snapshot)
    }
}

/// The same store, writing through `sink`.
fn with_sink(store: &StateMachineStore, sink: impl Sink) -> StateMachineStore {
    let inner = &store.inner;
    let (floor, floor_watch) = snapshot_floor::new(inner.floor_watch.now().covered);
    StateMachineStore {
        inner: Arc::new(Inner {
            db: inner.db.clone(),
            tree: inner.tree.clone(),
            writer: Arc::new(StateWriter::start(sink, MAX_MERGED).unwrap()),
            dir: inner.dir.clone(),
            machine: inner.machine.clone(),
            current: Mutex::new(store.current().clone()),
            stats: SnapshotStats::default(),
            installing: inner.installing.clone(),
            floor,
            floor_watch,
            min_free_space: inner.min_free_space,
        }),
    }
}

/// The same store, writing through a writer the test holds shut.
fn held_shut(store: &StateMachineStore) -> (StateMachineStore, mpsc::Sender<()>) {
    let (open, gate) = mpsc::channel();
    let sink = HeldShut {
        tree: store.inner.tree.clone(),
        opened: Some(gate),
    };
    (with_sink(store, sink), open)
}

/// Writes to the tree and keeps the size of every batch it wrote.
struct Recording {
    tree: sled::Tree,
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Sink for Recording {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String> {
        self.sizes.lock().unwrap().push(changes.len());
        self.tree.write(changes)
    }

    fn refill(&mut self, snapshot: &std::path::Path) -> Result<(), String> {
        self.tree.refill(snapshot)
    }
}

/// Installs a snapshot's bytes into `store` as openraft hands one over: a
/// file received beside the store's data.
fn install_bytes(
    store: &StateMachineStore,
    dir: &std::path::Path,
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let received = dir.join("received.snap");
    fs::write(&received, bytes).unwrap();
    store.install_sync(meta, fs::File::open(&received).unwrap())
}

fn records(store: &StateMachineStore) -> (Option<LogId>, Vec<Record>) {
    let m = store.inner.machine.read();
    (m.last_applied, m.state.records().collect())
}

#[test]
fn a_snapshot_install_waits_for_older_queued_writes_so_they_cannot_undo_it() {
    let (meta, snapshot_bytes, _) = snapshot_of(300);
    let count = meta.last_log_id.unwrap().index;

    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let (follower, open) = held_shut(&store);
        // Attachments the snapshot does not hold, written behind and held
        // in the queue.
        follower
            .apply_sync(vec![entry(1, create_subnet())])
            .unwrap();
        for i in 0..50u64 {
            follower
                .apply_sync(vec![entry(i + 2, add(&format!("stale{i}")))])
                .unwrap();
        }
        let received = dir.path().join("received.snap");
        fs::write(&received, &snapshot_bytes).unwrap();
        let installing = {
            let (follower, meta) = (follower.clone(), meta.clone());
            let (done, finished) = mpsc::channel();
            let thread = std::thread::spawn(move || {
                let outcome = follower.install_sync(&meta, fs::File::open(received).unwrap());
                let _ = done.send(());
                outcome
            });
            (thread, finished)
        };
        // The install must not replace the tree while the older writes are
        // still to land: it waits for them. (A wait for something that must
        // not happen: with the order right it never returns early, so this
        // cannot fail spuriously.)
        let early = installing
            .1
            .recv_timeout(Duration::from_millis(500))
            .is_ok();
        open.send(()).unwrap();
        let installed = installing.0.join().unwrap();
        assert!(
            !early,
            "the snapshot was installed while older state writes were still queued"
        );
        installed.unwrap();
        // An entry after the snapshot: the tree's last-applied passes it, so
        // a reopen reads the tree, not the snapshot file.
        follower
            .apply_sync(vec![entry(count + 1, add("after"))])
            .unwrap();
        let expected = records(&follower);
        assert!(!expected
            .1
            .iter()
            .any(|r| format!("{r:?}").contains("stale")));
        expected
    };
    let (_log, reopened) = reopen(dir.path());
    assert_eq!(records(&reopened), expected);
}

/// A snapshot up to entry `index` whose records contradict each other: an
/// allocation with its subnet's record left out, so that it holds an
/// address in no known subnet.
fn orphan_snapshot(index: u64) -> (SnapshotMeta, Vec<u8>) {
    let mut state = State::default();
    let mut journal = Vec::new();
    state.apply(&create_subnet(), &mut journal);
    state.apply(&add("orphan"), &mut journal);
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
        last_membership: StoredMembership::default(),
        snapshot_id: format!("1-1-{index}"),
    };
    let bytes = snapshot_file::encode(
        &meta,
        state
            .records()
            .filter(|r| !matches!(r, Record::Subnet(_)))
            .map(|r| (r.key(), r.value())),
    );
    (meta, bytes)
}

#[test]
fn a_refused_snapshot_leaves_the_state_held_before_it_serving() {
    // The install drops the state it replaces before building the new one;
    // when the new one is refused, the old must come back whole, including
    // changes still queued for the tree when the install began.
    let dir = tempfile::tempdir().unwrap();
    let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let (follower, open) = held_shut(&store);
    follower
        .apply_sync(vec![entry(1, create_subnet())])
        .unwrap();
    for i in 0..40u64 {
        follower
            .apply_sync(vec![entry(i + 2, add(&format!("held{i}")))])
            .unwrap();
    }
    let before = records(&follower);
    assert_eq!(before.0.map(|l| l.index), Some(41));
    // The queued writes land while the install runs.
    open.send(()).unwrap();
    let (meta, bytes) = orphan_snapshot(100);
    let refused = install_bytes(&follower, dir.path(), &meta, &bytes);
    assert!(refused.is_err(), "an inconsistent snapshot installed");
    assert_eq!(records(&follower), before);
    // And it goes on deciding from it.
    follower.apply_sync(vec![entry(42, add("after"))]).unwrap();
    assert_eq!(follower.inner.machine.read().state.allocation_count(), 41);
}

#[test]
fn a_snapshot_whose_records_contradict_each_other_is_refused_with_nothing_changed() {
    let (meta, bytes) = orphan_snapshot(2);

    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let refused = install_bytes(&store, dir.path(), &meta, &bytes);
        let message = format!(
            "{:?}",
            refused.expect_err("an inconsistent snapshot installed")
        );
        assert!(message.contains("unknown subnet"), "{message}");
        // Nothing changed: the state served, the tree, the current snapshot.
        assert_eq!(store.inner.machine.read().last_applied, None);
        assert!(!store.inner.tree.contains_key(INSTALLING_KEY).unwrap());
        assert!(store.current().is_none());
    }
    // And a restart serves the state from before, not the refused one.
    let (_log, reopened) = reopen(dir.path());
    assert_eq!(reopened.inner.machine.read().last_applied, None);
}

#[test]
fn a_long_apply_reaches_sled_in_bounded_batches_each_a_prefix_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let count = 3_000u64;
    {
        let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let recording = with_sink(
            &store,
            Recording {
                tree: store.inner.tree.clone(),
                sizes: sizes.clone(),
            },
        );
        // One apply of many entries, as a node catching up is handed them.
        let mut entries = vec![entry(1, create_subnet())];
        entries.extend((0..count).map(|i| entry(i + 2, add(&format!("c{i}")))));
        recording.apply_sync(entries).unwrap();
        recording.inner.writer.drain().unwrap();
        let sizes = sizes.lock().unwrap().clone();
        let written: usize = sizes.iter().sum();
        // Each ADD changes a few records; a batch may pass the bound by one
        // entry's changes and the last-applied record, never by more.
        assert!(written > 2 * count as usize, "{written} changes written");
        let largest = sizes.iter().max().copied().unwrap_or(0);
        assert!(
            largest <= MAX_MERGED + 16,
            "one sled batch of {largest} changes (batches: {sizes:?})"
        );
        // Dropping the store lets the data directory be opened again.
        drop(recording);
    }
    let (_log, reopened) = reopen(dir.path());
    let applied = reopened.inner.machine.read().last_applied;
    assert_eq!(applied.map(|l| l.index), Some(count + 1));
    assert_eq!(
        reopened.inner.machine.read().state.allocation_count(),
        count as usize
    );
}

/// A snapshot of a subnet and `n` attachments, built by a store of its own:
/// its meta and its file's bytes.
fn snapshot_of(n: u64) -> (SnapshotMeta, Vec<u8>, (Option<LogId>, Vec<Record>)) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, leader) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let mut commands = vec![create_subnet()];
    commands.extend((0..n).map(|i| add(&format!("snap{i}"))));
    leader
        .apply_sync(
            commands
                .into_iter()
                .zip(1..)
                .map(|(c, i)| entry(i, c))
                .collect(),
        )
        .unwrap();
    leader.build_sync().unwrap();
    let meta = leader.current().clone().unwrap();
    let bytes = fs::read(leader.current_path()).unwrap();
    (meta, bytes, records(&leader))
}

#[test]
fn an_install_serves_at_once_and_the_tree_is_rewritten_behind_it_in_order() {
    let (meta, bytes, snapshot_state) = snapshot_of(200);
    let last = meta.last_log_id.unwrap().index;
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let (follower, open) = held_shut(&store);
        // Returns with the tree's rewrite still held.
        install_bytes(&follower, dir.path(), &meta, &bytes).unwrap();
        assert_eq!(records(&follower), snapshot_state);
        assert!(follower.inner.tree.contains_key(INSTALLING_KEY).unwrap());
        // An apply after the install queues behind the rewrite.
        follower
            .apply_sync(vec![entry(last + 1, add("after"))])
            .unwrap();
        open.send(()).unwrap();
        follower.inner.writer.drain().unwrap();
        assert!(!follower.inner.tree.contains_key(INSTALLING_KEY).unwrap());
        records(&follower)
    };
    assert!(expected
        .1
        .iter()
        .any(|r| format!("{r:?}").contains("after")));
    // The tree alone (no restore: the mark is gone and the tree is not
    // behind the snapshot) gives the same state back.
    let (_log, reopened) = reopen(dir.path());
    assert_eq!(records(&reopened), expected);
}

#[test]
fn a_crash_before_the_tree_is_rewritten_restores_the_installed_snapshot_at_start() {
    let (meta, bytes, snapshot_state) = snapshot_of(200);
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
        // State the snapshot replaces, already in the tree.
        store
            .apply_sync(vec![entry(1, create_subnet()), entry(2, add("old"))])
            .unwrap();
        store.inner.writer.drain().unwrap();
        let (follower, open) = held_shut(&store);
        install_bytes(&follower, dir.path(), &meta, &bytes).unwrap();
        // The rewrite never happens: its writer fails, as a crash would
        // leave it, with the tree still holding the old state.
        drop(open);
        assert!(follower.inner.writer.drain().is_err());
        let tree_applied: Option<LogId> = decode_meta(
            APPLIED_KEY,
            &follower.inner.tree.get(APPLIED_KEY).unwrap().unwrap(),
        )
        .unwrap();
        assert_eq!(tree_applied.map(|l| l.index), Some(2));
    }
    let (_log, reopened) = reopen(dir.path());
    assert_eq!(records(&reopened), snapshot_state);
}

#[test]
fn a_reader_waiting_on_an_install_leaves_the_runtime_running() {
    // An install holds the state's write lock for a second or more at a
    // million allocations. A reader on the runtime's only worker must hand
    // the worker over while it waits, or every other task (Raft's
    // heartbeats among them) stops with it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let machine = SharedReplica::default();
    let installing = machine.write();
    let (started, reader_started) = mpsc::channel();
    let reader = {
        let machine = machine.clone();
        runtime.spawn(async move {
            started.send(()).unwrap();
            // No await between here and the read: the task keeps the worker.
            machine.read().last_applied
        })
    };
    reader_started
        .recv_timeout(Duration::from_secs(10))
        .expect("the reader never ran");
    let (ran, other_ran) = mpsc::channel();
    runtime.spawn(async move {
        ran.send(()).unwrap();
    });
    let outcome = other_ran.recv_timeout(Duration::from_secs(10));
    drop(installing);
    assert!(
        outcome.is_ok(),
        "a reader waiting on the state's lock stopped the runtime"
    );
    assert_eq!(runtime.block_on(reader).unwrap(), None);
}

#[test]
fn the_install_flag_is_up_while_an_install_runs_and_down_however_it_ends() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (meta, snapshot_bytes, _) = snapshot_of(50);
    let dir = tempfile::tempdir().unwrap();
    let (_log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let (follower, open) = held_shut(&store);
    let mut installs = follower.installs();
    assert!(!*installs.borrow_and_update());
    // A write the writer holds: the install waits for it, flag up.
    follower
        .apply_sync(vec![entry(1, create_subnet())])
        .unwrap();
    let received = dir.path().join("received.snap");
    fs::write(&received, &snapshot_bytes).unwrap();
    let installing = {
        let (follower, meta) = (follower.clone(), meta.clone());
        std::thread::spawn(move || follower.install_sync(&meta, fs::File::open(received).unwrap()))
    };
    runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), installs.wait_for(|up| *up))
                .await
                .map(|seen| seen.map(|_| ()))
        })
        .expect("the flag did not go up while the install ran")
        .unwrap();
    open.send(()).unwrap();
    installing.join().unwrap().unwrap();
    assert!(!*installs.borrow_and_update(), "the flag stayed up");

    // A refused install lowers it too.
    let (meta, bytes) = orphan_snapshot(1_000);
    assert!(install_bytes(&follower, dir.path(), &meta, &bytes).is_err());
    assert!(installs.has_changed().unwrap(), "the flag never went up");
    assert!(!*installs.borrow_and_update(), "the flag stayed up");
}

#[test]
fn an_install_leaves_the_file_of_a_build_running_beside_it_and_clears_its_own_leftovers() {
    let (meta, bytes, _) = snapshot_of(50);
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = storage::open(dir.path(), &StorageOptions::default()).unwrap();
    // openraft builds off the state machine's task, so a build can be
    // writing its file while an install runs; a reception that failed
    // earlier leaves its file behind.
    let building = store.inner.dir.join(format!("{BUILDING}-77.tmp"));
    let leftover = store.inner.dir.join("received-5.tmp");
    fs::write(&building, b"half a snapshot").unwrap();
    fs::write(&leftover, b"a failed reception").unwrap();
    install_bytes(&store, dir.path(), &meta, &bytes).unwrap();
    assert!(
        building.exists(),
        "the install removed a running build's file"
    );
    assert!(!leftover.exists());
    // At a start nothing is building: every temporary goes.
    store.inner.writer.drain().unwrap();
    drop((log, store));
    let (_log, _reopened) = reopen(dir.path());
    assert!(!building.exists());
}
