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
    assert!(
        shown.contains("done: UDP delivered, TCP delivered, restored after CGN restart: delivered"),
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
        summary.udp_delivered && summary.tcp_delivered && summary.restored,
        "{}",
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
