//! The CPE's NAT1 backend (`upnp_iwf::nat1::Nftables`) alone, in the lab without cgn-sim: the
//! cgn namespace just routes, so the CPE's WAN peer 100.64.0.1 plays the CGN. A mapping
//! UDP/TCP WAN 40000 -> 192.168.0.10:5000 carries inbound traffic and its replies, makes the
//! app's own outbound flows from :5000 leave as 100.64.0.2:40000 (ahead of the router's
//! masquerade), stops at once when removed (conntrack entries deleted), and the backend never
//! touches the router's own tables (spec `nat1-nftables.md`).
//!
//! Needs root (CAP_NET_ADMIN); skipped otherwise unless NAT444_REQUIRE_PRIVILEGED=1. A missing
//! `nft` fails the tests (it is not a reason to skip). Test traffic stays inside the
//! namespaces each test creates; every helper is bounded in time and killed by pid when the
//! lab is dropped.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nat444_tests::e2e::{UDP_LISTEN, UDP_SEND};
use nat444_tests::lab::{Lab, LabBuilder, LabChild, Node};
use nat444_tests::require_privileges;
use upnp_iwf::mapping::Protocol;
use upnp_iwf::nat1::{Nat1Backend, Nat1Error, Nat1Rule, NftConfig, Nftables, WanSide};

/// `ADDR PORT SECS`: a TCP server answering `DATA SRC:PORT` to each connection.
const TCP_SERVE: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
s.settimeout(0.2)
print('listening', flush=True)
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

/// `DST PORT [BIND_ADDR BIND_PORT]`: connects (from BIND if given; up to 5 tries within
/// 10 s), sends `hello`, prints the answer.
const TCP_CONNECT: &str = r#"
import socket, sys, time
end = time.time() + 10
err = None
for _ in range(5):
    if time.time() > end:
        break
    try:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if len(sys.argv) > 4:
            c.bind((sys.argv[3], int(sys.argv[4])))
        c.settimeout(2)
        c.connect((sys.argv[1], int(sys.argv[2])))
        c.sendall(b'hello')
        print(c.recv(200).decode())
        sys.exit(0)
    except OSError as e:
        err = e
        c.close()
        time.sleep(0.3)
print(err)
sys.exit(1)
"#;

const WAN_IFACE: &str = "wan0";
const CPE_WAN: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);

/// The router's own firewall table of the test: a masquerade of everything leaving on the
/// WAN at srcnat (100), as a plain home router has.
const ROUTER_FW: &str = "add table ip routerfw; \
    add chain ip routerfw post { type nat hook postrouting priority srcnat; }; \
    add rule ip routerfw post oifname \"wan0\" masquerade";

fn wan() -> WanSide {
    WanSide {
        iface: WAN_IFACE.into(),
        address: CPE_WAN,
    }
}

fn rule(protocol: Protocol, wan_port: u16) -> Nat1Rule {
    Nat1Rule {
        protocol,
        wan_port,
        client: CLIENT,
        client_port: 5000,
    }
}

/// Our backend, running nft inside the lab's cpe namespace.
fn backend(lab: &Lab) -> Nftables {
    Nftables::new(NftConfig {
        netns: Some(lab.namespace(Node::Cpe).expect("cpe namespace")),
        ..NftConfig::default()
    })
}

fn nft(lab: &Lab, args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    lab.exec_ok(Node::Cpe, &argv).expect("nft runs in cpe")
}

fn python(lab: &Lab, node: Node, script: &str, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["python3", "-c", script];
    argv.extend_from_slice(args);
    let out = lab
        .exec_timeout(node, &argv, Duration::from_secs(20))
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn spawn_python(lab: &Lab, node: Node, script: &str, args: &[&str]) -> LabChild {
    let mut argv = vec!["python3", "-u", "-c", script];
    argv.extend_from_slice(args);
    let child = lab.spawn(node, &argv).expect("spawn python3");
    let log = wait_for(&child, "listening", Duration::from_secs(10));
    assert!(log.contains("listening"), "helper did not start: {log}");
    child
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

fn lab_with_router_fw() -> Lab {
    let lab = LabBuilder::new().build().expect("lab builds");
    lab.exec_ok(Node::Cpe, &["nft", ROUTER_FW])
        .expect("router masquerade");
    lab
}

// spec "The two rules a mapping needs", "Stale conntrack entries", "Our table only".
#[test]
fn nat1_mapping_carries_inbound_and_outbound_and_stops_when_removed() {
    require_privileges!();
    let lab = lab_with_router_fw();
    let router_fw_before = nft(&lab, &["list", "table", "ip", "routerfw"]);
    let mut nat = backend(&lab);
    let version = nat.probe().expect("nft is installed in the cpe namespace");
    println!("nat1 lab: {version}");
    nat.reset(&wan(), &[]).expect("reset");

    let cgn_udp = spawn_python(
        &lab,
        Node::Cgn,
        UDP_LISTEN,
        &["100.64.0.1", "7000", "60", "echo"],
    );
    // Before the mapping, the app's flow from :5000 leaves masqueraded (port kept, 5000).
    let (ok, out) = python(
        &lab,
        Node::Lan,
        UDP_SEND,
        &["100.64.0.1", "7000", "before", "192.168.0.10", "5000", "3"],
    );
    assert!(ok, "{out}");
    let log = wait_for(&cgn_udp, "before ", Duration::from_secs(5));
    assert!(log.contains("before 100.64.0.2:5000"), "{log}");

    let udp = rule(Protocol::Udp, 40000);
    let tcp = rule(Protocol::Tcp, 40000);
    nat.install(&udp).expect("install UDP");
    nat.install(&tcp).expect("install TCP");
    assert_eq!(nat.installed().expect("read back"), vec![tcp, udp]);
    // The client's flows from :5000 are stale now; the driver deletes them after the change
    // (off the reply's path), as here. The UDP flow of (b) is one of them.
    let stale = nat.take_stale_flows().expect("stale flows after install");
    assert_eq!(stale.rules().copied().collect::<Vec<_>>(), vec![udp, tcp]);
    assert!(stale.forget() >= 1, "the UDP flow from :5000 was deleted");
    assert!(nat.take_stale_flows().is_none(), "taken once");

    // (c) The same flow (same 5-tuple, conntrack entry deleted by install) and new flows from
    // :5000 now leave as 100.64.0.2:40000: our SNAT at srcnat-10 wins over the masquerade.
    let (ok, out) = python(
        &lab,
        Node::Lan,
        UDP_SEND,
        &["100.64.0.1", "7000", "after", "192.168.0.10", "5000", "3"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("from 100.64.0.1:7000"), "{out}");
    let log = wait_for(&cgn_udp, "after ", Duration::from_secs(5));
    assert!(log.contains("after 100.64.0.2:40000"), "{log}");
    drop(cgn_udp);
    let cgn_tcp = spawn_python(&lab, Node::Cgn, TCP_SERVE, &["100.64.0.1", "7001", "60"]);
    let (ok, out) = python(
        &lab,
        Node::Lan,
        TCP_CONNECT,
        &["100.64.0.1", "7001", "192.168.0.10", "5000"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("hello 100.64.0.2:40000"), "{out}");
    drop(cgn_tcp);

    // (a) Inbound to WAN:40000 reaches the app on 192.168.0.10:5000, and (b) its reply from
    // :5000 comes back from 100.64.0.2:40000.
    let lan_udp = spawn_python(
        &lab,
        Node::Lan,
        UDP_LISTEN,
        &["192.168.0.10", "5000", "60", "echo"],
    );
    let (ok, out) = python(
        &lab,
        Node::Cgn,
        UDP_SEND,
        &["100.64.0.2", "40000", "inbound", "100.64.0.1", "6000", "3"],
    );
    assert!(ok, "{out}\n{}", lan_udp.log());
    assert!(
        out.contains("100.64.0.1:6000 from 100.64.0.2:40000"),
        "{out}"
    );
    assert!(
        lan_udp.log().contains("inbound 100.64.0.1:6000"),
        "{}",
        lan_udp.log()
    );
    let lan_tcp = spawn_python(&lab, Node::Lan, TCP_SERVE, &["192.168.0.10", "5000", "60"]);
    let (ok, out) = python(&lab, Node::Cgn, TCP_CONNECT, &["100.64.0.2", "40000"]);
    assert!(ok, "{out}");
    assert!(out.contains("hello 100.64.0.1:"), "{out}");

    // (d) After remove, inbound stops at once, even for the same 5-tuple (its conntrack entry
    // is deleted by the stale-flow cleanup); our table stays, empty, and the TCP mapping is untouched.
    nat.remove(&udp).expect("remove UDP");
    assert_eq!(nat.installed().expect("read back"), vec![tcp]);
    nat.take_stale_flows()
        .expect("stale flows after remove")
        .forget();
    let (ok, out) = python(
        &lab,
        Node::Cgn,
        UDP_SEND,
        &["100.64.0.2", "40000", "late", "100.64.0.1", "6000", "2"],
    );
    assert!(!ok, "inbound still arrives after remove: {out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!lan_udp.log().contains("late"), "{}", lan_udp.log());
    let (ok, out) = python(&lab, Node::Cgn, TCP_CONNECT, &["100.64.0.2", "40000"]);
    assert!(
        ok && out.contains("hello 100.64.0.1:"),
        "TCP mapping disturbed: {out}"
    );
    nat.remove(&tcp).expect("remove TCP");
    nat.remove(&tcp).expect("removing again is no error");
    assert_eq!(nat.installed().expect("read back"), vec![]);
    let tables = nft(&lab, &["list", "tables"]);
    assert!(tables.contains("table ip upnp_iwf"), "{tables}");
    let ours = nft(&lab, &["list", "table", "ip", "upnp_iwf"]);
    assert!(!ours.contains("dnat") && !ours.contains("snat"), "{ours}");
    drop(lan_tcp);
    drop(lan_udp);

    // (e) shutdown deletes our table only.
    nat.shutdown().expect("shutdown");
    let tables = nft(&lab, &["list", "tables"]);
    assert!(!tables.contains("upnp_iwf"), "{tables}");
    assert_eq!(
        nft(&lab, &["list", "table", "ip", "routerfw"]),
        router_fw_before
    );
    println!("nat1 lab: inbound, replies, outbound SNAT, remove and shutdown verified");
}

// spec "Our table only": a crash leaves our table behind; reset rebuilds it with exactly the
// stored rules.
#[test]
fn nat1_reset_after_a_crash_leaves_exactly_the_stored_rules() {
    require_privileges!();
    let lab = lab_with_router_fw();
    let mut crashed = backend(&lab);
    crashed.reset(&wan(), &[]).expect("reset");
    for port in [40000, 40001, 40002] {
        let r = Nat1Rule {
            client_port: port - 35000,
            ..rule(Protocol::Udp, port)
        };
        crashed.install(&r).expect("install");
    }
    crashed
        .install(&rule(Protocol::Tcp, 40000))
        .expect("install");
    // The crash: no shutdown. Someone also left a chain of their own in our table.
    drop(crashed);
    nft(&lab, &["add", "chain", "ip", "upnp_iwf", "leftover"]);

    let mut restarted = backend(&lab);
    let keep = Nat1Rule {
        client_port: 5001,
        ..rule(Protocol::Udp, 40001)
    };
    restarted.reset(&wan(), &[keep]).expect("reset");
    assert_eq!(restarted.installed().expect("read back"), vec![keep]);
    let ours = nft(&lab, &["list", "table", "ip", "upnp_iwf"]);
    assert_eq!(ours.matches("dnat to").count(), 1, "{ours}");
    assert_eq!(ours.matches("snat to").count(), 1, "{ours}");
    assert!(
        ours.contains("udp dport 40001 dnat to 192.168.0.10:5001"),
        "{ours}"
    );
    assert!(!ours.contains("leftover"), "{ours}");
    assert!(nft(&lab, &["list", "tables"]).contains("table ip routerfw"));
    restarted.shutdown().expect("shutdown");
}

// spec "Conflicts with the router's own port forwards" → UPnP 729.
#[test]
fn nat1_router_port_forward_of_tcp_5000_conflicts() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab builds");
    lab.exec_ok(
        Node::Cpe,
        &[
            "nft",
            "add table ip fw4; \
             add chain ip fw4 dstnat { type nat hook prerouting priority dstnat; }; \
             add rule ip fw4 dstnat iifname \"wan0\" tcp dport 5000 dnat to 192.168.0.20:5000",
        ],
    )
    .expect("fw4 port forward");
    let mut nat = backend(&lab);
    nat.reset(&wan(), &[]).expect("reset");
    let tcp5000 = Nat1Rule {
        wan_port: 5000,
        ..rule(Protocol::Tcp, 5000)
    };
    assert_eq!(
        nat.install(&tcp5000),
        Err(Nat1Error::ConflictWithOtherMechanisms {
            protocol: Protocol::Tcp,
            wan_port: 5000,
            table: "ip fw4".into(),
        })
    );
    let udp5000 = Nat1Rule {
        protocol: Protocol::Udp,
        ..tcp5000
    };
    nat.install(&udp5000).expect("UDP 5000 is free");
    assert_eq!(nat.installed().expect("read back"), vec![udp5000]);
    nat.shutdown().expect("shutdown");
    let fw4 = nft(&lab, &["list", "table", "ip", "fw4"]);
    assert!(
        fw4.contains("tcp dport 5000 dnat to 192.168.0.20:5000"),
        "{fw4}"
    );

    // A missing nft inside the namespace is Unavailable, plainly.
    let missing = Nftables::new(NftConfig {
        netns: Some(lab.namespace(Node::Cpe).expect("cpe")),
        nft_program: PathBuf::from("/nonexistent/nft"),
        ..NftConfig::default()
    });
    assert!(
        matches!(missing.probe(), Err(Nat1Error::Unavailable(_))),
        "{:?}",
        missing.probe()
    );
}

/// Polls `cond` every 20 ms for at most 5 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

// spec "Conflicts with the router's own port forwards", with the listing kept between
// installs (nft monitor): an install in an unchanged ruleset runs one nft process (no
// listing); a port forward the router adds afterwards is still found (the monitor's event
// makes the next install list again) and answered as a conflict; our table deleted behind
// our back is rebuilt with every mapping by the next install.
#[test]
fn nat1_listing_is_kept_until_the_router_changes_its_ruleset() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab builds");
    std::fs::create_dir_all(lab.log_dir()).expect("log directory");
    let log = lab.log_dir().join("nft-calls.log");
    let wrapper = lab.log_dir().join("nft-logged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec nft \"$@\"\n",
            log.display()
        ),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut nat = Nftables::new(NftConfig {
        netns: Some(lab.namespace(Node::Cpe).expect("cpe namespace")),
        nft_program: wrapper,
        conntrack_program: None,
        ..NftConfig::default()
    });
    nat.reset(&wan(), &[]).expect("reset");
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    let first = Nat1Rule {
        wan_port: 40000,
        ..rule(Protocol::Udp, 40000)
    };
    nat.install(&first).expect("first install");
    assert!(calls().contains("-j list chains"), "{}", calls());
    // The monitor has heard our table change (the reset's rebuild, or at the latest this
    // install's rules); the install after that lists once more and keeps the listing.
    assert!(
        eventually(|| nat.ruleset_changes().is_some()),
        "the monitor hears the kernel"
    );
    let warm = Nat1Rule {
        wan_port: 40004,
        client_port: 5004,
        ..first
    };
    nat.install(&warm)
        .expect("install after the monitor synced");
    std::fs::write(&log, "").expect("clear");
    let second = Nat1Rule {
        wan_port: 40001,
        client_port: 5001,
        ..first
    };
    nat.install(&second).expect("second install");
    let made = calls();
    assert!(
        !made.contains("list"),
        "no listing in a quiet ruleset: {made}"
    );
    assert_eq!(made.lines().count(), 1, "one nft process: {made}");

    let before = nat.ruleset_changes().expect("synced");
    nft(
        &lab,
        &["add table ip fw4; \
           add chain ip fw4 dstnat { type nat hook prerouting priority dstnat; }; \
           add rule ip fw4 dstnat iifname \"wan0\" tcp dport 40002 dnat to 192.168.0.20:5000"],
    );
    assert!(
        eventually(|| nat.ruleset_changes().is_some_and(|g| g > before)),
        "the monitor saw the router's change"
    );
    let forwarded = Nat1Rule {
        wan_port: 40002,
        client_port: 5002,
        ..rule(Protocol::Tcp, 40002)
    };
    assert_eq!(
        nat.install(&forwarded),
        Err(Nat1Error::ConflictWithOtherMechanisms {
            protocol: Protocol::Tcp,
            wan_port: 40002,
            table: "ip fw4".into(),
        })
    );

    let before = nat.ruleset_changes().expect("synced");
    nft(&lab, &["delete", "table", "ip", "upnp_iwf"]);
    assert!(eventually(|| nat
        .ruleset_changes()
        .is_some_and(|g| g > before)));
    let third = Nat1Rule {
        wan_port: 40003,
        client_port: 5003,
        ..first
    };
    nat.install(&third).expect("install rebuilds");
    let mut have = nat.installed().expect("read back");
    have.sort();
    let mut want = vec![first, second, third, warm];
    want.sort();
    assert_eq!(have, want);
    nat.shutdown().expect("shutdown");
}
