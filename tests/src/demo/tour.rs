//! The demo's steps after the hop check: daemons, mappings, traffic, PEER, tables, restart.
//! Each step prints what it does and what it proves; the caller tears the lab down whatever
//! [`Tour::run`] returns.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::{APP_PORT, Binaries, DemoError, DemoSummary, check, step_err, wait_until};
use crate::e2e::{ECHO_APP, FETCH, IWF_STATUS_URL, ROUTER_FW, TALK, upnpc_external};
use crate::lab::{Lab, LabChild, Node, cgn_sim_argv, plan};

/// The internal port of the PEER flow (an application on A's router itself, whose WAN address
/// is what the CGN sees).
const PEER_APP_PORT: u16 = 7000;
/// The remote peer of the PEER flow, on the Internet host.
const REMOTE_PORT: u16 = 9000;
/// Another source port of the Internet host: not the PEER's remote peer.
const STRANGER_PORT: u16 = 9001;

/// The demo's state between steps.
pub(super) struct Tour<'a> {
    lab: &'a Lab,
    bins: &'a Binaries,
    out: &'a mut dyn Write,
    interrupted: &'a AtomicBool,
    sock: PathBuf,
    cgn_started: Instant,
}

/// What one message to an application showed.
struct Exchange {
    /// The application's `GOT SRC:PORT DATA` line for this message, if it arrived.
    got: Option<String>,
    /// The sender's `REPLY SRC:PORT DATA` or `NOREPLY …` line.
    reply: String,
}

impl Exchange {
    /// The source the application saw.
    fn seen_source(&self) -> Option<SocketAddrV4> {
        self.got
            .as_deref()?
            .strip_prefix("GOT ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Where the answer came from.
    fn reply_source(&self) -> Option<SocketAddrV4> {
        self.reply
            .strip_prefix("REPLY ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// Whether `a` is an address of the CGN's pool (plan::POOL_NETWORK/POOL_PREFIX_LEN).
fn in_pool(a: SocketAddrV4) -> bool {
    let mask = u32::MAX << (32 - u32::from(plan::POOL_PREFIX_LEN));
    u32::from(*a.ip()) & mask == u32::from(plan::POOL_NETWORK)
}

impl<'a> Tour<'a> {
    pub(super) fn new(
        lab: &'a Lab,
        bins: &'a Binaries,
        out: &'a mut dyn Write,
        interrupted: &'a AtomicBool,
    ) -> Tour<'a> {
        Tour {
            lab,
            bins,
            out,
            interrupted,
            sock: lab.log_dir().join("cgn.sock"),
            cgn_started: Instant::now(),
        }
    }

    fn say(&mut self, text: &str) -> Result<(), DemoError> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    fn check(&self) -> Result<(), DemoError> {
        check(self.interrupted)
    }

    fn wait(&self, secs: u64, cond: impl FnMut() -> bool) -> bool {
        wait_until(secs, self.interrupted, cond)
    }

    /// `cgn-sim ctl ARGS`' output.
    fn ctl(&self, args: &[&str]) -> Result<String, DemoError> {
        let o = std::process::Command::new(&self.bins.cgn_sim)
            .arg("--ctl")
            .arg(&self.sock)
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
    }

    /// A counter of `cgn-sim ctl stats` (0 when absent).
    fn cgn_metric(&self, line_prefix: &str) -> Result<u64, DemoError> {
        Ok(self
            .ctl(&["stats"])?
            .lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Runs `argv` in `node` for at most `secs`; stdout then stderr.
    fn exec(&self, node: Node, argv: &[&str], secs: u64) -> Result<String, DemoError> {
        let o = self
            .lab
            .exec_timeout(node, argv, Duration::from_secs(secs))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }

    /// A python3 script in `node` that prints `READY` (or `listening`) when it is up.
    fn spawn_ready(&self, node: Node, script: &str, args: &[&str]) -> Result<LabChild, DemoError> {
        let mut argv = vec!["python3", "-c", script];
        argv.extend_from_slice(args);
        let child = self.lab.spawn(node, &argv)?;
        if !self.wait(5, || {
            let log = child.log();
            log.contains("READY") || log.contains("listening")
        }) {
            self.check()?;
            return Err(step_err("starting an application", child.log()));
        }
        Ok(child)
    }

    /// Sends `msg` from `from` (source port `bind`, 0 = any) to `to` with [`TALK`], and looks
    /// for it in `app`'s log.
    fn exchange(
        &self,
        from: Node,
        proto: &str,
        to: SocketAddrV4,
        msg: &str,
        bind: u16,
        app: &LabChild,
    ) -> Result<Exchange, DemoError> {
        let reply = self.exec(
            from,
            &[
                "python3",
                "-c",
                TALK,
                proto,
                &to.ip().to_string(),
                &to.port().to_string(),
                msg,
                &bind.to_string(),
                "3",
            ],
            15,
        )?;
        let find = || {
            app.log()
                .lines()
                .find(|l| l.starts_with("GOT ") && l.ends_with(msg))
                .map(str::to_owned)
        };
        self.wait(2, || find().is_some());
        Ok(Exchange {
            got: find(),
            reply: reply.lines().next().unwrap_or("").trim().to_owned(),
        })
    }

    fn iwf(&self, node: Node) -> Result<LabChild, DemoError> {
        let s = |p: &Path| p.display().to_string();
        let state = self
            .lab
            .log_dir()
            .join(format!("iwf-state-{}", node.name()));
        let ctl = self
            .lab
            .log_dir()
            .join(format!("iwf-ctl-{}.sock", node.name()));
        let (bin, state, ctl) = (s(&self.bins.upnp_iwf), s(&state), s(&ctl));
        let iwf = self
            .lab
            .spawn(node, &crate::bins::cpe_iwf_argv(&bin, &state, &ctl, &[]))?;
        if !self.wait(10, || iwf.log().contains("serving UPnP IGD")) {
            self.check()?;
            return Err(step_err("starting upnp-iwf", iwf.log()));
        }
        Ok(iwf)
    }

    pub(super) fn run(mut self, summary: &mut DemoSummary) -> Result<(), DemoError> {
        let cgn = self.start_cgn()?;
        let (iwf, _iwf2) = self.start_routers()?;
        let external = self.map_ports(&iwf)?;
        summary.external = Some(external);
        let udp_app = self.spawn_ready(Node::Lan, ECHO_APP, &["udp", "5000", "120"])?;
        let tcp_app = self.spawn_ready(Node::Lan, ECHO_APP, &["tcp", "5000", "120"])?;
        self.check()?;
        (summary.udp_delivered, summary.tcp_delivered) =
            self.internet_to_a(external, &udp_app, &tcp_app, "")?;
        self.check()?;
        summary.hairpin_delivered = self.hairpin(external, &udp_app, &tcp_app, "")?;
        self.check()?;
        (summary.peer_admitted, summary.peer_refused) = self.peer_flow()?;
        self.check()?;
        self.tables()?;
        self.check()?;
        summary.restored = self.restart(&iwf, external, &udp_app, &tcp_app)?;
        drop(cgn);
        Ok(())
    }

    fn start_cgn(&mut self) -> Result<LabChild, DemoError> {
        self.say(
            "\n1. The CGN: cgn-sim in cgn (PCP on 100.64.0.1:5351, pool 198.51.100.0/28, TUN dataplane,\n   \
             no kernel NAT). --filtering apdf: PCP MAP mappings admit anyone (RFC 6887 §11), while\n   \
             implicit and PEER mappings admit only the peers they talk to (RFC 4787 APDF)",
        )?;
        let sock = self.sock.display().to_string();
        let mut argv = cgn_sim_argv(&self.bins.cgn_sim.display().to_string(), "tun", &sock);
        argv.extend(["--filtering", "apdf", "--min-lifetime", "30"].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cgn = self.lab.spawn(Node::Cgn, &argv)?;
        self.cgn_started = Instant::now();
        if !self.wait(10, || self.sock.exists()) {
            self.check()?;
            return Err(step_err("starting cgn-sim", cgn.log()));
        }
        Ok(cgn)
    }

    fn start_routers(&mut self) -> Result<(LabChild, LabChild), DemoError> {
        self.say(
            "\n2. The two home routers (A: cpe, B: cpe2; both 192.168.0.1 inside, as homes are): each one's\n   \
             own firewall masquerades its LAN (table ip routerfw), and each runs upnp-iwf with its\n   \
             defaults: upnp-iwf --lan lan0 --wan wan0 (PCP to the WAN default gateway 100.64.0.1,\n   \
             NAT1 in its own nftables table ip upnp_iwf)",
        )?;
        let rules = self.lab.log_dir().join("routerfw.nft");
        std::fs::write(&rules, ROUTER_FW)?;
        let rules = rules.display().to_string();
        let mut iwfs = Vec::new();
        for (node, who) in [(Node::Cpe, "A"), (Node::Cpe2, "B")] {
            self.lab.exec_ok(node, &["nft", "-f", &rules])?;
            let iwf = self.iwf(node)?;
            let wan = node.address();
            let answered = self.wait(5, || iwf.log().contains("PCP server answers"));
            self.say(&format!(
                "   {who} ({}, WAN {wan}): upnp-iwf serves UPnP IGD on 192.168.0.1:5000; PCP server 100.64.0.1:5351 {}",
                node.name(),
                if answered { "answers" } else { "not yet heard" }
            ))?;
            iwfs.push(iwf);
        }
        let (Some(b), Some(a)) = (iwfs.pop(), iwfs.pop()) else {
            return Err(step_err("starting upnp-iwf", "no daemon"));
        };
        Ok((a, b))
    }

    fn map_ports(&mut self, iwf: &LabChild) -> Result<SocketAddrV4, DemoError> {
        self.say(&format!(
            "\n3. A's P2P app asks for port {APP_PORT} with a real UPnP client (upnpc -a, UDP and TCP). The IWF\n   \
             reserves NAT1 port {APP_PORT}, installs DNAT+SNAT and sends PCP MAP (PREFER_FAILURE, a nonce):\n   \
             proves UPnP becomes a mapping through both NATs"
        ))?;
        let mut external = None;
        for proto in ["UDP", "TCP"] {
            let add = self.exec(
                Node::Lan,
                &[
                    "upnpc",
                    "-u",
                    crate::e2e::IGD_URL,
                    "-e",
                    "nat444 demo",
                    "-a",
                    &plan::LAN_HOST.to_string(),
                    &APP_PORT.to_string(),
                    &APP_PORT.to_string(),
                    proto,
                    "0",
                ],
                20,
            )?;
            for line in add.lines().filter(|l| l.contains("is redirected")) {
                self.say(&format!(
                    "   lan$ upnpc -a 192.168.0.10 5000 5000 {proto}   {}",
                    line.trim()
                ))?;
            }
            match upnpc_external(&add, proto) {
                Some(e) => external = Some(e),
                None => {
                    self.check()?;
                    return Err(step_err("AddPortMapping", format!("{add}\n{}", iwf.log())));
                }
            }
        }
        let Some(external) = external else {
            return Err(step_err("AddPortMapping", iwf.log()));
        };
        for line in iwf.log().lines().filter(|l| l.contains("MAP SUCCESS")) {
            self.say(&format!("   iwf: {}", strip_log_prefix(line)))?;
        }
        Ok(external)
    }

    /// UDP and TCP from the Internet host to A's app; `when` labels the messages.
    fn internet_to_a(
        &mut self,
        external: SocketAddrV4,
        udp_app: &LabChild,
        tcp_app: &LabChild,
        when: &str,
    ) -> Result<(bool, bool), DemoError> {
        if when.is_empty() {
            self.say(&format!(
                "\n4. The Internet host 203.0.113.50 sends to A's external endpoint {external}, through the CGN and\n   \
                 A's router to the app on 192.168.0.10:{APP_PORT}; the app answers from its own socket:\n   \
                 proves inbound through both NATs, and the answer leaving from the same external endpoint"
            ))?;
        }
        let mut ok = [false; 2];
        for (i, (proto, app)) in [("udp", udp_app), ("tcp", tcp_app)].into_iter().enumerate() {
            let msg = format!("hello over {}{when}", proto.to_uppercase());
            let x = self.exchange(Node::Inet, proto, external, &msg, 0, app)?;
            ok[i] = x.got.is_some() && x.reply_source() == Some(external);
            self.say(&format!(
                "   {proto}: inet -> {external} {msg:?}   app: {}   inet: {}",
                x.got.as_deref().unwrap_or("nothing arrived"),
                x.reply
            ))?;
        }
        Ok((ok[0], ok[1]))
    }

    /// Subscriber B's LAN host to A's external endpoint (the CGN's hairpin).
    fn hairpin(
        &mut self,
        external: SocketAddrV4,
        udp_app: &LabChild,
        tcp_app: &LabChild,
        when: &str,
    ) -> Result<bool, DemoError> {
        if when.is_empty() {
            self.say(&format!(
                "\n5. Subscriber B (lan2 192.168.0.10, behind cpe2 100.64.0.3) sends to A's external endpoint\n   \
                 {external}: the CGN turns it around (hairpin), so A's app sees B's external endpoint\n   \
                 (a pool address, not 100.64.0.3) and B's answer comes from {external}: proves two\n   \
                 subscribers of one CGN reach each other as the Internet sees them (RFC 4787 REQ-9)"
            ))?;
        }
        // After the restart one UDP exchange is enough to show the hairpin again.
        let protos: &[(&str, &LabChild)] = if when.is_empty() {
            &[("udp", udp_app), ("tcp", tcp_app)]
        } else {
            &[("udp", udp_app)]
        };
        let mut ok = true;
        for &(proto, app) in protos {
            let msg = format!(
                "hello from subscriber B over {}{when}",
                proto.to_uppercase()
            );
            let x = self.exchange(Node::Lan2, proto, external, &msg, 0, app)?;
            let seen = x.seen_source();
            let this =
                x.got.is_some() && seen.is_some_and(in_pool) && x.reply_source() == Some(external);
            ok &= this;
            self.say(&format!(
                "   {proto}: lan2 -> {external}   app: {}   lan2: {}   hairpin {}",
                x.got.as_deref().unwrap_or("nothing arrived"),
                x.reply,
                if this { "ok" } else { "FAILED" }
            ))?;
        }
        Ok(ok)
    }

    /// `pcpc peer` on A's router, its peer let in, a stranger refused.
    fn peer_flow(&mut self) -> Result<(bool, bool), DemoError> {
        self.say(&format!(
            "\n6. PEER mode: an app on A's router (100.64.0.2:{PEER_APP_PORT}) talks to one remote peer,\n   \
             203.0.113.50:{REMOTE_PORT}, and asks the CGN for that flow with pcpc peer (RFC 6887 §12): one\n   \
             5-tuple entry. The peer gets in and the app's answer leaves from the PEER's external\n   \
             endpoint; unsolicited inbound from anyone else (203.0.113.50:{STRANGER_PORT}) is refused"
        ))?;
        let pcpc = self.bins.pcpc.display().to_string();
        let remote = format!("{}:{REMOTE_PORT}", plan::INET_PEER);
        let peer = self.exec(
            Node::Cpe,
            &[
                &pcpc,
                "--server",
                "100.64.0.1",
                "peer",
                "--protocol",
                "udp",
                "--internal-port",
                &PEER_APP_PORT.to_string(),
                "--remote",
                &remote,
                "--lifetime",
                "300",
            ],
            15,
        )?;
        let line = peer.lines().next().unwrap_or("").trim().to_owned();
        self.say(&format!(
            "   cpe$ pcpc peer --internal-port {PEER_APP_PORT} --remote {remote}   {line}"
        ))?;
        let Some(external) = line
            .split_once("-> ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|e| e.parse::<SocketAddrV4>().ok())
        else {
            self.check()?;
            return Err(step_err("pcpc peer", peer));
        };
        for l in self
            .ctl(&["mappings"])?
            .lines()
            .filter(|l| l.starts_with("Type: PEER"))
        {
            self.say(&format!("   cgn: {l}"))?;
        }
        let app = self.spawn_ready(
            Node::Cpe,
            ECHO_APP,
            &["udp", &PEER_APP_PORT.to_string(), "60"],
        )?;
        let x = self.exchange(
            Node::Inet,
            "udp",
            external,
            "hello from the peer",
            REMOTE_PORT,
            &app,
        )?;
        let admitted = x.got.is_some() && x.reply_source() == Some(external);
        self.say(&format!(
            "   peer 203.0.113.50:{REMOTE_PORT} -> {external}   app: {}   peer: {}",
            x.got.as_deref().unwrap_or("nothing arrived"),
            x.reply
        ))?;
        let filtered = "cgn_dataplane_drops_total{reason=\"filtered\"}";
        let before = self.cgn_metric(filtered)?;
        let x = self.exchange(
            Node::Inet,
            "udp",
            external,
            "unsolicited",
            STRANGER_PORT,
            &app,
        )?;
        let drops = self.cgn_metric(filtered)?.saturating_sub(before);
        let refused = x.got.is_none() && x.reply.starts_with("NOREPLY") && drops > 0;
        self.say(&format!(
            "   stranger 203.0.113.50:{STRANGER_PORT} -> {external}   app: {}   CGN: {drops} packets dropped as filtered   PEER {}",
            x.got.as_deref().unwrap_or("nothing arrived"),
            if refused {
                "refused unsolicited inbound"
            } else {
                "did NOT refuse unsolicited inbound"
            }
        ))?;
        Ok((admitted, refused))
    }

    fn tables(&mut self) -> Result<(), DemoError> {
        self.say(
            "\n7. The CGN's table in the carrier format (cgn-sim ctl mappings): A's MAP IN / MAP OUT pairs,\n   \
             the PEER 5-tuple, and the implicit bindings B's traffic made",
        )?;
        for line in self.ctl(&["mappings"])?.lines() {
            self.say(&format!("   {line}"))?;
        }
        self.say("\n   A's NAT1 (nft list table ip upnp_iwf on cpe):")?;
        let nft = self
            .lab
            .exec_ok(Node::Cpe, &["nft", "list", "table", "ip", "upnp_iwf"])?;
        for line in nft.lines().filter(|l| !l.trim().is_empty()) {
            self.say(&format!("   {line}"))?;
        }
        self.say(&format!(
            "\n   A's IWF status ({IWF_STATUS_URL} from the LAN):"
        ))?;
        let status = self.exec(Node::Lan, &["python3", "-c", FETCH, IWF_STATUS_URL], 10)?;
        for line in status.lines().filter(|l| !l.trim().is_empty()) {
            self.say(&format!("   | {line}"))?;
        }
        Ok(())
    }

    fn restart(
        &mut self,
        iwf: &LabChild,
        external: SocketAddrV4,
        udp_app: &LabChild,
        tcp_app: &LabChild,
    ) -> Result<bool, DemoError> {
        self.say(
            "\n8. Restart the CGN (state lost, epoch reset, ANNOUNCE to its clients): cgn-sim ctl restart.\n   \
             A's IWF hears the ANNOUNCE and maps everything again with the same nonces, suggesting the\n   \
             old ports: proves recovery without the app doing anything",
        )?;
        // A client spots a restart by the epoch going back (RFC 6887 §8.5), which needs the CGN
        // to have been up a few seconds: give it that before restarting.
        let up = self.cgn_started.elapsed();
        if up < Duration::from_secs(4) {
            std::thread::sleep(Duration::from_secs(4) - up);
        }
        self.check()?;
        let before = iwf.log().matches("mapping restored upstream").count();
        let said = self.ctl(&["restart"])?;
        self.say(&format!("   {}", said.trim()))?;
        let recovered = self.wait(20, || {
            iwf.log().matches("mapping restored upstream").count() >= before + 2
        });
        for line in iwf.log().lines().filter(|l| {
            l.contains("interworking event=ServerStateLost") || l.contains("mapping restored")
        }) {
            self.say(&format!("   iwf: {}", strip_log_prefix(line)))?;
        }
        if !recovered {
            self.check()?;
            return Err(step_err("recovery after ANNOUNCE", iwf.log()));
        }
        if iwf.log().contains("ServerStateLost { announced: true }") {
            self.say(
                "   (announced: true — the IWF learned of the restart from the CGN's ANNOUNCE, not from a renewal)",
            )?;
        }
        let table = self.ctl(&["mappings"])?;
        for line in table.lines().filter(|l| l.starts_with("Type: MAP")) {
            self.say(&format!("   {line}"))?;
        }
        let same = ["UDP", "TCP"].iter().all(|p| {
            table.lines().any(|l| {
                l.starts_with(&format!("Type: MAP IN, Protocol: {p},"))
                    && l.contains(&format!("ANY -> {external}["))
            })
        });
        self.say(&format!(
            "   same external endpoint {external} for UDP and TCP: {}",
            if same { "yes" } else { "NO" }
        ))?;
        let (udp, tcp) = self.internet_to_a(external, udp_app, tcp_app, " after the restart")?;
        let hairpin = self.hairpin(external, udp_app, tcp_app, " after the restart")?;
        Ok(same && udp && tcp && hairpin)
    }
}

/// A log line without its timestamp, level and module, for the tour.
fn strip_log_prefix(line: &str) -> &str {
    let rest = line.split_once(": ").map_or(line, |(_, rest)| rest);
    match rest.split_once(": ") {
        Some((module, tail)) if module.contains("::") && !module.contains(' ') => tail,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_addresses_are_198_51_100_0_to_15() {
        assert!(in_pool("198.51.100.10:5000".parse().expect("addr")));
        assert!(in_pool("198.51.100.15:1".parse().expect("addr")));
        assert!(!in_pool("198.51.100.16:5000".parse().expect("addr")));
        assert!(!in_pool("100.64.0.3:5000".parse().expect("addr")));
    }

    #[test]
    fn log_lines_lose_timestamp_level_and_module() {
        let line = "2026-12-02T07:00:30.820828Z  INFO igd{action=AddPortMapping cp=192.168.0.10}: \
                    upnp_iwf::iwf::core::events: MAP SUCCESS: mapped through both NATs port=5000";
        assert_eq!(
            strip_log_prefix(line),
            "MAP SUCCESS: mapped through both NATs port=5000"
        );
        let line = "2026-12-02T07:00:31.1Z  INFO upnp_iwf::iwf::driver: interworking event=ServerStateLost";
        assert_eq!(strip_log_prefix(line), "interworking event=ServerStateLost");
        let line = "2026-12-02T07:00:30.6Z  INFO upnp_iwf: RFC 6970 interworking: UPnP mappings";
        assert_eq!(
            strip_log_prefix(line),
            "RFC 6970 interworking: UPnP mappings"
        );
    }
}
