//! The commit witness: a 16-byte file beside the database that records how
//! far the Raft log is known to be committed and flushed.
//!
//! sled recovers a damaged or truncated database file by keeping the longest
//! valid prefix of its log, silently: a node would come back without writes
//! it had acknowledged, and could hand their addresses out again. The
//! witness lives outside sled, so that at start the log can be checked
//! against it: a log that ends before the witness has lost committed
//! entries, and the node refuses to serve from it.
//!
//! It records min(committed, flushed): an entry counts only once it is both
//! committed (so never truncated by a new leader) and flushed on this node
//! (so a kill -9 cannot legitimately take it away). It only moves forward.
//! It is written with one pwrite and not fsynced: it survives a crash of
//! the process (the page cache does), and after a power loss it can only
//! err towards reporting damage that sled's own unsynced writes caused.
//!
//! Layout: `IPKW`, u64 big-endian (the last such index plus one; 0: none),
//! CRC-32 of the first 12 bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 4] = b"IPKW";
const LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is damaged ({reason})", path.display())]
    Damaged { path: PathBuf, reason: String },
}

#[derive(Default)]
struct Marks {
    committed: u64,
    flushed: u64,
    recorded: u64,
    /// Bumped by each truncation: a flush reported for appends made before
    /// it must not raise `flushed` over entries that are gone.
    epoch: u64,
}

pub struct CommitWitness {
    file: File,
    path: PathBuf,
    marks: Mutex<Marks>,
}

fn encode(value: u64) -> [u8; LEN] {
    let mut bytes = [0u8; LEN];
    bytes[..4].copy_from_slice(MAGIC);
    bytes[4..12].copy_from_slice(&value.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..12]);
    bytes[12..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(path: &Path, bytes: &[u8]) -> Result<u64, WitnessError> {
    let damaged = |reason: &str| WitnessError::Damaged {
        path: path.to_owned(),
        reason: reason.into(),
    };
    if bytes.len() != LEN {
        return Err(damaged(&format!("{} bytes, expected {LEN}", bytes.len())));
    }
    if &bytes[..4] != MAGIC {
        return Err(damaged("bad magic"));
    }
    let crc = u32::from_be_bytes(bytes[12..].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&bytes[..12]) {
        return Err(damaged("checksum mismatch"));
    }
    Ok(u64::from_be_bytes(
        bytes[4..12].try_into().expect("8 bytes"),
    ))
}

impl CommitWitness {
    /// Opens (or creates) the witness; returns it with what it last
    /// recorded: the number of log entries known committed and flushed
    /// (the last such index plus one), 0 when none or when the file is new.
    pub fn open(path: &Path) -> Result<(CommitWitness, u64), WitnessError> {
        let io_err = |source| WitnessError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let mut bytes = Vec::with_capacity(LEN);
        file.read_to_end(&mut bytes).map_err(io_err)?;
        // Empty: just created (or created and crashed before its first write).
        let recorded = if bytes.is_empty() {
            0
        } else {
            decode(path, &bytes)?
        };
        let witness = CommitWitness {
            file,
            path: path.to_owned(),
            marks: Mutex::new(Marks {
                recorded,
                ..Marks::default()
            }),
        };
        Ok((witness, recorded))
    }

    /// The log is committed up to and including `index`.
    pub fn committed(&self, index: u64) {
        self.advance(|m| m.committed = m.committed.max(index + 1));
    }

    /// The truncation epoch to pass to [`CommitWitness::flushed`] for an
    /// append made now.
    pub fn epoch(&self) -> u64 {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).epoch
    }

    /// The log is flushed on this node up to and including `index`, for
    /// appends made in `epoch`.
    pub fn flushed(&self, index: u64, epoch: u64) {
        self.advance(|m| {
            if m.epoch == epoch {
                m.flushed = m.flushed.max(index + 1);
            }
        });
    }

    /// The log was truncated from `since` on (entries a new leader
    /// replaced; never committed ones).
    pub fn truncated(&self, since: u64) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        marks.flushed = marks.flushed.min(since);
        marks.epoch += 1;
    }

    fn advance(&self, update: impl FnOnce(&mut Marks)) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut marks);
        let value = marks.committed.min(marks.flushed);
        if value <= marks.recorded {
            return;
        }
        match self.file.write_all_at(&encode(value), 0) {
            Ok(()) => marks.recorded = value,
            // The witness only detects damage; failing to write it must not
            // stop the log (a full disk is reported where writes are refused).
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot update the commit witness")
            }
        }
    }

    /// For a clean shutdown.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_lesser_of_committed_and_flushed_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        let (w, before) = CommitWitness::open(&path).unwrap();
        assert_eq!(before, 0);
        w.committed(9);
        assert_eq!(CommitWitness::open(&path).unwrap().1, 0, "not flushed yet");
        w.flushed(5, w.epoch());
        assert_eq!(CommitWitness::open(&path).unwrap().1, 6);
        w.flushed(20, w.epoch());
        assert_eq!(CommitWitness::open(&path).unwrap().1, 10);
        w.committed(3);
        assert_eq!(CommitWitness::open(&path).unwrap().1, 10, "never back");
    }

    /// Flushed but uncommitted entries that a new leader replaces must not
    /// count: after the truncation, only new flushes raise the mark, and a
    /// flush of appends made before it is ignored.
    #[test]
    fn a_truncation_lowers_what_counts_as_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        let (w, _) = CommitWitness::open(&path).unwrap();
        let before = w.epoch();
        w.flushed(100, before);
        w.committed(80);
        assert_eq!(CommitWitness::open(&path).unwrap().1, 81);
        w.truncated(90);
        w.flushed(100, before); // a late report from before the truncation
        w.committed(98); // entries 90..=98 of the new leader, not flushed yet
        assert_eq!(CommitWitness::open(&path).unwrap().1, 90);
        w.flushed(98, w.epoch());
        assert_eq!(CommitWitness::open(&path).unwrap().1, 99);
    }

    #[test]
    fn a_damaged_witness_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        std::fs::write(&path, encode(42)).unwrap();
        assert_eq!(CommitWitness::open(&path).unwrap().1, 42);
        let mut bytes = encode(42);
        bytes[7] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            CommitWitness::open(&path),
            Err(WitnessError::Damaged { .. })
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(CommitWitness::open(&path).is_err());
    }
}
