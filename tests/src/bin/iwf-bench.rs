//! `iwf-bench`: the upnp-iwf figures of BENCHMARKS.md ("UPnP → PCP interworking"), all in one
//! run on one namespace lab (needs root):
//!
//! 1. `upnpc -a` / `upnpc -d` latency, side by side: upnp-iwf with its defaults (PCP MAP to
//!    cgn-sim at 100.64.0.1, nftables NAT1) and then Debian's miniupnpd (local nftables NAT
//!    only) on the same CPE, one after the other (never both at once). `--rounds` pairs each,
//!    after one unmeasured warm-up pair; every upnpc process is timed from spawn to exit
//!    (`ip netns exec` included, the same for both); median and p90 by nearest rank.
//! 2. Peak RSS (VmHWM) and RSS of upnp-iwf (`--quota 0`, `max_mappings` ≥ 2000) after
//!    `--mappings` UDP mappings added by one `/usr/bin/python3` miniupnpc process, and the
//!    add rate.
//! 3. Seconds until every one of those mappings is back at the CGN (same protocol and
//!    external endpoint) after `cgn-sim ctl restart` (RFC 6887 §14.1.3: clients wait 0–5 s
//!    at random before re-creating).
//!
//! miniupnpd 2.3.1 refuses to forward on a reserved WAN address such as 100.64.0.2 unless a
//! STUN check finds it behind a 1:1 NAT (see upnp-iwf/benches/side_by_side.sh), so for its
//! turn the bench adds a static 1:1 NAT 100.64.0.2 ↔ 198.51.100.1 in the cgn namespace and a
//! STUN responder on the Internet peer, and removes both afterwards. cgn-sim runs with
//! `--dataplane none` (PCP only), so it never sees that traffic.
//!
//! Everything happens inside the namespaces of one [`LabBuilder`] lab (removed on exit, also
//! on error, panic, SIGINT and SIGTERM); every wait is bounded; only processes this bench
//! started are stopped, by pid. The daemons are the `upnp-iwf` and `cgn-sim` binaries next
//! to this one, so a release build of this binary measures release daemons:
//!
//! ```text
//! cargo build --release -p upnp-iwf -p cgn-sim -p nat444-tests -j 2
//! sudo target/release/iwf-bench [--mappings 1000] [--rounds 20] [--json] [--keep-logs DIR]
//! ```
//!
//! `--keep-logs DIR` copies the daemons' logs (timestamped tracing lines) out of the lab
//! before it is removed, for the breakdown of an add (PCP round trip, `nft`, `conntrack`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use nat444_tests::lab::{Lab, LabBuilder, LabChild, Node, cgn_sim_argv, check_privileges};

/// upnp-iwf vs miniupnpd upnpc latency, upnp-iwf memory with many mappings, and restore
/// time after a CGN restart, in one namespace lab (see the module docs). Needs root.
#[derive(Debug, Parser)]
#[command(name = "iwf-bench", version, about)]
struct Cli {
    /// Mappings added for the memory and restore measurements (1–4000).
    #[arg(long, default_value_t = 1000)]
    mappings: u16,
    /// Measured `upnpc -a` / `upnpc -d` pairs per daemon (1–500).
    #[arg(long, default_value_t = 20)]
    rounds: u16,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Copy the daemons' logs into this directory before the lab is removed.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
}

/// The router's own masquerade of the LAN towards the WAN, as in tests/iwf_lab.rs; the IWF's
/// table sits in front of it.
const ROUTER_FW: &str = "table ip routerfw {\n  chain post { type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan0\" masquerade\n  }\n}\n";

/// The chains miniupnpd's nftables backend expects (as in upnp-iwf/benches/side_by_side.sh).
const MINIUPNPD_NFT: &str = "table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
table ip filter {
  chain miniupnpd { }
}
table ip nat {
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
";

/// miniupnpd's HTTP port (upnp-iwf has 5000; they never run at the same time anyway).
const MINIUPNPD_PORT: u16 = 5001;

/// Static full-cone 1:1 NAT of the CPE's WAN address in the cgn namespace, for miniupnpd's
/// STUN check only (removed after its turn).
const CGN_ONE_TO_ONE: &str = "table ip iwfbench_cgn {
  chain prerouting { type nat hook prerouting priority -100; policy accept; iifname \"outside0\" ip daddr 198.51.100.1 dnat to 100.64.0.2; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; oifname \"outside0\" ip saddr 100.64.0.2 snat to 198.51.100.1; }
}
";

/// STUN binding responder (XOR-MAPPED-ADDRESS = the request's source), at most 200 requests;
/// run under `timeout`.
const STUN: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 3478))
for _ in range(200):
    data, (ip, port) = s.recvfrom(2048)
    if len(data) < 20 or data[0:2] != b"\x00\x01":
        continue
    xip = struct.unpack("!I", socket.inet_aton(ip))[0] ^ 0x2112A442
    attr = struct.pack("!HHBBHI", 0x0020, 8, 0, 1, port ^ 0x2112, xip)
    s.sendto(struct.pack("!HHI", 0x0101, len(attr), 0x2112A442) + data[8:20] + attr, (ip, port))
"#;

/// One miniupnpc (python3-miniupnpc) process: SSDP discovery, then `n` AddPortMapping calls
/// for UDP ports `first…` to 192.168.0.10, timed around the adds only; prints
/// `AT <mappings added> <seconds>` every 100 and at the end.
const BULK_ADD: &str = r#"
import sys, time, miniupnpc
first, n = int(sys.argv[1]), int(sys.argv[2])
u = miniupnpc.UPnP()
u.discoverdelay = 2000
found = u.discover()
ctl = u.selectigd()
print("IGD %s (%d devices)" % (ctl, found), flush=True)
t = time.monotonic()
for p in range(first, first + n):
    try:
        ok = u.addportmapping(p, "UDP", "192.168.0.10", p, "iwf-bench", "", 3600)
    except Exception as e:
        print("FAILED %d %s" % (p, e), flush=True)
        sys.exit(1)
    if not ok:
        print("FAILED %d" % p, flush=True)
        sys.exit(1)
    done = p - first + 1
    if done % 100 == 0 or done == n:
        print("AT %d %.6f" % (done, time.monotonic() - t), flush=True)
"#;

/// First port of the latency rounds (round `i` maps port `40000 + i`, for both daemons).
const LATENCY_FIRST_PORT: u16 = 40000;
/// First port of the bulk mappings.
const BULK_FIRST_PORT: u16 = 20000;
/// Longest wait for anything (daemon start, bulk adds, restore).
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Median and p90 (nearest rank) of samples in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    p50: f64,
    p90: f64,
    max: f64,
    n: usize,
}

/// Nearest-rank percentile summary of `samples` (milliseconds).
fn summarize(samples: &[f64]) -> Summary {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Summary {
        p50: rank(0.5),
        p90: rank(0.9),
        max: v.last().copied().unwrap_or(f64::NAN),
        n: v.len(),
    }
}

/// The latency rounds of one daemon.
#[derive(Debug, Default)]
struct Latency {
    add: Summary,
    delete: Summary,
    failed: usize,
}

/// Memory and rate figures of the bulk add.
#[derive(Debug, Default)]
struct Bulk {
    mappings: usize,
    idle: Mem,
    full: Mem,
    add_secs: f64,
    /// Adds in the first and in the last progress interval (100 each for 1000).
    first_n: usize,
    last_n: usize,
    /// Milliseconds per add over the first and over the last interval.
    first_ms: f64,
    last_ms: f64,
    at_cgn: usize,
}

/// Restore after the CGN restart.
#[derive(Debug, Default)]
struct Restore {
    first_back_secs: f64,
    all_back_secs: f64,
    after: Mem,
}

/// Everything one run measured.
#[derive(Debug, Default)]
struct Report {
    rounds: usize,
    ours: Latency,
    miniupnpd: Latency,
    miniupnpd_version: String,
    bulk: Bulk,
    restore: Restore,
}

/// Stops the run (the lab is then dropped) once SIGINT/SIGTERM set `stop`.
fn check(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Polls `cond` every `every` until it holds, `limit` passes, or the run is interrupted.
fn wait_for(
    stop: &AtomicBool,
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(true);
        }
        check(stop)?;
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(every);
    }
}

/// The binary `name` in the directory of this executable (target/<profile>/).
fn sibling(name: &str) -> anyhow::Result<String> {
    let bin = nat444_tests::bins::find(name).with_context(|| {
        format!(
            "{name} is not built next to this binary; run \
             `cargo build --release -p upnp-iwf -p cgn-sim -p nat444-tests -j 2`"
        )
    })?;
    Ok(bin.display().to_string())
}

/// Standard output and error of `argv` in `node`, which must exit successfully in `secs`.
fn run_ok(lab: &Lab, node: Node, argv: &[&str], secs: u64) -> anyhow::Result<String> {
    let o = lab
        .exec_timeout(node, argv, Duration::from_secs(secs))
        .with_context(|| argv.join(" "))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        bail!("{} failed ({}): {text}", argv.join(" "), o.status);
    }
    Ok(text)
}

/// Loads an nftables ruleset into `node`.
fn nft_load(lab: &Lab, node: Node, name: &str, rules: &str) -> anyhow::Result<()> {
    let path = lab.log_dir().join(name);
    std::fs::create_dir_all(lab.log_dir())?;
    std::fs::write(&path, rules).with_context(|| path.display().to_string())?;
    run_ok(lab, node, &["nft", "-f", &path.display().to_string()], 10).map(drop)
}

/// Memory figures of a process from `/proc/<pid>/status`, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    /// Peak resident set (`VmHWM`).
    hwm: u64,
    /// Resident set now (`VmRSS`).
    rss: u64,
    /// Of which anonymous memory (heap, stacks): `RssAnon`.
    anon: u64,
    /// Of which file-backed pages (the binary, libraries): `RssFile`.
    file: u64,
    /// Threads.
    threads: u64,
}

/// [`Mem`] of `pid`.
fn memory(pid: u32) -> anyhow::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    Ok(Mem {
        hwm: field("VmHWM:")?,
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
        threads: field("Threads:")?,
    })
}

/// The pid of the process running `binary`: `child` itself (`ip netns exec` execs in place),
/// else one of its direct children.
fn daemon_pid(child: &LabChild, binary: &str) -> anyhow::Result<u32> {
    let want = std::fs::canonicalize(binary).with_context(|| binary.to_string())?;
    let is_it =
        |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == want);
    let pid = child.pid();
    if is_it(pid) {
        return Ok(pid);
    }
    let kids =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    kids.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|&p| is_it(p))
        .with_context(|| format!("no process of {binary} at pid {pid} or among its children"))
}

/// The lab with cgn-sim (PCP only) in the cgn namespace and the router firewall on the CPE.
struct Bench {
    lab: Lab,
    iwf_bin: String,
    cgn_bin: String,
    ctl: PathBuf,
    cgn: LabChild,
    keep_logs: Option<PathBuf>,
}

impl Bench {
    fn start(stop: &AtomicBool, keep_logs: Option<PathBuf>) -> anyhow::Result<Bench> {
        let iwf_bin = sibling("upnp-iwf")?;
        let cgn_bin = sibling("cgn-sim")?;
        let lab = LabBuilder::new().build().context("building the lab")?;
        std::fs::create_dir_all(lab.log_dir())?;
        let ctl = lab.log_dir().join("cgn.sock");
        let argv = cgn_sim_argv(&cgn_bin, "none", &ctl.display().to_string());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cgn = lab.spawn(Node::Cgn, &argv).context("starting cgn-sim")?;
        if !wait_for(
            stop,
            Duration::from_secs(15),
            Duration::from_millis(50),
            || ctl.exists(),
        )? {
            bail!("cgn-sim did not open {}:\n{}", ctl.display(), cgn.log());
        }
        nft_load(&lab, Node::Cpe, "routerfw.nft", ROUTER_FW).context("router firewall")?;
        Ok(Bench {
            lab,
            iwf_bin,
            cgn_bin,
            ctl,
            cgn,
            keep_logs,
        })
    }

    /// Copies `child`'s log to `--keep-logs DIR/name`, if asked to.
    fn save_log(&self, child: &LabChild, name: &str) {
        if let Some(dir) = &self.keep_logs {
            let _ = std::fs::create_dir_all(dir);
            if let Err(e) = std::fs::copy(child.log_path(), dir.join(name)) {
                eprintln!("iwf-bench: saving {name}: {e}");
            }
        }
    }

    /// `cgn-sim --ctl SOCK ctl ARGS…` (a Unix socket: no namespace needed).
    fn cgn_ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = std::process::Command::new(&self.cgn_bin)
            .arg("--ctl")
            .arg(&self.ctl)
            .arg("ctl")
            .args(args)
            .output()
            .context("cgn-sim ctl")?;
        if !o.status.success() {
            bail!(
                "cgn-sim ctl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Sorted `MAP IN` entries of subscriber 100.64.0.2 at the CGN, as `PROTO external`.
    fn map_in(&self) -> anyhow::Result<Vec<String>> {
        Ok(map_in_lines(&self.cgn_ctl(&["mappings"])?))
    }

    /// upnp-iwf with `extra` flags and a fresh state directory `state`; waits until it serves.
    fn spawn_iwf(
        &self,
        stop: &AtomicBool,
        state: &str,
        extra: &[&str],
    ) -> anyhow::Result<LabChild> {
        let state = self.lab.log_dir().join(state);
        let state = state.display().to_string();
        let argv = nat444_tests::bins::cpe_iwf_argv(&self.iwf_bin, &state, "none", extra);
        let iwf = self
            .lab
            .spawn(Node::Cpe, &argv)
            .context("starting upnp-iwf")?;
        if !wait_for(
            stop,
            Duration::from_secs(15),
            Duration::from_millis(20),
            || iwf.log().contains("serving UPnP IGD"),
        )? {
            bail!("upnp-iwf did not start:\n{}", iwf.log());
        }
        Ok(iwf)
    }

    /// `rounds` timed `upnpc -a` / `upnpc -d` pairs against `url`, after one warm-up pair,
    /// each on its own port from [`LATENCY_FIRST_PORT`]: cgn-sim holds a freed external port
    /// for 120 s against any other nonce (RFC 6888 REQ-8), and every IWF mapping has a fresh
    /// nonce, so re-adding the port just deleted would get UPnP error 718.
    fn latency(&self, stop: &AtomicBool, url: &str, rounds: usize) -> anyhow::Result<Latency> {
        let mut adds = Vec::new();
        let mut dels = Vec::new();
        let mut failed = 0;
        let mut last_failure = String::new();
        for (round, port) in (0..=rounds).zip(LATENCY_FIRST_PORT..) {
            check(stop)?;
            let port = port.to_string();
            let add = [
                "upnpc",
                "-u",
                url,
                "-a",
                "192.168.0.10",
                &port,
                &port,
                "UDP",
            ];
            let del = ["upnpc", "-u", url, "-d", &port, "UDP"];
            let t = Instant::now();
            let a = self
                .lab
                .exec_timeout(Node::Lan, &add, Duration::from_secs(30))?;
            let add_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let d = self
                .lab
                .exec_timeout(Node::Lan, &del, Duration::from_secs(30))?;
            let del_ms = t.elapsed().as_secs_f64() * 1e3;
            let a_out = String::from_utf8_lossy(&a.stdout);
            let d_out = String::from_utf8_lossy(&d.stdout);
            let add_ok = a.status.success() && a_out.contains("is redirected to internal");
            let del_ok = d.status.success() && !d_out.contains("failed");
            if !add_ok {
                failed += 1;
                last_failure = format!("{a_out}{}", String::from_utf8_lossy(&a.stderr));
            }
            if !del_ok {
                failed += 1;
                last_failure = format!("{d_out}{}", String::from_utf8_lossy(&d.stderr));
            }
            if round == 0 {
                if !(add_ok && del_ok) {
                    bail!("warm-up upnpc -a/-d against {url} failed:\n{last_failure}");
                }
                failed = 0;
                continue;
            }
            adds.push(add_ms);
            dels.push(del_ms);
        }
        if failed > rounds {
            bail!(
                "{failed} of {} upnpc runs against {url} failed; last:\n{last_failure}",
                2 * rounds
            );
        }
        Ok(Latency {
            add: summarize(&adds),
            delete: summarize(&dels),
            failed,
        })
    }

    /// Part 1a: upnp-iwf with its defaults.
    fn ours(&self, stop: &AtomicBool, rounds: usize) -> anyhow::Result<Latency> {
        let iwf = self.spawn_iwf(stop, "iwf-latency", &[])?;
        let result = self.latency(stop, "http://192.168.0.1:5000/rootDesc.xml", rounds);
        let left = self.map_in()?;
        let _ = iwf.terminate(Duration::from_secs(5));
        self.save_log(&iwf, "upnp-iwf-latency.log");
        let result = result.with_context(|| format!("upnp-iwf log:\n{}", iwf.log()))?;
        if !left.is_empty() {
            bail!("upnpc -d left MAPs at the CGN: {left:?}");
        }
        Ok(result)
    }

    /// Part 1b: Debian's miniupnpd (local NAT only), with the STUN responder and 1:1 NAT its
    /// reserved-address check needs.
    fn miniupnpd(&self, stop: &AtomicBool, rounds: usize) -> anyhow::Result<(Latency, String)> {
        let version = std::process::Command::new("/usr/sbin/miniupnpd")
            .arg("--version")
            .output()
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines().next().unwrap_or_default().trim().to_string()
            })
            .context("/usr/sbin/miniupnpd (Debian miniupnpd-nftables) is missing")?;
        nft_load(&self.lab, Node::Cgn, "cgn-1to1.nft", CGN_ONE_TO_ONE)?;
        let stun = self.lab.spawn(
            Node::Inet,
            &[
                "timeout",
                "600",
                "/usr/bin/python3",
                "-c",
                STUN,
                "203.0.113.50",
            ],
        )?;
        nft_load(&self.lab, Node::Cpe, "miniupnpd.nft", MINIUPNPD_NFT)?;
        let dir = self.lab.log_dir();
        let conf = dir.join("miniupnpd.conf");
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan0\nlistening_ip=lan0\nhttp_port={MINIUPNPD_PORT}\n\
                 enable_natpmp=no\nenable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
                 uuid=3b9c0000-0000-4000-8000-000000000001\next_perform_stun=yes\n\
                 ext_stun_host=203.0.113.50\next_stun_port=3478\n\
                 allow 1024-65535 192.168.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
            ),
        )?;
        // Its own pid file: the default /var/run/miniupnpd.pid clashes with other instances.
        let pidfile = dir.join("miniupnpd.pid");
        let (conf, pidfile) = (conf.display().to_string(), pidfile.display().to_string());
        std::thread::sleep(Duration::from_millis(300));
        let daemon = self.lab.spawn(
            Node::Cpe,
            &["/usr/sbin/miniupnpd", "-f", &conf, "-P", &pidfile, "-d"],
        )?;
        // Its STUN check takes up to a few seconds before it listens.
        let up = wait_for(
            stop,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || daemon.log().contains("HTTP listening on port"),
        )?;
        std::thread::sleep(Duration::from_millis(500));
        if !up || !daemon.log().contains("Port forwarding is now enabled") {
            bail!(
                "miniupnpd did not enable port forwarding:\n{}",
                daemon.log()
            );
        }
        let url = format!("http://192.168.0.1:{MINIUPNPD_PORT}/rootDesc.xml");
        let result = self.latency(stop, &url, rounds);
        let _ = daemon.terminate(Duration::from_secs(5));
        self.save_log(&daemon, "miniupnpd.log");
        let _ = stun.kill();
        let result = result.with_context(|| format!("miniupnpd log:\n{}", daemon.log()))?;
        for (node, table) in [
            (Node::Cgn, "ip iwfbench_cgn"),
            (Node::Cpe, "inet filter"),
            (Node::Cpe, "ip filter"),
            (Node::Cpe, "ip nat"),
        ] {
            let mut argv = vec!["nft", "delete", "table"];
            argv.extend(table.split(' '));
            run_ok(&self.lab, node, &argv, 10)?;
        }
        Ok((result, version))
    }

    /// Parts 2 and 3: `n` mappings from one miniupnpc process, memory, then the CGN restart.
    fn bulk_and_restore(&self, stop: &AtomicBool, n: u16) -> anyhow::Result<(Bulk, Restore)> {
        let conf = self.lab.log_dir().join("iwf-bulk.toml");
        let max = usize::from(n).max(2000);
        std::fs::write(&conf, format!("max_mappings = {max}\n"))?;
        let conf = conf.display().to_string();
        let iwf = self.spawn_iwf(stop, "iwf-bulk", &["--quota", "0", "--config", &conf])?;
        let result = self.bulk_with(stop, n, &iwf);
        let _ = iwf.terminate(Duration::from_secs(10));
        self.save_log(&iwf, "upnp-iwf-bulk.log");
        self.save_log(&self.cgn, "cgn-sim.log");
        result.with_context(|| format!("upnp-iwf log (tail):\n{}", tail(&iwf.log(), 30)))
    }

    fn bulk_with(
        &self,
        stop: &AtomicBool,
        n: u16,
        iwf: &LabChild,
    ) -> anyhow::Result<(Bulk, Restore)> {
        let pid = daemon_pid(iwf, &self.iwf_bin)?;
        let idle = memory(pid)?;
        let first = BULK_FIRST_PORT.to_string();
        let count = n.to_string();
        let adder = self.lab.spawn(
            Node::Lan,
            &["/usr/bin/python3", "-c", BULK_ADD, &first, &count],
        )?;
        let limit = bulk_limit(n);
        let done = wait_for(stop, limit, Duration::from_millis(100), || {
            adder.try_wait().is_ok_and(|s| s.is_some())
        })?;
        let text = adder.log();
        if !done {
            let _ = adder.kill();
            bail!(
                "the bulk add did not finish within {} s; progress (mappings, seconds):\n{text}",
                limit.as_secs()
            );
        }
        let progress = parse_progress(&text);
        let Some(&(_, add_secs)) = progress.last().filter(|p| p.0 == usize::from(n)) else {
            bail!("miniupnpc bulk add failed:\n{text}");
        };
        if !text.contains(":5000/") {
            bail!("miniupnpc found another IGD than upnp-iwf: {text}");
        }
        // Per-add time over the first and over the last progress interval.
        let (first_n, first_ms) = (progress[0].0, progress[0].1 / progress[0].0 as f64 * 1e3);
        let (last_n, last_ms) = match progress.len() {
            1 => (first_n, first_ms),
            k => {
                let (a, b) = (progress[k - 2], progress[k - 1]);
                (b.0 - a.0, (b.1 - a.1) / (b.0 - a.0) as f64 * 1e3)
            }
        };
        let full = memory(pid)?;
        // Where the memory is, for whoever reads the kept logs (heap vs stacks vs binary).
        if let Some(dir) = &self.keep_logs {
            let _ = std::fs::create_dir_all(dir);
            for f in ["smaps", "status"] {
                let _ = std::fs::copy(
                    format!("/proc/{pid}/{f}"),
                    dir.join(format!("iwf-{f}-full")),
                );
            }
        }
        let before = self.map_in()?;
        if before.len() != usize::from(n) {
            bail!("{} MAP IN entries at the CGN, expected {n}", before.len());
        }
        let bulk = Bulk {
            mappings: usize::from(n),
            idle,
            full,
            add_secs,
            first_n,
            last_n,
            first_ms,
            last_ms,
            at_cgn: before.len(),
        };

        // RFC 6887 §8.5: the epoch check needs the CGN up a few seconds before its restart is
        // visible to a client.
        std::thread::sleep(Duration::from_secs(4));
        check(stop)?;
        let t = Instant::now();
        self.cgn_ctl(&["restart"])?;
        let mut first_back = None;
        let mut last = Vec::new();
        let all_back = wait_for(stop, MAX_WAIT, Duration::from_millis(100), || {
            last = self.map_in().unwrap_or_default();
            if first_back.is_none() && !last.is_empty() {
                first_back = Some(t.elapsed());
            }
            last == before
        })?;
        let all_back_secs = t.elapsed().as_secs_f64();
        if !all_back {
            bail!(
                "after the CGN restart only {} of {n} mappings were back on their ports within \
                 {} s\n--- upnp-iwf log (tail):\n{}",
                last.iter().filter(|l| before.contains(l)).count(),
                MAX_WAIT.as_secs(),
                tail(&iwf.log(), 40)
            );
        }
        let after = memory(pid)?;
        Ok((
            bulk,
            Restore {
                first_back_secs: first_back.map_or(all_back_secs, |d| d.as_secs_f64()),
                all_back_secs,
                after,
            },
        ))
    }
}

/// Bound of the bulk add: 120 s plus half a second per mapping (each add runs `nft` twice
/// and `conntrack` once, and `nft -j list ruleset` grows with the table).
fn bulk_limit(n: u16) -> Duration {
    MAX_WAIT + Duration::from_millis(500) * u32::from(n)
}

/// The `AT mappings seconds` progress lines of [`BULK_ADD`].
fn parse_progress(text: &str) -> Vec<(usize, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("AT ")?.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `MAP IN` lines of the CGN's table for subscriber 100.64.0.2, as sorted `PROTO external`.
fn map_in_lines(table: &str) -> Vec<String> {
    let mut v: Vec<String> = table
        .lines()
        .filter(|l| l.contains("Type: MAP IN") && l.contains("[100.64.0.2:"))
        .map(|l| {
            let ext = l
                .split("ANY -> ")
                .nth(1)
                .and_then(|r| r.split('[').next())
                .unwrap_or("?")
                .trim();
            let proto = if l.contains("Protocol: TCP") {
                "TCP"
            } else {
                "UDP"
            };
            format!("{proto} {ext}")
        })
        .collect();
    v.sort();
    v
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    fn table(&self) -> String {
        let mut s = String::new();
        let (o, m) = (&self.ours, &self.miniupnpd);
        let _ = writeln!(
            s,
            "| what | upnp-iwf (PCP to cgn-sim + nftables NAT1) | {} (local nftables NAT) |",
            self.miniupnpd_version
        );
        let _ = writeln!(s, "|---|---|---|");
        for (name, a, b) in [
            ("`upnpc -a`", o.add, m.add),
            ("`upnpc -d`", o.delete, m.delete),
        ] {
            let _ = writeln!(
                s,
                "| {name}, {} runs: median / p90 / max | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} / {:.1} ms |",
                a.n, a.p50, a.p90, a.max, b.p50, b.p90, b.max
            );
        }
        let _ = writeln!(
            s,
            "| failed upnpc runs | {} of {} | {} of {} |",
            o.failed,
            2 * self.rounds,
            m.failed,
            2 * self.rounds
        );
        let (b, r) = (&self.bulk, &self.restore);
        let _ = writeln!(s);
        let _ = writeln!(s, "| what | upnp-iwf |");
        let _ = writeln!(s, "|---|---|");
        let _ = writeln!(
            s,
            "| add {} UDP mappings, one python3-miniupnpc process | {:.2} s = {:.1} mappings/s ({} MAP IN at the CGN) |",
            b.mappings,
            b.add_secs,
            b.mappings as f64 / b.add_secs,
            b.at_cgn
        );
        let _ = writeln!(
            s,
            "| time per add, first {} / last {} adds | {:.1} / {:.1} ms |",
            b.first_n, b.last_n, b.first_ms, b.last_ms
        );
        for (what, mem) in [
            ("idle, before the adds", b.idle),
            ("after the adds", b.full),
            ("after the restore", r.after),
        ] {
            let _ = writeln!(
                s,
                "| memory {what}: VmHWM / VmRSS (RssAnon + RssFile), threads | {:.2} / {:.2} ({:.2} + {:.2}) MiB, {} |",
                mib(mem.hwm),
                mib(mem.rss),
                mib(mem.anon),
                mib(mem.file),
                mem.threads
            );
        }
        let _ = writeln!(
            s,
            "| peak RSS with {} mappings vs target ≤ 8 MiB | {:.2} MiB {} |",
            b.mappings,
            mib(b.full.hwm),
            if b.full.hwm <= 8 * 1024 { "✔" } else { "✘" }
        );
        let _ = writeln!(
            s,
            "| `cgn-sim ctl restart` → first / all {} mappings back on the same ports | {:.2} / {:.2} s |",
            b.mappings, r.first_back_secs, r.all_back_secs
        );
        s
    }

    fn json(&self) -> String {
        let lat = |l: &Latency| {
            let sum = |x: &Summary| {
                format!(
                    "{{\"p50\":{:.3},\"p90\":{:.3},\"max\":{:.3},\"n\":{}}}",
                    x.p50, x.p90, x.max, x.n
                )
            };
            format!(
                "{{\"add_ms\":{},\"delete_ms\":{},\"failed\":{}}}",
                sum(&l.add),
                sum(&l.delete),
                l.failed
            )
        };
        let mem = |m: &Mem| {
            format!(
                "{{\"vm_hwm_kib\":{},\"vm_rss_kib\":{},\"rss_anon_kib\":{},\"rss_file_kib\":{},\"threads\":{}}}",
                m.hwm, m.rss, m.anon, m.file, m.threads
            )
        };
        let (b, r) = (&self.bulk, &self.restore);
        format!(
            "{{\"rounds\":{},\"upnp_iwf\":{},\"miniupnpd\":{},\"miniupnpd_version\":{:?},\
             \"bulk\":{{\"mappings\":{},\"add_secs\":{:.3},\"mappings_per_sec\":{:.1},\
             \"first_n\":{},\"first_ms_per_add\":{:.3},\"last_n\":{},\"last_ms_per_add\":{:.3},\
             \"at_cgn\":{},\"memory_idle\":{},\"memory_after_adds\":{}}},\
             \"restore\":{{\"first_back_secs\":{:.3},\"all_back_secs\":{:.3},\"memory_after\":{}}}}}",
            self.rounds,
            lat(&self.ours),
            lat(&self.miniupnpd),
            self.miniupnpd_version,
            b.mappings,
            b.add_secs,
            b.mappings as f64 / b.add_secs,
            b.first_n,
            b.first_ms,
            b.last_n,
            b.last_ms,
            b.at_cgn,
            mem(&b.idle),
            mem(&b.full),
            r.first_back_secs,
            r.all_back_secs,
            mem(&r.after)
        )
    }
}

fn run(cli: &Cli, stop: &AtomicBool) -> anyhow::Result<Report> {
    if !(1..=4000).contains(&cli.mappings) {
        bail!("--mappings must be 1–4000 (cgn-sim's default quota is 4096 ports)");
    }
    if !(1..=500).contains(&cli.rounds) {
        bail!("--rounds must be 1–500");
    }
    check_privileges().map_err(|e| anyhow::anyhow!("iwf-bench needs root: {e}"))?;
    for (tool, why) in [
        ("/usr/sbin/miniupnpd", "Debian miniupnpd-nftables"),
        ("/usr/bin/python3", "python3 with python3-miniupnpc"),
    ] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing ({why})");
        }
    }
    let bench = Bench::start(stop, cli.keep_logs.clone())?;
    let rounds = usize::from(cli.rounds);
    eprintln!(
        "iwf-bench: lab {} up; upnp-iwf latency…",
        bench.lab.prefix()
    );
    let ours = bench.ours(stop, rounds)?;
    eprintln!("iwf-bench: miniupnpd latency…");
    let (miniupnpd, miniupnpd_version) = bench.miniupnpd(stop, rounds)?;
    eprintln!("iwf-bench: {} mappings, then a CGN restart…", cli.mappings);
    let (bulk, restore) = bench.bulk_and_restore(stop, cli.mappings)?;
    Ok(Report {
        rounds,
        ours,
        miniupnpd,
        miniupnpd_version,
        bulk,
        restore,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("iwf-bench: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(&cli, &stop) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iwf-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = summarize(&v);
        assert_eq!((s.p50, s.p90, s.max, s.n), (10.0, 18.0, 20.0, 20));
        assert!(summarize(&[]).p50.is_nan());
    }

    #[test]
    fn map_in_lines_keep_only_the_first_subscribers_inbound_maps() {
        let t = "Type: MAP IN, Protocol: UDP, ANY -> 198.51.100.1:20000[100.64.0.2:20000] TTL: 3600\n\
                 Type: MAP OUT, Protocol: UDP, 100.64.0.2:20000[198.51.100.1:20000] -> ANY\n\
                 Type: MAP IN, Protocol: TCP, ANY -> 198.51.100.2:80[100.64.0.3:80] TTL: 9\n";
        assert_eq!(map_in_lines(t), ["UDP 198.51.100.1:20000"]);
    }
}
