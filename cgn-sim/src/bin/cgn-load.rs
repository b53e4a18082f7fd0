//! `cgn-load`: a bounded loopback load generator for the `cgn-sim` daemon.
//!
//! It creates `--mappings` MAP mappings from 127.0.0.1, then renews them round-robin with
//! `--window` requests in flight per thread until `--requests` answers or `--duration`
//! seconds, and prints requests/s and p50/p99/max latency. Hard caps: 10 M requests, 120 s,
//! loopback destinations only.
//!
//! Requests go out with one `sendmmsg` per refill of the window and answers come back with
//! one `recvmmsg` per wake-up (up to `--batch` each), so the generator is not the bottleneck
//! of a batched daemon; `--batch 1` sends and receives one datagram per system call.
//!
//! ```text
//! cgn-sim --dataplane none --inside 127.0.0.1 --port 15351 --pool 198.51.100.0/24 --quota 65535 --ctl /tmp/l.sock &
//! cgn-load --server 127.0.0.1:15351 --requests 1000000 --duration 20
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use pcp_client::wire::{MapData, Nonce, OpcodeData, Options, Protocol, RequestRepr};

/// Bounded PCP load over loopback.
#[derive(Debug, Parser)]
#[command(name = "cgn-load", version, about)]
struct Args {
    /// The daemon (must be in 127.0.0.0/8).
    #[arg(long, default_value = "127.0.0.1:5351")]
    server: SocketAddr,
    /// Answers to collect in the measured phase (capped at 10 M).
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Longest measured phase in seconds (capped at 120).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Mappings per thread renewed round-robin.
    #[arg(long, default_value_t = 1000)]
    mappings: u16,
    /// Requests in flight per thread.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Sending threads (each with its own socket and port range).
    #[arg(long, default_value_t = 1)]
    threads: u16,
    /// Datagrams per `sendmmsg`/`recvmmsg` call (1 to 256; 1 = one per system call).
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// Largest `--batch`.
const MAX_BATCH: usize = 256;

/// Sends `bufs[..count]` (each `lens[i]` long) to `to` with as few `sendmmsg` calls as the
/// socket takes.
fn send_all(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &[[u8; 64]],
    lens: &[usize],
    to: &[Option<SockaddrStorage>],
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < lens.len() {
        let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|k| {
            let i = (done + k).min(bufs.len() - 1);
            [IoSlice::new(
                &bufs[i][..lens.get(done + k).copied().unwrap_or(0)],
            )]
        });
        let n = sendmmsg(
            sock.as_raw_fd(),
            headers,
            iovs[..lens.len() - done].iter(),
            &to[done..lens.len()],
            [],
            MsgFlags::empty(),
        )
        .context("sendmmsg")?
        .count();
        done += n.max(1);
    }
    Ok(())
}

struct Stats {
    measured: Duration,
    answers: u64,
    lost: u64,
    latencies: Vec<u32>,
}

fn request(port: u16, thread: u16, buf: &mut [u8]) -> usize {
    let r = RequestRepr {
        lifetime: 3600,
        client_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        data: OpcodeData::Map(MapData {
            nonce: Nonce([thread as u8; 12]),
            protocol: Protocol::UDP,
            internal_port: port,
            external_port: 0,
            external_address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }),
        options: Options::EMPTY,
    };
    r.emit(buf).unwrap_or(0)
}

fn run(args: &Args, thread: u16, requests: u64, deadline: Duration) -> anyhow::Result<Stats> {
    let sock = UdpSocket::bind(("127.0.0.1", 0)).context("client socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let base = 1024 + thread * args.mappings;
    let mut sent_at = vec![None::<Instant>; usize::from(args.mappings)];
    let mut buf = [0u8; 1100];
    let mut rx = [0u8; 1100];
    let mut next = 0u16;
    let mut stats = Stats {
        measured: Duration::ZERO,
        answers: 0,
        lost: 0,
        latencies: Vec::with_capacity(requests.min(10_000_000) as usize),
    };
    let send = |i: u16, buf: &mut [u8], sent_at: &mut Vec<Option<Instant>>| -> anyhow::Result<()> {
        let n = request(base + i, thread, buf);
        sock.send_to(&buf[..n], args.server)?;
        sent_at[usize::from(i)] = Some(Instant::now());
        Ok(())
    };
    // Warm-up: create every mapping once (not measured).
    for i in 0..args.mappings {
        send(i, &mut buf, &mut sent_at)?;
        let _ = sock.recv_from(&mut rx);
    }
    sent_at.iter_mut().for_each(|s| *s = None);
    let batch = args.batch.clamp(1, MAX_BATCH);
    let mut tx_bufs = vec![[0u8; 64]; batch];
    let mut tx_lens = Vec::with_capacity(batch);
    let to = vec![Some(SockaddrStorage::from(args.server)); batch];
    let mut rx_bufs = vec![[0u8; 128]; batch];
    let mut tx_headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut got: Vec<usize> = Vec::with_capacity(batch);
    let start = Instant::now();
    let mut in_flight = 0usize;
    while stats.answers < requests && start.elapsed() < deadline {
        // Refill the window, `batch` requests per `sendmmsg`.
        let mut scanned = 0usize;
        while in_flight < args.window && scanned < usize::from(args.mappings) {
            tx_lens.clear();
            let now = Instant::now();
            while in_flight < args.window
                && tx_lens.len() < batch
                && scanned < usize::from(args.mappings)
            {
                if sent_at[usize::from(next)].is_none() {
                    let k = tx_lens.len();
                    tx_lens.push(request(base + next, thread, &mut tx_bufs[k]));
                    sent_at[usize::from(next)] = Some(now);
                    in_flight += 1;
                }
                next = (next + 1) % args.mappings;
                scanned += 1;
            }
            if !tx_lens.is_empty() {
                send_all(&sock, &mut tx_headers, &tx_bufs, &tx_lens, &to)?;
            }
        }
        // Wait for at least one answer, then take what is queued.
        got.clear();
        let r = {
            let mut chunks = rx_bufs.iter_mut();
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = (0..batch)
                .filter_map(|_| chunks.next().map(|c| [IoSliceMut::new(&mut c[..])]))
                .collect();
            recvmmsg(
                sock.as_raw_fd(),
                &mut rx_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )
            .map(|results| got.extend(results.map(|r| r.bytes)))
        };
        match r {
            Ok(()) => {
                for (k, &n) in got.iter().enumerate() {
                    let rx = &rx_bufs[k];
                    if n < 44 || rx[1] != 0x81 {
                        continue;
                    }
                    let port = u16::from_be_bytes([rx[40], rx[41]]);
                    let Some(i) = port.checked_sub(base).filter(|i| *i < args.mappings) else {
                        continue;
                    };
                    if let Some(t) = sent_at[usize::from(i)].take() {
                        stats
                            .latencies
                            .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        stats.answers += 1;
                        in_flight -= 1;
                    }
                }
            }
            Err(_) => {
                // Timed out: count what is outstanding as lost and start over.
                stats.lost += in_flight as u64;
                sent_at.iter_mut().for_each(|s| *s = None);
                in_flight = 0;
            }
        }
    }
    stats.measured = start.elapsed();
    Ok(stats)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let IpAddr::V4(ip) = args.server.ip() else {
        bail!("--server must be an IPv4 loopback address");
    };
    if !ip.is_loopback() {
        bail!("cgn-load only sends to 127.0.0.0/8");
    }
    if args.mappings == 0 || u32::from(args.mappings) * u32::from(args.threads) > 60_000 {
        bail!("--mappings × --threads must be 1 to 60000");
    }
    let requests = args.requests.min(10_000_000);
    let deadline = Duration::from_secs(args.duration.min(120));
    let per_thread = requests / u64::from(args.threads.max(1));
    let results: Vec<anyhow::Result<Stats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads.max(1))
            .map(|t| {
                let a = &args;
                s.spawn(move || run(a, t, per_thread, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let mut elapsed = Duration::ZERO;
    let mut lat = Vec::new();
    let (mut answers, mut lost) = (0, 0);
    for r in results {
        let s = r?;
        answers += s.answers;
        lost += s.lost;
        elapsed = elapsed.max(s.measured);
        lat.extend(s.latencies);
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "answers {answers} lost {lost} in {:.2?}: {:.0} requests/s; latency p50 {} µs, p99 {} µs, max {} µs",
        elapsed,
        answers as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}
