//! The Prometheus endpoint of `ipkeepd --metrics-listen`, scraped over TCP
//! as Prometheus does, after real plugin calls.

use std::io::{Read, Write};
use std::net::TcpStream;

use ipkeep_cluster_test::cni::{ipam, CniCall};
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use serde_json::json;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}

/// The value of the sample whose name and labels start `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_show_addresses_requests_latency_and_raft() {
    let port = free_port();
    let daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.120.0.0/24".into(),
        extra_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")],
        // A snapshot within the handful of writes below, for its gauge.
        snapshot_every: Some(4),
        ..Default::default()
    });
    let s = daemon.socket();
    assert!(ctl(
        &s,
        &[
            "pool",
            "create",
            "web",
            "--subnet",
            "pods",
            "--addresses",
            "10.120.0.100-10.120.0.109",
            "--pods",
            "web-*"
        ]
    )
    .ok());
    let conf = json!({"cniVersion": "1.0.0", "name": "m", "type": "ipkeep",
        "ipam": ipam(json!("pods"), &s, &daemon.scratch().join("plugin.log"))});
    for (cid, pod) in [("a", "web-0"), ("b", "other"), ("c", "other2")] {
        let out = CniCall::ipkeep("ADD")
            .attachment(cid, "eth0", "/run/netns/x")
            .args(&format!("K8S_POD_NAMESPACE=team;K8S_POD_NAME={pod}"))
            .stdin(&conf)
            .run();
        assert!(out.ok(), "{}", out.stdout);
    }
    // One failure: a subnet that does not exist (error 101).
    let mut bad = conf.clone();
    bad["ipam"]["subnet"] = json!("nope");
    let out = CniCall::ipkeep("ADD")
        .attachment("d", "eth0", "/run/netns/x")
        .stdin(&bad)
        .run();
    assert_eq!(out.error_code(), 101);

    let (head, body) = get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let v = |p: &str| sample(&body, p).unwrap_or_else(|| panic!("no {p} in\n{body}"));
    assert_eq!(v(r#"ipkeep_requests_total{request="add",code="0"}"#), 3.0);
    assert_eq!(v(r#"ipkeep_requests_total{request="add",code="101"}"#), 1.0);
    // The four ADDs, one after another: each in an entry of its own (the
    // refused one is refused by the state machine, so it is committed too).
    assert_eq!(v("ipkeep_batched_writes_total"), 4.0);
    assert_eq!(v("ipkeep_write_entries_total"), 4.0);
    assert_eq!(
        v(r#"ipkeep_request_duration_seconds_count{request="add"}"#),
        4.0
    );
    assert_eq!(
        v(r#"ipkeep_subnet_addresses{subnet="pods",state="held"}"#),
        3.0
    );
    assert_eq!(
        v(r#"ipkeep_subnet_addresses{subnet="pods",state="pooled"}"#),
        10.0
    );
    // 253 assignable - 10 pooled - 2 held outside the pool.
    assert_eq!(
        v(r#"ipkeep_subnet_addresses{subnet="pods",state="free"}"#),
        241.0
    );
    assert_eq!(v(r#"ipkeep_pool_addresses{pool="web",state="held"}"#), 1.0);
    assert_eq!(v(r#"ipkeep_pool_addresses{pool="web",state="free"}"#), 9.0);
    assert_eq!(
        v(r#"ipkeep_namespace_addresses{subnet="pods",namespace="team"}"#),
        3.0
    );
    assert_eq!(v("ipkeep_raft_is_leader"), 1.0);
    assert_eq!(v("ipkeep_raft_leader"), 1.0);
    assert!(v("ipkeep_raft_term") >= 1.0);
    let applied = v("ipkeep_raft_applied_index");
    assert!(applied >= 5.0, "{applied}");
    assert!(v("ipkeep_raft_commit_index") >= applied);
    assert!(v("ipkeep_raft_last_log_index") >= applied);

    // The snapshot is built in the background: its gauge turns from -1 to
    // the build's duration (a single node never installs one).
    ipkeep_cluster_test::wait::until(
        "a snapshot build in the metrics",
        std::time::Duration::from_secs(20),
        || {
            let (_, body) = get(port, "/metrics");
            (sample(&body, "ipkeep_snapshot_last_build_milliseconds")? >= 0.0).then_some(())
        },
    );
    assert_eq!(v("ipkeep_snapshot_last_install_milliseconds"), -1.0);

    let (head, _) = get(port, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
