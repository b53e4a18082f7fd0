//! Unit tests of the state file format (fixed vectors, rejections, round trips) and expiry;
//! the directory's tests are in [`dir`]. RFC 6970 §5.3: mappings are persisted (SHOULD), and
//! the nonce with them (spec digest §4.7).

use std::time::UNIX_EPOCH;

use proptest::prelude::*;

use super::*;

mod dir;

/// A valid file exactly as [`render`] writes it: two mappings, sorted by key (port 5000 UDP
/// before port 6881 TCP), one of each lease kind and creation action.
pub(super) const VALID: &str = r#"{
  "version": 1,
  "mappings": [
    {
      "owner": "192.168.0.10",
      "front_end": "igd",
      "remote_host": null,
      "protocol": "UDP",
      "external_port": 5000,
      "internal_client": "192.168.0.10",
      "internal_port": 5000,
      "nat1_port": 40000,
      "external": "198.51.100.3:5000",
      "nonce": "0123456789abcdef00112233",
      "lease_end": 1767225600,
      "description": "game \"x\"",
      "created_by": "AddPortMapping",
      "enabled": true
    },
    {
      "owner": "192.168.0.11",
      "front_end": "igd",
      "remote_host": "203.0.113.50",
      "protocol": "TCP",
      "external_port": 6881,
      "internal_client": "192.168.0.12",
      "internal_port": 6881,
      "nat1_port": 0,
      "external": null,
      "nonce": "ffffffffffffffffffffffff",
      "lease_end": "permanent",
      "description": "",
      "created_by": "AddAnyPortMapping",
      "enabled": false
    }
  ]
}
"#;

pub(super) fn valid_mappings() -> Vec<StoredMapping> {
    vec![
        StoredMapping {
            owner: Ipv4Addr::new(192, 168, 0, 10),
            front_end: FrontEnd::Igd,
            remote_host: None,
            protocol: Protocol::Udp,
            external_port: 5000,
            internal_client: Ipv4Addr::new(192, 168, 0, 10),
            internal_port: 5000,
            nat1_port: 40000,
            external: Some(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 5000)),
            nonce: [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33,
            ],
            lease_end: LeaseEnd::At(UNIX_EPOCH + Duration::from_secs(1_767_225_600)),
            description: "game \"x\"".to_owned(),
            created_by: CreatedBy::AddPortMapping,
            enabled: true,
        },
        StoredMapping {
            owner: Ipv4Addr::new(192, 168, 0, 11),
            front_end: FrontEnd::Igd,
            remote_host: Some(Ipv4Addr::new(203, 0, 113, 50)),
            protocol: Protocol::Tcp,
            external_port: 6881,
            internal_client: Ipv4Addr::new(192, 168, 0, 12),
            internal_port: 6881,
            nat1_port: 0,
            external: None,
            nonce: [0xff; 12],
            lease_end: LeaseEnd::Permanent,
            description: String::new(),
            created_by: CreatedBy::AddAnyPortMapping,
            enabled: false,
        },
    ]
}

/// `VALID` with one substring replaced (which must occur exactly once).
fn edited(from: &str, to: &str) -> String {
    assert_eq!(VALID.matches(from).count(), 1, "{from:?} occurs once");
    VALID.replace(from, to)
}

/// The line (1-based) of `VALID` that contains `needle` first.
fn line_of(needle: &str) -> usize {
    VALID
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_default()
}

fn parse_error(text: &str) -> (usize, usize, String) {
    match parse(text.as_bytes()) {
        Err(StateError::Parse {
            path,
            line,
            column,
            reason,
        }) => {
            assert_eq!(path, Path::new(STATE_FILE));
            (line, column, reason)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

// ---- format: fixed vectors -------------------------------------------------------------

#[test]
fn valid_file_parses_to_its_mappings_and_renders_byte_for_byte() {
    assert_eq!(
        parse(VALID.as_bytes()).expect("valid file"),
        valid_mappings()
    );
    assert_eq!(String::from_utf8_lossy(&render(&valid_mappings())), VALID);
    // Rendering sorts by key whatever the input order.
    let mut reversed = valid_mappings();
    reversed.reverse();
    assert_eq!(String::from_utf8_lossy(&render(&reversed)), VALID);
}

#[test]
fn empty_mapping_list_round_trips() {
    let bytes = render(&[]);
    assert_eq!(bytes, b"{\n  \"version\": 1,\n  \"mappings\": []\n}\n");
    assert_eq!(parse(&bytes).expect("empty list"), Vec::new());
}

#[test]
fn bad_hex_nonce_is_rejected_with_its_line() {
    for bad in [
        "0123456789abcdef0011223g", // not hex
        "0123456789abcdef001122",   // 22 digits
        "0123456789abcdef0011223344",
        "0123456789abcdef0011223\u{e9}", // 24 bytes, not 24 digits
    ] {
        let text = edited("0123456789abcdef00112233", bad);
        let (line, _, reason) = parse_error(&text);
        assert_eq!(line, line_of("0123456789abcdef00112233"), "{bad}");
        assert!(reason.contains("24 hex digits"), "{reason}");
    }
    // Upper case is read (and written back in lower case).
    let upper = edited("0123456789abcdef00112233", "0123456789ABCDEF00112233");
    assert_eq!(
        parse(upper.as_bytes()).expect("upper case"),
        valid_mappings()
    );
}

#[test]
fn unknown_field_is_rejected_with_its_name_and_place() {
    let text = edited(
        "\"enabled\": false",
        "\"enabled\": false,\n      \"colour\": \"red\"",
    );
    let (line, column, reason) = parse_error(&text);
    assert_eq!((line, column), (line_of("\"enabled\": false") + 1, 14));
    assert!(reason.starts_with("unknown field `colour`"), "{reason}");
    // Also at the top level.
    let text = VALID.replacen("\"version\": 1,", "\"version\": 1, \"extra\": 0,", 1);
    assert!(parse_error(&text).2.starts_with("unknown field `extra`"));
}

#[test]
fn missing_or_repeated_field_is_rejected() {
    let text = edited("\"nonce\": \"ffffffffffffffffffffffff\",", "");
    assert!(parse_error(&text).2.starts_with("missing field `nonce`"));
    // `null` options are written out too: a missing one is not taken as "none".
    let text = edited("\"external\": null,", "");
    assert!(parse_error(&text).2.starts_with("missing field `external`"));
    let text = edited("\"remote_host\": null,", "");
    assert!(
        parse_error(&text)
            .2
            .starts_with("missing field `remote_host`")
    );
    let text = edited(
        "\"enabled\": false",
        "\"enabled\": false,\n      \"enabled\": true",
    );
    assert!(
        parse_error(&text)
            .2
            .starts_with("duplicate field `enabled`")
    );
}

#[test]
fn version_2_is_rejected_as_unsupported_even_with_new_fields() {
    let text = VALID.replacen("\"version\": 1", "\"version\": 2, \"future\": true", 1);
    assert!(matches!(
        parse(text.as_bytes()),
        Err(StateError::Version {
            found: 2,
            supported: 1
        })
    ));
    let e = parse(text.as_bytes()).expect_err("version 2");
    assert_eq!(
        e.to_string(),
        "mappings.json: format version 2 is not supported (this build reads version 1)"
    );
    assert!(
        parse_error(&VALID.replacen("\"version\": 1,", "", 1))
            .2
            .contains("`version`")
    );
}

#[test]
fn duplicate_key_is_rejected_with_its_index() {
    // Same remote host (wildcard), port and protocol as the first entry.
    let text = edited("\"remote_host\": \"203.0.113.50\"", "\"remote_host\": null")
        .replace("\"protocol\": \"TCP\"", "\"protocol\": \"UDP\"")
        .replace("\"external_port\": 6881", "\"external_port\": 5000");
    match parse(text.as_bytes()) {
        Err(StateError::Invalid { index: 1, reason }) => {
            assert_eq!(
                reason,
                "duplicate key: remote host *, external port 5000, UDP"
            );
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // Differing in any one of the three is two mappings.
    let other_protocol = edited("\"remote_host\": \"203.0.113.50\"", "\"remote_host\": null")
        .replace("\"external_port\": 6881", "\"external_port\": 5000");
    assert_eq!(
        parse(other_protocol.as_bytes()).expect("TCP and UDP").len(),
        2
    );
}

#[test]
fn port_0_is_rejected_where_not_allowed() {
    for (from, to, reason) in [
        (
            "\"external_port\": 6881",
            "\"external_port\": 0",
            "external_port is 0",
        ),
        (
            "\"internal_port\": 6881",
            "\"internal_port\": 0",
            "internal_port is 0",
        ),
        (
            "\"external\": \"198.51.100.3:5000\"",
            "\"external\": \"198.51.100.3:0\"",
            "external 198.51.100.3:0 has port 0",
        ),
    ] {
        match parse(edited(from, to).as_bytes()) {
            Err(StateError::Invalid { index, reason: r }) => {
                assert_eq!(r, reason);
                assert_eq!(index, usize::from(from.contains("6881")));
            }
            other => panic!("{to}: expected invalid, got {other:?}"),
        }
    }
    // NAT1 port 0 means "no local NAT" and is fine (the second entry has it).
    assert!(VALID.contains("\"nat1_port\": 0"));
    let out_of_range = edited("\"internal_port\": 6881", "\"internal_port\": 65536");
    assert_eq!(
        parse_error(&out_of_range).0,
        line_of("\"internal_port\": 6881")
    );
}

#[test]
fn field_values_of_the_wrong_spelling_are_rejected_with_their_line() {
    for (from, to, needle) in [
        (
            "\"protocol\": \"TCP\"",
            "\"protocol\": \"tcp\"",
            "\"TCP\" or \"UDP\"",
        ),
        (
            "\"created_by\": \"AddPortMapping\"",
            "\"created_by\": \"AddPinhole\"",
            "unknown variant `AddPinhole`",
        ),
        (
            "\"lease_end\": 1767225600",
            "\"lease_end\": -1",
            "unix seconds",
        ),
        (
            "\"lease_end\": 1767225600",
            "\"lease_end\": 1.5",
            "unix seconds",
        ),
        (
            "\"lease_end\": 1767225600",
            "\"lease_end\": \"forever\"",
            "unix seconds",
        ),
        (
            "\"lease_end\": 1767225600",
            "\"lease_end\": 18446744073709551615",
            "representable time",
        ),
        (
            "\"created_by\": \"AddAnyPortMapping\"",
            "\"created_by\": \"Add\"",
            "unknown variant `Add`",
        ),
        (
            "\"owner\": \"192.168.0.10\"",
            "\"owner\": \"192.168.0.010\"",
            "invalid IPv4",
        ),
    ] {
        let (line, _, reason) = parse_error(&edited(from, to));
        assert_eq!(line, line_of(from), "{to}");
        assert!(reason.contains(needle), "{to}: {reason}");
    }
}

#[test]
fn description_longer_than_1024_bytes_is_rejected() {
    let mut m = valid_mappings();
    m[1].description = "é".repeat(MAX_DESCRIPTION / 2);
    validate(&m).expect("exactly 1024 bytes");
    m[1].description.push('x');
    let e = parse(&render(&m)).expect_err("1025 bytes");
    assert!(matches!(e, StateError::Invalid { index: 1, .. }), "{e}");
}

#[test]
fn more_than_65536_mappings_are_rejected() {
    let template = &valid_mappings()[0];
    let many: Vec<StoredMapping> = (0..=MAX_MAPPINGS)
        .map(|i| StoredMapping {
            external_port: u16::try_from(i % 65_535 + 1).unwrap_or(1),
            remote_host: Some(Ipv4Addr::from(u32::try_from(i / 65_535).unwrap_or(0))),
            ..template.clone()
        })
        .collect();
    validate(&many[..MAX_MAPPINGS]).expect("65536 distinct mappings");
    assert!(matches!(
        validate(&many),
        Err(StateError::Invalid {
            index: MAX_MAPPINGS,
            ..
        })
    ));
}

#[test]
fn trailing_garbage_is_rejected() {
    let (line, column, reason) = parse_error(&format!("{VALID}x"));
    assert_eq!((line, column), (VALID.lines().count() + 1, 1));
    assert_eq!(reason, "trailing characters");
    assert!(parse_error(&format!("{VALID}{{}}")).2.contains("trailing"));
    // Trailing white space is not garbage.
    assert!(parse(format!("{VALID}\n  \n").as_bytes()).is_ok());
}

#[test]
fn truncated_at_every_byte_offset_is_an_error_never_a_panic() {
    for len in 0..VALID.len() {
        match parse(&VALID.as_bytes()[..len]) {
            Err(StateError::Parse { reason, .. }) => {
                assert!(reason.contains("EOF"), "at {len}: {reason}")
            }
            // Only the final newline may go: that is still the whole object.
            Ok(m) => assert_eq!((len, m), (VALID.len() - 1, valid_mappings())),
            Err(e) => panic!("at {len}: {e}"),
        }
    }
}

#[test]
fn non_utf8_is_rejected_with_its_position() {
    let mut bytes = VALID.as_bytes().to_vec();
    let at = VALID.find("game").unwrap_or_default();
    bytes[at] = 0xff;
    match parse(&bytes) {
        Err(StateError::Parse {
            line,
            column,
            reason,
            ..
        }) => {
            assert_eq!(line, line_of("\"game"));
            assert_eq!(column, 23);
            assert_eq!(reason, format!("not UTF-8 (byte offset {at})"));
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn error_messages_name_the_file_and_the_place() {
    let e = parse(b"{\"version\": 1, \"mappings\": [1]}").expect_err("not an object");
    assert_eq!(
        e.to_string(),
        "mappings.json:1:29: invalid type: integer `1`, expected struct StoredMapping"
    );
    let e = parse(edited("\"internal_port\": 6881", "\"internal_port\": 0").as_bytes())
        .expect_err("port 0");
    assert_eq!(
        e.to_string(),
        "mappings.json: mappings[1]: internal_port is 0"
    );
}

// ---- format: properties ----------------------------------------------------------------

fn arb_mapping() -> impl Strategy<Value = StoredMapping> {
    let addr = any::<u32>().prop_map(Ipv4Addr::from);
    let port = 1..=u16::MAX;
    (
        (
            addr.clone(),
            proptest::option::of(addr.clone()),
            any::<bool>(),
            port.clone(),
        ),
        (addr.clone(), port.clone(), any::<u16>()),
        proptest::option::of((addr, port).prop_map(|(a, p)| SocketAddrV4::new(a, p))),
        (
            any::<[u8; 12]>(),
            proptest::option::of(0..=u64::from(u32::MAX) * 4),
        ),
        (
            proptest::collection::vec(any::<char>(), 0..40),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (owner, remote_host, tcp, external_port),
                (internal_client, internal_port, nat1_port),
                external,
                (nonce, lease),
                (description, any_port, enabled),
            )| StoredMapping {
                owner,
                front_end: FrontEnd::Igd,
                remote_host,
                protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
                external_port,
                internal_client,
                internal_port,
                nat1_port,
                external,
                nonce,
                lease_end: lease.map_or(LeaseEnd::Permanent, |s| {
                    LeaseEnd::At(UNIX_EPOCH + Duration::from_secs(s))
                }),
                description: description.into_iter().collect(),
                created_by: if any_port {
                    CreatedBy::AddAnyPortMapping
                } else {
                    CreatedBy::AddPortMapping
                },
                enabled,
            },
        )
}

/// Any valid list: distinct keys (a few forced collisions removed), any order.
fn arb_valid_mappings() -> impl Strategy<Value = Vec<StoredMapping>> {
    proptest::collection::vec(arb_mapping(), 0..12).prop_map(|v| {
        let mut seen = HashSet::new();
        v.into_iter().filter(|m| seen.insert(m.key())).collect()
    })
}

proptest! {
    #[test]
    fn render_then_parse_is_identity(mappings in arb_valid_mappings()) {
        let bytes = render(&mappings);
        let back = parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected = mappings.clone();
        expected.sort_by_key(StoredMapping::key);
        prop_assert_eq!(&back, &expected);
        // Stable: the same set renders to the same bytes, whatever the order.
        let mut reversed = mappings;
        reversed.reverse();
        prop_assert_eq!(render(&reversed), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = parse(&bytes) {
            prop_assert_eq!(parse(&render(&m)).ok(), Some(m));
        }
    }

    #[test]
    fn mutated_valid_file_never_panics(at in 0..VALID.len(), byte in any::<u8>()) {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes[at] = byte;
        if let Ok(m) = parse(&bytes) {
            prop_assert_eq!(parse(&render(&m)).ok(), Some(m));
        }
    }
}

// ---- expiry --------------------------------------------------------------------------

#[test]
fn split_expired_keeps_permanent_and_future_leases() {
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let mut all = valid_mappings(); // [0] ends exactly at `now`, [1] is permanent
    all.push(StoredMapping {
        external_port: 7000,
        lease_end: LeaseEnd::At(now + Duration::from_secs(1)),
        ..all[0].clone()
    });
    all.push(StoredMapping {
        external_port: 7001,
        lease_end: LeaseEnd::At(now - Duration::from_secs(3600)),
        ..all[0].clone()
    });
    let (kept, dropped) = split_expired(all, now);
    let ports = |v: &[StoredMapping]| v.iter().map(|m| m.external_port).collect::<Vec<_>>();
    assert_eq!(ports(&kept), [6881, 7000]);
    assert_eq!(ports(&dropped), [5000, 7001]);
}

#[test]
fn lease_end_from_secs_zero_is_permanent() {
    let now = UNIX_EPOCH + Duration::from_secs(1000);
    assert_eq!(LeaseEnd::from_secs(now, 0), LeaseEnd::Permanent);
    assert_eq!(
        LeaseEnd::from_secs(now, 3600),
        LeaseEnd::At(now + Duration::from_secs(3600))
    );
    assert!(!LeaseEnd::Permanent.is_expired(now));
}
