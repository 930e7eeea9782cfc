//! The network configuration on stdin, and the ipam section ipkeep reads.
//!
//! As IPAM plugin of bridge, macvlan or ptp, ipkeep receives the whole
//! network configuration and reads its `ipam` object:
//!
//! ```json
//! "ipam": { "type": "ipkeep", "subnet": "default" }
//! "ipam": { "type": "ipkeep", "subnets": ["pods-v4", "pods-v6"] }
//! "ipam": { "type": "ipkeep", "subnets": [["rack1", "rack2"], "pods-v6"],
//!           "socket": "/run/ipkeep/ipkeepd.sock", "timeoutMs": 10000,
//!           "logFile": "/var/log/ipkeep/plugin.log", "logLevel": "info" }
//! ```
//!
//! The pod gets one address per IP family the listed subnets cover: for each
//! family, from a pool that selects it, or else from the first listed subnet
//! of that family its namespace may use. (An entry may itself be a list; it
//! reads the same as listing its subnets in place.)

use std::path::PathBuf;
use std::time::Duration;

use ipkeep_api::model::Route;
use ipkeep_api::names::{check_cni_identifier, check_ifname, check_object_name};
use ipkeep_api::Mac;
use serde::Deserialize;
use serde_json::Value;

use crate::error::PluginError;
use crate::link::Mode;
use crate::version;

pub const DEFAULT_LOG_FILE: &str = "/var/log/ipkeep/plugin.log";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SUBNET: &str = "default";

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SubnetChoice {
    One(String),
    AnyOf(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    pub subnet: Option<String>,
    pub subnets: Option<Vec<SubnetChoice>>,
    pub socket: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    // Read from the raw JSON by `log_settings` before anything else can fail;
    // declared here so that a value of the wrong type is refused with its path.
    #[allow(dead_code)]
    pub log_file: Option<PathBuf>,
    #[allow(dead_code)]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    pub ipam: Option<IpamConf>,
    pub prev_result: Option<Value>,
    /// Capabilities the configuration declares; runtimeConfig `ips` counts
    /// only with `"ips": true` (the runtime derives runtimeConfig from them).
    #[serde(default)]
    pub capabilities: std::collections::BTreeMap<String, bool>,
    pub runtime_config: Option<Value>,
    pub args: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<GcAttachment>>,
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<GcAttachment>>,
}

/// What the plugin needs from the configuration, checked.
#[derive(Debug)]
pub struct Settings {
    pub cni_version: String,
    pub network: String,
    pub subnets: Vec<Vec<String>>,
    pub socket: PathBuf,
    pub timeout: Duration,
    pub prev_result: Option<Value>,
    pub gc_keep: Vec<(String, String)>,
    /// Addresses asked for in the configuration (runtimeConfig `ips`, then
    /// `args.cni.ips`); empty when none. CNI_ARGS `IP=` is the fallback.
    pub requested: Vec<std::net::IpAddr>,
    /// A MAC asked for in the configuration (runtimeConfig `mac`, then
    /// `args.cni.mac`); CNI_ARGS `MAC=` is the fallback.
    pub mac: Option<Mac>,
    /// Main-plugin mode: the interface ipkeep makes itself. None: IPAM mode.
    pub link: Option<LinkSettings>,
}

/// The interface settings of main-plugin mode.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub mode: Mode,
    /// Overrides the subnet's MTU.
    pub mtu: Option<u32>,
    /// Routes on top of the subnets' own.
    pub routes: Vec<Route>,
}

/// The top level of a main-plugin configuration:
///
/// ```json
/// {"cniVersion": "1.0.0", "name": "data", "type": "ipkeep",
///  "mode": "veth", "bridge": "ipk0", "isGateway": true, "mtu": 1450,
///  "routes": [{"dst": "10.96.0.0/12"}],
///  "ipam": {"subnet": "data"}}
/// {"cniVersion": "1.0.0", "name": "lan", "type": "ipkeep",
///  "mode": "macvlan", "master": "eth0", "subnet": "lan"}
/// ```
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkConf {
    mode: String,
    master: Option<String>,
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    mtu: Option<u32>,
    #[serde(default)]
    routes: Vec<RouteConf>,
}

#[derive(Debug, Deserialize)]
struct RouteConf {
    dst: ipnet::IpNet,
    gw: Option<std::net::IpAddr>,
}

pub const DEFAULT_BRIDGE: &str = "ipkeep0";

/// Main-plugin mode when the configuration's own type is ipkeep and it says
/// which mode; ipkeep called as the ipam of another plugin sees that
/// plugin's type at the top level.
fn is_main_plugin(json: &Value) -> bool {
    json.get("type").and_then(Value::as_str) == Some("ipkeep") && json.get("mode").is_some()
}

fn link_settings(json: &Value) -> Result<LinkSettings, PluginError> {
    let conf: LinkConf = serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        PluginError::config(if path == "." { "config" } else { &path }, e.inner())
    })?;
    let check_name =
        |field: &str, name: &str| check_ifname(name).map_err(|r| PluginError::config(field, r));
    let mode = match conf.mode.as_str() {
        "macvlan" => {
            let master = conf.master.ok_or_else(|| {
                PluginError::config(
                    "master",
                    "is required in macvlan mode (the host link, e.g. eth0)",
                )
            })?;
            check_name("master", &master)?;
            Mode::Macvlan { master }
        }
        "veth" => {
            let bridge = conf.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
            check_name("bridge", &bridge)?;
            Mode::Veth {
                bridge,
                is_gateway: conf.is_gateway,
            }
        }
        other => {
            return Err(PluginError::config(
                "mode",
                format!("{other:?} is not a mode ipkeep knows; use \"macvlan\" or \"veth\""),
            ))
        }
    };
    if let Some(mtu) = conf.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(PluginError::config(
                "mtu",
                format!("{mtu} is outside 68..=65535"),
            ));
        }
    }
    Ok(LinkSettings {
        mode,
        mtu: conf.mtu,
        routes: conf
            .routes
            .into_iter()
            .map(|r| Route {
                dst: r.dst.trunc(),
                gw: r.gw,
            })
            .collect(),
    })
}

fn requested_mac(field: &str, value: &Value) -> Result<Mac, PluginError> {
    value
        .as_str()
        .ok_or_else(|| PluginError::config(field, "must be a string"))?
        .parse()
        .map_err(|r| PluginError::config(field, r))
}

/// Parses a list of requested addresses ("10.0.0.5" or "10.0.0.5/24"; the
/// subnet decides the prefix length).
fn requested_ips(field: &str, list: &Value) -> Result<Vec<std::net::IpAddr>, PluginError> {
    let items = list
        .as_array()
        .ok_or_else(|| PluginError::config(field, "must be a list of IP addresses"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text = item
                .as_str()
                .ok_or_else(|| PluginError::config(&format!("{field}[{i}]"), "must be a string"))?;
            text.split('/').next().unwrap_or(text).parse().map_err(|_| {
                PluginError::config(
                    &format!("{field}[{i}]"),
                    format!("{text:?} is not an IP address"),
                )
            })
        })
        .collect()
}

/// Parses stdin as JSON; a syntax error is CNI error 6.
pub fn parse_json(stdin: &str) -> Result<Value, PluginError> {
    serde_json::from_str(stdin)
        .map_err(|e| PluginError::decode(format!("stdin is not a JSON network configuration: {e}")))
}

/// Where the plugin logs, read before anything else can fail.
pub fn log_settings(json: Option<&Value>) -> (PathBuf, String) {
    // Main-plugin mode may keep the ipam settings at the top level.
    let ipam = json.and_then(|j| j.get("ipam").or(Some(j)));
    let file = ipam
        .and_then(|i| i.get("logFile"))
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("IPKEEP_PLUGIN_LOG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_FILE));
    let level = ipam
        .and_then(|i| i.get("logLevel"))
        .and_then(Value::as_str)
        .unwrap_or("info")
        .to_owned();
    (file, level)
}

/// The config's cniVersion, if it can be read at all (for error objects).
pub fn declared_version(json: Option<&Value>) -> Option<String> {
    json?.get("cniVersion")?.as_str().map(str::to_owned)
}

pub fn check_version(v: &str) -> Result<(), PluginError> {
    if version::is_supported(v) {
        return Ok(());
    }
    let shown = if v.is_empty() {
        "(missing)".to_owned()
    } else {
        format!("{v:?}")
    };
    Err(PluginError::version(format!(
        "cniVersion {shown} is not supported; ipkeep speaks {}",
        version::SUPPORTED.join(", ")
    )))
}

fn subnet_sets(ipam: &IpamConf) -> Result<Vec<Vec<String>>, PluginError> {
    let sets = match (&ipam.subnet, &ipam.subnets) {
        (Some(_), Some(_)) => {
            return Err(PluginError::config(
                "ipam",
                "give either subnet or subnets, not both",
            ))
        }
        (Some(one), None) => vec![vec![one.clone()]],
        (None, Some(list)) => list
            .iter()
            .map(|c| match c {
                SubnetChoice::One(s) => vec![s.clone()],
                SubnetChoice::AnyOf(v) => v.clone(),
            })
            .collect(),
        (None, None) => vec![vec![DEFAULT_SUBNET.to_owned()]],
    };
    if sets.is_empty() {
        return Err(PluginError::config("ipam.subnets", "is empty"));
    }
    for (i, set) in sets.iter().enumerate() {
        if set.is_empty() {
            return Err(PluginError::config(
                &format!("ipam.subnets[{i}]"),
                "is an empty list",
            ));
        }
        for name in set {
            check_object_name(name)
                .map_err(|r| PluginError::config(&format!("ipam.subnets[{i}]"), r))?;
        }
    }
    Ok(sets)
}

/// Checks the whole configuration for a command that talks to the daemon.
pub fn settle(json: Value) -> Result<Settings, PluginError> {
    let link = if is_main_plugin(&json) {
        Some(link_settings(&json)?)
    } else {
        None
    };
    // In main-plugin mode the ipam settings may sit at the top level.
    let top_level_ipam = match (&link, json.get("ipam")) {
        (Some(_), None) => Some(json.clone()),
        _ => None,
    };
    let conf: NetConf = serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        PluginError::config(if path == "." { "config" } else { &path }, e.inner())
    })?;
    check_version(&conf.cni_version)?;
    check_cni_identifier(&conf.name).map_err(|r| PluginError::config("name", r))?;
    let ipam = match top_level_ipam {
        Some(top) => Some(
            serde_path_to_error::deserialize(top)
                .map_err(|e| PluginError::config(&e.path().to_string(), e.inner()))?,
        ),
        None => conf.ipam,
    };
    let ipam = ipam.ok_or_else(|| {
        PluginError::config(
            "ipam",
            "is missing; ipkeep needs {\"type\": \"ipkeep\", \"subnet\": NAME}",
        )
    })?;
    if !ipam.ipam_type.is_empty() && ipam.ipam_type != "ipkeep" {
        return Err(PluginError::config(
            "ipam.type",
            format!("is {:?}; this is the ipkeep plugin", ipam.ipam_type),
        ));
    }
    let subnets = subnet_sets(&ipam)?;
    let timeout = match ipam.timeout_ms {
        Some(0) => return Err(PluginError::config("ipam.timeoutMs", "must be above 0")),
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_TIMEOUT,
    };
    let mut gc_keep = Vec::new();
    for a in conf
        .valid_attachments
        .iter()
        .chain(conf.attachments.iter())
        .flatten()
    {
        let pair = (a.container_id.clone(), a.ifname.clone());
        if !gc_keep.contains(&pair) {
            gc_keep.push(pair);
        }
    }
    let mut requested = Vec::new();
    if conf.capabilities.get("ips") == Some(&true) {
        if let Some(ips) = conf.runtime_config.as_ref().and_then(|r| r.get("ips")) {
            requested = requested_ips("runtimeConfig.ips", ips)?;
        }
    }
    if requested.is_empty() {
        if let Some(ips) = conf
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
        {
            requested = requested_ips("args.cni.ips", ips)?;
        }
    }
    let mut mac = None;
    if conf.capabilities.get("mac") == Some(&true) {
        if let Some(m) = conf.runtime_config.as_ref().and_then(|r| r.get("mac")) {
            mac = Some(requested_mac("runtimeConfig.mac", m)?);
        }
    }
    if mac.is_none() {
        if let Some(m) = conf
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("mac"))
        {
            mac = Some(requested_mac("args.cni.mac", m)?);
        }
    }
    Ok(Settings {
        requested,
        mac,
        link,
        cni_version: conf.cni_version,
        network: conf.name,
        subnets,
        socket: ipam
            .socket
            .unwrap_or_else(|| PathBuf::from(ipkeep_api::DEFAULT_SOCKET)),
        timeout,
        prev_result: conf.prev_result,
        gc_keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_single_and_dual_stack() {
        let s = settle(
            json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": {"type": "ipkeep", "subnet": "pods"}}),
        )
        .unwrap();
        assert_eq!(s.subnets, vec![vec!["pods".to_string()]]);
        let s = settle(json!({"cniVersion": "0.4.0", "name": "net",
            "ipam": {"type": "ipkeep", "subnets": [["a", "b"], "v6"], "socket": "/tmp/x.sock"}}))
        .unwrap();
        assert_eq!(
            s.subnets,
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["v6".to_string()]
            ]
        );
        assert_eq!(s.socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = settle(json!({"cniVersion": "1.0.0", "name": "net", "ipam": {"subnet": 5}}))
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.starts_with("ipam.subnet"), "{e}");
        let e = settle(json!({"cniVersion": "1.0.0", "name": "net"})).unwrap_err();
        assert!(e.details.starts_with("ipam"), "{e}");
        let e = settle(json!({"cniVersion": "0.2.0", "name": "net", "ipam": {}})).unwrap_err();
        assert_eq!(e.code, 1);
        let e = settle(json!({"cniVersion": "1.0.0", "name": "bad name", "ipam": {}})).unwrap_err();
        assert!(e.details.starts_with("name"), "{e}");
        let e = settle(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "a", "subnets": ["b"]}}),
        )
        .unwrap_err();
        assert!(e.details.starts_with("ipam"), "{e}");
        let e = settle(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "host-local"}}))
            .unwrap_err();
        assert!(e.details.starts_with("ipam.type"), "{e}");
        let e = settle(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}, "capabilities": {"ips": true},
            "runtimeConfig": {"ips": ["10.0.0.999/24"]}}),
        )
        .unwrap_err();
        assert!(e.details.starts_with("runtimeConfig.ips[0]"), "{e}");
    }

    #[test]
    fn requested_addresses_follow_capabilities_then_args() {
        let s = settle(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}, "capabilities": {"ips": true},
            "runtimeConfig": {"ips": ["10.0.0.7/24"]}, "args": {"cni": {"ips": ["10.0.0.8"]}}}),
        )
        .unwrap();
        assert_eq!(
            s.requested,
            vec!["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]
        );
        // Without the capability, runtimeConfig ips are not the runtime's: args win.
        let s = settle(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {},
            "runtimeConfig": {"ips": ["10.0.0.7/24"]}, "args": {"cni": {"ips": ["10.0.0.8"]}}}))
        .unwrap();
        assert_eq!(
            s.requested,
            vec!["10.0.0.8".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn main_plugin_mode_only_with_our_type_and_a_mode() {
        // macvlan's own "mode" does not make ipkeep its main plugin.
        let s = settle(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan",
            "mode": "bridge", "master": "eth0", "ipam": {"type": "ipkeep", "subnet": "a"}}),
        )
        .unwrap();
        assert!(s.link.is_none());
        // ipam settings at the top level, MAC from args.
        let s = settle(json!({"cniVersion": "1.0.0", "name": "n", "type": "ipkeep",
            "mode": "macvlan", "master": "eth0", "subnet": "lan", "mtu": 9000,
            "args": {"cni": {"mac": "02:00:00:00:00:01"}}}))
        .unwrap();
        let link = s.link.expect("main-plugin mode");
        assert_eq!(
            link.mode,
            Mode::Macvlan {
                master: "eth0".into()
            }
        );
        assert_eq!(link.mtu, Some(9000));
        assert_eq!(s.subnets, vec![vec!["lan".to_string()]]);
        assert_eq!(s.mac.unwrap().to_string(), "02:00:00:00:00:01");
        let s = settle(json!({"cniVersion": "1.0.0", "name": "n", "type": "ipkeep",
            "mode": "veth", "ipam": {"subnet": "a"}}))
        .unwrap();
        assert_eq!(
            s.link.unwrap().mode,
            Mode::Veth {
                bridge: DEFAULT_BRIDGE.into(),
                is_gateway: false
            }
        );
    }

    #[test]
    fn main_plugin_errors_name_the_field() {
        let bad = |extra: Value, field: &str| {
            let mut conf =
                json!({"cniVersion": "1.0.0", "name": "n", "type": "ipkeep", "subnet": "a"});
            for (k, v) in extra.as_object().unwrap() {
                conf[k] = v.clone();
            }
            let e = settle(conf).unwrap_err();
            assert_eq!(e.code, 7, "{e}");
            assert!(e.details.starts_with(field), "{field}: {e}");
        };
        bad(json!({"mode": "macvlan"}), "master");
        bad(json!({"mode": "ipvlan"}), "mode");
        bad(json!({"mode": "veth", "bridge": "a bridge"}), "bridge");
        bad(json!({"mode": "veth", "mtu": 20}), "mtu");
        bad(json!({"mode": "veth", "mtu": "big"}), "mtu");
        bad(
            json!({"mode": "veth", "routes": [{"dst": "nowhere"}]}),
            "routes[0].dst",
        );
        bad(
            json!({"mode": "veth", "capabilities": {"mac": true}, "runtimeConfig": {"mac": "zz"}}),
            "runtimeConfig.mac",
        );
    }

    #[test]
    fn gc_reads_both_attachment_keys() {
        let s = settle(json!({"cniVersion": "1.1.0", "name": "n", "ipam": {},
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}]}))
        .unwrap();
        assert_eq!(s.gc_keep.len(), 2);
    }
}
