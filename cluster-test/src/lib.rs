//! ipkeep's test harness. Everything here drives the built binaries as a
//! user or a container runtime would: `ipkeepd` as a process with its own
//! data directory and socket, the `ipkeep` plugin exec'd with CNI
//! environment and stdin, `ipkeepctl` exec'd, and pods as network
//! namespaces.

pub mod bench;
pub mod bins;
pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod cni;
pub mod conflist;
pub mod ctl;
pub mod daemon;
pub mod history;
pub mod needs;
pub mod netns;
pub mod procfs;
pub mod rng;
pub mod tmpfs;
pub mod wait;
pub mod workload;

/// Hundreds of concurrent plugin processes each hold three pipes in the
/// test process.
pub fn raise_fd_limit() {
    ipkeep_api::os::raise_fd_limit();
}
