//! What the store's benches share: this process's memory as the kernel
//! reports it.

/// A `kB` field of /proc/self/status (`VmRSS`: resident now, `VmHWM`: the
/// peak), in KiB; 0 when it cannot be read.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
