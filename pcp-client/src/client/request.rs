//! What an application asks for: [`MapRequest`], [`PeerRequest`] and their options, the
//! client-side rules they must follow (RFC 6887 §11.1, §11.2, §12.1, §13; RFC 7753; RFC 7843),
//! and how a request is written on the wire for a send, a renewal or a delete.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::{
    EmitError, Filter, MapData, Nonce, OpcodeData, Options, PcpOption, PeerData, PortSet, Protocol,
    RequestRepr,
};

/// Options a MAP or PEER request can carry. Values are owned so the engine can resend them on
/// every retransmission and renewal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// THIRD_PARTY (RFC 6887 §13.1): the internal address the mapping is for. Use only on a
    /// fully trusted network (MUST NOT otherwise); never your own source address.
    pub third_party: Option<IpAddr>,
    /// THIRD_PARTY_ID (RFC 7843), only together with THIRD_PARTY.
    pub third_party_id: Option<Vec<u8>>,
    /// PREFER_FAILURE (RFC 6887 §13.2), MAP only; needs a suggested port. Meant for an IWF or
    /// a port-allocation system; other clients SHOULD NOT use it.
    pub prefer_failure: bool,
    /// FILTER options (RFC 6887 §13.3), MAP only. They add to the server's filter set.
    pub filters: Vec<Filter>,
    /// Send a "remove all" FILTER (prefix length 0) before `filters`, so they replace the set.
    pub replace_filters: bool,
    /// DESCRIPTION (RFC 7220). An empty text erases the stored one.
    pub description: Option<String>,
    /// PORT_SET (RFC 7753), MAP only; its first internal port is the request's internal port.
    pub port_set: Option<PortSetRequest>,
}

/// The PORT_SET a request asks for (RFC 7753 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSetRequest {
    /// Number of ports (not 0).
    pub size: u16,
    /// Preserve parity.
    pub parity: bool,
}

/// How long one request may go unanswered before the engine gives up on it
/// ([`super::Event::GaveUp`]): a count of transmissions, a duration, or both (the first one
/// reached ends it). Meant for first requests whose caller waits (an IGD control point gets
/// 501 after a while); renewals and re-creates after state loss are never bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GiveUp {
    /// Transmissions (0: no count limit).
    pub transmissions: u32,
    /// Time since the first transmission (zero: no time limit).
    pub after: std::time::Duration,
}

impl GiveUp {
    /// Gives up after `n` transmissions without an answer (when the n-th one times out).
    pub fn after_transmissions(n: u32) -> GiveUp {
        GiveUp {
            transmissions: n,
            after: std::time::Duration::ZERO,
        }
    }

    /// Gives up `d` after the first transmission.
    pub fn after(d: std::time::Duration) -> GiveUp {
        GiveUp {
            transmissions: 0,
            after: d,
        }
    }

    /// Also gives up `d` after the first transmission.
    pub fn or_after(mut self, d: std::time::Duration) -> GiveUp {
        self.after = d;
        self
    }

    pub(crate) fn limit(self) -> super::retransmit::Limit {
        super::retransmit::Limit {
            mrc: self.transmissions,
            mrd: self.after,
        }
    }
}

/// Changes to a live mapping ([`super::Engine::update`]): the fields that are `Some` replace
/// the mapping's. The refresh keeps the nonce and suggests the current external endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingUpdate {
    /// New requested lifetime in seconds (not 0).
    pub lifetime: Option<u32>,
    /// New DESCRIPTION (`Some(None)` stops sending one).
    pub description: Option<Option<String>>,
    /// New FILTER set (MAP only): it replaces the server's set (a "remove all" FILTER goes
    /// first, RFC 6887 §13.3); an empty set lets every remote peer in again.
    pub filters: Option<Vec<Filter>>,
    /// PREFER_FAILURE on or off (MAP only).
    pub prefer_failure: Option<bool>,
    /// Bound on this update's exchange (e.g. the control point waits only so long).
    pub give_up: Option<GiveUp>,
}

/// A MAP request (RFC 6887 §11): let inbound traffic reach `internal_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRequest {
    /// Protocol; [`Protocol::ALL`] (with internal port 0) maps every protocol.
    pub protocol: Protocol,
    /// Internal port; 0 means all ports (and is required for protocols without ports).
    pub internal_port: u16,
    /// Requested lifetime in seconds (not 0: use [`super::Engine::delete`]).
    pub lifetime: u32,
    /// Suggested external address. Its family picks the external family (RFC 6887 §10):
    /// `0.0.0.0` asks for any IPv4 address, `::` for any IPv6 address.
    pub suggested_address: IpAddr,
    /// Suggested external port; 0 means no preference. Do not count on getting it (§11.2).
    pub suggested_port: u16,
    /// The mapping nonce; `None` draws a fresh random one. Supply a stored nonce to renew or
    /// delete a mapping created by an earlier run (RFC 6887 §11.2).
    pub nonce: Option<Nonce>,
    /// Options.
    pub options: RequestOptions,
    /// Bound on the first exchange; `None` follows the engine's MRC/MRD.
    pub give_up: Option<GiveUp>,
}

impl MapRequest {
    /// A MAP for `internal_port` of `protocol` with an IPv4 external address and no suggestion.
    pub fn new(protocol: Protocol, internal_port: u16, lifetime: u32) -> Self {
        MapRequest {
            protocol,
            internal_port,
            lifetime,
            suggested_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            suggested_port: 0,
            nonce: None,
            options: RequestOptions::default(),
            give_up: None,
        }
    }

    /// Bounds the first exchange ([`GiveUp`]).
    pub fn give_up(mut self, give_up: GiveUp) -> Self {
        self.give_up = Some(give_up);
        self
    }

    /// Asks for an IPv6 external address instead (suggested address `::`).
    pub fn ipv6(mut self) -> Self {
        self.suggested_address = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        self
    }

    /// Suggests an external address and port (the family follows the address).
    pub fn suggest(mut self, external: SocketAddr) -> Self {
        self.suggested_address = external.ip();
        self.suggested_port = external.port();
        self
    }

    /// Uses this nonce rather than a random one.
    pub fn nonce(mut self, nonce: Nonce) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Adds PREFER_FAILURE.
    pub fn prefer_failure(mut self) -> Self {
        self.options.prefer_failure = true;
        self
    }

    /// Adds THIRD_PARTY.
    pub fn third_party(mut self, internal: IpAddr) -> Self {
        self.options.third_party = Some(internal);
        self
    }

    /// Adds a FILTER.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.options.filters.push(filter);
        self
    }

    /// Adds DESCRIPTION.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.options.description = Some(text.into());
        self
    }

    /// Adds PORT_SET.
    pub fn port_set(mut self, size: u16, parity: bool) -> Self {
        self.options.port_set = Some(PortSetRequest { size, parity });
        self
    }
}

/// A PEER request (RFC 6887 §12): create or learn the outbound mapping to one remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    /// Protocol (not 0).
    pub protocol: Protocol,
    /// Internal port (not 0).
    pub internal_port: u16,
    /// Requested lifetime in seconds.
    pub lifetime: u32,
    /// The remote peer as this host sees it (port not 0).
    pub remote: SocketAddr,
    /// Suggested external address (family = external family); zeros on a first request.
    pub suggested_address: IpAddr,
    /// Suggested external port; 0 on a first request (a non-zero suggestion fails with
    /// CANNOT_PROVIDE_EXTERNAL rather than being replaced, §12.3).
    pub suggested_port: u16,
    /// The mapping nonce; `None` draws a random one.
    pub nonce: Option<Nonce>,
    /// Options (PREFER_FAILURE, FILTER and PORT_SET are not allowed in PEER).
    pub options: RequestOptions,
}

impl PeerRequest {
    /// A PEER from `internal_port` to `remote`, IPv4 external address, no suggestion.
    pub fn new(protocol: Protocol, internal_port: u16, remote: SocketAddr, lifetime: u32) -> Self {
        PeerRequest {
            protocol,
            internal_port,
            lifetime,
            remote,
            suggested_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            suggested_port: 0,
            nonce: None,
            options: RequestOptions::default(),
        }
    }
}

/// Why the engine refused a request before sending anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No such server.
    #[error("unknown PCP server {0}")]
    UnknownServer(usize),
    /// Deleting a mapping this engine did not create needs its nonce.
    #[error("deleting a mapping needs its nonce")]
    NonceRequired,
    /// No such mapping.
    #[error("unknown mapping {0}")]
    UnknownMapping(u64),
    /// A lifetime of 0 deletes; use `delete`.
    #[error("requested lifetime 0 is a delete; use delete()")]
    ZeroLifetime,
    /// Protocol 0 (all protocols) needs internal port 0 (RFC 6887 §11.1).
    #[error("all-protocols MAP needs internal port 0, got {0}")]
    AllProtocolsWithPort(u16),
    /// A protocol without 16-bit ports needs port 0 (RFC 6887 §11.2).
    #[error("protocol {0} has no ports, so the internal port must be 0")]
    PortOnPortlessProtocol(Protocol),
    /// PEER needs protocol, internal port and remote port non-zero (RFC 6887 §12.1).
    #[error("PEER needs a non-zero {0}")]
    PeerFieldZero(&'static str),
    /// PREFER_FAILURE in PEER (RFC 6887 §12.1, MUST NOT).
    #[error("PEER must not carry PREFER_FAILURE")]
    PreferFailureInPeer,
    /// An option that only MAP allows.
    #[error("{0} is allowed in MAP only")]
    MapOnlyOption(&'static str),
    /// PREFER_FAILURE needs a suggested port (RFC 6887 §13.2).
    #[error("PREFER_FAILURE needs a suggested external port")]
    PreferFailureWithoutPort,
    /// PORT_SET with PREFER_FAILURE (RFC 7753 §4, MUST NOT).
    #[error("PORT_SET must not be combined with PREFER_FAILURE")]
    PortSetWithPreferFailure,
    /// PORT_SET size 0 (RFC 7753 §4).
    #[error("PORT_SET size must not be 0")]
    PortSetSizeZero,
    /// THIRD_PARTY_ID without THIRD_PARTY (RFC 7843, MUST).
    #[error("THIRD_PARTY_ID needs THIRD_PARTY")]
    ThirdPartyIdWithoutThirdParty,
    /// THIRD_PARTY carrying this host's own source address (RFC 6887 §13.1, MUST NOT).
    #[error("THIRD_PARTY must not carry this host's own address {0}")]
    ThirdPartyIsSelf(IpAddr),
    /// A FILTER prefix length that does not fit the address family (RFC 6887 §13.3).
    #[error("FILTER prefix length {0} does not fit the address")]
    FilterPrefix(u8),
    /// The request would not fit in 1100 bytes (RFC 6887 §7).
    #[error("request too long: {0} bytes (max 1100)")]
    TooLong(usize),
    /// The mapping is being deleted; it cannot be updated.
    #[error("the mapping is being deleted")]
    Deleting,
    /// A mapping with the same internal tuple and nonce already exists at this server.
    #[error("a mapping with this internal tuple and nonce already exists")]
    Duplicate,
    /// The nonce is in use at another server (RFC 6887 §11.2: nonces MUST differ between servers).
    #[error("nonce already used with another server")]
    NonceUsedAtAnotherServer,
}

/// A request as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    pub protocol: Protocol,
    pub internal_port: u16,
    pub lifetime: u32,
    pub suggested_address: IpAddr,
    pub suggested_port: u16,
    /// `Some` for PEER.
    pub remote: Option<(IpAddr, u16)>,
    pub options: RequestOptions,
}

impl Spec {
    pub fn from_map(r: MapRequest) -> Result<(Spec, Option<Nonce>), RequestError> {
        if r.protocol == Protocol::ALL && r.internal_port != 0 {
            return Err(RequestError::AllProtocolsWithPort(r.internal_port));
        }
        if r.protocol != Protocol::ALL && !r.protocol.has_ports() && r.internal_port != 0 {
            return Err(RequestError::PortOnPortlessProtocol(r.protocol));
        }
        let o = &r.options;
        if o.prefer_failure && r.suggested_port == 0 {
            return Err(RequestError::PreferFailureWithoutPort);
        }
        if let Some(set) = o.port_set {
            if o.prefer_failure {
                return Err(RequestError::PortSetWithPreferFailure);
            }
            if set.size == 0 {
                return Err(RequestError::PortSetSizeZero);
            }
        }
        let spec = Spec {
            protocol: r.protocol,
            internal_port: r.internal_port,
            lifetime: r.lifetime,
            suggested_address: r.suggested_address,
            suggested_port: r.suggested_port,
            remote: None,
            options: r.options,
        };
        spec.check_common()?;
        Ok((spec, r.nonce))
    }

    pub fn from_peer(r: PeerRequest) -> Result<(Spec, Option<Nonce>), RequestError> {
        if r.protocol == Protocol::ALL {
            return Err(RequestError::PeerFieldZero("protocol"));
        }
        if r.internal_port == 0 {
            return Err(RequestError::PeerFieldZero("internal port"));
        }
        if r.remote.port() == 0 {
            return Err(RequestError::PeerFieldZero("remote peer port"));
        }
        let o = &r.options;
        if o.prefer_failure {
            return Err(RequestError::PreferFailureInPeer);
        }
        if !o.filters.is_empty() || o.replace_filters {
            return Err(RequestError::MapOnlyOption("FILTER"));
        }
        if o.port_set.is_some() {
            return Err(RequestError::MapOnlyOption("PORT_SET"));
        }
        let spec = Spec {
            protocol: r.protocol,
            internal_port: r.internal_port,
            lifetime: r.lifetime,
            suggested_address: r.suggested_address,
            suggested_port: r.suggested_port,
            remote: Some((r.remote.ip(), r.remote.port())),
            options: r.options,
        };
        spec.check_common()?;
        Ok((spec, r.nonce))
    }

    pub(crate) fn check_common(&self) -> Result<(), RequestError> {
        if self.lifetime == 0 {
            return Err(RequestError::ZeroLifetime);
        }
        let o = &self.options;
        if o.third_party_id.is_some() && o.third_party.is_none() {
            return Err(RequestError::ThirdPartyIdWithoutThirdParty);
        }
        if let Some(f) = o.filters.iter().find(|f| !f.prefix_length_is_valid()) {
            return Err(RequestError::FilterPrefix(f.prefix_length));
        }
        let len = self.wire_len();
        if len > crate::wire::MAX_MESSAGE_LEN {
            return Err(RequestError::TooLong(len));
        }
        Ok(())
    }

    /// The longest form this request takes on the wire (a create with every option).
    fn wire_len(&self) -> usize {
        let o = &self.options;
        let body = if self.remote.is_some() {
            crate::wire::PEER_LEN
        } else {
            crate::wire::MAP_LEN
        };
        let var = |n: usize| 4 + n.div_ceil(4) * 4;
        crate::wire::HEADER_LEN
            + body
            + o.third_party.map_or(0, |_| 20)
            + o.third_party_id.as_ref().map_or(0, |id| var(id.len()))
            + if o.prefer_failure { 4 } else { 0 }
            + (o.filters.len() + usize::from(o.replace_filters)) * 24
            + o.description.as_ref().map_or(0, |d| var(d.len()))
            + o.port_set.map_or(0, |_| 12)
    }

    /// True when the request can go over NAT-PMP: an IPv4 UDP or TCP MAP for one port, with
    /// no option NAT-PMP cannot express (RFC 6887 App. A).
    pub fn natpmp_eligible(&self) -> bool {
        let o = &self.options;
        self.remote.is_none()
            && (self.protocol == Protocol::UDP || self.protocol == Protocol::TCP)
            && self.internal_port != 0
            && self.suggested_address.is_ipv4()
            && o.third_party.is_none()
            && !o.prefer_failure
            && o.filters.is_empty()
            && !o.replace_filters
            && o.port_set.is_none()
    }

    /// The all-zeros address of the external family (RFC 6887 §5, erratum 3621).
    pub fn family_zero(address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// The variable parts of one transmission of a mapping's request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub client_ip: IpAddr,
    pub nonce: Nonce,
    /// Suggested external address and port (the last assigned ones on renewal).
    pub suggested: (IpAddr, u16),
    /// A delete: lifetime 0, suggested port 0, the family's all-zeros address, and only the
    /// options a delete may carry (RFC 6887 §15.1, erratum 3621).
    pub delete: bool,
}

/// Writes the PCP request for `spec` into `buf`.
pub(crate) fn emit_pcp(spec: &Spec, send: Attempt, buf: &mut [u8]) -> Result<usize, EmitError> {
    let o = &spec.options;
    let (lifetime, address, port) = if send.delete {
        (0, Spec::family_zero(send.suggested.0), 0)
    } else {
        (spec.lifetime, send.suggested.0, send.suggested.1)
    };
    let map = MapData {
        nonce: send.nonce,
        protocol: spec.protocol,
        internal_port: spec.internal_port,
        external_port: port,
        external_address: address,
    };
    let data = match spec.remote {
        None => OpcodeData::Map(map),
        Some((ip, remote_port)) => OpcodeData::Peer(PeerData {
            map,
            remote_peer_port: remote_port,
            remote_peer_address: ip,
        }),
    };
    let mut options: Vec<PcpOption<'_>> = Vec::new();
    if let Some(tp) = o.third_party {
        options.push(PcpOption::ThirdParty(tp));
    }
    if let Some(id) = &o.third_party_id {
        options.push(PcpOption::ThirdPartyId(id));
    }
    if let Some(set) = o.port_set {
        options.push(PcpOption::PortSet(PortSet {
            size: set.size,
            first_internal_port: spec.internal_port,
            parity: set.parity,
        }));
    }
    if !send.delete {
        if o.prefer_failure {
            options.push(PcpOption::PreferFailure);
        }
        if o.replace_filters {
            options.push(PcpOption::Filter(Filter::REMOVE_ALL));
        }
        options.extend(o.filters.iter().map(|f| PcpOption::Filter(*f)));
        if let Some(d) = &o.description {
            options.push(PcpOption::Description(crate::wire::Description::new(d)));
        }
    }
    RequestRepr {
        lifetime,
        client_ip: send.client_ip,
        data,
        options: Options::List(&options),
    }
    .emit(buf)
}

/// Writes an ANNOUNCE request (RFC 6887 §14.1: requested lifetime MUST be 0).
pub(crate) fn emit_announce(client_ip: IpAddr, buf: &mut [u8]) -> Result<usize, EmitError> {
    RequestRepr {
        lifetime: 0,
        client_ip,
        data: OpcodeData::Announce,
        options: Options::EMPTY,
    }
    .emit(buf)
}
