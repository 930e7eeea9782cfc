//! Fixed addresses through the real binaries on a 3-node cluster: the etcd
//! example (sticky pool, pods deleted and re-added on other nodes), explicit
//! addresses from CNI_ARGS and runtimeConfig, tenants and quotas,
//! reservations, history, and the CLI for all of it.

use std::time::Duration;

use ipkeep_cluster_test::cluster::{Cluster, ClusterOptions};
use ipkeep_cluster_test::cni::{ipam, CniCall, CniOutput};
use ipkeep_cluster_test::{needs, require};
use serde_json::{json, Value};

fn cluster() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::Builder::new()
        .prefix("ipkeep-fixed-")
        .tempdir()
        .unwrap();
    let c = Cluster::start(
        ClusterOptions {
            nodes: 3,
            subnet: "db=10.20.0.0/24".into(),
            ..Default::default()
        },
        dir.path(),
    );
    c.wait_for_leader(Duration::from_secs(30));
    (dir, c)
}

fn conf(c: &Cluster, node: u64, subnets: Value) -> Value {
    let n = c.node(node);
    json!({
        "cniVersion": "1.0.0", "name": "dbnet", "type": "ipkeep",
        "capabilities": {"ips": true},
        "ipam": ipam(subnets, &n.socket(), &n.dir.join("plugin.log")),
    })
}

/// An ADD as a kubelet on the node whose socket `conf` names would run it.
fn add(cid: &str, ns: &str, pod: &str, conf: &Value) -> CniOutput {
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", &format!("/run/netns/{cid}"))
        .args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_UID=uid-{cid}"
        ))
        .stdin(conf)
        .run()
}

fn del(cid: &str, conf: &Value) -> CniOutput {
    CniCall::ipkeep("DEL")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .stdin(conf)
        .run()
}

fn ok(out: &ipkeep_cluster_test::ctl::CtlOutput) {
    assert!(out.ok(), "ipkeepctl failed: {}", out.stderr);
}

#[test]
fn etcd_keeps_its_addresses_wherever_it_runs() {
    require!(needs::CLUSTER);
    let (_dir, c) = cluster();
    ok(&c.ctl(
        1,
        &[
            "pool",
            "create",
            "etcd",
            "--subnet",
            "db",
            "--addresses",
            "10.20.0.11-10.20.0.13",
            "--namespace",
            "db",
            "--pods",
            "etcd-*",
            "--sticky",
        ],
    ));
    let mut first = Vec::new();
    for i in 0..3 {
        let out = add(
            &format!("a{i}"),
            "db",
            &format!("etcd-{i}"),
            &conf(&c, 1, json!("db")),
        );
        first.push(out.addresses().remove(0));
    }
    assert_eq!(first, vec!["10.20.0.11", "10.20.0.12", "10.20.0.13"]);
    let bindings = c
        .ctl(
            2,
            &[
                "binding",
                "list",
                "--namespace",
                "db",
                "-o",
                "json",
                "--linearizable",
            ],
        )
        .json();
    assert_eq!(bindings.as_array().unwrap().len(), 3);
    // A fourth etcd pod: the pool is full, and the error says so.
    let out = add("a3", "db", "etcd-3", &conf(&c, 1, json!("db")));
    assert_eq!(out.error_code(), 110, "{}", out.stdout);
    // Re-created with the same name while the old one runs: refused.
    let out = add("b0", "db", "etcd-0", &conf(&c, 2, json!("db")));
    assert_eq!(out.error_code(), 108, "{}", out.stdout);
    // Deleted on node 1, re-added on nodes 2 and 3: same addresses.
    for i in 0..3 {
        assert!(del(&format!("a{i}"), &conf(&c, 1, json!("db"))).ok());
    }
    for (i, address) in first.iter().enumerate() {
        let node = 2 + (i % 2) as u64;
        let out = add(
            &format!("b{i}"),
            "db",
            &format!("etcd-{i}"),
            &conf(&c, node, json!("db")),
        );
        assert_eq!(
            out.addresses(),
            vec![address.clone()],
            "etcd-{i} on node {node}"
        );
    }
    let listed = c
        .ctl(3, &["ip", "list", "--namespace", "db", "--linearizable"])
        .stdout;
    assert!(
        listed.contains("db/etcd-2") && listed.contains("n3"),
        "{listed}"
    );
    // The history of etcd-0's address names both holders.
    let history = c
        .ctl(
            1,
            &[
                "ip",
                "history",
                "10.20.0.11",
                "-o",
                "json",
                "--linearizable",
            ],
        )
        .json();
    assert_eq!(history["current"]["key"]["container_id"], "b0");
    assert_eq!(history["past"][0]["key"]["container_id"], "a0");
    assert_eq!(history["past"][0]["reason"], "Del");
    // The pool cannot be deleted while used; binding release waits for the pod.
    let out = c.ctl(1, &["pool", "delete", "etcd"]);
    assert!(
        !out.ok() && out.stderr.contains("10.20.0.11"),
        "{}",
        out.stderr
    );
    let out = c.ctl(1, &["binding", "release", "db/etcd-0"]);
    assert!(
        !out.ok() && out.stderr.contains("running"),
        "{}",
        out.stderr
    );
    assert!(del("b0", &conf(&c, 2, json!("db"))).ok());
    ok(&c.ctl(1, &["binding", "release", "db/etcd-0"]));
    let pool = c
        .ctl(1, &["pool", "show", "etcd", "-o", "json", "--linearizable"])
        .json();
    assert_eq!(pool["usage"]["held"], 2);
    assert_eq!(pool["usage"]["free"], 1);
}

#[test]
fn explicit_addresses_from_cni_args_and_runtime_config() {
    require!(needs::CLUSTER);
    let (_dir, c) = cluster();
    // CNI_ARGS IP=, as CRI-O passes it.
    let out = CniCall::ipkeep("ADD")
        .attachment("crio", "eth0", "/run/netns/crio")
        .args("IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=fixed;IP=10.20.0.77")
        .stdin(&conf(&c, 2, json!("db")))
        .run();
    assert_eq!(out.addresses(), vec!["10.20.0.77".to_string()]);
    // runtimeConfig ips (capability "ips"), as libcni passes it; it wins over IP=.
    let mut with_rc = conf(&c, 3, json!("db"));
    with_rc["runtimeConfig"] = json!({"ips": ["10.20.0.88/24"]});
    let out = CniCall::ipkeep("ADD")
        .attachment("rc", "eth0", "/run/netns/rc")
        .args("IP=10.20.0.99")
        .stdin(&with_rc)
        .run();
    assert_eq!(out.addresses(), vec!["10.20.0.88".to_string()]);
    // Taken, reserved, outside: refused with the reason, nothing allocated.
    ok(&c.ctl(
        1,
        &[
            "ip",
            "reserve",
            "10.20.0.200-10.20.0.210",
            "--note",
            "load balancer VIPs",
        ],
    ));
    for (wanted, why) in [
        ("10.20.0.77", "held by"),
        ("10.20.0.205", "load balancer VIPs"),
        ("10.30.0.1", "none of this network"),
    ] {
        let out = CniCall::ipkeep("ADD")
            .attachment("nope", "eth0", "/run/netns/nope")
            .args(&format!("IP={wanted}"))
            .stdin(&conf(&c, 1, json!("db")))
            .run();
        assert_eq!(out.error_code(), 112, "{wanted}: {}", out.stdout);
        assert!(
            out.error_text().contains(why),
            "{wanted}: {}",
            out.error_text()
        );
    }
    let reservations = c
        .ctl(2, &["ip", "reservations", "-o", "json", "--linearizable"])
        .json();
    assert_eq!(reservations[0]["note"], "load balancer VIPs");
    let out = c.ctl(2, &["ip", "reserve", "10.20.0.77"]);
    assert!(!out.ok() && out.stderr.contains("held"), "{}", out.stderr);
    ok(&c.ctl(3, &["ip", "unreserve", "10.20.0.0/24"]));
}

#[test]
fn tenants_quotas_and_the_first_permitted_subnet() {
    require!(needs::CLUSTER);
    let (_dir, c) = cluster();
    ok(&c.ctl(
        1,
        &[
            "subnet",
            "create",
            "team-a",
            "--cidr",
            "10.21.0.0/24",
            "--namespace",
            "team-a",
            "--quota",
            "team-a=2",
        ],
    ));
    let both = conf(&c, 1, json!(["team-a", "db"]));
    let out = add("b1", "team-b", "web", &both);
    assert!(
        out.addresses()[0].starts_with("10.20.0."),
        "team-b falls to db: {}",
        out.stdout
    );
    for i in 0..2 {
        let out = add(
            &format!("a{i}"),
            "team-a",
            &format!("api-{i}"),
            &conf(&c, 2, json!(["team-a", "db"])),
        );
        assert!(out.addresses()[0].starts_with("10.21.0."), "{}", out.stdout);
    }
    let out = add(
        "a2",
        "team-a",
        "api-2",
        &conf(&c, 3, json!(["team-a", "db"])),
    );
    assert_eq!(out.error_code(), 111, "{}", out.stdout);
    assert!(
        out.error_text().contains("team-a") && out.error_text().contains("quota is 2"),
        "{}",
        out.error_text()
    );
    let out = add("b2", "team-b", "web-2", &conf(&c, 3, json!("team-a")));
    assert_eq!(out.error_code(), 109, "{}", out.stdout);
    ok(&c.ctl(1, &["subnet", "update", "team-a", "--quota", "team-a=3"]));
    assert!(add(
        "a2",
        "team-a",
        "api-2",
        &conf(&c, 3, json!(["team-a", "db"]))
    )
    .ok());
    let shown = c
        .ctl(2, &["subnet", "show", "team-a", "--linearizable"])
        .stdout;
    assert!(shown.contains("team-a=3"), "{shown}");
}
