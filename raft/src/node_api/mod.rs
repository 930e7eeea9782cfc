//! The node API: the unix socket the plugin and ipkeepctl talk to, which
//! connections it serves, and one function per request.

pub mod admission;
pub mod server;
pub mod service;
