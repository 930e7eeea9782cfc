//! The state machine's decisions, applied to the in-memory state.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use common::{add, add_on, del, key, subnet};
use ipkeep_api::code;
use ipkeep_api::message::{AddResult, IpListRequest};
use ipkeep_store::records::Change;
use ipkeep_store::{Command, Reply, State};

fn apply(state: &mut State, command: Command) -> (Reply, Vec<Change>) {
    let mut journal = vec![];
    let reply = state.apply(&command, &mut journal);
    (reply, journal)
}

fn added(reply: Reply) -> AddResult {
    match reply {
        Reply::Added(r) => r,
        other => panic!("expected Added, got {other:?}"),
    }
}

fn failed(reply: Reply) -> ipkeep_api::ApiError {
    match reply {
        Reply::Failed(e) => e,
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn with_subnets(specs: &[(&str, &str)]) -> State {
    let mut state = State::default();
    for (name, cidr) in specs {
        let (reply, _) = apply(
            &mut state,
            Command::CreateSubnet {
                spec: subnet(name, cidr),
            },
        );
        assert!(matches!(reply, Reply::Subnet(_)), "{reply:?}");
    }
    state
}

#[test]
fn allocates_distinct_addresses_in_round_robin_order() {
    let mut state = with_subnets(&[("a", "10.1.0.0/24")]);
    let first = added(apply(&mut state, add("c1", &[&["a"]])).0);
    assert_eq!(first.ips[0].address.to_string(), "10.1.0.2/24");
    assert_eq!(first.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
    let second = added(apply(&mut state, add("c2", &[&["a"]])).0);
    assert_eq!(second.ips[0].address.to_string(), "10.1.0.3/24");
    // Releasing .2 does not make it the next address: the cursor moves on.
    apply(&mut state, del("c1"));
    let third = added(apply(&mut state, add("c3", &[&["a"]])).0);
    assert_eq!(third.ips[0].address.to_string(), "10.1.0.4/24");
}

#[test]
fn add_is_idempotent_per_attachment_and_del_too() {
    let mut state = with_subnets(&[("a", "10.1.0.0/24")]);
    let first = added(apply(&mut state, add("c1", &[&["a"]])).0);
    let (again, journal) = apply(&mut state, add("c1", &[&["a"]]));
    assert_eq!(added(again), first);
    assert!(journal.is_empty(), "a retried ADD writes nothing");
    let (deleted, journal) = apply(&mut state, del("c1"));
    assert!(matches!(deleted, Reply::Deleted(ref d) if d.released.len() == 1));
    assert_eq!(
        journal.len(),
        3,
        "the allocation goes; a history entry and a tombstone come"
    );
    let (deleted, journal) = apply(&mut state, del("c1"));
    assert!(matches!(deleted, Reply::Deleted(ref d) if d.released.is_empty()));
    assert!(journal.is_empty(), "a repeated DEL writes nothing");
}

#[test]
fn exhausted_and_unknown_subnets_are_refused_without_changes() {
    let mut state = with_subnets(&[("tiny", "10.2.0.0/30")]); // one host after the gateway
    added(apply(&mut state, add("c1", &[&["tiny"]])).0);
    let (reply, journal) = apply(&mut state, add("c2", &[&["tiny"]]));
    let err = failed(reply);
    assert_eq!(err.code, code::EXHAUSTED);
    assert!(err.details.contains("tiny"), "{err}");
    assert!(journal.is_empty());
    let (reply, journal) = apply(&mut state, add("c3", &[&["nope"]]));
    let err = failed(reply);
    assert_eq!(err.code, code::UNKNOWN_SUBNET);
    assert!(err.details.contains("nope"), "{err}");
    assert!(journal.is_empty());
    assert!(state.allocation(&key("c2")).is_none());
}

#[test]
fn the_first_listed_subnet_of_a_family_is_used_and_a_full_one_is_an_error() {
    // "The first subnet the pod's namespace may use is taken": a full one is
    // an error that says so, never an address from elsewhere.
    let mut state = with_subnets(&[("tiny", "10.2.0.0/30"), ("big", "10.3.0.0/24")]);
    let first = added(apply(&mut state, add("c1", &[&["tiny", "big"]])).0);
    assert_eq!(first.ips[0].subnet, "tiny");
    let err = failed(apply(&mut state, add("c2", &[&["tiny", "big"]])).0);
    assert_eq!(err.code, code::EXHAUSTED);
    assert!(err.details.contains("tiny"), "{err}");
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let mut state = with_subnets(&[("v4", "10.4.0.0/30"), ("v6", "fd00:4::/64")]);
    let both = added(apply(&mut state, add("c1", &[&["v4"], &["v6"]])).0);
    assert_eq!(both.ips.len(), 2);
    assert!(both.ips[0].address.addr().is_ipv4());
    assert!(both.ips[1].address.addr().is_ipv6());
    // v4 is now full: the second ADD must not take a v6 address either.
    let v6_before = state.subnet_info("v6").unwrap().usage.held;
    let (reply, journal) = apply(&mut state, add("c2", &[&["v4"], &["v6"]]));
    assert_eq!(failed(reply).code, code::EXHAUSTED);
    assert!(journal.is_empty());
    assert_eq!(state.subnet_info("v6").unwrap().usage.held, v6_before);
    // Two IPv4 subnets are alternatives for one IPv4 address, not two addresses.
    let mut state = with_subnets(&[("a", "10.5.0.0/24"), ("b", "10.6.0.0/24")]);
    let got = added(apply(&mut state, add("c1", &[&["a"], &["b"]])).0);
    assert_eq!(got.ips.len(), 1);
    assert_eq!(got.ips[0].subnet, "a");
}

#[test]
fn subnets_may_not_overlap_and_delete_names_holders() {
    let mut state = with_subnets(&[("a", "10.7.0.0/16")]);
    let err = failed(
        apply(
            &mut state,
            Command::CreateSubnet {
                spec: subnet("b", "10.7.3.0/24"),
            },
        )
        .0,
    );
    assert_eq!(err.code, code::CONFLICT);
    assert!(err.details.contains("overlaps"), "{err}");
    let err = failed(
        apply(
            &mut state,
            Command::CreateSubnet {
                spec: subnet("a", "10.8.0.0/16"),
            },
        )
        .0,
    );
    assert_eq!(err.code, code::CONFLICT);
    // Re-creating the same subnet is a no-op success.
    assert!(matches!(
        apply(
            &mut state,
            Command::CreateSubnet {
                spec: subnet("a", "10.7.0.0/16")
            }
        )
        .0,
        Reply::Subnet(_)
    ));
    added(apply(&mut state, add("c1", &[&["a"]])).0);
    let err = failed(apply(&mut state, Command::DeleteSubnet { name: "a".into() }).0);
    assert_eq!(err.code, code::CONFLICT);
    assert!(
        err.details.contains("10.7.0.2") && err.details.contains("c1"),
        "{err}"
    );
    apply(&mut state, del("c1"));
    assert!(matches!(
        apply(&mut state, Command::DeleteSubnet { name: "a".into() }).0,
        Reply::Done
    ));
    assert_eq!(
        failed(apply(&mut state, Command::DeleteSubnet { name: "a".into() }).0).code,
        code::NOT_FOUND
    );
}

#[test]
fn gc_releases_only_this_nodes_unlisted_attachments_of_the_network() {
    let mut state = with_subnets(&[("a", "10.9.0.0/24")]);
    for cid in ["keep", "stale1", "stale2"] {
        added(apply(&mut state, add_on(cid, &[&["a"]], "node-a")).0);
    }
    added(apply(&mut state, add_on("elsewhere", &[&["a"]], "node-b")).0);
    let (reply, _) = apply(
        &mut state,
        Command::Gc {
            network: "net".into(),
            node: "node-a".into(),
            valid: vec![("keep".into(), "eth0".into())],
            at_ms: 0,
            issued_us: 0,
        },
    );
    let Reply::Collected(gc) = reply else {
        panic!("{reply:?}")
    };
    let released: HashSet<_> = gc
        .released
        .iter()
        .map(|(k, _)| k.container_id.clone())
        .collect();
    assert_eq!(
        released,
        HashSet::from(["stale1".to_string(), "stale2".to_string()])
    );
    assert!(state.allocation(&key("keep")).is_some());
    assert!(
        state.allocation(&key("elsewhere")).is_some(),
        "other nodes' attachments stay"
    );
}

#[test]
fn replicas_applying_the_same_commands_agree_exactly() {
    let commands: Vec<Command> = {
        let mut v = vec![
            Command::CreateSubnet {
                spec: subnet("a", "10.10.0.0/26"),
            },
            Command::CreateSubnet {
                spec: subnet("b", "fd00:10::/120"),
            },
        ];
        for i in 0..200 {
            v.push(add(&format!("c{i}"), &[&["a"], &["b"]]));
            if i % 3 == 0 {
                v.push(del(&format!("c{}", i / 2)));
            }
        }
        v
    };
    let run = || {
        let mut state = State::default();
        let mut out = vec![];
        for c in &commands {
            let (reply, journal) = apply(&mut state, c.clone());
            out.push((reply, journal));
        }
        (out, state.records().collect::<Vec<_>>())
    };
    assert_eq!(run(), run());
}

#[test]
fn state_rebuilt_from_its_records_makes_the_same_decisions() {
    let mut state = with_subnets(&[("a", "10.11.0.0/24")]);
    for i in 0..50 {
        added(apply(&mut state, add(&format!("c{i}"), &[&["a"]])).0);
    }
    for i in (0..50).step_by(2) {
        apply(&mut state, del(&format!("c{i}")));
    }
    let mut rebuilt = State::from_records(state.records()).unwrap();
    assert_eq!(rebuilt.subnet_info("a"), state.subnet_info("a"));
    let next = apply(&mut state, add("new", &[&["a"]])).0;
    assert_eq!(apply(&mut rebuilt, add("new", &[&["a"]])).0, next);
}

#[test]
fn records_that_hold_an_address_twice_are_refused() {
    let mut state = with_subnets(&[("a", "10.12.0.0/24")]);
    added(apply(&mut state, add("c1", &[&["a"]])).0);
    let mut records: Vec<_> = state.records().collect();
    let dup = records
        .iter()
        .find_map(|r| match r {
            ipkeep_store::records::Record::Allocation(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    let mut twin = dup.clone();
    twin.key.container_id = "twin".into();
    records.push(ipkeep_store::records::Record::Allocation(twin));
    let err = State::from_records(records).unwrap_err();
    assert!(err.to_string().contains("held twice"), "{err}");
}

#[test]
fn records_that_store_one_attachment_twice_are_refused() {
    let mut state = with_subnets(&[("a", "10.12.0.0/24")]);
    added(apply(&mut state, add("c1", &[&["a"]])).0);
    let mut records: Vec<_> = state.records().collect();
    let mut twin = records
        .iter()
        .find_map(|r| match r {
            ipkeep_store::records::Record::Allocation(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    // The same attachment again, holding another (free) address: kept
    // silently, one of the two would be lost from the index while its
    // address stayed taken.
    twin.addresses[0].address = "10.12.0.200".parse().unwrap();
    records.push(ipkeep_store::records::Record::Allocation(twin));
    let err = State::from_records(records).unwrap_err();
    assert!(
        err.to_string()
            .contains("the same attachment is stored twice"),
        "{err}"
    );
}

#[test]
fn a_slash_16_filled_to_99_percent_hands_out_every_remaining_address_once() {
    let mut state = with_subnets(&[("big", "10.20.0.0/16")]);
    let assignable = state.subnet_info("big").unwrap().usage.assignable as usize;
    let target = assignable * 99 / 100;
    for i in 0..target {
        added(apply(&mut state, add(&format!("c{i}"), &[&["big"]])).0);
    }
    // Free a scattered 1% so the free set is fragmented, then refill.
    for i in (0..target).step_by(97) {
        apply(&mut state, del(&format!("c{i}")));
    }
    let mut seen = HashSet::<IpAddr>::new();
    let mut i = 0;
    loop {
        let (reply, _) = apply(&mut state, add(&format!("r{i}"), &[&["big"]]));
        match reply {
            Reply::Added(r) => assert!(seen.insert(r.ips[0].address.addr()), "handed out twice"),
            Reply::Failed(e) => {
                assert_eq!(e.code, code::EXHAUSTED);
                break;
            }
            other => panic!("{other:?}"),
        }
        i += 1;
    }
    let usage = state.subnet_info("big").unwrap().usage;
    assert_eq!(usage.free, 0);
    assert_eq!(usage.held as usize, assignable);
}

#[test]
fn ip_list_pages_and_filters() {
    let mut state = with_subnets(&[("a", "10.13.0.0/24"), ("b", "10.14.0.0/24")]);
    for i in 0..25 {
        added(
            apply(
                &mut state,
                add_on(
                    &format!("a{i}"),
                    &[&["a"]],
                    if i % 2 == 0 { "n1" } else { "n2" },
                ),
            )
            .0,
        );
        added(apply(&mut state, add(&format!("b{i}"), &[&["b"]])).0);
    }
    let mut req = IpListRequest {
        subnet: Some("a".into()),
        limit: 10,
        ..Default::default()
    };
    let mut all = vec![];
    loop {
        let page = state.ip_page(&req);
        all.extend(page.entries);
        match page.next {
            Some(next) => req.after = Some(next),
            None => break,
        }
    }
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0].address < w[1].address));
    let page = state.ip_page(&IpListRequest {
        node: Some("n1".into()),
        limit: 100,
        ..Default::default()
    });
    assert_eq!(page.entries.len(), 13);
    let page = state.ip_page(&IpListRequest {
        subnet: Some("zzz".into()),
        limit: 100,
        ..Default::default()
    });
    assert!(page.entries.is_empty());
}

#[test]
fn an_add_issued_before_a_del_of_its_attachment_never_lands_after_it() {
    let mut state = with_subnets(&[("a", "10.15.0.0/24")]);
    let t = 1_700_000_000_000_000u64;
    let add_at = |issued_us: u64| Command::Add {
        request: match add("late", &[&["a"]]) {
            Command::Add { request, .. } => request,
            _ => unreachable!(),
        },
        node: "n".into(),
        at_ms: issued_us / 1000,
        issued_us,
    };
    let del_at = |issued_us: u64| Command::Del {
        key: key("late"),
        at_ms: issued_us / 1000,
        issued_us,
    };
    // The caller gave up on an ADD issued at t and sent DEL at t+5s; the ADD
    // reaches the log after the DEL: void, nothing allocated.
    let (reply, _) = apply(&mut state, del_at(t + 5_000_000));
    assert!(matches!(reply, Reply::Deleted(_)));
    let e = failed(apply(&mut state, add_at(t)).0);
    assert_eq!(e.code, code::TRY_AGAIN);
    assert!(state.allocation(&key("late")).is_none());
    // The same attachment added again after its DEL (podman network connect
    // after disconnect) is a new ADD and gets an address.
    added(apply(&mut state, add_at(t + 6_000_000)).0);
    // Tombstones outlive a rebuild, and go once the window has passed on
    // the leader's clock.
    let rebuilt = State::from_records(state.records()).unwrap();
    assert_eq!(rebuilt.tombstone(&key("late")), Some(t + 5_000_000));
    apply(
        &mut state,
        Command::Del {
            key: key("other"),
            at_ms: (t + 120_000_000) / 1000,
            issued_us: t + 120_000_000,
        },
    );
    assert_eq!(
        state.tombstone(&key("late")),
        None,
        "expired after the window"
    );
}

#[test]
fn a_node_whose_clock_runs_fast_does_not_age_other_nodes_fences() {
    let mut state = with_subnets(&[("a", "10.15.0.0/24")]);
    // The leader's clock, and a node's that runs two minutes ahead of it.
    let leader_ms = 1_700_000_000_000u64;
    let fast_us = (leader_ms + 120_000) * 1000;
    let late_add = Command::Add {
        request: match add("late", &[&["a"]]) {
            Command::Add { request, .. } => request,
            _ => unreachable!(),
        },
        node: "n".into(),
        at_ms: leader_ms + 3_000,
        issued_us: leader_ms * 1000,
    };
    // A DEL from a node with a true clock fences the ADD its caller gave up on...
    apply(
        &mut state,
        Command::Del {
            key: key("late"),
            at_ms: leader_ms + 1_000,
            issued_us: (leader_ms + 1_000) * 1000,
        },
    );
    // ...and a DEL of another pod through the fast node, applied a second
    // later by the leader, must not expire that fence.
    apply(
        &mut state,
        Command::Del {
            key: key("other"),
            at_ms: leader_ms + 2_000,
            issued_us: fast_us,
        },
    );
    assert_eq!(
        state.tombstone(&key("late")),
        Some((leader_ms + 1_000) * 1000)
    );
    let e = failed(apply(&mut state, late_add).0);
    assert_eq!(e.code, code::TRY_AGAIN);
    assert!(state.allocation(&key("late")).is_none());
    // The fast node's own tombstone ages on the leader's clock as well: it
    // goes a window after it was applied, not two minutes late.
    apply(
        &mut state,
        Command::Del {
            key: key("third"),
            at_ms: leader_ms + 2_000 + 60_001,
            issued_us: (leader_ms + 62_001) * 1000,
        },
    );
    assert_eq!(state.tombstone(&key("other")), None);
    assert_eq!(state.tombstone(&key("late")), None);
}

#[test]
fn a_batch_decides_exactly_what_its_writes_would_as_entries_of_their_own() {
    // The subnet has room for 61 pods: the batch runs it out, so some ADDs
    // in the middle are refused while the DELs around them free addresses.
    let writes: Vec<Command> = (0..90)
        .flat_map(|i| {
            let mut v = vec![add(&format!("c{i}"), &[&["a"]])];
            if i % 4 == 3 {
                v.push(del(&format!("c{}", i - 2)));
            }
            v
        })
        .collect();

    let mut separate = with_subnets(&[("a", "10.12.0.0/26")]);
    let mut one_by_one = Vec::new();
    let mut separate_journal = Vec::new();
    for write in &writes {
        let (reply, journal) = apply(&mut separate, write.clone());
        one_by_one.push(reply);
        separate_journal.extend(journal);
    }

    let mut batched = with_subnets(&[("a", "10.12.0.0/26")]);
    let (reply, batch_journal) = apply(&mut batched, Command::Batch(writes.clone()));
    let Reply::Batch(replies) = reply else {
        panic!("a batch is answered by a batch, got {reply:?}");
    };
    assert!(
        one_by_one.iter().any(|r| matches!(r, Reply::Failed(_))),
        "the run must include refused ADDs"
    );
    assert_eq!(
        replies, one_by_one,
        "the same answer to each write, in order"
    );
    assert_eq!(batch_journal, separate_journal, "the same writes to disk");
    assert_eq!(
        batched.records().collect::<Vec<_>>(),
        separate.records().collect::<Vec<_>>()
    );
}

#[test]
fn a_batch_inside_a_batch_is_refused_and_changes_nothing() {
    let mut state = with_subnets(&[("a", "10.13.0.0/24")]);
    let before: Vec<_> = state.records().collect();
    let (reply, journal) = apply(
        &mut state,
        Command::Batch(vec![Command::Batch(vec![add("c1", &[&["a"]])])]),
    );
    match reply {
        Reply::Batch(replies) => {
            assert_eq!(replies.len(), 1);
            let e = failed(replies[0].clone());
            assert!(e.to_string().contains("command"), "{e}");
        }
        other => panic!("expected a batch reply, got {other:?}"),
    }
    assert!(journal.is_empty());
    assert_eq!(state.records().collect::<Vec<_>>(), before);
}
