//! Proves, from a run's history and the nodes' final states, that ipkeep kept
//! its promises:
//!
//! (a) no address was held by two attachments at overlapping acknowledged
//!     intervals (an attachment holds its address from the end of its first
//!     successful ADD until the start of its DEL), and a retried ADD got the
//!     address the first one got;
//! (b) every acknowledged ADD not followed by a DEL is in every node's final
//!     state, with its address, and an attachment whose last call was an
//!     acknowledged DEL is in none (a late ADD must not bring it back);
//! (c) all nodes end with the same state, and no address is held twice in it;
//! (d) while a node was on the minority side of a partition, its plugin calls
//!     answered CNI error 11 within the bound, never an address;
//! (e) a sticky pod always got its own address, on whichever node it ran;
//! (f) a pool's addresses went only to the pods it selects, and those pods
//!     only got addresses of their pool;
//! (g) no namespace held more addresses at once than its quota;
//! (h) nothing leaked: a pod whose namespace vanished without a DEL was
//!     released by its node's reconciler by the end, and not before the
//!     grace period (its address stays its own until then, for (a)); and
//!     nothing is held at the end that no acknowledged ADD accounts for
//!     (the workload deletes what its failed calls may have left);
//! (i) every address handed out lies inside its subnet and is neither its
//!     network, broadcast nor gateway address;
//! (j) every node's state, digested part by part (records of each kind,
//!     each subnet's counters and free addresses, each pool's, the quota
//!     usage), is the same on every node at the same applied index, and no
//!     node finds its indexes contradicting its records (an address held
//!     by two attachments shows there: the listings are by address).
//!
//! A failed DEL may or may not have been committed. A holding ends at the
//! start of the first DEL after it, failed or not, unless the end state
//! shows the attachment still held with the same addresses and no DEL of
//! it succeeded: then none of its failed DELs was committed, and it holds
//! its addresses to the end.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

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
    Resurrected {
        cid: String,
        node: u64,
    },
    StickyMoved {
        pod: String,
        first: Vec<String>,
        then: Vec<String>,
        cid: String,
    },
    PoolLeak {
        op: Op,
        address: String,
    },
    PoolMissed {
        op: Op,
        address: String,
    },
    QuotaExceeded {
        namespace: String,
        held: u64,
        limit: u64,
        at_us: u64,
    },
    Leaked {
        cid: String,
        node: u64,
    },
    Unaccounted {
        cid: String,
        node: u64,
        addresses: Vec<String>,
    },
    InvalidAddress {
        cid: String,
        address: String,
        reason: String,
    },
    DigestDiffers {
        node: u64,
        reference: u64,
        applied: Option<u64>,
        parts: Vec<String>,
    },
    Inconsistent {
        node: u64,
        finding: String,
    },
}

/// A subnet as the checker sees it, for (i).
#[derive(Debug, Clone)]
pub struct SubnetRule {
    pub cidr: ipnet::IpNet,
    pub gateway: Option<IpAddr>,
}

/// One node's digest at the end (`Request::StateDigest`).
#[derive(Debug, Clone)]
pub struct NodeDigest {
    pub node: u64,
    pub digest: ipkeep_api::message::StateDigest,
}

/// A pool as the checker sees it: an address range for the pods of one
/// namespace whose names start with a prefix.
#[derive(Debug, Clone)]
pub struct PoolRule {
    pub first: IpAddr,
    pub last: IpAddr,
    pub namespace: String,
    pub prefix: String,
}

/// What the run set up, for checks (e) to (g).
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub sticky_namespaces: Vec<String>,
    pub pools: Vec<PoolRule>,
    pub quotas: Vec<(String, u64)>,
    /// The reconcilers' grace period, when they run.
    pub leak_grace_us: Option<u64>,
    /// The subnets addresses come from, for (i).
    pub subnets: Vec<SubnetRule>,
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
            Violation::Resurrected { cid, node } => write!(
                f,
                "(b) {cid} was deleted (its last call, acknowledged) but node {node} still holds it"
            ),
            Violation::StickyMoved {
                pod,
                first,
                then,
                cid,
            } => {
                write!(
                    f,
                    "(e) sticky pod {pod} got {then:?} as {cid}; it first got {first:?}"
                )
            }
            Violation::PoolLeak { op, address } => write!(
                f,
                "(f) pool address {address} went to {}/{} ({}), which the pool does not select",
                op.namespace, op.pod, op.cid
            ),
            Violation::PoolMissed { op, address } => write!(
                f,
                "(f) {}/{} ({}) is selected by a pool but got {address} outside it",
                op.namespace, op.pod, op.cid
            ),
            Violation::QuotaExceeded {
                namespace,
                held,
                limit,
                at_us,
            } => write!(
                f,
                "(g) namespace {namespace} held {held} addresses at {:.3} s, its quota is {limit}",
                *at_us as f64 / 1e6
            ),
            Violation::Leaked { cid, node } => write!(
                f,
                "(h) {cid}'s namespace vanished without a DEL, yet node {node} still holds it at the end"
            ),
            Violation::Unaccounted {
                cid,
                node,
                addresses,
            } => write!(
                f,
                "(h) node {node} holds {addresses:?} for {cid} at the end, which no acknowledged ADD accounts for"
            ),
            Violation::InvalidAddress {
                cid,
                address,
                reason,
            } => write!(f, "(i) {cid} got {address}, {reason}"),
            Violation::DigestDiffers {
                node,
                reference,
                applied,
                parts,
            } => write!(
                f,
                "(j) at applied index {applied:?}, node {node}'s state differs from node {reference}'s in {}",
                parts.join(", ")
            ),
            Violation::Inconsistent { node, finding } => {
                write!(f, "(j) node {node} contradicts itself: {finding}")
            }
        }
    }
}

/// What a cid was acknowledged to hold, and for how long.
struct Holding {
    cid: String,
    namespace: String,
    addresses: Vec<String>,
    from: u64,
    /// Start of the first DEL after the acknowledgement; None: still held.
    until: Option<u64>,
}

fn holdings(
    history: &History,
    finals: &[FinalState],
    leak_grace_us: Option<u64>,
    violations: &mut Vec<Violation>,
) -> Vec<Holding> {
    // A vanished pod holds its address until its reconciler may release it:
    // no earlier than the grace period after the namespace went.
    let vanished: BTreeMap<&str, u64> = history
        .vanished
        .iter()
        .map(|v| (v.cid.as_str(), v.at + leak_grace_us.unwrap_or(0)))
        .collect();
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
        let namespace = ops.first().map(|o| o.namespace.clone()).unwrap_or_default();
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
        let dels: Vec<&&Op> = ops
            .iter()
            .filter(|o| o.kind == OpKind::Del && o.start >= from)
            .collect();
        let still_held =
            !finals.is_empty() && finals.iter().all(|f| f.held.get(cid) == Some(&addresses));
        // Held at the end and never deleted with success: no failed DEL of
        // it was committed either.
        let no_del_committed = still_held && dels.iter().all(|o| !o.outcome.is_ok());
        let until = dels
            .iter()
            .filter(|_| !no_del_committed)
            .map(|o| o.start)
            .chain(vanished.get(cid).copied())
            .min();
        out.push(Holding {
            cid: cid.to_owned(),
            namespace,
            addresses,
            from,
            until,
        });
    }
    out
}

fn in_range(a: IpAddr, first: IpAddr, last: IpAddr) -> bool {
    a.is_ipv4() == first.is_ipv4() && first <= a && a <= last
}

pub fn check(
    history: &History,
    finals: &[FinalState],
    digests: &[NodeDigest],
    minority_bound_us: u64,
    expect: &Expectations,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let holdings = holdings(history, finals, expect.leak_grace_us, &mut violations);
    check_fixed(history, &holdings, expect, &mut violations);
    check_addresses(&holdings, &expect.subnets, &mut violations);
    check_digests(digests, &mut violations);

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

    // (b) an acknowledged last DEL leaves nothing behind.
    let mut last_call: BTreeMap<&str, &Op> = BTreeMap::new();
    for op in &history.ops {
        let newer = last_call
            .get(op.cid.as_str())
            .is_none_or(|o| o.start < op.start);
        if newer {
            last_call.insert(&op.cid, op);
        }
    }
    for (cid, op) in last_call {
        if op.kind == OpKind::Del && op.outcome.is_ok() {
            for f in finals.iter().filter(|f| f.held.contains_key(cid)) {
                violations.push(Violation::Resurrected {
                    cid: cid.to_owned(),
                    node: f.node,
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

    // (h) every vanished pod was reclaimed by the end.
    for v in &history.vanished {
        for f in finals.iter().filter(|f| f.held.contains_key(&v.cid)) {
            violations.push(Violation::Leaked {
                cid: v.cid.clone(),
                node: f.node,
            });
        }
    }
    // (h) what is held at the end is what acknowledged ADDs still hold.
    let live: BTreeMap<&str, &Vec<String>> = holdings
        .iter()
        .filter(|h| h.until.is_none())
        .map(|h| (h.cid.as_str(), &h.addresses))
        .collect();
    let vanished: std::collections::BTreeSet<&str> =
        history.vanished.iter().map(|v| v.cid.as_str()).collect();
    for f in finals {
        for (cid, addresses) in &f.held {
            if !live.contains_key(cid.as_str()) && !vanished.contains(cid.as_str()) {
                violations.push(Violation::Unaccounted {
                    cid: cid.clone(),
                    node: f.node,
                    addresses: addresses.clone(),
                });
            }
        }
    }

    check_minority(history, minority_bound_us, &mut violations);
    violations
}

/// (i): every acknowledged address is a host address of a subnet.
fn check_addresses(holdings: &[Holding], subnets: &[SubnetRule], violations: &mut Vec<Violation>) {
    if subnets.is_empty() {
        return;
    }
    for h in holdings {
        for a in &h.addresses {
            let reason = match a.parse::<IpAddr>() {
                Err(_) => Some("not an IP address".to_owned()),
                Ok(addr) => match subnets.iter().find(|s| s.cidr.contains(&addr)) {
                    None => Some("outside every subnet".to_owned()),
                    Some(s) if addr == s.cidr.network() => {
                        Some(format!("the network address of {}", s.cidr))
                    }
                    Some(s) if addr.is_ipv4() && addr == s.cidr.broadcast() => {
                        Some(format!("the broadcast address of {}", s.cidr))
                    }
                    Some(s) if Some(addr) == s.gateway => {
                        Some(format!("the gateway of {}", s.cidr))
                    }
                    Some(_) => None,
                },
            };
            if let Some(reason) = reason {
                violations.push(Violation::InvalidAddress {
                    cid: h.cid.clone(),
                    address: a.clone(),
                    reason,
                });
            }
        }
    }
}

/// (j): digests equal at equal applied indexes, and no node inconsistent.
fn check_digests(digests: &[NodeDigest], violations: &mut Vec<Violation>) {
    for d in digests {
        for finding in &d.digest.inconsistencies {
            violations.push(Violation::Inconsistent {
                node: d.node,
                finding: finding.clone(),
            });
        }
    }
    let mut by_index: BTreeMap<Option<u64>, Vec<&NodeDigest>> = BTreeMap::new();
    for d in digests {
        by_index.entry(d.digest.applied).or_default().push(d);
    }
    for (applied, group) in by_index {
        let reference = group[0];
        let parts: BTreeMap<&String, u64> = reference
            .digest
            .parts
            .iter()
            .map(|(k, v)| (k, *v))
            .collect();
        for other in &group[1..] {
            let theirs: BTreeMap<&String, u64> =
                other.digest.parts.iter().map(|(k, v)| (k, *v)).collect();
            let differing: Vec<String> = parts
                .keys()
                .chain(theirs.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| parts.get(*k) != theirs.get(*k))
                .map(|k| (*k).clone())
                .collect();
            if !differing.is_empty() {
                violations.push(Violation::DigestDiffers {
                    node: other.node,
                    reference: reference.node,
                    applied,
                    parts: differing,
                });
            }
        }
    }
}

/// (e), (f), (g).
fn check_fixed(
    history: &History,
    holdings: &[Holding],
    expect: &Expectations,
    violations: &mut Vec<Violation>,
) {
    let mut sticky_first: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut added: Vec<&Op> = history
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Add && o.outcome.is_ok())
        .collect();
    added.sort_by_key(|o| o.end);
    for op in added {
        let Outcome::Ok(addresses) = &op.outcome else {
            continue;
        };
        if expect.sticky_namespaces.contains(&op.namespace) {
            let first = sticky_first
                .entry((op.namespace.clone(), op.pod.clone()))
                .or_insert_with(|| addresses.clone());
            if first != addresses {
                violations.push(Violation::StickyMoved {
                    pod: format!("{}/{}", op.namespace, op.pod),
                    first: first.clone(),
                    then: addresses.clone(),
                    cid: op.cid.clone(),
                });
            }
        }
        for rule in &expect.pools {
            let selected = op.namespace == rule.namespace && op.pod.starts_with(&rule.prefix);
            for a in addresses {
                let Ok(addr) = a.parse::<IpAddr>() else {
                    continue;
                };
                let inside = in_range(addr, rule.first, rule.last);
                if inside && !selected {
                    violations.push(Violation::PoolLeak {
                        op: op.clone(),
                        address: a.clone(),
                    });
                }
                if selected && !inside && addr.is_ipv4() == rule.first.is_ipv4() {
                    violations.push(Violation::PoolMissed {
                        op: op.clone(),
                        address: a.clone(),
                    });
                }
            }
        }
    }
    for (namespace, limit) in &expect.quotas {
        // +1 at each acknowledgement, -1 at each DEL's start; the peak must stay within the limit.
        let mut events: Vec<(u64, i64)> = Vec::new();
        for h in holdings.iter().filter(|h| &h.namespace == namespace) {
            events.push((h.from, h.addresses.len() as i64));
            if let Some(u) = h.until {
                events.push((u, -(h.addresses.len() as i64)));
            }
        }
        // At equal times, releases first: a DEL that starts as an ADD ends is not an overlap.
        events.sort_by_key(|(t, d)| (*t, *d));
        let mut held: i64 = 0;
        for (t, d) in events {
            held += d;
            if held > *limit as i64 {
                violations.push(Violation::QuotaExceeded {
                    namespace: namespace.clone(),
                    held: held as u64,
                    limit: *limit,
                    at_us: t,
                });
                break;
            }
        }
    }
}

fn check_minority(history: &History, minority_bound_us: u64, violations: &mut Vec<Violation>) {
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
}
