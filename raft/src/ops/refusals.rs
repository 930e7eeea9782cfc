//! Refused connections, counted and logged in aggregate.
//!
//! A process reconnecting in a loop would flood the log with one WARN per
//! refused connection. Each refusal counts in the node's metrics at once,
//! and the log gets the first refusal after a quiet spell right away and
//! the rest as one summary line per period: how many, why, and from which
//! sources most.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How often the summary of refusals is logged while they go on.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(10);
/// Sources a summary names.
const TOP_SOURCES: usize = 3;
/// Distinct details a summary shows per reason.
const MAX_DETAILS: usize = 3;
/// Sources remembered between summaries; the rest are counted as "other".
const MAX_SOURCES: usize = 1024;

pub type RefusalCounters = Family<Vec<(String, String)>, Counter>;

#[derive(Default)]
struct Pending {
    by_reason: BTreeMap<&'static str, u64>,
    /// The distinct details given with each reason (why a handshake
    /// failed), the first few.
    details: BTreeMap<&'static str, Vec<String>>,
    by_source: HashMap<String, u64>,
    other_sources: u64,
    /// When the last line was logged.
    logged: Option<Instant>,
}

pub struct Refusals {
    listener: &'static str,
    counters: RefusalCounters,
    pending: Mutex<Pending>,
}

impl Refusals {
    /// Refusals of one listener ("peer", "api"), counted in `counters` by
    /// listener and reason.
    pub fn new(listener: &'static str, counters: RefusalCounters) -> Refusals {
        Refusals {
            listener,
            counters,
            pending: Mutex::default(),
        }
    }

    /// One connection from `source` refused for `reason`.
    pub fn refused(&self, source: &str, reason: &'static str) {
        self.refused_with(source, reason, None);
    }

    /// As [`Refusals::refused`], with what went wrong; the summary shows
    /// the first few distinct details of each reason.
    pub fn refused_with(&self, source: &str, reason: &'static str, detail: Option<String>) {
        self.counters
            .get_or_create(&vec![
                ("listener".to_owned(), self.listener.to_owned()),
                ("reason".to_owned(), reason.to_owned()),
            ])
            .inc();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending.by_reason.entry(reason).or_default() += 1;
        if let Some(detail) = detail {
            let seen = pending.details.entry(reason).or_default();
            if seen.len() < MAX_DETAILS && !seen.contains(&detail) {
                seen.push(detail);
            }
        }
        if let Some(n) = pending.by_source.get_mut(source) {
            *n += 1;
        } else if pending.by_source.len() < MAX_SOURCES {
            pending.by_source.insert(source.to_owned(), 1);
        } else {
            pending.other_sources += 1;
        }
        let quiet = pending
            .logged
            .is_none_or(|at| at.elapsed() >= SUMMARY_PERIOD);
        if quiet {
            self.log(&mut pending);
        }
    }

    /// Logs what was refused since the last line, if anything; for the
    /// listener's periodic tick.
    pub fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.by_reason.is_empty() {
            self.log(&mut pending);
        }
    }

    fn log(&self, pending: &mut Pending) {
        let total: u64 = pending.by_reason.values().sum();
        let reasons = pending
            .by_reason
            .iter()
            .map(|(reason, n)| match pending.details.get(reason) {
                Some(details) => format!("{n} {reason} ({})", details.join("; ")),
                None => format!("{n} {reason}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut sources: Vec<(&String, &u64)> = pending.by_source.iter().collect();
        sources.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut top = sources
            .iter()
            .take(TOP_SOURCES)
            .map(|(source, n)| format!("{source} ({n})"))
            .collect::<Vec<_>>();
        let rest = sources.len().saturating_sub(TOP_SOURCES) as u64 + pending.other_sources;
        if rest > 0 {
            top.push(format!("{rest} more"));
        }
        tracing::warn!(
            listener = self.listener,
            refused = total,
            sources = %top.join(", "),
            "refused connections: {reasons}"
        );
        pending.by_reason.clear();
        pending.details.clear();
        pending.by_source.clear();
        pending.other_sources = 0;
        pending.logged = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_and_the_log_summarises_them() {
        let counters = RefusalCounters::default();
        let refusals = Refusals::new("peer", counters.clone());
        for i in 0..1000 {
            refusals.refused(&format!("10.0.0.{}", i % 5), "over the per-source limit");
        }
        refusals.refused("10.0.0.9", "failed authentication");
        let count = |reason: &str| {
            counters
                .get_or_create(&vec![
                    ("listener".to_owned(), "peer".to_owned()),
                    ("reason".to_owned(), reason.to_owned()),
                ])
                .get()
        };
        assert_eq!(count("over the per-source limit"), 1000);
        assert_eq!(count("failed authentication"), 1);
        {
            let pending = refusals.pending.lock().unwrap();
            // The first was logged at once; the rest wait for the summary.
            assert_eq!(pending.by_reason.values().sum::<u64>(), 1000);
            assert!(pending.logged.is_some());
        }
        refusals.flush();
        assert!(refusals.pending.lock().unwrap().by_reason.is_empty());
    }
}
