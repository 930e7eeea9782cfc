//! Hands the allocator's free memory back to the system after a burst.
//!
//! A restart's rebuild, a snapshot install and a snapshot build each take
//! memory for a while (decoded records, sorted runs, the encoded file) and
//! free it. glibc keeps freed heap memory for reuse by the process, so
//! without a trim a node's resident memory stays near the burst's peak for
//! good, although nothing uses it.

/// Returns free heap pages to the system (glibc's `malloc_trim`; nothing
/// elsewhere).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and only gives
    // back pages no allocation uses; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Environment variable with which an operator chooses glibc's arena count
/// themselves; [`use_one_arena`] then leaves it alone.
const ARENA_ENV: &str = "MALLOC_ARENA_MAX";

/// Makes every thread of the process allocate from one glibc arena. Call it
/// first thing in `main`, before any thread starts.
///
/// By default glibc gives threads that allocate at the same time arenas of
/// their own, and memory freed into one arena serves only allocations from
/// that arena. The daemon's large states are built on different threads
/// (loaded at start on one, installed from a snapshot on a blocking-pool
/// thread), so without one arena the memory a replaced state frees is not
/// reused by the state replacing it, and a follower that fell behind keeps
/// the memory of both once it has installed over its own state (the third
/// stage of `cargo bench -p ipkeep-store --bench snapshot_install` shows
/// it). Small allocations are served from glibc's per-thread caches
/// without the arena's lock; the node-API benchmark measures what the
/// shared lock costs. An operator's `MALLOC_ARENA_MAX` takes precedence.
pub fn use_one_arena() {
    if std::env::var_os(ARENA_ENV).is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before
    // other threads exist, nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
