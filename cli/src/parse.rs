//! Parsers for flag values, each with a reason clap prints next to the flag.

use std::time::Duration;

use ipkeep_api::model::{IpRange, PodPattern};
use ipnet::IpNet;

pub fn cidr(s: &str) -> Result<IpNet, String> {
    ipkeep_api::units::network(s)
}

pub fn range(s: &str) -> Result<IpRange, String> {
    s.parse()
}

pub fn pod_pattern(s: &str) -> Result<PodPattern, String> {
    s.parse()
}

/// NAMESPACE=COUNT.
pub fn quota(s: &str) -> Result<(String, u64), String> {
    let (ns, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAMESPACE=COUNT"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a number of addresses"))?;
    Ok((ns.trim().to_owned(), n))
}

/// NAMESPACE/NAME.
pub fn pod(s: &str) -> Result<(String, String), String> {
    let (ns, name) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))?;
    if ns.is_empty() || name.is_empty() {
        return Err(format!("{s:?} is not NAMESPACE/NAME"));
    }
    Ok((ns.to_owned(), name.to_owned()))
}

pub fn duration(s: &str) -> Result<Duration, String> {
    ipkeep_api::units::duration(s)
}

/// Milliseconds as the shortest of d, h, m, s that is exact.
pub fn show_duration(ms: u64) -> String {
    let s = ms / 1000;
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= secs && s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert!(range("10.0.0.10-nope").is_err());
        assert_eq!(
            pod_pattern("etcd-*").unwrap(),
            PodPattern::Prefix("etcd-".into())
        );
        assert!(pod_pattern("*").is_err());
        assert_eq!(quota("team-a=200").unwrap(), ("team-a".into(), 200));
        assert!(quota("team-a").is_err());
        assert_eq!(duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(duration("24").is_err());
        assert_eq!(show_duration(86_400_000), "1d");
        assert_eq!(show_duration(90_000), "90s");
        assert_eq!(pod("db/etcd-0").unwrap(), ("db".into(), "etcd-0".into()));
        assert!(pod("etcd-0").is_err());
    }
}
