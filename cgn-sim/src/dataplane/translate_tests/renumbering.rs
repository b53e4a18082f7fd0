//! Renumbering (`cgn-sim ctl pool`, [`Server::replace_pools`]) under traffic: flows carry on
//! over their moved bindings, and the translator's own ICMP errors towards the Internet come
//! from the new pool.

use super::*;
use crate::config::{PoolConfig, SectionConfig};

fn udp_ttl(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), ttl: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), ttl)
        .udp(src.1, dst.1)
        .write(&mut out, b"ttl")
        .expect("build");
    out
}

/// The source of the Time Exceeded the translator answers a TTL-1 packet to `to` with.
fn time_exceeded_source(r: &mut Rig, secs: u64, to: (Ipv4Addr, u16)) -> Ipv4Addr {
    while r.nat.poll_transmit().is_some() {}
    let mut p = udp_ttl((PEER, 9000), to, 1);
    assert_eq!(r.send(secs, &mut p), Verdict::Drop(DropReason::TtlExceeded));
    let err = r.nat.poll_transmit().expect("Time Exceeded");
    let (src, dst, _) = icmp_error_parts(&err);
    assert_eq!(dst, PEER);
    src
}

// Renumbering moves implicit bindings (RFC 6887 §14.2 for PCP; the dataplane's own bindings
// the same way) instead of dropping them: after `ctl pool` the subscriber's flow leaves from
// the new pool with the same external port, on the same binding, and the peer's answers to the
// new endpoint get through. Without `--outside`, ICMP errors towards the Internet come from
// the first address of the pool in force, before and after (RFC 5508 REQ-5 wants the NAT's
// public address, which the old pool no longer is).
#[test]
fn renumbering_keeps_flows_and_moves_the_icmp_source_to_the_new_pool() {
    let dp = DataplaneConfig {
        outside_address: Ipv4Addr::UNSPECIFIED,
        ..DataplaneConfig::default()
    };
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let mut p = udp((A, 5000), (PEER, 9000), b"hi");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    let (old, _) = flow(&p);
    let first_old = r.server.pool().addresses()[0].addr;
    assert_eq!(time_exceeded_source(&mut r, 2, old), first_old);
    let pools = vec![PoolConfig {
        id: 1,
        sections: vec![SectionConfig {
            id: 0,
            ranges: vec!["192.0.2.0/29".into()],
        }],
    }];
    let now = r.at(3);
    r.server.replace_pools(now, pools).expect("renumbered");
    let mut q = udp((A, 5000), (PEER, 9000), b"again");
    assert_eq!(r.send(4, &mut q), Verdict::Forward);
    let (moved, _) = flow(&q);
    assert_eq!(moved.0.octets()[..3], [192, 0, 2], "{moved:?}");
    assert_eq!(moved.1, old.1, "the external port is kept");
    assert_eq!(
        r.server.table().counts().bindings,
        1,
        "the same binding, moved"
    );
    let mut reply = udp((PEER, 9000), moved, b"back");
    assert_eq!(r.send(5, &mut reply), Verdict::Forward);
    assert_eq!(flow(&reply), ((PEER, 9000), (A, 5000)));
    let src = time_exceeded_source(&mut r, 6, moved);
    assert_eq!(src, r.server.pool().addresses()[0].addr);
    assert_eq!(
        src.octets()[..3],
        [192, 0, 2],
        "not the old pool's {first_old}"
    );
}
