//! ipkeepctl: tables for people, JSON for scripts, errors that name the field.

use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall};
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use serde_json::json;

fn daemon() -> Daemon {
    Daemon::start(DaemonOptions {
        default_subnet: "pods=10.120.0.0/24".into(),
        ..Default::default()
    })
}

#[test]
fn subnet_lifecycle_in_tables_and_json() {
    let d = daemon();
    let s = d.socket();
    let made = ctl(
        &s,
        &[
            "subnet",
            "create",
            "svc",
            "--cidr",
            "10.121.0.0/24",
            "--gateway",
            "10.121.0.254",
            "--exclude",
            "10.121.0.10-10.121.0.19",
            "--exclude",
            "10.121.0.100",
            "--route",
            "10.96.0.0/12,10.121.0.254",
            "--nameserver",
            "10.121.0.53",
            "--domain",
            "cluster.local",
            "--search",
            "svc.cluster.local",
            "--dns-option",
            "ndots:5",
        ],
    );
    assert!(made.ok(), "{}", made.stderr);
    assert!(
        made.stdout.contains("10.121.0.10-10.121.0.19"),
        "{}",
        made.stdout
    );

    let table = ctl(&s, &["subnet", "list"]);
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    assert!(table.stdout.contains("svc") && table.stdout.contains("10.121.0.0/24"));

    let shown = ctl(&s, &["subnet", "show", "svc", "-o", "json"]).json();
    assert_eq!(shown["subnet"]["gateway"], "10.121.0.254");
    // 254 hosts minus the gateway and 11 excluded addresses.
    assert_eq!(shown["usage"]["assignable"], 242);
    assert_eq!(shown["subnet"]["dns"]["options"], json!(["ndots:5"]));

    let conf = ipam_only_conf(
        "1.0.0",
        "clinet",
        ipam(json!("svc"), &s, &d.scratch().join("p.log")),
    );
    let out = CniCall::ipkeep("ADD")
        .attachment("abcdef0123456789", "net1", "/run/netns/p")
        .args("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0")
        .stdin(&conf)
        .run();
    assert_eq!(out.addresses(), vec!["10.121.0.1".to_string()]);

    let ips = ctl(&s, &["ip", "list"]);
    assert!(ips.stdout.starts_with("ADDRESS"), "{}", ips.stdout);
    for w in [
        "10.121.0.1",
        "shop/cart-0",
        "abcdef012345",
        "net1",
        "node-1",
    ] {
        assert!(ips.stdout.contains(w), "{w} missing from\n{}", ips.stdout);
    }
    let json = ctl(&s, &["ip", "list", "--subnet", "svc", "-o", "json"]).json();
    assert_eq!(json[0]["pod"]["name"], "cart-0");
    assert!(json[0]["since"].as_str().unwrap().ends_with('Z'));
    assert!(ctl(&s, &["ip", "list", "--subnet", "pods", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    let refused = ctl(&s, &["subnet", "delete", "svc"]);
    assert!(!refused.ok());
    assert!(
        refused.stderr.contains("10.121.0.1") && refused.stderr.contains("abcdef0123456789"),
        "{}",
        refused.stderr
    );
    assert!(CniCall::ipkeep("DEL")
        .env("CNI_CONTAINERID", "abcdef0123456789")
        .env("CNI_IFNAME", "net1")
        .stdin(&conf)
        .run()
        .ok());
    assert!(ctl(&s, &["subnet", "delete", "svc"]).ok());
    let gone = ctl(&s, &["subnet", "show", "svc"]);
    assert!(
        !gone.ok() && gone.stderr.contains("[104]") && gone.stderr.contains("svc"),
        "{}",
        gone.stderr
    );
}

#[test]
fn bad_values_name_the_field_and_the_reason() {
    let d = daemon();
    let s = d.socket();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--cidr", "10.0.0.1/24"], vec!["--cidr", "host bits"]),
        (vec!["--cidr", "10.0.0.0/40"], vec!["--cidr", "not a CIDR"]),
        (
            vec!["--cidr", "10.0.0.0/24", "--exclude", "10.0.0.9-10.0.0.1"],
            vec!["--exclude", "starts after it ends"],
        ),
        (
            vec!["--cidr", "10.0.0.0/24", "--route", "nowhere"],
            vec!["--route", "CIDR"],
        ),
        (
            vec!["--cidr", "10.0.0.0/24", "--gateway", "10.9.9.9"],
            vec!["gateway:", "10.9.9.9"],
        ),
        (
            vec!["--cidr", "10.0.0.0/24", "--exclude", "10.1.0.0/24"],
            vec!["exclude:", "not inside"],
        ),
        (
            vec!["--cidr", "10.0.0.0/24", "--route", "fd00::/8"],
            vec!["routes:", "family"],
        ),
        (
            vec!["--cidr", "10.120.0.0/16"],
            vec!["cidr:", "overlaps", "pods"],
        ),
    ];
    for (args, words) in cases {
        let mut full = vec!["subnet", "create", "bad"];
        full.extend_from_slice(&args);
        let out = ctl(&s, &full);
        assert!(!out.ok(), "{args:?} was accepted");
        for w in words {
            assert!(
                out.stderr.contains(w),
                "{args:?}: {:?} lacks {w:?}",
                out.stderr
            );
        }
    }
    let out = ctl(
        &s,
        &["subnet", "create", "bad name", "--cidr", "10.0.0.0/24"],
    );
    assert!(out.stderr.contains("name:"), "{}", out.stderr);
    assert!(
        ctl(&s, &["subnet", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len()
            == 1,
        "nothing was created"
    );
}

#[test]
fn status_shows_the_node_and_its_raft_state() {
    let d = daemon();
    let status = ctl(&d.socket(), &["status", "-o", "json"]).json();
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["node_name"], "node-1");
    assert_eq!(status["role"], "Leader");
    assert_eq!(status["leader"], 1);
    assert!(status["term"].as_u64().unwrap() >= 1);
    assert_eq!(status["last_log_index"], status["last_applied"]);
    assert_eq!(status["voters"], json!([1]));
    let table = ctl(&d.socket(), &["status"]).stdout;
    assert!(
        table.contains("role:") && table.contains("Leader"),
        "{table}"
    );
}

#[test]
fn subnet_show_gives_use_per_pool_and_namespace() {
    let d = daemon();
    let s = d.socket();
    let out = ctl(
        &s,
        &[
            "pool",
            "create",
            "web",
            "--subnet",
            "pods",
            "--addresses",
            "10.120.0.50-10.120.0.59",
            "--pods",
            "web-*",
        ],
    );
    assert!(out.ok(), "{}", out.stderr);
    let conf = ipam_only_conf(
        "1.0.0",
        "n",
        ipam(json!("pods"), &s, &d.scratch().join("plugin.log")),
    );
    for (cid, pod) in [("w0", "web-0"), ("x0", "other")] {
        let out = CniCall::ipkeep("ADD")
            .attachment(cid, "eth0", "/run/netns/x")
            .args(&format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod}"))
            .stdin(&conf)
            .run();
        assert!(out.ok(), "{}", out.stdout);
    }
    let json = ctl(&s, &["subnet", "show", "pods", "-o", "json"]).json();
    assert_eq!(json["usage"]["held"], 2);
    assert_eq!(json["usage"]["pooled"], 10);
    assert_eq!(json["by_namespace"]["shop"], 2);
    assert_eq!(json["pools"][0]["pool"]["name"], "web");
    assert_eq!(json["pools"][0]["usage"]["held"], 1);
    let table = ctl(&s, &["subnet", "show", "pods"]).stdout;
    assert!(table.contains("POOL") && table.contains("web-*"), "{table}");
    assert!(table.contains("shop=2"), "{table}");
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = ctl(&dir.path().join("none.sock"), &["status"]);
    assert_eq!(out.status, Some(1));
    assert!(
        out.stderr.contains("is ipkeepd running") && out.stderr.contains("none.sock"),
        "{}",
        out.stderr
    );
}
