//! MAP, server side (RFC 6887 §11.3, §10), checklist §7.7.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

use cgn_sim::config::EngineConfig;
use cgn_sim::server::StaticMapping;
use cgn_sim::table::InternalKey;
use pcp_client::wire::{OpcodeData, PcpOption, Protocol, ResultCode};
use support::*;

fn udp(
    h: &mut Harness,
    client: Ipv4Addr,
    n: u8,
    port: u16,
    lifetime: u32,
    suggest: Option<SocketAddrV4>,
    opts: &[PcpOption<'_>],
) -> Answer {
    h.request(
        client,
        &map_req(
            client,
            nonce(n),
            Protocol::UDP,
            port,
            lifetime,
            suggest,
            opts,
        ),
    )
}

// RFC 6887 §11, §12 (SHOULD): MAP and PEER can be disabled.
#[test]
fn map_and_peer_can_be_disabled() {
    let mut c = config();
    c.allow_map = false;
    c.allow_peer = false;
    let mut h = Harness::with(c);
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]).result(),
        ResultCode::NotAuthorized
    );
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 80);
    let a = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(1), 5000, 3600, remote, None, &[]),
    );
    assert_eq!(a.result(), ResultCode::NotAuthorized);
}

// RFC 6887 §11.3 item 1: protocol, internal port and nonce are copied.
#[test]
fn map_response_copies_protocol_internal_port_and_nonce() {
    let mut h = Harness::new();
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(9), Protocol::TCP, 8080, 7200, None, &[]),
    );
    let m = a.map();
    assert_eq!(
        (m.protocol, m.internal_port, m.nonce),
        (Protocol::TCP, 8080, nonce(9))
    );
    assert_eq!(a.lifetime(), 7200);
    assert!(matches!(a.repr().data, OpcodeData::Map(_)));
}

// RFC 6887 §11.3 (MUST): unsupported protocol; wildcard and DMZ that cannot be granted in
// full → UNSUPP_PROTOCOL (for DMZ: every address shared, see
// `all_protocol_map_on_a_shared_address_gets_unsupp_protocol`).
#[test]
fn unsupported_protocol_wildcard_and_dmz_get_unsupp_protocol() {
    let mut h = Harness::with(EngineConfig::with_pools(&["198.51.100.1"]));
    udp(&mut h, CLIENT2, 1, 5000, 3600, None, &[]);
    for (proto, port) in [
        (Protocol::SCTP, 5000),
        (Protocol::ICMP, 0),
        (Protocol::UDP, 0),
        (Protocol::ALL, 0),
    ] {
        let a = h.request(
            CLIENT,
            &map_req(CLIENT, nonce(1), proto, port, 3600, None, &[]),
        );
        assert_eq!(a.result(), ResultCode::UnsuppProtocol, "{proto} {port}");
    }
    assert_eq!(
        h.server.table().counts().bindings,
        1,
        "CLIENT2's mapping only"
    );
}

fn all_protocols(h: &mut Harness, client: Ipv4Addr, n: u8, lifetime: u32) -> Answer {
    h.request(
        client,
        &map_req(client, nonce(n), Protocol::ALL, 0, lifetime, None, &[]),
    )
}

// RFC 6887 §11.1 (protocol 0 = all protocols, internal port 0) and §11.3 item 2 (granted in
// full or not at all): the subscriber gets a whole pool address of its own. The answer
// carries that address and port 0; `ctl mappings` shows it as MAP IN / MAP OUT with
// `Protocol: ANY`; no other subscriber is put on the address, even when it suggests it; the
// mapping is renewed and deleted (with its nonce, §15.1) like any MAP, and the address is
// shared again afterwards.
#[test]
fn all_protocol_map_takes_a_whole_address_for_one_subscriber() {
    let mut h = Harness::new();
    let a = all_protocols(&mut h, CLIENT, 1, 3600);
    assert_eq!((a.result(), a.lifetime()), (ResultCode::Success, 3600));
    let x = *a.external().ip();
    assert_eq!(a.external().port(), 0);
    assert_eq!(
        (a.map().protocol, a.map().internal_port),
        (Protocol::ALL, 0)
    );
    let table = h.server.render_table(h.now);
    assert!(
        table.contains(&format!(
            "Type: MAP IN, Protocol: ANY, Zone: ---, Vpn: public ANY -> {x}:0[100.64.0.2:0] TTL: 3600"
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "Type: MAP OUT, Protocol: ANY, Zone: ---, Vpn: public 100.64.0.2:0[{x}:0] -> ANY"
        )),
        "{table}"
    );
    // Its other mappings stay on the address (paired pooling); others never land there.
    let own = udp(&mut h, CLIENT, 2, 5000, 3600, None, &[]);
    assert_eq!(*own.external().ip(), x);
    let b = udp(
        &mut h,
        CLIENT2,
        3,
        5000,
        3600,
        Some(SocketAddrV4::new(x, 5000)),
        &[],
    );
    assert_eq!(b.result(), ResultCode::Success);
    assert_ne!(*b.external().ip(), x, "{}", b.external());
    let pf = udp(
        &mut h,
        Ipv4Addr::new(100, 64, 0, 9),
        4,
        5000,
        3600,
        Some(SocketAddrV4::new(x, 5000)),
        &[PcpOption::PreferFailure],
    );
    assert_eq!(pf.result(), ResultCode::CannotProvideExternal);
    // Renewal with the nonce; another nonce is refused with the remaining lifetime.
    h.advance(Duration::from_secs(100));
    let again = all_protocols(&mut h, CLIENT, 1, 7200);
    assert_eq!(
        (again.result(), *again.external().ip()),
        (ResultCode::Success, x)
    );
    let thief = all_protocols(&mut h, CLIENT, 7, 7200);
    assert_eq!(
        (thief.result(), thief.lifetime()),
        (ResultCode::NotAuthorized, 7200)
    );
    let wrong_delete = all_protocols(&mut h, CLIENT, 7, 0);
    assert_eq!(wrong_delete.result(), ResultCode::NotAuthorized);
    let delete = all_protocols(&mut h, CLIENT, 1, 0);
    assert_eq!(
        (delete.result(), delete.lifetime()),
        (ResultCode::Success, 0)
    );
    assert!(!h.server.render_table(h.now).contains("Protocol: ANY"));
    // Shared again: a new subscriber suggesting it gets it.
    let c = udp(
        &mut h,
        Ipv4Addr::new(100, 64, 0, 10),
        5,
        6000,
        3600,
        Some(SocketAddrV4::new(x, 6000)),
        &[],
    );
    assert_eq!(c.external(), SocketAddrV4::new(x, 6000));
    h.check();
}

// RFC 6887 §11.3 item 2 (MUST): an all-protocol MAP that cannot be granted in full gets
// UNSUPP_PROTOCOL and changes nothing: the subscriber's address is shared with another one, or
// (no mappings yet) every address is in use.
#[test]
fn all_protocol_map_on_a_shared_address_gets_unsupp_protocol() {
    let one = Ipv4Addr::new(198, 51, 100, 1);
    let two = Ipv4Addr::new(198, 51, 100, 2);
    let mut h = Harness::with(EngineConfig::with_pools(&["198.51.100.1", "198.51.100.2"]));
    let on = |a: Ipv4Addr| Some(SocketAddrV4::new(a, 0));
    // CLIENT shares 198.51.100.1 with another subscriber.
    let s9 = udp(
        &mut h,
        Ipv4Addr::new(100, 64, 0, 9),
        1,
        5000,
        3600,
        on(one),
        &[],
    );
    assert_eq!(*s9.external().ip(), one);
    let a = udp(&mut h, CLIENT, 2, 5000, 3600, on(one), &[]);
    assert_eq!(*a.external().ip(), one);
    let before = h.server.table().counts();
    let dmz = all_protocols(&mut h, CLIENT, 3, 3600);
    assert_eq!(dmz.result(), ResultCode::UnsuppProtocol);
    // CLIENT2 alone on 198.51.100.2: nothing is left whole for a new subscriber.
    let b = udp(&mut h, CLIENT2, 4, 5000, 3600, on(two), &[]);
    assert_eq!(*b.external().ip(), two);
    let lone = all_protocols(&mut h, Ipv4Addr::new(100, 64, 0, 20), 5, 3600);
    assert_eq!(lone.result(), ResultCode::UnsuppProtocol);
    assert_eq!(
        h.server.table().counts().maps,
        before.maps + 1,
        "only CLIENT2's mapping was added"
    );
    // CLIENT2 is alone on its address: granted there.
    let ok = all_protocols(&mut h, CLIENT2, 6, 3600);
    assert_eq!(
        (ok.result(), *ok.external().ip()),
        (ResultCode::Success, two)
    );
    h.check();
}

// RFC 6887 §11.3, §15.1 (MUST): protocol 0 with a port, for create and for delete.
#[test]
fn all_protocols_with_a_port_is_malformed_for_create_and_delete() {
    let mut h = Harness::new();
    for lifetime in [3600, 0] {
        let a = h.request(
            CLIENT,
            &map_req(CLIENT, nonce(1), Protocol::ALL, 80, lifetime, None, &[]),
        );
        assert_eq!(
            a.result(),
            ResultCode::MalformedRequest,
            "lifetime {lifetime}"
        );
    }
}

// RFC 6887 §11.3 item 3 (MUST): nonce mismatch on renewal → NOT_AUTHORIZED, lifetime =
// remaining. miniupnpd "replaces" the mapping instead.
#[test]
fn renewal_with_another_nonce_gets_not_authorized_with_remaining_lifetime() {
    let mut h = Harness::new();
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]);
    h.advance(Duration::from_secs(100));
    let b = udp(&mut h, CLIENT, 2, 5000, 3600, Some(a.external()), &[]);
    assert_eq!(
        (b.result(), b.lifetime()),
        (ResultCode::NotAuthorized, 3500)
    );
    assert_eq!(h.server.table().lookup_nonce(&nonce(2)), vec![]);
    assert_eq!(h.server.table().lookup_nonce(&nonce(1)).len(), 1);
}

// RFC 6887 §11.3 items 4, 7.2 (SHOULD, MUST): a static mapping is returned with the
// request's nonce and lifetime 2^32−1, whatever was suggested, and the nonce is not stored.
#[test]
fn static_mapping_is_returned_with_the_request_nonce_and_max_lifetime() {
    let mut h = Harness::new();
    let ext = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 8080);
    h.server
        .add_static(StaticMapping {
            protocol: Protocol::TCP,
            internal: SocketAddrV4::new(CLIENT, 80),
            external: ext,
        })
        .expect("static");
    let s = Some(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 9999));
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(5), Protocol::TCP, 80, 3600, s, &[]),
    );
    assert_eq!((a.result(), a.lifetime()), (ResultCode::Success, u32::MAX));
    assert_eq!(a.external(), ext);
    assert_eq!(a.map().nonce, nonce(5));
    assert!(h.server.table().lookup_nonce(&nonce(5)).is_empty());
    assert!(h.server.render_table(h.now).contains("Type: STATIC IN"));
}

// RFC 6887 §11.3 item 7.1 (MUST): PREFER_FAILURE against an existing mapping with other
// external values → CANNOT_PROVIDE_EXTERNAL. miniupnpd ignores it.
#[test]
fn prefer_failure_against_existing_mapping_with_other_values_fails() {
    let mut h = Harness::new();
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]);
    let other = SocketAddrV4::new(*a.external().ip(), a.external().port() ^ 2);
    let b = udp(
        &mut h,
        CLIENT,
        1,
        5000,
        3600,
        Some(other),
        &[PcpOption::PreferFailure],
    );
    assert_eq!(b.result(), ResultCode::CannotProvideExternal);
    assert_eq!(b.lifetime(), 3600);
    let c = udp(
        &mut h,
        CLIENT,
        1,
        5000,
        3600,
        Some(a.external()),
        &[PcpOption::PreferFailure],
    );
    assert_eq!(
        (c.result(), c.external()),
        (ResultCode::Success, a.external())
    );
}

// RFC 6887 §11.3 item 7.3 (MUST): an existing explicit mapping's values are returned
// whatever was suggested, and its lifetime updated.
#[test]
fn existing_explicit_mapping_is_returned_and_its_lifetime_updated() {
    let mut h = Harness::new();
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]);
    let other = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 7777);
    let b = udp(&mut h, CLIENT, 1, 5000, 600, Some(other), &[]);
    assert_eq!(
        (b.result(), b.external(), b.lifetime()),
        (ResultCode::Success, a.external(), 600)
    );
    assert!(h.server.render_table(h.now).contains("TTL: 600, Left: 600"));
}

// RFC 6887 §11.3 item 7.4 (SHOULD): MAP over an outbound binding copies its endpoint; the
// outbound binding outlives the MAP's deletion.
#[test]
fn map_over_an_outbound_binding_copies_its_external_endpoint() {
    let mut h = Harness::new();
    let now = h.now;
    let ext = h
        .server
        .outbound(now, Protocol::UDP, SocketAddrV4::new(CLIENT, 5000))
        .expect("implicit");
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]);
    assert_eq!(a.external(), ext);
    h.advance(Duration::from_secs(10));
    // Anti-theft (§15): the delete answers with the remaining idle time, not 0.
    let d = udp(&mut h, CLIENT, 1, 5000, 0, None, &[]);
    assert_eq!((d.result(), d.lifetime()), (ResultCode::Success, 290));
    let key = InternalKey {
        protocol: 17,
        realm: 0,
        addr: CLIENT,
        port: 5000,
    };
    assert!(h.server.table().lookup_internal(&key).is_some());
    assert!(h.server.render_table(h.now).contains("Type: IMPLICIT"));
    h.check();
}

// RFC 6887 §11.3 item 8 (SHOULD): suggested values are used when possible.
#[test]
fn suggested_address_and_port_are_used_when_possible() {
    let mut h = Harness::new();
    let s = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 5), 41000);
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, Some(s), &[]);
    assert_eq!(a.external(), s);
}

// RFC 6887 §11.3 (MUST NOT): external UDP 5350 and 5351 are never mapped.
#[test]
fn external_udp_5350_and_5351_are_never_mapped() {
    let mut h = Harness::new();
    for port in [5350, 5351] {
        let s = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 5), port);
        let a = udp(&mut h, CLIENT, 1, 5000, 3600, Some(s), &[]);
        assert_eq!(a.result(), ResultCode::Success);
        assert_ne!(a.external().port(), port);
        let b = udp(
            &mut h,
            CLIENT,
            1,
            6000 + port,
            3600,
            Some(s),
            &[PcpOption::PreferFailure],
        );
        assert_eq!(b.result(), ResultCode::CannotProvideExternal);
    }
}

// RFC 6887 §11.3 item 8 (MUST): impossible suggestion with PREFER_FAILURE fails; without it
// another endpoint is assigned and the request never fails because of the hint.
#[test]
fn impossible_suggestion_fails_only_with_prefer_failure() {
    let mut h = Harness::new();
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]);
    let taken = a.external();
    let b = udp(
        &mut h,
        CLIENT2,
        2,
        5000,
        3600,
        Some(taken),
        &[PcpOption::PreferFailure],
    );
    assert_eq!(
        (b.result(), b.lifetime()),
        (ResultCode::CannotProvideExternal, 30)
    );
    assert_eq!(b.external(), taken, "error copies the suggestion");
    for bad in [
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 7000),
        SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 7000),
        SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 7000),
    ] {
        let c = udp(&mut h, CLIENT2, 2, 5001, 3600, Some(bad), &[]);
        assert_eq!(c.result(), ResultCode::Success, "{bad}");
        assert!(h.server.pool().index_of(*c.external().ip()).is_some());
        let d = udp(
            &mut h,
            CLIENT2,
            2,
            5002,
            3600,
            Some(bad),
            &[PcpOption::PreferFailure],
        );
        assert_eq!(d.result(), ResultCode::CannotProvideExternal, "{bad}");
    }
    // `::` asks for an IPv6 external address, which a NAT44 lacks.
    let r = pcp_client::wire::RequestRepr {
        data: OpcodeData::Map(pcp_client::wire::MapData {
            external_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ..map_req(CLIENT2, nonce(2), Protocol::UDP, 5003, 3600, None, &[])
                .data
                .map_fields()
                .copied()
                .expect("map")
        }),
        ..map_req(CLIENT2, nonce(2), Protocol::UDP, 5003, 3600, None, &[])
    };
    let e = h.request(CLIENT2, &r);
    assert_eq!(e.result(), ResultCode::Success);
    h.check();
}

// RFC 6887 §11.3 item 9 (MUST NOT): a TCP request creates no UDP mapping.
#[test]
fn mapping_is_created_only_for_the_requested_protocol() {
    let mut h = Harness::new();
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::TCP, 5000, 3600, None, &[]),
    );
    let udp_key = InternalKey {
        protocol: 17,
        realm: 0,
        addr: CLIENT,
        port: 5000,
    };
    assert!(h.server.table().lookup_internal(&udp_key).is_none());
    assert_eq!(h.server.table().counts().bindings, 1);
}

// RFC 6887 §11.3, §17.2 (RECOMMENDED): per-subscriber quota → USER_EX_QUOTA.
#[test]
fn quota_exceeded_gets_user_ex_quota_and_renewals_still_work() {
    let mut c = config();
    c.quota_per_subscriber = 2;
    let mut h = Harness::with(c);
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]).result(),
        ResultCode::Success
    );
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5001, 3600, None, &[]).result(),
        ResultCode::Success
    );
    let a = udp(&mut h, CLIENT, 1, 5002, 3600, None, &[]);
    assert_eq!((a.result(), a.lifetime()), (ResultCode::UserExQuota, 30));
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]).result(),
        ResultCode::Success
    );
    // Another subscriber has its own quota.
    assert_eq!(
        udp(&mut h, CLIENT2, 1, 5002, 3600, None, &[]).result(),
        ResultCode::Success
    );
    assert_eq!(h.server.metrics().quota_hits, 1);
}

// RFC 6888 REQ-4 (RECOMMENDED): mapping creation can be rate-limited.
#[test]
fn creation_rate_limit_gets_user_ex_quota() {
    let mut c = config();
    c.creation_rate = 1;
    c.creation_burst = 2;
    let mut h = Harness::with(c);
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]).result(),
        ResultCode::Success
    );
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5001, 3600, None, &[]).result(),
        ResultCode::Success
    );
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5002, 3600, None, &[]).result(),
        ResultCode::UserExQuota
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5002, 3600, None, &[]).result(),
        ResultCode::Success
    );
}

// RFC 6888 REQ-2 (MUST paired) over RFC 6887 §10 (SHOULD honour the address): an anchored
// subscriber keeps its address; one with no mappings is anchored to the suggestion.
#[test]
fn paired_pooling_keeps_one_address_per_subscriber() {
    let mut h = Harness::new();
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None, &[]);
    let t = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::TCP, 5001, 3600, None, &[]),
    );
    assert_eq!(
        a.external().ip(),
        t.external().ip(),
        "paired across protocols"
    );
    let other = if a.external().ip().octets()[3] == 7 {
        8
    } else {
        7
    };
    let s = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, other), 41000);
    let b = udp(&mut h, CLIENT, 1, 5002, 3600, Some(s), &[]);
    assert_eq!(b.external().ip(), a.external().ip());
    let c = udp(
        &mut h,
        CLIENT,
        1,
        5003,
        3600,
        Some(s),
        &[PcpOption::PreferFailure],
    );
    assert_eq!(c.result(), ResultCode::CannotProvideExternal);
    // A subscriber without mappings is anchored where it suggests.
    let d = udp(&mut h, CLIENT2, 2, 5000, 3600, Some(s), &[]);
    assert_eq!(d.external(), s);
}

// RFC 6887 §15 (SHOULD): lifetimes are clamped to [120 s, 24 h], configurable.
#[test]
fn lifetimes_are_clamped_to_the_configured_bounds() {
    let mut h = Harness::new();
    assert_eq!(udp(&mut h, CLIENT, 1, 5000, 10, None, &[]).lifetime(), 120);
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5000, u32::MAX, None, &[]).lifetime(),
        86_400
    );
    let mut c = config();
    c.min_lifetime = 300;
    c.max_lifetime = 3600;
    let mut h = Harness::with(c);
    assert_eq!(udp(&mut h, CLIENT, 1, 5000, 10, None, &[]).lifetime(), 300);
    assert_eq!(
        udp(&mut h, CLIENT, 1, 5000, 7200, None, &[]).lifetime(),
        3600
    );
}
