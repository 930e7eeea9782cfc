//! ipkeep's store: the IPAM model, the allocator, the deterministic state
//! machine, and the Raft storage: the log in files of its own
//! (`storage::log_file`), the state machine in sled.
//!
//! Only [`storage`] knows about sled; the model, the allocator and the state
//! machine deal in records and changes, so that the engine could be replaced
//! without touching them.

pub mod command;
pub mod free_set;
pub mod held;
pub mod history;
pub mod pool;
pub mod records;
pub mod state;
pub mod storage;
pub mod subnet;
#[cfg(test)]
mod test_commands;
pub mod types;

pub use command::{Command, Reply};
pub use state::State;
pub use types::{NodeId, PeerNode, TypeConfig};
