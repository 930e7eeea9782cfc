//! The checker catches what it claims to: histories with a duplicate
//! address, a lost allocation, a changed retry, divergent nodes and a
//! minority that answered are each flagged; a clean history is not.

use std::collections::BTreeMap;

use ipkeep_cluster_test::checker::{check, Violation};
use ipkeep_cluster_test::history::{FinalState, History, MinorityWindow, Op, OpKind, Outcome};

const BOUND: u64 = 7_000_000;

fn add(node: u64, cid: &str, start: u64, end: u64, addr: &str) -> Op {
    Op {
        node,
        kind: OpKind::Add,
        cid: cid.into(),
        start,
        end,
        outcome: Outcome::Ok(vec![addr.into()]),
    }
}

fn failed(node: u64, kind: OpKind, cid: &str, start: u64, end: u64, code: u64) -> Op {
    Op {
        node,
        kind,
        cid: cid.into(),
        start,
        end,
        outcome: Outcome::Failed {
            code,
            msg: String::new(),
        },
    }
}

fn del(node: u64, cid: &str, start: u64, end: u64) -> Op {
    Op {
        node,
        kind: OpKind::Del,
        cid: cid.into(),
        start,
        end,
        outcome: Outcome::Ok(vec![]),
    }
}

fn finals(nodes: &[u64], held: &[(&str, &str)]) -> Vec<FinalState> {
    let held: BTreeMap<String, Vec<String>> = held
        .iter()
        .map(|(c, a)| (c.to_string(), vec![a.to_string()]))
        .collect();
    nodes
        .iter()
        .map(|n| FinalState {
            node: *n,
            held: held.clone(),
        })
        .collect()
}

fn history(ops: Vec<Op>) -> History {
    History {
        ops,
        ..Default::default()
    }
}

#[test]
fn a_clean_history_passes() {
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        del(2, "a", 20, 30),
        // The address comes back to another pod after a's DEL began: allowed.
        add(3, "b", 25, 40, "10.0.0.2"),
        add(1, "c", 0, 10, "10.0.0.3"),
        add(2, "c", 50, 60, "10.0.0.3"), // a retried ADD, same answer
    ]);
    let v = check(
        &h,
        &finals(&[1, 2, 3], &[("b", "10.0.0.2"), ("c", "10.0.0.3")]),
        BOUND,
    );
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn a_duplicate_address_is_flagged() {
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        add(2, "b", 5, 15, "10.0.0.2"),
    ]);
    let v = check(
        &h,
        &finals(&[1, 2], &[("a", "10.0.0.2"), ("b", "10.0.0.2")]),
        BOUND,
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::TwoHolders { address, .. } if address == "10.0.0.2")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::HeldTwiceAtEnd { .. })),
        "{v:?}"
    );
    // Also when the first holder's DEL only started after the second ADD was acknowledged.
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        add(2, "b", 5, 15, "10.0.0.2"),
        del(1, "a", 20, 30),
    ]);
    let v = check(&h, &finals(&[1], &[("b", "10.0.0.2")]), BOUND);
    assert!(
        v.iter().any(|v| matches!(v, Violation::TwoHolders { .. })),
        "{v:?}"
    );
}

#[test]
fn a_lost_allocation_is_flagged() {
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        add(1, "b", 0, 10, "10.0.0.3"),
    ]);
    let mut f = finals(&[1, 2, 3], &[("a", "10.0.0.2"), ("b", "10.0.0.3")]);
    f[2].held.remove("b");
    let v = check(&h, &f, BOUND);
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::Lost { cid, node: 3, found: None, .. } if cid == "b")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::Diverged { node: 3, .. })),
        "{v:?}"
    );
    // Held with another address is lost too.
    let mut f = finals(&[1], &[("a", "10.0.0.2"), ("b", "10.0.0.9")]);
    f[0].node = 1;
    let v = check(&h, &f, BOUND);
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::Lost { cid, found: Some(_), .. } if cid == "b")),
        "{v:?}"
    );
}

#[test]
fn a_failed_or_deleted_add_is_not_expected_at_the_end() {
    let h = history(vec![
        failed(1, OpKind::Add, "x", 0, 10, 11),
        add(1, "y", 0, 10, "10.0.0.4"),
        failed(2, OpKind::Del, "y", 20, 30, 11),
    ]);
    assert!(check(&h, &finals(&[1], &[]), BOUND).is_empty());
}

#[test]
fn a_retry_with_another_address_is_flagged() {
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        add(2, "a", 20, 30, "10.0.0.7"),
    ]);
    let v = check(&h, &finals(&[1], &[("a", "10.0.0.2")]), BOUND);
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::RetryChanged { .. })),
        "{v:?}"
    );
}

#[test]
fn the_minority_must_answer_11_in_time() {
    let mut h = history(vec![
        failed(3, OpKind::Add, "ok-refusal", 1_000_000, 6_000_000, 11),
        add(3, "guess", 2_000_000, 2_100_000, "10.0.0.9"),
        failed(3, OpKind::Add, "slow", 1_000_000, 9_500_000, 11),
        failed(3, OpKind::Add, "wrong-code", 1_000_000, 1_100_000, 100),
        // Majority side, same window: not checked.
        add(1, "majority", 1_000_000, 1_100_000, "10.0.0.8"),
        // Still waiting when the partition healed, long after the bound.
        failed(3, OpKind::Del, "hung", 1_500_000, 30_000_000, 11),
    ]);
    h.minority.push(MinorityWindow {
        nodes: vec![3],
        from: 500_000,
        to: 20_000_000,
    });
    let f = finals(&[1], &[("guess", "10.0.0.9"), ("majority", "10.0.0.8")]);
    let v = check(&h, &f, BOUND);
    let flagged = |cid: &str| {
        v.iter()
            .filter(|v| match v {
                Violation::MinorityAnswered { op }
                | Violation::MinoritySlow { op, .. }
                | Violation::MinorityWrongCode { op } => op.cid == cid,
                _ => false,
            })
            .count()
    };
    assert_eq!(flagged("guess"), 1, "{v:?}");
    assert_eq!(flagged("slow"), 1, "{v:?}");
    assert_eq!(flagged("wrong-code"), 1, "{v:?}");
    assert_eq!(flagged("hung"), 1, "{v:?}");
    assert_eq!(flagged("ok-refusal"), 0, "{v:?}");
    assert_eq!(flagged("majority"), 0, "{v:?}");
}
