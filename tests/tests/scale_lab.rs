//! `nat444-lab scale` as CI runs it: 4 subscribers × 5 UDP mappings behind one cgn-sim, a CGN
//! restart, and every mapping back (issue 12, build item 3). Needs root (SKIPPED otherwise),
//! nft, upnpc and /usr/bin/python3.
//!
//! The test does not take the tool's counts on trust: it checks every asked mapping itself
//! against the CGN's `MAP IN` entries after the recovery (`cgn_after`, the table as
//! `cgn-sim ctl mappings --json` gave it), and that each was re-created by its IWF
//! (`restores` ≥ 1, from the IWF's status page), so it fails if the recovery is broken.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nat444_tests::lab::list_namespaces;
use nat444_tests::require_privileges;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nat444-lab");

/// Generous bound on the whole run (it takes well under a minute on an idle machine).
const RUN_LIMIT: Duration = Duration::from_secs(600);

const SUBSCRIBERS: u16 = 4;
const MAPPINGS: u16 = 5;

/// Runs `nat444-lab ARGS`, killing it (by pid) after [`RUN_LIMIT`]; exit code, stdout, stderr.
fn run_bounded(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nat444-lab");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Our own unreaped child: its pid cannot be anyone else's.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    (status.and_then(|s| s.code()), stdout, stderr)
}

/// Namespaces named `<prefix>-…` that exist.
fn namespaces_of(prefix: &str) -> Vec<String> {
    list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

fn addr(v: &Value) -> Option<SocketAddrV4> {
    v.as_str()?.parse().ok()
}

// Issue 12 item 3: N subscribers behind one CGN, each mapping M ports with a real UPnP client
// through its own upnp-iwf; after `cgn-sim ctl restart` (state lost, epoch reset, ANNOUNCE;
// RFC 6887 §14.1.3, RFC 6970 §5.10) every mapping is back at the CGN exactly once on the
// external endpoint it had, nothing lost or duplicated, and the lab leaves nothing behind.
#[test]
fn every_mapping_of_4_subscribers_is_back_once_on_its_port_after_a_cgn_restart() {
    require_privileges!();
    // A generated-shape prefix: if this test is killed, the next lab build sweeps it.
    let prefix = format!("n444-{}-scale", std::process::id());
    let (code, stdout, stderr) = run_bounded(&[
        "scale",
        "--subscribers",
        &SUBSCRIBERS.to_string(),
        "--mappings",
        &MAPPINGS.to_string(),
        "--json",
        "--prefix",
        &prefix,
    ]);
    let left = namespaces_of(&prefix);
    assert!(
        left.is_empty(),
        "namespaces left behind: {left:?}\n{stderr}"
    );
    assert!(
        !std::env::temp_dir().join(&prefix).exists(),
        "log directory left behind"
    );
    assert_eq!(code, Some(0), "exit status\n{stdout}\n{stderr}");
    eprintln!("{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let n = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("{key}: {r}"));
    let asked = u64::from(SUBSCRIBERS) * u64::from(MAPPINGS);
    assert_eq!(n("subscribers"), u64::from(SUBSCRIBERS));
    assert_eq!(n("mappings"), u64::from(MAPPINGS));
    assert_eq!(n("restored"), asked, "{r}");
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(n("duplicated"), 0, "{r}");
    assert_eq!(r["recovery_timed_out"], Value::Bool(false));
    assert!(r["setup_s"].as_f64().is_some() && r["recovery_s"].as_f64().is_some());
    assert_eq!(r["prefix"].as_str(), Some(prefix.as_str()));

    // The CGN's own table after the recovery: every lab subscriber's UDP MAP IN entry (probe
    // mappings of the discard port aside), by internal endpoint.
    let mut cgn: HashMap<SocketAddrV4, Vec<SocketAddrV4>> = HashMap::new();
    for e in r["cgn_after"].as_array().expect("cgn_after") {
        let (Some(internal), Some(external)) = (addr(&e["internal"]), addr(&e["external"])) else {
            panic!("entry {e}");
        };
        let [a, b, c, d] = internal.ip().octets();
        let subscriber = (a, b, c) == (100, 64, 0) && (2..2 + SUBSCRIBERS).contains(&d.into());
        if e["type"] == "MAP IN" && e["protocol"] == "UDP" && subscriber && internal.port() != 9 {
            cgn.entry(internal).or_default().push(external);
        }
    }
    let detail = r["detail"].as_array().expect("detail");
    assert_eq!(detail.len() as u64, asked, "one record per asked mapping");
    let mut seen = BTreeSet::new();
    for m in detail {
        let sub = m["subscriber"].as_u64().expect("subscriber");
        let port = m["port"].as_u64().expect("port");
        assert!((1..=u64::from(SUBSCRIBERS)).contains(&sub), "{m}");
        assert!(seen.insert((sub, port)), "asked twice: {m}");
        let wan = Ipv4Addr::new(100, 64, 0, 1 + sub as u8);
        let nat1 = m["nat1_port"].as_u64().expect("NAT1 port known") as u16;
        let granted = addr(&m["external"]).unwrap_or_else(|| panic!("granted: {m}"));
        assert_eq!(
            cgn.get(&SocketAddrV4::new(wan, nat1)).map(Vec::as_slice),
            Some([granted].as_slice()),
            "subscriber {sub} port {port}: exactly once at the CGN on {granted} after the restart"
        );
        assert!(
            m["restores"].as_u64().is_some_and(|n| n >= 1),
            "re-created by its IWF after the restart: {m}"
        );
    }
    let per_sub: BTreeSet<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(per_sub.len(), usize::from(SUBSCRIBERS), "every subscriber");
    let total: usize = cgn.values().map(Vec::len).sum();
    assert_eq!(total as u64, asked, "nothing else at the CGN: {cgn:?}");
}

// Issue 12: everything is torn down also on Ctrl-C. SIGINT while the subscribers are mapping
// their ports: exit 130, every namespace and the log directory gone, and so every daemon and
// client of the lab (a namespace with a process left in it would still be listed).
#[test]
fn ctrl_c_while_mapping_tears_the_scale_lab_down() {
    require_privileges!();
    let prefix = format!("n444-{}-scaleint", std::process::id());
    let mut child = Command::new(BIN)
        .args([
            "scale",
            "--subscribers",
            "8",
            "--mappings",
            "20",
            "--prefix",
            &prefix,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nat444-lab");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
            all.push_str(&chunk);
            let _ = tx.send(chunk);
        }
        all
    });
    // Wait (bounded) until the daemons serve, then give the clients a moment to start.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    while !seen.contains("serving after") && Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&chunk);
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
    }
    assert!(
        seen.contains("serving after"),
        "never got to mapping: {seen}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!namespaces_of(&prefix).is_empty(), "the lab is up");
    // Our own unreaped child: its pid cannot be anyone else's.
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-s", "INT", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -INT");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = reader.join().unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{log}");
    assert!(log.contains("interrupted; the lab was torn down"), "{log}");
    assert!(namespaces_of(&prefix).is_empty(), "namespaces left: {log}");
    assert!(
        !std::env::temp_dir().join(&prefix).exists(),
        "log directory left behind"
    );
}
