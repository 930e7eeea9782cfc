//! 10,000 allocations across snapshots and log purges, kept by a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;

use ipkeep_api::message::{AddRequest, Request, Response};
use ipkeep_api::model::{AttachmentKey, PodRef};
use ipkeep_cluster_test::ctl::held;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};

const ALLOCATIONS: usize = 10_000;
const CLIENTS: usize = 8;

fn add_request(i: usize) -> Request {
    Request::Add(AddRequest {
        key: AttachmentKey {
            network: "bulk".into(),
            container_id: format!("bulk{i:05}"),
            ifname: "eth0".into(),
        },
        netns: format!("/run/netns/bulk{i}"),
        subnets: vec![vec!["pods".into()]],
        pod: PodRef {
            namespace: Some("bulk".into()),
            name: Some(format!("pod-{i}")),
            uid: None,
        },
        requested: vec![],
        mac: Default::default(),
        timing: Default::default(),
    })
}

#[test]
fn ten_thousand_allocations_survive_snapshots_purges_and_restarts() {
    let mut daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.90.0.0/16".into(),
        // Concurrent ADDs share entries, so 10,000 of them take fewer
        // entries than that: a snapshot every 200 still makes many.
        snapshot_every: Some(200),
        keep_logs: Some(20),
        ..Default::default()
    });
    // The node API directly (the plugin's own path is tested elsewhere): 10,000
    // execs would only make this test slow.
    let daemon_ref = Arc::new(daemon.socket());
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = daemon_ref.clone();
            thread::spawn(move || {
                let mut client =
                    ipkeep_api::Client::connect(&socket, std::time::Duration::from_secs(30))
                        .unwrap();
                for i in (c..ALLOCATIONS).step_by(CLIENTS) {
                    match client.call(&add_request(i)).expect("ADD") {
                        Response::Added(r) => assert_eq!(r.ips.len(), 1),
                        other => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client");
    }
    let before: HashMap<String, String> = held(&daemon.socket(), &[])
        .into_iter()
        .map(|(a, c)| (c, a))
        .collect();
    assert_eq!(before.len(), ALLOCATIONS);

    let status = daemon.status();
    let snapshot = status.snapshot_index.expect("a snapshot was taken");
    let purged = status.purged_index.expect("the log was purged behind it");
    let last = status.last_log_index.expect("a log");
    assert!(
        snapshot >= 400 && snapshot + 600 >= last,
        "snapshot at {snapshot}, log at {last}: snapshots are not keeping up"
    );
    assert!(
        purged > 0 && purged <= snapshot,
        "purged {purged}, snapshot {snapshot}"
    );
    assert!(daemon.data_dir().join("snapshots/current.snap").exists());

    // A clean stop and start, then a crash and start: all 10,000 are there.
    assert!(daemon.terminate().success());
    daemon.restart();
    let after: HashMap<String, String> = held(&daemon.socket(), &[])
        .into_iter()
        .map(|(a, c)| (c, a))
        .collect();
    assert_eq!(after, before);
    daemon.kill9();
    daemon.restart();
    let after: HashMap<String, String> = held(&daemon.socket(), &[])
        .into_iter()
        .map(|(a, c)| (c, a))
        .collect();
    assert_eq!(after, before);
    // And the restored state decides like the old one: the next ADD gets a new address.
    match daemon.request(&add_request(ALLOCATIONS)).expect("ADD") {
        Response::Added(r) => assert!(!before
            .values()
            .any(|a| *a == r.ips[0].address.addr().to_string())),
        other => panic!("{other:?}"),
    }
}
