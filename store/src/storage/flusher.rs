//! Group commit for the Raft log: appends are written to sled at once and
//! acknowledged from this thread after one flush covers them. Many appends
//! arriving while a flush runs share the next flush, so throughput grows with
//! load while no entry is ever acknowledged before it is on disk.

use std::io;
use std::sync::mpsc;
use std::thread;

use std::sync::Arc;

use openraft::storage::LogFlushed;

use super::witness::CommitWitness;
use crate::types::TypeConfig;

/// An append waiting for its flush: its callback, its last index and the
/// witness's truncation epoch when it was made.
type Job = (LogFlushed<TypeConfig>, u64, u64);

pub struct Flusher {
    /// None once dropping: closing the channel ends the thread.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flusher {
    pub fn start(db: sled::Db, witness: Arc<CommitWitness>) -> io::Result<Flusher> {
        let (jobs, pending) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("ipkeep-log-flush".into())
            .spawn(move || {
                // Ends when the log store (the only sender) is dropped.
                while let Ok(first) = pending.recv() {
                    let mut group = vec![first];
                    group.extend(pending.try_iter());
                    let outcome = db.flush().map(|_| ());
                    if outcome.is_ok() {
                        for (_, index, epoch) in &group {
                            witness.flushed(*index, *epoch);
                        }
                    }
                    for (done, _, _) in group {
                        // Callbacks fire in submission order, after the flush.
                        done.log_io_completed(
                            outcome
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| io::Error::other(e.to_string())),
                        );
                    }
                }
            })?;
        Ok(Flusher {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Acknowledges `done` once everything written so far (up to
    /// `last_index`, appended in the witness's `epoch`) is on disk.
    pub fn submit(&self, done: LogFlushed<TypeConfig>, last_index: u64, epoch: u64) {
        let sent = match &self.jobs {
            Some(jobs) => jobs
                .send((done, last_index, epoch))
                .map_err(|mpsc::SendError((done, _, _))| done),
            None => Err(done),
        };
        if let Err(done) = sent {
            done.log_io_completed(Err(io::Error::other("log flusher has stopped")));
        }
    }
}

impl Drop for Flusher {
    /// Waits for the last flush and for the thread to let go of the database,
    /// so that the data directory can be opened again as soon as the store
    /// is dropped.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
