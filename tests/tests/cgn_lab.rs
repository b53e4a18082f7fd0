//! `cgn-sim` in the lab's cgn namespace (control plane only, `--dataplane none`): `natpmpc`
//! from the CPE gets the pool address and a mapping, `cgn-sim ctl mappings` shows it, and
//! `ctl restart` empties the table. Needs root (CAP_NET_ADMIN); skipped otherwise unless
//! NAT444_REQUIRE_PRIVILEGED=1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nat444_tests::bins::workspace_bin;
use nat444_tests::e2e::wait;
use nat444_tests::lab::{LabBuilder, Node, cgn_sim_argv};
use nat444_tests::require_privileges;

fn cgn_sim() -> PathBuf {
    workspace_bin("cgn-sim", "cgn-sim")
}

/// Starts cgn-sim in the lab's cgn namespace and waits for its control socket.
fn start_cgn(lab: &nat444_tests::lab::Lab, bin: &Path) -> (nat444_tests::lab::LabChild, PathBuf) {
    // In the lab's directory, which goes with the lab.
    let sock = lab.log_dir().join("cgn.sock");
    let sock_s = sock.display().to_string();
    let bin_s = bin.display().to_string();
    let argv = cgn_sim_argv(&bin_s, "none", &sock_s);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = lab.spawn(Node::Cgn, &argv).expect("spawn cgn-sim");
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "cgn-sim did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, sock)
}

fn ctl(bin: &Path, sock: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--ctl")
        .arg(sock)
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

// RFC 6886 against the CGN from the subscriber side, in the lab plan of design.md §4.
#[test]
fn natpmpc_in_the_cpe_maps_through_cgn_sim() {
    require_privileges!();
    if !nat444_tests::lab::require_tool("natpmpc", &["-h"], "natpmpc") {
        return;
    }
    let bin = cgn_sim();
    let lab = LabBuilder::new().build().expect("lab builds");
    let (_daemon, sock) = start_cgn(&lab, &bin);
    let out = lab
        .exec_ok(
            Node::Cpe,
            &[
                "natpmpc",
                "-g",
                "100.64.0.1",
                "-a",
                "5000",
                "5000",
                "udp",
                "3600",
            ],
        )
        .expect("natpmpc");
    assert!(out.contains("Public IP address : 198.51.100."), "{out}");
    assert!(out.contains("Mapped public port"), "{out}");
    let table = ctl(&bin, &sock, &["mappings"]);
    assert!(table.contains("Type: MAP IN, Protocol: UDP"), "{table}");
    assert!(table.contains("[100.64.0.2:5000] TTL: 3600"), "{table}");
    // RFC 6887 §8.2: a request from the Internet side is ignored silently (natpmpc keeps
    // retrying; it is stopped after 3 s).
    let _ = lab.exec_timeout(
        Node::Inet,
        &[
            "natpmpc",
            "-g",
            "203.0.113.1",
            "-a",
            "6000",
            "6000",
            "udp",
            "60",
        ],
        Duration::from_secs(3),
    );
    let stats = ctl(&bin, &sock, &["stats"]);
    assert!(
        !stats.contains("cgn_pcp_dropped_total{reason=\"interface\"} 0"),
        "{stats}"
    );
    assert!(!ctl(&bin, &sock, &["mappings"]).contains(":6000]"));
    assert!(ctl(&bin, &sock, &["restart"]).contains("state lost"));
    assert_eq!(ctl(&bin, &sock, &["mappings"]), "");
    let _ = std::fs::remove_file(&sock);
}

fn pcpc(lab: &nat444_tests::lab::Lab, pcpc: &str, args: &[&str]) -> String {
    let mut argv = vec![pcpc, "--server", "100.64.0.1", "--json", "--timeout", "5"];
    argv.extend_from_slice(args);
    let out = lab.exec(Node::Cpe, &argv).expect("pcpc runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// The project's own client against the CGN in the lab: MAP with PREFER_FAILURE, FILTER and
// DESCRIPTION gets exactly the suggested endpoint; another nonce is refused (the rule
// miniupnpd skips); PEER shares the EIM binding; delete needs the nonce; ANNOUNCE answers.
#[test]
fn pcpc_in_the_cpe_maps_peers_and_deletes_through_cgn_sim() {
    require_privileges!();
    let bin = cgn_sim();
    let pcpc_bin = workspace_bin("pcp-client", "pcpc").display().to_string();
    let lab = LabBuilder::new().build().expect("lab builds");
    let (_daemon, sock) = start_cgn(&lab, &bin);
    let nonce = "353137383539353136000000";
    let map = pcpc(
        &lab,
        &pcpc_bin,
        &[
            "map",
            "--internal-port",
            "5000",
            "--suggest",
            "198.51.100.5:41000",
            "--prefer-failure",
            "--filter",
            "203.0.113.0/24",
            "--description",
            "cam",
            "--nonce",
            nonce,
        ],
    );
    assert!(map.contains(r#""result":"SUCCESS""#), "{map}");
    assert!(
        map.contains(r#""external_address":"198.51.100.5","external_port":41000"#),
        "{map}"
    );
    let thief = pcpc(
        &lab,
        &pcpc_bin,
        &[
            "map",
            "--internal-port",
            "5000",
            "--nonce",
            "111111111111111111111111",
        ],
    );
    assert!(thief.contains(r#""result":"NOT_AUTHORIZED""#), "{thief}");
    let peer = pcpc(
        &lab,
        &pcpc_bin,
        &[
            "peer",
            "--internal-port",
            "5000",
            "--remote",
            "203.0.113.50:9000",
        ],
    );
    assert!(peer.contains(r#""external_port":41000"#), "{peer}");
    let table = ctl(&bin, &sock, &["mappings"]);
    assert!(
        table.contains("ANY -> 198.51.100.5:41000[100.64.0.2:5000]"),
        "{table}"
    );
    assert!(
        table.contains("Mapping Nonce: 0x353137383539353136000000, Filter(s): 1"),
        "{table}"
    );
    assert!(table.contains("Type: PEER, Protocol: UDP, Zone: ---, Vpn: public 100.64.0.2:5000[198.51.100.5:41000] -> 203.0.113.50:9000"), "{table}");
    let bad = pcpc(
        &lab,
        &pcpc_bin,
        &[
            "delete",
            "--internal-port",
            "5000",
            "--nonce",
            "222222222222222222222222",
        ],
    );
    assert!(bad.contains(r#""result":"NOT_AUTHORIZED""#), "{bad}");
    let del = pcpc(
        &lab,
        &pcpc_bin,
        &["delete", "--internal-port", "5000", "--nonce", nonce],
    );
    assert!(del.contains(r#""result":"SUCCESS""#), "{del}");
    let table = ctl(&bin, &sock, &["mappings"]);
    assert!(
        !table.contains("MAP IN") && table.contains("Type: PEER"),
        "{table}"
    );
    let ann = pcpc(&lab, &pcpc_bin, &["announce"]);
    assert!(ann.contains(r#""result":"SUCCESS""#), "{ann}");
    let _ = std::fs::remove_file(&sock);
}

// RFC 6887 §11.5 (host renumbering) through the tokio client: `pcpc map --keep` holds a
// mapping from the CPE; the CPE's WAN address changes (100.64.0.2 → 100.64.0.9); within a few
// address checks (5 s each) the client creates the mapping again from the new address with
// the same nonce — the CGN's table shows a MAP for 100.64.0.9 — and pcpc reports a restore.
#[test]
fn pcpc_keep_follows_the_hosts_new_address() {
    require_privileges!();
    let bin = cgn_sim();
    let pcpc_bin = workspace_bin("pcp-client", "pcpc").display().to_string();
    let lab = LabBuilder::new().build().expect("lab builds");
    let (_daemon, sock) = start_cgn(&lab, &bin);
    let keeper = lab
        .spawn(
            Node::Cpe,
            &[
                &pcpc_bin,
                "--server",
                "100.64.0.1",
                "--json",
                "map",
                "--internal-port",
                "7100",
                "--lifetime",
                "600",
                "--keep",
            ],
        )
        .expect("pcpc starts");
    assert!(
        wait(10, || keeper.log().contains("\"nonce\"")),
        "{}",
        keeper.log()
    );
    let nonce = keeper
        .log()
        .split("\"nonce\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce in pcpc's answer")
        .to_string();
    assert!(ctl(&bin, &sock, &["mappings"]).contains("[100.64.0.2:7100]"));
    nat444_tests::e2e::renumber_cpe_wan(&lab, "100.64.0.9");
    let moved = wait(20, || {
        ctl(&bin, &sock, &["mappings"])
            .lines()
            .any(|l| l.contains("Type: MAP IN") && l.contains("[100.64.0.9:7100]"))
    });
    let table = ctl(&bin, &sock, &["mappings"]);
    assert!(moved, "{table}\n{}", keeper.log());
    assert!(
        table
            .lines()
            .filter(|l| l.contains("[100.64.0.9:7100]"))
            .all(|l| l.contains(&nonce)),
        "same nonce {nonce}: {table}"
    );
    assert!(
        wait(5, || keeper.log().contains("\"event\":\"restored\"")),
        "{}",
        keeper.log()
    );
}
