//! Client engine benchmarks: the cost of one renewal with 10 000 live mappings (timer fire,
//! request emit, response parse and match, new grant and renewal timer), and the heap bytes
//! one mapping takes (resident-set growth over 60 000 mappings, printed once).
//!
//! `cargo bench -p pcp-client --bench client`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pcp_client::client::{Config, Engine, MapRequest, Path, ServerId};
use pcp_client::wire::{OpcodeData, Options, Protocol, RequestRepr, ResponseRepr, ResultCode};

/// Resident set size in bytes, from /proc/self/statm (Linux); 0 elsewhere. Used instead of a
/// counting allocator so the crate stays free of `unsafe`.
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

const MAPPINGS: u16 = 10_000;
const SERVER: &str = "192.0.2.1:5351";

fn answer(request: &[u8], epoch: u32, out: &mut [u8]) -> usize {
    let Ok(req) = RequestRepr::parse(request) else {
        return 0;
    };
    let OpcodeData::Map(mut m) = req.data else {
        return 0;
    };
    m.external_port = m.internal_port;
    m.external_address = "198.51.100.1".parse().expect("literal");
    ResponseRepr {
        result: ResultCode::Success,
        lifetime: req.lifetime,
        epoch,
        data: OpcodeData::Map(m),
        options: Options::EMPTY,
    }
    .emit(out)
    .unwrap_or(0)
}

/// An engine holding `n` granted mappings (lifetime 3600 s) at `t0`.
fn populated(n: u16, t0: Instant) -> (Engine, ServerId) {
    let mut engine = Engine::with_seed(Config::default(), 42);
    let server = engine
        .add_server(vec![Path {
            remote: SERVER.parse().expect("literal"),
            local: "192.0.2.100".parse().expect("literal"),
        }])
        .expect("server");
    let from: SocketAddr = SERVER.parse().expect("literal");
    let to: SocketAddr = "192.0.2.100:40000".parse().expect("literal");
    let (mut buf, mut out) = ([0u8; 1100], [0u8; 1100]);
    for port in 1..=n {
        engine
            .map(t0, server, MapRequest::new(Protocol::UDP, port, 3600))
            .expect("valid");
        while let Some(t) = engine.poll_transmit(t0, &mut buf) {
            let len = answer(&buf[..t.len], 1000, &mut out);
            engine.handle_datagram(t0, from, to, &out[..len]);
        }
    }
    while engine.poll_event().is_some() {}
    (engine, server)
}

fn renewal(c: &mut Criterion) {
    let t0 = Instant::now();
    let (mut engine, _) = populated(MAPPINGS, t0);
    let from: SocketAddr = SERVER.parse().expect("literal");
    let to: SocketAddr = "192.0.2.100:40000".parse().expect("literal");
    let mut buf = [0u8; 1100];
    let mut arena: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut lens: Vec<usize> = Vec::with_capacity(1 << 14);
    let mut responses: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut rlens: Vec<usize> = Vec::with_capacity(1 << 14);
    c.bench_function("renewal_with_10000_live_mappings", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut renewals = 0u64;
            while renewals < iters {
                let Some(now) = engine.poll_timeout() else {
                    break;
                };
                arena.clear();
                lens.clear();
                // Timed: timer fire + request emit.
                let start = Instant::now();
                engine.handle_timeout(now);
                while let Some(t) = engine.poll_transmit(now, &mut buf) {
                    arena.extend_from_slice(&buf[..t.len]);
                    lens.push(t.len);
                }
                timed += start.elapsed();
                // Untimed: the server's side.
                responses.clear();
                rlens.clear();
                let epoch = 1000 + (now - t0).as_secs() as u32;
                let mut at = 0;
                for &len in &lens {
                    let n = answer(&arena[at..at + len], epoch, &mut buf);
                    responses.extend_from_slice(&buf[..n]);
                    rlens.push(n);
                    at += len;
                }
                // Timed: response parse, match, epoch check, grant, renewal timer.
                let start = Instant::now();
                let mut at = 0;
                for &n in &rlens {
                    engine.handle_datagram(now, from, to, &responses[at..at + n]);
                    at += n;
                }
                while engine.poll_event().is_some() {}
                timed += start.elapsed();
                renewals += lens.len() as u64;
            }
            if renewals == 0 {
                return timed;
            }
            timed.mul_f64(iters as f64 / renewals as f64)
        })
    });
}

fn memory(c: &mut Criterion) {
    let t0 = Instant::now();
    // 60 000 mappings so the page granularity of RSS does not matter.
    let before = rss_bytes();
    let (engine, _) = populated(60_000, t0);
    let after = rss_bytes();
    let per = after.saturating_sub(before) as f64 / engine.mapping_count() as f64;
    println!(
        "memory: {} granted mappings grow RSS by {} bytes: {per:.0} bytes per mapping",
        engine.mapping_count(),
        after.saturating_sub(before)
    );
    drop(engine);
    c.bench_function("create_and_grant_1000_mappings", |b| {
        b.iter(|| populated(1000, t0).0.mapping_count())
    });
}

criterion_group!(benches, renewal, memory);
criterion_main!(benches);
