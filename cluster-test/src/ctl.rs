//! `ipkeepctl` exec'd against a test daemon.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::bins::bin;

#[derive(Debug)]
pub struct CtlOutput {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    pub fn json(&self) -> Value {
        assert!(self.ok(), "ipkeepctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

pub fn ctl(socket: &Path, args: &[&str]) -> CtlOutput {
    let out = Command::new(bin("ipkeepctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("IPKEEP_SOCKET")
        .output()
        .expect("exec ipkeepctl");
    CtlOutput {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ipkeepctl ip list -o json` as (address, container id) pairs.
pub fn held(socket: &Path, filter: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["ip", "list", "-o", "json"];
    args.extend_from_slice(filter);
    ctl(socket, &args)
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["address"].as_str().expect("address").to_owned(),
                e["key"]["container_id"]
                    .as_str()
                    .expect("container")
                    .to_owned(),
            )
        })
        .collect()
}
