//! Timer refresh by inbound traffic (RFC 7857 §7), the IP ID of translated packets (RFC 7857
//! §10) and port parity of dynamic mappings (RFC 7857 §8), through [`Translator::process`].

use super::*;

/// A transit packet: runs the timers at `t` and creates nothing.
fn tick(r: &mut Rig, t: u64) {
    let mut p = udp((PEER, 1), (OTHER, 2), b"tick");
    assert_eq!(r.send(t, &mut p), Verdict::Drop(DropReason::NotNatTraffic));
}

fn apdf_rig() -> Rig {
    let dp = DataplaneConfig {
        filtering: Filtering::AddressAndPortDependent,
        ..Default::default()
    };
    rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp)
}

// RFC 7857 §7: inbound packets that are not admitted refresh nothing, neither the binding's
// idle timer nor a session (none is created for them). RFC 4787 REQ-6 keeps the outbound
// refresh only: the binding made at 1 s dies 300 s later however many refused packets came.
#[test]
fn refused_inbound_packets_refresh_nothing() {
    let mut r = apdf_rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"hi");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    let ext = flow(&p).0;
    for t in [100, 200, 290, 300] {
        let mut stranger = udp((OTHER, 1234), ext, b"let me in");
        assert_eq!(
            r.send(t, &mut stranger),
            Verdict::Drop(DropReason::Filtered)
        );
        assert_eq!(r.nat.session_count(), 1, "no session for the stranger");
    }
    tick(&mut r, 303);
    assert_eq!(r.nat.session_count(), 0);
    let mut reply = udp((PEER, 9000), ext, b"late");
    assert_eq!(
        r.send(304, &mut reply),
        Verdict::Drop(DropReason::NoMapping)
    );
    assert_eq!(r.nat.counters().dropped(DropReason::Filtered), 4);
}

// RFC 7857 §7 / RFC 4787 REQ-6a: an admitted inbound packet refreshes its session. A MAP
// whose FILTER leaves the peer out keeps the binding; under APDF the peer is then admitted only
// by the session A opened, which lives on as long as the peer keeps sending; a refused peer
// packet in between refreshes nothing, so the session ends 300 s after the last admitted one.
#[test]
fn admitted_inbound_packets_refresh_their_session() {
    let mut r = apdf_rig();
    let only_other = [PcpOption::Filter(Filter {
        prefix_length: 128,
        remote_peer_port: 0,
        remote_peer_address: IpAddr::V4(OTHER),
    })];
    let ext = r.map(A, 6000, &only_other);
    let ext = (*ext.ip(), ext.port());
    let mut p = udp((A, 6000), (PEER, 9000), b"hi");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    assert_eq!(flow(&p).0, ext, "A's MAP endpoint");
    for t in [250, 500] {
        // Without the refresh at 250 s the session would have ended at 301 s.
        let mut back = udp((PEER, 9000), ext, b"admitted");
        assert_eq!(r.send(t, &mut back), Verdict::Forward, "at {t} s");
    }
    let mut refused = udp((PEER, 9001), ext, b"refused");
    assert_eq!(
        r.send(700, &mut refused),
        Verdict::Drop(DropReason::Filtered)
    );
    tick(&mut r, 803);
    let mut late = udp((PEER, 9000), ext, b"late");
    assert_eq!(
        r.send(804, &mut late),
        Verdict::Drop(DropReason::Filtered),
        "session ended 300 s after the last admitted packet"
    );
}

/// Sets the IP ID of `packet` (checksum refreshed).
fn with_ident(mut packet: Vec<u8>, ident: u16) -> Vec<u8> {
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    refresh_ip_checksum(&mut packet);
    packet
}

// RFC 7857 §10 (RFC 6864 §4, §5.3.1): the NAT keeps the IP ID of the atomic datagrams it
// translates (DF = 1, not fragmented), in both directions and for UDP, TCP and ICMP.
#[test]
fn ip_id_is_kept_on_translated_atomic_packets() {
    let mut r = rig();
    let mut out = with_ident(udp((A, 5000), (PEER, 9000), b"x"), 0xbeef);
    assert_eq!(out[6] & 0x40, 0x40, "DF: atomic");
    assert_eq!(r.send(1, &mut out), Verdict::Forward);
    let ext = flow(&out).0;
    assert_ne!(ext.0, A, "translated");
    assert_eq!(u16::from_be_bytes([out[4], out[5]]), 0xbeef, "outbound");
    let mut back = with_ident(udp((PEER, 9000), ext, b"y"), 0x1234);
    assert_eq!(r.send(2, &mut back), Verdict::Forward);
    assert_eq!(flow(&back).1, (A, 5000));
    assert_eq!(u16::from_be_bytes([back[4], back[5]]), 0x1234, "inbound");
    let mut syn = with_ident(tcp((A, 5001), (PEER, 80), true, false), 0x0f0f);
    assert_eq!(r.send(3, &mut syn), Verdict::Forward);
    assert_eq!(u16::from_be_bytes([syn[4], syn[5]]), 0x0f0f, "TCP");
    let mut ping = Vec::new();
    PacketBuilder::ipv4(A.octets(), PEER.octets(), 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, b"ping")
        .expect("build");
    let mut ping = with_ident(ping, 0xabcd);
    assert_eq!(r.send(4, &mut ping), Verdict::Forward);
    assert_eq!(u16::from_be_bytes([ping[4], ping[5]]), 0xabcd, "ICMP");
    assert!(valid_ip_checksum(&ping));
}

/// External ports the translator gives to 32 even internal ports of A.
fn external_ports_of_even_internal_ports(config: EngineConfig) -> Vec<u16> {
    let mut r = rig_with(config, DataplaneConfig::default());
    (0..32u16)
        .map(|i| {
            let mut p = udp((A, 20_000 + 2 * i), (PEER, 9000), b"x");
            assert_eq!(r.send(1, &mut p), Verdict::Forward);
            flow(&p).0.1
        })
        .collect()
}

// RFC 4787 REQ-4 (parity preserved by default) and RFC 7857 §8: parity preservation MAY be
// turned off for dynamic mappings (`preserve_parity = false`); the translator's implicit
// bindings then take odd and even external ports alike.
#[test]
fn parity_can_be_turned_off_for_dynamic_mappings() {
    let kept =
        external_ports_of_even_internal_ports(EngineConfig::with_pools(&["198.51.100.0/28"]));
    assert!(kept.iter().all(|p| p % 2 == 0), "{kept:?}");
    let mut config = EngineConfig::with_pools(&["198.51.100.0/28"]);
    config.preserve_parity = false;
    let free = external_ports_of_even_internal_ports(config);
    assert!(free.iter().any(|p| p % 2 == 1), "{free:?}");
    assert!(free.iter().any(|p| p % 2 == 0), "{free:?}");
}

// RFC 7857 §11 (MAY: ICMP query mappings deleted with their last session), decided yes: an
// echo binding is refreshed by the outbound packets of every session on it with the same ICMP
// query timeout (60 s) as the sessions, so it ends in the same second as its last session,
// neither with the first one nor later. Two pings with one identifier, to PEER at 1 s and to
// OTHER at 30 s: at 62 s PEER's session is gone and the binding lives on OTHER's; at 91 s
// both are gone and the identifier's external port is released to the hold-down.
#[test]
fn icmp_query_mapping_ends_with_its_last_session() {
    let mut r = rig();
    let mut first = echo_request(A, PEER, 77);
    assert_eq!(r.send(1, &mut first), Verdict::Forward);
    let mut second = echo_request(A, OTHER, 77);
    assert_eq!(r.send(30, &mut second), Verdict::Forward);
    assert_eq!(flow(&first).0, flow(&second).0, "one query mapping");
    assert_eq!(r.nat.session_count(), 2);
    tick(&mut r, 62);
    assert_eq!(r.nat.session_count(), 1, "PEER's session expired");
    assert_eq!(
        r.server.table().counts().bindings,
        1,
        "the mapping outlives its first session"
    );
    tick(&mut r, 89);
    assert_eq!(r.server.table().counts().bindings, 1);
    tick(&mut r, 91);
    assert_eq!(r.nat.session_count(), 0);
    assert_eq!(
        r.server.table().counts().bindings,
        0,
        "the mapping went with its last session"
    );
}
