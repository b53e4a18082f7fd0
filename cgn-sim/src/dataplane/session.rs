//! Per-connection state of the translator: one session per (protocol, internal endpoint,
//! remote endpoint), carrying the TCP state of RFC 7857 §2 (the NAT64 state machine of RFC 6146
//! §3.5.2, simplified) and the idle deadline that state implies.
//!
//! Sessions expire on the crate's timing wheel with one wheel entry per session at any time:
//! refreshing only moves the session's deadline, and when its wheel entry fires early the entry
//! is rescheduled at the current deadline. So the wheel holds at most one entry per session
//! however many packets flow (a per-packet insert would grow it by the packet rate).

use std::net::SocketAddrV4;

use super::flow_index::{FlowHash, FlowIndex, FlowKey};
use crate::timer::TimerWheel;

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

/// Direction of a packet relative to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Subscriber → Internet.
    Out,
    /// Internet → subscriber.
    In,
}

/// TCP connection state (RFC 7857 §2.1, RFC 6146 §3.5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// Not TCP, or nothing seen yet.
    Closed,
    /// SYN seen from the inside only.
    OutInit,
    /// SYN seen from the outside only (admitted by a MAP or by filtering).
    InInit,
    /// Both SYNs seen.
    Established,
    /// FIN seen from the inside.
    OutFin,
    /// FIN seen from the outside.
    InFin,
    /// FINs from both sides.
    BothFin,
    /// RST seen: kept for the RST hold time (RFC 7857 §2.2), revived by any other packet.
    Trans,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;

impl TcpState {
    /// The state after a packet with `flags` travelling in `dir`.
    pub fn next(self, dir: Dir, flags: u8) -> TcpState {
        use TcpState::*;
        if flags & RST != 0 {
            return Trans;
        }
        let syn = flags & SYN != 0;
        let fin = flags & FIN != 0;
        match (self, dir) {
            (Closed, Dir::Out) if syn => OutInit,
            (Closed, Dir::In) if syn => InInit,
            (OutInit, Dir::In) | (InInit, Dir::Out) if syn => Established,
            (Established, Dir::Out) if fin => OutFin,
            (Established, Dir::In) if fin => InFin,
            (OutFin, Dir::In) | (InFin, Dir::Out) if fin => BothFin,
            // RFC 6146: any packet other than RST brings a TRANS session back.
            (Trans, _) => Established,
            (s, _) => s,
        }
    }

    /// True while the connection is opening or closing (the transitory timer applies).
    pub fn is_transitory(self) -> bool {
        matches!(
            self,
            TcpState::OutInit | TcpState::InInit | TcpState::BothFin | TcpState::Trans
        )
    }
}

/// Idle timers, in seconds (RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-2, RFC 7857 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// UDP idle (≥ 120; default 300).
    pub udp: u32,
    /// TCP established (≥ 7440 = 2 h 4 min).
    pub tcp_established: u32,
    /// TCP closing (FINs from both sides) and RST hold (≥ 240 recommended, RFC 7857 §2.1,
    /// §2.2).
    pub tcp_transitory: u32,
    /// TCP opening: a SYN seen in one direction only, or no SYN yet (RFC 7857 §2.1 asks for
    /// opening and closing timeouts to be configurable separately; default 240 as well).
    pub tcp_opening: u32,
    /// ICMP query (≥ 60).
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            udp: 300,
            tcp_established: 7440,
            tcp_transitory: 240,
            tcp_opening: 240,
            icmp: 60,
        }
    }
}

impl Timeouts {
    /// Idle time of a session of `protocol` in `state`.
    pub fn idle(&self, protocol: u8, state: TcpState) -> u32 {
        match (protocol, state) {
            (super::ipv4::proto::TCP, TcpState::Closed | TcpState::OutInit | TcpState::InInit) => {
                self.tcp_opening
            }
            (super::ipv4::proto::TCP, s) if s.is_transitory() => self.tcp_transitory,
            (super::ipv4::proto::TCP, _) => self.tcp_established,
            (super::ipv4::proto::ICMP, _) => self.icmp,
            _ => self.udp,
        }
    }
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

/// A session as stored: 32 bytes, so two share a cache line and none straddles one.
/// `protocol == 0` marks a free slot.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    internal_addr: u32,
    remote_addr: u32,
    external_addr: u32,
    internal_port: u16,
    remote_port: u16,
    external_port: u16,
    protocol: u8,
    tcp: TcpState,
    expires: u32,
    /// The deadline of this session's wheel entry.
    scheduled: u32,
    binding: u32,
}

const FREE_SLOT: Slot = Slot {
    internal_addr: 0,
    remote_addr: 0,
    external_addr: 0,
    internal_port: 0,
    remote_port: 0,
    external_port: 0,
    protocol: 0,
    tcp: TcpState::Closed,
    expires: 0,
    scheduled: 0,
    binding: 0,
};

impl Slot {
    fn out_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            addr: self.internal_addr,
            port: self.internal_port,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
        }
    }

    fn in_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            addr: self.external_addr,
            port: self.external_port,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
        }
    }

    fn key(&self) -> SessionKey {
        SessionKey {
            protocol: self.protocol,
            internal: SocketAddrV4::new(self.internal_addr.into(), self.internal_port),
            remote: SocketAddrV4::new(self.remote_addr.into(), self.remote_port),
        }
    }

    fn external(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.external_addr.into(), self.external_port)
    }

    fn session(&self) -> Session {
        Session {
            external: self.external(),
            binding: self.binding,
            tcp: self.tcp,
            expires: self.expires,
        }
    }
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
#[derive(Debug, Clone)]
pub struct Sessions {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_out: FlowIndex,
    by_in: FlowIndex,
    wheel: TimerWheel<u32>,
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

impl Sessions {
    /// An empty table holding at most `max` sessions, its clock at engine second `now`.
    pub fn new(now: u32, max: usize) -> Sessions {
        Sessions {
            slots: Vec::new(),
            free: Vec::new(),
            by_out: FlowIndex::new(),
            by_in: FlowIndex::new(),
            wheel: TimerWheel::new(now),
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

    /// Reads the binding id of slot `id` (0 if there is none): starts fetching the slot, and
    /// tells which binding to fetch next.
    #[inline(always)]
    pub fn touch_slot_binding(&self, id: u32) -> u32 {
        self.slots.get(id as usize).map_or(u32::MAX, |s| s.binding)
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
            s.protocol != 0 && (if inbound { s.in_key() } else { s.out_key() }) == *key
        })
    }

    /// The slot of the session with outbound (or inbound) key `key`, hash `h`.
    #[inline]
    pub fn find(&self, h: FlowHash, key: &FlowKey, inbound: bool) -> Option<u32> {
        self.index(inbound)
            .find(h, |id| self.slot_has(id, key, inbound))
    }

    /// The session in slot `id` with its internal endpoint, if live.
    #[inline]
    pub fn slot(&self, id: u32) -> Option<(Session, SocketAddrV4)> {
        let s = self.slots.get(id as usize).filter(|s| s.protocol != 0)?;
        Some((
            s.session(),
            SocketAddrV4::new(s.internal_addr.into(), s.internal_port),
        ))
    }

    /// Records a packet of the session `key` on binding `binding` with `external` endpoint:
    /// creates the session if `create` (and there is room), advances the TCP state, and
    /// moves the deadline to `now + idle(state)`.
    #[allow(clippy::too_many_arguments)]
    pub fn touch(
        &mut self,
        now: u32,
        key: SessionKey,
        external: SocketAddrV4,
        binding: u32,
        dir: Dir,
        tcp_flags: u8,
        timeouts: &Timeouts,
        create: bool,
    ) -> Option<Touch> {
        let k = key.flow_key();
        let id = match self.find(self.by_out.hash(&k), &k, false) {
            Some(id) => {
                self.rebind(id, external, binding);
                id
            }
            None if !create => return None,
            None if self.len() >= self.max => return Some(Touch::Full),
            None => self.insert(&k, external, binding),
        };
        Some(Touch::Live(
            self.touch_slot(id, now, dir, tcp_flags, timeouts),
        ))
    }

    /// Records a packet of the live session in slot `id` (found with [`Sessions::find`]
    /// or [`Sessions::resolve`]): TCP state and deadline, as [`Sessions::touch`].
    #[inline(always)]
    pub fn touch_slot(
        &mut self,
        id: u32,
        now: u32,
        dir: Dir,
        tcp_flags: u8,
        timeouts: &Timeouts,
    ) -> Session {
        let Some(s) = self.slots.get_mut(id as usize) else {
            return FREE_SLOT.session();
        };
        if s.protocol == super::ipv4::proto::TCP {
            s.tcp = s.tcp.next(dir, tcp_flags);
        }
        s.expires = now.saturating_add(timeouts.idle(s.protocol, s.tcp));
        if s.scheduled == 0 || s.scheduled > s.expires {
            // First entry, or the deadline moved earlier (e.g. RST): schedule it.
            s.scheduled = s.expires;
            let at = s.expires;
            self.wheel.insert(at, id);
        }
        s.session()
    }

    /// Moves session `id` to another binding or external endpoint (its binding expired and
    /// outbound traffic made a new one), keeping the inbound index in step.
    fn rebind(&mut self, id: u32, external: SocketAddrV4, binding: u32) {
        let Some(s) = self.slots.get_mut(id as usize) else {
            return;
        };
        s.binding = binding;
        if s.external() == external {
            return;
        }
        let old = s.in_key();
        s.external_addr = (*external.ip()).into();
        s.external_port = external.port();
        let new = s.in_key();
        self.by_in.remove(&old, id);
        let slots = &self.slots;
        self.by_in.insert(&new, id, |i| slots[i as usize].in_key());
    }

    fn insert(&mut self, k: &FlowKey, external: SocketAddrV4, binding: u32) -> u32 {
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
            binding,
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
        let slots = &self.slots;
        self.by_out.insert(k, id, |i| slots[i as usize].out_key());
        self.by_in
            .insert(&slot.in_key(), id, |i| slots[i as usize].in_key());
        id
    }

    fn remove(&mut self, id: u32) -> Option<(SessionKey, Session)> {
        let s = *self.slots.get(id as usize).filter(|s| s.protocol != 0)?;
        self.by_out.remove(&s.out_key(), id);
        self.by_in.remove(&s.in_key(), id);
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
            if s.protocol == 0 || s.scheduled != deadline {
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
        self.wheel.clear(now);
    }

    /// Heap bytes used, approximately (for the memory-per-session figure).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.free.capacity() * 4
            + self.by_out.heap_bytes()
            + self.by_in.heap_bytes()
            + self.wheel.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ACK: u8 = 0x10;

    fn key(protocol: u8) -> SessionKey {
        SessionKey {
            protocol,
            internal: SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 2), 5000),
            remote: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 80),
        }
    }

    fn ext() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 40000)
    }

    // RFC 7857 §2.1 / RFC 6146 §3.5.2.2: the simplified state machine.
    #[test]
    fn tcp_state_machine_follows_rfc7857() {
        use TcpState::*;
        let s = Closed.next(Dir::Out, SYN);
        assert_eq!(s, OutInit);
        assert_eq!(s.next(Dir::In, SYN | ACK), Established);
        assert_eq!(
            Closed.next(Dir::In, SYN).next(Dir::Out, SYN | ACK),
            Established
        );
        assert_eq!(Established.next(Dir::Out, FIN | ACK), OutFin);
        assert_eq!(OutFin.next(Dir::In, FIN | ACK), BothFin);
        assert_eq!(Established.next(Dir::In, FIN), InFin);
        assert_eq!(InFin.next(Dir::Out, FIN), BothFin);
        assert_eq!(Established.next(Dir::In, RST), Trans);
        assert_eq!(
            Trans.next(Dir::Out, ACK),
            Established,
            "revived by a non-RST packet"
        );
        assert_eq!(Closed.next(Dir::Out, ACK), Closed, "no SYN, no connection");
    }

    // RFC 5382 REQ-5, RFC 7857 §2: transitory 4 min, established 2 h 4 min; UDP 5 min;
    // ICMP 60 s.
    #[test]
    fn idle_timers_by_protocol_and_state() {
        let t = Timeouts::default();
        assert_eq!(t.idle(6, TcpState::OutInit), 240);
        assert_eq!(t.idle(6, TcpState::Established), 7440);
        assert_eq!(t.idle(6, TcpState::OutFin), 7440);
        assert_eq!(t.idle(6, TcpState::BothFin), 240);
        assert_eq!(t.idle(6, TcpState::Trans), 240);
        assert_eq!(t.idle(17, TcpState::Closed), 300);
        assert_eq!(t.idle(1, TcpState::Closed), 60);
    }

    // RFC 7857 §2.1: opening and closing timeouts are configured separately.
    #[test]
    fn opening_and_closing_timeouts_are_separate() {
        let t = Timeouts {
            tcp_opening: 30,
            tcp_transitory: 500,
            ..Timeouts::default()
        };
        assert_eq!(t.idle(6, TcpState::OutInit), 30);
        assert_eq!(t.idle(6, TcpState::InInit), 30);
        assert_eq!(t.idle(6, TcpState::Closed), 30);
        assert_eq!(t.idle(6, TcpState::BothFin), 500);
        assert_eq!(t.idle(6, TcpState::Trans), 500);
        assert_eq!(t.idle(6, TcpState::Established), 7440);
        let mut s = Sessions::new(1, 100);
        s.touch(10, key(6), ext(), 7, Dir::Out, SYN, &t, true);
        let mut gone = 0;
        s.expire(39, |_, _| gone += 1);
        assert_eq!(gone, 0);
        s.expire(40, |_, _| gone += 1);
        assert_eq!(
            gone, 1,
            "a SYN nobody answered is gone after the opening timeout"
        );
    }

    // Fake clock: a UDP session lives 300 s after its last packet, not less, not more.
    #[test]
    fn udp_session_expires_after_idle_time_since_last_packet() {
        let t = Timeouts::default();
        let mut s = Sessions::new(1, 100);
        s.touch(10, key(17), ext(), 7, Dir::Out, 0, &t, true);
        s.touch(100, key(17), ext(), 7, Dir::Out, 0, &t, true);
        let mut gone = Vec::new();
        s.expire(399, |k, _| gone.push(k));
        assert!(gone.is_empty(), "refreshed at 100: lives until 400");
        s.expire(400, |k, _| gone.push(k));
        assert_eq!(gone, vec![key(17)]);
        assert!(s.is_empty());
    }

    // RFC 7857 §2.2: after an RST the session is held 4 minutes, then removed.
    #[test]
    fn rst_shortens_an_established_session_to_the_hold_time() {
        let t = Timeouts::default();
        let mut s = Sessions::new(1, 100);
        s.touch(10, key(6), ext(), 7, Dir::Out, SYN, &t, true);
        s.touch(11, key(6), ext(), 7, Dir::In, SYN | ACK, &t, false);
        match s.touch(12, key(6), ext(), 7, Dir::Out, ACK, &t, false) {
            Some(Touch::Live(x)) => {
                assert_eq!((x.tcp, x.expires), (TcpState::Established, 12 + 7440))
            }
            other => panic!("{other:?}"),
        }
        s.touch(20, key(6), ext(), 7, Dir::In, RST, &t, false);
        let mut gone = 0;
        s.expire(259, |_, _| gone += 1);
        assert_eq!(gone, 0);
        s.expire(260, |_, _| gone += 1);
        assert_eq!(gone, 1);
    }

    // The wheel holds one entry per session whatever the packet rate.
    #[test]
    fn refreshing_does_not_grow_the_wheel() {
        let t = Timeouts::default();
        let mut s = Sessions::new(1, 100);
        for now in 2..2000 {
            s.touch(now, key(17), ext(), 7, Dir::Out, 0, &t, true);
            s.expire(now, |_, _| {});
        }
        assert_eq!(s.len(), 1);
        assert!(s.wheel_len() <= 2, "wheel has {} entries", s.wheel_len());
    }

    #[test]
    fn table_limit_is_enforced_and_existing_sessions_survive() {
        let t = Timeouts::default();
        let mut s = Sessions::new(1, 1);
        s.touch(2, key(17), ext(), 7, Dir::Out, 0, &t, true);
        assert_eq!(
            s.touch(2, key(6), ext(), 7, Dir::Out, SYN, &t, true),
            Some(Touch::Full)
        );
        assert!(matches!(
            s.touch(3, key(17), ext(), 7, Dir::Out, 0, &t, true),
            Some(Touch::Live(_))
        ));
        assert_eq!(s.touch(3, key(1), ext(), 7, Dir::In, 0, &t, false), None);
    }
}
