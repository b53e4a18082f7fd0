//! The session table's tests: timers, limits, and what the fast path may trust.

use super::state::{RST, SYN};
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

const BOUND: Bound = Bound {
    id: 7,
    fast: FastPath::Both,
    wrote_implicit: false,
};

fn ext() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 40000)
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
    s.touch(10, key(6), ext(), BOUND, Dir::Out, SYN, &t, true);
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
    s.touch(10, key(17), ext(), BOUND, Dir::Out, 0, &t, true);
    s.touch(100, key(17), ext(), BOUND, Dir::Out, 0, &t, true);
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
    s.touch(10, key(6), ext(), BOUND, Dir::Out, SYN, &t, true);
    s.touch(11, key(6), ext(), BOUND, Dir::In, SYN | ACK, &t, false);
    match s.touch(12, key(6), ext(), BOUND, Dir::Out, ACK, &t, false) {
        Some(Touch::Live(x)) => {
            assert_eq!((x.tcp, x.expires), (TcpState::Established, 12 + 7440))
        }
        other => panic!("{other:?}"),
    }
    s.touch(20, key(6), ext(), BOUND, Dir::In, RST, &t, false);
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
        s.touch(now, key(17), ext(), BOUND, Dir::Out, 0, &t, true);
        s.expire(now, |_, _| {});
    }
    assert_eq!(s.len(), 1);
    assert!(s.wheel_len() <= 2, "wheel has {} entries", s.wheel_len());
}

#[test]
fn table_limit_is_enforced_and_existing_sessions_survive() {
    let t = Timeouts::default();
    let mut s = Sessions::new(1, 1);
    s.touch(2, key(17), ext(), BOUND, Dir::Out, 0, &t, true);
    assert_eq!(
        s.touch(2, key(6), ext(), BOUND, Dir::Out, SYN, &t, true),
        Some(Touch::Full)
    );
    assert!(matches!(
        s.touch(3, key(17), ext(), BOUND, Dir::Out, 0, &t, true),
        Some(Touch::Live(_))
    ));
    assert_eq!(
        s.touch(3, key(1), ext(), BOUND, Dir::In, 0, &t, false),
        None
    );
}

fn other_key(port: u16) -> SessionKey {
    SessionKey {
        remote: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 51), port),
        ..key(17)
    }
}

fn on(id: u32, fast: FastPath, wrote_implicit: bool) -> Bound {
    Bound {
        id,
        fast,
        wrote_implicit,
    }
}

fn slot_of(s: &Sessions, key: &SessionKey) -> u32 {
    let k = key.flow_key();
    s.find(s.hash(&k, false), &k, false).expect("session")
}

// The fast path trusts a session's binding only until the mapping table frees or changes
// it: then exactly that binding's sessions go stale, in both directions, until the full path
// puts them on a binding again.
#[test]
fn a_freed_binding_makes_exactly_its_sessions_stale() {
    let t = Timeouts::default();
    let mut s = Sessions::new(1, 100);
    let both = on(7, FastPath::Both, false);
    s.touch(2, key(17), ext(), both, Dir::Out, 0, &t, true);
    s.touch(2, other_key(1), ext(), both, Dir::Out, 0, &t, true);
    s.touch(
        2,
        other_key(2),
        ext(),
        on(8, FastPath::Both, false),
        Dir::Out,
        0,
        &t,
        true,
    );
    let (a, b, c) = (
        slot_of(&s, &key(17)),
        slot_of(&s, &other_key(1)),
        slot_of(&s, &other_key(2)),
    );
    assert!(s.fast_slot(a, false).is_some() && s.fast_slot(a, true).is_some());
    s.invalidate(7);
    for id in [a, b] {
        assert_eq!(s.fast_slot(id, false), None, "slot {id} outbound");
        assert_eq!(s.fast_slot(id, true), None, "slot {id} inbound");
    }
    assert_eq!(s.fast_slot(c, false).map(|f| f.binding), Some(8));
    // The full path finds the binding again (here a new one, 9): fast again.
    s.touch(
        3,
        key(17),
        ext(),
        on(9, FastPath::Both, false),
        Dir::Out,
        0,
        &t,
        true,
    );
    assert_eq!(s.fast_slot(a, false).map(|f| f.binding), Some(9));
    assert_eq!(s.fast_slot(b, false), None, "still stale");
    // Freeing binding 7 again (its id reused by another binding) touches nobody now.
    s.invalidate(7);
    assert!(s.fast_slot(a, true).is_some() && s.fast_slot(c, true).is_some());
    s.invalidate_all();
    assert!([a, b, c].iter().all(|id| s.fast_slot(*id, true).is_none()));
}

// A binding with a THIRD_PARTY_ID realm admits its sessions' inbound packets on the fast
// path; outbound ones look up realm 0 on the full path. A DMZ host's sessions take neither.
#[test]
fn realm_and_dmz_bindings_keep_packets_on_the_full_path() {
    let t = Timeouts::default();
    let mut s = Sessions::new(1, 100);
    s.touch(
        2,
        key(17),
        ext(),
        on(7, FastPath::InboundOnly, false),
        Dir::In,
        0,
        &t,
        true,
    );
    s.touch(
        2,
        other_key(1),
        ext(),
        on(8, FastPath::None, false),
        Dir::In,
        0,
        &t,
        true,
    );
    let (a, b) = (slot_of(&s, &key(17)), slot_of(&s, &other_key(1)));
    assert!(s.fast_slot(a, true).is_some());
    assert_eq!(s.fast_slot(a, false), None);
    assert_eq!(s.fast_slot(b, true), None);
    assert_eq!(s.fast_slot(b, false), None);
}

// The binding's implicit deadline need not be written while the session that wrote it last
// keeps the same deadline; another session's write, the deadline moving (a new second, a
// TCP state change) or an inbound refresh end that.
#[test]
fn the_last_writer_of_a_binding_deadline_may_skip_writing_it_again() {
    let t = Timeouts::default();
    let mut s = Sessions::new(1, 100);
    let wrote = on(7, FastPath::Both, true);
    s.touch(2, key(17), ext(), wrote, Dir::Out, 0, &t, true);
    let a = slot_of(&s, &key(17));
    assert!(
        s.touch_slot(a, 2, Dir::Out, 0, &t).1,
        "same second, same deadline"
    );
    assert!(!s.touch_slot(a, 3, Dir::Out, 0, &t).1, "the deadline moved");
    s.cover(a);
    s.touch(3, other_key(1), ext(), wrote, Dir::Out, 0, &t, true);
    assert!(
        !s.touch_slot(a, 3, Dir::Out, 0, &t).1,
        "another session wrote it"
    );
    let b = slot_of(&s, &other_key(1));
    assert!(s.touch_slot(b, 3, Dir::Out, 0, &t).1);
    s.uncover(7);
    assert!(
        !s.touch_slot(b, 3, Dir::Out, 0, &t).1,
        "the server wrote it"
    );
    s.cover(b);
    assert!(
        !s.touch_slot(b, 4, Dir::In, 0, &t).1,
        "inbound moved the session only"
    );
}
