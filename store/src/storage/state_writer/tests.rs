use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// A model of the tree that records each batch it is given.
#[derive(Clone, Default)]
struct Recorded {
    batches: Arc<Mutex<Vec<Vec<Change>>>>,
}

impl Recorded {
    fn batches(&self) -> Vec<Vec<Change>> {
        self.batches.lock().unwrap().clone()
    }
}

impl Sink for Recorded {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String> {
        self.batches.lock().unwrap().push(changes);
        Ok(())
    }

    /// Recorded as a batch of its own holding one `refill` record.
    fn refill(&mut self, snapshot: &Path) -> Result<(), String> {
        let path = snapshot.display().to_string().into_bytes();
        self.write(vec![Change::Put(b"refill".to_vec(), path)])
    }
}

fn put(key: &str, value: u64) -> Change {
    Change::Put(key.as_bytes().to_vec(), value.to_be_bytes().to_vec())
}

fn apply_all<'a>(changes: impl IntoIterator<Item = &'a Change>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut tree = BTreeMap::new();
    for change in changes {
        match change {
            Change::Put(k, v) => {
                tree.insert(k.clone(), v.clone());
            }
            Change::Delete(k) => {
                tree.remove(k);
            }
        }
    }
    tree
}

/// One apply: a few records and its last-applied id, like the store's.
fn unit(i: u64) -> Vec<Change> {
    let mut changes = vec![put(&format!("k{}", i % 7), i)];
    if i.is_multiple_of(5) {
        changes.push(Change::Delete(format!("k{}", (i + 3) % 7).into_bytes()));
    }
    if i.is_multiple_of(97) {
        // One apply bigger than the cap (a batch entry of many ADDs).
        changes.extend((0..40).map(|j| put(&format!("big{j}"), i)));
    }
    changes.push(put("applied", i));
    changes
}

#[test]
fn merged_batches_leave_what_each_apply_in_turn_would_and_never_split_one() {
    let sink = Recorded::default();
    let writer = StateWriter::start(sink.clone(), 16).unwrap();
    let units: Vec<Vec<Change>> = (0..2000).map(unit).collect();
    for u in &units {
        writer.submit(u.clone()).unwrap();
    }
    writer.drain().unwrap();

    let batches = sink.batches();
    assert_eq!(
        apply_all(batches.iter().flatten()),
        apply_all(units.iter().flatten()),
        "the tree differs from applying each unit in order"
    );
    // Each batch is a run of whole units, in order: the concatenation is the
    // same sequence, and every batch ends where a unit ends.
    let flat: Vec<&Change> = units.iter().flatten().collect();
    assert_eq!(batches.iter().flatten().collect::<Vec<_>>(), flat);
    let mut unit_ends = std::collections::BTreeSet::new();
    let mut at = 0;
    for u in &units {
        at += u.len();
        unit_ends.insert(at);
    }
    let mut start = 0;
    for b in &batches {
        let end = start + b.len();
        assert!(unit_ends.contains(&end), "a batch ends inside an apply");
        let applies = unit_ends.range(start + 1..=end).count();
        assert!(
            b.len() <= 16 || applies == 1,
            "a batch of {} changes, over the cap of 16, holds {applies} applies",
            b.len()
        );
        start = end;
    }
    assert!(
        batches.len() < units.len(),
        "{} batches for {} applies: nothing was merged",
        batches.len(),
        units.len()
    );
}

/// A sink that writes only when the test lets it.
struct Gated {
    inner: Recorded,
    gate: mpsc::Receiver<()>,
}

impl Sink for Gated {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String> {
        self.gate.recv().map_err(|_| "gate closed".to_string())?;
        self.inner.write(changes)
    }

    fn refill(&mut self, snapshot: &Path) -> Result<(), String> {
        self.gate.recv().map_err(|_| "gate closed".to_string())?;
        self.inner.refill(snapshot)
    }
}

#[test]
fn a_drain_returns_only_once_the_writes_before_it_are_in_the_tree() {
    let recorded = Recorded::default();
    let (open, gate) = mpsc::channel();
    let writer = Arc::new(
        StateWriter::start(
            Gated {
                inner: recorded.clone(),
                gate,
            },
            MAX_MERGED,
        )
        .unwrap(),
    );
    writer.submit(unit(1)).unwrap();
    writer.submit(unit(2)).unwrap();
    let (drained_tx, drained) = mpsc::channel();
    let drainer = {
        let writer = writer.clone();
        thread::spawn(move || {
            let outcome = writer.drain();
            drained_tx.send(()).unwrap();
            outcome
        })
    };
    // The sink is held shut: the drain cannot have returned, whatever the
    // timing, and nothing is in the tree yet.
    assert!(drained.try_recv().is_err());
    assert!(recorded.batches().is_empty());
    // Let every write through (one per merged batch; at most two here).
    open.send(()).unwrap();
    open.send(()).unwrap();
    drainer.join().unwrap().unwrap();
    assert_eq!(
        apply_all(recorded.batches().iter().flatten()),
        apply_all(unit(1).iter().chain(&unit(2)))
    );
}

/// Fails every write that holds the key `bad`.
#[derive(Clone, Default)]
struct FailsOnBad(Recorded);

impl Sink for FailsOnBad {
    fn write(&mut self, changes: Vec<Change>) -> Result<(), String> {
        if changes
            .iter()
            .any(|c| matches!(c, Change::Put(k, _) if k == b"bad"))
        {
            return Err("disk on fire".into());
        }
        self.0.write(changes)
    }

    fn refill(&mut self, snapshot: &Path) -> Result<(), String> {
        self.0.refill(snapshot)
    }
}

#[test]
fn after_a_failed_write_nothing_more_is_written_and_the_next_caller_is_told() {
    let sink = FailsOnBad::default();
    let writer = StateWriter::start(sink.clone(), 1).unwrap();
    writer.submit(vec![put("a", 1)]).unwrap();
    writer.drain().unwrap();
    writer.submit(vec![put("bad", 2)]).unwrap();
    // Refused already if the failed write came first; queued otherwise.
    let _ = writer.submit(vec![put("c", 3)]);
    let err = writer.drain().unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let err = writer.submit(vec![put("d", 4)]).unwrap_err();
    assert!(matches!(err, StateWriteError::Failed(_)), "{err}");
    drop(writer);
    // Only what came before the failure: the tree stays a prefix.
    assert_eq!(
        apply_all(sink.0.batches().iter().flatten()),
        apply_all(&[put("a", 1)])
    );
}

#[test]
fn dropping_the_writer_writes_what_is_queued_first() {
    let sink = Recorded::default();
    let writer = StateWriter::start(sink.clone(), MAX_MERGED).unwrap();
    let units: Vec<Vec<Change>> = (0..300).map(unit).collect();
    for u in &units {
        writer.submit(u.clone()).unwrap();
    }
    drop(writer);
    assert_eq!(
        apply_all(sink.batches().iter().flatten()),
        apply_all(units.iter().flatten())
    );
}

#[test]
fn a_refill_lands_after_the_writes_before_it_and_before_those_after_it() {
    let recorded = Recorded::default();
    let (open, gate) = mpsc::channel();
    let writer = StateWriter::start(
        Gated {
            inner: recorded.clone(),
            gate,
        },
        4,
    )
    .unwrap();
    // Queued while the sink is held, so that one pass of the writer sees
    // them all and could merge across the refill if it were careless.
    writer.submit(vec![put("before", 1)]).unwrap();
    writer.refill(PathBuf::from("/snap")).unwrap();
    writer.submit(vec![put("after", 2)]).unwrap();
    for _ in 0..3 {
        open.send(()).unwrap();
    }
    writer.drain().unwrap();
    let keys: Vec<Vec<Vec<u8>>> = recorded
        .batches()
        .iter()
        .map(|b| {
            b.iter()
                .map(|c| match c {
                    Change::Put(k, _) | Change::Delete(k) => k.clone(),
                })
                .collect()
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            vec![b"before".to_vec()],
            vec![b"refill".to_vec()],
            vec![b"after".to_vec()]
        ]
    );
}

#[test]
fn submitting_never_waits_for_the_writer_however_far_behind_it_is() {
    let recorded = Recorded::default();
    // A rendezvous: the opener below waits for each write, it does not spin.
    let (open, gate) = mpsc::sync_channel(0);
    let sink = Gated {
        inner: recorded.clone(),
        gate,
    };
    let writer = Arc::new(StateWriter::start(sink, MAX_MERGED).unwrap());
    // Dropped before the writer should an assertion fail: its thread then
    // sees the gate closed instead of waiting at it for ever.
    let open = open;
    // Far more units than the writer takes in a pass, with the sink shut:
    // an apply that waited here would leave its entries in openraft's
    // channel instead, as whole entries.
    let units: Vec<Vec<Change>> = (0..5 * PASS as u64).map(unit).collect();
    let (done_tx, done) = mpsc::channel();
    let submitter = {
        let writer = writer.clone();
        let units = units.clone();
        thread::spawn(move || {
            for u in units {
                writer.submit(u).unwrap();
            }
            done_tx.send(()).unwrap();
        })
    };
    done.recv_timeout(Duration::from_secs(20))
        .expect("a submit waited for the writer held shut");
    submitter.join().unwrap();
    assert!(recorded.batches().is_empty());
    // Let it all through (each merged batch is one write at the gate) and
    // find every unit in the tree, in order.
    let opener = thread::spawn(move || while open.send(()).is_ok() {});
    writer.drain().unwrap();
    assert_eq!(
        apply_all(recorded.batches().iter().flatten()),
        apply_all(units.iter().flatten())
    );
    drop(writer);
    opener.join().unwrap();
}
