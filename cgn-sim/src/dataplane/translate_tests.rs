//! Translator tests with a real PCP server engine (shared table, pool, quotas) and a fake
//! clock. Packets are built and checked with `etherparse`, independently of our codec.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use etherparse::{Ipv4HeaderSlice, PacketBuilder};
use pcp_client::wire::{
    Filter, MapData, Nonce, OpcodeData, Options, PcpOption, Protocol, RequestRepr, ResponseRepr,
};
use proptest::prelude::*;
use rand::SeedableRng;

use super::rewrite::{Classified, classify};
use super::translate::{DataplaneConfig, DropReason, Filtering, Translator, Verdict};
use crate::config::EngineConfig;
use crate::server::{Interface, Server};

mod all_protocols;
mod bypass;
mod icmp_errors;
mod logging;
mod port_blocks;
mod refresh_and_ids;
mod renumbering;

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

struct Rig {
    server: Server,
    nat: Translator,
    start: Instant,
}

fn rig_with(config: EngineConfig, dp: DataplaneConfig) -> Rig {
    let start = Instant::now();
    let server = Server::new(
        config,
        start,
        Box::new(rand::rngs::StdRng::seed_from_u64(7)),
    )
    .expect("server");
    let nat = Translator::new(dp, &server, start);
    Rig { server, nat, start }
}

fn rig() -> Rig {
    rig_with(
        EngineConfig::with_pools(&["198.51.100.0/28"]),
        DataplaneConfig::default(),
    )
}

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut out, payload)
        .expect("build");
    out
}

fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), syn: bool, ack: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64).tcp(src.1, dst.1, 1, 65535);
    let b = if syn { b.syn() } else { b };
    let b = if ack { b.ack(1) } else { b };
    b.write(&mut out, &[]).expect("build");
    out
}

/// An ICMP echo request from `src` to `dst` with identifier `ident`.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
    let mut ping = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(ident, 1)
        .write(&mut ping, b"ping")
        .expect("build");
    ping
}

/// The outer source and destination of an ICMP error and the flow it quotes.
fn icmp_error_parts(packet: &[u8]) -> (Ipv4Addr, Ipv4Addr, super::rewrite::Flow) {
    match classify(packet) {
        Ok(Classified::IcmpError {
            outer_src,
            outer_dst,
            embedded,
            ..
        }) => (outer_src, outer_dst, embedded),
        other => panic!("not an ICMP error: {other:?}"),
    }
}

fn flow(packet: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    match classify(packet) {
        Ok(Classified::Flow { flow, .. }) => (flow.src, flow.dst),
        other => panic!("not a flow: {other:?}"),
    }
}

/// Recomputes the IPv4 header checksum (with etherparse) after a test edited header bytes.
fn refresh_ip_checksum(packet: &mut [u8]) {
    let c = Ipv4HeaderSlice::from_slice(packet)
        .expect("ip")
        .to_header()
        .calc_header_checksum();
    packet[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The ICMP Port Unreachable `from` sends about `packet`.
fn port_unreachable(packet: &[u8], from: Ipv4Addr) -> Vec<u8> {
    let mut err = [0u8; 600];
    let n = super::icmp::build_error(
        packet,
        from,
        super::icmp::IcmpError::PortUnreachable,
        1,
        &mut err,
    )
    .expect("error");
    err[..n].to_vec()
}

fn valid_ip_checksum(packet: &[u8]) -> bool {
    let h = Ipv4HeaderSlice::from_slice(packet).expect("ip").to_header();
    h.header_checksum == h.calc_header_checksum()
}

impl Rig {
    fn at(&self, secs: u64) -> Instant {
        self.start + Duration::from_secs(secs)
    }

    fn send(&mut self, secs: u64, packet: &mut [u8]) -> Verdict {
        let now = self.at(secs);
        self.server.handle_timeout(now);
        self.nat.handle_timeout(&mut self.server, now);
        self.nat.process(&mut self.server, now, packet)
    }

    fn map(&mut self, client: Ipv4Addr, port: u16, options: &[PcpOption<'_>]) -> SocketAddrV4 {
        let req = RequestRepr {
            lifetime: 3600,
            client_ip: IpAddr::V4(client),
            data: OpcodeData::Map(MapData {
                nonce: Nonce([client.octets()[3]; 12]),
                protocol: Protocol::UDP,
                internal_port: port,
                external_port: 0,
                external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            }),
            options: Options::List(options),
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
        assert!(resp.result.is_success(), "{:?}", resp.result);
        let OpcodeData::Map(m) = resp.data else {
            panic!("not MAP")
        };
        let IpAddr::V4(a) = m.external_address else {
            panic!("not v4")
        };
        SocketAddrV4::new(a, m.external_port)
    }
}

// RFC 4787 REQ-1: outbound creates an endpoint-independent binding from the pool; the same
// internal endpoint keeps it for every destination.
#[test]
fn outbound_udp_is_translated_to_one_binding_for_all_destinations() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"hi");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    let (src, dst) = flow(&p);
    assert!(
        r.server.pool().index_of(src.0).is_some(),
        "source is a pool address"
    );
    assert_eq!(dst, (PEER, 9000));
    assert!(valid_ip_checksum(&p));
    assert_eq!(p[8], 63, "TTL decremented");
    let mut q = udp((A, 5000), (OTHER, 53), b"again");
    assert_eq!(r.send(2, &mut q), Verdict::Forward);
    assert_eq!(flow(&q).0, src, "EIM: same external endpoint");
    assert_eq!(r.server.table().counts().bindings, 1);
    assert_eq!(r.nat.session_count(), 2);
}

// Outbound then inbound restores the original endpoints (EIF admits the reply).
#[test]
fn reply_reaches_the_subscriber() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"hi");
    r.send(1, &mut p);
    let ext = flow(&p).0;
    let mut reply = udp((PEER, 9000), ext, b"back");
    assert_eq!(r.send(2, &mut reply), Verdict::Forward);
    assert_eq!(flow(&reply), ((PEER, 9000), (A, 5000)));
    assert_eq!(r.nat.counters().inbound, 1);
}

// RFC 6888 REQ-7 (EIF default) vs the APDF option.
#[test]
fn filtering_eif_admits_anyone_apdf_only_contacted_peers() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"hi");
    r.send(1, &mut p);
    let ext = flow(&p).0;
    let mut stranger = udp((OTHER, 1234), ext, b"x");
    assert_eq!(r.send(2, &mut stranger), Verdict::Forward);

    let dp = DataplaneConfig {
        filtering: Filtering::AddressAndPortDependent,
        ..Default::default()
    };
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let mut p = udp((A, 5000), (PEER, 9000), b"hi");
    r.send(1, &mut p);
    let ext = flow(&p).0;
    let mut stranger = udp((OTHER, 1234), ext, b"x");
    assert_eq!(
        r.send(2, &mut stranger),
        Verdict::Drop(DropReason::Filtered)
    );
    let mut other_port = udp((PEER, 9001), ext, b"x");
    assert_eq!(
        r.send(2, &mut other_port),
        Verdict::Drop(DropReason::Filtered)
    );
    let mut reply = udp((PEER, 9000), ext, b"x");
    assert_eq!(r.send(2, &mut reply), Verdict::Forward);
    assert_eq!(r.nat.counters().dropped(DropReason::Filtered), 2);
}

#[test]
fn inbound_without_mapping_is_dropped() {
    let mut r = rig();
    let mut p = udp((PEER, 9000), (Ipv4Addr::new(198, 51, 100, 3), 7777), b"x");
    assert_eq!(r.send(1, &mut p), Verdict::Drop(DropReason::NoMapping));
}

// RFC 6887 §11: a MAP mapping admits inbound from anyone (EIF), before any outbound traffic;
// §13.3: with FILTER only the allowed peer.
#[test]
fn pcp_map_admits_inbound_and_filter_restricts_it() {
    let mut r = rig();
    let ext = r.map(A, 6000, &[]);
    let mut p = udp((OTHER, 1), (*ext.ip(), ext.port()), b"in");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    assert_eq!(flow(&p).1, (A, 6000));

    let filter = [PcpOption::Filter(Filter {
        prefix_length: 128,
        remote_peer_port: 9000,
        remote_peer_address: IpAddr::V4(PEER),
    })];
    let ext = r.map(B, 6001, &filter);
    let mut ok = udp((PEER, 9000), (*ext.ip(), ext.port()), b"in");
    assert_eq!(r.send(2, &mut ok), Verdict::Forward);
    assert_eq!(flow(&ok).1, (B, 6001));
    let mut no = udp((OTHER, 9000), (*ext.ip(), ext.port()), b"in");
    assert_eq!(r.send(2, &mut no), Verdict::Drop(DropReason::Filtered));
}

// RFC 4787 REQ-9: subscriber B reaches subscriber A through A's public endpoint, and A sees
// B's *external* endpoint as the source.
#[test]
fn hairpin_between_subscribers_carries_the_external_source() {
    let mut r = rig();
    let a_ext = r.map(A, 6000, &[]);
    let mut p = udp((B, 7000), (*a_ext.ip(), a_ext.port()), b"hello A");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    let (src, dst) = flow(&p);
    assert_eq!(dst, (A, 6000));
    assert!(
        r.server.pool().index_of(src.0).is_some(),
        "source is B's external endpoint"
    );
    assert_ne!(src.0, B);
    assert_eq!(r.nat.counters().hairpinned, 1);
    // A answers B's external endpoint: hairpinned back to B.
    let mut back = udp((A, 6000), src, b"hello B");
    assert_eq!(r.send(2, &mut back), Verdict::Forward);
    assert_eq!(flow(&back), ((*a_ext.ip(), a_ext.port()), (B, 7000)));
}

// RFC 6888 REQ-11: over quota → drop, ICMP Host Unreachable (code 1) to the sender; existing
// mappings are not evicted.
#[test]
fn quota_exhaustion_sends_host_unreachable_and_keeps_existing_mappings() {
    let mut config = EngineConfig::with_pools(&["198.51.100.0/28"]);
    config.quota_per_subscriber = 2;
    let mut r = rig_with(config, DataplaneConfig::default());
    for port in [1000, 1001] {
        let mut p = udp((A, port), (PEER, 9000), b"x");
        assert_eq!(r.send(1, &mut p), Verdict::Forward);
    }
    let mut p = udp((A, 1002), (PEER, 9000), b"x");
    assert_eq!(r.send(1, &mut p), Verdict::Drop(DropReason::QuotaExceeded));
    let icmp = r.nat.poll_transmit().expect("ICMP error");
    assert_eq!(&icmp[16..20], &A.octets(), "to the sender");
    assert_eq!(
        (icmp[20], icmp[21]),
        (3, 1),
        "destination unreachable, host unreachable"
    );
    assert_eq!(&icmp[28..48], &p[..20], "quotes the dropped packet");
    assert_eq!(r.server.table().counts().bindings, 2);
    let mut again = udp((A, 1000), (PEER, 9000), b"x");
    assert_eq!(
        r.send(2, &mut again),
        Verdict::Forward,
        "existing binding still works"
    );
}

#[test]
fn ttl_one_gets_time_exceeded() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"x");
    p[8] = 1;
    refresh_ip_checksum(&mut p);
    assert_eq!(r.send(1, &mut p), Verdict::Drop(DropReason::TtlExceeded));
    let icmp = r.nat.poll_transmit().expect("ICMP");
    assert_eq!((icmp[20], icmp[21]), (11, 0));
    assert_eq!(
        &icmp[12..16],
        &[100, 64, 0, 1],
        "from the CGN's inside address"
    );
}

// In the TUN daemon the kernel forwards twice and decrements twice: the translator gives one
// back, so a packet crossing the CGN loses exactly one TTL; TTL expiry is left to the kernel.
#[test]
fn kernel_forwarding_mode_gives_back_one_ttl() {
    let dp = DataplaneConfig {
        ttl: super::translate::TtlMode::KernelForwardsTwice,
        ..Default::default()
    };
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let mut p = udp((A, 5000), (PEER, 9000), b"x");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    assert_eq!(
        p[8], 65,
        "64 in, 65 out: the kernel's second decrement makes it 63 on the wire"
    );
    assert!(valid_ip_checksum(&p));
    let mut one = udp((A, 5000), (PEER, 9000), b"x");
    one[8] = 1;
    refresh_ip_checksum(&mut one);
    assert_eq!(r.send(2, &mut one), Verdict::Forward, "not ours to expire");
    assert_eq!(one[8], 2);
    assert!(r.nat.poll_transmit().is_none());
}

// RFC 4787 REQ-13: DF and too big → Fragmentation Needed; without DF → fragmented.
#[test]
fn too_big_packets_are_refused_with_df_and_fragmented_without() {
    let dp = DataplaneConfig {
        mtu: 576,
        ..Default::default()
    };
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let mut p = udp((A, 5000), (PEER, 9000), &[7u8; 1000]);
    p[6] |= 0x40;
    refresh_ip_checksum(&mut p);
    assert_eq!(r.send(1, &mut p), Verdict::Drop(DropReason::TooBig));
    let icmp = r.nat.poll_transmit().expect("ICMP");
    assert_eq!((icmp[20], icmp[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[26], icmp[27]]), 576);
    // It goes to the subscriber and quotes the packet as the subscriber sent it, not as it
    // would have left translated (found by the dataplane fuzz target: the error went to the
    // pool address from the CGN's inside address, leaking a shared address outward).
    let (outer_src, outer_dst, embedded) = icmp_error_parts(&icmp);
    assert_eq!((outer_src, outer_dst), (Ipv4Addr::new(100, 64, 0, 1), A));
    assert_eq!((embedded.src, embedded.dst), ((A, 5000), (PEER, 9000)));
    // The same for an inbound packet: the error goes back to the remote peer from the
    // outside address, quoting the packet with its external destination.
    let ext = r.map(A, 6000, &[]);
    let mut p = udp((PEER, 9000), (*ext.ip(), ext.port()), &[7u8; 1000]);
    p[6] |= 0x40;
    refresh_ip_checksum(&mut p);
    assert_eq!(r.send(1, &mut p), Verdict::Drop(DropReason::TooBig));
    let icmp = r.nat.poll_transmit().expect("ICMP");
    let (outer_src, outer_dst, embedded) = icmp_error_parts(&icmp);
    assert_eq!(
        (outer_src, outer_dst),
        (Ipv4Addr::new(203, 0, 113, 1), PEER)
    );
    assert_eq!(
        (embedded.src, embedded.dst),
        ((PEER, 9000), (*ext.ip(), ext.port()))
    );

    let mut p = udp((A, 5000), (PEER, 9000), &[7u8; 1000]);
    p[6] &= !0x40; // DF off (etherparse sets it)
    refresh_ip_checksum(&mut p);
    assert_eq!(r.send(2, &mut p), Verdict::Consumed);
    let mut pieces = Vec::new();
    while let Some(f) = r.nat.poll_transmit() {
        pieces.push(f);
    }
    assert_eq!(pieces.len(), 2);
    let total: usize = pieces.iter().map(|f| f.len() - 20).sum();
    assert_eq!(total, 1008, "UDP header + payload, all there");
    for f in &pieces {
        assert!(f.len() <= 576 && valid_ip_checksum(f));
    }
}

// RFC 5508 REQ-4: an ICMP error about an outbound flow reaches the subscriber with the
// embedded header restored.
#[test]
fn inbound_icmp_error_reaches_the_subscriber() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"probe");
    r.send(1, &mut p);
    // What the peer answers (built from the translated packet as it left).
    let mut err = port_unreachable(&p, PEER);
    assert_eq!(r.send(2, &mut err), Verdict::Forward);
    let (_, outer_dst, embedded) = icmp_error_parts(&err);
    assert_eq!(outer_dst, A);
    assert_eq!(embedded.src, (A, 5000));
    assert_eq!(r.nat.counters().icmp_errors, 1);
}

// RFC 5382 REQ-4: an unsolicited SYN is not answered for 6 s; then ICMP Port Unreachable. An
// outbound SYN of the same connection in the meantime silences it.
#[test]
fn unsolicited_syn_is_held_six_seconds() {
    let mut r = rig();
    let ext = (Ipv4Addr::new(198, 51, 100, 3), 8080);
    let mut syn = tcp((PEER, 4000), ext, true, false);
    assert_eq!(
        r.send(1, &mut syn),
        Verdict::Drop(DropReason::UnsolicitedSyn)
    );
    r.send(6, &mut udp((A, 1), (PEER, 2), b"tick"));
    while let Some(p) = r.nat.poll_transmit() {
        assert_ne!(p[9], 1, "no ICMP before 6 s: {p:?}");
    }
    r.send(7, &mut udp((A, 1), (PEER, 2), b"tick"));
    let icmp = r.nat.poll_transmit().expect("port unreachable after 6 s");
    assert_eq!((icmp[20], icmp[21]), (3, 3));
    assert_eq!(&icmp[16..20], &PEER.octets());
}

// RFC 5382 REQ-4, simultaneous open (TCP hole punching): under APDF the peer's SYN is held,
// the subscriber's own SYN to that peer follows within 6 s, and the held SYN is then dropped
// silently instead of being answered with Port Unreachable.
#[test]
fn outbound_syn_silences_a_held_syn() {
    let dp = DataplaneConfig {
        filtering: Filtering::AddressAndPortDependent,
        ..Default::default()
    };
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let mut first = tcp((A, 5000), (OTHER, 80), true, false);
    r.send(1, &mut first);
    let ext = flow(&first).0;
    let mut syn = tcp((PEER, 4000), ext, true, false);
    assert_eq!(
        r.send(2, &mut syn),
        Verdict::Drop(DropReason::UnsolicitedSyn)
    );
    let mut own = tcp((A, 5000), (PEER, 4000), true, false);
    assert_eq!(r.send(3, &mut own), Verdict::Forward);
    assert_eq!(flow(&own).0, ext, "same binding");
    r.send(20, &mut udp((A, 1), (PEER, 2), b"tick"));
    let icmp: Vec<_> = std::iter::from_fn(|| r.nat.poll_transmit())
        .filter(|p| p[9] == 1)
        .collect();
    assert!(icmp.is_empty(), "held SYN answered anyway: {icmp:?}");
    // The peer's retransmitted SYN is now admitted by the session.
    let mut again = tcp((PEER, 4000), ext, true, false);
    assert_eq!(r.send(21, &mut again), Verdict::Forward);
}

// RFC 4787 REQ-5 / RFC 6887 §15 with a fake clock: an implicit UDP binding lives 300 s after
// the last outbound packet, then its port is released (into hold-down).
#[test]
fn udp_binding_expires_after_idle_timeout() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"x");
    r.send(1, &mut p);
    let ext = flow(&p).0;
    r.send(200, &mut udp((A, 5000), (PEER, 9000), b"x"));
    let mut reply = udp((PEER, 9000), ext, b"x");
    assert_eq!(
        r.send(499, &mut reply),
        Verdict::Forward,
        "alive 299 s after the last packet"
    );
    r.send(501, &mut udp((B, 1), (PEER, 2), b"tick"));
    let mut late = udp((PEER, 9000), ext, b"x");
    assert_eq!(r.send(502, &mut late), Verdict::Drop(DropReason::NoMapping));
}

// One flow sending every second for an hour keeps one timer entry for its binding and one
// for its session: the wheels do not grow with the packet rate.
#[test]
fn steady_traffic_does_not_grow_the_timer_wheels() {
    let mut r = rig();
    for t in 1..3600 {
        let mut p = udp((A, 5000), (PEER, 9000), b"x");
        assert_eq!(r.send(t, &mut p), Verdict::Forward);
    }
    assert!(
        r.server.table().timer_entries() <= 2,
        "{}",
        r.server.table().timer_entries()
    );
    assert!(r.nat.session_wheel_entries() <= 2);
    // And the binding still expires 300 s after the last packet.
    let ext = {
        let mut p = udp((A, 5000), (PEER, 9000), b"x");
        r.send(3600, &mut p);
        flow(&p).0
    };
    let mut reply = udp((PEER, 9000), ext, b"x");
    assert_eq!(r.send(3899, &mut reply), Verdict::Forward);
    r.send(3901, &mut udp((B, 1), (PEER, 2), b"tick"));
    let mut late = udp((PEER, 9000), ext, b"x");
    assert_eq!(
        r.send(3902, &mut late),
        Verdict::Drop(DropReason::NoMapping)
    );
}

// RFC 5382 REQ-5: an established TCP binding outlives 2 h 4 min of idleness by no less.
#[test]
fn established_tcp_binding_lives_124_minutes() {
    let mut r = rig();
    let mut syn = tcp((A, 5000), (PEER, 80), true, false);
    r.send(1, &mut syn);
    let ext = flow(&syn).0;
    let mut synack = tcp((PEER, 80), ext, true, true);
    assert_eq!(r.send(2, &mut synack), Verdict::Forward);
    let mut ack = tcp((A, 5000), (PEER, 80), false, true);
    r.send(3, &mut ack);
    let mut data = tcp((PEER, 80), ext, false, true);
    assert_eq!(r.send(3 + 7439, &mut data), Verdict::Forward);
}

#[test]
fn icmp_echo_is_translated_both_ways() {
    let mut r = rig();
    let mut ping = echo_request(A, PEER, 0x4242);
    assert_eq!(r.send(1, &mut ping), Verdict::Forward);
    let (src, _) = flow(&ping);
    let mut pong = Vec::new();
    PacketBuilder::ipv4(PEER.octets(), src.0.octets(), 64)
        .icmpv4_echo_reply(src.1, 1)
        .write(&mut pong, b"ping")
        .expect("build");
    assert_eq!(r.send(2, &mut pong), Verdict::Forward);
    assert_eq!(flow(&pong).1, (A, 0x4242));
}

// RFC 4787 REQ-14: later fragments follow their first one, also when they come first.
#[test]
fn fragments_in_and_out_of_order() {
    let dp = DataplaneConfig::default();
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let whole = udp((A, 5000), (PEER, 9000), &[9u8; 1000]);
    let pieces = super::translate::fragment_for_test(&whole, 576);
    assert_eq!(pieces.len(), 2);
    // Second fragment first: held.
    let mut second = pieces[1].clone();
    assert_eq!(r.send(1, &mut second), Verdict::Consumed);
    let mut first = pieces[0].clone();
    assert_eq!(r.send(1, &mut first), Verdict::Forward);
    let ext = flow(&first).0;
    let released = r.nat.poll_transmit().expect("held fragment released");
    assert_eq!(&released[12..16], &ext.0.octets());
    assert!(valid_ip_checksum(&released));
    // Orphans are counted once their hold expires.
    let mut other = udp((A, 5001), (PEER, 9000), &[1u8; 1000]);
    other[5] = 99; // another IP Identification: another datagram
    refresh_ip_checksum(&mut other);
    let orphan = super::translate::fragment_for_test(&other, 576);
    let mut o = orphan[1].clone();
    assert_eq!(r.send(2, &mut o), Verdict::Consumed);
    r.send(40, &mut udp((B, 1), (PEER, 2), b"tick"));
    assert_eq!(r.nat.counters().dropped(DropReason::FragmentOrphan), 1);
}

#[test]
fn traffic_that_is_not_nat_traffic_is_dropped() {
    let mut r = rig();
    let mut p = udp((PEER, 1), (OTHER, 2), b"transit");
    assert_eq!(r.send(1, &mut p), Verdict::Drop(DropReason::NotNatTraffic));
    let mut v6 = vec![0x60u8; 48];
    assert_eq!(r.send(1, &mut v6), Verdict::Drop(DropReason::NotIpv4));
    let mut bad = udp((A, 1), (PEER, 2), b"x");
    bad[10] ^= 0xff;
    assert_eq!(r.send(1, &mut bad), Verdict::Drop(DropReason::BadChecksum));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    // Outbound then inbound restores the original endpoints, for any ports.
    #[test]
    fn outbound_then_inbound_restores_endpoints(
        iport in 1u16.., rport in 1u16.., tcp_proto in any::<bool>(), host in 2u8..250,
    ) {
        let mut r = rig();
        let inside = Ipv4Addr::new(100, 64, 1, host);
        let mut p = if tcp_proto { tcp((inside, iport), (PEER, rport), true, false) }
            else { udp((inside, iport), (PEER, rport), b"x") };
        prop_assert_eq!(r.send(1, &mut p), Verdict::Forward);
        let ext = flow(&p).0;
        prop_assert!(ext.0 != inside);
        let mut back = if tcp_proto { tcp((PEER, rport), ext, true, true) }
            else { udp((PEER, rport), ext, b"y") };
        prop_assert_eq!(r.send(2, &mut back), Verdict::Forward);
        prop_assert_eq!(flow(&back), ((PEER, rport), (inside, iport)));
    }

    // No packet, whatever its bytes, makes the translator panic or forward an inside
    // (100.64/10) source address towards the outside.
    #[test]
    fn arbitrary_packets_never_leak_inside_addresses(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut r = rig();
        let mut p = bytes.clone();
        if r.send(1, &mut p) == Verdict::Forward {
            let ip = Ipv4HeaderSlice::from_slice(&p).expect("forwarded packets parse");
            let src = Ipv4Addr::from(ip.source());
            let dst = Ipv4Addr::from(ip.destination());
            let inside = |a: Ipv4Addr| r.server.is_subscriber(a);
            prop_assert!(!inside(src) || inside(dst), "leak: {src} -> {dst}");
        }
    }
}

// RFC 7857 §5, §6: mapping and filtering are protocol-dependent: a UDP binding neither serves
// TCP outbound nor admits TCP inbound on its port.
#[test]
fn bindings_are_protocol_dependent() {
    let mut r = rig();
    let mut u = udp((A, 5000), (PEER, 9000), b"x");
    r.send(1, &mut u);
    let ext = flow(&u).0;
    let mut syn_in = tcp((PEER, 9000), ext, true, false);
    assert_ne!(
        r.send(2, &mut syn_in),
        Verdict::Forward,
        "a UDP binding admits no TCP"
    );
    let mut t = tcp((A, 5000), (PEER, 80), true, false);
    assert_eq!(r.send(3, &mut t), Verdict::Forward);
    assert_eq!(
        r.server.table().counts().bindings,
        2,
        "TCP got its own binding"
    );
}

// RFC 5382 REQ-8: TCP hairpins like UDP, with the external source.
#[test]
fn tcp_hairpin_carries_the_external_source() {
    let mut r = rig();
    let mut first = tcp((A, 6000), (PEER, 80), true, false);
    r.send(1, &mut first);
    let a_ext = flow(&first).0;
    let mut syn = tcp((B, 7000), a_ext, true, false);
    assert_eq!(r.send(2, &mut syn), Verdict::Forward);
    let (src, dst) = flow(&syn);
    assert_eq!(dst, (A, 6000));
    assert!(
        r.server.pool().index_of(src.0).is_some(),
        "B's external endpoint"
    );
}

// RFC 5382 REQ-4a: when policy says so, unsolicited SYNs are dropped silently.
#[test]
fn silent_syn_policy_sends_nothing() {
    let dp = DataplaneConfig {
        syn_port_unreachable: false,
        ..Default::default()
    };
    let mut r = rig_with(EngineConfig::with_pools(&["198.51.100.0/28"]), dp);
    let mut syn = tcp(
        (PEER, 4000),
        (Ipv4Addr::new(198, 51, 100, 3), 8080),
        true,
        false,
    );
    assert_eq!(
        r.send(1, &mut syn),
        Verdict::Drop(DropReason::UnsolicitedSyn)
    );
    r.send(10, &mut udp((A, 1), (PEER, 2), b"tick"));
    let icmp: Vec<_> = std::iter::from_fn(|| r.nat.poll_transmit())
        .filter(|p| p[9] == 1)
        .collect();
    assert!(icmp.is_empty(), "{icmp:?}");
}

// RFC 5508 REQ-7: an ICMP error about a hairpinned packet is hairpinned too, its outer
// destination set to the translated source of the embedded packet.
#[test]
fn icmp_error_about_a_hairpinned_packet_is_hairpinned() {
    let mut r = rig();
    let b_ext = r.map(B, 6000, &[]);
    let mut p = udp((A, 7000), (*b_ext.ip(), b_ext.port()), b"to B");
    assert_eq!(r.send(1, &mut p), Verdict::Forward);
    // B's host refuses it: port unreachable about the packet as B received it.
    let mut err = port_unreachable(&p, B);
    assert_eq!(r.send(2, &mut err), Verdict::Forward);
    let (outer_src, outer_dst, embedded) = icmp_error_parts(&err);
    assert_eq!(outer_dst, A, "delivered to A");
    assert_eq!(outer_src, *b_ext.ip(), "from B's external address");
    assert_eq!(embedded.src, (A, 7000), "A sees its own packet");
    assert_eq!(embedded.dst, (*b_ext.ip(), b_ext.port()));
}

// RFC 5508 REQ-3: IP options in the embedded header are skipped to find the transport header.
#[test]
fn icmp_error_with_embedded_ip_options_is_translated() {
    let mut r = rig();
    let mut p = udp((A, 5000), (PEER, 9000), b"probe");
    r.send(1, &mut p);
    // The packet as it left, with a 4-byte IP option (NOP NOP NOP EOL) inserted.
    let mut with_opts = Vec::new();
    with_opts.extend_from_slice(&p[..20]);
    with_opts.extend_from_slice(&[1, 1, 1, 0]);
    with_opts.extend_from_slice(&p[20..]);
    with_opts[0] = 0x46;
    let total = u16::try_from(with_opts.len()).expect("small");
    with_opts[2..4].copy_from_slice(&total.to_be_bytes());
    refresh_ip_checksum(&mut with_opts);
    let mut err = port_unreachable(&with_opts, PEER);
    assert_eq!(r.send(2, &mut err), Verdict::Forward);
    let (_, outer_dst, embedded) = icmp_error_parts(&err);
    assert_eq!(outer_dst, A);
    assert_eq!(embedded.src, (A, 5000));
    assert_eq!(embedded.dst, (PEER, 9000));
}
