//! The storage of a node, under its data directory: the Raft log, vote and
//! purge point in files of their own (`log/`, [`LogStore`], openraft's
//! `RaftLogStorage`), the state machine in a sled database (`db/`,
//! [`StateMachineStore`], openraft's `RaftStateMachine`), and snapshots as
//! files (`snapshots/`).
//!
//! Durability, as openraft needs it:
//! - appended entries are acknowledged only after an fdatasync of the log
//!   covers them (synced in `append` itself, in order);
//! - the vote is fsynced before `save_vote` returns;
//! - applied state and last-applied are one atomic sled batch, so an entry is
//!   never applied twice; the batch is written behind the apply (see
//!   `state_writer`) and not flushed with it: what a crash takes from the
//!   state is re-applied from the log;
//! - a snapshot is written to a file and fsynced before it is reported, and
//!   the state is flushed before the log can be purged behind it; a purge
//!   beyond the last published snapshot (openraft asks for one while it
//!   installs a snapshot) is held until the snapshot is published
//!   (`snapshot_floor`).
//!
//! sled's own flush uses sync_file_range on Linux, which (sled issue #1452)
//! may not survive power loss; the state it holds can be rebuilt from the
//! snapshot and the log, which are fsynced.

// openraft's traits fix the error type (StorageError, over 200 bytes); the
// helpers here return what the traits return.
#![allow(clippy::result_large_err)]

pub mod backup;
#[cfg(test)]
mod formats;
mod free_memory;
mod log_file;
mod log_store;
mod snapshot_file;
mod snapshot_floor;
pub mod snapshot_stats;
mod state_machine;
mod state_writer;
mod witness;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use free_memory::use_one_arena;
pub use log_store::LogStore;
pub use snapshot_file::SnapshotFileError;
pub use state_machine::{Replica, SharedReplica, SnapshotBuilder, StateMachineStore};

use crate::records::RecordError;

/// Tunables of the storage engine.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// sled's page cache, in bytes. sled's own default (1 GiB) is far more
    /// than a node needs.
    pub cache_capacity: u64,
    /// Under this much free space in the data directory, no snapshot is
    /// built (the last one stands until space returns): a build that runs
    /// out of space half-way is fatal to Raft. 0: always build.
    pub min_free_space: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            cache_capacity: 32 << 20,
            min_free_space: 0,
        }
    }
}

/// Why a data directory could not be opened. Each message says what is
/// damaged and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {} is in use by another process (is another ipkeepd running?)", path.display())]
    Locked { path: PathBuf },
    #[error("cannot open the database in {}: {source}. If it is damaged, move it away and rejoin this node as a learner with an empty data directory, or restore a snapshot", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the state in {} is damaged: {source}. Move the data directory away and rejoin this node as a learner, or restore a snapshot", path.display())]
    Records {
        path: PathBuf,
        #[source]
        source: RecordError,
    },
    #[error("the Raft log in {} ends at {last} but the commit witness {} shows that entries up to {committed} were committed and flushed here: the log was damaged or truncated and lost acknowledged writes, and ipkeepd will not serve from it. Move the data directory away, start this node with an empty one and rejoin it as a learner (ipkeepctl member add), or bring a new cluster up from a backup (ipkeepd --restore FILE)", log.display(), witness.display())]
    LostWrites {
        log: PathBuf,
        witness: PathBuf,
        committed: u64,
        /// "entry N", or "nothing (it is empty)".
        last: String,
    },
    #[error("the Raft log is damaged: {source}. If this node is one of several, move the data directory away, start it with an empty one and rejoin it as a learner (ipkeepctl member add); otherwise bring a new cluster up from a backup (ipkeepd --restore FILE)")]
    Log {
        #[source]
        source: log_file::LogError,
    },
    #[error("the state in {} was applied up to entry {applied} but the Raft log was purged up to entry {purged} and no snapshot covers the difference: the database lost writes. Move the data directory away, start this node with an empty one and rejoin it as a learner (ipkeepctl member add), or bring a new cluster up from a backup (ipkeepd --restore FILE)", db.display())]
    StateBehindLog {
        db: PathBuf,
        applied: String,
        purged: u64,
    },
    #[error("cannot create the Raft log in {}: {source}", log.display())]
    CreateLog {
        log: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database in {} keeps the Raft log inside it, as development builds before the first release did; this version keeps the log in files of its own and does not convert it. Move the data directory away, start this node with an empty one and rejoin it as a learner (ipkeepctl member add), or bring a new cluster up from a backup (ipkeepd --restore FILE)", db.display())]
    UnreleasedLayout { db: PathBuf },
    #[error("the commit witness cannot be trusted. If the database is known to be intact, remove the witness and start again (it is rebuilt); if not, rejoin this node as a learner with an empty data directory, or restore a backup")]
    Witness {
        #[source]
        source: witness::WitnessError,
    },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the snapshot in {} is damaged: {source}. Move it away; the node rebuilds it from its state, or rejoin it as a learner", path.display())]
    Snapshot {
        path: PathBuf,
        #[source]
        source: SnapshotFileError,
    },
}

const DB_DIR: &str = "db";
const LOG_DIR: &str = "log";
const SNAPSHOT_DIR: &str = "snapshots";
const WITNESS_FILE: &str = "commit.witness";
/// Present while a node recovers from a state behind its log (see
/// [`quarantine`]): the log index it must have applied before it votes.
const RECOVERING_FILE: &str = "recovering";

fn create_private_dir(path: &Path) -> Result<(), OpenError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| OpenError::CreateDir {
            path: path.to_owned(),
            source,
        })
}

/// Creates an empty log directory for a new node. It is built beside and
/// renamed into place whole, so a crash leaves either no log directory or a
/// complete one.
fn create_log_dir(data_dir: &Path, log_dir: &Path) -> std::io::Result<()> {
    let staging = data_dir.join("log.new");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::DirBuilder::new().mode(0o700).create(&staging)?;
    drop(log_file::LogFile::open(&staging).map_err(std::io::Error::other)?);
    snapshot_file::publish(&staging, log_dir)
}

/// Trees in which development builds before the first release kept the
/// Raft log, beside the state. No release wrote them; a database that has
/// them is refused rather than read without its log.
const UNRELEASED_LOG_TREES: [&[u8]; 2] = [b"raft_log", b"raft_meta"];

/// [`open`] for a caller that reopens a directory it closed a moment ago
/// in the same process (tests, benches): sled's I/O threads can hold its
/// lock for a moment after the last handle is dropped, while a write they
/// took on finishes. Retries while the directory is locked, for at most
/// `patience`. A daemon never reopens in-process: its exit frees the lock.
pub fn open_again(
    data_dir: &Path,
    options: &StorageOptions,
    patience: std::time::Duration,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match open(data_dir, options) {
            Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens (or creates) the storage of a node in `data_dir`.
pub fn open(
    data_dir: &Path,
    options: &StorageOptions,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    create_private_dir(data_dir)?;
    let db_path = data_dir.join(DB_DIR);
    let log_path = data_dir.join(LOG_DIR);
    let snapshot_dir = data_dir.join(SNAPSHOT_DIR);
    create_private_dir(&snapshot_dir)?;
    let db = sled::Config::new()
        .path(&db_path)
        .cache_capacity(options.cache_capacity)
        .open()
        .map_err(|source| match source {
            sled::Error::Io(ref e) if e.to_string().contains("lock") => OpenError::Locked {
                path: data_dir.to_owned(),
            },
            source => OpenError::Database {
                path: db_path.clone(),
                source,
            },
        })?;
    if db
        .tree_names()
        .iter()
        .any(|name| UNRELEASED_LOG_TREES.contains(&name.as_ref()))
    {
        return Err(OpenError::UnreleasedLayout { db: db_path });
    }
    if !log_path.exists() {
        create_log_dir(data_dir, &log_path).map_err(|source| OpenError::CreateLog {
            log: log_path.clone(),
            source,
        })?;
    }
    let log_file =
        log_file::LogFile::open(&log_path).map_err(|source| OpenError::Log { source })?;
    let witness_path = data_dir.join(WITNESS_FILE);
    let (witness, witnessed) = witness::CommitWitness::open(&witness_path)
        .map_err(|source| OpenError::Witness { source })?;
    let last = log_file.last_log_id().map(|l| l.index);
    if witnessed > last.map_or(0, |l| l + 1) {
        return Err(OpenError::LostWrites {
            log: log_path,
            witness: witness_path,
            committed: witnessed - 1,
            last: last.map_or("nothing (it is empty)".into(), |l| format!("entry {l}")),
        });
    }
    let purged = log_file.last_purged();
    let state_machine =
        StateMachineStore::open(db.clone(), &db_path, snapshot_dir, options.min_free_space)?;
    let log = LogStore::open(
        log_file,
        db,
        state_machine.writer(),
        std::sync::Arc::new(witness),
        state_machine.floor(),
    );
    let applied = state_machine.shared().read().last_applied;
    if let Some(purged) = purged.filter(|p| applied.is_none_or(|a| a.index < p.index)) {
        return Err(OpenError::StateBehindLog {
            db: db_path,
            applied: applied.map_or("nothing".into(), |a| a.index.to_string()),
            purged: purged.index,
        });
    }
    Ok((log, state_machine))
}

/// For a member of a cluster whose state is behind its log's purge point
/// with no snapshot to cover the difference ([`OpenError::StateBehindLog`]):
/// moves everything but the vote aside, into `lost-<seconds>/` in the data
/// directory, so that the node starts empty under its own id and its leader
/// sends it a snapshot. Returns the index it must have applied before it may
/// vote again: the last entry its log held (and at least what the commit
/// witness says it acknowledged). Until then, the node's vote could elect a
/// leader that lacks entries this node once acknowledged; the daemon refuses
/// to vote or campaign meanwhile ([`recovery_target`]).
///
/// Restartable: the target is written first, and each move is a rename; a
/// second call moves what the first left and keeps the higher target.
pub fn quarantine(data_dir: &Path) -> std::io::Result<u64> {
    let log_dir = data_dir.join(LOG_DIR);
    let last = log_file::LogFile::open(&log_dir)
        .map_err(std::io::Error::other)?
        .last_log_id()
        .map_or(0, |l| l.index);
    let witnessed = match witness::CommitWitness::open(&data_dir.join(WITNESS_FILE)) {
        Ok((_, recorded)) => recorded.saturating_sub(1),
        Err(_) => 0,
    };
    let target = last
        .max(witnessed)
        .max(recovery_target(data_dir)?.unwrap_or(0));
    let marker = data_dir.join(RECOVERING_FILE);
    snapshot_file::write_synced(&marker, format!("{target}\n").as_bytes())?;
    fs::File::open(data_dir)?.sync_all()?;

    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lost = data_dir.join(format!("lost-{seconds}"));
    let lost_log = lost.join(LOG_DIR);
    fs::create_dir_all(&lost_log)?;
    // The witness first: without it a log moved away would read as lost
    // writes at the next start.
    let mut moves = vec![(data_dir.join(WITNESS_FILE), lost.join(WITNESS_FILE))];
    if log_dir.is_dir() {
        for entry in fs::read_dir(&log_dir)? {
            let path = entry?.path();
            let keep = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(log_file::is_vote_file);
            if !keep {
                moves.push((
                    path.clone(),
                    lost_log.join(path.file_name().unwrap_or_default()),
                ));
            }
        }
    }
    moves.push((data_dir.join(SNAPSHOT_DIR), lost.join(SNAPSHOT_DIR)));
    moves.push((data_dir.join(DB_DIR), lost.join(DB_DIR)));
    for (from, to) in moves {
        if from.exists() {
            fs::rename(&from, &to)?;
        }
    }
    fs::File::open(&log_dir).and_then(|d| d.sync_all()).ok();
    fs::File::open(data_dir)?.sync_all()?;
    tracing::warn!(
        data_dir = %data_dir.display(),
        moved_to = %lost.display(),
        target,
        "the state was behind the log's purge point: everything but the vote was moved aside; this node starts empty, takes a snapshot from its leader, and votes again once it has applied the entries it held"
    );
    Ok(target)
}

/// The index a recovering node must have applied before it votes (see
/// [`quarantine`]); None when it is not recovering.
pub fn recovery_target(data_dir: &Path) -> std::io::Result<Option<u64>> {
    match fs::read_to_string(data_dir.join(RECOVERING_FILE)) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            std::io::Error::other(format!("{RECOVERING_FILE}: not an index: {text:?}"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The node has applied its recovery target: it may vote again.
pub fn finish_recovery(data_dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(data_dir.join(RECOVERING_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
