//! ipkeepd, the ipkeep node daemon: openraft wiring, the node API on a unix
//! socket, bootstrap and the peer network.

pub mod api_admission;
pub mod api_server;
pub mod bootstrap;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod elections;
pub mod expiry;
pub mod metrics;
pub mod metrics_server;
pub mod network;
pub mod node;
pub mod peer;
pub mod reconciler;
pub mod recovery;
pub mod refusals;
pub mod service;
pub mod write_batch;
