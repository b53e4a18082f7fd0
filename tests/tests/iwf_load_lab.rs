//! upnp-iwf under load and loss in the NAT444 lab (PCP upstream, nftables NAT1; cgn-sim with its
//! TUN dataplane as the CGN): 100 AddPortMappings over a CPE–CGN link losing 30 % of the
//! packets each way all end up once at the CGN, and 200 mappings from five LAN hosts are back
//! on the same external endpoints within 10 s of a CGN restart (RFC 6970 §5.10, RFC 6887
//! §14.1.3). Needs root (SKIPPED otherwise), nft, /usr/bin/python3 with
//! python3-miniupnpc. The lab is `nat444_tests::e2e::Nat444`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nat444_tests::e2e::{Nat444, PY, out, wait};
use nat444_tests::lab::{LabChild, Node};
use nat444_tests::require_privileges;

/// The raw SOAP control point bound to a chosen LAN source address.
const SOAP: &str = include_str!("iwf_soap_client.py");

/// `MAP IN` lines of the CGN's table for subscriber 100.64.0.2.
fn map_in(table: &str) -> Vec<&str> {
    table
        .lines()
        .filter(|l| l.contains("Type: MAP IN") && l.contains("[100.64.0.2:"))
        .collect()
}

/// `(protocol, external endpoint, internal port)` of a `MAP IN` line
/// (`Protocol: UDP, … ANY -> 198.51.100.3:2048[100.64.0.2:5791] …`).
fn endpoints(line: &str) -> Option<(String, String, u16)> {
    let rest = line.split("ANY -> ").nth(1)?;
    let (ext, tail) = rest.split_once('[')?;
    let internal = tail.split(']').next()?.rsplit(':').next()?.parse().ok()?;
    let proto = if line.contains("Protocol: TCP") {
        "TCP"
    } else {
        "UDP"
    };
    Some((proto.to_string(), ext.to_string(), internal))
}

/// The sorted endpoints of every `MAP IN` line of subscriber 100.64.0.2.
fn map_in_endpoints(table: &str) -> Vec<(String, String, u16)> {
    let mut v: Vec<_> = map_in(table).into_iter().filter_map(endpoints).collect();
    v.sort();
    v
}

/// What this file's tests do with the lab, beyond [`Nat444`].
trait LoadLab {
    fn soap(&self, src: &str, at: f64, args: &[&str]) -> LabChild;
    fn exchange(&self, port: u16, external: &str, msg: &str) -> (String, String);
}

impl LoadLab for Nat444 {
    /// The SOAP helper from LAN source `src`, starting at Unix time `at` (0: now).
    fn soap(&self, src: &str, at: f64, args: &[&str]) -> LabChild {
        let at = at.to_string();
        let mut argv = vec![PY, "-c", SOAP, src, &at];
        argv.extend_from_slice(args);
        self.lab.spawn(Node::Lan, &argv).expect("soap client")
    }

    /// The LAN app on UDP `port` (any LAN address), and the Internet peer sending `msg` to
    /// `external`.
    fn exchange(&self, port: u16, external: &str, msg: &str) -> (String, String) {
        let app = self
            .lab
            .spawn(Node::Lan, &["python3", "-c", APP, &port.to_string()])
            .expect("app");
        assert!(wait(5, || app.log().contains("READY")), "{}", app.log());
        let (host, ext_port) = external.split_once(':').unwrap_or_default();
        let reply = out(
            &self.lab,
            Node::Inet,
            &["python3", "-c", PEER, host, ext_port, msg],
            10,
        );
        wait(2, || app.log().contains("GOT"));
        let got = app.log();
        let _ = app.kill();
        (got, reply)
    }
}

/// LAN app: echoes every UDP datagram back from its own port and prints `GOT <peer> <data>`;
/// at most 20 s (as in iwf_lab.rs, UDP only).
const APP: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(20)
print("READY", flush=True)
end = time.time() + 20
while time.time() < end:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        break
    print("GOT %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
    s.sendto(b"echo " + data, peer)
"#;

/// Internet peer: sends one UDP message and prints `REPLY <from> <data>` or `NOREPLY`.
const PEER: &str = r#"
import socket, sys
host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(msg, (host, port))
    data, peer = s.recvfrom(2048)
    print("REPLY %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
except Exception as e:
    print("NOREPLY %s" % e, flush=True)
"#;

/// One python3-miniupnpc process (discovery once) adding UDP FIRST..FIRST+N-1 for itself, and
/// retrying an add that failed with 501 ActionFailed or an HTTP timeout up to 5 times, as
/// P2P applications do. Prints `ERR <port> <reason>` per failure, then `RETRIES n`, `OK n`.
const MINIUPNPC_BATCH: &str = r#"
import miniupnpc, sys
first, n = int(sys.argv[1]), int(sys.argv[2])
u = miniupnpc.UPnP()
u.discoverdelay = 2000
u.discover()
u.selectigd()
retries, ok = 0, 0
for port in range(first, first + n):
    for attempt in range(6):
        try:
            if u.addportmapping(port, "UDP", u.lanaddr, port, "lossy", ""):
                ok += 1
            break
        except Exception as e:
            print("ERR", port, e, flush=True)
            if str(e) not in ("ActionFailed", "Action Failed", "Miniupnpc HTTP error") or attempt == 5:
                break
            retries += 1
print("RETRIES", retries, flush=True)
print("OK", ok, flush=True)
"#;

// RFC 6970 §5.1 (501 when the PCP server does not answer in time), §5.5; RFC 6887 §8.1.1
// (retransmission), §11.3 (a retransmitted or retried MAP with the same nonce refreshes, it
// does not duplicate). With 30 % loss each way on the CPE–CGN link, an app that retries a 501
// gets every one of 100 mappings, and the CGN holds each NAT1 port exactly once.
#[test]
fn lossy_wan_100_addportmappings_each_exactly_once_on_the_cgn() {
    require_privileges!();
    let n = Nat444::start();
    // 30 % loss of every IP packet on the CPE–CGN link, each way: the CPE's packets out of
    // wan0 and the CGN's out of its inside bridge. This kernel has no netem
    // (CONFIG_NET_SCH_NETEM is not set), so nftables drops at random instead.
    for (node, dev) in [(Node::Cpe, "wan0"), (Node::Cgn, "inside0")] {
        let rules = format!(
            "table ip lossy {{\n  chain post {{ type filter hook postrouting priority 0;\n    \
             oifname \"{dev}\" numgen random mod 100 < 30 counter drop\n  }}\n}}\n"
        );
        let file = n.lab.log_dir().join(format!("lossy-{}.nft", node.name()));
        std::fs::write(&file, rules).expect("write");
        n.lab
            .exec_ok(node, &["nft", "-f", &file.to_string_lossy()])
            .expect("loss rule");
    }
    // Five apps at once (20 ports each), as on a LAN with several P2P programs: the adds
    // overlap, which also keeps the test short (each add over this link takes seconds).
    let started = Instant::now();
    let apps: Vec<_> = (0..5u16)
        .map(|i| {
            let first = (20000 + 20 * i).to_string();
            n.lab
                .spawn(Node::Lan, &[PY, "-c", MINIUPNPC_BATCH, &first, "20"])
                .expect("batch")
        })
        .collect();
    for app in &apps {
        assert!(
            app.wait_timeout(Duration::from_secs(600))
                .expect("status")
                .is_some(),
            "a batch did not finish: {}",
            app.log()
        );
    }
    let took = started.elapsed();
    let logs: Vec<String> = apps.iter().map(|a| a.log()).collect();
    let total = |key: &str| -> u32 {
        logs.iter()
            .filter_map(|l| {
                l.lines()
                    .find_map(|x| x.strip_prefix(key)?.trim().parse::<u32>().ok())
            })
            .sum()
    };
    let batch = format!(
        "RETRIES {}\nOK {}\n{}",
        total("RETRIES "),
        total("OK "),
        logs.join("\n")
    );
    let dropped = |node| out(&n.lab, node, &["nft", "list", "table", "ip", "lossy"], 5);
    eprintln!("loss rules:\n{}{}", dropped(Node::Cpe), dropped(Node::Cgn));
    let count = |key: &str| -> Option<u32> {
        batch
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    };
    let retries = count("RETRIES ").unwrap_or(u32::MAX);
    eprintln!(
        "lossy WAN: 100 AddPortMappings in {:.1} s with {retries} retries",
        took.as_secs_f64()
    );
    assert_eq!(count("OK "), Some(100), "{batch}\n{}", n.logs());
    // Deletes of abandoned attempts may still be in flight over the lossy link: wait for the
    // table to settle (bounded; not a timing requirement).
    let settled = wait(60, || map_in(&n.cgn_ctl(&["mappings"])).len() == 100);
    let table = n.cgn_ctl(&["mappings"]);
    let maps = map_in_endpoints(&table);
    let internal: BTreeSet<u16> = maps.iter().map(|m| m.2).collect();
    assert!(
        settled && maps.len() == 100,
        "{} MAP IN lines: {table}\n{batch}\n{}",
        maps.len(),
        n.logs()
    );
    assert_eq!(internal.len(), 100, "each internal port once: {maps:?}");
    assert!(
        !n.iwf.log().contains("NotAuthorized"),
        "nonces kept across retries:\n{}",
        n.iwf.log()
    );
}

// RFC 6970 §5.10; RFC 6887 §14.1.3 (ANNOUNCE after a restart, the client re-creates after a
// 0–5 s random wait), §11.3 (suggested external endpoint): 200 mappings from five LAN hosts
// (40 each, each host its own InternalClient: secure mode) are back at the CGN on the same
// external endpoints within 10 s of `cgn-sim ctl restart` (the requirement is a time, so it
// is measured on the wall clock), and inbound traffic flows again.
#[test]
fn two_hundred_mappings_from_several_lan_hosts_are_back_within_10_s_of_a_cgn_restart() {
    require_privileges!();
    let n = Nat444::start();
    let hosts = [
        "192.168.0.10",
        "192.168.0.11",
        "192.168.0.12",
        "192.168.0.13",
        "192.168.0.14",
    ];
    for h in &hosts[1..] {
        n.lab
            .exec_ok(
                Node::Lan,
                &["ip", "addr", "add", &format!("{h}/24"), "dev", "eth0"],
            )
            .expect("LAN address");
    }
    let batches: Vec<LabChild> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let first = (21000 + 100 * i).to_string();
            n.soap(h, 0.0, &["batch", &first, "40", "UDP", "2"])
        })
        .collect();
    for b in &batches {
        let _ = b.wait_timeout(Duration::from_secs(300));
        assert!(b.log().contains("OK 40"), "{}\n{}", b.log(), n.logs());
    }
    let before = map_in_endpoints(&n.cgn_ctl(&["mappings"]));
    assert_eq!(before.len(), 200, "{before:?}");
    // The §8.5 epoch check needs the CGN up a few seconds before its restart is visible.
    std::thread::sleep(Duration::from_secs(4));
    let restart = n.cgn_ctl(&["restart"]);
    assert!(restart.contains("restarted"), "{restart}");
    let started = Instant::now();
    let back = wait(30, || map_in_endpoints(&n.cgn_ctl(&["mappings"])) == before);
    let took = started.elapsed();
    eprintln!(
        "CGN restart: 200 mappings back in {:.2} s (back: {back})",
        took.as_secs_f64()
    );
    let now = map_in_endpoints(&n.cgn_ctl(&["mappings"]));
    assert!(
        back && took <= Duration::from_secs(10),
        "{} of 200 back on the same endpoints after {:.1} s\n{}",
        now.iter().filter(|m| before.contains(m)).count(),
        took.as_secs_f64(),
        n.iwf.log()
    );
    let (_, external, _) = before
        .iter()
        .find(|m| m.2 == 21000)
        .cloned()
        .unwrap_or_default();
    let (got, reply) = n.exchange(21000, &external, "after restart");
    assert!(got.contains("after restart"), "app: {got}\npeer: {reply}");
    assert!(
        reply.contains(&format!("REPLY {external} echo after restart")),
        "{reply}"
    );
}
