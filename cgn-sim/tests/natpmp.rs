//! NAT-PMP on the PCP port (RFC 6886; RFC 6887 App. A), checklist §7.10.

mod support;

use std::net::Ipv4Addr;

use pcp_client::natpmp::{self, RequestRepr, ResponseRepr};
use pcp_client::wire::{Protocol, ResultCode};
use support::*;

fn natpmp(h: &mut Harness, r: RequestRepr) -> ResponseRepr {
    let mut buf = [0u8; 16];
    let n = r.emit(&mut buf).expect("emit");
    let a = h.send(CLIENT, &buf[..n]).expect("answer");
    ResponseRepr::parse(&a.bytes).expect("NAT-PMP response parses")
}

// RFC 6887 App. A: first byte 0 is NAT-PMP; the external address is the subscriber's anchor.
#[test]
fn natpmp_external_address_is_the_subscribers_pool_address() {
    let mut h = Harness::new();
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let r = natpmp(&mut h, RequestRepr::ExternalAddress);
    assert_eq!(
        r,
        ResponseRepr::ExternalAddress {
            epoch: 0,
            external_address: *a.external().ip()
        }
    );
}

// RFC 6886 §3.3, §3.4: map, renew (same port), delete, delete-all; shared table and pool.
#[test]
fn natpmp_maps_renews_and_deletes_in_the_shared_table() {
    let mut h = Harness::new();
    let m = RequestRepr::from_fields(natpmp::Transport::Udp, 6000, 0, 7200);
    let ResponseRepr::Map {
        external_port,
        lifetime,
        ..
    } = natpmp(&mut h, m)
    else {
        panic!("map")
    };
    assert_eq!(lifetime, 7200);
    let ResponseRepr::Map {
        external_port: again,
        ..
    } = natpmp(&mut h, m)
    else {
        panic!("map")
    };
    assert_eq!(again, external_port);
    assert_eq!(h.server.table().counts().maps, 1);
    natpmp(
        &mut h,
        RequestRepr::from_fields(natpmp::Transport::Udp, 6001, 0, 7200),
    );
    let d = natpmp(
        &mut h,
        RequestRepr::from_fields(natpmp::Transport::Udp, 6000, 0, 0),
    );
    assert!(matches!(
        d,
        ResponseRepr::Map {
            external_port: 0,
            lifetime: 0,
            ..
        }
    ));
    assert_eq!(h.server.table().counts().maps, 1);
    natpmp(
        &mut h,
        RequestRepr::from_fields(natpmp::Transport::Udp, 0, 0, 0),
    );
    assert_eq!(h.server.table().counts().maps, 0);
}

// PCP nonces own PCP mappings: NAT-PMP cannot renew or delete them (result 2), and a PCP
// request with a nonce cannot take over a NAT-PMP mapping.
#[test]
fn natpmp_and_pcp_cannot_take_over_each_others_mappings() {
    let mut h = Harness::new();
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let r = natpmp(
        &mut h,
        RequestRepr::from_fields(natpmp::Transport::Udp, 5000, 0, 7200),
    );
    assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
    let r = natpmp(
        &mut h,
        RequestRepr::from_fields(natpmp::Transport::Udp, 5000, 0, 0),
    );
    assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
    natpmp(
        &mut h,
        RequestRepr::from_fields(natpmp::Transport::Tcp, 7000, 0, 7200),
    );
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::TCP, 7000, 3600, None, &[]),
    );
    assert_eq!(a.result(), ResultCode::NotAuthorized);
}

// RFC 6886 §3.5 (MUST): other versions get result 1; RFC 6887 App. A: a PCP-only server
// answers NAT-PMP with an ordinary UNSUPP_VERSION.
#[test]
fn natpmp_unsupported_opcode_and_pcp_only_mode() {
    let mut h = Harness::new();
    let a = h.send(CLIENT, &[0, 9]).expect("answer");
    let r = ResponseRepr::parse(&a.bytes).expect("parses");
    assert_eq!(r.result(), natpmp::ResultCode::UnsupportedOpcode);
    let mut c = config();
    c.natpmp = false;
    let mut h = Harness::with(c);
    let a = h.send(CLIENT, &[0, 0]).expect("answer");
    assert_eq!(
        (a.bytes[0], a.result(), a.bytes.len()),
        (2, ResultCode::UnsuppVersion, 24)
    );
    let _ = Ipv4Addr::UNSPECIFIED;
}
