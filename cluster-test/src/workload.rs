//! The pods: worker threads that exec the real `ipkeep` plugin against every
//! node at once, as kubelets would: new pods (ADD), retried ADDs (on the same
//! or another node), deletions (DEL), and clean-up DELs after failed ADDs.
//! Every call is recorded with its start, end, node and outcome.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::cni::CniCall;
use crate::history::{Op, OpKind, Outcome, Vanish};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub workers_per_node: usize,
    pub subnet: String,
    /// The plugin's own limit (ipam.timeoutMs) on the worker's own node.
    pub plugin_timeout_ms: u64,
    /// The limit for retried ADDs sent to other nodes, kept short so that a
    /// paused node does not hold up workers that do not live on it.
    pub retry_timeout_ms: u64,
    /// Live pods a worker keeps around before it mostly deletes.
    pub pods_per_worker: usize,
    /// The namespace of the general workers on node 1, which has a quota.
    pub capped_namespace: Option<String>,
    /// The namespace of sticky pods (selected by a sticky pool); the second
    /// worker of every node runs this many of them, moving between nodes.
    pub sticky_namespace: String,
    pub sticky_pods_per_node: usize,
    /// Where pods' "network namespaces" live: a file per container, made
    /// before its ADD and removed once its DEL is acknowledged, as a runtime
    /// does with a real one (the reconciler only asks whether it exists).
    pub netns_dir: PathBuf,
    /// Share of a general worker's steps in which a live pod's namespace
    /// disappears without a DEL (a crashed runtime): a leak to reclaim.
    pub vanish_rate: f64,
}

/// A sticky container id is POD.N; the pod name is what comes before the dot.
fn pod_of(cid: &str) -> String {
    cid.split('.').next().unwrap_or(cid).to_owned()
}

/// What a worker plays.
#[derive(Clone)]
enum Role {
    /// Pods with fresh names: ADD, retried ADD (on any node), DEL.
    General { namespace: String },
    /// StatefulSet-like pods: each name is deleted and re-created, with a
    /// new container id, on a random node, again and again.
    Sticky { names: Vec<String> },
}

/// A sticky pod's life as its worker knows it.
#[derive(Clone)]
enum StickyPod {
    Stopped,
    Running(String),
    /// An ADD or DEL of this container failed: delete it before anything else.
    Cleanup(String),
}

/// How long the end of a run may take to delete what failed calls left.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);

pub struct Workload {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(Vec<Op>, Vec<Vanish>)>>,
}

/// What one worker needs to reach every node.
#[derive(Clone)]
struct Target {
    id: u64,
    socket: PathBuf,
    log: PathBuf,
    /// The nodes' clock skews: a call on this node takes its skew.
    skews: crate::cluster::ClockSkews,
}

impl Target {
    fn skew_ms(&self) -> Option<i64> {
        self.skews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.id)
            .copied()
    }
}

fn conf(target: &Target, options: &WorkloadOptions, timeout_ms: u64) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "chaos",
        "type": "ipkeep",
        "ipam": {
            "type": "ipkeep",
            "subnet": options.subnet,
            "socket": target.socket,
            "timeoutMs": timeout_ms,
            "logFile": target.log,
        }
    })
}

fn outcome(out: &crate::cni::CniOutput) -> Outcome {
    if out.ok() {
        let mut addresses: Vec<String> = serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["ips"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_owned())
            .collect();
        addresses.sort();
        return Outcome::Ok(addresses);
    }
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(v) if v["code"].is_u64() => Outcome::Failed {
            code: v["code"].as_u64().unwrap_or(0),
            msg: format!(
                "{} {}",
                v["msg"].as_str().unwrap_or(""),
                v["details"].as_str().unwrap_or("")
            ),
        },
        _ => Outcome::NoAnswer(format!(
            "exit {:?}: {} {}",
            out.status, out.stdout, out.stderr
        )),
    }
}

struct Worker {
    me: Target,
    all: Vec<Target>,
    options: WorkloadOptions,
    role: Role,
    sticky: Vec<StickyPod>,
    name: String,
    rng: Rng,
    t0: Instant,
    ops: Vec<Op>,
    vanished: Vec<Vanish>,
    live: Vec<String>,
    /// Attachments whose ADD or DEL failed: their state is unknown until a
    /// DEL succeeds, so they are deleted (as kubelet does after a failure).
    cleanup: Vec<String>,
    next: u64,
}

impl Worker {
    fn call(&mut self, kind: OpKind, cid: &str, target: &Target) -> Outcome {
        let (namespace, pod) = match &self.role {
            Role::General { namespace } => (namespace.clone(), cid.to_owned()),
            Role::Sticky { .. } => (self.options.sticky_namespace.clone(), pod_of(cid)),
        };
        self.call_as(
            kind,
            cid,
            &namespace,
            &pod,
            target,
            self.options.plugin_timeout_ms,
        )
    }

    fn netns(&self, cid: &str) -> PathBuf {
        self.options.netns_dir.join(cid)
    }

    fn call_as(
        &mut self,
        kind: OpKind,
        cid: &str,
        namespace: &str,
        pod: &str,
        target: &Target,
        timeout: u64,
    ) -> Outcome {
        let conf = conf(target, &self.options, timeout);
        let netns = self.netns(cid);
        if kind == OpKind::Add {
            // The runtime makes the pod's namespace before its ADD.
            let _ = std::fs::write(&netns, b"");
        }
        let call = match kind {
            OpKind::Add => CniCall::ipkeep("ADD")
                .attachment(cid, "eth0", &netns.display().to_string())
                .args(&format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}"
                )),
            OpKind::Del => CniCall::ipkeep("DEL")
                .env("CNI_CONTAINERID", cid)
                .env("CNI_IFNAME", "eth0"),
        }
        .stdin(&conf);
        let call = match target.skew_ms() {
            Some(ms) => call.env(ipkeep_api::clock::SKEW_ENV, &ms.to_string()),
            None => call,
        };
        let start = self.t0.elapsed().as_micros() as u64;
        let out = call.run();
        let end = self.t0.elapsed().as_micros() as u64;
        let outcome = outcome(&out);
        if kind == OpKind::Del && outcome.is_ok() {
            // ... and removes it once the pod's networking is torn down.
            let _ = std::fs::remove_file(&netns);
        }
        self.ops.push(Op {
            node: target.id,
            kind,
            cid: cid.to_owned(),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            start,
            end,
            outcome: outcome.clone(),
        });
        outcome
    }

    fn step(&mut self) {
        match self.role.clone() {
            Role::General { .. } => self.step_general(),
            Role::Sticky { names } => self.step_sticky(&names),
        }
    }

    fn step_sticky(&mut self, names: &[String]) {
        let i = self.rng.below(names.len() as u64) as usize;
        let me = self.me.clone();
        match self.sticky[i].clone() {
            StickyPod::Stopped => {
                // Scheduled on any node, as a rescheduled StatefulSet pod is.
                let cid = format!("{}.{}", names[i], self.next);
                self.next += 1;
                let target = self.rng.pick(&self.all).clone();
                self.sticky[i] = if self.call(OpKind::Add, &cid, &target).is_ok() {
                    StickyPod::Running(cid)
                } else {
                    StickyPod::Cleanup(cid)
                };
            }
            StickyPod::Running(cid) | StickyPod::Cleanup(cid) => {
                if self.call(OpKind::Del, &cid, &me).is_ok() {
                    self.sticky[i] = StickyPod::Stopped;
                } else {
                    self.sticky[i] = StickyPod::Cleanup(cid);
                    self.pace();
                }
            }
        }
    }

    fn step_general(&mut self) {
        let me = self.me.clone();
        if let Some(cid) = self.cleanup.first().cloned() {
            if self.call(OpKind::Del, &cid, &me).is_ok() {
                self.cleanup.remove(0);
            } else {
                self.pace();
            }
            return;
        }
        if !self.live.is_empty() && self.rng.unit() < self.options.vanish_rate {
            // The runtime dies with the pod: its namespace goes, no DEL comes.
            let i = self.rng.below(self.live.len() as u64) as usize;
            let cid = self.live.swap_remove(i);
            let _ = std::fs::remove_file(self.netns(&cid));
            self.vanished.push(Vanish {
                cid,
                node: me.id,
                at: self.t0.elapsed().as_micros() as u64,
            });
            return;
        }
        let roll = self.rng.unit();
        if self.live.len() < self.options.pods_per_worker / 2
            || (roll < 0.5 && self.live.len() < self.options.pods_per_worker)
        {
            let cid = format!("{}-{}", self.name, self.next);
            self.next += 1;
            if self.call(OpKind::Add, &cid, &me).is_ok() {
                self.live.push(cid);
            } else {
                self.cleanup.push(cid);
                self.pace();
            }
        } else if roll < 0.65 && !self.live.is_empty() {
            // A retried ADD, on this node or another: the same answer is expected.
            let cid = self.rng.pick(&self.live).clone();
            let target = self.rng.pick(&self.all).clone();
            let timeout = if target.id == me.id {
                self.options.plugin_timeout_ms
            } else {
                self.options.retry_timeout_ms
            };
            let Role::General { namespace } = self.role.clone() else {
                return;
            };
            if !self
                .call_as(OpKind::Add, &cid, &namespace, &cid, &target, timeout)
                .is_ok()
            {
                self.pace();
            }
        } else if !self.live.is_empty() {
            let i = self.rng.below(self.live.len() as u64) as usize;
            let cid = self.live.swap_remove(i);
            if !self.call(OpKind::Del, &cid, &me).is_ok() {
                self.cleanup.push(cid);
                self.pace();
            }
        }
    }

    /// At the end of a run, the DELs still owed: every attachment whose ADD
    /// or DEL failed is deleted, retried as a runtime retries, so that
    /// whatever such an ADD committed is released and the checker can hold
    /// the end state to it (an attachment whose last call was an
    /// acknowledged DEL is held nowhere). Gives up at `deadline`; what is
    /// left then shows as held but unaccounted for.
    fn finish_cleanups(&mut self, deadline: Instant) {
        let me = self.me.clone();
        let mut owed: Vec<String> = std::mem::take(&mut self.cleanup);
        owed.extend(self.sticky.iter().filter_map(|p| match p {
            StickyPod::Cleanup(cid) => Some(cid.clone()),
            _ => None,
        }));
        for cid in owed {
            while !self.call(OpKind::Del, &cid, &me).is_ok() && Instant::now() < deadline {
                self.pace();
            }
        }
    }

    /// After a failure a runtime backs off instead of hammering a node that is down.
    fn pace(&mut self) {
        thread::sleep(Duration::from_millis(50 + self.rng.below(100)));
    }
}

impl Workload {
    pub fn start(
        cluster: &Cluster,
        options: &WorkloadOptions,
        t0: Instant,
        rng: &mut Rng,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let all: Vec<Target> = cluster
            .nodes
            .iter()
            .map(|n| Target {
                id: n.id,
                socket: n.socket(),
                log: n.dir.join("plugin.log"),
                skews: cluster.clock_skews(),
            })
            .collect();
        let mut workers = Vec::new();
        for me in &all {
            for w in 0..options.workers_per_node {
                let role = if w == 1 {
                    Role::Sticky {
                        names: (0..options.sticky_pods_per_node)
                            .map(|k| format!("sts-{}-{k}", me.id))
                            .collect(),
                    }
                } else {
                    let namespace = match &options.capped_namespace {
                        Some(capped) if me.id == 1 => capped.clone(),
                        _ => "chaos".to_owned(),
                    };
                    Role::General { namespace }
                };
                let mut worker = Worker {
                    me: me.clone(),
                    all: all.clone(),
                    options: options.clone(),
                    sticky: vec![StickyPod::Stopped; options.sticky_pods_per_node],
                    role,
                    name: format!("n{}w{w}", me.id),
                    rng: rng.fork(),
                    t0,
                    ops: Vec::new(),
                    vanished: Vec::new(),
                    live: Vec::new(),
                    cleanup: Vec::new(),
                    next: 0,
                };
                let stop = stop.clone();
                workers.push(thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        worker.step();
                    }
                    worker.finish_cleanups(Instant::now() + CLEANUP_LIMIT);
                    (worker.ops, worker.vanished)
                }));
            }
        }
        Workload { stop, workers }
    }

    /// Stops the workers (each finishes its call in flight) and returns
    /// every call, and every pod whose namespace vanished without a DEL.
    pub fn stop(self) -> (Vec<Op>, Vec<Vanish>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ops, mut vanished) = (Vec::new(), Vec::new());
        for w in self.workers {
            let (o, v) = w.join().expect("worker");
            ops.extend(o);
            vanished.extend(v);
        }
        ops.sort_by_key(|o| o.start);
        vanished.sort_by_key(|v| v.at);
        (ops, vanished)
    }
}
