//! `nat444-lab up|down|demo` as a user runs them, and the demo's library entry point.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

use nat444_tests::demo::{self, DemoError, HOPS};
use nat444_tests::lab::{Node, list_namespaces, namespace_name};
use nat444_tests::require_privileges;

const BIN: &str = env!("CARGO_BIN_EXE_nat444-lab");

fn lab_bin(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run nat444-lab")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let start = format!("{prefix}-");
    list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&start))
        .collect()
}

#[test]
fn up_builds_the_lab_under_its_prefix_and_down_removes_it() {
    require_privileges!();
    // A generated-style prefix, so a killed run is swept like any other test lab.
    let prefix = format!("n444-{}-up", std::process::id());
    let up = lab_bin(&["up", "--prefix", &prefix]);
    assert!(up.status.success(), "{}", text(&up));
    let shown = text(&up);
    assert!(
        shown.contains(&format!("ip netns exec {prefix}-lan")),
        "{shown}"
    );
    assert!(
        shown.contains("100.64.0.3/24"),
        "second subscriber shown: {shown}"
    );
    assert_eq!(namespaces_with_prefix(&prefix).len(), 6);

    // The lab stays up after the process exits and works.
    let lan = namespace_name(&prefix, Node::Lan);
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan,
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            "192.168.0.1",
        ])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "{}", text(&ping));

    let again = lab_bin(&["up", "--prefix", &prefix]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("already"), "{}", text(&again));

    let down = lab_bin(&["down", "--prefix", &prefix]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(namespaces_with_prefix(&prefix).is_empty());
    let down_again = lab_bin(&["down", "--prefix", &prefix]);
    assert!(down_again.status.success());
    assert!(
        text(&down_again).contains("nothing to remove"),
        "{}",
        text(&down_again)
    );
}

#[test]
fn demo_binary_shows_every_hop_answering_and_exits_zero() {
    require_privileges!();
    let out = lab_bin(&["demo"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("{0}/{0} hops answered", HOPS.len())),
        "{shown}"
    );
    assert!(
        !shown.contains("[by hand]"),
        "nothing done by hand: {shown}"
    );
    assert!(
        shown.contains("MAP SUCCESS: mapped through both NATs"),
        "the IWF made the MAP: {shown}"
    );
    assert!(
        shown.contains("Type: MAP IN, Protocol: UDP"),
        "CGN table shown: {shown}"
    );
    // Issue #12 item 1, step by step as the user reads it.
    for (what, needle) in [
        (
            "an IWF on each router",
            "B (cpe2, WAN 100.64.0.3): upnp-iwf serves UPnP IGD",
        ),
        ("UDP from the Internet", "udp: inet -> 198.51.100."),
        (
            "the answer from the external endpoint",
            "inet: REPLY 198.51.100.",
        ),
        ("B through the hairpin, UDP", "udp: lan2 -> 198.51.100."),
        ("B through the hairpin, TCP", "tcp: lan2 -> 198.51.100."),
        (
            "the PEER",
            "cpe$ pcpc peer --internal-port 7000 --remote 203.0.113.50:9000",
        ),
        (
            "the PEER 5-tuple",
            "Vpn: public 100.64.0.2:7000[198.51.100.",
        ),
        ("PEER refused", "PEER refused unsolicited inbound"),
        ("MAP OUT lines", "Type: MAP OUT, Protocol: TCP"),
        ("A's NAT1 table", "snat to 100.64.0.2:5000"),
        ("A's IWF status", "| PCP server 100.64.0.1:5351: answering"),
        ("the restart", "restarted (state lost)"),
        (
            "ANNOUNCE heard",
            "the IWF learned of the restart from the CGN's ANNOUNCE",
        ),
        ("same ports after it", "for UDP and TCP: yes"),
    ] {
        assert!(
            shown.contains(needle),
            "{what}: {needle:?} missing from\n{shown}"
        );
    }
    // B's traffic reaches A with B's external endpoint as its source, never 100.64.0.3, and
    // B's answer comes from A's external endpoint.
    let hairpins: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains("lan2 -> 198.51.100."))
        .collect();
    assert_eq!(
        hairpins.len(),
        3,
        "UDP and TCP, UDP after the restart: {shown}"
    );
    for line in hairpins {
        assert!(line.contains("app: GOT 198.51.100."), "{line}");
        assert!(line.contains("lan2: REPLY 198.51.100."), "{line}");
        assert!(line.ends_with("hairpin ok"), "{line}");
    }
    // The stranger's datagrams were dropped at the CGN, not lost on the way.
    let stranger = shown
        .lines()
        .find(|l| l.contains("stranger 203.0.113.50:9001"))
        .unwrap_or_default();
    assert!(stranger.contains("app: nothing arrived"), "{stranger}");
    assert!(!stranger.contains("CGN: 0 packets"), "{stranger}");
    assert!(
        shown.contains(
            "done: UDP delivered, TCP delivered, hairpin from B delivered, PEER: peer delivered, \
             stranger refused, restored after CGN restart: delivered."
        ),
        "{shown}"
    );
}

#[test]
fn demo_tears_the_lab_down_after_running() {
    require_privileges!();
    let mut out = Vec::new();
    let summary = demo::run(&mut out, &AtomicBool::new(false)).expect("demo runs");
    assert_eq!(
        summary.hops_ok,
        summary.hops_total,
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(summary.namespaces.len(), 6);
    assert!(
        summary.all_ok(),
        "{summary:?}\n{}",
        String::from_utf8_lossy(&out)
    );
    let existing = list_namespaces().expect("ip netns list");
    assert!(summary.namespaces.iter().all(|n| !existing.contains(n)));
}

/// Raises the interrupt flag once the demo starts checking hops, as Ctrl-C would.
struct InterruptAtHops<'a> {
    seen: Vec<u8>,
    flag: &'a AtomicBool,
}

impl Write for InterruptAtHops<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.seen.extend_from_slice(buf);
        if String::from_utf8_lossy(&self.seen).contains("Hops (") {
            self.flag.store(true, Ordering::SeqCst);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn interrupted_demo_tears_the_lab_down() {
    require_privileges!();
    let flag = AtomicBool::new(false);
    let mut out = InterruptAtHops {
        seen: Vec::new(),
        flag: &flag,
    };
    let result = demo::run(&mut out, &flag);
    assert!(matches!(result, Err(DemoError::Interrupted)), "{result:?}");
    let shown = String::from_utf8_lossy(&out.seen).into_owned();
    let prefix = shown
        .split_once("Built lab ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("demo printed the lab prefix")
        .to_owned();
    assert!(prefix.starts_with("n444-"), "{prefix}");
    assert!(
        namespaces_with_prefix(&prefix).is_empty(),
        "lab {prefix} left behind"
    );
}

/// Pids of the processes running in the namespaces of lab `prefix`.
fn lab_pids(prefix: &str) -> Vec<String> {
    namespaces_with_prefix(prefix)
        .iter()
        .flat_map(|ns| {
            let o = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .expect("ip netns pids");
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

// Issue #12 "Done when": Ctrl-C in the middle of the tour (daemons and apps running in both
// subscribers' namespaces) tears everything down: exit 130, no namespace, no process left.
// Ctrl-C in a terminal signals the whole foreground process group, daemons included, so the
// demo runs in a process group of its own and SIGINT goes to that group.
#[test]
fn ctrl_c_during_the_tour_leaves_no_namespace_and_no_process() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    require_privileges!();
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run nat444-lab demo");
    let pid = child.id();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let shown = || seen.lock().expect("lock").clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shown().contains("6. PEER mode") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = shown();
    assert!(
        text.contains("6. PEER mode"),
        "the tour got to the PEER step: {text}"
    );
    let prefix = format!("n444-{pid}-0");
    assert!(text.contains(&format!("Built lab {prefix} ")), "{text}");
    let pids = lab_pids(&prefix);
    assert!(pids.len() >= 4, "daemons and apps run in the lab: {pids:?}");
    let int = Command::new("kill")
        .args(["-INT", "--", &format!("-{pid}")])
        .status()
        .expect("kill");
    assert!(int.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = status.expect("the demo exits within 30 s of Ctrl-C");
    assert_eq!(status.code(), Some(130), "{}\n{err}", shown());
    assert!(err.contains("interrupted; the lab was torn down"), "{err}");
    assert!(
        namespaces_with_prefix(&prefix).is_empty(),
        "lab {prefix} left behind"
    );
    let alive: Vec<&String> = pids
        .iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        })
        .collect();
    assert!(alive.is_empty(), "processes left running: {alive:?}");
    assert!(
        !std::env::temp_dir().join(&prefix).exists(),
        "log directory removed"
    );
}

/// Copies the binary somewhere an unprivileged user can execute it.
fn world_executable_copy() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("n444-{}-bin", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin = dir.join("nat444-lab");
    std::fs::copy(BIN, &bin).expect("copy binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod bin");
    bin
}

#[test]
fn without_root_the_binary_says_so_and_exits_2() {
    // Needs root to become someone else.
    require_privileges!();
    let bin = world_executable_copy();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("demo")
        .output()
        .expect("setpriv");
    let _ = std::fs::remove_dir_all(bin.parent().expect("temp dir"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("needs root (CAP_NET_ADMIN)"),
        "{}",
        text(&out)
    );
}
