//! RFC 6887 §8.2 receive pipeline and §7.2–§7.4 responses (checklist §7.5).

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use cgn_sim::server::Interface;
use pcp_client::wire::{
    Description, Filter, OptionCode, PcpOption, Protocol, ResultCode, UnknownOption,
};
use support::*;

fn map_bytes() -> Vec<u8> {
    emit(&map_req(
        CLIENT,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &[],
    ))
}

// RFC 6887 §8.2 step 2.
#[test]
fn request_shorter_than_two_octets_is_dropped_silently() {
    let mut h = Harness::new();
    assert_eq!(h.send(CLIENT, &[]), None);
    assert_eq!(h.send(CLIENT, &[2]), None);
}

// RFC 6887 §8.2 step 3.
#[test]
fn request_with_r_bit_set_is_dropped_silently() {
    let mut h = Harness::new();
    let mut b = map_bytes();
    b[1] |= 0x80;
    assert_eq!(h.send(CLIENT, &b), None);
}

// RFC 6887 §8.2 step 4, §9: the closest supported version, padded to 24 bytes.
#[test]
fn unsupported_version_gets_unsupp_version_carrying_version_2() {
    let mut h = Harness::new();
    let mut b = map_bytes();
    b[0] = 3;
    let a = h.send(CLIENT, &b).expect("answer");
    assert_eq!(a.bytes[0], 2);
    assert_eq!(a.result(), ResultCode::UnsuppVersion);
    assert_eq!(a.lifetime(), 1800);
    let a = h.send(CLIENT, &[1, 1, 0, 0, 0, 0, 0, 0]).expect("answer");
    assert_eq!(a.bytes.len(), 24);
    assert_eq!(a.result(), ResultCode::UnsuppVersion);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 6887 §8.2 step 5.
#[test]
fn supported_version_shorter_than_24_octets_is_dropped_silently() {
    let mut h = Harness::new();
    assert_eq!(h.send(CLIENT, &map_bytes()[..20]), None);
}

// RFC 6887 §8.2 step 7: over 1100, not a multiple of 4, too short for the opcode.
#[test]
fn bad_lengths_get_malformed_request_truncated_to_1100() {
    let mut h = Harness::new();
    let mut long = map_bytes();
    long.resize(1200, 0);
    let a = h.send(CLIENT, &long).expect("answer");
    assert_eq!(a.result(), ResultCode::MalformedRequest);
    assert_eq!(a.bytes.len(), 1100);
    let mut odd = map_bytes();
    odd.push(0);
    odd.push(0);
    assert_eq!(
        h.send(CLIENT, &odd).map(|a| a.result()),
        Some(ResultCode::MalformedRequest)
    );
    let short = &map_bytes()[..40];
    let a = h.send(CLIENT, short).expect("answer");
    assert_eq!(a.result(), ResultCode::MalformedRequest);
    // Not parsed: the 96 reserved bits keep the Client IP's last 96 bits.
    assert_eq!(&a.bytes[12..24], &short[12..24]);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 6887 §8.2 step 8 (MUST).
#[test]
fn source_differing_from_client_ip_gets_address_mismatch() {
    let mut h = Harness::new();
    let b = emit(&map_req(
        Ipv4Addr::new(192, 168, 0, 10),
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &[],
    ));
    let a = h.send(CLIENT, &b).expect("answer");
    assert_eq!(a.result(), ResultCode::AddressMismatch);
    assert_eq!(a.lifetime(), 1800);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 6887 §14.1.1: ANNOUNCE with a wrong Client IP gets an error.
#[test]
fn announce_with_mismatching_client_ip_gets_address_mismatch() {
    let mut h = Harness::new();
    let b = emit(&announce_req(CLIENT2));
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::AddressMismatch)
    );
}

// RFC 6887 §8.2 step 9: UNSUPP_OPCODE, payload copied back untouched.
#[test]
fn unknown_opcode_gets_unsupp_opcode_with_payload_copied() {
    let mut h = Harness::new();
    let mut b = emit(&announce_req(CLIENT));
    b[1] = 5;
    b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
    let a = h.send(CLIENT, &b).expect("answer");
    assert_eq!(a.result(), ResultCode::UnsuppOpcode);
    assert_eq!(a.bytes[1], 0x85);
    assert_eq!(&a.bytes[24..], &b[24..]);
    // RFC 7652 AUTHENTICATION is not supported either.
    let mut auth = emit(&announce_req(CLIENT));
    auth[1] = 3;
    auth.extend_from_slice(&[0; 8]);
    assert_eq!(
        h.send(CLIENT, &auth).map(|a| a.result()),
        Some(ResultCode::UnsuppOpcode)
    );
}

// RFC 6887 §8.2 step 1 (MUST): requests from the outside, or from non-subscribers, are
// ignored silently.
#[test]
fn requests_on_the_outside_interface_are_ignored_silently() {
    let mut h = Harness::new();
    let from = SocketAddr::new(IpAddr::V4(CLIENT), 40000);
    assert_eq!(h.send_from(from, Interface::Outside, &map_bytes()), None);
    let stranger = Ipv4Addr::new(203, 0, 113, 50);
    let b = emit(&map_req(
        stranger,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &[],
    ));
    assert_eq!(h.send(stranger, &b), None);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 6887 §8.2 (MAY): THIRD_PARTY requests may be accepted on the outside when configured.
#[test]
fn third_party_requests_may_be_accepted_on_the_outside_when_configured() {
    let mut c = config();
    c.third_party_hosts = vec!["203.0.113.7/32".parse().expect("THIRD_PARTY rule")];
    c.third_party_on_outside = true;
    let mut h = Harness::with(c);
    let portal = Ipv4Addr::new(203, 0, 113, 7);
    let tp = [PcpOption::ThirdParty(IpAddr::V4(CLIENT))];
    let b = emit(&map_req(
        portal,
        nonce(1),
        Protocol::TCP,
        80,
        3600,
        None,
        &tp,
    ));
    let from = SocketAddr::new(IpAddr::V4(portal), 4000);
    let a = h.send_from(from, Interface::Outside, &b).expect("answer");
    assert_eq!(a.result(), ResultCode::Success);
    // Without THIRD_PARTY the same host is ignored there.
    let b = emit(&map_req(
        portal,
        nonce(1),
        Protocol::TCP,
        81,
        3600,
        None,
        &[],
    ));
    assert_eq!(h.send_from(from, Interface::Outside, &b), None);
}

// RFC 6887 §7.3, §8.2: an error response is the whole request with the header set, all
// options returned; no state change.
#[test]
fn error_response_is_a_complete_copy_with_all_options() {
    let mut h = Harness::new();
    let opts = [
        PcpOption::Description(Description::new("cam")),
        PcpOption::Unknown(UnknownOption {
            code: OptionCode(99),
            data: &[1, 2, 3],
        }),
    ];
    let b = emit(&map_req(
        CLIENT,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &opts,
    ));
    let a = h.send(CLIENT, &b).expect("answer");
    assert_eq!(a.result(), ResultCode::UnsuppOption);
    assert_eq!(a.bytes.len(), b.len());
    assert_eq!(&a.bytes[24..], &b[24..]);
    assert_eq!(a.bytes[0], 2);
    assert_eq!(a.bytes[1], 0x81);
    assert_eq!(&a.bytes[12..24], &[0; 12]);
    assert_eq!(a.repr().options.len(), 2);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 6887 §7.3: a success response carries only the options processed.
#[test]
fn success_response_includes_only_processed_options() {
    let mut h = Harness::new();
    let opts = [
        PcpOption::Unknown(UnknownOption {
            code: OptionCode(200),
            data: &[9],
        }),
        PcpOption::Description(Description::new("cam")),
    ];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &opts),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert_eq!(
        a.options(),
        vec![format!(
            "{:?}",
            PcpOption::Description(Description::new("cam"))
        )]
    );
    assert_eq!(&a.bytes[12..24], &[0; 12]);
}

// RFC 6887 §7.3 (MUST): a failed request leaves no state change behind.
#[test]
fn failed_request_rolls_back_every_change() {
    let mut c = config();
    c.max_filters = 1;
    let mut h = Harness::with(c);
    let f = |n| {
        PcpOption::Filter(Filter {
            prefix_length: 128,
            remote_peer_port: 0,
            remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)),
        })
    };
    let one = [f(1)];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &one),
    );
    assert_eq!(a.result(), ResultCode::Success);
    let before = h.server.render_table_json(h.now);
    let two = [f(2), PcpOption::Description(Description::new("x"))];
    let b = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 60_000, None, &two),
    );
    assert_eq!(b.result(), ResultCode::ExcessiveRemotePeers);
    assert_eq!(h.server.render_table_json(h.now), before);
    // A new mapping that fails (quota) takes no port.
    let mut c = config();
    c.quota_per_subscriber = 1;
    let mut h = Harness::with(c);
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let free = h.server.pool().free_ports(0, 1) + h.server.pool().free_ports(1, 1);
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5001, 3600, None, &[]),
    );
    assert_eq!(a.result(), ResultCode::UserExQuota);
    assert_eq!(
        h.server.pool().free_ports(0, 1) + h.server.pool().free_ports(1, 1),
        free
    );
    h.check();
}

// RFC 6887 §7.4 (SHOULD): the most specific error; options processed in order (§7.3).
#[test]
fn options_in_order_unknown_mandatory_before_a_malformed_one_wins() {
    let mut h = Harness::new();
    let unknown = PcpOption::Unknown(UnknownOption {
        code: OptionCode(99),
        data: &[],
    });
    let bad = PcpOption::Description(Description::new("a"));
    // DESCRIPTION twice is MALFORMED_OPTION, but the unknown mandatory option comes first.
    let opts = [unknown, bad, bad];
    let b = emit(&map_req(
        CLIENT,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &opts,
    ));
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::UnsuppOption)
    );
    let opts = [bad, bad, unknown];
    let b = emit(&map_req(
        CLIENT,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &opts,
    ));
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::MalformedOption)
    );
}

// RFC 6887 §7.4 (RECOMMENDED): 30 s for short errors, 30 min for long ones; configurable.
#[test]
fn error_lifetimes_are_30_seconds_short_and_30_minutes_long() {
    let mut c = config();
    c.quota_per_subscriber = 0;
    let mut h = Harness::with(c);
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    assert_eq!((a.result(), a.lifetime()), (ResultCode::UserExQuota, 30));
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol(132), 5000, 3600, None, &[]),
    );
    assert_eq!(
        (a.result(), a.lifetime()),
        (ResultCode::UnsuppProtocol, 1800)
    );
    let mut c = config();
    c.long_error_lifetime = 600;
    let mut h = Harness::with(c);
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol(132), 5000, 3600, None, &[]),
    );
    assert_eq!(a.lifetime(), 600);
}

// RFC 6887 §7.4 (MUST): CANNOT_PROVIDE_EXTERNAL only for MAP+PREFER_FAILURE or PEER;
// EXCESSIVE_REMOTE_PEERS only for MAP with FILTER.
#[test]
fn cannot_provide_external_only_with_prefer_failure_or_peer() {
    let mut h = Harness::new();
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let taken = a.external();
    // Another subscriber suggests the taken endpoint without PREFER_FAILURE: gets another.
    let b = h.request(
        CLIENT2,
        &map_req(
            CLIENT2,
            nonce(2),
            Protocol::UDP,
            5000,
            3600,
            Some(taken),
            &[],
        ),
    );
    assert_eq!(b.result(), ResultCode::Success);
    assert_ne!(b.external(), taken);
    // Over-quota without FILTER is never EXCESSIVE_REMOTE_PEERS.
    let mut c = config();
    c.max_filters = 0;
    let mut h = Harness::with(c);
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    assert_eq!(a.result(), ResultCode::Success);
}

// RFC 6887 §8.2 step 6 (MAY), §7.4: system exhaustion answers NO_RESOURCES.
#[test]
fn system_exhaustion_gets_no_resources() {
    let mut c = config();
    c.max_mappings = 1;
    let mut h = Harness::with(c);
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let a = h.request(
        CLIENT2,
        &map_req(CLIENT2, nonce(2), Protocol::UDP, 5000, 3600, None, &[]),
    );
    assert_eq!((a.result(), a.lifetime()), (ResultCode::NoResources, 30));
    // An address's ports exhausted: NO_RESOURCES too.
    let mut c = EngineConfig_one();
    c.port_min = 40000;
    c.port_max = 40001;
    let mut h = Harness::with(c);
    for p in 0..2u16 {
        let a = h.request(
            CLIENT,
            &map_req(CLIENT, nonce(1), Protocol::TCP, 6000 + p, 3600, None, &[]),
        );
        assert_eq!(a.result(), ResultCode::Success);
    }
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::TCP, 6002, 3600, None, &[]),
    );
    assert_eq!(a.result(), ResultCode::NoResources);
}

#[allow(non_snake_case)]
fn EngineConfig_one() -> cgn_sim::config::EngineConfig {
    cgn_sim::config::EngineConfig::with_pools(&["198.51.100.1"])
}

// RFC 6887 §7.2: Version 2, R = 1, reserved 0 on every answer; an identical request gets an
// identical answer (idempotence, §8.2).
#[test]
fn identical_requests_get_identical_answers() {
    let mut h = Harness::new();
    let r = map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]);
    let a = h.request(CLIENT, &r);
    let b = h.request(CLIENT, &r);
    assert_eq!(a, b);
    assert_eq!((a.bytes[0], a.bytes[1], a.bytes[2]), (2, 0x81, 0));
    let _ = SocketAddrV4::new(CLIENT, 1);
}
