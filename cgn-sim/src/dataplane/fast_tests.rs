//! The batch fast path against the one-packet path: two identical CGNs (same configuration,
//! same random seed) get the same packets at the same times, one through
//! [`Translator::process`] packet by packet, the other through [`Translator::process_batch`]
//! in batches of varying size. Every packet's bytes and verdict, everything the translators
//! send themselves, their counters and sessions, and the mapping tables must agree.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fast::CHUNK;
use super::translate::{DataplaneConfig, Filtering, Translator, TtlMode, Verdict};
use crate::config::EngineConfig;
use crate::server::Server;

struct Cgn {
    server: Server,
    nat: Translator,
}

fn cgn(start: Instant, dp: &DataplaneConfig) -> Cgn {
    let mut config = EngineConfig::with_pools(&["198.51.100.0/29"]);
    config.quota_per_subscriber = 12;
    let server = Server::new(config, start, Box::new(StdRng::seed_from_u64(11))).expect("server");
    let nat = Translator::new(dp.clone(), &server, start);
    Cgn { server, nat }
}

const SUBSCRIBERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(100, 64, 0, 2),
    Ipv4Addr::new(100, 64, 0, 3),
    Ipv4Addr::new(100, 64, 0, 4),
];
const REMOTES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 50),
    Ipv4Addr::new(203, 0, 113, 51),
];

fn build(
    rng: &mut StdRng,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    ttl: u8,
    protocol: u8,
) -> Vec<u8> {
    let mut out = Vec::new();
    let ip = PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), ttl);
    let payload = vec![0x42u8; rng.gen_range(0..48)];
    let built = if protocol == 6 {
        let mut t = ip.tcp(src.1, dst.1, rng.r#gen(), 1000);
        // Mostly plain segments, sometimes SYN, FIN, RST (state changes on the fast path).
        match rng.gen_range(0..10) {
            0 => t = t.syn(),
            1 => t = t.syn().ack(1),
            2 => t = t.fin().ack(1),
            3 => t = t.rst(),
            _ => t = t.ack(1),
        }
        t.write(&mut out, &payload)
    } else if protocol == 1 {
        ip.icmpv4_echo_request(src.1, 1).write(&mut out, &payload)
    } else {
        ip.udp(src.1, dst.1).write(&mut out, &payload)
    };
    built.expect("build");
    out
}

/// One random packet: mostly flows the CGN knows (outbound from a few subscriber ports,
/// inbound to the external endpoints seen so far), and some of everything else.
fn packet(rng: &mut StdRng, externals: &[(u8, Ipv4Addr, u16)]) -> Vec<u8> {
    let protocol = [17u8, 17, 6, 6, 1][rng.gen_range(0..5)];
    let sub = SUBSCRIBERS[rng.gen_range(0..SUBSCRIBERS.len())];
    let port = 4000 + rng.gen_range(0..6u16);
    let remote = (
        REMOTES[rng.gen_range(0..REMOTES.len())],
        80 + rng.gen_range(0..2u16),
    );
    let ttl = if rng.gen_ratio(1, 30) { 1 } else { 64 };
    let mut p = match rng.gen_range(0..10) {
        // Inbound to a known external endpoint.
        0..=3 if !externals.is_empty() => {
            let (proto, addr, eport) = externals[rng.gen_range(0..externals.len())];
            let proto = if proto == 1 { 17 } else { proto };
            build(rng, remote, (addr, eport), ttl, proto)
        }
        // Hairpin: a subscriber to a known external endpoint.
        4 if !externals.is_empty() => {
            let (proto, addr, eport) = externals[rng.gen_range(0..externals.len())];
            let proto = if proto == 1 { 17 } else { proto };
            build(rng, (sub, port), (addr, eport), ttl, proto)
        }
        // Inbound to an unknown pool port.
        5 => {
            let unknown = (Ipv4Addr::new(198, 51, 100, rng.gen_range(0..8)), 2000);
            build(rng, remote, unknown, ttl, protocol)
        }
        _ => build(rng, (sub, port), remote, ttl, protocol),
    };
    match rng.gen_range(0..40) {
        0 => p[10] ^= 0x01,               // bad header checksum
        1 => p[6] |= 0x20,                // more fragments
        2 => p[0] = 0x46,                 // claims options
        3 => p.truncate(p.len().min(24)), // cut short
        4 => p[9] = 47,                   // GRE
        _ => {}
    }
    p
}

fn flow_src(p: &[u8]) -> Option<(u8, Ipv4Addr, u16)> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    let protocol = *p.get(9)?;
    let addr = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let port = u16::from_be_bytes([*p.get(ihl)?, *p.get(ihl + 1)?]);
    let port = if protocol == 1 {
        u16::from_be_bytes([*p.get(ihl + 4)?, *p.get(ihl + 5)?])
    } else {
        port
    };
    Some((protocol, addr, port))
}

fn drain(nat: &mut Translator) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| nat.poll_transmit()).collect()
}

fn run(seed: u64, dp: DataplaneConfig) {
    let start = Instant::now();
    let mut one = cgn(start, &dp);
    let mut batched = cgn(start, &dp);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut externals: Vec<(u8, Ipv4Addr, u16)> = Vec::new();
    let mut now = start;
    let mut fast_forwarded = 0;
    let mut fast_total = 0;
    for round in 0..60 {
        // Time moves between batches: sometimes a little, sometimes past the idle timers.
        now += match rng.gen_range(0..10) {
            0 => Duration::from_secs(rng.gen_range(200..400)),
            1..=3 => Duration::from_secs(rng.gen_range(1..30)),
            _ => Duration::ZERO,
        };
        for c in [&mut one, &mut batched] {
            c.server.handle_timeout(now);
            c.nat.handle_timeout(&mut c.server, now);
        }
        assert_eq!(
            drain(&mut one.nat),
            drain(&mut batched.nat),
            "round {round}: timers"
        );
        let n = [1, 3, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5, 100][rng.gen_range(0..7)];
        let packets: Vec<Vec<u8>> = (0..n).map(|_| packet(&mut rng, &externals)).collect();
        let mut expected = Vec::new();
        for p in &packets {
            let mut p = p.clone();
            let v = one.nat.process(&mut one.server, now, &mut p);
            if v == Verdict::Forward
                && !SUBSCRIBERS.contains(&Ipv4Addr::new(p[16], p[17], p[18], p[19]))
            {
                if let Some(e) = flow_src(&p) {
                    if e.1.octets()[0] == 198 && !externals.contains(&e) {
                        externals.push(e);
                    }
                }
            }
            expected.push((v, p));
        }
        let mut bufs = packets.clone();
        let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        let mut verdicts = vec![Verdict::Consumed; n];
        batched
            .nat
            .process_batch(&mut batched.server, now, &mut slices, &mut verdicts);
        for (i, ((v, p), (w, q))) in expected.iter().zip(verdicts.iter().zip(&bufs)).enumerate() {
            assert_eq!(v, w, "seed {seed} round {round} packet {i}: verdict");
            if *v == Verdict::Forward {
                assert_eq!(p, q, "seed {seed} round {round} packet {i}: bytes");
            }
        }
        fast_forwarded += verdicts.iter().filter(|v| **v == Verdict::Forward).count();
        assert_eq!(
            drain(&mut one.nat),
            drain(&mut batched.nat),
            "round {round}: sent"
        );
        let fast = batched.nat.counters().fast_path;
        let same = super::translate::Counters {
            fast_path: 0,
            ..batched.nat.counters().clone()
        };
        assert_eq!(one.nat.counters(), &same, "round {round}");
        fast_total = fast;
        assert_eq!(one.nat.session_count(), batched.nat.session_count());
        assert_eq!(
            one.server.render_table(now),
            batched.server.render_table(now),
            "seed {seed} round {round}: mapping tables"
        );
    }
    assert!(
        fast_forwarded > 500,
        "too few packets forwarded: {fast_forwarded}"
    );
    // Most forwarded packets belong to flows seen before: the fast path must have taken them.
    assert!(
        fast_total * 3 > fast_forwarded as u64,
        "fast path took {fast_total} of {fast_forwarded} forwarded packets"
    );
}

// The fast path is an optimisation only: whatever the traffic, a batch gives exactly what the
// same packets give one by one.
#[test]
fn fast_path_matches_the_full_path() {
    for seed in 0..12 {
        run(seed, DataplaneConfig::default());
    }
}

// Also with address-and-port-dependent filtering and the TTL mode of the TUN daemon.
#[test]
fn fast_path_matches_the_full_path_with_apdf_and_the_tun_ttl_mode() {
    let dp = DataplaneConfig {
        filtering: Filtering::AddressAndPortDependent,
        ttl: TtlMode::KernelForwardsTwice,
        ..DataplaneConfig::default()
    };
    for seed in 100..106 {
        run(seed, dp.clone());
    }
}

// And with a bypassed destination port (RFC 6888 REQ-6) that inbound traffic from that server
// has made sessions with (endpoint-independent filtering admits it): outbound packets to it
// stay untranslated on both paths.
#[test]
fn fast_path_matches_the_full_path_with_a_bypassed_destination() {
    let dp = DataplaneConfig {
        bypass: vec!["203.0.113.51:udp/81".parse().expect("rule")],
        ..DataplaneConfig::default()
    };
    for seed in 200..206 {
        run(seed, dp.clone());
    }
}

// A batch that repeats one flow: its first packet makes the session on the full path, the
// rest of the batch (looked up before it existed) must still come out right.
#[test]
fn a_new_flow_and_its_followers_in_one_batch() {
    let start = Instant::now();
    let mut c = cgn(start, &DataplaneConfig::default());
    let mut rng = StdRng::seed_from_u64(5);
    let src = (SUBSCRIBERS[0], 5555);
    let dst = (REMOTES[0], 53);
    let mut bufs: Vec<Vec<u8>> = (0..40).map(|_| build(&mut rng, src, dst, 64, 17)).collect();
    let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let mut verdicts = vec![Verdict::Consumed; 40];
    c.nat
        .process_batch(&mut c.server, start, &mut slices, &mut verdicts);
    assert!(
        verdicts.iter().all(|v| *v == Verdict::Forward),
        "{verdicts:?}"
    );
    let first = flow_src(&bufs[0]).expect("translated");
    assert_eq!(first.1.octets()[..3], [198, 51, 100]);
    assert!(bufs.iter().all(|b| flow_src(b) == Some(first)));
    assert_eq!(c.nat.session_count(), 1);
    assert_eq!(c.nat.counters().outbound, 40);
}

// The fast path does not read the binding: it learns from the mapping table's change log
// that a binding was freed. A session refreshed by inbound packets outlives its binding's
// implicit part (outbound refresh only, RFC 4787 REQ-6); once the binding is gone an
// inbound packet must be refused as on the full path (no mapping), not translated by the
// session, and outbound traffic then makes a binding the fast path trusts again.
#[test]
fn a_session_whose_binding_was_freed_leaves_the_fast_path() {
    let start = Instant::now();
    let mut c = cgn(start, &DataplaneConfig::default());
    let mut rng = StdRng::seed_from_u64(9);
    let inside = (SUBSCRIBERS[0], 5000);
    let remote = (REMOTES[0], 53);
    let batch = |c: &mut Cgn, secs: u64, mut p: Vec<u8>| {
        let mut verdicts = [Verdict::Consumed];
        let now = start + Duration::from_secs(secs);
        c.nat
            .process_batch(&mut c.server, now, &mut [&mut p[..]], &mut verdicts);
        (verdicts[0], p)
    };
    let out = build(&mut rng, inside, remote, 64, 17);
    let (v, p) = batch(&mut c, 1, out.clone());
    assert_eq!(v, Verdict::Forward);
    let ext = flow_src(&p).expect("translated");
    let reply = build(&mut rng, remote, (ext.1, ext.2), 64, 17);
    let (v, _) = batch(&mut c, 250, reply.clone());
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        c.nat.counters().fast_path,
        1,
        "the reply took the fast path"
    );
    // At 301 s the binding's implicit part ends (the last outbound packet was at 1 s); the
    // session lives on to 550 s.
    let (v, _) = batch(&mut c, 320, reply.clone());
    assert_eq!(
        v,
        Verdict::Drop(super::translate::DropReason::NoMapping),
        "no binding owns the external endpoint any more"
    );
    assert_eq!(c.nat.session_count(), 1);
    assert_eq!(c.nat.counters().fast_path, 1);
    let (v, p) = batch(&mut c, 330, out);
    assert_eq!(v, Verdict::Forward, "a new binding (full path)");
    let ext = flow_src(&p).expect("translated");
    let reply = build(&mut rng, remote, (ext.1, ext.2), 64, 17);
    let (v, _) = batch(&mut c, 331, reply);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        c.nat.counters().fast_path,
        2,
        "the session is on the fast path again"
    );
}
