//! Writes the state machine's changes to sled behind the applies, on a
//! thread of its own.
//!
//! An apply decides in memory and hands the records it changed (with the
//! last-applied log id) to this writer; the sled batch is written after
//! the apply has answered. Written inside the apply, the batch would add to
//! every write's time on the leader, and as much again on every follower,
//! where it competes for the CPU with the next write (see the one-client
//! node-API rows of `ipkeep-bench`).
//!
//! Nothing is lost by answering first: an entry is answered only once it is
//! committed in the Raft log, which is fsynced, and sled's own writes are
//! not synced with each apply either (sled flushes every 500 ms). What a
//! crash takes from the state is re-applied from the log at the next start.
//! What the tree holds is always a prefix of the applied entries: the
//! changes of several applies are merged in order into one sled batch, never
//! split, and each unit carries its own last-applied id, so the batch lands
//! whole with the id of the last apply it covers.
//!
//! Whoever reads or replaces the tree (a snapshot build, a snapshot install,
//! a clean shutdown) first calls [`StateWriter::drain`]. A snapshot install
//! does not rewrite the tree itself: it queues [`StateWriter::refill`], which
//! lands in order with the writes around it while the node already serves
//! the installed state.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::records::Change;

/// Jobs the writer takes in one pass at most, so that a drain is answered
/// even while applies keep coming.
const PASS: usize = 1024;

// The queue itself has no bound, on purpose: a waiting apply would bound
// nothing. openraft 0.9's core reads every committed entry from the log and
// sends it to the state machine's task over a channel without a bound, so
// the backlog would only move there, as whole entries (larger than the
// changes they make), and a node would hold more, not less (the rejoin's
// `peak MiB` of `ipkeep-bench --scale` shows it). The backlog is what the
// cluster commits while the tree is rewritten after an install (seconds);
// in normal running the writer keeps up and the queue holds a few units.

/// Changes merged into one sled batch at most (a unit handed over is never
/// split, so one can exceed it; an apply of many entries hands them over in
/// units of about this size, cut between entries). sled 0.34's memory grows with
/// the size of its batches far more than with its cache (see the
/// `sled_batches` bench).
pub const MAX_MERGED: usize = 512;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StateWriteError {
    #[error("writing the state to the database failed: {0}")]
    Failed(String),
    #[error("the state writer has stopped")]
    Stopped,
}

enum Job {
    Write(Vec<Change>),
    /// Rewrite the whole tree from a snapshot file (after an install).
    Refill(PathBuf),
    /// Answered once every write before it is done.
    Drained(mpsc::Sender<()>),
}

/// Where merged changes go: the state tree, or a test's model of it.
pub trait Sink: Send + 'static {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String>;
    /// Replaces everything with the records of the snapshot file at
    /// `snapshot` (installed, and marked so in the tree, before).
    fn refill(&mut self, snapshot: &Path) -> Result<(), String>;
}

impl Sink for sled::Tree {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for change in changes {
            match change {
                Change::Put(key, value) => batch.insert(key, value),
                Change::Delete(key) => batch.remove(key),
            }
        }
        self.apply_batch(batch).map_err(|e| e.to_string())
    }

    fn refill(&mut self, snapshot: &Path) -> Result<(), String> {
        let started = std::time::Instant::now();
        super::state_machine::refill_tree(self, snapshot).map_err(|e| e.to_string())?;
        tracing::info!(
            snapshot = %snapshot.display(),
            millis = started.elapsed().as_millis() as u64,
            "state tree rewritten from the installed snapshot"
        );
        Ok(())
    }
}

pub struct StateWriter {
    /// None once dropping: closing the channel ends the thread.
    jobs: Option<Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    /// The first failed write. Sticky: nothing after it is written, so the
    /// tree stays a prefix of the applied entries.
    failure: Arc<Mutex<Option<String>>>,
}

impl StateWriter {
    pub fn start(sink: impl Sink, max_merged: usize) -> std::io::Result<StateWriter> {
        let (jobs, pending) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let seen = failure.clone();
        let thread = thread::Builder::new()
            .name("ipkeep-state-write".into())
            .spawn(move || run(sink, pending, max_merged, &seen))?;
        Ok(StateWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            failure,
        })
    }

    fn failed(&self) -> Result<(), StateWriteError> {
        match &*self.failure.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(reason) => Err(StateWriteError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn send(&self, job: Job) -> Result<(), StateWriteError> {
        self.jobs
            .as_ref()
            .ok_or(StateWriteError::Stopped)?
            .send(job)
            .map_err(|_| StateWriteError::Stopped)
    }

    /// Queues one unit of changes, ending with the last-applied id they
    /// bring the tree to (never waits: see the note on the queue below
    /// `PASS`). Fails
    /// once an earlier write has failed: the caller must stop applying.
    pub fn submit(&self, changes: Vec<Change>) -> Result<(), StateWriteError> {
        self.failed()?;
        self.send(Job::Write(changes))
    }

    /// Queues a rewrite of the whole tree from the snapshot file at
    /// `snapshot`; changes submitted after it land after it.
    pub fn refill(&self, snapshot: PathBuf) -> Result<(), StateWriteError> {
        self.failed()?;
        self.send(Job::Refill(snapshot))
    }

    /// Returns once everything submitted before is written to the tree
    /// (not flushed: that is sled's `flush`).
    pub fn drain(&self) -> Result<(), StateWriteError> {
        let (done, wait) = mpsc::channel();
        self.send(Job::Drained(done))?;
        wait.recv().map_err(|_| StateWriteError::Stopped)?;
        self.failed()
    }
}

fn run(
    mut sink: impl Sink,
    pending: Receiver<Job>,
    max_merged: usize,
    failure: &Mutex<Option<String>>,
) {
    // Only this thread sets `failure`, so it can be read here unlocked by
    // anyone else; the lock is never held across a write, or an apply
    // submitting meanwhile would wait for the disk after all.
    let mut failed = false;
    let mut write = |job: Job| {
        let outcome = match job {
            _ if failed => return,
            Job::Write(changes) if changes.is_empty() => return,
            Job::Write(changes) => sink.write(changes),
            Job::Refill(snapshot) => sink.refill(&snapshot),
            Job::Drained(_) => return,
        };
        if let Err(reason) = outcome {
            tracing::error!(error = %reason, "writing the state to the database failed");
            *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            failed = true;
        }
    };
    // Ends when the store (the only sender) is dropped, after the jobs
    // queued before.
    while let Ok(first) = pending.recv() {
        let mut merged = Vec::new();
        let mut drained = Vec::new();
        for job in std::iter::once(first).chain(pending.try_iter().take(PASS)) {
            match job {
                Job::Write(changes) => {
                    if !merged.is_empty() && merged.len() + changes.len() > max_merged {
                        write(Job::Write(std::mem::take(&mut merged)));
                    }
                    merged.extend(changes);
                }
                refill @ Job::Refill(_) => {
                    // In order: what came before it, then it, then the rest.
                    write(Job::Write(std::mem::take(&mut merged)));
                    write(refill);
                }
                Job::Drained(done) => drained.push(done),
            }
        }
        write(Job::Write(merged));
        for done in drained {
            let _ = done.send(());
        }
    }
}

impl Drop for StateWriter {
    /// Writes what is queued and waits for the thread to let go of the
    /// tree, so that the data directory can be opened again once the store
    /// is dropped.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
