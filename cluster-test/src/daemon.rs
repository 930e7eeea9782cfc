//! `ipkeepd` as a process: its own data directory, socket and log file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use ipkeep_api::message::{NodeStatus, Request, Response};
use ipkeep_api::{Client, ClientError};
use tempfile::TempDir;

use crate::bins::bin;
use crate::wait;

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub node_id: u64,
    pub node_name: String,
    /// `NAME=CIDR` or `none`.
    pub default_subnet: String,
    pub snapshot_every: Option<u64>,
    pub keep_logs: Option<u64>,
    pub extra_args: Vec<String>,
    /// Put the data directory on a tmpfs of this many MiB (a small disk that
    /// a test can fill).
    pub data_tmpfs_mib: Option<u64>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            node_id: 1,
            node_name: "node-1".into(),
            default_subnet: "none".into(),
            snapshot_every: None,
            keep_logs: None,
            extra_args: vec![],
            data_tmpfs_mib: None,
        }
    }
}

pub struct Daemon {
    // Holds the data directory, the socket and the log; removed on drop.
    dir: TempDir,
    pub options: DaemonOptions,
    child: Option<Child>,
}

/// How long a daemon may take to start serving.
const READY_LIMIT: Duration = Duration::from_secs(30);

impl Daemon {
    /// Starts a daemon on a fresh data directory and waits until it serves.
    pub fn start(options: DaemonOptions) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("ipkeep-test-")
            .tempdir()
            .expect("temp dir");
        let mut daemon = Daemon {
            dir,
            options,
            child: None,
        };
        daemon.spawn();
        daemon.wait_ready();
        daemon
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ipkeepd.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ipkeepd.log")
    }

    /// A directory beside the daemon's for the test's own files (plugin log).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (the data directory is kept between starts).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        if let Some(mib) = self.options.data_tmpfs_mib {
            crate::tmpfs::mount(&self.data_dir(), mib);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log file");
        let o = &self.options;
        let mut cmd = Command::new(bin("ipkeepd"));
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--socket")
            .arg(self.socket())
            .arg("--node-id")
            .arg(o.node_id.to_string())
            .arg("--node-name")
            .arg(&o.node_name)
            .arg("--default-subnet")
            .arg(&o.default_subnet)
            .args(&o.extra_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = o.snapshot_every {
            cmd.arg("--snapshot-every").arg(n.to_string());
        }
        if let Some(n) = o.keep_logs {
            cmd.arg("--keep-logs").arg(n.to_string());
        }
        self.child = Some(cmd.spawn().expect("spawn ipkeepd"));
    }

    /// Waits until the daemon answers on its socket as a leader with its log
    /// applied (so that everything it held before a restart is visible).
    pub fn wait_ready(&mut self) {
        let socket = self.socket();
        let mut exited = None;
        let child = self.child.as_mut().expect("daemon running");
        wait::until("ipkeepd to serve as leader", READY_LIMIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return Some(());
            }
            let status = status_at(&socket).ok()?;
            (status.role == "Leader" && status.last_applied == status.last_log_index).then_some(())
        });
        if let Some(status) = exited {
            panic!(
                "ipkeepd exited during start-up ({status}); its log:\n{}",
                self.log()
            );
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket(), Duration::from_secs(30)).expect("connect to ipkeepd")
    }

    pub fn request(&self, request: &Request) -> Result<Response, ClientError> {
        Client::connect(&self.socket(), Duration::from_secs(30))?.call(request)
    }

    pub fn status(&self) -> NodeStatus {
        status_at(&self.socket()).expect("node status")
    }

    /// kill -9, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the daemon to exit by itself (it stops when its store
    /// fails); panics after `limit`.
    /// How the daemon ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let status = wait::until("ipkeepd to exit", limit, || child.try_wait().ok().flatten());
        self.child = None;
        status
    }

    /// SIGTERM, and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().expect("wait for ipkeepd")
    }

    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }
}

fn status_at(socket: &Path) -> Result<NodeStatus, ClientError> {
    let mut client = Client::connect(socket, Duration::from_secs(2))?;
    match client.call(&Request::NodeStatus)? {
        Response::NodeStatus(s) => Ok(s),
        other => Err(ClientError::Unexpected {
            expected: "NodeStatus",
            got: other.kind(),
        }),
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if self.options.data_tmpfs_mib.is_some() {
            crate::tmpfs::unmount(&self.data_dir());
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- last lines of ipkeepd's log ({}):",
                self.log_path().display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
