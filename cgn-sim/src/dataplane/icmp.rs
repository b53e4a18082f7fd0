//! ICMP errors the translator originates (RFC 792, RFC 1812 §4.3.2): host unreachable on
//! resource exhaustion (RFC 6888 REQ-11: code 1), time exceeded when the TTL runs out,
//! fragmentation needed for DF packets that are too big (RFC 4787 REQ-13), port unreachable
//! for refused inbound SYNs (RFC 5382 REQ-4).

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::{Ipv4Packet, MIN_HEADER_LEN, proto, write_header};
use super::rewrite::icmp_type;

/// Largest ICMP error datagram (RFC 1812 §4.3.2.3: at most 576 bytes).
pub const MAX_ERROR_LEN: usize = 576;

/// What error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Destination Unreachable, Host Unreachable (type 3 code 1).
    HostUnreachable,
    /// Destination Unreachable, Port Unreachable (type 3 code 3).
    PortUnreachable,
    /// Destination Unreachable, Fragmentation Needed and DF set (type 3 code 4), with the
    /// next-hop MTU (RFC 1191).
    FragmentationNeeded {
        /// MTU of the next hop.
        mtu: u16,
    },
    /// Time Exceeded in transit (type 11 code 0).
    TimeExceeded,
}

impl IcmpError {
    fn type_code_rest(self) -> (u8, u8, [u8; 4]) {
        match self {
            IcmpError::HostUnreachable => (icmp_type::DEST_UNREACHABLE, 1, [0; 4]),
            IcmpError::PortUnreachable => (icmp_type::DEST_UNREACHABLE, 3, [0; 4]),
            IcmpError::FragmentationNeeded { mtu } => {
                let m = mtu.to_be_bytes();
                (icmp_type::DEST_UNREACHABLE, 4, [0, 0, m[0], m[1]])
            }
            IcmpError::TimeExceeded => (icmp_type::TIME_EXCEEDED, 0, [0; 4]),
        }
    }
}

/// Writes into `out` the ICMP `error` that `from` sends about `original`, and returns its
/// length; `None` when no error may be sent about that packet (RFC 1812 §4.3.2.7): an ICMP
/// error, a non-first fragment, a packet from an unspecified, loopback, broadcast or multicast
/// source, or a packet that does not parse. As much of the original as fits in 576 bytes is
/// quoted.
pub fn build_error(
    original: &[u8],
    from: Ipv4Addr,
    error: IcmpError,
    ident: u16,
    out: &mut [u8],
) -> Option<usize> {
    build_error_checked(
        &Ipv4Packet::new_checked(original).ok()?,
        from,
        error,
        ident,
        out,
    )
}

/// [`build_error`] about a packet already checked into a view (the translator's path).
pub fn build_error_checked<T: AsRef<[u8]>>(
    ip: &Ipv4Packet<T>,
    from: Ipv4Addr,
    error: IcmpError,
    ident: u16,
    out: &mut [u8],
) -> Option<usize> {
    let original = ip.as_bytes();
    let src = ip.src();
    if src.is_unspecified() || src.is_loopback() || src.is_broadcast() || src.is_multicast() {
        return None;
    }
    if !ip.is_first_fragment() {
        return None;
    }
    if ip.protocol() == proto::ICMP {
        let t = *ip.payload().first()?;
        if !matches!(t, icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY) {
            return None;
        }
    }
    let quote = ip.total_len().min(MAX_ERROR_LEN - MIN_HEADER_LEN - 8);
    let len = MIN_HEADER_LEN + 8 + quote;
    let out = out.get_mut(..len)?;
    write_header(out, len as u16, ident, 64, proto::ICMP, from, src);
    let (t, code, rest) = error.type_code_rest();
    let icmp = &mut out[MIN_HEADER_LEN..];
    icmp[0] = t;
    icmp[1] = code;
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4..8].copy_from_slice(&rest);
    icmp[8..].copy_from_slice(&original[..quote]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(len)
}
