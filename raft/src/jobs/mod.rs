//! Background work of a node: freeing sticky bindings past their TTL (on the
//! leader) and releasing leaked addresses (on every node, for its own).

pub mod expiry;
pub mod reconciler;
