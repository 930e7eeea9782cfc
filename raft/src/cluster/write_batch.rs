//! Group commit of writes on the leader: ADDs and DELs that arrive while
//! earlier ones are still committing share one Raft entry.
//!
//! openraft 0.9 takes client writes one at a time: each is an entry of its
//! own, with its own pass through the core, its own log append and its own
//! share of every replication round. Under load that per-entry cost, not
//! the disk or the network, is what bounds committed writes per second. So
//! at most [`IN_FLIGHT`] entries of batchable writes are committing at once;
//! writes that arrive meanwhile wait and go together, as one
//! `Command::Batch`, in the next entry. A write that finds a slot free goes
//! at once and alone, so a quiet node adds no latency. Nothing is skipped:
//! every entry is still appended, flushed and replicated before any of its
//! writes is answered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipkeep_api::ApiError;
use ipkeep_store::{Command, Reply};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::peer::wire::{Committed, ForwardError};

/// Entries of batched writes committing at once. One: while it commits,
/// the next gathers everything that arrives. openraft already pipelines the
/// entries it has, so more of them in flight only makes each carry fewer
/// writes, and fewer writes commit per second (the node-API rows of
/// `ipkeep-bench` with 64 clients show it).
pub const IN_FLIGHT: usize = 1;
/// Most writes in one entry: about 300 bytes each, so an entry stays well
/// under the size of one replication message.
pub const MAX_BATCH: usize = 256;
/// Most encoded bytes of the writes of one entry. Writes are bounded (see
/// `ipkeep_api::fields`; the largest ADD is under 6 KiB), but their count
/// alone does not bound an entry's size, and an entry the log refuses
/// stops the leader. A write that would take an entry past it goes first
/// in the next one.
pub const MAX_BATCH_BYTES: u64 = 1 << 20;

/// Counts what the batcher proposed, for the node's metrics.
#[derive(Clone, Default)]
pub struct BatchCounters {
    /// Raft entries proposed.
    pub entries: Counter,
    /// Writes those entries carried.
    pub writes: Counter,
}

struct Waiting {
    command: Command,
    /// The command's encoded size.
    bytes: u64,
    answer: oneshot::Sender<Result<Committed, ForwardError>>,
}

/// The queue of writes waiting for an entry. Dropping it ends the task
/// that forms the entries.
pub struct WriteBatcher {
    queue: mpsc::UnboundedSender<Waiting>,
    /// The longest a write waits, from the queue to its answer: as long as
    /// a write sent alone may take to commit.
    write_timeout: Duration,
}

fn stopped() -> ForwardError {
    ForwardError::Api(ApiError::try_again("this node is shutting down"))
}

impl WriteBatcher {
    /// Starts forming entries on the current tokio runtime; `commit` puts
    /// one command (a single write or a `Command::Batch`) through Raft.
    pub fn start<C, F>(commit: C, counters: BatchCounters, write_timeout: Duration) -> WriteBatcher
    where
        C: Fn(Command) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Committed, ForwardError>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(form_entries(waiting, Arc::new(commit), counters));
        WriteBatcher {
            queue,
            write_timeout,
        }
    }

    /// Commits `command` in the next entry and returns its own reply.
    /// Waiting for a slot counts against the write timeout: a caller is
    /// told to try again no later than if its write had gone alone. (Given
    /// up on, a write queued or committing still commits, as one sent
    /// alone would.)
    pub async fn commit(&self, command: Command) -> Result<Committed, ForwardError> {
        match tokio::time::timeout(self.write_timeout, self.submit(command)).await {
            Err(_) => Err(ForwardError::Api(ApiError::try_again(format!(
                "the leader could not commit within {:?}: no quorum, or too many writes waiting",
                self.write_timeout
            )))),
            Ok(answer) => answer.map_err(|_| stopped())?,
        }
    }

    /// Queues `command` now (writes join entries in the order they were
    /// queued); the receiver gets its reply.
    fn submit(&self, command: Command) -> oneshot::Receiver<Result<Committed, ForwardError>> {
        let (answer, wait) = oneshot::channel();
        // Measured here, on the caller's task, not on the one that forms
        // the entries for everyone. A command that cannot be encoded fails
        // when it is committed.
        let bytes = ipkeep_api::codec::encoded_len(&command).unwrap_or(0);
        // If the task has stopped, `answer` is dropped with the message and
        // the receiver reports that.
        let _ = self.queue.send(Waiting {
            command,
            bytes,
            answer,
        });
        wait
    }
}

async fn form_entries<C, F>(
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    commit: Arc<C>,
    counters: BatchCounters,
) where
    C: Fn(Command) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Committed, ForwardError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A write that did not fit the last entry: it begins the next.
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Whatever arrives while every slot is taken joins this entry.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) if bytes + next.bytes > MAX_BATCH_BYTES => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        counters.entries.inc();
        counters.writes.inc_by(batch.len() as u64);
        let commit = commit.clone();
        tokio::spawn(async move {
            commit_batch(batch, commit.as_ref()).await;
            drop(slot);
        });
    }
}

async fn commit_batch<C, F>(mut batch: Vec<Waiting>, commit: &C)
where
    C: Fn(Command) -> F,
    F: Future<Output = Result<Committed, ForwardError>>,
{
    if batch.len() == 1 {
        let Waiting {
            command, answer, ..
        } = batch.remove(0);
        // The waiter may have given up; the write stands either way.
        let _ = answer.send(commit(command).await);
        return;
    }
    let (commands, answers): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|w| (w.command, w.answer)).unzip();
    let count = commands.len();
    match commit(Command::Batch(commands)).await {
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
        Ok(Committed {
            reply: Reply::Batch(replies),
            index,
        }) if replies.len() == count => {
            for (answer, reply) in answers.into_iter().zip(replies) {
                let _ = answer.send(Ok(Committed { reply, index }));
            }
        }
        Ok(Committed { reply, index }) => {
            // A batch is always answered by a batch of the same length;
            // anything else is a bug, and must not be taken for success.
            tracing::error!(
                ?reply,
                index,
                count,
                "a batch of writes got an unexpected reply"
            );
            for answer in answers {
                let _ = answer.send(Err(ForwardError::Api(ApiError::internal(format!(
                    "entry {index} holding {count} writes was answered with {reply:?}"
                )))));
            }
        }
    }
}

#[cfg(test)]
mod tests;
