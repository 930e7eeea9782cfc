//! A member whose state fell behind its log's purge point (its database
//! lost writes, and no snapshot covers the difference) starts over under
//! its own id, takes a snapshot from its leader and catches up, instead of
//! refusing to start for ever.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ipkeep_api::message::{AddRequest, Request, Response};
use ipkeep_api::model::{AttachmentKey, PodRef};
use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions};
use ipkeep_cluster_test::wait;
use ipkeep_cluster_test::{needs, require};

const LIMIT: Duration = Duration::from_secs(60);

fn add_many(socket: &Path, tag: &str, count: usize) {
    let mut client = ipkeep_api::Client::connect(socket, Duration::from_secs(30)).unwrap();
    for i in 0..count {
        let request = Request::Add(AddRequest {
            key: AttachmentKey {
                network: "recovery".into(),
                container_id: format!("{tag}-{i:05}"),
                ifname: "eth0".into(),
            },
            netns: format!("/run/netns/{tag}{i}"),
            subnets: vec![vec!["pods".into()]],
            pod: PodRef::default(),
            requested: vec![],
            mac: Default::default(),
            timing: Default::default(),
        });
        match client.call(&request).expect("ADD") {
            Response::Added(_) => {}
            other => panic!("ADD {tag}-{i}: {other:?}"),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn a_member_whose_state_fell_behind_its_purged_log_starts_over_and_catches_up() {
    require!(needs::CLUSTER);
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-recovery-")
        .tempdir()
        .unwrap();
    let mut c = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "pods=10.202.0.0/16".into(),
            snapshot_every: 200,
            keep_logs: 20,
            ..Default::default()
        },
        dir.path(),
    );
    let leader = c.wait_for_leader(LIMIT);
    let victim = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let leader_socket = c.node(leader).socket();
    add_many(&leader_socket, "early", 100);
    assert!(c.wait_caught_up(LIMIT));

    // The database as it was, to put back later: it will have lost writes.
    let data = c.node(victim).data_dir();
    let old_db = dir.path().join("old-db");
    let copied_at = c.status(victim).and_then(|s| s.last_applied).unwrap_or(0);
    c.kill9(victim);
    copy_dir(&data.join("db"), &old_db);
    c.spawn(victim);
    c.wait_serving(victim, LIMIT);

    add_many(&leader_socket, "late", 1200);
    wait::until(
        "the victim to purge its log past the old state",
        LIMIT,
        || {
            c.status(victim)
                .and_then(|s| s.purged_index)
                .filter(|&p| p > copied_at + 1)
        },
    );
    c.kill9(victim);
    std::fs::remove_dir_all(data.join("db")).unwrap();
    copy_dir(&old_db, &data.join("db"));
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();

    c.spawn(victim);
    let started = std::time::Instant::now();
    while c.status(victim).is_none() {
        let exited = c.exited();
        assert!(
            exited.is_empty(),
            "the victim exited at start ({exited:?}):\n{}",
            c.log_tail(victim, 15)
        );
        assert!(started.elapsed() < LIMIT, "the victim does not serve");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.wait_caught_up(LIMIT), "the victim did not catch up");
    assert!(c.wait_converged(LIMIT), "the nodes do not agree");
    wait::until("the victim to finish recovering", LIMIT, || {
        (!data.join("recovering").exists()).then_some(())
    });
    let log = std::fs::read_to_string(c.node(victim).log_path()).unwrap();
    assert!(log.contains("recovered: this node votes"), "{log}");
    let moved = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("lost-"));
    assert!(moved, "what was damaged is kept aside");
    let held = c
        .ctl(victim, &["ip", "list", "-o", "json"])
        .json()
        .as_array()
        .map_or(0, |a| a.len());
    assert_eq!(held, 1300, "the victim holds every allocation");
    // And it is a voter that can lead: with the leader gone it takes part.
    c.kill9(leader);
    let next = c.wait_for_leader(LIMIT);
    assert_ne!(next, leader);
}
