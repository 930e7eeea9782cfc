//! How long this node's last snapshot build and install took. Kept in
//! memory for `ipkeepctl status`, the metrics and the benchmark: a snapshot
//! of a large state is the slowest thing a node does, and operators should
//! see it without reading logs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipkeep_api::message::SnapshotTiming;

#[derive(Debug, Clone, Default)]
pub struct SnapshotStats(Arc<Mutex<Last>>);

#[derive(Debug, Default)]
struct Last {
    built: Option<SnapshotTiming>,
    installed: Option<SnapshotTiming>,
}

fn timing(index: Option<u64>, took: Duration, bytes: u64) -> SnapshotTiming {
    SnapshotTiming {
        index: index.unwrap_or(0),
        millis: took.as_millis().try_into().unwrap_or(u64::MAX),
        bytes,
    }
}

impl SnapshotStats {
    pub fn record_built(&self, index: Option<u64>, took: Duration, bytes: u64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).built =
            Some(timing(index, took, bytes));
    }

    pub fn record_installed(&self, index: Option<u64>, took: Duration, bytes: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .installed = Some(timing(index, took, bytes));
    }

    pub fn last_built(&self) -> Option<SnapshotTiming> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).built
    }

    pub fn last_installed(&self) -> Option<SnapshotTiming> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .installed
    }
}
