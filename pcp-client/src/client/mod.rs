//! The sans-IO PCP client engine (RFC 6887, 7488, 6886 fallback), driven like quinn-proto.
//!
//! [`Engine`] holds the mappings an application wants and does everything the RFCs ask of a
//! client, with the clock and the RNG passed in:
//!
//! * retransmission per RFC 6887 §8.1.1 ([`config::IRT`] 3 s doubling to [`config::MRT`] 1024 s,
//!   ±10 % jitter drawn per RT, MRC/MRD configurable and unlimited by default), and RFC 7488 §3
//!   address failover (4 transmissions per address, a hard ICMP error moves on at once, the
//!   whole list again every 15 min);
//! * one nonce per mapping, kept for every retransmission, renewal and delete; a different one
//!   per server; caller-supplied nonces for mappings created by an earlier run;
//! * renewal per §11.2.1 (½–⅝ of the lifetime, then ¾, ⅞ …, never two renewals < 4 s apart),
//!   suggesting the last assigned endpoint; after expiry, back to the §8.1.1 schedule;
//! * response matching per §8.3/§11.4/§12.4, error and NO_RESOURCES hold-downs, the 24 h
//!   lifetime cap, the PREFER_FAILURE echo check;
//! * the §8.5 epoch check in signed arithmetic; state loss re-creates every mapping at the
//!   server, after a uniform 0–5 s wait when an ANNOUNCE showed it; Mapping Updates;
//! * version negotiation and NAT-PMP fallback for IPv4 UDP/TCP maps, PCP first every time.
//!
//! ```
//! use pcp_client::client::{Config, Engine, Event, MapRequest, Path};
//! use pcp_client::wire::{MapData, OpcodeData, Options, Protocol, RequestRepr, ResponseRepr, ResultCode};
//! use std::time::Instant;
//!
//! let mut engine = Engine::new(Config::default());
//! let server = engine
//!     .add_server(vec![Path { remote: "127.0.0.1:5351".parse()?, local: "127.0.0.1".parse()? }])
//!     .expect("one address");
//! let now = Instant::now();
//! let id = engine.map(now, server, MapRequest::new(Protocol::UDP, 5000, 3600))?;
//!
//! // The driver sends what the engine produces ...
//! let mut buf = [0u8; 1100];
//! let t = engine.poll_transmit(now, &mut buf).expect("the first MAP goes out at once");
//! let request = RequestRepr::parse(&buf[..t.len])?;
//! let OpcodeData::Map(map) = request.data else { unreachable!() };
//!
//! // ... and feeds back what the server answers.
//! let mut reply = [0u8; 1100];
//! let len = ResponseRepr {
//!     result: ResultCode::Success,
//!     lifetime: 3600,
//!     epoch: 100,
//!     data: OpcodeData::Map(MapData { external_port: 40000, external_address: "198.51.100.1".parse()?, ..map }),
//!     options: Options::EMPTY,
//! }
//! .emit(&mut reply)?;
//! engine.handle_datagram(now, t.destination, "127.0.0.1:40001".parse()?, &reply[..len]);
//! assert!(matches!(engine.poll_event(), Some(Event::Granted { id: got, .. }) if got == id));
//! // The first renewal is due between 1800 s and 2250 s from now.
//! assert!(engine.poll_timeout().expect("renewal timer") - now >= std::time::Duration::from_secs(1800));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
#[cfg(feature = "tokio")]
mod discovery;
#[cfg(feature = "tokio")]
mod driver;
mod engine;
pub mod epoch;
mod event;
mod receive;
pub mod renewal;
mod request;
pub mod retransmit;
pub mod rng;
mod schedule;
mod slab;
mod transmit;

pub use config::Config;
#[cfg(feature = "tokio")]
pub use discovery::{
    discover_gateways, parse_ipv4_default_routes, parse_ipv4_routes, parse_ipv6_routes,
};
#[cfg(feature = "tokio")]
pub use driver::{Announcement, Client, ClientConfig, ClientError, Mapping, announce_socket_v4};
pub use engine::{Engine, MappingInfo, MappingPhase, Stats};
pub use event::{ErrorCode, Event, Exchange, MappingId, Path, ServerId, Transmit, Version};
pub use request::{
    GiveUp, MapRequest, MappingUpdate, PeerRequest, PortSetRequest, RequestError, RequestOptions,
};
