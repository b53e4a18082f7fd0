//! Per-connection state of the translator: one session per (protocol, internal endpoint,
//! remote endpoint), on the binding of the mapping table it was translated with, carrying the
//! TCP state of RFC 7857 §2 and the idle deadline that state implies.
//!
//! This file is the session table itself ([`Sessions`]): the slab, its two flow indexes and
//! the timer wheel, kept consistent with each other. Its parts:
//!
//! * [`state`]: the TCP state machine and the idle timers ([`TcpState`], [`Timeouts`]);
//! * [`slot`]: how one session is stored (32 bytes) and the flags in its binding word that
//!   tell the fast path whether it may trust the session's binding without reading it;
//! * [`links`]: which sessions run on each binding, so that when the mapping table frees or
//!   changes a binding exactly its sessions go stale ([`Sessions::invalidate`]), and which
//!   session last wrote each binding's implicit deadline.
//!
//! Sessions expire on the crate's timing wheel with one wheel entry per session at any time:
//! refreshing only moves the session's deadline, and when its wheel entry fires early the entry
//! is rescheduled at the current deadline. So the wheel holds at most one entry per session
//! however many packets flow (a per-packet insert would grow it by the packet rate).

use std::net::SocketAddrV4;

use super::flow_index::{FlowHash, FlowIndex, FlowKey};
use crate::timer::TimerWheel;

mod links;
mod slot;
mod state;

use links::{Links, NIL};
use slot::{FREE_SLOT, Slot, flags};
pub use state::{Dir, TcpState, Timeouts};

/// Session key: protocol, internal endpoint, remote endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// IP protocol.
    pub protocol: u8,
    /// Internal endpoint (subscriber side, untranslated).
    pub internal: SocketAddrV4,
    /// Remote endpoint.
    pub remote: SocketAddrV4,
}

/// One session, as the table reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// External endpoint of the binding the session runs on.
    pub external: SocketAddrV4,
    /// The mapping table's id of that binding.
    pub binding: u32,
    /// TCP state.
    pub tcp: TcpState,
    /// Deadline, engine seconds.
    pub expires: u32,
}

impl SessionKey {
    /// The outbound index key.
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            addr: (*self.internal.ip()).into(),
            port: self.internal.port(),
            remote_addr: (*self.remote.ip()).into(),
            remote_port: self.remote.port(),
        }
    }
}

/// The session table: sessions in a slab of [`Slot`]s, found by two [`FlowIndex`]es, one
/// keyed by (protocol, internal endpoint, remote endpoint) for outbound packets and one by
/// (protocol, external endpoint, remote endpoint) for inbound ones, so either direction finds
/// its session with one index probe and one slot read, both of which a batch can fetch ahead.
/// Each binding's sessions are also on a list ([`links`]), so that a freed binding's sessions
/// can be marked stale and the fast path need not read the binding to trust a session.
#[derive(Debug, Clone)]
pub struct Sessions {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_out: FlowIndex,
    by_in: FlowIndex,
    wheel: TimerWheel<u32>,
    links: Links,
    max: usize,
}

/// What [`Sessions::touch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The session exists (or was created); its state and deadline.
    Live(Session),
    /// No session and no room for one (the table is at its limit).
    Full,
}

/// Which packets of a session the fast path may take, judged from its binding when the full
/// path puts the session on it (a binding's endpoints and realm do not change while it lives;
/// when it is freed or changed the session goes stale, [`Sessions::invalidate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPath {
    /// Both directions: the binding maps the session's internal endpoint to its external one
    /// for its protocol, without a THIRD_PARTY_ID realm.
    Both,
    /// Inbound only (the binding has a realm: outbound traffic looks up realm 0).
    InboundOnly,
    /// Neither (a DMZ host's all-protocol binding).
    None,
}

/// The binding a session is put on by [`Sessions::touch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The mapping table's id of the binding.
    pub id: u32,
    /// What the fast path may take.
    pub fast: FastPath,
    /// The caller has just set the binding's implicit deadline to the deadline this touch
    /// gives the session (an outbound packet, `Server::outbound_binding`).
    pub wrote_implicit: bool,
}

impl Bound {
    /// The slot's binding word for this binding (see [`flags`]).
    fn word(&self) -> u32 {
        let id = self.id & flags::ID;
        match self.fast {
            _ if id != self.id => flags::STALE,
            FastPath::Both => id,
            FastPath::InboundOnly => id | flags::NO_OUT,
            FastPath::None => id | flags::STALE,
        }
    }
}

/// A session the fast path may take a packet of, from [`Sessions::fast_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastSlot {
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// The binding's id.
    pub binding: u32,
}

impl Sessions {
    /// An empty table holding at most `max` sessions, its clock at engine second `now`.
    pub fn new(now: u32, max: usize) -> Sessions {
        Sessions {
            slots: Vec::new(),
            free: Vec::new(),
            by_out: FlowIndex::new(),
            by_in: FlowIndex::new(),
            wheel: TimerWheel::new(now),
            links: Links::default(),
            max,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.by_out.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_out.is_empty()
    }

    /// The session, if live.
    pub fn get(&self, key: &SessionKey) -> Option<Session> {
        let k = key.flow_key();
        self.find(self.by_out.hash(&k), &k, false)
            .map(|id| self.slots[id as usize].session())
    }

    /// The outbound (`inbound == false`) or inbound index.
    #[inline(always)]
    fn index(&self, inbound: bool) -> &FlowIndex {
        if inbound { &self.by_in } else { &self.by_out }
    }

    /// The hash of `key` in the outbound or inbound index (for the inbound one, its endpoint
    /// is the external one).
    #[inline(always)]
    pub fn hash(&self, key: &FlowKey, inbound: bool) -> FlowHash {
        self.index(inbound).hash(key)
    }

    /// Starts fetching the inbound or outbound index line of `h` (see [`FlowIndex::touch`]).
    #[inline(always)]
    pub fn touch_index(&self, h: FlowHash, inbound: bool) -> u32 {
        self.index(inbound).touch(h)
    }

    /// The slot the outbound or inbound index line suggests for `h` (a guess, to fetch the
    /// slot ahead; `u32::MAX` if none).
    #[inline(always)]
    pub fn candidate(&self, h: FlowHash, inbound: bool) -> u32 {
        self.index(inbound).first_candidate(h).unwrap_or(u32::MAX)
    }

    /// Reads a word of slot `id` (0 if there is none), so its line is on its way to the cache
    /// when the fast path needs it.
    #[inline(always)]
    pub fn fetch_slot(&self, id: u32) -> u32 {
        self.slots.get(id as usize).map_or(0, |s| s.binding)
    }

    /// The slot of the session with key `key` (hash `h`) in the outbound or inbound index,
    /// trying `candidate` (from [`Sessions::candidate`]) first.
    #[inline(always)]
    pub fn resolve(
        &self,
        candidate: u32,
        h: FlowHash,
        key: &FlowKey,
        inbound: bool,
    ) -> Option<u32> {
        if self.slot_has(candidate, key, inbound) {
            return Some(candidate);
        }
        self.find(h, key, inbound)
    }

    /// True if slot `id` holds a live session whose outbound (or inbound) key is `key`.
    #[inline(always)]
    fn slot_has(&self, id: u32, key: &FlowKey, inbound: bool) -> bool {
        self.slots.get(id as usize).is_some_and(|s| {
            s.is_live() && (if inbound { s.in_key() } else { s.out_key() }) == *key
        })
    }

    /// The slot of the session with outbound (or inbound) key `key`, hash `h`.
    #[inline]
    pub fn find(&self, h: FlowHash, key: &FlowKey, inbound: bool) -> Option<u32> {
        self.index(inbound)
            .find(h, |id| self.slot_has(id, key, inbound))
    }

    /// The live session in slot `id`, if the fast path may take its packet in this
    /// direction: its binding has not been freed or changed since the session was put on it
    /// (and, outbound, has no realm). No read of the binding: the slot's flags say it.
    #[inline(always)]
    pub fn fast_slot(&self, id: u32, inbound: bool) -> Option<FastSlot> {
        let s = self.slots.get(id as usize).filter(|s| s.is_live())?;
        let refuse = if inbound {
            flags::STALE
        } else {
            flags::STALE | flags::NO_OUT
        };
        if s.binding & refuse != 0 {
            return None;
        }
        Some(FastSlot {
            internal: SocketAddrV4::new(s.internal_addr.into(), s.internal_port),
            external: s.external(),
            binding: s.binding_id(),
        })
    }

    /// Records a packet of the session `key` on binding `bound` with `external` endpoint:
    /// creates the session if `create` (and there is room), advances the TCP state, and
    /// moves the deadline to `now + idle(state)`.
    #[allow(clippy::too_many_arguments)]
    pub fn touch(
        &mut self,
        now: u32,
        key: SessionKey,
        external: SocketAddrV4,
        bound: Bound,
        dir: Dir,
        tcp_flags: u8,
        timeouts: &Timeouts,
        create: bool,
    ) -> Option<Touch> {
        let k = key.flow_key();
        let id = match self.find(self.by_out.hash(&k), &k, false) {
            Some(id) => {
                self.rebind(id, external, bound);
                id
            }
            None if !create || self.len() >= self.max => {
                if bound.wrote_implicit {
                    // Written for no session: whoever held the deadline holds it no more.
                    self.uncover(bound.id);
                }
                return if create { Some(Touch::Full) } else { None };
            }
            None => self.insert(&k, external, bound),
        };
        let (session, _) = self.touch_slot(id, now, dir, tcp_flags, timeouts);
        if bound.wrote_implicit {
            self.cover(id);
        }
        Some(Touch::Live(session))
    }

    /// Records a packet of the live session in slot `id` (found with [`Sessions::find`]
    /// or [`Sessions::resolve`]): TCP state and deadline, as [`Sessions::touch`]. Also
    /// returns whether the binding's implicit deadline is still the session's
    /// ([`flags::COVERED`]): if so, an outbound packet need not write it.
    #[inline(always)]
    pub fn touch_slot(
        &mut self,
        id: u32,
        now: u32,
        dir: Dir,
        tcp_flags: u8,
        timeouts: &Timeouts,
    ) -> (Session, bool) {
        let Some(s) = self.slots.get_mut(id as usize) else {
            return (FREE_SLOT.session(), false);
        };
        if s.protocol == super::ipv4::proto::TCP {
            s.tcp = s.tcp.next(dir, tcp_flags);
        }
        let expires = now.saturating_add(timeouts.idle(s.protocol, s.tcp));
        if expires != s.expires {
            // The binding's deadline, if this session set it, is its old one.
            s.binding &= !flags::COVERED;
        }
        s.expires = expires;
        if s.scheduled == 0 || s.scheduled > s.expires {
            // First entry, or the deadline moved earlier (e.g. RST): schedule it.
            s.scheduled = s.expires;
            let at = s.expires;
            self.wheel.insert(at, id);
        }
        (s.session(), s.binding & flags::COVERED != 0)
    }

    /// The binding of live session `id` has just had its implicit deadline set to the
    /// session's deadline: the session now holds it ([`flags::COVERED`]), and the session
    /// that held it before does not.
    pub fn cover(&mut self, id: u32) {
        let Some(s) = self.slots.get(id as usize).filter(|s| s.is_live()) else {
            return;
        };
        let binding = s.binding_id();
        if !s.is_linked() {
            self.uncover(binding);
            return;
        }
        let before = self.links.set_writer(binding, id);
        if before != id {
            self.clear_cover(before);
        }
        self.slots[id as usize].binding |= flags::COVERED;
    }

    /// Binding `binding`'s implicit deadline was set by something other than a session of it:
    /// no session holds it any more.
    pub fn uncover(&mut self, binding: u32) {
        let before = self.links.set_writer(binding, NIL);
        self.clear_cover(before);
    }

    fn clear_cover(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.binding &= !flags::COVERED;
        }
    }

    /// Binding `binding` was freed or changed: its sessions go stale (their packets take the
    /// full path until it puts them on a binding again).
    pub fn invalidate(&mut self, binding: u32) {
        let slots = &mut self.slots;
        self.links.take(binding, |slot| {
            if let Some(s) = slots.get_mut(slot as usize) {
                s.binding = (s.binding & flags::ID) | flags::STALE;
            }
        });
    }

    /// Every binding may have changed (the mapping table was cleared, or its change log
    /// overflowed): every session goes stale.
    pub fn invalidate_all(&mut self) {
        for s in &mut self.slots {
            s.binding = (s.binding & flags::ID) | flags::STALE;
        }
        self.links.clear();
    }

    /// Moves session `id` to another binding or external endpoint (its binding expired and
    /// outbound traffic made a new one), keeping the inbound index and the binding lists in
    /// step.
    fn rebind(&mut self, id: u32, external: SocketAddrV4, bound: Bound) {
        let Some(s) = self.slots.get_mut(id as usize) else {
            return;
        };
        let (was_linked, old_binding) = (s.is_linked(), s.binding_id());
        s.binding = bound.word();
        let now_linked = s.is_linked();
        let moved = s.external() != external;
        let old = s.in_key();
        s.external_addr = (*external.ip()).into();
        s.external_port = external.port();
        let new = s.in_key();
        if was_linked {
            self.links.unlink(id, old_binding);
        }
        if now_linked {
            self.links.link(id, bound.id);
        }
        if moved {
            self.by_in.remove(&old, id);
            let slots = &self.slots;
            self.by_in.insert(&new, id, |i| slots[i as usize].in_key());
        }
    }

    fn insert(&mut self, k: &FlowKey, external: SocketAddrV4, bound: Bound) -> u32 {
        let slot = Slot {
            internal_addr: k.addr,
            remote_addr: k.remote_addr,
            external_addr: (*external.ip()).into(),
            internal_port: k.port,
            remote_port: k.remote_port,
            external_port: external.port(),
            protocol: k.protocol,
            tcp: TcpState::Closed,
            expires: 0,
            scheduled: 0,
            binding: bound.word(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        if slot.is_linked() {
            self.links.link(id, bound.id);
        }
        let slots = &self.slots;
        self.by_out.insert(k, id, |i| slots[i as usize].out_key());
        self.by_in
            .insert(&slot.in_key(), id, |i| slots[i as usize].in_key());
        id
    }

    fn remove(&mut self, id: u32) -> Option<(SessionKey, Session)> {
        let s = *self.slots.get(id as usize).filter(|s| s.is_live())?;
        self.by_out.remove(&s.out_key(), id);
        self.by_in.remove(&s.in_key(), id);
        if s.is_linked() {
            self.links.unlink(id, s.binding_id());
        }
        self.slots[id as usize] = FREE_SLOT;
        self.free.push(id);
        Some((s.key(), s.session()))
    }

    /// Expires sessions due at or before `now`, calling `gone` for each.
    pub fn expire(&mut self, now: u32, mut gone: impl FnMut(SessionKey, Session)) {
        let mut due = Vec::new();
        self.wheel
            .advance(now, |deadline, id| due.push((deadline, id)));
        for (deadline, id) in due {
            let Some(s) = self.slots.get_mut(id as usize) else {
                continue;
            };
            if !s.is_live() || s.scheduled != deadline {
                continue; // a stale entry; the current one is elsewhere in the wheel
            }
            if s.expires > now {
                // Refreshed since it was scheduled: one entry, moved to the new deadline.
                s.scheduled = s.expires;
                let at = s.expires;
                self.wheel.insert(at, id);
            } else if let Some((key, session)) = self.remove(id) {
                gone(key, session);
            }
        }
    }

    /// Wheel entries stored (at most one per session, plus stale ones after an RST).
    pub fn wheel_len(&self) -> usize {
        self.wheel.len()
    }

    /// Drops every session (state loss) and restarts the clock at `now`.
    pub fn clear(&mut self, now: u32) {
        self.slots = Vec::new();
        self.free = Vec::new();
        self.by_out.clear();
        self.by_in.clear();
        self.links.clear();
        self.wheel.clear(now);
    }

    /// Heap bytes used, approximately (for the memory-per-session figure).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.free.capacity() * 4
            + self.by_out.heap_bytes()
            + self.by_in.heap_bytes()
            + self.links.heap_bytes()
            + self.wheel.len() * 8
    }
}

#[cfg(test)]
mod tests;
