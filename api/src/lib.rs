//! Wire types shared by everything that talks to `ipkeepd`: the model objects
//! (subnets, allocations), the node API's requests and responses, the framing
//! codec, the error codes, and a blocking unix-socket client.
//!
//! This crate is linked into the CNI plugin, which is exec'd once per pod: it
//! must stay free of async runtimes and heavy dependencies.

pub mod client;
pub mod clock;
pub mod codec;
pub mod error;
pub mod fields;
pub mod golden;
pub mod mac;
pub mod message;
pub mod model;
pub mod names;
pub mod nesting;
pub mod os;
pub mod units;

pub use client::{Client, ClientError};
pub use error::{code, ApiError};
pub use mac::Mac;
pub use message::{Request, Response};

/// Where `ipkeepd` listens and where the plugin and `ipkeepctl` look by default.
pub const DEFAULT_SOCKET: &str = "/run/ipkeep/ipkeepd.sock";
