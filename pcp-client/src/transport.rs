//! UDP or TCP: the protocols NAT-PMP (RFC 6886 §3.3) and UPnP IGD (`PortMappingProtocol`) can
//! map. PCP itself carries any IANA protocol number ([`crate::wire::Protocol`]); this closed
//! type is for the front-ends that know only these two, so a match on it needs no "other" arm.

use std::fmt;

use crate::wire::Protocol;

/// A port-carrying transport a NAT-PMP request or an IGD port mapping names. Ordered TCP
/// before UDP, as mapping listings sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP (protocol 6; NAT-PMP opcode 2).
    Tcp,
    /// UDP (protocol 17; NAT-PMP opcode 1).
    Udp,
}

impl Transport {
    /// Parses `TCP` or `UDP` in any case, surrounding blanks ignored (UPnP's
    /// `PortMappingProtocol`, a command-line word); `None` for anything else.
    pub fn parse(s: &str) -> Option<Transport> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("TCP") {
            Some(Transport::Tcp)
        } else if s.eq_ignore_ascii_case("UDP") {
            Some(Transport::Udp)
        } else {
            None
        }
    }

    /// The upper-case spelling, `TCP` or `UDP` (igd-next rejects anything else).
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }

    /// The IANA protocol number PCP carries for it.
    pub const fn protocol(self) -> Protocol {
        match self {
            Transport::Tcp => Protocol::TCP,
            Transport::Udp => Protocol::UDP,
        }
    }

    /// The transport a PCP protocol number names, `None` for any protocol but TCP and UDP.
    pub const fn from_protocol(protocol: Protocol) -> Option<Transport> {
        match protocol {
            Protocol::TCP => Some(Transport::Tcp),
            Protocol::UDP => Some(Transport::Udp),
            _ => None,
        }
    }
}

impl From<Transport> for Protocol {
    fn from(t: Transport) -> Protocol {
        t.protocol()
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_and_numbers_round_trip() {
        for t in [Transport::Tcp, Transport::Udp] {
            assert_eq!(Transport::parse(t.as_str()), Some(t));
            assert_eq!(Transport::parse(&t.to_string().to_lowercase()), Some(t));
            assert_eq!(Transport::from_protocol(t.protocol()), Some(t));
        }
        assert_eq!(Transport::parse(" udp "), Some(Transport::Udp));
        assert_eq!(Transport::parse("SCTP"), None);
        assert_eq!(Transport::parse(""), None);
        assert_eq!(Transport::from_protocol(Protocol::ICMP), None);
        assert_eq!(Transport::from_protocol(Protocol::ALL), None);
        assert_eq!(Protocol::from(Transport::Udp), Protocol(17));
        assert!(Transport::Tcp < Transport::Udp);
    }
}
