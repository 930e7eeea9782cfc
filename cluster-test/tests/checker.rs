//! The checker catches what it claims to: histories with a duplicate
//! address, a lost allocation, a changed retry, divergent nodes and a
//! minority that answered are each flagged; a clean history is not.

use std::collections::BTreeMap;

use ipkeep_api::message::StateDigest;
use ipkeep_cluster_test::checker::{
    check, Expectations, NodeDigest, PoolRule, SubnetRule, Violation,
};
use ipkeep_cluster_test::history::{
    FinalState, History, MinorityWindow, Op, OpKind, Outcome, Vanish,
};

const BOUND: u64 = 7_000_000;

fn add(node: u64, cid: &str, start: u64, end: u64, addr: &str) -> Op {
    Op {
        node,
        kind: OpKind::Add,
        cid: cid.into(),
        namespace: "ns".into(),
        pod: cid.into(),
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
        namespace: "ns".into(),
        pod: cid.into(),
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
        namespace: "ns".into(),
        pod: cid.into(),
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
        &[],
        BOUND,
        &Expectations::default(),
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
        &[],
        BOUND,
        &Expectations::default(),
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
    let v = check(
        &h,
        &finals(&[1], &[("b", "10.0.0.2")]),
        &[],
        BOUND,
        &Expectations::default(),
    );
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
    let v = check(&h, &f, &[], BOUND, &Expectations::default());
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
    let v = check(&h, &f, &[], BOUND, &Expectations::default());
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
    assert!(check(&h, &finals(&[1], &[]), &[], BOUND, &Expectations::default()).is_empty());
}

#[test]
fn a_retry_with_another_address_is_flagged() {
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        add(2, "a", 20, 30, "10.0.0.7"),
    ]);
    let v = check(
        &h,
        &finals(&[1], &[("a", "10.0.0.2")]),
        &[],
        BOUND,
        &Expectations::default(),
    );
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
    let v = check(&h, &f, &[], BOUND, &Expectations::default());
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

fn as_pod(mut op: Op, namespace: &str, pod: &str) -> Op {
    op.namespace = namespace.into();
    op.pod = pod.into();
    op
}

#[test]
fn a_sticky_pod_that_moves_a_pool_leak_and_a_quota_overrun_are_flagged() {
    let expect = Expectations {
        sticky_namespaces: vec!["sts".into()],
        pools: vec![PoolRule {
            first: "10.0.1.10".parse().unwrap(),
            last: "10.0.1.19".parse().unwrap(),
            namespace: "sts".into(),
            prefix: "db-".into(),
        }],
        quotas: vec![("capped".into(), 1)],
        leak_grace_us: None,
        subnets: vec![],
    };
    let h = history(vec![
        as_pod(add(1, "db-0.1", 0, 10, "10.0.1.10"), "sts", "db-0"),
        as_pod(del(1, "db-0.1", 20, 30), "sts", "db-0"),
        // Re-created on another node with another address: (e).
        as_pod(add(2, "db-0.2", 40, 50, "10.0.1.11"), "sts", "db-0"),
        // A pod the pool does not select got a pool address: (f).
        as_pod(add(3, "web", 0, 10, "10.0.1.15"), "other", "web"),
        // A selected pod got an address outside the pool: (f).
        as_pod(add(3, "db-1.1", 0, 10, "10.0.0.99"), "sts", "db-1"),
        // Two addresses at once for a namespace with a quota of one: (g).
        as_pod(add(1, "c1", 0, 10, "10.0.0.50"), "capped", "c1"),
        as_pod(add(2, "c2", 5, 15, "10.0.0.51"), "capped", "c2"),
    ]);
    let f = finals(
        &[1],
        &[
            ("db-0.2", "10.0.1.11"),
            ("web", "10.0.1.15"),
            ("db-1.1", "10.0.0.99"),
            ("c1", "10.0.0.50"),
            ("c2", "10.0.0.51"),
        ],
    );
    let v = check(&h, &f, &[], BOUND, &expect);
    assert!(
        v.iter().any(|v| matches!(v, Violation::StickyMoved { .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::PoolLeak { address, .. } if address == "10.0.1.15")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::PoolMissed { address, .. } if address == "10.0.0.99")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|v| matches!(
            v,
            Violation::QuotaExceeded {
                held: 2,
                limit: 1,
                ..
            }
        )),
        "{v:?}"
    );
    // Within the quota when the first is deleted before the second is acknowledged.
    let h = history(vec![
        as_pod(add(1, "c1", 0, 10, "10.0.0.50"), "capped", "c1"),
        as_pod(del(1, "c1", 11, 12), "capped", "c1"),
        as_pod(add(2, "c2", 5, 15, "10.0.0.51"), "capped", "c2"),
    ]);
    let v = check(
        &h,
        &finals(&[1], &[("c2", "10.0.0.51")]),
        &[],
        BOUND,
        &expect,
    );
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn an_attachment_back_after_its_acknowledged_del_is_flagged() {
    let h = history(vec![
        failed(1, OpKind::Add, "z", 0, 3_000_000, 11),
        del(1, "z", 3_000_100, 3_000_200),
    ]);
    // A late ADD committed after the DEL: the final state still holds z.
    let v = check(
        &h,
        &finals(&[1, 2], &[("z", "10.0.0.9")]),
        &[],
        BOUND,
        &Expectations::default(),
    );
    assert_eq!(
        v.iter()
            .filter(|v| matches!(v, Violation::Resurrected { .. }))
            .count(),
        2,
        "{v:?}"
    );
    assert!(check(
        &h,
        &finals(&[1, 2], &[]),
        &[],
        BOUND,
        &Expectations::default()
    )
    .is_empty());
}

/// (h): a pod whose namespace vanished must be gone at the end, and its
/// address may go to another pod only after the grace period.
#[test]
fn a_leak_left_at_the_end_or_reclaimed_too_early_is_flagged() {
    let expect = Expectations {
        leak_grace_us: Some(1_000),
        ..Default::default()
    };
    let mut h = history(vec![
        add(1, "gone", 0, 10, "10.0.0.1"),
        // Reused after the grace period: fine.
        add(2, "next", 1_500, 1_600, "10.0.0.1"),
        add(1, "early", 0, 10, "10.0.0.2"),
        // Reused before its grace period ended: two holders at once.
        add(2, "thief", 500, 600, "10.0.0.2"),
        add(1, "stuck", 0, 10, "10.0.0.3"),
        add(1, "alive", 0, 10, "10.0.0.4"),
    ]);
    h.vanished = vec![
        Vanish {
            cid: "gone".into(),
            node: 1,
            at: 100,
        },
        Vanish {
            cid: "early".into(),
            node: 1,
            at: 100,
        },
        Vanish {
            cid: "stuck".into(),
            node: 1,
            at: 100,
        },
    ];
    let end = finals(
        &[1, 2],
        &[
            ("next", "10.0.0.1"),
            ("thief", "10.0.0.2"),
            ("stuck", "10.0.0.3"),
            ("alive", "10.0.0.4"),
        ],
    );
    let v = check(&h, &end, &[], BOUND, &expect);
    let leaked: Vec<&Violation> = v
        .iter()
        .filter(|x| matches!(x, Violation::Leaked { .. }))
        .collect();
    assert_eq!(leaked.len(), 2, "stuck, on both nodes: {v:?}");
    assert!(leaked
        .iter()
        .all(|x| matches!(x, Violation::Leaked { cid, .. } if cid == "stuck")));
    let twice: Vec<&Violation> = v
        .iter()
        .filter(|x| matches!(x, Violation::TwoHolders { .. }))
        .collect();
    assert_eq!(twice.len(), 1, "{v:?}");
    assert!(matches!(twice[0], Violation::TwoHolders { address, .. } if address == "10.0.0.2"));
    // A vanished pod is not "lost" for being absent at the end.
    assert!(
        !v.iter().any(|x| matches!(x, Violation::Lost { .. })),
        "{v:?}"
    );
    assert_eq!(v.len(), 3, "{v:?}");
}

/// A DEL that failed and was not committed (the end state still holds the
/// attachment) does not end its holding: an address given to another pod
/// after it is held twice. Once, the holding ended at that DEL's start and
/// the conflict was hidden.
#[test]
fn a_conflict_after_a_failed_uncommitted_del_is_flagged() {
    let h = history(vec![
        add(1, "a", 0, 10, "10.0.0.2"),
        failed(1, OpKind::Del, "a", 20, 30, 11),
        add(2, "b", 40, 50, "10.0.0.2"),
    ]);
    let v = check(
        &h,
        &finals(&[1, 2], &[("a", "10.0.0.2"), ("b", "10.0.0.2")]),
        &[],
        BOUND,
        &Expectations::default(),
    );
    assert!(
        v.iter().any(|v| matches!(v, Violation::TwoHolders { .. })),
        "{v:?}"
    );
    // A failed DEL that was committed (the end state holds nothing for a)
    // may have freed the address: no conflict.
    let v = check(
        &h,
        &finals(&[1, 2], &[("b", "10.0.0.2")]),
        &[],
        BOUND,
        &Expectations::default(),
    );
    assert!(v.is_empty(), "{v:?}");
}

/// Held at the end with no acknowledged ADD behind it (an ADD that answered
/// 11 but committed, and no DEL since): a leak.
#[test]
fn an_attachment_held_at_the_end_that_no_acknowledged_add_accounts_for_is_flagged() {
    let h = history(vec![failed(1, OpKind::Add, "ghost", 0, 10, 11)]);
    let v = check(
        &h,
        &finals(&[1], &[("ghost", "10.0.0.9")]),
        &[],
        BOUND,
        &Expectations::default(),
    );
    assert!(
        v.iter().any(|v| matches!(v, Violation::Unaccounted { .. })),
        "{v:?}"
    );
}

#[test]
fn addresses_outside_their_subnet_or_on_its_edges_are_flagged() {
    let expect = Expectations {
        subnets: vec![SubnetRule {
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: Some("10.0.0.1".parse().unwrap()),
        }],
        ..Default::default()
    };
    let h = history(vec![
        add(1, "net", 0, 10, "10.0.0.0"),
        add(1, "gw", 0, 10, "10.0.0.1"),
        add(1, "bcast", 0, 10, "10.0.0.255"),
        add(1, "out", 0, 10, "10.0.1.7"),
        add(1, "fine", 0, 10, "10.0.0.7"),
    ]);
    let end = finals(
        &[1],
        &[
            ("net", "10.0.0.0"),
            ("gw", "10.0.0.1"),
            ("bcast", "10.0.0.255"),
            ("out", "10.0.1.7"),
            ("fine", "10.0.0.7"),
        ],
    );
    let v = check(&h, &end, &[], BOUND, &expect);
    let flagged: Vec<&str> = v
        .iter()
        .filter_map(|v| match v {
            Violation::InvalidAddress { cid, .. } => Some(cid.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(flagged, vec!["bcast", "gw", "net", "out"], "{v:?}");
}

/// Two replicas at one applied index with another digest, and a replica
/// that finds itself inconsistent, are flagged; replicas at different
/// indexes are not compared.
#[test]
fn differing_digests_at_one_index_and_inconsistent_replicas_are_flagged() {
    let digest = |applied: u64, free: u64, inconsistencies: Vec<String>| StateDigest {
        applied: Some(applied),
        parts: vec![("records:a".into(), 7), ("subnet:pods".into(), free)],
        inconsistencies,
    };
    let nodes = vec![
        NodeDigest {
            node: 1,
            digest: digest(40, 1, vec![]),
        },
        NodeDigest {
            node: 2,
            digest: digest(40, 2, vec![]),
        },
        NodeDigest {
            node: 3,
            digest: digest(41, 9, vec!["10.0.0.2 is held by x and by y".into()]),
        },
    ];
    let v = check(
        &history(vec![]),
        &[],
        &nodes,
        BOUND,
        &Expectations::default(),
    );
    assert!(
        v.iter().any(|v| matches!(v, Violation::DigestDiffers { node: 2, reference: 1, parts, .. } if parts == &vec!["subnet:pods".to_string()])),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::Inconsistent { node: 3, .. })),
        "{v:?}"
    );
    assert_eq!(v.len(), 2, "{v:?}");
}
