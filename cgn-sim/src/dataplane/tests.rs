//! Byte-level translation tests. Every checksum after a rewrite is verified with `etherparse`,
//! an implementation independent of ours.

use std::net::Ipv4Addr;

use etherparse::{Icmpv4Slice, Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, UdpHeaderSlice};
use proptest::prelude::*;

use super::icmp::{IcmpError, build_error};
use super::ipv4::{Ipv4Packet, PacketError, proto};
use super::rewrite::{Classified, Flow, Side, classify, rewrite_flow, rewrite_icmp_error};

const INSIDE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const CGN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut out, payload)
        .expect("build");
    out
}

fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 0x1234_5678, 65535)
        .syn()
        .ack(7)
        .write(&mut out, payload)
        .expect("build");
    out
}

fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, reply: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    b.write(&mut out, b"ping payload").expect("build");
    out
}

/// Checks every checksum of `packet` (and of an embedded packet in an ICMP error, when it is
/// complete) with etherparse.
fn assert_checksums(packet: &[u8]) {
    let ip = Ipv4HeaderSlice::from_slice(packet).expect("ipv4");
    let hdr = ip.to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IP header checksum"
    );
    let hl = usize::from(ip.ihl()) * 4;
    let total = usize::from(ip.total_len());
    let l4 = &packet[hl..total];
    match ip.protocol().0 {
        proto::UDP => {
            let u = UdpHeaderSlice::from_slice(l4).expect("udp");
            if u.checksum() != 0 {
                let want = u
                    .to_header()
                    .calc_checksum_ipv4(&hdr, &l4[8..])
                    .expect("sum");
                assert_eq!(u.checksum(), want, "UDP checksum");
            }
        }
        proto::TCP => {
            let t = TcpHeaderSlice::from_slice(l4).expect("tcp");
            let data = &l4[t.slice().len()..];
            assert_eq!(
                t.checksum(),
                t.calc_checksum_ipv4(&ip, data).expect("sum"),
                "TCP checksum"
            );
        }
        proto::ICMP => {
            let i = Icmpv4Slice::from_slice(l4).expect("icmp");
            let want = i.icmp_type().calc_checksum(i.payload());
            assert_eq!(i.checksum(), want, "ICMP checksum");
            if matches!(l4[0], 3 | 11 | 12) {
                let inner = &l4[8..];
                let inner_ip = Ipv4HeaderSlice::from_slice(inner).expect("embedded ipv4");
                let h = inner_ip.to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "embedded IP checksum"
                );
                if usize::from(inner_ip.total_len()) == inner.len() {
                    assert_checksums(inner);
                }
            }
        }
        _ => {}
    }
}

fn flow_of(packet: &[u8]) -> Flow {
    match classify(packet) {
        Ok(Classified::Flow { flow, .. }) => flow,
        other => panic!("not a flow: {other:?}"),
    }
}

// RFC 4787 / 1624: outbound UDP source rewrite, inbound destination rewrite, checksums right.
#[test]
fn udp_outbound_and_inbound_rewrite() {
    let mut p = udp((INSIDE, 5000), (PEER, 9000), b"hello through the CGN");
    rewrite_flow(&mut p, Side::Source, (EXTERNAL, 40000)).expect("rewrite");
    assert_eq!(
        flow_of(&p),
        Flow {
            protocol: proto::UDP,
            src: (EXTERNAL, 40000),
            dst: (PEER, 9000)
        }
    );
    assert_checksums(&p);
    assert!(p.ends_with(b"hello through the CGN"));

    let mut r = udp((PEER, 9000), (EXTERNAL, 40000), b"reply");
    rewrite_flow(&mut r, Side::Destination, (INSIDE, 5000)).expect("rewrite");
    assert_eq!(flow_of(&r).dst, (INSIDE, 5000));
    assert_checksums(&r);
}

// RFC 768: a zero UDP checksum means "none" and stays zero.
#[test]
fn udp_zero_checksum_stays_zero() {
    let mut p = udp((INSIDE, 5000), (PEER, 9000), b"x");
    p[26] = 0;
    p[27] = 0;
    rewrite_flow(&mut p, Side::Source, (EXTERNAL, 40000)).expect("rewrite");
    assert_eq!(&p[26..28], &[0, 0]);
    assert_checksums(&p);
}

#[test]
fn tcp_rewrite_keeps_flags_and_checksums() {
    let mut p = tcp((INSIDE, 51000), (PEER, 443), b"GET / HTTP/1.1\r\n\r\n");
    match classify(&p) {
        Ok(Classified::Flow { tcp_flags, .. }) => assert_eq!(tcp_flags & 0x12, 0x12),
        other => panic!("{other:?}"),
    }
    rewrite_flow(&mut p, Side::Source, (EXTERNAL, 1024)).expect("rewrite");
    assert_checksums(&p);
    rewrite_flow(
        &mut p,
        Side::Destination,
        (Ipv4Addr::new(198, 51, 100, 9), 2000),
    )
    .expect("rw");
    assert_checksums(&p);
}

// RFC 5508 REQ-1: ICMP query identifiers are translated like ports.
#[test]
fn icmp_echo_identifier_rewrite() {
    let mut p = echo(INSIDE, PEER, 0x1111, false);
    assert_eq!(flow_of(&p).src, (INSIDE, 0x1111));
    rewrite_flow(&mut p, Side::Source, (EXTERNAL, 0x2222)).expect("rewrite");
    assert_eq!(flow_of(&p).src, (EXTERNAL, 0x2222));
    assert_checksums(&p);

    let mut r = echo(PEER, EXTERNAL, 0x2222, true);
    match classify(&r) {
        Ok(Classified::Flow { echo_reply, .. }) => assert!(echo_reply),
        other => panic!("{other:?}"),
    }
    rewrite_flow(&mut r, Side::Destination, (INSIDE, 0x1111)).expect("rewrite");
    assert_eq!(flow_of(&r).dst, (INSIDE, 0x1111));
    assert_checksums(&r);
}

#[test]
fn ttl_decrement_updates_header_checksum() {
    let mut p = udp((INSIDE, 5000), (PEER, 9000), b"ttl");
    let mut ip = Ipv4Packet::new_checked(&mut p[..]).expect("ip");
    ip.decrement_ttl();
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    assert_checksums(&p);
}

/// An ICMP error sent by `from` about `original`, built by etherparse-independent code paths:
/// our own builder, checked with etherparse.
fn icmp_error_about(original: &[u8], from: Ipv4Addr, error: IcmpError) -> Vec<u8> {
    let mut out = [0u8; 600];
    let len = build_error(original, from, error, 7, &mut out).expect("error allowed");
    out[..len].to_vec()
}

// RFC 5508 REQ-4: inbound ICMP error about a translated flow — embedded source and outer
// destination go back to the internal endpoint; type and code kept.
#[test]
fn inbound_icmp_error_restores_embedded_and_outer_addresses() {
    // The datagram as it left the CGN (already translated) ...
    let sent = udp((EXTERNAL, 40000), (PEER, 9000), b"probe");
    // ... and the port unreachable the peer answers with.
    let mut err = icmp_error_about(&sent, PEER, IcmpError::PortUnreachable);
    assert_checksums(&err);
    match classify(&err) {
        Ok(Classified::IcmpError {
            icmp_type: 3,
            code: 3,
            embedded,
            outer_dst,
            ..
        }) => {
            assert_eq!(outer_dst, EXTERNAL);
            assert_eq!(
                embedded,
                Flow {
                    protocol: proto::UDP,
                    src: (EXTERNAL, 40000),
                    dst: (PEER, 9000)
                }
            );
        }
        other => panic!("{other:?}"),
    }
    rewrite_icmp_error(
        &mut err,
        Side::Destination,
        INSIDE,
        Side::Source,
        (INSIDE, 5000),
    )
    .expect("rewrite");
    match classify(&err) {
        Ok(Classified::IcmpError {
            icmp_type: 3,
            code: 3,
            embedded,
            outer_dst,
            outer_src,
        }) => {
            assert_eq!((outer_src, outer_dst), (PEER, INSIDE));
            assert_eq!(embedded.src, (INSIDE, 5000));
            assert_eq!(embedded.dst, (PEER, 9000));
        }
        other => panic!("{other:?}"),
    }
    // Every checksum, the embedded UDP one included (the whole datagram is quoted).
    assert_checksums(&err);
    // It is exactly the error the inside host would get about its own untranslated datagram.
    let original = udp((INSIDE, 5000), (PEER, 9000), b"probe");
    let expected = icmp_error_about(&original, PEER, IcmpError::PortUnreachable);
    let mut expected_routed = expected.clone();
    expected_routed[16..20].copy_from_slice(&INSIDE.octets());
    let mut ip = Ipv4Packet::new_checked(&mut expected_routed[..]).expect("ip");
    ip.fill_checksum();
    assert_eq!(&err[20..], &expected_routed[20..]);
}

// RFC 5508 REQ-5: outbound ICMP error from an inside host about an inbound packet.
#[test]
fn outbound_icmp_error_rewrites_outer_source_and_embedded_destination() {
    let received = udp((PEER, 9000), (INSIDE, 5000), b"unwanted");
    let mut err = icmp_error_about(&received, INSIDE, IcmpError::PortUnreachable);
    rewrite_icmp_error(
        &mut err,
        Side::Source,
        EXTERNAL,
        Side::Destination,
        (EXTERNAL, 40000),
    )
    .expect("rewrite");
    match classify(&err) {
        Ok(Classified::IcmpError {
            outer_src,
            embedded,
            ..
        }) => {
            assert_eq!(outer_src, EXTERNAL);
            assert_eq!(embedded.dst, (EXTERNAL, 40000));
        }
        other => panic!("{other:?}"),
    }
    assert_checksums(&err);
}

#[test]
fn icmp_error_about_echo_and_tcp_is_rewritten() {
    let sent = echo(EXTERNAL, PEER, 0x2222, false);
    let mut err = icmp_error_about(&sent, CGN, IcmpError::TimeExceeded);
    rewrite_icmp_error(
        &mut err,
        Side::Destination,
        INSIDE,
        Side::Source,
        (INSIDE, 0x1111),
    )
    .expect("rewrite");
    assert_checksums(&err);
    let sent = tcp((EXTERNAL, 1024), (PEER, 443), b"");
    let mut err = icmp_error_about(&sent, PEER, IcmpError::FragmentationNeeded { mtu: 1280 });
    assert_eq!(&err[24..28], &[0, 0, 0x05, 0x00]);
    rewrite_icmp_error(
        &mut err,
        Side::Destination,
        INSIDE,
        Side::Source,
        (INSIDE, 51000),
    )
    .expect("rewrite");
    assert_checksums(&err);
}

// RFC 5508 REQ-3: bad ICMP checksum or bad embedded header checksum → drop.
#[test]
fn icmp_errors_with_bad_checksums_are_rejected() {
    let sent = udp((EXTERNAL, 40000), (PEER, 9000), b"probe");
    let err = icmp_error_about(&sent, PEER, IcmpError::PortUnreachable);
    let mut bad = err.clone();
    bad[22] ^= 0xff;
    assert_eq!(classify(&bad), Err(PacketError::BadIcmpChecksum));
    let mut bad = err.clone();
    bad[28 + 10] ^= 0x01; // embedded IP checksum
    bad[22] ^= 0x01; // keep the ICMP checksum valid
    assert_eq!(classify(&bad), Err(PacketError::BadHeaderChecksum));
}

#[test]
fn classify_rejects_broken_ip() {
    let p = udp((INSIDE, 5000), (PEER, 9000), b"x");
    assert_eq!(
        classify(&p[..19]),
        Err(PacketError::Truncated { len: 19, need: 20 })
    );
    let mut bad = p.clone();
    bad[0] = 0x65;
    assert_eq!(classify(&bad), Err(PacketError::NotIpv4(6)));
    let mut bad = p.clone();
    bad[0] = 0x44;
    assert_eq!(classify(&bad), Err(PacketError::BadHeaderLength(4)));
    let mut bad = p.clone();
    bad[8] ^= 1;
    assert_eq!(classify(&bad), Err(PacketError::BadHeaderChecksum));
    assert!(matches!(
        classify(&p[..p.len() - 1]),
        Err(PacketError::BadTotalLength { .. })
    ));
}

// RFC 4787 REQ-14: fragments are handled, not dropped silently: a non-first fragment is
// reported with its reassembly key, and rewriting it changes only the address.
#[test]
fn non_first_fragment_is_classified_and_address_rewritten() {
    let mut p = udp((INSIDE, 5000), (PEER, 9000), &[7u8; 64]);
    p[6] = 0x00;
    p[7] = 0x03; // offset 24 bytes
    let mut ip = Ipv4Packet::new_checked(&mut p[..]).expect("ip");
    ip.fill_checksum();
    let ident = ip.ident();
    assert_eq!(
        classify(&p),
        Ok(Classified::Fragment {
            protocol: proto::UDP,
            src: INSIDE,
            dst: PEER,
            ident
        })
    );
    let payload = p[20..].to_vec();
    rewrite_flow(&mut p, Side::Source, (EXTERNAL, 40000)).expect("rewrite");
    assert_eq!(
        &p[20..],
        &payload[..],
        "payload of a later fragment is untouched"
    );
    assert!(
        Ipv4Packet::new_checked(&p[..])
            .expect("ip")
            .verify_checksum()
    );
}

// RFC 6888 REQ-11: host unreachable (code 1) to the sender when no mapping can be made.
#[test]
fn host_unreachable_is_built_with_the_original_quoted() {
    let p = udp((INSIDE, 5000), (PEER, 9000), b"over quota");
    let err = icmp_error_about(&p, Ipv4Addr::new(100, 64, 0, 1), IcmpError::HostUnreachable);
    assert_eq!(&err[12..16], &[100, 64, 0, 1]);
    assert_eq!(&err[16..20], &INSIDE.octets());
    assert_eq!((err[20], err[21]), (3, 1));
    assert_eq!(&err[28..], &p[..]);
    assert_checksums(&err);
}

// RFC 1812 §4.3.2.7: no ICMP error about ICMP errors, later fragments, or odd sources.
#[test]
fn no_icmp_error_about_errors_fragments_or_multicast() {
    let mut out = [0u8; 600];
    let p = udp((INSIDE, 5000), (PEER, 9000), b"x");
    let err = icmp_error_about(&p, PEER, IcmpError::PortUnreachable);
    assert_eq!(
        build_error(&err, CGN, IcmpError::HostUnreachable, 1, &mut out),
        None
    );
    let mut frag = p.clone();
    frag[7] = 1;
    assert_eq!(
        build_error(&frag, CGN, IcmpError::HostUnreachable, 1, &mut out),
        None
    );
    let m = udp((Ipv4Addr::new(224, 0, 0, 1), 5000), (PEER, 9000), b"x");
    assert_eq!(
        build_error(&m, CGN, IcmpError::HostUnreachable, 1, &mut out),
        None
    );
    // Echo is a query, not an error: an error about it is fine.
    let e = echo(INSIDE, PEER, 1, false);
    assert!(build_error(&e, CGN, IcmpError::HostUnreachable, 1, &mut out).is_some());
    // Large originals are quoted up to the 576-byte limit.
    let big = udp((INSIDE, 5000), (PEER, 9000), &[1u8; 1400]);
    assert_eq!(
        build_error(&big, CGN, IcmpError::HostUnreachable, 1, &mut out),
        Some(576)
    );
}

proptest! {
    // Outbound then inbound translation restores the original endpoints, and every packet on
    // the way has valid checksums (the round-trip property).
    #[test]
    fn translate_and_restore_is_identity(
        tcp_proto in any::<bool>(),
        inside_port in 1u16..,
        ext_port in 1u16..,
        peer_port in 1u16..,
        ext_last in 0u8..16,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let ext = Ipv4Addr::new(198, 51, 100, ext_last);
        let build = |s, d| if tcp_proto { tcp(s, d, &payload) } else { udp(s, d, &payload) };
        let original = build((INSIDE, inside_port), (PEER, peer_port));
        let mut p = original.clone();
        rewrite_flow(&mut p, Side::Source, (ext, ext_port)).expect("out");
        assert_checksums(&p);
        rewrite_flow(&mut p, Side::Source, (INSIDE, inside_port)).expect("back");
        prop_assert_eq!(&p, &original);

        let reply = build((PEER, peer_port), (ext, ext_port));
        let mut r = reply.clone();
        rewrite_flow(&mut r, Side::Destination, (INSIDE, inside_port)).expect("in");
        assert_checksums(&r);
        prop_assert_eq!(flow_of(&r).dst, (INSIDE, inside_port));
        prop_assert_eq!(&r[r.len() - payload.len()..], &payload[..]);
    }

    // Arbitrary bytes never panic the classifier or the rewriters.
    #[test]
    fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = classify(&bytes);
        let mut b = bytes.clone();
        let _ = rewrite_flow(&mut b, Side::Source, (EXTERNAL, 1));
        let mut b = bytes.clone();
        let _ = rewrite_icmp_error(&mut b, Side::Destination, INSIDE, Side::Source, (INSIDE, 1));
        let mut out = [0u8; 600];
        let _ = build_error(&bytes, CGN, IcmpError::HostUnreachable, 1, &mut out);
    }
}
