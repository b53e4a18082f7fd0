//! Property tests: every `Repr` survives emit → parse unchanged, and parsing arbitrary bytes
//! never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn any_map() -> impl Strategy<Value = MapData> {
    (
        any::<[u8; 12]>(),
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        any_ip(),
    )
        .prop_map(
            |(nonce, protocol, internal_port, external_port, external_address)| MapData {
                nonce: Nonce(nonce),
                protocol: Protocol(protocol),
                // Protocol 0 with a port is malformed in a request (RFC 6887 §11.3).
                internal_port: if protocol == 0 { 0 } else { internal_port },
                external_port,
                external_address,
            },
        )
}

fn any_peer() -> impl Strategy<Value = PeerData> {
    (any_map(), 1..=u16::MAX, any_ip(), 1..=u8::MAX, 1..=u16::MAX).prop_map(
        |(mut map, remote_peer_port, remote_peer_address, protocol, internal_port)| {
            map.protocol = Protocol(protocol);
            map.internal_port = internal_port;
            PeerData {
                map,
                remote_peer_port,
                remote_peer_address,
            }
        },
    )
}

fn any_data() -> impl Strategy<Value = OpcodeData> {
    prop_oneof![
        Just(OpcodeData::Announce),
        any_map().prop_map(OpcodeData::Map),
        any_peer().prop_map(OpcodeData::Peer),
        (any::<u32>(), any::<u32>()).prop_map(|(session_id, sequence_number)| {
            OpcodeData::Authentication(AuthData {
                session_id,
                sequence_number,
            })
        }),
    ]
}

fn any_filter() -> impl Strategy<Value = Filter> {
    (any_ip(), any::<u16>(), 0u8..=128).prop_map(|(remote_peer_address, port, len)| {
        let prefix_length = match remote_peer_address {
            IpAddr::V4(_) if len != 0 => 96 + len % 33,
            _ => len,
        };
        Filter {
            prefix_length,
            remote_peer_port: port,
            remote_peer_address,
        }
    })
}

/// Raw material for options; turned into a valid set for a message by [`valid_options`].
#[derive(Debug, Clone)]
enum Raw {
    ThirdParty(IpAddr),
    PreferFailure,
    Filter(Filter),
    ThirdPartyId(Vec<u8>),
    Description(Vec<u8>),
    PortSet(u16, bool),
    Unknown(u8, Vec<u8>),
}

fn any_raw() -> impl Strategy<Value = Raw> {
    prop_oneof![
        any_ip().prop_map(Raw::ThirdParty),
        Just(Raw::PreferFailure),
        any_filter().prop_map(Raw::Filter),
        vec(any::<u8>(), 0..40).prop_map(Raw::ThirdPartyId),
        vec(any::<u8>(), 0..40).prop_map(Raw::Description),
        (1..=u16::MAX, any::<bool>()).prop_map(|(n, p)| Raw::PortSet(n, p)),
        // Codes this codec does not implement (authentication options, private use, …).
        (
            prop_oneof![4u8..=12, 14u8..=127, 131u8..=255, Just(129u8)],
            vec(any::<u8>(), 0..24)
        )
            .prop_map(|(c, d)| Raw::Unknown(c, d)),
    ]
}

/// Keeps the options a request with this data may carry (each rule of option.rs), so the
/// round trip is of valid messages.
fn valid_options<'a>(
    raws: &'a [Raw],
    data: &OpcodeData,
    lifetime: u32,
    client_ip: IpAddr,
) -> Vec<PcpOption<'a>> {
    let opcode = data.opcode();
    let map = data.map_fields();
    let mut out: Vec<PcpOption<'a>> = Vec::new();
    for raw in raws {
        let option = match raw {
            Raw::ThirdParty(a) if map.is_some() && *a != client_ip => PcpOption::ThirdParty(*a),
            Raw::PreferFailure
                if opcode == Opcode::Map
                    && lifetime != 0
                    && map.is_some_and(|m| m.external_port != 0)
                    && !out.iter().any(|o| matches!(o, PcpOption::PortSet(_))) =>
            {
                PcpOption::PreferFailure
            }
            Raw::Filter(f) if opcode == Opcode::Map && lifetime != 0 => PcpOption::Filter(*f),
            Raw::ThirdPartyId(id) if map.is_some() => PcpOption::ThirdPartyId(id),
            Raw::Description(d) if map.is_some() => PcpOption::Description(Description(d)),
            Raw::PortSet(size, parity)
                if opcode == Opcode::Map
                    && !out.iter().any(|o| matches!(o, PcpOption::PreferFailure)) =>
            {
                let first_internal_port = map.map_or(0, |m| m.internal_port);
                PcpOption::PortSet(PortSet {
                    size: *size,
                    first_internal_port,
                    parity: *parity,
                })
            }
            Raw::Unknown(code, data) => PcpOption::Unknown(UnknownOption {
                code: OptionCode(*code),
                data,
            }),
            _ => continue,
        };
        let single = !matches!(option, PcpOption::Filter(_) | PcpOption::Unknown(_));
        if single && out.iter().any(|o| o.code() == option.code()) {
            continue;
        }
        out.push(option);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_round_trips(
        data in any_data(),
        lifetime in any::<u32>(),
        client_ip in any_ip(),
        raws in vec(any_raw(), 0..6),
    ) {
        let options = valid_options(&raws, &data, lifetime, client_ip);
        let repr = RequestRepr { lifetime, client_ip, data, options: Options::List(&options) };
        let mut buf = [0u8; 1100];
        let len = repr.emit(&mut buf).expect("fits");
        prop_assert_eq!(len, repr.buffer_len());
        let parsed = RequestRepr::parse(&buf[..len]).expect("valid request parses");
        prop_assert_eq!(parsed, repr);
        // Emitting the parsed form gives the same bytes.
        let mut again = [0u8; 1100];
        prop_assert_eq!(parsed.emit(&mut again), Ok(len));
        prop_assert_eq!(&again[..len], &buf[..len]);
    }

    #[test]
    fn response_round_trips(
        data in any_data(),
        result in any::<u8>(),
        lifetime in any::<u32>(),
        epoch in any::<u32>(),
        raws in vec(any_raw(), 0..6),
    ) {
        // Responses carry the options a request could carry (success echoes them).
        let client = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
        let options = valid_options(&raws, &data, 1, client);
        let repr = ResponseRepr {
            result: ResultCode::from(result),
            lifetime,
            epoch,
            data,
            options: Options::List(&options),
        };
        let mut buf = [0u8; 1100];
        let len = repr.emit(&mut buf).expect("fits");
        let parsed = ResponseRepr::parse(&buf[..len]).expect("valid response parses");
        prop_assert_eq!(parsed, repr);
        prop_assert!(buf[12..24].iter().all(|b| *b == 0));
    }

    #[test]
    fn parse_never_panics(bytes in vec(any::<u8>(), 0..1200)) {
        let _ = RequestRepr::parse(&bytes);
        let _ = ResponseRepr::parse(&bytes);
        let _ = peek_response(&bytes);
        if let Ok(r) = RequestRepr::parse(&bytes) {
            // Anything that parses re-emits to the same bytes, except the ignored reserved
            // fields and padding; and it parses again to the same value.
            let mut buf = [0u8; 1100];
            let len = r.emit(&mut buf).expect("fits");
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!(RequestRepr::parse(&buf[..len]), Ok(r));
        }
    }

    #[test]
    fn parse_never_panics_on_valid_prefixes(
        data in any_data(),
        tail in vec(any::<u8>(), 0..64),
        bit in 0usize..1100,
    ) {
        // Start from a valid header so the option parser is reached, then corrupt.
        let repr = RequestRepr {
            lifetime: 60,
            client_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
            data,
            options: Options::EMPTY,
        };
        let mut buf = [0u8; 1100];
        let len = repr.emit(&mut buf).expect("fits");
        let end = (len + tail.len()).min(1100);
        buf[len..end].copy_from_slice(&tail[..end - len]);
        buf[bit % end] ^= 0x40;
        let _ = RequestRepr::parse(&buf[..end]);
        let _ = ResponseRepr::parse(&buf[..end]);
    }

    #[test]
    fn error_response_is_well_formed(
        bytes in vec(any::<u8>(), 0..1200),
        result in any::<u8>(),
        parsed in any::<bool>(),
    ) {
        let mut out = [0u8; 1100];
        let e = ErrorResponse { result: ResultCode::from(result), lifetime: 30, epoch: 9, request_parsed: parsed };
        let len = emit_error_response(&bytes, &e, &mut out).expect("1100 bytes is enough");
        prop_assert!((24..=1100).contains(&len) && len % 4 == 0);
        prop_assert_eq!(out[0], 2);
        prop_assert!(out[1] & 0x80 != 0);
        prop_assert_eq!(out[3], result);
        let copied = bytes.len().min(1100);
        prop_assert_eq!(&out[24.min(copied)..copied], &bytes[24.min(copied)..copied]);
        prop_assert!(out[copied.max(24)..len].iter().all(|b| *b == 0));
    }
}
