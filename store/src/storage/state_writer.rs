//! Writes the state machine's changes to sled behind the applies, on a
//! thread of its own.
//!
//! An apply decides in memory and hands the records it changed (with the
//! last-applied log id) to this writer; the sled batch is written after
//! the apply has answered. Measured on three voters, one write at a time:
//! the sled batch of one ADD took 0.3 ms of a 1.8 ms write on the leader,
//! and as long again on every follower, where it competed for the CPU with
//! the next write.
//!
//! Nothing is lost by answering first: an entry is answered only once it is
//! committed in the Raft log, which is fsynced, and sled's own writes were
//! never synced with each apply either (sled flushes every 500 ms). What a
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
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;

use crate::records::Change;

/// Jobs the writer takes in one pass at most, so that a drain is answered
/// even while applies keep coming.
const PASS: usize = 1024;

/// Changes queued for the writer before the next apply has to wait: bounds
/// the memory the queue holds (about 200 bytes a change, so some 6 MiB)
/// when the disk is slower than the applies. It used to be 1,024 units,
/// and a unit can be 512 changes: a node that installed a million
/// allocations and replayed 300,000 more from the log while its tree was
/// rewritten held about 100 MiB of them. In normal running the writer keeps
/// up and the queue holds a few units.
pub const MAX_QUEUED: usize = 32 * 1024;

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
    queue: Arc<Queue>,
    max_queued: usize,
}

/// The changes submitted and not yet written (or skipped after a failure).
#[derive(Default)]
struct Queue {
    state: Mutex<Queued>,
    shrunk: Condvar,
}

#[derive(Default)]
struct Queued {
    changes: usize,
    /// The writer thread has ended (or panicked): nothing will shrink the
    /// queue again, so nobody may wait for it.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, changes: usize) {
        if changes == 0 {
            return;
        }
        let mut queued = self.lock();
        queued.changes = queued.changes.saturating_sub(changes);
        self.shrunk.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.shrunk.notify_all();
    }
}

/// Closes the queue however the writer thread ends.
struct CloseOnExit(Arc<Queue>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A unit fits if the queue is empty (one larger than the whole budget
/// still goes, alone) or if it stays within the budget.
fn fits(queued: &Queued, changes: usize, max_queued: usize) -> bool {
    queued.closed || queued.changes == 0 || queued.changes + changes <= max_queued
}

impl StateWriter {
    pub fn start(sink: impl Sink, max_merged: usize) -> std::io::Result<StateWriter> {
        let (jobs, pending) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let queue = Arc::new(Queue::default());
        let seen = failure.clone();
        let shrinks = queue.clone();
        let thread = thread::Builder::new()
            .name("ipkeep-state-write".into())
            .spawn(move || {
                let _closes = CloseOnExit(shrinks.clone());
                run(sink, pending, max_merged, &seen, &shrinks)
            })?;
        Ok(StateWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            failure,
            queue,
            max_queued: MAX_QUEUED,
        })
    }

    /// The same writer with another budget of queued changes (tests).
    #[cfg(test)]
    pub fn with_max_queued(mut self, max_queued: usize) -> StateWriter {
        self.max_queued = max_queued;
        self
    }

    /// Whether a unit of `changes` changes would be queued at once, without
    /// waiting for the writer. Only the applies submit, one at a time, so
    /// the answer holds until the next submit (the writer only makes room).
    pub fn has_room(&self, changes: usize) -> bool {
        fits(&self.queue.lock(), changes, self.max_queued)
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
    /// bring the tree to (waits while the queue holds more than its budget
    /// of changes). Fails once an earlier write has failed: the caller must
    /// stop applying.
    pub fn submit(&self, changes: Vec<Change>) -> Result<(), StateWriteError> {
        self.failed()?;
        let count = changes.len();
        {
            let mut queued = self.queue.lock();
            while !fits(&queued, count, self.max_queued) {
                queued = self
                    .queue
                    .shrunk
                    .wait(queued)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queued.closed {
                return Err(StateWriteError::Stopped);
            }
            queued.changes += count;
        }
        self.send(Job::Write(changes)).inspect_err(|_| {
            self.queue.release(count);
        })
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
    queue: &Queue,
) {
    // Only this thread sets `failure`, so it can be read here unlocked by
    // anyone else; the lock is never held across a write, or an apply
    // submitting meanwhile would wait for the disk after all.
    let mut failed = false;
    let mut write = |job: Job| {
        let written = match &job {
            Job::Write(changes) => changes.len(),
            _ => 0,
        };
        let outcome = match job {
            _ if failed => Ok(()),
            Job::Write(changes) if changes.is_empty() => Ok(()),
            Job::Write(changes) => sink.write(changes),
            Job::Refill(snapshot) => sink.refill(&snapshot),
            Job::Drained(_) => Ok(()),
        };
        // Written or skipped after a failure, these changes no longer wait.
        queue.release(written);
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
