//! SSDP reply latency: sends unicast M-SEARCHes one at a time to an in-process daemon on
//! 127.0.0.1 and prints the latency percentiles of the first reply (target p99 ≤ 100 ms).
//! Multicast searches add the engine's deliberate random delay (≤ `MAX_FIRST_DELAY`).
//!
//! `cargo bench -p upnp-iwf --bench ssdp_latency` (env `SSDP_SAMPLES`, default 2000)

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use upnp_iwf::daemon::{self, DaemonConfig};
use upnp_iwf::ssdp_engine::MAX_FIRST_DELAY;

fn main() {
    let samples: usize = std::env::var("SSDP_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
        .min(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let d = rt
        .block_on(daemon::start(DaemonConfig::loopback()))
        .expect("daemon");
    let to = d.ssdp_addrs[0];
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let msg = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";
    let mut buf = [0u8; 2048];
    let mut lat = Vec::with_capacity(samples);
    let mut lost = 0;
    let started = Instant::now();
    for _ in 0..samples {
        let t = Instant::now();
        s.send_to(msg, to).expect("send");
        match s.recv_from(&mut buf) {
            Ok(_) => lat.push(t.elapsed()),
            Err(_) => lost += 1,
        }
    }
    let wall = started.elapsed();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "ssdp unicast M-SEARCH → first reply, {} samples ({lost} lost) in {wall:?}: p50 {:?} p90 {:?} p99 {:?} max {:?}; multicast adds ≤ {:?} random delay by design",
        lat.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().copied().unwrap_or_default(),
        MAX_FIRST_DELAY
    );
    rt.block_on(d.stop());
}
