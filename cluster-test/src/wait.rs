//! Bounded waiting, for the few things no event announces (a process
//! becoming ready to serve). Every wait has a deadline and says what it
//! waited for when it gives up.

use std::time::{Duration, Instant};

/// Calls `probe` until it returns Some, or panics after `limit` naming `what`.
pub fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("gave up after {limit:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
