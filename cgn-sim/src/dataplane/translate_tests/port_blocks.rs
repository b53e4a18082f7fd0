//! Port Block Allocation (RFC 7422) under traffic: the dataplane's implicit bindings come from
//! the subscriber's block, and a full block refuses new flows like a quota (RFC 6888 REQ-11).

use super::*;
use crate::config::{BlockMode, PortBlocks};

// RFC 7422 §2 / RFC 6888 REQ-11: with dynamic blocks of 8 ports, A's UDP flows from eight
// internal ports leave from eight ports of A's block; the ninth flow is dropped with ICMP
// Host Unreachable (code 1) as over quota, and the existing flows still pass.
#[test]
fn implicit_bindings_stay_in_the_block_and_a_full_block_refuses_new_flows() {
    let mut c = EngineConfig::with_pools(&["198.51.100.1"]);
    c.port_blocks = Some(PortBlocks {
        size: 8,
        mode: BlockMode::Dynamic,
    });
    let mut r = rig_with(c, DataplaneConfig::default());
    let mut ports = Vec::new();
    for i in 0..8u16 {
        let mut p = udp((A, 5000 + i), (PEER, 9000), b"x");
        assert_eq!(r.send(1, &mut p), Verdict::Forward, "flow {i}");
        ports.push(flow(&p).0.1);
    }
    let block = r.server.port_block(0, A).expect("A's block");
    assert!(
        ports.iter().all(|p| block.contains(*p)),
        "{ports:?} in {block:?}"
    );
    while r.nat.poll_transmit().is_some() {}
    let mut ninth = udp((A, 6000), (PEER, 9000), b"x");
    assert_eq!(
        r.send(2, &mut ninth),
        Verdict::Drop(DropReason::QuotaExceeded)
    );
    let err = r.nat.poll_transmit().expect("Host Unreachable");
    assert_eq!((err[20], err[21]), (3, 1), "ICMP type 3 code 1");
    let mut again = udp((A, 5000), (PEER, 9000), b"x");
    assert_eq!(r.send(3, &mut again), Verdict::Forward);
}
