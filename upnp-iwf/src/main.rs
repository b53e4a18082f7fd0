use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, reload};
use upnp_iwf::cli::{Cli, Nat};
use upnp_iwf::config::FileConfig;
use upnp_iwf::daemon::UpstreamPlan;
use upnp_iwf::http::IgdServer;
use upnp_iwf::iwf::{self, Core, CoreConfig, NatMode};
use upnp_iwf::mapping::PortMappingBackend;
use upnp_iwf::nat1::{Nat1Backend, NftConfig, Nftables, NoNat};
use upnp_iwf::sd_notify::notify_or_log;

type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The log filter: `--log-level`, else `$RUST_LOG`, else the config's `log_level`, else info.
fn log_filter(cli: &Cli, file: &FileConfig) -> (String, &'static str) {
    if let Some(l) = &cli.log_level {
        return (l.clone(), "--log-level");
    }
    if let Ok(l) = std::env::var("RUST_LOG") {
        return (l, "RUST_LOG");
    }
    match file.log_level() {
        Some(l) => (l.to_owned(), "config"),
        None => ("info".to_owned(), "default"),
    }
}

/// Errors end the daemon with one line, `upnp-iwf: what failed: why`, and exit status 1.
fn main() -> std::process::ExitCode {
    let mut args = std::env::args();
    if std::env::args().nth(1).as_deref() == Some("ctl") {
        std::process::exit(upnp_iwf::ctl::main(args.by_ref().skip(2)));
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upnp-iwf: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let raw = Cli::parse();
    let (cli, file) = upnp_iwf::daemon::merged(&raw)?;
    let (level, _) = log_filter(&cli, &file);
    let filter = EnvFilter::try_new(&level)
        .with_context(|| format!("log filter {level:?} is not valid (try info or debug)"))?;
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .init();
    let cfg = upnp_iwf::daemon::config_from_merged(&cli, &file)?;
    let third_party = cli.third_party;
    let dhcp_leases = cli.dhcp_leases.clone();
    if third_party && cli.nat.unwrap_or(Nat::Nftables) != Nat::None {
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
        match cfg.upstream.clone() {
            UpstreamPlan::None => {
                let daemon = upnp_iwf::daemon::start(cfg).await?;
                let ctl = Control::start(&cli, &daemon.server);
                serve(&raw, &cli, &daemon.server, &handle).await?;
                ctl.stop();
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
                let ctl = Control::start(&cli, &daemon.server);
                serve(&raw, &cli, &daemon.server, &handle).await?;
                ctl.stop();
                tracing::info!("shutting down: ssdp:byebye, NAT1 table removed (PCP mappings kept in the state file)");
                daemon.stop().await;
                iwf.stop().await;
            }
        }
        Ok(())
    })
}

/// The control socket while the daemon runs (`upnp-iwf ctl`).
struct Control {
    task: Option<tokio::task::JoinHandle<()>>,
    /// The socket file and its inode, removed at exit if it is still ours.
    file: Option<(std::path::PathBuf, u64)>,
}

impl Control {
    /// Binds `--ctl` (default [`upnp_iwf::ctl::DEFAULT_PATH`], `none` = no socket). A control socket
    /// that cannot be made is logged and the daemon runs without it: it is the owner's tool,
    /// and mappings must not stop for it.
    fn start<B: PortMappingBackend>(cli: &Cli, server: &Arc<IgdServer<B>>) -> Control {
        use std::os::unix::fs::MetadataExt as _;
        let none = Control {
            task: None,
            file: None,
        };
        let path = cli
            .ctl
            .clone()
            .unwrap_or_else(|| upnp_iwf::ctl::DEFAULT_PATH.into());
        if path.as_os_str().is_empty() || path.as_os_str() == "none" {
            return none;
        }
        let group = match cli.ctl_group.as_deref().map(upnp_iwf::ctl::group_id) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(e)) => {
                tracing::error!(error = %e, "--ctl-group: control socket disabled");
                return none;
            }
        };
        match upnp_iwf::ctl::bind(&path, group) {
            Ok(listener) => {
                let ino = std::fs::metadata(&path).map_or(0, |m| m.ino());
                tracing::info!(path = %path.display(), "control socket (upnp-iwf ctl)");
                Control {
                    task: Some(tokio::spawn(upnp_iwf::ctl::serve(listener, server.clone()))),
                    file: Some((path, ino)),
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "control socket disabled (upnp-iwf ctl will not reach this daemon; set --ctl PATH)");
                none
            }
        }
    }

    fn stop(self) {
        use std::os::unix::fs::MetadataExt as _;
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some((path, ino)) = self.file {
            if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Tells systemd the daemon is ready, then waits for SIGTERM/SIGINT (returns) or SIGHUP
/// (reloads the config file and goes on).
async fn serve<B: PortMappingBackend>(
    raw: &Cli,
    started: &Cli,
    server: &IgdServer<B>,
    filter: &FilterHandle,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    notify_or_log("READY=1\nSTATUS=serving UPnP IGD");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                notify_or_log("RELOADING=1\nSTATUS=reloading the configuration");
                match reload(raw, started, server, filter) {
                    Ok(()) => notify_or_log("READY=1\nSTATUS=serving UPnP IGD (configuration reloaded)"),
                    Err(e) => {
                        tracing::error!("reload failed, the running configuration is kept: {e:#}");
                        notify_or_log("READY=1\nSTATUS=serving UPnP IGD (last reload failed: see the log)");
                    }
                }
            }
        }
    }
    notify_or_log("STOPPING=1\nSTATUS=stopping");
    Ok(())
}

/// SIGHUP: re-reads `--config` and applies what can change live (permission rules, built-in
/// rules, secure mode, log level); says which changed settings need a restart. Mappings are
/// untouched.
fn reload<B: PortMappingBackend>(
    raw: &Cli,
    started: &Cli,
    server: &IgdServer<B>,
    filter: &FilterHandle,
) -> anyhow::Result<()> {
    let (cli, file) = upnp_iwf::daemon::merged(raw)?;
    let mut policy = upnp_iwf::daemon::policy_from_merged(&cli, &file)?;
    let old = server.igd.policy.get();
    // LAN prefixes come from the interfaces at start; the quota is also the core's.
    policy.lan = old.lan.clone();
    policy.max_per_client = old.max_per_client;
    let (level, source) = log_filter(&cli, &file);
    let new_filter =
        EnvFilter::try_new(&level).with_context(|| format!("log filter {level:?} is not valid"))?;
    filter
        .reload(new_filter)
        .context("replacing the log filter")?;
    server.igd.policy.set(policy.clone());
    tracing::info!(
        rules = policy.rules.len(),
        default_rules = policy.builtin_rules,
        secure_mode = policy.secure_mode,
        log_level = %level,
        log_level_from = source,
        "configuration reloaded: permission rules, secure mode and log level applied; mappings kept"
    );
    let restart: Vec<&str> = [
        ("lan", cli.lan != started.lan),
        ("wan", cli.wan != started.wan),
        ("pcp_server", cli.pcp_server != started.pcp_server),
        ("upstream", cli.upstream != started.upstream),
        ("nat", cli.nat != started.nat),
        ("third_party", cli.third_party != started.third_party),
        ("dhcp_leases", cli.dhcp_leases != started.dhcp_leases),
        ("state_dir", cli.state_dir != started.state_dir),
        ("http_port", cli.http_port != started.http_port),
        ("ssdp_port", cli.ssdp_port != started.ssdp_port),
        (
            "external_address",
            cli.external_address != started.external_address,
        ),
        ("igd_version", cli.igd_version != started.igd_version),
        ("max_mappings_per_client", cli.quota != started.quota),
        ("uuid", cli.uuid != started.uuid),
        ("announce", cli.no_announce != started.no_announce),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "changed settings take effect at the next restart only (not applied by SIGHUP)"
        );
    }
    Ok(())
}
