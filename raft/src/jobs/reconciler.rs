//! Leaked addresses, found from what this node can see for itself: an
//! attachment of this node whose network namespace no longer exists (a
//! crash, a reboot, a DEL that never came) is released through Raft once it
//! has been gone for the grace period. Only the attachment goes: sticky
//! bindings and pools are an operator's decisions and stay.
//!
//! Suspects live in memory: after a restart (a reboot) the first pass finds
//! them again and the grace period starts over, which only delays a release.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipkeep_api::message::{LeakReport, LeakSuspect};
use ipkeep_api::model::AttachmentKey;
use ipkeep_store::{Command, Reply};
use tokio::sync::watch;

use crate::cluster::node::{now_ms, now_us, Node};

/// What the reconciler does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReconcileMode {
    /// Release leaked attachments after the grace period.
    On,
    /// Only list them (`ipkeepctl ip leaks`) and log them: a dry run.
    Report,
    /// Do not look.
    Off,
}

impl ReconcileMode {
    fn name(self) -> &'static str {
        match self {
            ReconcileMode::On => "on",
            ReconcileMode::Report => "report",
            ReconcileMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReconcileSettings {
    pub mode: ReconcileMode,
    pub grace: Duration,
    pub every: Duration,
}

#[derive(Debug, Clone)]
struct Suspect {
    /// Identifies the attachment as the reconciler saw it: one deleted and
    /// added again is another attachment.
    since_ms: u64,
    addresses: Vec<std::net::IpAddr>,
    pod: ipkeep_api::model::PodRef,
    netns: String,
    reason: String,
    missing_since_ms: u64,
}

/// The reconciler's findings, shared with the node API (`ip leaks`).
pub struct Leaks {
    settings: ReconcileSettings,
    suspects: Mutex<BTreeMap<AttachmentKey, Suspect>>,
}

impl Leaks {
    pub fn new(settings: ReconcileSettings) -> Leaks {
        Leaks {
            settings,
            suspects: Mutex::new(BTreeMap::new()),
        }
    }

    fn suspects(&self) -> std::sync::MutexGuard<'_, BTreeMap<AttachmentKey, Suspect>> {
        self.suspects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn report(&self, node: &str) -> LeakReport {
        let grace_ms = self.settings.grace.as_millis() as u64;
        LeakReport {
            node: node.to_owned(),
            mode: self.settings.mode.name().into(),
            grace_ms,
            suspects: self
                .suspects()
                .iter()
                .map(|(key, s)| LeakSuspect {
                    key: key.clone(),
                    addresses: s.addresses.clone(),
                    pod: s.pod.clone(),
                    netns: s.netns.clone(),
                    reason: s.reason.clone(),
                    missing_since_ms: s.missing_since_ms,
                    release_at_ms: (self.settings.mode == ReconcileMode::On)
                        .then_some(s.missing_since_ms + grace_ms),
                })
                .collect(),
        }
    }
}

/// Why an attachment's namespace counts as gone; None while it exists (or
/// cannot be judged: no path given, or no permission to look).
fn namespace_gone(netns: &str) -> Option<String> {
    if netns.is_empty() {
        return None;
    }
    match Path::new(netns).try_exists() {
        Ok(true) => None,
        Ok(false) => Some(format!("network namespace {netns} no longer exists")),
        Err(e) => {
            tracing::debug!(netns, error = %e, "cannot tell whether a namespace exists");
            None
        }
    }
}

/// One look at this node's attachments: updates the suspects and answers
/// those due for release.
pub fn pass(node: &Node, now: u64) -> Vec<(AttachmentKey, u64)> {
    let leaks = &node.leaks;
    let mine: Vec<_> = {
        let machine = node.machine.read();
        machine
            .state
            .allocations()
            .filter(|a| a.node() == node.name)
            .map(|a| {
                (
                    a.key(),
                    a.since_ms(),
                    a.netns().to_owned(),
                    a.addresses().collect::<Vec<_>>(),
                    a.pod(),
                )
            })
            .collect()
    };
    let mut suspects = leaks.suspects();
    let held: BTreeMap<&AttachmentKey, u64> = mine.iter().map(|m| (&m.0, m.1)).collect();
    suspects.retain(|key, s| held.get(key) == Some(&s.since_ms));
    for (key, since_ms, netns, addresses, pod) in &mine {
        match namespace_gone(netns) {
            None => {
                suspects.remove(key);
            }
            Some(reason) => {
                suspects.entry(key.clone()).or_insert_with(|| {
                    tracing::info!(attachment = %key, ?addresses, %reason, "suspected leak");
                    Suspect {
                        since_ms: *since_ms,
                        addresses: addresses.clone(),
                        pod: pod.clone(),
                        netns: netns.clone(),
                        reason,
                        missing_since_ms: now,
                    }
                });
            }
        }
    }
    let grace = leaks.settings.grace.as_millis() as u64;
    suspects
        .iter()
        .filter(|(_, s)| now >= s.missing_since_ms.saturating_add(grace))
        .map(|(k, s)| (k.clone(), s.since_ms))
        .collect()
}

pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let settings = node.leaks.settings;
    if settings.mode == ReconcileMode::Off {
        return;
    }
    loop {
        let due = pass(&node, now_ms());
        if !due.is_empty() && settings.mode == ReconcileMode::On {
            let command = Command::Reclaim {
                attachments: due,
                at_ms: now_ms(),
                issued_us: now_us(),
            };
            match node.propose(command).await {
                Ok(Reply::Collected(result)) => {
                    let mut suspects = node.leaks.suspects();
                    for (key, addresses) in result.released {
                        tracing::info!(attachment = %key, ?addresses, "released a leaked attachment");
                        suspects.remove(&key);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "releasing leaked attachments failed; will retry")
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(settings.every) => {}
        }
    }
}
