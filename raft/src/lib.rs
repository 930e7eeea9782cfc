//! ipkeepd, the ipkeep node daemon. Its rooms:
//!
//! - [`node_api`]: the unix socket the plugin and ipkeepctl talk to, who may
//!   hold its connections, and one function per request;
//! - [`cluster`]: the running node (its Raft handle, forwarding to the
//!   leader, membership), group commit on the leader, forming a cluster,
//!   elections held off, a member starting over;
//! - [`peer`]: the TCP transport between nodes, its authentication and
//!   admission, and the clients over it (openraft's RPCs, forwarded writes);
//! - [`jobs`]: what runs in the background (sticky bindings' expiry, the
//!   leak reconciler);
//! - [`ops`]: configuration, metrics and their endpoint, the disk floor,
//!   refused connections in aggregate;
//! - [`daemon`]: wires them together and runs until a signal.

pub mod cluster;
pub mod daemon;
pub mod jobs;
pub mod node_api;
pub mod ops;
pub mod peer;
