//! The CGN dataplane (PCP server engine + translator sharing one table) fed arbitrary IPv4
//! packets in both directions over a fake clock, with a few PCP MAP mappings made first
//! (one with a FILTER): it never panics, and no packet it forwards or originates carries a
//! subscriber address (100.64.0.0/10) towards a non-subscriber destination, in the outer
//! header or in the header embedded in an ICMP error (RFC 6598 §4: shared address space must
//! not leak beyond the provider). The only exceptions are the two destinations configured
//! as untranslated (RFC 6888 REQ-6, `DataplaneConfig::bypass`): every packet to
//! [`BYPASS_ALL`], and UDP port 53 (with the later fragments and ICMP errors of such flows)
//! to [`BYPASS_DNS`].
//!
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O dataplane -- -runs=2000000 -max_total_time=300`
//!
//! The same packets also go through a second, identical CGN in batches
//! (`Translator::process_batch`, the fast path), which must give the same verdicts, bytes,
//! ICMP errors and counters as the first does packet by packet.
//!
//! Each record of the input is `[flags, clock step, len_hi, len_lo]` then `len` packet bytes.
//! Unless `flags & 0x80`, the packet's IPv4 header is made plausible (version, header length,
//! total length, addresses from the lab plan chosen by `flags`, header and ICMP checksums), so
//! the fuzzer spends its time in translation rather than in the first length check.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cgn_sim::config::EngineConfig;
use cgn_sim::dataplane::bypass::Bypass;
use cgn_sim::dataplane::translate::{DataplaneConfig, Filtering, Translator, Verdict};
use cgn_sim::server::{Interface, Server};
use libfuzzer_sys::fuzz_target;
use pcp_client::wire::{
    Filter, MapData, Nonce, OpcodeData, Options, PcpOption, Protocol, RequestRepr,
};
use rand::SeedableRng;

const SUBSCRIBERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(100, 64, 0, 2),
    Ipv4Addr::new(100, 64, 0, 3),
    Ipv4Addr::new(100, 127, 255, 254),
];
const REMOTES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(203, 0, 113, 50),
    Ipv4Addr::new(203, 0, 113, 51),
    Ipv4Addr::new(8, 8, 8, 8),
];

/// Reached untranslated whatever the protocol (`--no-translate 203.0.113.51`).
const BYPASS_ALL: [u8; 4] = [203, 0, 113, 51];
/// Reached untranslated on UDP 53 only (`--no-translate 8.8.8.8:udp/53`).
const BYPASS_DNS: [u8; 4] = [8, 8, 8, 8];

fn is_subscriber(a: [u8; 4]) -> bool {
    // 100.64.0.0/10
    a[0] == 100 && (a[1] & 0xc0) == 64
}

fn addr(p: &[u8], at: usize) -> Option<[u8; 4]> {
    p.get(at..at + 4).and_then(|s| s.try_into().ok())
}

fn port(p: &[u8], at: usize) -> Option<u16> {
    p.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Whether `p`, to `dst`, is covered by a bypass rule and may keep a subscriber source. A
/// later UDP fragment to [`BYPASS_DNS`] shows no port: it passes (its first fragment decided).
fn bypassed(p: &[u8], dst: [u8; 4]) -> bool {
    if dst == BYPASS_ALL {
        return true;
    }
    if dst != BYPASS_DNS {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let later_fragment = port(p, 6).is_some_and(|f| f & 0x1fff != 0);
    match p.get(9) {
        Some(17) => later_fragment || port(p, ihl + 2) == Some(53),
        // An ICMP error about a flow from the DNS server's port 53.
        Some(1) if !later_fragment && matches!(p.get(ihl), Some(3 | 11 | 12)) => {
            let inner = ihl + 8;
            let inner_ihl = p.get(inner).map_or(0, |b| usize::from(b & 0x0f) * 4);
            p.get(inner + 9) == Some(&17) && port(p, inner + inner_ihl) == Some(53)
        }
        _ => false,
    }
}

/// The leak check on one packet leaving the translator.
fn check(p: &[u8]) {
    let (Some(src), Some(dst)) = (addr(p, 12), addr(p, 16)) else {
        return;
    };
    if is_subscriber(dst) || bypassed(p, dst) {
        return;
    }
    assert!(
        !is_subscriber(src),
        "subscriber source {src:?} forwarded to {dst:?}: {p:02x?}"
    );
    // ICMP errors: the embedded header must not name a subscriber either.
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if p.get(9) == Some(&1) && matches!(p.get(ihl), Some(3 | 4 | 5 | 11 | 12)) {
        let inner = ihl + 8;
        if let (Some(isrc), Some(idst)) = (addr(p, inner + 12), addr(p, inner + 16)) {
            assert!(
                !is_subscriber(isrc) && !is_subscriber(idst),
                "embedded subscriber address leaks to {dst:?}: {p:02x?}"
            );
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Makes the header plausible (see the module docs).
fn fix_up(p: &mut [u8], flags: u8, pool: Ipv4Addr) {
    if p.len() < 20 {
        return;
    }
    p[0] = 0x45;
    let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let sub = SUBSCRIBERS[usize::from(flags & 3) % 3];
    let remote = REMOTES[usize::from((flags >> 2) & 3) % 3];
    let mut pool_addr = pool.octets();
    pool_addr[3] = pool_addr[3].wrapping_add((flags >> 4) & 3);
    let (src, dst) = match (flags >> 6) & 1 {
        0 => (
            sub.octets(),
            if flags & 0x20 != 0 {
                pool_addr
            } else {
                remote.octets()
            },
        ),
        _ => (remote.octets(), pool_addr),
    };
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    if p[9] == 1 && p.len() >= 24 {
        p[22] = 0;
        p[23] = 0;
        let c = checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
    }
    p[10] = 0;
    p[11] = 0;
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

fn map(
    server: &mut Server,
    now: Instant,
    client: Ipv4Addr,
    proto: Protocol,
    port: u16,
    filter: bool,
) {
    let options = if filter {
        vec![PcpOption::Filter(Filter {
            prefix_length: 128,
            remote_peer_port: 0,
            remote_peer_address: IpAddr::V4(REMOTES[0]),
        })]
    } else {
        Vec::new()
    };
    let request = RequestRepr {
        lifetime: 600,
        client_ip: IpAddr::V4(client),
        data: OpcodeData::Map(MapData {
            nonce: Nonce([port as u8; 12]),
            protocol: proto,
            internal_port: port,
            external_port: 0,
            external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }),
        options: Options::List(&options),
    };
    let mut buf = [0u8; 1100];
    let mut out = [0u8; 1100];
    if let Ok(len) = request.emit(&mut buf) {
        let from = SocketAddr::new(IpAddr::V4(client), 40_000);
        let _ = server.handle(now, from, Interface::Inside, &buf[..len], &mut out);
    }
}

/// The PCP server with its MAP mappings and the translator, built the same way every time.
fn cgn(data: &[u8], t0: Instant) -> Option<(Server, Translator)> {
    let mut config = EngineConfig::with_pools(&["198.51.100.0/30"]);
    config.quota_per_subscriber = 8;
    config.port_min = 40_000;
    config.port_max = 40_127;
    let mut server =
        Server::new(config, t0, Box::new(rand::rngs::StdRng::seed_from_u64(7))).ok()?;
    map(&mut server, t0, SUBSCRIBERS[0], Protocol::UDP, 5000, false);
    map(&mut server, t0, SUBSCRIBERS[1], Protocol::TCP, 6000, false);
    map(&mut server, t0, SUBSCRIBERS[0], Protocol::UDP, 5001, true);
    let filtering = if data.first().is_some_and(|b| b & 1 == 1) {
        Filtering::AddressAndPortDependent
    } else {
        Filtering::EndpointIndependent
    };
    let dp = DataplaneConfig {
        filtering,
        mtu: 576,
        max_sessions: 64,
        max_pending_syns: 4,
        bypass: ["203.0.113.51", "8.8.8.8:udp/53"]
            .iter()
            .filter_map(|r| r.parse::<Bypass>().ok())
            .collect(),
        ..DataplaneConfig::default()
    };
    let nat = Translator::new(dp, &server, t0);
    Some((server, nat))
}

fn sent(nat: &mut Translator) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| nat.poll_transmit()).collect()
}

/// The second CGN, fed a round at a time, and what the first one did with that round.
struct Batched {
    server: Server,
    nat: Translator,
    round: Vec<Vec<u8>>,
    expected: Vec<(Verdict, Vec<u8>)>,
    expected_sent: Vec<Vec<u8>>,
}

impl Batched {
    /// Runs the round through `process_batch` and compares it with the first CGN's results.
    fn flush(&mut self, now: Instant) {
        let mut slices: Vec<&mut [u8]> = self.round.iter_mut().map(|p| &mut p[..]).collect();
        let mut verdicts = vec![Verdict::Consumed; slices.len()];
        self.nat
            .process_batch(&mut self.server, now, &mut slices, &mut verdicts);
        for ((v, p), (w, q)) in self
            .expected
            .iter()
            .zip(verdicts.iter().zip(self.round.iter()))
        {
            assert_eq!(v, w, "verdicts differ");
            if *v == Verdict::Forward {
                assert_eq!(p, q, "bytes differ");
            }
        }
        assert_eq!(
            self.expected_sent,
            sent(&mut self.nat),
            "packets sent differ"
        );
        self.round.clear();
        self.expected.clear();
        self.expected_sent.clear();
    }
}

// Two identical CGNs get the same packets: one packet by packet (`process`), the other a
// round at a time (`process_batch`, the fast path). Besides the leak check, their verdicts,
// bytes, own packets and counters must agree (the fast path is only an optimisation).
fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let (Some((mut server, mut nat)), Some((server2, nat2))) = (cgn(data, t0), cgn(data, t0))
    else {
        return;
    };
    let mut b = Batched {
        server: server2,
        nat: nat2,
        round: Vec::new(),
        expected: Vec::new(),
        expected_sent: Vec::new(),
    };
    let pool = Ipv4Addr::new(198, 51, 100, 0);
    let mut now = t0;
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]) & 0x07ff);
        let (bytes, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let flags = head[0];
        if head[1] != 0 {
            b.flush(now);
            now += Duration::from_millis(u64::from(head[1]) * 500);
            server.handle_timeout(now);
            nat.handle_timeout(&mut server, now);
            b.server.handle_timeout(now);
            b.nat.handle_timeout(&mut b.server, now);
            assert_eq!(sent(&mut nat), sent(&mut b.nat), "timer packets differ");
        }
        if head[1] == 0xff {
            server.restart(now, false);
            nat.clear(&server, now);
            b.server.restart(now, false);
            b.nat.clear(&b.server, now);
        }
        let mut packet = bytes.to_vec();
        if flags & 0x80 == 0 {
            fix_up(&mut packet, flags, pool);
        }
        b.round.push(packet.clone());
        let v = nat.process(&mut server, now, &mut packet);
        if let Verdict::Forward = v {
            check(&packet);
        }
        b.expected.push((v, packet));
        while let Some(p) = nat.poll_transmit() {
            check(&p);
            b.expected_sent.push(p);
        }
    }
    b.flush(now);
    let mut c2 = b.nat.counters().clone();
    c2.fast_path = 0;
    assert_eq!(nat.counters(), &c2, "counters differ");
    nat.handle_timeout(&mut server, now + Duration::from_secs(30));
    while let Some(p) = nat.poll_transmit() {
        check(&p);
    }
});
