//! Destinations the NAT does not translate (RFC 6888 REQ-6: "the CGN function MUST be able
//! to be turned off per destination address and/or port", e.g. for the provider's own DNS or
//! portal servers, which can reach subscribers' shared addresses directly).
//!
//! A rule is a destination prefix, optionally narrowed to a protocol and, for TCP and UDP, a
//! destination port: `203.0.113.53/32`, `203.0.113.53/32:udp`, `203.0.113.53/32:udp/53`.
//! An outbound packet from a subscriber whose destination matches a rule leaves with its
//! subscriber source address, with no binding, session or quota use; the translator still
//! handles its TTL and MTU as for any forwarded packet.
//!
//! Only the outbound direction passes the translator. Replies from a bypassed destination are
//! addressed to the subscriber's own (shared, RFC 6598) address, not to the pool, so with the
//! TUN routing ([`super::tun`]) the kernel routes them to the inside directly; a packet that
//! does reach the translator from outside with a subscriber destination is still dropped
//! (`not_nat_traffic`). The bypassed servers must therefore sit inside the provider's network
//! with a route to the subscriber prefixes: shared addresses must not cross the provider
//! boundary (RFC 6598 §4), so rules should name only such servers.
//!
//! ```
//! use cgn_sim::dataplane::bypass::Bypass;
//! let dns: Bypass = "203.0.113.53/32:udp/53".parse().unwrap();
//! assert!(dns.matches("203.0.113.53".parse().unwrap(), 17, Some(53)));
//! assert!(!dns.matches("203.0.113.53".parse().unwrap(), 6, Some(53)));
//! assert!("203.0.113.53/32:icmp/8".parse::<Bypass>().is_err());
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::ipv4::proto;
use super::rewrite::Classified;
use crate::prefix::{Ipv4Prefix, PrefixError};

/// One destination that is forwarded untranslated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bypass {
    /// Destination addresses covered.
    pub destination: Ipv4Prefix,
    /// IP protocol (TCP, UDP or ICMP); `None`: every protocol.
    pub protocol: Option<u8>,
    /// Destination port (TCP and UDP only); `None`: every port.
    pub port: Option<u16>,
}

/// Why a `--no-translate` rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BypassError {
    /// The destination prefix did not parse.
    #[error("destination: {0}")]
    Prefix(#[from] PrefixError),
    /// The protocol is not `tcp`, `udp` or `icmp`.
    #[error("{0:?} is not a protocol (tcp, udp or icmp)")]
    Protocol(String),
    /// The port is not 1 to 65535.
    #[error("{0:?} is not a port (1 to 65535)")]
    Port(String),
    /// A port given for ICMP.
    #[error("icmp has no ports: write PREFIX:icmp")]
    PortWithoutPorts,
}

impl Bypass {
    /// Whether a packet to `dst` with IP protocol `protocol` and destination port `port`
    /// (`None` when it has none, e.g. a later fragment) is covered. A rule with a port covers
    /// only packets that show that port.
    pub fn matches(&self, dst: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        self.destination.contains(dst)
            && self.protocol.is_none_or(|p| p == protocol)
            && self.port.is_none_or(|p| port == Some(p))
    }
}

/// Whether an outbound packet of class `class` to `dst` is covered by one of `rules`. Flows
/// match on their destination port; an ICMP error matches on the flow it quotes, seen from
/// the other side (its source is the bypassed server's endpoint), so errors about bypassed
/// traffic are bypassed too. Later fragments are not matched here: they follow their first
/// fragment through the fragment table.
pub fn covers(rules: &[Bypass], class: &Classified, dst: Ipv4Addr) -> bool {
    let (protocol, port) = match class {
        Classified::Flow { flow, .. } if flow.protocol == proto::ICMP => (flow.protocol, None),
        Classified::Flow { flow, .. } => (flow.protocol, Some(flow.dst.1)),
        Classified::IcmpError { embedded, .. } if embedded.protocol == proto::ICMP => {
            (embedded.protocol, None)
        }
        Classified::IcmpError { embedded, .. } => (embedded.protocol, Some(embedded.src.1)),
        Classified::Fragment { .. } => return false,
        Classified::Unsupported { protocol } => (*protocol, None),
    };
    covers_port(rules, dst, protocol, port)
}

/// Whether a packet to `dst` with IP protocol `protocol` and destination port `port` is
/// covered by one of `rules` (the translator's fast path asks this of plain UDP and TCP).
#[inline]
pub fn covers_port(rules: &[Bypass], dst: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
    rules.iter().any(|r| r.matches(dst, protocol, port))
}

impl FromStr for Bypass {
    type Err = BypassError;

    /// `PREFIX`, `PREFIX:PROTO` or `PREFIX:PROTO/PORT` with PROTO `tcp`, `udp` or `icmp` (no
    /// port) and PORT 1 to 65535; a bare address is a /32.
    fn from_str(s: &str) -> Result<Bypass, BypassError> {
        let (prefix, rest) = match s.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        let destination: Ipv4Prefix = prefix.trim().parse()?;
        let Some(rest) = rest else {
            return Ok(Bypass {
                destination,
                protocol: None,
                port: None,
            });
        };
        let (name, port) = match rest.split_once('/') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        let protocol = match name.trim().to_ascii_lowercase().as_str() {
            "tcp" => proto::TCP,
            "udp" => proto::UDP,
            "icmp" => proto::ICMP,
            _ => return Err(BypassError::Protocol(name.to_string())),
        };
        let port = match port {
            None => None,
            Some(_) if protocol == proto::ICMP => return Err(BypassError::PortWithoutPorts),
            Some(p) => match p.trim().parse::<u16>() {
                Ok(n) if n != 0 => Some(n),
                _ => return Err(BypassError::Port(p.to_string())),
            },
        };
        Ok(Bypass {
            destination,
            protocol: Some(protocol),
            port,
        })
    }
}

impl fmt::Display for Bypass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        match self.protocol {
            Some(proto::TCP) => write!(f, ":tcp")?,
            Some(proto::UDP) => write!(f, ":udp")?,
            Some(proto::ICMP) => write!(f, ":icmp")?,
            Some(p) => write!(f, ":{p}")?,
            None => {}
        }
        match self.port {
            Some(p) => write!(f, "/{p}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6888 REQ-6: per destination address and/or port; precise errors for bad rules.
    #[test]
    fn no_translate_rules_parse_and_refuse_precisely() {
        let r: Bypass = "203.0.113.53/32:udp/53".parse().expect("rule");
        assert_eq!(r.destination, "203.0.113.53/32".parse().expect("prefix"));
        assert_eq!((r.protocol, r.port), (Some(proto::UDP), Some(53)));
        assert_eq!(r.to_string(), "203.0.113.53/32:udp/53");
        let all: Bypass = "10.0.0.0/8".parse().expect("prefix only");
        assert_eq!((all.protocol, all.port), (None, None));
        let tcp: Bypass = "192.0.2.1:TCP".parse().expect("bare address, any TCP port");
        assert_eq!(tcp.to_string(), "192.0.2.1/32:tcp");
        assert_eq!(
            "192.0.2.0/24:icmp".parse::<Bypass>().map(|b| b.protocol),
            Ok(Some(1))
        );

        let err = |s: &str| s.parse::<Bypass>().expect_err(s).to_string();
        assert_eq!(
            err("203.0.113.x/32:udp/53"),
            "destination: \"203.0.113.x\" is not an IPv4 address"
        );
        assert_eq!(
            err("203.0.113.53/33"),
            "destination: \"33\" is not a prefix length (0 to 32)"
        );
        assert_eq!(
            err("203.0.113.53:sctp/53"),
            "\"sctp\" is not a protocol (tcp, udp or icmp)"
        );
        assert_eq!(
            err("203.0.113.53:udp/0"),
            "\"0\" is not a port (1 to 65535)"
        );
        assert_eq!(
            err("203.0.113.53:udp/65536"),
            "\"65536\" is not a port (1 to 65535)"
        );
        assert_eq!(
            err("203.0.113.53:icmp/8"),
            "icmp has no ports: write PREFIX:icmp"
        );
    }

    #[test]
    fn rules_match_prefix_protocol_and_port() {
        let r: Bypass = "203.0.113.0/24:udp/53".parse().expect("rule");
        let a = Ipv4Addr::new(203, 0, 113, 9);
        assert!(r.matches(a, proto::UDP, Some(53)));
        assert!(!r.matches(a, proto::UDP, Some(54)));
        assert!(!r.matches(a, proto::UDP, None), "no port shown, no match");
        assert!(!r.matches(a, proto::TCP, Some(53)));
        assert!(!r.matches(Ipv4Addr::new(203, 0, 114, 9), proto::UDP, Some(53)));
        let any: Bypass = "203.0.113.9".parse().expect("rule");
        assert!(any.matches(a, proto::ICMP, None));
    }
}
