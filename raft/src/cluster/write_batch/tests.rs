use std::sync::atomic::{AtomicU64, Ordering};

use ipkeep_api::model::AttachmentKey;
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

/// A write timeout no test comes near.
const LONG: Duration = Duration::from_secs(60);

/// How the stand-in for Raft answers a batch.
#[derive(Clone, Copy)]
enum Answer {
    /// One reply per write, naming the write's container.
    Echo,
    /// The leader changed under the batch.
    NotLeader,
    /// A reply that is not a batch: must never pass for success.
    Malformed,
}

fn del(container: &str) -> Command {
    Command::Del {
        key: AttachmentKey {
            network: "net".into(),
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        at_ms: 0,
        issued_us: 0,
    }
}

/// The reply the stand-in gives a single write: its container's name.
fn echo(command: &Command) -> Reply {
    match command {
        Command::Del { key, .. } => Reply::Expired(vec![(key.container_id.clone(), String::new())]),
        other => panic!("unexpected command {other:?}"),
    }
}

fn container_of(committed: &Committed) -> String {
    match &committed.reply {
        Reply::Expired(names) => names[0].0.clone(),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// A batcher over a stand-in for Raft that reports each command it is given
/// and holds it until the test opens the gate once for it.
fn batcher(answer: Answer) -> (WriteBatcher, UnboundedReceiver<Command>, Arc<Semaphore>) {
    let (seen, proposed) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let index = Arc::new(AtomicU64::new(0));
    let held = gate.clone();
    let commit = move |command: Command| {
        let seen = seen.clone();
        let gate = held.clone();
        let index = index.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            seen.send(command.clone()).expect("test is listening");
            gate.acquire().await.expect("gate stays open").forget();
            let reply = match (&command, answer) {
                (Command::Batch(_), Answer::NotLeader) => {
                    return Err(ForwardError::NotLeader { leader: Some(2) })
                }
                (Command::Batch(_), Answer::Malformed) => Reply::Done,
                (Command::Batch(commands), Answer::Echo) => {
                    Reply::Batch(commands.iter().map(echo).collect())
                }
                (single, _) => echo(single),
            };
            Ok(Committed { reply, index })
        }
    };
    (
        WriteBatcher::start(commit, BatchCounters::default(), LONG),
        proposed,
        gate,
    )
}

/// Takes every slot with a lone write each, held at the gate.
async fn fill_slots(
    batcher: &WriteBatcher,
    proposed: &mut UnboundedReceiver<Command>,
) -> Vec<oneshot::Receiver<Result<Committed, ForwardError>>> {
    let mut held = Vec::new();
    for n in 0..IN_FLIGHT {
        let name = format!("alone-{n}");
        held.push(batcher.submit(del(&name)));
        assert_eq!(
            proposed.recv().await,
            Some(del(&name)),
            "a lone write goes alone"
        );
    }
    held
}

#[tokio::test]
async fn writes_that_wait_for_a_slot_share_the_next_entry_in_order() {
    let (batcher, mut proposed, gate) = batcher(Answer::Echo);
    let alone = fill_slots(&batcher, &mut proposed).await;
    let names: Vec<String> = (0..10).map(|n| format!("queued-{n}")).collect();
    let queued: Vec<_> = names.iter().map(|n| batcher.submit(del(n))).collect();

    gate.add_permits(1);
    let batch = proposed.recv().await.expect("the next entry");
    assert_eq!(
        batch,
        Command::Batch(names.iter().map(|n| del(n)).collect())
    );

    gate.add_permits(IN_FLIGHT);
    for (n, wait) in alone.into_iter().enumerate() {
        let committed = wait.await.expect("answered").expect("committed");
        assert_eq!(container_of(&committed), format!("alone-{n}"));
    }
    let mut indexes = Vec::new();
    for (name, wait) in names.iter().zip(queued) {
        let committed = wait.await.expect("answered").expect("committed");
        assert_eq!(
            &container_of(&committed),
            name,
            "each write gets its own reply"
        );
        indexes.push(committed.index);
    }
    indexes.dedup();
    assert_eq!(indexes.len(), 1, "one entry: {indexes:?}");
}

#[tokio::test]
async fn an_entry_holds_at_most_max_batch_writes() {
    let (batcher, mut proposed, gate) = batcher(Answer::Echo);
    let _alone = fill_slots(&batcher, &mut proposed).await;
    let queued: Vec<_> = (0..MAX_BATCH + 5)
        .map(|n| batcher.submit(del(&format!("q{n}"))))
        .collect();

    gate.add_permits(2);
    let sizes = [
        proposed.recv().await.expect("entry"),
        proposed.recv().await.expect("entry"),
    ]
    .map(|c| match c {
        Command::Batch(commands) => commands.len(),
        _ => 1,
    });
    assert_eq!(sizes, [MAX_BATCH, 5]);
    gate.add_permits(2 + IN_FLIGHT);
    for wait in queued {
        wait.await.expect("answered").expect("committed");
    }
}

/// Writes of a few KiB each (the largest an ADD can be): an entry holds
/// no more of them than fit in MAX_BATCH_BYTES, and the rest follow in the
/// next entries, in order.
#[tokio::test]
async fn an_entry_holds_at_most_max_batch_bytes() {
    let (batcher, mut proposed, gate) = batcher(Answer::Echo);
    let _alone = fill_slots(&batcher, &mut proposed).await;
    let big = |n: usize| del(&format!("q{n}-{}", "x".repeat(5000)));
    let each = ipkeep_api::codec::encoded_len(&big(0)).unwrap();
    let per_entry = (MAX_BATCH_BYTES / each) as usize;
    assert!(
        per_entry < MAX_BATCH,
        "the test needs the bytes to bind first"
    );
    let total = per_entry * 2 + 3;
    let queued: Vec<_> = (0..total).map(|n| batcher.submit(big(n))).collect();

    gate.add_permits(3);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let entry = proposed.recv().await.expect("entry");
        let bytes = ipkeep_api::codec::encoded_len(&entry).unwrap();
        assert!(bytes <= MAX_BATCH_BYTES + 64, "an entry of {bytes} bytes");
        match entry {
            Command::Batch(commands) => seen.extend(commands),
            single => seen.push(single),
        }
    }
    assert_eq!(seen, (0..total).map(big).collect::<Vec<_>>());
    gate.add_permits(3 + IN_FLIGHT);
    for wait in queued {
        wait.await.expect("answered").expect("committed");
    }
}

/// The answers to three writes queued behind a held lone write, committed
/// together as one batch that `answer` answers.
async fn three_batched_answers(answer: Answer) -> Vec<Result<Committed, ForwardError>> {
    let (batcher, mut proposed, gate) = batcher(answer);
    let _alone = fill_slots(&batcher, &mut proposed).await;
    let queued: Vec<_> = (0..3)
        .map(|n| batcher.submit(del(&format!("q{n}"))))
        .collect();
    gate.add_permits(1 + IN_FLIGHT);
    let mut answers = Vec::new();
    for wait in queued {
        answers.push(wait.await.expect("answered"));
    }
    answers
}

#[tokio::test]
async fn a_batch_that_fails_fails_every_write_in_it() {
    for answer in three_batched_answers(Answer::NotLeader).await {
        match answer {
            Err(ForwardError::NotLeader { leader: Some(2) }) => {}
            other => panic!("expected the leader's refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_batch_answered_out_of_shape_is_an_error_not_a_success() {
    for answer in three_batched_answers(Answer::Malformed).await {
        match answer {
            Err(ForwardError::Api(e)) => assert!(e.to_string().contains("holding 3 writes"), "{e}"),
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stopped_batcher_says_so() {
    let (batcher, _proposed, _gate) = batcher(Answer::Echo);
    let orphan = WriteBatcher {
        queue: mpsc::unbounded_channel().0,
        write_timeout: LONG,
    };
    drop(batcher);
    match orphan.commit(del("x")).await {
        Err(ForwardError::Api(e)) => assert!(e.to_string().contains("shutting down"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_waiting_behind_a_stuck_entry_is_told_to_try_again_in_time() {
    let (seen, mut proposed) = mpsc::unbounded_channel();
    let commit = move |command: Command| {
        let seen = seen.clone();
        async move {
            seen.send(command).expect("test is listening");
            // No quorum: the entry never commits.
            std::future::pending::<Result<Committed, ForwardError>>().await
        }
    };
    let timeout = Duration::from_millis(100);
    let batcher = Arc::new(WriteBatcher::start(
        commit,
        BatchCounters::default(),
        timeout,
    ));
    let stuck = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.commit(del("first")).await })
    };
    assert_eq!(proposed.recv().await, Some(del("first")));
    let started = std::time::Instant::now();
    match batcher.commit(del("second")).await {
        Err(ForwardError::Api(e)) => assert!(e.to_string().contains("could not commit"), "{e}"),
        other => panic!("expected try again, got {other:?}"),
    }
    assert!(started.elapsed() < timeout * 10, "{:?}", started.elapsed());
    assert!(matches!(stuck.await, Ok(Err(ForwardError::Api(_)))));
}
