//! The sled-backed storage of a node: the Raft log and vote
//! ([`LogStore`], openraft's `RaftLogStorage`) and the state machine
//! ([`StateMachineStore`], openraft's `RaftStateMachine`), both in one sled
//! database under the data directory, and snapshots as files beside it.
//!
//! Durability, as openraft needs it:
//! - appended entries are acknowledged only after sled has flushed them (a
//!   flusher thread commits them in groups, in order);
//! - the vote is flushed before `save_vote` returns;
//! - applied state and last-applied are one atomic sled batch, so an entry is
//!   never applied twice nor lost after a crash (the log is flushed, the state
//!   need not be: what is missing is re-applied from the log);
//! - a snapshot is written to a file and fsynced before it is reported, and
//!   the state is flushed before the log can be purged behind it.
//!
//! sled's flush uses sync_file_range on Linux, which (sled issue #1452) may
//! not survive power loss; kill -9 is what the tests can prove.

// openraft's traits fix the error type (StorageError, over 200 bytes); the
// helpers here return what the traits return.
#![allow(clippy::result_large_err)]

pub mod backup;
mod flusher;
mod log_store;
mod snapshot_file;
pub mod snapshot_stats;
mod state_machine;
mod witness;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use log_store::LogStore;
pub use snapshot_file::SnapshotFileError;
pub use state_machine::{Machine, SharedMachine, SnapshotBuilder, StateMachineStore};

use crate::records::RecordError;

/// Tunables of the storage engine.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// sled's page cache, in bytes. sled's own default (1 GiB) is far more
    /// than a node needs.
    pub cache_capacity: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            cache_capacity: 64 << 20,
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
    #[error("the Raft log in {} ends at {last} but the commit witness {} shows that entries up to {committed} were committed and flushed here: the database file was damaged or truncated and lost acknowledged writes, and ipkeepd will not serve from it. Move the data directory away, start this node with an empty one and rejoin it as a learner (ipkeepctl member add), or bring a new cluster up from a backup (ipkeepd --restore FILE)", db.display(), witness.display())]
    LostWrites {
        db: PathBuf,
        witness: PathBuf,
        committed: u64,
        /// "entry N", or "nothing (it is empty)".
        last: String,
    },
    #[error("the commit witness cannot be trusted. If the database is known to be intact, remove the witness and start again (it is rebuilt); if not, rejoin this node as a learner with an empty data directory, or restore a backup")]
    Witness {
        #[source]
        source: witness::WitnessError,
    },
    #[error("the snapshot in {} is damaged: {source}. Move it away; the node rebuilds it from its state, or rejoin it as a learner", path.display())]
    Snapshot {
        path: PathBuf,
        #[source]
        source: SnapshotFileError,
    },
}

const DB_DIR: &str = "db";
const SNAPSHOT_DIR: &str = "snapshots";
const WITNESS_FILE: &str = "commit.witness";

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

/// Opens (or creates) the storage of a node in `data_dir`.
pub fn open(
    data_dir: &Path,
    options: &StorageOptions,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    create_private_dir(data_dir)?;
    let db_path = data_dir.join(DB_DIR);
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
    let witness_path = data_dir.join(WITNESS_FILE);
    let (witness, witnessed) = witness::CommitWitness::open(&witness_path)
        .map_err(|source| OpenError::Witness { source })?;
    let log = LogStore::open(db.clone(), std::sync::Arc::new(witness)).map_err(|source| {
        OpenError::Database {
            path: db_path.clone(),
            source,
        }
    })?;
    let last = log.last_index().map_err(|e| OpenError::Database {
        path: db_path.clone(),
        source: sled::Error::Unsupported(e.to_string()),
    })?;
    if witnessed > last.map_or(0, |l| l + 1) {
        return Err(OpenError::LostWrites {
            db: db_path,
            witness: witness_path,
            committed: witnessed - 1,
            last: last.map_or("nothing (it is empty)".into(), |l| format!("entry {l}")),
        });
    }
    let state_machine = StateMachineStore::open(db, &db_path, snapshot_dir)?;
    Ok((log, state_machine))
}
