//! Translator benchmarks: 64-byte UDP packets through [`Translator::process`] on one core with
//! 1 M live sessions (each on its own implicit binding in the shared table), outbound and
//! inbound, and the memory a session costs. A third run sends from 1 024 of the sessions only
//! (cache-resident), to show how much of the cost is memory latency.
//!
//! `cargo bench -p cgn-sim --bench translator` (the 1 M setup takes a few seconds; the memory
//! figures are printed before the measurements).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cgn_sim::config::EngineConfig;
use cgn_sim::dataplane::translate::{DataplaneConfig, Translator, Verdict};
use cgn_sim::server::Server;
use criterion::{Criterion, Throughput};
use etherparse::PacketBuilder;
use rand::{Rng, SeedableRng};

/// Live sessions (`TRANSLATOR_SESSIONS` overrides it, e.g. for a quick run under callgrind).
fn live() -> u32 {
    std::env::var("TRANSLATOR_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const PER_SUBSCRIBER: u32 = 16;
/// Packets per measured iteration (one "batch" as the daemon would drain it).
const BATCH: usize = 256;
/// Distinct prebuilt packets cycled through (random sessions, so the hash table is hit
/// beyond the caches as real traffic would).
const SAMPLE: usize = 65_536;
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);

fn subscriber(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i / PER_SUBSCRIBER)
}

fn internal_port(i: u32) -> u16 {
    10_000 + (i % PER_SUBSCRIBER) as u16
}

/// A 64-byte IPv4/UDP packet (20 + 8 + 36 bytes of payload).
fn udp64(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let payload = [0x5au8; 36];
    if PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut out, &payload)
        .is_err()
    {
        out.clear();
    }
    out
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

struct Rig {
    server: Server,
    nat: Translator,
    now: Instant,
    /// External endpoint of session `i`, for inbound packets.
    external: Vec<(Ipv4Addr, u16)>,
}

fn populated() -> Rig {
    let t0 = Instant::now();
    let mut config = EngineConfig::with_pools(&["198.51.100.0/24"]);
    config.max_mappings = 2 * live() as usize;
    config.quota_per_subscriber = 2 * PER_SUBSCRIBER;
    let mut server = Server::new(config, t0, Box::new(rand::rngs::StdRng::seed_from_u64(1)))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let rss0 = rss_bytes();
    let mut nat = Translator::new(DataplaneConfig::default(), &server, t0);
    let mut external = Vec::with_capacity(live() as usize);
    let started = Instant::now();
    for i in 0..live() {
        let mut p = udp64((subscriber(i), internal_port(i)), (PEER, 9000));
        match nat.process(&mut server, t0, &mut p) {
            Verdict::Forward => {
                let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
                external.push((src, u16::from_be_bytes([p[20], p[21]])));
            }
            v => panic!("session {i} not created: {v:?}"),
        }
    }
    let took = started.elapsed();
    let rss1 = rss_bytes();
    let sessions = nat.session_count();
    println!(
        "translator: {sessions} sessions (and as many implicit bindings) created in {took:.2?}"
    );
    println!(
        "translator: session table heap {} bytes = {} bytes/session; RSS growth {} bytes = {} bytes/session (session + binding + pool state)",
        nat.session_heap_bytes(),
        nat.session_heap_bytes() / sessions.max(1),
        rss1.saturating_sub(rss0),
        rss1.saturating_sub(rss0) / sessions.max(1)
    );
    Rig {
        server,
        nat,
        now: t0 + Duration::from_secs(1),
        external,
    }
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Packets per second of wall time and per second of this thread's CPU time, over `secs`
/// seconds of batches. On a shared machine the second is the one-core rate: time the
/// scheduler gave to other processes is not counted.
fn rate(rig: &mut Rig, ring: &[u8], secs: f64) -> (f64, f64) {
    let mut batch = vec![0u8; BATCH * 64];
    let mut verdicts = [Verdict::Consumed; BATCH];
    let (wall0, cpu0) = (Instant::now(), thread_cpu_ns());
    let mut packets = 0u64;
    let mut next = 0usize;
    // TRANSLATOR_BATCHES: a fixed amount of work instead of a fixed time (for callgrind).
    let fixed: Option<u64> = std::env::var("TRANSLATOR_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok());
    while match fixed {
        Some(b) => packets < b * BATCH as u64,
        None => wall0.elapsed().as_secs_f64() < secs,
    } {
        for _ in 0..64 {
            let from = (next % (SAMPLE / BATCH)) * BATCH * 64;
            next += 1;
            batch.copy_from_slice(&ring[from..from + BATCH * 64]);
            let mut slices: Vec<&mut [u8]> = batch.chunks_mut(64).collect();
            rig.nat
                .process_batch(&mut rig.server, rig.now, &mut slices, &mut verdicts);
            black_box(&verdicts);
            packets += BATCH as u64;
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = (thread_cpu_ns() - cpu0) as f64 / 1e9;
    (packets as f64 / wall, packets as f64 / cpu.max(1e-9))
}

fn bench(c: &mut Criterion) {
    let mut rig = populated();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let outbound: Vec<Vec<u8>> = (0..SAMPLE)
        .map(|_| {
            let i = rng.gen_range(0..live());
            udp64((subscriber(i), internal_port(i)), (PEER, 9000))
        })
        .collect();
    let inbound: Vec<Vec<u8>> = (0..SAMPLE)
        .map(|_| {
            let i = rng.gen_range(0..live() as usize);
            udp64((PEER, 9000), rig.external[i])
        })
        .collect();
    // The same table, but packets from 1 024 sessions only: they stay in the caches, which
    // separates the per-packet work from the cost of reaching 1 M random entries in memory.
    let hot: Vec<Vec<u8>> = (0..SAMPLE)
        .map(|_| {
            let i = rng.gen_range(0..1024.min(live()));
            udp64((subscriber(i), internal_port(i)), (PEER, 9000))
        })
        .collect();
    for (name, packets) in [
        ("udp64_outbound", &outbound),
        ("udp64_inbound", &inbound),
        ("udp64_outbound_hot_1k", &hot),
    ] {
        let ring: Vec<u8> = packets.iter().flatten().copied().collect();
        rate(&mut rig, &ring, 1.0); // warm-up
        let (wall, cpu) = rate(&mut rig, &ring, 4.0);
        println!(
            "translator: {name}_batch: {:.2} M packets/s of wall time, {:.2} M packets/s of CPU time",
            wall / 1e6,
            cpu / 1e6
        );
    }
    let mut g = c.benchmark_group("translator_1M_sessions");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(5));
    for (name, packets) in [
        ("udp64_outbound", &outbound),
        ("udp64_inbound", &inbound),
        ("udp64_outbound_hot_1k", &hot),
    ] {
        // The packets one after another in one buffer, as a driver's receive ring holds them.
        let ring: Vec<u8> = packets.iter().flatten().copied().collect();
        let mut next = 0usize;
        let mut batch = vec![0u8; BATCH * 64];
        let mut verdicts = [Verdict::Consumed; BATCH];
        g.bench_function(format!("{name}_batch"), |b| {
            b.iter(|| {
                // The rewrite is in place: start from the untranslated bytes each time.
                let from = (next % (SAMPLE / BATCH)) * BATCH * 64;
                next = next.wrapping_add(1);
                batch.copy_from_slice(&ring[from..from + BATCH * 64]);
                let mut slices: Vec<&mut [u8]> = batch.chunks_mut(64).collect();
                rig.nat
                    .process_batch(&mut rig.server, rig.now, &mut slices, &mut verdicts);
                black_box(&verdicts);
            })
        });
        let mut next = 0usize;
        let mut buf = [0u8; 64];
        g.bench_function(format!("{name}_one_by_one"), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let from = (next % SAMPLE) * 64;
                    next = next.wrapping_add(1);
                    buf.copy_from_slice(&ring[from..from + 64]);
                    let v = rig.nat.process(&mut rig.server, rig.now, &mut buf);
                    black_box(v);
                }
            })
        });
    }
    g.finish();
    let c = rig.nat.counters();
    println!(
        "translator: after the runs: outbound {} inbound {} sessions {} drops {}",
        c.outbound,
        c.inbound,
        rig.nat.session_count(),
        c.drops.iter().sum::<u64>()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
