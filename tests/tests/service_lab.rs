//! Issue #13 item 4 / "Done when": the service files. `systemd-analyze verify` passes on both
//! units (in a scratch root holding the built binaries, so the units are checked as shipped);
//! and `upnp-iwf`, started in the lab's home router from its unit's `ExecStart=` command line
//! with a config file, tells `$NOTIFY_SOCKET` READY=1, keeps every mapping (CGN table and nft
//! table unchanged) across SIGHUP with RELOADING=1 then READY=1, and applies the reloaded
//! permission rules live (TCP 80 refused before, allowed after: item 5's secure default).
//! Never installs or enables a unit on this machine.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nat444_tests::e2e::{ROUTER_FW, bin, out, upnpc_add, wait};
use nat444_tests::lab::{LabBuilder, Node, cgn_sim_argv};
use nat444_tests::require_privileges;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(workspace().join("packaging/systemd").join(name)).expect("unit file")
}

/// The words of the unit's `ExecStart=` line.
fn exec_start(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= line")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

// Issue #13 item 4: hardened units that systemd accepts without a warning.
#[test]
fn systemd_units_are_hardened_and_pass_systemd_analyze_verify() {
    for name in ["upnp-iwf.service", "cgn-sim.service"] {
        let u = unit(name);
        assert_eq!(unit_value(&u, "Type"), ["notify"], "{name}");
        assert_eq!(unit_value(&u, "ProtectSystem"), ["strict"], "{name}");
        assert_eq!(unit_value(&u, "NoNewPrivileges"), ["yes"], "{name}");
        assert_eq!(
            unit_value(&u, "CapabilityBoundingSet"),
            ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE"],
            "{name}: only the capabilities needed"
        );
        assert!(!unit_value(&u, "StateDirectory").is_empty(), "{name}");
    }
    assert_eq!(
        unit_value(&unit("upnp-iwf.service"), "ExecReload"),
        ["/bin/kill -HUP $MAINPID"]
    );
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nat444_tests::lab::require_found(have, "systemd-analyze", "systemd") {
        return;
    }
    // A scratch root: the system's unit directory (for the targets the units need), the
    // binaries where ExecStart= expects them, the units themselves.
    let root = workspace()
        .join("target")
        .join(format!("sdroot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["usr/bin", "bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let cp = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(cp.success());
    for (b, to) in [
        (bin("upnp-iwf"), "usr/bin/upnp-iwf"),
        (bin("cgn-sim"), "usr/bin/cgn-sim"),
        ("/bin/kill".to_owned(), "bin/kill"),
    ] {
        std::fs::copy(&b, root.join(to)).expect("copy binary");
    }
    for name in ["upnp-iwf.service", "cgn-sim.service"] {
        std::fs::write(root.join("etc/systemd/system").join(name), unit(name)).expect("unit");
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["upnp-iwf.service", "cgn-sim.service"])
        .output()
        .expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&root);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "systemd-analyze verify failed:\n{text}");
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );
}

/// Next notification on `sock` (up to 20 s: a wait, not a timing check).
fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("<no notification: {e}>"),
    }
}

/// The mapping lines of a CGN table without the fields that count down (TTL/Left).
fn cgn_mappings(table: &str) -> Vec<String> {
    let mut v: Vec<String> = table
        .lines()
        .filter(|l| l.starts_with("Type: MAP") && l.contains("100.64.0.2:"))
        // A probe mapping (RFC 6970 §4.2, UDP 9) lives only until its answer.
        .filter(|l| !l.contains("100.64.0.2:9]") && !l.contains("100.64.0.2:9["))
        .map(|l| {
            let mut words = Vec::new();
            let mut skip = false;
            for w in l.split_whitespace() {
                if skip {
                    skip = false;
                } else if w == "Left:" {
                    skip = true;
                } else {
                    words.push(w);
                }
            }
            words.join(" ")
        })
        .collect();
    v.sort();
    v
}

/// The nft table without counter values.
fn nft_rules(table: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| match l.find(" counter packets") {
            Some(i) => l[..i].to_owned(),
            None => l.to_owned(),
        })
        .collect()
}

// Issue #13 item 4: started from the unit's own command line with a config file, the daemon
// notifies READY=1; SIGHUP re-reads the file (RELOADING=1 … READY=1), applies the new rules
// live and keeps every mapping, upstream and in the router's NAT.
#[test]
fn upnp_iwf_from_its_unit_is_ready_and_sighup_reload_keeps_every_mapping() {
    let _privileged = require_privileges!();
    let lab = LabBuilder::new().build().expect("lab");
    let dir = lab.log_dir().to_path_buf();
    let ctl = dir.join("cgn.sock");
    let argv = cgn_sim_argv(&bin("cgn-sim"), "tun", &ctl.to_string_lossy());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cgn = lab.spawn(Node::Cgn, &argv).expect("cgn-sim starts");
    assert!(wait(10, || ctl.exists()), "cgn-sim:\n{}", cgn.log());
    let fw = dir.join("routerfw.nft");
    std::fs::write(&fw, ROUTER_FW).expect("write");
    lab.exec_ok(Node::Cpe, &["nft", "-f", &fw.to_string_lossy()])
        .expect("router firewall");

    let config = dir.join("upnp-iwf.toml");
    let state = dir.join("iwf-state");
    std::fs::write(
        &config,
        "lan = [\"lan0\"]\nwan = \"wan0\"\nlog_level = \"info\"\n",
    )
    .expect("config");
    // ExecStart= as written in the unit, with this lab's paths for the binary, the config
    // file and the state directory.
    let mut cmd: Vec<String> = exec_start(&unit("upnp-iwf.service"))
        .into_iter()
        .map(|w| match w.as_str() {
            "/usr/bin/upnp-iwf" => bin("upnp-iwf"),
            "/etc/upnp-iwf/upnp-iwf.toml" => config.to_string_lossy().into_owned(),
            "/var/lib/upnp-iwf" => state.to_string_lossy().into_owned(),
            _ => w,
        })
        .collect();
    assert!(cmd.iter().any(|w| w == "--config"), "{cmd:?}");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut argv = vec![
        "env".to_owned(),
        format!("NOTIFY_SOCKET={}", notify_path.display()),
    ];
    argv.append(&mut cmd);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let iwf = lab.spawn(Node::Cpe, &argv).expect("upnp-iwf starts");
    let ready = next_notification(&notify);
    assert!(ready.contains("READY=1"), "{ready}\n{}", iwf.log());

    // Mappings, and TCP 80 refused with no rule configured.
    for (port, proto) in [(5000, "UDP"), (5001, "TCP")] {
        let o = upnpc_add(&lab, Node::Lan, port, proto, 3600);
        assert!(
            o.contains("is redirected to internal"),
            "{o}\n{}",
            iwf.log()
        );
    }
    let o = upnpc_add(&lab, Node::Lan, 80, "TCP", 3600);
    assert!(
        o.contains("failed with code 606"),
        "TCP 80 without a rule: {o}"
    );
    let cgn_table = || {
        let o = Command::new(bin("cgn-sim"))
            .arg("--ctl")
            .arg(&ctl)
            .args(["ctl", "mappings"])
            .output()
            .expect("cgn-sim ctl");
        cgn_mappings(&String::from_utf8_lossy(&o.stdout))
    };
    let nft = || {
        nft_rules(&out(
            &lab,
            Node::Cpe,
            &["nft", "list", "table", "ip", "upnp_iwf"],
            5,
        ))
    };
    assert!(wait(10, || cgn_table().len() == 4), "{:?}", cgn_table());
    let (cgn_before, nft_before) = (cgn_table(), nft());
    assert!(
        nft_before.iter().any(|l| l.contains("5001")),
        "{nft_before:?}"
    );

    // SIGHUP with a rule that allows TCP 80 for the LAN host.
    std::fs::write(
        &config,
        "lan = [\"lan0\"]\nwan = \"wan0\"\nlog_level = \"debug\"\nrules = [\"allow 80 192.168.0.10/32 80\"]\n",
    )
    .expect("config");
    let pid = iwf.pid().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "upnp-iwf",
        "the lab child is the daemon itself"
    );
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    let reloading = next_notification(&notify);
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    let ready = next_notification(&notify);
    assert!(ready.contains("READY=1"), "{ready}\n{}", iwf.log());
    assert!(
        iwf.log().contains("configuration reloaded"),
        "{}",
        iwf.log()
    );
    assert_eq!(cgn_table(), cgn_before, "CGN mappings kept across SIGHUP");
    assert_eq!(nft(), nft_before, "NAT1 table kept across SIGHUP");
    let o = upnpc_add(&lab, Node::Lan, 80, "TCP", 3600);
    assert!(
        o.contains("is redirected to internal 192.168.0.10:80"),
        "TCP 80 once the reloaded rule allows it: {o}\n{}",
        iwf.log()
    );
    // A broken config on SIGHUP is refused with its line, and the daemon keeps serving.
    std::fs::write(&config, "lan = [\"lan0\"]\nhttp_port = \"x\"\n").expect("config");
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    assert!(next_notification(&notify).contains("RELOADING=1"));
    assert!(next_notification(&notify).contains("READY=1"));
    assert!(
        wait(5, || iwf.log().contains("upnp-iwf.toml:2: key `http_port`")),
        "{}",
        iwf.log()
    );
    assert_eq!(cgn_table().len(), 6, "{:?}", cgn_table());
    println!(
        "service lab: READY, SIGHUP ×2 (RELOADING/READY each), {} CGN entries and {} nft lines kept",
        cgn_before.len(),
        nft_before.len()
    );
    let _ = iwf.terminate(Duration::from_secs(5));
    let _ = cgn.kill();
}
