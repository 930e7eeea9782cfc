//! Fixed addresses: pools, sticky bindings, explicit requests, tenants and
//! quotas, reservations, history, applied to the state machine.

mod common;

use std::net::IpAddr;

use common::subnet;
use ipkeep_api::code;
use ipkeep_api::message::{AddRequest, AddResult, MacWish, PoolRequest};
use ipkeep_api::model::{
    AttachmentKey, IpRange, PodPattern, PodRef, PodSelector, ReleaseReason, Sticky, SubnetUpdate,
};
use ipkeep_api::{ApiError, Mac};
use ipkeep_store::records::Record;
use ipkeep_store::{Command, Reply, State};

const T0: u64 = 1_700_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(cid: &str) -> AttachmentKey {
    AttachmentKey {
        network: "net".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

fn add_pod(cid: &str, ns: &str, pod: &str, subnets: &[&str], requested: &[&str]) -> Command {
    Command::Add {
        request: AddRequest {
            key: key(cid),
            netns: String::new(),
            subnets: subnets.iter().map(|s| vec![s.to_string()]).collect(),
            pod: PodRef {
                namespace: Some(ns.into()),
                name: Some(pod.into()),
                uid: None,
            },
            requested: requested.iter().map(|a| ip(a)).collect(),
            mac: Default::default(),
            timing: Default::default(),
        },
        node: "n1".into(),
        at_ms: T0,
        issued_us: T0 * 1000,
    }
}

fn del_at(cid: &str, at: u64) -> Command {
    Command::Del {
        key: key(cid),
        at_ms: at,
        issued_us: at * 1000,
    }
}

fn run(state: &mut State, c: Command) -> Reply {
    state.apply(&c, &mut Vec::new())
}

fn ok_addr(r: Reply) -> IpAddr {
    match r {
        Reply::Added(AddResult { ips, .. }) => ips[0].address.addr(),
        other => panic!("expected an address, got {other:?}"),
    }
}

fn err(r: Reply) -> ApiError {
    match r {
        Reply::Failed(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn pool(
    name: &str,
    subnet: &str,
    ranges: &str,
    ns: Option<&str>,
    pods: &[&str],
    sticky: Option<Sticky>,
) -> Command {
    Command::CreatePool {
        request: PoolRequest {
            name: name.into(),
            subnet: subnet.into(),
            addresses: ranges
                .split(',')
                .map(|r| r.parse::<IpRange>().unwrap())
                .collect(),
            selector: PodSelector {
                namespace: ns.map(String::from),
                pods: pods
                    .iter()
                    .map(|p| p.parse::<PodPattern>().unwrap())
                    .collect(),
            },
            sticky,
        },
    }
}

/// A /24 "db" subnet (gateway .1) with a sticky pool for etcd-* in namespace db.
fn etcd() -> State {
    let mut s = State::default();
    assert!(matches!(
        run(
            &mut s,
            Command::CreateSubnet {
                spec: subnet("db", "10.40.0.0/24")
            }
        ),
        Reply::Subnet(_)
    ));
    let r = run(
        &mut s,
        pool(
            "etcd",
            "db",
            "10.40.0.11-10.40.0.13",
            Some("db"),
            &["etcd-*"],
            Some(Sticky::default()),
        ),
    );
    assert!(matches!(r, Reply::Pool(_)), "{r:?}");
    s
}

#[test]
fn a_pool_serves_the_pods_it_selects_and_nobody_else() {
    let mut s = etcd();
    for i in 0..3 {
        let a = ok_addr(run(
            &mut s,
            add_pod(&format!("e{i}"), "db", &format!("etcd-{i}"), &["db"], &[]),
        ));
        assert!(
            ("10.40.0.11"..="10.40.0.13").contains(&a.to_string().as_str()),
            "{a}"
        );
    }
    // Full: the fourth etcd pod gets an error naming the pool, not another address.
    let e = err(run(&mut s, add_pod("e3", "db", "etcd-3", &["db"], &[])));
    assert_eq!(e.code, code::POOL_EXHAUSTED);
    assert!(e.details.contains("etcd"), "{e}");
    // Other pods never get pool addresses, even when asking.
    for i in 0..20 {
        let a = ok_addr(run(
            &mut s,
            add_pod(&format!("w{i}"), "db", &format!("web-{i}"), &["db"], &[]),
        ));
        assert!(
            !(11..=13).contains(
                &a.to_string()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            ),
            "{a}"
        );
    }
    let e = err(run(
        &mut s,
        add_pod("x", "other", "etcd-0", &["db"], &["10.40.0.12"]),
    ));
    assert_eq!(e.code, code::ADDRESS_UNAVAILABLE);
    // A pool cannot be deleted while used, and says by whom.
    let e = err(run(
        &mut s,
        Command::DeletePool {
            name: "etcd".into(),
        },
    ));
    assert_eq!(e.code, code::CONFLICT);
    assert!(e.details.contains("10.40.0.11"), "{e}");
}

#[test]
fn pools_refuse_overlaps_and_used_addresses() {
    let mut s = etcd();
    let e = err(run(
        &mut s,
        pool(
            "other",
            "db",
            "10.40.0.20-10.40.0.30",
            Some("db"),
            &["etcd-0"],
            None,
        ),
    ));
    assert!(e.details.contains("already selects"), "{e}");
    let e = err(run(
        &mut s,
        pool(
            "other",
            "db",
            "10.40.0.13-10.40.0.20",
            None,
            &["web-*"],
            None,
        ),
    ));
    assert!(e.details.contains("overlaps pool etcd"), "{e}");
    let held = ok_addr(run(&mut s, add_pod("w", "db", "web-0", &["db"], &[])));
    let e = err(run(
        &mut s,
        pool("other", "db", &held.to_string(), None, &["api-*"], None),
    ));
    assert!(e.details.contains("is held by"), "{e}");
    let e = err(run(
        &mut s,
        pool("all", "db", "10.40.0.50", None, &[], None),
    ));
    assert!(e.details.starts_with("pods:"), "{e}");
}

#[test]
fn a_pool_grows_and_shrinks_but_not_under_a_pod() {
    let mut s = etcd();
    let a = ok_addr(run(&mut s, add_pod("e0", "db", "etcd-0", &["db"], &[])));
    assert_eq!(a, ip("10.40.0.11"));
    let r = run(
        &mut s,
        Command::ResizePool {
            name: "etcd".into(),
            addresses: vec!["10.40.0.11-10.40.0.15".parse().unwrap()],
        },
    );
    let Reply::Pool(info) = r else {
        panic!("{r:?}")
    };
    assert_eq!(info.usage.size, 5);
    let e = err(run(
        &mut s,
        Command::ResizePool {
            name: "etcd".into(),
            addresses: vec!["10.40.0.12-10.40.0.15".parse().unwrap()],
        },
    ));
    assert!(
        e.details.contains("10.40.0.11") && e.details.contains("held"),
        "{e}"
    );
    let before = s.subnet_info("db").unwrap().usage;
    assert!(matches!(
        run(
            &mut s,
            Command::ResizePool {
                name: "etcd".into(),
                addresses: vec!["10.40.0.11".parse().unwrap()]
            }
        ),
        Reply::Pool(_)
    ));
    let after = s.subnet_info("db").unwrap().usage;
    assert_eq!(
        after.free,
        before.free + 4,
        "addresses that left the pool are free in the subnet"
    );
    assert_eq!(after.pooled, 1);
}

#[test]
fn a_sticky_pod_gets_its_address_back_on_any_node() {
    let mut s = etcd();
    let first = ok_addr(run(&mut s, add_pod("A", "db", "etcd-1", &["db"], &[])));
    // While the old container still runs, a new one of the same name is refused.
    let e = err(run(&mut s, add_pod("B", "db", "etcd-1", &["db"], &[])));
    assert_eq!(e.code, code::POD_RUNNING);
    assert!(e.details.contains("db/etcd-1"), "{e}");
    run(&mut s, del_at("A", T0 + 10));
    // Meanwhile another etcd pod cannot take it.
    let other = ok_addr(run(&mut s, add_pod("C", "db", "etcd-2", &["db"], &[])));
    assert_ne!(other, first);
    let again = ok_addr(run(
        &mut s,
        Command::Add {
            request: match add_pod("B", "db", "etcd-1", &["db"], &[]) {
                Command::Add { request, .. } => request,
                _ => unreachable!(),
            },
            node: "n2".into(),
            at_ms: T0 + 20,
            issued_us: (T0 + 20) * 1000,
        },
    ));
    assert_eq!(again, first);
    let b = s.binding(&("db".into(), "etcd-1".into())).unwrap();
    assert_eq!(b.holder, Some(key("B")));
    // Released only when the pod is gone; then the address is free again.
    let e = err(run(
        &mut s,
        Command::ReleaseBinding {
            namespace: "db".into(),
            name: "etcd-1".into(),
        },
    ));
    assert!(e.details.contains("running"), "{e}");
    run(&mut s, del_at("B", T0 + 30));
    assert_eq!(s.pool_info("etcd").unwrap().usage.bound_idle, 1);
    assert!(matches!(
        run(
            &mut s,
            Command::ReleaseBinding {
                namespace: "db".into(),
                name: "etcd-1".into()
            }
        ),
        Reply::Done
    ));
    assert_eq!(s.pool_info("etcd").unwrap().usage.bound_idle, 0);
    assert!(s.pool("etcd").unwrap().is_free(first));
}

#[test]
fn idle_bindings_expire_after_their_ttl_only() {
    let mut s = State::default();
    let mut spec = subnet("sts", "10.41.0.0/24");
    spec.sticky = Some(Sticky {
        idle_ttl_ms: Some(60_000),
    });
    run(&mut s, Command::CreateSubnet { spec });
    let a = ok_addr(run(&mut s, add_pod("A", "ns", "db-0", &["sts"], &[])));
    run(&mut s, del_at("A", T0 + 1_000));
    let Reply::Expired(gone) = run(&mut s, Command::ExpireBindings { at_ms: T0 + 30_000 }) else {
        panic!()
    };
    assert!(gone.is_empty(), "not yet");
    let Reply::Expired(gone) = run(&mut s, Command::ExpireBindings { at_ms: T0 + 61_000 }) else {
        panic!()
    };
    assert_eq!(gone, vec![("ns".to_string(), "db-0".to_string())]);
    assert!(s.subnet("sts").unwrap().is_free(a));
}

#[test]
fn explicit_addresses_are_granted_exactly_or_refused_with_the_reason() {
    let mut s = etcd();
    let mut spec = subnet("lan", "10.42.0.0/24");
    spec.exclude = vec!["10.42.0.200-10.42.0.210".parse().unwrap()];
    run(&mut s, Command::CreateSubnet { spec });
    assert_eq!(
        ok_addr(run(
            &mut s,
            add_pod("a", "x", "a", &["lan"], &["10.42.0.77"])
        )),
        ip("10.42.0.77")
    );
    let cases = [
        ("10.42.0.77", "held by"),
        ("10.42.0.1", "gateway"),
        ("10.42.0.205", "excluded"),
        ("10.99.0.1", "none of this network's subnets"),
    ];
    for (wanted, why) in cases {
        let e = err(run(&mut s, add_pod("b", "x", "b", &["lan"], &[wanted])));
        assert_eq!(e.code, code::ADDRESS_UNAVAILABLE, "{wanted}: {e}");
        assert!(e.details.contains(why), "{wanted}: {e}");
    }
    run(
        &mut s,
        Command::Reserve {
            range: "10.42.0.100-10.42.0.110".parse().unwrap(),
            note: "VIP".into(),
            at_ms: T0,
        },
    );
    let e = err(run(
        &mut s,
        add_pod("b", "x", "b", &["lan"], &["10.42.0.105"]),
    ));
    assert!(
        e.details.contains("reserved") && e.details.contains("VIP"),
        "{e}"
    );
    // A pool's address for a pod it selects is fine; for others it is not.
    assert_eq!(
        ok_addr(run(
            &mut s,
            add_pod("e", "db", "etcd-2", &["db"], &["10.40.0.13"])
        )),
        ip("10.40.0.13")
    );
    let e = err(run(
        &mut s,
        add_pod("f", "db", "web-1", &["db"], &["10.40.0.12"]),
    ));
    assert!(e.details.contains("pool etcd"), "{e}");
    // A sticky pod asking for another address than its own is told why.
    run(&mut s, del_at("e", T0 + 5));
    let e = err(run(
        &mut s,
        add_pod("g", "db", "etcd-2", &["db"], &["10.40.0.12"]),
    ));
    assert!(
        e.details.contains("10.40.0.13") && e.details.contains("sticky"),
        "{e}"
    );
    assert!(
        s.allocation(&key("b")).is_none()
            && s.allocation(&key("f")).is_none()
            && s.allocation(&key("g")).is_none()
    );
}

#[test]
fn tenants_and_quotas() {
    let mut s = State::default();
    let mut a = subnet("team-a-net", "10.43.0.0/24");
    a.tenancy.namespaces = vec!["team-a".into()];
    a.tenancy.quotas.insert("team-a".into(), 2);
    run(&mut s, Command::CreateSubnet { spec: a });
    run(
        &mut s,
        Command::CreateSubnet {
            spec: subnet("shared", "10.44.0.0/24"),
        },
    );
    // The first subnet the namespace may use is taken.
    let x = ok_addr(run(
        &mut s,
        add_pod("b1", "team-b", "p", &["team-a-net", "shared"], &[]),
    ));
    assert!(x.to_string().starts_with("10.44."), "{x}");
    let y = ok_addr(run(
        &mut s,
        add_pod("a1", "team-a", "p1", &["team-a-net", "shared"], &[]),
    ));
    assert!(y.to_string().starts_with("10.43."), "{y}");
    ok_addr(run(
        &mut s,
        add_pod("a2", "team-a", "p2", &["team-a-net", "shared"], &[]),
    ));
    let e = err(run(
        &mut s,
        add_pod("a3", "team-a", "p3", &["team-a-net", "shared"], &[]),
    ));
    assert_eq!(e.code, code::QUOTA_EXCEEDED);
    for w in ["team-a", "team-a-net", "2"] {
        assert!(e.details.contains(w), "{e}");
    }
    let e = err(run(
        &mut s,
        add_pod("b2", "team-b", "p", &["team-a-net"], &[]),
    ));
    assert_eq!(e.code, code::NOT_PERMITTED);
    assert!(
        e.details.contains("team-b") && e.details.contains("team-a-net"),
        "{e}"
    );
    // Raising the quota lets the pod in.
    let update = SubnetUpdate {
        quotas: vec![("team-a".into(), Some(3))],
        ..Default::default()
    };
    run(
        &mut s,
        Command::UpdateSubnet {
            name: "team-a-net".into(),
            update,
        },
    );
    ok_addr(run(
        &mut s,
        add_pod("a3", "team-a", "p3", &["team-a-net", "shared"], &[]),
    ));
    assert_eq!(
        s.subnet_info("team-a-net")
            .unwrap()
            .by_namespace
            .get("team-a"),
        Some(&3)
    );
}

#[test]
fn bound_addresses_count_toward_the_quota() {
    let mut s = State::default();
    let mut spec = subnet("q", "10.45.0.0/24");
    spec.tenancy.quotas.insert("ns".into(), 1);
    spec.sticky = Some(Sticky::default());
    run(&mut s, Command::CreateSubnet { spec });
    ok_addr(run(&mut s, add_pod("a", "ns", "p-0", &["q"], &[])));
    run(&mut s, del_at("a", T0 + 1));
    // p-0's address is kept for it: another pod of ns is over the quota...
    assert_eq!(
        err(run(&mut s, add_pod("b", "ns", "p-1", &["q"], &[]))).code,
        code::QUOTA_EXCEEDED
    );
    // ...but p-0 itself comes back.
    ok_addr(run(&mut s, add_pod("c", "ns", "p-0", &["q"], &[])));
}

#[test]
fn reservations_keep_addresses_out_of_reach() {
    let mut s = State::default();
    run(
        &mut s,
        Command::CreateSubnet {
            spec: subnet("r", "10.46.0.0/29"),
        },
    ); // .2 .. .6
    let held = ok_addr(run(&mut s, add_pod("a", "ns", "p", &["r"], &[])));
    let e = err(run(
        &mut s,
        Command::Reserve {
            range: IpRange::single(held),
            note: "router".into(),
            at_ms: T0,
        },
    ));
    assert!(e.details.contains("held"), "{e}");
    assert!(matches!(
        run(
            &mut s,
            Command::Reserve {
                range: "10.46.0.3-10.46.0.6".parse().unwrap(),
                note: "lb".into(),
                at_ms: T0
            }
        ),
        Reply::Done
    ));
    assert_eq!(
        err(run(&mut s, add_pod("b", "ns", "q", &["r"], &[]))).code,
        code::EXHAUSTED
    );
    let e = err(run(
        &mut s,
        Command::Unreserve {
            range: "10.46.0.3-10.46.0.4".parse().unwrap(),
        },
    ));
    assert!(e.details.contains("cuts through"), "{e}");
    assert!(matches!(
        run(
            &mut s,
            Command::Unreserve {
                range: "10.46.0.0/29".parse().unwrap()
            }
        ),
        Reply::Done
    ));
    ok_addr(run(&mut s, add_pod("b", "ns", "q", &["r"], &[])));
}

#[test]
fn history_says_who_held_an_address_and_why_it_was_released() {
    let mut s = State::default();
    run(
        &mut s,
        Command::CreateSubnet {
            spec: subnet("h", "10.47.0.0/30"),
        },
    ); // one address: .2
    let a = ok_addr(run(&mut s, add_pod("first", "ns", "one", &["h"], &[])));
    run(&mut s, del_at("first", T0 + 100));
    assert_eq!(
        ok_addr(run(&mut s, add_pod("second", "ns", "two", &["h"], &[]))),
        a
    );
    run(
        &mut s,
        Command::Gc {
            network: "net".into(),
            node: "n1".into(),
            valid: vec![],
            at_ms: T0 + 200,
            issued_us: (T0 + 200) * 1000,
        },
    );
    let past = s.history_of(a);
    assert_eq!(past.len(), 2);
    assert_eq!(past[0].key.container_id, "second");
    assert_eq!(past[0].reason, ReleaseReason::Gc);
    assert_eq!(past[1].pod.name.as_deref(), Some("one"));
    assert_eq!(
        (past[1].from_ms, past[1].to_ms, past[1].reason),
        (T0, T0 + 100, ReleaseReason::Del)
    );
}

#[test]
fn gc_releases_attachments_but_keeps_bindings_and_pools() {
    let mut s = etcd();
    let a = ok_addr(run(&mut s, add_pod("e0", "db", "etcd-0", &["db"], &[])));
    run(
        &mut s,
        Command::Gc {
            network: "net".into(),
            node: "n1".into(),
            valid: vec![],
            at_ms: T0 + 1,
            issued_us: (T0 + 1) * 1000,
        },
    );
    assert!(s.allocation(&key("e0")).is_none());
    assert!(s.pool_info("etcd").is_some());
    assert_eq!(
        s.binding(&("db".into(), "etcd-0".into()))
            .unwrap()
            .addresses[0]
            .address,
        a
    );
    assert_eq!(
        ok_addr(run(&mut s, add_pod("e0b", "db", "etcd-0", &["db"], &[]))),
        a
    );
}

#[test]
fn every_kind_of_record_rebuilds_the_same_state() {
    let mut s = etcd();
    let mut spec = subnet("lan", "10.48.0.0/24");
    spec.sticky = Some(Sticky {
        idle_ttl_ms: Some(1000),
    });
    spec.tenancy.quotas.insert("db".into(), 50);
    run(&mut s, Command::CreateSubnet { spec });
    run(
        &mut s,
        Command::Reserve {
            range: "10.48.0.100-10.48.0.120".parse().unwrap(),
            note: "lb".into(),
            at_ms: T0,
        },
    );
    for i in 0..3 {
        ok_addr(run(
            &mut s,
            add_pod(
                &format!("e{i}"),
                "db",
                &format!("etcd-{i}"),
                &["db", "lan"],
                &[],
            ),
        ));
    }
    run(&mut s, del_at("e1", T0 + 5));
    for i in 0..10 {
        ok_addr(run(
            &mut s,
            add_pod(&format!("l{i}"), "db", &format!("app-{i}"), &["lan"], &[]),
        ));
    }
    for i in (0..10).step_by(3) {
        run(&mut s, del_at(&format!("l{i}"), T0 + 9));
    }
    let mut rebuilt = State::from_records(s.records()).expect("records rebuild");
    assert_eq!(
        rebuilt.records().collect::<Vec<_>>(),
        s.records().collect::<Vec<_>>()
    );
    // What a snapshot build takes under the lock gives the same records,
    // and keeps giving them while the state moves on.
    let records_then: Vec<_> = s.records().collect();
    let mut later = s.clone();
    let captured = later.capture();
    run(&mut later, del_at("l1", T0 + 10));
    ok_addr(run(
        &mut later,
        add_pod("l-new", "db", "app-new", &["lan"], &[]),
    ));
    assert_ne!(later.records().collect::<Vec<_>>(), records_then);
    assert_eq!(captured.records().collect::<Vec<_>>(), records_then);
    for name in ["db", "lan"] {
        assert_eq!(rebuilt.subnet_info(name), s.subnet_info(name));
    }
    assert_eq!(rebuilt.pool_info("etcd"), s.pool_info("etcd"));
    for c in [
        add_pod("n1", "db", "etcd-1", &["db", "lan"], &[]),
        add_pod("n2", "db", "app-0", &["lan"], &[]),
        add_pod("n3", "db", "new", &["lan"], &[]),
        Command::ExpireBindings {
            at_ms: T0 + 100_000,
        },
    ] {
        assert_eq!(run(&mut rebuilt, c.clone()), run(&mut s, c));
    }
}

fn with_mac(command: Command, wish: MacWish) -> Command {
    match command {
        Command::Add {
            mut request,
            node,
            at_ms,
            issued_us,
        } => {
            request.mac = wish;
            Command::Add {
                request,
                node,
                at_ms,
                issued_us,
            }
        }
        other => other,
    }
}

fn mac_of(r: Reply) -> Option<Mac> {
    match r {
        Reply::Added(result) => result.mac,
        other => panic!("expected an address, got {other:?}"),
    }
}

#[test]
fn the_mac_follows_the_pod_like_its_address() {
    let mut s = etcd();
    // IPAM mode: no MAC is decided or kept.
    assert_eq!(
        mac_of(run(&mut s, add_pod("A", "db", "etcd-0", &["db"], &[]))),
        None
    );
    run(&mut s, del_at("A", T0 + 1));
    assert_eq!(
        s.binding(&("db".into(), "etcd-0".into())).unwrap().mac,
        None
    );
    // Main-plugin mode without a wish: derived from the (sticky) address.
    let derived = mac_of(run(
        &mut s,
        with_mac(add_pod("B", "db", "etcd-0", &["db"], &[]), MacWish::Any),
    ))
    .expect("a MAC");
    assert_eq!(derived, Mac::derived_from(ip("10.40.0.11")));
    run(&mut s, del_at("B", T0 + 2));
    // An explicit MAC is granted and kept with the binding ...
    let explicit: Mac = "02:00:00:00:00:07".parse().unwrap();
    let got = mac_of(run(
        &mut s,
        with_mac(
            add_pod("C", "db", "etcd-0", &["db"], &[]),
            MacWish::Exactly(explicit),
        ),
    ));
    assert_eq!(got, Some(explicit));
    run(&mut s, del_at("C", T0 + 3));
    let b = s.binding(&("db".into(), "etcd-0".into())).unwrap();
    assert_eq!(b.mac, Some(explicit));
    // ... so the pod comes back with it, wherever it runs, without asking.
    let again = mac_of(run(
        &mut s,
        with_mac(add_pod("D", "db", "etcd-0", &["db"], &[]), MacWish::Any),
    ));
    assert_eq!(again, Some(explicit));
    // A retried ADD answers the same MAC.
    let retried = mac_of(run(
        &mut s,
        with_mac(add_pod("D", "db", "etcd-0", &["db"], &[]), MacWish::Any),
    ));
    assert_eq!(retried, Some(explicit));
}

#[test]
fn reclaim_takes_only_the_attachment_it_saw_and_forget_takes_a_nodes_all() {
    let mut s = etcd();
    let a = ok_addr(run(&mut s, add_pod("A", "db", "web-0", &["db"], &[])));
    let b = ok_addr(run(&mut s, add_pod("B", "db", "etcd-0", &["db"], &[])));
    // The reconciler saw A added at another time: A was deleted and added
    // again meanwhile, and stays.
    let r = run(
        &mut s,
        Command::Reclaim {
            attachments: vec![(key("A"), T0 - 5)],
            at_ms: T0 + 1,
            issued_us: (T0 + 1) * 1000,
        },
    );
    assert!(
        matches!(r, Reply::Collected(ref g) if g.released.is_empty()),
        "{r:?}"
    );
    assert!(s.allocation(&key("A")).is_some());
    let r = run(
        &mut s,
        Command::Reclaim {
            attachments: vec![(key("A"), T0)],
            at_ms: T0 + 2,
            issued_us: (T0 + 2) * 1000,
        },
    );
    assert!(
        matches!(r, Reply::Collected(ref g) if g.released == vec![(key("A"), vec![a])]),
        "{r:?}"
    );
    assert_eq!(s.history_of(a)[0].reason, ReleaseReason::Reconciler);
    // Forgetting node n1 releases B; its sticky binding stays for the pod.
    let r = run(
        &mut s,
        Command::ForgetNode {
            node: "n1".into(),
            at_ms: T0 + 3,
            issued_us: (T0 + 3) * 1000,
        },
    );
    assert!(
        matches!(r, Reply::Collected(ref g) if g.released.len() == 1),
        "{r:?}"
    );
    assert_eq!(s.history_of(b)[0].reason, ReleaseReason::NodeForgotten);
    assert!(s.binding(&("db".into(), "etcd-0".into())).is_some());
    // A stale ADD of the forgotten attachment cannot come back.
    let e = err(run(&mut s, add_pod("B", "db", "etcd-0", &["db"], &[])));
    assert_eq!(e.code, code::TRY_AGAIN, "{e}");
}

#[test]
fn an_allocation_listing_its_bound_address_twice_is_refused() {
    let mut s = State::default();
    let mut spec = subnet("lan", "10.48.0.0/24");
    spec.sticky = Some(Sticky { idle_ttl_ms: None });
    run(&mut s, Command::CreateSubnet { spec });
    let address = ok_addr(run(&mut s, add_pod("c1", "db", "web-0", &["lan"], &[])));
    let mut records: Vec<Record> = s.records().collect();
    let allocation = records
        .iter_mut()
        .find_map(|r| match r {
            Record::Allocation(a) => Some(a),
            _ => None,
        })
        .unwrap();
    // The binding names this allocation as its holder, so each listing
    // passes as the binding's own; the second must still be refused.
    let twice = allocation.addresses[0].clone();
    assert_eq!(twice.address, address);
    allocation.addresses.push(twice);
    let err = State::from_records(records).unwrap_err();
    assert!(err.to_string().contains("held twice"), "{err}");
}
