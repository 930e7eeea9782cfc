//! The CNI environment: which command, and the parameters the spec requires
//! for it, each checked with an error that names the variable.

use ipkeep_api::model::{AttachmentKey, PodRef};
use ipkeep_api::names::{check_cni_identifier, check_ifname};

use crate::error::PluginError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// What CNI_ARGS carries that ipkeep uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod: PodRef,
    /// `IP=` (deprecated in favour of runtimeConfig `ips`; CRI-O still sends it).
    pub ips: Vec<std::net::IpAddr>,
    /// `MAC=` (CRI-O sends it; runtimeConfig `mac` is the current way).
    pub mac: Option<ipkeep_api::Mac>,
}

#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

impl CniEnv {
    pub fn key(&self, network: &str) -> AttachmentKey {
        AttachmentKey {
            network: network.to_owned(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// Longest value ipkeep keeps from CNI_ARGS: the daemon's bound.
const MAX_ARG_VALUE: usize = ipkeep_api::fields::MAX_POD_FIELD;

/// Parses CNI_ARGS ("K=V;K2=V2"). Unknown keys are ignored whether or not
/// IgnoreUnknown is given: runtimes add keys of their own, and refusing them
/// would fail pods for no reason.
pub fn parse_args(raw: &str) -> Result<CniArgs, PluginError> {
    let mut args = CniArgs::default();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| PluginError::env("CNI_ARGS", format!("{pair:?} is not KEY=VALUE")))?;
        let checked = || -> Result<Option<String>, PluginError> {
            if value.len() > MAX_ARG_VALUE {
                return Err(PluginError::env(
                    "CNI_ARGS",
                    format!(
                        "{key} is {} characters long, at most {MAX_ARG_VALUE}",
                        value.len()
                    ),
                ));
            }
            if value.chars().any(|c| c.is_control()) {
                return Err(PluginError::env(
                    "CNI_ARGS",
                    format!("{key} holds a control character"),
                ));
            }
            Ok((!value.is_empty()).then(|| value.to_owned()))
        };
        match key {
            "K8S_POD_NAMESPACE" => args.pod.namespace = checked()?,
            "K8S_POD_NAME" => args.pod.name = checked()?,
            "K8S_POD_UID" => args.pod.uid = checked()?,
            "IP" => {
                for ip in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    let addr = ip.split('/').next().unwrap_or(ip);
                    args.ips.push(addr.parse().map_err(|_| {
                        PluginError::env("CNI_ARGS", format!("IP={ip} is not an IP address"))
                    })?);
                }
            }
            "MAC" if !value.is_empty() => {
                args.mac = Some(
                    value
                        .parse()
                        .map_err(|r| PluginError::env("CNI_ARGS", format!("MAC: {r}")))?,
                );
            }
            _ => {}
        }
    }
    Ok(args)
}

/// Reads and checks the environment for the command it names.
pub fn read(lookup: impl Fn(&str) -> Option<String>) -> Result<CniEnv, PluginError> {
    let command = match lookup("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("GC") => Command::Gc,
        Some("STATUS") => Command::Status,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(PluginError::env(
                "CNI_COMMAND",
                format!("{other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
            ))
        }
        None => return Err(PluginError::env("CNI_COMMAND", "is not set")),
    };
    let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
    let needs_netns = matches!(command, Command::Add | Command::Check);

    let required = |var: &str, needed: bool| -> Result<String, PluginError> {
        match lookup(var) {
            Some(v) if !v.is_empty() => Ok(v),
            _ if needed => Err(PluginError::env(
                var,
                format!("is required for {}", command.name()),
            )),
            _ => Ok(String::new()),
        }
    };
    let container_id = required("CNI_CONTAINERID", needs_attachment)?;
    if needs_attachment {
        check_cni_identifier(&container_id).map_err(|r| PluginError::env("CNI_CONTAINERID", r))?;
    }
    let ifname = required("CNI_IFNAME", needs_attachment)?;
    if needs_attachment {
        check_ifname(&ifname).map_err(|r| PluginError::env("CNI_IFNAME", r))?;
    }
    // DEL may come without a namespace: the address is released all the same.
    let netns = required("CNI_NETNS", needs_netns)?;
    let args = parse_args(&lookup("CNI_ARGS").unwrap_or_default())?;
    Ok(CniEnv {
        command,
        container_id,
        netns,
        ifname,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, PluginError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert!(env(&base).is_ok());
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let pairs: Vec<_> = base
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = env(&pairs).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.details.starts_with(missing), "{err}");
        }
    }

    #[test]
    fn del_does_not_need_netns() {
        assert!(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0")
        ])
        .is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let err = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(err.details.starts_with("CNI_COMMAND"));
        let err = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(err.details.starts_with("CNI_CONTAINERID"));
        let err = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "ab"),
            ("CNI_IFNAME", "waytoolonginterface"),
        ])
        .unwrap_err();
        assert!(err.details.starts_with("CNI_IFNAME"));
        let err = env(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", "novalue")]).unwrap_err();
        assert!(err.details.starts_with("CNI_ARGS"));
    }

    #[test]
    fn args_carry_the_pod_and_tolerate_unknown_keys() {
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=etcd-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;SOMETHING=else").unwrap();
        assert_eq!(a.pod.namespace.as_deref(), Some("db"));
        assert_eq!(a.pod.name.as_deref(), Some("etcd-0"));
        assert_eq!(a.pod.uid.as_deref(), Some("u-1"));
        let a = parse_args("IP=10.0.0.5,fd00::5/64").unwrap();
        assert_eq!(a.ips.len(), 2);
        assert!(parse_args("IP=10.0.0.500")
            .unwrap_err()
            .details
            .contains("IP=10.0.0.500"));
    }
}
