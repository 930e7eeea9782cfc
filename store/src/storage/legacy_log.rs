//! Data directories written before the Raft log had files of its own kept
//! it in sled, beside the state: tree `raft_log` (entry index, big endian,
//! to the entry; the empty key holding the last purged log id) and tree
//! `raft_meta` (the vote and the committed log id). The first open by this
//! version copies them into a new log directory (see [`super::open`]),
//! which replaces nothing until it is complete; the trees are dropped after.

use std::io;

use super::log_file::{decode, LogFile};
use crate::types::{Entry, LogId, Vote};

const LOG_TREE: &[u8] = b"raft_log";
const META_TREE: &[u8] = b"raft_meta";
const PURGED_KEY: &[u8] = b"";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
/// Entries written to the new log per append while copying.
const CHUNK: usize = 1000;

fn has_tree(db: &sled::Db, name: &[u8]) -> bool {
    db.tree_names().iter().any(|n| n.as_ref() == name)
}

fn damaged(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("the old Raft log in the database: {what}: {e}"))
}

fn read_meta<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    what: &str,
) -> io::Result<Option<T>> {
    match tree.get(key).map_err(|e| damaged(what, e))? {
        Some(bytes) => decode(&bytes).map(Some).map_err(|e| damaged(what, e)),
        None => Ok(None),
    }
}

/// Copies the log kept in `db` (if any) into `log`, which must be new.
/// Returns how many entries were copied.
pub fn import(db: &sled::Db, log: &LogFile) -> io::Result<u64> {
    if has_tree(db, META_TREE) {
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| damaged("raft_meta", e))?;
        if let Some(vote) = read_meta::<Vote>(&meta, VOTE_KEY, "vote")? {
            log.hard_state().save_vote(&vote)?;
        }
        if let Some(committed) = read_meta::<Option<LogId>>(&meta, COMMITTED_KEY, "committed")? {
            log.hard_state().save_committed(&committed)?;
        }
    }
    if !has_tree(db, LOG_TREE) {
        return Ok(0);
    }
    let tree = db.open_tree(LOG_TREE).map_err(|e| damaged("raft_log", e))?;
    if let Some(purged) = read_meta::<LogId>(&tree, PURGED_KEY, "purge point")? {
        log.purge(purged)?;
    }
    let mut copied = 0;
    let mut chunk: Vec<Entry> = Vec::with_capacity(CHUNK);
    // Every key but the purge point's (the empty key sorts first).
    for item in tree.range(0u64.to_be_bytes()..) {
        let (_, bytes) = item.map_err(|e| damaged("raft_log", e))?;
        chunk.push(decode(&bytes).map_err(|e| damaged("entry", e))?);
        if chunk.len() == CHUNK {
            copied += chunk.len() as u64;
            log.append(chunk.drain(..))?;
        }
    }
    copied += chunk.len() as u64;
    log.append(chunk)?;
    log.sync_data()?;
    Ok(copied)
}

/// Drops the old trees once the log directory has replaced them.
pub fn drop_trees(db: &sled::Db) -> Result<(), sled::Error> {
    for name in [LOG_TREE, META_TREE] {
        if has_tree(db, name) {
            db.drop_tree(name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::log_file::encode;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    /// A database as the previous version left it: purged to 4, entries 5
    /// to 2,600, a vote and a committed log id.
    #[test]
    fn an_old_log_in_sled_is_copied_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        let tree = db.open_tree(LOG_TREE).unwrap();
        // Typed, so that the node ids encode as the store's (u64).
        let purged: LogId = log_id(1, 1, 4);
        let vote: Vote = Vote::new(2, 1);
        let committed: Option<LogId> = Some(log_id(2, 1, 2500));
        tree.insert(PURGED_KEY, encode(&purged).unwrap()).unwrap();
        for i in 5..=2600 {
            let entry = Entry {
                log_id: log_id(2, 1, i),
                payload: EntryPayload::Blank,
            };
            tree.insert(i.to_be_bytes(), encode(&entry).unwrap())
                .unwrap();
        }
        let meta = db.open_tree(META_TREE).unwrap();
        meta.insert(VOTE_KEY, encode(&vote).unwrap()).unwrap();
        meta.insert(COMMITTED_KEY, encode(&committed).unwrap())
            .unwrap();

        let log = LogFile::open(&dir.path().join("log")).unwrap();
        assert_eq!(import(&db, &log).unwrap(), 2596);
        drop_trees(&db).unwrap();
        assert!(!has_tree(&db, LOG_TREE) && !has_tree(&db, META_TREE));
        drop(log);

        let log = LogFile::open(&dir.path().join("log")).unwrap();
        assert_eq!(log.last_purged(), Some(log_id(1, 1, 4)));
        assert_eq!(log.last_log_id(), Some(log_id(2, 1, 2600)));
        let read = log.read(0, 10_000).unwrap();
        assert_eq!(read.len(), 2596);
        assert_eq!(read[0].log_id, log_id(2, 1, 5));
        assert_eq!(log.hard_state().read_vote().unwrap(), Some(Vote::new(2, 1)));
        assert_eq!(log.hard_state().read_committed(), Some(log_id(2, 1, 2500)));
    }
}
