//! upnp-iwf with its defaults (PCP upstream towards the WAN default gateway, nftables NAT1) on
//! the CPE of the NAT444 lab, cgn-sim with its TUN dataplane as the CGN: a real UPnP client on
//! the LAN maps a port and the Internet host reaches the LAN app through both NATs (RFC 6970).
//! Needs root (SKIPPED otherwise), nft, upnpc and python3.

use std::time::Duration;

use nat444_tests::e2e::{Nat444, PY, ROUTER_FW, out, spawn_iwf, wait};
use nat444_tests::lab::{LabBuilder, Node};
use nat444_tests::require_privileges;

/// LAN app: echoes every UDP datagram (or the first TCP message) back from its own port and
/// prints `GOT <peer> <data>`; at most 20 s.
const APP: &str = r#"
import socket, sys, time
proto, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.settimeout(20)
print("READY", flush=True)
end = time.time() + 20
if proto == "udp":
    while time.time() < end:
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            break
        print("GOT %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
        s.sendto(b"echo " + data, peer)
else:
    s.listen(4)
    while time.time() < end:
        try:
            c, peer = s.accept()
        except socket.timeout:
            break
        c.settimeout(5)
        data = c.recv(2048)
        print("GOT %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
        c.sendall(b"echo " + data)
        c.close()
"#;

/// Internet peer: sends one message and prints `REPLY <from> <data>` or `NOREPLY`.
const PEER: &str = r#"
import socket, sys
proto, host, port, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
try:
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(msg, (host, port))
        data, peer = s.recvfrom(2048)
    else:
        s = socket.create_connection((host, port), timeout=3)
        peer = s.getpeername()
        s.sendall(msg)
        s.settimeout(3)
        data = s.recv(2048)
    print("REPLY %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
except Exception as e:
    print("NOREPLY %s" % e, flush=True)
"#;

const URL: &str = "http://192.168.0.1:5000/rootDesc.xml";
/// python3-miniupnpc's GetSpecificPortMappingEntry: prints the entry, or None for 714.
const GET_SPECIFIC: &str = "import sys, miniupnpc\nu = miniupnpc.UPnP()\nu.selectigd(sys.argv[1])\nprint(u.getspecificportmapping(int(sys.argv[2]), sys.argv[3]))";
/// Prints the body of a GET.
const FETCH: &str = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())";

/// `MAP IN` lines of the CGN's table for subscriber 100.64.0.2, as `(protocol, external)`.
fn map_in_lines(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.contains("Type: MAP IN") && l.contains("[100.64.0.2:"))
        // A probe mapping (RFC 6970 §4.2, UDP 9) lives only until its answer.
        .filter(|l| !l.contains("[100.64.0.2:9]"))
        .map(|l| {
            let ext = l
                .split("ANY -> ")
                .nth(1)
                .and_then(|r| r.split('[').next())
                .unwrap_or("?");
            let proto = if l.contains("Protocol: TCP") {
                "TCP"
            } else {
                "UDP"
            };
            format!("{proto} {ext}")
        })
        .collect()
}
/// What this file's tests do with the lab, beyond [`Nat444`].
trait LabTour {
    fn map(&self, port: u16, proto: &str) -> String;
    fn exchange(&self, proto: &str, port: u16, external: &str, msg: &str) -> (String, String);
}

impl LabTour for Nat444 {
    fn map(&self, port: u16, proto: &str) -> String {
        let p = port.to_string();
        out(
            &self.lab,
            Node::Lan,
            &[
                "upnpc",
                "-u",
                URL,
                "-e",
                "p2p",
                "-a",
                "192.168.0.10",
                &p,
                &p,
                proto,
                "0",
            ],
            30,
        )
    }
    /// The LAN app on `port`, and the Internet peer sending `msg` to `external`.
    fn exchange(&self, proto: &str, port: u16, external: &str, msg: &str) -> (String, String) {
        let app = self
            .lab
            .spawn(Node::Lan, &["python3", "-c", APP, proto, &port.to_string()])
            .expect("app");
        assert!(wait(5, || app.log().contains("READY")), "{}", app.log());
        let (host, ext_port) = external.split_once(':').expect("addr:port");
        let reply = out(
            &self.lab,
            Node::Inet,
            &["python3", "-c", PEER, proto, host, ext_port, msg],
            10,
        );
        wait(2, || app.log().contains("GOT"));
        let got = app.log();
        let _ = app.kill();
        (got, reply)
    }
}

fn external_of(upnpc: &str, proto: &str) -> Option<String> {
    // "external 198.51.100.1:5000 UDP is redirected to internal 192.168.0.10:5000"
    upnpc.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("external ")?;
        let (addr, tail) = rest.split_once(' ')?;
        tail.starts_with(proto).then(|| addr.to_string())
    })
}

/// Lines of the CGN's table for the CPE's NAT1 port `port` of `proto` (`MAP IN` and
/// `MAP OUT`).
fn cgn_lines_of(table: &str, proto: &str, port: u16) -> usize {
    table
        .lines()
        .filter(|l| l.contains(&format!("Protocol: {proto}")))
        .filter(|l| {
            l.contains(&format!("[100.64.0.2:{port}]"))
                || l.contains(&format!(" 100.64.0.2:{port}["))
        })
        .count()
}

// RFC 6970 §5.8: upnpc -N (DeletePortMappingRange, IGD:2) over six UDP mappings deletes each
// upstream (one MAP delete with its nonce each) and from NAT1, all at once; a UDP mapping
// outside the range and a TCP one at a port inside it stay on both NATs.
#[test]
fn delete_range_removes_every_mapping_in_it_on_both_nats() {
    require_privileges!();
    let n = Nat444::start();
    let range = 4000..4006u16;
    for p in range.clone() {
        let add = n.map(p, "UDP");
        assert!(external_of(&add, "UDP").is_some(), "{add}\n{}", n.logs());
    }
    for (p, proto) in [(4100, "UDP"), (4002, "TCP")] {
        let add = n.map(p, proto);
        assert!(external_of(&add, proto).is_some(), "{add}\n{}", n.logs());
    }
    let table = n.cgn_ctl(&["mappings"]);
    for p in range.clone() {
        assert_eq!(
            cgn_lines_of(&table, "UDP", p),
            2,
            "MAP IN + OUT of {p}: {table}"
        );
    }
    let del = out(
        &n.lab,
        Node::Lan,
        &["upnpc", "-u", URL, "-N", "4000", "4005", "UDP"],
        30,
    );
    assert!(
        del.contains("UPNP_DeletePortMappingRange() returned : 0"),
        "{del}\n{}",
        n.logs()
    );
    let gone = wait(5, || {
        let t = n.cgn_ctl(&["mappings"]);
        range.clone().all(|p| cgn_lines_of(&t, "UDP", p) == 0)
    });
    let table = n.cgn_ctl(&["mappings"]);
    assert!(gone, "every MAP of the range deleted at the CGN: {table}");
    assert_eq!(cgn_lines_of(&table, "UDP", 4100), 2, "{table}");
    assert_eq!(cgn_lines_of(&table, "TCP", 4002), 2, "{table}");
    let nft = n.nft_table();
    for p in range {
        assert!(
            !nft.contains(&format!("udp dport {p} ")),
            "NAT1 rule of {p} removed: {nft}"
        );
    }
    assert!(nft.contains("dnat to 192.168.0.10:4100"), "{nft}");
    assert!(nft.contains("dnat to 192.168.0.10:4002"), "{nft}");
    let log = n.iwf.log();
    assert!(
        log.contains("igd{action=DeletePortMappingRange cp=192.168.0.10}"),
        "the range's deletes are logged under its span: {log}"
    );
}

// RFC 6970 §5.5, §5.6.2, §5.8; nat1-nftables.md: upnpc -a from the LAN creates a mapping that
// the Internet host reaches over UDP and TCP through both NATs; the LAN app's reply comes back
// from the same external endpoint; upnpc -d removes it on the CPE (nft) and on the CGN, and
// inbound then stops.
#[test]
fn upnpc_mapping_is_reachable_through_both_nats_and_removed_on_both() {
    require_privileges!();
    let n = Nat444::start();
    let lab = &n.lab;
    let mut externals = Vec::new();
    for proto in ["UDP", "TCP"] {
        let add = out(
            lab,
            Node::Lan,
            &[
                "upnpc",
                "-i",
                "-e",
                "p2p app",
                "-a",
                "192.168.0.10",
                "5000",
                "5000",
                proto,
                "3600",
            ],
            30,
        );
        let external = external_of(&add, proto).unwrap_or_else(|| {
            panic!(
                "{add}\n--- iwf:\n{}\n--- cgn:\n{}",
                n.iwf.log(),
                n.cgn.log()
            )
        });
        // upnpc asks GetExternalIPAddress before adding: with no mapping yet the IWF learns
        // it with a short probe mapping (RFC 6970 §4.2); the port is the one asked for
        // (PREFER_FAILURE).
        assert!(external.starts_with("198.51.100."), "{add}");
        assert!(
            external.ends_with(":5000"),
            "PREFER_FAILURE kept the port: {add}"
        );
    }
    // Now the IGD knows the external address from the PCP answers.
    let status = out(lab, Node::Lan, &["upnpc", "-i", "-s"], 30);
    let ip = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExternalIPAddress = "))
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with("198.51.100."), "{status}");
    for _ in 0..2 {
        externals.push(format!("{ip}:5000"));
    }
    let table = n.cgn_ctl(&["mappings"]);
    assert!(table.contains("Type: MAP IN, Protocol: UDP"), "{table}");
    assert!(table.contains("Type: MAP IN, Protocol: TCP"), "{table}");
    assert!(
        table.contains("[100.64.0.2:5000]"),
        "MAP of NAT1 port 5000 from the CPE: {table}"
    );
    let nft = n.nft_table();
    assert!(nft.contains("dnat to 192.168.0.10:5000"), "{nft}");
    assert!(nft.contains("snat to 100.64.0.2:5000"), "{nft}");

    // The IGD request's span carries its PCP story into the log.
    let log = n.iwf.log();
    assert!(
        log.contains("PCP server answers"),
        "start-up ANNOUNCE answered: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("igd{action=AddPortMapping cp=192.168.0.10}")
                && l.contains("MAP SUCCESS")
                && l.contains(&format!("external={ip}:5000"))),
        "{log}"
    );
    // Status page and metrics show the upstream state, never a nonce.
    let status = out(
        lab,
        Node::Lan,
        &[PY, "-c", FETCH, "http://192.168.0.1:5000/status.txt"],
        10,
    );
    assert!(
        status.contains("PCP server 100.64.0.1:5351: answering"),
        "{status}"
    );
    assert!(
        status.contains(&format!("→ 5000 → {ip}:5000 active")),
        "{status}"
    );
    let nonce = table
        .split("Mapping Nonce: 0x")
        .nth(1)
        .map(|r| &r[..24])
        .unwrap_or("none");
    assert!(
        !status.to_lowercase().contains(&nonce.to_lowercase()),
        "no nonce over HTTP"
    );
    let metrics = out(
        lab,
        Node::Lan,
        &[PY, "-c", FETCH, "http://192.168.0.1:5000/metrics"],
        10,
    );
    assert!(
        metrics.contains("upnp_iwf_pcp_results_total{result=\"SUCCESS\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upnp_iwf_nat1_changes_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upnp_iwf_live_mappings{phase=\"active\"} 2"),
        "{metrics}"
    );

    // GetSpecificPortMappingEntry for a port nobody mapped: a probe upstream, then 714
    // (RFC 6970 §5.7); the probe leaves nothing behind at the CGN.
    let probe = out(
        lab,
        Node::Lan,
        &[PY, "-c", GET_SPECIFIC, URL, "6881", "TCP"],
        20,
    );
    assert!(probe.contains("None"), "714 → None: {probe}");
    assert!(n.iwf.log().contains("PCP probe sent"), "{}", n.iwf.log());
    assert!(
        wait(5, || !n.cgn_ctl(&["mappings"]).contains(":6881[")),
        "probe deleted"
    );

    let (got, reply) = n.exchange("udp", 5000, &externals[0], "hello over UDP");
    assert!(
        got.contains("GOT 203.0.113.50:"),
        "app:\n{got}\npeer: {reply}"
    );
    assert!(got.contains("hello over UDP"), "{got}");
    assert!(
        reply.contains(&format!("REPLY {} echo hello over UDP", externals[0])),
        "the reply comes from the external endpoint: {reply}"
    );
    let (got, reply) = n.exchange("tcp", 5000, &externals[1], "hello over TCP");
    assert!(got.contains("hello over TCP"), "app:\n{got}\npeer: {reply}");
    assert!(reply.contains("echo hello over TCP"), "{reply}");

    let del = out(lab, Node::Lan, &["upnpc", "-i", "-d", "5000", "UDP"], 30);
    assert!(
        !del.contains("failed"),
        "{del}\n--- iwf:\n{}\n--- cgn:\n{}",
        n.iwf.log(),
        n.cgn.log()
    );
    // The answer comes once the CGN has deleted the mapping; NAT1 follows in its own
    // transaction a few milliseconds later.
    let removed = wait(5, || !n.nft_table().contains("udp dport 5000"));
    let nft = n.nft_table();
    assert!(removed, "NAT1 rule removed: {nft}");
    assert!(nft.contains("tcp dport 5000"), "the TCP one stays: {nft}");
    let table = n.cgn_ctl(&["mappings"]);
    assert!(
        !table.contains("Type: MAP IN, Protocol: UDP"),
        "PCP delete: {table}"
    );
    let (got, reply) = n.exchange("udp", 5000, &externals[0], "after delete");
    assert!(!got.contains("after delete"), "inbound stops: {got}");
    assert!(reply.contains("NOREPLY"), "{reply}");
    // Re-adding the port at once works: the CGN holds a deleted port for its nonce (RFC 6888
    // REQ-8), and the IWF reuses the nonce of the mapping it just deleted.
    let again = n.map(5000, "UDP");
    assert!(
        again.contains(&format!("external {}", externals[0])),
        "{again}\n{}",
        n.iwf.log()
    );
}

// RFC 6970 §5.10, §5.3; RFC 6887 §14.1.3: after `cgn-sim ctl restart` every UPnP mapping is
// back at the CGN on the same external port and traffic flows again; after kill -9 of
// upnp-iwf and a start with the same state directory, every mapping is renewed with its
// stored nonce (no NOT_AUTHORIZED, none duplicated) and the NAT1 rules are identical.
#[test]
fn mappings_survive_a_cgn_restart_and_a_kill_of_the_iwf() {
    require_privileges!();
    let mut n = Nat444::start();
    let ports: Vec<u16> = (6000..6006).collect();
    for &p in &ports {
        let add = n.map(p, "UDP");
        assert!(add.contains("is redirected"), "{add}\n{}", n.iwf.log());
    }
    let before = map_in_lines(&n.cgn_ctl(&["mappings"]));
    assert_eq!(before.len(), ports.len(), "{before:?}");
    let external_ip = before[0]
        .split(' ')
        .nth(1)
        .and_then(|e| e.split(':').next())
        .unwrap_or_default()
        .to_string();
    // The §8.5 epoch check needs the CGN up a few seconds before its restart is visible.
    std::thread::sleep(Duration::from_secs(4));
    let restart = n.cgn_ctl(&["restart"]);
    assert!(!restart.is_empty());
    let restored = wait(15, || {
        let mut now = map_in_lines(&n.cgn_ctl(&["mappings"]));
        let mut b = before.clone();
        now.sort();
        b.sort();
        now == b
    });
    assert!(
        restored,
        "not all back on the same ports within 15 s: {:?}\n{}",
        map_in_lines(&n.cgn_ctl(&["mappings"])),
        n.iwf.log()
    );
    assert!(
        n.iwf.log().contains("mapping restored upstream"),
        "{}",
        n.iwf.log()
    );
    let (got, reply) = n.exchange("udp", 6000, &format!("{external_ip}:6000"), "after restart");
    assert!(got.contains("after restart"), "{got}\n{reply}");

    // kill -9 and start again with the same state directory.
    let rules_before = n.nft_table();
    n.iwf.kill().expect("killed");
    n.iwf = spawn_iwf(&n.lab);
    let renewed = wait(15, || {
        n.iwf.log().matches("mapping restored upstream").count() >= ports.len()
    });
    assert!(renewed, "{}", n.iwf.log());
    assert!(
        !n.iwf.log().contains("NotAuthorized"),
        "stored nonces: {}",
        n.iwf.log()
    );
    let after = map_in_lines(&n.cgn_ctl(&["mappings"]));
    assert_eq!(after.len(), ports.len(), "none duplicated: {after:?}");
    let rules = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| l.contains("dnat to") || l.contains("snat to"))
            .map(|l| l.trim().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        rules(&n.nft_table()),
        rules(&rules_before),
        "NAT1 rules identical"
    );
    let (got, reply) = n.exchange("udp", 6003, &format!("{external_ip}:6003"), "after kill");
    assert!(got.contains("after kill"), "{got}\n{reply}");
}

/// Sends one PCP ANNOUNCE response (epoch 0) to 224.0.0.1:5350 from a forged source
/// 100.64.0.1:5351 (the PCP server's address), with a raw socket.
const FORGED_ANNOUNCE: &str = r#"
import socket, struct
payload = bytes([2, 0x80, 0, 0]) + struct.pack("!II", 0, 0) + bytes(12)
src, dst = socket.inet_aton("100.64.0.1"), socket.inet_aton("224.0.0.1")
udp = struct.pack("!HHHH", 5351, 5350, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 1, 17, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, ("224.0.0.1", 0))
print("SENT", flush=True)
"#;

/// A plain listener on 224.0.0.1:5350 joined on the router's LAN address: proves the forged
/// ANNOUNCE from the LAN does reach the router.
const LAN_LISTENER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("224.0.0.1", 5350))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("224.0.0.1") + socket.inet_aton("192.168.0.1"))
s.settimeout(10)
print("READY", flush=True)
data, peer = s.recvfrom(2048)
print("HEARD %s:%d %d bytes" % (peer[0], peer[1], len(data)), flush=True)
"#;

// Daemon-engine issue, defect 5; RFC 6887 §14.1.3: the ANNOUNCE listener is joined only on
// the interface that faces the PCP server. An ANNOUNCE forged by a LAN host (source
// 100.64.0.1:5351, sent to 224.0.0.1:5350 on the LAN) reaches the router but not the IWF; the
// same datagram arriving on the WAN makes the IWF re-create its mappings.
#[test]
fn announce_is_heard_on_the_wan_only_never_from_the_lan() {
    require_privileges!();
    let n = Nat444::start();
    let lab = &n.lab;
    let add = n.map(6500, "UDP");
    assert!(add.contains("is redirected"), "{add}");
    // Epoch 0 must be visibly "back in time" (RFC 6887 §8.5 needs a few seconds of uptime).
    std::thread::sleep(Duration::from_secs(4));
    // The LAN host may send with any source; the router must not filter it before our socket
    // would see it, or the test would prove nothing.
    for iface in ["all", "lan0", "default"] {
        lab.exec_ok(
            Node::Cpe,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{iface}.rp_filter=0"),
            ],
        )
        .expect("sysctl");
    }
    let listener = lab
        .spawn(Node::Cpe, &[PY, "-c", LAN_LISTENER])
        .expect("listener");
    assert!(
        wait(5, || listener.log().contains("READY")),
        "{}",
        listener.log()
    );
    let sent = out(lab, Node::Lan, &[PY, "-c", FORGED_ANNOUNCE], 10);
    assert!(sent.contains("SENT"), "{sent}");
    assert!(
        wait(5, || listener
            .log()
            .contains("HEARD 100.64.0.1:5351 24 bytes")),
        "the forged ANNOUNCE reaches the router's LAN side: {}",
        listener.log()
    );
    // The IWF's listener is not joined there: nothing happens (the 0–5 s wait included).
    std::thread::sleep(Duration::from_secs(6));
    assert!(!n.iwf.log().contains("ServerStateLost"), "{}", n.iwf.log());

    // The same datagram on the WAN side: heard, state loss, mappings re-created.
    let _ = lab.exec(
        Node::Cgn,
        &["ip", "route", "add", "224.0.0.0/4", "dev", "inside0"],
    );
    let sent = out(lab, Node::Cgn, &[PY, "-c", FORGED_ANNOUNCE], 10);
    assert!(sent.contains("SENT"), "{sent}");
    assert!(
        wait(10, || n.iwf.log().contains("mapping restored upstream")),
        "{}",
        n.iwf.log()
    );
    assert!(n.iwf.log().contains("ServerStateLost { announced: true }"));
}

// RFC 6970 §5.10 (MAY), nat1-nftables.md "WAN address changes": when the CPE's WAN address
// changes (100.64.0.2 → 100.64.0.9), the IWF rebuilds NAT1 with the new SNAT target and maps
// every mapping again from the new address; the Internet host reaches the app again through
// the mapping the CGN now holds for 100.64.0.9.
#[test]
fn wan_address_change_maps_everything_again_from_the_new_address() {
    require_privileges!();
    let n = Nat444::start();
    let lab = &n.lab;
    let add = n.map(6600, "UDP");
    assert!(add.contains("is redirected"), "{add}");
    nat444_tests::e2e::renumber_cpe_wan(lab, "100.64.0.9");
    let remapped = wait(20, || {
        map_in_lines(&n.cgn_ctl(&["mappings"]))
            .iter()
            .any(|l| l.starts_with("UDP"))
            && n.cgn_ctl(&["mappings"]).contains("[100.64.0.9:6600]")
    });
    assert!(remapped, "{}\n{}", n.cgn_ctl(&["mappings"]), n.iwf.log());
    let nft = n.nft_table();
    assert!(nft.contains("snat to 100.64.0.9:6600"), "{nft}");
    let table = n.cgn_ctl(&["mappings"]);
    let external = table
        .lines()
        .find(|l| l.contains("Type: MAP IN") && l.contains("[100.64.0.9:6600]"))
        .and_then(|l| l.split("ANY -> ").nth(1))
        .and_then(|r| r.split('[').next())
        .expect("MAP IN line")
        .to_string();
    let (got, reply) = n.exchange("udp", 6600, &external, "after renumbering");
    assert!(
        got.contains("after renumbering"),
        "{got}\n{reply}\n{}",
        n.iwf.log()
    );
}

// RFC 6970 §5.1: with the PCP server unreachable (no cgn-sim in the lab), AddPortMapping gets
// 501 ActionFailed — before upnpc's own 5 s SOAP timeout, or upnpc would print an HTTP error
// (-3) instead — and no NAT1 rule is left behind.
#[test]
fn unreachable_pcp_server_gives_501_before_the_client_gives_up() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    std::fs::create_dir_all(lab.log_dir()).expect("log dir");
    let fw = lab.log_dir().join("routerfw.nft");
    std::fs::write(&fw, ROUTER_FW).expect("write");
    lab.exec_ok(Node::Cpe, &["nft", "-f", &fw.to_string_lossy()])
        .expect("router firewall");
    let iwf = spawn_iwf(&lab);
    let add = out(
        &lab,
        Node::Lan,
        &[
            "upnpc",
            "-u",
            URL,
            "-a",
            "192.168.0.10",
            "7100",
            "7100",
            "UDP",
        ],
        30,
    );
    assert!(add.contains("failed with code 501"), "{add}\n{}", iwf.log());
    let nft = out(
        &lab,
        Node::Cpe,
        &["nft", "list", "table", "ip", "upnp_iwf"],
        5,
    );
    assert!(!nft.contains("dport 7100"), "rolled back: {nft}");
    // And the daemon says so plainly (10 s after its start).
    assert!(
        wait(15, || iwf
            .log()
            .contains("no answer from PCP server 100.64.0.1:5351")),
        "{}",
        iwf.log()
    );
}
