//! What deploy/ ships: the install script, the example conflists (each one
//! accepted by the real plugin), and the DaemonSet entrypoint's choice of
//! node identity.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipkeep_cluster_test::bins::bin_dir;
use ipkeep_cluster_test::cni::CniCall;
use ipkeep_cluster_test::netns::NetNs;
use ipkeep_cluster_test::{needs, require};
use serde_json::{json, Value};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_script_puts_everything_in_place_and_keeps_local_settings() {
    let root = tempfile::tempdir().unwrap();
    let run = || {
        Command::new("sh")
            .arg(deploy().join("install.sh"))
            .arg("--root")
            .arg(root.path())
            .arg("--bin-dir")
            .arg(bin_dir())
            .args(["--conflist", "30-ipkeep-veth.conflist"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = root.path();
    for (path, want) in [
        ("opt/cni/bin/ipkeep", 0o755),
        ("usr/local/bin/ipkeepd", 0o755),
        ("usr/local/bin/ipkeepctl", 0o755),
        ("etc/cni/net.d/30-ipkeep-veth.conflist", 0o644),
        ("etc/systemd/system/ipkeepd.service", 0o644),
        ("etc/ipkeep/ipkeepd.env", 0o600),
        ("etc/ipkeep", 0o700),
        ("var/lib/ipkeep", 0o700),
    ] {
        assert_eq!(mode(&r.join(path)), want, "{path}");
    }
    // A second run (an upgrade) keeps the node's own settings.
    fs::write(r.join("etc/ipkeep/ipkeepd.env"), "IPKEEP_NODE_ID=7\n").unwrap();
    assert!(run().status.success());
    assert_eq!(
        fs::read_to_string(r.join("etc/ipkeep/ipkeepd.env")).unwrap(),
        "IPKEEP_NODE_ID=7\n"
    );
    // A conflist that does not exist is named in the error.
    let out = Command::new("sh")
        .arg(deploy().join("install.sh"))
        .arg("--root")
        .arg(r)
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(["--conflist", "nope.conflist"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.conflist"));
}

/// `--plugin FILE` (the static build of `cargo build-plugin`) is what lands
/// in the CNI bin directory, whatever --bin-dir holds; a missing one is named.
#[test]
fn install_script_takes_the_plugin_from_plugin_when_given() {
    let root = tempfile::tempdir().unwrap();
    let chosen = root.path().join("chosen-ipkeep");
    fs::write(&chosen, "#!/bin/sh\n# the chosen plugin\n").unwrap();
    fs::set_permissions(&chosen, fs::Permissions::from_mode(0o755)).unwrap();
    let install = |plugin: &Path| {
        Command::new("sh")
            .arg(deploy().join("install.sh"))
            .arg("--root")
            .arg(root.path().join("node"))
            .arg("--bin-dir")
            .arg(bin_dir())
            .arg("--plugin")
            .arg(plugin)
            .arg("--no-systemd")
            .output()
            .unwrap()
    };
    let out = install(&chosen);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(root.path().join("node/opt/cni/bin/ipkeep")).unwrap(),
        fs::read(&chosen).unwrap()
    );
    let out = install(&root.path().join("absent"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent is missing"));
}

/// Each plugin configuration of each example conflist that involves ipkeep
/// (as main plugin or as ipam) passes the plugin's checks: with no daemon
/// listening, ADD gets as far as asking it (error 11), not "invalid
/// configuration" (7).
#[test]
fn every_example_conflist_is_accepted_by_the_plugin() {
    require!(needs::NETNS);
    let pod = NetNs::new("ik-pod");
    let nowhere = tempfile::tempdir().unwrap();
    let socket = nowhere.path().join("no.sock");
    let mut checked = 0;
    for entry in fs::read_dir(deploy().join("cni")).unwrap() {
        let path = entry.unwrap().path();
        let list: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for plugin in list["plugins"].as_array().expect("plugins") {
            let main = plugin["type"] == "ipkeep";
            if !main && plugin["ipam"]["type"] != "ipkeep" {
                continue;
            }
            let mut conf = plugin.clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            conf["name"] = list["name"].clone();
            if conf.get("ipam").is_some() {
                conf["ipam"]["socket"] = json!(socket);
                conf["ipam"]["logFile"] = json!(nowhere.path().join("plugin.log"));
            } else {
                conf["socket"] = json!(socket);
                conf["logFile"] = json!(nowhere.path().join("plugin.log"));
            }
            let out = CniCall::ipkeep("ADD")
                .attachment("c1", "eth0", &pod.path())
                .stdin(&conf)
                .run();
            assert_eq!(out.error_code(), 11, "{}: {}", path.display(), out.stdout);
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} configurations checked");
}

#[test]
fn the_daemonset_entrypoint_finds_the_node_in_the_members_file() {
    let dir = tempfile::tempdir().unwrap();
    let members = dir.path().join("members");
    fs::write(
        &members,
        "node-a 1 10.0.0.1:7470\nnode-b 2 10.0.0.2:7470\nnode-c 3 10.0.0.3:7470\n",
    )
    .unwrap();
    // A stand-in ipkeepd that prints the arguments it was given.
    let fake = dir.path().join("bin");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("ipkeepd"), "#!/bin/sh\necho \"$@\"\n").unwrap();
    fs::set_permissions(fake.join("ipkeepd"), fs::Permissions::from_mode(0o755)).unwrap();
    let run = |node: &str, extra: &[(&str, &str)]| {
        let mut cmd = Command::new("sh");
        cmd.arg(deploy().join("kubernetes/entrypoint.sh"))
            .arg("daemon")
            .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
            .env("NODE_NAME", node)
            .env("IPKEEP_MEMBERS_FILE", &members);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run("node-b", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = String::from_utf8_lossy(&out.stdout);
    assert!(
        args.contains("--node-id 2 --listen 10.0.0.2:7470"),
        "{args}"
    );
    assert!(
        args.contains("--initial-cluster 1=10.0.0.1:7470,2=10.0.0.2:7470,3=10.0.0.3:7470"),
        "{args}"
    );
    // A node not listed joins with its own id, or is told what to set.
    let out = run(
        "node-x",
        &[("IPKEEP_NODE_ID", "9"), ("IPKEEP_LISTEN", "10.0.0.9:7470")],
    );
    let args = String::from_utf8_lossy(&out.stdout);
    assert!(
        args.contains("--node-id 9 --listen 10.0.0.9:7470 --join"),
        "{args}"
    );
    let out = run("node-x", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("IPKEEP_NODE_ID"));
}
