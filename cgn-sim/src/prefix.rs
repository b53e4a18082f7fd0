//! IPv4 prefixes and address ranges as operators write them (`198.51.100.0/28`,
//! `198.51.100.9-198.51.100.12`, `100.64.0.2`), for pools, subscriber sets and THIRD_PARTY
//! policy.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix `addr/len`; host bits of `addr` are cleared on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

/// Why a prefix or range string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part is not an IPv4 address.
    #[error("{0:?} is not an IPv4 address")]
    Address(String),
    /// The length is not 0 to 32.
    #[error("{0:?} is not a prefix length (0 to 32)")]
    Length(String),
    /// A range whose end is before its start.
    #[error("range {0} - {1} ends before it starts")]
    Backwards(Ipv4Addr, Ipv4Addr),
}

impl Ipv4Prefix {
    /// The prefix, with host bits cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Ipv4Prefix {
        let len = len.min(32);
        Ipv4Prefix {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask(len)),
            len,
        }
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// True if `ip` is inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }

    /// Every address of the prefix, network and broadcast included (a NAT pool uses them all).
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let first = u32::from(self.addr);
        let count = 1u64 << (32 - u32::from(self.len));
        (0..count).map(move |i| Ipv4Addr::from(first.wrapping_add(i as u32)))
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    /// `a.b.c.d/len`, or a bare address (a /32).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a,
                l.parse::<u8>()
                    .ok()
                    .filter(|l| *l <= 32)
                    .ok_or_else(|| PrefixError::Length(l.to_string()))?,
            ),
            None => (s, 32),
        };
        let addr = addr
            .trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| PrefixError::Address(addr.to_string()))?;
        Ok(Ipv4Prefix::new(addr, len))
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// In a config file a prefix is the string an operator writes (`"100.64.0.0/10"`); a bad one
/// is refused when the file is read, with the line it is on.
impl serde::Serialize for Ipv4Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a pool range: a prefix (`198.51.100.0/28`), a bare address, or `first-last`.
/// Pools need not be contiguous (RFC 6888 REQ-3): give several ranges.
pub fn parse_range(s: &str) -> Result<Vec<Ipv4Addr>, PrefixError> {
    if let Some((a, b)) = s.split_once('-') {
        let first: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| PrefixError::Address(a.to_string()))?;
        let last: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| PrefixError::Address(b.to_string()))?;
        if u32::from(last) < u32::from(first) {
            return Err(PrefixError::Backwards(first, last));
        }
        Ok((u32::from(first)..=u32::from(last))
            .map(Ipv4Addr::from)
            .collect())
    } else {
        Ok(s.parse::<Ipv4Prefix>()?.addresses().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parses_and_contains() {
        let p: Ipv4Prefix = "100.64.0.9/10".parse().expect("prefix");
        assert_eq!(p.to_string(), "100.64.0.0/10");
        assert!(p.contains(Ipv4Addr::new(100, 127, 1, 1)));
        assert!(!p.contains(Ipv4Addr::new(100, 128, 0, 1)));
        assert_eq!("1.2.3.4".parse::<Ipv4Prefix>().map(|p| p.len), Ok(32));
        assert!("1.2.3.4/33".parse::<Ipv4Prefix>().is_err());
        assert!("x/3".parse::<Ipv4Prefix>().is_err());
    }

    // RFC 6888 REQ-3: pools accept non-contiguous ranges.
    #[test]
    fn ranges_expand() {
        assert_eq!(parse_range("198.51.100.0/30").map(|v| v.len()), Ok(4));
        let r = parse_range("198.51.100.9-198.51.100.12").expect("range");
        assert_eq!(r.first(), Some(&Ipv4Addr::new(198, 51, 100, 9)));
        assert_eq!(r.len(), 4);
        assert!(parse_range("1.1.1.2-1.1.1.1").is_err());
    }
}
