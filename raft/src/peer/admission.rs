//! Which peer connections get a handshake.
//!
//! An unauthenticated connection holds a slot for as long as its handshake
//! may take. One process reconnecting in a loop could hold most of the
//! listener's slots that way and delay the members' own connections, and
//! with them failover. So a source (an IP address) may have at most
//! [`MAX_HANDSHAKES_PER_SOURCE`] handshakes under way, and a source whose
//! handshakes keep failing (wrong secret, garbage, timeouts) is refused at
//! once for a while: each failure adds one to its score, the score drains
//! by [`DRAIN_PER_SECOND`], and past [`MAX_FAILURE_SCORE`] its connections
//! are closed unread. Members
//! authenticate in milliseconds and keep their connections, so neither
//! bound comes near them, unless a process shares a member's address and
//! floods from it (it would need to run on that member's host).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const MAX_HANDSHAKES_PER_SOURCE: u32 = 8;
pub const MAX_FAILURE_SCORE: f64 = 16.0;
pub const DRAIN_PER_SECOND: f64 = 2.0;
/// Sources remembered; past it, those with nothing under way and a drained
/// score are forgotten.
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyHandshakes,
    Failing,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::TooManyHandshakes => "over the per-source handshake limit",
            Refused::Failing => "from a source whose handshakes keep failing",
        }
    }
}

struct Source {
    handshakes: u32,
    score: f64,
    updated: Instant,
}

impl Source {
    fn drain(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.score = (self.score - elapsed * DRAIN_PER_SECOND).max(0.0);
        self.updated = now;
    }
}

#[derive(Clone, Default)]
pub struct PeerAdmission {
    sources: Arc<Mutex<HashMap<IpAddr, Source>>>,
}

/// A handshake under way; its end is reported with [`Handshake::failed`]
/// or by dropping it (success).
pub struct Handshake {
    admission: PeerAdmission,
    source: IpAddr,
    failed: bool,
}

impl PeerAdmission {
    pub fn admit(&self, source: IpAddr) -> Result<Handshake, Refused> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            sources.retain(|_, s| {
                s.drain(now);
                s.handshakes > 0 || s.score > 0.0
            });
        }
        let entry = sources.entry(source).or_insert(Source {
            handshakes: 0,
            score: 0.0,
            updated: now,
        });
        entry.drain(now);
        if entry.score >= MAX_FAILURE_SCORE {
            return Err(Refused::Failing);
        }
        if entry.handshakes >= MAX_HANDSHAKES_PER_SOURCE {
            return Err(Refused::TooManyHandshakes);
        }
        entry.handshakes += 1;
        Ok(Handshake {
            admission: self.clone(),
            source,
            failed: false,
        })
    }
}

impl Handshake {
    /// The handshake failed (bad proof, bad frame, timeout).
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut sources = self
            .admission
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sources.get_mut(&self.source) {
            s.handshakes = s.handshakes.saturating_sub(1);
            if self.failed {
                s.drain(Instant::now());
                s.score += 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_has_a_few_handshakes_at_once_and_others_are_unaffected() {
        let admission = PeerAdmission::default();
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_SOURCE)
            .map(|_| admission.admit(ip(1)).expect("within the limit"))
            .collect();
        assert_eq!(
            admission.admit(ip(1)).err(),
            Some(Refused::TooManyHandshakes)
        );
        let other = admission.admit(ip(2)).expect("another source");
        drop(other);
        drop(held);
        admission.admit(ip(1)).expect("slots free again");
    }

    #[test]
    fn a_source_whose_handshakes_keep_failing_is_refused_until_its_score_drains() {
        let admission = PeerAdmission::default();
        // One more than the bound: the score drains a little meanwhile.
        for _ in 0..=MAX_FAILURE_SCORE as usize {
            admission.admit(ip(1)).expect("not yet refused").failed();
        }
        assert_eq!(admission.admit(ip(1)).err(), Some(Refused::Failing));
        // Successful handshakes of another source are not counted.
        for _ in 0..100 {
            drop(admission.admit(ip(2)).expect("succeeding source"));
        }
        // Time passes: the score drains (moved back by hand, no sleeping).
        {
            let mut sources = admission.sources.lock().unwrap();
            let s = sources.get_mut(&ip(1)).unwrap();
            s.updated -= std::time::Duration::from_secs_f64(2.0 / DRAIN_PER_SECOND);
        }
        admission.admit(ip(1)).expect("drained below the bound");
    }
}
