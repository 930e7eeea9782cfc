//! The state machine and log through the real sled storage: what is applied
//! survives a reopen, snapshots carry the whole state to another store, and
//! damage is detected at open instead of being served.

mod common;

use std::time::Duration;

use common::{add, del, subnet};
use ipkeep_store::storage::{self, OpenError, StateMachineStore, StorageOptions};
use ipkeep_store::types::{Entry, LogId};
use ipkeep_store::{Command, Reply};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use tokio::io::AsyncReadExt;

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn entries(commands: Vec<Command>, first_index: u64) -> Vec<Entry> {
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: log_id(first_index + i as u64),
            payload: EntryPayload::Normal(c),
        })
        .collect()
}

fn workload(n: usize) -> Vec<Command> {
    let mut v = vec![Command::CreateSubnet {
        spec: subnet("a", "10.30.0.0/16"),
    }];
    for i in 0..n {
        v.push(add(&format!("c{i}"), &[&["a"]]));
    }
    for i in (0..n).step_by(3) {
        v.push(del(&format!("c{i}")));
    }
    v
}

/// Opens a data directory, again after an earlier open in this process.
fn open(dir: &std::path::Path) -> (storage::LogStore, StateMachineStore) {
    storage::open_again(dir, &StorageOptions::default(), Duration::from_secs(10)).expect("open")
}

fn fingerprint(sm: &StateMachineStore) -> (Option<LogId>, Vec<ipkeep_store::records::Record>) {
    let m = sm.shared();
    let m = m.read();
    (m.last_applied, m.state.records().collect())
}

#[tokio::test]
async fn applied_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (_log, mut sm) = open(dir.path());
        let replies = sm.apply(entries(workload(300), 1)).await.unwrap();
        assert!(replies.iter().all(|r| !matches!(r, Reply::Failed(_))));
        fingerprint(&sm)
    };
    let (_log, sm) = open(dir.path());
    assert_eq!(fingerprint(&sm), before);
    assert_eq!(sm.shared().read().state.allocation_count(), 200);
}

#[tokio::test]
async fn log_entries_and_vote_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.save_vote(&openraft::Vote::new(3, 1)).await.unwrap();
        // Returns only once the entries are acknowledged as flushed.
        log.blocking_append(entries(workload(4), 1)).await.unwrap();
    }
    let (mut log, mut sm) = open(dir.path());
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new(3, 1))
    );
    // workload(4): one subnet, four ADDs, two DELs.
    let got = log.try_get_log_entries(1..=7).await.unwrap();
    assert_eq!(got.len(), 7);
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    // A purge is made durable once the state covering it is (here, after
    // a snapshot; see the held-purge tests below).
    sm.apply(got).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    log.purge(log_id(3)).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3)));
    assert_eq!(state.last_log_id, Some(log_id(7)));
    assert_eq!(log.try_get_log_entries(0..10).await.unwrap().len(), 4);
    log.truncate(log_id(6)).await.unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(5))
    );
}

#[tokio::test]
async fn snapshot_moves_the_whole_state_to_another_store() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_l, mut leader) = open(leader_dir.path());
    leader.apply(entries(workload(1000), 1)).await.unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let follower_dir = tempfile::tempdir().unwrap();
    let (_f, mut follower) = open(follower_dir.path());
    let mut incoming = follower.begin_receiving_snapshot().await.unwrap();
    let mut bytes = vec![];
    let mut from = leader
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap()
        .snapshot;
    from.read_to_end(&mut bytes).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes)
        .await
        .unwrap();
    follower
        .install_snapshot(&snapshot.meta, incoming)
        .await
        .unwrap();
    assert_eq!(fingerprint(&follower), fingerprint(&leader));
    drop(follower);
    drop(_f);
    // And it stays after a reopen.
    let (_f, follower) = open(follower_dir.path());
    assert_eq!(fingerprint(&follower), fingerprint(&leader));
}

/// A leader's state and snapshot after `commands`, and the snapshot's bytes.
async fn leader_snapshot(
    dir: &std::path::Path,
    commands: Vec<Command>,
) -> (
    StateMachineStore,
    ipkeep_store::types::SnapshotMeta,
    Vec<u8>,
) {
    let (_l, mut leader) = open(dir);
    leader.apply(entries(commands, 1)).await.unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = vec![];
    let mut from = leader
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap()
        .snapshot;
    from.read_to_end(&mut bytes).await.unwrap();
    (leader, snapshot.meta, bytes)
}

/// openraft 0.9.25 installs a snapshot on a follower by queueing the install
/// and purging the log up to the snapshot at once. A crash before the
/// snapshot is published must not leave a log purged past the state: the
/// node would never start again. The purge is held until the snapshot is
/// published, and then carried out.
#[tokio::test]
async fn a_crash_between_an_installs_purge_and_its_snapshot_leaves_a_node_that_starts() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (leader, meta, bytes) = leader_snapshot(leader_dir.path(), workload(300)).await;
    let snapshot_at = meta.last_log_id.unwrap();

    // The follower has applied the first 50 entries only.
    let follower_dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = open(follower_dir.path());
        log.blocking_append(entries(workload(300), 1)[..50].to_vec())
            .await
            .unwrap();
        sm.apply(entries(workload(300), 1)[..50].to_vec())
            .await
            .unwrap();
        // The purge openraft issues while the install is still queued; then
        // the process dies.
        log.purge(snapshot_at).await.unwrap();
        assert_eq!(log.held_purge(), Some(snapshot_at.index));
        assert_eq!(
            log.get_log_state().await.unwrap().last_purged_log_id,
            Some(snapshot_at),
            "openraft sees the purge done"
        );
    }
    // It starts: the purge was not made durable (a durable one would leave
    // the state applied up to 50, the log purged past it and no snapshot,
    // which cannot start).
    let (mut log, mut sm) = open(follower_dir.path());
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
    assert_eq!(log.try_get_log_entries(1..=50).await.unwrap().len(), 50);
    assert_eq!(sm.shared().read().last_applied.map(|l| l.index), Some(50));

    // The install again, as the leader sends it after the restart; this
    // time it completes, and the held purge is carried out with the next
    // write to the log.
    log.purge(snapshot_at).await.unwrap();
    let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes)
        .await
        .unwrap();
    sm.install_snapshot(&meta, incoming).await.unwrap();
    log.save_committed(Some(snapshot_at)).await.unwrap();
    assert_eq!(log.held_purge(), None);
    assert_eq!(
        log.get_log_state().await.unwrap().last_purged_log_id,
        Some(snapshot_at)
    );
    assert_eq!(fingerprint(&sm), fingerprint(&leader));
    drop((log, sm));
    let (_log, sm) = open(follower_dir.path());
    assert_eq!(fingerprint(&sm), fingerprint(&leader));
}

/// After an install ahead of the log, the next entries follow the snapshot:
/// the append that brings them waits for the snapshot to be published, so
/// that the purge that makes room for them is durable before they are.
#[tokio::test]
async fn an_append_after_a_held_purge_past_the_log_waits_for_the_snapshot() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader, meta, bytes) = leader_snapshot(leader_dir.path(), workload(100)).await;
    let snapshot_at = meta.last_log_id.unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = open(follower_dir.path());
    log.purge(snapshot_at).await.unwrap();
    let next = Entry {
        log_id: log_id(snapshot_at.index + 1),
        payload: EntryPayload::Blank,
    };
    let append = tokio::spawn({
        let mut log = log.clone();
        async move { log.blocking_append([next]).await }
    });
    let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes)
        .await
        .unwrap();
    sm.install_snapshot(&meta, incoming).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), append)
        .await
        .expect("the append went on once the snapshot was published")
        .unwrap()
        .unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(snapshot_at));
    assert_eq!(
        state.last_log_id.map(|l| l.index),
        Some(snapshot_at.index + 1)
    );
}

/// A failed install ends the wait of an append held behind it with an error
/// (fatal to Raft on the node, which restarts with its log unpurged), not a
/// wait for ever.
#[tokio::test]
async fn a_failed_install_ends_the_wait_of_a_held_append() {
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = open(follower_dir.path());
    let announced = ipkeep_store::types::SnapshotMeta {
        last_log_id: Some(log_id(40)),
        last_membership: Default::default(),
        snapshot_id: "bogus".into(),
    };
    log.purge(log_id(40)).await.unwrap();
    let append = tokio::spawn({
        let mut log = log.clone();
        async move {
            log.blocking_append([Entry {
                log_id: log_id(41),
                payload: EntryPayload::Blank,
            }])
            .await
        }
    });
    let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *incoming, b"not a snapshot")
        .await
        .unwrap();
    assert!(sm.install_snapshot(&announced, incoming).await.is_err());
    let appended = tokio::time::timeout(Duration::from_secs(10), append)
        .await
        .expect("the append's wait ended")
        .unwrap();
    assert!(appended.is_err());
    drop((log, sm));
    let (mut log, _sm) = open(follower_dir.path());
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
}

#[tokio::test]
async fn a_snapshot_ahead_of_the_state_is_restored_at_open() {
    // As after a crash in the middle of installing a snapshot: the file is in
    // place, the state tree is not.
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (_l, mut sm) = open(dir.path());
        sm.apply(entries(workload(100), 1)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        fingerprint(&sm)
    };
    let fresh = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fresh.path().join("snapshots")).unwrap();
    std::fs::copy(
        dir.path().join("snapshots/current.snap"),
        fresh.path().join("snapshots/current.snap"),
    )
    .unwrap();
    let (_l, sm) = open(fresh.path());
    assert_eq!(fingerprint(&sm), expected);
}

#[tokio::test]
async fn a_damaged_snapshot_is_detected_at_open_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_l, mut sm) = open(dir.path());
        sm.apply(entries(workload(50), 1)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let path = dir.path().join("snapshots/current.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = match storage::open(dir.path(), &StorageOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("a damaged snapshot was accepted"),
    };
    assert!(matches!(err, OpenError::Snapshot { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("current.snap") && msg.contains("checksum"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let err = match storage::open(dir.path(), &StorageOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("two opens of one data directory"),
    };
    assert!(err.to_string().contains("in use"), "{err}");
}

/// A data directory of a development build that kept the Raft log in sled
/// (trees `raft_log` and `raft_meta`; no release did) is refused with what
/// to do, and left as it was.
#[test]
fn a_database_that_keeps_the_raft_log_inside_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("raft_log")
            .unwrap()
            .insert(0u64.to_be_bytes(), b"entry".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let err = match storage::open_again(
        dir.path(),
        &StorageOptions::default(),
        std::time::Duration::from_secs(10),
    ) {
        Err(e) => e,
        Ok(_) => panic!("a database with the Raft log inside it was opened"),
    };
    let message = err.to_string();
    assert!(
        message.contains("keeps the Raft log inside it") && message.contains("rejoin"),
        "{message}"
    );
    assert!(
        !dir.path().join("log").exists(),
        "nothing is created beside it"
    );
}
