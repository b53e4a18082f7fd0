//! The CGN's PCP/NAT-PMP server engine fed arbitrary datagrams from arbitrary subscribers,
//! interfaces and times: it never panics, every answer is a well-formed size, and the table
//! invariants hold after every step (indexes agree, no two bindings share an external
//! endpoint, every external port is taken in the pool, quotas are never exceeded).
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cgn_sim::config::EngineConfig;
use cgn_sim::server::{Interface, Server};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

const QUOTA: u32 = 6;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut config = EngineConfig::with_pools(&["198.51.100.0/30", "192.0.2.9-192.0.2.10"]);
    config.quota_per_subscriber = QUOTA;
    config.port_min = 40_000;
    config.port_max = 40_063;
    config.max_filters = 2;
    config.third_party_hosts = vec!["100.64.0.1/32".parse().expect("THIRD_PARTY rule")];
    config.third_party_ids = vec![cgn_sim::config::ThirdPartyIdConfig { id: "a".into() }];
    let Ok(mut server) = Server::new(config, t0, Box::new(rand::rngs::StdRng::seed_from_u64(7)))
    else {
        return;
    };
    let mut now = t0;
    let mut rest = data;
    let mut out = [0u8; 1100];
    while rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        let len = usize::from(head[3]) * 4 + usize::from(head[2] & 3);
        let (msg, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        now += Duration::from_millis(u64::from(head[1]) * 250);
        let ip = Ipv4Addr::new(100, 64, 0, 1 + (head[0] & 3));
        let from = SocketAddr::new(IpAddr::V4(ip), 40_000 + u16::from(head[0] >> 4));
        let iface = if head[2] & 0x80 != 0 {
            Interface::Outside
        } else {
            Interface::Inside
        };
        let mut msg = msg.to_vec();
        // Most datagrams carry the right version and Client IP, so the fuzzer reaches the
        // opcode and option processing instead of stopping at ADDRESS_MISMATCH.
        if head[2] & 0x40 == 0 && msg.len() >= 24 {
            msg[0] = 2;
            msg[1] &= 0x7f;
            msg[8..24].copy_from_slice(&ip.to_ipv6_mapped().octets());
        }
        if head[2] & 0x3c == 0x3c {
            server.restart(now, head[2] & 2 != 0);
        }
        if let Some(n) = server.handle(now, from, iface, &msg, &mut out) {
            assert!(n <= 1100);
            if msg.first() != Some(&0) {
                assert!(n >= 24 && n % 4 == 0, "PCP answer of {n} bytes");
                assert_eq!(out[0], 2);
                assert!(out[1] & 0x80 != 0);
            }
        }
        server.handle_timeout(now);
        while server.poll_transmit().is_some() {}
        check(&server);
    }
});

fn check(server: &Server) {
    let table = server.table();
    if let Err(e) = table.check_invariants() {
        panic!("table invariant: {e}");
    }
    let mut per_subscriber: HashMap<(u16, Ipv4Addr), u32> = HashMap::new();
    let mut externals = std::collections::HashSet::new();
    for (_, b) in table.bindings() {
        assert!(
            externals.insert((b.protocol, b.external)),
            "external endpoint shared"
        );
        let proto = cgn_sim::pool::proto_index(pcp_client::wire::Protocol(b.protocol));
        let index = server
            .pool()
            .index_of(*b.external.ip())
            .expect("pool address");
        if b.protocol == 0 {
            // An all-protocol MAP holds its address whole (cgn_sim::dmz), no port.
            assert!(
                server.pool().is_dedicated(index),
                "all-protocol MAP on a shared address"
            );
            assert_eq!(
                server.pool().address(index).map(|a| a.subscribers),
                Some(1),
                "another subscriber on a dedicated address"
            );
        } else {
            assert!(
                server
                    .pool()
                    .is_used(index, proto.expect("protocol"), b.external.port())
            );
        }
        assert!(!(b.protocol == 17 && (b.external.port() == 5350 || b.external.port() == 5351)));
        *per_subscriber
            .entry((b.realm, *b.internal.ip()))
            .or_default() += 1;
    }
    for (k, n) in per_subscriber {
        assert!(n <= QUOTA, "quota exceeded for {k:?}: {n}");
    }
}
