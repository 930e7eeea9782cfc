//! Results in the shape of the requested cniVersion. In IPAM mode: no
//! `interfaces`, no `interface` index on ips (the spec's abbreviated result
//! for delegated IPAM plugins). In main-plugin mode: the interfaces made,
//! each ip pointing at the pod's. Before 1.0.0 each ip carries `version`.

use ipkeep_api::message::AddResult;
use ipkeep_api::model::Dns;
use ipkeep_api::Mac;
use serde_json::{json, Map, Value};

use crate::link::PlannedRoute;
use crate::version;

/// What a successful command prints on stdout.
pub enum Output {
    Json(Value),
    /// DEL, CHECK, GC and STATUS print nothing on success.
    Nothing,
}

/// One entry of a result's `interfaces`.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub mac: Option<Mac>,
    /// The pod's namespace; None for the host end.
    pub sandbox: Option<String>,
}

/// The result of main-plugin mode: the interfaces, the ips on the pod's
/// interface (`interface` is its index in `interfaces`), the routes as set.
pub fn full_result(
    cni_version: &str,
    result: &AddResult,
    interfaces: &[Interface],
    pod_interface: usize,
    routes: &[PlannedRoute],
) -> Value {
    let mut out = ipam_result(cni_version, result);
    let ifaces: Vec<Value> = interfaces
        .iter()
        .map(|i| {
            let mut o = Map::new();
            o.insert("name".into(), json!(i.name));
            if let Some(mac) = i.mac {
                o.insert("mac".into(), json!(mac.to_string()));
            }
            if let Some(sandbox) = &i.sandbox {
                o.insert("sandbox".into(), json!(sandbox));
            }
            Value::Object(o)
        })
        .collect();
    if let Some(ips) = out.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips {
            ip["interface"] = json!(pod_interface);
        }
    }
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| match r.gw {
            Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
            None => json!({"dst": r.dst.to_string()}),
        })
        .collect();
    if let Some(o) = out.as_object_mut() {
        o.insert("interfaces".into(), Value::Array(ifaces));
        o.remove("routes");
        if !routes.is_empty() {
            o.insert("routes".into(), Value::Array(routes));
        }
    }
    out
}

fn dns_json(dns: &Dns) -> Value {
    let mut out = Map::new();
    if !dns.nameservers.is_empty() {
        out.insert(
            "nameservers".into(),
            json!(dns
                .nameservers
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()),
        );
    }
    if let Some(domain) = &dns.domain {
        out.insert("domain".into(), json!(domain));
    }
    if !dns.search.is_empty() {
        out.insert("search".into(), json!(dns.search));
    }
    if !dns.options.is_empty() {
        out.insert("options".into(), json!(dns.options));
    }
    Value::Object(out)
}

pub fn ipam_result(cni_version: &str, result: &AddResult) -> Value {
    let with_family = version::ips_carry_family(cni_version);
    let ips: Vec<Value> = result
        .ips
        .iter()
        .map(|ip| {
            let mut o = Map::new();
            if with_family {
                o.insert(
                    "version".into(),
                    json!(if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }),
                );
            }
            o.insert("address".into(), json!(ip.address.to_string()));
            if let Some(gw) = ip.gateway {
                o.insert("gateway".into(), json!(gw.to_string()));
            }
            Value::Object(o)
        })
        .collect();
    let routes: Vec<Value> = result
        .routes
        .iter()
        .map(|r| match r.gw {
            Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
            None => json!({"dst": r.dst.to_string()}),
        })
        .collect();
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(cni_version));
    out.insert("ips".into(), Value::Array(ips));
    if !routes.is_empty() {
        out.insert("routes".into(), Value::Array(routes));
    }
    if !result.dns.is_empty() {
        out.insert("dns".into(), dns_json(&result.dns));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipkeep_api::message::IpAssignment;
    use ipkeep_api::model::Route;

    fn sample() -> AddResult {
        AddResult {
            ips: vec![
                IpAssignment {
                    subnet: "a".into(),
                    address: "10.0.0.5/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                },
                IpAssignment {
                    subnet: "b".into(),
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.10".parse().unwrap()],
                domain: None,
                search: vec![],
                options: vec![],
            },
            mac: None,
            mtu: None,
        }
    }

    #[test]
    fn shapes_follow_the_version() {
        let v1 = ipam_result("1.0.0", &sample());
        assert_eq!(
            v1["ips"][0],
            json!({"address": "10.0.0.5/24", "gateway": "10.0.0.1"})
        );
        assert!(v1.get("interfaces").is_none());
        let v04 = ipam_result("0.4.0", &sample());
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v1["routes"][0], json!({"dst": "0.0.0.0/0"}));
        assert_eq!(v1["dns"], json!({"nameservers": ["10.0.0.10"]}));
    }
}
