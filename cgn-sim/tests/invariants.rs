//! Property test: any sequence of MAP, PEER, delete, NAT-PMP, outbound traffic, time and
//! restarts keeps the table consistent (indexes, counts, no shared external endpoint), keeps
//! quotas, and never leaks or double-books a pool port.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use pcp_client::wire::{PcpOption, Protocol};
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone)]
enum Op {
    Map {
        sub: u8,
        nonce: u8,
        port: u8,
        lifetime: u32,
        suggest: Option<u8>,
        pf: bool,
        tcp: bool,
    },
    Peer {
        sub: u8,
        nonce: u8,
        port: u8,
        remote: u8,
        lifetime: u32,
    },
    Outbound {
        sub: u8,
        port: u8,
    },
    NatPmp {
        sub: u8,
        port: u8,
        lifetime: u32,
    },
    PortSet {
        sub: u8,
        nonce: u8,
        port: u8,
        size: u16,
        lifetime: u32,
    },
    Advance(u16),
    Restart(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, 0..3u8, 0..8u8, prop_oneof![Just(0u32), Just(120), Just(3600)], proptest::option::of(0..16u8), any::<bool>(), any::<bool>())
            .prop_map(|(sub, nonce, port, lifetime, suggest, pf, tcp)| Op::Map { sub, nonce, port, lifetime, suggest, pf, tcp }),
        2 => (0..4u8, 0..3u8, 0..8u8, 0..3u8, prop_oneof![Just(0u32), Just(120), Just(600)])
            .prop_map(|(sub, nonce, port, remote, lifetime)| Op::Peer { sub, nonce, port, remote, lifetime }),
        1 => (0..4u8, 0..8u8).prop_map(|(sub, port)| Op::Outbound { sub, port }),
        1 => (0..4u8, 0..8u8, prop_oneof![Just(0u32), Just(200)]).prop_map(|(sub, port, lifetime)| Op::NatPmp { sub, port, lifetime }),
        2 => (0..4u8, 0..3u8, 0..8u8, 1..12u16, prop_oneof![Just(0u32), Just(300)])
            .prop_map(|(sub, nonce, port, size, lifetime)| Op::PortSet { sub, nonce, port, size, lifetime }),
        2 => (1..400u16).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Restart),
    ]
}

const QUOTA: u32 = 5;

fn check(h: &Harness) -> Result<(), TestCaseError> {
    let t = h.server.table();
    t.check_invariants().map_err(TestCaseError::fail)?;
    let mut ext = HashSet::new();
    let mut per_sub = std::collections::HashMap::new();
    for (_, b) in t.bindings() {
        prop_assert!(
            ext.insert((b.protocol, b.external)),
            "shared external endpoint"
        );
        *per_sub.entry(*b.internal.ip()).or_insert(0u32) += 1;
        let proto = cgn_sim::pool::proto_index(Protocol(b.protocol)).expect("proto");
        let i = h
            .server
            .pool()
            .index_of(*b.external.ip())
            .expect("pool address");
        prop_assert!(h.server.pool().is_used(i, proto, b.external.port()));
    }
    for n in per_sub.values() {
        prop_assert!(*n <= QUOTA);
    }
    // Port accounting: used = bindings + held (+ the reserved ones, counted at start).
    let used: u32 = (0..h.server.pool().len() as u16)
        .flat_map(|i| (0..2).map(move |p| (i, p)))
        .map(|(i, p)| 65536 - h.server.pool().free_ports(i, p))
        .sum();
    let reserved = 4 + 4 * 3; // per address: port 0 (TCP); port 0, 5350 and 5351 (UDP)
    prop_assert_eq!(
        used as usize,
        t.counts().bindings + h.server.held_ports() + reserved
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn any_request_sequence_keeps_the_table_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        let mut c = EngineConfig_small();
        c.quota_per_subscriber = QUOTA;
        let mut h = Harness::with(c);
        for op in ops {
            let sub = |s: u8| Ipv4Addr::new(100, 64, 0, 10 + s);
            match op {
                Op::Map { sub: s, nonce: n, port, lifetime, suggest, pf, tcp } => {
                    let client = sub(s);
                    let suggest = suggest.map(|x| SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, x % 4), 40_000 + u16::from(x)));
                    let opts: &[PcpOption<'_>] = if pf && suggest.is_some() && lifetime != 0 { &[PcpOption::PreferFailure] } else { &[] };
                    let proto = if tcp { Protocol::TCP } else { Protocol::UDP };
                    h.request(client, &map_req(client, nonce(n), proto, 1000 + u16::from(port), lifetime, suggest, opts));
                }
                Op::Peer { sub: s, nonce: n, port, remote, lifetime } => {
                    let client = sub(s);
                    let r = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50 + remote), 9000);
                    h.request(client, &peer_req(client, nonce(n), 1000 + u16::from(port), lifetime, r, None, &[]));
                }
                Op::Outbound { sub: s, port } => {
                    let now = h.now;
                    let _ = h.server.outbound(now, Protocol::UDP, SocketAddrV4::new(sub(s), 1000 + u16::from(port)));
                }
                Op::NatPmp { sub: s, port, lifetime } => {
                    let r = pcp_client::natpmp::RequestRepr::from_fields(pcp_client::natpmp::Transport::Udp, 1000 + u16::from(port), 0, lifetime);
                    let mut b = [0u8; 16];
                    let n = r.emit(&mut b).expect("emit");
                    h.send(sub(s), &b[..n]);
                }
                Op::PortSet { sub: s, nonce: n, port, size, lifetime } => {
                    let client = sub(s);
                    let first = 1000 + u16::from(port);
                    let o = [PcpOption::PortSet(pcp_client::wire::PortSet { size, first_internal_port: first, parity: size % 2 == 0 })];
                    h.request(client, &map_req(client, nonce(n), Protocol::UDP, first, lifetime, None, &o));
                }
                Op::Advance(secs) => h.advance(Duration::from_secs(u64::from(secs))),
                Op::Restart(keep) => {
                    let now = h.now;
                    h.server.restart(now, keep);
                }
            }
            check(&h)?;
        }
    }
}

#[allow(non_snake_case)]
fn EngineConfig_small() -> cgn_sim::config::EngineConfig {
    cgn_sim::config::EngineConfig::with_pools(&["198.51.100.0/30"])
}
