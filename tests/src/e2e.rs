//! Small helpers the end-to-end lab tests share (upnp-iwf + cgn-sim in the NAT444 lab).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::lab::{Lab, LabBuilder, LabChild, Node, cgn_sim_argv};

/// Debian's python3, which has python3-miniupnpc (the `python3` in `PATH` may be another one).
pub const PY: &str = "/usr/bin/python3";

/// The home router's own firewall (not the IWF's): masquerade the LAN towards the WAN. The
/// IWF's table `ip upnp_iwf` sits in front of it (docs/architecture.md, "NAT1 on nftables").
pub const ROUTER_FW: &str = "table ip routerfw {\n  chain post { type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan0\" masquerade\n  }\n}\n";

/// `listen ADDR PORT SECS [echo]`: prints `MSG SRC:PORT` per UDP datagram (flushed), and
/// answers `SRC:PORT` when `echo`.
pub const UDP_LISTEN: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.2)
end = time.time() + float(sys.argv[3])
echo = len(sys.argv) > 4 and sys.argv[4] == 'echo'
print('listening', flush=True)
while time.time() < end:
    try:
        d, a = s.recvfrom(2048)
    except socket.timeout:
        continue
    print('%s %s:%d' % (d.decode(errors='replace'), a[0], a[1]), flush=True)
    if echo:
        s.sendto(('%s:%d' % a).encode(), a)
"#;

/// `send DST PORT MSG [BIND_ADDR BIND_PORT [TRIES]]`: sends MSG once a second until a reply
/// comes (printed as `REPLY from SRC:PORT`, exit 0) or TRIES (5) run out (exit 1).
pub const UDP_SEND: &str = r#"
import socket, sys
dst, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if len(sys.argv) > 5:
    s.bind((sys.argv[4], int(sys.argv[5])))
tries = int(sys.argv[6]) if len(sys.argv) > 6 else 5
s.settimeout(1.0)
for _ in range(tries):
    s.sendto(msg, (dst, port))
    try:
        d, a = s.recvfrom(2048)
        print('%s from %s:%d' % (d.decode(errors='replace'), a[0], a[1]))
        sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"#;

/// `ECHO_APP PROTO PORT SECS`: the LAN application. Listens on `0.0.0.0:PORT` (`udp` or `tcp`)
/// for SECS seconds, prints `READY`, then `GOT SRC:PORT DATA` for every datagram (or the first
/// message of every connection) and answers `echo DATA` from the same socket.
pub const ECHO_APP: &str = r#"
import socket, sys, time
proto, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.settimeout(0.2)
if proto == "tcp":
    s.listen(8)
print("READY", flush=True)
end = time.time() + secs
while time.time() < end:
    try:
        if proto == "udp":
            data, peer = s.recvfrom(2048)
        else:
            c, peer = s.accept()
            c.settimeout(3)
            data = c.recv(2048)
    except (socket.timeout, OSError):
        continue
    print("GOT %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
    if proto == "udp":
        s.sendto(b"echo " + data, peer)
    else:
        try:
            c.sendall(b"echo " + data)
        except OSError:
            pass
        c.close()
"#;

/// `TALK PROTO HOST PORT MSG [BIND_PORT [TRIES]]`: sends MSG (UDP: up to TRIES times, 1 s
/// apart, default 3; TCP: one connection, 3 s to connect) from `BIND_PORT` if given and not 0
/// (with SO_REUSEADDR, so a port just used by a listener is taken), and
/// prints `REPLY SRC:PORT DATA` for the first answer, or `NOREPLY reason` (exit 1).
pub const TALK: &str = r#"
import socket, sys
proto, host, port, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
bind = int(sys.argv[5]) if len(sys.argv) > 5 else 0
tries = int(sys.argv[6]) if len(sys.argv) > 6 else 3
try:
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", bind))
        s.settimeout(1.0)
        for i in range(tries):
            s.sendto(msg, (host, port))
            try:
                data, peer = s.recvfrom(2048)
                break
            except socket.timeout:
                if i == tries - 1:
                    raise
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(3)
        s.bind(("0.0.0.0", bind))
        s.connect((host, port))
        peer = s.getpeername()
        s.sendall(msg)
        s.settimeout(3)
        data = s.recv(2048)
    print("REPLY %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
except Exception as e:
    print("NOREPLY %s" % e, flush=True)
    sys.exit(1)
"#;

/// Prints the body of a GET of `URL` (5 s timeout).
pub const FETCH: &str = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())";

/// The IGD's description URL on the home router's LAN address.
pub const IGD_URL: &str = "http://192.168.0.1:5000/rootDesc.xml";

/// upnp-iwf's plain-text status page on the home router's LAN address (`/` is the HTML one).
pub const IWF_STATUS_URL: &str = "http://192.168.0.1:5000/status.txt";

/// `upnpc -u IGD_URL -e DESC -a 192.168.0.10 PORT PORT PROTO LEASE` on the LAN host `lan`
/// (`Node::Lan` or `Node::Lan2`); upnpc's output.
pub fn upnpc_add(lab: &Lab, lan: Node, port: u16, proto: &str, lease: u32) -> String {
    let p = port.to_string();
    out(
        lab,
        lan,
        &[
            "upnpc",
            "-u",
            IGD_URL,
            "-e",
            "p2p app",
            "-a",
            "192.168.0.10",
            &p,
            &p,
            proto,
            &lease.to_string(),
        ],
        30,
    )
}

/// The external endpoint upnpc reports for `proto` (`UDP`/`TCP`): its line
/// `external 198.51.100.1:5000 UDP is redirected to internal 192.168.0.10:5000`.
pub fn upnpc_external(upnpc: &str, proto: &str) -> Option<SocketAddrV4> {
    upnpc.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("external ")?;
        let (addr, tail) = rest.split_once(' ')?;
        if tail.starts_with(proto) {
            addr.parse().ok()
        } else {
            None
        }
    })
}

/// The lines of a `cgn-sim ctl mappings` table of type `kind` (`MAP IN`, `MAP OUT`, `PEER`,
/// `IMPLICIT`) and protocol `proto` that mention `endpoint` (e.g. `[100.64.0.2:5000]`).
pub fn table_lines<'a>(table: &'a str, kind: &str, proto: &str, endpoint: &str) -> Vec<&'a str> {
    let head = format!("Type: {kind}, Protocol: {proto},");
    table
        .lines()
        .filter(|l| l.starts_with(&head) && l.contains(endpoint))
        .collect()
}

/// A workspace binary's path as a string (see [`crate::bins::workspace_bin`]).
pub fn bin(name: &str) -> String {
    crate::bins::workspace_bin(name, name)
        .to_string_lossy()
        .into_owned()
}

/// Polls `cond` every 50 ms for at most `secs` seconds; its last value.
pub fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs `argv` in `node` (at most `secs` seconds) and returns stdout followed by stderr.
///
/// # Panics
/// When the command cannot be run at all (a test helper: the test fails with the reason).
pub fn out(lab: &Lab, node: Node, argv: &[&str], secs: u64) -> String {
    let o = lab
        .exec_timeout(node, argv, Duration::from_secs(secs))
        .expect("command runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The NAT444 lab with the CGN and the home router running: cgn-sim with its TUN dataplane in
/// `cgn`, the router's own masquerade ([`ROUTER_FW`]) and upnp-iwf with its defaults in `cpe`.
/// Dropping it tears the lab down (processes and namespaces).
#[derive(Debug)]
pub struct Nat444 {
    /// The lab.
    pub lab: Lab,
    /// cgn-sim's control socket.
    pub ctl: PathBuf,
    /// cgn-sim.
    pub cgn: LabChild,
    /// upnp-iwf.
    pub iwf: LabChild,
    /// upnp-iwf on the second subscriber's router (`cpe2`), when the lab has one.
    pub iwf2: Option<LabChild>,
}

impl Nat444 {
    /// One subscriber, cgn-sim with its default flags.
    pub fn start() -> Nat444 {
        Self::start_with(false, &[])
    }

    /// With a `second` subscriber or not, cgn-sim with `cgn_flags` added. The second
    /// subscriber's router gets the same firewall and its own upnp-iwf ([`Nat444::iwf2`]).
    ///
    /// # Panics
    /// When the lab or a daemon does not come up (the message carries its log).
    pub fn start_with(second: bool, cgn_flags: &[&str]) -> Nat444 {
        Self::start_full(second, cgn_flags, |_| Vec::new())
    }

    /// [`Nat444::start_with`], and upnp-iwf with the flags `iwf_flags` returns for the lab
    /// (called once the lab is built, before upnp-iwf starts, so it can place files in the
    /// lab's log directory).
    ///
    /// # Panics
    /// When the lab or a daemon does not come up (the message carries its log).
    pub fn start_full(
        second: bool,
        cgn_flags: &[&str],
        iwf_flags: impl FnOnce(&Lab) -> Vec<String>,
    ) -> Nat444 {
        let lab = LabBuilder::new()
            .second_subscriber(second)
            .build()
            .expect("lab");
        let ctl = lab.log_dir().join("cgn.sock");
        let mut argv = cgn_sim_argv(&bin("cgn-sim"), "tun", &ctl.to_string_lossy());
        argv.extend(cgn_flags.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cgn = lab.spawn(Node::Cgn, &argv).expect("cgn-sim starts");
        assert!(wait(10, || ctl.exists()), "cgn-sim:\n{}", cgn.log());
        let fw = lab.log_dir().join("routerfw.nft");
        std::fs::write(&fw, ROUTER_FW).expect("write");
        let routers: &[Node] = if second {
            &[Node::Cpe, Node::Cpe2]
        } else {
            &[Node::Cpe]
        };
        for &cpe in routers {
            lab.exec_ok(cpe, &["nft", "-f", &fw.to_string_lossy()])
                .expect("router firewall");
        }
        let flags = iwf_flags(&lab);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let iwf = spawn_iwf_with(&lab, Node::Cpe, &flags);
        let iwf2 = second.then(|| spawn_iwf_in(&lab, Node::Cpe2));
        Nat444 {
            lab,
            ctl,
            cgn,
            iwf,
            iwf2,
        }
    }

    /// `cgn-sim ctl ARGS`' output.
    pub fn cgn_ctl(&self, args: &[&str]) -> String {
        let o = std::process::Command::new(bin("cgn-sim"))
            .arg("--ctl")
            .arg(&self.ctl)
            .arg("ctl")
            .args(args)
            .output()
            .expect("cgn-sim ctl runs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `nft list table ip upnp_iwf` on the home router.
    pub fn nft_table(&self) -> String {
        self.nft_table_of(Node::Cpe)
    }

    /// `nft list table ip upnp_iwf` on the router `cpe` (`Node::Cpe` or `Node::Cpe2`).
    pub fn nft_table_of(&self, cpe: Node) -> String {
        out(
            &self.lab,
            cpe,
            &["nft", "list", "table", "ip", "upnp_iwf"],
            5,
        )
    }

    /// The daemons' logs, for assertion messages.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- upnp-iwf:\n{}\n--- cgn-sim:\n{}",
            self.iwf.log(),
            self.cgn.log()
        );
        if let Some(iwf2) = &self.iwf2 {
            s.push_str(&format!("\n--- upnp-iwf on cpe2:\n{}", iwf2.log()));
        }
        s
    }
}

/// upnp-iwf with its defaults (PCP upstream to the WAN default gateway 100.64.0.1, nftables
/// NAT1) in `cpe`, with a state directory in the lab's log directory (so a second start
/// after a kill finds the first one's state).
///
/// # Panics
/// When it does not come up within 10 s.
pub fn spawn_iwf(lab: &Lab) -> LabChild {
    spawn_iwf_in(lab, Node::Cpe)
}

/// [`spawn_iwf`] on the router `cpe` (`Node::Cpe` or `Node::Cpe2`); each router has its own
/// state directory (`iwf-state`, `iwf-state-cpe2`).
///
/// # Panics
/// When it does not come up within 10 s.
pub fn spawn_iwf_in(lab: &Lab, cpe: Node) -> LabChild {
    spawn_iwf_with(lab, cpe, &[])
}

/// Renumbers the home router's WAN (`wan0` of `Node::Cpe`) from 100.64.0.2 to `new` (a /24
/// address of the CPE-CGN link), as a DHCP lease with another address does, and puts the
/// default route back through the CGN.
///
/// # Panics
/// When `ip` refuses.
pub fn renumber_cpe_wan(lab: &Lab, new: &str) {
    let new = format!("{new}/24");
    // Delete first: an address added beside the old one is a secondary, and goes with it.
    for cmd in [
        vec!["ip", "addr", "del", "100.64.0.2/24", "dev", "wan0"],
        vec!["ip", "addr", "add", new.as_str(), "dev", "wan0"],
        vec![
            "ip",
            "route",
            "replace",
            "default",
            "via",
            "100.64.0.1",
            "dev",
            "wan0",
        ],
    ] {
        lab.exec_ok(Node::Cpe, &cmd).expect("renumber the WAN");
    }
}

/// The control socket (`upnp-iwf ctl --ctl PATH`) of the IWF on `cpe` started by
/// [`spawn_iwf_with`]: in the lab's log directory, so each router has its own.
pub fn iwf_ctl_path(lab: &Lab, cpe: Node) -> std::path::PathBuf {
    lab.log_dir().join(format!("iwf-ctl-{}.sock", cpe.name()))
}

/// [`spawn_iwf_in`] with `extra` flags added.
///
/// # Panics
/// When it does not come up within 10 s.
pub fn spawn_iwf_with(lab: &Lab, cpe: Node, extra: &[&str]) -> LabChild {
    let state = match cpe {
        Node::Cpe => lab.log_dir().join("iwf-state"),
        other => lab.log_dir().join(format!("iwf-state-{}", other.name())),
    };
    let state = state.to_string_lossy();
    let ctl = iwf_ctl_path(lab, cpe);
    let ctl = ctl.to_string_lossy();
    let iwf_bin = bin("upnp-iwf");
    let argv = crate::bins::cpe_iwf_argv(&iwf_bin, &state, &ctl, extra);
    let iwf = lab.spawn(cpe, &argv).expect("upnp-iwf starts");
    assert!(
        wait(10, || iwf.log().contains("serving UPnP IGD")),
        "upnp-iwf:\n{}",
        iwf.log()
    );
    iwf
}
