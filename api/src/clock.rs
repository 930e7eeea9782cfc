//! The wall clock, as the daemon and the plugin read it.
//!
//! `IPKEEP_CLOCK_SKEW_MS` (signed milliseconds) moves it, for fault
//! injection: the chaos harness gives one node's daemon and plugin a clock
//! that is off, as a host whose time is wrong would have, to check that no
//! decision depends on a node's clock (the leader stamps the time into
//! every command). Unset, it is the system clock.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub const SKEW_ENV: &str = "IPKEEP_CLOCK_SKEW_MS";

fn skew_us() -> i64 {
    static SKEW: OnceLock<i64> = OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(SKEW_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(0, |ms| ms.saturating_mul(1000))
    })
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    system.saturating_add_signed(skew_us())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}
