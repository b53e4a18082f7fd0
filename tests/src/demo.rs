//! `nat444-lab demo`: the NAT444 tour of design.md §4 and issue #12.
//!
//! It builds the lab with two subscribers (A: `lan`/`cpe`, B: `lan2`/`cpe2`) behind one CGN
//! and an Internet host, checks every link, starts `cgn-sim` as the CGN (PCP server and TUN
//! dataplane, no kernel NAT) and one `upnp-iwf` per home router with its defaults (PCP
//! upstream to the WAN default gateway, nftables NAT1). Then ([`tour`]): A's LAN host maps a
//! UDP and a TCP port with `upnpc`; the Internet host and subscriber B (through the CGN's
//! hairpin) reach A's app and get its answers from the same external endpoint; one PEER flow
//! (`pcpc peer`) lets its remote peer in and refuses everyone else; the CGN's table (carrier
//! format), A's NAT1 table and A's IWF status are printed; the CGN restarts and its ANNOUNCE
//! brings the mappings back on the same ports with traffic flowing again. Everything is torn
//! down afterwards, also when interrupted (Ctrl-C) or when a step fails.

mod tour;

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::lab::plan::{self, MULTICAST_NET};
use crate::lab::{Lab, LabBuilder, LabError, Node};

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
    #[error(transparent)]
    MissingBinary(#[from] crate::bins::MissingBinary),
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
    /// The external endpoint the CGN assigned to subscriber A's app.
    pub external: Option<SocketAddrV4>,
    /// UDP from the Internet host reached A's app, and its answer came from the external
    /// endpoint.
    pub udp_delivered: bool,
    /// The same over TCP.
    pub tcp_delivered: bool,
    /// Subscriber B reached A's app through the CGN's hairpin (UDP and TCP), A saw B's
    /// external endpoint as the source, and B's answers came from A's external endpoint.
    pub hairpin_delivered: bool,
    /// The PEER's remote peer reached the app behind it, and the app's answer left from the
    /// PEER's external endpoint.
    pub peer_admitted: bool,
    /// Unsolicited inbound to the PEER's external endpoint (another source port) was refused.
    pub peer_refused: bool,
    /// After the CGN restart the mappings came back on the same external endpoint and carried
    /// traffic again (UDP and TCP from the Internet, UDP from subscriber B).
    pub restored: bool,
}

impl DemoSummary {
    /// Whether every step showed what it should.
    pub fn all_ok(&self) -> bool {
        self.hops_ok == self.hops_total
            && self.udp_delivered
            && self.tcp_delivered
            && self.hairpin_delivered
            && self.peer_admitted
            && self.peer_refused
            && self.restored
    }
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
        Ok(Binaries {
            cgn_sim: crate::bins::require("cgn-sim")?,
            upnp_iwf: crate::bins::require("upnp-iwf")?,
            pcpc: crate::bins::require("pcpc")?,
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

/// The port subscriber A's application (a stand-in for a P2P app) listens on.
pub const APP_PORT: u16 = 5000;

/// Polls `cond` every 50 ms for up to `secs`; false on timeout (or at once after Ctrl-C).
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

/// Runs the demo, writing the tour to `out`. `interrupted` is polled between steps (the binary
/// sets it on SIGINT/SIGTERM); on any early return the lab and its daemons are torn down by
/// `Drop`. A step that fails after the flag went up (Ctrl-C also reaches the daemons) is
/// reported as [`DemoError::Interrupted`].
pub fn run(out: &mut dyn Write, interrupted: &AtomicBool) -> Result<DemoSummary, DemoError> {
    let bins = Binaries::locate()?;
    writeln!(
        out,
        "nat444-lab demo: P2P port mappings through two NATs (NAT444), two subscribers behind one CGN\n"
    )?;
    writeln!(
        out,
        "Running: cgn-sim as the carrier's CGN (PCP server + TUN dataplane), upnp-iwf on each\n\
         home router as its UPnP IGD and RFC 6970 interworking function (PCP upstream, nftables\n\
         NAT1), a real UPnP client (upnpc) and pcpc. Nothing below is done by hand.\n"
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

    writeln!(
        out,
        "Hops (ping -c1 -W1, up to 3 tries each): proves every link routes before any NAT runs"
    )?;
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
        hairpin_delivered: false,
        peer_admitted: false,
        peer_refused: false,
        restored: false,
    };
    let tour = tour::Tour::new(&lab, &bins, out, interrupted).run(&mut summary);
    writeln!(out, "\nTearing down lab {} ...", lab.prefix())?;
    drop(lab);
    match tour {
        Err(_) if interrupted.load(Ordering::SeqCst) => return Err(DemoError::Interrupted),
        other => other?,
    }
    writeln!(
        out,
        "done: UDP {}, TCP {}, hairpin from B {}, PEER: peer {}, stranger {}, restored after CGN restart: {}.",
        yes(summary.udp_delivered),
        yes(summary.tcp_delivered),
        yes(summary.hairpin_delivered),
        yes(summary.peer_admitted),
        if summary.peer_refused {
            "refused"
        } else {
            "NOT refused"
        },
        yes(summary.restored)
    )?;
    writeln!(
        out,
        "The whole tour, lab built and torn down, took {:.1} s.",
        started.elapsed().as_secs_f64()
    )?;
    Ok(summary)
}

fn yes(b: bool) -> &'static str {
    if b { "delivered" } else { "NOT delivered" }
}

/// The `224.0.0.0/4` route of `node` as `ip route` prints it (empty if there is none).
pub fn multicast_route(lab: &Lab, node: Node) -> Result<String, LabError> {
    lab.exec_ok(node, &["ip", "-4", "route", "show", MULTICAST_NET])
}
