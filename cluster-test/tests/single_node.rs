//! One node, the real binaries: concurrent pods, idempotency, release.

use std::collections::{HashMap, HashSet};

use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall};
use ipkeep_cluster_test::ctl::{ctl, held};
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::raise_fd_limit;
use serde_json::{json, Value};

fn daemon_with_pods_subnet() -> Daemon {
    Daemon::start(DaemonOptions {
        default_subnet: "pods=10.60.0.0/22".into(),
        ..Default::default()
    })
}

fn conf(d: &Daemon, version: &str) -> Value {
    ipam_only_conf(
        version,
        "podnet",
        ipam(json!("pods"), &d.socket(), &d.scratch().join("plugin.log")),
    )
}

fn add(d: &Daemon, cid: &str) -> CniCall {
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", &format!("/run/netns/{cid}"))
        .args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-{cid};K8S_POD_UID=uid-{cid}"
        ))
        .stdin(&conf(d, "1.0.0"))
}

fn del(d: &Daemon, cid: &str) -> CniCall {
    CniCall::ipkeep("DEL")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .stdin(&conf(d, "1.0.0"))
}

#[test]
fn five_hundred_concurrent_adds_get_distinct_addresses_and_dels_release_them() {
    raise_fd_limit();
    let d = daemon_with_pods_subnet();
    let cids: Vec<String> = (0..500).map(|i| format!("c{i:04}")).collect();

    let running: Vec<_> = cids.iter().map(|cid| add(&d, cid).spawn()).collect();
    let mut first: HashMap<String, String> = HashMap::new();
    for (cid, run) in cids.iter().zip(running) {
        let out = run.wait();
        let addresses = out.addresses();
        assert_eq!(addresses.len(), 1, "{}", out.stdout);
        first.insert(cid.clone(), addresses[0].clone());
    }
    let distinct: HashSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), 500, "an address was handed out twice");

    // ipkeepctl lists exactly these, each with its container.
    let listed: HashMap<String, String> = held(&d.socket(), &[])
        .into_iter()
        .map(|(a, c)| (c, a))
        .collect();
    assert_eq!(listed, first);
    let team_a = held(&d.socket(), &["--namespace", "team-a"]);
    assert_eq!(team_a.len(), 500);
    assert!(held(&d.socket(), &["--namespace", "other"]).is_empty());
    assert_eq!(
        held(&d.socket(), &["--node", "node-1", "--subnet", "pods"]).len(),
        500
    );

    // A repeated ADD (kubelet retries) returns the same address, even all at once.
    let running: Vec<_> = cids.iter().map(|cid| add(&d, cid).spawn()).collect();
    for (cid, run) in cids.iter().zip(running) {
        assert_eq!(
            run.wait().addresses(),
            vec![first[cid].clone()],
            "retried ADD of {cid}"
        );
    }
    assert_eq!(
        held(&d.socket(), &[]).len(),
        500,
        "retries allocated nothing new"
    );

    // DEL releases each; a second DEL succeeds and does nothing.
    let running: Vec<_> = cids.iter().map(|cid| del(&d, cid).spawn()).collect();
    for run in running {
        let out = run.wait();
        assert!(out.ok(), "DEL failed: {} {}", out.stdout, out.stderr);
        assert!(
            out.stdout.trim().is_empty(),
            "DEL prints nothing: {:?}",
            out.stdout
        );
    }
    assert!(held(&d.socket(), &[]).is_empty());
    assert!(
        del(&d, "c0000").run().ok(),
        "DEL of a released attachment succeeds"
    );
    let subnet = ctl(&d.socket(), &["subnet", "show", "pods", "-o", "json"]).json();
    assert_eq!(subnet["usage"]["held"], 0);
}

#[test]
fn results_follow_the_requested_cni_version() {
    let d = daemon_with_pods_subnet();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let out = CniCall::ipkeep("ADD")
            .attachment(&format!("v{i}"), "eth0", "/run/netns/x")
            .stdin(&conf(&d, version))
            .run();
        let result = out.json();
        assert_eq!(result["cniVersion"], *version);
        let ip = &result["ips"][0];
        assert!(ip["address"].as_str().unwrap().ends_with("/22"), "{result}");
        assert_eq!(ip["gateway"], "10.60.0.1");
        assert!(
            ip.get("interface").is_none(),
            "IPAM results carry no interface index"
        );
        assert!(result.get("interfaces").is_none());
        assert_eq!(
            ip.get("version").is_some(),
            version.starts_with('0'),
            "{version}: {result}"
        );
    }
}

#[test]
fn dual_stack_gives_one_address_of_each_family_with_routes_and_dns() {
    let d = daemon_with_pods_subnet();
    let made = ctl(
        &d.socket(),
        &[
            "subnet",
            "create",
            "pods6",
            "--cidr",
            "fd00:60::/64",
            "--route",
            "fd00:99::/64,fd00:60::fe",
            "--nameserver",
            "fd00:60::53",
            "--search",
            "cluster.local",
        ],
    );
    assert!(made.ok(), "{}", made.stderr);
    let conf = ipam_only_conf(
        "1.0.0",
        "dual",
        ipam(
            json!(["pods", "pods6"]),
            &d.socket(),
            &d.scratch().join("p.log"),
        ),
    );
    let out = CniCall::ipkeep("ADD")
        .attachment("ds1", "eth0", "/run/netns/ds1")
        .stdin(&conf)
        .run();
    let result = out.json();
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips[0]["address"].as_str().unwrap().starts_with("10.60."));
    assert!(ips[1]["address"].as_str().unwrap().starts_with("fd00:60::"));
    assert_eq!(
        result["routes"],
        json!([{"dst": "fd00:99::/64", "gw": "fd00:60::fe"}])
    );
    assert_eq!(
        result["dns"],
        json!({"nameservers": ["fd00:60::53"], "search": ["cluster.local"]})
    );
}

#[test]
fn check_and_gc_and_status_through_the_plugin() {
    let d = daemon_with_pods_subnet();
    let v11 = conf(&d, "1.1.0");
    let mut prev = None;
    for cid in ["keep", "gone1", "gone2"] {
        let out = CniCall::ipkeep("ADD")
            .attachment(cid, "eth0", "/run/netns/x")
            .stdin(&v11)
            .run();
        assert!(out.ok(), "{}", out.stdout);
        if cid == "keep" {
            prev = Some(out.json());
        }
    }
    // CHECK with the ADD's result as prevResult passes; with another address it fails.
    let mut with_prev = v11.clone();
    with_prev["prevResult"] = prev.clone().unwrap();
    let out = CniCall::ipkeep("CHECK")
        .attachment("keep", "eth0", "/run/netns/x")
        .stdin(&with_prev)
        .run();
    assert!(out.ok(), "CHECK: {}", out.stdout);
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.60.3.200/22");
    let out = CniCall::ipkeep("CHECK")
        .attachment("keep", "eth0", "/run/netns/x")
        .stdin(&wrong)
        .run();
    assert_eq!(out.error_code(), 105);
    assert!(
        out.error_text().contains("10.60.3.200"),
        "{}",
        out.error_text()
    );
    let out = CniCall::ipkeep("CHECK")
        .attachment("never", "eth0", "/run/netns/x")
        .stdin(&with_prev)
        .run();
    assert_eq!(out.error_code(), 105);

    // GC keeps what is listed and releases the rest of this node's attachments.
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = CniCall::ipkeep("GC").stdin(&gc).run();
    assert!(out.ok(), "GC: {} {}", out.stdout, out.stderr);
    assert!(out.stdout.trim().is_empty(), "GC prints nothing on success");
    let left: Vec<String> = held(&d.socket(), &[]).into_iter().map(|(_, c)| c).collect();
    assert_eq!(left, vec!["keep".to_string()]);

    // STATUS: ready while the daemon serves and the subnet has room.
    let out = CniCall::ipkeep("STATUS").stdin(&v11).run();
    assert!(out.ok(), "STATUS: {}", out.stdout);
}

#[test]
fn version_answers_without_a_daemon() {
    let out = CniCall::ipkeep("VERSION")
        .raw_stdin(r#"{"cniVersion":"0.4.0"}"#)
        .run();
    assert!(out.ok());
    let v = out.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let out = CniCall::ipkeep("VERSION").run();
    assert_eq!(out.json()["cniVersion"], "1.1.0");
}
