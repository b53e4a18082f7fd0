//! RFC 6888 REQ-6: translation turned off per destination address and/or port
//! ([`DataplaneConfig::bypass`], `--no-translate`).

use super::*;
use crate::dataplane::bypass::Bypass;

/// The provider's DNS server, reached untranslated on UDP 53 only.
const DNS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);

fn bypass_rig(rules: &[&str], dp: DataplaneConfig) -> Rig {
    let bypass = rules
        .iter()
        .map(|r| r.parse::<Bypass>().expect("rule"))
        .collect();
    rig_with(
        EngineConfig::with_pools(&["198.51.100.0/28"]),
        DataplaneConfig { bypass, ..dp },
    )
}

fn in_pool(r: &Rig, a: Ipv4Addr) -> bool {
    r.server.pool().index_of(a).is_some()
}

// RFC 6888 REQ-6: a packet to the bypassed destination and port leaves with the subscriber's
// own source, without binding, session or quota; other ports, protocols and destinations are
// still translated.
#[test]
fn no_translate_destination_port_is_forwarded_untranslated_and_nothing_else() {
    let mut r = bypass_rig(&["203.0.113.53/32:udp/53"], DataplaneConfig::default());
    let mut q = udp((A, 5000), (DNS, 53), b"query");
    let before = q.clone();
    assert_eq!(r.send(1, &mut q), Verdict::Forward);
    assert_eq!(flow(&q), ((A, 5000), (DNS, 53)), "untranslated");
    assert_eq!(q[8], 63, "TTL decremented as for any forwarded packet");
    assert!(valid_ip_checksum(&q));
    assert_eq!(
        &q[20..],
        &before[20..],
        "transport header and checksum untouched"
    );
    assert_eq!(r.server.table().counts().bindings, 0, "no binding");
    assert_eq!(r.nat.session_count(), 0, "no session");
    assert_eq!(r.nat.counters().bypassed, 1);
    assert_eq!(r.nat.counters().outbound, 0);

    for (mut p, what) in [
        (udp((A, 5000), (DNS, 54), b"x"), "another port"),
        (tcp((A, 5001), (DNS, 53), true, false), "another protocol"),
        (udp((A, 5002), (OTHER, 53), b"x"), "another destination"),
    ] {
        assert_eq!(r.send(2, &mut p), Verdict::Forward, "{what}");
        assert!(in_pool(&r, flow(&p).0.0), "{what} is translated");
    }
    assert_eq!(r.nat.counters().bypassed, 1);
    assert_eq!(r.nat.counters().outbound, 3);
}

// RFC 6888 REQ-6 with a prefix rule: every protocol to the prefix is bypassed, ICMP echo
// included; the pool itself is never bypassed, so hairpinning still works under a rule that
// covers it (RFC 4787 REQ-9).
#[test]
fn no_translate_prefix_covers_every_protocol_but_never_the_pool() {
    let mut r = bypass_rig(
        &["203.0.113.0/24", "198.51.100.0/24"],
        DataplaneConfig::default(),
    );
    let mut ping = echo_request(A, PEER, 0x4242);
    assert_eq!(r.send(1, &mut ping), Verdict::Forward);
    assert_eq!(flow(&ping).0, (A, 0x4242), "echo untranslated");
    let mut t = tcp((A, 5000), (OTHER, 80), true, false);
    assert_eq!(r.send(1, &mut t), Verdict::Forward);
    assert_eq!(flow(&t).0, (A, 5000));

    let b_ext = r.map(B, 6000, &[]);
    let mut hairpin = udp((A, 7000), (*b_ext.ip(), b_ext.port()), b"to B");
    assert_eq!(r.send(2, &mut hairpin), Verdict::Forward);
    let (src, dst) = flow(&hairpin);
    assert_eq!(dst, (B, 6000));
    assert!(in_pool(&r, src.0), "hairpinned with A's external source");
    assert_eq!(r.nat.counters().bypassed, 2);
}

// RFC 6888 REQ-6, reverse direction: the bypassed server's packets to the subscriber's shared
// address are the kernel's to route (only pool-bound traffic enters the TUN, see tun.rs); if
// one reaches the translator it is not NAT traffic. The subscriber's ICMP error about such a
// packet goes back untranslated, like the rest of the bypassed flow.
#[test]
fn no_translate_reverse_direction_is_left_to_routing_and_errors_follow_the_flow() {
    let mut r = bypass_rig(&["203.0.113.53/32:udp/53"], DataplaneConfig::default());
    let mut answer = udp((DNS, 53), (A, 5000), b"answer");
    assert_eq!(
        r.send(1, &mut answer),
        Verdict::Drop(DropReason::NotNatTraffic)
    );
    // A's port 5000 is closed by now: A reports it to the server.
    let answer = udp((DNS, 53), (A, 5000), b"answer");
    let mut err = port_unreachable(&answer, A);
    assert_eq!(r.send(2, &mut err), Verdict::Forward);
    let (outer_src, outer_dst, embedded) = icmp_error_parts(&err);
    assert_eq!((outer_src, outer_dst), (A, DNS));
    assert_eq!((embedded.src, embedded.dst), ((DNS, 53), (A, 5000)));
    assert_eq!(r.nat.counters().bypassed, 1);
    assert_eq!(r.nat.counters().dropped(DropReason::IcmpErrorNoMapping), 0);
}

// RFC 6888 REQ-6 with RFC 4787 REQ-13/14: bypassed packets get the TTL and MTU treatment of
// every forwarded packet (Time Exceeded, Fragmentation Needed, fragmentation), and the later
// fragments of a bypassed datagram follow their first one untranslated, in either order.
#[test]
fn no_translate_packets_keep_ttl_mtu_and_fragment_handling() {
    let dp = DataplaneConfig {
        mtu: 576,
        ..Default::default()
    };
    let mut r = bypass_rig(&["203.0.113.53/32:udp/53"], dp);
    let mut last_hop = udp((A, 5000), (DNS, 53), b"x");
    last_hop[8] = 1;
    refresh_ip_checksum(&mut last_hop);
    assert_eq!(
        r.send(1, &mut last_hop),
        Verdict::Drop(DropReason::TtlExceeded)
    );
    let icmp = r.nat.poll_transmit().expect("Time Exceeded");
    assert_eq!((icmp[20], icmp[21]), (11, 0));
    assert_eq!(&icmp[16..20], &A.octets());

    let mut big = udp((A, 5000), (DNS, 53), &[7u8; 1000]);
    assert_eq!(r.send(2, &mut big), Verdict::Drop(DropReason::TooBig));
    let icmp = r.nat.poll_transmit().expect("Fragmentation Needed");
    assert_eq!((icmp[20], icmp[21]), (3, 4));

    let mut big = udp((A, 5000), (DNS, 53), &[7u8; 1000]);
    big[6] &= !0x40;
    refresh_ip_checksum(&mut big);
    assert_eq!(r.send(3, &mut big), Verdict::Consumed);
    let pieces: Vec<_> = std::iter::from_fn(|| r.nat.poll_transmit()).collect();
    assert_eq!(pieces.len(), 2);
    for f in &pieces {
        assert_eq!(
            &f[12..16],
            &A.octets(),
            "fragments keep the subscriber source"
        );
        assert!(valid_ip_checksum(f));
    }

    // Already fragmented by the subscriber, second fragment first: held, then released
    // untranslated with the first (which alone shows the port the rule names).
    let whole = udp((A, 5001), (DNS, 53), &[9u8; 1000]);
    let frags = super::super::translate::fragment_for_test(&whole, 576);
    let mut second = frags[1].clone();
    assert_eq!(r.send(4, &mut second), Verdict::Consumed);
    let mut first = frags[0].clone();
    assert_eq!(r.send(4, &mut first), Verdict::Forward);
    assert_eq!(flow(&first).0, (A, 5001));
    let released = r.nat.poll_transmit().expect("held fragment released");
    assert_eq!(&released[12..16], &A.octets());
    assert_eq!(&released[20..], &frags[1][20..], "payload untouched");
    assert!(valid_ip_checksum(&released));
    assert_eq!(r.server.table().counts().bindings, 0);
    assert_eq!(r.nat.counters().dropped(DropReason::FragmentOrphan), 0);
}
