//! Our emitted MAP, PEER and ANNOUNCE requests and responses, with every option kind, decoded
//! by tshark's Port Control Protocol dissector: the field values must be ours and tshark must
//! report no malformed packet.
//!
//! tshark is an independent implementation of the RFC 6887 wire format, so this checks the
//! encoder against someone else's reading of the RFC, not against our own parser.

#[path = "support/pcap.rs"]
mod pcap;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::process::Command;

use pcp_client::wire::{
    Description, ErrorResponse, Filter, MapData, Nonce, OpcodeData, OptionCode, Options, PcpOption,
    PeerData, PortSet, Protocol, RequestRepr, ResponseRepr, ResultCode, UnknownOption,
    emit_error_response,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

fn tshark_available() -> bool {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "SKIPPED: tshark is not installed (apt-get install tshark)";
        // Same rule as the lab: any value but empty or "0" forbids skipping.
        if std::env::var_os("NAT444_REQUIRE_PRIVILEGED").is_some_and(|v| !v.is_empty() && v != "0")
        {
            panic!("{msg}, and NAT444_REQUIRE_PRIVILEGED=1 forbids skipping");
        }
        eprintln!("{msg}");
    }
    ok
}

/// One message of the capture with the tshark field values we expect for it.
struct Case {
    bytes: Vec<u8>,
    response: bool,
    expect: Vec<(&'static str, String)>,
}

fn mapped(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("::ffff:{v4}"),
        IpAddr::V6(v6) => v6.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn emit_request(repr: &RequestRepr<'_>) -> Vec<u8> {
    let mut buf = [0u8; 1100];
    let len = repr.emit(&mut buf).expect("emit");
    buf[..len].to_vec()
}

fn emit_response(repr: &ResponseRepr<'_>) -> Vec<u8> {
    let mut buf = [0u8; 1100];
    let len = repr.emit(&mut buf).expect("emit");
    buf[..len].to_vec()
}

/// Expected values for the common header and opcode data.
fn header_expect(
    response: bool,
    data: &OpcodeData,
    lifetime: u32,
    epoch_or_client: Result<u32, IpAddr>,
    result: ResultCode,
) -> Vec<(&'static str, String)> {
    let mut e = vec![
        ("portcontrol.version", "2".to_string()),
        ("portcontrol.opcode", u8::from(data.opcode()).to_string()),
    ];
    match epoch_or_client {
        Ok(epoch) => {
            e.push(("portcontrol.result_code", u8::from(result).to_string()));
            e.push(("portcontrol.lifetime_rsp", lifetime.to_string()));
            e.push(("portcontrol.epoch_time", epoch.to_string()));
        }
        Err(client) => {
            e.push(("portcontrol.lifetime_req", lifetime.to_string()));
            e.push(("portcontrol.client_ip", mapped(client)));
        }
    }
    let (prefix, map, peer) = match data {
        OpcodeData::Map(m) => ("map", Some(m), None),
        OpcodeData::Peer(p) => ("peer", Some(&p.map), Some(p)),
        _ => ("", None, None),
    };
    if let Some(m) = map {
        let f = |s: &str| -> &'static str {
            Box::leak(format!("portcontrol.{prefix}.{s}").into_boxed_str())
        };
        e.push((f("nonce"), hex(&m.nonce.0)));
        e.push((f("protocol"), m.protocol.0.to_string()));
        e.push((f("internal_port"), m.internal_port.to_string()));
        if response {
            e.push((f("rsp_assigned_external_port"), m.external_port.to_string()));
            e.push((f("rsp_assigned_ext_ip"), mapped(m.external_address)));
        } else {
            e.push((f("req_sug_external_port"), m.external_port.to_string()));
            e.push((f("req_sug_external_ip"), mapped(m.external_address)));
        }
    }
    if let Some(p) = peer {
        e.push((
            "portcontrol.peer.remote_peer_port",
            p.remote_peer_port.to_string(),
        ));
        e.push((
            "portcontrol.peer.remote_peer_ip",
            mapped(p.remote_peer_address),
        ));
    }
    e
}

/// Expected values for the options (tshark aggregates repeated fields with commas).
fn options_expect(options: &[PcpOption<'_>]) -> Vec<(&'static str, String)> {
    let join = |v: Vec<String>| v.join(",");
    let mut e = vec![
        (
            "portcontrol.option.code",
            join(options.iter().map(|o| o.code().0.to_string()).collect()),
        ),
        (
            "portcontrol.option.length",
            join(options.iter().map(|o| o.data_len().to_string()).collect()),
        ),
    ];
    let mut tp = vec![];
    let mut filter = (vec![], vec![], vec![]);
    let mut desc = vec![];
    let mut ps = (vec![], vec![]);
    for o in options {
        match o {
            PcpOption::ThirdParty(a) => tp.push(mapped(*a)),
            PcpOption::Filter(f) => {
                filter.0.push(f.prefix_length.to_string());
                filter.1.push(f.remote_peer_port.to_string());
                filter.2.push(mapped(f.remote_peer_address));
            }
            PcpOption::Description(d) => desc.push(d.as_str().expect("utf-8").to_string()),
            PcpOption::PortSet(p) => {
                ps.0.push(p.size.to_string());
                ps.1.push(u8::from(p.parity).to_string());
            }
            _ => {}
        }
    }
    e.push(("portcontrol.option.third_party.internal_ip", join(tp)));
    e.push(("portcontrol.option.filter.prefix_length", join(filter.0)));
    e.push(("portcontrol.option.filter.remote_peer_port", join(filter.1)));
    e.push(("portcontrol.option.filter.remote_peer_ip", join(filter.2)));
    e.push(("portcontrol.option.description", join(desc)));
    e.push(("portcontrol.option.portset.size", join(ps.0)));
    e.push(("portcontrol.option.portset.parity", join(ps.1)));
    e
}

fn cases() -> Vec<Case> {
    let nonce = Nonce(*b"nat444-nonce");
    let client = IpAddr::V4(CLIENT);
    let map = MapData {
        nonce,
        protocol: Protocol::UDP,
        internal_port: 5000,
        external_port: 5000,
        external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let assigned = MapData {
        external_address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)),
        ..map
    };
    let map_options = [
        PcpOption::ThirdParty(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9))),
        PcpOption::PreferFailure,
        PcpOption::Filter(Filter {
            prefix_length: 120,
            remote_peer_port: 9000,
            remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)),
        }),
        PcpOption::Filter(Filter {
            prefix_length: 128,
            remote_peer_port: 0,
            remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)),
        }),
        PcpOption::Description(Description::new("BitTorrent 5000/udp")),
    ];
    let portset_map = MapData {
        internal_port: 50000,
        external_port: 0,
        ..map
    };
    let portset_options = [PcpOption::PortSet(PortSet {
        size: 100,
        first_internal_port: 50000,
        parity: true,
    })];
    let peer = PeerData {
        map: MapData {
            protocol: Protocol::TCP,
            internal_port: 17192,
            external_port: 0,
            ..map
        },
        remote_peer_port: 9000,
        remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)),
    };
    let peer_assigned = PeerData {
        map: MapData {
            external_port: 1280,
            external_address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)),
            ..peer.map
        },
        ..peer
    };
    let peer_options = [PcpOption::Description(Description::new("game"))];

    let mut out = Vec::new();
    let request = |data: OpcodeData, lifetime: u32, options: &[PcpOption<'_>]| {
        let repr = RequestRepr {
            lifetime,
            client_ip: client,
            data,
            options: Options::List(options),
        };
        let mut expect = header_expect(false, &data, lifetime, Err(client), ResultCode::Success);
        expect.extend(options_expect(options));
        Case {
            bytes: emit_request(&repr),
            response: false,
            expect,
        }
    };
    out.push(request(OpcodeData::Map(map), 7200, &map_options));
    out.push(request(
        OpcodeData::Map(portset_map),
        7200,
        &portset_options,
    ));
    out.push(request(OpcodeData::Peer(peer), 1800, &peer_options));
    out.push(request(OpcodeData::Announce, 0, &[]));

    let response = |data: OpcodeData, lifetime: u32, epoch: u32, options: &[PcpOption<'_>]| {
        let repr = ResponseRepr {
            result: ResultCode::Success,
            lifetime,
            epoch,
            data,
            options: Options::List(options),
        };
        let mut expect = header_expect(true, &data, lifetime, Ok(epoch), ResultCode::Success);
        expect.extend(options_expect(options));
        Case {
            bytes: emit_response(&repr),
            response: true,
            expect,
        }
    };
    out.push(response(
        OpcodeData::Map(assigned),
        7200,
        4242,
        &map_options,
    ));
    let ps_assigned = MapData {
        external_port: 40000,
        ..assigned
    };
    let ps_resp = [PcpOption::PortSet(PortSet {
        size: 64,
        first_internal_port: 50000,
        parity: true,
    })];
    out.push(response(
        OpcodeData::Map(MapData {
            internal_port: 50000,
            ..ps_assigned
        }),
        7200,
        4242,
        &ps_resp,
    ));
    out.push(response(
        OpcodeData::Peer(peer_assigned),
        1800,
        4243,
        &peer_options,
    ));
    out.push(response(OpcodeData::Announce, 0, 4244, &[]));

    // An error response built from request bytes (NOT_AUTHORIZED on the MAP above).
    let req = emit_request(&RequestRepr {
        lifetime: 7200,
        client_ip: client,
        data: OpcodeData::Map(map),
        options: Options::List(&map_options),
    });
    let mut buf = [0u8; 1100];
    let e = ErrorResponse {
        result: ResultCode::NotAuthorized,
        lifetime: 97,
        epoch: 4245,
        request_parsed: true,
    };
    let len = emit_error_response(&req, &e, &mut buf).expect("emit");
    let mut expect = header_expect(
        true,
        &OpcodeData::Map(map),
        97,
        Ok(4245),
        ResultCode::NotAuthorized,
    );
    expect.extend(options_expect(&map_options));
    out.push(Case {
        bytes: buf[..len].to_vec(),
        response: true,
        expect,
    });

    // Options tshark does not know (THIRD_PARTY_ID, a private optional option) must still
    // be walked correctly: the DESCRIPTION after them decodes.
    let odd_options = [
        PcpOption::ThirdPartyId(b"sub-42"),
        PcpOption::Unknown(UnknownOption {
            code: OptionCode(200),
            data: &[0xaa],
        }),
        PcpOption::Description(Description::new("after unknown")),
    ];
    out.push(request(OpcodeData::Map(map), 60, &odd_options));
    out
}

fn run_tshark(args: &[&str], file: &std::path::Path) -> String {
    let out = Command::new("tshark")
        .args(["-n", "-o", "udp.check_checksum:TRUE", "-r"])
        .arg(file)
        .args(args)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

// RFC 6887 §7, §11.1, §12.1, §13, RFC 7220, RFC 7753: an independent dissector agrees with us.
#[test]
fn tshark_decodes_our_messages_with_the_same_values() {
    if !tshark_available() {
        return;
    }
    let cases = cases();
    let datagrams: Vec<pcap::Datagram<'_>> = cases
        .iter()
        .map(|c| {
            let (c_end, s_end) = (
                SocketAddrV4::new(CLIENT, 40123),
                SocketAddrV4::new(SERVER, 5351),
            );
            let (src, dst) = if c.response {
                (s_end, c_end)
            } else {
                (c_end, s_end)
            };
            pcap::Datagram {
                src,
                dst,
                payload: &c.bytes,
            }
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("pcp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("pcp.pcap");
    std::fs::write(&file, pcap::pcap(&datagrams)).expect("write pcap");

    // The whole verbose decode: no malformed packet, no checksum or dissector error.
    let verbose = run_tshark(&["-V"], &file);
    assert_eq!(
        verbose.matches("Port Control Protocol").count(),
        cases.len(),
        "{verbose}"
    );
    for bad in [
        "Malformed",
        "Expert Info (Error",
        "Bad checksum",
        "[Dissector bug",
    ] {
        assert!(!verbose.contains(bad), "tshark reports {bad:?}:\n{verbose}");
    }

    // Field by field.
    let fields: Vec<&str> = {
        let mut f: Vec<&str> = cases
            .iter()
            .flat_map(|c| c.expect.iter().map(|(k, _)| *k))
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    };
    let mut args = vec![
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "aggregator=,",
        "-E",
        "occurrence=a",
    ];
    for f in &fields {
        args.push("-e");
        args.push(f);
    }
    let table = run_tshark(&args, &file);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), cases.len());
    for (i, (case, row)) in cases.iter().zip(rows).enumerate() {
        let values: Vec<&str> = row.split('|').collect();
        for (name, want) in &case.expect {
            let col = fields.iter().position(|f| f == name).expect("field listed");
            assert_eq!(
                values[col],
                want,
                "packet {} field {name}\nrow: {row}",
                i + 1
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
