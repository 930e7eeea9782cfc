//! MAC addresses: parsed from what runtimes and operators write, and derived
//! from an IP address so that a pod that comes back with its address comes
//! back with the same MAC.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet address: "02:42:0a:00:00:05" in JSON, six bytes in bincode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 6]>::deserialize(deserializer).map(Mac)
        }
    }
}

/// The first two octets of derived MACs: locally administered (bit 1 of the
/// first octet set) and unicast, as Kubernetes network plugins do (0a:58 is
/// OVN-Kubernetes' and kube-router's convention), so they cannot clash with
/// any vendor-assigned MAC.
const DERIVED_PREFIX: [u8; 2] = [0x0a, 0x58];

impl Mac {
    /// The MAC that goes with an address when none is asked for: 0a:58
    /// followed by the address's last four octets (the whole IPv4 address).
    pub fn derived_from(address: IpAddr) -> Mac {
        let tail: [u8; 4] = match address {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(a) => {
                let o = a.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        Mac([
            DERIVED_PREFIX[0],
            DERIVED_PREFIX[1],
            tail[0],
            tail[1],
            tail[2],
            tail[3],
        ])
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff` (or with `-`); a pod's MAC must be unicast and
    /// not all zeros.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (expected six hex octets, e.g. 02:42:0a:00:00:05)"
            ));
        }
        let mut octets = [0u8; 6];
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(format!(
                    "{s:?} is not a MAC address: {part:?} is not two hex digits"
                ));
            }
            *octet = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address: {part:?} is not hex"))?;
        }
        if octets[0] & 1 == 1 {
            return Err(format!(
                "{s} is a multicast MAC (the low bit of the first octet is set); a pod needs a unicast one"
            ));
        }
        if octets == [0; 6] {
            return Err("00:00:00:00:00:00 is not a usable MAC".into());
        }
        Ok(Mac(octets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: Mac = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02-42-ac-11-00-02".parse::<Mac>().unwrap(), m);
        assert!("02:42:ac:11:00".parse::<Mac>().is_err());
        assert!("02:42:ac:11:00:zz".parse::<Mac>().is_err());
        assert!("01:00:5e:00:00:01"
            .parse::<Mac>()
            .unwrap_err()
            .contains("multicast"));
        assert!("00:00:00:00:00:00".parse::<Mac>().is_err());
    }

    #[test]
    fn json_shows_text_and_bincode_six_bytes() {
        let m: Mac = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:42:ac:11:00:02\"");
        assert_eq!(
            serde_json::from_str::<Mac>("\"02:42:ac:11:00:02\"").unwrap(),
            m
        );
        let bytes = crate::codec::encode(&m).unwrap();
        assert_eq!(bytes.len(), 6);
        assert_eq!(crate::codec::decode::<Mac>(&bytes, 64).unwrap(), m);
    }

    #[test]
    fn derived_macs_are_local_unicast_and_follow_the_address() {
        let m = Mac::derived_from("10.20.0.12".parse().unwrap());
        assert_eq!(m.to_string(), "0a:58:0a:14:00:0c");
        assert_eq!(m.0[0] & 0b11, 0b10, "locally administered, unicast");
        let m6 = Mac::derived_from("fd00::1:2:3:4".parse().unwrap());
        assert_eq!(m6.to_string(), "0a:58:00:03:00:04");
    }
}
