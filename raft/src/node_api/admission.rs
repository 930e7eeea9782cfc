//! Which node API connections are served, so that the plugin always finds
//! room.
//!
//! Every caller is root on this node, so callers are told apart by process:
//! one process may hold at most a quarter of the slots (a runtime execs one
//! plugin per call, each with one connection; ipkeepctl holds one, the
//! node-API benchmark a few hundred). Once fewer than a sixteenth of the
//! slots are free, the node is under pressure: connections idle for
//! [`PRESSURE_IDLE`] are closed (a client with a connection it is not using
//! reconnects when it needs one), so that idle connections from many
//! processes cannot starve a new ADD either. A connection over the limits
//! is told to try again (CNI error 11) at once, never left in the listen
//! backlog until its caller times out (cluster-test's `connection_limits`
//! tests it with thousands of idle connections from one process).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const PRESSURE_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Full,
    TooManyFromProcess,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Full => "over the connection limit",
            Refused::TooManyFromProcess => "over the per-process limit",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_process: HashMap<i32, usize>,
}

#[derive(Clone)]
pub struct ApiAdmission {
    max: usize,
    counts: Arc<Mutex<Counts>>,
    pressure: Arc<watch::Sender<bool>>,
}

/// A served connection's place; given back when dropped.
pub struct Slot {
    admission: ApiAdmission,
    pid: Option<i32>,
}

impl ApiAdmission {
    pub fn new(max: usize) -> ApiAdmission {
        ApiAdmission {
            max: max.max(1),
            counts: Arc::default(),
            pressure: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Fewer free slots than this put the node under pressure.
    fn reserve(&self) -> usize {
        (self.max / 16).max(1)
    }

    /// The most one process may hold.
    pub fn per_process(&self) -> usize {
        (self.max / 4).max(1)
    }

    /// True while idle connections should make room.
    pub fn pressure(&self) -> watch::Receiver<bool> {
        self.pressure.subscribe()
    }

    /// A slot for a connection from process `pid` (None when the kernel
    /// could not tell).
    pub fn admit(&self, pid: Option<i32>) -> Result<Slot, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max {
            return Err(Refused::Full);
        }
        if let Some(pid) = pid {
            let held = counts.by_process.entry(pid).or_default();
            if *held >= self.per_process() {
                return Err(Refused::TooManyFromProcess);
            }
            *held += 1;
        }
        counts.total += 1;
        self.update_pressure(&counts);
        Ok(Slot {
            admission: self.clone(),
            pid,
        })
    }

    fn update_pressure(&self, counts: &Counts) {
        let under = self.max - counts.total.min(self.max) < self.reserve();
        self.pressure.send_if_modified(|p| {
            let changed = *p != under;
            *p = under;
            changed
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let admission = &self.admission;
        let mut counts = admission.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(pid) = self.pid {
            if let Some(held) = counts.by_process.get_mut(&pid) {
                *held -= 1;
                if *held == 0 {
                    counts.by_process.remove(&pid);
                }
            }
        }
        admission.update_pressure(&counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_holds_at_most_its_share_and_others_still_get_in() {
        let admission = ApiAdmission::new(1000);
        assert_eq!(admission.per_process(), 250);
        let held: Vec<_> = (0..admission.per_process())
            .map(|_| admission.admit(Some(7)).expect("within the share"))
            .collect();
        assert_eq!(
            admission.admit(Some(7)).err(),
            Some(Refused::TooManyFromProcess)
        );
        let plugin = admission.admit(Some(8)).expect("another process");
        drop(plugin);
        drop(held);
        admission.admit(Some(7)).expect("room again");
    }

    #[test]
    fn pressure_rises_as_the_slots_run_low_and_falls_as_they_free() {
        let admission = ApiAdmission::new(64);
        let pressure = admission.pressure();
        let mut held: Vec<_> = (0..60).map(|i| admission.admit(Some(i)).unwrap()).collect();
        assert!(!*pressure.borrow(), "4 of 64 free: the reserve is 4");
        held.push(admission.admit(Some(100)).unwrap());
        assert!(*pressure.borrow());
        held.extend((0..3).map(|i| admission.admit(Some(200 + i)).unwrap()));
        assert_eq!(admission.admit(Some(300)).err(), Some(Refused::Full));
        held.truncate(50);
        assert!(!*pressure.borrow());
    }
}
