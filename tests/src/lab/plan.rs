//! The lab's address plan (design.md §4): which namespaces exist, which interfaces they have,
//! which addresses and routes those carry.
//!
//! Every address here is a documentation or shared-address range (RFC 1918, RFC 6598 shared
//! address space, RFC 5737 TEST-NET-2/3), and it only ever exists inside namespaces the lab
//! creates.

use std::fmt;
use std::net::Ipv4Addr;

/// The LAN host (the P2P application), `192.168.0.10`.
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
/// The home router's LAN address, `192.168.0.1` (the same on both subscribers' CPEs, as real
/// home networks overlap).
pub const CPE_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// The first CPE's WAN address in the RFC 6598 shared address space, `100.64.0.2`.
pub const CPE_WAN: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// The second CPE's WAN address, `100.64.0.3`.
pub const CPE2_WAN: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
/// The CGN's inside address (the PCP server and the CPEs' default gateway), `100.64.0.1`.
pub const CGN_INSIDE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The CGN's outside address, `203.0.113.1`.
pub const CGN_OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The Internet peer, `203.0.113.50`.
pub const INET_PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
/// First address of the CGN's external pool `198.51.100.0/28`.
pub const POOL_NETWORK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
/// Prefix length of the CGN's external pool.
pub const POOL_PREFIX_LEN: u8 = 28;
/// Multicast group PCP ANNOUNCE is sent to by the server (RFC 6887 §14.1.1: 224.0.0.1:5350).
pub const PCP_ANNOUNCE_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// SSDP multicast group on the LAN (UPnP Device Architecture 1.1 §1.1: 239.255.255.250:1900).
pub const SSDP_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// The IPv4 multicast range that gets an explicit route where multicast is sent.
pub const MULTICAST_NET: &str = "224.0.0.0/4";
/// Name of the Linux bridge in the `cgn` namespace that joins every CPE on one
/// `100.64.0.0/24` segment; it carries [`CGN_INSIDE`].
pub const CGN_BRIDGE: &str = "inside0";

/// One namespace of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// The first subscriber's LAN host (`192.168.0.10`).
    Lan,
    /// The first subscriber's home router (LAN `192.168.0.1`, WAN `100.64.0.2`).
    Cpe,
    /// The carrier NAT (inside `100.64.0.1`, outside `203.0.113.1`).
    Cgn,
    /// The Internet peer (`203.0.113.50`).
    Inet,
    /// The second subscriber's home router (LAN `192.168.0.1`, WAN `100.64.0.3`).
    Cpe2,
    /// The second subscriber's LAN host (`192.168.0.10`).
    Lan2,
}

/// An addressed interface inside a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iface {
    /// Interface name inside the namespace (fixed, at most 15 bytes).
    pub name: &'static str,
    /// IPv4 address on it.
    pub addr: Ipv4Addr,
    /// Prefix length of that address.
    pub prefix_len: u8,
    /// What the interface is for, in words.
    pub role: &'static str,
}

/// A veth pair: `(node, interface)` on each end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// One end.
    pub a: (Node, &'static str),
    /// The other end.
    pub b: (Node, &'static str),
}

/// Every veth pair of the lab, in creation order. Links touching the second subscriber are only
/// created when it is part of the lab. The `cgn` ends `sub1`/`sub2` are bridge ports of
/// [`CGN_BRIDGE`] and carry no address.
pub const LINKS: [Link; 5] = [
    Link {
        a: (Node::Lan, "eth0"),
        b: (Node::Cpe, "lan0"),
    },
    Link {
        a: (Node::Cpe, "wan0"),
        b: (Node::Cgn, "sub1"),
    },
    Link {
        a: (Node::Cgn, "outside0"),
        b: (Node::Inet, "eth0"),
    },
    Link {
        a: (Node::Lan2, "eth0"),
        b: (Node::Cpe2, "lan0"),
    },
    Link {
        a: (Node::Cpe2, "wan0"),
        b: (Node::Cgn, "sub2"),
    },
];

/// Bridge ports of [`CGN_BRIDGE`] and the subscriber each belongs to.
pub const BRIDGE_PORTS: [(&str, Node); 2] = [("sub1", Node::Cpe), ("sub2", Node::Cpe2)];

impl Node {
    /// Every node, first subscriber first.
    pub const ALL: [Node; 6] = [
        Node::Lan,
        Node::Cpe,
        Node::Cgn,
        Node::Inet,
        Node::Cpe2,
        Node::Lan2,
    ];

    /// Short lower-case name, used as the namespace suffix (`<prefix>-cpe`).
    pub fn name(self) -> &'static str {
        match self {
            Node::Lan => "lan",
            Node::Cpe => "cpe",
            Node::Cgn => "cgn",
            Node::Inet => "inet",
            Node::Cpe2 => "cpe2",
            Node::Lan2 => "lan2",
        }
    }

    /// Whether this node belongs to the optional second subscriber.
    pub fn is_second_subscriber(self) -> bool {
        matches!(self, Node::Cpe2 | Node::Lan2)
    }

    /// The node's addressed interfaces.
    pub fn interfaces(self) -> &'static [Iface] {
        const LAN: [Iface; 1] = [Iface {
            name: "eth0",
            addr: LAN_HOST,
            prefix_len: 24,
            role: "LAN host",
        }];
        const CPE: [Iface; 2] = [
            Iface {
                name: "lan0",
                addr: CPE_LAN,
                prefix_len: 24,
                role: "CPE LAN",
            },
            Iface {
                name: "wan0",
                addr: CPE_WAN,
                prefix_len: 24,
                role: "CPE WAN",
            },
        ];
        const CPE2: [Iface; 2] = [
            Iface {
                name: "lan0",
                addr: CPE_LAN,
                prefix_len: 24,
                role: "CPE LAN",
            },
            Iface {
                name: "wan0",
                addr: CPE2_WAN,
                prefix_len: 24,
                role: "CPE WAN",
            },
        ];
        const CGN: [Iface; 2] = [
            Iface {
                name: CGN_BRIDGE,
                addr: CGN_INSIDE,
                prefix_len: 24,
                role: "CGN inside (bridge)",
            },
            Iface {
                name: "outside0",
                addr: CGN_OUTSIDE,
                prefix_len: 24,
                role: "CGN outside",
            },
        ];
        const INET: [Iface; 1] = [Iface {
            name: "eth0",
            addr: INET_PEER,
            prefix_len: 24,
            role: "Internet peer",
        }];
        match self {
            Node::Lan | Node::Lan2 => &LAN,
            Node::Cpe => &CPE,
            Node::Cpe2 => &CPE2,
            Node::Cgn => &CGN,
            Node::Inet => &INET,
        }
    }

    /// The node's main address: the LAN host's, the CPE's WAN, the CGN's inside, the peer's.
    pub fn address(self) -> Ipv4Addr {
        match self {
            Node::Lan | Node::Lan2 => LAN_HOST,
            Node::Cpe => CPE_WAN,
            Node::Cpe2 => CPE2_WAN,
            Node::Cgn => CGN_INSIDE,
            Node::Inet => INET_PEER,
        }
    }

    /// Default gateway, if the node has one (the CGN has none: it only has connected routes).
    pub fn gateway(self) -> Option<Ipv4Addr> {
        match self {
            Node::Lan | Node::Lan2 => Some(CPE_LAN),
            Node::Cpe | Node::Cpe2 => Some(CGN_INSIDE),
            Node::Cgn | Node::Inet => None,
        }
    }

    /// Whether the node routes between its interfaces (`net.ipv4.ip_forward=1`).
    pub fn forwards(self) -> bool {
        matches!(self, Node::Cpe | Node::Cpe2 | Node::Cgn)
    }

    /// Interface that gets the `224.0.0.0/4` route, so multicast sent from this node (SSDP on
    /// the LAN, PCP ANNOUNCE from the CGN) leaves on the right link rather than the default
    /// route.
    pub fn multicast_interface(self) -> Option<&'static str> {
        match self {
            Node::Lan | Node::Lan2 => Some("eth0"),
            Node::Cpe | Node::Cpe2 => Some("lan0"),
            Node::Cgn => Some(CGN_BRIDGE),
            Node::Inet => None,
        }
    }

    /// Extra static routes `(destination, via)` beyond the connected ones and the default.
    pub fn static_routes(self) -> &'static [(&'static str, Ipv4Addr)] {
        match self {
            // The pool is routed to the CGN by the Internet.
            Node::Inet => &[("198.51.100.0/28", CGN_OUTSIDE)],
            _ => &[],
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_ifnamsiz() {
        for node in Node::ALL {
            for iface in node.interfaces() {
                assert!(iface.name.len() <= 15, "{node}: {}", iface.name);
            }
        }
        for link in LINKS {
            assert!(link.a.1.len() <= 15 && link.b.1.len() <= 15);
        }
    }

    #[test]
    fn every_link_end_is_an_addressed_interface_or_a_bridge_port() {
        for link in LINKS {
            for (node, name) in [link.a, link.b] {
                let addressed = node.interfaces().iter().any(|i| i.name == name);
                let port = BRIDGE_PORTS.iter().any(|(p, _)| *p == name) && node == Node::Cgn;
                assert!(addressed || port, "{node}/{name}");
            }
        }
    }

    #[test]
    fn pool_route_points_at_cgn_outside() {
        assert_eq!(
            Node::Inet.static_routes(),
            &[("198.51.100.0/28", CGN_OUTSIDE)]
        );
        assert_eq!(
            format!("{POOL_NETWORK}/{POOL_PREFIX_LEN}"),
            "198.51.100.0/28"
        );
    }
}
