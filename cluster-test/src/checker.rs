//! Proves, from a run's history and the nodes' final states, that ipkeep kept
//! its promises:
//!
//! (a) no address was held by two attachments at overlapping acknowledged
//!     intervals (an attachment holds its address from the end of its first
//!     successful ADD until the start of its DEL), and a retried ADD got the
//!     address the first one got;
//! (b) every acknowledged ADD not followed by a DEL is in every node's final
//!     state, with its address;
//! (c) all nodes end with the same state, and no address is held twice in it;
//! (d) while a node was on the minority side of a partition, its plugin calls
//!     answered CNI error 11 within the bound, never an address.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{FinalState, History, Op, OpKind, Outcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TwoHolders {
        address: String,
        first: String,
        second: String,
        at_us: u64,
    },
    RetryChanged {
        cid: String,
        first: Vec<String>,
        then: Vec<String>,
    },
    Lost {
        cid: String,
        addresses: Vec<String>,
        node: u64,
        found: Option<Vec<String>>,
    },
    Diverged {
        node: u64,
        reference: u64,
        detail: String,
    },
    HeldTwiceAtEnd {
        node: u64,
        address: String,
    },
    MinorityAnswered {
        op: Op,
    },
    MinoritySlow {
        op: Op,
        bound_us: u64,
    },
    MinorityWrongCode {
        op: Op,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoHolders {
                address,
                first,
                second,
                at_us,
            } => write!(
                f,
                "(a) {address} held by {first} and {second} at once (at {:.3} s)",
                *at_us as f64 / 1e6
            ),
            Violation::RetryChanged { cid, first, then } => {
                write!(
                    f,
                    "(a) retried ADD of {cid} got {then:?}, the first got {first:?}"
                )
            }
            Violation::Lost {
                cid,
                addresses,
                node,
                found,
            } => write!(
                f,
                "(b) acknowledged ADD of {cid} ({addresses:?}) is {} on node {node}",
                match found {
                    None => "missing".to_owned(),
                    Some(a) => format!("holding {a:?} instead"),
                }
            ),
            Violation::Diverged {
                node,
                reference,
                detail,
            } => {
                write!(
                    f,
                    "(c) node {node} ends with another state than node {reference}: {detail}"
                )
            }
            Violation::HeldTwiceAtEnd { node, address } => {
                write!(f, "(c) node {node} ends with {address} held twice")
            }
            Violation::MinorityAnswered { op } => write!(
                f,
                "(d) node {} on the minority side answered {:?} {} with {:?}",
                op.node, op.kind, op.cid, op.outcome
            ),
            Violation::MinoritySlow { op, bound_us } => write!(
                f,
                "(d) node {} on the minority side took {:.3} s (bound {:.3} s) to answer {:?} {}",
                op.node,
                (op.end - op.start) as f64 / 1e6,
                *bound_us as f64 / 1e6,
                op.kind,
                op.cid
            ),
            Violation::MinorityWrongCode { op } => write!(
                f,
                "(d) node {} on the minority side answered {:?} {} with {:?}, not error 11",
                op.node, op.kind, op.cid, op.outcome
            ),
        }
    }
}

/// What a cid was acknowledged to hold, and for how long.
struct Holding {
    cid: String,
    addresses: Vec<String>,
    from: u64,
    /// Start of the first DEL after the acknowledgement; None: still held.
    until: Option<u64>,
}

fn holdings(history: &History, violations: &mut Vec<Violation>) -> Vec<Holding> {
    let mut by_cid: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_cid.entry(&op.cid).or_default().push(op);
    }
    let mut out = Vec::new();
    for (cid, mut ops) in by_cid {
        ops.sort_by_key(|o| o.start);
        let first_ack = ops.iter().find_map(|o| match (&o.kind, &o.outcome) {
            (OpKind::Add, Outcome::Ok(a)) => Some((o.end, a.clone())),
            _ => None,
        });
        let Some((from, addresses)) = first_ack else {
            continue;
        };
        for o in &ops {
            if let (OpKind::Add, Outcome::Ok(a)) = (&o.kind, &o.outcome) {
                if *a != addresses {
                    violations.push(Violation::RetryChanged {
                        cid: cid.to_owned(),
                        first: addresses.clone(),
                        then: a.clone(),
                    });
                }
            }
        }
        let until = ops
            .iter()
            .filter(|o| o.kind == OpKind::Del && o.start >= from)
            .map(|o| o.start)
            .min();
        out.push(Holding {
            cid: cid.to_owned(),
            addresses,
            from,
            until,
        });
    }
    out
}

pub fn check(history: &History, finals: &[FinalState], minority_bound_us: u64) -> Vec<Violation> {
    let mut violations = Vec::new();
    let holdings = holdings(history, &mut violations);

    // (a) overlapping acknowledged intervals on one address.
    let mut by_address: BTreeMap<&str, Vec<&Holding>> = BTreeMap::new();
    for h in &holdings {
        for a in &h.addresses {
            by_address.entry(a).or_default().push(h);
        }
    }
    for (address, mut hs) in by_address {
        hs.sort_by_key(|h| h.from);
        for pair in hs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.until.is_none_or(|u| u > b.from) {
                violations.push(Violation::TwoHolders {
                    address: address.to_owned(),
                    first: a.cid.clone(),
                    second: b.cid.clone(),
                    at_us: b.from,
                });
            }
        }
    }

    // (b) acknowledged and never deleted: present everywhere.
    for h in holdings.iter().filter(|h| h.until.is_none()) {
        for f in finals {
            let found = f.held.get(&h.cid);
            if found != Some(&h.addresses) {
                violations.push(Violation::Lost {
                    cid: h.cid.clone(),
                    addresses: h.addresses.clone(),
                    node: f.node,
                    found: found.cloned(),
                });
            }
        }
    }

    // (c) one final state, with each address once.
    if let Some(reference) = finals.first() {
        for f in &finals[1..] {
            if f.held != reference.held {
                let only_here = f
                    .held
                    .keys()
                    .filter(|k| !reference.held.contains_key(*k))
                    .count();
                let only_there = reference
                    .held
                    .keys()
                    .filter(|k| !f.held.contains_key(*k))
                    .count();
                violations.push(Violation::Diverged {
                    node: f.node,
                    reference: reference.node,
                    detail: format!("{only_here} attachments only here, {only_there} only there, or addresses differ"),
                });
            }
        }
    }
    for f in finals {
        let mut seen = BTreeMap::new();
        for a in f.held.values().flatten() {
            if seen.insert(a.clone(), ()).is_some() {
                violations.push(Violation::HeldTwiceAtEnd {
                    node: f.node,
                    address: a.clone(),
                });
            }
        }
    }

    // (d) the minority side answers 11, in time, never an address. A call
    // still unanswered when the partition healed counts as slow if the bound
    // had passed by then.
    for window in &history.minority {
        let calls = history.ops.iter().filter(|o| {
            window.nodes.contains(&o.node) && o.start >= window.from && o.start < window.to
        });
        for op in calls {
            let answered_inside = op.end <= window.to;
            if answered_inside {
                match &op.outcome {
                    Outcome::Ok(_) => {
                        violations.push(Violation::MinorityAnswered { op: op.clone() })
                    }
                    Outcome::Failed { code: 11, .. } => {}
                    _ => violations.push(Violation::MinorityWrongCode { op: op.clone() }),
                }
            }
            let waited_inside = op.end.min(window.to) - op.start;
            if waited_inside > minority_bound_us {
                violations.push(Violation::MinoritySlow {
                    op: op.clone(),
                    bound_us: minority_bound_us,
                });
            }
        }
    }
    violations
}
