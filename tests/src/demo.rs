//! `nat444-lab demo`: the NAT444 tour of design.md §4.
//!
//! It builds the lab, checks every link, starts `cgn-sim` as the CGN (PCP server and TUN
//! dataplane, no kernel NAT) and `upnp-iwf` on the home router, maps a port with a real UPnP
//! client from the LAN, sends UDP and TCP from the Internet peer through both NATs, prints the
//! CGN's mapping table, restarts the CGN and shows the mapping restored after its ANNOUNCE,
//! and tears everything down (also when interrupted or when a step fails).
//!
//! `upnp-iwf` runs with its defaults (PCP upstream to the WAN default gateway, nftables NAT1):
//! the UPnP mapping becomes the home router's DNAT/SNAT pair and a PCP MAP at the CGN, and the
//! CGN's restart is repaired by the IWF (ANNOUNCE, same nonces, same external port).

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::e2e::{IGD_URL as LOCATION, ROUTER_FW};
use crate::lab::plan::{self, MULTICAST_NET};
use crate::lab::{Lab, LabBuilder, LabError, Node, cgn_sim_argv};

/// One link the demo (and the smoke test) checks: `from` pings `to`'s address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// Where the ping runs.
    pub from: Node,
    /// Which node answers.
    pub to: Node,
    /// The address pinged.
    pub addr: Ipv4Addr,
    /// What the hop is, in words.
    pub what: &'static str,
}

/// Every hop of the two-subscriber lab that works with kernel routing alone.
pub const HOPS: [Hop; 7] = [
    Hop {
        from: Node::Lan,
        to: Node::Cpe,
        addr: plan::CPE_LAN,
        what: "LAN host to its home router",
    },
    Hop {
        from: Node::Cpe,
        to: Node::Cgn,
        addr: plan::CGN_INSIDE,
        what: "home router WAN to CGN inside",
    },
    Hop {
        from: Node::Cpe2,
        to: Node::Cgn,
        addr: plan::CGN_INSIDE,
        what: "second home router to CGN inside (same bridge)",
    },
    Hop {
        from: Node::Cpe,
        to: Node::Cpe2,
        addr: plan::CPE2_WAN,
        what: "subscriber to subscriber on the CGN's inside segment",
    },
    Hop {
        from: Node::Lan2,
        to: Node::Cpe2,
        addr: plan::CPE_LAN,
        what: "second LAN host to its router (same private plan)",
    },
    Hop {
        from: Node::Cgn,
        to: Node::Inet,
        addr: plan::INET_PEER,
        what: "CGN outside to Internet peer",
    },
    Hop {
        from: Node::Inet,
        to: Node::Cgn,
        addr: plan::CGN_OUTSIDE,
        what: "Internet peer to CGN outside",
    },
];

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Building or using the lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Writing the demo's output failed.
    #[error("writing demo output: {0}")]
    Output(#[from] io::Error),
    /// The interrupt flag was raised (Ctrl-C); the lab was torn down.
    #[error("interrupted; the lab was torn down")]
    Interrupted,
    /// A daemon binary is not built.
    #[error("{name} is not built in {dir}: run `cargo build --workspace` first")]
    MissingBinary {
        /// Binary name.
        name: &'static str,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A step of the tour did not do what it should.
    #[error("{step}: {detail}")]
    Step {
        /// The step.
        step: &'static str,
        /// What went wrong, with the output that shows it.
        detail: String,
    },
}

/// What the demo found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    /// Hops that answered.
    pub hops_ok: usize,
    /// Hops tried.
    pub hops_total: usize,
    /// Namespaces the demo built (all deleted again when it returns).
    pub namespaces: Vec<String>,
    /// The external endpoint the CGN assigned.
    pub external: Option<SocketAddrV4>,
    /// UDP from the Internet peer reached the LAN host.
    pub udp_delivered: bool,
    /// TCP from the Internet peer reached the LAN host.
    pub tcp_delivered: bool,
    /// After the CGN restart the mapping came back on the same external endpoint and carried
    /// traffic again.
    pub restored: bool,
}

/// The daemon binaries the demo runs, found next to the running executable (the workspace's
/// `target/<profile>/`).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `cgn-sim`.
    pub cgn_sim: PathBuf,
    /// `upnp-iwf`.
    pub upnp_iwf: PathBuf,
    /// `pcpc`.
    pub pcpc: PathBuf,
}

impl Binaries {
    /// Finds the binaries next to this executable (see [`crate::bins`]).
    pub fn locate() -> Result<Binaries, DemoError> {
        let dir = crate::bins::target_dir().unwrap_or_default();
        let find = |name: &'static str| {
            crate::bins::find(name).ok_or_else(|| DemoError::MissingBinary {
                name,
                dir: dir.clone(),
            })
        };
        Ok(Binaries {
            cgn_sim: find("cgn-sim")?,
            upnp_iwf: find("upnp-iwf")?,
            pcpc: find("pcpc")?,
        })
    }
}

fn check(interrupted: &AtomicBool) -> Result<(), DemoError> {
    if interrupted.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

fn step_err(step: &'static str, detail: impl Into<String>) -> DemoError {
    DemoError::Step {
        step,
        detail: detail.into(),
    }
}

/// The port the LAN application (a stand-in for a P2P app) listens on.
pub const APP_PORT: u16 = 5000;

/// Polls `cond` every 50 ms for up to `secs`; false on timeout.
fn wait_until(secs: u64, interrupted: &AtomicBool, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() || interrupted.load(Ordering::SeqCst) {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A one-shot listener in the LAN namespace: prints `GOT <peer> <data>` for the first UDP
/// datagram or TCP connection on APP_PORT, then exits (after at most 10 s).
const LISTENER: &str = r#"
import socket, sys
proto = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.settimeout(10)
print("READY", flush=True)
if proto == "udp":
    data, peer = s.recvfrom(2048)
else:
    s.listen(1)
    c, peer = s.accept()
    c.settimeout(5)
    data = c.recv(2048)
    c.sendall(b"welcome")
    c.close()
print("GOT %s:%d %s" % (peer[0], peer[1], data.decode(errors="replace")), flush=True)
"#;

/// The sender on the Internet peer.
const SENDER: &str = r#"
import socket, sys
proto, host, port, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(msg, (host, port))
    print("SENT", flush=True)
else:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(msg)
    s.settimeout(5)
    print("REPLY %s" % s.recv(64).decode(errors="replace"), flush=True)
"#;

/// Runs the demo, writing the tour to `out`. `interrupted` is polled between steps (the binary
/// sets it on SIGINT/SIGTERM); on any early return the lab and its daemons are torn down by
/// `Drop`.
pub fn run(out: &mut dyn Write, interrupted: &AtomicBool) -> Result<DemoSummary, DemoError> {
    let bins = Binaries::locate()?;
    writeln!(
        out,
        "nat444-lab demo: a P2P port mapping through two NATs (NAT444)\n"
    )?;
    writeln!(
        out,
        "Running: cgn-sim as the carrier's CGN (PCP server + TUN dataplane), upnp-iwf as the\n\
         home router's UPnP IGD and RFC 6970 interworking function (PCP upstream, nftables\n\
         NAT1), and a real UPnP client (upnpc) on the LAN. Nothing below is done by hand.\n"
    )?;
    check(interrupted)?;
    let started = Instant::now();
    let lab = LabBuilder::new().second_subscriber(true).build()?;
    writeln!(
        out,
        "Built lab {} ({} namespaces) in {:.1} s:\n",
        lab.prefix(),
        lab.nodes().len(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(out, "{}", lab.describe())?;

    writeln!(out, "Hops (ping -c1 -W1, up to 3 tries each):")?;
    let mut hops_ok = 0;
    for hop in HOPS {
        check(interrupted)?;
        let ping = lab.ping(hop.from, hop.addr)?;
        let verdict = match (ping.replied, ping.rtt_ms) {
            (true, Some(rtt)) => format!("ok  {rtt:.3} ms"),
            (true, None) => "ok".to_owned(),
            (false, _) => "NO REPLY".to_owned(),
        };
        hops_ok += usize::from(ping.replied);
        writeln!(
            out,
            "  {:<4} -> {:<4} {:<15} {:<13} {}",
            hop.from.name(),
            hop.to.name(),
            hop.addr.to_string(),
            verdict,
            hop.what
        )?;
    }
    writeln!(out, "{hops_ok}/{} hops answered.", HOPS.len())?;

    let mut summary = DemoSummary {
        hops_ok,
        hops_total: HOPS.len(),
        namespaces: lab.namespaces(),
        external: None,
        udp_delivered: false,
        tcp_delivered: false,
        restored: false,
    };
    let tour = tour(&lab, &bins, out, interrupted, &mut summary);
    writeln!(out, "\nTearing down lab {} ...", lab.prefix())?;
    drop(lab);
    tour?;
    writeln!(
        out,
        "done: UDP {}, TCP {}, restored after CGN restart: {}.",
        yes(summary.udp_delivered),
        yes(summary.tcp_delivered),
        yes(summary.restored)
    )?;
    Ok(summary)
}

fn yes(b: bool) -> &'static str {
    if b { "delivered" } else { "NOT delivered" }
}

/// Everything after the hops; the caller tears the lab down whatever this returns.
fn tour(
    lab: &Lab,
    bins: &Binaries,
    out: &mut dyn Write,
    interrupted: &AtomicBool,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    let s = |p: &Path| p.display().to_string();
    let sock = lab.log_dir().join("cgn.sock");
    let sock_s = s(&sock);

    writeln!(
        out,
        "\n1. The CGN: cgn-sim in cgn (PCP on 100.64.0.1:5351, pool 198.51.100.0/28, TUN dataplane)"
    )?;
    let mut argv = cgn_sim_argv(&s(&bins.cgn_sim), "tun", &sock_s);
    argv.extend(["--min-lifetime".to_string(), "30".to_string()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cgn = lab.spawn(Node::Cgn, &argv)?;
    if !wait_until(10, interrupted, || sock.exists()) {
        return Err(step_err("starting cgn-sim", cgn.log()));
    }
    check(interrupted)?;
    let ctl = |args: &[&str]| -> Result<String, DemoError> {
        let o = std::process::Command::new(&bins.cgn_sim)
            .arg("--ctl")
            .arg(&sock)
            .arg("ctl")
            .args(args)
            .output()?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(step_err(
                "cgn-sim ctl",
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ))
        }
    };

    writeln!(
        out,
        "\n2. The home router: its own firewall masquerades the LAN (table ip routerfw, not the\n   \
         IWF's), and upnp-iwf runs with its defaults: upnp-iwf --lan lan0 --wan wan0\n   \
         (PCP to the WAN default gateway, NAT1 in its own nftables table ip upnp_iwf)"
    )?;
    let rules = lab.log_dir().join("routerfw.nft");
    std::fs::write(&rules, ROUTER_FW)?;
    lab.exec_ok(Node::Cpe, &["nft", "-f", &s(&rules)])?;
    let state = lab.log_dir().join("iwf-state");
    let iwf = lab.spawn(
        Node::Cpe,
        &[
            &s(&bins.upnp_iwf),
            "--lan",
            "lan0",
            "--wan",
            "wan0",
            "--state-dir",
            &s(&state),
        ],
    )?;
    if !wait_until(10, interrupted, || iwf.log().contains("serving UPnP IGD")) {
        return Err(step_err("starting upnp-iwf", iwf.log()));
    }
    for line in iwf
        .log()
        .lines()
        .filter(|l| l.contains("RFC 6970 interworking") || l.contains("NAT1 on nftables"))
    {
        writeln!(out, "   iwf: {}", strip_log_prefix(line))?;
    }
    check(interrupted)?;

    writeln!(
        out,
        "\n3. A P2P app on the LAN asks for port {APP_PORT} with a real UPnP client (upnpc -a, UDP and TCP);\n   \
         the IWF reserves NAT1 port {APP_PORT}, installs DNAT+SNAT and sends PCP MAP (PREFER_FAILURE, a nonce)"
    )?;
    let mut external = None;
    for proto in ["UDP", "TCP"] {
        let add = lab.exec_timeout(
            Node::Lan,
            &[
                "upnpc",
                "-u",
                LOCATION,
                "-e",
                "nat444 demo",
                "-a",
                &plan::LAN_HOST.to_string(),
                &APP_PORT.to_string(),
                &APP_PORT.to_string(),
                proto,
                "0",
            ],
            Duration::from_secs(20),
        )?;
        let add = String::from_utf8_lossy(&add.stdout).into_owned();
        for line in add
            .lines()
            .filter(|l| l.contains("ExternalIPAddress") || l.contains("is redirected"))
        {
            writeln!(out, "   lan$ upnpc -a ... {proto}   {}", line.trim())?;
        }
        let ext = add.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("external ")?;
            rest.split_whitespace().next()?.parse::<SocketAddrV4>().ok()
        });
        match ext {
            Some(e) => external = Some(e),
            None => {
                return Err(step_err("AddPortMapping", format!("{add}\n{}", iwf.log())));
            }
        }
    }
    let Some(external) = external else {
        return Err(step_err("AddPortMapping", iwf.log()));
    };
    summary.external = Some(external);
    for line in iwf.log().lines().filter(|l| l.contains("MAP SUCCESS")) {
        writeln!(out, "   iwf: {}", strip_log_prefix(line))?;
    }
    check(interrupted)?;

    writeln!(out, "\n4. The CGN's mapping table (cgn-sim ctl mappings):")?;
    for line in ctl(&["mappings"])?.lines() {
        writeln!(out, "   {line}")?;
    }
    writeln!(
        out,
        "\n   The home router's NAT1 (nft list table ip upnp_iwf):"
    )?;
    let nft = lab.exec_ok(Node::Cpe, &["nft", "list", "table", "ip", "upnp_iwf"])?;
    for line in nft
        .lines()
        .filter(|l| l.contains("dnat") || l.contains("snat"))
    {
        writeln!(out, "   {}", line.trim())?;
    }

    writeln!(
        out,
        "\n5. From the Internet peer 203.0.113.50 to {external}, through both NATs:"
    )?;
    summary.udp_delivered = deliver(lab, out, interrupted, "udp", external, "hello over UDP")?;
    summary.tcp_delivered = deliver(lab, out, interrupted, "tcp", external, "hello over TCP")?;
    check(interrupted)?;

    writeln!(
        out,
        "\n6. Restart the CGN (state lost, epoch reset, ANNOUNCE to its clients): cgn-sim ctl restart"
    )?;
    // A client spots a restart by the epoch going back (RFC 6887 §8.5), which needs the CGN to
    // have been up a few seconds: give it that before restarting.
    std::thread::sleep(Duration::from_secs(4));
    check(interrupted)?;
    writeln!(out, "   {}", ctl(&["restart"])?.trim())?;
    let recovered = wait_until(20, interrupted, || {
        iwf.log().matches("mapping restored upstream").count() >= 2
    });
    for line in iwf
        .log()
        .lines()
        .filter(|l| l.contains("ServerStateLost") || l.contains("mapping restored"))
    {
        writeln!(out, "   iwf: {}", strip_log_prefix(line))?;
    }
    if !recovered {
        return Err(step_err("recovery after ANNOUNCE", iwf.log()));
    }
    let table = ctl(&["mappings"])?;
    for line in table.lines() {
        writeln!(out, "   {line}")?;
    }
    let same = table.contains(&format!("ANY -> {external}["));
    let again = deliver(
        lab,
        out,
        interrupted,
        "udp",
        external,
        "hello after the restart",
    )?;
    summary.restored = same && again;
    let _ = (cgn, iwf);
    Ok(())
}

/// A log line without its timestamp and level, for the tour.
fn strip_log_prefix(line: &str) -> &str {
    line.split_once(": ").map_or(line, |(_, rest)| rest)
}

/// Listens on the LAN host, sends from the Internet peer, and reports what arrived.
fn deliver(
    lab: &Lab,
    out: &mut dyn Write,
    interrupted: &AtomicBool,
    proto: &str,
    external: SocketAddrV4,
    msg: &str,
) -> Result<bool, DemoError> {
    let listener = lab.spawn(
        Node::Lan,
        &["python3", "-c", LISTENER, proto, &APP_PORT.to_string()],
    )?;
    if !wait_until(5, interrupted, || listener.log().contains("READY")) {
        return Err(step_err("LAN listener", listener.log()));
    }
    let sent = lab.exec_timeout(
        Node::Inet,
        &[
            "python3",
            "-c",
            SENDER,
            proto,
            &external.ip().to_string(),
            &external.port().to_string(),
            msg,
        ],
        Duration::from_secs(10),
    )?;
    let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let got = wait_until(10, interrupted, || listener.log().contains("GOT"));
    let line = listener
        .log()
        .lines()
        .find(|l| l.starts_with("GOT"))
        .unwrap_or("")
        .to_string();
    writeln!(
        out,
        "   {proto}: inet$ send {msg:?} -> {external}   {}   lan$ {}",
        if sent.is_empty() {
            "(no answer)"
        } else {
            &sent
        },
        if got {
            line.as_str()
        } else {
            "nothing arrived"
        }
    )?;
    Ok(got)
}

/// The `224.0.0.0/4` route of `node` as `ip route` prints it (empty if there is none).
pub fn multicast_route(lab: &Lab, node: Node) -> Result<String, LabError> {
    lab.exec_ok(node, &["ip", "-4", "route", "show", MULTICAST_NET])
}
