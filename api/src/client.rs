//! A small blocking client for the node API, for the plugin and `ipkeepctl`.
//! No async runtime: the plugin is exec'd once per pod and must start fast.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::{self, CodecError, MAX_RESPONSE_FRAME};
use crate::error::{code, ApiError};
use crate::message::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ipkeepd is not reachable at {}: {source}", path.display())]
    Unreachable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ipkeepd's socket {} is for root only (mode 0600): run this as root", path.display())]
    AccessDenied { path: PathBuf },
    #[error("ipkeepd at {} did not answer within {after:?}", path.display())]
    Timeout { path: PathBuf, after: Duration },
    #[error("connection to ipkeepd at {} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bad message from ipkeepd: {0}")]
    Codec(#[source] CodecError),
    #[error("ipkeepd answered {got} to a request that expects {expected}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ClientError {
    /// The error as the plugin reports it: an unreachable or slow daemon is a
    /// transient condition (11), the daemon's own errors keep their code.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            ClientError::Api(e) => e.clone(),
            ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::Io { .. } => ApiError::try_again(self.to_string()),
            ClientError::AccessDenied { .. } => {
                ApiError::new(code::ACCESS_DENIED, "access denied", self.to_string())
            }
            ClientError::Codec(CodecError::Version { .. }) => {
                ApiError::new(code::PROTOCOL, "protocol mismatch", self.to_string())
            }
            ClientError::Codec(_) | ClientError::Unexpected { .. } => {
                ApiError::new(code::PROTOCOL, "bad answer from ipkeepd", self.to_string())
            }
        }
    }
}

pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// Connects to the daemon's socket; every later read and write is bounded by `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                ClientError::AccessDenied {
                    path: path.to_owned(),
                }
            } else {
                ClientError::Unreachable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let io_err = |source| ClientError::Io {
            path: path.to_owned(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        Ok(Client {
            stream,
            path: path.to_owned(),
            timeout,
        })
    }

    /// Sends one request and waits for its response. A `Response::Error` is
    /// returned as `Err(ClientError::Api)`.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        codec::write_frame(&mut self.stream, request).map_err(|e| self.classify(e))?;
        let response: Response = codec::read_frame(&mut self.stream, MAX_RESPONSE_FRAME)
            .map_err(|e| self.classify(e))?;
        match response {
            Response::Error(e) => Err(ClientError::Api(e)),
            other => Ok(other),
        }
    }

    fn classify(&self, err: CodecError) -> ClientError {
        match err {
            CodecError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Timeout {
                    path: self.path.clone(),
                    after: self.timeout,
                }
            }
            CodecError::Io(source) => ClientError::Io {
                path: self.path.clone(),
                source,
            },
            other => ClientError::Codec(other),
        }
    }
}

/// Matches a response against the variant a call expects, e.g.
/// `expect!(response, Response::Added(r) => r)`.
#[macro_export]
macro_rules! expect_response {
    ($response:expr, $pattern:pat => $value:expr, $expected:literal) => {
        match $response {
            $pattern => Ok($value),
            other => Err($crate::ClientError::Unexpected {
                expected: $expected,
                got: other.kind(),
            }),
        }
    };
}
