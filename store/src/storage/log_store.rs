//! openraft's log storage over the log files ([`LogFile`]): entries,
//! vote, purge point and committed log id in the data directory's `log/`.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};

use super::log_file::LogFile;
use super::snapshot_floor::FloorWatch;
use super::state_writer::StateWriter;
use super::witness::CommitWitness;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

struct Inner {
    log: Arc<LogFile>,
    witness: Arc<CommitWitness>,
    /// The state machine's database and its writer, drained and flushed
    /// with the log at a clean shutdown ([`LogStore::sync`]).
    db: sled::Db,
    state_writer: Arc<StateWriter>,
    /// The committed index openraft last reported, plus one (0: none), for
    /// the metrics.
    committed: AtomicU64,
    /// How far a purge may be made durable (see `snapshot_floor`).
    floor: FloorWatch,
    /// A purge openraft asked for beyond the floor, with the number of
    /// failed installs counted when it was asked for.
    pending_purge: Mutex<Option<(LogId, u64)>>,
}

/// openraft's log storage. Cloning is cheap; clones share one store.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    pub(super) fn open(
        log: LogFile,
        db: sled::Db,
        state_writer: Arc<StateWriter>,
        witness: Arc<CommitWitness>,
        floor: FloorWatch,
    ) -> LogStore {
        let log = Arc::new(log);
        // What the log holds now is on disk.
        if let Some(last) = log.last_log_id() {
            witness.flushed(last.index, witness.epoch());
        }
        LogStore {
            inner: Arc::new(Inner {
                log,
                witness,
                db,
                state_writer,
                committed: AtomicU64::new(0),
                floor,
                pending_purge: Mutex::new(None),
            }),
        }
    }

    /// The index of the last entry the log holds or held (a purge keeps its
    /// last index), None when it never held one.
    pub fn last_index(&self) -> Option<u64> {
        self.inner.log.last_log_id().map(|l| l.index)
    }

    /// The index of the last entry this node knows committed.
    pub fn committed_index(&self) -> Option<u64> {
        match self.inner.committed.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// The bytes the log's segments take.
    pub fn disk_usage(&self) -> u64 {
        self.inner.log.disk_usage()
    }

    /// Flushes everything written so far (log, state and witness) to disk;
    /// for a clean shutdown.
    pub fn sync(&self) -> std::io::Result<()> {
        self.inner.log.sync_data()?;
        self.inner.log.hard_state().sync()?;
        self.inner
            .state_writer
            .drain()
            .map_err(std::io::Error::other)?;
        self.inner.db.flush().map_err(std::io::Error::other)?;
        self.inner.witness.sync()
    }

    fn pending_purge(&self) -> Option<(LogId, u64)> {
        *self
            .inner
            .pending_purge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The purge point openraft asked for and the log does not have on disk
    /// yet, held until a snapshot covers it.
    pub fn held_purge(&self) -> Option<u64> {
        self.pending_purge().map(|(upto, _)| upto.index)
    }

    fn purge_now(&self, upto: LogId) -> Result<(), StorageError> {
        self.inner
            .log
            .purge(upto)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Carries out a held purge once the floor covers it.
    fn settle(&self) -> Result<(), StorageError> {
        let Some((upto, _)) = self.pending_purge() else {
            return Ok(());
        };
        if !self.inner.floor.now().covers(upto.index) {
            return Ok(());
        }
        self.purge_now(upto)?;
        let mut pending = self
            .inner
            .pending_purge
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pending.is_some_and(|(p, _)| p <= upto) {
            *pending = None;
        }
        tracing::info!(upto = upto.index, "held log purge carried out");
        Ok(())
    }

    /// Before an append: a held purge past the end of the log (a snapshot
    /// installed ahead of it) must be on disk first, since the entries that
    /// follow begin after the purge point. Waits for the install to publish
    /// its snapshot.
    async fn settle_before_append(&self) -> Result<(), StorageError> {
        self.settle()?;
        let Some((upto, failed_before)) = self.pending_purge() else {
            return Ok(());
        };
        let end = self.inner.log.last_log_id().map(|l| l.index);
        if end.is_some_and(|end| end >= upto.index) {
            return Ok(());
        }
        self.inner
            .floor
            .covering(upto.index, failed_before)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.settle()
    }

    /// The entries of the range that are present, in index order.
    fn present_entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        // Entries a held purge covers are gone as far as openraft knows.
        let start = match self.pending_purge() {
            Some((upto, _)) => start.max(upto.index + 1),
            None => start,
        };
        self.inner
            .log
            .read(start, end)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// The entries of the range that are present (openraft's contract:
    /// missing entries, purged or never written, are skipped).
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.present_entries(range)
    }

    /// What replication sends: one contiguous run that begins exactly at
    /// `start`, or nothing when `start` is missing.
    ///
    /// openraft 0.9's replication sends what this returns as the entries
    /// right after `start - 1` without checking the first index. The default
    /// (all present entries) would return the entries after a purge when
    /// the range begins before the leader's purge point, and put a gap in a
    /// follower's log, which could then neither apply nor restart (the
    /// pattern of openraft issue #1795). An empty answer makes openraft send
    /// a heartbeat and, once it sees the purge, a snapshot.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.present_entries(start..end)?;
        let run = entries
            .iter()
            .enumerate()
            .take_while(|(offset, entry)| entry.log_id.index == start + *offset as u64)
            .count();
        entries.truncate(run);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        // openraft's view: a held purge counts as done.
        let last_purged_log_id = self
            .inner
            .log
            .last_purged()
            .max(self.pending_purge().map(|(upto, _)| upto));
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.inner.log.last_log_id().max(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // On disk before it is answered, or a restarted node could vote
        // twice in one term.
        self.inner
            .log
            .hard_state()
            .save_vote(vote)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self
            .inner
            .log
            .hard_state()
            .read_vote()
            .map_err(|e| StorageIOError::read_vote(&e))?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.settle()?;
        if let Some(c) = committed {
            self.inner.committed.store(c.index + 1, Ordering::Relaxed);
            self.inner.witness.committed(c.index);
        }
        // Not synced: it only lets a restarted node re-apply sooner.
        self.inner
            .log
            .hard_state()
            .save_committed(&committed)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.log.hard_state().read_committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.settle_before_append().await?;
        let epoch = self.inner.witness.epoch();
        let last = self
            .inner
            .log
            .append(entries)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // The fdatasync runs here, on openraft's core task, not on a thread
        // of its own: openraft 0.9 awaits each append's flush before it does
        // anything else (RaftCore::append_to_log), so there is never a second
        // append to share a sync with, and handing the sync to another thread
        // would only add two thread wake-ups to every write. Every append is
        // on disk before it is acknowledged, in order, and a truncation or
        // purge can only come after it.
        let synced = self.inner.log.sync_data();
        if let (Ok(()), Some(index)) = (&synced, last) {
            self.inner.witness.flushed(index, epoch);
        }
        callback.log_io_completed(synced);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Every earlier append was acknowledged before its `append`
        // returned, so no callback can report the entries removed here.
        self.settle()?;
        // First, so that the witness never counts entries that are gone.
        self.inner.witness.truncated(log_id.index);
        self.inner
            .log
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    /// Durable at once when the floor covers it; otherwise held (see
    /// `snapshot_floor`): openraft's view of the log moves on, the files
    /// keep the entries until a snapshot covering them is published.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let floor = self.inner.floor.now();
        if floor.covers(log_id.index) {
            self.purge_now(log_id)?;
            return self.settle();
        }
        let mut pending = self
            .inner
            .pending_purge
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pending.is_none_or(|(p, _)| p < log_id) {
            *pending = Some((log_id, floor.failed_installs));
        }
        tracing::info!(
            upto = log_id.index,
            covered = ?floor.covered,
            "log purge held until a published snapshot covers it"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    fn store_with(dir: &std::path::Path, indexes: impl IntoIterator<Item = u64>) -> LogStore {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (witness, _) = CommitWitness::open(&dir.join("w")).unwrap();
        let log = LogFile::open(&dir.join("log")).unwrap();
        for i in indexes {
            log.append([Entry {
                log_id: log_id(1, 1, i),
                payload: EntryPayload::Blank,
            }])
            .unwrap();
        }
        let writer = StateWriter::start(db.open_tree("state").unwrap(), 1).unwrap();
        // Purges covered: this module's tests are about reads.
        let (_raiser, floor) = super::super::snapshot_floor::new(Some(u64::MAX));
        LogStore::open(log, db, Arc::new(writer), Arc::new(witness), floor)
    }

    fn read(store: &mut LogStore, range: std::ops::Range<u64>) -> Vec<u64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.try_get_log_entries(range))
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    fn read_for_replication(store: &mut LogStore, start: u64, end: u64) -> Vec<u64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.limited_get_log_entries(start, end))
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    /// Replication's read that starts in the purged part answers nothing,
    /// not the entries after the purge: openraft would send those as if
    /// they followed the range's start, leaving a gap in a follower's log.
    /// The general read keeps openraft's contract and skips what is missing.
    #[test]
    fn replication_reads_are_one_run_from_the_range_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), 0..=10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.purge(log_id(1, 1, 5))).unwrap();
        assert_eq!(read_for_replication(&mut store, 3, 8), Vec::<u64>::new());
        assert_eq!(read_for_replication(&mut store, 6, 9), vec![6, 7, 8]);
        assert_eq!(read_for_replication(&mut store, 9, 20), vec![9, 10]);
        assert_eq!(read(&mut store, 3..8), vec![6, 7]);
    }
}
