use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = upnp_iwf::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cfg = upnp_iwf::daemon::config_from_cli(&cli)?;
    if cli.nat == upnp_iwf::cli::Nat::Nftables {
        tracing::warn!(
            "--nat nftables: the local NAT backend is not implemented yet; no rules are installed"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let daemon = upnp_iwf::daemon::start(cfg).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: sending ssdp:byebye");
        daemon.stop().await;
        Ok(())
    })
}
