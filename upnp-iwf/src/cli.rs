//! Command-line contract of the `upnp-iwf` daemon (design.md §5).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::description::VersionPolicy;

/// UPnP IGD server on the LAN that turns port mappings into PCP MAP requests to the carrier's
/// CGN and keeps the router's own NAT (nftables) in step.
///
/// Serves SSDP (239.255.255.250:1900 joined on each --lan interface only), the IGD:1/IGD:2
/// descriptions, SOAP control and GENA events on http://<lan address>:<http-port>/rootDesc.xml,
/// a status page on / (also /status.json, /status.txt) and OpenMetrics on /metrics, to LAN
/// hosts only; `upnp-iwf ctl --help` controls it from the router. SIGTERM/SIGINT send
/// ssdp:byebye and exit.
#[derive(Debug, Parser)]
#[command(name = "upnp-iwf", version, about)]
pub struct Cli {
    /// LAN interface to serve UPnP IGD on (repeatable).
    #[arg(long, value_name = "IFACE")]
    pub lan: Vec<String>,
    /// WAN interface (towards the CGN); its counters feed WANCommonInterfaceConfig and, with
    /// --upstream none and no --external-address, its address is the external address.
    #[arg(long, value_name = "IFACE")]
    pub wan: Option<String>,
    /// PCP server; default: the WAN default gateway.
    #[arg(long, value_name = "ADDR")]
    pub pcp_server: Option<SocketAddr>,
    /// Upstream: `pcp` asks the CGN, `none` serves the IGD with local mappings only
    /// [default: pcp].
    #[arg(long, value_enum)]
    pub upstream: Option<Upstream>,
    /// Local NAT backend [default: nftables].
    #[arg(long, value_enum)]
    pub nat: Option<Nat>,
    /// With --nat none: send NewInternalClient upstream as PCP THIRD_PARTY when it is not this
    /// router (RFC 6970 §5.4). Only where the PCP server trusts this network (§6); off by default.
    #[arg(long)]
    pub third_party: bool,
    /// The co-located DHCP server's lease file (dnsmasq format: OpenWrt `/tmp/dhcp.leases`,
    /// Debian `/var/lib/misc/dnsmasq.leases`). When a LAN host's lease expires, is released or
    /// passes to another device, its mappings are deleted (RFC 6970 §5.10). Hosts that never
    /// appear in the file (static addresses) are not affected. Default: not followed.
    #[arg(long, value_name = "FILE")]
    pub dhcp_leases: Option<PathBuf>,
    /// Directory for durable state (device UUID, BOOTID, later the mappings).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// TOML configuration file (every flag has a key, see packaging/upnp-iwf.toml); flags
    /// override it. Checked at start; SIGHUP re-reads it and applies the permission rules,
    /// secure mode and log level live.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `upnp_iwf=debug,info` [default: $RUST_LOG, else the config's
    /// log_level, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// HTTP port on each LAN address [default: 5000; 0 = ephemeral].
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// SSDP port [default: 1900].
    #[arg(long, value_name = "PORT")]
    pub ssdp_port: Option<u16>,
    /// External address to report with --upstream none.
    #[arg(long, value_name = "IPV4")]
    pub external_address: Option<Ipv4Addr>,
    /// Description version: auto (IGD:2, IGD:1 for Microsoft/FDSSDP agents), v1 or v2.
    #[arg(long, value_enum)]
    pub igd_version: Option<VersionPolicy>,
    /// Secure mode: clients may map only to themselves [default: true].
    #[arg(long, value_name = "BOOL")]
    pub secure_mode: Option<bool>,
    /// Permission rule `allow|deny EXT-PORTS IP/LEN INT-PORTS` (repeatable; first match wins;
    /// after these the built-in rules apply, see --default-rules).
    #[arg(long, value_name = "RULE")]
    pub rule: Vec<String>,
    /// Built-in rules after --rule: deny ports 21 23 135 137-139 445 3389, allow 1024-65535,
    /// deny the rest (so ports below 1024 need a rule) [default: true; false = no match allows].
    #[arg(long, value_name = "BOOL")]
    pub default_rules: Option<bool>,
    /// Most mappings per LAN client [default: 128; 0 = unlimited].
    #[arg(long, value_name = "N")]
    pub quota: Option<usize>,
    /// Root device UUID [default: persisted in --state-dir, else random].
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Do not send SSDP NOTIFY announcements (answer searches only).
    #[arg(long)]
    pub no_announce: bool,
    /// Control socket for `upnp-iwf ctl` (mode 0600; `none` = no socket)
    /// [default: /run/upnp-iwf/ctl.sock].
    #[arg(long, value_name = "PATH")]
    pub ctl: Option<PathBuf>,
    /// Group that may also use the control socket (mode 0660) [default: root only].
    #[arg(long, value_name = "GROUP")]
    pub ctl_group: Option<String>,
}

/// Where mappings are requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upstream {
    /// PCP MAP to the CGN.
    Pcp,
    /// Local mappings only.
    None,
}

/// Local NAT backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nat {
    /// nftables DNAT/SNAT.
    Nftables,
    /// No local NAT (the CPE does not translate).
    None,
}
