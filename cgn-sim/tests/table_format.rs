//! The operator table of design.md §1 and its JSON form.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use cgn_sim::config::{PoolConfig, SectionConfig};
use pcp_client::wire::{Filter, Nonce, PcpOption, Protocol};
use support::*;

// design.md §1: MAP → MAP IN + MAP OUT lines with TTL, Left, Pool, Section, nonce, filters.
#[test]
fn map_shows_as_map_in_and_map_out_lines_in_the_vendor_shape() {
    let mut c = config();
    c.pools = vec![PoolConfig {
        id: 10,
        sections: vec![SectionConfig {
            id: 0,
            ranges: vec!["198.51.100.3".into()],
        }],
    }];
    let mut h = Harness::with(c);
    let n: Nonce = "0x353137383539353136000000".parse().expect("nonce");
    let s = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 2048);
    let f = [PcpOption::Filter(Filter {
        prefix_length: 120,
        remote_peer_port: 0,
        remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)),
    })];
    h.request(
        CLIENT,
        &map_req(CLIENT, n, Protocol::TCP, 5791, 120, Some(s), &f),
    );
    h.advance(Duration::from_secs(23));
    let table = h.server.render_table(h.now);
    assert_eq!(
        table,
        "Type: MAP IN, Protocol: TCP, Zone: ---, Vpn: public ANY -> 198.51.100.3:2048[100.64.0.2:5791] TTL: 120, Left: 97, Pool: 10, Section: 0 Mapping Nonce: 0x353137383539353136000000, Filter(s): 1\n\
         Type: MAP OUT, Protocol: TCP, Zone: ---, Vpn: public 100.64.0.2:5791[198.51.100.3:2048] -> ANY TTL: 120, Left: 97, Pool: 10, Section: 0 Mapping Nonce: 0x353137383539353136000000, Filter(s): 1\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&h.server.render_table_json(h.now)).expect("json");
    assert_eq!(json[0]["type"], "MAP IN");
    assert_eq!(json[0]["external"], "198.51.100.3:2048");
    assert_eq!(json[1]["internal"], "100.64.0.2:5791");
    assert_eq!(json[0]["left"], 97);
    assert_eq!(json[0]["nonce"], "0x353137383539353136000000");
    assert_eq!(json[0]["filters"][0], "203.0.113.0/24:0");
}

// Metrics are OpenMetrics text with results by opcode and mappings by type.
#[test]
fn metrics_count_results_and_mappings() {
    let mut h = Harness::new();
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(2), Protocol::UDP, 5000, 3600, None, &[]),
    );
    let m = h.server.render_metrics(h.now);
    assert!(
        m.contains("cgn_pcp_requests_total{opcode=\"map\",result=\"SUCCESS\"} 1"),
        "{m}"
    );
    assert!(m.contains("cgn_pcp_requests_total{opcode=\"map\",result=\"NOT_AUTHORIZED\"} 1"));
    assert!(m.contains("cgn_mappings{type=\"map\"} 1"));
    assert!(m.ends_with("# EOF\n"));
}
