//! The Raft state kept beside the log segments, one small file each: the
//! vote, the last purged log id and the committed log id.
//!
//! The vote and the purge point are replaced atomically (a new file,
//! fsynced, renamed over the old one, the directory fsynced): a vote must
//! survive a crash or a restarted node could vote twice in one term, and
//! segments are deleted only after the purge point that covers them is on
//! disk. The committed log id is a hint (a restarted node re-applies up to
//! it sooner) written in place without an fsync; when it is torn or missing
//! it reads as none.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::record;
use super::{decode, encode};
use crate::storage::snapshot_file::{publish, write_synced};
use crate::types::{LogId, Vote};

const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
const COMMITTED_FILE: &str = "committed";

pub struct HardState {
    dir: PathBuf,
    committed: File,
}

/// A hard-state file that exists but cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct Damaged {
    pub path: PathBuf,
    pub reason: String,
}

fn framed<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let payload = encode(value).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(payload.len() + record::FRAME_LEN as usize);
    record::frame(&mut bytes, &payload)?;
    Ok(bytes)
}

fn read_framed<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Damaged> {
    let damaged = |reason: String| Damaged {
        path: path.to_owned(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(damaged(e.to_string())),
    };
    let payload =
        record::single(&bytes).ok_or_else(|| damaged("incomplete or fails its checksum".into()))?;
    decode(payload)
        .map(Some)
        .map_err(|e| damaged(e.to_string()))
}

impl HardState {
    pub fn open(dir: &Path) -> io::Result<HardState> {
        let committed = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(COMMITTED_FILE))?;
        Ok(HardState {
            dir: dir.to_owned(),
            committed,
        })
    }

    fn replace<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let bytes = framed(value)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        write_synced(&tmp, &bytes)?;
        publish(&tmp, &self.dir.join(name))
    }

    pub fn read_vote(&self) -> Result<Option<Vote>, Damaged> {
        read_framed(&self.dir.join(VOTE_FILE))
    }

    /// Returns once the vote is on disk.
    pub fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        self.replace(VOTE_FILE, vote)
    }

    pub fn read_purged(&self) -> Result<Option<LogId>, Damaged> {
        read_framed(&self.dir.join(PURGED_FILE))
    }

    /// Returns once the purge point is on disk.
    pub fn save_purged(&self, purged: &LogId) -> io::Result<()> {
        self.replace(PURGED_FILE, purged)
    }

    /// The committed log id last saved; none when it never was, or when
    /// the write was torn by a crash (it is only a hint).
    pub fn read_committed(&self) -> Option<LogId> {
        read_framed::<Option<LogId>>(&self.dir.join(COMMITTED_FILE))
            .ok()
            .flatten()
            .flatten()
    }

    /// Written in place, not fsynced (see the module's comment).
    pub fn save_committed(&self, committed: &Option<LogId>) -> io::Result<()> {
        self.committed.write_all_at(&framed(committed)?, 0)
    }

    /// For a clean shutdown: the committed hint too.
    pub fn sync(&self) -> io::Result<()> {
        self.committed.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;

    #[test]
    fn each_value_round_trips_and_damage_is_told_apart_from_absence() {
        let dir = tempfile::tempdir().unwrap();
        let hard = HardState::open(dir.path()).unwrap();
        assert_eq!(hard.read_vote().unwrap(), None);
        assert_eq!(hard.read_purged().unwrap(), None);
        assert_eq!(hard.read_committed(), None);

        let vote = Vote::new(3, 2);
        hard.save_vote(&vote).unwrap();
        hard.save_purged(&log_id(2, 1, 40)).unwrap();
        hard.save_committed(&Some(log_id(3, 2, 1000))).unwrap();
        // A shorter value written over a longer one in place.
        hard.save_committed(&Some(log_id(3, 2, 7))).unwrap();
        let again = HardState::open(dir.path()).unwrap();
        assert_eq!(again.read_vote().unwrap(), Some(vote));
        assert_eq!(again.read_purged().unwrap(), Some(log_id(2, 1, 40)));
        assert_eq!(again.read_committed(), Some(log_id(3, 2, 7)));
        assert!(!dir.path().join("vote.tmp").exists());

        std::fs::write(dir.path().join(VOTE_FILE), b"\x05\0\0\0garbage").unwrap();
        let err = again.read_vote().unwrap_err();
        assert!(err.to_string().contains("vote"), "{err}");
        std::fs::write(dir.path().join(COMMITTED_FILE), b"torn").unwrap();
        assert_eq!(again.read_committed(), None, "a torn hint reads as none");
    }
}
