//! Unit tests of the interworking core with no PCP server answering (the lossy, answering
//! server is in `tests/tests/iwf_sim.rs`): the parts decided locally, in simulated time.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::mapping::{Lease, MappingKey, PortChoice, PortMapping, Protocol};

const APP_A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
const APP_B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

fn core() -> (Core, Instant) {
    let now = Instant::now();
    let config = CoreConfig::new(
        "100.64.0.1:5351".parse().expect("literal"),
        Ipv4Addr::new(100, 64, 0, 2),
    );
    (Core::with_seed(config, 1, now, SystemTime::now()), now)
}

fn add(client: Ipv4Addr, port: u16, now: Instant) -> Request {
    Request::Add(AddRequest {
        mapping: PortMapping {
            key: MappingKey {
                external_port: port,
                protocol: Protocol::Udp,
                remote_host: None,
            },
            internal_client: client,
            internal_port: port,
            enabled: true,
            description: "game".into(),
            lease: Lease::Until(now + Duration::from_secs(3600)),
            owner: client,
        },
        choice: PortChoice::Exact,
    })
}

fn outputs(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn sent(core: &mut Core, now: Instant) -> usize {
    let mut buf = [0u8; 1100];
    std::iter::from_fn(|| core.poll_transmit(now, &mut buf)).count()
}

fn nat1_ops(out: &[Output]) -> Vec<(u64, Nat1Command)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Nat1 { op, command } => Some((*op, *command)),
            _ => None,
        })
        .collect()
}

fn reply(out: &[Output], request: u64) -> Option<&Result<PortMapping, MappingError>> {
    out.iter().find_map(|o| match o {
        Output::Reply { request: r, result } if *r == request => Some(result),
        _ => None,
    })
}

/// AddPortMapping of UDP `port` for APP_A as `request`, its NAT1 install confirmed: the MAP
/// the core sends.
fn map_sent(c: &mut Core, now: Instant, request: u64, port: u16) -> Vec<u8> {
    c.handle_request(now, request, add(APP_A, port, now));
    let (op, _) = nat1_ops(&outputs(c))[0];
    c.handle_nat1_result(now, op, Ok(()));
    let mut buf = [0u8; 1100];
    let t = c.poll_transmit(now, &mut buf).expect("MAP at once");
    buf[..t.len].to_vec()
}

/// The nonce of a PCP MAP request.
fn nonce_of(bytes: &[u8]) -> pcp_client::wire::Nonce {
    pcp_client::wire::RequestRepr::parse(bytes)
        .expect("valid PCP")
        .data
        .map_fields()
        .expect("MAP")
        .nonce
}

// Design §7: two LAN apps racing for one external port: the second meets the first in flight
// and gets 718 at once, with no NAT1 change and no PCP traffic of its own.
#[test]
fn second_app_racing_for_a_port_in_flight_gets_a_conflict_and_nothing_leaks() {
    let (mut c, now) = core();
    c.handle_request(now, 1, add(APP_A, 5000, now));
    c.handle_request(now, 2, add(APP_B, 5000, now));
    let out = outputs(&mut c);
    assert_eq!(reply(&out, 2), Some(&Err(MappingError::Conflict)));
    assert_eq!(reply(&out, 1), None, "the first is still in flight");
    assert_eq!(nat1_ops(&out).len(), 1, "one NAT1 install, for the first");
    assert_eq!(c.entries().count(), 1);
}

// nat1-nftables.md: a port the router already forwards elsewhere is 729, and the MAP is never
// sent; the reservation is released.
#[test]
fn nat1_conflict_answers_729_and_sends_no_map() {
    let (mut c, now) = core();
    c.handle_request(now, 1, add(APP_A, 5000, now));
    let (op, _) = nat1_ops(&outputs(&mut c))[0];
    let conflict = crate::nat1::Nat1Error::ConflictWithOtherMechanisms {
        protocol: Protocol::Udp,
        wan_port: 5000,
        table: "inet fw4".into(),
    };
    c.handle_nat1_result(now, op, Err(conflict));
    let out = outputs(&mut c);
    assert_eq!(
        reply(&out, 1),
        Some(&Err(MappingError::ConflictWithOtherMechanisms))
    );
    assert_eq!(sent(&mut c, now), 0);
    assert_eq!(c.entries().count(), 0);
}

// RFC 6970 §5.1: a PCP server that never answers gives 501 within CREATE_GIVE_UP (before the
// control point's 5 s SOAP timeout), and the NAT1 rules are rolled back.
#[test]
fn unanswered_map_gives_501_in_time_and_rolls_nat1_back() {
    let (mut c, now) = core();
    c.handle_request(now, 1, add(APP_A, 5000, now));
    let (op, cmd) = nat1_ops(&outputs(&mut c))[0];
    assert!(matches!(cmd, Nat1Command::Install(r) if r.wan_port == 5000 && r.client == APP_A));
    c.handle_nat1_result(now, op, Ok(()));
    let mut buf = [0u8; 1100];
    let first = c.poll_transmit(now, &mut buf).expect("MAP at once");
    let nonce = nonce_of(&buf[..first.len]);
    let mut answered = None;
    for _ in 0..1000 {
        let Some(next) = c.poll_timeout() else { break };
        if next > now + Duration::from_secs(30) {
            break;
        }
        c.handle_timeout(next);
        let out = outputs(&mut c);
        if let Some(r) = reply(&out, 1) {
            answered = Some((next, r.clone(), nat1_ops(&out)));
            break;
        }
        sent(&mut c, next);
    }
    let (at, result, ops) = answered.expect("answered");
    assert!(matches!(result, Err(MappingError::Upstream(ref m)) if m.contains("no answer")));
    assert!(at - now <= CREATE_GIVE_UP, "{:?}", at - now);
    assert!(matches!(ops.as_slice(), [(_, Nat1Command::Remove(r))] if r.wan_port == 5000));
    // The server may have made it with only its answers lost: a delete with the same nonce
    // goes out (lifetime 0), so a retry by the control point is not refused as NOT_AUTHORIZED.
    let t = c.poll_transmit(at, &mut buf).expect("background delete");
    let del = pcp_client::wire::RequestRepr::parse(&buf[..t.len]).expect("valid PCP");
    assert_eq!(del.lifetime, 0);
    assert_eq!(nonce_of(&buf[..t.len]), nonce);
}

// RFC 6970 §5.8: a delete of a mapping not in the table is 714 with no PCP traffic.
#[test]
fn delete_of_an_unknown_mapping_is_714_without_pcp_traffic() {
    let (mut c, now) = core();
    let key = MappingKey {
        external_port: 7000,
        protocol: Protocol::Tcp,
        remote_host: None,
    };
    c.handle_request(now, 9, Request::Delete(key));
    let out = outputs(&mut c);
    assert_eq!(reply(&out, 9), Some(&Err(MappingError::NotFound)));
    assert_eq!(sent(&mut c, now), 0);
}

// The quota counts mappings in flight too (no check-then-await).
#[test]
fn quota_counts_mappings_still_in_flight() {
    let (mut c, now) = core();
    let mut cfg = c.config().clone();
    cfg.max_per_client = Some(2);
    let mut c2 = Core::with_seed(cfg, 2, now, SystemTime::now());
    for (i, port) in [5000u16, 5001, 5002].into_iter().enumerate() {
        c2.handle_request(now, i as u64, add(APP_A, port, now));
    }
    let out = outputs(&mut c2);
    assert_eq!(reply(&out, 2), Some(&Err(MappingError::NoPortsAvailable)));
    assert_eq!(nat1_ops(&out).len(), 2);
    let _ = outputs(&mut c);
}

/// Answers the PCP request in `bytes` as a server would, granting `external_port`.
fn answer(
    c: &mut Core,
    now: Instant,
    bytes: &[u8],
    result: pcp_client::wire::ResultCode,
    external_port: u16,
) {
    use pcp_client::wire::{MapData, OpcodeData, Options, ResponseRepr};
    let req = pcp_client::wire::RequestRepr::parse(bytes).expect("valid PCP");
    let map = *req.data.map_fields().expect("MAP");
    let mut buf = [0u8; 1100];
    let len = ResponseRepr {
        result,
        lifetime: if req.lifetime == 0 {
            0
        } else {
            req.lifetime.min(3600)
        },
        epoch: 100,
        data: OpcodeData::Map(MapData {
            external_port,
            external_address: "198.51.100.7".parse().expect("literal"),
            ..map
        }),
        options: Options::EMPTY,
    }
    .emit(&mut buf)
    .expect("fits");
    c.handle_datagram(
        now,
        "100.64.0.1:5351".parse().expect("literal"),
        "100.64.0.2:40000".parse().expect("literal"),
        &buf[..len],
    );
}

// RFC 6970 §5.7, G4, G5: GetSpecific for a port not in the table probes with a short
// PREFER_FAILURE MAP from a throw-away port (no NAT1 rule), answers 714 even when the probe
// succeeds, and deletes the probe's mapping at once with its nonce; it never enters the table.
#[test]
fn getspecific_probe_is_short_prefer_failure_answers_714_and_is_deleted_at_once() {
    let (mut c, now) = core();
    let key = MappingKey {
        external_port: 6881,
        protocol: Protocol::Tcp,
        remote_host: None,
    };
    c.handle_request(now, 5, Request::ProbeSpecific(key));
    assert!(
        nat1_ops(&outputs(&mut c)).is_empty(),
        "no NAT1 rule for a probe"
    );
    let mut buf = [0u8; 1100];
    let t = c.poll_transmit(now, &mut buf).expect("probe sent");
    let probe = buf[..t.len].to_vec();
    let req = pcp_client::wire::RequestRepr::parse(&probe).expect("valid");
    let map = *req.data.map_fields().expect("MAP");
    assert_eq!(req.lifetime, PROBE_LIFETIME);
    assert_eq!(map.external_port, 6881);
    assert!(
        map.internal_port >= 60000,
        "throw-away port {}",
        map.internal_port
    );
    assert!(
        req.options
            .iter()
            .any(|o| matches!(o, pcp_client::wire::PcpOption::PreferFailure))
    );
    answer(
        &mut c,
        now,
        &probe,
        pcp_client::wire::ResultCode::Success,
        6881,
    );
    let out = outputs(&mut c);
    assert_eq!(reply(&out, 5), Some(&Err(MappingError::NotFound)));
    let t = c
        .poll_transmit(now, &mut buf)
        .expect("probe deleted at once");
    let del = pcp_client::wire::RequestRepr::parse(&buf[..t.len]).expect("valid");
    assert_eq!(del.lifetime, 0);
    assert_eq!(del.data.map_fields().expect("MAP").nonce, map.nonce);
    assert_eq!(c.entries().count(), 0);
    assert_eq!(
        c.external_address(),
        Some("198.51.100.7".parse().expect("literal"))
    );
}

// RFC 6970 §4.2 (MAY): GetExternalIPAddress with no address known makes a short mapping of
// UDP 9, answers with the address it got, and deletes the mapping; once known, no probe.
#[test]
fn external_address_probe_learns_the_address_then_answers_from_the_cache() {
    let (mut c, now) = core();
    c.handle_request(now, 7, Request::ProbeExternal);
    let mut buf = [0u8; 1100];
    let t = c.poll_transmit(now, &mut buf).expect("probe sent");
    let probe = buf[..t.len].to_vec();
    let req = pcp_client::wire::RequestRepr::parse(&probe).expect("valid");
    assert_eq!(
        req.data.map_fields().expect("MAP").internal_port,
        PROBE_EXTERNAL_PORT
    );
    answer(
        &mut c,
        now,
        &probe,
        pcp_client::wire::ResultCode::Success,
        30009,
    );
    let out = outputs(&mut c);
    assert!(out.iter().any(|o| matches!(o,
        Output::External { request: 7, address: Some(a) } if a.to_string() == "198.51.100.7")));
    assert!(
        c.poll_transmit(now, &mut buf).is_some(),
        "probe mapping deleted"
    );
    c.handle_request(now, 8, Request::ProbeExternal);
    let out = outputs(&mut c);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::External {
            request: 8,
            address: Some(_)
        }
    )));
    assert!(c.poll_transmit(now, &mut buf).is_none(), "no second probe");
}

// RFC 6888 REQ-8, RFC 6887 §15: a CGN holds a deleted mapping's port for the same internal
// endpoint *and nonce*; an app that deletes and re-adds its port gets the same nonce, so the
// hold-down does not refuse it.
#[test]
fn re_adding_a_just_deleted_port_reuses_its_nonce() {
    let (mut c, now) = core();
    let mut buf = [0u8; 1100];
    let first = map_sent(&mut c, now, 1, 5000);
    answer(
        &mut c,
        now,
        &first,
        pcp_client::wire::ResultCode::Success,
        5000,
    );
    assert!(matches!(reply(&outputs(&mut c), 1), Some(Ok(_))));
    let key = MappingKey {
        external_port: 5000,
        protocol: Protocol::Udp,
        remote_host: None,
    };
    c.handle_request(now, 2, Request::Delete(key));
    let t = c.poll_transmit(now, &mut buf).expect("delete");
    let delete = buf[..t.len].to_vec();
    answer(
        &mut c,
        now,
        &delete,
        pcp_client::wire::ResultCode::Success,
        0,
    );
    // Answered once the CGN confirmed, before the NAT1 removal (which follows at once).
    let out = outputs(&mut c);
    assert!(matches!(reply(&out, 2), Some(Ok(_))));
    let (op, cmd) = nat1_ops(&out)[0];
    assert!(matches!(cmd, Nat1Command::Remove(r) if r.wan_port == 5000));
    c.handle_nat1_result(now, op, Ok(()));
    let again = map_sent(&mut c, now, 3, 5000);
    assert_eq!(nonce_of(&again), nonce_of(&first));
}

// IGD:2 practice, RFC 6970 §5.6: AddPortMapping over the control point's own live entry is a
// refresh of the same PCP mapping: same nonce, the new lifetime and description, answered
// when the server confirms; nothing new in NAT1.
#[test]
fn add_over_own_entry_refreshes_with_the_same_nonce() {
    let (mut c, now) = core();
    let mut buf = [0u8; 1100];
    let first = map_sent(&mut c, now, 1, 5000);
    answer(
        &mut c,
        now,
        &first,
        pcp_client::wire::ResultCode::Success,
        5000,
    );
    let _ = outputs(&mut c);
    let Request::Add(mut again) = add(APP_A, 5000, now) else {
        unreachable!("add builds an Add")
    };
    again.mapping.lease = Lease::Until(now + Duration::from_secs(7200));
    again.mapping.description = "game, again".into();
    c.handle_request(now, 2, Request::Add(again));
    let out = outputs(&mut c);
    assert!(nat1_ops(&out).is_empty(), "same NAT1 rule");
    assert_eq!(reply(&out, 2), None, "waits for the server");
    let t = c.poll_transmit(now, &mut buf).expect("refresh at once");
    let refresh = buf[..t.len].to_vec();
    assert_eq!(nonce_of(&refresh), nonce_of(&first), "same nonce");
    let lifetime = pcp_client::wire::RequestRepr::parse(&refresh)
        .expect("valid")
        .lifetime;
    assert_eq!(lifetime, 7200);
    answer(
        &mut c,
        now,
        &refresh,
        pcp_client::wire::ResultCode::Success,
        5000,
    );
    let out = outputs(&mut c);
    assert!(matches!(reply(&out, 2), Some(Ok(m)) if m.description == "game, again"));
    assert_eq!(c.entries().count(), 1);
}

// Several GetExternalIPAddress at once share one probe (they would share internal port 9,
// and a second nonce for it would be refused); every one gets the answer.
#[test]
fn concurrent_external_address_requests_share_one_probe() {
    let (mut c, now) = core();
    c.handle_request(now, 1, Request::ProbeExternal);
    c.handle_request(now, 2, Request::ProbeExternal);
    let mut buf = [0u8; 1100];
    let t = c.poll_transmit(now, &mut buf).expect("one probe");
    let probe = buf[..t.len].to_vec();
    assert!(c.poll_transmit(now, &mut buf).is_none(), "only one");
    answer(
        &mut c,
        now,
        &probe,
        pcp_client::wire::ResultCode::Success,
        30009,
    );
    let out = outputs(&mut c);
    for r in [1, 2] {
        assert!(
            out.iter().any(
                |o| matches!(o, Output::External { request, address: Some(_) } if *request == r)
            ),
            "{r}: {out:?}"
        );
    }
}

// RFC 6970 §4.1: PortMappingEnabled other than 1 MUST produce an error (402 at the SOAP layer,
// gap G8); nothing is reserved on NAT1 and no MAP is sent.
#[test]
fn port_mapping_enabled_zero_is_refused_with_no_nat1_change_and_no_map() {
    let (mut c, now) = core();
    let mut req = add(APP_A, 5000, now);
    if let Request::Add(a) = &mut req {
        a.mapping.enabled = false;
    }
    c.handle_request(now, 1, req);
    let out = outputs(&mut c);
    assert_eq!(
        reply(&out, 1),
        Some(&Err(MappingError::DisabledNotSupported))
    );
    assert!(nat1_ops(&out).is_empty());
    assert_eq!(sent(&mut c, now), 0);
    assert_eq!(c.entries().count(), 0);
    // The same request enabled goes ahead.
    c.handle_request(now, 2, add(APP_A, 5000, now));
    assert_eq!(nat1_ops(&outputs(&mut c)).len(), 1);
}
