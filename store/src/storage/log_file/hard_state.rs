//! The Raft state kept beside the log segments, one small file each: the
//! vote, the last purged log id and the committed log id.
//!
//! The vote lives in two fixed slots of a file allocated whole when it is
//! created (`vote.slots`, format below): each save writes the slot the last
//! save did not, in place, and fsyncs it, so a vote needs no new disk
//! space: with a new file for each vote, a node whose disk had filled would
//! stop on ENOSPC when a candidate asked for its vote. A torn save
//! leaves the other slot, the vote before it, which is right: the torn
//! vote was never answered. The vote must survive a crash or a restarted
//! node could vote twice in one term.
//!
//! The purge point is replaced atomically (a new file, fsynced, renamed
//! over the old one, the directory fsynced): segments are deleted only
//! after the purge point that covers them is on disk. The committed log id
//! is a hint (a restarted node re-applies up to it sooner) written in place
//! without an fsync; when it is torn or missing it reads as none.
//!
//! `vote.slots`: two slots of [`SLOT_LEN`] bytes; a slot is a log record
//! (length, CRC-32, payload: the log's encoding of `(sequence, vote)`)
//! padded with zeros; the valid slot with the higher sequence holds the
//! vote. An older node's `vote` file (a single record of the vote) is moved
//! into it at the first open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::record;
use super::{decode, encode};
use crate::storage::snapshot_file::{publish, write_synced};
use crate::types::{LogId, Vote};

/// The vote as nodes before `vote.slots` kept it.
const OLD_VOTE_FILE: &str = "vote";
const VOTE_FILE: &str = "vote.slots";
const SLOT_LEN: usize = 128;
const PURGED_FILE: &str = "purged";
const COMMITTED_FILE: &str = "committed";

pub struct HardState {
    dir: PathBuf,
    committed: File,
    vote: Mutex<VoteSlots>,
}

struct VoteSlots {
    file: File,
    /// The sequence number of the last save (0: none yet).
    last: u64,
}

/// Whether `name`, in the log directory, holds the vote (the one thing a
/// node that starts over under its own id must keep).
pub fn is_vote_file(name: &str) -> bool {
    name == VOTE_FILE || name == OLD_VOTE_FILE
}

/// What a slot holds: its save's sequence number and the vote; None when
/// it holds nothing valid.
fn read_slot(bytes: &[u8]) -> Option<(u64, Vote)> {
    decode::<(u64, Vote)>(record::single(bytes)?).ok()
}

/// The vote in a `vote.slots` file's bytes, with its sequence number.
fn read_slots(path: &Path, bytes: &[u8]) -> Result<Option<(u64, Vote)>, Damaged> {
    if bytes.len() != 2 * SLOT_LEN {
        return Err(Damaged {
            path: path.to_owned(),
            reason: format!("{} bytes, expected {}", bytes.len(), 2 * SLOT_LEN),
        });
    }
    let (a, b) = bytes.split_at(SLOT_LEN);
    match (read_slot(a), read_slot(b)) {
        (Some(x), Some(y)) => Ok(Some(if x.0 >= y.0 { x } else { y })),
        (Some(x), None) | (None, Some(x)) => Ok(Some(x)),
        // Both unreadable: a first save torn leaves the other slot zeros;
        // anything else is damage.
        (None, None) if a.iter().all(|&z| z == 0) || b.iter().all(|&z| z == 0) => Ok(None),
        (None, None) => Err(Damaged {
            path: path.to_owned(),
            reason: "neither vote slot is readable".into(),
        }),
    }
}

fn slot_bytes(sequence: u64, vote: &Vote) -> io::Result<Vec<u8>> {
    let mut bytes = framed(&(sequence, vote))?;
    if bytes.len() > SLOT_LEN {
        return Err(io::Error::other(format!(
            "a vote of {} bytes does not fit its slot",
            bytes.len()
        )));
    }
    bytes.resize(SLOT_LEN, 0);
    Ok(bytes)
}

/// Opens `vote.slots`, creating it whole (with the vote of an older node's
/// `vote` file, if there is one) when it is not there yet.
fn open_vote_slots(dir: &Path) -> io::Result<VoteSlots> {
    let path = dir.join(VOTE_FILE);
    if !path.exists() {
        let old = dir.join(OLD_VOTE_FILE);
        let inherited: Option<Vote> = read_framed(&old).map_err(io::Error::other)?;
        let mut bytes = vec![0u8; 2 * SLOT_LEN];
        if let Some(vote) = &inherited {
            // Sequence 1, in the slot a save of sequence 1 uses: the next
            // save (2) goes to the other one, so a torn one leaves this.
            bytes[SLOT_LEN..].copy_from_slice(&slot_bytes(1, vote)?);
        }
        let tmp = dir.join(format!("{VOTE_FILE}.tmp"));
        write_synced(&tmp, &bytes)?;
        publish(&tmp, &path)?;
        if inherited.is_some() {
            std::fs::remove_file(&old)?;
        }
    }
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let bytes = std::fs::read(&path)?;
    let last = read_slots(&path, &bytes)
        .map_err(io::Error::other)?
        .map_or(0, |(sequence, _)| sequence);
    Ok(VoteSlots { file, last })
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
        let vote = Mutex::new(open_vote_slots(dir)?);
        Ok(HardState {
            dir: dir.to_owned(),
            committed,
            vote,
        })
    }

    fn replace<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let bytes = framed(value)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        write_synced(&tmp, &bytes)?;
        publish(&tmp, &self.dir.join(name))
    }

    pub fn read_vote(&self) -> Result<Option<Vote>, Damaged> {
        let path = self.dir.join(VOTE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(read_slots(&path, &bytes)?.map(|(_, vote)| vote))
    }

    /// Returns once the vote is on disk. Writes in place: no new space.
    pub fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        let mut slots = self.vote.lock().unwrap_or_else(|p| p.into_inner());
        let sequence = slots.last + 1;
        let offset = (sequence % 2) * SLOT_LEN as u64;
        slots
            .file
            .write_all_at(&slot_bytes(sequence, vote)?, offset)?;
        slots.file.sync_data()?;
        slots.last = sequence;
        Ok(())
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
        assert!(!dir.path().join("vote.slots.tmp").exists());

        std::fs::write(dir.path().join(VOTE_FILE), vec![0xa5; 2 * SLOT_LEN]).unwrap();
        let err = again.read_vote().unwrap_err();
        assert!(err.to_string().contains("vote"), "{err}");
        std::fs::write(dir.path().join(COMMITTED_FILE), b"torn").unwrap();
        assert_eq!(again.read_committed(), None, "a torn hint reads as none");
    }

    /// Votes alternate between the two slots, in place: the file never
    /// grows, and a save torn half-way leaves the vote before it.
    #[test]
    fn votes_are_saved_in_place_and_a_torn_save_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let hard = HardState::open(dir.path()).unwrap();
        let path = dir.path().join(VOTE_FILE);
        for term in 1..=5 {
            hard.save_vote(&Vote::new(term, 1)).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_LEN as u64);
        }
        assert_eq!(hard.read_vote().unwrap(), Some(Vote::new(5, 1)));
        // Term 5 went to slot 1; tear it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_LEN + 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let again = HardState::open(dir.path()).unwrap();
        assert_eq!(again.read_vote().unwrap(), Some(Vote::new(4, 1)));
        again.save_vote(&Vote::new(6, 1)).unwrap();
        assert_eq!(again.read_vote().unwrap(), Some(Vote::new(6, 1)));
    }

    /// The persisted format, pinned: the bytes of a `vote.slots` file
    /// holding Vote::new(3, 2) as its first save; and an older node's
    /// `vote` file, moved into the slots at the first open.
    #[test]
    fn vote_file_fixtures_decode() {
        // The first save (sequence 1) goes to the second slot.
        const SLOT_1: &str = "0500000013658e730101030200";
        let dir = tempfile::tempdir().unwrap();
        let hard = HardState::open(dir.path()).unwrap();
        hard.save_vote(&Vote::new(3, 2)).unwrap();
        let bytes = std::fs::read(dir.path().join(VOTE_FILE)).unwrap();
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert!(bytes[..SLOT_LEN].iter().all(|&b| b == 0));
        assert_eq!(
            hex(&bytes[SLOT_LEN..SLOT_LEN + 13]),
            SLOT_1,
            "the vote's encoding changed: version it"
        );
        assert!(bytes[SLOT_LEN + 13..].iter().all(|&b| b == 0));

        const OLD_VOTE: &str = "04000000a26488a901030200";
        let old = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0..OLD_VOTE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&OLD_VOTE[i..i + 2], 16).unwrap())
            .collect();
        std::fs::write(old.path().join(OLD_VOTE_FILE), raw).unwrap();
        let hard = HardState::open(old.path()).unwrap();
        assert_eq!(hard.read_vote().unwrap(), Some(Vote::new(3, 2)));
        assert!(!old.path().join(OLD_VOTE_FILE).exists());
        // The next save goes to the other slot: torn, it leaves the vote
        // moved in.
        hard.save_vote(&Vote::new(4, 2)).unwrap();
        let path = old.path().join(VOTE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(hex(&bytes[SLOT_LEN..SLOT_LEN + 13]), SLOT_1);
        bytes[5] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let again = HardState::open(old.path()).unwrap();
        assert_eq!(again.read_vote().unwrap(), Some(Vote::new(3, 2)));
    }
}
