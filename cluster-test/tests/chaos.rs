//! A short chaos run, as part of every test run: 3 nodes, then 5, with every
//! kind of fault (full disks and skewed clocks among them), and the
//! checker's verdict. The long run is the
//! `ipkeep-chaos` binary (see docs/testing.md).

use std::time::Duration;

use ipkeep_cluster_test::chaos::{run, ChaosOptions};
use ipkeep_cluster_test::{needs, require};

fn short_run(nodes: usize, secs: u64, seed: u64) {
    // Kept until the run passes: a run that fails, or panics while starting
    // its cluster, leaves its nodes' logs behind for whoever looks next.
    let out = tempfile::Builder::new()
        .prefix("ipkeep-chaos-")
        .tempdir()
        .unwrap()
        .keep();
    // Faults cycle through every kind in a seeded order; this long covers each.
    let report = run(ChaosOptions {
        nodes,
        duration: Duration::from_secs(secs),
        seed,
        workers_per_node: 2,
        out: out.clone(),
        write_timeout_ms: 3000,
    });
    eprintln!("{}", report.summary);
    let kinds: std::collections::BTreeSet<&str> = report
        .history
        .faults
        .iter()
        .map(|f| f.kind.as_str())
        .collect();
    assert_eq!(
        kinds.len(),
        ipkeep_cluster_test::chaos::ALL_FAULTS.len(),
        "every kind of fault ran: {kinds:?}"
    );
    assert!(
        !report.history.minority.is_empty(),
        "a minority was checked"
    );
    assert!(
        report
            .history
            .ops
            .iter()
            .filter(|o| o.outcome.is_ok())
            .count()
            > 1000,
        "the workload ran"
    );
    assert!(
        report.passed(),
        "chaos run failed (seed {seed}, output kept in {}):\n{}",
        out.display(),
        report.summary
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn short_chaos_runs_keep_every_promise() {
    require!(needs::CLUSTER, needs::TMPFS);
    short_run(3, 110, 0x1b5a_2c3d);
    short_run(5, 110, 0x77e1_0f42);
}
