//! What a LAN application sees when the CGN says no: upnp-iwf on the CPE of the NAT444 lab
//! (PCP upstream, nftables NAT1), cgn-sim with its TUN dataplane as the CGN. Every PCP error
//! reaches the UPnP client as the RFC 6970 §4.5 error, quotas become 728, a taken external
//! port makes AddAnyPortMapping return the CGN's port and AddPortMapping 718, and two LAN apps
//! racing for one port get one success and one 718; nothing is left behind in NAT1.
//! Needs root (SKIPPED otherwise), nft, upnpc and /usr/bin/python3.
//! The lab is `nat444_tests::e2e::Nat444`.

use std::time::Duration;

use nat444_tests::e2e::{Nat444, PY, out, wait};
use nat444_tests::lab::{LabChild, Node};
use nat444_tests::require_privileges;

const URL: &str = "http://192.168.0.1:5000/rootDesc.xml";
/// The raw SOAP control point bound to a chosen LAN source address.
const SOAP: &str = include_str!("iwf_soap_client.py");

/// `MAP IN` lines of the CGN's table for subscriber 100.64.0.2.
fn map_in(table: &str) -> Vec<&str> {
    table
        .lines()
        .filter(|l| l.contains("Type: MAP IN") && l.contains("[100.64.0.2:"))
        .collect()
}

/// The external port of a `MAP IN` line (`ANY -> 198.51.100.3:2048[…]`).
fn external_port(line: &str) -> Option<u16> {
    let ext = line.split("ANY -> ").nth(1)?.split('[').next()?;
    ext.rsplit(':').next()?.parse().ok()
}

/// What this file's tests do with the lab, beyond [`Nat444`].
trait ErrorLab {
    fn upnpc_add(&self, port: u16) -> String;
    fn soap(&self, src: &str, at: f64, args: &[&str]) -> LabChild;
    fn soap_done(&self, args: &[&str]) -> String;
}

impl ErrorLab for Nat444 {
    /// `upnpc -a 192.168.0.10 PORT PORT UDP` from the LAN host.
    fn upnpc_add(&self, port: u16) -> String {
        let p = port.to_string();
        out(
            &self.lab,
            Node::Lan,
            &[
                "upnpc",
                "-u",
                URL,
                "-a",
                "192.168.0.10",
                &p,
                &p,
                "UDP",
                "3600",
            ],
            30,
        )
    }

    /// The SOAP helper from LAN source `src`, starting at Unix time `at` (0: now).
    fn soap(&self, src: &str, at: f64, args: &[&str]) -> LabChild {
        let at = at.to_string();
        let mut argv = vec![PY, "-c", SOAP, src, &at];
        argv.extend_from_slice(args);
        self.lab.spawn(Node::Lan, &argv).expect("soap client")
    }

    /// The SOAP helper from 192.168.0.10, now, run to its end: what it printed.
    fn soap_done(&self, args: &[&str]) -> String {
        let child = self.soap("192.168.0.10", 0.0, args);
        let _ = child.wait_timeout(Duration::from_secs(20));
        child.log()
    }
}

/// The rule lines of our NAT1 table that mention `port`.
fn nat1_rules_for(nft: &str, port: u16) -> Vec<String> {
    let p = format!(":{port}");
    let d = format!("dport {port} ");
    nft.lines()
        .filter(|l| {
            (l.contains("dnat to") || l.contains("snat to")) && (l.contains(&d) || l.contains(&p))
        })
        .map(|l| l.trim().to_string())
        .collect()
}

// RFC 6970 §4.5 (PCP result → IGD error for AddPortMapping), §5.1, §5.5 (NAT1 rolled back
// when the PCP MAP fails); RFC 6887 §7.4 (the codes). upnpc gets WANIPConnection:2 from the
// IWF's description, so NOT_AUTHORIZED is 606 (718 only for IGD:1 control points).
#[test]
fn pcp_errors_reach_upnp_clients_as_the_rfc_6970_table_says() {
    require_privileges!();
    let n = Nat444::start();
    let table: [(&str, u16); 12] = [
        ("NOT_AUTHORIZED", 606),
        ("MALFORMED_REQUEST", 501),
        ("UNSUPP_OPCODE", 501),
        ("UNSUPP_OPTION", 501),
        ("MALFORMED_OPTION", 501),
        ("NETWORK_FAILURE", 501),
        ("UNSUPP_PROTOCOL", 501),
        ("USER_EX_QUOTA", 728),
        ("CANNOT_PROVIDE_EXTERNAL", 718),
        ("ADDRESS_MISMATCH", 501),
        ("EXCESSIVE_REMOTE_PEERS", 501),
        // Last: NO_RESOURCES stops every new MAP for its lifetime, for every port
        // (RFC 6887 §11.4), so nothing may follow it in this lab.
        ("NO_RESOURCES", 728),
    ];
    // One mapping first, so that the IWF knows the external address: before that, upnpc's
    // GetExternalIPAddress makes the IWF send a probe MAP (§4.1), which would take the
    // injected error instead of the AddPortMapping's MAP.
    let warm = n.upnpc_add(8999);
    assert!(warm.contains("is redirected"), "{warm}\n{}", n.logs());
    let mut wrong = Vec::new();
    for (i, (pcp, upnp)) in table.iter().enumerate() {
        // A fresh port per row: the PCP client holds a failed mapping down for its lifetime.
        let port = 9000 + i as u16;
        let armed = n.cgn_ctl(&["inject", pcp, "--lifetime", "1800"]);
        assert!(armed.starts_with("injecting"), "{armed}");
        let add = n.upnpc_add(port);
        if !add.contains(&format!("failed with code {upnp} ")) {
            wrong.push(format!(
                "{pcp} → expected {upnp}, upnpc said: {}",
                add.trim()
            ));
        }
        // The rollback follows the answer (a NAT1 transaction after the reply): 5 s is
        // generous for one nft call.
        let rolled_back = wait(5, || nat1_rules_for(&n.nft_table(), port).is_empty());
        assert!(
            rolled_back,
            "{pcp}: NAT1 rolled back, left {:?}\n{add}\n{}",
            nat1_rules_for(&n.nft_table(), port),
            n.logs()
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", n.logs());
    let table = n.cgn_ctl(&["mappings"]);
    assert_eq!(
        map_in(&table).len(),
        1,
        "no CGN state from injected errors: {table}"
    );
}

// RFC 6970 §4.5: USER_EX_QUOTA → 728 NoPortMapsAvailable (IGD:2); RFC 6888 REQ-4 (the CGN's
// per-subscriber port quota, `--quota 2` = two external ports per subscriber); RFC 6970 §5.5:
// the NAT1 rule of the refused one is rolled back.
#[test]
fn quota_of_the_cgn_reaches_the_app_as_728() {
    require_privileges!();
    let n = Nat444::start_with(false, &["--quota", "2"]);
    for port in [9100, 9101] {
        let add = n.upnpc_add(port);
        assert!(add.contains("is redirected"), "{add}\n{}", n.logs());
    }
    let add = n.upnpc_add(9102);
    assert!(add.contains("failed with code 728 "), "{add}\n{}", n.logs());
    let nft = n.nft_table();
    assert!(nat1_rules_for(&nft, 9102).is_empty(), "rolled back: {nft}");
    assert_eq!(nat1_rules_for(&nft, 9100).len(), 2, "{nft}");
    assert_eq!(map_in(&n.cgn_ctl(&["mappings"])).len(), 2);
}

// RFC 6970 §4.1: PortMappingEnabled other than 1 MUST produce an error (402 Invalid Args, gap
// G8): the app hears it, and neither NAT holds anything for the port.
#[test]
fn port_mapping_enabled_zero_is_refused_with_402_and_reaches_neither_nat() {
    require_privileges!();
    let n = Nat444::start();
    let said = n.soap_done(&["adddisabled", "9200", "9200", "UDP", "3600"]);
    assert!(said.contains("ADD 9200 402"), "{said}\n{}", n.logs());
    assert!(nat1_rules_for(&n.nft_table(), 9200).is_empty());
    assert!(map_in(&n.cgn_ctl(&["mappings"])).is_empty());
    // Enabled, the same mapping is made: the refusal was about the flag.
    let said = n.soap_done(&["add", "9200", "9200", "UDP", "3600"]);
    assert!(said.contains("ADD 9200 OK"), "{said}\n{}", n.logs());
    assert_eq!(map_in(&n.cgn_ctl(&["mappings"])).len(), 1);
}

// RFC 6970 §5.6.2 (AddAnyPortMapping: the MAP suggests the port without PREFER_FAILURE and the
// reserved port is the CGN's external port), §5.5/§4.5 (AddPortMapping: PREFER_FAILURE, and
// CANNOT_PROVIDE_EXTERNAL → 718). External port 7000 of the subscriber's external address is
// taken at the CGN by a mapping that pcpc on the CPE itself made (same subscriber 100.64.0.2,
// so the same paired-pooling address). igd-next's add_any_port always asks for a random
// port of its own, so the ask for 7000 is made with rupnp's generic action call (also a real
// Rust IGD client); igd-next's add_any_port is checked to get a port the CGN holds.
#[test]
fn addany_through_igd_next_returns_the_cgns_port_when_the_asked_one_is_taken() {
    require_privileges!();
    let n = Nat444::start();
    let pcpc = out(
        &n.lab,
        Node::Cpe,
        &[
            &nat444_tests::bins::workspace_bin("pcp-client", "pcpc").to_string_lossy(),
            "--server",
            "100.64.0.1",
            "map",
            "--protocol",
            "udp",
            "--internal-port",
            "40000",
            "--suggest",
            "0.0.0.0:7000",
            "--prefer-failure",
            "--lifetime",
            "3600",
        ],
        20,
    );
    let table = n.cgn_ctl(&["mappings"]);
    assert!(
        map_in(&table)
            .iter()
            .any(|l| l.contains("[100.64.0.2:40000]") && external_port(l) == Some(7000)),
        "pcpc holds external 7000: {pcpc}\n{table}"
    );
    let exe = std::env::current_exe().expect("exe");
    let exe = exe.to_string_lossy().into_owned();
    let helper = out(
        &n.lab,
        Node::Lan,
        &[
            "env",
            "IWF_ERRORS_HELPER=1",
            &exe,
            "--exact",
            "lan_igd_clients_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        90,
    );
    let value = |key: &str| -> Option<String> {
        helper
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_string()))
    };
    assert!(helper.contains("HELPER OK"), "{helper}\n{}", n.logs());
    let table = n.cgn_ctl(&["mappings"]);
    let externals: Vec<u16> = map_in(&table)
        .iter()
        .filter_map(|l| external_port(l))
        .collect();
    let reserved: u16 = value("RESERVED").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(reserved != 0 && reserved != 7000, "{helper}\n{}", n.logs());
    assert!(
        externals.contains(&reserved),
        "the CGN holds the returned port {reserved}: {table}"
    );
    let any: u16 = value("IGDNEXT").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(externals.contains(&any), "igd-next's port {any}: {table}");
    let exact = value("EXACT").unwrap_or_default();
    assert!(
        exact.contains("718"),
        "AddPortMapping 7000: {exact}\n{helper}"
    );
    let nft = n.nft_table();
    assert!(
        !nft.contains("dnat to 192.168.0.10:7300"),
        "the refused exact add is rolled back: {nft}"
    );
}

#[test]
#[ignore = "runs inside the lab's lan namespace, started by addany_through_igd_next_returns_the_cgns_port_when_the_asked_one_is_taken"]
fn lan_igd_clients_helper() {
    if std::env::var_os("IWF_ERRORS_HELPER").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use igd_next::PortMappingProtocol;
        let url: rupnp::http::Uri = URL.parse().expect("uri");
        let device = rupnp::Device::from_url(url.clone())
            .await
            .expect("rupnp reads the description");
        let urn = rupnp::ssdp::URN::service("schemas-upnp-org", "WANIPConnection", 2);
        let svc = device
            .find_service(&urn)
            .expect("WANIPConnection:2")
            .clone();
        let args = "<NewRemoteHost></NewRemoteHost><NewExternalPort>7000</NewExternalPort>\
                    <NewProtocol>UDP</NewProtocol><NewInternalPort>7000</NewInternalPort>\
                    <NewInternalClient>192.168.0.10</NewInternalClient><NewEnabled>1</NewEnabled>\
                    <NewPortMappingDescription>any</NewPortMappingDescription>\
                    <NewLeaseDuration>3600</NewLeaseDuration>";
        match svc.action(&url, "AddAnyPortMapping", args).await {
            Ok(o) => println!(
                "RESERVED {}",
                o.get("NewReservedPort").map(String::as_str).unwrap_or("-")
            ),
            Err(e) => println!("RESERVED failed: {e}"),
        }
        let gw = igd_next::aio::tokio::search_gateway(igd_next::SearchOptions {
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .await
        .expect("igd-next finds the gateway");
        let local = "192.168.0.10:7200".parse().expect("addr");
        match gw
            .add_any_port(PortMappingProtocol::UDP, local, 3600, "igd-next any")
            .await
        {
            Ok(p) => println!("IGDNEXT {p}"),
            Err(e) => println!("IGDNEXT failed: {e:?}"),
        }
        let local = "192.168.0.10:7300".parse().expect("addr");
        match gw
            .add_port(PortMappingProtocol::UDP, 7000, local, 3600, "exact")
            .await
        {
            Ok(()) => println!("EXACT succeeded"),
            Err(e) => {
                // igd-next names 718 PortInUse; keep the code visible either way.
                let code = match &e {
                    igd_next::AddPortError::PortInUse => "718".to_string(),
                    other => format!("{other:?}"),
                };
                println!("EXACT {code} {e:?}");
            }
        }
    });
    println!("HELPER OK");
}

// RFC 6970 §5.5 with the core's one-step conflict check (docs/architecture.md, "The
// interworking core"): two LAN hosts ask for the same external port at the same instant;
// exactly one gets it, the other 718 ConflictInMappingEntry; one MAP at the CGN, one
// DNAT+SNAT pair in NAT1; deleting the winner leaves nothing.
#[test]
fn two_lan_apps_racing_for_one_port_one_wins_the_other_gets_718() {
    require_privileges!();
    let n = Nat444::start();
    n.lab
        .exec_ok(
            Node::Lan,
            &["ip", "addr", "add", "192.168.0.11/24", "dev", "eth0"],
        )
        .expect("second LAN address");
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() + 1.5)
        .unwrap_or(0.0);
    let hosts = ["192.168.0.10", "192.168.0.11"];
    let racers: Vec<LabChild> = hosts
        .iter()
        .map(|h| n.soap(h, at, &["add", "7100", "7100", "UDP", "3600"]))
        .collect();
    for r in &racers {
        let _ = r.wait_timeout(Duration::from_secs(20));
    }
    let results: Vec<String> = racers.iter().map(|r| r.log().trim().to_string()).collect();
    let won: Vec<usize> = (0..2)
        .filter(|&i| results[i].contains("ADD 7100 OK"))
        .collect();
    assert_eq!(won.len(), 1, "{results:?}\n{}", n.logs());
    let lost = 1 - won[0];
    assert!(
        results[lost].contains("ADD 7100 718"),
        "{results:?}\n{}",
        n.logs()
    );
    let table = n.cgn_ctl(&["mappings"]);
    let maps: Vec<&str> = map_in(&table);
    assert_eq!(maps.len(), 1, "one MAP at the CGN: {table}");
    let nft = n.nft_table();
    let rules = nat1_rules_for(&nft, 7100);
    assert_eq!(rules.len(), 2, "one DNAT+SNAT pair: {nft}");
    assert!(
        rules
            .iter()
            .any(|r| r.contains(&format!("dnat to {}:7100", hosts[won[0]]))),
        "{rules:?}"
    );
    let del = n.soap(hosts[won[0]], 0.0, &["delete", "7100", "UDP"]);
    let _ = del.wait_timeout(Duration::from_secs(20));
    assert!(del.log().contains("DELETE 7100 OK"), "{}", del.log());
    assert!(
        wait(10, || map_in(&n.cgn_ctl(&["mappings"])).is_empty()),
        "CGN: {}",
        n.cgn_ctl(&["mappings"])
    );
    assert!(
        wait(5, || nat1_rules_for(&n.nft_table(), 7100).is_empty()),
        "{}",
        n.nft_table()
    );
}
