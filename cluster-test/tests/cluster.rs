//! Several nodes, each ipkeepd in its own network namespace: bootstrap from a
//! member list, any node answering, membership changes, peers without the
//! secret refused, catching up by snapshot, a minority answering 11.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions, Direction};
use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall, CniOutput};
use ipkeep_cluster_test::wait;
use ipkeep_cluster_test::{needs, require};
use serde_json::json;

fn cluster(nodes: usize, options: ClusterOptions) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-cluster-")
        .tempdir()
        .unwrap();
    let c = Cluster::start(ClusterOptions { nodes, ..options }, dir.path());
    (dir, c)
}

fn add(c: &Cluster, node: u64, cid: &str) -> CniOutput {
    let n = c.node(node);
    let conf = ipam_only_conf(
        "1.0.0",
        "clnet",
        ipam(json!("pods"), &n.socket(), &n.dir.join("plugin.log")),
    );
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", "/run/netns/x")
        .stdin(&conf)
        .run()
}

fn ip_list(c: &Cluster, node: u64, linearizable: bool) -> BTreeMap<String, String> {
    let mut args = vec!["ip", "list", "-o", "json"];
    if linearizable {
        args.push("--linearizable");
    }
    c.ctl(node, &args)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"]["container_id"].as_str().unwrap().to_owned(),
                e["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The members as `node` sees them once it has caught up with every change
/// committed before the call (a change made through another node is
/// committed by a quorum that need not include `node`).
fn members(c: &Cluster, node: u64) -> Vec<(u64, String)> {
    c.ctl(node, &["member", "list", "--linearizable", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_node_answers_and_sees_the_same_addresses() {
    require!(needs::CLUSTER);
    let (_dir, c) = cluster(3, ClusterOptions::default());
    let leader = c.wait_for_leader(Duration::from_secs(30));
    let mut given = BTreeMap::new();
    for node in c.ids() {
        for i in 0..10 {
            let cid = format!("n{node}p{i}");
            let out = add(&c, node, &cid);
            given.insert(cid, out.addresses().remove(0));
        }
    }
    let distinct: std::collections::BTreeSet<_> = given.values().collect();
    assert_eq!(distinct.len(), 30);
    // A node reads its own writes at once, and linearizable reads see everything anywhere.
    for node in c.ids() {
        assert_eq!(ip_list(&c, node, true), given, "node {node}");
    }
    // A retried ADD on another node returns the same address.
    let follower = c.ids().into_iter().find(|n| *n != leader).unwrap();
    assert_eq!(
        add(&c, follower, "n1p3").addresses(),
        vec![given["n1p3"].clone()]
    );
    let roles: Vec<String> = members(&c, follower).into_iter().map(|(_, r)| r).collect();
    assert_eq!(roles, vec!["voter", "voter", "voter"]);
}

#[test]
fn a_minority_answers_try_again_within_the_bound_and_recovers() {
    require!(needs::CLUSTER);
    let (_dir, mut c) = cluster(3, ClusterOptions::default());
    let leader = c.wait_for_leader(Duration::from_secs(30));
    // Cut the leader itself off: it is the minority now.
    let others: Vec<u64> = c.ids().into_iter().filter(|n| *n != leader).collect();
    c.cut(leader, &others, Direction::Both);
    let started = Instant::now();
    let out = add(&c, leader, "minority");
    let took = started.elapsed();
    assert_eq!(out.error_code(), 11, "{}", out.stdout);
    assert!(
        took < Duration::from_millis(3000 + 2000),
        "answered after {took:?}"
    );
    // The majority elects another leader and serves.
    let out = wait::until("the majority to serve", Duration::from_secs(20), || {
        let out = add(&c, others[0], "majority");
        out.ok().then_some(out)
    });
    let addr = out.addresses().remove(0);
    c.heal();
    // The old leader catches up and agrees; its failed ADD left nothing.
    wait::until(
        "the old leader to catch up",
        Duration::from_secs(20),
        || {
            let l = ip_list(&c, leader, false);
            (l.get("majority") == Some(&addr)).then_some(())
        },
    );
    assert!(!ip_list(&c, leader, true).contains_key("minority"));
}

#[test]
fn learners_join_serve_forward_and_are_promoted_and_removed() {
    require!(needs::CLUSTER);
    let (_dir, mut c) = cluster(4, ClusterOptions::default());
    // Make node 4 a stranger first: remove it, wipe it, start it empty with --join.
    c.wait_for_leader(Duration::from_secs(30));
    assert!(c.ctl(1, &["member", "remove", "4"]).ok());
    c.wipe(4);
    c.spawn(4);
    c.wait_serving(4, Duration::from_secs(20));
    assert!(add(&c, 1, "before-join").ok());
    // An empty node that is not a member cannot serve writes: 11, not a guess.
    let out = add(&c, 4, "too-early");
    assert_eq!(out.error_code(), 11, "{}", out.stdout);

    let addr = c.node(4).addr();
    let out = c.ctl(2, &["member", "add", "4", &addr]);
    assert!(out.ok(), "{}", out.stderr);
    wait::until("the learner to catch up", Duration::from_secs(20), || {
        ip_list(&c, 4, false)
            .contains_key("before-join")
            .then_some(())
    });
    assert!(members(&c, 1).contains(&(4, "learner".into())));
    // The learner forwards writes and reads its own.
    let out = add(&c, 4, "via-learner");
    assert!(out.ok(), "{}", out.stdout);
    assert!(ip_list(&c, 4, false).contains_key("via-learner"));

    let out = c.ctl(4, &["member", "promote", "4"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(members(&c, 1).contains(&(4, "voter".into())));
    // At most five voters: a sixth is refused with a reason (there is no
    // sixth node here, so ask for an unknown one).
    let out = c.ctl(1, &["member", "promote", "9"]);
    assert!(
        !out.ok() && out.stderr.contains("not a member"),
        "{}",
        out.stderr
    );
    let out = c.ctl(1, &["member", "add", "9", "not-an-address"]);
    assert!(!out.ok() && out.stderr.contains("addr:"), "{}", out.stderr);

    let out = c.ctl(3, &["member", "remove", "4"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(!members(&c, 1).iter().any(|(id, _)| *id == 4));
}

#[test]
fn a_removal_asked_for_on_every_node_at_once_answers_ok_everywhere() {
    require!(needs::CLUSTER);
    // What an operator's retry, or a forward given up when leadership moved
    // (the removed node may lead and step down), looks like to the leader:
    // the same change while it is still committing, or after it committed.
    let (_dir, c) = cluster(4, ClusterOptions::default());
    c.wait_for_leader(Duration::from_secs(30));
    let answers: Vec<_> = std::thread::scope(|s| {
        let asks: Vec<_> = [1, 2, 3, 4]
            .into_iter()
            .map(|via| {
                let c = &c;
                s.spawn(move || (via, c.ctl(via, &["member", "remove", "4"])))
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    for (via, out) in &answers {
        assert!(out.ok(), "remove asked on node {via}: {}", out.stderr);
    }
    assert!(!members(&c, 1).iter().any(|(id, _)| *id == 4));
    // A node that never was a member is still "not found".
    let out = c.ctl(1, &["member", "remove", "9"]);
    assert!(
        !out.ok() && out.stderr.contains("not a member"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_node_that_was_down_catches_up_by_snapshot() {
    require!(needs::CLUSTER);
    let (_dir, mut c) = cluster(
        3,
        ClusterOptions {
            snapshot_every: 40,
            keep_logs: 5,
            ..Default::default()
        },
    );
    let leader = c.wait_for_leader(Duration::from_secs(30));
    let down = c.ids().into_iter().find(|n| *n != leader).unwrap();
    c.kill9(down);
    for i in 0..150 {
        assert!(add(&c, leader, &format!("while-down-{i}")).ok());
    }
    let leader_status = c.status(leader).unwrap();
    assert!(
        leader_status.purged_index.unwrap_or(0) > 10,
        "the log was purged: {leader_status:?}"
    );
    c.spawn(down);
    c.wait_serving(down, Duration::from_secs(20));
    assert!(c.wait_converged(Duration::from_secs(30)));
    assert_eq!(ip_list(&c, down, false), ip_list(&c, leader, false));
    let log = std::fs::read_to_string(c.node(down).log_path()).unwrap();
    assert!(
        log.contains("snapshot installed"),
        "node {down} caught up without a snapshot:\n{log}"
    );
}

#[test]
fn a_peer_without_the_secret_is_refused_and_changes_nothing() {
    require!(needs::CLUSTER);
    let (dir, c) = cluster(3, ClusterOptions::default());
    c.wait_for_leader(Duration::from_secs(30));
    let term_before: Vec<u64> = c.ids().iter().map(|n| c.status(*n).unwrap().term).collect();
    // A rogue daemon next to node 1 claims to be node 1 of a cluster with
    // node 2, and asks node 2 for votes with the wrong secret.
    let rogue = dir.path().join("rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    std::fs::write(rogue.join("secret"), "not-the-cluster-secret-at-all").unwrap();
    let addr1 = format!("{}:7471", c.node(1).ip);
    let addr2 = c.node(2).addr();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &c.node(1).ns.name])
        .arg(ipkeep_cluster_test::bins::bin("ipkeepd"))
        .args(["--node-id", "1", "--listen", &addr1])
        .args(["--initial-cluster", &format!("1={addr1},2={addr2}")])
        .arg("--cluster-secret-file")
        .arg(rogue.join("secret"))
        .arg("--data-dir")
        .arg(rogue.join("data"))
        .arg("--socket")
        .arg(rogue.join("s.sock"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log2 = c.node(2).log_path();
    wait::until(
        "node 2 to refuse the rogue",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log2)
                .unwrap()
                .contains("refused connections: 1 failed authentication")
                .then_some(())
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(
        log.contains("cluster secret"),
        "the refusal says why:\n{log}"
    );
    let term_after: Vec<u64> = c.ids().iter().map(|n| c.status(*n).unwrap().term).collect();
    assert_eq!(
        term_before, term_after,
        "the rogue's vote requests changed no term"
    );
    assert!(add(&c, 2, "still-fine").ok());
}

/// `ipkeepctl status` on any node asks every member directly: each one's
/// role, term and applied index, its lag, and which cannot be reached.
#[test]
fn status_shows_every_members_health_from_any_node() {
    require!(needs::CLUSTER);
    let (_dir, mut c) = cluster(3, ClusterOptions::default());
    let leader = c.wait_for_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|n| *n != leader).unwrap();
    assert!(add(&c, leader, "s1").ok());
    let status = wait::until("every member answering", Duration::from_secs(20), || {
        let s = c.ctl(follower, &["status", "-o", "json"]).json();
        let members = s["members"].as_array()?.clone();
        members
            .iter()
            .all(|m| m["status"].is_object() && m["lag"] == 0)
            .then_some(s)
    });
    assert_eq!(
        status["node_id"], follower,
        "this node's own fields stay at the top"
    );
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let leaders: Vec<u64> = members
        .iter()
        .filter(|m| m["status"]["role"] == "Leader")
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders, vec![leader]);

    // A member that is down shows as unreachable; the others still answer.
    let down = c
        .ids()
        .into_iter()
        .find(|n| *n != leader && *n != follower)
        .unwrap();
    c.kill9(down);
    let out = c.ctl(follower, &["status"]);
    assert!(out.ok(), "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&down.to_string()) && l.contains(':'))
        .unwrap_or_else(|| panic!("no line for node {down}:\n{}", out.stdout));
    assert!(line.contains("unreachable"), "{line}");
    let s = c.ctl(follower, &["status", "-o", "json"]).json();
    let dead = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == down)
        .unwrap()
        .clone();
    assert!(
        dead["status"].is_null() && dead["error"].is_string(),
        "{dead}"
    );
}

/// The node-API ADD of `container` on the "pods" subnet, as the plugin sends it.
fn api_add(container: &str) -> ipkeep_api::message::Request {
    use ipkeep_api::message::{AddRequest, MacWish, Request, Timing};
    use ipkeep_api::model::{AttachmentKey, PodRef};
    Request::Add(AddRequest {
        key: AttachmentKey {
            network: "clnet".into(),
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        netns: "/run/netns/x".into(),
        subnets: vec![vec!["pods".into()]],
        pod: PodRef::default(),
        requested: vec![],
        mac: MacWish::NotNeeded,
        timing: Timing::default(),
    })
}

/// Sends the ADD of `container` to `socket` and returns the address it got.
fn api_address(client: &mut ipkeep_api::Client, container: &str) -> String {
    match client.call(&api_add(container)) {
        Ok(ipkeep_api::message::Response::Added(r)) => r.ips[0].address.addr().to_string(),
        other => panic!("ADD {container}: {other:?}"),
    }
}

#[test]
fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
    require!(needs::CLUSTER);
    const CLIENTS_PER_NODE: usize = 12;
    const ADDS_PER_CLIENT: usize = 16;
    let (_dir, c) = cluster(3, ClusterOptions::default());
    let leader = c.wait_for_leader(Duration::from_secs(10));
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let log_index = || {
        c.status(leader)
            .and_then(|s| s.last_log_index)
            .expect("the leader's status")
    };
    let before = log_index();

    // Clients on the leader's node, and on a follower's (whose writes reach
    // the leader's batcher forwarded, one by one).
    let got: BTreeMap<String, String> = std::thread::scope(|scope| {
        let workers: Vec<_> = [leader, follower]
            .into_iter()
            .flat_map(|node| (0..CLIENTS_PER_NODE).map(move |t| (node, t)))
            .map(|(node, t)| {
                let socket = c.node(node).socket();
                scope.spawn(move || {
                    let mut client =
                        ipkeep_api::Client::connect(&socket, Duration::from_secs(10)).unwrap();
                    (0..ADDS_PER_CLIENT)
                        .map(|i| {
                            let container = format!("n{node}-t{t}-{i}");
                            let address = api_address(&mut client, &container);
                            (container, address)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let writes = 2 * CLIENTS_PER_NODE * ADDS_PER_CLIENT;
    assert_eq!(got.len(), writes);
    let distinct: std::collections::BTreeSet<_> = got.values().collect();
    assert_eq!(distinct.len(), writes, "an address was given twice");

    let entries = log_index() - before;
    assert!(
        entries < writes as u64,
        "{writes} concurrent ADDs took {entries} log entries: none were shared"
    );

    // Each caller was answered with its own allocation: asked again (an ADD
    // is idempotent), every container names the address it was given.
    let mut client =
        ipkeep_api::Client::connect(&c.node(leader).socket(), Duration::from_secs(10)).unwrap();
    for (container, address) in &got {
        assert_eq!(&api_address(&mut client, container), address, "{container}");
    }
    for id in c.ids() {
        let view = ip_list(&c, id, true);
        let differ: Vec<_> = got
            .iter()
            .filter(|(container, address)| view.get(*container) != Some(address))
            .collect();
        assert!(differ.is_empty(), "node {id} holds otherwise: {differ:?}");
        assert_eq!(view.len(), got.len(), "node {id}'s view");
    }
}
