//! The mapping table shared by the PCP server and the dataplane.
//!
//! The unit is the **binding**: one endpoint-independent mapping (RFC 4787 REQ-1) from an
//! internal endpoint (protocol, subscriber address, port) to an external endpoint. Every kind
//! of mapping hangs off a binding:
//!
//! * a **MAP** (explicit inbound) part: nonce, lifetime, FILTERs, DESCRIPTION. It shows as two
//!   lines, `MAP IN` (`ANY -> ext[internal]`) and `MAP OUT` (`internal[ext] -> ANY`);
//! * **PEER** sessions, one per remote peer (5-tuple), each with its nonce and lifetime;
//! * an **implicit** outbound part, refreshed by the dataplane's outbound traffic;
//! * or a **static** flag (operator mapping, no nonce, never expires).
//!
//! A binding lives while any part does; then its external port goes into hold-down. So a
//! MAP created over an existing outbound binding copies its external endpoint (RFC 6887
//! §11.3 item 4), and deleting the MAP leaves the outbound part alone.
//!
//! Lookups are O(1): by internal endpoint, by external endpoint, by PEER 5-tuple, and by nonce
//! (a hash chain through the entries). Expiry runs on a [`TimerWheel`].

use std::net::{Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Filter, Nonce, Protocol};

use crate::fasthash::{FastMap, KeyedState};
use crate::timer::TimerWheel;

mod check;

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
    nonce_prev: u32,
    nonce_next: u32,
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
    live: bool,
    nonce_prev: u32,
    nonce_next: u32,
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

const NIL: u32 = u32::MAX;
const PEER_BIT: u32 = 1 << 31;
const IMPLICIT_BIT: u32 = 1 << 30;

impl EntryRef {
    fn encode(self) -> u32 {
        match self {
            EntryRef::Map(i) => i,
            EntryRef::Peer(i) => i | PEER_BIT,
        }
    }
    fn decode(v: u32) -> EntryRef {
        if v & PEER_BIT != 0 {
            EntryRef::Peer(v & !PEER_BIT)
        } else {
            EntryRef::Map(v)
        }
    }
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

/// The mapping table.
#[derive(Debug, Clone)]
pub struct Table {
    bindings: Vec<Binding>,
    free: Vec<u32>,
    peers: Vec<PeerSession>,
    free_peers: Vec<u32>,
    by_internal: FastMap<InternalKey, u32>,
    by_external: FastMap<ExternalKey, u32>,
    by_peer: FastMap<(u32, SocketAddrV4), u32>,
    by_nonce: FastMap<u64, u32>,
    nonce_state: KeyedState,
    wheel: TimerWheel<u32>,
    counts: TableCounts,
    changes: Changes,
}

/// Bindings freed (or changed outside the dataplane) since the dataplane last looked, so the
/// translator can invalidate the sessions on them without reading each binding per packet.
/// Bounded: past [`Changes::MAX`] ids, or when the table is cleared, the log gives up and
/// counts a loss instead (the translator then invalidates every session).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Ids freed or changed, oldest first.
    pub ids: Vec<u32>,
    /// Times the log was lost (a clear, or more than [`Changes::MAX`] ids undrained).
    pub losses: u64,
}

impl Changes {
    /// Most ids kept undrained.
    pub const MAX: usize = 4096;

    /// Records that binding `id` was freed or changed.
    pub fn push(&mut self, id: u32) {
        if self.ids.len() < Self::MAX {
            self.ids.push(id);
        } else {
            self.lose();
        }
    }

    fn lose(&mut self) {
        self.ids.clear();
        self.losses += 1;
    }
}

fn nonce_hash(state: &KeyedState, nonce: &Nonce) -> u64 {
    use std::hash::BuildHasher;
    state.hash_one(nonce.0)
}

impl Table {
    /// An empty table whose clock starts at engine second `now`.
    pub fn new(now: u32) -> Table {
        Table {
            bindings: Vec::new(),
            free: Vec::new(),
            peers: Vec::new(),
            free_peers: Vec::new(),
            by_internal: FastMap::with_hasher(KeyedState::random()),
            by_external: FastMap::with_hasher(KeyedState::random()),
            by_peer: FastMap::with_hasher(KeyedState::random()),
            by_nonce: FastMap::with_hasher(KeyedState::random()),
            nonce_state: KeyedState::random(),
            wheel: TimerWheel::new(now),
            counts: TableCounts::default(),
            changes: Changes::default(),
        }
    }

    /// The log of freed or changed binding ids (see [`Changes`]).
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// The log of freed or changed binding ids (see [`Changes`]); the dataplane drains it.
    pub fn changes_mut(&mut self) -> &mut Changes {
        &mut self.changes
    }

    /// Reserves room for `n` more bindings.
    pub fn reserve(&mut self, n: usize) {
        self.bindings.reserve(n);
        self.by_internal.reserve(n);
        self.by_external.reserve(n);
        self.by_nonce.reserve(n);
    }

    /// Counts by kind.
    pub fn counts(&self) -> TableCounts {
        self.counts
    }

    /// The binding with this id, if live.
    pub fn binding(&self, id: u32) -> Option<&Binding> {
        self.bindings
            .get(id as usize)
            .filter(|b| b.flags & flags::LIVE != 0)
    }

    /// The flags of slot `id` (0 past the end): a cheap read to start fetching the binding.
    #[inline(always)]
    pub fn binding_flags(&self, id: u32) -> u8 {
        self.bindings.get(id as usize).map_or(0, |b| b.flags)
    }

    fn binding_mut(&mut self, id: u32) -> Option<&mut Binding> {
        self.bindings
            .get_mut(id as usize)
            .filter(|b| b.flags & flags::LIVE != 0)
    }

    /// The PEER session with this id, if live.
    pub fn peer(&self, id: u32) -> Option<&PeerSession> {
        self.peers.get(id as usize).filter(|p| p.live)
    }

    /// Outbound lookup (dataplane, PCP): the binding of an internal endpoint.
    pub fn lookup_internal(&self, key: &InternalKey) -> Option<u32> {
        self.by_internal.get(key).copied()
    }

    /// Inbound lookup (dataplane): the binding owning an external endpoint.
    pub fn lookup_external(&self, key: &ExternalKey) -> Option<u32> {
        self.by_external.get(key).copied()
    }

    /// The PEER session of a binding with a remote peer (5-tuple lookup).
    pub fn lookup_peer(&self, binding: u32, remote: SocketAddrV4) -> Option<u32> {
        self.by_peer.get(&(binding, remote)).copied()
    }

    /// Inbound admission (dataplane): may a packet from `remote` to `external` pass, and to
    /// which internal endpoint? A MAP part admits everyone unless it has FILTERs (then only
    /// matching peers, RFC 6887 §13.3); PEER sessions and implicit parts admit their own
    /// remote peer only (address-and-port-dependent filtering for non-MAP traffic).
    pub fn admit_inbound(
        &self,
        external: &ExternalKey,
        remote: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        let id = self.lookup_external(external)?;
        let b = self.binding(id)?;
        if b.has_map() {
            let filters = b.filters();
            if filters.is_empty() || filters.iter().any(|f| filter_matches(f, remote)) {
                return Some(b.internal);
            }
        }
        self.lookup_peer(id, remote).map(|_| b.internal)
    }

    /// Every MAP part and PEER session carrying `nonce`.
    pub fn lookup_nonce(&self, nonce: &Nonce) -> Vec<EntryRef> {
        let mut out = Vec::new();
        let Some(&head) = self.by_nonce.get(&nonce_hash(&self.nonce_state, nonce)) else {
            return out;
        };
        let mut cur = head;
        while cur != NIL {
            let r = EntryRef::decode(cur);
            let (n, next) = match r {
                EntryRef::Map(i) => match self.bindings.get(i as usize) {
                    Some(b) => (b.nonce, b.nonce_next),
                    None => break,
                },
                EntryRef::Peer(i) => match self.peers.get(i as usize) {
                    Some(p) => (p.nonce, p.nonce_next),
                    None => break,
                },
            };
            if n == *nonce {
                out.push(r);
            }
            cur = next;
        }
        out
    }

    fn links(&mut self, r: u32) -> Option<(&mut u32, &mut u32)> {
        match EntryRef::decode(r) {
            EntryRef::Map(i) => self
                .bindings
                .get_mut(i as usize)
                .map(|b| (&mut b.nonce_prev, &mut b.nonce_next)),
            EntryRef::Peer(i) => self
                .peers
                .get_mut(i as usize)
                .map(|p| (&mut p.nonce_prev, &mut p.nonce_next)),
        }
    }

    fn nonce_link(&mut self, r: EntryRef, nonce: &Nonce) {
        let h = nonce_hash(&self.nonce_state, nonce);
        let me = r.encode();
        let old = self.by_nonce.insert(h, me).unwrap_or(NIL);
        if let Some((prev, next)) = self.links(me) {
            *prev = NIL;
            *next = old;
        }
        if old != NIL {
            if let Some((prev, _)) = self.links(old) {
                *prev = me;
            }
        }
    }

    fn nonce_unlink(&mut self, r: EntryRef, nonce: &Nonce) {
        let me = r.encode();
        let Some((prev, next)) = self.links(me).map(|(p, n)| (*p, *n)) else {
            return;
        };
        if prev != NIL {
            if let Some((_, n)) = self.links(prev) {
                *n = next;
            }
        } else {
            let h = nonce_hash(&self.nonce_state, nonce);
            if next == NIL {
                self.by_nonce.remove(&h);
            } else {
                self.by_nonce.insert(h, next);
            }
        }
        if next != NIL {
            if let Some((p, _)) = self.links(next) {
                *p = prev;
            }
        }
        if let Some((p, n)) = self.links(me) {
            *p = NIL;
            *n = NIL;
        }
    }

    /// Inserts a new binding (no parts yet) and returns its id. The caller has checked that
    /// neither key is taken.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_binding(
        &mut self,
        protocol: Protocol,
        realm: u16,
        internal: SocketAddrV4,
        external: SocketAddrV4,
        addr_index: u16,
        pool: u16,
        section: u8,
    ) -> u32 {
        let b = Binding {
            flags: flags::LIVE,
            protocol: protocol.0,
            realm,
            internal,
            external,
            addr_index,
            pool,
            section,
            peers: 0,
            nonce: Nonce::default(),
            map_expires: 0,
            map_lifetime: 0,
            implicit_expires: 0,
            nonce_prev: NIL,
            nonce_next: NIL,
            extra: None,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.bindings[id as usize] = b;
                id
            }
            None => {
                self.bindings.push(b);
                (self.bindings.len() - 1) as u32
            }
        };
        if let Some(b) = self.binding(id) {
            let (ik, ek) = (b.internal_key(), b.external_key());
            self.by_internal.insert(ik, id);
            self.by_external.insert(ek, id);
        }
        self.counts.bindings += 1;
        id
    }

    /// Gives binding `id` a MAP part (or replaces its data): nonce, deadline, lifetime, flags
    /// ([`flags::STATIC`], [`flags::NATPMP`], [`flags::PREFER_FAILURE`]) and extra data.
    pub fn set_map(
        &mut self,
        id: u32,
        nonce: Nonce,
        expires: u32,
        lifetime: u32,
        extra_flags: u8,
        extra: Option<Box<MapExtra>>,
    ) {
        let Some(b) = self.binding_mut(id) else {
            return;
        };
        let had = b.has_map();
        let old_nonce = b.nonce;
        let was_static = b.is_static();
        if had {
            self.nonce_unlink(EntryRef::Map(id), &old_nonce);
        }
        let Some(b) = self.binding_mut(id) else {
            return;
        };
        b.flags = (b.flags & !(flags::STATIC | flags::NATPMP | flags::PREFER_FAILURE))
            | flags::MAP
            | extra_flags;
        b.nonce = nonce;
        b.map_expires = expires;
        b.map_lifetime = lifetime;
        b.extra = extra;
        let is_static = b.is_static();
        if !had {
            self.counts.maps += 1;
        }
        match (was_static && had, is_static) {
            (false, true) => self.counts.statics += 1,
            (true, false) => self.counts.statics -= 1,
            _ => {}
        }
        self.nonce_link(EntryRef::Map(id), &nonce);
        if expires != u32::MAX {
            self.wheel.insert(expires, id);
        }
    }

    /// Extends or shortens the MAP part of binding `id`.
    pub fn refresh_map(&mut self, id: u32, expires: u32, lifetime: u32) {
        if let Some(b) = self.binding_mut(id) {
            b.map_expires = expires;
            b.map_lifetime = lifetime;
            if expires != u32::MAX {
                self.wheel.insert(expires, id);
            }
        }
    }

    /// Replaces the extra data of the MAP part.
    pub fn set_map_extra(&mut self, id: u32, extra: Option<Box<MapExtra>>) {
        if let Some(b) = self.binding_mut(id) {
            b.extra = extra;
        }
    }

    /// Removes the MAP part of `id`; frees the binding if nothing else uses it.
    pub fn remove_map(&mut self, id: u32) -> Option<FreedBinding> {
        let b = self.binding_mut(id)?;
        if !b.has_map() {
            return None;
        }
        let nonce = b.nonce;
        let was_static = b.is_static();
        b.flags &= !(flags::MAP | flags::STATIC | flags::NATPMP | flags::PREFER_FAILURE);
        b.extra = None;
        self.counts.maps -= 1;
        if was_static {
            self.counts.statics -= 1;
        }
        self.nonce_unlink(EntryRef::Map(id), &nonce);
        self.free_if_unused(id, nonce)
    }

    /// Timer entries pending (at most about one per expiring part, however often parts are
    /// refreshed).
    pub fn timer_entries(&self) -> usize {
        self.wheel.len()
    }

    /// Marks outbound traffic on binding `id` (dataplane): the implicit part lives until
    /// `expires` (a later deadline extends it; an earlier one shortens it).
    pub fn touch_implicit(&mut self, id: u32, expires: u32) {
        let Some(b) = self.binding_mut(id) else {
            return;
        };
        let expires = expires.max(1);
        let old = b.implicit_expires;
        if old != 0 && expires >= old {
            // Extended: the pending wheel entry fires at the old deadline and is moved on
            // then (see `expire`), so traffic does not add one wheel entry per packet.
            b.implicit_expires = expires;
            return;
        }
        b.implicit_expires = expires;
        if old == 0 {
            self.counts.implicit += 1;
        }
        self.wheel.insert(expires, id | IMPLICIT_BIT);
    }

    /// Adds a PEER session and returns its id.
    pub fn insert_peer(
        &mut self,
        binding: u32,
        remote: SocketAddrV4,
        nonce: Nonce,
        expires: u32,
        lifetime: u32,
        description: Option<Box<str>>,
    ) -> Option<u32> {
        let b = self.binding_mut(binding)?;
        b.peers = b.peers.saturating_add(1);
        let s = PeerSession {
            binding,
            remote,
            nonce,
            expires,
            lifetime,
            by_peer: true,
            live: true,
            nonce_prev: NIL,
            nonce_next: NIL,
            description,
        };
        let id = match self.free_peers.pop() {
            Some(id) => {
                self.peers[id as usize] = s;
                id
            }
            None => {
                self.peers.push(s);
                (self.peers.len() - 1) as u32
            }
        };
        self.by_peer.insert((binding, remote), id);
        self.nonce_link(EntryRef::Peer(id), &nonce);
        self.wheel.insert(expires, id | PEER_BIT);
        self.counts.peers += 1;
        Some(id)
    }

    /// Updates a PEER session's nonce and lifetime.
    pub fn refresh_peer(
        &mut self,
        id: u32,
        nonce: Nonce,
        expires: u32,
        lifetime: u32,
        description: Option<Option<Box<str>>>,
    ) {
        let Some(old) = self.peer(id).map(|p| p.nonce) else {
            return;
        };
        if old != nonce {
            self.nonce_unlink(EntryRef::Peer(id), &old);
        }
        if let Some(p) = self.peers.get_mut(id as usize) {
            p.nonce = nonce;
            p.expires = expires;
            p.lifetime = lifetime;
            p.by_peer = true;
            if let Some(d) = description {
                p.description = d;
            }
        }
        if old != nonce {
            self.nonce_link(EntryRef::Peer(id), &nonce);
        }
        self.wheel.insert(expires, id | PEER_BIT);
    }

    /// Removes a PEER session; frees its binding if nothing else uses it.
    pub fn remove_peer(&mut self, id: u32) -> Option<FreedBinding> {
        let p = self.peers.get_mut(id as usize).filter(|p| p.live)?;
        p.live = false;
        p.description = None;
        let (binding, remote, nonce) = (p.binding, p.remote, p.nonce);
        self.nonce_unlink(EntryRef::Peer(id), &nonce);
        self.by_peer.remove(&(binding, remote));
        self.free_peers.push(id);
        self.counts.peers -= 1;
        let b = self.binding_mut(binding)?;
        b.peers = b.peers.saturating_sub(1);
        self.free_if_unused(binding, nonce)
    }

    fn free_if_unused(&mut self, id: u32, nonce: Nonce) -> Option<FreedBinding> {
        let b = self.binding(id)?;
        if b.has_map() || b.peers > 0 || b.implicit_expires != 0 {
            return None;
        }
        let freed = FreedBinding {
            internal: b.internal_key(),
            external: b.external_key(),
            addr_index: b.addr_index,
            nonce: if b.nonce == Nonce::default() {
                nonce
            } else {
                b.nonce
            },
        };
        self.by_internal.remove(&freed.internal);
        self.by_external.remove(&freed.external);
        if let Some(b) = self.bindings.get_mut(id as usize) {
            b.flags = 0;
            b.extra = None;
        }
        self.free.push(id);
        self.changes.push(id);
        self.counts.bindings -= 1;
        Some(freed)
    }

    /// Expires everything due at or before engine second `now`; `freed` gets each binding
    /// that lost its last part.
    pub fn expire(&mut self, now: u32, mut freed: impl FnMut(FreedBinding)) {
        let mut due = Vec::new();
        self.wheel
            .advance(now, |deadline, item| due.push((deadline, item)));
        for (deadline, item) in due {
            if item & PEER_BIT != 0 {
                let id = item & !PEER_BIT;
                if self.peer(id).is_some_and(|p| p.expires == deadline) {
                    if let Some(f) = self.remove_peer(id) {
                        freed(f);
                    }
                }
            } else if item & IMPLICIT_BIT != 0 {
                let id = item & !IMPLICIT_BIT;
                let Some(b) = self.binding_mut(id) else {
                    continue;
                };
                if b.implicit_expires > deadline {
                    // Refreshed since this entry was scheduled: move it to the new deadline.
                    let at = b.implicit_expires;
                    self.wheel.insert(at, item);
                } else if b.implicit_expires == deadline {
                    b.implicit_expires = 0;
                    let nonce = b.nonce;
                    self.counts.implicit -= 1;
                    self.changes.push(id);
                    if let Some(f) = self.free_if_unused(id, nonce) {
                        freed(f);
                    }
                }
            } else if self
                .binding(item)
                .is_some_and(|b| b.has_map() && !b.is_static() && b.map_expires == deadline)
            {
                if let Some(f) = self.remove_map(item) {
                    freed(f);
                }
            }
        }
    }

    /// Drops everything (state loss) and restarts the clock at `now`.
    pub fn clear(&mut self, now: u32) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.lose();
        *self = Table::new(now);
        self.changes = changes;
    }

    /// Live bindings with their ids.
    pub fn bindings(&self) -> impl Iterator<Item = (u32, &Binding)> {
        self.bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.flags & flags::LIVE != 0)
            .map(|(i, b)| (i as u32, b))
    }

    /// Live PEER sessions with their ids.
    pub fn peer_sessions(&self) -> impl Iterator<Item = (u32, &PeerSession)> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.live)
            .map(|(i, p)| (i as u32, p))
    }
}

/// True if `remote` matches a FILTER (RFC 6887 §13.3): prefix over the 128-bit mapped
/// address, and port 0 = all ports.
pub fn filter_matches(f: &Filter, remote: SocketAddrV4) -> bool {
    if f.remote_peer_port != 0 && f.remote_peer_port != remote.port() {
        return false;
    }
    let std::net::IpAddr::V4(net) = f.remote_peer_address else {
        return false;
    };
    let len = u32::from(f.prefix_length.saturating_sub(96)).min(32);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(*remote.ip()) & mask == u32::from(net) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, last), port)
    }

    fn ext(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), port)
    }

    // Lookups by internal tuple, external tuple and nonce stay right through inserts, shared
    // nonces (one nonce per process, as Bitcoin Core does) and removals.
    #[test]
    fn lookups_by_internal_external_and_nonce_follow_changes() {
        let mut t = Table::new(1);
        let n = Nonce([1; 12]);
        let ids: Vec<u32> = (0..5u16)
            .map(|i| {
                let id =
                    t.insert_binding(Protocol::UDP, 0, ep(2, 1000 + i), ext(40_000 + i), 0, 1, 0);
                t.set_map(id, n, 100, 99, 0, None);
                id
            })
            .collect();
        assert_eq!(t.lookup_nonce(&n).len(), 5);
        let key = InternalKey {
            protocol: 17,
            realm: 0,
            addr: Ipv4Addr::new(100, 64, 0, 2),
            port: 1002,
        };
        assert_eq!(t.lookup_internal(&key), Some(ids[2]));
        let ek = ExternalKey {
            protocol: 17,
            addr: *ext(0).ip(),
            port: 40_002,
        };
        assert_eq!(t.lookup_external(&ek), Some(ids[2]));
        // Remove from the middle, the head and the tail of the nonce chain.
        for i in [2usize, 4, 0] {
            assert!(t.remove_map(ids[i]).is_some());
            t.check_invariants().expect("invariants");
        }
        let left: Vec<EntryRef> = t.lookup_nonce(&n);
        assert_eq!(left.len(), 2);
        assert!(left.contains(&EntryRef::Map(ids[1])) && left.contains(&EntryRef::Map(ids[3])));
        assert_eq!(t.lookup_internal(&key), None);
        // A PEER session shares the chain of its nonce.
        let p = t
            .insert_peer(ids[1], ep(50, 80), n, 200, 199, None)
            .expect("peer");
        assert_eq!(t.lookup_nonce(&n).len(), 3);
        assert_eq!(t.lookup_peer(ids[1], ep(50, 80)), Some(p));
        t.check_invariants().expect("invariants");
    }

    // Expiry: a refreshed deadline is not fired early (lazy deletion), the binding lives while
    // a PEER session does, then its external port is reported freed.
    #[test]
    fn expiry_respects_refreshes_and_remaining_parts() {
        let mut t = Table::new(1);
        let id = t.insert_binding(Protocol::TCP, 0, ep(2, 80), ext(8080), 0, 1, 0);
        t.set_map(id, Nonce([2; 12]), 10, 9, 0, None);
        t.insert_peer(id, ep(50, 1), Nonce([3; 12]), 30, 29, None);
        t.refresh_map(id, 20, 19);
        let mut freed = Vec::new();
        t.expire(15, |f| freed.push(f));
        assert!(t.binding(id).is_some_and(Binding::has_map));
        t.expire(25, |f| freed.push(f));
        assert!(t.binding(id).is_some_and(|b| !b.has_map()));
        assert!(freed.is_empty(), "the PEER session keeps the binding");
        t.expire(30, |f| freed.push(f));
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].external.port, 8080);
        assert_eq!(t.counts(), TableCounts::default());
        t.check_invariants().expect("invariants");
    }
}
