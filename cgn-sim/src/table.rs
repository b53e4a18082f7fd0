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
//!
//! The table is split by idea:
//!
//! * this file: the [`Table`] itself (a slab of bindings and one of PEER sessions, with
//!   their hash indexes) and its lookups;
//! * [`entry`]: what the slabs hold ([`Binding`], [`PeerSession`]) and the keys;
//! * `parts`: adding, refreshing and removing a binding's parts, and freeing a binding
//!   that has none left;
//! * `nonce`: the nonce index, a chain through the entries sharing a nonce's hash;
//! * `expiry`: the timing wheel and what expires on it;
//! * `check`: invariants and memory footprint.

use std::net::SocketAddrV4;

use pcp_client::wire::Filter;

use crate::fasthash::{FastMap, KeyedState};
use crate::timer::TimerWheel;

mod check;
pub mod entry;
mod expiry;
mod nonce;
mod parts;
#[cfg(test)]
mod tests;

pub use entry::{
    Binding, EntryRef, ExternalKey, FreedBinding, InternalKey, MapExtra, PeerSession, TableCounts,
    flags,
};

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

    pub(super) fn binding_mut(&mut self, id: u32) -> Option<&mut Binding> {
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
