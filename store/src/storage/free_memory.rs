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
