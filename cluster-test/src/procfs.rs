//! A process's memory as the kernel reports it in /proc/PID/status.

/// A `kB` field of /proc/PID/status (VmRSS: resident now, VmHWM: the peak),
/// in KiB; None when the process or the field is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
