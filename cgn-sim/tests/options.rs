//! Option rules (RFC 6887 §7.3, §13; RFC 7220; RFC 7753; RFC 7843), checklist §7.6.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use cgn_sim::table::ExternalKey;
use pcp_client::wire::{
    Description, Filter, OptionCode, PcpOption, PortSet, Protocol, ResultCode, UnknownOption,
};
use support::*;

const PEER_REMOTE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 9000);

fn result(h: &mut Harness, opts: &[PcpOption<'_>]) -> ResultCode {
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, opts),
    )
    .result()
}

fn filter(last: u8, len: u8, port: u16) -> PcpOption<'static> {
    PcpOption::Filter(Filter {
        prefix_length: len,
        remote_peer_port: port,
        remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, last)),
    })
}

// RFC 6887 §7.3 (MUST, SHOULD): an option that cannot be parsed (length beyond the packet).
#[test]
fn option_overrunning_the_packet_gets_malformed_option() {
    let mut h = Harness::new();
    let mut b = emit(&map_req(
        CLIENT,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &[],
    ));
    b.extend_from_slice(&[0x80, 0, 0, 40, 1, 2, 3, 4]);
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::MalformedOption)
    );
}

// RFC 6887 §7.3 (MUST): a single-use option repeated.
#[test]
fn repeated_single_use_option_gets_malformed_option() {
    let mut h = Harness::new();
    let d = PcpOption::Description(Description::new("a"));
    assert_eq!(result(&mut h, &[d, d]), ResultCode::MalformedOption);
    assert_eq!(
        result(
            &mut h,
            &[PcpOption::PreferFailure, PcpOption::PreferFailure]
        ),
        ResultCode::MalformedOption
    );
}

// RFC 6887 §7.3 (MUST): a malformed mandatory option (PREFER_FAILURE with data).
#[test]
fn malformed_mandatory_option_gets_malformed_option() {
    let mut h = Harness::new();
    let mut b = emit(&map_req(
        CLIENT,
        nonce(1),
        Protocol::UDP,
        5000,
        3600,
        None,
        &[],
    ));
    b.extend_from_slice(&[2, 0, 0, 4, 0, 0, 0, 0]);
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::MalformedOption)
    );
}

// RFC 6887 §7.3 (MUST): unknown mandatory → UNSUPP_OPTION; optional ones ignored (MAY).
#[test]
fn unknown_mandatory_option_gets_unsupp_option_and_optional_is_ignored() {
    let mut h = Harness::new();
    for code in [4u8, 5, 64, 126] {
        let o = PcpOption::Unknown(UnknownOption {
            code: OptionCode(code),
            data: &[0; 4],
        });
        assert_eq!(
            result(&mut h, &[o]),
            ResultCode::UnsuppOption,
            "code {code}"
        );
    }
    let o = PcpOption::Unknown(UnknownOption {
        code: OptionCode(250),
        data: &[0; 4],
    });
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[o]),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert!(a.options().is_empty());
}

// RFC 6887 §13 (MUST NOT): an option on an opcode it is not defined for.
#[test]
fn option_on_an_opcode_it_is_not_defined_for_gets_malformed_option() {
    let mut h = Harness::new();
    let opts = [filter(1, 128, 0)];
    let a = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(1), 5000, 3600, PEER_REMOTE, None, &opts),
    );
    assert_eq!(a.result(), ResultCode::MalformedOption);
    let mut b = emit(&announce_req(CLIENT));
    b.extend_from_slice(&[0x80, 0, 0, 1, b'x', 0, 0, 0]);
    assert_eq!(
        h.send(CLIENT, &b).map(|a| a.result()),
        Some(ResultCode::MalformedOption)
    );
}

// RFC 6887 §11.3, §13.2 (MUST): PREFER_FAILURE with lifetime 0 or port 0; in PEER.
#[test]
fn prefer_failure_nonsense_is_malformed() {
    let mut h = Harness::new();
    let pf = [PcpOption::PreferFailure];
    // Suggested port 0.
    assert_eq!(result(&mut h, &pf), ResultCode::MalformedOption);
    let s = Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6000));
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 0, s, &pf),
    );
    assert_eq!(a.result(), ResultCode::MalformedOption);
    let a = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(1), 5000, 3600, PEER_REMOTE, s, &pf),
    );
    assert_eq!(a.result(), ResultCode::MalformedRequest);
}

// RFC 6887 §13.1 (MUST): THIRD_PARTY naming the source → MALFORMED_REQUEST.
#[test]
fn third_party_equal_to_source_gets_malformed_request() {
    let mut c = config();
    c.third_party_hosts = vec!["100.64.0.2/32".parse().expect("THIRD_PARTY rule")];
    let mut h = Harness::with(c);
    assert_eq!(
        result(&mut h, &[PcpOption::ThirdParty(IpAddr::V4(CLIENT))]),
        ResultCode::MalformedRequest
    );
}

// RFC 6887 §13.1 (MUST, RECOMMENDED): THIRD_PARTY is off by default (UNSUPP_OPTION), and for
// unauthorized hosts; an authorized host maps for the third party.
#[test]
fn third_party_is_unsupported_unless_the_sender_is_authorized() {
    let tp = [PcpOption::ThirdParty(IpAddr::V4(CLIENT2))];
    let mut h = Harness::new();
    assert_eq!(result(&mut h, &tp), ResultCode::UnsuppOption);
    let mut c = config();
    c.third_party_hosts = vec!["100.64.0.9/32".parse().expect("THIRD_PARTY rule")];
    let mut h = Harness::with(c.clone());
    assert_eq!(result(&mut h, &tp), ResultCode::UnsuppOption);
    c.third_party_hosts = vec!["100.64.0.2/32".parse().expect("THIRD_PARTY rule")];
    let mut h = Harness::with(c);
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &tp),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert_eq!(a.options(), vec![format!("{:?}", tp[0])]);
    let table = h.server.render_table(h.now);
    assert!(
        table.contains("ANY -> ") && table.contains("[100.64.0.3:5000]"),
        "{table}"
    );
    // A third party outside the subscriber prefixes is refused.
    let out = [PcpOption::ThirdParty(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)))];
    assert_eq!(result(&mut h, &out), ResultCode::NotAuthorized);
}

// RFC 6887 §13.3: FILTER prefix out of range; FILTER with lifetime 0.
#[test]
fn filter_with_bad_prefix_or_lifetime_zero_gets_malformed_option() {
    let mut h = Harness::new();
    assert_eq!(
        result(&mut h, &[filter(1, 95, 0)]),
        ResultCode::MalformedOption
    );
    assert_eq!(
        result(&mut h, &[filter(1, 129, 0)]),
        ResultCode::MalformedOption
    );
    let a = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(1),
            Protocol::UDP,
            5000,
            0,
            None,
            &[filter(1, 128, 0)],
        ),
    );
    assert_eq!(a.result(), ResultCode::MalformedOption);
}

// RFC 6887 §13.3: filters add up, prefix 0 clears; at least one filter per mapping (MUST);
// unmatched inbound traffic is refused (the FILTER is enforced, unlike miniupnpd #779).
#[test]
fn filters_add_up_clear_with_prefix_zero_and_are_enforced() {
    let mut h = Harness::new();
    let a = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(1),
            Protocol::UDP,
            5000,
            3600,
            None,
            &[filter(1, 128, 0)],
        ),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert_eq!(a.options().len(), 1);
    let ext = a.external();
    let key = ExternalKey {
        protocol: 17,
        addr: *ext.ip(),
        port: ext.port(),
    };
    let from = |last, port| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, last), port);
    assert!(
        h.server
            .table()
            .admit_inbound(&key, from(1, 1234))
            .is_some()
    );
    assert!(
        h.server
            .table()
            .admit_inbound(&key, from(2, 1234))
            .is_none()
    );
    h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(1),
            Protocol::UDP,
            5000,
            3600,
            None,
            &[filter(2, 120, 80)],
        ),
    );
    assert!(h.server.table().admit_inbound(&key, from(2, 80)).is_some());
    assert!(h.server.table().admit_inbound(&key, from(2, 81)).is_none());
    assert!(h.server.render_table(h.now).contains("Filter(s): 2"));
    let clear = PcpOption::Filter(Filter::REMOVE_ALL);
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[clear]),
    );
    assert!(h.server.render_table(h.now).contains("Filter(s): 0"));
    assert!(h.server.table().admit_inbound(&key, from(9, 9)).is_some());
}

// RFC 6887 §13.3: more filters than supported → EXCESSIVE_REMOTE_PEERS, no state change.
#[test]
fn too_many_filters_get_excessive_remote_peers_without_state_change() {
    let mut c = config();
    c.max_filters = 2;
    let mut h = Harness::with(c);
    let three = [filter(1, 128, 0), filter(2, 128, 0), filter(3, 128, 0)];
    assert_eq!(result(&mut h, &three), ResultCode::ExcessiveRemotePeers);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 7220 §3: truncation to the stored length, echo of the stored value, no echo when absent,
// invalid UTF-8 ignored, empty clears.
#[test]
fn description_is_truncated_echoed_and_cleared() {
    let mut h = Harness::new();
    let long = "é".repeat(100); // 200 bytes
    let d = [PcpOption::Description(Description::new(&long))];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &d),
    );
    let stored = "é".repeat(64);
    assert_eq!(
        a.options(),
        vec![format!(
            "{:?}",
            PcpOption::Description(Description::new(&stored))
        )]
    );
    assert!(h.server.render_table_json(h.now).contains(&stored));
    // Absent: not echoed.
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[]),
    );
    assert!(a.options().is_empty());
    // Invalid UTF-8: ignored, not echoed, the stored text stays.
    let bad = [PcpOption::Description(Description(&[0xff, 0xfe]))];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &bad),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert!(a.options().is_empty());
    assert!(h.server.render_table_json(h.now).contains(&stored));
    // Empty clears and is echoed empty.
    let empty = [PcpOption::Description(Description::new(""))];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &empty),
    );
    assert_eq!(a.options(), vec![format!("{:?}", empty[0])]);
    assert!(
        h.server
            .render_table_json(h.now)
            .contains("\"description\": null")
    );
}

// RFC 7220 §4 (SHOULD): an administrator-configured maximum length.
#[test]
fn description_maximum_length_is_configurable() {
    let mut c = config();
    c.max_description = 3;
    let mut h = Harness::with(c);
    let d = [PcpOption::Description(Description::new("camera"))];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &d),
    );
    assert_eq!(
        a.options(),
        vec![format!(
            "{:?}",
            PcpOption::Description(Description::new("cam"))
        )]
    );
}

// RFC 7753 §4.2: size 0, with PREFER_FAILURE, repeated → MALFORMED_OPTION.
#[test]
fn port_set_size_zero_repeated_or_with_prefer_failure_is_malformed() {
    let mut h = Harness::new();
    let ps = |size| {
        PcpOption::PortSet(PortSet {
            size,
            first_internal_port: 5000,
            parity: true,
        })
    };
    assert_eq!(result(&mut h, &[ps(0)]), ResultCode::MalformedOption);
    assert_eq!(result(&mut h, &[ps(4), ps(4)]), ResultCode::MalformedOption);
    let s = Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6000));
    let a = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(1),
            Protocol::UDP,
            5000,
            3600,
            s,
            &[ps(4), PcpOption::PreferFailure],
        ),
    );
    assert_eq!(a.result(), ResultCode::MalformedOption);
    assert_eq!(h.server.table().counts().bindings, 0);
}

// RFC 7753 §4.2, §4.4: a set maps consecutive ports (no more than asked, parity kept), is
// reported with PORT_SET, renewed and deleted as one unit; one port → no PORT_SET.
#[test]
fn port_set_maps_a_run_renews_and_deletes_it_as_a_unit() {
    let mut h = Harness::new();
    let ps = |size| {
        PcpOption::PortSet(PortSet {
            size,
            first_internal_port: 5000,
            parity: true,
        })
    };
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[ps(8)]),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert_eq!(
        a.options(),
        vec![format!(
            "{:?}",
            PcpOption::PortSet(PortSet {
                size: 8,
                first_internal_port: 5000,
                parity: true
            })
        )]
    );
    assert_eq!(
        a.external().port() % 2,
        0,
        "first external port has the internal parity"
    );
    assert_eq!(h.server.table().counts().maps, 8);
    let table = h.server.render_table(h.now);
    for i in 0..8u16 {
        let line = format!(
            "ANY -> {}:{}[100.64.0.2:{}]",
            a.external().ip(),
            a.external().port() + i,
            5000 + i
        );
        assert!(table.contains(&line), "{line}\n{table}");
    }
    // Renewal of the set: the same run, every port refreshed.
    h.advance(std::time::Duration::from_secs(100));
    let b = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[ps(8)]),
    );
    assert_eq!((b.external(), b.options()), (a.external(), a.options()));
    assert!(
        !h.server.render_table(h.now).contains("Left: 3500"),
        "all renewed"
    );
    // Another nonce cannot touch it.
    let c = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(2), Protocol::UDP, 5000, 0, None, &[ps(8)]),
    );
    assert_eq!(c.result(), ResultCode::NotAuthorized);
    // Delete as a unit.
    let d = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 0, None, &[ps(8)]),
    );
    assert_eq!(d.result(), ResultCode::Success);
    assert_eq!(h.server.table().counts().maps, 0);
    // Size 1: one port, no PORT_SET in the answer.
    let e = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[ps(1)]),
    );
    assert!(e.options().is_empty());
    h.check();
}

// RFC 7753 §4.2 (MUST NOT exceed, MAY fewer): the quota and occupied internal ports cut the
// set short; what is mapped is reported.
#[test]
fn port_set_is_cut_to_the_quota_and_to_free_internal_ports() {
    let mut c = config();
    c.quota_per_subscriber = 5;
    let mut h = Harness::with(c);
    h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5003, 3600, None, &[]),
    );
    let ps = PcpOption::PortSet(PortSet {
        size: 100,
        first_internal_port: 5000,
        parity: false,
    });
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &[ps]),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert_eq!(
        a.options(),
        vec![format!(
            "{:?}",
            PcpOption::PortSet(PortSet {
                size: 3,
                first_internal_port: 5000,
                parity: false
            })
        )]
    );
    let ps2 = PcpOption::PortSet(PortSet {
        size: 100,
        first_internal_port: 6000,
        parity: false,
    });
    let b = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 6000, 3600, None, &[ps2]),
    );
    assert_eq!(
        b.options().len(),
        0,
        "one port left in the quota: no PORT_SET"
    );
    assert_eq!(h.server.table().counts().maps, 5);
    h.check();
}

// RFC 7843 §5.2 (MUST): unsupported → UNSUPP_OPTION, unknown → 24, bad length → 26, no
// THIRD_PARTY → 25; known IDs key mappings by (address, id).
#[test]
fn third_party_id_rules() {
    let tp = PcpOption::ThirdParty(IpAddr::V4(CLIENT2));
    let id = |s: &'static [u8]| PcpOption::ThirdPartyId(s);
    let mut c = config();
    c.third_party_hosts = vec!["100.64.0.2/32".parse().expect("THIRD_PARTY rule")];
    let mut h = Harness::with(c.clone());
    assert_eq!(
        result(&mut h, &[tp, id(b"vlan7")]),
        ResultCode::UnsuppOption
    );
    c.third_party_ids = vec![
        cgn_sim::config::ThirdPartyIdConfig { id: "vlan7".into() },
        cgn_sim::config::ThirdPartyIdConfig { id: "vlan8".into() },
    ];
    c.third_party_id_max_len = 8;
    let mut h = Harness::with(c);
    assert_eq!(
        result(&mut h, &[tp, id(b"vlan9")]),
        ResultCode::ThirdPartyIdUnknown
    );
    assert_eq!(
        result(&mut h, &[tp, id(b"123456789")]),
        ResultCode::UnsuppThirdPartyIdLength
    );
    assert_eq!(
        result(&mut h, &[id(b"vlan7")]),
        ResultCode::ThirdPartyMissingOption
    );
    let a = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(1),
            Protocol::UDP,
            5000,
            3600,
            None,
            &[tp, id(b"vlan7")],
        ),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert_eq!(a.options().len(), 2);
    // Same address and port in another realm: a different mapping, not a nonce clash.
    let b = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(2),
            Protocol::UDP,
            5000,
            3600,
            None,
            &[tp, id(b"vlan8")],
        ),
    );
    assert_eq!(b.result(), ResultCode::Success);
    assert_ne!(a.external(), b.external());
    assert_eq!(h.server.table().counts().maps, 2);
    h.check();
}

// RFC 6887 §13.1: THIRD_PARTY per authorized subnet: a host may be authorized only for some
// internal addresses (`HOSTS=SUBNET`), e.g. an IWF without NAT for its LAN.
#[test]
fn third_party_is_authorized_per_subnet() {
    let mut c = config();
    c.third_party_hosts = vec![
        "100.64.0.2/32=192.168.0.0/24"
            .parse()
            .expect("THIRD_PARTY rule"),
    ];
    let mut h = Harness::with(c);
    let lan = [PcpOption::ThirdParty(IpAddr::V4(Ipv4Addr::new(
        192, 168, 0, 10,
    )))];
    let a = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::UDP, 5000, 3600, None, &lan),
    );
    assert_eq!(a.result(), ResultCode::Success);
    assert!(h.server.render_table(h.now).contains("[192.168.0.10:5000]"));
    // Not for another subscriber outside its subnet.
    let other = [PcpOption::ThirdParty(IpAddr::V4(CLIENT2))];
    assert_eq!(result(&mut h, &other), ResultCode::NotAuthorized);
    assert!(h.server.config().validate().is_ok());
    // A bad rule is refused where it is read (config file or flag), before any server.
    assert!(
        "100.64.0.2/32=nonsense"
            .parse::<cgn_sim::config::ThirdPartyRule>()
            .is_err()
    );
    assert!(
        toml::from_str::<cgn_sim::config::EngineConfig>(
            "third_party_hosts = [\"100.64.0.2/32=nonsense\"]"
        )
        .is_err()
    );
}
