//! Unit tests of the NAT pool.

use std::net::Ipv4Addr;

use pcp_client::wire::Protocol;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::config::EngineConfig;

fn pool() -> NatPool {
    NatPool::new(&EngineConfig::with_pools(&["198.51.100.0/30"])).expect("pool")
}

// The dataplane's membership test agrees with the index, with gaps in the pool, at its
// edges and far outside it.
#[test]
fn contains_agrees_with_the_index() {
    let p = NatPool::new(&EngineConfig::with_pools(&[
        "198.51.100.0/30",
        "198.51.100.9",
        "198.51.100.64/27",
    ]))
    .expect("pool");
    for last in 0..=255u8 {
        let a = Ipv4Addr::new(198, 51, 100, last);
        assert_eq!(p.contains(a), p.index_of(a).is_some(), "{a}");
    }
    assert!(!p.contains(Ipv4Addr::new(203, 0, 113, 1)));
    assert!(!p.contains(Ipv4Addr::new(0, 0, 0, 0)));
    assert!(!p.contains(Ipv4Addr::BROADCAST));
}

// RFC 6887 §11.3: external UDP 5350 and 5351 MUST NOT be mapped.
#[test]
fn udp_5350_and_5351_are_never_allocated() {
    let mut p = pool();
    let udp = proto_index(Protocol::UDP).expect("udp");
    let tcp = proto_index(Protocol::TCP).expect("tcp");
    assert!(!p.take(0, udp, 5351));
    assert!(!p.take(0, udp, 5350));
    assert!(p.take(0, tcp, 5351));
    let mut rng = StdRng::seed_from_u64(1);
    let mut seen = 0;
    while let Some(port) = p.allocate(
        1,
        PortRequest {
            proto: udp,
            internal_port: 5000,
        },
        &mut rng,
    ) {
        assert!(!PCP_PORTS.contains(&port));
        seen += 1;
    }
    // Every port but 0, 5350, 5351 was handed out exactly once.
    assert_eq!(seen, 65535 - 2);
}

// RFC 4787 REQ-3a and REQ-4: range class and parity are preserved.
#[test]
fn allocation_keeps_range_and_parity_and_is_random() {
    let mut p = pool();
    let mut rng = StdRng::seed_from_u64(7);
    let mut ports = Vec::new();
    for internal in [80u16, 81, 5000, 5001, 6000] {
        let port = p
            .allocate(
                0,
                PortRequest {
                    proto: 0,
                    internal_port: internal,
                },
                &mut rng,
            )
            .expect("port");
        assert_eq!(port & 1, internal & 1, "parity");
        assert_eq!(port < 1024, internal < 1024, "range");
        ports.push(port);
    }
    // Random, not sequential.
    assert!(ports.windows(2).any(|w| w[1].abs_diff(w[0]) > 2));
}
