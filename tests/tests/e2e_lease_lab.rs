//! Lifetimes end to end (issue #12, end-to-end suite): upnp-iwf (PCP upstream, nftables NAT1)
//! keeps a UPnP mapping alive at a CGN that grants only 6 s PCP lifetimes, renewal after
//! renewal, with traffic through both NATs checked between renewals; and when the UPnP lease
//! ends the mapping goes from both NATs (the CPE's nft table and the CGN's table) and inbound
//! stops. The CGN (cgn-sim, TUN dataplane) filters implicit bindings address-and-port
//! dependently, so only a live MAP lets in a source port that has not been answered before.
//! Needs root (SKIPPED otherwise), nft, upnpc and python3.

use std::net::SocketAddrV4;

use nat444_tests::e2e::{
    ECHO_APP, Nat444, TALK, out, table_lines, upnpc_add, upnpc_external, wait,
};
use nat444_tests::lab::{LabChild, Node};
use nat444_tests::require_privileges;

/// The PCP lifetime the CGN grants (its maximum): renewals come every 4 s (RFC 6887 §11.2.1:
/// at ½–⅝ of the lifetime, never less than 4 s apart).
const LIFETIME: &str = "6";
/// Renewal cycles watched (≈ 4 s each: 28 s, more than four lifetimes).
const CYCLES: u64 = 7;

fn metric(n: &Nat444, name: &str) -> u64 {
    n.cgn_ctl(&["stats"])
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The `Mapping Nonce: 0x…` of a table line.
fn nonce(line: &str) -> &str {
    line.split("Mapping Nonce: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("")
}

fn app(n: &Nat444, proto: &str, secs: &str) -> LabChild {
    let app = n
        .lab
        .spawn(Node::Lan, &["python3", "-c", ECHO_APP, proto, "5000", secs])
        .expect("app");
    assert!(wait(5, || app.log().contains("READY")), "{}", app.log());
    app
}

/// The Internet host sends `msg` to `external` from source port `from` (0: any), `tries`
/// times at most; the `REPLY …`/`NOREPLY …` line.
fn talk(
    n: &Nat444,
    proto: &str,
    external: SocketAddrV4,
    msg: &str,
    from: u16,
    tries: u8,
) -> String {
    out(
        &n.lab,
        Node::Inet,
        &[
            "python3",
            "-c",
            TALK,
            proto,
            &external.ip().to_string(),
            &external.port().to_string(),
            msg,
            &from.to_string(),
            &tries.to_string(),
        ],
        15,
    )
    .trim()
    .to_string()
}

// RFC 6887 §11.2.1 (renew before expiry), RFC 6970 §5.9 (the IWF renews for the whole UPnP
// lease): with 6 s lifetimes the UDP and TCP mappings are renewed every cycle with the same
// nonce and external port, and after every renewal a new Internet source reaches the app over
// both protocols through both NATs. Without renewals the MAPs would lapse after 6 s and the
// APDF CGN would refuse the new sources.
#[test]
fn short_pcp_lifetimes_are_renewed_cycle_after_cycle_with_traffic_between() {
    require_privileges!();
    let n = Nat444::start_with(
        false,
        &[
            "--filtering",
            "apdf",
            "--min-lifetime",
            "1",
            "--max-lifetime",
            LIFETIME,
        ],
    );
    let mut externals = Vec::new();
    for proto in ["UDP", "TCP"] {
        let add = upnpc_add(&n.lab, Node::Lan, 5000, proto, 3600);
        externals
            .push(upnpc_external(&add, proto).unwrap_or_else(|| panic!("{add}\n{}", n.logs())));
    }
    let table = n.cgn_ctl(&["mappings"]);
    let first: Vec<String> = ["UDP", "TCP"]
        .iter()
        .map(|p| {
            let lines = table_lines(&table, "MAP IN", p, "[100.64.0.2:5000]");
            assert_eq!(lines.len(), 1, "{table}");
            assert!(
                lines[0].contains(&format!("TTL: {LIFETIME}, ")),
                "the CGN capped the lifetime: {table}"
            );
            nonce(lines[0]).to_string()
        })
        .collect();
    let udp_app = app(&n, "udp", "60");
    let tcp_app = app(&n, "tcp", "60");
    let refreshed = "cgn_mappings_refreshed_total";
    let base = metric(&n, refreshed);
    for cycle in 1..=CYCLES {
        // Both mappings renewed once more (the CGN counts each refresh).
        assert!(
            wait(8, || metric(&n, refreshed) >= base + 2 * cycle),
            "cycle {cycle}: no renewal within 8 s (lifetime {LIFETIME} s): {}\n{}",
            n.cgn_ctl(&["stats"]),
            n.logs()
        );
        let table = n.cgn_ctl(&["mappings"]);
        for (i, p) in ["UDP", "TCP"].iter().enumerate() {
            let lines = table_lines(&table, "MAP IN", p, "[100.64.0.2:5000]");
            assert_eq!(lines.len(), 1, "cycle {cycle}: {table}");
            assert!(
                lines[0].contains(&format!("ANY -> {}[", externals[i])),
                "same external endpoint: {table}"
            );
            assert_eq!(nonce(lines[0]), first[i], "same nonce: {table}");
        }
        // A fresh source port each cycle: only the MAP admits it.
        let from = 41000 + cycle as u16;
        let msg = format!("udp cycle {cycle}");
        let reply = talk(&n, "udp", externals[0], &msg, from, 2);
        assert_eq!(
            reply,
            format!("REPLY {} echo {msg}", externals[0]),
            "{}",
            n.logs()
        );
        assert!(
            udp_app
                .log()
                .contains(&format!("GOT 203.0.113.50:{from} {msg}"))
        );
        let msg = format!("tcp cycle {cycle}");
        let reply = talk(&n, "tcp", externals[1], &msg, from, 1);
        assert_eq!(
            reply,
            format!("REPLY {} echo {msg}", externals[1]),
            "{}",
            n.logs()
        );
        assert!(
            tcp_app
                .log()
                .contains(&format!("GOT 203.0.113.50:{from} {msg}"))
        );
    }
    assert_eq!(
        metric(&n, "cgn_mappings_expired_total"),
        0,
        "nothing lapsed: {}",
        n.cgn_ctl(&["stats"])
    );
    assert!(
        !n.iwf.log().contains("ServerStateLost"),
        "no recovery needed: {}",
        n.iwf.log()
    );
}

// RFC 6970 §5.9 (a lease end removes the mapping: PCP delete upstream, then the local NAT),
// nat1-nftables.md: a 5 s UPnP lease ends; within a few seconds the DNAT/SNAT pair is gone
// from the CPE's table ip upnp_iwf and the MAP IN / MAP OUT lines from the CGN's table —
// long before the CGN's own 120 s minimum lifetime would have ended them — and the Internet
// host no longer reaches the app, over UDP or TCP.
#[test]
fn upnp_lease_end_removes_the_mapping_on_both_nats_and_inbound_stops() {
    require_privileges!();
    let n = Nat444::start_with(false, &["--filtering", "apdf"]);
    let mut externals = Vec::new();
    for proto in ["UDP", "TCP"] {
        let add = upnpc_add(&n.lab, Node::Lan, 5000, proto, 5);
        assert!(add.contains("(duration=5)"), "{add}");
        externals
            .push(upnpc_external(&add, proto).unwrap_or_else(|| panic!("{add}\n{}", n.logs())));
    }
    let table = n.cgn_ctl(&["mappings"]);
    for p in ["UDP", "TCP"] {
        let lines = table_lines(&table, "MAP IN", p, "[100.64.0.2:5000]");
        assert_eq!(lines.len(), 1, "{table}");
        assert!(
            lines[0].contains("TTL: 120, "),
            "the CGN grants its minimum, 120 s: {table}"
        );
    }
    let nft = n.nft_table();
    for p in ["udp", "tcp"] {
        assert!(
            nft.contains(&format!("{p} dport 5000 dnat to 192.168.0.10:5000")),
            "{nft}"
        );
        assert!(
            nft.contains(&format!("{p} sport 5000 snat to 100.64.0.2:5000")),
            "{nft}"
        );
    }
    let udp_app = app(&n, "udp", "30");
    let tcp_app = app(&n, "tcp", "30");
    let reply = talk(&n, "udp", externals[0], "while leased", 42000, 2);
    assert_eq!(reply, format!("REPLY {} echo while leased", externals[0]));
    let reply = talk(&n, "tcp", externals[1], "while leased", 42000, 1);
    assert_eq!(reply, format!("REPLY {} echo while leased", externals[1]));

    let deleted = metric(&n, "cgn_mappings_deleted_total");
    // The lease ends 5 s after the add; give the IWF a few more.
    let gone = wait(12, || {
        let nft = n.nft_table();
        !nft.contains("dport 5000")
            && !nft.contains("sport 5000")
            && !n.cgn_ctl(&["mappings"]).contains("Type: MAP")
    });
    let (nft, table) = (n.nft_table(), n.cgn_ctl(&["mappings"]));
    assert!(gone, "nft:\n{nft}\ncgn:\n{table}\n{}", n.logs());
    assert!(!nft.contains("5000"), "NAT1 rules removed: {nft}");
    assert!(
        !table.contains("Type: MAP"),
        "PCP delete at the CGN: {table}"
    );
    // Deleted by the IWF's request (lifetime 0), not lapsed.
    assert!(
        metric(&n, "cgn_mappings_deleted_total") >= deleted + 2,
        "{}",
        n.cgn_ctl(&["stats"])
    );
    assert_eq!(metric(&n, "cgn_mappings_expired_total"), 0);
    assert!(n.iwf.log().contains("UPnP lease ended"), "{}", n.iwf.log());
    let listed = out(
        &n.lab,
        Node::Lan,
        &["upnpc", "-u", nat444_tests::e2e::IGD_URL, "-l"],
        20,
    );
    assert!(
        !listed.contains("192.168.0.10:5000"),
        "the IGD lists nothing: {listed}"
    );

    // Inbound stops: nothing reaches the app, and the CGN itself refuses it.
    let refused = |reason: &str| {
        metric(
            &n,
            &format!("cgn_dataplane_drops_total{{reason=\"{reason}\"}}"),
        )
    };
    let before = refused("filtered") + refused("no_mapping") + refused("unsolicited_syn");
    let reply = talk(&n, "udp", externals[0], "after the lease", 42001, 2);
    assert!(reply.starts_with("NOREPLY"), "{reply}");
    let reply = talk(&n, "tcp", externals[1], "after the lease", 42001, 1);
    assert!(reply.starts_with("NOREPLY"), "{reply}");
    assert!(
        !udp_app.log().contains("after the lease"),
        "{}",
        udp_app.log()
    );
    assert!(
        !tcp_app.log().contains("after the lease"),
        "{}",
        tcp_app.log()
    );
    let after = refused("filtered") + refused("no_mapping") + refused("unsolicited_syn");
    assert!(
        after >= before + 3,
        "dropped at the CGN: {}",
        n.cgn_ctl(&["stats"])
    );
}
