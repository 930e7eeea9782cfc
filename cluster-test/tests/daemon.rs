//! ipkeepd as an operator runs it: the socket, signals, a second instance,
//! the embedded default, bad flags, resuming from the data directory.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipkeep_cluster_test::bins::bin;
use ipkeep_cluster_test::ctl::ctl;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::wait;

#[test]
fn socket_is_0600_and_sigterm_stops_cleanly() {
    let mut d = Daemon::start(DaemonOptions::default());
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let status = d.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(!d.socket().exists(), "the socket is removed on shutdown");
    assert!(d.log().contains("stopped"), "{}", d.log());
}

#[test]
fn a_second_daemon_is_refused_and_the_first_keeps_serving() {
    let d = Daemon::start(DaemonOptions::default());
    // Same data directory, other socket.
    let other_dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("ipkeepd"))
        .arg("--data-dir")
        .arg(d.data_dir())
        .arg("--socket")
        .arg(other_dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    // Other data directory, same socket.
    let out = Command::new(bin("ipkeepd"))
        .arg("--data-dir")
        .arg(other_dir.path().join("data"))
        .arg("--socket")
        .arg(d.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(
        ctl(&d.socket(), &["status"]).ok(),
        "the first daemon still serves"
    );
}

#[test]
fn dev_mode_is_a_working_single_node_cluster_with_a_default_subnet() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("ipkeepd"))
        .arg("--dev")
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = cwd.path().join("ipkeep-dev/ipkeepd.sock");
    let subnets = wait::until("the dev daemon to serve", Duration::from_secs(30), || {
        let out = ctl(&socket, &["subnet", "list", "-o", "json"]);
        out.ok().then(|| out.json())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(subnets[0]["subnet"]["name"], "default");
    assert_eq!(subnets[0]["subnet"]["cidr"], "10.22.0.0/16");
    assert!(cwd.path().join("ipkeep-dev/db").is_dir());
}

#[test]
fn a_restart_resumes_without_bootstrapping_again() {
    let mut d = Daemon::start(DaemonOptions {
        default_subnet: "boot=10.110.0.0/24".into(),
        ..Default::default()
    });
    assert!(ctl(&d.socket(), &["subnet", "delete", "boot"]).ok());
    assert!(ctl(
        &d.socket(),
        &["subnet", "create", "mine", "--cidr", "10.111.0.0/24"]
    )
    .ok());
    let term_before = d.status().term;
    d.kill9();
    d.restart();
    let names: Vec<String> = ctl(&d.socket(), &["subnet", "list", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subnet"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        vec!["mine".to_string()],
        "the default subnet is made once, at the first start"
    );
    assert!(d.status().term >= term_before);
}

#[test]
fn bad_flags_name_the_flag_and_the_reason() {
    for (args, words) in [
        (
            vec!["--default-subnet", "oops"],
            vec!["--default-subnet", "NAME=CIDR"],
        ),
        (
            vec!["--default-subnet", "x=10.0.0.1/24"],
            vec!["--default-subnet", "host bits"],
        ),
        (vec!["--node-id", "0"], vec!["--node-id"]),
        (
            vec!["--write-timeout-ms", "soon"],
            vec!["--write-timeout-ms", "milliseconds"],
        ),
    ] {
        let out = Command::new(bin("ipkeepd")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for w in words {
            assert!(stderr.contains(w), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn settings_come_from_a_config_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ipkeepd.env");
    let socket = dir.path().join("from-config.sock");
    std::fs::write(
        &config,
        format!(
            "# ipkeepd settings\nIPKEEP_DATA_DIR={}\nIPKEEP_SOCKET=\"{}\"\nIPKEEP_NODE_NAME=from-file\nIPKEEP_DEFAULT_SUBNET=cfg=10.130.0.0/24\n",
            dir.path().join("data").display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin("ipkeepd"))
        .arg("--config")
        .arg(&config)
        .args(["--node-name", "from-flag"])
        .env_remove("IPKEEP_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait::until(
        "the daemon configured by file",
        Duration::from_secs(30),
        || {
            let out = ctl(&socket, &["status", "-o", "json"]);
            out.ok().then(|| out.json())
        },
    );
    let subnets = ctl(&socket, &["subnet", "list", "-o", "json"]).json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status["node_name"], "from-flag");
    assert_eq!(subnets[0]["subnet"]["name"], "cfg");
    let out = Command::new(bin("ipkeepd"))
        .args(["--config", "/nonexistent.env"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.env"));
}
