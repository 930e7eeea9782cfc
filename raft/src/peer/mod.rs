//! The peer transport: TCP between nodes, authenticated with the cluster
//! secret, carrying openraft's RPCs and writes forwarded to the leader.

pub mod admission;
pub mod auth;
pub mod conn;
pub mod pool;
pub mod server;
pub mod wire;

pub use auth::ClusterSecret;
