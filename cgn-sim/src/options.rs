//! Option processing for MAP and PEER requests (RFC 6887 §7.3, §13; RFC 7220; RFC 7753;
//! RFC 7843), after the codec has checked every structural rule.
//!
//! Options are processed in the order received. The result is what the opcode processing
//! needs (subscriber, realm, PREFER_FAILURE, FILTERs, DESCRIPTION, PORT_SET) and the list of
//! *processed* options to echo in a success response (RFC 6887 §7.3: only those).

use std::net::{IpAddr, Ipv4Addr};

use pcp_client::wire::{
    Description, Error, Filter, OptionCode, PcpOption, PortSet, RequestRepr, ResultCode,
};

use crate::config::ThirdPartyRule;
use crate::prefix::Ipv4Prefix;

/// What the options of one request mean to the server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Processed<'a> {
    /// The internal address the request is for: THIRD_PARTY, else the source.
    pub subscriber: Option<Ipv4Addr>,
    /// THIRD_PARTY was present and accepted.
    pub third_party: bool,
    /// Realm of the THIRD_PARTY_ID (index + 1 in the configured list; 0 = none).
    pub realm: u16,
    /// THIRD_PARTY_ID bytes.
    pub third_party_id: Option<&'a [u8]>,
    /// PREFER_FAILURE present.
    pub prefer_failure: bool,
    /// FILTERs after the last "remove all" of this request.
    pub filters: Vec<Filter>,
    /// A "remove all filters" (prefix length 0) was present.
    pub clear_filters: bool,
    /// Any FILTER option was present.
    pub any_filter: bool,
    /// DESCRIPTION to store (already truncated); `Some("")` clears it.
    pub description: Option<&'a str>,
    /// PORT_SET asked for; echoed by the set processing with what was mapped (RFC 7753 §4.2).
    pub port_set: Option<PortSet>,
    /// Processed options, in order, to echo on success.
    pub echo: Vec<PcpOption<'a>>,
}

/// The policy the options are checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptionPolicy<'c> {
    pub third_party_hosts: &'c [ThirdPartyRule],
    pub subscribers: &'c [Ipv4Prefix],
    pub third_party_ids: &'c [Vec<u8>],
    pub third_party_id_max_len: usize,
    pub max_description: usize,
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Processes the options of a parsed MAP or PEER request from `source`.
/// Errors are the result code to answer (the request then changes nothing).
pub(crate) fn process<'a>(
    repr: &RequestRepr<'a>,
    source: Ipv4Addr,
    policy: OptionPolicy<'_>,
) -> Result<Processed<'a>, ResultCode> {
    let mut p = Processed::default();
    for option in repr.options.iter() {
        match option {
            PcpOption::ThirdParty(addr) => {
                // RFC 6887 §13.1: disabled or unauthorized → UNSUPP_OPTION.
                let rules = || {
                    policy
                        .third_party_hosts
                        .iter()
                        .filter(|r| r.hosts.contains(source))
                };
                if rules().next().is_none() {
                    return Err(ResultCode::UnsuppOption);
                }
                let IpAddr::V4(v4) = addr else {
                    // A NAT44 has no IPv6 internal hosts.
                    return Err(ResultCode::UnsuppOption);
                };
                // RFC 6887 §13.1: only for the addresses this host is authorized for.
                let allowed = rules().any(|r| match r.subnet {
                    Some(subnet) => subnet.contains(v4),
                    None => policy.subscribers.iter().any(|n| n.contains(v4)),
                });
                if !allowed {
                    return Err(ResultCode::NotAuthorized);
                }
                p.subscriber = Some(v4);
                p.third_party = true;
                p.echo.push(option);
            }
            PcpOption::ThirdPartyId(id) => {
                // RFC 7843 §5.2.
                if policy.third_party_ids.is_empty() {
                    return Err(ResultCode::UnsuppOption);
                }
                if id.is_empty() || id.len() > policy.third_party_id_max_len {
                    return Err(ResultCode::UnsuppThirdPartyIdLength);
                }
                let Some(i) = policy
                    .third_party_ids
                    .iter()
                    .position(|k| k.as_slice() == id)
                else {
                    return Err(ResultCode::ThirdPartyIdUnknown);
                };
                p.realm = u16::try_from(i + 1).unwrap_or(u16::MAX);
                p.third_party_id = Some(id);
                p.echo.push(option);
            }
            PcpOption::PreferFailure => {
                p.prefer_failure = true;
                p.echo.push(option);
            }
            PcpOption::Filter(f) => {
                p.any_filter = true;
                if f.is_remove_all() {
                    p.clear_filters = true;
                    p.filters.clear();
                } else if f.remote_peer_address.is_ipv4() {
                    if !p.filters.contains(&f) {
                        p.filters.push(f);
                    }
                } else {
                    // An IPv6 remote peer cannot reach an IPv4 mapping of a NAT44.
                    return Err(ResultCode::MalformedOption);
                }
                p.echo.push(option);
            }
            PcpOption::Description(d) => {
                // RFC 7220 §3: invalid UTF-8 is ignored and not echoed.
                if let Some(text) = d.as_str() {
                    let stored = truncate_utf8(text, policy.max_description);
                    p.description = Some(stored);
                    p.echo
                        .push(PcpOption::Description(Description::new(stored)));
                }
            }
            PcpOption::PortSet(set) => {
                p.port_set = Some(set);
            }
            PcpOption::Unknown(u) => {
                // RFC 6887 §7.3: unknown mandatory options → UNSUPP_OPTION; optional ones are
                // ignored and left out of the response.
                if !u.code.is_optional() {
                    return Err(ResultCode::UnsuppOption);
                }
            }
        }
    }
    if p.third_party_id.is_some() && !p.third_party {
        return Err(ResultCode::ThirdPartyMissingOption);
    }
    Ok(p)
}

/// Options on ANNOUNCE: unknown mandatory ones give UNSUPP_OPTION, the rest are ignored
/// (RFC 6887 §14.1.1 accepts options for future use).
pub(crate) fn check_announce(repr: &RequestRepr<'_>) -> Result<(), ResultCode> {
    for option in repr.options.iter() {
        if let PcpOption::Unknown(u) = option {
            if !u.code.is_optional() {
                return Err(ResultCode::UnsuppOption);
            }
        }
    }
    Ok(())
}

/// When the codec refused a request for an option at some offset, options are still
/// processed in order (RFC 6887 §7.3): an unknown mandatory option *before* the broken one
/// is met first and gives UNSUPP_OPTION.
pub(crate) fn unsupported_before_error(bytes: &[u8], error: &Error) -> bool {
    let offset = match *error {
        Error::OptionHeaderTruncated { offset }
        | Error::OptionOverrun { offset, .. }
        | Error::OptionLength { offset, .. }
        | Error::OptionNotAllowed { offset, .. }
        | Error::OptionRepeated { offset, .. }
        | Error::FilterPrefixLength { offset, .. }
        | Error::OptionInDelete { offset, .. }
        | Error::PreferFailureWithoutPort { offset }
        | Error::PreferFailureInPeer { offset }
        | Error::PortSetSizeZero { offset }
        | Error::PortSetWithPreferFailure { offset }
        | Error::PortSetInternalPortMismatch { offset, .. }
        | Error::ThirdPartyIsClient { offset } => offset,
        _ => return false,
    };
    let Some(opcode) = bytes.get(1).map(|b| pcp_client::wire::Opcode::from(*b)) else {
        return false;
    };
    let Some(body) = opcode.body_len() else {
        return false;
    };
    let mut pos = pcp_client::wire::HEADER_LEN + body;
    while pos + 4 <= offset.min(bytes.len()) {
        let code = OptionCode(bytes[pos]);
        let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
        if !code.is_optional() && !implemented(code) {
            return true;
        }
        pos += 4 + ((len + 3) & !3);
    }
    false
}

/// Mandatory options this server implements.
fn implemented(code: OptionCode) -> bool {
    matches!(
        code,
        OptionCode::THIRD_PARTY
            | OptionCode::PREFER_FAILURE
            | OptionCode::FILTER
            | OptionCode::THIRD_PARTY_ID
    )
}
