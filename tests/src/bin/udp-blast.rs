//! `udp-blast`: a bounded UDP load tool for the lab, and the TUN-path vs kernel-NAT
//! comparison of BENCHMARKS.md.
//!
//! * `udp-blast send --dst ADDR:PORT [--secs S] [--max-packets N] [--size B] [--flows K]
//!   [--rate PPS]`: sends B-byte IPv4 packets (UDP payload B − 28) from K source ports, round
//!   robin, until S seconds or N packets, whichever comes first; prints what it sent.
//! * `udp-blast recv --bind ADDR:PORT [--secs S]`: counts datagrams for at most S seconds
//!   (stops 1 s after the traffic stops) and prints `received N packets … pps`.
//! * `udp-blast compare [--secs S] [--flows K] [--size B] [--gro]`: builds a lab twice, once
//!   with kernel nftables NAT (snat to the pool, `persistent` = paired) in the cgn namespace
//!   and once with `cgn-sim --dataplane tun` there (the `cgn-sim` binary next to this one),
//!   blasts from the CPE (100.64.0.2) to the Internet peer (203.0.113.50:9999) and prints both
//!   receive rates. `--gro` turns on GRO and UDP GRO forwarding (`ethtool -K sub1 gro on
//!   rx-udp-gro-forwarding on`) on the CGN's subscriber-facing veth in both configurations,
//!   so the kernel may coalesce a flow's packets before NAT (needs `ethtool`);
//!   `--cgn-arg=ARG` (repeatable) passes ARG to cgn-sim (e.g. `--no-tun-offload`). Needs root.
//!   Traffic stays inside the lab's namespaces; everything is bounded in time.
//!
//! ```text
//! cargo build --release -p cgn-sim --bin cgn-sim -p nat444-tests --bin udp-blast
//! sudo target/release/udp-blast compare --secs 5
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use nat444_tests::lab::{Lab, LabBuilder, LabChild, Node, cgn_sim_argv};

/// Bounded UDP load generator and NAT throughput comparison (see the module docs).
#[derive(Debug, Parser)]
#[command(name = "udp-blast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send UDP load (bounded by --secs and --max-packets).
    Send {
        /// Destination.
        #[arg(long)]
        dst: SocketAddr,
        /// Longest run, seconds (at most 60).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Most packets sent.
        #[arg(long, default_value_t = 50_000_000)]
        max_packets: u64,
        /// IPv4 packet size in bytes (≥ 28).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Source ports (flows), round robin.
        #[arg(long, default_value_t = 16)]
        flows: usize,
        /// Packets per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Count received UDP datagrams.
    Recv {
        /// Address to bind.
        #[arg(long)]
        bind: SocketAddr,
        /// Longest run, seconds (at most 120).
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    /// Kernel nftables NAT vs cgn-sim's TUN dataplane in the lab (needs root).
    Compare {
        /// Seconds of load per configuration (at most 60).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Source ports (flows).
        #[arg(long, default_value_t = 16)]
        flows: usize,
        /// IPv4 packet size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Turn on GRO and UDP GRO forwarding on the CGN's subscriber-facing veth (both
        /// configurations).
        #[arg(long)]
        gro: bool,
        /// Extra argument for cgn-sim (repeatable), e.g. `--cgn-arg=--no-tun-offload`.
        #[arg(long = "cgn-arg", value_name = "ARG", allow_hyphen_values = true)]
        cgn_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-blast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Send {
            dst,
            secs,
            max_packets,
            size,
            flows,
            rate,
        } => {
            let r = send(dst, secs.clamp(0.0, 60.0), max_packets, size, flows, rate)?;
            println!(
                "sent {} packets of {size} bytes in {:.3} s = {:.0} pps",
                r.0,
                r.1,
                r.0 as f64 / r.1.max(1e-9)
            );
            Ok(())
        }
        Cmd::Recv { bind, secs } => {
            let (n, window) = recv(bind, secs.clamp(0.0, 120.0))?;
            println!(
                "received {n} packets in {window:.3} s = {:.0} pps",
                if window > 0.0 {
                    (n.saturating_sub(1)) as f64 / window
                } else {
                    0.0
                }
            );
            Ok(())
        }
        Cmd::Compare {
            secs,
            flows,
            size,
            gro,
            cgn_args,
        } => compare(secs.clamp(1.0, 60.0), flows, size, gro, &cgn_args),
    }
}

/// Sends; returns (packets, seconds).
fn send(
    dst: SocketAddr,
    secs: f64,
    max_packets: u64,
    size: usize,
    flows: usize,
    rate: u64,
) -> anyhow::Result<(u64, f64)> {
    if size < 28 {
        bail!("--size must be at least 28 (IPv4 + UDP headers)");
    }
    let bind: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socks: Vec<UdpSocket> = (0..flows.clamp(1, 1024))
        .map(|_| UdpSocket::bind(bind))
        .collect::<Result<_, _>>()
        .context("binding the source sockets")?;
    for s in &socks {
        s.connect(dst).context("connect")?;
    }
    let payload = vec![0x5au8; size - 28];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    'outer: while sent < max_packets {
        // Check the clock once per round of the flows (cheap enough, still bounded).
        if Instant::now() >= end {
            break;
        }
        for s in &socks {
            if sent >= max_packets {
                break 'outer;
            }
            if rate > 0 {
                let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            // ENOBUFS / ECONNREFUSED (ICMP from a previous packet) are not fatal under load.
            if s.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// Receives; returns (packets, seconds from the first to the last).
fn recv(bind: SocketAddr, secs: f64) -> anyhow::Result<(u64, f64)> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!("listening on {bind}");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = [0u8; 2048];
    let mut n = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(_) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                n += 1;
            }
            Err(_) => {
                if first.is_some() && last.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    let window = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok((n, window))
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("executable directory")?.join(name);
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p cgn-sim --bin cgn-sim)",
            p.display()
        );
    }
    Ok(p)
}

/// Receive rate parsed from a `recv` log.
fn parse_pps(log: &str) -> Option<(u64, f64)> {
    let line = log.lines().find(|l| l.starts_with("received "))?;
    let mut w = line.split_whitespace();
    let n = w.nth(1)?.parse().ok()?;
    let pps = line
        .rsplit(" = ")
        .next()?
        .trim_end_matches(" pps")
        .parse()
        .ok()?;
    Some((n, pps))
}

struct Run {
    sent: String,
    received: u64,
    pps: f64,
}

fn measure(lab: &Lab, me: &str, secs: f64, flows: usize, size: usize) -> anyhow::Result<Run> {
    let rsecs = format!("{}", secs + 5.0);
    let recv: LabChild = lab.spawn(
        Node::Inet,
        &[me, "recv", "--bind", "0.0.0.0:9999", "--secs", &rsecs],
    )?;
    let t = Instant::now();
    while !recv.log().contains("listening") && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let flows_s = flows.to_string();
    let size_s = size.to_string();
    let ssecs = secs.to_string();
    let out = lab.exec_timeout(
        Node::Cpe,
        &[
            me,
            "send",
            "--dst",
            "203.0.113.50:9999",
            "--secs",
            &ssecs,
            "--flows",
            &flows_s,
            "--size",
            &size_s,
        ],
        Duration::from_secs_f64(secs + 30.0),
    )?;
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    recv.wait_timeout(Duration::from_secs_f64(secs + 10.0))?;
    let log = recv.log();
    let (received, pps) = parse_pps(&log).with_context(|| format!("receiver said: {log}"))?;
    Ok(Run {
        sent,
        received,
        pps,
    })
}

fn compare(
    secs: f64,
    flows: usize,
    size: usize,
    gro: bool,
    cgn_args: &[String],
) -> anyhow::Result<()> {
    let me_path = std::env::current_exe()?;
    let me = me_path.display().to_string();
    let cgn_sim = sibling("cgn-sim")?.display().to_string();
    let mut results = Vec::new();
    for mode in ["kernel-nft", "cgn-sim-tun"] {
        let lab = LabBuilder::new().build().context("building the lab")?;
        if gro {
            lab.exec_ok(
                Node::Cgn,
                &[
                    "ethtool",
                    "-K",
                    "sub1",
                    "gro",
                    "on",
                    "rx-udp-gro-forwarding",
                    "on",
                ],
            )
            .context("--gro")?;
        }
        let table = format!("n444blast_{}", std::process::id());
        let mut daemon = None;
        if mode == "kernel-nft" {
            let rules = format!(
                "add table ip {table}; add chain ip {table} post {{ type nat hook postrouting priority srcnat; }}; add rule ip {table} post oifname \"outside0\" ip saddr 100.64.0.0/10 snat to 198.51.100.0-198.51.100.15 persistent"
            );
            lab.exec_ok(Node::Cgn, &["nft", &rules])?;
        } else {
            let sock = std::env::temp_dir().join(format!("{}-blast.sock", lab.prefix()));
            let sock_s = sock.display().to_string();
            let mut argv = cgn_sim_argv(cgn_sim.as_str(), "tun", &sock_s);
            argv.extend(cgn_args.iter().cloned());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let child = lab.spawn(Node::Cgn, &argv)?;
            let t = Instant::now();
            while !sock.exists() {
                if t.elapsed() > Duration::from_secs(15) {
                    bail!("cgn-sim did not start: {}", child.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // A control answer means the TUN device and its routes are in place.
            let _ = std::process::Command::new(&cgn_sim)
                .arg("--ctl")
                .arg(&sock)
                .args(["ctl", "stats"])
                .output();
            daemon = Some((child, sock));
        }
        let run = measure(&lab, &me, secs, flows, size);
        if let Some((child, sock)) = daemon {
            let stats = std::process::Command::new(&cgn_sim)
                .arg("--ctl")
                .arg(&sock)
                .args(["ctl", "stats"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for l in stats.lines().filter(|l| {
                (l.starts_with("cgn_dataplane_packets_total")
                    || l.starts_with("cgn_dataplane_tun_"))
                    && !l.ends_with(" 0")
            }) {
                println!("  {mode}: {l}");
            }
            let _ = child.terminate(Duration::from_secs(5));
            let _ = std::fs::remove_file(&sock);
        } else {
            let _ = lab.exec(Node::Cgn, &["nft", "delete", "table", "ip", &table]);
        }
        let run = run?;
        println!(
            "{mode:<12} sender: {} | receiver: {} packets, {:.0} pps",
            run.sent, run.received, run.pps
        );
        results.push((mode, run.pps));
        drop(lab);
    }
    if let [(_, kernel), (_, tun)] = results[..] {
        println!(
            "cgn-sim TUN / kernel nftables NAT = {:.2} (target ≥ 0.5)",
            tun / kernel.max(1.0)
        );
    }
    Ok(())
}
