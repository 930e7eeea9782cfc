//! The disk under the data directory: full, then freed; files damaged.

use std::collections::BTreeMap;
use std::path::Path;

use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall, CniOutput};
use ipkeep_cluster_test::ctl::{ctl, held};
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::tmpfs::fill;
use ipkeep_cluster_test::{needs, require};
use serde_json::json;

fn add(d: &Daemon, cid: &str) -> CniOutput {
    let conf = ipam_only_conf(
        "1.1.0",
        "podnet",
        ipam(json!("pods"), &d.socket(), &d.scratch().join("plugin.log")),
    );
    CniCall::ipkeep("ADD")
        .attachment(cid, "eth0", &format!("/run/netns/{cid}"))
        .stdin(&conf)
        .run()
}

fn holding(d: &Daemon) -> BTreeMap<String, String> {
    held(&d.socket(), &[])
        .into_iter()
        .map(|(ip, cid)| (cid, ip))
        .collect()
}

#[test]
fn a_full_disk_refuses_writes_clearly_loses_nothing_and_recovers_by_itself() {
    require!(needs::TMPFS);
    let mut d = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.71.0.0/22".into(),
        data_tmpfs_mib: Some(48),
        extra_args: vec!["--min-free-space".into(), "8MiB".into()],
        ..Default::default()
    });
    let mut acknowledged = BTreeMap::new();
    for i in 0..10 {
        let cid = format!("before{i}");
        let out = add(&d, &cid);
        assert!(out.ok(), "{}", out.stdout);
        acknowledged.insert(cid, out.addresses()[0].clone());
    }

    let filler = d.data_dir().join("filler");
    fill(&filler);
    let out = add(&d, "during");
    assert_eq!(out.error_code(), 11, "{}", out.stdout);
    let text = out.error_text();
    assert!(
        text.contains("--min-free-space") && text.contains(&d.data_dir().display().to_string()),
        "{text}"
    );
    // Reads still work, and show everything acknowledged.
    assert_eq!(holding(&d), acknowledged);
    let status = CniCall::ipkeep("STATUS")
        .stdin(&ipam_only_conf(
            "1.1.0",
            "podnet",
            ipam(json!("pods"), &d.socket(), &d.scratch().join("plugin.log")),
        ))
        .run();
    assert!(!status.ok(), "STATUS must say writes are not possible");

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let out = add(&d, "after");
    assert!(out.ok(), "{}", out.stdout);
    acknowledged.insert("after".into(), out.addresses()[0].clone());
    assert_eq!(holding(&d), acknowledged);
    assert!(ctl(&d.socket(), &["status"]).ok());

    // Nothing half-written: the store opens after kill -9 with all of it.
    d.kill9();
    d.restart();
    assert_eq!(holding(&d), acknowledged);
}

/// Without the floor (or when something else fills the disk between the
/// check and the write), a write meets ENOSPC: the daemon stops with that
/// error rather than serve from a store that failed a write, and once
/// space returns a restart serves everything it acknowledged.
#[test]
fn a_write_that_meets_a_full_disk_stops_the_node_and_a_restart_loses_nothing() {
    require!(needs::TMPFS);
    let mut d = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.72.0.0/20".into(),
        data_tmpfs_mib: Some(48),
        extra_args: vec!["--min-free-space".into(), "0".into()],
        ..Default::default()
    });
    let filler = d.data_dir().join("filler");
    fill(&filler);
    let mut acknowledged = BTreeMap::new();
    let mut refused = None;
    for i in 0..3000 {
        let cid = format!("c{i}");
        let out = add(&d, &cid);
        if out.ok() {
            acknowledged.insert(cid, out.addresses()[0].clone());
        } else {
            refused = Some((cid, out));
            break;
        }
    }
    let (refused_cid, refused) = refused.expect("a full disk must stop writes at some point");
    assert_eq!(refused.error_code(), 11, "{}", refused.stdout);
    let status = d.wait_exit(std::time::Duration::from_secs(30));
    assert!(!status.success());
    assert!(d.log().contains("No space left on device"), "{}", d.log());

    std::fs::remove_file(&filler).unwrap();
    d.restart();
    // Everything acknowledged is held, at its address. The refused ADD
    // ("try again") may have been committed before the write that failed
    // (the log had room, the state did not): then it holds an address,
    // and the runtime's retry gets that same one.
    let mut held = holding(&d);
    let retried = held.remove(&refused_cid);
    assert_eq!(held, acknowledged);
    let again = add(&d, &refused_cid);
    assert!(again.ok(), "{}", again.stdout);
    if let Some(address) = retried {
        assert_eq!(again.addresses()[0], address);
    }
    let out = add(&d, "after");
    assert!(out.ok(), "{}", out.stdout);
}

/// The Raft log's segments, in order.
fn log_segments(data: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    found.sort();
    found
}

/// Starts ipkeepd on `data` and expects it to refuse: non-zero exit within
/// a bound, nothing served. Returns its stderr.
fn refused_start(data: &Path) -> String {
    let socket = data.with_extension("sock");
    let mut child = std::process::Command::new(ipkeep_cluster_test::bins::bin("ipkeepd"))
        .arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(&socket)
        .args(["--default-subnet", "pods=10.74.0.0/22"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("exec ipkeepd");
    // A daemon that accepted the damage would serve until stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ipkeepd") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ipkeepd is still running on damaged data after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "served from damaged data: {stderr}");
    assert!(!socket.exists(), "a socket was left behind");
    stderr
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

type Damage = Box<dyn Fn(&Path)>;

/// Where the last byte other than zero ends: a log segment is sized ahead
/// with zeros after its records, so damage must land in what was written.
fn written_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn truncate_to_half(path: std::path::PathBuf) -> Damage {
    Box::new(move |data: &Path| {
        let path = data.join(&path);
        let len = written_len(&path);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
    })
}

fn overwrite_middle(path: std::path::PathBuf) -> Damage {
    Box::new(move |data: &Path| {
        use std::os::unix::fs::FileExt;
        let path = data.join(&path);
        let len = written_len(&path);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xa5; 256], len / 2).unwrap();
    })
}

fn remove(path: std::path::PathBuf) -> Damage {
    Box::new(move |data: &Path| {
        let path = data.join(&path);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap()
        } else {
            std::fs::remove_file(path).unwrap()
        }
    })
}

/// Damage to the Raft log (a truncated or overwritten segment keeps only
/// the records before the damage; a removed one leaves nothing) would
/// silently drop acknowledged writes. The commit witness beside it catches
/// that at start, and the message says which file and what to do.
#[test]
fn a_damaged_or_truncated_log_is_refused_at_start_with_what_to_do() {
    let mut d = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.74.0.0/22".into(),
        ..Default::default()
    });
    for i in 0..60 {
        let out = add(&d, &format!("c{i}"));
        assert!(out.ok(), "{}", out.stdout);
    }
    d.kill9();
    let work = tempfile::tempdir().unwrap();
    let segments = log_segments(&d.data_dir());
    assert_eq!(segments.len(), 1, "60 entries fit one segment");
    let segment = segments[0].strip_prefix(d.data_dir()).unwrap().to_owned();

    let damages: Vec<(&str, Damage)> = vec![
        ("log truncated to half", truncate_to_half(segment.clone())),
        (
            "log bytes overwritten in the middle",
            overwrite_middle(segment.clone()),
        ),
        ("log segment removed", remove(segment.clone())),
    ];
    for (what, damage) in damages {
        let data = work.path().join(what.replace(' ', "-"));
        copy_dir(&d.data_dir(), &data);
        damage(&data);
        let stderr = refused_start(&data);
        for needed in ["lost acknowledged writes", "learner", "--restore", "log"] {
            assert!(
                stderr.contains(needed),
                "{what}: {needed:?} missing in {stderr}"
            );
        }
    }

    let data = work.path().join("witness-damaged");
    copy_dir(&d.data_dir(), &data);
    std::fs::write(data.join("commit.witness"), b"garbage").unwrap();
    let stderr = refused_start(&data);
    assert!(
        stderr.contains("commit.witness") && stderr.contains("damaged"),
        "{stderr}"
    );

    // The undamaged original still starts, with everything.
    d.restart();
    assert_eq!(holding(&d).len(), 60);
}

/// The state in sled is rebuilt from the snapshot and the log, both
/// fsynced: a damaged or lost database costs nothing while they cover it,
/// and is refused, saying what to do, once the log was purged behind a
/// snapshot that is gone too.
#[test]
fn a_damaged_database_is_rebuilt_from_the_snapshot_and_the_log() {
    let mut d = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.74.0.0/22".into(),
        snapshot_every: Some(25),
        keep_logs: Some(5),
        ..Default::default()
    });
    let mut acknowledged = BTreeMap::new();
    for i in 0..60 {
        let out = add(&d, &format!("c{i}"));
        assert!(out.ok(), "{}", out.stdout);
    }
    acknowledged.extend(holding(&d));
    assert_eq!(acknowledged.len(), 60);
    d.kill9();
    let work = tempfile::tempdir().unwrap();
    let db = std::path::PathBuf::from("db/db");

    let damages: Vec<(&str, Damage)> = vec![
        ("database truncated to half", truncate_to_half(db.clone())),
        (
            "database bytes overwritten in the middle",
            overwrite_middle(db.clone()),
        ),
        ("database removed", remove("db".into())),
    ];
    let pristine = work.path().join("pristine");
    copy_dir(&d.data_dir(), &pristine);
    for (what, damage) in damages {
        std::fs::remove_dir_all(d.data_dir()).unwrap();
        copy_dir(&pristine, &d.data_dir());
        damage(&d.data_dir());
        d.restart();
        assert_eq!(holding(&d), acknowledged, "{what}");
        let out = add(&d, "after");
        assert!(out.ok(), "{what}: {}", out.stdout);
        d.kill9();
    }

    // Without the snapshot, the entries purged behind it are gone.
    let data = work.path().join("database-and-snapshot-removed");
    copy_dir(&pristine, &data);
    std::fs::remove_dir_all(data.join("db")).unwrap();
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();
    let stderr = refused_start(&data);
    for needed in ["purged", "learner", "--restore", "db"] {
        assert!(stderr.contains(needed), "{needed:?} missing in {stderr}");
    }
}
