//! PORT_SET requests that overlap existing mappings (RFC 7753 §4.4.1). The rest of the
//! PORT_SET rules are in `options.rs`.

mod support;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use pcp_client::wire::{OpcodeData, PcpOption, PortSet, Protocol, ResponseRepr, ResultCode};
use support::*;

fn ps(size: u16, first: u16) -> PcpOption<'static> {
    PcpOption::PortSet(PortSet {
        size,
        first_internal_port: first,
        parity: false,
    })
}

fn map(h: &mut Harness, n: u8, port: u16, lifetime: u32, opts: &[PcpOption<'_>]) -> Answer {
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(n), Protocol::UDP, port, lifetime, None, opts),
    );
    assert_eq!(a.result(), ResultCode::Success, "port {port}");
    a
}

/// The unsolicited MAP responses sent now: (internal port, external, PORT_SET size, lifetime).
fn unsolicited(h: &mut Harness) -> Vec<(u16, SocketAddrV4, Option<u16>, u32)> {
    let mut out = Vec::new();
    while let Some(tx) = h.server.poll_transmit() {
        assert_eq!(tx.destination, SocketAddr::new(IpAddr::V4(CLIENT), 40_000));
        let r = ResponseRepr::parse(&tx.payload).expect("parses");
        assert_eq!(r.result, ResultCode::Success);
        let OpcodeData::Map(m) = r.data else {
            panic!("MAP response")
        };
        assert_eq!((m.nonce, m.protocol), (nonce(1), Protocol::UDP));
        let IpAddr::V4(a) = m.external_address else {
            panic!("v4")
        };
        let size = r.options.iter().find_map(|o| match o {
            PcpOption::PortSet(s) => {
                assert_eq!(s.first_internal_port, m.internal_port);
                Some(s.size)
            }
            _ => None,
        });
        out.push((
            m.internal_port,
            SocketAddrV4::new(a, m.external_port),
            size,
            r.lifetime,
        ));
    }
    out.sort_by_key(|u| u.0);
    out
}

// RFC 7753 §4.4.1: a PORT_SET request overlapping existing mappings refreshes each overlapped
// mapping, and each gets its own response. The client holds a set 5000-5003, a single port
// 5006 and a set 5008-5009 (nonce 1), plus 5005 under another nonce; one request for 5000-5009
// with a new lifetime answers for the set it starts on and sends one unsolicited response for
// 5006 (no PORT_SET: one port) and one for 5008-5009 (PORT_SET size 2), all refreshed to the
// new lifetime; 5005 keeps its own; the free ports 5004 and 5007 stay free. The unsolicited
// responses are Mapping Updates (RFC 6887 §14.2): repeated at 250 ms and 750 ms until the
// mapping is refreshed.
#[test]
fn overlapping_port_set_request_refreshes_each_overlapped_mapping_with_its_own_response() {
    let mut h = Harness::new();
    let first = map(&mut h, 1, 5000, 3600, &[ps(4, 5000)]);
    let single = map(&mut h, 1, 5006, 3600, &[]);
    let second = map(&mut h, 1, 5008, 3600, &[ps(2, 5008)]);
    let other = map(&mut h, 2, 5005, 3600, &[]);
    assert!(unsolicited(&mut h).is_empty());
    h.advance(Duration::from_secs(100));
    let t = h.now;
    let a = map(&mut h, 1, 5000, 7200, &[ps(10, 5000)]);
    assert_eq!((a.external(), a.lifetime()), (first.external(), 7200));
    assert_eq!(a.options(), vec![format!("{:?}", ps(4, 5000))]);
    assert_eq!(
        unsolicited(&mut h),
        vec![
            (5006, single.external(), None, 7200),
            (5008, second.external(), Some(2), 7200),
        ]
    );
    let table = h.server.render_table(h.now);
    for port in [5000u16, 5001, 5002, 5003, 5006, 5008, 5009] {
        assert!(
            table.contains(&format!("[100.64.0.2:{port}] TTL: 7200, Left: 7200")),
            "{port} refreshed:\n{table}"
        );
    }
    assert!(
        table.contains(&format!(
            "ANY -> {}[100.64.0.2:5005] TTL: 3600, Left: 3500",
            other.external()
        )),
        "another nonce's mapping is not touched:\n{table}"
    );
    assert!(!table.contains("100.64.0.2:5004]") && !table.contains("100.64.0.2:5007]"));
    assert_eq!(h.server.table().counts().maps, 8);
    // The copies: at 250 ms both again; the client then refreshes 5006, whose third copy
    // (at 750 ms) does not come.
    h.now = t + Duration::from_millis(250);
    h.server.handle_timeout(h.now);
    assert_eq!(unsolicited(&mut h).len(), 2);
    map(&mut h, 1, 5006, 7200, &[]);
    h.now = t + Duration::from_millis(750);
    h.server.handle_timeout(h.now);
    let third: Vec<u16> = unsolicited(&mut h).iter().map(|u| u.0).collect();
    assert_eq!(third, vec![5008]);
    h.now = t + Duration::from_secs(5);
    h.server.handle_timeout(h.now);
    assert!(unsolicited(&mut h).is_empty(), "three copies at most");
    h.check();
}
