//! A binding's parts in the mapping table: inserting a binding into the slab and its
//! indexes, giving it a MAP part, an implicit part or PEER sessions, refreshing and removing
//! them, and freeing the binding (slot back to the free list, keys out of the indexes) once
//! no part is left.

use std::net::SocketAddrV4;

use pcp_client::wire::{Nonce, Protocol};

use super::expiry::IMPLICIT_BIT;
use super::nonce::{NIL, PEER_BIT};
use super::{Binding, EntryRef, FreedBinding, MapExtra, PeerSession, Table, flags};

impl Table {
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

    pub(super) fn free_if_unused(&mut self, id: u32, nonce: Nonce) -> Option<FreedBinding> {
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
}
