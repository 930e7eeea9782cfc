//! Backup and restore: `ipkeepctl snapshot save` on one cluster, a new
//! 3-node cluster brought up from the file with `ipkeepd --restore`, and
//! everything there: subnets, pools, bindings, reservations, allocations,
//! history; sticky pods get their addresses back.

use std::process::Command;
use std::time::Duration;

use ipkeep_cluster_test::bins::bin;
use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions};
use ipkeep_cluster_test::cni::{ipam, CniCall, CniOutput};
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::{needs, require};
use serde_json::{json, Value};

fn conf(socket: &std::path::Path, log: &std::path::Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "dbnet", "type": "ipkeep",
        "ipam": ipam(json!("db"), socket, log),
    })
}

fn add(cid: &str, ns: &str, pod: &str, conf: &Value) -> CniOutput {
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", &format!("/run/netns/{cid}"))
        .args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}"
        ))
        .stdin(conf)
        .run()
}

fn json_of(socket: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["--linearizable", "-o", "json"];
    all.extend_from_slice(args);
    ctl(socket, &all).json()
}

/// Everything an operator sees of the state, for comparison.
fn views(socket: &std::path::Path) -> Vec<Value> {
    vec![
        json_of(socket, &["subnet", "list"]),
        json_of(socket, &["pool", "list"]),
        json_of(socket, &["binding", "list"]),
        json_of(socket, &["ip", "reservations"]),
        json_of(socket, &["ip", "list"]),
        json_of(socket, &["ip", "history", "10.30.0.12"]),
    ]
}

#[test]
fn a_new_cluster_comes_up_from_a_backup_with_everything() {
    require!(needs::CLUSTER);
    let old = Daemon::start(DaemonOptions::default());
    let s = old.socket();
    for args in [
        &[
            "subnet",
            "create",
            "db",
            "--cidr",
            "10.30.0.0/24",
            "--mtu",
            "1450",
        ][..],
        &[
            "pool",
            "create",
            "etcd",
            "--subnet",
            "db",
            "--addresses",
            "10.30.0.11-10.30.0.13",
            "--namespace",
            "db",
            "--pods",
            "etcd-*",
            "--sticky",
        ],
        &["ip", "reserve", "10.30.0.200", "--note", "vip"],
    ] {
        let out = ctl(&s, args);
        assert!(out.ok(), "{args:?}: {}", out.stderr);
    }
    let c = conf(&s, &old.scratch().join("plugin.log"));
    let etcd0 = add("c1", "db", "etcd-0", &c).addresses();
    let etcd1 = add("c2", "db", "etcd-1", &c).addresses();
    assert!(add("c3", "web", "web-0", &c).ok());
    // etcd-1 stops: its address stays bound to its name, idle.
    let out = CniCall::ipkeep("DEL")
        .env("CNI_CONTAINERID", "c2")
        .env("CNI_IFNAME", "eth0")
        .stdin(&c)
        .run();
    assert!(out.ok(), "{}", out.stdout);
    let before = views(&s);

    let dir = tempfile::Builder::new()
        .prefix("ipkeep-backup-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("ipkeep.backup");
    let out = ctl(&s, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.ok(), "snapshot save: {}", out.stderr);
    assert!(file.metadata().unwrap().len() > 0);

    // A damaged backup is refused at start, saying what it is.
    let damaged = dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = Command::new(bin("ipkeepd"))
        .arg("--data-dir")
        .arg(dir.path().join("scratch-data"))
        .arg("--socket")
        .arg(dir.path().join("scratch.sock"))
        .arg("--restore")
        .arg(&damaged)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--restore") && stderr.contains("checksum"),
        "{stderr}"
    );

    // The new cluster: three nodes, node 1 seeds it from the backup.
    let cluster = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "db=10.30.0.0/24".into(),
            restore: Some(file.clone()),
            ..Default::default()
        },
        &dir.path().join("cluster"),
    );
    cluster.wait_for_leader(Duration::from_secs(30));
    for id in cluster.ids() {
        assert_eq!(
            views(&cluster.node(id).socket()),
            before,
            "node {id} holds the backup"
        );
    }

    // etcd-1 comes back on node 3 of the new cluster with its address.
    let n3 = cluster.node(3);
    let c3 = conf(&n3.socket(), &n3.dir.join("plugin.log"));
    assert_eq!(add("c9", "db", "etcd-1", &c3).addresses(), etcd1);
    // etcd-0 still runs (its attachment was restored): a second one is refused.
    assert_eq!(add("c10", "db", "etcd-0", &c3).error_code(), 108);
    // A new pod gets an address nobody holds.
    let fresh = add("c11", "web", "web-1", &c3).addresses();
    assert!(!fresh.contains(&etcd0[0]) && fresh[0] != "10.30.0.200");
    let held = json_of(&n3.socket(), &["ip", "list"]);
    assert_eq!(held.as_array().unwrap().len(), 4, "{held}");
}
