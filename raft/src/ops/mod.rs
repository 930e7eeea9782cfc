//! What an operator sets and sees: the daemon's configuration, its metrics
//! and their endpoint, the free-space floor, and refused connections
//! counted and logged in aggregate.

pub mod config;
pub mod disk;
pub mod metrics;
pub mod metrics_server;
pub mod refusals;
