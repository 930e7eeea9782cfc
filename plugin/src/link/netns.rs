//! Running netlink work inside a network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that opened it, so
//! work for a pod's namespace runs on a fresh OS thread that enters it
//! (setns) and builds its own current-thread runtime; the plugin's main
//! thread never changes namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};

use rtnetlink::Handle;

use super::LinkError;

/// An open network namespace (CNI_NETNS), kept open while the plugin works
/// in it so that it cannot be swapped under us.
pub struct NetnsFile {
    file: File,
    pub path: String,
}

impl NetnsFile {
    /// Opens CNI_NETNS; None when it no longer exists (DEL after the pod's
    /// namespace is gone).
    pub fn open(path: &str) -> Result<Option<NetnsFile>, LinkError> {
        if path.is_empty() {
            return Ok(None);
        }
        match File::open(path) {
            Ok(file) => Ok(Some(NetnsFile {
                file,
                path: path.to_owned(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LinkError::new(format!("cannot open CNI_NETNS {path}: {e}"))),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Runs `work` with a netlink handle in `netns` (None: the plugin's own
/// namespace), on its own thread and runtime, and returns its outcome.
pub fn run<T, F, Fut>(netns: Option<&NetnsFile>, work: F) -> Result<T, LinkError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, LinkError>>,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            if let Some(ns) = netns {
                // SAFETY: setns on this thread only, with a namespace file we keep open.
                if unsafe { libc::setns(ns.fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(LinkError::new(format!(
                        "cannot enter the network namespace {}: {e}",
                        ns.path
                    )));
                }
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| LinkError::new(format!("cannot start a runtime for netlink: {e}")))?;
            runtime.block_on(async move {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| LinkError::new(format!("cannot open a netlink socket: {e}")))?;
                tokio::spawn(connection);
                work(handle).await
            })
        });
        worker
            .join()
            .unwrap_or_else(|_| Err(LinkError::new("the netlink worker thread panicked")))
    })
}
