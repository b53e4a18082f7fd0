//! Engine benchmarks: MAP create and refresh through the full receive pipeline (parse,
//! options, table, pool, emit) with 1 M live mappings, and memory per mapping.
//!
//! `cargo bench -p cgn-sim --bench engine` (the 1 M setup takes a few seconds).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cgn_sim::config::EngineConfig;
use cgn_sim::server::{Interface, Server};
use criterion::Criterion;
use pcp_client::wire::{MapData, Nonce, OpcodeData, Options, Protocol, RequestRepr};
use rand::SeedableRng;

const LIVE: u32 = 1_000_000;
const PER_SUBSCRIBER: u32 = 16;

fn subscriber(i: u32) -> Ipv4Addr {
    // 100.64.0.0/10 holds 4 M addresses.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i / PER_SUBSCRIBER)
}

fn request(i: u32, lifetime: u32, buf: &mut [u8; 1100]) -> (SocketAddr, usize) {
    let ip = subscriber(i);
    let r = RequestRepr {
        lifetime,
        client_ip: IpAddr::V4(ip),
        data: OpcodeData::Map(MapData {
            nonce: Nonce([(i % 251) as u8; 12]),
            protocol: Protocol::UDP,
            internal_port: 10_000 + (i % PER_SUBSCRIBER) as u16,
            external_port: 0,
            external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }),
        options: Options::EMPTY,
    };
    let n = r.emit(buf).unwrap_or(0);
    (SocketAddr::new(IpAddr::V4(ip), 40_000), n)
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

fn populated(t0: Instant) -> Server {
    let mut config = EngineConfig::with_pools(&["198.51.100.0/24"]);
    config.max_mappings = 2 * LIVE as usize;
    let mut s = Server::new(config, t0, Box::new(rand::rngs::StdRng::seed_from_u64(1)))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let mut buf = [0u8; 1100];
    let mut out = [0u8; 1100];
    for i in 0..LIVE {
        let (from, n) = request(i, 3600, &mut buf);
        s.handle(t0, from, Interface::Inside, &buf[..n], &mut out);
    }
    s
}

fn main() {
    let t0 = Instant::now();
    let before = rss_bytes();
    let start = Instant::now();
    let mut server = populated(t0);
    let fill = start.elapsed();
    let after = rss_bytes();
    let counts = server.table().counts();
    println!(
        "setup: {} mappings created in {:.2?} ({:.0} creates/s through handle())",
        counts.maps,
        fill,
        f64::from(LIVE) / fill.as_secs_f64()
    );
    println!(
        "memory: RSS +{} MiB = {} bytes per mapping (table estimate {} bytes per mapping)",
        (after - before) >> 20,
        (after - before) / counts.maps.max(1),
        server.table().heap_bytes() / counts.maps.max(1)
    );
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut buf = [0u8; 1100];
    let mut out = [0u8; 1100];
    let mut i = 0u32;
    c.bench_function("map_refresh_1M_live", |b| {
        b.iter(|| {
            i = (i + 7919) % LIVE;
            let (from, n) = request(i, 3600, &mut buf);
            black_box(server.handle(t0, from, Interface::Inside, &buf[..n], &mut out))
        })
    });
    // Create a new mapping and delete it again, so the table stays at 1 M.
    let mut j = LIVE;
    let mut del = [0u8; 1100];
    c.bench_function("map_create_then_delete_1M_live", |b| {
        b.iter(|| {
            j += 1;
            if j >= LIVE + 200_000 {
                j = LIVE;
            }
            let (from, n) = request(j, 3600, &mut buf);
            black_box(server.handle(t0, from, Interface::Inside, &buf[..n], &mut out));
            let (from, n) = request(j, 0, &mut del);
            black_box(server.handle(t0, from, Interface::Inside, &del[..n], &mut out))
        })
    });
    c.final_summary();
}
