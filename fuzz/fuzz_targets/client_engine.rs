//! Fuzzes the sans-IO PCP client engine: arbitrary datagrams (raw, and answers derived from
//! the engine's own requests so matching succeeds), ICMP errors, API calls and timer orders.
//! Asserts: no panic, and bounded state (mappings only from API calls, bounded timer heap,
//! transmit queue and event queue).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pcp_client::client::{Config, Engine, MapRequest, MappingId, Path, PeerRequest};
use pcp_client::wire::{OpcodeData, Options, Protocol, RequestRepr, ResponseRepr, ResultCode};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

const SERVERS: [&str; 2] = ["192.0.2.1:5351", "192.0.2.2:5351"];

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(seed) = input.u8() else { return };
    let config = Config {
        mrc: u32::from(seed & 3),
        ..Config::default()
    };
    let mut engine = Engine::with_seed(config, u64::from(seed));
    let local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
    let paths = SERVERS
        .iter()
        .map(|s| Path {
            remote: s.parse().expect("literal"),
            local,
        })
        .collect();
    let server = engine.add_server(paths).expect("non-empty");
    let t0 = Instant::now();
    let mut now = t0;
    let mut created = 0usize;
    let mut ids: Vec<MappingId> = Vec::new();
    let mut last_sent: Vec<u8> = Vec::new();
    let mut buf = [0u8; 1100];
    let to = SocketAddr::new(local, 40000);

    for _ in 0..256 {
        let Some(op) = input.u8() else { break };
        match op % 10 {
            0 => {
                let (Some(port), Some(life), Some(flags)) = (input.u16(), input.u32(), input.u8())
                else {
                    break;
                };
                let protocol = [Protocol::UDP, Protocol::TCP, Protocol::ALL, Protocol(46)]
                    [usize::from(flags & 3)];
                let mut r = MapRequest::new(protocol, port, life);
                if flags & 4 != 0 {
                    r = r.ipv6();
                }
                if flags & 8 != 0 {
                    r = r.suggest(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
                        port,
                    ));
                }
                if flags & 16 != 0 {
                    r = r.prefer_failure();
                }
                if flags & 32 != 0 {
                    r = r.port_set(u16::from(flags), flags & 64 != 0);
                }
                if let Ok(id) = engine.map(now, server, r) {
                    created += 1;
                    ids.push(id);
                }
            }
            1 => {
                let (Some(port), Some(rport)) = (input.u16(), input.u16()) else {
                    break;
                };
                let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)), rport);
                if let Ok(id) = engine.peer(
                    now,
                    server,
                    PeerRequest::new(Protocol::TCP, port, remote, 120),
                ) {
                    created += 1;
                    ids.push(id);
                }
            }
            2 => {
                if let (Some(i), false) = (input.u8(), ids.is_empty()) {
                    let _ = engine.delete(now, ids[usize::from(i) % ids.len()]);
                }
            }
            3 => {
                let _ = engine.announce(now, server);
            }
            4 => {
                // A raw datagram from a server address (or from elsewhere).
                let (Some(which), Some(len)) = (input.u8(), input.u16()) else {
                    break;
                };
                let from: SocketAddr = match which % 3 {
                    0 => SERVERS[0].parse().expect("literal"),
                    1 => SERVERS[1].parse().expect("literal"),
                    _ => "192.0.2.9:5351".parse().expect("literal"),
                };
                let bytes = input.bytes(usize::from(len) % 1200).to_vec();
                engine.handle_datagram(now, from, to, &bytes);
            }
            5 => {
                // An answer built from the last request, with fuzzed result, lifetime, epoch
                // and external port, so responses actually match mappings.
                let (Some(result), Some(life), Some(epoch), Some(port)) =
                    (input.u8(), input.u32(), input.u32(), input.u16())
                else {
                    break;
                };
                if let Ok(request) = RequestRepr::parse(&last_sent) {
                    let data = match request.data {
                        OpcodeData::Map(mut m) => {
                            m.external_port = port;
                            OpcodeData::Map(m)
                        }
                        OpcodeData::Peer(mut p) => {
                            p.map.external_port = port;
                            OpcodeData::Peer(p)
                        }
                        other => other,
                    };
                    let mut out = [0u8; 1100];
                    let options = if result & 0x80 != 0 {
                        Options::EMPTY
                    } else {
                        request.options
                    };
                    if let Ok(n) = (ResponseRepr {
                        result: ResultCode::from(result % 30),
                        lifetime: life,
                        epoch,
                        data,
                        options,
                    })
                    .emit(&mut out)
                    {
                        let from: SocketAddr =
                            SERVERS[usize::from(result & 1)].parse().expect("literal");
                        engine.handle_datagram(now, from, to, &out[..n]);
                    }
                }
            }
            6 => {
                // Time passes: milliseconds to about a day.
                let Some(step) = input.u16() else { break };
                let scale = [1u64, 100, 10_000, 1_000_000][usize::from(step & 3)];
                now += Duration::from_millis(u64::from(step >> 2) * scale);
                // Fire timers in order, as a driver would, up to a bound.
                for _ in 0..64 {
                    match engine.poll_timeout() {
                        Some(t) if t <= now => engine.handle_timeout(t.max(t0)),
                        _ => break,
                    }
                }
                engine.handle_timeout(now);
            }
            7 => {
                let Some(which) = input.u8() else { break };
                let remote = SERVERS[usize::from(which & 1)].parse().expect("literal");
                engine.handle_icmp_error(now, remote);
            }
            8 => {
                if let (Some(i), false) = (input.u8(), ids.is_empty()) {
                    engine.forget(ids[usize::from(i) % ids.len()]);
                }
            }
            _ => {
                // A NAT-PMP answer shaped like the fallback's.
                let (Some(a), Some(b), Some(port), Some(life)) =
                    (input.u8(), input.u8(), input.u16(), input.u32())
                else {
                    break;
                };
                let mut d = vec![0, 128 | (a % 3), 0, b % 7, 0, 0, 0, a];
                d.extend_from_slice(&port.to_be_bytes());
                d.extend_from_slice(&port.wrapping_add(1).to_be_bytes());
                d.extend_from_slice(&life.to_be_bytes());
                engine.handle_datagram(now, SERVERS[0].parse().expect("literal"), to, &d);
            }
        }
        // Drain, keeping the last datagram for op 5.
        let mut sent = 0;
        while let Some(t) = engine.poll_transmit(now, &mut buf) {
            last_sent = buf[..t.len].to_vec();
            sent += 1;
            assert!(
                sent <= 2 * created + 8,
                "transmit queue grew beyond the mappings"
            );
        }
        let mut events = 0;
        while engine.poll_event().is_some() {
            events += 1;
        }
        assert!(events <= 4096);
        assert!(engine.mapping_count() <= created);
        let (timers, transmits, queued) = engine.queue_lengths();
        assert!(
            timers <= 2 * engine.mapping_count() + 65,
            "timer heap {timers}"
        );
        assert_eq!((transmits, queued), (0, 0));
        if let Some(t) = engine.poll_timeout() {
            // Deadlines never lie in the past by more than the last step's timers (all fired).
            let _ = t;
        }
    }
});
