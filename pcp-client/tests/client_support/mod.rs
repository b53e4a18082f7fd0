//! Fake clock and scripted PCP peer for the engine tests (quinn-proto style: the engine runs
//! in simulated time, every datagram it sends is captured with its send time).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pcp_client::client::{Config, Engine, Event, MapRequest, MappingId, Path, ServerId};
use pcp_client::wire::{
    MapData, OpcodeData, Options, PcpOption, Protocol, RequestRepr, ResponseRepr, ResultCode,
};

pub const CLIENT: &str = "192.168.0.10";
pub const SERVER: &str = "192.168.0.1:5351";
pub const EXTERNAL: &str = "198.51.100.7";

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// One datagram the engine sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Instant,
    pub to: SocketAddr,
    pub from: IpAddr,
    pub bytes: Vec<u8>,
}

impl Sent {
    pub fn request(&self) -> RequestRepr<'_> {
        RequestRepr::parse(&self.bytes).expect("engine sends valid PCP")
    }
    pub fn map(&self) -> MapData {
        *self.request().data.map_fields().expect("MAP or PEER")
    }
    pub fn is_pcp(&self) -> bool {
        self.bytes.first() == Some(&2)
    }
}

pub struct Harness {
    pub engine: Engine,
    pub t0: Instant,
    pub now: Instant,
    pub server: ServerId,
    pub sent: Vec<Sent>,
    pub events: Vec<Event>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(Config::default(), 1)
    }

    pub fn with(config: Config, seed: u64) -> Self {
        Self::with_paths(config, seed, &[SERVER])
    }

    pub fn with_paths(config: Config, seed: u64, servers: &[&str]) -> Self {
        let mut engine = Engine::with_seed(config, seed);
        let paths = servers
            .iter()
            .map(|s| Path {
                remote: sa(s),
                local: ip(CLIENT),
            })
            .collect();
        let server = engine.add_server(paths).expect("non-empty");
        let t0 = Instant::now();
        Harness {
            engine,
            t0,
            now: t0,
            server,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Seconds since the start.
    pub fn elapsed(&self, at: Instant) -> f64 {
        (at - self.t0).as_secs_f64()
    }

    pub fn map(&mut self, request: MapRequest) -> MappingId {
        let id = self
            .engine
            .map(self.now, self.server, request)
            .expect("valid request");
        self.drain();
        id
    }

    pub fn drain(&mut self) {
        let mut buf = [0u8; 1100];
        while let Some(t) = self.engine.poll_transmit(self.now, &mut buf) {
            self.sent.push(Sent {
                at: self.now,
                to: t.destination,
                from: t.source,
                bytes: buf[..t.len].to_vec(),
            });
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// Runs the clock forward by `d`, firing every timer on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut guard = 0;
        while let Some(t) = self.engine.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.engine.handle_timeout(self.now);
            self.drain();
            guard += 1;
            assert!(guard < 100_000, "timer loop");
        }
        self.now = target;
        self.drain();
    }

    /// Takes the datagrams sent so far.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Delivers a datagram from `from` to the client.
    pub fn deliver_from(&mut self, from: &str, bytes: &[u8]) {
        self.engine.handle_datagram(
            self.now,
            sa(from),
            SocketAddr::new(ip(CLIENT), 40001),
            bytes,
        );
        self.drain();
    }

    pub fn deliver(&mut self, bytes: &[u8]) {
        self.deliver_from(SERVER, bytes);
    }

    /// Answers a MAP/PEER request with `result`, granting `external_port` for `lifetime`.
    pub fn answer(
        &mut self,
        sent: &Sent,
        result: ResultCode,
        lifetime: u32,
        epoch: u32,
        external_port: u16,
    ) {
        let bytes = response(sent, result, lifetime, epoch, external_port, &[]);
        self.deliver_from(&sent.to.to_string(), &bytes);
    }
}

/// A server's answer to a request the engine sent (MAP, PEER or ANNOUNCE).
pub fn response(
    sent: &Sent,
    result: ResultCode,
    lifetime: u32,
    epoch: u32,
    external_port: u16,
    extra: &[PcpOption<'_>],
) -> Vec<u8> {
    let request = sent.request();
    let mut options: Vec<PcpOption<'_>> = request.options.iter().collect();
    options.extend_from_slice(extra);
    let data = match request.data {
        OpcodeData::Map(m) => OpcodeData::Map(MapData {
            external_port,
            external_address: ip(EXTERNAL),
            ..m
        }),
        OpcodeData::Peer(mut p) => {
            p.map.external_port = external_port;
            p.map.external_address = ip(EXTERNAL);
            OpcodeData::Peer(p)
        }
        other => other,
    };
    let mut buf = [0u8; 1100];
    let len = ResponseRepr {
        result,
        lifetime,
        epoch,
        data,
        options: Options::List(&options),
    }
    .emit(&mut buf)
    .expect("fits");
    buf[..len].to_vec()
}

/// An unsolicited ANNOUNCE response (RFC 6887 §14.1.2) with this epoch.
pub fn announce(epoch: u32) -> Vec<u8> {
    let mut buf = [0u8; 24];
    let len = ResponseRepr {
        result: ResultCode::Success,
        lifetime: 0,
        epoch,
        data: OpcodeData::Announce,
        options: Options::EMPTY,
    }
    .emit(&mut buf)
    .expect("fits");
    buf[..len].to_vec()
}

pub fn udp_map(port: u16, lifetime: u32) -> MapRequest {
    MapRequest::new(Protocol::UDP, port, lifetime)
}

/// Creates a mapping and grants it at epoch `epoch`; returns its id and the first request.
pub fn granted(h: &mut Harness, port: u16, lifetime: u32, epoch: u32) -> (MappingId, Sent) {
    let id = h.map(udp_map(port, lifetime));
    let sent = h.take_sent().pop().expect("sent at once");
    h.answer(&sent, ResultCode::Success, lifetime, epoch, port + 10000);
    h.take_events();
    (id, sent)
}
