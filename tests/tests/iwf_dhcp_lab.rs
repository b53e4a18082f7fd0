//! RFC 6970 §5.10 in the NAT444 lab: upnp-iwf follows the router's DHCP server. When a LAN
//! host's lease leaves dnsmasq's lease file, every mapping of that host is deleted at the CGN
//! and in NAT1, and the other host's mappings stay.

use std::time::Duration;

use nat444_tests::e2e::{Nat444, PY, wait};
use nat444_tests::lab::Node;
use nat444_tests::require_privileges;

const SOAP: &str = include_str!("iwf_soap_client.py");

/// dnsmasq's lease file with both LAN hosts (expiry 0: infinite).
const BOTH: &str = "0 02:00:00:00:00:0a 192.168.0.10 app-a *\n\
                    0 02:00:00:00:00:0b 192.168.0.11 app-b *\n";
const ONLY_B: &str = "0 02:00:00:00:00:0b 192.168.0.11 app-b *\n";

fn map_in(table: &str) -> usize {
    table.lines().filter(|l| l.contains("Type: MAP IN")).count()
}

fn soap_add(n: &Nat444, src: &str, port: u16) -> String {
    let p = port.to_string();
    let child = n
        .lab
        .spawn(
            Node::Lan,
            &[PY, "-c", SOAP, src, "0", "add", &p, &p, "UDP", "3600"],
        )
        .expect("soap client");
    let _ = child.wait_timeout(Duration::from_secs(20));
    child.log()
}

/// The NAT1 rule lines (DNAT and SNAT) of our table that mention `port`.
fn rules_for(nft: &str, port: u16) -> usize {
    nft.lines()
        .filter(|l| l.contains(&format!(" {port} ")) || l.contains(&format!(":{port}")))
        .filter(|l| l.contains("dnat") || l.contains("snat"))
        .count()
}

// RFC 6970 §5.10: "the IWF MUST delete all mappings bound to" an internal address whose DHCP
// lease expires or is released, one PCP delete each.
#[test]
fn a_released_dhcp_lease_deletes_that_hosts_mappings_on_both_nats() {
    require_privileges!();
    let n = Nat444::start_full(false, &[], |lab| {
        let file = lab.log_dir().join("dhcp.leases");
        std::fs::write(&file, BOTH).expect("lease file");
        vec!["--dhcp-leases".into(), file.to_string_lossy().into_owned()]
    });
    let file = n.lab.log_dir().join("dhcp.leases");
    n.lab
        .exec_ok(
            Node::Lan,
            &["ip", "addr", "add", "192.168.0.11/24", "dev", "eth0"],
        )
        .expect("second LAN address");
    for (src, port) in [
        ("192.168.0.10", 9300),
        ("192.168.0.10", 9301),
        ("192.168.0.11", 9310),
    ] {
        let said = soap_add(&n, src, port);
        assert!(
            said.contains(&format!("ADD {port} OK")),
            "{said}\n{}",
            n.logs()
        );
    }
    assert_eq!(map_in(&n.cgn_ctl(&["mappings"])), 3);
    // Host A's lease is released: dnsmasq rewrites its file without it (write, rename).
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, ONLY_B).expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    // The file is looked at every 5 s; the PCP deletes and NAT1 removals follow at once.
    let gone = wait(15, || map_in(&n.cgn_ctl(&["mappings"])) == 1);
    let table = n.cgn_ctl(&["mappings"]);
    assert!(gone, "CGN table:\n{table}\n{}", n.logs());
    assert!(
        table.contains("Internal: 100.64.0.2:9310") || table.contains(":9310"),
        "host B's mapping stays at the CGN:\n{table}"
    );
    let cleared = wait(5, || {
        let nft = n.nft_table();
        rules_for(&nft, 9300) == 0 && rules_for(&nft, 9301) == 0
    });
    let nft = n.nft_table();
    assert!(cleared, "host A's NAT1 rules gone:\n{nft}");
    assert_eq!(rules_for(&nft, 9310), 2, "host B's NAT1 rules stay:\n{nft}");
    assert!(
        n.iwf.log().contains("DHCP lease released"),
        "{}",
        n.iwf.log()
    );
}
