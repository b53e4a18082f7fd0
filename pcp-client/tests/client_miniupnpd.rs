//! Interop with miniupnpd's PCP server (Debian `miniupnpd-nftables`), in network namespaces
//! this test creates and removes: `lan` (192.168.0.10, runs `pcpc`), `gw` (192.168.0.1 LAN,
//! 203.0.113.1 WAN, runs miniupnpd with an nftables ruleset) and `inet` (203.0.113.50, a tiny
//! STUN responder, because miniupnpd refuses to forward on a reserved WAN address unless a
//! STUN check says the address is reachable: `ext_perform_stun=yes`).
//!
//! Needs root, `ip`, `nft`, `python3` and `/usr/sbin/miniupnpd` (Debian `miniupnpd-nftables`,
//! which `.ci/run` installs). Without them the test prints `SKIPPED:` and passes, unless
//! `NAT444_REQUIRE_PRIVILEGED` is set (as in CI), which turns the skip into a failure.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STUN: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 3478))
for _ in range(1000):
    data, (ip, port) = s.recvfrom(2048)
    if len(data) < 20 or data[0:2] != b"\x00\x01":
        continue
    xip = struct.unpack("!I", socket.inet_aton(ip))[0] ^ 0x2112A442
    attr = struct.pack("!HHBBHI", 0x0020, 8, 0, 1, port ^ 0x2112, xip)
    s.sendto(struct.pack("!HHI", 0x0101, len(attr), 0x2112A442) + data[8:20] + attr, (ip, port))
"#;

const NFT: &str = "table inet filter {
    chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
    chain miniupnpd { }
    chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
    chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
}
";

/// The namespaces, files and processes of one run; removed on drop, processes killed by PID.
struct Lab {
    prefix: String,
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.prefix)
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let ns = self.ns(ns);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        Command::new(full[0])
            .args(&full[1..])
            .output()
            .expect("runs")
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> u32 {
        let file = std::fs::File::create(self.dir.join(log)).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawns");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn wait_for(&self, log: &str, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log(log).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {log}:\n{}",
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn rules(&self) -> String {
        let out = self.exec(
            "gw",
            &[
                "nft",
                "list",
                "chain",
                "inet",
                "filter",
                "prerouting_miniupnpd",
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn start_miniupnpd(&mut self, log: &str) -> u32 {
        let conf = self.dir.join("miniupnpd.conf");
        let conf = conf.to_str().expect("utf-8 path").to_string();
        // A pid file of our own: the default /var/run/miniupnpd.pid would make this instance
        // refuse to start while any other miniupnpd (another test, a benchmark) runs.
        let pidfile = self.dir.join("miniupnpd.pid");
        let pidfile = pidfile.to_str().expect("utf-8 path").to_string();
        let argv = ["/usr/sbin/miniupnpd", "-f", &conf, "-P", &pidfile, "-d"];
        let pid = self.spawn("gw", &argv, log);
        self.wait_for(log, "Listening for NAT-PMP/PCP", 20);
        assert!(self.log(log).contains("Port forwarding is now enabled"));
        pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for which in ["lan", "gw", "inet"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(which)])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn build_lab() -> Lab {
    let prefix = format!("pcm{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("{prefix}-miniupnpd"));
    std::fs::create_dir_all(&dir).expect("dir");
    let lab = Lab {
        prefix: prefix.clone(),
        dir,
        children: Vec::new(),
    };
    let (lan, gw, inet) = (lab.ns("lan"), lab.ns("gw"), lab.ns("inet"));
    for ns in [&lan, &gw, &inet] {
        lab.run(&["ip", "netns", "add", ns]);
        lab.run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let (a, b, c, d) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}c"),
        format!("{prefix}d"),
    );
    lab.run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
    lab.run(&["ip", "link", "set", &a, "netns", &lan, "name", "lan0"]);
    lab.run(&["ip", "link", "set", &b, "netns", &gw, "name", "gwlan"]);
    lab.run(&["ip", "link", "add", &c, "type", "veth", "peer", "name", &d]);
    lab.run(&["ip", "link", "set", &c, "netns", &gw, "name", "gwext"]);
    lab.run(&["ip", "link", "set", &d, "netns", &inet, "name", "inet0"]);
    for (ns, dev, addr) in [
        (&lan, "lan0", "192.168.0.10/24"),
        (&gw, "gwlan", "192.168.0.1/24"),
        (&gw, "gwext", "203.0.113.1/24"),
        (&inet, "inet0", "203.0.113.50/24"),
    ] {
        lab.run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        lab.run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    lab.run(&[
        "ip",
        "-n",
        &lan,
        "route",
        "add",
        "default",
        "via",
        "192.168.0.1",
    ]);
    lab.run(&[
        "ip",
        "-n",
        &gw,
        "route",
        "add",
        "default",
        "via",
        "203.0.113.50",
    ]);
    let nft = lab.dir.join("nft.conf");
    std::fs::write(&nft, NFT).expect("write");
    let out = lab.exec("gw", &["nft", "-f", nft.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conf = std::fs::File::create(lab.dir.join("miniupnpd.conf")).expect("conf");
    writeln!(
        conf,
        "ext_ifname=gwext\nlistening_ip=gwlan\nhttp_port=0\nenable_natpmp=yes\nenable_upnp=no\n\
         ext_perform_stun=yes\next_stun_host=203.0.113.50\next_stun_port=3478\nsecure_mode=no\n\
         min_lifetime=120\nmax_lifetime=86400\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
         allow 1024-65535 192.168.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535"
    )
    .expect("conf");
    lab
}

fn pcpc(lab: &Lab, args: &[&str]) -> Output {
    let mut full = vec![
        env!("CARGO_BIN_EXE_pcpc"),
        "--server",
        "192.168.0.1",
        "--irt-ms",
        "1000",
    ];
    full.extend_from_slice(args);
    lab.exec("lan", &full)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().next().unwrap_or_default()).expect("JSON")
}

/// What keeps this test from running here, if anything.
fn missing_prerequisite() -> Option<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        return Some("root (network namespaces)");
    }
    if !std::path::Path::new("/usr/sbin/miniupnpd").exists() {
        return Some("/usr/sbin/miniupnpd (apt-get install miniupnpd-nftables)");
    }
    for tool in ["ip", "nft", "python3"] {
        let found = Command::new(tool).arg("-V").output().is_ok()
            || Command::new(tool).arg("--version").output().is_ok();
        if !found {
            return Some("ip, nft and python3");
        }
    }
    None
}

// RFC 6887 against miniupnpd 2.3.1: MAP (rule installed), ANNOUNCE, delete with the stored
// nonce (rule removed), PREFER_FAILURE ignored by the server (reported, offer deleted), and
// recovery after a miniupnpd restart through its start-up ANNOUNCE (224.0.0.1:5350).
#[test]
fn interop_with_miniupnpd_pcp_server() {
    if let Some(missing) = missing_prerequisite() {
        let msg = format!("SKIPPED: miniupnpd interop needs {missing}");
        let strict = std::env::var_os("NAT444_REQUIRE_PRIVILEGED")
            .is_some_and(|v| !v.is_empty() && v != "0");
        assert!(
            !strict,
            "{msg}, and NAT444_REQUIRE_PRIVILEGED forbids skipping"
        );
        eprintln!("{msg}");
        return;
    }
    let mut lab = build_lab();
    lab.spawn("inet", &["python3", "-c", STUN, "203.0.113.50"], "stun.log");
    std::thread::sleep(Duration::from_millis(300));
    let daemon = lab.start_miniupnpd("miniupnpd.log");

    let v = json(&pcpc(
        &lab,
        &[
            "--json",
            "map",
            "--internal-port",
            "5000",
            "--lifetime",
            "600",
        ],
    ));
    assert_eq!(v["result"], "SUCCESS");
    assert_eq!(v["external_address"], "203.0.113.1");
    assert_eq!(v["external_port"], 5000);
    assert!(
        lab.rules()
            .contains("dport 5000 dnat ip to 192.168.0.10:5000"),
        "{}",
        lab.rules()
    );
    let nonce = v["nonce"].as_str().expect("nonce").to_string();

    let a = json(&pcpc(&lab, &["--json", "announce"]));
    assert_eq!(a["result"], "SUCCESS");

    let out = pcpc(
        &lab,
        &["delete", "--internal-port", "5000", "--nonce", &nonce],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lab.rules().contains("dport 5000"), "{}", lab.rules());

    // miniupnpd substitutes another port instead of failing a PREFER_FAILURE request.
    json(&pcpc(
        &lab,
        &[
            "--json",
            "map",
            "--protocol",
            "tcp",
            "--internal-port",
            "6000",
            "--suggest",
            "203.0.113.1:6000",
            "--prefer-failure",
            "--lifetime",
            "300",
        ],
    ));
    let out = pcpc(
        &lab,
        &[
            "map",
            "--protocol",
            "tcp",
            "--internal-port",
            "6002",
            "--suggest",
            "203.0.113.1:6000",
            "--prefer-failure",
            "--lifetime",
            "300",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ignores PREFER_FAILURE"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !lab.rules().contains("192.168.0.10:6002"),
        "{}",
        lab.rules()
    );

    // Restart: the client re-creates its mapping after miniupnpd's start-up ANNOUNCE.
    let keep = lab.spawn(
        "lan",
        &[
            env!("CARGO_BIN_EXE_pcpc"),
            "--server",
            "192.168.0.1",
            "--json",
            "map",
            "--internal-port",
            "9000",
            "--lifetime",
            "120",
            "--keep",
        ],
        "keep.log",
    );
    lab.wait_for("keep.log", "\"external_port\":9000", 10);
    // RFC 6887 §8.5 can only tell a restart from clock jitter once a few seconds have passed
    // since the last answer (the 2 s tolerance): restarting at once would be invisible to any
    // conforming client.
    std::thread::sleep(Duration::from_secs(4));
    lab.stop(daemon);
    let out = lab.exec(
        "gw",
        &[
            "nft",
            "flush",
            "chain",
            "inet",
            "filter",
            "prerouting_miniupnpd",
        ],
    );
    assert!(out.status.success());
    lab.start_miniupnpd("miniupnpd2.log");
    // The restarted server lost the mapping: the client re-creates it and says so.
    lab.wait_for("keep.log", "\"event\":\"restored\"", 10);
    lab.wait_for("keep.log", "\"same_endpoint\":true", 1);
    assert!(lab.rules().contains("dport 9000"), "{}", lab.rules());
    let _ = Command::new("kill")
        .args(["-INT", &keep.to_string()])
        .output();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.rules().contains("dport 9000") {
        assert!(Instant::now() < deadline, "not deleted on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}
