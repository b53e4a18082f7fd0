//! `cgn-sim --dataplane tun` as the only NAT of the lab's cgn namespace (no kernel NAT there),
//! with the CPEs using plain nftables masquerade on `wan0`: traffic from the LAN reaches the
//! Internet peer translated to the pool, PCP MAP mappings made with `pcpc` admit inbound
//! traffic until deleted or expired, FILTER admits only the allowed peer, the two CPEs reach
//! each other by hairpinning, quota exhaustion is reported as ICMP Host Unreachable, and a
//! `--no-translate` destination sees the subscriber's own address.
//!
//! Needs root (CAP_NET_ADMIN); skipped otherwise unless NAT444_REQUIRE_PRIVILEGED=1. Test
//! traffic stays inside the namespaces each test creates; every helper process is bounded in
//! time and killed by pid when the lab is dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nat444_tests::e2e::{UDP_LISTEN, UDP_SEND};
use nat444_tests::lab::{Lab, LabBuilder, LabChild, Node, cgn_sim_argv, plan};
use nat444_tests::require_privileges;

/// `ADDR PORT SECS`: a TCP server answering `DATA SRC:PORT` to each connection.
const TCP_SERVE: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
s.settimeout(0.2)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    try:
        c, a = s.accept()
    except socket.timeout:
        continue
    c.settimeout(2)
    try:
        d = c.recv(100)
        c.sendall(d + (' %s:%d' % a).encode())
    except OSError:
        pass
    c.close()
"#;

/// `DST PORT`: connects (retrying for 10 s), sends `hello`, prints the answer.
const TCP_CONNECT: &str = r#"
import socket, sys, time
end = time.time() + 10
err = None
while time.time() < end:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        c.sendall(b'hello')
        print(c.recv(200).decode())
        sys.exit(0)
    except OSError as e:
        err = e
        time.sleep(0.3)
print(err)
sys.exit(1)
"#;

/// `ADDR PORT SECS`: accepts one connection, reads until EOF and answers
/// `BYTES SHA256` of what it read.
const TCP_SINK: &str = r#"
import hashlib, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(float(sys.argv[3]))
c, a = s.accept()
c.settimeout(float(sys.argv[3]))
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d)
    n += len(d)
c.sendall(('%d %s' % (n, h.hexdigest())).encode())
c.close()
"#;

/// `DST PORT MIB`: connects (retrying for 10 s), sends MIB MiB of a fixed pattern, shuts down
/// its sending side and prints `BYTES SHA256` of what it sent, then the sink's answer.
const TCP_BULK: &str = r#"
import hashlib, socket, sys, time
end = time.time() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        break
    except OSError as e:
        if time.time() > end:
            print(e)
            sys.exit(1)
        time.sleep(0.3)
c.settimeout(20)
block = bytes(range(256)) * 256
h, n = hashlib.sha256(), 0
for i in range(int(sys.argv[3]) * 16):
    b = block[i % 251:] + block[:i % 251]
    c.sendall(b)
    h.update(b)
    n += len(b)
c.shutdown(socket.SHUT_WR)
print('%d %s' % (n, h.hexdigest()))
print(c.recv(200).decode())
"#;

/// `DST PORT N`: from N local UDP ports (40000, 40001, …) sends to DST:PORT with IP_RECVERR
/// and prints, per port, the first ICMP error reported: `PORT TYPE CODE OFFENDER` (or
/// `PORT none`).
const ICMP_PROBE: &str = r#"
import socket, sys, struct, time
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
IP_RECVERR = getattr(socket, 'IP_RECVERR', 11)
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
    s.bind(('0.0.0.0', 40000 + i))
    s.connect((dst, port))
    s.setblocking(False)
    got = None
    for _ in range(3):
        try:
            s.send(b'probe')
        except OSError:
            pass
        end = time.time() + 1
        while got is None and time.time() < end:
            try:
                _, anc, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except OSError:
                time.sleep(0.02)
                continue
            for lvl, typ, data in anc:
                if lvl == socket.SOL_IP and typ == IP_RECVERR and len(data) >= 24:
                    _, origin, itype, icode = struct.unpack('=IBBB', data[:7])
                    got = '%d %d %s' % (itype, icode, socket.inet_ntoa(data[20:24]))
        if got:
            break
    print('%d %s' % (40000 + i, got or 'none'), flush=True)
"#;

/// A lab whose CGN is `cgn-sim --dataplane tun` and whose CPEs masquerade on `wan0`.
struct Fixture {
    nft_table: String,
    cpes: Vec<Node>,
    cgn_sim: PathBuf,
    pcpc: String,
    sock: PathBuf,
    daemon: Option<LabChild>,
    lab: Lab,
}

static TABLES: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    fn new(second_subscriber: bool, extra: &[&str]) -> Fixture {
        let cgn_sim = nat444_tests::bins::workspace_bin("cgn-sim", "cgn-sim");
        let pcpc = nat444_tests::bins::workspace_bin("pcp-client", "pcpc")
            .display()
            .to_string();
        let lab = LabBuilder::new()
            .second_subscriber(second_subscriber)
            .build()
            .expect("lab builds");
        let nft_table = format!(
            "n444dp_{}_{}",
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        );
        let cpes = if second_subscriber {
            vec![Node::Cpe, Node::Cpe2]
        } else {
            vec![Node::Cpe]
        };
        // In the lab's directory, which goes with the lab.
        let sock = lab.log_dir().join("cgn.sock");
        let mut f = Fixture {
            nft_table,
            cpes,
            cgn_sim,
            pcpc,
            sock,
            daemon: None,
            lab,
        };
        for cpe in f.cpes.clone() {
            // NAT1: plain kernel masquerade on the CPE's WAN (the IWF's nftables backend is
            // not involved here).
            let t = &f.nft_table;
            let rules = format!(
                "add table ip {t}; add chain ip {t} post {{ type nat hook postrouting priority srcnat; }}; add rule ip {t} post oifname \"wan0\" masquerade"
            );
            f.lab
                .exec_ok(cpe, &["nft", &rules])
                .expect("nft masquerade");
        }
        let bin = f.cgn_sim.display().to_string();
        let sock = f.sock.display().to_string();
        let mut argv = cgn_sim_argv(&bin, "tun", &sock);
        argv.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let daemon = f.lab.spawn(Node::Cgn, &argv).expect("spawn cgn-sim");
        // Control requests are answered once the TUN device and its routes are in place (the
        // `ctl stats` below waits for that).
        let t = Instant::now();
        while !f.sock.exists() {
            if let Ok(Some(status)) = daemon.try_wait() {
                panic!("cgn-sim exited ({status}): {}", daemon.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "cgn-sim did not start: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        f.daemon = Some(daemon);
        let stats = f.ctl(&["stats"]);
        assert!(stats.contains("cgn_dataplane_sessions"), "{stats}");
        f
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.cgn_sim)
            .arg("--ctl")
            .arg(&self.sock)
            .arg("ctl")
            .args(args)
            .output()
            .expect("cgn-sim ctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A counter or gauge value from `ctl stats` (0 if absent).
    fn metric(&self, line_prefix: &str) -> u64 {
        self.ctl(&["stats"])
            .lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn daemon_log(&self) -> String {
        self.daemon.as_ref().map(LabChild::log).unwrap_or_default()
    }

    /// `pcpc --server 100.64.0.1 --json ARGS` in `node`; its standard output.
    fn pcpc(&self, node: Node, args: &[&str]) -> String {
        let mut argv = vec![
            self.pcpc.as_str(),
            "--server",
            "100.64.0.1",
            "--json",
            "--timeout",
            "5",
        ];
        argv.extend_from_slice(args);
        let out = self.lab.exec(node, &argv).expect("pcpc runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a Python script with arguments in `node`, bounded by `timeout`.
    fn python(
        &self,
        node: Node,
        script: &str,
        args: &[&str],
        timeout: Duration,
    ) -> std::process::Output {
        let mut argv = vec!["python3", "-c", script];
        argv.extend_from_slice(args);
        self.lab
            .exec_timeout(node, &argv, timeout)
            .expect("python3 runs")
    }

    fn spawn_python(&self, node: Node, script: &str, args: &[&str]) -> LabChild {
        let mut argv = vec!["python3", "-u", "-c", script];
        argv.extend_from_slice(args);
        let child = self.lab.spawn(node, &argv).expect("spawn python3");
        wait_for(&child, "listening", Duration::from_secs(5));
        child
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // cgn-sim first, gracefully (it removes its routing rules), then the NAT1 tables;
        // the namespaces go with the lab.
        if let Some(d) = self.daemon.take() {
            let _ = d.terminate(Duration::from_secs(5));
        }
        for cpe in &self.cpes {
            let _ = self.lab.exec(
                *cpe,
                &["nft", "delete", "table", "ip", self.nft_table.as_str()],
            );
        }
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// Waits until `child`'s log contains `needle` (or `timeout` passes); returns the log.
fn wait_for(child: &LabChild, needle: &str, timeout: Duration) -> String {
    let t = Instant::now();
    loop {
        let log = child.log();
        if log.contains(needle) || t.elapsed() > timeout {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `"external_address":"A","external_port":P` of a pcpc JSON answer, as `A:P`.
fn external_endpoint(json: &str) -> String {
    let field = |name: &str| -> String {
        let key = format!("\"{name}\":");
        let start = json.find(&key).map(|i| i + key.len()).expect(name);
        json[start..]
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect()
    };
    format!("{}:{}", field("external_address"), field("external_port"))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sends `msg` from `node` to `dst:port` (three tries, no reply expected).
fn send_udp(f: &Fixture, node: Node, dst: &str, port: &str, msg: &str, bind: Option<&str>) {
    let mut args = vec![dst, port, msg];
    if let Some(b) = bind {
        args.extend_from_slice(&[b, "0", "3"]);
    } else {
        args.extend_from_slice(&["0.0.0.0", "0", "3"]);
    }
    let _ = f.python(node, UDP_SEND, &args, Duration::from_secs(10));
}

// RFC 4787 REQ-1, RFC 5382 REQ-1, RFC 5508 REQ-1: ping, UDP and TCP from the LAN leave
// through cgn-sim with a pool source and their answers come back (the Internet peer has no
// route to 100.64.0.0/10, so any answer proves the translation both ways).
#[test]
fn lan_ping_udp_and_tcp_cross_cgn_sim_with_a_pool_source() {
    require_privileges!();
    let f = Fixture::new(false, &[]);
    let ping = f.lab.ping(Node::Lan, plan::INET_PEER).expect("ping runs");
    assert!(
        ping.replied,
        "{}\n{}\n{}",
        ping.output,
        f.ctl(&["stats"]),
        f.daemon_log()
    );
    // The reply left inet with TTL 64 and crossed two routers, the CGN and the CPE: the CGN
    // counts as one hop although the kernel forwards through its TUN twice.
    assert!(ping.output.contains("ttl=62"), "{}", ping.output);

    let _udp = f.spawn_python(Node::Inet, UDP_LISTEN, &["0.0.0.0", "7000", "60", "echo"]);
    let out = f.python(
        Node::Lan,
        UDP_SEND,
        &["203.0.113.50", "7000", "udp-hello"],
        Duration::from_secs(15),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "no UDP answer: {text}");
    // The peer saw a pool address, and the answer came from the peer.
    assert!(
        text.starts_with("198.51.100.") && text.contains("from 203.0.113.50:7000"),
        "{text}"
    );

    let _tcp = f.lab.spawn(
        Node::Inet,
        &["python3", "-c", TCP_SERVE, "0.0.0.0", "7001", "60"],
    );
    let out = f.python(
        Node::Lan,
        TCP_CONNECT,
        &["203.0.113.50", "7001"],
        Duration::from_secs(20),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "no TCP answer: {text}");
    assert!(text.starts_with("hello 198.51.100."), "{text}");

    assert!(f.metric("cgn_dataplane_packets_total{direction=\"outbound\"}") >= 3);
    assert!(f.metric("cgn_dataplane_packets_total{direction=\"inbound\"}") >= 3);
    assert!(f.metric("cgn_dataplane_sessions") >= 3);
    let table = f.ctl(&["mappings", "--json"]);
    assert!(table.contains("100.64.0.2"), "{table}");
}

// Bulk TCP through the TUN path: with the offload interface the daemon reads TSO
// super-packets, splits them, translates each segment and writes runs of one flow's segments
// coalesced again; every byte must arrive unchanged and in order.
#[test]
fn bulk_tcp_crosses_cgn_sim_unchanged_through_coalesced_writes() {
    require_privileges!();
    let f = Fixture::new(false, &[]);
    let _sink = f.lab.spawn(
        Node::Inet,
        &["python3", "-c", TCP_SINK, "0.0.0.0", "7002", "40"],
    );
    let out = f.python(
        Node::Lan,
        TCP_BULK,
        &["203.0.113.50", "7002", "16"],
        Duration::from_secs(60),
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "bulk TCP failed: {text}\n{}",
        f.daemon_log()
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("16777216 "), "{text}");
    assert_eq!(lines[0], lines[1], "sent vs received (bytes sha256)");
    assert!(f.metric("cgn_dataplane_packets_total{direction=\"outbound\"}") >= 100);
    // The LAN host's TSO super-packets cross the veths and the CPE whole and reach the TUN
    // as such: the daemon reads several segments per system call and splits them.
    if f.daemon_log().contains("offload=true") {
        let (rx, reads) = (
            f.metric("cgn_dataplane_tun_packets_total{io=\"rx\"}"),
            f.metric("cgn_dataplane_tun_reads_total"),
        );
        assert!(reads < rx, "{reads} reads for {rx} packets");
    }
}

// RFC 6887 §11: a MAP made with pcpc admits inbound traffic from any peer (EIF) to the CPE;
// after the delete (lifetime 0, §15) the external endpoint refuses it again.
#[test]
fn inbound_to_a_pcpc_map_reaches_the_cpe_until_deleted() {
    require_privileges!();
    let f = Fixture::new(false, &[]);
    let listener = f.spawn_python(Node::Cpe, UDP_LISTEN, &["100.64.0.2", "5000", "60"]);
    let nonce = "0102030405060708090a0b0c";
    let map = f.pcpc(
        Node::Cpe,
        &[
            "map",
            "--internal-port",
            "5000",
            "--lifetime",
            "600",
            "--nonce",
            nonce,
        ],
    );
    assert!(map.contains(r#""result":"SUCCESS""#), "{map}");
    let ext = external_endpoint(&map);
    let (addr, port) = ext.split_once(':').expect("addr:port");
    send_udp(&f, Node::Inet, addr, port, "before-delete", None);
    let log = wait_for(&listener, "before-delete", Duration::from_secs(5));
    assert!(
        log.contains("before-delete 203.0.113.50:"),
        "inbound to {ext} did not reach the CPE: {log}\n{}",
        f.ctl(&["stats"])
    );
    let del = f.pcpc(
        Node::Cpe,
        &["delete", "--internal-port", "5000", "--nonce", nonce],
    );
    assert!(del.contains(r#""result":"SUCCESS""#), "{del}");
    let refused = f.metric("cgn_dataplane_drops_total{reason=\"no_mapping\"}");
    send_udp(&f, Node::Inet, addr, port, "after-delete", None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !listener.log().contains("after-delete"),
        "{}",
        listener.log()
    );
    assert!(f.metric("cgn_dataplane_drops_total{reason=\"no_mapping\"}") > refused);
}

// RFC 6887 §15: when the mapping's lifetime runs out, inbound traffic stops.
#[test]
fn inbound_to_a_pcpc_map_stops_when_it_expires() {
    require_privileges!();
    let f = Fixture::new(false, &["--min-lifetime", "1"]);
    let listener = f.spawn_python(Node::Cpe, UDP_LISTEN, &["100.64.0.2", "5001", "60"]);
    let map = f.pcpc(
        Node::Cpe,
        &["map", "--internal-port", "5001", "--lifetime", "3"],
    );
    assert!(map.contains(r#""result":"SUCCESS""#), "{map}");
    assert!(map.contains(r#""lifetime":3"#), "{map}");
    let ext = external_endpoint(&map);
    let (addr, port) = ext.split_once(':').expect("addr:port");
    // One datagram only (the sender's 1 s retry would outlive a short mapping).
    let _ = f.python(
        Node::Inet,
        UDP_SEND,
        &[addr, port, "alive", "0.0.0.0", "0", "1"],
        Duration::from_secs(5),
    );
    let log = wait_for(&listener, "alive", Duration::from_secs(3));
    assert!(log.contains("alive 203.0.113.50:"), "{log}");
    std::thread::sleep(Duration::from_secs(4));
    let table = f.ctl(&["mappings"]);
    assert!(!table.contains("MAP IN"), "{table}");
    send_udp(&f, Node::Inet, addr, port, "expired", None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!listener.log().contains("expired"), "{}", listener.log());
}

// RFC 6887 §13.3: with FILTER, only the allowed remote peer gets through the MAP.
#[test]
fn filter_admits_only_the_allowed_peer() {
    require_privileges!();
    let f = Fixture::new(false, &[]);
    // A second Internet host (same namespace, second address) that the FILTER leaves out.
    f.lab
        .exec_ok(
            Node::Inet,
            &["ip", "addr", "add", "203.0.113.51/24", "dev", "eth0"],
        )
        .expect("second peer address");
    let listener = f.spawn_python(Node::Cpe, UDP_LISTEN, &["100.64.0.2", "5002", "60"]);
    let map = f.pcpc(
        Node::Cpe,
        &[
            "map",
            "--internal-port",
            "5002",
            "--filter",
            "203.0.113.50/32",
        ],
    );
    assert!(map.contains(r#""result":"SUCCESS""#), "{map}");
    let ext = external_endpoint(&map);
    let (addr, port) = ext.split_once(':').expect("addr:port");
    let filtered = f.metric("cgn_dataplane_drops_total{reason=\"filtered\"}");
    send_udp(
        &f,
        Node::Inet,
        addr,
        port,
        "from-stranger",
        Some("203.0.113.51"),
    );
    send_udp(
        &f,
        Node::Inet,
        addr,
        port,
        "from-allowed",
        Some("203.0.113.50"),
    );
    let log = wait_for(&listener, "from-allowed", Duration::from_secs(5));
    assert!(log.contains("from-allowed 203.0.113.50:"), "{log}");
    assert!(!log.contains("from-stranger"), "{log}");
    assert!(f.metric("cgn_dataplane_drops_total{reason=\"filtered\"}") > filtered);
}

// RFC 4787 REQ-9/9a: cpe2 reaches cpe through cpe's external endpoint, and cpe sees cpe2's
// external endpoint (not 100.64.0.3) as the source; the answer goes back the same way.
#[test]
fn hairpin_between_two_cpes_carries_external_endpoints() {
    require_privileges!();
    let f = Fixture::new(true, &[]);
    let listener = f.spawn_python(Node::Cpe, UDP_LISTEN, &["100.64.0.2", "6000", "60", "echo"]);
    let map1 = f.pcpc(Node::Cpe, &["map", "--internal-port", "6000"]);
    assert!(map1.contains(r#""result":"SUCCESS""#), "{map1}");
    let e1 = external_endpoint(&map1);
    let map2 = f.pcpc(Node::Cpe2, &["map", "--internal-port", "6001"]);
    assert!(map2.contains(r#""result":"SUCCESS""#), "{map2}");
    let e2 = external_endpoint(&map2);
    let (a1, p1) = e1.split_once(':').expect("addr:port");
    let out = f.python(
        Node::Cpe2,
        UDP_SEND,
        &[a1, p1, "hairpin", "100.64.0.3", "6001"],
        Duration::from_secs(15),
    );
    let log = listener.log();
    assert!(
        log.contains(&format!("hairpin {e2}")),
        "cpe saw {log}, expected source {e2}\n{}",
        f.ctl(&["stats"])
    );
    let text = stdout(&out);
    assert!(out.status.success(), "no answer: {text}");
    assert_eq!(text.trim(), format!("{e2} from {e1}"));
    assert!(f.metric("cgn_dataplane_packets_total{direction=\"hairpin\"}") >= 2);
}

// RFC 6888 REQ-11: with the quota used up, a new session is dropped with ICMP Destination
// Unreachable code 1 (Host Unreachable) from the CGN, which reaches the LAN sender through the
// CPE's NAT; the earlier sessions still work (nothing evicted).
#[test]
fn quota_exhaustion_sends_host_unreachable_to_the_sender() {
    require_privileges!();
    let f = Fixture::new(false, &["--quota", "2"]);
    // Nothing listens on the peer's port 9: the first two sessions get Port Unreachable from
    // the peer (3/3), the third never leaves the CGN and gets 3/1 from 100.64.0.1.
    let out = f.python(
        Node::Lan,
        ICMP_PROBE,
        &["203.0.113.50", "9", "3"],
        Duration::from_secs(20),
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0], "40000 3 3 203.0.113.50", "{text}");
    assert_eq!(lines[1], "40001 3 3 203.0.113.50", "{text}");
    assert_eq!(lines[2], "40002 3 1 100.64.0.1", "{text}");
    assert!(f.metric("cgn_dataplane_drops_total{reason=\"quota_exceeded\"}") >= 1);
    let table = f.ctl(&["mappings", "--json"]);
    assert!(
        table.contains("40000") && table.contains("40001"),
        "{table}"
    );
}

// RFC 6887 §8.5 / design.md §1: `ctl restart` simulates state loss; the translator's sessions
// go with the mapping table (the gauge drops to 0), and new traffic builds fresh state.
#[test]
fn restart_clears_translator_sessions_and_traffic_recovers() {
    require_privileges!();
    let f = Fixture::new(false, &[]);
    let _udp = f.spawn_python(Node::Inet, UDP_LISTEN, &["0.0.0.0", "7002", "60", "echo"]);
    let send = || {
        f.python(
            Node::Lan,
            UDP_SEND,
            &["203.0.113.50", "7002", "x"],
            Duration::from_secs(15),
        )
    };
    assert!(send().status.success());
    assert!(f.metric("cgn_dataplane_sessions") >= 1);
    assert!(f.ctl(&["restart"]).contains("state lost"));
    assert_eq!(
        f.metric("cgn_dataplane_sessions"),
        0,
        "{}",
        f.ctl(&["stats"])
    );
    assert_eq!(f.ctl(&["mappings"]), "");
    let out = send();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(f.metric("cgn_dataplane_sessions") >= 1);
}

// RFC 6888 REQ-6: with `--no-translate 203.0.113.53/32:udp/53` the provider's DNS server sees
// the CPE's own shared address (and, holding a route to the subscribers as an in-provider
// server would, answers it directly through the kernel's routing), while the same port on
// another host still sees a pool address.
#[test]
fn no_translate_destination_sees_the_subscriber_address() {
    require_privileges!();
    let f = Fixture::new(false, &["--no-translate", "203.0.113.53/32:udp/53"]);
    for cmd in [
        &["ip", "addr", "add", "203.0.113.53/24", "dev", "eth0"][..],
        &["ip", "route", "add", "100.64.0.0/24", "via", "203.0.113.1"][..],
    ] {
        f.lab.exec_ok(Node::Inet, cmd).expect("DNS server setup");
    }
    // One listener per address, so each answers from the address it was asked on.
    let dns = f.spawn_python(
        Node::Inet,
        UDP_LISTEN,
        &["203.0.113.53", "53", "60", "echo"],
    );
    let peer = f.spawn_python(
        Node::Inet,
        UDP_LISTEN,
        &["203.0.113.50", "53", "60", "echo"],
    );
    let ask = |dst: &str, msg: &str| {
        let out = f.python(
            Node::Cpe,
            UDP_SEND,
            &[dst, "53", msg],
            Duration::from_secs(15),
        );
        assert!(
            out.status.success(),
            "no answer from {dst}: {}",
            f.ctl(&["stats"])
        );
        stdout(&out)
    };
    let direct = ask("203.0.113.53", "bypassed");
    assert!(
        direct.starts_with("100.64.0.2:") && direct.contains("from 203.0.113.53:53"),
        "{direct}"
    );
    assert!(dns.log().contains("bypassed 100.64.0.2:"), "{}", dns.log());
    assert_eq!(f.ctl(&["mappings"]), "", "no binding for bypassed traffic");
    let translated = ask("203.0.113.50", "translated");
    assert!(translated.starts_with("198.51.100."), "{translated}");
    assert!(
        peer.log().contains("translated 198.51.100."),
        "{}",
        peer.log()
    );
    assert!(f.metric("cgn_dataplane_bypassed_packets_total") >= 1);
}

// `ctl pool` renumbering: the TUN routes follow the pool (the new prefix is routed into the
// device, the old one no longer), so subscribers leave from the new addresses and a new MAP
// on the new pool is reachable from the Internet.
#[test]
fn ctl_pool_moves_the_tun_routes_to_the_new_pool() {
    require_privileges!();
    let f = Fixture::new(false, &[]);
    // The Internet peer's way to the new pool (the lab plan routes only 198.51.100.0/28).
    f.lab
        .exec_ok(
            Node::Inet,
            &[
                "ip",
                "route",
                "add",
                "198.51.100.16/28",
                "via",
                "203.0.113.1",
            ],
        )
        .expect("route to the new pool");
    let answer = f.ctl(&["pool", "198.51.100.16/28"]);
    assert!(
        answer.contains("pools replaced") && answer.contains("TUN routes: 198.51.100.16/28"),
        "{answer}"
    );
    let routes = f
        .lab
        .exec_ok(Node::Cgn, &["ip", "-4", "route", "show", "dev", "cgn0"])
        .expect("ip route");
    assert!(routes.contains("198.51.100.16/28"), "{routes}");
    assert!(
        !routes.contains("198.51.100.0/28"),
        "old pool still routed: {routes}"
    );

    let _udp = f.spawn_python(Node::Inet, UDP_LISTEN, &["0.0.0.0", "7000", "60", "echo"]);
    let out = f.python(
        Node::Lan,
        UDP_SEND,
        &["203.0.113.50", "7000", "renumbered"],
        Duration::from_secs(15),
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "no UDP answer: {text}\n{}",
        f.daemon_log()
    );
    let last_octet: u8 = text
        .strip_prefix("198.51.100.")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    assert!(
        (16..32).contains(&last_octet),
        "source not in the new pool: {text}"
    );

    let listener = f.spawn_python(Node::Cpe, UDP_LISTEN, &["100.64.0.2", "5002", "60"]);
    let map = f.pcpc(
        Node::Cpe,
        &["map", "--internal-port", "5002", "--lifetime", "600"],
    );
    assert!(map.contains(r#""result":"SUCCESS""#), "{map}");
    let ext = external_endpoint(&map);
    assert!(ext.starts_with("198.51.100."), "{ext}");
    let (addr, port) = ext.split_once(':').expect("addr:port");
    send_udp(&f, Node::Inet, addr, port, "to-new-pool", None);
    let log = wait_for(&listener, "to-new-pool", Duration::from_secs(5));
    assert!(log.contains("to-new-pool"), "inbound to {ext} lost: {log}");
}
