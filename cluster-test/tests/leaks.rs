//! No leaked addresses without an API server: attachments whose network
//! namespace is gone are released by their node's reconciler after the
//! grace period (also after a restart), a forgotten node's addresses come
//! back, and sticky bindings stay through all of it. Real namespaces.

use std::time::{Duration, Instant};

use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions};
use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall};
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::netns::NetNs;
use ipkeep_cluster_test::wait;
use ipkeep_cluster_test::{needs, require};
use serde_json::{json, Value};

fn daemon(mode: &str, grace: &str) -> Daemon {
    let d = Daemon::start(DaemonOptions {
        default_subnet: "none".into(),
        extra_args: vec![
            "--reconcile".into(),
            mode.into(),
            "--leak-grace".into(),
            grace.into(),
            "--reconcile-every".into(),
            "200ms".into(),
        ],
        ..Default::default()
    });
    let out = ctl(
        &d.socket(),
        &[
            "subnet",
            "create",
            "pods",
            "--cidr",
            "10.130.0.0/24",
            "--sticky",
        ],
    );
    assert!(out.ok(), "{}", out.stderr);
    d
}

fn conf(d: &Daemon) -> Value {
    ipam_only_conf(
        "1.0.0",
        "lk",
        ipam(json!("pods"), &d.socket(), &d.scratch().join("plugin.log")),
    )
}

fn add(d: &Daemon, cid: &str, pod: &str, netns: &str) -> String {
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", netns)
        .args(&format!("K8S_POD_NAMESPACE=lk;K8S_POD_NAME={pod}"))
        .stdin(&conf(d))
        .run()
        .addresses()
        .remove(0)
}

fn held(d: &Daemon) -> Vec<String> {
    ctl(&d.socket(), &["ip", "list", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_owned())
        .collect()
}

fn leaks(d: &Daemon) -> Value {
    ctl(&d.socket(), &["ip", "leaks", "-o", "json"]).json()
}

#[test]
fn a_namespace_deleted_without_del_is_released_after_the_grace_period() {
    require!(needs::NETNS);
    let d = daemon("on", "2s");
    let (gone, kept) = (NetNs::new("ik-pod"), NetNs::new("ik-pod"));
    let lost = add(&d, "c1", "db-0", &gone.path());
    let alive = add(&d, "c2", "db-1", &kept.path());
    drop(gone); // ip netns del, and no DEL: the runtime crashed
    let started = Instant::now();

    // Listed as a suspect with the reason and the time it goes.
    let report = wait::until("the suspect listed", Duration::from_secs(10), || {
        let r = leaks(&d);
        (!r["suspects"].as_array()?.is_empty()).then_some(r)
    });
    assert_eq!(report["mode"], "on");
    let s = &report["suspects"][0];
    assert_eq!(s["addresses"], json!([lost]));
    assert!(
        s["reason"].as_str().unwrap().contains("no longer exists"),
        "{s}"
    );
    let due = s["release_at_ms"].as_u64().unwrap();
    assert_eq!(due, s["missing_since_ms"].as_u64().unwrap() + 2000);
    assert_eq!(
        report["suspects"].as_array().unwrap().len(),
        1,
        "the live pod is no suspect"
    );

    wait::until(
        "the leaked address released",
        Duration::from_secs(15),
        || (!held(&d).contains(&lost)).then_some(()),
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the grace period"
    );
    assert_eq!(held(&d), vec![alive.clone()]);
    let history = ctl(&d.socket(), &["ip", "history", &lost, "-o", "json"]).json();
    assert_eq!(history["past"][0]["reason"], "Reconciler", "{history}");
    // The sticky binding stays: the pod gets its address back when it returns.
    let bindings = ctl(&d.socket(), &["binding", "list", "-o", "json"]).json();
    assert!(
        bindings
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "db-0"),
        "{bindings}"
    );
    let back = NetNs::new("ik-pod");
    assert_eq!(add(&d, "c3", "db-0", &back.path()), lost);
    assert!(leaks(&d)["suspects"].as_array().unwrap().is_empty());
}

#[test]
fn report_mode_lists_but_never_releases() {
    require!(needs::NETNS);
    let d = daemon("report", "1s");
    let gone = NetNs::new("ik-pod");
    let lost = add(&d, "c1", "web-0", &gone.path());
    drop(gone);
    let s = wait::until("the suspect listed", Duration::from_secs(10), || {
        let r = leaks(&d);
        r["suspects"].as_array()?.first().cloned()
    });
    assert!(s["release_at_ms"].is_null(), "{s}");
    // Well past grace plus several passes, by the daemon's own clock.
    let missing = s["missing_since_ms"].as_u64().unwrap();
    wait::until(
        "grace and three passes gone by",
        Duration::from_secs(15),
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            (now > missing + 1000 + 600).then_some(())
        },
    );
    // One more pass is served by `ip leaks` itself; the address is still held.
    assert_eq!(leaks(&d)["suspects"].as_array().unwrap().len(), 1);
    assert_eq!(held(&d), vec![lost]);
}

#[test]
fn after_a_restart_the_first_pass_finds_what_did_not_survive() {
    require!(needs::NETNS);
    let mut d = daemon("on", "1s");
    let (gone, kept) = (NetNs::new("ik-pod"), NetNs::new("ik-pod"));
    let lost = add(&d, "c1", "app-0", &gone.path());
    let alive = add(&d, "c2", "app-1", &kept.path());
    // The node goes down; its pod namespaces do not survive the "reboot".
    assert!(d.terminate().success());
    drop(gone);
    d.restart();
    wait::until(
        "the lost address released after restart",
        Duration::from_secs(15),
        || (held(&d) == vec![alive.clone()]).then_some(()),
    );
    assert!(!held(&d).contains(&lost));
}

#[test]
fn a_forgotten_node_gives_its_addresses_back() {
    require!(needs::CLUSTER);
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-forget-")
        .tempdir()
        .unwrap();
    let mut c = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "pods=10.131.0.0/24".into(),
            ..Default::default()
        },
        dir.path(),
    );
    c.wait_for_leader(Duration::from_secs(30));
    let ok = |out: ipkeep_cluster_test::ctl::CtlOutput| {
        assert!(out.ok(), "{}", out.stderr);
        out
    };
    ok(c.ctl(1, &["subnet", "update", "pods", "--sticky"]));
    let n3 = c.node(3);
    let conf3 = ipam_only_conf(
        "1.0.0",
        "fg",
        ipam(json!("pods"), &n3.socket(), &n3.dir.join("plugin.log")),
    );
    let mut on3 = vec![];
    for i in 0..3 {
        let out = CniCall::ipkeep("ADD")
            .attachment(&format!("x{i}"), "eth0", "/run/netns/x")
            .args(&format!("K8S_POD_NAMESPACE=fg;K8S_POD_NAME=p-{i}"))
            .stdin(&conf3)
            .run();
        on3.push(out.addresses().remove(0));
    }
    // While node 3 answers, forgetting it is refused, saying so.
    let out = c.ctl(1, &["node", "forget", "n3", "--member", "3"]);
    assert!(!out.ok());
    assert!(out.stderr.contains("alive"), "{}", out.stderr);

    c.kill9(3);
    let out = ok(c.ctl(1, &["node", "forget", "n3", "--member", "3", "-o", "json"]));
    let result = out.json();
    assert_eq!(result["released"].as_array().unwrap().len(), 3, "{result}");
    assert_eq!(result["removed_member"], 3);
    let listed = c
        .ctl(1, &["--linearizable", "ip", "list", "-o", "json"])
        .json();
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
    let members = c.ctl(1, &["member", "list", "-o", "json"]).json();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let history = c.ctl(1, &["ip", "history", &on3[0], "-o", "json"]).json();
    assert_eq!(history["past"][0]["reason"], "NodeForgotten", "{history}");
    // Sticky names keep their addresses for when the pods come back elsewhere.
    let bindings = c
        .ctl(2, &["--linearizable", "binding", "list", "-o", "json"])
        .json();
    assert_eq!(bindings.as_array().unwrap().len(), 3, "{bindings}");
}
