//! Bad input and bad conditions: each gets the right CNI error code and a
//! message that says what is wrong, on stdout as a CNI error object with a
//! non-zero exit, and changes nothing in the store.

use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall, CniOutput};
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use serde_json::{json, Value};

struct Fixture {
    daemon: Daemon,
}

impl Fixture {
    /// A daemon with a /30 subnet ("tiny", room for one pod) and a bigger one.
    fn new() -> Fixture {
        let daemon = Daemon::start(DaemonOptions {
            default_subnet: "pods=10.70.0.0/24".into(),
            ..Default::default()
        });
        assert!(ctl(
            &daemon.socket(),
            &["subnet", "create", "tiny", "--cidr", "10.71.0.0/30"]
        )
        .ok());
        Fixture { daemon }
    }

    fn conf(&self, subnet: &str) -> Value {
        ipam_only_conf(
            "1.0.0",
            "errnet",
            ipam(
                json!(subnet),
                &self.daemon.socket(),
                &self.daemon.scratch().join("plugin.log"),
            ),
        )
    }

    fn add(&self, cid: &str, conf: &Value) -> CniOutput {
        CniCall::ipkeep("ADD")
            .attachment(cid, "eth0", "/run/netns/e")
            .stdin(conf)
            .run()
    }

    /// Everything the store holds, as ipkeepctl shows it.
    fn store(&self) -> (Value, Value) {
        (
            ctl(&self.daemon.socket(), &["ip", "list", "-o", "json"]).json(),
            ctl(&self.daemon.socket(), &["subnet", "list", "-o", "json"]).json(),
        )
    }
}

fn assert_error(out: &CniOutput, code: u64, words: &[&str]) {
    assert_ne!(out.status, Some(0), "expected failure, got {}", out.stdout);
    let err = out.json();
    assert_eq!(err["code"].as_u64(), Some(code), "wrong code: {err}");
    assert!(err["cniVersion"].is_string(), "{err}");
    let text = out.error_text();
    for w in words {
        assert!(text.contains(w), "message {text:?} does not mention {w:?}");
    }
    assert!(out.stderr.is_empty(), "nothing on stderr: {:?}", out.stderr);
}

#[test]
fn exhausted_subnet_is_error_100_and_takes_nothing() {
    let f = Fixture::new();
    assert!(f.add("first", &f.conf("tiny")).ok());
    let before = f.store();
    let out = f.add("second", &f.conf("tiny"));
    assert_error(&out, 100, &["tiny", "no free address"]);
    assert_eq!(f.store(), before);
}

#[test]
fn unknown_subnet_is_error_101() {
    let f = Fixture::new();
    let before = f.store();
    assert_error(&f.add("x", &f.conf("nosuch")), 101, &["nosuch"]);
    assert_eq!(f.store(), before);
}

#[test]
fn malformed_configs_are_6_or_7_and_name_the_field() {
    let f = Fixture::new();
    let before = f.store();
    let not_json = CniCall::ipkeep("ADD")
        .attachment("x", "eth0", "/run/netns/e")
        .raw_stdin("{not json")
        .run();
    assert_error(&not_json, 6, &["JSON"]);
    let empty = CniCall::ipkeep("ADD")
        .attachment("x", "eth0", "/run/netns/e")
        .run();
    assert_error(&empty, 6, &["empty"]);

    let mut wrong_type = f.conf("pods");
    wrong_type["ipam"]["subnet"] = json!(42);
    assert_error(&f.add("x", &wrong_type), 7, &["ipam.subnet"]);
    let mut no_ipam = f.conf("pods");
    no_ipam.as_object_mut().unwrap().remove("ipam");
    assert_error(&f.add("x", &no_ipam), 7, &["ipam"]);
    let mut bad_name = f.conf("pods");
    bad_name["name"] = json!("no spaces allowed");
    assert_error(&f.add("x", &bad_name), 7, &["name"]);
    let mut both = f.conf("pods");
    both["ipam"]["subnets"] = json!(["pods"]);
    assert_error(&f.add("x", &both), 7, &["subnet"]);
    let mut empty = f.conf("pods");
    empty["ipam"].as_object_mut().unwrap().remove("subnet");
    empty["ipam"]["subnets"] = json!([]);
    assert_error(&f.add("x", &empty), 7, &["ipam.subnets"]);
    let mut bad_ip = f.conf("pods");
    bad_ip["args"] = json!({"cni": {"ips": ["10.70.0.999"]}});
    assert_error(&f.add("x", &bad_ip), 7, &["args.cni.ips[0]"]);
    assert_eq!(f.store(), before);
}

#[test]
fn missing_or_bad_cni_variables_are_error_4_naming_the_variable() {
    let f = Fixture::new();
    let before = f.store();
    let conf = f.conf("pods");
    let base = || {
        CniCall::ipkeep("ADD")
            .attachment("x", "eth0", "/run/netns/e")
            .stdin(&conf)
    };
    for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
        assert_error(&base().without(var).run(), 4, &[var]);
    }
    assert_error(&base().without("CNI_COMMAND").run(), 4, &["CNI_COMMAND"]);
    assert_error(
        &base().env("CNI_COMMAND", "EXPLODE").run(),
        4,
        &["CNI_COMMAND", "EXPLODE"],
    );
    assert_error(
        &base().env("CNI_CONTAINERID", "../etc").run(),
        4,
        &["CNI_CONTAINERID"],
    );
    assert_error(
        &base().env("CNI_IFNAME", "a-very-long-ifname").run(),
        4,
        &["CNI_IFNAME"],
    );
    assert_error(
        &base().env("CNI_ARGS", "K8S_POD_NAME").run(),
        4,
        &["CNI_ARGS"],
    );
    assert_eq!(f.store(), before);
}

#[test]
fn unsupported_cni_versions_are_error_1() {
    let f = Fixture::new();
    let before = f.store();
    for version in ["0.1.0", "0.2.0", "2.0.0", ""] {
        let mut conf = f.conf("pods");
        conf["cniVersion"] = json!(version);
        assert_error(&f.add("x", &conf), 1, &["cniVersion", "1.1.0"]);
    }
    // CHECK came with 0.4.0, GC and STATUS with 1.1.0.
    let mut old = f.conf("pods");
    old["cniVersion"] = json!("0.3.1");
    let check = CniCall::ipkeep("CHECK")
        .attachment("x", "eth0", "/run/netns/e")
        .stdin(&old)
        .run();
    assert_error(&check, 1, &["CHECK", "0.4.0"]);
    let gc = CniCall::ipkeep("GC").stdin(&f.conf("pods")).run();
    assert_error(&gc, 1, &["GC", "1.1.0"]);
    assert_eq!(f.store(), before);
}

#[test]
fn an_unreachable_daemon_is_error_11_and_status_50() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-listens.sock");
    let conf = ipam_only_conf(
        "1.1.0",
        "n",
        ipam(json!("pods"), &socket, &dir.path().join("p.log")),
    );
    let out = CniCall::ipkeep("ADD")
        .attachment("x", "eth0", "/run/netns/e")
        .stdin(&conf)
        .run();
    assert_error(&out, 11, &["not reachable", "nobody-listens.sock"]);
    let out = CniCall::ipkeep("DEL")
        .env("CNI_CONTAINERID", "x")
        .env("CNI_IFNAME", "eth0")
        .stdin(&conf)
        .run();
    assert_error(&out, 11, &["not reachable"]);
    let out = CniCall::ipkeep("STATUS").stdin(&conf).run();
    assert_error(&out, 50, &["not reachable"]);
    // The failure is in the plugin's log file, not on stdout only.
    let log = std::fs::read_to_string(dir.path().join("p.log")).unwrap();
    assert!(log.contains("code=11"), "{log}");
}

#[test]
fn status_reports_an_exhausted_subnet_as_50() {
    let f = Fixture::new();
    let mut conf = f.conf("tiny");
    conf["cniVersion"] = json!("1.1.0");
    assert!(CniCall::ipkeep("STATUS").stdin(&conf).run().ok());
    assert!(f.add("only", &conf).ok());
    let out = CniCall::ipkeep("STATUS").stdin(&conf).run();
    assert_error(&out, 50, &["tiny"]);
}
