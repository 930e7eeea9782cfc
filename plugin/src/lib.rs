//! The parts of the CNI plugin `ipkeep` (the binary is `main.rs`): a
//! library so that the fuzz targets reach the same parsers the runtime's
//! input goes through.

pub mod ask;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod interface;
pub mod ipam;
pub mod link;
pub mod logging;
pub mod result;
pub mod version;
