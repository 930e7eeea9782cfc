//! A follower killed in the middle of installing a snapshot from the leader
//! starts again and catches up.
//!
//! openraft 0.9.25 purges a follower's log as soon as it has queued a
//! snapshot's install; were that purge to reach the disk before the
//! snapshot did, a kill -9 in between would leave a node whose log was
//! purged past its state, which could never start again. The follower here
//! is killed the moment its purge point changes on disk, in each of several
//! installs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ipkeep_api::message::{AddRequest, Request, Response};
use ipkeep_api::model::{AttachmentKey, PodRef};
use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions};
use ipkeep_cluster_test::wait;
use ipkeep_cluster_test::{needs, require};

const ROUNDS: usize = 3;
/// ADDs while the follower is down: enough entries for the leader to
/// snapshot and purge past the follower's log several times over.
const ADDS_WHILE_DOWN: usize = 1200;
const CLIENTS: usize = 4;

fn add_request(tag: &str, i: usize) -> Request {
    Request::Add(AddRequest {
        key: AttachmentKey {
            network: "crashnet".into(),
            container_id: format!("{tag}-{i:05}"),
            ifname: "eth0".into(),
        },
        netns: format!("/run/netns/{tag}{i}"),
        subnets: vec![vec!["pods".into()]],
        pod: PodRef::default(),
        requested: vec![],
        mac: Default::default(),
        timing: Default::default(),
    })
}

/// `count` ADDs through `socket`, from a few clients at once.
fn add_many(socket: &Path, tag: &str, count: usize) {
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = socket.to_owned();
            let tag = tag.to_owned();
            thread::spawn(move || {
                let mut client =
                    ipkeep_api::Client::connect(&socket, Duration::from_secs(30)).unwrap();
                for i in (c..count).step_by(CLIENTS) {
                    match client.call(&add_request(&tag, i)).expect("ADD") {
                        Response::Added(_) => {}
                        other => panic!("ADD {tag}-{i}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client");
    }
}

/// What identifies the file at `path` as written: a publish renames a new
/// file over it.
fn identity(path: &Path) -> Option<(u64, i64, i64)> {
    fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
}

#[test]
fn a_follower_killed_as_its_install_purges_the_log_starts_and_catches_up() {
    require!(needs::CLUSTER);
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-install-crash-")
        .tempdir()
        .unwrap();
    let mut c = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "pods=10.201.0.0/16".into(),
            snapshot_every: 200,
            keep_logs: 20,
            ..Default::default()
        },
        dir.path(),
    );
    let leader = c.wait_for_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let leader_socket = c.node(leader).socket();
    let data = c.node(follower).data_dir();
    let purged_file = data.join("log/purged");
    let snapshot_file = data.join("snapshots/current.snap");

    for round in 0..ROUNDS {
        let behind = c
            .status(follower)
            .and_then(|s| s.last_log_index)
            .unwrap_or(0);
        c.kill9(follower);
        add_many(&leader_socket, &format!("r{round}"), ADDS_WHILE_DOWN);
        wait::until(
            "the leader to purge past the stopped follower's log",
            Duration::from_secs(60),
            || {
                c.status(leader)
                    .and_then(|s| s.purged_index)
                    .filter(|&p| p > behind)
            },
        );
        let purged_before = fs::read(&purged_file).ok();
        let snapshot_before = identity(&snapshot_file);

        // A trickle of writes keeps entries coming after the snapshot; the
        // watch below spins on the two files so that the kill lands as
        // close behind the purge as this machine can make it.
        let trickle_stop = Arc::new(AtomicBool::new(false));
        let trickle = thread::spawn({
            let (socket, stop) = (leader_socket.clone(), trickle_stop.clone());
            move || {
                let mut client =
                    ipkeep_api::Client::connect(&socket, Duration::from_secs(30)).unwrap();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = client.call(&add_request(&format!("t{round}"), i));
                    thread::sleep(Duration::from_millis(20));
                }
            }
        });
        c.spawn(follower);
        let deadline = Instant::now() + Duration::from_secs(60);
        let snapshot_when_purged = loop {
            if fs::read(&purged_file).ok() != purged_before {
                let snapshot_now = identity(&snapshot_file);
                c.kill9(follower);
                break snapshot_now;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the restarted follower never purged its log:\n{}",
                c.log_tail(follower, 30)
            );
            std::hint::spin_loop();
        };
        trickle_stop.store(true, Ordering::Relaxed);
        trickle.join().expect("trickle");
        assert_ne!(
            snapshot_when_purged, snapshot_before,
            "round {round}: the log's purge point was on disk before the snapshot covering it"
        );

        c.spawn(follower);
        let started = Instant::now();
        while c.status(follower).is_none() {
            let exited = c.exited();
            assert!(
                exited.is_empty(),
                "round {round}: the follower exited at start ({exited:?}):\n{}",
                c.log_tail(follower, 15)
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: the follower does not serve:\n{}",
                c.log_tail(follower, 15)
            );
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            c.wait_caught_up(Duration::from_secs(60)),
            "round {round}: the follower did not catch up"
        );
    }
    assert!(
        c.wait_converged(Duration::from_secs(30)),
        "the nodes do not list the same addresses"
    );
}
