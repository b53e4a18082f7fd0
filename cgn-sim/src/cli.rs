//! Command-line contract of the `cgn-sim` daemon (design.md §5). Flags override the TOML
//! file given with `--config` (whose keys are those of [`crate::config::EngineConfig`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::daemon::dataplane::DataplaneOptions;
use crate::dataplane::bypass::Bypass;
use crate::dataplane::session::Timeouts;
use crate::dataplane::translate::{DataplaneConfig, Filtering, TtlMode};
use crate::dataplane::tun::TunConfig;

/// Default control socket.
pub const DEFAULT_CTL: &str = "/tmp/cgn-sim.sock";

/// Carrier-grade NAT simulator: PCP server (MAP, PEER, ANNOUNCE) with NAT-PMP on the same
/// port, NAT pool, mapping table, and a translating TUN dataplane.
///
/// Examples:
///   cgn-sim --dataplane none --inside 127.0.0.1 --port 15351 --pool 198.51.100.0/28
///   cgn-sim --inside 100.64.0.1 --pool 198.51.100.0/28 --quota 64 --ctl /run/cgn.sock
///   cgn-sim --inside 100.64.0.1 --outside 203.0.113.1 --pool 198.51.100.0/28 \
///           --tun cgn0 --inside-iface inside0 --filtering apdf --udp-timeout 300 \
///           --no-translate 203.0.113.53/32:udp/53
///   cgn-sim --ctl /run/cgn.sock ctl mappings --json
#[derive(Debug, Parser)]
#[command(name = "cgn-sim", version, about, verbatim_doc_comment)]
pub struct Cli {
    /// Inside address the PCP server listens on (UDP 5351). Default with `--dataplane none`:
    /// 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub inside: Option<IpAddr>,
    /// External address pool, e.g. 198.51.100.0/28 or 198.51.100.9-198.51.100.12
    /// (repeatable; pool ids 1, 2, … in the table).
    #[arg(long, value_name = "PREFIX")]
    pub pool: Vec<String>,
    /// Dataplane: `tun` translates packets, `none` runs the PCP server alone (unprivileged).
    #[arg(long, value_enum, default_value_t = Dataplane::Tun)]
    pub dataplane: Dataplane,
    /// TOML configuration file (engine keys: quota_per_subscriber, min_lifetime, pools, …);
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP port of the PCP/NAT-PMP server (RFC 6887: 5351).
    #[arg(long, default_value_t = 5351)]
    pub port: u16,
    /// Outside address: PCP requests arriving there are ignored silently (RFC 6887 §8.2).
    #[arg(long, value_name = "ADDR")]
    pub outside: Option<IpAddr>,
    /// Control socket (Unix) for `cgn-sim ctl`.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CTL)]
    pub ctl: PathBuf,
    /// Serve OpenMetrics text over HTTP on this address (`GET /metrics`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Subscriber prefixes allowed to use PCP (repeatable; default 100.64.0.0/10, 127.0.0.0/8).
    #[arg(long, value_name = "PREFIX")]
    pub subscribers: Vec<crate::prefix::Ipv4Prefix>,
    /// External ports per subscriber (USER_EX_QUOTA beyond).
    #[arg(long, value_name = "N")]
    pub quota: Option<u32>,
    /// Minimum mapping lifetime in seconds (RFC 6887 §15: 120).
    #[arg(long, value_name = "SECS")]
    pub min_lifetime: Option<u32>,
    /// Maximum mapping lifetime in seconds (RFC 6887 §15: 86400).
    #[arg(long, value_name = "SECS")]
    pub max_lifetime: Option<u32>,
    /// External port range handed out, `FIRST-LAST`.
    #[arg(long, value_name = "FIRST-LAST")]
    pub port_range: Option<String>,
    /// Hosts allowed to send THIRD_PARTY, `PREFIX` (for any subscriber) or `PREFIX=SUBNET`
    /// (only for addresses in SUBNET) (repeatable; default: none, THIRD_PARTY disabled).
    #[arg(long, value_name = "PREFIX[=SUBNET]")]
    pub third_party: Vec<crate::config::ThirdPartyRule>,
    /// Seconds a freed external port is held (RFC 6888 REQ-8: 120).
    #[arg(long, value_name = "SECS")]
    pub port_hold: Option<u32>,
    /// Unsolicited ANNOUNCE copies after a restart (RFC 6887 §14.1.3: up to 10).
    #[arg(long, value_name = "N")]
    pub announce_count: Option<u32>,
    /// Also multicast ANNOUNCE to 224.0.0.1:5350.
    #[arg(long)]
    pub announce_multicast: bool,
    /// Mapping creations per second per subscriber (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Port Block Allocation (RFC 7422): every subscriber's mappings come from one block of
    /// N ports on its address (`[port_blocks]` in `--config`); see `--port-block-mode`.
    #[arg(long, value_name = "N")]
    pub port_block_size: Option<u16>,
    /// How subscribers get their block: `dynamic` (a free block at the first mapping, given
    /// back with the last) or `deterministic` (RFC 7422: a function of the subscriber address).
    #[arg(long, value_enum, default_value_t = BlockModeArg::Dynamic)]
    pub port_block_mode: BlockModeArg,
    /// TUN device of the dataplane (created by the daemon, gone when it exits).
    #[arg(long, value_name = "NAME", default_value = "cgn0")]
    pub tun: String,
    /// Subscriber-facing interface whose forwarded traffic is translated (repeatable;
    /// default: the interface carrying `--inside`, found over netlink).
    #[arg(long = "inside-iface", value_name = "IFACE")]
    pub inside_iface: Vec<String>,
    /// Inbound filtering of implicit (non-PCP) mappings: `eif` endpoint-independent (RFC 6888
    /// REQ-7), `apdf` address-and-port-dependent. PCP MAP mappings are always EIF unless
    /// FILTER narrows them.
    #[arg(long, value_enum, default_value_t = FilteringArg::Eif)]
    pub filtering: FilteringArg,
    /// MTU of the TUN device and of translated packets (bigger ones: fragmented, or ICMP
    /// Fragmentation Needed with DF).
    #[arg(long, value_name = "BYTES", default_value_t = 1500)]
    pub mtu: u16,
    /// UDP session idle timeout, seconds (RFC 4787 REQ-5: ≥ 120, default 300).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub udp_timeout: u32,
    /// TCP established idle timeout, seconds (RFC 5382 REQ-5: ≥ 7440).
    #[arg(long, value_name = "SECS", default_value_t = 7440)]
    pub tcp_established_timeout: u32,
    /// TCP closing and RST hold timeout, seconds (RFC 7857 §2.1, §2.2: default ≥ 240); also
    /// the opening timeout unless --tcp-opening-timeout is given.
    #[arg(long, value_name = "SECS", default_value_t = 240)]
    pub tcp_transitory_timeout: u32,
    /// TCP opening timeout (SYN seen one way only), seconds (RFC 7857 §2.1: configurable
    /// separately from closing; default: --tcp-transitory-timeout).
    #[arg(long, value_name = "SECS")]
    pub tcp_opening_timeout: Option<u32>,
    /// ICMP query session timeout, seconds (RFC 5508 REQ-2: ≥ 60).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub icmp_timeout: u32,
    /// Drop unsolicited inbound SYNs silently after the 6 s hold instead of answering ICMP
    /// Port Unreachable (RFC 5382 REQ-4a).
    #[arg(long)]
    pub silent_syn_drop: bool,
    /// Forward subscriber traffic to this destination untranslated (RFC 6888 REQ-6):
    /// `PREFIX`, `PREFIX:PROTO` or `PREFIX:PROTO/PORT` with PROTO tcp, udp or icmp, e.g.
    /// `203.0.113.53/32:udp/53` (repeatable). Packets keep their subscriber (100.64/10) source,
    /// so name only servers inside the provider's network with a route back to the
    /// subscribers: their replies bypass the CGN too.
    #[arg(long = "no-translate", value_name = "PREFIX[:PROTO[/PORT]]")]
    pub no_translate: Vec<Bypass>,
    /// Most translator sessions (beyond: ICMP Host Unreachable for new ones).
    #[arg(long, value_name = "N", default_value_t = 4_000_000)]
    pub max_sessions: usize,
    /// Open the TUN device without the offload interface (no GSO super-packets: one read
    /// and one write system call per packet). Without the flag the daemon asks for it and
    /// falls back by itself if the kernel refuses.
    #[arg(long)]
    pub no_tun_offload: bool,
    /// Packets the TUN device queues for the daemon before the kernel drops (txqueuelen).
    #[arg(long, value_name = "N", default_value_t = crate::dataplane::tun::DEFAULT_QUEUE_LEN)]
    pub tun_queue_len: u32,
    /// Routing table holding `default dev TUN` for subscriber traffic.
    #[arg(long, value_name = "ID", default_value_t = 4444)]
    pub route_table: u32,
    /// Priority of the `iif INSIDE lookup TABLE` rules.
    #[arg(long, value_name = "PRIO", default_value_t = 4444)]
    pub rule_priority: u32,
    /// Talk to a running daemon instead of starting one.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Which dataplane the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dataplane {
    /// Translate packets read from a TUN device.
    Tun,
    /// PCP server only.
    None,
}

/// `--port-block-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BlockModeArg {
    /// A free block at the subscriber's first mapping.
    Dynamic,
    /// RFC 7422: the block is a function of the subscriber address.
    Deterministic,
}

/// `--filtering` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilteringArg {
    /// Endpoint-independent filtering.
    Eif,
    /// Address-and-port-dependent filtering.
    Apdf,
}

impl Cli {
    /// The dataplane settings for `--dataplane tun` (`None` for `--dataplane none`).
    /// `inside` is the PCP server's address (ICMP errors to subscribers come from it).
    pub fn dataplane_options(
        &self,
        inside: IpAddr,
    ) -> Result<Option<DataplaneOptions>, &'static str> {
        if self.dataplane == Dataplane::None {
            return Ok(None);
        }
        let IpAddr::V4(inside) = inside else {
            return Err("the TUN dataplane needs an IPv4 --inside address");
        };
        if self.tun.is_empty() || self.tun.len() > 15 {
            return Err("--tun NAME must be 1 to 15 bytes");
        }
        if self.mtu < 576 {
            return Err("--mtu must be at least 576");
        }
        // Without --outside, ICMP errors towards the Internet come from the first address of
        // the pool in force (it follows `ctl pool`): never from the shared inside space.
        let outside = match self.outside {
            Some(IpAddr::V4(a)) => a,
            _ => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let translator = DataplaneConfig {
            filtering: match self.filtering {
                FilteringArg::Eif => Filtering::EndpointIndependent,
                FilteringArg::Apdf => Filtering::AddressAndPortDependent,
            },
            timeouts: Timeouts {
                udp: self.udp_timeout,
                tcp_established: self.tcp_established_timeout,
                tcp_transitory: self.tcp_transitory_timeout,
                tcp_opening: self
                    .tcp_opening_timeout
                    .unwrap_or(self.tcp_transitory_timeout),
                icmp: self.icmp_timeout,
            },
            syn_port_unreachable: !self.silent_syn_drop,
            mtu: usize::from(self.mtu),
            inside_address: inside,
            outside_address: outside,
            max_sessions: self.max_sessions,
            // The daemon's kernel forwards each packet into the TUN and out again.
            ttl: TtlMode::KernelForwardsTwice,
            bypass: self.no_translate.clone(),
            ..DataplaneConfig::default()
        };
        Ok(Some(DataplaneOptions {
            tun: TunConfig {
                name: self.tun.clone(),
                mtu: self.mtu,
                pool: Vec::new(),
                inside_interfaces: Vec::new(),
                table: self.route_table,
                rule_priority: self.rule_priority,
                offload: !self.no_tun_offload,
                queue_len: self.tun_queue_len,
            },
            inside_ifaces: self.inside_iface.clone(),
            translator,
        }))
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Control a running daemon (through `--ctl PATH`).
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
    },
}

/// `cgn-sim ctl …` actions.
#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Pool usage per pool and section, and per subscriber (bindings, MAPs, quota, block).
    Status {
        /// JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the mapping table.
    Mappings {
        /// JSON instead of the firewall-style table.
        #[arg(long)]
        json: bool,
    },
    /// Simulate a reboot (state lost, epoch reset, unsolicited ANNOUNCE).
    Restart {
        /// Engine restart that keeps the mapping table and the epoch.
        #[arg(long)]
        keep_state: bool,
    },
    /// Print counters (OpenMetrics text).
    Stats,
    /// Print the configuration in force (TOML).
    Config,
    /// Renumber the NAT: replace the pools (epoch reset, mappings moved, Mapping Updates).
    Pool {
        /// New ranges, e.g. 192.0.2.0/28 (pool ids 1, 2, …).
        #[arg(required = true)]
        ranges: Vec<String>,
    },
    /// Answer the next MAP requests that would create or refresh a mapping with a PCP error,
    /// changing no state (for tests of clients and of the UPnP IWF, RFC 6970 §4.5).
    Inject {
        /// The result: a name such as NOT_AUTHORIZED or USER_EX_QUOTA, or its number (1-13).
        #[arg(value_parser = crate::inject::parse_result)]
        result: pcp_client::wire::ResultCode,
        /// Lifetime of the error responses, seconds (default: the server's error lifetime).
        #[arg(long, value_name = "SECS")]
        lifetime: Option<u32>,
        /// How many MAP requests get the error (0 cancels a pending injection).
        #[arg(long, value_name = "N", default_value_t = 1)]
        count: u32,
    },
}

impl CtlAction {
    /// The control request for this action.
    pub fn request(&self) -> crate::ctl::Request {
        match self {
            CtlAction::Status { json } => crate::ctl::Request::Status { json: *json },
            CtlAction::Mappings { json } => crate::ctl::Request::Mappings { json: *json },
            CtlAction::Restart { keep_state } => crate::ctl::Request::Restart {
                keep_state: *keep_state,
            },
            CtlAction::Stats => crate::ctl::Request::Stats,
            CtlAction::Config => crate::ctl::Request::Config,
            CtlAction::Pool { ranges } => crate::ctl::Request::Pool(ranges.clone()),
            CtlAction::Inject {
                result,
                lifetime,
                count,
            } => crate::ctl::Request::Inject {
                result: u8::from(*result),
                lifetime: *lifetime,
                count: *count,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6888 REQ-6: `--no-translate` is repeatable, reaches the translator's config, and a
    // bad rule is refused with the reason.
    #[test]
    fn tcp_opening_timeout_follows_the_transitory_one_unless_given() {
        // RFC 7857 §2.1: opening and closing timeouts configurable separately.
        let timeouts = |args: &[&str]| {
            let mut all = vec!["cgn-sim", "--pool", "198.51.100.0/28"];
            all.extend_from_slice(args);
            let cli = Cli::try_parse_from(all).expect("parses");
            cli.dataplane_options(IpAddr::from([100, 64, 0, 1]))
                .expect("valid")
                .expect("tun dataplane")
                .translator
                .timeouts
        };
        let t = timeouts(&["--tcp-transitory-timeout", "300"]);
        assert_eq!((t.tcp_opening, t.tcp_transitory), (300, 300));
        let t = timeouts(&[
            "--tcp-opening-timeout",
            "60",
            "--tcp-transitory-timeout",
            "300",
        ]);
        assert_eq!((t.tcp_opening, t.tcp_transitory), (60, 300));
    }

    #[test]
    fn no_translate_flags_reach_the_translator_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "cgn-sim",
            "--pool",
            "198.51.100.0/28",
            "--no-translate",
            "203.0.113.53/32:udp/53",
            "--no-translate",
            "192.0.2.0/24",
        ])
        .expect("parses");
        let options = cli
            .dataplane_options(IpAddr::from([100, 64, 0, 1]))
            .expect("valid")
            .expect("tun dataplane");
        let rules: Vec<String> = options
            .translator
            .bypass
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(rules, ["203.0.113.53/32:udp/53", "192.0.2.0/24"]);

        let err = Cli::try_parse_from(["cgn-sim", "--no-translate", "203.0.113.53:udp/0"])
            .expect_err("port 0")
            .to_string();
        assert!(
            err.contains("--no-translate") && err.contains("\"0\" is not a port (1 to 65535)"),
            "{err}"
        );
        let none = Cli::try_parse_from(["cgn-sim"]).expect("parses");
        let options = none
            .dataplane_options(IpAddr::from([100, 64, 0, 1]))
            .expect("valid")
            .expect("tun dataplane");
        assert!(
            options.translator.bypass.is_empty(),
            "translate everything by default"
        );
    }
}
