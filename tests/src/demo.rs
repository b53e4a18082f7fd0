//! `nat444-lab demo`: today, a tour of the lab with kernel routing only.
//!
//! The full demo of design.md §4 (a UPnP mapping through both NATs, a CGN restart restored by
//! ANNOUNCE) needs `cgn-sim` and `upnp-iwf`, which are not written yet. Until then the demo
//! builds the lab, proves every link with `ping`, shows the multicast routes, says plainly what
//! the full demo will add, and tears the lab down (also when interrupted or when a step fails).

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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

/// What the full demo will do once the daemons exist (design.md §4).
pub const FUTURE_STEPS: [&str; 6] = [
    "start cgn-sim in cgn (--inside 100.64.0.1 --pool 198.51.100.0/28) and upnp-iwf in cpe \
     (--lan lan0 --wan wan0), with nftables NAT1 on the CPE",
    "from lan, map UDP 5000 with a real UPnP client (upnpc -a 192.168.0.10 5000 5000 UDP): SSDP \
     discovery, AddPortMapping, and the IWF's PCP MAP to the CGN",
    "from inet, send UDP and TCP to 198.51.100.x:5000 and show them arrive at 192.168.0.10:5000 \
     through both NATs",
    "print the CGN mapping table (cgn-sim ctl mappings) in the firewall's MAP IN / MAP OUT shape",
    "restart the CGN (cgn-sim ctl restart): epoch reset and ANNOUNCE to 224.0.0.1:5350, after \
     which the IWF re-creates the mapping with its stored nonce",
    "tear down",
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
}

fn check(interrupted: &AtomicBool) -> Result<(), DemoError> {
    if interrupted.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

/// Runs the demo, writing the tour to `out`. `interrupted` is polled between steps (the binary
/// sets it on SIGINT/SIGTERM); on any early return the lab is torn down by `Drop`.
pub fn run(out: &mut dyn Write, interrupted: &AtomicBool) -> Result<DemoSummary, DemoError> {
    writeln!(
        out,
        "nat444-lab demo: the NAT444 namespace lab with kernel routing only"
    )?;
    writeln!(
        out,
        "cgn-sim and upnp-iwf are not implemented yet, so this run has no NAT and no port \
         mapping:\nit builds the lab, proves every link, and tears it down.\n"
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

    writeln!(
        out,
        "\nMulticast routes (SSDP 239.255.255.250 on the LANs, ANNOUNCE 224.0.0.1 from the CGN):"
    )?;
    for node in [Node::Lan, Node::Cpe, Node::Cgn] {
        check(interrupted)?;
        let route = multicast_route(&lab, node)?;
        writeln!(out, "  {:<4} {}", node.name(), route.trim())?;
    }

    writeln!(
        out,
        "\nWhat the full demo adds once cgn-sim and upnp-iwf exist (design.md §4):"
    )?;
    for (i, step) in FUTURE_STEPS.iter().enumerate() {
        writeln!(out, "  {}. {step}", i + 1)?;
    }

    let namespaces = lab.namespaces();
    writeln!(out, "\nTearing down lab {} ...", lab.prefix())?;
    drop(lab);
    writeln!(out, "done. {hops_ok}/{} hops answered.", HOPS.len())?;
    Ok(DemoSummary {
        hops_ok,
        hops_total: HOPS.len(),
        namespaces,
    })
}

/// The `224.0.0.0/4` route of `node` as `ip route` prints it (empty if there is none).
pub fn multicast_route(lab: &Lab, node: Node) -> Result<String, LabError> {
    lab.exec_ok(node, &["ip", "-4", "route", "show", MULTICAST_NET])
}
