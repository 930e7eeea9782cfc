//! An authenticated, framed connection between two nodes.
//!
//! A frame is `[u32 length][u16 protocol version][bincode body][MAC]`; the
//! MAC is checked before the body is decoded, and a bad frame ends the
//! connection (and only it).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use ipkeep_api::codec::{self, CodecError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::{self, AuthError, ClusterSecret, Session, TAG};

/// Largest peer frame (an append of many entries, a snapshot chunk).
pub const MAX_PEER_FRAME: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("frame MAC does not verify: the frame was forged or damaged")]
    BadMac,
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the connection is out of step: an earlier call's answer was never read")]
    OutOfStep,
}

pub struct PeerConn {
    stream: TcpStream,
    session: Session,
    /// The authenticated node id of the other end.
    pub peer_id: u64,
    /// Set from sending a request until its answer has been read. A call
    /// whose future is dropped halfway (openraft abandons an RPC at its own
    /// timeout) leaves it set: that answer may still arrive, and the next
    /// call would read it as its own (a stale "success" for an append the
    /// follower never received). Such a connection is never used again.
    awaiting_answer: bool,
}

impl PeerConn {
    /// Connects to a peer and authenticates both ways, within `timeout`.
    pub async fn connect(
        addr: &str,
        secret: &ClusterSecret,
        my_id: u64,
        timeout: Duration,
    ) -> Result<PeerConn, ConnError> {
        let attempt = async {
            let mut stream =
                TcpStream::connect(addr)
                    .await
                    .map_err(|source| ConnError::Connect {
                        addr: addr.to_owned(),
                        source,
                    })?;
            stream.set_nodelay(true)?;
            let (session, peer_id) = auth::client(&mut stream, secret, my_id).await?;
            Ok(PeerConn {
                stream,
                session,
                peer_id,
                awaiting_answer: false,
            })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnError::Timeout(timeout))?
    }

    /// Authenticates an accepted connection, within `timeout`.
    pub async fn accept(
        mut stream: TcpStream,
        secret: &ClusterSecret,
        my_id: u64,
        timeout: Duration,
    ) -> Result<PeerConn, ConnError> {
        stream.set_nodelay(true)?;
        let (session, peer_id) =
            tokio::time::timeout(timeout, auth::server(&mut stream, secret, my_id))
                .await
                .map_err(|_| ConnError::Timeout(timeout))??;
        Ok(PeerConn {
            stream,
            session,
            peer_id,
            awaiting_answer: false,
        })
    }

    /// Whether every request sent on this connection has had its answer
    /// read, so that the next frame to arrive answers the next request.
    pub fn in_step(&self) -> bool {
        !self.awaiting_answer
    }

    /// Whether an idle connection still looks usable: the peer has not
    /// closed it (a restart) and has sent nothing unasked. A check, not a
    /// promise: the peer may still go away before the next call.
    pub fn looks_idle_and_open(&self) -> bool {
        if !self.in_step() {
            return false;
        }
        // A non-blocking peek asks the kernel itself; tokio's try_read would
        // answer from its cached readiness, which may not have seen the
        // peer's close yet.
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer we own, on a socket we own; MSG_PEEK
        // leaves any data in place and MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // 0 is the peer's close; a byte is an answer nobody asked for.
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), ConnError> {
        let mut frame = codec::encode_frame(message)?;
        let mac = self.session.seal(&frame);
        frame.extend_from_slice(&mac);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Reads one frame; Ok(None) when the peer closed the connection cleanly.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnError> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = codec::frame_len(header, MAX_PEER_FRAME)?;
        let mut rest = vec![0u8; len + TAG];
        self.stream.read_exact(&mut rest).await?;
        let (body, mac) = rest.split_at(len);
        let mut framed = Vec::with_capacity(4 + len);
        framed.extend_from_slice(&header);
        framed.extend_from_slice(body);
        if !self.session.open(&framed, mac) {
            return Err(ConnError::BadMac);
        }
        Ok(Some(codec::decode_frame_body(body)?))
    }

    /// One request, one response, within `timeout`. Refused on a connection
    /// that is out of step (see `awaiting_answer`).
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &mut self,
        request: &Q,
        timeout: Duration,
    ) -> Result<R, ConnError> {
        if self.awaiting_answer {
            return Err(ConnError::OutOfStep);
        }
        self.awaiting_answer = true;
        let exchange = async {
            self.send(request).await?;
            match self.recv().await? {
                Some(r) => {
                    self.awaiting_answer = false;
                    Ok(r)
                }
                None => Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection",
                ))),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ConnError::Timeout(timeout))?
    }
}
