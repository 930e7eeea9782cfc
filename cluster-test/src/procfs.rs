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

/// CPU time the process has used (user and system), in clock ticks; None
/// when the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted
    // after its closing parenthesis (state is field 3, utime 14, stime 15).
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_grow_while_the_process_works() {
        let me = std::process::id();
        let before = cpu_ticks(me).expect("own stat");
        // Busy for at least a few ticks (a tick is 10 ms at the usual 100 Hz).
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut spin = 0u64;
        while std::time::Instant::now() < deadline {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = cpu_ticks(me).expect("own stat");
        assert!(after >= before + 5, "{before} -> {after} ticks");
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
