//! Exec'ing CNI plugins as a runtime does: a clean environment with the CNI_
//! variables, the network configuration on stdin, the result on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::bins::{bin_dir, plugin, plugin_dir, REFERENCE_PLUGINS};

/// An ipam section that points the plugin at a test daemon.
pub fn ipam(subnet: Value, socket: &Path, log_file: &Path) -> Value {
    let mut ipam = json!({
        "type": "ipkeep",
        "socket": socket,
        "logFile": log_file,
        "logLevel": "debug",
    });
    match subnet {
        Value::Array(_) => ipam["subnets"] = subnet,
        other => ipam["subnet"] = other,
    }
    ipam
}

/// A network configuration that calls ipkeep directly (IPAM-only use).
pub fn ipam_only_conf(version: &str, network: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": network, "type": "ipkeep", "ipam": ipam})
}

#[derive(Debug, Clone)]
pub struct CniOutput {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} (stderr {:?})",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code of a failed call.
    pub fn error_code(&self) -> u64 {
        assert!(
            !self.ok(),
            "expected a failure, got success: {}",
            self.stdout
        );
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }

    pub fn error_text(&self) -> String {
        let j = self.json();
        format!(
            "{} {}",
            j["msg"].as_str().unwrap_or(""),
            j["details"].as_str().unwrap_or("")
        )
    }

    /// The addresses (without prefix) of a success result.
    pub fn addresses(&self) -> Vec<String> {
        assert!(self.ok(), "call failed: {} {}", self.stdout, self.stderr);
        self.json()["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| {
                ip["address"]
                    .as_str()
                    .expect("address")
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct CniCall {
    plugin: PathBuf,
    env: Vec<(String, String)>,
    stdin: String,
    /// Run inside this network namespace (`ip netns exec`), as a runtime on
    /// that node would.
    in_netns: Option<String>,
    /// Run as this (non-root) uid and gid, through setpriv.
    as_uid: Option<u32>,
}

impl CniCall {
    /// The ipkeep plugin.
    pub fn ipkeep(command: &str) -> CniCall {
        CniCall::new(plugin(), command)
    }

    /// A reference plugin (bridge, macvlan, ptp, host-local, ...).
    pub fn reference(name: &str, command: &str) -> CniCall {
        CniCall::new(Path::new(REFERENCE_PLUGINS).join(name), command)
    }

    fn new(plugin: PathBuf, command: &str) -> CniCall {
        // A reference plugin finds its `ipam` by name on CNI_PATH: the
        // plugin under test first.
        let ipkeep_dir = plugin_dir();
        let cni_path = format!(
            "{}:{}:{}",
            ipkeep_dir.display(),
            bin_dir().display(),
            REFERENCE_PLUGINS
        );
        CniCall {
            plugin,
            env: vec![
                ("CNI_COMMAND".into(), command.into()),
                ("CNI_PATH".into(), cni_path),
                ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ],
            stdin: String::new(),
            in_netns: None,
            as_uid: None,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> CniCall {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn without(mut self, key: &str) -> CniCall {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS in one go.
    pub fn attachment(self, container_id: &str, ifname: &str, netns: &str) -> CniCall {
        self.env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_NETNS", netns)
    }

    pub fn args(self, cni_args: &str) -> CniCall {
        self.env("CNI_ARGS", cni_args)
    }

    pub fn stdin(mut self, config: &Value) -> CniCall {
        self.stdin = config.to_string();
        self
    }

    pub fn raw_stdin(mut self, text: &str) -> CniCall {
        self.stdin = text.into();
        self
    }

    pub fn in_netns(mut self, name: &str) -> CniCall {
        self.in_netns = Some(name.into());
        self
    }

    /// Runs the plugin as an unprivileged user (a runtime never does; a
    /// user trying the socket by hand might).
    pub fn as_uid(mut self, uid: u32) -> CniCall {
        self.as_uid = Some(uid);
        self
    }

    /// Starts the plugin and feeds it stdin; `wait` collects the outcome.
    pub fn spawn(&self) -> RunningCni {
        let mut cmd = match (&self.in_netns, self.as_uid) {
            (Some(ns), _) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.plugin);
                c
            }
            (None, Some(uid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&self.plugin);
                c
            }
            (None, None) => Command::new(&self.plugin),
        };
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("exec {}: {e}", self.plugin.display()));
        let mut stdin = child.stdin.take().expect("stdin");
        // A plugin that fails before reading stdin closes the pipe; that is
        // its outcome to report, not the harness's.
        let _ = stdin.write_all(self.stdin.as_bytes());
        drop(stdin);
        RunningCni { child }
    }

    pub fn run(&self) -> CniOutput {
        self.spawn().wait()
    }
}

pub struct RunningCni {
    child: Child,
}

impl RunningCni {
    pub fn wait(self) -> CniOutput {
        let out = self.child.wait_with_output().expect("wait for plugin");
        CniOutput {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
