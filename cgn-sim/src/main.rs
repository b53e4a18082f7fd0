use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, bail};
use cgn_sim::cli::{Cli, Command, Dataplane};
use cgn_sim::config::EngineConfig;
use cgn_sim::daemon::{self, DaemonConfig};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Ctl { action }) = &cli.command {
        let answer = cgn_sim::ctl::call(&cli.ctl, action.request())
            .with_context(|| format!("talking to the daemon on {}", cli.ctl.display()))?;
        print!("{answer}");
        return Ok(());
    }
    init_logs();
    let engine = engine_config(&cli)?;
    let inside = match (cli.inside, cli.dataplane) {
        (Some(a), _) => a,
        (None, Dataplane::None) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (None, Dataplane::Tun) => bail!("--inside ADDR is required with the TUN dataplane"),
    };
    let dataplane = cli.dataplane_options(inside).map_err(anyhow::Error::msg)?;
    let config = DaemonConfig {
        engine,
        inside,
        port: cli.port,
        outside: cli.outside,
        ctl: cli.ctl.clone(),
        metrics: cli.metrics,
        dataplane,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(daemon::run(config))
}

fn engine_config(cli: &Cli) -> anyhow::Result<EngineConfig> {
    let mut c = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<EngineConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => EngineConfig::default(),
    };
    if !cli.pool.is_empty() {
        c.set_pool_ranges(&cli.pool);
    }
    if !cli.subscribers.is_empty() {
        c.subscribers = cli.subscribers.clone();
    }
    if !cli.third_party.is_empty() {
        c.third_party_hosts = cli.third_party.clone();
    }
    if let Some(v) = cli.quota {
        c.quota_per_subscriber = v;
    }
    if let Some(v) = cli.min_lifetime {
        c.min_lifetime = v;
    }
    if let Some(v) = cli.max_lifetime {
        c.max_lifetime = v;
    }
    if let Some(v) = cli.port_hold {
        c.port_hold_secs = v;
    }
    if let Some(v) = cli.announce_count {
        c.announce_count = v;
    }
    if let Some(v) = cli.rate_limit {
        c.creation_rate = v;
    }
    if cli.announce_multicast {
        c.announce_multicast = true;
    }
    if let Some(size) = cli.port_block_size {
        c.port_blocks = Some(cgn_sim::config::PortBlocks {
            size,
            mode: match cli.port_block_mode {
                cgn_sim::cli::BlockModeArg::Dynamic => cgn_sim::config::BlockMode::Dynamic,
                cgn_sim::cli::BlockModeArg::Deterministic => {
                    cgn_sim::config::BlockMode::Deterministic
                }
            },
        });
    }
    if let Some(r) = &cli.port_range {
        let (a, b) = r.split_once('-').context("--port-range is FIRST-LAST")?;
        c.port_min = a.trim().parse().context("--port-range first port")?;
        c.port_max = b.trim().parse().context("--port-range last port")?;
    }
    if c.pools.is_empty() {
        bail!("no NAT pool: give --pool PREFIX (or pools in --config)");
    }
    c.validate()?;
    Ok(c)
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}
