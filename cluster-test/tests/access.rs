//! Who may use the node API: root only. The socket's mode keeps others out,
//! the daemon checks the caller's uid even if someone loosens the mode, and
//! a socket directory that others could write to is refused at start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ipkeep_cluster_test::bins::bin;
use ipkeep_cluster_test::cni::{ipam_only_conf, CniCall};
use ipkeep_cluster_test::ctl::{ctl, held};
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::{needs, require};
use serde_json::json;

const NOBODY: u32 = 65534;

fn ctl_as_nobody(socket: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(bin("ipkeepctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("exec setpriv ipkeepctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn add_as_nobody(socket: &Path) -> ipkeep_cluster_test::cni::CniOutput {
    // No log file: nobody could not open one in the test's directory.
    let ipam = json!({"type": "ipkeep", "subnet": "default", "socket": socket});
    CniCall::ipkeep("ADD")
        .attachment("c-nobody", "eth0", "/var/run/netns/none")
        .stdin(&ipam_only_conf("1.1.0", "net", ipam))
        .as_uid(NOBODY)
        .run()
}

#[test]
fn callers_other_than_root_are_refused_with_a_clear_message() {
    require!([needs::ROOT, needs::SETPRIV]);
    let d = Daemon::start(DaemonOptions {
        default_subnet: "default=10.77.0.0/24".into(),
        ..DaemonOptions::default()
    });

    // The socket is 0600: the connection itself is refused.
    let (ok, stderr) = ctl_as_nobody(&d.socket(), &["status"]);
    assert!(!ok);
    assert!(stderr.contains("for root only"), "{stderr}");
    let out = add_as_nobody(&d.socket());
    assert_eq!(out.error_code(), 114, "{}", out.stdout);

    // Someone loosens the socket's mode: the daemon still refuses by uid.
    std::fs::set_permissions(d.scratch(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, stderr) = ctl_as_nobody(&d.socket(), &["status"]);
    assert!(!ok);
    assert!(
        stderr.contains("serves root only") && stderr.contains(&format!("uid {NOBODY}")),
        "{stderr}"
    );
    let out = add_as_nobody(&d.socket());
    assert_eq!(out.error_code(), 114, "{}", out.stdout);
    assert!(out.error_text().contains("root only"), "{}", out.stdout);

    assert!(held(&d.socket(), &[]).is_empty(), "nothing was allocated");
    assert!(ctl(&d.socket(), &["status"]).ok(), "root is still served");
    // Refusals are logged in aggregate: the first at once, with its reason.
    assert!(
        d.log().contains("refused connections: 1 not root"),
        "{}",
        d.log()
    );
}

#[test]
fn a_socket_directory_others_can_write_to_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(bin("ipkeepd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(run.join("ipkeepd.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("writable by group or others") && stderr.contains("run"),
        "{stderr}"
    );
    assert!(!run.join("ipkeepd.sock").exists());
}
