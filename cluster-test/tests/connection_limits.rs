//! Connections held or opened in a loop by a misbehaving process do not
//! starve the plugin on the node API nor the members on the peer port, and
//! their refusals are logged in aggregate, not one line each.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipkeep_cluster_test::bins::bin;
use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions, PEER_PORT};
use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall, CniOutput};
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::{needs, require};
use serde_json::json;

/// A running ipkeep-hold-connections; stopped (its stdin closed) on drop.
struct Holder(Child);

impl Holder {
    /// Starts one, optionally inside a network namespace, and waits until
    /// it has opened its connections.
    fn start(netns: Option<&str>, kind: &str, target: &str, count: usize) -> Holder {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(bin("ipkeep-hold-connections"));
                c
            }
            None => Command::new(bin("ipkeep-hold-connections")),
        };
        let mut child = cmd
            .args([kind, target, &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ipkeep-hold-connections");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("holder's report");
        assert!(line.starts_with("opened"), "holder said {line:?}");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn refusal_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("refused") && l.contains("connection"))
        .count()
}

fn add(daemon_socket: &std::path::Path, log: &std::path::Path, cid: &str) -> CniOutput {
    let conf = ipam_only_conf("1.0.0", "limits", ipam(json!("pods"), daemon_socket, log));
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", "/run/netns/limits")
        .stdin(&conf)
        .run()
}

/// 4,200 idle connections from one process would fill the node API's
/// 4,096 slots and leave a new ADD in the listen backlog until it timed out.
#[test]
fn one_process_holding_thousands_of_connections_leaves_room_for_the_plugin() {
    let daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.76.0.0/24".into(),
        ..Default::default()
    });
    let socket = daemon.socket();
    let holder = Holder::start(None, "unix", &socket.to_string_lossy(), 4_200);
    let out = add(&socket, &daemon.scratch().join("plugin.log"), "limits1");
    assert!(
        out.ok(),
        "ADD beside 4,200 idle connections: {}",
        out.stdout
    );
    assert!(ctl(&socket, &["status"]).ok());
    drop(holder);
    let lines = refusal_lines(&daemon.log());
    assert!(
        (1..=5).contains(&lines),
        "{lines} lines about refused connections:\n{}",
        daemon.log()
    );
}

/// Idle connections of many processes fill the slots: near the limit, the
/// idle ones are closed and a new ADD gets in (told to try again at most
/// while they are).
#[test]
fn near_the_limit_idle_connections_of_many_processes_make_room() {
    let daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.77.0.0/24".into(),
        extra_args: vec!["--max-api-connections".into(), "64".into()],
        ..Default::default()
    });
    let socket = daemon.socket();
    let target = socket.to_string_lossy().into_owned();
    let holders: Vec<Holder> = (0..4)
        .map(|_| Holder::start(None, "unix", &target, 30))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut told_to_wait = 0;
    let added = loop {
        let out = add(&socket, &daemon.scratch().join("plugin.log"), "limits2");
        if out.ok() {
            break out;
        }
        assert_eq!(out.error_code(), 11, "{}", out.stdout);
        told_to_wait += 1;
        assert!(
            Instant::now() < deadline,
            "no room for an ADD among idle connections after {told_to_wait} tries"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(added.addresses().len(), 1);
    drop(holders);
}

/// A process off the cluster holding hundreds of unauthenticated
/// connections to a follower's peer port, reopening each as it is closed,
/// while the leader dies: a new leader is elected and reaches the follower,
/// and the follower's log says what it refused in a few summary lines.
#[test]
fn a_flood_of_unauthenticated_peer_connections_does_not_keep_members_out() {
    require!(needs::CLUSTER);
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-limits-")
        .tempdir()
        .unwrap();
    let mut c = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "pods=10.78.0.0/24".into(),
            ..Default::default()
        },
        dir.path(),
    );
    let leader = c.wait_for_leader(Duration::from_secs(30));
    let flooded = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let target = format!("{}:{PEER_PORT}", c.node(flooded).ip);
    let outsider = c.outsider().name.clone();
    let flood = Holder::start(Some(&outsider), "tcp", &target, 600);
    c.kill9(leader);
    let new_leader = c.wait_for_leader(Duration::from_secs(30));
    assert_ne!(new_leader, leader);

    let flooded_node = c.node(flooded);
    let out = add(
        &flooded_node.socket(),
        &flooded_node.dir.join("plugin.log"),
        "limits3",
    );
    assert!(out.ok(), "ADD through the flooded follower: {}", out.stdout);
    drop(flood);
    let log = std::fs::read_to_string(flooded_node.log_path()).unwrap();
    let lines = refusal_lines(&log);
    assert!(
        (1..=10).contains(&lines),
        "{lines} lines about refused connections in the flooded node's log"
    );
    assert!(
        log.contains(ipkeep_cluster_test::cluster::OUTSIDER_IP),
        "the summary names the source"
    );
}
