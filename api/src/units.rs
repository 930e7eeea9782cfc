//! Flag values people type: durations and network CIDRs. One parser each,
//! shared by ipkeepd, ipkeepctl and the test tools, so that every flag
//! accepts the same spellings and explains a bad value the same way.

use std::time::Duration;

use ipnet::IpNet;

/// `500ms`, `90s`, `30m`, `24h`, `7d`; above zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 90s, 30m, 24h or 7d"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("{s:?}: give a unit: ms, s, m, h or d")),
    };
    if d.is_zero() {
        return Err("must be above 0".into());
    }
    Ok(d)
}

/// A network in CIDR notation, refused when host bits are set (with the
/// network the caller probably meant).
pub fn network(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.22.0.0/16)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set; the network is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// 1536 -> "1.5 KiB".
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(duration("0s").is_err());
        assert!(duration("5").unwrap_err().contains("unit"));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn a_cidr_with_host_bits_names_the_network() {
        assert_eq!(network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        let err = network("10.0.0.5/24").unwrap_err();
        assert!(err.contains("the network is 10.0.0.0/24"), "{err}");
        assert!(network("ten").is_err());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
    }
}
