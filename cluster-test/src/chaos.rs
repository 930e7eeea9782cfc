//! A chaos run: a cluster, a workload on every node, faults on a seeded
//! schedule, then convergence, the checker and a summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::checker::{check, Expectations, NodeDigest, PoolRule, SubnetRule, Violation};
use crate::cluster::{Cluster, ClusterOptions, Direction};
use crate::history::{FaultRecord, History, MinorityWindow, OpKind, Outcome};
use crate::rng::Rng;
use crate::workload::{Workload, WorkloadOptions};

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub workers_per_node: usize,
    /// Where the nodes' data, logs, the history and the summary go.
    pub out: PathBuf,
    pub write_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillLeader,
    KillFollower,
    PartitionMinority,
    CutFromLeader,
    OneWayLoss,
    PauseLeader,
    PauseFollower,
    KillAll,
    WipeAndRejoin,
    DiskFullLeader,
    DiskFullFollower,
    ClockSkew,
}

pub const ALL_FAULTS: [Fault; 12] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::PartitionMinority,
    Fault::CutFromLeader,
    Fault::OneWayLoss,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::KillAll,
    Fault::WipeAndRejoin,
    Fault::DiskFullLeader,
    Fault::DiskFullFollower,
    Fault::ClockSkew,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-9 leader",
            Fault::KillFollower => "kill-9 follower",
            Fault::PartitionMinority => "partition majority/minority",
            Fault::CutFromLeader => "cut from leader only",
            Fault::OneWayLoss => "one-way loss",
            Fault::PauseLeader => "pause leader",
            Fault::PauseFollower => "pause follower",
            Fault::KillAll => "kill-9 all nodes",
            Fault::WipeAndRejoin => "wipe and rejoin",
            Fault::DiskFullLeader => "disk under the floor on the leader",
            Fault::DiskFullFollower => "disk under the floor on a follower",
            Fault::ClockSkew => "clock skew on a node",
        }
    }
}

pub struct ChaosReport {
    pub history: History,
    pub violations: Vec<Violation>,
    /// Liveness problems: the cluster did not recover from a fault in time.
    pub problems: Vec<String>,
    pub summary: String,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.problems.is_empty()
    }
}

struct Run {
    cluster: Cluster,
    rng: Rng,
    t0: Instant,
    history: History,
    problems: Vec<String>,
    options: ChaosOptions,
}

/// Each node's free-space floor (`--min-free-space`), in bytes.
const MIN_FREE_SPACE: u64 = 16 << 20;

/// How long the cluster may take to have a leader again after a fault is undone.
const RECOVERY: Duration = Duration::from_secs(30);

impl Run {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    fn hold(&mut self, min_ms: u64, max_ms: u64) {
        std::thread::sleep(Duration::from_millis(
            min_ms + self.rng.below(max_ms - min_ms + 1),
        ));
    }

    fn leader(&mut self) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(l) = self.cluster.leader() {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn follower(&mut self, leader: u64) -> u64 {
        let others: Vec<u64> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|i| *i != leader)
            .collect();
        *self.rng.pick(&others)
    }

    fn record(&mut self, fault: Fault, nodes: Vec<u64>, from: u64) {
        let to = self.now();
        self.history.faults.push(FaultRecord {
            kind: fault.name().into(),
            nodes,
            from,
            to,
        });
    }

    /// Long enough for calls on a cut-off node to run into the write timeout
    /// and answer, so that (d) has something to check.
    fn partition_hold(&mut self) {
        let base = self.options.write_timeout_ms + 1500;
        self.hold(base, base + 3000);
    }

    /// A daemon that exited by itself is a finding: report it with the end of
    /// its log, and start it again so the run goes on.
    fn reap_crashes(&mut self) {
        for (id, status) in self.cluster.exited() {
            self.problems.push(format!(
                "node {id}'s daemon exited on its own ({status}) at {:.1} s; its log ends:\n{}",
                self.now() as f64 / 1e6,
                self.cluster.log_tail(id, 5)
            ));
            self.cluster.spawn(id);
        }
    }

    fn inject(&mut self, fault: Fault) {
        self.reap_crashes();
        let Some(leader) = self.leader() else {
            self.problems.push(format!(
                "no leader at {:.1} s before {}",
                self.now() as f64 / 1e6,
                fault.name()
            ));
            return;
        };
        let from = self.now();
        let ids = self.cluster.ids();
        match fault {
            Fault::KillLeader | Fault::KillFollower => {
                let victim = if fault == Fault::KillLeader {
                    leader
                } else {
                    self.follower(leader)
                };
                self.cluster.kill9(victim);
                self.hold(500, 4000);
                self.cluster.spawn(victim);
                self.record(fault, vec![victim], from);
            }
            Fault::PauseLeader | Fault::PauseFollower => {
                let victim = if fault == Fault::PauseLeader {
                    leader
                } else {
                    self.follower(leader)
                };
                self.cluster.pause(victim);
                self.hold(1000, 5000);
                self.cluster.resume(victim);
                self.record(fault, vec![victim], from);
            }
            Fault::PartitionMinority => {
                let size = 1 + self.rng.below(((ids.len() - 1) / 2) as u64) as usize;
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let (minority, majority) = shuffled.split_at(size);
                for m in minority {
                    self.cluster.cut(*m, majority, Direction::Both);
                }
                let cut_at = self.now();
                self.partition_hold();
                let healed_at = self.now();
                self.cluster.heal();
                self.history.minority.push(MinorityWindow {
                    nodes: minority.to_vec(),
                    from: cut_at,
                    to: healed_at,
                });
                self.record(fault, minority.to_vec(), from);
            }
            Fault::CutFromLeader => {
                let victim = self.follower(leader);
                self.cluster.cut(victim, &[leader], Direction::Both);
                self.hold(1000, 5000);
                self.cluster.heal();
                self.record(fault, vec![victim, leader], from);
            }
            Fault::OneWayLoss => {
                // The victim's packets to everyone are lost; it still hears them.
                let victim = *self.rng.pick(&ids);
                let others: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
                self.cluster.cut(victim, &others, Direction::Out);
                let cut_at = self.now();
                self.partition_hold();
                let healed_at = self.now();
                self.cluster.heal();
                self.history.minority.push(MinorityWindow {
                    nodes: vec![victim],
                    from: cut_at,
                    to: healed_at,
                });
                self.record(fault, vec![victim], from);
            }
            Fault::KillAll => {
                for id in &ids {
                    self.cluster.kill9(*id);
                }
                self.hold(200, 2000);
                for id in &ids {
                    self.cluster.spawn(*id);
                }
                self.record(fault, ids.clone(), from);
            }
            Fault::WipeAndRejoin => {
                let victim = self.follower(leader);
                self.wipe_and_rejoin(victim, leader);
                self.record(fault, vec![victim], from);
            }
            Fault::DiskFullLeader | Fault::DiskFullFollower => {
                let victim = if fault == Fault::DiskFullLeader {
                    leader
                } else {
                    self.follower(leader)
                };
                // Down to half the node's floor: under it the node takes no
                // writes and no entries, and a leader hands over. Not to the
                // last byte: a write already under way then fails, and an
                // install or a sled write that meets ENOSPC stops the node
                // (the 30-minute run of docs/reliability.md); the last byte
                // is tested without load in tests/disk_floor.rs.
                let filler = self.cluster.node(victim).data_dir().join("chaos-filler");
                crate::tmpfs::fill_leaving(&filler, MIN_FREE_SPACE / 2);
                self.hold(2000, 6000);
                let _ = std::fs::remove_file(&filler);
                self.record(fault, vec![victim], from);
            }
            Fault::ClockSkew => {
                // A node (its daemon and the plugin calls on it) whose
                // clock is a minute or two off either way.
                let victim = *self.rng.pick(&ids);
                let magnitude = 20_000 + self.rng.below(100_000) as i64;
                let skew = if self.rng.unit() < 0.5 {
                    magnitude
                } else {
                    -magnitude
                };
                self.cluster.kill9(victim);
                self.cluster.set_clock_skew(victim, skew);
                self.cluster.spawn(victim);
                self.hold(3000, 8000);
                self.cluster.kill9(victim);
                self.cluster.set_clock_skew(victim, 0);
                self.cluster.spawn(victim);
                self.record(fault, vec![victim], from);
            }
        }
        if self.cluster.leader().is_none() && self.leader_within(RECOVERY).is_none() {
            self.problems.push(format!(
                "no leader within {RECOVERY:?} after {} ended at {:.1} s",
                fault.name(),
                self.now() as f64 / 1e6
            ));
        }
    }

    fn leader_within(&self, limit: Duration) -> Option<u64> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(l) = self.cluster.leader() {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs an ipkeepctl command on some serving node other than `not`,
    /// retrying until it succeeds or `limit` passes; a failure is a problem
    /// of the run.
    fn ctl_until_ok(&mut self, not: u64, args: &[&str], limit: Duration) -> bool {
        match self.cluster.ctl_until_ok(not, args, limit) {
            Ok(()) => true,
            Err(last) => {
                self.problems
                    .push(format!("ipkeepctl {} kept failing: {last}", args.join(" ")));
                false
            }
        }
    }

    /// A node loses its disk: it is removed from the membership, wiped,
    /// started empty with --join, added as a learner, and promoted once it
    /// has caught up.
    fn wipe_and_rejoin(&mut self, victim: u64, leader: u64) {
        self.cluster.wipe(victim);
        let id = victim.to_string();
        if !self.ctl_until_ok(victim, &["member", "remove", &id], RECOVERY) {
            return;
        }
        self.cluster.spawn(victim);
        self.cluster.wait_serving(victim, RECOVERY);
        let addr = self.cluster.node(victim).addr();
        if !self.ctl_until_ok(victim, &["member", "add", &id, &addr], RECOVERY) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leader_index = self
                .cluster
                .leader()
                .and_then(|l| self.cluster.status(l))
                .and_then(|s| s.last_log_index);
            let mine = self.cluster.status(victim).and_then(|s| s.last_applied);
            if leader_index.is_some()
                && mine.is_some()
                && mine.unwrap_or(0) + 100 >= leader_index.unwrap_or(0)
            {
                break;
            }
            if Instant::now() > deadline {
                self.problems
                    .push(format!("wiped node {victim} did not catch up within 60 s"));
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ctl_until_ok(victim, &["member", "promote", &id], RECOVERY);
        let _ = leader;
    }
}

/// How long the chaos cluster's reconcilers wait before releasing a pod
/// whose namespace vanished, and how often they look.
const LEAK_GRACE: Duration = Duration::from_secs(3);
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// Runs a whole chaos test and checks it.
pub fn run(options: ChaosOptions) -> ChaosReport {
    crate::raise_fd_limit();
    let mut rng = Rng::new(options.seed);
    let cluster = Cluster::start(
        ClusterOptions {
            nodes: options.nodes,
            subnet: "pods=10.200.0.0/23".into(),
            write_timeout_ms: options.write_timeout_ms,
            reconcile: Some((
                format!("{}ms", LEAK_GRACE.as_millis()),
                format!("{}ms", RECONCILE_EVERY.as_millis()),
            )),
            // Small disks that the full-disk faults fill.
            data_tmpfs_mib: Some(256),
            extra_args: vec!["--min-free-space".into(), MIN_FREE_SPACE.to_string()],
            ..Default::default()
        },
        &options.out,
    );
    let netns_dir = options.out.join("netns");
    std::fs::create_dir_all(&netns_dir).expect("namespace directory");
    // Fixed addresses under fire: a sticky pool for StatefulSet-like pods
    // that move between nodes, and a namespace with a quota.
    let setup = [
        vec![
            "pool",
            "create",
            "sts",
            "--subnet",
            "pods",
            "--addresses",
            "10.200.1.200-10.200.1.239",
            "--namespace",
            "stateful",
            "--pods",
            "sts-*",
            "--sticky",
        ],
        vec!["subnet", "update", "pods", "--quota", "capped=10"],
    ];
    for args in setup {
        let out = cluster.ctl(1, &args);
        assert!(
            out.ok(),
            "chaos set-up `ipkeepctl {}` failed: {}",
            args.join(" "),
            out.stderr
        );
    }
    let expect = Expectations {
        sticky_namespaces: vec!["stateful".into()],
        pools: vec![PoolRule {
            first: "10.200.1.200".parse().expect("address"),
            last: "10.200.1.239".parse().expect("address"),
            namespace: "stateful".into(),
            prefix: "sts-".into(),
        }],
        quotas: vec![("capped".into(), 10)],
        leak_grace_us: Some(LEAK_GRACE.as_micros() as u64),
        subnets: vec![SubnetRule {
            cidr: "10.200.0.0/23".parse().expect("cidr"),
            gateway: Some("10.200.0.1".parse().expect("address")),
        }],
    };
    let t0 = Instant::now();
    let workload = Workload::start(
        &cluster,
        &WorkloadOptions {
            workers_per_node: options.workers_per_node,
            subnet: "pods".into(),
            plugin_timeout_ms: options.write_timeout_ms + 4000,
            retry_timeout_ms: 1500,
            pods_per_worker: 16,
            capped_namespace: Some("capped".into()),
            sticky_namespace: "stateful".into(),
            sticky_pods_per_node: 4,
            netns_dir,
            vanish_rate: 0.02,
        },
        t0,
        &mut rng,
    );
    let mut run = Run {
        cluster,
        rng: rng.fork(),
        t0,
        history: History::default(),
        problems: Vec::new(),
        options: options.clone(),
    };

    let mut schedule: Vec<Fault> = Vec::new();
    while t0.elapsed() < options.duration {
        if schedule.is_empty() {
            schedule = ALL_FAULTS.to_vec();
            run.rng.shuffle(&mut schedule);
        }
        let fault = schedule.remove(0);
        run.hold(1000, 3000);
        run.inject(fault);
    }

    // Undo everything, let the workload see a healthy cluster, then stop it.
    run.reap_crashes();
    run.cluster.restore_all();
    if run.leader_within(RECOVERY).is_none() {
        run.problems
            .push("no leader after all faults were undone".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    (run.history.ops, run.history.vanished) = workload.stop();
    // Leaks are released a grace period after they are noticed: give the
    // reconcilers that long (and a little) before looking at the end state.
    let vanished: std::collections::BTreeSet<&str> = run
        .history
        .vanished
        .iter()
        .map(|v| v.cid.as_str())
        .collect();
    let reclaim_limit = LEAK_GRACE + RECONCILE_EVERY * 4 + Duration::from_secs(30);
    let deadline = Instant::now() + reclaim_limit;
    while Instant::now() < deadline {
        let leaking = run
            .cluster
            .final_states()
            .iter()
            .any(|f| f.held.keys().any(|cid| vanished.contains(cid.as_str())));
        if !leaking {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !run.cluster.wait_converged(Duration::from_secs(60)) {
        run.problems
            .push("the nodes did not converge on one applied index within 60 s".into());
    }
    for (id, why) in run.cluster.silent_nodes() {
        run.problems.push(format!(
            "node {id} does not serve at the end ({why}); its log ends:\n{}",
            run.cluster.log_tail(id, 5)
        ));
    }
    let finals = run.cluster.final_states();
    let digests: Vec<NodeDigest> = run
        .cluster
        .digests()
        .into_iter()
        .map(|(node, digest)| NodeDigest { node, digest })
        .collect();
    if digests.len() < options.nodes {
        run.problems.push(format!(
            "only {} of {} nodes gave their state digest at the end",
            digests.len(),
            options.nodes
        ));
    }
    let bound_us = (options.write_timeout_ms + 2000) * 1000;
    let violations = check(&run.history, &finals, &digests, bound_us, &expect);
    let summary = summarize(
        &options,
        &run.history,
        &violations,
        &run.problems,
        bound_us,
        finals.first().map(|f| f.held.len()).unwrap_or(0),
    );
    let _ = std::fs::write(options.out.join("summary.txt"), &summary);
    if let Ok(json) = serde_json::to_string(&run.history) {
        let _ = std::fs::write(options.out.join("history.json"), json);
    }
    ChaosReport {
        history: run.history,
        violations,
        problems: run.problems,
        summary,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn summarize(
    options: &ChaosOptions,
    history: &History,
    violations: &[Violation],
    problems: &[String],
    bound_us: u64,
    final_held: usize,
) -> String {
    let mut s = String::new();
    let secs = |us: u64| us as f64 / 1e6;
    let _ = writeln!(
        s,
        "ipkeep chaos run: seed {}, {} nodes, {} s, {} workers per node",
        options.seed,
        options.nodes,
        options.duration.as_secs(),
        options.workers_per_node
    );
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for op in &history.ops {
        let kind = match op.kind {
            OpKind::Add => "ADD",
            OpKind::Del => "DEL",
        };
        let outcome = match &op.outcome {
            Outcome::Ok(_) => "ok".to_owned(),
            Outcome::Failed { code, .. } => format!("error {code}"),
            Outcome::NoAnswer(_) => "no answer".to_owned(),
        };
        *counts.entry((kind.into(), outcome)).or_default() += 1;
    }
    let _ = writeln!(s, "operations: {} plugin calls", history.ops.len());
    for ((kind, outcome), n) in &counts {
        let _ = writeln!(s, "  {kind:3} {outcome:10} {n}");
    }
    let mut add_ok: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Add && o.outcome.is_ok())
        .map(|o| o.end - o.start)
        .collect();
    add_ok.sort_unstable();
    let _ = writeln!(
        s,
        "ADD latency (successful, exec'd plugin): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&add_ok, 0.5),
        percentile(&add_ok, 0.99),
        add_ok.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &history.faults {
        *faults.entry(&f.kind).or_default() += 1;
    }
    let _ = writeln!(s, "faults: {}", history.faults.len());
    for (kind, n) in &faults {
        let _ = writeln!(s, "  {kind:28} {n}");
    }
    let minority_calls: Vec<_> = history
        .minority
        .iter()
        .flat_map(|w| {
            history
                .ops
                .iter()
                .filter(move |o| w.nodes.contains(&o.node) && o.start >= w.from && o.end <= w.to)
        })
        .collect();
    let slowest = minority_calls
        .iter()
        .map(|o| o.end - o.start)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "leaks: {} pods lost their namespace without a DEL (reconciler grace {:.1} s)",
        history.vanished.len(),
        LEAK_GRACE.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "minority windows: {}, calls answered inside them: {} (bound {:.1} s, slowest {:.2} s)",
        history.minority.len(),
        minority_calls.len(),
        secs(bound_us),
        secs(slowest)
    );
    // Stretches with calls but no successful ADD anywhere, over a second long.
    let mut successes: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Add && o.outcome.is_ok())
        .map(|o| o.end)
        .collect();
    successes.sort_unstable();
    let mut windows: Vec<(u64, u64)> = successes
        .windows(2)
        .filter(|w| w[1] - w[0] > 1_000_000)
        .map(|w| (w[0], w[1]))
        .collect();
    windows.sort_by_key(|(a, b)| std::cmp::Reverse(b - a));
    let _ = writeln!(
        s,
        "unavailability windows (over 1 s without a successful ADD): {}",
        windows.len()
    );
    for (a, b) in windows.iter().take(10) {
        let during: Vec<&str> = history
            .faults
            .iter()
            .filter(|f| f.from <= *b && f.to + 2_000_000 >= *a)
            .map(|f| f.kind.as_str())
            .collect();
        let _ = writeln!(
            s,
            "  {:.2} s from {:.1} s ({})",
            secs(b - a),
            secs(*a),
            during.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "final state: {final_held} attachments held, identical on every node: {}",
        !violations
            .iter()
            .any(|v| matches!(v, Violation::Diverged { .. }))
    );
    let _ = writeln!(s, "violations: {}", violations.len());
    for v in violations.iter().take(50) {
        let _ = writeln!(s, "  {v}");
    }
    if !problems.is_empty() {
        let _ = writeln!(s, "liveness problems: {}", problems.len());
        for p in problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    s
}
