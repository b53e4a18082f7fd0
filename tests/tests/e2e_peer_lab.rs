//! PCP PEER mode end to end (issue #12, end-to-end suite; RFC 6887 §12, design.md §1): `pcpc
//! peer` on the home router asks cgn-sim (TUN dataplane) for one outbound flow; the CGN's
//! table shows it as one 5-tuple `PEER` entry; the remote peer's replies come back through
//! the PEER's external endpoint, while unsolicited inbound from any other Internet source
//! port is refused at the CGN. PEER mappings follow the NAT's filtering for implicit
//! mappings (RFC 6887 §12.3): the CGN runs with address-and-port-dependent filtering, as a
//! carrier whose PEER entries "Internet hosts cannot open connections through" does.
//! Needs root (SKIPPED otherwise), nft and python3.

use std::net::SocketAddrV4;

use nat444_tests::bins::workspace_bin;
use nat444_tests::e2e::{ECHO_APP, Nat444, TALK, out, table_lines, wait};
use nat444_tests::lab::Node;
use nat444_tests::require_privileges;

/// The app on the router (its WAN address is what the CGN sees as internal).
const APP_PORT: u16 = 7000;
/// The remote peer, on the Internet host.
const PEER: &str = "203.0.113.50:9000";
/// Other source ports of the Internet host: not the peer.
const STRANGERS: [u16; 2] = [9001, 40000];

fn metric(n: &Nat444, name: &str) -> u64 {
    n.cgn_ctl(&["stats"])
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// RFC 6887 §12.1, §12.3; design.md §1 (PEER → one 5-tuple entry, Internet hosts cannot open
// connections through it).
#[test]
fn peer_flow_is_one_5_tuple_entry_its_peer_answers_and_strangers_are_refused() {
    require_privileges!();
    let n = Nat444::start_with(false, &["--filtering", "apdf"]);
    let pcpc = workspace_bin("pcp-client", "pcpc");
    let granted = out(
        &n.lab,
        Node::Cpe,
        &[
            &pcpc.to_string_lossy(),
            "--server",
            "100.64.0.1",
            "peer",
            "--protocol",
            "udp",
            "--internal-port",
            &APP_PORT.to_string(),
            "--remote",
            PEER,
            "--lifetime",
            "600",
        ],
        20,
    );
    // "PEER UDP internal port 7000 -> 198.51.100.3:2048 lifetime 600 s epoch … nonce 0x…"
    let external: SocketAddrV4 = granted
        .split_once("-> ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("pcpc peer: {granted}\n{}", n.logs()));
    let nonce = granted
        .split("nonce ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("nonce printed");

    // The carrier table: exactly one PEER line, internal[external] -> remote peer, with the
    // nonce, and no MAP IN (nothing admits anyone).
    let table = n.cgn_ctl(&["mappings"]);
    let peer_lines = table_lines(&table, "PEER", "UDP", "[");
    assert_eq!(peer_lines.len(), 1, "{table}");
    assert!(
        peer_lines[0].contains(&format!(
            "Vpn: public 100.64.0.2:{APP_PORT}[{external}] -> {PEER} TTL: 600, "
        )),
        "{table}"
    );
    assert!(
        peer_lines[0].ends_with(&format!("Mapping Nonce: {nonce}")),
        "{table}"
    );
    assert!(!table.contains("Type: MAP IN"), "{table}");

    // The app listens on its port before it has sent anything: the peer gets in unprompted
    // (the PEER entry alone admits it), the Internet host from any other source port does not,
    // and the CGN says why.
    let app = n
        .lab
        .spawn(
            Node::Cpe,
            &[
                "python3",
                "-c",
                ECHO_APP,
                "udp",
                &APP_PORT.to_string(),
                "30",
            ],
        )
        .expect("app");
    assert!(wait(5, || app.log().contains("READY")));
    let talk_to_app = |from_port: u16, msg: &str, tries: &str| {
        out(
            &n.lab,
            Node::Inet,
            &[
                "python3",
                "-c",
                TALK,
                "udp",
                &external.ip().to_string(),
                &external.port().to_string(),
                msg,
                &from_port.to_string(),
                tries,
            ],
            15,
        )
    };
    let filtered = "cgn_dataplane_drops_total{reason=\"filtered\"}";
    let before = metric(&n, filtered);
    for port in STRANGERS {
        let refused = talk_to_app(port, &format!("unsolicited from {port}"), "2");
        assert!(refused.starts_with("NOREPLY"), "{refused}");
    }
    assert!(
        !app.log().contains("unsolicited"),
        "no stranger reached the app: {}",
        app.log()
    );
    assert!(
        metric(&n, filtered) >= before + 4,
        "the CGN refused them (filtered): {}",
        n.cgn_ctl(&["stats"])
    );
    let answer = talk_to_app(9000, "hello from the peer", "3");
    assert_eq!(
        answer.trim(),
        format!("REPLY {external} echo hello from the peer"),
        "{}",
        app.log()
    );
    assert!(
        app.log()
            .contains(&format!("GOT {PEER} hello from the peer"))
    );
    drop(app);

    // The app talks to its peer from the PEER's internal port: the peer sees the PEER's
    // external endpoint and its reply comes back; strangers stay out while the flow runs.
    let peer_app = n
        .lab
        .spawn(
            Node::Inet,
            &["python3", "-c", ECHO_APP, "udp", "9000", "20"],
        )
        .expect("peer app");
    assert!(wait(5, || peer_app.log().contains("READY")));
    let reply = out(
        &n.lab,
        Node::Cpe,
        &[
            "python3",
            "-c",
            TALK,
            "udp",
            "203.0.113.50",
            "9000",
            "hello peer",
            &APP_PORT.to_string(),
        ],
        15,
    );
    assert_eq!(
        reply.trim(),
        format!("REPLY {PEER} echo hello peer"),
        "{}",
        n.logs()
    );
    assert!(
        peer_app
            .log()
            .contains(&format!("GOT {external} hello peer")),
        "the flow uses the PEER's external endpoint: {}",
        peer_app.log()
    );

    let stranger = talk_to_app(9002, "unsolicited during the flow", "2");
    assert!(stranger.starts_with("NOREPLY"), "{stranger}");
}
