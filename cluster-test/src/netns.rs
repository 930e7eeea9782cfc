//! Network namespaces for pods and nodes, removed when dropped.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NetNs {
    pub name: String,
}

/// Runs a command and panics with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("exec {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl NetNs {
    /// A new namespace with a name unique to this process (`prefix-pid-n`),
    /// its loopback up.
    pub fn new(prefix: &str) -> NetNs {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "network namespace tests need root (ip netns add)"
        );
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        PathBuf::from("/run/netns")
            .join(&self.name)
            .display()
            .to_string()
    }

    /// Runs a command inside the namespace; panics if it fails.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        String::from_utf8_lossy(&sh("ip", &args).stdout).into_owned()
    }

    /// Runs a command inside the namespace with `input` on its stdin.
    pub fn exec_with_stdin(&self, cmd: &[&str], input: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs a command inside the namespace and reports whether it succeeded.
    pub fn try_exec(&self, cmd: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// The IPv4/IPv6 addresses (CIDR) on an interface in the namespace.
    pub fn addresses(&self, ifname: &str) -> Vec<String> {
        let out = self.exec(&["ip", "-j", "addr", "show", "dev", ifname]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        json[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["scope"] == "global")
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_link(&self, ifname: &str) -> bool {
        self.try_exec(&["ip", "link", "show", "dev", ifname])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
