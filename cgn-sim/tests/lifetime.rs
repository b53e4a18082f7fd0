//! Lifetime, deletion, port hold-down, epoch, restart, ANNOUNCE and Mapping Update
//! (RFC 6887 §8.5, §14, §15, §15.1 + erratum 3621; RFC 6888 REQ-8), checklist §7.9.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use cgn_sim::config::{PoolConfig, SectionConfig};
use cgn_sim::server::StaticMapping;
use pcp_client::wire::{
    MapData, OpcodeData, PcpOption, Protocol, RequestRepr, ResponseRepr, ResultCode,
};
use support::*;

fn udp(
    h: &mut Harness,
    client: Ipv4Addr,
    n: u8,
    port: u16,
    lifetime: u32,
    suggest: Option<SocketAddrV4>,
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
            &[],
        ),
    )
}

// RFC 6887 §15.1 + erratum 3621: delete now; the answer copies protocol, port and the
// suggested (zero) fields, with lifetime 0.
#[test]
fn delete_removes_the_mapping_and_echoes_the_suggested_fields() {
    let mut h = Harness::new();
    udp(&mut h, CLIENT, 1, 5000, 3600, None);
    let d = udp(&mut h, CLIENT, 1, 5000, 0, None);
    assert_eq!((d.result(), d.lifetime()), (ResultCode::Success, 0));
    let m = d.map();
    assert_eq!(
        (m.protocol, m.internal_port, m.external_port),
        (Protocol::UDP, 5000, 0)
    );
    assert_eq!(m.external_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(h.server.table().counts().bindings, 0);
    assert_eq!(h.server.metrics().deleted, 1);
}

// RFC 6887 §15.1 (MUST): the suggested external port of a delete is ignored (and echoed).
#[test]
fn delete_ignores_the_suggested_port() {
    let mut h = Harness::new();
    udp(&mut h, CLIENT, 1, 5000, 3600, None);
    let s = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1234);
    let d = udp(&mut h, CLIENT, 1, 5000, 0, Some(s));
    assert_eq!(
        (d.result(), d.map().external_port),
        (ResultCode::Success, 1234)
    );
    assert_eq!(h.server.table().counts().bindings, 0);
}

// Erratum 3621: the suggested address selects the family; an IPv6-family delete leaves the
// IPv4 mapping alone.
#[test]
fn delete_of_the_ipv6_family_leaves_the_ipv4_mapping() {
    let mut h = Harness::new();
    udp(&mut h, CLIENT, 1, 5000, 3600, None);
    let base = map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 0, None, &[]);
    let r = RequestRepr {
        data: OpcodeData::Map(MapData {
            external_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ..*base.data.map_fields().expect("map")
        }),
        ..base
    };
    let d = h.request(CLIENT, &r);
    assert_eq!(d.result(), ResultCode::Success);
    assert_eq!(h.server.table().counts().maps, 1);
}

// RFC 6887 §15.1: deleting a mapping that does not exist succeeds.
#[test]
fn delete_of_a_missing_mapping_succeeds() {
    let mut h = Harness::new();
    let d = udp(&mut h, CLIENT, 1, 5000, 0, None);
    assert_eq!((d.result(), d.lifetime()), (ResultCode::Success, 0));
    // Wildcard and DMZ deletes name mappings that are never granted.
    let w = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 0, 0, None, &[]),
    );
    assert_eq!(w.result(), ResultCode::Success);
    let z = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::ALL, 0, 0, None, &[]),
    );
    assert_eq!(z.result(), ResultCode::Success);
}

// RFC 6887 §15.1, §11.3 (MUST): a delete with another nonce → NOT_AUTHORIZED, lifetime =
// remaining; the mapping stays. (Tailscale #1080: deletes with fresh nonces leaked mappings.)
#[test]
fn delete_with_another_nonce_gets_not_authorized() {
    let mut h = Harness::new();
    udp(&mut h, CLIENT, 1, 5000, 3600, None);
    h.advance(Duration::from_secs(60));
    let d = udp(&mut h, CLIENT, 2, 5000, 0, None);
    assert_eq!(
        (d.result(), d.lifetime()),
        (ResultCode::NotAuthorized, 3540)
    );
    assert_eq!(h.server.table().counts().maps, 1);
}

// RFC 6887 §15.1 (MUST): MAP cannot delete static or outbound mappings.
#[test]
fn delete_of_static_or_outbound_mapping_gets_not_authorized() {
    let mut h = Harness::new();
    h.server
        .add_static(StaticMapping {
            protocol: Protocol::UDP,
            internal: SocketAddrV4::new(CLIENT, 53),
            external: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 53),
        })
        .expect("static");
    assert_eq!(
        udp(&mut h, CLIENT, 0, 53, 0, None).result(),
        ResultCode::NotAuthorized
    );
    let now = h.now;
    h.server
        .outbound(now, Protocol::UDP, SocketAddrV4::new(CLIENT, 6000))
        .expect("implicit");
    assert_eq!(
        udp(&mut h, CLIENT, 0, 6000, 0, None).result(),
        ResultCode::NotAuthorized
    );
}

// RFC 6887 §15; RFC 6888 REQ-8: an expired mapping's port is held 120 s; nobody else gets
// it; the same internal endpoint *and nonce* may take it back.
#[test]
fn freed_port_is_held_except_for_the_same_endpoint_and_nonce() {
    let mut h = Harness::new();
    let a = udp(&mut h, CLIENT, 1, 5000, 120, None);
    let ext = a.external();
    h.advance(Duration::from_secs(121));
    assert_eq!(h.server.table().counts().maps, 0);
    assert_eq!(h.server.held_ports(), 1);
    // Same address (client 2 anchors there by suggestion), same port suggested: refused.
    let b = udp(&mut h, CLIENT2, 2, 5000, 3600, Some(ext));
    assert_ne!(b.external(), ext);
    // Same endpoint, other nonce: refused too.
    let c = udp(&mut h, CLIENT, 3, 5000, 3600, Some(ext));
    assert_ne!(c.external(), ext);
    udp(&mut h, CLIENT, 3, 5000, 0, None);
    // Same endpoint and nonce: reclaimed.
    let d = udp(&mut h, CLIENT, 1, 5000, 3600, Some(ext));
    assert_eq!(d.external(), ext);
    h.check();
}

// RFC 6888 REQ-8: after the hold the port is free again; the hold is configurable.
#[test]
fn port_hold_ends_after_the_configured_time() {
    let mut c = config();
    c.port_hold_secs = 10;
    let mut h = Harness::with(c);
    let a = udp(&mut h, CLIENT, 1, 5000, 120, None);
    h.advance(Duration::from_secs(121));
    assert_eq!(h.server.held_ports(), 1);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.server.held_ports(), 0);
    let b = udp(&mut h, CLIENT2, 2, 5000, 3600, Some(a.external()));
    assert_eq!(b.external(), a.external());
}

// RFC 6887 §8.5: +1 per second; reset on state loss (MUST).
#[test]
fn epoch_counts_seconds_and_resets_on_state_loss() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(42));
    assert_eq!(h.request(CLIENT, &announce_req(CLIENT)).epoch(), 42);
    let now = h.now;
    h.server.restart(now, true);
    assert_eq!(
        h.request(CLIENT, &announce_req(CLIENT)).epoch(),
        42,
        "state kept: epoch kept"
    );
    h.server.restart(now, false);
    assert_eq!(h.request(CLIENT, &announce_req(CLIENT)).epoch(), 0);
}

fn drain(h: &mut Harness) -> Vec<cgn_sim::server::Transmit> {
    std::iter::from_fn(|| h.server.poll_transmit()).collect()
}

// RFC 6887 §14.1.3 (MUST, MAY): after state loss an unsolicited ANNOUNCE (SUCCESS) goes to
// every remembered client from port 5351, repeated with ≥ 250 ms then doubling intervals, the
// epoch advancing.
#[test]
fn restart_sends_announce_to_remembered_clients_on_the_schedule() {
    let mut c = config();
    c.announce_count = 5;
    let mut h = Harness::with(c);
    let server_addr: SocketAddr = "100.64.0.1:5351".parse().expect("addr");
    h.server.set_server_addresses(vec![server_addr]);
    udp(&mut h, CLIENT, 1, 5000, 3600, None);
    h.advance(Duration::from_secs(10));
    let t = h.now;
    h.server.restart(t, false);
    assert_eq!(h.server.table().counts().bindings, 0);
    let mut copies = Vec::new();
    for step in 0..200 {
        let at = t + Duration::from_millis(50 * step);
        h.now = at;
        h.server.handle_timeout(at);
        for tx in drain(&mut h) {
            copies.push((at - t, tx));
        }
    }
    // One copy to the remembered endpoint and one to its port 5350, per round.
    let to_client: Vec<_> = copies
        .iter()
        .filter(|(_, tx)| tx.destination == SocketAddr::new(IpAddr::V4(CLIENT), 40000))
        .collect();
    assert!(
        copies
            .iter()
            .any(|(_, tx)| tx.destination == SocketAddr::new(IpAddr::V4(CLIENT), 5350))
    );
    let times: Vec<u128> = to_client.iter().map(|(d, _)| d.as_millis()).collect();
    assert_eq!(times, vec![0, 250, 750, 1750, 3750]);
    for (d, tx) in &to_client {
        assert_eq!(tx.source, Some(server_addr));
        let r = ResponseRepr::parse(&tx.payload).expect("ANNOUNCE parses");
        assert_eq!(
            (r.result, r.lifetime, r.data),
            (ResultCode::Success, 0, OpcodeData::Announce)
        );
        assert_eq!(r.epoch, d.as_secs() as u32, "epoch advances with each copy");
    }
}

// RFC 6887 §14.1.3 (MAY: up to 10 copies, ≥ 250 ms then doubling intervals, the epoch
// updated): the scenario of `daemon.rs::thousand_mappings_survive_a_restart_via_announce` in
// simulated time. 1 000 mappings, a restart, the client re-creating all of them (same nonces,
// PREFER_FAILURE on the old endpoints) while the copies go out: every mapping comes back on its
// port, and the five copies leave exactly at 0, 250, 750, 1750 and 3750 ms, counted from the
// first, whatever the load of requests between them.
#[test]
fn announce_schedule_holds_while_a_thousand_mappings_are_recreated() {
    let mut c = config();
    c.announce_count = 5;
    let mut h = Harness::with(c);
    let request = |port: u16, suggest: Option<SocketAddrV4>| {
        let opts: &[PcpOption<'_>] = if suggest.is_some() {
            &[PcpOption::PreferFailure]
        } else {
            &[]
        };
        emit(&map_req(
            CLIENT,
            nonce((port % 251) as u8),
            Protocol::UDP,
            port,
            7200,
            suggest,
            opts,
        ))
    };
    let mut external = Vec::new();
    for i in 0..1000u16 {
        let a = h.send(CLIENT, &request(20_000 + i, None)).expect("answer");
        assert_eq!(a.result(), ResultCode::Success);
        external.push(a.external());
    }
    h.advance(Duration::from_secs(5));
    let t = h.now;
    h.server.restart(t, false);
    assert_eq!(h.server.table().counts().bindings, 0);
    let mut copies: Vec<(u128, u32)> = Vec::new();
    let mut collect = |h: &mut Harness| {
        for tx in drain(h) {
            if tx.destination == SocketAddr::new(IpAddr::V4(CLIENT), 40_000) {
                let r = ResponseRepr::parse(&tx.payload).expect("ANNOUNCE parses");
                assert_eq!(
                    (r.result, r.lifetime, r.data),
                    (ResultCode::Success, 0, OpcodeData::Announce)
                );
                copies.push(((h.now - t).as_millis(), r.epoch));
            }
        }
    };
    collect(&mut h);
    // The client re-creates in bursts of 50, one burst every 10 ms, from 10 ms on.
    let mut again = Vec::new();
    for (burst, chunk) in (0..1000u16).collect::<Vec<_>>().chunks(50).enumerate() {
        h.now = t + Duration::from_millis(10 * (burst as u64 + 1));
        h.server.handle_timeout(h.now);
        collect(&mut h);
        for &i in chunk {
            let a = h
                .send(CLIENT, &request(20_000 + i, Some(external[usize::from(i)])))
                .expect("answer");
            assert_eq!(a.result(), ResultCode::Success, "mapping {i}");
            again.push(a.external());
        }
    }
    assert_eq!(again, external, "every mapping back on its external port");
    // On from 250 ms (after the last burst), in 50 ms steps: every due time is on a step.
    for step in 5..=100u64 {
        h.now = t + Duration::from_millis(50 * step);
        h.server.handle_timeout(h.now);
        collect(&mut h);
    }
    let times: Vec<u128> = copies.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, vec![0, 250, 750, 1750, 3750]);
    let epochs: Vec<u32> = copies.iter().map(|(_, e)| *e).collect();
    assert_eq!(
        epochs,
        vec![0, 0, 0, 1, 3],
        "the epoch restarts at 0 and advances"
    );
}

// RFC 6887 §14.1.3: multicast to 224.0.0.1:5350 when enabled.
#[test]
fn announce_goes_to_the_all_hosts_group_when_multicast_is_enabled() {
    let mut c = config();
    c.announce_multicast = true;
    c.announce_count = 1;
    let mut h = Harness::with(c);
    let now = h.now;
    h.server.restart(now, false);
    let tx = drain(&mut h);
    assert_eq!(tx.len(), 1);
    assert_eq!(
        tx[0].destination,
        "224.0.0.1:5350".parse::<SocketAddr>().expect("addr")
    );
}

// The restart scenario of design.md §1 step 5: the client re-creates with the same nonces
// and suggests its old endpoints: it gets all of them back (held ports + re-anchoring).
#[test]
fn after_state_loss_clients_recreate_mappings_on_the_same_external_ports() {
    let mut h = Harness::new();
    let mut old = Vec::new();
    for port in 0..50u16 {
        old.push(udp(&mut h, CLIENT, 7, 10_000 + port, 3600, None).external());
    }
    // Another subscriber, to make theft possible.
    udp(&mut h, CLIENT2, 8, 5000, 3600, None);
    let now = h.now;
    h.server.restart(now, false);
    // A third subscriber arrives first and asks for a stolen port: it is held.
    let thief = Ipv4Addr::new(100, 64, 0, 66);
    let t = udp(&mut h, thief, 9, 9999, 3600, Some(old[0]));
    assert_ne!(t.external(), old[0]);
    for (i, ext) in old.iter().enumerate() {
        let a = h.request(
            CLIENT,
            &map_req(
                CLIENT,
                nonce(7),
                Protocol::UDP,
                10_000 + i as u16,
                3600,
                Some(*ext),
                &[PcpOption::PreferFailure],
            ),
        );
        assert_eq!((a.result(), a.external()), (ResultCode::Success, *ext));
    }
    h.check();
}

// RFC 6887 §14.2, §8.5: a pool change moves mappings, resets the epoch and sends Mapping
// Updates: 3 copies (0, 250, 750 ms) to the client, THIRD_PARTY kept, PREFER_FAILURE →
// CANNOT_PROVIDE_EXTERNAL.
#[test]
fn pool_change_sends_three_mapping_updates_and_resets_the_epoch() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(30));
    let a = udp(&mut h, CLIENT, 1, 5000, 3600, None);
    let s = SocketAddrV4::new(*a.external().ip(), 40_000);
    let pf = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(1),
            Protocol::UDP,
            5001,
            3600,
            Some(s),
            &[PcpOption::PreferFailure],
        ),
    );
    assert_eq!(pf.result(), ResultCode::Success);
    let t = h.now;
    let pools = vec![PoolConfig {
        id: 2,
        sections: vec![SectionConfig {
            id: 3,
            ranges: vec!["192.0.2.0/30".into()],
        }],
    }];
    h.server.replace_pools(t, pools).expect("pools");
    let mut seen = Vec::new();
    for step in 0..30 {
        let at = t + Duration::from_millis(50 * step);
        h.now = at;
        h.server.handle_timeout(at);
        for tx in drain(&mut h) {
            seen.push(((at - t).as_millis(), tx));
        }
    }
    let updates: Vec<_> = seen
        .iter()
        .filter(|(_, tx)| tx.payload[1] == 0x81)
        .collect();
    assert_eq!(updates.len(), 6, "3 copies for each of the 2 mappings");
    let mut times: Vec<u128> = updates.iter().map(|(t, _)| *t).collect();
    times.dedup();
    assert_eq!(times, vec![0, 250, 750]);
    let mut results: Vec<_> = updates
        .iter()
        .map(|(_, tx)| {
            let r = ResponseRepr::parse(&tx.payload).expect("parses");
            (r.result, r.epoch)
        })
        .collect();
    results.sort_by_key(|(r, _)| u8::from(*r));
    results.dedup();
    assert_eq!(
        results,
        vec![
            (ResultCode::Success, 0),
            (ResultCode::CannotProvideExternal, 0)
        ]
    );
    assert!(h.server.render_table(h.now).contains("[192.0.2."));
    assert!(h.server.render_table(h.now).contains("Pool: 2, Section: 3"));
}

// Renumbering (`ctl pool`, RFC 6887 §14.2, §8.5) moves every binding, not only MAP ones: a
// PEER session and an implicit binding made by outbound traffic are on the new pool afterwards,
// on the subscriber's one new address (RFC 6888 REQ-2) with their external ports, the PEER
// client gets three unsolicited PEER responses with the new endpoint (its remote peer and
// nonce as before), which stop once it refreshes, and outbound traffic carries on over the
// moved binding instead of making a new one.
#[test]
fn renumbering_moves_peer_and_implicit_bindings_and_tells_the_peer_client() {
    let mut h = Harness::new();
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 80);
    let peer = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(5), 6000, 3600, remote, None, &[]),
    );
    assert_eq!(peer.result(), ResultCode::Success);
    let now = h.now;
    let implicit = h
        .server
        .outbound(now, Protocol::UDP, SocketAddrV4::new(CLIENT, 7000))
        .expect("implicit binding");
    assert_eq!(implicit.ip(), peer.external().ip(), "paired before");
    let map = udp(&mut h, CLIENT, 1, 5000, 3600, None);
    h.advance(Duration::from_secs(10));
    let t = h.now;
    let pools = vec![PoolConfig {
        id: 2,
        sections: vec![SectionConfig {
            id: 3,
            ranges: vec!["192.0.2.0/29".into()],
        }],
    }];
    h.server.replace_pools(t, pools).expect("pools");
    let table = h.server.render_table(h.now);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "MAP IN, MAP OUT, PEER, IMPLICIT:\n{table}");
    let new_ip = |l: &str| -> Ipv4Addr {
        let ext = l.split('[').nth(1).and_then(|r| r.split(':').next());
        ext.and_then(|a| a.parse().ok())
            .or_else(|| {
                l.split("-> ")
                    .nth(1)
                    .and_then(|r| r.split(':').next()?.parse().ok())
            })
            .expect("an address")
    };
    let peer_line = lines
        .iter()
        .find(|l| l.starts_with("Type: PEER"))
        .expect("the PEER session moved");
    assert!(
        peer_line.contains(&format!(
            "100.64.0.2:6000[{}:{}] -> 203.0.113.50:80 TTL: 3600, Left: 3590, Pool: 2, Section: 3 Mapping Nonce: {}",
            new_ip(peer_line),
            peer.external().port(),
            nonce(5)
        )),
        "{table}"
    );
    let implicit_line = lines
        .iter()
        .find(|l| l.starts_with("Type: IMPLICIT"))
        .expect("the implicit binding moved");
    assert!(
        implicit_line.contains(&format!(
            "100.64.0.2:7000[{}:{}] -> ANY",
            new_ip(peer_line),
            implicit.port()
        )),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("{}:", new_ip(peer_line)))),
        "one address for the subscriber: {table}"
    );
    assert_eq!(new_ip(peer_line).octets()[..3], [192, 0, 2]);
    // Outbound traffic finds the moved binding.
    let again = h
        .server
        .outbound(h.now, Protocol::UDP, SocketAddrV4::new(CLIENT, 7000))
        .expect("same binding");
    assert_eq!(again, SocketAddrV4::new(new_ip(peer_line), implicit.port()));
    assert_eq!(h.server.table().counts().bindings, 3);
    // The PEER client hears of it: unsolicited PEER responses, at 0 and 250 ms, then it
    // refreshes and the third copy never comes.
    let mut peer_updates = Vec::new();
    for step in 0..30u64 {
        let at = t + Duration::from_millis(50 * step);
        h.now = at;
        h.server.handle_timeout(at);
        for tx in drain(&mut h) {
            if tx.payload[1] == 0x82 {
                let r = ResponseRepr::parse(&tx.payload).expect("parses");
                let OpcodeData::Peer(p) = r.data else {
                    panic!("PEER data")
                };
                assert_eq!(tx.destination, SocketAddr::new(IpAddr::V4(CLIENT), 40_000));
                assert_eq!(
                    (r.result, r.epoch, p.map.nonce, p.map.internal_port),
                    (ResultCode::Success, 0, nonce(5), 6000)
                );
                assert_eq!(
                    (p.remote_peer_address, p.remote_peer_port),
                    (IpAddr::V4(*remote.ip()), 80)
                );
                assert_eq!(
                    (p.map.external_address, p.map.external_port),
                    (IpAddr::V4(new_ip(peer_line)), peer.external().port())
                );
                peer_updates.push((at - t).as_millis());
            }
        }
        if step == 6 {
            let r = h.request(
                CLIENT,
                &peer_req(CLIENT, nonce(5), 6000, 3600, remote, None, &[]),
            );
            assert_eq!(r.result(), ResultCode::Success);
        }
    }
    assert_eq!(
        peer_updates,
        vec![0, 250],
        "stopped by the refresh at 300 ms"
    );
    let _ = map;
}

// RFC 6887 §14.2 (MUST, SHOULD): a Mapping Update carries THIRD_PARTY when the request had it
// and the FILTERs, goes to the requesting client, and stops once the client refreshes.
#[test]
fn mapping_update_carries_third_party_and_filters_and_stops_on_refresh() {
    let mut c = config();
    c.third_party_hosts = vec!["100.64.0.2/32".parse().expect("THIRD_PARTY rule")];
    let mut h = Harness::with(c);
    let tp = PcpOption::ThirdParty(IpAddr::V4(CLIENT2));
    let f = PcpOption::Filter(pcp_client::wire::Filter {
        prefix_length: 128,
        remote_peer_port: 0,
        remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
    });
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[tp, f]),
    );
    assert_eq!(a.result(), ResultCode::Success);
    udp(&mut h, CLIENT, 2, 6000, 3600, None);
    let t = h.now;
    let pools = vec![PoolConfig {
        id: 2,
        sections: vec![SectionConfig {
            id: 0,
            ranges: vec!["192.0.2.0/30".into()],
        }],
    }];
    h.server.replace_pools(t, pools).expect("pools");
    let first = drain(&mut h);
    assert_eq!(first.len(), 2);
    let to_requester: Vec<_> = first
        .iter()
        .filter(|tx| tx.destination == SocketAddr::new(IpAddr::V4(CLIENT), 40000))
        .collect();
    assert_eq!(
        to_requester.len(),
        2,
        "both updates go to the requesting endpoint"
    );
    let tp_update = to_requester
        .iter()
        .map(|tx| ResponseRepr::parse(&tx.payload).expect("parses"))
        .find(|r| r.data.map_fields().is_some_and(|m| m.internal_port == 5000))
        .expect("update of the THIRD_PARTY mapping");
    let opts: Vec<_> = tp_update.options.iter().collect();
    assert_eq!(opts, vec![tp, f]);
    // The client refreshes mapping 6000 at once: its copies stop; the other keeps going.
    h.now = t + Duration::from_millis(100);
    udp(&mut h, CLIENT, 2, 6000, 3600, None);
    let mut later = Vec::new();
    for step in 1..20 {
        let at = t + Duration::from_millis(100 * step);
        h.now = at;
        h.server.handle_timeout(at);
        later.extend(drain(&mut h));
    }
    assert_eq!(
        later.len(),
        2,
        "two more copies, only for the unrefreshed mapping"
    );
    for tx in later {
        let r = ResponseRepr::parse(&tx.payload).expect("parses");
        assert_eq!(r.data.map_fields().map(|m| m.internal_port), Some(5000));
    }
}

// RFC 6887 §15, §15.1: a delete retransmitted after the MAP is gone, while outbound traffic
// keeps the implicit mapping, gets the same SUCCESS (with the implicit lifetime) as the first.
#[test]
fn retransmitted_delete_after_outbound_traffic_agrees_with_the_first_answer() {
    let mut h = Harness::new();
    udp(&mut h, CLIENT, 7, 6100, 3600, None);
    let now = h.now;
    h.server
        .outbound(now, Protocol::UDP, SocketAddrV4::new(CLIENT, 6100))
        .expect("implicit");
    let first = udp(&mut h, CLIENT, 7, 6100, 0, None);
    assert_eq!(first.result(), ResultCode::Success);
    assert!(first.lifetime() > 0, "the implicit mapping's lifetime");
    let again = udp(&mut h, CLIENT, 7, 6100, 0, None);
    assert_eq!(
        (again.result(), again.lifetime() > 0),
        (ResultCode::Success, true)
    );
    assert_eq!(h.server.table().counts().maps, 0);
}
