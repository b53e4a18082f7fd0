//! Classifying IPv4 packets into translatable flows and rewriting their endpoints in place, with
//! incremental checksum updates (RFC 1624): UDP, TCP, ICMP echo (the identifier plays the port,
//! RFC 5508 §3.1) and ICMP errors, whose embedded header is rewritten too (RFC 5508 §4).

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::{Ipv4Packet, MIN_HEADER_LEN, PacketError, addr_at, proto};

/// ICMP types the translator knows (RFC 792).
pub mod icmp_type {
    /// Echo Reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination Unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo Request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time Exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter Problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// A transport endpoint: address and port (for ICMP queries, the identifier).
pub type Endpoint = (Ipv4Addr, u16);

/// The five-tuple of a packet as it travels (source first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// UDP, TCP or ICMP.
    pub protocol: u8,
    /// Source endpoint.
    pub src: Endpoint,
    /// Destination endpoint.
    pub dst: Endpoint,
}

/// What a packet is, for the translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// UDP, TCP or ICMP echo with its transport header (an unfragmented packet or a first
    /// fragment). `tcp_flags` is 0 for other protocols.
    Flow {
        /// The packet's flow.
        flow: Flow,
        /// TCP flags byte.
        tcp_flags: u8,
        /// True for an ICMP echo reply (the identifier belongs to the destination).
        echo_reply: bool,
    },
    /// An ICMP error (types 3, 11, 12) about `embedded`, the flow of the packet that caused it
    /// as that packet travelled.
    IcmpError {
        /// Outer source and destination addresses.
        outer_src: Ipv4Addr,
        /// Outer destination.
        outer_dst: Ipv4Addr,
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// The embedded flow.
        embedded: Flow,
    },
    /// A non-first fragment: no transport header; identified by (src, dst, protocol, ident).
    Fragment {
        /// IP protocol.
        protocol: u8,
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
        /// IP Identification.
        ident: u16,
    },
    /// A protocol or ICMP type the translator does not handle.
    Unsupported {
        /// IP protocol.
        protocol: u8,
    },
}

/// Offset of the TCP checksum in its header (RFC 9293 §3.1).
pub(crate) const TCP_CHECKSUM: usize = 16;
/// Offset of the TCP flags byte.
pub(crate) const TCP_FLAGS: usize = 13;
/// Offset of the UDP checksum in its header (RFC 768).
pub(crate) const UDP_CHECKSUM: usize = 6;
/// Minimum TCP header.
pub(crate) const TCP_HEADER_LEN: usize = 20;
/// UDP header.
pub(crate) const UDP_HEADER_LEN: usize = 8;
const ICMP_CHECKSUM: usize = 2;
const ICMP_IDENT: usize = 4;
const ICMP_HEADER_LEN: usize = 8;

/// Reads the flow of a packet. The IP header checksum, and for ICMP errors the ICMP checksum
/// and the embedded IP header checksum, are verified (RFC 5508 REQ-3: drop on failure); the
/// embedded transport checksum is not (it usually covers bytes that are not there).
pub fn classify(packet: &[u8]) -> Result<Classified, PacketError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    if !ip.verify_checksum() {
        return Err(PacketError::BadHeaderChecksum);
    }
    classify_checked(&ip)
}

/// [`classify`] for a packet whose view was made and whose header checksum was verified
/// already (the translator's path): the header is not looked at again, only the transport
/// header and, for ICMP errors, the ICMP checksum and the embedded header.
pub fn classify_checked<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> Result<Classified, PacketError> {
    let protocol = ip.protocol();
    if !ip.is_first_fragment() {
        return Ok(Classified::Fragment {
            protocol,
            src: ip.src(),
            dst: ip.dst(),
            ident: ip.ident(),
        });
    }
    let l4 = ip.payload();
    match protocol {
        proto::UDP | proto::TCP => {
            let need = if protocol == proto::UDP {
                UDP_HEADER_LEN
            } else {
                TCP_HEADER_LEN
            };
            if l4.len() < need {
                return Err(PacketError::TransportTruncated { protocol });
            }
            let tcp_flags = if protocol == proto::TCP {
                l4[TCP_FLAGS]
            } else {
                0
            };
            Ok(Classified::Flow {
                flow: Flow {
                    protocol,
                    src: (ip.src(), u16::from_be_bytes([l4[0], l4[1]])),
                    dst: (ip.dst(), u16::from_be_bytes([l4[2], l4[3]])),
                },
                tcp_flags,
                echo_reply: false,
            })
        }
        proto::ICMP => {
            if l4.len() < ICMP_HEADER_LEN {
                return Err(PacketError::TransportTruncated { protocol });
            }
            match l4[0] {
                icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY => {
                    let id = u16::from_be_bytes([l4[ICMP_IDENT], l4[ICMP_IDENT + 1]]);
                    Ok(Classified::Flow {
                        flow: Flow {
                            protocol,
                            src: (ip.src(), id),
                            dst: (ip.dst(), id),
                        },
                        tcp_flags: 0,
                        echo_reply: l4[0] == icmp_type::ECHO_REPLY,
                    })
                }
                icmp_type::DEST_UNREACHABLE
                | icmp_type::TIME_EXCEEDED
                | icmp_type::PARAMETER_PROBLEM => {
                    if ip.is_fragment() {
                        // A fragmented ICMP error cannot be checked or rewritten as a whole.
                        return Ok(Classified::Unsupported { protocol });
                    }
                    if checksum::fold(checksum::sum(l4)) != 0xffff {
                        return Err(PacketError::BadIcmpChecksum);
                    }
                    let embedded = embedded_flow(&l4[ICMP_HEADER_LEN..])?;
                    Ok(Classified::IcmpError {
                        outer_src: ip.src(),
                        outer_dst: ip.dst(),
                        icmp_type: l4[0],
                        code: l4[1],
                        embedded,
                    })
                }
                _ => Ok(Classified::Unsupported { protocol }),
            }
        }
        _ => Ok(Classified::Unsupported { protocol }),
    }
}

/// Header length of the embedded packet and the flow it carries. Needs the whole embedded IP
/// header (options skipped, RFC 5508 REQ-3) and 8 bytes after it.
fn embedded_parts(inner: &[u8]) -> Result<(usize, Flow), PacketError> {
    let short = PacketError::TransportTruncated {
        protocol: proto::ICMP,
    };
    let first = *inner.first().ok_or(short)?;
    if first >> 4 != 4 {
        return Err(PacketError::NotIpv4(first >> 4));
    }
    let ihl = first & 0x0f;
    if ihl < 5 {
        return Err(PacketError::BadHeaderLength(ihl));
    }
    let hl = usize::from(ihl) * 4;
    if inner.len() < hl + 8 {
        return Err(short);
    }
    if checksum::fold(checksum::sum(&inner[..hl])) != 0xffff {
        return Err(PacketError::BadHeaderChecksum);
    }
    let protocol = inner[9];
    let (src, dst) = (addr_at(inner, 12), addr_at(inner, 16));
    let t = &inner[hl..];
    let (sp, dp) = match protocol {
        proto::UDP | proto::TCP => (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        ),
        proto::ICMP if matches!(t[0], icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY) => {
            let id = u16::from_be_bytes([t[ICMP_IDENT], t[ICMP_IDENT + 1]]);
            (id, id)
        }
        _ => return Err(PacketError::TransportTruncated { protocol }),
    };
    Ok((
        hl,
        Flow {
            protocol,
            src: (src, sp),
            dst: (dst, dp),
        },
    ))
}

fn embedded_flow(inner: &[u8]) -> Result<Flow, PacketError> {
    embedded_parts(inner).map(|(_, f)| f)
}

/// Which end of a packet (or of an embedded packet) to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source address and port.
    Source,
    /// The destination address and port.
    Destination,
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites one endpoint of a transport header `t` (UDP, TCP or ICMP echo) whose packet had
/// address `old_addr` on that side, fixing the transport checksum incrementally. `t` may be cut
/// short (an embedded header): fields that are not there are left alone.
fn rewrite_transport(t: &mut [u8], protocol: u8, side: Side, old_addr: Ipv4Addr, new: Endpoint) {
    let port_at = match side {
        Side::Source => 0,
        Side::Destination => 2,
    };
    match protocol {
        proto::UDP | proto::TCP => {
            let old_port = get16(t, port_at);
            put16(t, port_at, new.1);
            let at = if protocol == proto::UDP {
                UDP_CHECKSUM
            } else {
                TCP_CHECKSUM
            };
            if t.len() < at + 2 {
                return;
            }
            let c = get16(t, at);
            if protocol == proto::UDP && c == 0 {
                return; // no checksum (RFC 768)
            }
            let mut c = checksum::adjust_addr(c, old_addr, new.0);
            c = checksum::adjust(c, old_port, new.1);
            if protocol == proto::UDP && c == 0 {
                c = 0xffff;
            }
            put16(t, at, c);
        }
        proto::ICMP => {
            // Echo: no pseudo header; only the identifier changes.
            let old_id = get16(t, ICMP_IDENT);
            put16(t, ICMP_IDENT, new.1);
            let c = checksum::adjust(get16(t, ICMP_CHECKSUM), old_id, new.1);
            put16(t, ICMP_CHECKSUM, c);
        }
        _ => {}
    }
}

/// Rewrites the source or destination endpoint of a UDP, TCP or ICMP echo packet (as
/// classified by [`classify`] as [`Classified::Flow`]) and fixes every checksum. For a
/// non-first fragment only the address changes (the transport checksum was fixed in the first
/// fragment).
pub fn rewrite_flow(packet: &mut [u8], side: Side, new: Endpoint) -> Result<(), PacketError> {
    rewrite_flow_checked(&mut Ipv4Packet::new_checked(packet)?, side, new)
}

/// [`rewrite_flow`] on a checked view (the translator's path: no second header check).
pub fn rewrite_flow_checked<T: AsRef<[u8]> + AsMut<[u8]>>(
    ip: &mut Ipv4Packet<T>,
    side: Side,
    new: Endpoint,
) -> Result<(), PacketError> {
    let protocol = ip.protocol();
    let first = ip.is_first_fragment();
    let old_addr = match side {
        Side::Source => ip.src(),
        Side::Destination => ip.dst(),
    };
    match side {
        Side::Source => ip.set_src(new.0),
        Side::Destination => ip.set_dst(new.0),
    }
    if first {
        let t = ip.payload_mut();
        let need = match protocol {
            proto::TCP => TCP_HEADER_LEN,
            _ => 8,
        };
        if t.len() < need {
            return Err(PacketError::TransportTruncated { protocol });
        }
        rewrite_transport(t, protocol, side, old_addr, new);
    }
    Ok(())
}

/// Rewrites an ICMP error: the outer address on `outer_side` becomes `outer_addr`, and the
/// embedded packet's endpoint on `embedded_side` becomes `embedded` (its IP header checksum and
/// whatever part of its transport checksum is present are fixed). The ICMP checksum is then
/// recomputed over the whole message, extensions and padding included, exactly as it was
/// computed by the sender (RFC 5508 REQ-3, REQ-4, REQ-5).
pub fn rewrite_icmp_error(
    packet: &mut [u8],
    outer_side: Side,
    outer_addr: Ipv4Addr,
    embedded_side: Side,
    embedded: Endpoint,
) -> Result<(), PacketError> {
    rewrite_icmp_error_checked(
        &mut Ipv4Packet::new_checked(packet)?,
        outer_side,
        outer_addr,
        embedded_side,
        embedded,
    )
}

/// [`rewrite_icmp_error`] on a checked view (the translator's path: no second header check).
pub fn rewrite_icmp_error_checked<T: AsRef<[u8]> + AsMut<[u8]>>(
    ip: &mut Ipv4Packet<T>,
    outer_side: Side,
    outer_addr: Ipv4Addr,
    embedded_side: Side,
    embedded: Endpoint,
) -> Result<(), PacketError> {
    match outer_side {
        Side::Source => ip.set_src(outer_addr),
        Side::Destination => ip.set_dst(outer_addr),
    }
    let icmp = ip.payload_mut();
    if icmp.len() < ICMP_HEADER_LEN + MIN_HEADER_LEN + 8 {
        return Err(PacketError::TransportTruncated {
            protocol: proto::ICMP,
        });
    }
    let inner = &mut icmp[ICMP_HEADER_LEN..];
    let (hl, flow) = embedded_parts(inner)?;
    let (addr_at_off, old) = match embedded_side {
        Side::Source => (12, flow.src),
        Side::Destination => (16, flow.dst),
    };
    // Embedded IP header: address and header checksum.
    let c = checksum::adjust_addr(get16(inner, 10), old.0, embedded.0);
    inner[addr_at_off..addr_at_off + 4].copy_from_slice(&embedded.0.octets());
    put16(inner, 10, c);
    rewrite_transport(
        &mut inner[hl..],
        flow.protocol,
        embedded_side,
        old.0,
        embedded,
    );
    put16(icmp, ICMP_CHECKSUM, 0);
    let c = checksum::checksum(icmp);
    put16(icmp, ICMP_CHECKSUM, c);
    Ok(())
}
