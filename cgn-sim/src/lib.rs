//! `cgn_sim`: a carrier-grade NAT simulator for NAT444 labs, built to be a strict, faithful
//! PCP server (RFC 6887) with NAT-PMP (RFC 6886) on the same port.
//!
//! * [`server::Server`] is the sans-IO engine: the full RFC 6887 §8.2 receive pipeline, every
//!   option rule, MAP, PEER, ANNOUNCE, deletes with erratum 3621, nonce ownership on every
//!   renewal and delete, quotas, restart with unsolicited ANNOUNCE, Mapping Update.
//! * [`pool::NatPool`] hands out external ports: several pools and sections, paired pooling,
//!   random ports keeping parity and range, never UDP 5350/5351; [`hold::HoldDown`] keeps
//!   freed ports for 120 s except for their owner.
//! * [`table::Table`] is the mapping table shared with the dataplane: lookups by internal
//!   endpoint, external endpoint, PEER 5-tuple and nonce; expiry on a timing wheel.
//!   [`format`] prints it in the vendor shape of design.md §1 and as JSON.
//! * [`daemon`] is the tokio driver and [`ctl`] the control endpoint.
//!
//! ```
//! use cgn_sim::config::EngineConfig;
//! use cgn_sim::server::{Interface, Server};
//! use pcp_client::wire::{MapData, Nonce, OpcodeData, Options, Protocol, RequestRepr, ResponseRepr};
//! use rand::SeedableRng;
//! use std::net::{IpAddr, Ipv4Addr, SocketAddr};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let config = EngineConfig::with_pools(&["198.51.100.0/28"]);
//! let mut server = Server::new(config, now, Box::new(rand::rngs::StdRng::seed_from_u64(1)))?;
//! let client = Ipv4Addr::new(100, 64, 0, 2);
//! let request = RequestRepr {
//!     lifetime: 7200,
//!     client_ip: IpAddr::V4(client),
//!     data: OpcodeData::Map(MapData {
//!         nonce: Nonce([7; 12]),
//!         protocol: Protocol::UDP,
//!         internal_port: 5000,
//!         external_port: 0,
//!         external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
//!     }),
//!     options: Options::EMPTY,
//! };
//! let mut buf = [0u8; 1100];
//! let len = request.emit(&mut buf)?;
//! let mut out = [0u8; 1100];
//! let from = SocketAddr::new(IpAddr::V4(client), 40000);
//! let n = server.handle(now, from, Interface::Inside, &buf[..len], &mut out).expect("answer");
//! let response = ResponseRepr::parse(&out[..n])?;
//! assert!(response.result.is_success());
//! assert_eq!(response.lifetime, 7200);
//! assert!(server.render_table(now).starts_with("Type: MAP IN, Protocol: UDP"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod allocate;
pub mod announce;
pub mod blocks;
pub mod cli;
pub mod clients;
pub(crate) mod clock;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dataplane;
pub mod dmz;
pub mod epoch;
pub mod fasthash;
pub mod format;
pub mod hold;
pub mod implicit;
pub mod inject;
pub mod map;
pub mod metrics;
pub mod natpmp;
pub mod options;
pub mod peer;
pub mod pool;
pub mod port_set;
pub(crate) mod ports;
pub mod prefix;
pub mod recovery;
pub mod sd_notify;
pub mod server;
pub(crate) mod subscribers;
pub mod table;
pub mod timer;
pub(crate) mod unsolicited;
pub mod update;
pub mod usage;
