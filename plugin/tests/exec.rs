//! The plugin exec'd as a runtime does, without a daemon: what it must
//! answer on its own (VERSION, malformed calls, an unreachable daemon). The
//! calls that reach a daemon are in cluster-test; this file also makes
//! `cargo test` build the ipkeep binary those tests exec.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn plugin(command: &str, env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipkeep"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec ipkeep");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for ipkeep")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const ATTACHMENT: [(&str, &str); 3] = [
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/var/run/netns/c1"),
    ("CNI_IFNAME", "eth0"),
];

fn conf(ipam: &str) -> String {
    format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{ipam}}}"#)
}

#[test]
fn version_lists_every_supported_version() {
    let out = plugin("VERSION", &[], r#"{"cniVersion":"1.0.0"}"#);
    assert!(out.status.success());
    let v = json(&out);
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .expect("supportedVersions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(versions, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
}

#[test]
fn an_unreachable_daemon_is_error_11_naming_the_socket() {
    let out = plugin(
        "ADD",
        &ATTACHMENT,
        &conf(r#"{"type":"ipkeep","subnet":"pods","socket":"/nonexistent/s.sock"}"#),
    );
    assert_eq!(out.status.code(), Some(1));
    let e = json(&out);
    assert_eq!(e["code"], 11);
    assert!(
        e["details"]
            .as_str()
            .unwrap_or("")
            .contains("/nonexistent/s.sock"),
        "{e}"
    );
}

#[test]
fn a_missing_container_id_is_refused_naming_the_variable() {
    let out = plugin(
        "ADD",
        &ATTACHMENT[1..],
        &conf(r#"{"type":"ipkeep","subnet":"pods","socket":"/nonexistent/s.sock"}"#),
    );
    assert_eq!(out.status.code(), Some(1));
    let e = json(&out);
    assert_eq!(e["code"], 4);
    assert!(
        e["details"]
            .as_str()
            .unwrap_or("")
            .contains("CNI_CONTAINERID"),
        "{e}"
    );
}

#[test]
fn a_config_that_is_not_json_is_error_6_and_nothing_else_on_stdout() {
    let out = plugin("ADD", &ATTACHMENT, "{not json");
    assert_eq!(out.status.code(), Some(1));
    let e = json(&out);
    assert_eq!(e["code"], 6, "{e}");
}
