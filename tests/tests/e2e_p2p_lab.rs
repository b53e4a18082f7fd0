//! P2P between two subscribers of one CGN (issue #12, end-to-end suite): each subscriber's LAN
//! app maps its port with a real UPnP client (upnpc) through its own home router's upnp-iwf
//! (PCP upstream, nftables NAT1), and each sends to the other's *external* endpoint. The CGN
//! (cgn-sim, TUN dataplane) hairpins the traffic (RFC 4787 REQ-9, RFC 5382 REQ-8), so each app
//! sees the other's external endpoint, the one it can call back, and never a 100.64/10 or LAN
//! address. Needs root (SKIPPED otherwise), nft, upnpc and python3.

use std::net::SocketAddrV4;

use nat444_tests::e2e::{
    ECHO_APP, Nat444, TALK, out, table_lines, upnpc_add, upnpc_external, wait,
};
use nat444_tests::lab::{LabChild, Node};
use nat444_tests::require_privileges;

/// `PORT PEER_HOST PEER_PORT NAME SECS`: a P2P app on UDP PORT. Sends `HELLO from NAME` to
/// the peer every 0.5 s until the peer acknowledges it, answers each `HELLO from X` with
/// `ACK to X` from the same socket, prints `GOT SRC:PORT TEXT` for everything it receives,
/// and `DONE` once it has both greeted and been greeted (after a 1 s linger for late
/// HELLOs).
const P2P_UDP: &str = r#"
import socket, sys, time
port, host, pport, name, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.settimeout(0.1)
print("READY", flush=True)
end = time.time() + secs
acked = greeted = False
last = 0.0
linger = None
while time.time() < end and (linger is None or time.time() < linger):
    if not acked and time.time() - last > 0.5:
        s.sendto(("HELLO from " + name).encode(), (host, pport))
        last = time.time()
    try:
        d, a = s.recvfrom(2048)
    except socket.timeout:
        continue
    t = d.decode(errors="replace")
    print("GOT %s:%d %s" % (a[0], a[1], t), flush=True)
    if t.startswith("HELLO from "):
        s.sendto(("ACK to " + t[len("HELLO from "):]).encode(), a)
        greeted = True
    elif t.startswith("ACK to "):
        acked = True
    if acked and greeted and linger is None:
        linger = time.time() + 1
print("DONE" if acked and greeted else "GAVE UP", flush=True)
"#;

/// The two subscribers' apps' ports (each maps the same external port it listens on).
const PORT_A: u16 = 5000;
const PORT_B: u16 = 6000;

/// Maps `port`/`proto` from `lan` with upnpc and returns the external endpoint, checking that
/// the CGN holds the MAP for that router's NAT1 port.
fn map(n: &Nat444, lan: Node, wan: &str, port: u16, proto: &str) -> SocketAddrV4 {
    let add = upnpc_add(&n.lab, lan, port, proto, 3600);
    let external = upnpc_external(&add, proto)
        .unwrap_or_else(|| panic!("{lan} {proto} {port}: {add}\n{}", n.logs()));
    let table = n.cgn_ctl(&["mappings"]);
    let map_in = table_lines(&table, "MAP IN", proto, &format!("[{wan}:{port}]"));
    assert_eq!(map_in.len(), 1, "{table}");
    assert!(
        map_in[0].contains(&format!("ANY -> {external}[")),
        "{table}"
    );
    external
}

fn spawn(n: &Nat444, node: Node, script: &str, args: &[&str]) -> LabChild {
    let mut argv = vec!["python3", "-c", script];
    argv.extend_from_slice(args);
    let child = n.lab.spawn(node, &argv).expect("app");
    assert!(wait(5, || child.log().contains("READY")), "{}", child.log());
    child
}

// RFC 6970 §5.5 + RFC 4787 REQ-9/9a: two subscribers' UDP apps, each mapped through its own
// IWF, reach each other at their external endpoints through the CGN, and each sees the
// other's mapped external endpoint (not 100.64.0.x, not 192.168.0.10) as the source.
#[test]
fn p2p_udp_between_two_subscribers_each_through_its_own_iwf() {
    require_privileges!();
    let n = Nat444::start_with(true, &[]);
    let ext_a = map(&n, Node::Lan, "100.64.0.2", PORT_A, "UDP");
    let ext_b = map(&n, Node::Lan2, "100.64.0.3", PORT_B, "UDP");
    // Each IWF installed NAT1 only on its own router.
    assert!(
        n.nft_table_of(Node::Cpe)
            .contains("udp dport 5000 dnat to 192.168.0.10:5000"),
        "{}",
        n.nft_table_of(Node::Cpe)
    );
    let nft_b = n.nft_table_of(Node::Cpe2);
    assert!(
        nft_b.contains("udp dport 6000 dnat to 192.168.0.10:6000") && !nft_b.contains("5000"),
        "{nft_b}"
    );
    let (a_host, a_port) = (ext_a.ip().to_string(), ext_a.port().to_string());
    let (b_host, b_port) = (ext_b.ip().to_string(), ext_b.port().to_string());
    let app_a = spawn(
        &n,
        Node::Lan,
        P2P_UDP,
        &["5000", &b_host, &b_port, "A", "15"],
    );
    let app_b = spawn(
        &n,
        Node::Lan2,
        P2P_UDP,
        &["6000", &a_host, &a_port, "B", "15"],
    );
    let done = wait(15, || {
        app_a.log().contains("DONE") && app_b.log().contains("DONE")
    });
    let (log_a, log_b) = (app_a.log(), app_b.log());
    assert!(done, "A:\n{log_a}\nB:\n{log_b}\n{}", n.logs());
    assert!(
        log_a.contains(&format!("GOT {ext_b} HELLO from B")),
        "{log_a}"
    );
    assert!(log_a.contains(&format!("GOT {ext_b} ACK to A")), "{log_a}");
    assert!(
        log_b.contains(&format!("GOT {ext_a} HELLO from A")),
        "{log_b}"
    );
    assert!(log_b.contains(&format!("GOT {ext_a} ACK to B")), "{log_b}");
    for log in [&log_a, &log_b] {
        assert!(
            !log.contains("GOT 100.64.") && !log.contains("GOT 192.168."),
            "{log}"
        );
    }
}

// RFC 6970 §5.5 + RFC 5382 REQ-8/8a: the same over TCP. A's app connects from its mapped
// port to B's external endpoint and B's app sees A's external endpoint; then the other way
// round; the bytes each sends arrive and the answers come back on the same connection.
#[test]
fn p2p_tcp_between_two_subscribers_each_through_its_own_iwf() {
    require_privileges!();
    let n = Nat444::start_with(true, &[]);
    let ext_a = map(&n, Node::Lan, "100.64.0.2", PORT_A, "TCP");
    let ext_b = map(&n, Node::Lan2, "100.64.0.3", PORT_B, "TCP");
    let talk = |from: Node, to: SocketAddrV4, msg: &str, bind: u16| {
        out(
            &n.lab,
            from,
            &[
                "python3",
                "-c",
                TALK,
                "tcp",
                &to.ip().to_string(),
                &to.port().to_string(),
                msg,
                &bind.to_string(),
            ],
            15,
        )
    };
    // A → B: B listens, A connects from its own mapped port 5000.
    let app_b = spawn(&n, Node::Lan2, ECHO_APP, &["tcp", "6000", "20"]);
    let reply = talk(Node::Lan, ext_b, "piece from A", PORT_A);
    assert!(
        wait(3, || app_b.log().contains("piece from A")),
        "{}",
        app_b.log()
    );
    assert!(
        app_b.log().contains(&format!("GOT {ext_a} piece from A")),
        "B sees A's external endpoint: {}\n{}",
        app_b.log(),
        n.logs()
    );
    assert_eq!(reply.trim(), format!("REPLY {ext_b} echo piece from A"));
    drop(app_b);
    // B → A: A listens, B connects from its own mapped port 6000.
    let app_a = spawn(&n, Node::Lan, ECHO_APP, &["tcp", "5000", "20"]);
    let reply = talk(Node::Lan2, ext_a, "piece from B", PORT_B);
    assert!(
        wait(3, || app_a.log().contains("piece from B")),
        "{}",
        app_a.log()
    );
    assert!(
        app_a.log().contains(&format!("GOT {ext_b} piece from B")),
        "A sees B's external endpoint: {}\n{}",
        app_a.log(),
        n.logs()
    );
    assert_eq!(reply.trim(), format!("REPLY {ext_a} echo piece from B"));
    let stats = n.cgn_ctl(&["stats"]);
    let hairpinned: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cgn_dataplane_packets_total{direction=\"hairpin\"}"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        hairpinned >= 6,
        "both handshakes went through the hairpin: {stats}"
    );
}
