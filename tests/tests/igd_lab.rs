//! upnp-iwf on the CPE of the namespace lab, driven from the LAN host by real, unmodified
//! clients over real SSDP multicast: upnpc (discovery + -s/-a/-l/-d), python3-miniupnpc,
//! gssdp-discover, igd-next (multicast search) and rupnp (GENA), and checked from the WAN
//! side to be invisible there. Needs root (SKIPPED otherwise) and a built `upnp-iwf`
//! (`cargo test --workspace` builds it; alone: `cargo build -p upnp-iwf`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nat444_tests::lab::{Lab, LabBuilder, LabChild, Node};
use nat444_tests::require_privileges;

const LOCATION: &str = "http://192.168.0.1:5000/rootDesc.xml";
const PY: &str = "/usr/bin/python3";

fn iwf_binary() -> PathBuf {
    nat444_tests::bins::workspace_bin("upnp-iwf", "upnp-iwf")
}

fn start_iwf(lab: &Lab, extra: &[&str]) -> LabChild {
    let bin = iwf_binary();
    let bin = bin.to_string_lossy().into_owned();
    let mut argv = vec![
        bin.as_str(),
        "--lan",
        "lan0",
        "--wan",
        "wan0",
        "--upstream",
        "none",
        "--ctl",
        "none",
        "--nat",
        "none",
        "--external-address",
        "198.51.100.1",
    ];
    argv.extend_from_slice(extra);
    let child = lab.spawn(Node::Cpe, &argv).expect("upnp-iwf starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.log().contains("serving UPnP IGD") {
            return child;
        }
        assert!(
            child.try_wait().expect("status").is_none(),
            "upnp-iwf exited:\n{}",
            child.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("upnp-iwf did not come up:\n{}", child.log());
}

fn run(lab: &Lab, node: Node, argv: &[&str], secs: u64) -> String {
    let out = lab
        .exec_timeout(node, argv, Duration::from_secs(secs))
        .expect("command runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// upnp-igd.md §6.1: upnpc discovers by multicast and drives the IGD; secure mode refuses a
// foreign InternalClient with 606; python3-miniupnpc's discover() finds it too.
#[test]
fn upnpc_and_python_miniupnpc_discover_and_map_from_the_lan() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    let iwf = start_iwf(&lab, &[]);
    // The lab's external address is in TEST-NET-2 (198.51.100.0/24), which miniupnpc counts as
    // reserved, so it truthfully reports a "(not connected?)" IGD (upnp-igd.md §6.1); `-i`
    // makes upnpc use it anyway.
    let out = run(&lab, Node::Lan, &["upnpc", "-i", "-s"], 20);
    assert!(
        out.contains(&format!("desc: {LOCATION}")),
        "{out}\n{}",
        iwf.log()
    );
    assert!(
        out.contains("st: urn:schemas-upnp-org:device:InternetGatewayDevice:1"),
        "{out}"
    );
    assert!(
        out.contains("Found a (not connected?) IGD : http://192.168.0.1:5000/ctl/IPConn"),
        "{out}"
    );
    assert!(out.contains("Local LAN ip address : 192.168.0.10"), "{out}");
    assert!(out.contains("Status : Connected"), "{out}");
    assert!(out.contains("ExternalIPAddress = 198.51.100.1"), "{out}");
    let out = run(
        &lab,
        Node::Lan,
        &[
            "upnpc",
            "-i",
            "-e",
            "lab game",
            "-a",
            "192.168.0.10",
            "5000",
            "5000",
            "UDP",
            "3600",
        ],
        20,
    );
    assert!(out.contains("external 198.51.100.1:5000 UDP is redirected to internal 192.168.0.10:5000 (duration=3600)"), "{out}");
    let out = run(
        &lab,
        Node::Lan,
        &["upnpc", "-i", "-a", "192.168.0.99", "5001", "5001", "UDP"],
        20,
    );
    assert!(out.contains("606"), "secure mode: {out}");
    let out = run(&lab, Node::Lan, &["upnpc", "-i", "-l"], 20);
    assert!(
        out.contains(" 0 UDP  5000->192.168.0.10:5000  'lab game' '' "),
        "{out}"
    );
    let script = "import miniupnpc\nu=miniupnpc.UPnP()\nu.discoverdelay=2000\nprint('found', u.discover())\n\
                  u.selectigd()\nprint('lan', u.lanaddr)\nprint('ext', u.externalipaddress())\n\
                  print('add', u.addportmapping(6000, 'TCP', u.lanaddr, 6000, 'py', ''))\n\
                  print('n', len([1 for i in range(10) if u.getgenericportmapping(i)]))\n";
    let out = run(&lab, Node::Lan, &[PY, "-c", script], 30);
    assert!(out.contains("lan 192.168.0.10"), "{out}");
    assert!(out.contains("ext 198.51.100.1"), "{out}");
    assert!(out.contains("add True"), "{out}");
    assert!(out.contains("n 2"), "{out}");
    let out = run(&lab, Node::Lan, &["upnpc", "-i", "-d", "5000", "UDP"], 20);
    assert!(
        out.contains("UPNP_DeletePortMapping() returned : 0"),
        "{out}"
    );
    drop(iwf);
}

const LISTEN: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('239.255.255.250', 1900))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack('4s4s', socket.inet_aton('239.255.255.250'), socket.inet_aton('192.168.0.10')))
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
alive, bye, sizes, srcs, first = {}, {}, [], set(), None
while time.time() < end:
    try:
        data, src = s.recvfrom(4096)
    except socket.timeout:
        continue
    text = data.decode('latin-1')
    if not text.startswith('NOTIFY'):
        continue
    h = {l.split(':',1)[0].strip().upper(): l.split(':',1)[1].strip() for l in text.split('\r\n')[1:] if ':' in l}
    d = alive if h.get('NTS') == 'ssdp:alive' else bye
    d[h.get('NT')] = d.get(h.get('NT'), 0) + 1
    sizes.append(len(data)); srcs.add('%s:%d' % src)
    if h.get('NTS') == 'ssdp:alive': print('LOCATION', h.get('LOCATION'))
print('ALIVE_NT', len(alive), 'ALIVE_MSGS', sum(alive.values()))
print('BYE_NT', len(bye), 'BYE_MSGS', sum(bye.values()))
print('MAXSIZE', max(sizes) if sizes else 0)
print('SOURCES', sorted(srcs))
"#;

// Checklist: the alive set (10 NTs) twice at start; byebye for every alive NT on clean
// shutdown (SIGTERM); ≤ 1024 bytes; sent from 192.168.0.1:1900. gssdp-discover sees the
// device available and then unavailable.
#[test]
fn announcements_at_start_and_byebye_on_sigterm_reach_the_lan() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    let listener = lab
        .spawn(Node::Lan, &[PY, "-c", LISTEN, "4"])
        .expect("listener");
    let gssdp = lab
        .spawn(
            Node::Lan,
            &[
                "gssdp-discover",
                "-i",
                "eth0",
                "-n",
                "4",
                "-m",
                "all",
                "-t",
                "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
            ],
        )
        .expect("gssdp-discover");
    std::thread::sleep(Duration::from_millis(500));
    let iwf = start_iwf(&lab, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-TERM", &iwf.pid().to_string()])
        .status()
        .expect("kill -TERM <pid>");
    assert!(status.success());
    let exit = iwf.wait_timeout(Duration::from_secs(5)).expect("wait");
    assert!(
        exit.is_some_and(|s| s.success()),
        "clean exit:\n{}",
        iwf.log()
    );
    listener
        .wait_timeout(Duration::from_secs(6))
        .expect("listener ends");
    gssdp
        .wait_timeout(Duration::from_secs(6))
        .expect("gssdp ends");
    let out = listener.log();
    assert!(out.contains(&format!("LOCATION {LOCATION}")), "{out}");
    assert!(
        out.contains("ALIVE_NT 10 ALIVE_MSGS 20"),
        "alive set twice:\n{out}"
    );
    assert!(out.contains("BYE_NT 10 BYE_MSGS 10"), "byebye set:\n{out}");
    assert!(out.contains("SOURCES ['192.168.0.1:1900']"), "{out}");
    let max: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("MAXSIZE "))
        .and_then(|v| v.trim().parse().ok())
        .expect("size");
    assert!(max <= 1024, "{max}");
    let g = gssdp.log();
    assert!(g.contains("resource available"), "{g}");
    assert!(g.contains(LOCATION), "{g}");
    assert!(
        g.contains("resource unavailable"),
        "byebye seen by gssdp:\n{g}"
    );
}

const PROBE: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 3:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[3]))
msg = 'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ' + sys.argv[2] + '\r\n\r\n'
t0 = time.time()
s.sendto(msg.encode(), (sys.argv[1], 1900))
s.settimeout(0.2)
end = time.time() + 1.5
while time.time() < end:
    try:
        data, src = s.recvfrom(2048)
        print('REPLY from %s:%d after %.0f ms' % (src[0], src[1], (time.time() - t0) * 1000))
        print(data.decode('latin-1'))
    except socket.timeout:
        pass
    except OSError as e:
        print('ERR', e)
        break
print('DONE')
"#;

// Checklist: answers a unicast M-SEARCH to the LAN IP:1900 from port 1900; joined on LAN
// interfaces only — nothing answers a search from the WAN side, and HTTP is not reachable
// on the WAN address.
#[test]
fn lan_unicast_search_is_answered_and_the_wan_side_sees_nothing() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    let iwf = start_iwf(&lab, &[]);
    let out = run(
        &lab,
        Node::Lan,
        &[PY, "-c", PROBE, "192.168.0.1", "upnp:rootdevice"],
        10,
    );
    assert!(
        out.contains("REPLY from 192.168.0.1:1900"),
        "{out}\n{}",
        iwf.log()
    );
    assert!(out.contains(&format!("LOCATION: {LOCATION}")), "{out}");
    let out = run(
        &lab,
        Node::Lan,
        &[
            PY,
            "-c",
            PROBE,
            "239.255.255.250",
            "ssdp:all",
            "192.168.0.10",
        ],
        10,
    );
    assert_eq!(
        out.matches("REPLY from 192.168.0.1:1900").count(),
        10,
        "{out}"
    );
    let out = run(
        &lab,
        Node::Cgn,
        &[PY, "-c", PROBE, "239.255.255.250", "ssdp:all", "100.64.0.1"],
        10,
    );
    assert!(
        !out.contains("REPLY"),
        "WAN multicast search answered:\n{out}"
    );
    let out = run(
        &lab,
        Node::Cgn,
        &[PY, "-c", PROBE, "100.64.0.2", "ssdp:all"],
        10,
    );
    assert!(
        !out.contains("REPLY"),
        "WAN unicast search answered:\n{out}"
    );
    let out = run(
        &lab,
        Node::Cgn,
        &["upnpc", "-u", "http://100.64.0.2:5000/rootDesc.xml", "-s"],
        15,
    );
    assert!(!out.contains("Found valid IGD"), "{out}");
    drop(iwf);
}

// igd-next (multicast search with its compact headers) and rupnp (GENA) as the LAN host:
// this test re-runs its own binary inside the lan namespace for `lan_rust_clients_helper`.
#[test]
fn igd_next_and_rupnp_work_from_the_lan_including_gena_events() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    let iwf = start_iwf(&lab, &[]);
    let exe = std::env::current_exe().expect("exe");
    let exe = exe.to_string_lossy().into_owned();
    let out = run(
        &lab,
        Node::Lan,
        &[
            "env",
            "IGD_LAB_HELPER=1",
            &exe,
            "--exact",
            "lan_rust_clients_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        60,
    );
    assert!(
        out.contains("HELPER OK"),
        "{out}\n--- upnp-iwf log ---\n{}",
        iwf.log()
    );
    assert!(out.contains("1 passed"), "{out}");
}

#[test]
#[ignore = "runs inside the lab's lan namespace, started by igd_next_and_rupnp_work_from_the_lan_including_gena_events"]
fn lan_rust_clients_helper() {
    if std::env::var_os("IGD_LAB_HELPER").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use futures_util::TryStreamExt;
        use igd_next::PortMappingProtocol;
        // igd-next: default multicast search (IGD:1, compact headers).
        let gw = igd_next::aio::tokio::search_gateway(igd_next::SearchOptions {
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .await
        .expect("igd-next finds the gateway by multicast");
        assert_eq!(gw.root_url, "/rootDesc.xml");
        assert_eq!(gw.addr.to_string(), "192.168.0.1:5000");
        let ip = gw.get_external_ip().await.expect("external ip");
        assert_eq!(ip.to_string(), "198.51.100.1");
        // rupnp: description, SCPD-driven action, GENA subscription.
        let url: rupnp::http::Uri = LOCATION.parse().expect("uri");
        let device = rupnp::Device::from_url(url.clone()).await.expect("rupnp reads the description");
        let urn = rupnp::ssdp::URN::service("schemas-upnp-org", "WANIPConnection", 2);
        let svc = device.find_service(&urn).expect("WANIPConnection:2").clone();
        let (sid, stream) = svc.subscribe(&url, 1800).await.expect("SUBSCRIBE accepted");
        let mut stream = std::pin::pin!(stream);
        let initial = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("initial event in time")
            .expect("event parses")
            .expect("stream open");
        assert_eq!(initial.get("ConnectionStatus").map(String::as_str), Some("Connected"));
        assert_eq!(initial.get("PortMappingNumberOfEntries").map(String::as_str), Some("0"));
        let local = "192.168.0.10:7000".parse().expect("addr");
        gw.add_port(PortMappingProtocol::UDP, 7000, local, 3600, "igd-next")
            .await
            .expect("igd-next add_port");
        let change = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("change event in time")
            .expect("event parses")
            .expect("stream open");
        assert_eq!(change.get("PortMappingNumberOfEntries").map(String::as_str), Some("1"));
        let out = svc
            .action(&url, "GetSpecificPortMappingEntry", "<NewRemoteHost></NewRemoteHost><NewExternalPort>7000</NewExternalPort><NewProtocol>UDP</NewProtocol>")
            .await
            .expect("rupnp action");
        assert_eq!(out.get("NewInternalClient").map(String::as_str), Some("192.168.0.10"));
        svc.renew_subscription(&url, &sid, 1800).await.expect("renew");
        svc.unsubscribe(&url, &sid).await.expect("unsubscribe");
        assert!(svc.unsubscribe(&url, &sid).await.is_err(), "second UNSUBSCRIBE is 412");
        gw.remove_port(PortMappingProtocol::UDP, 7000).await.expect("remove");
    });
    println!("HELPER OK");
}

const LISTEN_EACH: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('239.255.255.250', 1900))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack('4s4s', socket.inet_aton('239.255.255.250'), socket.inet_aton('192.168.0.10')))
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        data, src = s.recvfrom(4096)
    except socket.timeout:
        continue
    text = data.decode('latin-1')
    if not text.startswith('NOTIFY'):
        continue
    h = {l.split(':',1)[0].strip().upper(): l.split(':',1)[1].strip() for l in text.split('\r\n')[1:] if ':' in l}
    print('N', h.get('NTS'), h.get('BOOTID.UPNP.ORG'), h.get('LOCATION', '-'), flush=True)
"#;

// upnp-igd.md §1.8 / checklist: on a LAN address change the old announcements are revoked,
// BOOTID increases and the device is announced again with the new LOCATION.
#[test]
fn lan_address_change_revokes_bumps_bootid_and_reannounces() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    let listener = lab
        .spawn(Node::Lan, &[PY, "-c", LISTEN_EACH, "9"])
        .expect("listener");
    std::thread::sleep(Duration::from_millis(300));
    let iwf = start_iwf(&lab, &[]);
    std::thread::sleep(Duration::from_millis(1000));
    lab.exec_ok(
        Node::Cpe,
        &["ip", "addr", "del", "192.168.0.1/24", "dev", "lan0"],
    )
    .expect("del");
    lab.exec_ok(
        Node::Cpe,
        &["ip", "addr", "add", "192.168.0.2/24", "dev", "lan0"],
    )
    .expect("add");
    listener
        .wait_timeout(Duration::from_secs(12))
        .expect("listener ends");
    let out = listener.log();
    let events: Vec<(String, u64, String)> = out
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some("N")).then_some(())?;
            Some((
                p.next()?.to_owned(),
                p.next()?.parse().ok()?,
                p.next()?.to_owned(),
            ))
        })
        .collect();
    let first = events
        .iter()
        .find(|e| e.0 == "ssdp:alive" && e.2 == LOCATION)
        .unwrap_or_else(|| panic!("initial alive:\n{out}\n{}", iwf.log()));
    let new_loc = "http://192.168.0.2:5000/rootDesc.xml";
    let moved = events
        .iter()
        .find(|e| e.0 == "ssdp:alive" && e.2 == new_loc)
        .unwrap_or_else(|| panic!("alive at the new address:\n{out}\n{}", iwf.log()));
    assert!(moved.1 > first.1, "BOOTID grew: {} → {}", first.1, moved.1);
    let bye = events
        .iter()
        .position(|e| e.0 == "ssdp:byebye")
        .unwrap_or_else(|| panic!("byebye:\n{out}"));
    let moved_at = events.iter().position(|e| e.2 == new_loc).unwrap_or(0);
    assert!(bye < moved_at, "byebye before the new alive:\n{out}");
    let desc = run(&lab, Node::Lan, &["upnpc", "-i", "-u", new_loc, "-s"], 15);
    assert!(desc.contains("Status : Connected"), "{desc}");
}
