//! All-protocol MAP (RFC 6887 §11.1: protocol 0 = all protocols, internal port 0) through the
//! translator: the host behind it gets everything sent to its dedicated address.

use super::*;

/// A packet of a protocol without ports (GRE, IP protocol 47).
fn gre(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .write(&mut out, etherparse::IpNumber::GRE, &[0, 0, 0x08, 0])
        .expect("build");
    out
}

fn addresses(p: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let h = Ipv4HeaderSlice::from_slice(p).expect("ip");
    (h.source_addr(), h.destination_addr())
}

impl Rig {
    /// An all-protocol MAP (or its delete, lifetime 0) from `client`; the answer's result and
    /// external address.
    fn map_all(
        &mut self,
        client: Ipv4Addr,
        lifetime: u32,
    ) -> (pcp_client::wire::ResultCode, Ipv4Addr) {
        let req = RequestRepr {
            lifetime,
            client_ip: IpAddr::V4(client),
            data: OpcodeData::Map(MapData {
                nonce: Nonce([9; 12]),
                protocol: Protocol::ALL,
                internal_port: 0,
                external_port: 0,
                external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            }),
            options: Options::EMPTY,
        };
        let mut buf = [0u8; 1100];
        let len = req.emit(&mut buf).expect("emit");
        let mut out = [0u8; 1100];
        let from = SocketAddr::new(IpAddr::V4(client), 40000);
        let n = self
            .server
            .handle(self.start, from, Interface::Inside, &buf[..len], &mut out)
            .expect("answer");
        let resp = ResponseRepr::parse(&out[..n]).expect("response");
        let OpcodeData::Map(m) = resp.data else {
            panic!("not MAP")
        };
        let IpAddr::V4(a) = m.external_address else {
            panic!("not v4")
        };
        (resp.result, a)
    }
}

// RFC 6887 §11.1 and §11.3 item 2: a MAP for protocol 0 (all protocols, port 0) makes its host
// the "DMZ host" of an external address: inbound UDP, TCP, ICMP echo and portless protocols
// (GRE) to any port of that address without a mapping of its own reach the host, port
// unchanged; the host's answers and its own portless traffic leave from that address (and
// from the port the answer was sent to). Deleted, the address forwards nothing any more.
#[test]
fn all_protocol_map_forwards_every_protocol_to_its_host() {
    let mut r = rig();
    let (result, x) = r.map_all(A, 3600);
    assert!(result.is_success(), "{result:?}");
    // UDP to a port nobody mapped, from anyone.
    let mut p = udp((PEER, 9000), (x, 7777), b"in");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    assert_eq!(flow(&p), ((PEER, 9000), (A, 7777)));
    // The answer leaves from the address and port it was sent to.
    let mut answer = udp((A, 7777), (PEER, 9000), b"out");
    assert_eq!(r.send(2, &mut answer), Verdict::Forward);
    assert_eq!(flow(&answer), ((x, 7777), (PEER, 9000)));
    // TCP SYN to another port: to the host, not held as unsolicited.
    let mut syn = tcp((OTHER, 40000), (x, 22), true, false);
    assert_eq!(r.send(3, &mut syn), Verdict::Forward);
    assert_eq!(flow(&syn), ((OTHER, 40000), (A, 22)));
    // A ping of the address.
    let mut ping = echo_request(OTHER, x, 77);
    assert_eq!(r.send(3, &mut ping), Verdict::Forward);
    assert_eq!(flow(&ping).1, (A, 77));
    // GRE both ways: addresses rewritten, checksum right.
    let mut inbound = gre(PEER, x);
    assert_eq!(r.send(4, &mut inbound), Verdict::Forward);
    assert_eq!(addresses(&inbound), (PEER, A));
    assert!(valid_ip_checksum(&inbound));
    let mut outbound = gre(A, PEER);
    assert_eq!(r.send(4, &mut outbound), Verdict::Forward);
    assert_eq!(addresses(&outbound), (x, PEER));
    assert!(valid_ip_checksum(&outbound));
    // Another subscriber's portless traffic and its share of the pool are not the host's.
    let mut other = gre(B, PEER);
    assert_eq!(
        r.send(5, &mut other),
        Verdict::Drop(DropReason::UnsupportedProtocol)
    );
    let mut b_out = udp((B, 5000), (PEER, 9000), b"b");
    assert_eq!(r.send(5, &mut b_out), Verdict::Forward);
    assert_ne!(flow(&b_out).0.0, x, "B never gets the dedicated address");
    // Deleted (lifetime 0, same nonce): nothing more reaches the host through it.
    let (result, _) = r.map_all(A, 0);
    assert!(result.is_success());
    let mut late = gre(PEER, x);
    assert_eq!(
        r.send(6, &mut late),
        Verdict::Drop(DropReason::UnsupportedProtocol)
    );
    let mut late_udp = udp((PEER, 9000), (x, 6666), b"late");
    assert_eq!(
        r.send(6, &mut late_udp),
        Verdict::Drop(DropReason::NoMapping)
    );
}
