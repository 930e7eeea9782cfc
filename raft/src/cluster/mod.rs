//! The cluster as this node takes part in it: the running node and the paths
//! that take writes, reads and membership changes to the leader; group
//! commit of writes on the leader; forming a cluster on first start; holding
//! elections off; starting over when the state fell behind the log.

pub mod bootstrap;
pub mod elections;
pub mod node;
pub mod recovery;
pub mod write_batch;
