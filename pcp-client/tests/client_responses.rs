//! Fake-clock tests of request construction, nonces, response processing, RFC 7488 failover
//! and version negotiation / NAT-PMP fallback (RFC 6887 §8.1, §8.3, §9, §11, §12, §13, §15.1;
//! RFC 7488 §3; RFC 6886).

mod client_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use client_support::*;
use pcp_client::client::{
    Config, ErrorCode, Event, MapRequest, PeerRequest, RequestError, Version,
};
use pcp_client::natpmp;
use pcp_client::wire::{Filter, Nonce, OpcodeData, OptionCode, PcpOption, Protocol, ResultCode};

// RFC 6887 §8.1: the Client IP field carries the packet's source address.
#[test]
fn client_ip_field_is_the_source_address() {
    let mut h = Harness::new();
    h.map(udp_map(5000, 60));
    let s = h.take_sent().pop().expect("sent");
    assert_eq!(s.from, ip(CLIENT));
    assert_eq!(s.request().client_ip, ip(CLIENT));
    assert_eq!(s.to, sa(SERVER));
}

// RFC 6887 §8.1.1 (same nonce on retransmission), §11.2.1 (renewal) and §15 (delete).
#[test]
fn retransmission_renewal_and_delete_reuse_the_nonce() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 100));
    h.advance(secs(4.0));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2);
    h.answer(&sent[1], ResultCode::Success, 100, 1, 15000);
    h.advance(secs(70.0));
    let renewal = h.take_sent().pop().expect("renewal");
    h.engine.delete(h.now, id).expect("known");
    h.drain();
    let delete = h.take_sent().pop().expect("delete");
    let nonce = sent[0].map().nonce;
    assert_eq!(sent[1].map().nonce, nonce);
    assert_eq!(renewal.map().nonce, nonce);
    assert_eq!(delete.map().nonce, nonce);
    assert_eq!(h.engine.mapping(id).map(|m| m.nonce), Some(nonce));
}

// RFC 6887 §15.1 + erratum 3621: delete = lifetime 0, port 0, the all-zeros address of the
// family being deleted (::ffff:0:0 for IPv4, :: for IPv6); no PREFER_FAILURE or FILTER.
#[test]
fn delete_sends_port_zero_and_the_family_zero_address() {
    for v6 in [false, true] {
        let mut h = Harness::new();
        let mut req = udp_map(5000, 100).prefer_failure().filter(Filter {
            prefix_length: 128,
            remote_peer_port: 0,
            remote_peer_address: ip("203.0.113.50"),
        });
        req = if v6 {
            req.suggest(sa("[2001:db8::1]:5000"))
        } else {
            req.suggest(sa("198.51.100.7:5000"))
        };
        let id = h.map(req);
        let create = h.take_sent().pop().expect("sent");
        h.answer(&create, ResultCode::Success, 100, 1, 5000);
        h.engine.delete(h.now, id).expect("known");
        h.drain();
        let del = h.take_sent().pop().expect("delete");
        let r = del.request();
        assert_eq!(r.lifetime, 0);
        let m = del.map();
        assert_eq!(m.external_port, 0);
        let zero = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        assert_eq!(m.external_address, zero);
        assert!(!r.options.contains(OptionCode::PREFER_FAILURE));
        assert!(!r.options.contains(OptionCode::FILTER));
        // The confirmation deletes it.
        h.answer(&del, ResultCode::Success, 0, 2, 0);
        assert!(h.take_events().contains(&Event::Deleted { id }));
        assert_eq!(h.engine.mapping_count(), 0);
    }
}

// RFC 6887 §11.2, RFC 7488 §4: nonces MUST differ between servers; a caller-supplied nonce is
// used as given (to renew or delete after a restart) but refused at a second server.
#[test]
fn nonces_differ_between_servers_and_can_be_supplied() {
    let mut h = Harness::new();
    let other = h
        .engine
        .add_server(vec![pcp_client::client::Path {
            remote: sa("192.168.0.2:5351"),
            local: ip(CLIENT),
        }])
        .expect("server");
    let a = h
        .engine
        .map(h.now, h.server, udp_map(5000, 60))
        .expect("ok");
    let b = h.engine.map(h.now, other, udp_map(5000, 60)).expect("ok");
    let na = h.engine.mapping(a).expect("a").nonce;
    let nb = h.engine.mapping(b).expect("b").nonce;
    assert_ne!(na, nb);
    let supplied = Nonce([9; 12]);
    let c = h
        .engine
        .map(h.now, h.server, udp_map(6000, 60).nonce(supplied))
        .expect("ok");
    assert_eq!(h.engine.mapping(c).expect("c").nonce, supplied);
    assert_eq!(
        h.engine
            .map(h.now, other, udp_map(6000, 60).nonce(supplied)),
        Err(RequestError::NonceUsedAtAnotherServer)
    );
    assert_eq!(
        h.engine
            .map(h.now, h.server, udp_map(6000, 60).nonce(supplied)),
        Err(RequestError::Duplicate)
    );
}

// RFC 6887 §11.1, §11.2, §12.1, §13.1, §13.2; RFC 7753; RFC 7843: requests that break a
// client rule are refused before anything is sent.
#[test]
fn invalid_requests_are_refused_before_sending() {
    let mut h = Harness::new();
    let remote = sa("203.0.113.50:80");
    let peer_pf = {
        let mut p = PeerRequest::new(Protocol::TCP, 5000, remote, 60);
        p.options.prefer_failure = true;
        p
    };
    assert_eq!(
        h.engine.peer(h.now, h.server, peer_pf),
        Err(RequestError::PreferFailureInPeer)
    );
    let cases = [
        (
            MapRequest::new(Protocol::ALL, 80, 60),
            RequestError::AllProtocolsWithPort(80),
        ),
        (
            MapRequest::new(Protocol(46), 80, 60),
            RequestError::PortOnPortlessProtocol(Protocol(46)),
        ),
        (
            udp_map(80, 60).prefer_failure(),
            RequestError::PreferFailureWithoutPort,
        ),
        (
            udp_map(80, 60).third_party(ip(CLIENT)),
            RequestError::ThirdPartyIsSelf(ip(CLIENT)),
        ),
        (udp_map(80, 0), RequestError::ZeroLifetime),
        (
            udp_map(80, 60)
                .suggest(sa("198.51.100.1:80"))
                .prefer_failure()
                .port_set(8, false),
            RequestError::PortSetWithPreferFailure,
        ),
    ];
    for (req, err) in cases {
        assert_eq!(h.engine.map(h.now, h.server, req), Err(err));
    }
    let mut tpid = udp_map(80, 60);
    tpid.options.third_party_id = Some(vec![1, 2]);
    assert_eq!(
        h.engine.map(h.now, h.server, tpid),
        Err(RequestError::ThirdPartyIdWithoutThirdParty)
    );
    assert_eq!(
        h.engine.peer(
            h.now,
            h.server,
            PeerRequest::new(Protocol::TCP, 5000, sa("203.0.113.50:0"), 60)
        ),
        Err(RequestError::PeerFieldZero("remote peer port"))
    );
    h.drain();
    assert!(h.take_sent().is_empty());
}

// Every option is sent, and replace-all FILTER sends prefix length 0 first (RFC 6887 §13.3).
#[test]
fn options_are_sent_and_filter_replace_all_goes_first() {
    let mut h = Harness::new();
    let mut req = udp_map(5000, 60)
        .third_party(ip("192.168.0.20"))
        .description("game")
        .filter(Filter {
            prefix_length: 120,
            remote_peer_port: 0,
            remote_peer_address: ip("203.0.113.0"),
        });
    req.options.replace_filters = true;
    h.map(req);
    let s = h.take_sent().pop().expect("sent");
    let opts: Vec<_> = s.request().options.iter().collect();
    assert_eq!(opts[0], PcpOption::ThirdParty(ip("192.168.0.20")));
    let filters: Vec<_> = opts
        .iter()
        .filter_map(|o| match o {
            PcpOption::Filter(f) => Some(*f),
            _ => None,
        })
        .collect();
    assert_eq!(filters.len(), 2);
    assert!(filters[0].is_remove_all());
    assert!(opts.iter().any(|o| matches!(o, PcpOption::Description(_))));
    // PORT_SET: first internal port = internal port (RFC 7753).
    let mut h = Harness::new();
    h.map(udp_map(6000, 60).port_set(16, true));
    let s = h.take_sent().pop().expect("sent");
    assert!(matches!(
        s.request().options.find(OptionCode::PORT_SET),
        Some(PcpOption::PortSet(p)) if p.first_internal_port == 6000 && p.size == 16 && p.parity
    ));
}

// RFC 6887 §14.1.2: the ANNOUNCE request has lifetime 0; the answer reports the epoch.
#[test]
fn announce_request_has_lifetime_zero_and_reports_the_epoch() {
    let mut h = Harness::new();
    h.engine.announce(h.now, h.server).expect("server");
    h.drain();
    let s = h.take_sent().pop().expect("sent");
    let r = s.request();
    assert_eq!((r.lifetime, r.data), (0, OpcodeData::Announce));
    h.deliver(&announce(777));
    assert_eq!(
        h.take_events(),
        vec![Event::Announced {
            server: h.server,
            result: ResultCode::Success,
            epoch: 777
        }]
    );
}

// RFC 6887 §8.3 steps 1 to 5: wrong source address or port, under 4 bytes, R = 0, bad length.
#[test]
fn responses_failing_the_receive_rules_are_dropped() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 60));
    let s = h.take_sent().pop().expect("sent");
    let good = response(&s, ResultCode::Success, 60, 1, 15000, &[]);
    h.deliver_from("192.168.0.1:5352", &good); // wrong port
    h.deliver_from("192.168.0.99:5351", &good); // wrong address
    h.deliver(&good[..3]);
    let mut r0 = good.clone();
    r0[1] &= 0x7f;
    h.deliver(&r0);
    h.deliver(&good[..26]);
    let mut long = good.clone();
    long.resize(1104, 0);
    h.deliver(&long);
    assert!(h.take_events().is_empty());
    assert_eq!(h.engine.stats().dropped, 6);
    h.deliver(&good);
    assert!(matches!(h.take_events()[..], [Event::Granted { id: i, .. }] if i == id));
}

// RFC 6887 §8.3, §11.4: matching uses nonce, protocol, internal port (never the server-filled
// fields); responses to requests never sent are ignored (MUST).
#[test]
fn responses_match_on_the_internal_tuple_and_nonce_only() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 60).suggest(sa("198.51.100.9:7000")));
    let s = h.take_sent().pop().expect("sent");
    for tweak in 0..3 {
        let mut bad = response(&s, ResultCode::Success, 60, 1, 15000, &[]);
        match tweak {
            0 => bad[24] ^= 1, // nonce
            1 => bad[36] = 6,  // protocol
            _ => bad[41] ^= 1, // internal port
        }
        h.deliver(&bad);
    }
    assert!(h.take_events().is_empty());
    // A different external address, port and lifetime than suggested still matches.
    h.answer(&s, ResultCode::Success, 33, 1, 1234);
    assert!(matches!(
        h.take_events()[..],
        [Event::Granted { id: i, external, lifetime: 33, .. }] if i == id && external == sa("198.51.100.7:1234")
    ));
}

// RFC 6887 §12.4: PEER also matches on the remote peer.
#[test]
fn peer_responses_also_match_on_the_remote_peer() {
    let mut h = Harness::new();
    let id = h
        .engine
        .peer(
            h.now,
            h.server,
            PeerRequest::new(Protocol::TCP, 5000, sa("203.0.113.50:80"), 60),
        )
        .expect("valid");
    h.drain();
    let s = h.take_sent().pop().expect("sent");
    let mut bad = response(&s, ResultCode::Success, 60, 1, 15000, &[]);
    bad[60] ^= 1; // remote peer port
    h.deliver(&bad);
    assert!(h.take_events().is_empty());
    h.answer(&s, ResultCode::Success, 60, 1, 15000);
    assert!(matches!(h.take_events()[..], [Event::Granted { id: i, .. }] if i == id));
}

// RFC 6887 §7.3, §8.3: unknown options in responses are ignored, even mandatory-range ones.
#[test]
fn unknown_options_in_responses_are_ignored_even_mandatory_ones() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 60));
    let s = h.take_sent().pop().expect("sent");
    let unknown = PcpOption::Unknown(pcp_client::wire::UnknownOption {
        code: OptionCode(42),
        data: &[1, 2, 3],
    });
    let bytes = response(&s, ResultCode::Success, 60, 1, 15000, &[unknown]);
    h.deliver(&bytes);
    assert!(matches!(h.take_events()[..], [Event::Granted { id: i, .. }] if i == id));
}

// RFC 6887 §8, §8.3, §14.2: several responses to one request are accepted; an unsolicited
// response with a new external endpoint is a Mapping Update and is reported as a change.
#[test]
fn duplicate_and_updated_responses_are_handled() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 60));
    let s = h.take_sent().pop().expect("sent");
    h.answer(&s, ResultCode::Success, 60, 1, 15000);
    h.answer(&s, ResultCode::Success, 60, 1, 15000);
    h.answer(&s, ResultCode::Success, 60, 2, 16000);
    let events = h.take_events();
    assert!(matches!(events[0], Event::Granted { .. }));
    assert!(matches!(events[1], Event::Renewed { .. }));
    assert_eq!(
        events[2],
        Event::Changed {
            id,
            previous: sa("198.51.100.7:15000"),
            external: sa("198.51.100.7:16000"),
            lifetime: 60
        }
    );
}

// RFC 6887 §13.2: a PREFER_FAILURE success that does not echo the suggestion is a stale
// Mapping Update and is not applied.
#[test]
fn prefer_failure_success_must_echo_the_suggestion() {
    let mut h = Harness::new();
    let id = h.map(
        udp_map(5000, 60)
            .suggest(sa("198.51.100.7:5000"))
            .prefer_failure(),
    );
    let s = h.take_sent().pop().expect("sent");
    h.answer(&s, ResultCode::Success, 60, 1, 5001);
    assert!(h.take_events().is_empty());
    assert_eq!(h.engine.stats().stale_updates, 1);
    h.answer(&s, ResultCode::Success, 60, 1, 5000);
    assert!(matches!(h.take_events()[..], [Event::Granted { id: i, .. }] if i == id));
}

// RFC 6887 §11.2: the client copes with never getting its suggested port.
#[test]
fn a_different_external_port_than_suggested_is_accepted() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 60).suggest(sa("0.0.0.0:5000")));
    let s = h.take_sent().pop().expect("sent");
    h.answer(&s, ResultCode::Success, 60, 1, 40000);
    assert_eq!(
        h.engine.mapping(id).and_then(|m| m.external),
        Some(sa("198.51.100.7:40000"))
    );
}

// RFC 7488 §3: MRC = 4 per address, then the next address, same nonce; the address that
// answers is kept; a late answer from an abandoned address is ignored.
#[test]
fn failover_moves_to_the_next_address_after_four_transmissions() {
    let mut h = Harness::with_paths(Config::default(), 1, &[SERVER, "192.168.0.254:5351"]);
    let id = h.map(udp_map(5000, 3600));
    h.advance(secs(50.0));
    let sent = h.take_sent();
    let first: Vec<_> = sent.iter().filter(|s| s.to == sa(SERVER)).collect();
    let second: Vec<_> = sent.iter().filter(|s| s.to != sa(SERVER)).collect();
    assert_eq!(first.len(), 4);
    assert!(!second.is_empty());
    assert!(second[0].at > first[3].at);
    // RT restarts from IRT on the new address.
    let gap = h.elapsed(second[0].at) - h.elapsed(first[3].at);
    assert!(gap > 20.0, "4th RT ≈ 24 s: {gap}");
    assert!(sent.iter().all(|s| s.map().nonce == sent[0].map().nonce));
    // Late answer from the abandoned address: ignored.
    h.answer(first[0], ResultCode::Success, 3600, 1, 15000);
    assert!(h.take_events().is_empty());
    h.answer(second[0], ResultCode::Success, 3600, 1, 15000);
    assert!(matches!(h.take_events()[..], [Event::Granted { id: i, .. }] if i == id));
    h.advance(secs(2300.0));
    assert!(h.take_sent().iter().all(|s| s.to == second[0].to));
}

// RFC 7488 §3 (MUST): a hard ICMP error moves to the next address at once.
#[test]
fn icmp_error_moves_to_the_next_address_at_once() {
    let mut h = Harness::with_paths(Config::default(), 1, &[SERVER, "192.168.0.254:5351"]);
    h.map(udp_map(5000, 3600));
    h.take_sent();
    h.advance(secs(0.5));
    h.engine.handle_icmp_error(h.now, sa(SERVER));
    h.drain();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to, sent[0].at), (sa("192.168.0.254:5351"), h.now));
}

// RFC 7488 §3: when every address failed, the whole procedure repeats every 15 minutes.
#[test]
fn all_addresses_failed_retries_every_fifteen_minutes() {
    let mut h = Harness::with_paths(Config::default(), 1, &[SERVER, "192.168.0.254:5351"]);
    h.map(udp_map(5000, 3600));
    h.advance(secs(100.0));
    assert_eq!(h.take_sent().len(), 8);
    assert!(
        h.take_events()
            .contains(&Event::ServerUnreachable { server: h.server })
    );
    h.advance(secs(800.0));
    assert!(h.take_sent().is_empty());
    h.advance(secs(100.0));
    let again = h.take_sent();
    assert_eq!(again[0].to, sa(SERVER));
    assert!(h.elapsed(again[0].at) > 900.0);
}

// RFC 6887 §8.3, §9, App. A; RFC 6886 §3.5 vs miniupnpd: a NAT-PMP UNSUPP_VERSION reply is
// recognised with R = 0 (as printed) and R = 1 (as miniupnpd sends); an IPv4 UDP MAP falls
// back to NAT-PMP and is granted; the renewal tries PCP first again (RFC 6886 §1.1).
#[test]
fn natpmp_unsupp_version_falls_back_and_retries_pcp_on_renewal() {
    for reply in [[0u8, 0, 0, 1, 0, 0, 0, 5], [0u8, 0x81, 0, 1, 0, 0, 0, 5]] {
        let mut h = Harness::new();
        let id = h.map(udp_map(5000, 7200));
        h.take_sent();
        h.deliver(&reply);
        let sent = h.take_sent();
        // A NAT-PMP map request and an external address request.
        let kinds: Vec<_> = sent
            .iter()
            .map(|s| natpmp::RequestRepr::parse(&s.bytes).expect("NAT-PMP"))
            .collect();
        assert!(kinds.contains(&natpmp::RequestRepr::ExternalAddress));
        assert!(kinds.iter().any(|k| matches!(
            k,
            natpmp::RequestRepr::Map {
                protocol: natpmp::Transport::Udp,
                internal_port: 5000,
                ..
            }
        )));
        let mut buf = [0u8; 16];
        let n = natpmp::ResponseRepr::ExternalAddress {
            epoch: 6,
            external_address: Ipv4Addr::new(198, 51, 100, 3),
        }
        .emit(&mut buf)
        .expect("fits");
        h.deliver(&buf[..n]);
        let n = natpmp::ResponseRepr::Map {
            protocol: natpmp::Transport::Udp,
            epoch: 6,
            internal_port: 5000,
            external_port: 40000,
            lifetime: 7200,
        }
        .emit(&mut buf)
        .expect("fits");
        h.deliver(&buf[..n]);
        assert!(h.take_events().contains(&Event::Granted {
            id,
            external: sa("198.51.100.3:40000"),
            lifetime: 7200,
            epoch: 6,
            via: Version::NatPmp
        }));
        h.advance(secs(4500.0));
        let renewal = h.take_sent();
        assert!(renewal[0].is_pcp(), "PCP first on renewal");
    }
}

// RFC 6887 §9: a request NAT-PMP cannot carry (PEER) fails with UNSUPP_VERSION, held down
// for 30 minutes.
#[test]
fn natpmp_server_fails_requests_natpmp_cannot_carry() {
    let mut h = Harness::new();
    let id = h
        .engine
        .peer(
            h.now,
            h.server,
            PeerRequest::new(Protocol::TCP, 5000, sa("203.0.113.50:80"), 60),
        )
        .expect("valid");
    h.drain();
    h.take_sent();
    h.deliver(&[0, 0, 0, 1, 0, 0, 0, 5]);
    assert_eq!(
        h.take_events(),
        vec![Event::Failed {
            id,
            code: ErrorCode::Pcp(ResultCode::UnsuppVersion),
            lifetime: 1800
        }]
    );
    h.advance(secs(1799.0));
    assert!(h.take_sent().is_empty());
}

// RFC 6887 §9: UNSUPP_VERSION naming another PCP version (this client has only 2): retry
// after min(30 min, lifetime); the check runs before the 24-byte minimum.
#[test]
fn unsupp_version_for_another_version_retries_after_min_30_min_and_lifetime() {
    let mut h = Harness::new();
    h.map(udp_map(5000, 60));
    h.take_sent();
    // 8-byte reply, version 3, UNSUPP_VERSION, lifetime 120.
    h.deliver(&[3, 0x81, 0, 1, 0, 0, 0, 120]);
    assert!(matches!(
        h.take_events()[..],
        [Event::Failed {
            lifetime: 120,
            code: ErrorCode::Pcp(ResultCode::UnsuppVersion),
            ..
        }]
    ));
    h.advance(secs(119.0));
    assert!(h.take_sent().is_empty());
    h.advance(secs(2.0));
    assert!(h.take_sent()[0].is_pcp());
}

// RFC 6886 §3.6 through the fallback: a NAT-PMP epoch that falls behind means state loss.
#[test]
fn natpmp_epoch_state_loss_renews_everything() {
    let mut h = Harness::new();
    h.map(udp_map(5000, 7200));
    h.map(udp_map(5001, 7200));
    h.take_sent();
    h.deliver(&[0, 0x81, 0, 1, 0, 0, 0x10, 0]);
    let mut buf = [0u8; 16];
    for port in [5000, 5001] {
        let n = natpmp::ResponseRepr::Map {
            protocol: natpmp::Transport::Udp,
            epoch: 4096,
            internal_port: port,
            external_port: port,
            lifetime: 7200,
        }
        .emit(&mut buf)
        .expect("fits");
        h.deliver(&buf[..n]);
    }
    h.take_sent();
    h.advance(secs(100.0));
    let n = natpmp::ResponseRepr::ExternalAddress {
        epoch: 3,
        external_address: Ipv4Addr::new(198, 51, 100, 3),
    }
    .emit(&mut buf)
    .expect("fits");
    h.deliver(&buf[..n]);
    assert_eq!(h.take_sent().len(), 2, "both mappings re-sent");
}

// Bounded state (found by the client_engine fuzz target): forgetting mappings shrinks the
// timer heap with them, and datagrams never add mappings.
#[test]
fn state_stays_bounded_when_mappings_come_and_go() {
    let mut h = Harness::new();
    let ids: Vec<_> = (0..100).map(|p| h.map(udp_map(3000 + p, 60))).collect();
    for _ in 0..20 {
        h.advance(secs(1.0));
        h.engine.clear_hold_downs(h.now);
    }
    for id in &ids[1..] {
        h.engine.forget(*id);
    }
    let (timers, transmits, events) = h.engine.queue_lengths();
    assert!(timers <= 2 * h.engine.mapping_count() + 65, "{timers}");
    assert_eq!((transmits, events), (0, 0));
    for _ in 0..100 {
        h.deliver(&announce(1));
        h.deliver(&[2, 0x81, 0, 0, 1, 2, 3]);
    }
    assert_eq!(h.engine.mapping_count(), 1);
}

// RFC 6887 §13.2 against a server that ignores PREFER_FAILURE (seen with miniupnpd 2.3.1):
// one non-echoing success is a possible race and is ignored; a second one for the same
// unanswered request is reported and what the server made is deleted with the same nonce.
#[test]
fn server_ignoring_prefer_failure_is_reported_and_its_offer_deleted() {
    let mut h = Harness::new();
    let id = h.map(
        udp_map(6001, 300)
            .suggest(sa("198.51.100.7:6000"))
            .prefer_failure(),
    );
    let first = h.take_sent().pop().expect("sent");
    h.answer(&first, ResultCode::Success, 300, 1, 6001);
    assert!(h.take_events().is_empty());
    h.advance(secs(3.5));
    let retry = h.take_sent().pop().expect("retransmitted");
    h.answer(&retry, ResultCode::Success, 300, 4, 6001);
    assert_eq!(
        h.take_events(),
        vec![Event::PreferFailureIgnored {
            id,
            offered: sa("198.51.100.7:6001")
        }]
    );
    let delete = h.take_sent().pop().expect("delete sent at once");
    assert_eq!(delete.request().lifetime, 0);
    assert_eq!(delete.map().nonce, first.map().nonce);
    h.answer(&delete, ResultCode::Success, 0, 4, 0);
    assert_eq!(h.take_events(), vec![Event::Deleted { id }]);
}

// RFC 7753 §4, RFC 6887 §7.3: the granted PORT_SET is read from the response; a response
// without it means a single port.
#[test]
fn granted_port_set_is_read_from_the_response() {
    let mut h = Harness::new();
    let id = h.map(udp_map(6000, 60).port_set(16, true));
    let s = h.take_sent().pop().expect("sent");
    // The responder helper copies the request's options, so the PORT_SET comes back.
    h.answer(&s, ResultCode::Success, 60, 1, 16000);
    let set = h
        .engine
        .mapping(id)
        .and_then(|m| m.port_set)
        .expect("port set");
    assert_eq!(
        (set.size, set.first_internal_port, set.parity),
        (16, 6000, true)
    );
    let mut h = Harness::new();
    let id = h.map(udp_map(6000, 60).port_set(16, true));
    let s = h.take_sent().pop().expect("sent");
    let mut bytes = response(&s, ResultCode::Success, 60, 1, 16000, &[]);
    bytes.truncate(60); // drop the echoed options: one port was mapped
    h.deliver(&bytes);
    assert_eq!(h.engine.mapping(id).map(|m| m.port_set), Some(None));
}
