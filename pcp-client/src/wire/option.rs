//! PCP options (RFC 6887 §7.3, §13; RFC 7220; RFC 7753; RFC 7843).
//!
//! An option is a TLV: code (the top bit is "optional to process"), a reserved byte, a 16-bit
//! length that excludes padding, then the data padded with zeros to a 4-byte boundary.
//!
//! [`Options`] is a sequence of options either as validated wire bytes (what parsing returns,
//! decoded lazily, so parsing never allocates) or as a slice of [`PcpOption`] values (what a
//! sender builds). Both iterate the same way and compare equal when they hold the same options.

use std::fmt;
use std::net::IpAddr;

use super::address::{decode_address, encode_address, read_field};
use super::error::{EmitError, Error};
use super::types::{Opcode, OptionCode};
use super::{MAX_MESSAGE_LEN, OPTION_HEADER_LEN};

/// FILTER option data (RFC 6887 §13.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Prefix length over the 128-bit address field: IPv4 prefixes are 96 + the IPv4 length.
    /// 0 means "remove all filters".
    pub prefix_length: u8,
    /// Remote peer port; 0 means all ports.
    pub remote_peer_port: u16,
    /// Remote peer address (the prefix).
    pub remote_peer_address: IpAddr,
}

impl Filter {
    /// The "remove all filters" form: prefix length 0, port 0, address `::` (erratum 3891
    /// asks for zeros on send).
    pub const REMOVE_ALL: Filter = Filter {
        prefix_length: 0,
        remote_peer_port: 0,
        remote_peer_address: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };

    /// True for the "remove all filters" signal (prefix length 0).
    pub const fn is_remove_all(&self) -> bool {
        self.prefix_length == 0
    }

    /// True when the prefix length is valid for the address's family: IPv4 96..=128,
    /// IPv6 0..=128 (RFC 6887 §13.3 as published; prefix length 0 is always the remove-all
    /// signal, whatever the address).
    pub const fn prefix_length_is_valid(&self) -> bool {
        match self.remote_peer_address {
            _ if self.prefix_length == 0 => true,
            IpAddr::V4(_) => self.prefix_length >= 96 && self.prefix_length <= 128,
            IpAddr::V6(_) => self.prefix_length <= 128,
        }
    }
}

/// DESCRIPTION option data (RFC 7220): UTF-8 text without a terminator. Kept as bytes, since a
/// server must ignore (not reject) text that is not UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Description<'a>(pub &'a [u8]);

impl<'a> Description<'a> {
    /// A description from text.
    pub const fn new(text: &'a str) -> Self {
        Description(text.as_bytes())
    }

    /// The text, or `None` if the bytes are not UTF-8 (RFC 7220 §4: ignore the option then).
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.0).ok()
    }
}

impl fmt::Debug for Description<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(text) => write!(f, "Description({text:?})"),
            None => write!(f, "Description(invalid UTF-8 {:?})", self.0),
        }
    }
}

/// PORT_SET option data (RFC 7753 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSet {
    /// Number of ports; 0xffff asks for "as many as possible". 0 is invalid in a request.
    pub size: u16,
    /// First internal port of the set (in a request, equal to the MAP Internal Port).
    pub first_internal_port: u16,
    /// Parity requested (request) or preserved (response).
    pub parity: bool,
}

/// An option this codec keeps as raw bytes: unknown codes, and the RFC 7652 authentication
/// options it does not implement. A server answers a mandatory one with UNSUPP_OPTION; a
/// client ignores it (RFC 6887 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownOption<'a> {
    /// Option code.
    pub code: OptionCode,
    /// Option data, without padding.
    pub data: &'a [u8],
}

/// One PCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcpOption<'a> {
    /// THIRD_PARTY: the internal address the request is made for (RFC 6887 §13.1).
    ThirdParty(IpAddr),
    /// PREFER_FAILURE (RFC 6887 §13.2).
    PreferFailure,
    /// FILTER (RFC 6887 §13.3).
    Filter(Filter),
    /// THIRD_PARTY_ID: opaque identifier of the third party's network (RFC 7843).
    ThirdPartyId(&'a [u8]),
    /// DESCRIPTION (RFC 7220).
    Description(Description<'a>),
    /// PORT_SET (RFC 7753).
    PortSet(PortSet),
    /// Any other option, kept as bytes.
    Unknown(UnknownOption<'a>),
}

/// Longest THIRD_PARTY_ID and DESCRIPTION (RFC 7843 §3, RFC 7220 §4): what fits in a message.
const MAX_VARIABLE_LEN: u16 = 1016;

impl<'a> PcpOption<'a> {
    /// The option's code.
    pub const fn code(&self) -> OptionCode {
        match self {
            PcpOption::ThirdParty(_) => OptionCode::THIRD_PARTY,
            PcpOption::PreferFailure => OptionCode::PREFER_FAILURE,
            PcpOption::Filter(_) => OptionCode::FILTER,
            PcpOption::ThirdPartyId(_) => OptionCode::THIRD_PARTY_ID,
            PcpOption::Description(_) => OptionCode::DESCRIPTION,
            PcpOption::PortSet(_) => OptionCode::PORT_SET,
            PcpOption::Unknown(u) => u.code,
        }
    }

    /// Length of the data, without header and padding (the Option Length field).
    pub const fn data_len(&self) -> usize {
        match self {
            PcpOption::ThirdParty(_) => 16,
            PcpOption::PreferFailure => 0,
            PcpOption::Filter(_) => 20,
            PcpOption::ThirdPartyId(id) => id.len(),
            PcpOption::Description(d) => d.0.len(),
            PcpOption::PortSet(_) => 5,
            PcpOption::Unknown(u) => u.data.len(),
        }
    }

    /// Bytes the option takes on the wire: header, data and padding.
    pub const fn buffer_len(&self) -> usize {
        OPTION_HEADER_LEN + padded(self.data_len())
    }

    /// Writes the option at the start of `buf`, which must hold [`Self::buffer_len`] bytes.
    /// Padding and the reserved byte are written as zeros (RFC 6887 §7.3).
    fn emit_unchecked(&self, buf: &mut [u8]) {
        let len = self.data_len();
        buf[0] = self.code().0;
        buf[1] = 0;
        // The caller guarantees the whole message fits in 1100 bytes, so `len` fits in u16.
        buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let data = &mut buf[OPTION_HEADER_LEN..OPTION_HEADER_LEN + padded(len)];
        data.fill(0);
        match self {
            PcpOption::ThirdParty(addr) => data.copy_from_slice(&encode_address(*addr)),
            PcpOption::PreferFailure => {}
            PcpOption::Filter(f) => {
                data[1] = f.prefix_length;
                data[2..4].copy_from_slice(&f.remote_peer_port.to_be_bytes());
                data[4..20].copy_from_slice(&encode_address(f.remote_peer_address));
            }
            PcpOption::ThirdPartyId(id) => data[..len].copy_from_slice(id),
            PcpOption::Description(d) => data[..len].copy_from_slice(d.0),
            PcpOption::PortSet(p) => {
                data[0..2].copy_from_slice(&p.size.to_be_bytes());
                data[2..4].copy_from_slice(&p.first_internal_port.to_be_bytes());
                data[4] = u8::from(p.parity);
            }
            PcpOption::Unknown(u) => data[..len].copy_from_slice(u.data),
        }
    }
}

/// Rounds a length up to the next multiple of 4.
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Decodes the data of an option whose length was already checked by [`validate`].
fn decode(code: OptionCode, data: &[u8]) -> Option<PcpOption<'_>> {
    Some(match code {
        OptionCode::THIRD_PARTY => PcpOption::ThirdParty(decode_address(&data.try_into().ok()?)),
        OptionCode::PREFER_FAILURE => PcpOption::PreferFailure,
        OptionCode::FILTER => {
            if data.len() != 20 {
                return None;
            }
            PcpOption::Filter(Filter {
                prefix_length: data[1],
                remote_peer_port: u16::from_be_bytes([data[2], data[3]]),
                remote_peer_address: decode_address(&read_field(data, 4)),
            })
        }
        OptionCode::THIRD_PARTY_ID => PcpOption::ThirdPartyId(data),
        OptionCode::DESCRIPTION => PcpOption::Description(Description(data)),
        OptionCode::PORT_SET => {
            if data.len() != 5 {
                return None;
            }
            PcpOption::PortSet(PortSet {
                size: u16::from_be_bytes([data[0], data[1]]),
                first_internal_port: u16::from_be_bytes([data[2], data[3]]),
                parity: data[4] & 1 == 1,
            })
        }
        code => PcpOption::Unknown(UnknownOption { code, data }),
    })
}

/// What the option rules need to know about the message around the options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub opcode: Opcode,
    /// Request-only rules (lifetime, suggested port, internal port, client address) apply.
    pub request: Option<RequestContext>,
}

/// The request fields some option rules refer to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestContext {
    pub lifetime: u32,
    pub client_ip: IpAddr,
    /// MAP/PEER internal port and suggested external port.
    pub internal_port: u16,
    pub suggested_port: u16,
}

/// Checks an option region. `base` is the region's offset in the datagram, for error offsets.
/// Options are checked in order and the first broken rule is reported (RFC 6887 §7.3 processes
/// options in order).
pub(crate) fn validate(region: &[u8], base: usize, ctx: Context) -> Result<(), Error> {
    // One bit per option code for the single-use check; no allocation.
    let mut seen = [0u64; 4];
    let mut prefer_failure = false;
    let mut port_set = false;
    let mut pos = 0;
    while pos < region.len() {
        let offset = base + pos;
        let Some(header) = region.get(pos..pos + OPTION_HEADER_LEN) else {
            return Err(Error::OptionHeaderTruncated { offset });
        };
        let code = OptionCode(header[0]);
        let length = u16::from_be_bytes([header[2], header[3]]);
        let start = pos + OPTION_HEADER_LEN;
        let end = start + padded(length as usize);
        if end > region.len() {
            return Err(Error::OptionOverrun {
                code,
                offset,
                length,
            });
        }
        let data = &region[start..start + length as usize];
        check_known(code, data, offset, length, ctx)?;

        let (word, bit) = ((code.0 >> 6) as usize, 1u64 << (code.0 & 63));
        if seen[word] & bit != 0 && single_use(code) {
            return Err(Error::OptionRepeated { code, offset });
        }
        seen[word] |= bit;

        match code {
            OptionCode::PREFER_FAILURE => prefer_failure = true,
            OptionCode::PORT_SET => port_set = true,
            _ => {}
        }
        if prefer_failure && port_set && ctx.request.is_some() {
            return Err(Error::PortSetWithPreferFailure { offset });
        }
        pos = end;
    }
    Ok(())
}

/// Options that may appear at most once. FILTER may repeat, and so may options this codec
/// does not implement (the server decides about those).
fn single_use(code: OptionCode) -> bool {
    matches!(
        code,
        OptionCode::THIRD_PARTY
            | OptionCode::PREFER_FAILURE
            | OptionCode::THIRD_PARTY_ID
            | OptionCode::DESCRIPTION
            | OptionCode::PORT_SET
    )
}

/// The rules of one implemented option; unknown options pass.
fn check_known(
    code: OptionCode,
    data: &[u8],
    offset: usize,
    length: u16,
    ctx: Context,
) -> Result<(), Error> {
    let allowed: &[Opcode] = match code {
        OptionCode::THIRD_PARTY | OptionCode::THIRD_PARTY_ID | OptionCode::DESCRIPTION => {
            &[Opcode::Map, Opcode::Peer]
        }
        OptionCode::PREFER_FAILURE | OptionCode::FILTER | OptionCode::PORT_SET => &[Opcode::Map],
        _ => return Ok(()),
    };
    if !allowed.contains(&ctx.opcode) {
        // RFC 6887 §13.2 makes PREFER_FAILURE in PEER a MALFORMED_REQUEST.
        if code == OptionCode::PREFER_FAILURE && ctx.opcode == Opcode::Peer {
            return Err(Error::PreferFailureInPeer { offset });
        }
        return Err(Error::OptionNotAllowed {
            code,
            offset,
            opcode: ctx.opcode,
        });
    }
    let expected = match code {
        OptionCode::THIRD_PARTY => Some(16),
        OptionCode::PREFER_FAILURE => Some(0),
        OptionCode::FILTER => Some(20),
        OptionCode::PORT_SET => Some(5),
        _ => None,
    };
    match expected {
        Some(expected) if length != expected => {
            return Err(Error::OptionLength {
                code,
                offset,
                length,
                expected,
            });
        }
        None if length > MAX_VARIABLE_LEN => {
            return Err(Error::OptionLength {
                code,
                offset,
                length,
                expected: MAX_VARIABLE_LEN,
            });
        }
        _ => {}
    }
    let option = decode(code, data).ok_or(Error::OptionLength {
        code,
        offset,
        length,
        expected: expected.unwrap_or(MAX_VARIABLE_LEN),
    })?;
    if let PcpOption::Filter(filter) = option {
        if !filter.prefix_length_is_valid() {
            return Err(Error::FilterPrefixLength {
                offset,
                prefix_length: filter.prefix_length,
            });
        }
    }
    let Some(req) = ctx.request else {
        return Ok(());
    };
    match option {
        PcpOption::ThirdParty(addr) if addr == req.client_ip => {
            Err(Error::ThirdPartyIsClient { offset })
        }
        PcpOption::PreferFailure | PcpOption::Filter(_) if req.lifetime == 0 => {
            Err(Error::OptionInDelete { code, offset })
        }
        PcpOption::PreferFailure if req.suggested_port == 0 => {
            Err(Error::PreferFailureWithoutPort { offset })
        }
        PcpOption::PortSet(set) if req.lifetime != 0 && set.size == 0 => {
            Err(Error::PortSetSizeZero { offset })
        }
        PcpOption::PortSet(set) if set.first_internal_port != req.internal_port => {
            Err(Error::PortSetInternalPortMismatch {
                offset,
                first: set.first_internal_port,
                internal: req.internal_port,
            })
        }
        _ => Ok(()),
    }
}

/// A sequence of options: validated wire bytes (from parsing) or a slice of values (to emit).
#[derive(Clone, Copy)]
pub enum Options<'a> {
    /// An option region that [`validate`] accepted. Only the parsers build this variant with
    /// content; iterating it decodes each option.
    Wire(WireOptions<'a>),
    /// Options given as values, in order.
    List(&'a [PcpOption<'a>]),
}

/// Validated option bytes; constructed only by this crate's parsers.
#[derive(Clone, Copy)]
pub struct WireOptions<'a>(&'a [u8]);

impl<'a> Options<'a> {
    /// No options.
    pub const EMPTY: Options<'static> = Options::List(&[]);

    /// Wraps a region the caller has validated.
    pub(crate) fn from_validated(region: &'a [u8]) -> Self {
        Options::Wire(WireOptions(region))
    }

    /// Iterates the options in order.
    pub fn iter(&self) -> OptionsIter<'a> {
        match *self {
            Options::Wire(WireOptions(bytes)) => OptionsIter::Wire(bytes),
            Options::List(list) => OptionsIter::List(list.iter()),
        }
    }

    /// True when there are no options.
    pub fn is_empty(&self) -> bool {
        match self {
            Options::Wire(WireOptions(bytes)) => bytes.is_empty(),
            Options::List(list) => list.is_empty(),
        }
    }

    /// Number of options.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The first option with this code.
    pub fn find(&self, code: OptionCode) -> Option<PcpOption<'a>> {
        self.iter().find(|o| o.code() == code)
    }

    /// True if an option with this code is present.
    pub fn contains(&self, code: OptionCode) -> bool {
        self.find(code).is_some()
    }

    /// Bytes the options take on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            Options::Wire(WireOptions(bytes)) => bytes.len(),
            Options::List(list) => list.iter().map(PcpOption::buffer_len).sum(),
        }
    }

    /// Writes the options at the start of `buf` and returns the bytes written.
    pub(crate) fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let need = self.buffer_len();
        if need > MAX_MESSAGE_LEN {
            return Err(EmitError::TooLong { len: need });
        }
        let have = buf.len();
        let out = buf
            .get_mut(..need)
            .ok_or(EmitError::BufferTooSmall { need, have })?;
        // Wire options are re-encoded rather than copied, so reserved bytes and padding go
        // out as zeros even when the peer sent something else (RFC 6887 §7.3).
        let mut pos = 0;
        for option in self.iter() {
            let len = option.buffer_len();
            option.emit_unchecked(&mut out[pos..pos + len]);
            pos += len;
        }
        Ok(need)
    }
}

impl PartialEq for Options<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Options<'_> {}

impl fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for WireOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(Options::Wire(*self).iter()).finish()
    }
}

impl<'a> IntoIterator for Options<'a> {
    type Item = PcpOption<'a>;
    type IntoIter = OptionsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Options`].
#[derive(Debug, Clone)]
pub enum OptionsIter<'a> {
    /// Decoding validated wire bytes.
    Wire(&'a [u8]),
    /// Walking a list.
    List(std::slice::Iter<'a, PcpOption<'a>>),
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = PcpOption<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            OptionsIter::List(iter) => iter.next().copied(),
            OptionsIter::Wire(rest) => {
                // The region was validated, so the `?`s below only guard against misuse.
                let header = rest.get(..OPTION_HEADER_LEN)?;
                let code = OptionCode(header[0]);
                let length = u16::from_be_bytes([header[2], header[3]]) as usize;
                let data = rest.get(OPTION_HEADER_LEN..OPTION_HEADER_LEN + length)?;
                let end = (OPTION_HEADER_LEN + padded(length)).min(rest.len());
                let option = decode(code, data);
                *rest = &rest[end..];
                if option.is_none() {
                    *rest = &[];
                }
                option
            }
        }
    }
}
