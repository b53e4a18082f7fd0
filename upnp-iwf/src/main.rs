use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use upnp_iwf::cli::Nat;
use upnp_iwf::daemon::UpstreamPlan;
use upnp_iwf::iwf::{self, Core, CoreConfig, NatMode};
use upnp_iwf::nat1::{Nat1Backend, NftConfig, Nftables, NoNat};

fn main() -> anyhow::Result<()> {
    let cli = upnp_iwf::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cfg = upnp_iwf::daemon::config_from_cli(&cli)?;
    let third_party = cli.third_party;
    let dhcp_leases = cli.dhcp_leases.clone();
    if third_party && cli.nat != Nat::None {
        anyhow::bail!(
            "--third-party is for --nat none (with NAT1 the router itself is the PCP client of every mapping)"
        );
    }
    // One thread for all the I/O (a home router's daemon: every request is small, and one
    // thread means one malloc arena), plus at most two for the blocking work (nft, conntrack,
    // state-file writes). See BENCHMARKS.md, "UPnP → PCP interworking", for the memory figures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        match cfg.upstream.clone() {
            UpstreamPlan::None => {
                let daemon = upnp_iwf::daemon::start(cfg).await?;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutting down: sending ssdp:byebye");
                daemon.stop().await;
            }
            UpstreamPlan::Pcp { server, wan, nat } => {
                let nat1: Box<dyn Nat1Backend> = match nat {
                    Nat::Nftables => {
                        let nft = Nftables::new(NftConfig::default());
                        match nft.probe() {
                            Ok(v) => tracing::info!(version = %v, "NAT1 on nftables"),
                            Err(e) => tracing::error!(
                                error = %e,
                                "--nat nftables: nft cannot be run; mappings will fail with 501 until it can (install nftables, or use --nat none on a CPE without NAT)"
                            ),
                        }
                        Box::new(nft)
                    }
                    Nat::None => Box::new(NoNat),
                };
                let mut core_cfg = CoreConfig::new(server, wan.address);
                core_cfg.nat = match nat {
                    Nat::Nftables => NatMode::Nat1,
                    Nat::None => NatMode::None { third_party },
                };
                core_cfg.max_per_client = cfg.policy.max_per_client;
                core_cfg.max_mappings = cfg.max_mappings;
                let core = Core::new(core_cfg, Instant::now(), SystemTime::now());
                tracing::info!(pcp_server = %server, wan = %wan.iface, address = %wan.address, "RFC 6970 interworking: UPnP mappings become PCP MAPs");
                let iwf = iwf::driver::start(
                    core,
                    iwf::driver::DriverConfig {
                        wan,
                        state_dir: cfg.state_dir.clone(),
                        nat1,
                        announce_listener: true,
                        dhcp_leases: dhcp_leases.clone(),
                    },
                )
                .await
                .context("starting the interworking function")?;
                let daemon = upnp_iwf::daemon::start_with(cfg, iwf.backend.clone()).await?;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutting down: ssdp:byebye, NAT1 table removed (PCP mappings kept in the state file)");
                daemon.stop().await;
                iwf.stop().await;
            }
        }
        Ok(())
    })
}
