//! Byte-exact tests for every message and option kind, in both directions, and one test per
//! parse error. Byte layouts are from RFC 6887 §7, §11.1, §12.1, §13, RFC 7220, RFC 7753 and
//! RFC 7843, and the two MAP examples of the spec digest (§1.6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const NONCE: Nonce = Nonce([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

/// Digest §1.6: MAP request, TCP, internal port 8080, lifetime 7200, client 192.168.1.10,
/// nonce 01..0c, no preference.
static MAP_REQUEST: [u8; 60] = [
    0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xff, 0xc0, 0xa8, 0x01, 0x0a, // header
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x06, 0x00, 0x00, 0x00,
    0x1f, 0x90, 0x00, 0x00, // nonce, protocol, reserved, ports
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
];

/// Digest §1.6: the success response, epoch 1234, assigned 198.51.100.7:40001.
static MAP_RESPONSE: [u8; 60] = [
    0x02, 0x81, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x20, 0x00, 0x00, 0x04, 0xd2, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x06, 0x00, 0x00, 0x00,
    0x1f, 0x90, 0x9c, 0x41, // nonce, protocol, reserved, ports
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xc6, 0x33, 0x64, 0x07,
];

fn map_request_repr() -> RequestRepr<'static> {
    RequestRepr {
        lifetime: 7200,
        client_ip: v4(192, 168, 1, 10),
        data: OpcodeData::Map(MapData {
            nonce: NONCE,
            protocol: Protocol::TCP,
            internal_port: 8080,
            external_port: 0,
            external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }),
        options: Options::EMPTY,
    }
}

fn map_response_repr() -> ResponseRepr<'static> {
    ResponseRepr {
        result: ResultCode::Success,
        lifetime: 7200,
        epoch: 1234,
        data: OpcodeData::Map(MapData {
            nonce: NONCE,
            protocol: Protocol::TCP,
            internal_port: 8080,
            external_port: 40001,
            external_address: v4(198, 51, 100, 7),
        }),
        options: Options::EMPTY,
    }
}

fn emit_req(repr: &RequestRepr<'_>) -> Vec<u8> {
    let mut buf = [0u8; 1100];
    let len = repr.emit(&mut buf).expect("emit");
    buf[..len].to_vec()
}

fn emit_resp(repr: &ResponseRepr<'_>) -> Vec<u8> {
    let mut buf = [0u8; 1100];
    let len = repr.emit(&mut buf).expect("emit");
    buf[..len].to_vec()
}

// Digest §1.6, example 1 (RFC 6887 §11.1).
#[test]
fn map_request_example_both_directions() {
    assert_eq!(RequestRepr::parse(&MAP_REQUEST), Ok(map_request_repr()));
    assert_eq!(emit_req(&map_request_repr()), MAP_REQUEST);
}

// Digest §1.6, example 2 (RFC 6887 §11.1, §7.2).
#[test]
fn map_response_example_both_directions() {
    assert_eq!(ResponseRepr::parse(&MAP_RESPONSE), Ok(map_response_repr()));
    assert_eq!(emit_resp(&map_response_repr()), MAP_RESPONSE);
}

/// PEER request (RFC 6887 §12.1): UDP 192.168.0.10:17192 → 203.0.113.50:9000, suggesting
/// 198.51.100.3:1280, lifetime 1800, IPv6 client 2001:db8::10 to show the family can differ.
static PEER_REQUEST: [u8; 80] = [
    0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x07,
    0x08, // version, op PEER, reserved, lifetime 1800
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // client 2001:db8::10
    b'5', b'1', b'7', b'8', b'5', b'9', b'5', b'1', b'6', 0, 0, 0, // nonce
    0x11, 0x00, 0x00, 0x00, 0x43, 0x28, 0x05, 0x00, // UDP, reserved, 17192, 1280
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 3, // suggested external address
    0x23, 0x28, 0x00, 0x00, // remote peer port 9000, reserved
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 50, // remote peer address
];

fn peer_data() -> PeerData {
    PeerData {
        map: MapData {
            nonce: Nonce(*b"517859516\0\0\0"),
            protocol: Protocol::UDP,
            internal_port: 17192,
            external_port: 1280,
            external_address: v4(198, 51, 100, 3),
        },
        remote_peer_port: 9000,
        remote_peer_address: v4(203, 0, 113, 50),
    }
}

#[test]
fn peer_request_both_directions() {
    let repr = RequestRepr {
        lifetime: 1800,
        client_ip: IpAddr::V6("2001:db8::10".parse().expect("literal")),
        data: OpcodeData::Peer(peer_data()),
        options: Options::EMPTY,
    };
    assert_eq!(RequestRepr::parse(&PEER_REQUEST), Ok(repr));
    assert_eq!(emit_req(&repr), PEER_REQUEST);
}

#[test]
fn peer_response_both_directions() {
    let mut bytes = PEER_REQUEST;
    bytes[1] = 0x82; // R + PEER
    bytes[2] = 0;
    bytes[3] = 0; // SUCCESS
    bytes[8..12].copy_from_slice(&[0, 0, 0, 42]); // epoch 42
    bytes[12..24].fill(0);
    let repr = ResponseRepr {
        result: ResultCode::Success,
        lifetime: 1800,
        epoch: 42,
        data: OpcodeData::Peer(peer_data()),
        options: Options::EMPTY,
    };
    assert_eq!(ResponseRepr::parse(&bytes), Ok(repr));
    assert_eq!(emit_resp(&repr), bytes);
}

static ANNOUNCE_REQUEST: [u8; 24] = [
    0x02, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 100, 64, 0, 2,
];
static ANNOUNCE_RESPONSE: [u8; 24] = [
    0x02, 0x80, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

// RFC 6887 §14.1: ANNOUNCE has no opcode data; lifetime 0.
#[test]
fn announce_both_directions() {
    let req = RequestRepr {
        lifetime: 0,
        client_ip: v4(100, 64, 0, 2),
        data: OpcodeData::Announce,
        options: Options::EMPTY,
    };
    assert_eq!(RequestRepr::parse(&ANNOUNCE_REQUEST), Ok(req));
    assert_eq!(emit_req(&req), ANNOUNCE_REQUEST);
    let resp = ResponseRepr {
        result: ResultCode::Success,
        lifetime: 0,
        epoch: 7,
        data: OpcodeData::Announce,
        options: Options::EMPTY,
    };
    assert_eq!(ResponseRepr::parse(&ANNOUNCE_RESPONSE), Ok(resp));
    assert_eq!(emit_resp(&resp), ANNOUNCE_RESPONSE);
}

// RFC 7652 §5.1: opcode 3 is recognised (8 bytes of data), not misparsed or rejected.
#[test]
fn authentication_opcode_is_recognised() {
    let mut bytes = [0u8; 32];
    bytes[..24].copy_from_slice(&ANNOUNCE_REQUEST);
    bytes[1] = 3;
    bytes[24..32].copy_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1]);
    let repr = RequestRepr::parse(&bytes).expect("parses");
    assert_eq!(
        repr.data,
        OpcodeData::Authentication(AuthData {
            session_id: 9,
            sequence_number: 1
        })
    );
    assert_eq!(emit_req(&repr), bytes);
    assert_eq!(
        RequestRepr::parse(&bytes[..24]),
        Err(Error::OpcodeTruncated {
            opcode: Opcode::Authentication,
            len: 24,
            need: 32
        })
    );
}

/// A MAP request carrying every option kind.
fn all_options() -> [PcpOption<'static>; 8] {
    [
        PcpOption::ThirdParty(v4(100, 64, 0, 9)),
        PcpOption::PreferFailure,
        PcpOption::Filter(Filter {
            prefix_length: 120,
            remote_peer_port: 9000,
            remote_peer_address: v4(203, 0, 113, 0),
        }),
        PcpOption::Filter(Filter {
            prefix_length: 64,
            remote_peer_port: 0,
            remote_peer_address: IpAddr::V6("2001:db8::".parse().expect("literal")),
        }),
        PcpOption::ThirdPartyId(b"sub-42"),
        PcpOption::Description(Description::new("cam")),
        PcpOption::Unknown(UnknownOption {
            code: OptionCode(200),
            data: &[0xaa],
        }),
        PcpOption::Unknown(UnknownOption {
            code: OptionCode(5),
            data: &[],
        }),
    ]
}

#[rustfmt::skip]
static ALL_OPTION_BYTES: [u8; 104] = [
    // THIRD_PARTY 100.64.0.9 (RFC 6887 §13.1)
    0x01, 0x00, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 100, 64, 0, 9,
    // PREFER_FAILURE (§13.2)
    0x02, 0x00, 0x00, 0x00,
    // FILTER 203.0.113.0/24 port 9000 (§13.3): prefix 96 + 24
    0x03, 0x00, 0x00, 0x14, 0x00, 120, 0x23, 0x28,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 0,
    // FILTER 2001:db8::/64, all ports
    0x03, 0x00, 0x00, 0x14, 0x00, 64, 0x00, 0x00,
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    // THIRD_PARTY_ID "sub-42" (RFC 7843), padded to 8
    0x0d, 0x00, 0x00, 0x06, b's', b'u', b'b', b'-', b'4', b'2', 0, 0,
    // DESCRIPTION "cam" (RFC 7220; digest §1.9)
    0x80, 0x00, 0x00, 0x03, 0x63, 0x61, 0x6d, 0x00,
    // unknown optional option 200, one byte of data, padded
    0xc8, 0x00, 0x00, 0x01, 0xaa, 0, 0, 0,
    // AUTHENTICATION_TAG (RFC 7652) kept as unknown, zero length
    0x05, 0x00, 0x00, 0x00,
];

fn map_with_all_options<'a>(options: &'a [PcpOption<'a>]) -> RequestRepr<'a> {
    RequestRepr {
        lifetime: 3600,
        client_ip: v4(100, 64, 0, 2),
        data: OpcodeData::Map(MapData {
            nonce: NONCE,
            protocol: Protocol::UDP,
            internal_port: 5000,
            external_port: 5000,
            external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }),
        options: Options::List(options),
    }
}

#[test]
fn every_option_kind_both_directions() {
    let options = all_options();
    let repr = map_with_all_options(&options);
    let bytes = emit_req(&repr);
    assert_eq!(bytes.len(), 60 + ALL_OPTION_BYTES.len());
    assert_eq!(&bytes[60..], &ALL_OPTION_BYTES[..]);
    let parsed = RequestRepr::parse(&bytes).expect("parses");
    assert_eq!(parsed, repr);
    let got: Vec<_> = parsed.options.iter().collect();
    assert_eq!(got, options.to_vec());
    assert_eq!(parsed.options.len(), 8);
    assert!(parsed.options.contains(OptionCode::PREFER_FAILURE));
    assert!(!parsed.options.contains(OptionCode::PORT_SET));
}

// RFC 7753 §4 and digest §1.9: 100 ports from 50000 with parity.
#[test]
fn port_set_example_both_directions() {
    let options = [PcpOption::PortSet(PortSet {
        size: 100,
        first_internal_port: 50000,
        parity: true,
    })];
    let mut repr = map_with_all_options(&options);
    if let OpcodeData::Map(map) = &mut repr.data {
        map.internal_port = 50000;
    }
    let bytes = emit_req(&repr);
    assert_eq!(
        &bytes[60..],
        &[
            0x82, 0x00, 0x00, 0x05, 0x00, 0x64, 0xc3, 0x50, 0x01, 0, 0, 0
        ]
    );
    assert_eq!(RequestRepr::parse(&bytes), Ok(repr));
}

// RFC 6887 §7.3: the reserved byte and padding are ignored on receive and zero on send.
#[test]
fn option_reserved_byte_and_padding_are_ignored_and_zeroed() {
    let options = [PcpOption::Description(Description::new("cam"))];
    let repr = map_with_all_options(&options);
    let mut bytes = emit_req(&repr);
    bytes[61] = 0x5a; // option reserved
    bytes[67] = 0x77; // padding
    let parsed = RequestRepr::parse(&bytes).expect("parses");
    assert_eq!(parsed, repr);
    let again = emit_req(&parsed);
    assert_eq!(again[61], 0);
    assert_eq!(again[67], 0);
}

// RFC 6887 §7.1, §11.1: reserved header and MAP fields are ignored on receive, zero on send.
#[test]
fn reserved_fields_are_ignored_on_receive_and_zero_on_send() {
    let mut bytes = MAP_REQUEST;
    bytes[2] = 0xff;
    bytes[3] = 0xff;
    bytes[37..40].fill(0xee);
    let parsed = RequestRepr::parse(&bytes).expect("parses");
    assert_eq!(parsed, map_request_repr());
    assert_eq!(emit_req(&parsed), MAP_REQUEST);

    let mut peer = PEER_REQUEST;
    peer[62] = 1;
    peer[63] = 2;
    let parsed = RequestRepr::parse(&peer).expect("parses");
    assert_eq!(emit_req(&parsed), PEER_REQUEST);

    let mut resp = MAP_RESPONSE;
    resp[2] = 0x33; // response reserved byte
    resp[12] = 0x44; // 96 reserved bits
    let parsed = ResponseRepr::parse(&resp).expect("parses");
    assert_eq!(emit_resp(&parsed), MAP_RESPONSE);
}

// RFC 6887 §5: the two "no preference" forms.
#[test]
fn ipv6_no_preference_is_all_zeros() {
    let mut repr = map_request_repr();
    if let OpcodeData::Map(map) = &mut repr.data {
        map.external_address = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    }
    let bytes = emit_req(&repr);
    assert_eq!(&bytes[44..60], &[0u8; 16]);
    assert_eq!(RequestRepr::parse(&bytes), Ok(repr));
}

// RFC 6887 §15.1 with erratum 3621: a delete carries port 0 and the family's zero address.
#[test]
fn delete_request_encoding() {
    let mut repr = map_request_repr();
    repr.lifetime = 0;
    let bytes = emit_req(&repr);
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
    assert_eq!(&bytes[42..44], &[0, 0]);
    assert_eq!(
        &bytes[44..60],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
    );
}

#[test]
fn emit_reports_small_buffer_and_oversize() {
    let mut small = [0u8; 59];
    assert_eq!(
        map_request_repr().emit(&mut small),
        Err(EmitError::BufferTooSmall { need: 60, have: 59 })
    );
    let long = [b'x'; 1100];
    let options = [PcpOption::Description(Description(&long))];
    let repr = map_with_all_options(&options);
    let mut buf = [0u8; 2000];
    assert_eq!(
        repr.emit(&mut buf),
        Err(EmitError::TooLong { len: 60 + 4 + 1100 })
    );
}

// ---- every parse error ----

fn with_options(opts: &[u8]) -> Vec<u8> {
    let mut bytes = emit_req(&map_with_all_options(&[]));
    bytes.extend_from_slice(opts);
    bytes
}

fn request_err(bytes: &[u8]) -> Error {
    RequestRepr::parse(bytes).expect_err("must not parse")
}

#[test]
fn error_truncated_is_dropped() {
    assert_eq!(request_err(&[]), Error::Truncated { len: 0 });
    assert_eq!(request_err(&[2]), Error::Truncated { len: 1 });
    assert_eq!(
        request_err(&MAP_REQUEST[..20]),
        Error::Truncated { len: 20 }
    );
    assert_eq!(Error::Truncated { len: 20 }.result_code(), None);
}

#[test]
fn error_too_long_is_malformed_request() {
    let mut bytes = MAP_REQUEST.to_vec();
    bytes.resize(1104, 0);
    let e = request_err(&bytes);
    assert_eq!(e, Error::TooLong { len: 1104 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
}

#[test]
fn error_not_multiple_of_4_is_malformed_request() {
    let mut bytes = MAP_REQUEST.to_vec();
    bytes.push(0);
    let e = request_err(&bytes);
    assert_eq!(e, Error::NotMultipleOf4 { len: 61 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
}

// RFC 6887 §9, 6886 §1.1: version 1 is never PCP; version 0 is NAT-PMP.
#[test]
fn error_unsupported_version() {
    for version in [0u8, 1, 3] {
        let mut bytes = MAP_REQUEST;
        bytes[0] = version;
        let e = request_err(&bytes);
        assert_eq!(e, Error::UnsupportedVersion { version });
        assert_eq!(e.result_code(), Some(ResultCode::UnsuppVersion));
    }
    // A 2-byte NAT-PMP external address request reaches the version check.
    assert_eq!(
        request_err(&[0, 0]),
        Error::UnsupportedVersion { version: 0 }
    );
    let mut resp = MAP_RESPONSE;
    resp[0] = 1;
    assert_eq!(
        ResponseRepr::parse(&resp),
        Err(Error::UnsupportedVersion { version: 1 })
    );
}

#[test]
fn error_r_bit_mismatch_is_dropped() {
    assert_eq!(request_err(&MAP_RESPONSE), Error::NotARequest);
    assert_eq!(ResponseRepr::parse(&MAP_REQUEST), Err(Error::NotAResponse));
    assert_eq!(Error::NotARequest.result_code(), None);
    assert_eq!(Error::NotAResponse.result_code(), None);
}

#[test]
fn error_unsupported_opcode() {
    let mut bytes = MAP_REQUEST;
    bytes[1] = 0x60;
    let e = request_err(&bytes);
    assert_eq!(e, Error::UnsupportedOpcode { opcode: 0x60 });
    assert_eq!(e.result_code(), Some(ResultCode::UnsuppOpcode));
}

#[test]
fn error_opcode_truncated_is_malformed_request() {
    let e = request_err(&MAP_REQUEST[..56]);
    assert_eq!(
        e,
        Error::OpcodeTruncated {
            opcode: Opcode::Map,
            len: 56,
            need: 60
        }
    );
    assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
    assert_eq!(
        request_err(&PEER_REQUEST[..76]),
        Error::OpcodeTruncated {
            opcode: Opcode::Peer,
            len: 76,
            need: 80
        }
    );
}

// RFC 6887 §11.3: protocol 0 with a non-zero port is MALFORMED_REQUEST.
#[test]
fn error_all_protocols_with_port() {
    let mut bytes = MAP_REQUEST;
    bytes[36] = 0;
    let e = request_err(&bytes);
    assert_eq!(e, Error::AllProtocolsWithPort { port: 8080 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
    // In a delete the port is ignored (RFC 6887 §11.1).
    let mut delete = bytes;
    delete[4..8].fill(0);
    assert!(
        RequestRepr::parse(&delete).is_ok(),
        "delete ignores the port"
    );
    bytes[40] = 0;
    bytes[41] = 0;
    assert!(
        RequestRepr::parse(&bytes).is_ok(),
        "all protocols, all ports is valid"
    );
}

// RFC 6887 §12.1: PEER protocol, internal port and remote peer port are never 0.
#[test]
fn error_peer_field_zero() {
    for (at, field) in [
        (36, "protocol"),
        (40, "internal port"),
        (60, "remote peer port"),
    ] {
        let mut bytes = PEER_REQUEST;
        bytes[at] = 0;
        if at != 36 {
            bytes[at + 1] = 0;
        }
        let e = request_err(&bytes);
        assert_eq!(e, Error::PeerFieldZero { field });
        assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
    }
}

#[test]
fn error_option_header_truncated() {
    // Messages are a multiple of 4, so a cut header is only seen by the option validator on a
    // region it is handed directly.
    let region = [0x80u8, 0x00];
    let r = option::validate(
        &region,
        60,
        option::Context {
            opcode: Opcode::Map,
            request: None,
        },
    );
    assert_eq!(r, Err(Error::OptionHeaderTruncated { offset: 60 }));
    // Once the header is there, data running past the end is an overrun.
    let bytes = with_options(&[0x03, 0x00, 0x00, 0x14, 0, 0, 0, 0]);
    let e = request_err(&bytes);
    assert_eq!(
        e,
        Error::OptionOverrun {
            code: OptionCode::FILTER,
            offset: 60,
            length: 20
        }
    );
    assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    assert_eq!(
        Error::OptionHeaderTruncated { offset: 60 }.result_code(),
        Some(ResultCode::MalformedOption)
    );
}

#[test]
fn error_option_overrun_counts_padding() {
    // DESCRIPTION of length 5 needs 8 bytes of data area; only 4 present.
    let bytes = with_options(&[0x80, 0x00, 0x00, 0x05, b'a', b'b', b'c', b'd']);
    assert_eq!(
        request_err(&bytes),
        Error::OptionOverrun {
            code: OptionCode::DESCRIPTION,
            offset: 60,
            length: 5
        }
    );
}

#[test]
fn error_option_length() {
    let cases: [(&[u8], OptionCode, u16, u16); 4] = [
        (&[0x01, 0, 0, 4, 1, 2, 3, 4], OptionCode::THIRD_PARTY, 4, 16),
        (
            &[0x02, 0, 0, 4, 0, 0, 0, 0],
            OptionCode::PREFER_FAILURE,
            4,
            0,
        ),
        (
            &[
                0x03, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            OptionCode::FILTER,
            16,
            20,
        ),
        (
            &[0x82, 0, 0, 4, 0, 1, 0x13, 0x88],
            OptionCode::PORT_SET,
            4,
            5,
        ),
    ];
    for (opts, code, length, expected) in cases {
        let e = request_err(&with_options(opts));
        assert_eq!(
            e,
            Error::OptionLength {
                code,
                offset: 60,
                length,
                expected
            }
        );
        assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    }
    // THIRD_PARTY_ID and DESCRIPTION are variable, at most 1016 bytes (RFC 7843, 7220).
    // 1017 bytes claimed: too long for THIRD_PARTY_ID even though it fits the message.
    let mut b2 = MAP_REQUEST[..60].to_vec();
    b2.extend_from_slice(&[0x0d, 0, 0x03, 0xf9]);
    b2.resize(60 + 4 + 1020, b'x');
    assert_eq!(
        request_err(&b2),
        Error::OptionLength {
            code: OptionCode::THIRD_PARTY_ID,
            offset: 60,
            length: 1017,
            expected: 1016
        }
    );
}

// RFC 6887 §13: an option on an opcode it is not defined for.
#[test]
fn error_option_not_allowed_for_opcode() {
    let mut bytes = ANNOUNCE_REQUEST.to_vec();
    bytes.extend_from_slice(&[0x80, 0, 0, 0]); // DESCRIPTION on ANNOUNCE
    let e = request_err(&bytes);
    assert_eq!(
        e,
        Error::OptionNotAllowed {
            code: OptionCode::DESCRIPTION,
            offset: 24,
            opcode: Opcode::Announce
        }
    );
    assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    let mut peer = PEER_REQUEST.to_vec();
    peer.extend_from_slice(&[0x03, 0, 0, 20]);
    peer.extend_from_slice(&[0; 20]);
    assert_eq!(
        request_err(&peer),
        Error::OptionNotAllowed {
            code: OptionCode::FILTER,
            offset: 80,
            opcode: Opcode::Peer
        }
    );
}

// RFC 6887 §7.3: a single-use option twice is MALFORMED_OPTION; FILTER may repeat.
#[test]
fn error_option_repeated() {
    let bytes = with_options(&[0x80, 0, 0, 1, b'a', 0, 0, 0, 0x80, 0, 0, 1, b'b', 0, 0, 0]);
    let e = request_err(&bytes);
    assert_eq!(
        e,
        Error::OptionRepeated {
            code: OptionCode::DESCRIPTION,
            offset: 68
        }
    );
    assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    let f = Filter {
        prefix_length: 128,
        remote_peer_port: 1,
        remote_peer_address: v4(203, 0, 113, 50),
    };
    let two = [PcpOption::Filter(f), PcpOption::Filter(f)];
    assert!(RequestRepr::parse(&emit_req(&map_with_all_options(&two))).is_ok());
    // Unknown options are left to the server (UNSUPP_OPTION or ignore), not rejected here.
    let unknown = with_options(&[0x40, 0, 0, 0, 0x40, 0, 0, 0]);
    assert!(RequestRepr::parse(&unknown).is_ok());
}

// RFC 6887 §13.3: prefix length ranges (IPv4 96..=128, IPv6 0..=128).
#[test]
fn error_filter_prefix_length() {
    let filter = |prefix_length, remote_peer_address| {
        [PcpOption::Filter(Filter {
            prefix_length,
            remote_peer_port: 0,
            remote_peer_address,
        })]
    };
    for (len, addr) in [
        (95, v4(203, 0, 113, 0)),
        (1, v4(203, 0, 113, 0)),
        (129, v4(203, 0, 113, 0)),
    ] {
        let opts = filter(len, addr);
        let e = request_err(&emit_req(&map_with_all_options(&opts)));
        assert_eq!(
            e,
            Error::FilterPrefixLength {
                offset: 60,
                prefix_length: len
            }
        );
        assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    }
    let v6 = IpAddr::V6("2001:db8::".parse().expect("literal"));
    let opts = filter(129, v6);
    assert!(RequestRepr::parse(&emit_req(&map_with_all_options(&opts))).is_err());
    for (len, addr) in [
        (96, v4(0, 0, 0, 0)),
        (128, v4(203, 0, 113, 50)),
        (0, v4(0, 0, 0, 0)),
        (1, v6),
        (0, v6),
    ] {
        let opts = filter(len, addr);
        assert!(
            RequestRepr::parse(&emit_req(&map_with_all_options(&opts))).is_ok(),
            "{len}"
        );
    }
    assert!(Filter::REMOVE_ALL.is_remove_all());
}

// RFC 6887 §13.2, §13.3: PREFER_FAILURE and FILTER make no sense in a delete.
#[test]
fn error_option_in_delete() {
    for (opt, code) in [
        (PcpOption::PreferFailure, OptionCode::PREFER_FAILURE),
        (PcpOption::Filter(Filter::REMOVE_ALL), OptionCode::FILTER),
    ] {
        let opts = [opt];
        let mut repr = map_with_all_options(&opts);
        repr.lifetime = 0;
        let e = request_err(&emit_req(&repr));
        assert_eq!(e, Error::OptionInDelete { code, offset: 60 });
        assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    }
}

// RFC 6887 §13.2: PREFER_FAILURE needs a suggested port.
#[test]
fn error_prefer_failure_without_port() {
    let opts = [PcpOption::PreferFailure];
    let mut repr = map_with_all_options(&opts);
    if let OpcodeData::Map(map) = &mut repr.data {
        map.external_port = 0;
    }
    let e = request_err(&emit_req(&repr));
    assert_eq!(e, Error::PreferFailureWithoutPort { offset: 60 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
}

// RFC 6887 §13.2: PREFER_FAILURE in PEER is MALFORMED_REQUEST.
#[test]
fn error_prefer_failure_in_peer() {
    let mut bytes = PEER_REQUEST.to_vec();
    bytes.extend_from_slice(&[0x02, 0, 0, 0]);
    let e = request_err(&bytes);
    assert_eq!(e, Error::PreferFailureInPeer { offset: 80 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
}

// RFC 7753 §4: Port Set Size 0 is invalid unless deleting.
#[test]
fn error_port_set_size_zero() {
    let opts = [PcpOption::PortSet(PortSet {
        size: 0,
        first_internal_port: 5000,
        parity: false,
    })];
    let mut repr = map_with_all_options(&opts);
    let e = request_err(&emit_req(&repr));
    assert_eq!(e, Error::PortSetSizeZero { offset: 60 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    repr.lifetime = 0;
    assert!(RequestRepr::parse(&emit_req(&repr)).is_ok());
}

// RFC 7753 §5.1: PORT_SET with PREFER_FAILURE, in either order.
#[test]
fn error_port_set_with_prefer_failure() {
    let set = PcpOption::PortSet(PortSet {
        size: 4,
        first_internal_port: 5000,
        parity: false,
    });
    for (opts, offset) in [
        ([PcpOption::PreferFailure, set], 64),
        ([set, PcpOption::PreferFailure], 72),
    ] {
        let e = request_err(&emit_req(&map_with_all_options(&opts)));
        assert_eq!(e, Error::PortSetWithPreferFailure { offset });
        assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
    }
}

// RFC 7753 §4: First Internal Port equals the MAP Internal Port in a request.
#[test]
fn error_port_set_internal_port_mismatch() {
    let opts = [PcpOption::PortSet(PortSet {
        size: 4,
        first_internal_port: 6000,
        parity: false,
    })];
    let e = request_err(&emit_req(&map_with_all_options(&opts)));
    assert_eq!(
        e,
        Error::PortSetInternalPortMismatch {
            offset: 60,
            first: 6000,
            internal: 5000
        }
    );
    assert_eq!(e.result_code(), Some(ResultCode::MalformedOption));
}

// RFC 6887 §13.1: THIRD_PARTY equal to the client's own address is MALFORMED_REQUEST.
#[test]
fn error_third_party_is_client() {
    let opts = [PcpOption::ThirdParty(v4(100, 64, 0, 2))];
    let e = request_err(&emit_req(&map_with_all_options(&opts)));
    assert_eq!(e, Error::ThirdPartyIsClient { offset: 60 });
    assert_eq!(e.result_code(), Some(ResultCode::MalformedRequest));
}

// Responses: structure is checked, request-only rules are not (a server echoes what it got).
#[test]
fn response_options_are_checked_structurally_only() {
    let mut resp = MAP_RESPONSE.to_vec();
    resp.extend_from_slice(&[0x02, 0, 0, 0]); // PREFER_FAILURE with port 40001: fine
    assert!(ResponseRepr::parse(&resp).is_ok());
    resp.extend_from_slice(&[0x02, 0, 0, 0]);
    assert_eq!(
        ResponseRepr::parse(&resp),
        Err(Error::OptionRepeated {
            code: OptionCode::PREFER_FAILURE,
            offset: 64
        })
    );
}

// ---- error responses (RFC 6887 §7.2, §8.2) ----

#[test]
fn error_response_copies_request_and_keeps_client_ip_tail_when_unparsed() {
    let mut req = MAP_REQUEST.to_vec();
    req.extend_from_slice(&[0x80, 0x00, 0x00, 0x03, 0x63, 0x61, 0x6d, 0x00]);
    req[1] = 0x61; // unknown opcode 97
    let err = request_err(&req);
    let e = ErrorResponse::for_parse_error(&err, 1234, |_| 1800).expect("answered");
    let mut out = [0u8; 1100];
    let len = emit_error_response(&req, &e, &mut out).expect("fits");
    let mut expected = req.clone();
    expected[0] = 2;
    expected[1] = 0xe1;
    expected[2] = 0;
    expected[3] = 4; // UNSUPP_OPCODE
    expected[4..8].copy_from_slice(&1800u32.to_be_bytes());
    expected[8..12].copy_from_slice(&1234u32.to_be_bytes());
    // bytes 12..24 keep the last 96 bits of the Client IP field
    assert_eq!(
        &expected[12..24],
        &[0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xc0, 0xa8, 1, 10]
    );
    assert_eq!(&out[..len], &expected[..]);
}

#[test]
fn error_response_for_parsed_request_zeroes_reserved() {
    let e = ErrorResponse {
        result: ResultCode::NoResources,
        lifetime: 30,
        epoch: 5,
        request_parsed: true,
    };
    let mut out = [0u8; 1100];
    let len = emit_error_response(&MAP_REQUEST, &e, &mut out).expect("fits");
    let resp = ResponseRepr::parse(&out[..len]).expect("a parsable response");
    assert_eq!(resp.result, ResultCode::NoResources);
    assert_eq!(resp.lifetime, 30);
    assert_eq!(resp.epoch, 5);
    // the "assigned" fields hold the suggested values, as sent
    assert_eq!(resp.data, map_request_repr().data);
    assert_eq!(&out[12..24], &[0u8; 12]);
}

#[test]
fn error_response_pads_short_and_cuts_long_requests() {
    let e = ErrorResponse {
        result: ResultCode::UnsuppVersion,
        lifetime: 1800,
        epoch: 0,
        request_parsed: false,
    };
    let mut out = [0xffu8; 1200];
    // NAT-PMP external address request: 2 bytes → 24-byte answer (digest §3.1 step 4).
    let len = emit_error_response(&[0, 0], &e, &mut out).expect("fits");
    assert_eq!(len, 24);
    assert_eq!(&out[..8], &[2, 0x80, 0, 1, 0, 0, 0x07, 0x08]);
    assert!(out[8..24].iter().all(|b| *b == 0));
    // Oversized request: cut to 1100.
    let big = [0x02u8; 1203];
    let len = emit_error_response(&big, &e, &mut out).expect("fits");
    assert_eq!(len, 1100);
    // Odd length: padded with zeros to a multiple of 4.
    let odd = [
        0x02u8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
    ];
    let len = emit_error_response(&odd, &e, &mut out).expect("fits");
    assert_eq!(len, 28);
    assert_eq!(&out[24..28], &[9, 0, 0, 0]);
    let mut tiny = [0u8; 20];
    assert_eq!(
        emit_error_response(&odd, &e, &mut tiny),
        Err(EmitError::BufferTooSmall { need: 28, have: 20 })
    );
}

#[test]
fn silently_dropped_errors_get_no_response() {
    assert_eq!(
        ErrorResponse::for_parse_error(&Error::Truncated { len: 3 }, 0, |_| 30),
        None
    );
    assert_eq!(
        ErrorResponse::for_parse_error(&Error::NotARequest, 0, |_| 30),
        None
    );
}

#[test]
fn check_header_stops_before_opcode_data() {
    // A MAP with a broken option passes the header check (ADDRESS_MISMATCH comes next).
    let bytes = with_options(&[0x02, 0, 0, 4, 0, 0, 0, 0]);
    let packet = RequestRepr::check_header(&bytes).expect("header ok");
    assert_eq!(packet.client_ip(), v4(100, 64, 0, 2));
    assert_eq!(packet.opcode(), Opcode::Map);
    assert!(RequestRepr::parse(&bytes).is_err());
}
