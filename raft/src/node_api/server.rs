//! The node API on a unix socket: framed requests in, framed responses out.
//!
//! The socket is created mode 0600 under a temporary name and renamed into
//! place, so that it is never reachable with looser permissions. Each
//! connection is served by its own task; a bad frame closes that connection
//! and nothing else.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ipkeep_api::codec::{self, CodecError, MAX_REQUEST_FRAME};
use ipkeep_api::message::{Request, Response};
use ipkeep_api::{code, ApiError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::node::Node;
use crate::node_api::admission::{ApiAdmission, Refused, PRESSURE_IDLE};
use crate::node_api::service;
use crate::ops::refusals::{Refusals, SUMMARY_PERIOD};

/// A connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a request frame may take to arrive once it has begun.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    admission: ApiAdmission,
}

impl ApiServer {
    /// Binds the socket, refusing to take over one that a live daemon serves.
    pub async fn bind(path: &Path, max_connections: usize) -> anyhow::Result<ApiServer> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .with_context(|| format!("creating socket directory {}", dir.display()))?;
            check_socket_dir(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                bail!(
                    "another ipkeepd is already serving {}; stop it first or pick another --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let staging = path.with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)
            .with_context(|| format!("binding {}", staging.display()))?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", staging.display()))?;
        std::fs::rename(&staging, path)
            .with_context(|| format!("moving socket into place at {}", path.display()))?;
        Ok(ApiServer {
            listener,
            path: path.to_owned(),
            admission: ApiAdmission::new(max_connections),
        })
    }

    /// Serves until `stop` turns true, then waits for requests in flight.
    pub async fn serve(self, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
        let refusals = Arc::new(Refusals::new("api", node.metrics.refused.clone()));
        let mut summary = tokio::time::interval(SUMMARY_PERIOD);
        let mut connections = JoinSet::new();
        loop {
            // Never waits for a free slot: a caller over the limits is told
            // so at once rather than left in the listen backlog.
            let accepted = tokio::select! {
                _ = stop.changed() => break,
                _ = summary.tick() => {
                    refusals.flush();
                    continue;
                }
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
                    let slot = match self.admission.admit(pid) {
                        Ok(slot) => slot,
                        Err(refused) => {
                            let source =
                                pid.map_or("unknown process".into(), |p| format!("pid {p}"));
                            refusals.refused(&source, refused.reason());
                            refuse_now(&stream, refused);
                            continue;
                        }
                    };
                    let node = node.clone();
                    let stop = stop.clone();
                    let pressure = self.admission.pressure();
                    let refusals = refusals.clone();
                    connections.spawn(async move {
                        let served =
                            serve_connection(&node, stream, stop, pressure, &refusals).await;
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "node API connection closed");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a node API connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            // Reap finished connections so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
        let _ = std::fs::remove_file(&self.path);
        // Requests already being served get their answers.
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("node API requests still running at shutdown were dropped");
        }
    }
}

/// Refuses a socket directory that someone other than root (or this
/// daemon's user) could write to: they could replace the socket with their
/// own and answer the plugin in the daemon's place.
fn check_socket_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading socket directory {}", dir.display()))?;
    let me = effective_uid();
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "socket directory {} is owned by uid {}, not root: anyone with that uid could replace the socket; use a root-owned directory (--socket)",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "socket directory {} is writable by group or others (mode {:o}): they could replace the socket; chmod go-w it or pick another --socket",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// This process's effective uid.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Only root (or the daemon's own user) may use the node API. The socket's
/// mode already keeps others out; this holds even if someone loosens it.
fn caller_allowed(stream: &UnixStream) -> Result<(), ApiError> {
    let cred = stream.peer_cred().map_err(|e| {
        ApiError::new(
            code::ACCESS_DENIED,
            "access denied",
            format!("cannot tell who the caller is: {e}"),
        )
    })?;
    let uid = cred.uid();
    if uid == 0 || uid == effective_uid() {
        return Ok(());
    }
    Err(ApiError::new(
        code::ACCESS_DENIED,
        "access denied",
        format!("the node API serves root only; the caller runs as uid {uid}: run it as root"),
    ))
}

async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, CodecError> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = codec::frame_len(header, MAX_REQUEST_FRAME)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    codec::decode_frame_body(&body).map(Some)
}

async fn write_response(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let frame = codec::encode_frame(response).map_err(io::Error::other)?;
    stream.write_all(&frame).await
}

/// Answers a connection over the limits without reading it: the error
/// frame is small enough for the socket's buffer, and the caller reads it
/// after sending its request. Nothing waits on it.
fn refuse_now(stream: &UnixStream, refused: Refused) {
    let error = ApiError::try_again(format!(
        "ipkeepd is serving as many node API connections as it may ({}); try again",
        refused.reason()
    ));
    if let Ok(frame) = codec::encode_frame(&Response::Error(error)) {
        let _ = stream.try_write(&frame);
    }
}

/// Waits until the caller sends something (true), or its connection has
/// been idle too long (false): IDLE_TIMEOUT, or PRESSURE_IDLE while the
/// listener runs short of slots.
async fn wait_for_request(
    stream: &UnixStream,
    stop: &mut watch::Receiver<bool>,
    pressure: &mut watch::Receiver<bool>,
) -> io::Result<bool> {
    let idle_since = tokio::time::Instant::now();
    loop {
        let limit = if *pressure.borrow_and_update() {
            PRESSURE_IDLE
        } else {
            IDLE_TIMEOUT
        };
        tokio::select! {
            _ = stop.changed() => return Ok(false),
            _ = tokio::time::sleep_until(idle_since + limit) => return Ok(false),
            _ = pressure.changed() => continue,
            ready = stream.readable() => {
                ready?;
                return Ok(true);
            }
        }
    }
}

async fn serve_connection(
    node: &Node,
    mut stream: UnixStream,
    mut stop: watch::Receiver<bool>,
    mut pressure: watch::Receiver<bool>,
    refusals: &Refusals,
) -> io::Result<()> {
    if let Err(error) = caller_allowed(&stream) {
        let source = stream
            .peer_cred()
            .map_or("unknown caller".into(), |c| format!("uid {}", c.uid()));
        refusals.refused(&source, "not root");
        // Its request is read (so that it sees the answer rather than a
        // reset) but never decoded.
        let mut header = [0u8; 4];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut header)).await;
        let _ = write_response(&mut stream, &Response::Error(error)).await;
        return Ok(());
    }
    loop {
        if !wait_for_request(&stream, &mut stop, &mut pressure).await? {
            return Ok(());
        }
        let request = tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = tokio::time::timeout(FRAME_TIMEOUT, read_request(&mut stream)) => match r {
                Err(_) => return Ok(()),
                Ok(r) => r,
            },
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(CodecError::Io(e)) => return Err(e),
            Err(e) => {
                // Say why before closing: a plugin of another version must
                // get a clear error, not a dropped connection.
                let code = if matches!(e, CodecError::Version { .. }) {
                    code::PROTOCOL
                } else {
                    code::DECODE
                };
                let error = ApiError::new(code, "bad request frame", e.to_string());
                tracing::warn!(error = %e, "refused a bad node API frame");
                let _ = write_response(&mut stream, &Response::Error(error)).await;
                return Ok(());
            }
        };
        let started = std::time::Instant::now();
        let kind = request_kind(&request);
        let response = service::handle(node, request).await;
        let code = match &response {
            Response::Error(e) => e.code,
            _ => 0,
        };
        node.metrics.observe(kind, code, started.elapsed());
        if let Response::Error(e) = &response {
            tracing::info!(request = kind, code = e.code, error = %e, elapsed_us = started.elapsed().as_micros() as u64, "request failed");
        } else {
            tracing::debug!(
                request = kind,
                elapsed_us = started.elapsed().as_micros() as u64,
                "request served"
            );
        }
        write_response(&mut stream, &response).await?;
    }
}

fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Add(_) => "add",
        Request::Del(_) => "del",
        Request::Check(_) => "check",
        Request::Gc(_) => "gc",
        Request::Ready(_) => "ready",
        Request::NodeStatus => "status",
        Request::ClusterStatus => "cluster-status",
        Request::IpLeaks => "ip-leaks",
        Request::NodeForget { .. } => "node-forget",
        Request::SnapshotSave => "snapshot-save",
        Request::SubnetCreate(_) => "subnet-create",
        Request::SubnetList => "subnet-list",
        Request::SubnetShow { .. } => "subnet-show",
        Request::SubnetDelete { .. } => "subnet-delete",
        Request::IpList(_) => "ip-list",
        Request::SubnetUpdate { .. } => "subnet-update",
        Request::IpHistory { .. } => "ip-history",
        Request::IpReserve { .. } => "ip-reserve",
        Request::IpUnreserve { .. } => "ip-unreserve",
        Request::IpReservations => "ip-reservations",
        Request::PoolCreate(_) => "pool-create",
        Request::PoolList => "pool-list",
        Request::PoolShow { .. } => "pool-show",
        Request::PoolDelete { .. } => "pool-delete",
        Request::PoolResize { .. } => "pool-resize",
        Request::BindingList { .. } => "binding-list",
        Request::BindingRelease { .. } => "binding-release",
        Request::MemberList => "member-list",
        Request::MemberAdd { .. } => "member-add",
        Request::MemberPromote { .. } => "member-promote",
        Request::MemberRemove { .. } => "member-remove",
        Request::Linearize(inner) => request_kind(inner),
        Request::StateDigest => "state-digest",
    }
}
