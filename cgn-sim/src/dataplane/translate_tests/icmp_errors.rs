//! RFC 5508 ICMP error requirements seen through [`Translator::process`]: extensions and
//! padding (REQ-3d), errors without a mapping (REQ-4, REQ-5), and errors about a query
//! session (REQ-6).

use super::*;

/// Internet checksum (RFC 1071) over `data`, computed from scratch.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A Time Exceeded from `router` to `to` quoting `original` as RFC 4884 lays it out when
/// extensions follow: the quoted datagram zero-padded to 128 bytes, the length field set (in
/// 32-bit words), then an extension structure carrying one MPLS label stack object (RFC 4950),
/// as an MPLS router on a traceroute path sends it. Returns the packet and the offset of the
/// extension structure in it.
fn time_exceeded_with_extensions(
    original: &[u8],
    router: Ipv4Addr,
    to: Ipv4Addr,
) -> (Vec<u8>, usize) {
    let mut icmp = vec![11, 0, 0, 0, 0, 128 / 4, 0, 0];
    let mut quoted = original.to_vec();
    quoted.resize(128, 0);
    icmp.extend_from_slice(&quoted);
    // Extension header: version 2, reserved, checksum; object: length 8, class 1 (MPLS
    // label stack), C-type 1, one label stack entry (label 16000, S = 1, TTL 1).
    let mut ext = vec![0x20, 0, 0, 0, 0, 8, 1, 1];
    ext.extend_from_slice(&((16_000u32 << 12) | (1 << 8) | 1).to_be_bytes());
    let c = internet_checksum(&ext);
    ext[2..4].copy_from_slice(&c.to_be_bytes());
    icmp.extend_from_slice(&ext);
    let c = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = u16::try_from(20 + icmp.len()).expect("small");
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&router.octets());
    p.extend_from_slice(&to.octets());
    refresh_ip_checksum(&mut p);
    let ext_at = p.len() + 8 + 128;
    p.extend_from_slice(&icmp);
    (p, ext_at)
}

// RFC 5508 REQ-3d (with RFC 4884): ICMP extensions and the padding before them are left out
// of the NAT's checksum work; after translation the ICMP checksum over the whole message is
// still right, and the padding, length field and extension structure are untouched.
#[test]
fn icmp_error_with_extensions_and_padding_keeps_a_correct_checksum() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"probe");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    let ext = flow(&p).0;
    let router = Ipv4Addr::new(203, 0, 113, 254);
    let (mut err, ext_at) = time_exceeded_with_extensions(&p, router, ext.0);
    let sent = err.clone();
    assert_eq!(r.send(2, &mut err), Verdict::Forward);

    match classify(&err) {
        Ok(Classified::IcmpError {
            outer_dst,
            icmp_type,
            embedded,
            ..
        }) => {
            assert_eq!((outer_dst, icmp_type), (A, 11));
            assert_eq!(embedded.src, (A, 5000), "embedded source restored");
        }
        other => panic!("{other:?}"),
    }
    let icmp = &err[20..];
    // Recomputed from scratch over every byte (etherparse's Time Exceeded model takes bytes 4
    // to 7 as zero, so it cannot check a message carrying an RFC 4884 length field).
    assert_eq!(
        internet_checksum(icmp),
        0,
        "full recomputation over the message"
    );
    assert_eq!(icmp[5], 32, "RFC 4884 length field kept");
    let quoted_end = 20 + 8 + p.len();
    assert!(
        err[quoted_end..ext_at].iter().all(|b| *b == 0),
        "padding untouched"
    );
    assert_eq!(
        &err[ext_at..],
        &sent[ext_at..],
        "extension structure untouched"
    );
    assert_eq!(
        internet_checksum(&err[ext_at..]),
        0,
        "extension checksum still valid"
    );
    assert!(valid_ip_checksum(&err[28..]), "embedded IP header checksum");
}

// RFC 5508 REQ-4 (inbound) and REQ-5 (outbound): an ICMP error about a flow the NAT has no
// mapping for is dropped and counted (`icmp_error_no_mapping`); the same error once the
// mapping exists is translated, so the drop is about the missing mapping.
#[test]
fn icmp_errors_without_a_mapping_are_dropped_in_both_directions() {
    let mut r = rig();
    // Inbound: the Internet peer reports a packet "from" a pool endpoint nobody holds.
    let unknown = udp((Ipv4Addr::new(198, 51, 100, 3), 7777), (PEER, 9000), b"?");
    let mut err = port_unreachable(&unknown, PEER);
    assert_eq!(
        r.send(1, &mut err),
        Verdict::Drop(DropReason::IcmpErrorNoMapping)
    );
    // Outbound: A reports a packet to its port 5000, which has no binding.
    let never_sent = udp((PEER, 9000), (A, 5000), b"?");
    let mut err = port_unreachable(&never_sent, A);
    assert_eq!(
        r.send(1, &mut err),
        Verdict::Drop(DropReason::IcmpErrorNoMapping)
    );
    assert_eq!(r.nat.counters().dropped(DropReason::IcmpErrorNoMapping), 2);
    assert!(r.nat.poll_transmit().is_none(), "dropped silently");
    assert_eq!(r.nat.counters().icmp_errors, 0);

    // With a binding for A:5000 the outbound error is translated.
    let mut out = udp((A, 5000), (PEER, 9000), b"hi");
    assert_eq!(r.send(2, &mut out), Verdict::Forward);
    let ext = flow(&out).0;
    let mut err = port_unreachable(&never_sent, A);
    assert_eq!(r.send(3, &mut err), Verdict::Forward);
    assert_eq!(&err[12..16], &ext.0.octets(), "from A's external address");
    assert_eq!(r.nat.counters().icmp_errors, 1);
}

// RFC 5508 REQ-6: an ICMP error about an ICMP query (echo) session neither deletes nor
// refreshes it. The echo session and its binding (60 s idle, REQ-2) still exist after the
// error, and they expire at the deadline set by the echo request, not 60 s after the error.
#[test]
fn icmp_error_about_an_echo_session_neither_refreshes_nor_deletes_it() {
    let mut r = rig();
    let mut ping = echo_request(A, PEER, 0x4242);
    assert_eq!(r.send(1, &mut ping), Verdict::Forward);
    let ext = flow(&ping).0;
    assert_eq!(r.nat.session_count(), 1);

    // A router on the way cannot deliver the echo request: Host Unreachable about it.
    let mut err = [0u8; 600];
    let n = super::super::icmp::build_error(
        &ping,
        Ipv4Addr::new(203, 0, 113, 254),
        super::super::icmp::IcmpError::HostUnreachable,
        1,
        &mut err,
    )
    .expect("error");
    let mut err = err[..n].to_vec();
    assert_eq!(r.send(50, &mut err), Verdict::Forward);
    assert_eq!(&err[16..20], &A.octets(), "delivered to A");
    assert_eq!(r.nat.session_count(), 1, "not deleted");
    assert_eq!(r.server.table().counts().bindings, 1, "binding not deleted");

    // A transit packet only moves the clock (it creates nothing).
    let tick = |r: &mut Rig, t| {
        let mut p = udp((PEER, 1), (OTHER, 2), b"tick");
        r.send(t, &mut p)
    };
    tick(&mut r, 60);
    assert_eq!(
        r.nat.session_count(),
        1,
        "alive until 60 s after the request"
    );
    tick(&mut r, 63);
    assert_eq!(
        r.nat.session_count(),
        0,
        "expired at the request's deadline"
    );
    assert_eq!(r.server.table().counts().bindings, 0);
    let mut pong = Vec::new();
    PacketBuilder::ipv4(PEER.octets(), ext.0.octets(), 64)
        .icmpv4_echo_reply(ext.1, 1)
        .write(&mut pong, b"ping")
        .expect("build");
    assert_eq!(r.send(64, &mut pong), Verdict::Drop(DropReason::NoMapping));
}
