//! PEER and ANNOUNCE, server side (RFC 6887 §12.3, §14.1), checklist §7.8.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use pcp_client::wire::{OpcodeData, Protocol, ResultCode};
use support::*;

const R: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 1280);

// RFC 6887 §12.3 item 1: protocol, internal port, remote peer and nonce are copied.
#[test]
fn peer_response_copies_protocol_port_remote_and_nonce() {
    let mut h = Harness::new();
    let a = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(3), 17192, 1800, R, None, &[]),
    );
    assert_eq!(a.result(), ResultCode::Success);
    let OpcodeData::Peer(p) = a.repr().data else {
        panic!("PEER")
    };
    assert_eq!(
        (p.map.protocol, p.map.internal_port, p.map.nonce),
        (Protocol::UDP, 17192, nonce(3))
    );
    assert_eq!(
        (p.remote_peer_address, p.remote_peer_port),
        (IpAddr::V4(*R.ip()), R.port())
    );
    let table = h.server.render_table(h.now);
    assert!(
        table.starts_with("Type: PEER, Protocol: UDP, Zone: ---, Vpn: public 100.64.0.2:17192["),
        "{table}"
    );
    assert!(table.contains("] -> 203.0.113.50:1280 TTL: 1800, Left: 1800, Pool: 1, Section: 0 Mapping Nonce: 0x030303030303030303030303"), "{table}");
}

// RFC 6887 §12.3 item 2 (SHOULD): invalid remote peers → MALFORMED_REQUEST.
#[test]
fn invalid_remote_peer_gets_malformed_request() {
    let mut h = Harness::new();
    for bad in [
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        let a = h.request(
            CLIENT,
            &peer_req(
                CLIENT,
                nonce(1),
                5000,
                1800,
                SocketAddrV4::new(bad, 80),
                None,
                &[],
            ),
        );
        assert_eq!(a.result(), ResultCode::MalformedRequest, "{bad}");
    }
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 6887 §12.3 item 3: no match and an unhonourable suggestion → CANNOT_PROVIDE_EXTERNAL,
// no state.
#[test]
fn peer_with_unhonourable_suggestion_gets_cannot_provide_external() {
    let mut h = Harness::new();
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let b = h.request(
        CLIENT2,
        &peer_req(CLIENT2, nonce(2), 5000, 1800, R, Some(a.external()), &[]),
    );
    assert_eq!(b.result(), ResultCode::CannotProvideExternal);
    assert_eq!(h.server.table().counts().bindings, 1);
}

// RFC 6887 §12.3 item 3: a match never handled by PEER: suggestion ignored, existing values
// returned, nonce remembered.
#[test]
fn peer_over_an_implicit_binding_returns_it_and_stores_the_nonce() {
    let mut h = Harness::new();
    let now = h.now;
    let ext = h
        .server
        .outbound(now, Protocol::UDP, SocketAddrV4::new(CLIENT, 5000))
        .expect("implicit");
    let a = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(4), 5000, 1800, R, None, &[]),
    );
    assert_eq!((a.result(), a.external()), (ResultCode::Success, ext));
    assert_eq!(h.server.table().lookup_nonce(&nonce(4)).len(), 1);
}

// RFC 6887 §12.3 (MUST): PEER nonce mismatch after an earlier PEER → NOT_AUTHORIZED with the
// remaining lifetime.
#[test]
fn peer_nonce_mismatch_gets_not_authorized_with_remaining_lifetime() {
    let mut h = Harness::new();
    h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(1), 5000, 1800, R, None, &[]),
    );
    h.advance(Duration::from_secs(30));
    let b = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(2), 5000, 1800, R, None, &[]),
    );
    assert_eq!(
        (b.result(), b.lifetime()),
        (ResultCode::NotAuthorized, 1770)
    );
}

// RFC 6887 §12.1: PEER cannot shorten a mapping (nor delete it).
#[test]
fn peer_cannot_shorten_or_delete() {
    let mut h = Harness::new();
    h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(1), 5000, 3600, R, None, &[]),
    );
    let b = h.request(CLIENT, &peer_req(CLIENT, nonce(1), 5000, 120, R, None, &[]));
    assert_eq!(b.lifetime(), 3600);
    let c = h.request(CLIENT, &peer_req(CLIENT, nonce(1), 5000, 0, R, None, &[]));
    assert_eq!(c.result(), ResultCode::Success);
    assert_eq!(h.server.table().counts().peers, 1);
    // MAP cannot delete it either (§15.1: outbound mapping).
    let d = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 0, None, &[]),
    );
    assert_eq!(d.result(), ResultCode::NotAuthorized);
}

// RFC 6887 §12.3 [impl note]: on an EIM NAT a PEER to a new remote from a bound internal
// endpoint gets that endpoint's external port; another suggestion fails.
#[test]
fn peer_from_a_mapped_endpoint_shares_its_external_port() {
    let mut h = Harness::new();
    let m = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let p = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(2), 5000, 1800, R, None, &[]),
    );
    assert_eq!(p.external(), m.external());
    let other = SocketAddrV4::new(*m.external().ip(), m.external().port() ^ 2);
    let r2 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 51), 1);
    let q = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(2), 5000, 1800, r2, Some(other), &[]),
    );
    assert_eq!(q.result(), ResultCode::CannotProvideExternal);
    h.check();
}

// RFC 6887 §12.3 item 5: an unrenewed PEER mapping ends (falls back to implicit behaviour).
#[test]
fn unrenewed_peer_mapping_expires() {
    let mut h = Harness::new();
    h.request(CLIENT, &peer_req(CLIENT, nonce(1), 5000, 120, R, None, &[]));
    h.advance(Duration::from_secs(119));
    assert_eq!(h.server.table().counts().peers, 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.table().counts().peers, 0);
    assert_eq!(h.server.table().counts().bindings, 0);
    h.check();
}

// RFC 6887 §14.1.1, §14.1.2: ANNOUNCE → SUCCESS, lifetime 0, epoch, no state change.
#[test]
fn announce_request_gets_success_with_lifetime_zero_and_no_state_change() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(5));
    let a = h.request(CLIENT, &announce_req(CLIENT));
    assert_eq!(
        (a.result(), a.lifetime(), a.epoch()),
        (ResultCode::Success, 0, 5)
    );
    assert_eq!(a.bytes.len(), 24);
    assert_eq!(a.bytes[1], 0x80);
    assert_eq!(h.server.table().counts().bindings, 0);
    // Unknown optional options are accepted (future use).
    let mut b = emit(&announce_req(CLIENT));
    b.extend_from_slice(&[0xf0, 0, 0, 0]);
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::Success)
    );
}
