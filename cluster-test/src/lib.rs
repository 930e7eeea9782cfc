//! ipkeep's test harness. Everything here drives the built binaries as a
//! user or a container runtime would: `ipkeepd` as a process with its own
//! data directory and socket, the `ipkeep` plugin exec'd with CNI
//! environment and stdin, `ipkeepctl` exec'd, and pods as network
//! namespaces.

pub mod bins;
pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod cni;
pub mod conflist;
pub mod ctl;
pub mod daemon;
pub mod history;
pub mod netns;
pub mod rng;
pub mod wait;
pub mod workload;

/// Raises the soft limit of open files to the hard limit: hundreds of
/// concurrent plugin processes each hold three pipes in the test process.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
