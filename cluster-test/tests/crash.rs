//! kill -9 of the daemon in the middle of a stream of ADDs: every ADD that
//! got a result is still held after the restart, with the same address,
//! nothing is held twice, and allocation continues.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall};
use ipkeep_cluster_test::ctl::held;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};

const WORKERS: usize = 4;
const ROUNDS: usize = 3;
/// Acknowledged ADDs to wait for before each kill.
const ACKS_BEFORE_KILL: usize = 150;

#[test]
fn kill_9_during_adds_loses_no_acknowledged_address() {
    let mut daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.80.0.0/16".into(),
        // Small snapshots, so kills also land around snapshot building and log purges.
        snapshot_every: Some(200),
        keep_logs: Some(20),
        ..Default::default()
    });
    let conf = ipam_only_conf(
        "1.0.0",
        "crashnet",
        ipam(
            serde_json::json!("pods"),
            &daemon.socket(),
            &daemon.scratch().join("plugin.log"),
        ),
    );
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut failures = 0usize;

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (conf, acked, stop, tx) =
                    (conf.clone(), acked.clone(), stop.clone(), tx.clone());
                thread::spawn(move || {
                    let mut failed = 0;
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let cid = format!("r{round}w{w}n{n}");
                        let out = CniCall::ipkeep("ADD")
                            .attachment(&cid, "eth0", "/run/netns/c")
                            .stdin(&conf)
                            .run();
                        if out.ok() {
                            let addr = out.addresses().remove(0);
                            acked.lock().unwrap().push((cid, addr));
                            let _ = tx.send(());
                        } else {
                            // The daemon is gone: the plugin must say "try again".
                            assert_eq!(out.error_code(), 11, "{}", out.stdout);
                            failed += 1;
                        }
                    }
                    failed
                })
            })
            .collect();
        for _ in 0..ACKS_BEFORE_KILL {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("ADDs are being acknowledged");
        }
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            failures += w.join().expect("worker");
        }
        daemon.restart();

        let now: HashMap<String, String> = held(&daemon.socket(), &[])
            .into_iter()
            .map(|(a, c)| (c, a))
            .collect();
        let distinct: HashSet<&String> = now.values().collect();
        assert_eq!(
            distinct.len(),
            now.len(),
            "an address is held twice after restart {round}"
        );
        for (cid, addr) in acked.lock().unwrap().iter() {
            assert_eq!(
                now.get(cid),
                Some(addr),
                "acknowledged ADD of {cid} ({addr}) lost after kill -9 #{round}"
            );
        }
    }
    eprintln!(
        "{} acknowledged ADDs across {ROUNDS} kills, {failures} refused with 11 while the daemon was down",
        acked.lock().unwrap().len()
    );

    // Allocation continues, without reusing any held address.
    let before: HashSet<String> = held(&daemon.socket(), &[])
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for i in 0..50 {
        let out = CniCall::ipkeep("ADD")
            .attachment(&format!("after{i}"), "eth0", "/run/netns/c")
            .stdin(&conf)
            .run();
        let addr = out.addresses().remove(0);
        assert!(!before.contains(&addr), "{addr} handed out again");
    }
}
