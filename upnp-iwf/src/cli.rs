//! Command-line contract of the `upnp-iwf` daemon (design.md §5).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// UPnP IGD server on the LAN that turns port mappings into PCP MAP requests to the carrier's
/// CGN and keeps the router's own NAT (nftables) in step.
#[derive(Debug, Parser)]
#[command(name = "upnp-iwf", version, about)]
pub struct Cli {
    /// LAN interface to serve UPnP IGD on (repeatable).
    #[arg(long, value_name = "IFACE")]
    pub lan: Vec<String>,
    /// WAN interface (towards the CGN).
    #[arg(long, value_name = "IFACE")]
    pub wan: Option<String>,
    /// PCP server; default: the WAN default gateway.
    #[arg(long, value_name = "ADDR")]
    pub pcp_server: Option<SocketAddr>,
    /// Upstream: `pcp` asks the CGN, `none` serves the IGD with local mappings only.
    #[arg(long, value_enum, default_value_t = Upstream::Pcp)]
    pub upstream: Upstream,
    /// Local NAT backend.
    #[arg(long, value_enum, default_value_t = Nat::Nftables)]
    pub nat: Nat,
    /// Directory for durable mapping state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where mappings are requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Upstream {
    /// PCP MAP to the CGN.
    Pcp,
    /// Local mappings only.
    None,
}

/// Local NAT backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Nat {
    /// nftables DNAT/SNAT.
    Nftables,
    /// No local NAT (the CPE does not translate).
    None,
}
