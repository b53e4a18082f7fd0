//! One readable line per [`IwfEvent`], for the status page's recent events and the log.

use std::fmt;

use super::IwfEvent;
use crate::mapping::MappingKey;

struct Key<'a>(&'a MappingKey);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.protocol.as_str(), self.0.external_port)?;
        if let Some(r) = self.0.remote_host {
            write!(f, " (from {r})")?;
        }
        Ok(())
    }
}

impl fmt::Display for IwfEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IwfEvent::Created {
                key,
                external,
                nat1_port,
            } => write!(
                f,
                "mapped {} via NAT1 port {nat1_port} to {external}",
                Key(key)
            ),
            IwfEvent::Removed { key, reason } => write!(f, "removed {} ({reason})", Key(key)),
            IwfEvent::Restored {
                key,
                external,
                same_endpoint,
            } => write!(
                f,
                "restored {} on {external}{}",
                Key(key),
                if *same_endpoint {
                    " (same endpoint)"
                } else {
                    " (external endpoint changed)"
                }
            ),
            IwfEvent::ServerStateLost { announced: true } => write!(
                f,
                "the PCP server announced a restart: re-creating every mapping"
            ),
            IwfEvent::ServerStateLost { announced: false } => write!(
                f,
                "the PCP server lost its state (epoch): re-creating every mapping"
            ),
            IwfEvent::ServerAnswered { epoch, result } => {
                write!(f, "PCP server answers ({result}, epoch {epoch})")
            }
            IwfEvent::ExternalAddress(Some(a)) => write!(f, "external address is now {a}"),
            IwfEvent::ExternalAddress(None) => write!(f, "external address unknown"),
            IwfEvent::PcpError { key, code } => {
                write!(f, "PCP error on {}: {code}", Key(key))
            }
            IwfEvent::Nat1Failed { rule, error } => {
                write!(f, "NAT1 change failed for {rule}: {error}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::mapping::Protocol;

    #[test]
    fn events_read_as_sentences() {
        let key = MappingKey {
            external_port: 20000,
            protocol: Protocol::Udp,
            remote_host: None,
        };
        let ev = IwfEvent::Restored {
            key,
            external: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 20000),
            same_endpoint: true,
        };
        assert_eq!(
            ev.to_string(),
            "restored UDP 20000 on 198.51.100.3:20000 (same endpoint)"
        );
        let ev = IwfEvent::Removed {
            key,
            reason: "UPnP lease ended",
        };
        assert_eq!(ev.to_string(), "removed UDP 20000 (UPnP lease ended)");
    }
}
