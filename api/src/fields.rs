//! Bounds on every field a request carries into the Raft log.
//!
//! The daemon checks each request in full, whoever sent it: a write is
//! stored on every node and replayed on every restart, and one oversized
//! field (a megabyte pod name) would make Raft entries that the log
//! refuses, which stops the leader. The plugin applies the same bounds to
//! what it reads from the runtime, so that its errors name the CNI
//! parameter.
//!
//! Each check names the field and the reason. Free text may hold no control
//! character (no NUL, no newline: they end up in logs, listings and files).

use crate::error::{code, ApiError};
use crate::message::{AddRequest, GcRequest, PoolRequest};
use crate::model::{
    AttachmentKey, Dns, IpRange, PodPattern, PodRef, PodSelector, SubnetSpec, SubnetUpdate,
};
use crate::names::{check_cni_identifier, check_ifname, check_object_name};

/// A value of CNI_ARGS ipkeep keeps (K8S_POD_NAMESPACE, K8S_POD_NAME,
/// K8S_POD_UID): a Kubernetes name is at most 253 characters.
pub const MAX_POD_FIELD: usize = 253;
/// CNI_NETNS: a path, at most PATH_MAX.
pub const MAX_NETNS: usize = 4096;
/// A reservation's note.
pub const MAX_NOTE: usize = 1024;
/// A DNS domain, search domain or resolver option.
pub const MAX_DNS_TEXT: usize = 253;
/// Entries of a list an operator writes (namespaces, quotas, DNS search
/// domains and options, pod patterns, address ranges, routes).
pub const MAX_LIST: usize = 1024;
/// Attachments a GC request may list as valid.
pub const MAX_GC_VALID: usize = 65_536;
/// A node's name (its hostname, at most 253 characters).
pub const MAX_NODE_NAME: usize = 253;

/// `value` is at most `max` bytes and holds no control character.
pub fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("is {} bytes long, at most {max}", value.len()));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!("holds the control character {c:?}"));
    }
    Ok(())
}

fn invalid_env(var: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        code::INVALID_ENV,
        format!("invalid {var}"),
        format!("{var}: {reason}"),
    )
}

fn invalid_config(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        code::INVALID_CONFIG,
        "invalid network configuration",
        format!("{field}: {reason}"),
    )
}

/// Address ranges from the wire: a list of at most MAX_LIST, each in order.
pub fn check_ranges(field: &str, ranges: &[IpRange]) -> Result<(), ApiError> {
    check_list(field, ranges)?;
    ranges
        .iter()
        .try_for_each(|r| r.check().map_err(|reason| ApiError::invalid(field, reason)))
}

fn check_list<T>(field: &str, list: &[T]) -> Result<(), ApiError> {
    if list.len() > MAX_LIST {
        return Err(ApiError::invalid(
            field,
            format!("lists {} entries, at most {MAX_LIST}", list.len()),
        ));
    }
    Ok(())
}

/// The attachment key: the parts become part of stored record keys.
pub fn check_key(key: &AttachmentKey) -> Result<(), ApiError> {
    check_cni_identifier(&key.network).map_err(|r| invalid_config("name", r))?;
    check_cni_identifier(&key.container_id).map_err(|r| invalid_env("CNI_CONTAINERID", r))?;
    check_ifname(&key.ifname).map_err(|r| invalid_env("CNI_IFNAME", r))?;
    Ok(())
}

/// The pod, as CNI_ARGS named it.
pub fn check_pod(pod: &PodRef) -> Result<(), ApiError> {
    for (arg, value) in [
        ("K8S_POD_NAMESPACE", &pod.namespace),
        ("K8S_POD_NAME", &pod.name),
        ("K8S_POD_UID", &pod.uid),
    ] {
        if let Some(value) = value {
            if value.is_empty() {
                return Err(invalid_env("CNI_ARGS", format!("{arg} is empty")));
            }
            check_text(value, MAX_POD_FIELD)
                .map_err(|r| invalid_env("CNI_ARGS", format!("{arg} {r}")))?;
        }
    }
    Ok(())
}

fn check_subnet_sets(sets: &[Vec<String>]) -> Result<(), ApiError> {
    if sets.is_empty() || sets.iter().any(|s| s.is_empty()) {
        return Err(invalid_config("ipam.subnet", "no subnet named"));
    }
    if sets.len() > 2 || sets.iter().any(|s| s.len() > MAX_LIST) {
        return Err(invalid_config(
            "ipam.subnet",
            "too many subnets: at most one list per IP family",
        ));
    }
    for name in sets.iter().flatten() {
        check_object_name(name).map_err(|r| invalid_config("ipam.subnet", r))?;
    }
    Ok(())
}

pub fn check_add(request: &AddRequest) -> Result<(), ApiError> {
    check_key(&request.key)?;
    check_text(&request.netns, MAX_NETNS).map_err(|r| invalid_env("CNI_NETNS", r))?;
    check_subnet_sets(&request.subnets)?;
    check_pod(&request.pod)?;
    if request.requested.len() > 2 {
        return Err(invalid_config(
            "ips",
            format!(
                "{} addresses asked for; at most one per IP family",
                request.requested.len()
            ),
        ));
    }
    Ok(())
}

pub fn check_gc(request: &GcRequest) -> Result<(), ApiError> {
    check_cni_identifier(&request.network).map_err(|r| invalid_config("name", r))?;
    check_gc_valid(&request.valid)
}

/// GC's `cni.dev/valid-attachments`.
pub fn check_gc_valid(valid: &[(String, String)]) -> Result<(), ApiError> {
    const FIELD: &str = "cni.dev/valid-attachments";
    if valid.len() > MAX_GC_VALID {
        return Err(invalid_config(
            FIELD,
            format!("lists {} attachments, at most {MAX_GC_VALID}", valid.len()),
        ));
    }
    for (container_id, ifname) in valid {
        check_cni_identifier(container_id)
            .map_err(|r| invalid_config(&format!("{FIELD}: containerID"), r))?;
        check_ifname(ifname).map_err(|r| invalid_config(&format!("{FIELD}: ifname"), r))?;
    }
    Ok(())
}

/// A name an operator gives a pod or namespace in a selector, a binding or
/// a quota.
pub fn check_pod_field(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is empty"));
    }
    check_text(value, MAX_POD_FIELD).map_err(|r| ApiError::invalid(field, r))
}

pub fn check_dns(dns: &Dns) -> Result<(), ApiError> {
    check_list("dns.nameservers", &dns.nameservers)?;
    check_list("dns.search", &dns.search)?;
    check_list("dns.options", &dns.options)?;
    let texts = dns
        .domain
        .iter()
        .map(|d| ("dns.domain", d))
        .chain(dns.search.iter().map(|s| ("dns.search", s)))
        .chain(dns.options.iter().map(|o| ("dns.options", o)));
    for (field, value) in texts {
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(ApiError::invalid(
                field,
                format!("{value:?} is empty or holds a space"),
            ));
        }
        check_text(value, MAX_DNS_TEXT).map_err(|r| ApiError::invalid(field, r))?;
    }
    Ok(())
}

fn check_namespaces<'a>(
    field: &str,
    names: impl ExactSizeIterator<Item = &'a String>,
) -> Result<(), ApiError> {
    if names.len() > MAX_LIST {
        return Err(ApiError::invalid(
            field,
            format!("lists {} namespaces, at most {MAX_LIST}", names.len()),
        ));
    }
    for name in names {
        check_pod_field(field, name)?;
    }
    Ok(())
}

pub fn check_subnet_spec(spec: &SubnetSpec) -> Result<(), ApiError> {
    check_object_name(&spec.name).map_err(|r| ApiError::invalid("name", r))?;
    if spec.cidr.prefix_len() == 0 {
        return Err(ApiError::invalid(
            "cidr",
            format!(
                "{} is the whole address space; give the range pods use",
                spec.cidr
            ),
        ));
    }
    check_ranges("exclude", &spec.exclude)?;
    check_list("routes", &spec.routes)?;
    check_dns(&spec.dns)?;
    check_namespaces("namespaces", spec.tenancy.namespaces.iter())?;
    check_namespaces("quotas", spec.tenancy.quotas.keys())?;
    Ok(())
}

pub fn check_subnet_update(update: &SubnetUpdate) -> Result<(), ApiError> {
    if let Some(namespaces) = &update.namespaces {
        check_namespaces("namespaces", namespaces.iter())?;
    }
    check_list("quotas", &update.quotas)?;
    for (namespace, _) in &update.quotas {
        check_pod_field("quotas", namespace)?;
    }
    if let Some(routes) = &update.routes {
        check_list("routes", routes)?;
    }
    if let Some(dns) = &update.dns {
        check_dns(dns)?;
    }
    Ok(())
}

pub fn check_selector(selector: &PodSelector) -> Result<(), ApiError> {
    if let Some(namespace) = &selector.namespace {
        check_pod_field("selector.namespace", namespace)?;
    }
    check_list("selector.pods", &selector.pods)?;
    for pattern in &selector.pods {
        let (PodPattern::Name(text) | PodPattern::Prefix(text)) = pattern;
        check_pod_field("selector.pods", text)?;
    }
    Ok(())
}

pub fn check_pool(request: &PoolRequest) -> Result<(), ApiError> {
    check_object_name(&request.name).map_err(|r| ApiError::invalid("name", r))?;
    check_object_name(&request.subnet).map_err(|r| ApiError::invalid("subnet", r))?;
    check_ranges("addresses", &request.addresses)?;
    check_selector(&request.selector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Timing;

    fn add() -> AddRequest {
        AddRequest {
            key: AttachmentKey {
                network: "net".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: "/run/netns/c1".into(),
            subnets: vec![vec!["pods".into()]],
            pod: PodRef {
                namespace: Some("team-a".into()),
                name: Some("etcd-0".into()),
                uid: Some("0b7c1f2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into()),
            },
            requested: vec![],
            mac: Default::default(),
            timing: Timing::default(),
        }
    }

    #[test]
    fn an_ordinary_add_passes() {
        check_add(&add()).unwrap();
    }

    #[test]
    fn oversized_or_control_characters_in_pod_fields_and_netns_are_refused() {
        let mut long_name = add();
        long_name.pod.name = Some("x".repeat(1 << 20));
        let err = check_add(&long_name).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.details.contains("K8S_POD_NAME"), "{err}");

        let mut newline = add();
        newline.pod.namespace = Some("team\na".into());
        let err = check_add(&newline).unwrap_err();
        assert!(err.details.contains("K8S_POD_NAMESPACE"), "{err}");
        assert!(err.details.contains("control character"), "{err}");

        let mut nul = add();
        nul.pod.uid = Some("a\0b".into());
        assert!(check_add(&nul).unwrap_err().details.contains("K8S_POD_UID"));

        let mut netns = add();
        netns.netns = "/proc/1/ns/net".repeat(1000);
        let err = check_add(&netns).unwrap_err();
        assert!(err.details.contains("CNI_NETNS"), "{err}");
    }

    #[test]
    fn admin_fields_are_bounded() {
        let mut selector = PodSelector {
            namespace: Some("db".into()),
            pods: vec![PodPattern::Prefix("etcd-".into())],
        };
        check_selector(&selector).unwrap();
        selector.pods.push(PodPattern::Name("a\nb".into()));
        assert!(check_selector(&selector)
            .unwrap_err()
            .details
            .contains("selector.pods"));
        let dns = Dns {
            search: vec!["svc.cluster.local".into(), "bad domain".into()],
            ..Dns::default()
        };
        assert!(check_dns(&dns).unwrap_err().details.contains("dns.search"));
        let valid = vec![("c1".to_owned(), "eth0".to_owned()); MAX_GC_VALID + 1];
        assert!(check_gc_valid(&valid).is_err());
        let inverted = IpRange {
            start: "10.0.0.9".parse().unwrap(),
            end: "10.0.0.5".parse().unwrap(),
        };
        let err = check_ranges("exclude", &[inverted]).unwrap_err();
        assert!(err.details.contains("starts after it ends"), "{err}");
        let whole = SubnetSpec::plain("all", "::/0".parse().unwrap());
        assert!(check_subnet_spec(&whole)
            .unwrap_err()
            .details
            .starts_with("cidr"));
    }
}
