//! The peer transport: TCP between nodes, authenticated with the cluster
//! secret, carrying openraft's RPCs (`raft_client`) and writes forwarded to
//! the leader (`pool`).

pub mod admission;
pub mod auth;
pub mod conn;
pub mod pool;
pub mod raft_client;
pub mod server;
pub mod wire;

pub use auth::ClusterSecret;
