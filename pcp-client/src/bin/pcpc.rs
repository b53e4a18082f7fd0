//! `pcpc`: command-line PCP client (design.md §5).

use clap::{Parser, Subcommand};
use std::net::SocketAddr;

/// Port Control Protocol client: create, renew and delete mappings on a PCP server.
#[derive(Debug, Parser)]
#[command(name = "pcpc", version, about)]
struct Cli {
    /// PCP server (repeatable); default: the default gateway of each family.
    #[arg(long, value_name = "ADDR")]
    server: Vec<SocketAddr>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or renew a MAP mapping.
    Map,
    /// Create or renew a PEER mapping.
    Peer,
    /// Send ANNOUNCE.
    Announce,
    /// Delete a mapping.
    Delete,
}

fn main() {
    let cli = Cli::parse();
    eprintln!(
        "pcpc: the client engine is not implemented yet (issue 3); nothing was sent for {:?}",
        cli.command
    );
    std::process::exit(2);
}
