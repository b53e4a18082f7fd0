//! Real, unmodified clients against an in-process daemon on 127.0.0.1: `upnpc` (Debian
//! miniupnpc), the python3-miniupnpc module and the igd-next crate. Each test checks what
//! the client prints or returns, as a user would see it. A client that is not installed makes
//! the test print SKIPPED on a laptop, and fail when `NAT444_REQUIRE_PRIVILEGED=1` (CI, which
//! installs them), as the namespace tests do.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use std::time::Instant;
use upnp_iwf::mapping::{
    AddRequest, Lease, MappingKey, PortChoice, PortMapping, PortMappingBackend, Protocol,
};

async fn upnpc(url: &str, args: &[&str]) -> String {
    let mut a = vec!["-u".to_owned(), url.to_owned()];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = run_async("upnpc", a, Duration::from_secs(20)).await;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

// Checklist: `upnpc -u … -s` prints connection type, status, bitrates, external IP and
// counters without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upnpc_status_prints_every_field_without_errors() {
    if !require_program("upnpc", "apt-get install miniupnpc") {
        return;
    }
    let d = daemon(|_| {}).await;
    let out = upnpc(&d.location(), &["-s"]).await;
    for needle in [
        "Found valid IGD",
        "Connection Type : IP_Routed",
        "Status : Connected",
        "LastConnectionError : ERROR_NONE",
        "MaxBitRateDown : 1000000000 bps",
        "ExternalIPAddress = 198.51.100.1",
        "Bytes:   Sent:",
        "Packets: Sent:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.to_lowercase().contains("failed"), "{out}");
    d.stop().await;
}

// Issue #13 item 5 (secure defaults; upnp-igd.md §4.2: a rule refusal is 606 on IGD:2):
// with no permission rule configured, `upnpc -a <me> 80 80 TCP` from a LAN host is refused
// and nothing is mapped; once a rule allows TCP 80 for that host the same command succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upnpc_add_of_tcp_80_is_refused_without_a_rule_and_allowed_with_one() {
    if !require_program("upnpc", "apt-get install miniupnpc") {
        return;
    }
    let d = daemon(|_| {}).await;
    let out = upnpc(&d.location(), &["-a", "127.0.0.1", "80", "80", "TCP"]).await;
    assert!(
        out.contains(
            "AddPortMapping(80, 80, 127.0.0.1) failed with code 606 (Action not authorized)"
        ),
        "{out}"
    );
    let out = upnpc(&d.location(), &["-l"]).await;
    assert!(!out.contains("80->127.0.0.1:80"), "{out}");
    d.stop().await;

    let d = daemon(|c| {
        c.policy.rules = vec!["allow 80 127.0.0.1/32 80".parse().expect("rule")];
    })
    .await;
    let out = upnpc(&d.location(), &["-a", "127.0.0.1", "80", "80", "TCP"]).await;
    assert!(
        out.contains("external 198.51.100.1:80 TCP is redirected to internal 127.0.0.1:80"),
        "{out}"
    );
    d.stop().await;
}

// upnpc -e -a, -l (ends at 713), -L (CDATA listing), -d, -n (AddAny), -N (range), -r.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upnpc_add_list_delete_and_range_operations() {
    if !require_program("upnpc", "apt-get install miniupnpc") {
        return;
    }
    let d = daemon(|_| {}).await;
    let url = d.location();
    let out = upnpc(
        &url,
        &[
            "-e",
            "game & <voice>",
            "-a",
            "127.0.0.1",
            "5000",
            "5000",
            "UDP",
            "3600",
        ],
    )
    .await;
    assert!(
        out.contains("external 198.51.100.1:5000 UDP is redirected to internal 127.0.0.1:5000 (duration=3600)"),
        "{out}"
    );
    let out = upnpc(&url, &["-a", "127.0.0.1", "6000", "6001", "tcp"]).await;
    assert!(out.contains("external 198.51.100.1:6001 TCP is redirected to internal 127.0.0.1:6000 (duration=604800)"), "lease 0 → 604800 on IGD:2:\n{out}");
    let out = upnpc(&url, &["-l"]).await;
    // upnpc sent the description unescaped; we answer well-formed XML, and miniupnpc (which
    // decodes no entities, upnp-igd.md §6.1) prints the escaped text.
    assert!(
        out.contains(" 0 UDP  5000->127.0.0.1:5000  'game &amp; &lt;voice&gt;' '' "),
        "{out}"
    );
    assert!(
        out.contains(" 1 TCP  6001->127.0.0.1:6000  'libminiupnpc' '' 604800"),
        "{out}"
    );
    assert!(
        out.contains("GetGenericPortMappingEntry() returned 713 (SpecifiedArrayIndexInvalid)"),
        "{out}"
    );
    let out = upnpc(&url, &["-L"]).await;
    assert!(
        out.contains("5000->127.0.0.1:5000 UDP") || out.contains("UDP  5000->127.0.0.1:5000"),
        "-L lists the UDP mapping:\n{out}"
    );
    assert!(out.contains("6001"), "-L lists the TCP mapping:\n{out}");
    // AddAnyPortMapping on a port held by another LAN host gets the next free port.
    let other = PortMapping {
        key: MappingKey {
            external_port: 6500,
            protocol: Protocol::Tcp,
            remote_host: None,
        },
        internal_client: Ipv4Addr::new(127, 0, 0, 2),
        internal_port: 6500,
        enabled: true,
        description: "other host".into(),
        lease: Lease::Permanent,
        owner: Ipv4Addr::new(127, 0, 0, 2),
    };
    d.server
        .igd
        .backend
        .add(
            Instant::now(),
            AddRequest {
                mapping: other,
                choice: PortChoice::Exact,
            },
        )
        .await
        .expect("other host's mapping");
    let out = upnpc(&url, &["-n", "127.0.0.1", "7000", "6500", "TCP"]).await;
    assert!(
        out.contains("external 198.51.100.1:6501 TCP is redirected to internal 127.0.0.1:7000"),
        "AddAny picks the next free port:\n{out}"
    );
    let out = upnpc(&url, &["-a", "127.0.0.1", "7000", "6500", "TCP"]).await;
    assert!(
        out.contains("failed with code 718 (ConflictInMappingEntry)"),
        "{out}"
    );
    let out = upnpc(&url, &["-d", "5000", "UDP"]).await;
    assert!(
        out.contains("UPNP_DeletePortMapping() returned : 0"),
        "{out}"
    );
    let out = upnpc(&url, &["-d", "5000", "UDP"]).await;
    assert!(
        out.contains("714"),
        "second delete is NoSuchEntryInArray:\n{out}"
    );
    let out = upnpc(&url, &["-N", "6000", "6600", "TCP"]).await;
    assert!(
        out.contains("UPNP_DeletePortMappingRange() returned : 0"),
        "{out}"
    );
    let left = d.server.igd.backend.list(Instant::now());
    assert_eq!(
        left.len(),
        1,
        "only the other host's mapping is left: {left:?}"
    );
    let out = upnpc(&url, &["-r", "8000", "UDP", "8001", "9001", "TCP"]).await;
    assert!(
        out.contains("external 198.51.100.1:8000 UDP is redirected to internal 127.0.0.1:8000"),
        "{out}"
    );
    assert!(
        out.contains("external 198.51.100.1:9001 TCP is redirected to internal 127.0.0.1:8001"),
        "{out}"
    );
    d.stop().await;
}

// python3-miniupnpc module: selectigd bypasses discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_miniupnpc_module_adds_lists_and_deletes() {
    let py = "/usr/bin/python3";
    let probe = run_async(
        py,
        vec!["-c".into(), "import miniupnpc".into()],
        Duration::from_secs(10),
    )
    .await;
    if !probe.status.success()
        && !missing_tool(
            "the python3 miniupnpc module (/usr/bin/python3)",
            "apt-get install python3-miniupnpc",
        )
    {
        return;
    }
    let d = daemon(|_| {}).await;
    let script = format!(
        "import miniupnpc\nu=miniupnpc.UPnP()\nu.selectigd('{}')\n\
         print('ext', u.externalipaddress())\nprint('status', u.statusinfo())\n\
         print('add', u.addportmapping(4444, 'TCP', '127.0.0.1', 4445, 'py', ''))\n\
         print('get', u.getspecificportmapping(4444, 'TCP'))\n\
         print('gen', u.getgenericportmapping(0))\nprint('gen1', u.getgenericportmapping(1))\n\
         print('del', u.deleteportmapping(4444, 'TCP'))\n\
         try:\n  u.deleteportmapping(4444, 'TCP')\nexcept Exception as e:\n  print('err', e)\n",
        d.location()
    );
    let out = run_async(py, vec!["-c".into(), script], Duration::from_secs(20)).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ext 198.51.100.1"), "{text}");
    assert!(
        text.contains("status ('Connected', 0, 'ERROR_NONE')")
            || text.contains("status ('Connected'"),
        "{text}"
    );
    assert!(text.contains("add True"), "{text}");
    assert!(
        text.contains("get ('127.0.0.1', 4445, 'py', True, 604800)"),
        "{text}"
    );
    assert!(
        text.contains("gen (4444, 'TCP', ('127.0.0.1', 4445), 'py', '1', '', 604800)"),
        "{text}"
    );
    assert!(text.contains("gen1 None"), "{text}");
    assert!(text.contains("del True"), "{text}");
    assert!(text.contains("err NoSuchEntryInArray"), "{text}");
    d.stop().await;
}

// igd-next 0.17 (published): discovery by a unicast M-SEARCH to the daemon's SSDP socket,
// then its SOAP calls (it always sends the WANIPConnection:1 namespace to our :2 service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn igd_next_discovers_maps_lists_and_removes() {
    use igd_next::PortMappingProtocol;
    use igd_next::aio::tokio::search_gateway;
    let d = daemon(|_| {}).await;
    let gw = search_gateway(igd_next::SearchOptions {
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        broadcast_address: d.ssdp_addrs[0],
        timeout: Some(Duration::from_secs(5)),
        single_search_timeout: Some(Duration::from_secs(5)),
    })
    .await
    .expect("igd-next finds the gateway");
    assert_eq!(gw.addr, d.http_addrs[0]);
    assert_eq!(
        gw.get_external_ip().await.expect("external ip"),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
    );
    let local: SocketAddr = "127.0.0.1:7777".parse().expect("addr");
    gw.add_port(PortMappingProtocol::UDP, 7777, local, 3600, "igd-next & co")
        .await
        .expect("add_port");
    let any = gw
        .add_any_port(PortMappingProtocol::TCP, local, 0, "any")
        .await
        .expect("add_any_port via AddAnyPortMapping");
    let e = gw.get_generic_port_mapping_entry(0).await.expect("entry 0");
    assert_eq!(e.internal_client, "127.0.0.1");
    assert_eq!(e.port_mapping_description, "igd-next & co");
    assert_eq!(e.lease_duration, 3600);
    assert!(
        gw.get_generic_port_mapping_entry(2).await.is_err(),
        "713 past the end"
    );
    gw.remove_port(PortMappingProtocol::UDP, 7777)
        .await
        .expect("remove");
    gw.remove_port(PortMappingProtocol::TCP, any)
        .await
        .expect("remove any");
    assert!(
        gw.remove_port(PortMappingProtocol::TCP, any).await.is_err(),
        "714"
    );
    assert_eq!(d.server.igd.backend.count(std::time::Instant::now()), 0);
    d.stop().await;
}
