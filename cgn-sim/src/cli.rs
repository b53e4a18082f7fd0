//! Command-line contract of the `cgn-sim` daemon (design.md §5).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Carrier-grade NAT simulator: PCP server (MAP, PEER, ANNOUNCE), NAT pool and a translating
/// TUN dataplane.
#[derive(Debug, Parser)]
#[command(name = "cgn-sim", version, about)]
pub struct Cli {
    /// Inside address the PCP server listens on (UDP 5351).
    #[arg(long, value_name = "ADDR")]
    pub inside: Option<IpAddr>,
    /// External address pool, e.g. 198.51.100.0/28 (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub pool: Vec<String>,
    /// Dataplane: `tun` translates packets, `none` runs the PCP server alone (unprivileged).
    #[arg(long, value_enum, default_value_t = Dataplane::Tun)]
    pub dataplane: Dataplane,
    /// TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Control a running daemon.
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
    },
}

/// `cgn-sim ctl …` actions.
#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Print the mapping table.
    Mappings {
        /// JSON instead of the firewall-style table.
        #[arg(long)]
        json: bool,
    },
    /// Simulate a reboot (state lost, epoch reset).
    Restart {
        /// Engine restart that keeps the mapping table.
        #[arg(long)]
        keep_state: bool,
    },
    /// Print counters.
    Stats,
}
