//! The state machine in sled (tree `state`), mirrored in memory for fast
//! decisions and reads.
//!
//! Applying a batch of entries mutates the in-memory [`State`] and hands the
//! records it changed, together with the last-applied log id, to the
//! [`StateWriter`], which writes them to the tree as one atomic sled batch
//! after the apply has answered. On start the in-memory state is rebuilt
//! from the tree alone.
//! Installing a snapshot rewrites the tree under an "installing" marker; a
//! crash in the middle is finished from the snapshot file at the next start.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::de::DeserializeOwned;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::watch;

use super::free_memory;
use super::snapshot_file::Staged;
use super::snapshot_file::{self, SnapshotFileError};
use super::snapshot_floor::{self, FloorRaiser, FloorWatch};
use super::snapshot_stats::SnapshotStats;
use super::state_writer::{StateWriter, MAX_MERGED};
use super::OpenError;
use crate::command::Reply;
use crate::records::{self, Change, Record, RecordError};
use crate::state::{State, StateBuilder};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const STATE_TREE: &str = "state";
const APPLIED_KEY: &[u8] = b"m/applied";
const MEMBERSHIP_KEY: &[u8] = b"m/membership";
const INSTALLING_KEY: &[u8] = b"m/installing";
const CURRENT_SNAPSHOT: &str = "current.snap";
/// Records written per sled batch while a snapshot is restored. sled 0.34's
/// memory depends on it far more than on its cache size, and small batches
/// write the records in about the same time as large ones (`cargo bench -p
/// ipkeep-store --bench sled_batches`).
const RESTORE_BATCH: usize = 500;

/// A replica of the state machine as every node holds it in memory: the
/// state, the last entry applied to it and the membership it knows.
#[derive(Debug, Default)]
pub struct Replica {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// The in-memory replica, shared with the daemon's readers.
#[derive(Clone, Default)]
pub struct SharedReplica(Arc<RwLock<Replica>>);

impl SharedReplica {
    /// Read access for queries. Never hold it across an await.
    ///
    /// Usually free at once: applies hold the lock for microseconds. A
    /// snapshot install holds it while it replaces the state (as long as
    /// the new state takes to build); a reader on one of the runtime's
    /// workers then waits with the worker handed over (`block_in_place`),
    /// so that Raft's own tasks (heartbeats, replication) keep running.
    pub fn read(&self) -> RwLockReadGuard<'_, Replica> {
        // A panic while the lock was held cannot leave a half-applied batch
        // visible (the sled batch is what counts); keep serving reads.
        match self.0.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let wait = || self.0.read().unwrap_or_else(PoisonError::into_inner);
                let on_worker = tokio::runtime::Handle::try_current()
                    .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
                if on_worker {
                    // Outside a worker (a blocking task's thread) this just
                    // runs `wait`.
                    tokio::task::block_in_place(wait)
                } else {
                    wait()
                }
            }
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, Replica> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum RestoreError {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{0}")]
    Mismatch(String),
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Writes each apply's changes to `tree`, behind the applies.
    writer: Arc<StateWriter>,
    dir: PathBuf,
    machine: SharedReplica,
    /// Meta of the snapshot in `current.snap`. Held while that file is replaced
    /// or opened, so that a meta and a file handed out always match.
    current: Mutex<Option<SnapshotMeta>>,
    stats: SnapshotStats,
    /// True while a snapshot install runs (see [`StateMachineStore::installs`]).
    installing: watch::Sender<bool>,
    /// Raised as snapshots are published: how far the log may be purged.
    floor: FloorRaiser,
    floor_watch: FloorWatch,
    /// See [`super::StorageOptions::min_free_space`].
    min_free_space: u64,
}

/// Raises `installing` for as long as it lives, whatever way the install
/// ends.
struct Installing<'a>(&'a watch::Sender<bool>);

impl<'a> Installing<'a> {
    fn raise(flag: &'a watch::Sender<bool>) -> Self {
        flag.send_replace(true);
        Installing(flag)
    }
}

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// openraft's state machine storage. Cloning is cheap; clones share one store.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn decode_meta<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, RecordError> {
    records::decode_value(key, bytes)
}

/// Rebuilds the machine from the tree alone.
fn load_tree(tree: &sled::Tree) -> Result<Replica, RestoreError> {
    let mut last_applied = None;
    let mut membership = StoredMembership::default();
    let mut failure: Option<RestoreError> = None;
    // Records go to the state as they are read, not gathered first, so
    // that a restart never holds every record decoded beside the state
    // built from them.
    let records = tree
        .iter()
        .map_while(|item| {
            let read = || -> Result<Option<Record>, RestoreError> {
                let (key, value) = item?;
                match key.as_ref() {
                    APPLIED_KEY => last_applied = decode_meta(&key, &value)?,
                    MEMBERSHIP_KEY => membership = decode_meta(&key, &value)?,
                    k if k.first() == Some(&records::META) => {}
                    k => return Ok(Some(Record::decode(k, &value)?)),
                }
                Ok(None)
            };
            read().map_err(|e| failure = Some(e)).ok()
        })
        .flatten();
    let state = State::from_records(records);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Replica {
        state: state?,
        last_applied,
        membership,
    })
}

/// Replaces the tree's content with a (verified) snapshot file and returns
/// the machine it holds: what a start does when the tree is behind the
/// snapshot or an install was interrupted.
fn restore_tree(tree: &sled::Tree, path: &Path) -> Result<Replica, RestoreError> {
    mark_installing(tree, path)?;
    let machine = machine_from_snapshot(path)?;
    refill_tree(tree, path)?;
    Ok(machine)
}

/// Marks the tree as being replaced by the snapshot at `path`, durably: a
/// start that finds the mark restores the tree from the snapshot file
/// whatever the tree holds.
fn mark_installing(tree: &sled::Tree, path: &Path) -> Result<(), RestoreError> {
    tree.insert(
        INSTALLING_KEY,
        records::encode_value(&path.display().to_string()),
    )?;
    tree.flush()?;
    Ok(())
}

/// The machine a (verified) snapshot file holds, or the first of its
/// records that does not decode or contradicts another.
fn machine_from_snapshot(path: &Path) -> Result<Replica, RestoreError> {
    // Records go to the state as they are read, each allocation packed on
    // arrival, so that an install never holds every record decoded beside
    // the state built from them (the peak is what `cargo bench -p
    // ipkeep-store --bench snapshot_install` prints).
    let mut state = StateBuilder::default();
    let mut failure: Option<RestoreError> = None;
    let meta = snapshot_file::read_records(path, |key, value| {
        match Record::decode(&key, &value) {
            Ok(record) => state.push(record),
            Err(e) => {
                failure.get_or_insert(e.into());
            }
        }
        Ok(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Replica {
        state: state.finish()?,
        last_applied: meta.last_log_id,
        membership: meta.last_membership,
    })
}

/// Replaces the content of a tree marked as installing with the records of
/// the snapshot at `path`, then clears the mark: from then on the tree is
/// the snapshot's state, to which later applies add.
pub(super) fn refill_tree(tree: &sled::Tree, path: &Path) -> Result<(), RestoreError> {
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for key in tree.iter().keys() {
        let key = key?;
        if key.as_ref() != INSTALLING_KEY {
            batch.remove(key);
            pending += 1;
        }
        if pending == RESTORE_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    tree.apply_batch(std::mem::take(&mut batch))?;
    pending = 0;

    let mut failure: Option<RestoreError> = None;
    let meta = snapshot_file::read_records(path, |key, value| {
        batch.insert(key, value);
        pending += 1;
        if pending == RESTORE_BATCH {
            if let Err(e) = tree.apply_batch(std::mem::take(&mut batch)) {
                failure.get_or_insert(e.into());
            }
            pending = 0;
        }
        Ok(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    batch.insert(APPLIED_KEY, records::encode_value(&meta.last_log_id));
    batch.insert(MEMBERSHIP_KEY, records::encode_value(&meta.last_membership));
    batch.remove(INSTALLING_KEY);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

/// What a snapshot build writes before it publishes the file.
const BUILDING: &str = "building";

/// Removes the temporary files in `dir` that `remove` picks by name.
fn remove_temporaries(dir: &Path, remove: impl Fn(&str) -> bool) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") && remove(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl StateMachineStore {
    pub(super) fn open(
        db: sled::Db,
        db_path: &Path,
        dir: PathBuf,
        min_free_space: u64,
    ) -> Result<StateMachineStore, OpenError> {
        let db_err = |source| OpenError::Database {
            path: db_path.to_owned(),
            source,
        };
        let tree = db.open_tree(STATE_TREE).map_err(db_err)?;
        // Left by a run that stopped half-way; nothing writes here yet.
        remove_temporaries(&dir, |_| true);

        let current_path = dir.join(CURRENT_SNAPSHOT);
        let snapshot_err = |source| OpenError::Snapshot {
            path: current_path.clone(),
            source,
        };
        let current = if current_path.exists() {
            snapshot_file::verify(&current_path).map_err(snapshot_err)?;
            let mut file = fs::File::open(&current_path).map_err(|e| snapshot_err(e.into()))?;
            Some(snapshot_file::read_meta(&mut file).map_err(snapshot_err)?)
        } else {
            None
        };

        let interrupted = tree.contains_key(INSTALLING_KEY).map_err(db_err)?;
        let applied: Option<LogId> = match tree.get(APPLIED_KEY).map_err(db_err)? {
            Some(bytes) => {
                decode_meta(APPLIED_KEY, &bytes).map_err(|source| OpenError::Records {
                    path: db_path.to_owned(),
                    source,
                })?
            }
            None => None,
        };
        let snapshot_is_ahead = current
            .as_ref()
            .is_some_and(|meta| meta.last_log_id > applied);

        let restore_failed = |e: RestoreError| match e {
            RestoreError::Sled(source) => OpenError::Database {
                path: db_path.to_owned(),
                source,
            },
            RestoreError::Record(source) => OpenError::Records {
                path: db_path.to_owned(),
                source,
            },
            RestoreError::Snapshot(source) => OpenError::Snapshot {
                path: current_path.clone(),
                source,
            },
            RestoreError::Mismatch(reason) => OpenError::Snapshot {
                path: current_path.clone(),
                source: SnapshotFileError::Io(std::io::Error::other(reason)),
            },
        };
        let machine = if interrupted || snapshot_is_ahead {
            // The state tree is behind the snapshot (a crash while installing
            // it, or before the state was flushed): the snapshot is the truth.
            tracing::warn!(
                snapshot = %current_path.display(),
                interrupted,
                "restoring the state machine from the snapshot"
            );
            restore_tree(&tree, &current_path).map_err(restore_failed)?
        } else {
            load_tree(&tree).map_err(restore_failed)?
        };
        tracing::info!(
            allocations = machine.state.allocation_count(),
            last_applied = ?machine.last_applied,
            "state machine loaded"
        );
        free_memory::release();
        // Both were read from disk: a restart recovers at least this far
        // without the log.
        let covered = current
            .as_ref()
            .and_then(|m| m.last_log_id)
            .max(machine.last_applied)
            .map(|l| l.index);
        let (floor, floor_watch) = snapshot_floor::new(covered);
        let writer =
            StateWriter::start(tree.clone(), MAX_MERGED).map_err(|source| OpenError::Thread {
                what: "state writer",
                source,
            })?;
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                db,
                tree,
                writer: Arc::new(writer),
                dir,
                machine: SharedReplica(Arc::new(RwLock::new(machine))),
                current: Mutex::new(current),
                stats: SnapshotStats::default(),
                installing: watch::Sender::new(false),
                floor,
                floor_watch,
                min_free_space,
            }),
        })
    }

    /// How long the last snapshot build and install took.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.inner.stats.clone()
    }

    /// The writer of the state tree, for the log store's clean shutdown.
    pub(super) fn writer(&self) -> Arc<StateWriter> {
        self.inner.writer.clone()
    }

    /// True while this node installs a snapshot from the leader. The leader
    /// sends this node nothing until the install has answered (its
    /// heartbeats go the same way as the snapshot), so a voter whose install
    /// outlasts its election timeout (a large state's install does) would
    /// start an election and depose a healthy leader; the daemon holds its
    /// elections off meanwhile.
    pub fn installs(&self) -> watch::Receiver<bool> {
        self.inner.installing.subscribe()
    }

    /// How far the log may be purged, for the log store.
    pub(super) fn floor(&self) -> FloorWatch {
        self.inner.floor_watch.clone()
    }

    /// The in-memory state machine, for the daemon's reads.
    pub fn shared(&self) -> SharedReplica {
        self.inner.machine.clone()
    }

    fn current(&self) -> MutexGuard<'_, Option<SnapshotMeta>> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn current_path(&self) -> PathBuf {
        self.inner.dir.join(CURRENT_SNAPSHOT)
    }

    fn temp_path(&self, what: &str) -> Result<PathBuf, sled::Error> {
        let id = self.inner.db.generate_id()?;
        Ok(self.inner.dir.join(format!("{what}-{id}.tmp")))
    }

    fn apply_sync(&self, entries: Vec<Entry>) -> Result<Vec<Reply>, StorageError> {
        let mut machine = self.inner.machine.write();
        let mut journal: Vec<Change> = Vec::new();
        let mut replies = Vec::with_capacity(entries.len());
        let mut membership_changed = false;
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(replies);
        };
        let submit = |machine: &Replica, journal: &mut Vec<Change>, membership_changed: bool| {
            let mut unit = std::mem::take(journal);
            unit.push(Change::Put(
                APPLIED_KEY.to_vec(),
                records::encode_value(&machine.last_applied),
            ));
            if membership_changed {
                unit.push(Change::Put(
                    MEMBERSHIP_KEY.to_vec(),
                    records::encode_value(&machine.membership),
                ));
            }
            // A unit's state and its last-applied land together or not at
            // all (one sled batch), after this apply has answered.
            self.inner
                .writer
                .submit(unit)
                .map_err(|e| StorageIOError::apply(last, &e))
        };
        for entry in entries {
            // Applying an entry twice is not harmless (a DEL between two ADDs
            // of one attachment would release its new address), and skipping
            // one loses a decision: either would make this replica diverge
            // from the others for good. Neither should ever be asked; if it
            // is, skip what is already in the state and report a gap.
            let expected = machine.last_applied.map_or(0, |l| l.index + 1);
            if machine.last_applied.is_some() && entry.log_id.index < expected {
                tracing::error!(
                    index = entry.log_id.index,
                    applied = ?machine.last_applied,
                    "asked to apply an entry already in the state; skipped"
                );
                replies.push(Reply::Done);
                continue;
            }
            if machine.last_applied.is_some() && entry.log_id.index > expected {
                // openraft never does this in a running cluster (its storage
                // suite does, on purpose); say so loudly if it ever happens.
                tracing::error!(
                    index = entry.log_id.index,
                    applied = ?machine.last_applied,
                    "applying an entry after a gap: entries in between were never applied here"
                );
            }
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::Done,
                EntryPayload::Normal(ref command) => machine.state.apply(command, &mut journal),
                EntryPayload::Membership(ref membership) => {
                    machine.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    membership_changed = true;
                    Reply::Done
                }
            };
            tracing::debug!(
                target: "ipkeep_store::apply",
                index = entry.log_id.index,
                term = entry.log_id.leader_id.term,
                command = ?entry.payload,
                reply = ?reply,
                "applied"
            );
            replies.push(reply);
            machine.last_applied = Some(entry.log_id);
            // A node catching up applies thousands of entries at once, each
            // a batch of writes: handed over as one unit they would make one
            // sled batch of tens of thousands of records, and sled 0.34
            // keeps the memory of its largest batches for good (see the
            // `sled_batches` bench). So they are cut at entry boundaries:
            // each unit still carries its own last-applied, so the tree
            // stays a prefix of the applied log.
            if journal.len() >= MAX_MERGED {
                submit(
                    &machine,
                    &mut journal,
                    std::mem::take(&mut membership_changed),
                )?;
            }
        }
        submit(&machine, &mut journal, membership_changed)?;
        Ok(replies)
    }

    /// Whether the data directory is under its free-space floor now.
    fn disk_low(&self) -> bool {
        self.inner.min_free_space > 0
            && ipkeep_api::os::available_bytes(&self.inner.dir)
                .is_ok_and(|free| free < self.inner.min_free_space)
    }

    /// Builds a snapshot file from the current state and makes it current.
    /// Under the free-space floor it keeps the current snapshot instead
    /// (openraft takes a build no newer than its last as nothing new, and
    /// asks again later); with no snapshot at all it builds regardless.
    fn build_sync(&self) -> Result<(), StorageError> {
        if self.disk_low() && self.current().is_some() {
            tracing::warn!(
                dir = %self.inner.dir.display(),
                "the data directory is under its free-space floor: no snapshot is built until space returns"
            );
            return Ok(());
        }
        let write_err = |e: &dyn std::error::Error| {
            StorageIOError::write_snapshot(None, AnyError::error(e.to_string()))
        };
        let started = std::time::Instant::now();
        let id = self.inner.db.generate_id().map_err(|e| write_err(&e))?;
        // Writes wait while the lock is held: take the state's records as
        // shared pointers under it, and encode them after.
        let (meta, captured, locked) = {
            let machine = self.inner.machine.read();
            let snapshot_id = match machine.last_applied {
                Some(l) => format!("{}-{}-{id}", l.leader_id.term, l.index),
                None => format!("0-0-{id}"),
            };
            let meta = SnapshotMeta {
                last_log_id: machine.last_applied,
                last_membership: machine.membership.clone(),
                snapshot_id,
            };
            (meta, machine.state.capture(), started.elapsed())
        };
        // Straight into the file: held in memory whole, the snapshot would
        // add its own size to the node's memory while it builds.
        let tmp = Staged::new(self.inner.dir.join(format!("{BUILDING}-{id}.tmp")));
        let encoded = snapshot_file::encode_synced(
            tmp.path(),
            &meta,
            captured.records().map(|r| (r.key(), r.value())),
        );
        let size = match encoded {
            // The disk filled while the file was written: the last snapshot
            // stands (as under the floor), and the file goes with `tmp`.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && self.current().is_some() => {
                tracing::warn!(
                    dir = %self.inner.dir.display(),
                    "no space left for a snapshot: the last one stands until space returns"
                );
                return Ok(());
            }
            other => other.map_err(|e| write_err(&e))?,
        };
        drop(captured);
        // The state must be on disk at least up to the snapshot before the log
        // behind it can be purged.
        self.inner.writer.drain().map_err(|e| write_err(&e))?;
        self.inner.db.flush().map_err(|e| write_err(&e))?;
        let mut current = self.current();
        if current
            .as_ref()
            .is_some_and(|c| c.last_log_id > meta.last_log_id)
        {
            // A newer snapshot was installed meanwhile: keep it.
            return Ok(());
        }
        tmp.publish(&self.current_path())
            .map_err(|e| write_err(&e))?;
        let took = started.elapsed();
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = size,
            millis = took.as_millis() as u64,
            locked_millis = locked.as_millis() as u64,
            "snapshot built"
        );
        self.inner
            .stats
            .record_built(meta.last_log_id.map(|l| l.index), took, size);
        self.inner
            .floor
            .published(meta.last_log_id.map(|l| l.index));
        *current = Some(meta);
        Ok(())
    }

    fn open_current(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current();
        let Some(meta) = current.clone() else {
            return Ok(None);
        };
        let file = fs::File::open(self.current_path())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }

    fn install_sync(&self, meta: &SnapshotMeta, received: fs::File) -> Result<(), StorageError> {
        let installed = self.install_received(meta, received);
        if installed.is_err() {
            // A log write waiting for this snapshot to cover a purge must
            // not wait for ever.
            self.inner.floor.install_failed();
        }
        installed
    }

    fn install_received(
        &self,
        meta: &SnapshotMeta,
        mut received: fs::File,
    ) -> Result<(), StorageError> {
        let _installing = Installing::raise(&self.inner.installing);
        let started = std::time::Instant::now();
        let sig = Some(meta.signature());
        let err = |e: &dyn std::error::Error| {
            StorageIOError::write_snapshot(sig.clone(), AnyError::error(e.to_string()))
        };
        let tmp = Staged::new(self.temp_path("received").map_err(|e| err(&e))?);
        snapshot_file::copy_synced(&mut received, tmp.path()).map_err(|e| err(&e))?;
        let checked = snapshot_file::verify(tmp.path()).and_then(|_| {
            let mut f = fs::File::open(tmp.path())?;
            snapshot_file::read_meta(&mut f)
        });
        let file_meta = checked.map_err(|e| err(&e))?;
        if file_meta.last_log_id != meta.last_log_id
            || file_meta.last_membership != meta.last_membership
        {
            return Err(err(&RestoreError::Mismatch(format!(
                "received snapshot holds {:?}, the leader announced {:?}",
                file_meta.last_log_id, meta.last_log_id
            )))
            .into());
        }
        let applied = self.inner.machine.read().last_applied;
        if file_meta.last_log_id <= applied {
            // Installing it would take the state back to an older point
            // while the entries after that point are not applied again: the
            // state would lose decisions and differ from the other nodes'.
            tracing::warn!(
                snapshot = ?file_meta.last_log_id,
                applied = ?applied,
                "a received snapshot is not newer than the state; kept the state"
            );
            // openraft purges the log up to the snapshot all the same: the
            // state, which covers it, must be on disk first.
            self.inner.writer.drain().map_err(|e| err(&e))?;
            self.inner.db.flush().map_err(|e| err(&e))?;
            self.inner.floor.published(applied.map(|l| l.index));
            return Ok(());
        }
        // The state this node holds is behind the snapshot and is replaced
        // whole: it is dropped before the new one is built, not after, so
        // that the node never holds both (the third stage of `cargo bench
        // -p ipkeep-store --bench snapshot_install` installs over a state
        // left behind). Readers wait on the lock meanwhile, as long as the
        // build takes; what they would have read is out of date anyway.
        let mut machine = self.inner.machine.write();
        drop(std::mem::take(&mut *machine));
        free_memory::release();
        // The new state from the file as received: a snapshot whose records
        // do not decode or contradict each other is refused, and the state
        // this node held is loaded back from its tree.
        match machine_from_snapshot(tmp.path()) {
            Ok(installed) => *machine = installed,
            Err(e) => {
                // The tree holds the state that was in memory once every
                // queued write has landed. Should the reload fail too, the
                // error stops Raft on this node and the daemon exits (a
                // storage error is fatal); the next start loads the tree.
                self.inner.writer.drain().map_err(|e| err(&e))?;
                *machine = load_tree(&self.inner.tree).map_err(|e| err(&e))?;
                return Err(err(&e).into());
            }
        }
        // Writes still queued are older than the snapshot: landing after it
        // they would undo part of it.
        self.inner.writer.drain().map_err(|e| err(&e))?;
        let mut current = self.current();
        tmp.publish(&self.current_path()).map_err(|e| err(&e))?;
        self.inner
            .floor
            .published(file_meta.last_log_id.map(|l| l.index));
        *current = Some(file_meta);
        mark_installing(&self.inner.tree, &self.current_path()).map_err(|e| err(&e))?;
        drop(current);
        // The tree is rewritten from the snapshot behind the install, by the
        // state writer, ahead of the changes of every apply after it (sled
        // takes far longer for it than building the state, as the
        // `snapshot_install` bench shows; the node serves meanwhile). Until
        // it is done the tree stays marked, so a start restores it from the
        // snapshot file; a snapshot build or another install waits for it
        // (they drain the writer first).
        self.inner
            .writer
            .refill(self.current_path())
            .map_err(|e| err(&e))?;
        let allocations = machine.state.allocation_count();
        drop(machine);
        let took = started.elapsed();
        let bytes = fs::metadata(self.current_path()).map_or(0, |m| m.len());
        tracing::info!(
            snapshot = %meta.snapshot_id,
            allocations,
            millis = took.as_millis() as u64,
            "snapshot installed; the state tree is rewritten from it behind"
        );
        self.inner
            .stats
            .record_installed(meta.last_log_id.map(|l| l.index), took, bytes);
        // Leftovers of earlier receptions, not the file of a build that may
        // be running beside this install (openraft builds off the state
        // machine's task): removed under it, that build could not publish.
        remove_temporaries(&self.inner.dir, |name| !name.starts_with(BUILDING));
        free_memory::release();
        Ok(())
    }
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

/// Builds snapshots off the state machine's task.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.build_sync())
            .await
            .map_err(join_err)??;
        self.store.open_current()?.ok_or_else(|| {
            StorageIOError::read_snapshot(
                None,
                AnyError::error("snapshot vanished after it was built"),
            )
            .into()
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = self.inner.machine.read();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_sync(entries.into_iter().collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self
            .temp_path("incoming")
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = snapshot.into_std().await;
        let store = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || store.install_sync(&meta, received))
            .await
            .map_err(join_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.open_current()
    }
}

#[cfg(test)]
mod tests;
