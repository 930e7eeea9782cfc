//! Errors as the node API carries them, with CNI error codes.
//!
//! The codes below 100 are the CNI specification's; 100 and up are ipkeep's
//! own and are listed in docs/cni.md. The daemon decides the code, the plugin
//! passes it through unchanged, so the runtime and `ipkeepctl` see the same.

use serde::{Deserialize, Serialize};

/// Error codes. 1-99 are the CNI spec's well-known codes; 100+ are ipkeep's.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (reading stdin, ...).
    pub const IO: u32 = 5;
    /// Failed to decode content (stdin is not valid JSON, ...).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: the daemon is unreachable or the cluster cannot commit now.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;

    /// No free address is left in the subnet(s) the request may use.
    pub const EXHAUSTED: u32 = 100;
    /// The configuration names a subnet the cluster does not know.
    pub const UNKNOWN_SUBNET: u32 = 101;
    /// An admin request has a bad value; the message names the field.
    pub const INVALID_REQUEST: u32 = 102;
    /// The request conflicts with the state (an object exists, is in use, overlaps).
    pub const CONFLICT: u32 = 103;
    /// An admin request names an object that does not exist.
    pub const NOT_FOUND: u32 = 104;
    /// CHECK found the attachment different from what the runtime expects.
    pub const CHECK_FAILED: u32 = 105;
    /// The daemon failed internally (storage error); see its log.
    pub const INTERNAL: u32 = 106;
    /// The plugin or ipkeepctl and the daemon speak different protocol versions.
    pub const PROTOCOL: u32 = 107;
    /// A pod of this name is already running with the name's sticky address.
    pub const POD_RUNNING: u32 = 108;
    /// The pod's namespace may not use the subnet(s).
    pub const NOT_PERMITTED: u32 = 109;
    /// The pool that selects the pod has no free address.
    pub const POOL_EXHAUSTED: u32 = 110;
    /// The namespace holds its whole quota in the subnet.
    pub const QUOTA_EXCEEDED: u32 = 111;
    /// An explicitly requested address cannot be granted; the message says why.
    pub const ADDRESS_UNAVAILABLE: u32 = 112;
    /// Main-plugin mode: the pod's interface could not be made or is not as
    /// stored (netlink error, master link missing, interface exists).
    pub const INTERFACE: u32 = 113;
    /// The caller may not use the node API (it is not root).
    pub const ACCESS_DENIED: u32 = 114;
}

/// An error as the node API returns it; the plugin prints it as a CNI error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct ApiError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl ApiError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        ApiError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn try_again(details: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN, "try again later", details)
    }

    /// A bad value in an admin request: `field` is named first so that the
    /// operator sees at once what to fix.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            code::INVALID_REQUEST,
            "invalid request",
            format!("{field}: {reason}"),
        )
    }

    pub fn conflict(details: impl Into<String>) -> Self {
        Self::new(code::CONFLICT, "conflict", details)
    }

    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, "not found", details)
    }

    pub fn internal(details: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, "internal error in ipkeepd", details)
    }
}
