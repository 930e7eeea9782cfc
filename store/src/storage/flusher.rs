//! Group commit for the Raft log: appends are written to the log file at
//! once and acknowledged from this thread after one fdatasync covers them. Many appends
//! arriving while a flush runs share the next flush, so throughput grows with
//! load while no entry is ever acknowledged before it is on disk.
//!
//! openraft requires the log's writes to be serialized: a later write (a
//! truncation, a purge, a vote) must not take effect before an earlier
//! append has completed. Otherwise an append's "flushed" callback can fire
//! after a truncation removed its entries, and this node would tell a
//! leader it holds entries it no longer has, letting that leader count it
//! towards a commit (seen in a chaos run under CPU load: acknowledged
//! writes lost and one replica's state diverging). So those writes first
//! wait at a [`Flusher::barrier`] until every earlier append is flushed and
//! acknowledged.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use openraft::storage::LogFlushed;
use tokio::sync::oneshot;

use super::log_file::LogFile;
use super::witness::CommitWitness;
use crate::types::TypeConfig;

enum Job {
    /// An append waiting for its flush: its callback, its last index (none
    /// when it was empty) and the witness's truncation epoch when it was
    /// made.
    Append(LogFlushed<TypeConfig>, Option<u64>, u64),
    /// Answered once every job before it is done.
    Barrier(oneshot::Sender<()>),
}

pub struct Flusher {
    /// None once dropping: closing the channel ends the thread.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flusher {
    pub fn start(log: Arc<LogFile>, witness: Arc<CommitWitness>) -> io::Result<Flusher> {
        let (jobs, pending) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("ipkeep-log-flush".into())
            .spawn(move || {
                // Ends when the log store (the only sender) is dropped.
                while let Ok(first) = pending.recv() {
                    let mut group = vec![first];
                    group.extend(pending.try_iter());
                    let has_appends = group.iter().any(|j| matches!(j, Job::Append(..)));
                    let outcome = if has_appends { log.sync_data() } else { Ok(()) };
                    // In submission order: a barrier is answered only after
                    // the appends before it are acknowledged.
                    for job in group {
                        match job {
                            Job::Append(done, index, epoch) => {
                                if let (Ok(()), Some(index)) = (&outcome, index) {
                                    witness.flushed(index, epoch);
                                }
                                done.log_io_completed(
                                    outcome
                                        .as_ref()
                                        .map(|_| ())
                                        .map_err(|e| io::Error::new(e.kind(), e.to_string())),
                                );
                            }
                            Job::Barrier(reached) => {
                                let _ = reached.send(());
                            }
                        }
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
    pub fn submit(&self, done: LogFlushed<TypeConfig>, last_index: Option<u64>, epoch: u64) {
        let sent = match &self.jobs {
            Some(jobs) => jobs
                .send(Job::Append(done, last_index, epoch))
                .map_err(|mpsc::SendError(job)| job),
            None => return,
        };
        if let Err(Job::Append(done, ..)) = sent {
            done.log_io_completed(Err(io::Error::other("log flusher has stopped")));
        }
    }

    /// Returns once every append submitted before it is flushed and
    /// acknowledged.
    pub async fn barrier(&self) -> io::Result<()> {
        let (reached, wait) = oneshot::channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("log flusher has stopped"))?;
        jobs.send(Job::Barrier(reached))
            .map_err(|_| io::Error::other("log flusher has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("log flusher has stopped"))
    }
}

impl Drop for Flusher {
    /// Waits for the last flush and for the thread to let go of the log,
    /// so that the data directory can be opened again as soon as the store
    /// is dropped.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
