//! A checked view of an IPv4 packet (RFC 791) for in-place translation.

use std::net::Ipv4Addr;

use super::checksum;

/// Why a buffer is not an IPv4 packet the translator can work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the header it claims.
    #[error("packet of {len} bytes is shorter than {need}")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Version nibble is not 4.
    #[error("IP version {0} is not 4")]
    NotIpv4(u8),
    /// IHL below 5.
    #[error("IPv4 header length {0} words is below 5")]
    BadHeaderLength(u8),
    /// Total Length smaller than the header or larger than the buffer.
    #[error("IPv4 total length {total} does not fit header {header} and buffer {len}")]
    BadTotalLength {
        /// Total Length field.
        total: u16,
        /// Header length in bytes.
        header: usize,
        /// Buffer length.
        len: usize,
    },
    /// Header checksum does not verify.
    #[error("IPv4 header checksum is wrong")]
    BadHeaderChecksum,
    /// The transport header is cut short (first fragment too small).
    #[error("{protocol} header truncated")]
    TransportTruncated {
        /// IP protocol number.
        protocol: u8,
    },
    /// An ICMP checksum does not verify.
    #[error("ICMP checksum is wrong")]
    BadIcmpChecksum,
}

/// Protocol numbers the translator handles.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// Byte offsets of the IPv4 header fields (RFC 791 §3.1), shared with the fast path.
pub(crate) mod field {
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// Total Length.
    pub const TOTAL_LEN: usize = 2;
    /// Identification.
    pub const IDENT: usize = 4;
    /// Flags and Fragment Offset.
    pub const FLAGS_FRAG: usize = 6;
    /// Time to Live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header Checksum.
    pub const CHECKSUM: usize = 10;
    /// Source Address.
    pub const SRC: usize = 12;
    /// Destination Address.
    pub const DST: usize = 16;
}

/// Minimum IPv4 header.
pub const MIN_HEADER_LEN: usize = 20;

/// An IPv4 packet whose header lengths were checked: the accessors do not panic.
///
/// The translator checks a packet once, into this view, and carries the view through its
/// whole path (classification, rewriting, TTL, fragmentation, ICMP errors): nothing on the
/// way parses the header again.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
    header_len: usize,
    total_len: usize,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, IHL and Total Length against the buffer (trailing bytes beyond Total
    /// Length are ignored). The header checksum is not checked here; see
    /// [`Ipv4Packet::verify_checksum`].
    pub fn new_checked(buf: T) -> Result<Self, PacketError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(PacketError::Truncated {
                len: b.len(),
                need: MIN_HEADER_LEN,
            });
        }
        let version = b[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(PacketError::NotIpv4(version));
        }
        let ihl = b[field::VER_IHL] & 0x0f;
        if ihl < 5 {
            return Err(PacketError::BadHeaderLength(ihl));
        }
        let header_len = usize::from(ihl) * 4;
        let total = u16::from_be_bytes([b[field::TOTAL_LEN], b[field::TOTAL_LEN + 1]]);
        let total_len = usize::from(total);
        if total_len < header_len || total_len > b.len() {
            return Err(PacketError::BadTotalLength {
                total,
                header: header_len,
                len: b.len(),
            });
        }
        Ok(Ipv4Packet {
            buf,
            header_len,
            total_len,
        })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The whole buffer the view was made on (trailing bytes beyond Total Length included).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// A read-only view of the same packet, without checking it again.
    pub fn view(&self) -> Ipv4Packet<&[u8]> {
        Ipv4Packet {
            buf: self.buf.as_ref(),
            header_len: self.header_len,
            total_len: self.total_len,
        }
    }

    /// A checked copy of the packet (its whole buffer), without checking it again.
    pub fn to_owned_packet(&self) -> Ipv4Packet<Vec<u8>> {
        Ipv4Packet {
            buf: self.buf.as_ref().to_vec(),
            header_len: self.header_len,
            total_len: self.total_len,
        }
    }

    /// Header length in bytes (options included).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Total Length.
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::IDENT], self.b()[field::IDENT + 1]])
    }

    /// DF flag.
    pub fn dont_fragment(&self) -> bool {
        self.b()[field::FLAGS_FRAG] & 0x40 != 0
    }

    /// MF flag.
    pub fn more_fragments(&self) -> bool {
        self.b()[field::FLAGS_FRAG] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    pub fn fragment_offset(&self) -> usize {
        let v = u16::from_be_bytes([self.b()[field::FLAGS_FRAG], self.b()[field::FLAGS_FRAG + 1]]);
        usize::from(v & 0x1fff) * 8
    }

    /// True for the first (or only) fragment, which carries the transport header.
    pub fn is_first_fragment(&self) -> bool {
        self.fragment_offset() == 0
    }

    /// True if the packet is a fragment (MF set or offset non-zero).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }

    /// TTL.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Protocol.
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        addr_at(self.b(), field::SRC)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        addr_at(self.b(), field::DST)
    }

    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.b()[..self.header_len])) == 0xffff
    }

    /// The bytes after the header, up to Total Length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len..self.total_len]
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// The whole buffer, writable. Changing the version, IHL or Total Length through it
    /// voids the checks the view was made with; the translator changes neither.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    fn header_checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::CHECKSUM], self.b()[field::CHECKSUM + 1]])
    }

    fn set_header_checksum(&mut self, c: u16) {
        self.bm()[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Sets the source address, updating the header checksum incrementally.
    pub fn set_src(&mut self, addr: Ipv4Addr) {
        let old = self.src();
        let c = checksum::adjust_addr(self.header_checksum(), old, addr);
        self.bm()[field::SRC..field::SRC + 4].copy_from_slice(&addr.octets());
        self.set_header_checksum(c);
    }

    /// Sets the destination address, updating the header checksum incrementally.
    pub fn set_dst(&mut self, addr: Ipv4Addr) {
        let old = self.dst();
        let c = checksum::adjust_addr(self.header_checksum(), old, addr);
        self.bm()[field::DST..field::DST + 4].copy_from_slice(&addr.octets());
        self.set_header_checksum(c);
    }

    /// Decrements the TTL (saturating at 0), updating the header checksum incrementally.
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl().saturating_sub(1);
        self.set_ttl(ttl);
    }

    /// Sets the TTL, updating the header checksum incrementally.
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.b();
        let old = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        let new = u16::from_be_bytes([ttl, b[field::PROTOCOL]]);
        let c = checksum::adjust(self.header_checksum(), old, new);
        self.bm()[field::TTL] = ttl;
        self.set_header_checksum(c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_header_checksum(0);
        let c = checksum::checksum(&self.b()[..self.header_len]);
        self.set_header_checksum(c);
    }

    /// The bytes after the header, up to Total Length, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len, self.total_len);
        &mut self.bm()[h..t]
    }
}

pub(crate) fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Writes a 20-byte IPv4 header without options into `out[..20]`, checksum filled.
pub fn write_header(
    out: &mut [u8],
    total_len: u16,
    ident: u16,
    ttl: u8,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) {
    out[..MIN_HEADER_LEN].fill(0);
    out[field::VER_IHL] = 0x45;
    out[field::TOTAL_LEN..field::TOTAL_LEN + 2].copy_from_slice(&total_len.to_be_bytes());
    out[field::IDENT..field::IDENT + 2].copy_from_slice(&ident.to_be_bytes());
    out[field::TTL] = ttl;
    out[field::PROTOCOL] = protocol;
    out[field::SRC..field::SRC + 4].copy_from_slice(&src.octets());
    out[field::DST..field::DST + 4].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&out[..MIN_HEADER_LEN]);
    out[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
}
