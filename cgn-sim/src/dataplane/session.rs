//! Per-connection state of the translator: one session per (protocol, internal endpoint,
//! remote endpoint), carrying the TCP state of RFC 7857 §2 (the NAT64 state machine of RFC 6146
//! §3.5.2, simplified) and the idle deadline that state implies.
//!
//! Sessions expire on the crate's timing wheel with one wheel entry per session at any time:
//! refreshing only moves the session's deadline, and when its wheel entry fires early the entry
//! is rescheduled at the current deadline. So the wheel holds at most one entry per session
//! however many packets flow (a per-packet insert would grow it by the packet rate).

use std::net::SocketAddrV4;

use crate::fasthash::{FastMap, KeyedState};
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
    /// TCP opening/closing and RST hold (≥ 240 recommended).
    pub tcp_transitory: u32,
    /// ICMP query (≥ 60).
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            udp: 300,
            tcp_established: 7440,
            tcp_transitory: 240,
            icmp: 60,
        }
    }
}

impl Timeouts {
    /// Idle time of a session of `protocol` in `state`.
    pub fn idle(&self, protocol: u8, state: TcpState) -> u32 {
        match protocol {
            super::ipv4::proto::TCP if state.is_transitory() || state == TcpState::Closed => {
                self.tcp_transitory
            }
            super::ipv4::proto::TCP => self.tcp_established,
            super::ipv4::proto::ICMP => self.icmp,
            _ => self.udp,
        }
    }
}

/// One session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// External endpoint of the binding the session runs on.
    pub external: SocketAddrV4,
    /// TCP state.
    pub tcp: TcpState,
    /// Deadline, engine seconds.
    pub expires: u32,
    /// The deadline of this session's wheel entry.
    scheduled: u32,
}

/// The session table.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: FastMap<SessionKey, Session>,
    wheel: TimerWheel<SessionKey>,
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
            map: FastMap::with_hasher(KeyedState::random()),
            wheel: TimerWheel::new(now),
            max,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The session, if live.
    pub fn get(&self, key: &SessionKey) -> Option<&Session> {
        self.map.get(key)
    }

    /// Records a packet of the session `key` on the binding with `external` endpoint: creates
    /// the session if `create` (and there is room), advances the TCP state, and moves the
    /// deadline to `now + idle(state)`.
    #[allow(clippy::too_many_arguments)]
    pub fn touch(
        &mut self,
        now: u32,
        key: SessionKey,
        external: SocketAddrV4,
        dir: Dir,
        tcp_flags: u8,
        timeouts: &Timeouts,
        create: bool,
    ) -> Option<Touch> {
        let len = self.map.len();
        let entry = match self.map.get_mut(&key) {
            Some(s) => s,
            None if !create => return None,
            None if len >= self.max => return Some(Touch::Full),
            None => {
                self.map.insert(
                    key,
                    Session {
                        external,
                        tcp: TcpState::Closed,
                        expires: 0,
                        scheduled: 0,
                    },
                );
                self.map.get_mut(&key)?
            }
        };
        entry.external = external;
        if key.protocol == super::ipv4::proto::TCP {
            entry.tcp = entry.tcp.next(dir, tcp_flags);
        }
        entry.expires = now.saturating_add(timeouts.idle(key.protocol, entry.tcp));
        if entry.scheduled == 0 || entry.scheduled > entry.expires {
            // First entry, or the deadline moved earlier (e.g. RST): schedule it.
            entry.scheduled = entry.expires;
            let at = entry.expires;
            self.wheel.insert(at, key);
        }
        Some(Touch::Live(*entry))
    }

    /// Expires sessions due at or before `now`, calling `gone` for each.
    pub fn expire(&mut self, now: u32, mut gone: impl FnMut(SessionKey, Session)) {
        let mut due = Vec::new();
        self.wheel
            .advance(now, |deadline, key| due.push((deadline, key)));
        for (deadline, key) in due {
            let Some(s) = self.map.get_mut(&key) else {
                continue;
            };
            if s.scheduled != deadline {
                continue; // a stale entry; the current one is elsewhere in the wheel
            }
            if s.expires > now {
                // Refreshed since it was scheduled: one entry, moved to the new deadline.
                s.scheduled = s.expires;
                let at = s.expires;
                self.wheel.insert(at, key);
            } else if let Some(s) = self.map.remove(&key) {
                gone(key, s);
            }
        }
    }

    /// Wheel entries stored (at most one per session, plus stale ones after an RST).
    pub fn wheel_len(&self) -> usize {
        self.wheel.len()
    }

    /// Drops every session (state loss) and restarts the clock at `now`.
    pub fn clear(&mut self, now: u32) {
        self.map.clear();
        self.wheel.clear(now);
    }

    /// Heap bytes used, approximately (for the memory-per-session figure).
    pub fn heap_bytes(&self) -> usize {
        self.map.capacity()
            * (std::mem::size_of::<SessionKey>() + std::mem::size_of::<Session>() + 1)
            + self.wheel.len() * (std::mem::size_of::<SessionKey>() + 4)
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

    // Fake clock: a UDP session lives 300 s after its last packet, not less, not more.
    #[test]
    fn udp_session_expires_after_idle_time_since_last_packet() {
        let t = Timeouts::default();
        let mut s = Sessions::new(1, 100);
        s.touch(10, key(17), ext(), Dir::Out, 0, &t, true);
        s.touch(100, key(17), ext(), Dir::Out, 0, &t, true);
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
        s.touch(10, key(6), ext(), Dir::Out, SYN, &t, true);
        s.touch(11, key(6), ext(), Dir::In, SYN | ACK, &t, false);
        match s.touch(12, key(6), ext(), Dir::Out, ACK, &t, false) {
            Some(Touch::Live(x)) => {
                assert_eq!((x.tcp, x.expires), (TcpState::Established, 12 + 7440))
            }
            other => panic!("{other:?}"),
        }
        s.touch(20, key(6), ext(), Dir::In, RST, &t, false);
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
            s.touch(now, key(17), ext(), Dir::Out, 0, &t, true);
            s.expire(now, |_, _| {});
        }
        assert_eq!(s.len(), 1);
        assert!(s.wheel_len() <= 2, "wheel has {} entries", s.wheel_len());
    }

    #[test]
    fn table_limit_is_enforced_and_existing_sessions_survive() {
        let t = Timeouts::default();
        let mut s = Sessions::new(1, 1);
        s.touch(2, key(17), ext(), Dir::Out, 0, &t, true);
        assert_eq!(
            s.touch(2, key(6), ext(), Dir::Out, SYN, &t, true),
            Some(Touch::Full)
        );
        assert!(matches!(
            s.touch(3, key(17), ext(), Dir::Out, 0, &t, true),
            Some(Touch::Live(_))
        ));
        assert_eq!(s.touch(3, key(1), ext(), Dir::In, 0, &t, false), None);
    }
}
