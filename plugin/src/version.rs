//! The CNI spec versions ipkeep speaks, and what each allows.

pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const CURRENT: &str = "1.1.0";

/// A spec version as (major, minor, patch), for comparisons.
pub fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

pub fn at_least(version: &str, min: &str) -> bool {
    matches!((parse(version), parse(min)), (Some(v), Some(m)) if v >= m)
}

/// Results before 1.0.0 tag every IP with its family ("version": "4").
pub fn ips_carry_family(version: &str) -> bool {
    !at_least(version, "1.0.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_versions() {
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(at_least("0.10.0", "0.4.0"));
        assert!(!at_least("garbage", "0.4.0"));
        assert!(ips_carry_family("0.4.0"));
        assert!(!ips_carry_family("1.0.0"));
        assert!(is_supported("0.3.0") && !is_supported("0.2.0") && !is_supported("2.0.0"));
    }
}
