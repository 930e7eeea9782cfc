//! A full disk on one node of a cluster: the leader hands over, a follower
//! stops taking entries but stays up, the status says which node is low,
//! and each catches up once space returns.

use std::time::{Duration, Instant};

use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions};
use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall, CniOutput};
use ipkeep_cluster_test::tmpfs::fill;
use ipkeep_cluster_test::wait;
use ipkeep_cluster_test::{needs, require};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

fn cluster(dir: &std::path::Path, subnet: &str) -> Cluster {
    Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: format!("pods={subnet}"),
            data_tmpfs_mib: Some(48),
            extra_args: vec!["--min-free-space".into(), "8MiB".into()],
            ..Default::default()
        },
        dir,
    )
}

fn add(c: &Cluster, node: u64, cid: &str) -> CniOutput {
    let n = c.node(node);
    let conf = ipam_only_conf(
        "1.0.0",
        "floor",
        ipam(json!("pods"), &n.socket(), &n.dir.join("plugin.log")),
    );
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", "/run/netns/floor")
        .stdin(&conf)
        .run()
}

/// An ADD through `node`, retried as a runtime retries error 11, until it
/// is acknowledged; its address.
fn add_until_acknowledged(c: &Cluster, node: u64, cid: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = add(c, node, cid);
        if out.ok() {
            return out.addresses().remove(0);
        }
        assert_eq!(out.error_code(), 11, "{}", out.stdout);
        assert!(
            Instant::now() < deadline,
            "no ADD through node {node}: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The HEALTH column `ipkeepctl status` on `via` shows for member `id`.
fn health(c: &Cluster, via: u64, id: u64) -> String {
    let out = c.ctl(via, &["status"]);
    assert!(out.ok(), "{}", out.stderr);
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .map(|l| l.split_whitespace().skip(7).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn assert_running(c: &mut Cluster, id: u64) {
    let exited = c.exited();
    assert!(
        exited.is_empty(),
        "node {id} exited ({exited:?}):\n{}",
        c.log_tail(id, 20)
    );
    assert!(c.status(id).is_some(), "node {id} does not answer");
}

#[test]
fn a_leader_under_its_floor_hands_over_and_comes_back_as_a_follower() {
    require!(needs::CLUSTER, needs::TMPFS);
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-floor-")
        .tempdir()
        .unwrap();
    let mut c = cluster(dir.path(), "10.79.0.0/24");
    let low = c.wait_for_leader(LIMIT);
    let healthy = c.ids().into_iter().find(|&id| id != low).unwrap();
    let filler = c.node(low).data_dir().join("filler");
    fill(&filler);

    let new_leader = wait::until("a healthy voter to take the lead", LIMIT, || {
        c.leader().filter(|&l| l != low)
    });
    assert_ne!(new_leader, low);
    let first = add_until_acknowledged(&c, healthy, "floor-a");
    assert_running(&mut c, low);
    assert_eq!(health(&c, healthy, low), "disk low");
    let own = c.ctl(low, &["status"]);
    assert!(own.stdout.contains("LOW"), "{}", own.stdout);
    // The low node takes no write itself, and says why.
    let refused = add(&c, low, "floor-b");
    assert_eq!(refused.error_code(), 11, "{}", refused.stdout);
    assert!(refused.error_text().contains("floor"), "{}", refused.stdout);
    assert_ne!(c.leader(), Some(low), "the low node took the lead back");

    std::fs::remove_file(&filler).unwrap();
    wait::until("the node to be healthy again", LIMIT, || {
        (health(&c, healthy, low) == "ok").then_some(())
    });
    let second = add_until_acknowledged(&c, low, "floor-b");
    assert_ne!(first, second);
    assert!(c.wait_caught_up(LIMIT), "the node did not catch up");
    assert_running(&mut c, low);
}

#[test]
fn a_follower_whose_disk_fills_stays_up_refusing_entries_and_catches_up() {
    require!(needs::CLUSTER, needs::TMPFS);
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-floor-")
        .tempdir()
        .unwrap();
    let mut c = cluster(dir.path(), "10.80.0.0/24");
    let leader = c.wait_for_leader(LIMIT);
    let low = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let filler = c.node(low).data_dir().join("filler");
    fill(&filler);
    wait::until("the follower to report its disk low", LIMIT, || {
        (health(&c, leader, low) == "disk low").then_some(())
    });

    // Writes go on with two of three; the full follower stays up.
    let mut given = Vec::new();
    for i in 0..20 {
        given.push(add_until_acknowledged(&c, leader, &format!("floor-f{i}")));
    }
    assert_running(&mut c, low);
    wait::until("the follower to log why it refuses entries", LIMIT, || {
        c.log_tail(low, 200)
            .contains("refuses replicated entries")
            .then_some(())
    });

    std::fs::remove_file(&filler).unwrap();
    assert!(c.wait_caught_up(LIMIT), "the follower did not catch up");
    assert_running(&mut c, low);
    assert!(c.wait_converged(LIMIT), "the nodes do not agree");
    let listed = c.ctl(low, &["ip", "list", "-o", "json"]).json();
    let held: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    for address in &given {
        assert!(
            held.contains(&address.as_str()),
            "{address} missing on the follower"
        );
    }
}
