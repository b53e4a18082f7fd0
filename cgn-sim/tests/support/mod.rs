//! A scripted PCP client against the sans-IO engine, in fake time.
#![allow(dead_code)]

/// The pcap writer the codec's own tshark test uses (one copy for the workspace).
#[allow(dead_code)]
#[path = "../../../pcp-client/tests/support/pcap.rs"]
pub mod pcap;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use cgn_sim::config::EngineConfig;
use cgn_sim::server::{Interface, Server};
use pcp_client::wire::{
    MapData, Nonce, OpcodeData, Options, PcpOption, PeerData, Protocol, RequestRepr, ResponseRepr,
    ResultCode,
};
use rand::SeedableRng;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
pub const POOL: &str = "198.51.100.0/28";
pub const NO_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

pub struct Harness {
    pub server: Server,
    pub t0: Instant,
    pub now: Instant,
}

/// A parsed answer, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn repr(&self) -> ResponseRepr<'_> {
        ResponseRepr::parse(&self.bytes).expect("the server's answer parses")
    }
    pub fn result(&self) -> ResultCode {
        ResultCode::from(self.bytes[3])
    }
    pub fn lifetime(&self) -> u32 {
        u32::from_be_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]])
    }
    pub fn epoch(&self) -> u32 {
        u32::from_be_bytes([self.bytes[8], self.bytes[9], self.bytes[10], self.bytes[11]])
    }
    pub fn map(&self) -> MapData {
        *self.repr().data.map_fields().expect("MAP or PEER data")
    }
    pub fn external(&self) -> SocketAddrV4 {
        let m = self.map();
        match m.external_address {
            IpAddr::V4(a) => SocketAddrV4::new(a, m.external_port),
            IpAddr::V6(_) => panic!("IPv6 external"),
        }
    }
    pub fn options(&self) -> Vec<String> {
        self.repr()
            .options
            .iter()
            .map(|o| format!("{o:?}"))
            .collect()
    }
}

pub fn config() -> EngineConfig {
    EngineConfig::with_pools(&[POOL])
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(config())
    }

    pub fn with(config: EngineConfig) -> Harness {
        let t0 = Instant::now();
        let server = Server::new(config, t0, Box::new(rand::rngs::StdRng::seed_from_u64(42)))
            .expect("config");
        Harness {
            server,
            t0,
            now: t0,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
    }

    pub fn send_from(
        &mut self,
        from: SocketAddr,
        iface: Interface,
        bytes: &[u8],
    ) -> Option<Answer> {
        let mut out = [0u8; 1100];
        let n = self.server.handle(self.now, from, iface, bytes, &mut out)?;
        Some(Answer {
            bytes: out[..n].to_vec(),
        })
    }

    pub fn send(&mut self, client: Ipv4Addr, bytes: &[u8]) -> Option<Answer> {
        self.send_from(
            SocketAddr::new(IpAddr::V4(client), 40_000),
            Interface::Inside,
            bytes,
        )
    }

    pub fn request(&mut self, client: Ipv4Addr, r: &RequestRepr<'_>) -> Answer {
        let mut buf = [0u8; 1100];
        let n = r.emit(&mut buf).expect("emit request");
        self.send(client, &buf[..n]).expect("an answer")
    }

    pub fn check(&self) {
        self.server
            .table()
            .check_invariants()
            .expect("table invariants");
    }
}

pub fn nonce(n: u8) -> Nonce {
    Nonce([n; 12])
}

pub fn map_req<'a>(
    client: Ipv4Addr,
    n: Nonce,
    protocol: Protocol,
    internal_port: u16,
    lifetime: u32,
    suggest: Option<SocketAddrV4>,
    options: &'a [PcpOption<'a>],
) -> RequestRepr<'a> {
    RequestRepr {
        lifetime,
        client_ip: IpAddr::V4(client),
        data: OpcodeData::Map(MapData {
            nonce: n,
            protocol,
            internal_port,
            external_port: suggest.map_or(0, |s| s.port()),
            external_address: suggest.map_or(NO_ADDR, |s| IpAddr::V4(*s.ip())),
        }),
        options: Options::List(options),
    }
}

pub fn peer_req<'a>(
    client: Ipv4Addr,
    n: Nonce,
    internal_port: u16,
    lifetime: u32,
    remote: SocketAddrV4,
    suggest: Option<SocketAddrV4>,
    options: &'a [PcpOption<'a>],
) -> RequestRepr<'a> {
    RequestRepr {
        lifetime,
        client_ip: IpAddr::V4(client),
        data: OpcodeData::Peer(PeerData {
            map: MapData {
                nonce: n,
                protocol: Protocol::UDP,
                internal_port,
                external_port: suggest.map_or(0, |s| s.port()),
                external_address: suggest.map_or(NO_ADDR, |s| IpAddr::V4(*s.ip())),
            },
            remote_peer_port: remote.port(),
            remote_peer_address: IpAddr::V4(*remote.ip()),
        }),
        options: Options::List(options),
    }
}

pub fn announce_req(client: Ipv4Addr) -> RequestRepr<'static> {
    RequestRepr {
        lifetime: 0,
        client_ip: IpAddr::V4(client),
        data: OpcodeData::Announce,
        options: Options::EMPTY,
    }
}

pub fn emit(r: &RequestRepr<'_>) -> Vec<u8> {
    let mut buf = [0u8; 1100];
    let n = r.emit(&mut buf).expect("emit");
    buf[..n].to_vec()
}

/// Whether a test may go on without an external program: true if `program --probe_arg`
/// runs. Otherwise prints `SKIPPED: …` and returns false on a laptop, and panics when
/// `NAT444_REQUIRE_PRIVILEGED` is set (CI), as `tests/tests/cgn_lab.rs` does, so a CI run
/// never passes by skipping.
pub fn tool_available(program: &str, probe_arg: &str, install: &str) -> bool {
    if std::process::Command::new(program)
        .arg(probe_arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    let strict =
        std::env::var("NAT444_REQUIRE_PRIVILEGED").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !strict,
        "{program} is not installed ({install}), and NAT444_REQUIRE_PRIVILEGED forbids skipping"
    );
    println!("SKIPPED: {program} is not installed ({install})");
    false
}
