//! What the mapping table's slabs hold: bindings ([`Binding`]) with their rarely used MAP
//! data ([`MapExtra`]) and [`flags`], PEER sessions ([`PeerSession`]), the keys the indexes
//! use, and what the table reports ([`FreedBinding`], [`TableCounts`], [`EntryRef`]).

use std::net::{Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Filter, Nonce};

/// Key of a binding's internal side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InternalKey {
    /// IANA protocol number.
    pub protocol: u8,
    /// THIRD_PARTY_ID realm (0 = none, RFC 7843).
    pub realm: u16,
    /// Subscriber (internal) address.
    pub addr: Ipv4Addr,
    /// Internal port.
    pub port: u16,
}

/// Key of a binding's external side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalKey {
    /// IANA protocol number.
    pub protocol: u8,
    /// External address.
    pub addr: Ipv4Addr,
    /// External port.
    pub port: u16,
}

/// Binding flags.
pub mod flags {
    /// The slot holds a live binding.
    pub const LIVE: u8 = 1;
    /// The binding has a MAP part.
    pub const MAP: u8 = 2;
    /// The MAP part is static (operator-made, no nonce).
    pub const STATIC: u8 = 4;
    /// The MAP part was created by NAT-PMP (RFC 6886).
    pub const NATPMP: u8 = 8;
    /// The MAP request carried PREFER_FAILURE (kept for Mapping Update, RFC 6887 §14.2).
    pub const PREFER_FAILURE: u8 = 16;
}

/// Rarely used MAP data, boxed so the common binding stays small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapExtra {
    /// FILTERs (RFC 6887 §13.3); empty means endpoint-independent filtering.
    pub filters: Vec<Filter>,
    /// DESCRIPTION as stored (RFC 7220), already truncated.
    pub description: Option<String>,
    /// The THIRD_PARTY address the mapping was made with (RFC 6887 §13.1).
    pub third_party: Option<Ipv4Addr>,
    /// The THIRD_PARTY_ID bytes (RFC 7843).
    pub third_party_id: Option<Vec<u8>>,
    /// The client endpoint of a THIRD_PARTY request (where Mapping Updates go).
    pub requester: Option<SocketAddrV4>,
}

/// One binding (see the module docs). 64 bytes, aligned to a cache line, so reading any field
/// of a binding costs one line (the dataplane's fast path reads one per packet).
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct Binding {
    /// [`flags`].
    pub flags: u8,
    /// IANA protocol number.
    pub protocol: u8,
    /// THIRD_PARTY_ID realm.
    pub realm: u16,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Pool address index.
    pub addr_index: u16,
    /// Pool id.
    pub pool: u16,
    /// Section id.
    pub section: u8,
    /// PEER sessions on this binding.
    pub peers: u16,
    /// MAP nonce (zero for static mappings).
    pub nonce: Nonce,
    /// MAP part deadline, engine seconds (u32::MAX: never).
    pub map_expires: u32,
    /// MAP part granted lifetime (the table's TTL).
    pub map_lifetime: u32,
    /// Implicit part deadline (0: none).
    pub implicit_expires: u32,
    pub(super) nonce_prev: u32,
    pub(super) nonce_next: u32,
    /// FILTERs, DESCRIPTION, THIRD_PARTY.
    pub extra: Option<Box<MapExtra>>,
}

impl Binding {
    /// True if the binding has a MAP part.
    pub fn has_map(&self) -> bool {
        self.flags & flags::MAP != 0
    }
    /// True if the MAP part is static.
    pub fn is_static(&self) -> bool {
        self.flags & flags::STATIC != 0
    }
    /// The filters of the MAP part.
    pub fn filters(&self) -> &[Filter] {
        self.extra.as_deref().map_or(&[], |e| &e.filters)
    }
    /// Internal key.
    pub fn internal_key(&self) -> InternalKey {
        InternalKey {
            protocol: self.protocol,
            realm: self.realm,
            addr: *self.internal.ip(),
            port: self.internal.port(),
        }
    }
    /// External key.
    pub fn external_key(&self) -> ExternalKey {
        ExternalKey {
            protocol: self.protocol,
            addr: *self.external.ip(),
            port: self.external.port(),
        }
    }
}

/// A PEER session (RFC 6887 §12): one remote peer on a binding.
#[derive(Debug, Clone)]
pub struct PeerSession {
    /// The binding (internal ↔ external endpoint).
    pub binding: u32,
    /// Remote peer.
    pub remote: SocketAddrV4,
    /// Nonce of the last PEER request.
    pub nonce: Nonce,
    /// Deadline, engine seconds.
    pub expires: u32,
    /// Granted lifetime.
    pub lifetime: u32,
    /// A PEER request has handled this session (else it is only implicit).
    pub by_peer: bool,
    pub(super) live: bool,
    pub(super) nonce_prev: u32,
    pub(super) nonce_next: u32,
    /// DESCRIPTION as stored.
    pub description: Option<Box<str>>,
}

/// A reference to a MAP part or PEER session, as returned by nonce lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryRef {
    /// The MAP part of a binding.
    Map(u32),
    /// A PEER session.
    Peer(u32),
}

/// What an expiry or removal freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreedBinding {
    /// Internal key of the binding.
    pub internal: InternalKey,
    /// External key of the binding.
    pub external: ExternalKey,
    /// Pool address index.
    pub addr_index: u16,
    /// The MAP nonce it had (zero if none): who may reclaim the port during hold-down.
    pub nonce: Nonce,
}

/// Counts by kind, for metrics and invariants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Live bindings (external ports in use).
    pub bindings: usize,
    /// MAP parts (each shows as MAP IN + MAP OUT).
    pub maps: usize,
    /// PEER sessions.
    pub peers: usize,
    /// Bindings with an implicit part.
    pub implicit: usize,
    /// Static mappings.
    pub statics: usize,
}
