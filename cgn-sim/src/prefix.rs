//! IPv4 address ranges as operators write them for pools (`198.51.100.0/28`,
//! `198.51.100.9-198.51.100.12`, `100.64.0.2`). The prefix type itself is the workspace's one
//! [`pcp_client::prefix::Ipv4Prefix`], re-exported here.

use std::net::Ipv4Addr;

pub use pcp_client::prefix::{Ipv4Prefix, PrefixError};

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
