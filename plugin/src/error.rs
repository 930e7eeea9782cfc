//! Plugin failures, printed as CNI error objects.

use ipkeep_api::{code, ApiError};
use serde::Serialize;

/// A failure with its CNI code. `msg` is short, `details` says what to fix.
#[derive(Debug, Clone)]
pub struct PluginError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl PluginError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// A bad or missing CNI_ variable; the spec wants its name in the message.
    pub fn env(var: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            code::INVALID_ENV,
            format!("invalid {var}"),
            format!("{var}: {reason}"),
        )
    }

    pub fn config(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            format!("{field}: {reason}"),
        )
    }

    pub fn decode(reason: impl std::fmt::Display) -> Self {
        Self::new(
            code::DECODE,
            "cannot decode the network configuration",
            reason.to_string(),
        )
    }

    pub fn version(reason: impl Into<String>) -> Self {
        Self::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            reason,
        )
    }
}

impl From<ApiError> for PluginError {
    fn from(e: ApiError) -> Self {
        PluginError {
            code: e.code,
            msg: e.msg,
            details: e.details,
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}: {}", self.code, self.msg, self.details)
    }
}

/// The spec's error object.
#[derive(Serialize)]
pub struct ErrorObject<'a> {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'a str,
    pub code: u32,
    pub msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub details: &'a str,
}
