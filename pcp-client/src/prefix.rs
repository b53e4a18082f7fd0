//! IPv4 prefixes as operators write them (`100.64.0.0/10`, a bare `192.168.0.7` for a /32).
//!
//! One type for the whole workspace: the CGN's pools, subscriber sets and THIRD_PARTY policy,
//! and the IWF's LAN prefixes and permission rules. It lives here because `pcp-client` is the
//! one crate both daemons depend on, and a PCP FILTER (RFC 6887 §13.3) is a remote-peer prefix
//! ([`Ipv4Prefix::filter_length`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix `addr/len`; host bits of `addr` are cleared when it is made or parsed, so
/// two prefixes that cover the same addresses are equal and print the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

/// Why a prefix string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part is not an IPv4 address.
    #[error("{0:?} is not an IPv4 address")]
    Address(String),
    /// The length is not 0 to 32.
    #[error("{0:?} is not a prefix length (0 to 32)")]
    Length(String),
    /// A range `first-last` (a CGN pool) whose end is before its start.
    #[error("range {0} - {1} ends before it starts")]
    Backwards(Ipv4Addr, Ipv4Addr),
}

impl Ipv4Prefix {
    /// Every IPv4 address (`0.0.0.0/0`).
    pub const ANY: Ipv4Prefix = Ipv4Prefix {
        addr: Ipv4Addr::UNSPECIFIED,
        len: 0,
    };

    /// The prefix of `len` bits (clamped to 32) around `addr`, host bits cleared.
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

    /// The prefix length a FILTER option carries for this prefix: over the 128-bit
    /// IPv4-mapped address, 96 + `len` (RFC 6887 §13.3, §5).
    pub const fn filter_length(&self) -> u8 {
        96 + self.len
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    /// `a.b.c.d/len`, or a bare address (a /32).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a,
                l.trim()
                    .parse::<u8>()
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
#[cfg(feature = "serde")]
impl serde::Serialize for Ipv4Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parses_clears_host_bits_and_contains() {
        let p: Ipv4Prefix = "100.64.0.9/10".parse().expect("prefix");
        assert_eq!(p.to_string(), "100.64.0.0/10");
        assert_eq!(p, Ipv4Prefix::new(Ipv4Addr::new(100, 127, 3, 3), 10));
        assert!(p.contains(Ipv4Addr::new(100, 127, 1, 1)));
        assert!(!p.contains(Ipv4Addr::new(100, 128, 0, 1)));
        assert_eq!("1.2.3.4".parse::<Ipv4Prefix>().map(|p| p.len), Ok(32));
        assert_eq!(
            " 10.0.0.0 / 8 ".trim().parse::<Ipv4Prefix>().map(|p| p.len),
            Ok(8)
        );
        assert!(Ipv4Prefix::ANY.contains(Ipv4Addr::new(203, 0, 113, 9)));
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 40).len, 32);
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 8).filter_length(), 104);
    }

    #[test]
    fn bad_prefixes_say_which_part_is_wrong() {
        assert_eq!(
            "1.2.3.4/33".parse::<Ipv4Prefix>(),
            Err(PrefixError::Length("33".into()))
        );
        assert_eq!(
            "x/3".parse::<Ipv4Prefix>(),
            Err(PrefixError::Address("x".into()))
        );
        assert!("1.2.3.4/".parse::<Ipv4Prefix>().is_err());
        assert!("".parse::<Ipv4Prefix>().is_err());
    }

    #[test]
    fn addresses_cover_the_prefix() {
        let p = Ipv4Prefix::new(Ipv4Addr::new(198, 51, 100, 5), 30);
        let all: Vec<_> = p.addresses().collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], Ipv4Addr::new(198, 51, 100, 4));
    }
}
