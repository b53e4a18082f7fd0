//! Wiring of the daemon: LAN interfaces → SSDP responders and HTTP listeners, the GENA event
//! and delivery tasks, lease expiry, and clean shutdown (byebye). [`start`] runs it inside
//! the current tokio runtime so tests can drive a real daemon on loopback in-process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::actions::{Igd, LinkInfo};
use crate::cli::{Cli, Nat, Upstream};
use crate::config::FileConfig;
use crate::description::{self, DeviceIdentity, ROOT_DESC_PATH, VersionPolicy};
use crate::gena::Subscriptions;
use crate::http::IgdServer;
use crate::mapping::{MemoryBackend, PortMappingBackend};
use crate::metrics::Metrics;
use crate::policy::{Ipv4Prefix, Policy};
use crate::ssdp_engine::{EngineConfig, SsdpEngine, next_boot_id};
use crate::ssdp_reply::{MessageContext, server_string};
use crate::{gena_delivery, http, ssdp_socket};

/// How often leases are expired and evented state compared when nothing else happens.
pub const EVENT_TICK: Duration = Duration::from_secs(1);

/// A LAN interface served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanInterface {
    /// Interface name (`lan0`, `lo`).
    pub name: String,
    /// Its IPv4 address (LOCATION host, HTTP and SSDP bind address).
    pub addr: Ipv4Addr,
    /// Prefix length of its subnet (the LAN prefix served).
    pub prefix_len: u8,
}

/// Where the IGD's mappings go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPlan {
    /// Local table only (`--upstream none`).
    None,
    /// RFC 6970 interworking: PCP MAP to `server` from the WAN side, with NAT1 or not.
    Pcp {
        /// The PCP server.
        server: SocketAddr,
        /// The WAN interface and its address.
        wan: crate::nat1::WanSide,
        /// The local NAT backend.
        nat: crate::cli::Nat,
    },
}

/// Everything the daemon needs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// LAN interfaces.
    pub lan: Vec<LanInterface>,
    /// HTTP port (0: ephemeral).
    pub http_port: u16,
    /// SSDP port (1900; 0: ephemeral unicast only).
    pub ssdp_port: u16,
    /// Join the SSDP group.
    pub multicast: bool,
    /// Send NOTIFY alive/byebye.
    pub announce: bool,
    /// Device identity.
    pub identity: DeviceIdentity,
    /// Version policy.
    pub version_policy: VersionPolicy,
    /// Policy (LAN prefixes are added from `lan`).
    pub policy: Policy,
    /// External address reported by the in-memory backend.
    pub external_address: Option<Ipv4Addr>,
    /// Table size of the in-memory backend.
    pub max_mappings: usize,
    /// Re-announce period.
    pub notify_interval: Duration,
    /// BOOTID.UPNP.ORG.
    pub boot_id: u32,
    /// WAN link facts.
    pub link: LinkInfo,
    /// Re-serve and re-announce with a new BOOTID when a LAN address changes.
    pub watch_addresses: bool,
    /// Where BOOTID, the UUID and the mappings are persisted.
    pub state_dir: Option<std::path::PathBuf>,
    /// Upstream.
    pub upstream: UpstreamPlan,
}

impl DaemonConfig {
    /// A loopback configuration for tests: `lo` 127.0.0.1/8, ephemeral ports, no multicast,
    /// no announcements.
    pub fn loopback() -> DaemonConfig {
        DaemonConfig {
            lan: vec![LanInterface {
                name: "lo".into(),
                addr: Ipv4Addr::LOCALHOST,
                prefix_len: 8,
            }],
            http_port: 0,
            ssdp_port: 0,
            multicast: false,
            announce: false,
            identity: DeviceIdentity::new(DeviceIdentity::random_uuid()),
            version_policy: VersionPolicy::Auto,
            policy: Policy::default(),
            external_address: Some(Ipv4Addr::new(198, 51, 100, 1)),
            max_mappings: 1024,
            notify_interval: Duration::from_secs(900),
            boot_id: 1,
            link: LinkInfo {
                wan_interface: None,
                upstream_bps: 1_000_000_000,
                downstream_bps: 1_000_000_000,
                statistics_root: None,
            },
            watch_addresses: false,
            state_dir: None,
            upstream: UpstreamPlan::None,
        }
    }
}

/// Finds the IPv4 address and prefix of interface `name`.
pub fn interface_v4(name: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let all = if_addrs::get_if_addrs().context("listing interfaces")?;
    all.into_iter()
        .find_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) if i.name == name => Some((v4.ip, v4.prefixlen)),
            _ => None,
        })
        .with_context(|| {
            format!("interface {name} has no IPv4 address (is it up and addressed? `ip -4 addr show {name}`)")
        })
}

fn read_state(dir: Option<&Path>, file: &str) -> Option<String> {
    let p = dir?.join(file);
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn write_state(dir: Option<&Path>, file: &str, value: &str) -> anyhow::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, value).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(file)).with_context(|| format!("renaming {}", tmp.display()))
}

/// Builds the configuration from flags and the optional file (flags win). Persists the UUID
/// and BOOTID in `--state-dir` when given, so the UDN is stable and BOOTID grows.
pub fn config_from_cli(cli: &Cli) -> anyhow::Result<DaemonConfig> {
    let (cli, file) = merged(cli)?;
    config_from_merged(&cli, &file)
}

/// Reads `--config` (when given) and returns the flags with the file's values filled in where
/// no flag was given (flags override the file), and the file itself.
pub fn merged(cli: &Cli) -> anyhow::Result<(Cli, FileConfig)> {
    let file = match &cli.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut c = Cli {
        lan: cli.lan.clone(),
        wan: cli.wan.clone().or(file.wan.clone()),
        pcp_server: cli.pcp_server.or(file.pcp_server()),
        upstream: cli.upstream.or(file.upstream),
        nat: cli.nat.or(file.nat),
        third_party: cli.third_party || file.third_party.unwrap_or(false),
        dhcp_leases: cli.dhcp_leases.clone().or(file.dhcp_leases.clone()),
        state_dir: cli.state_dir.clone().or(file.state_dir.clone()),
        config: cli.config.clone(),
        log_level: cli.log_level.clone(),
        http_port: cli.http_port.or(file.http_port),
        ssdp_port: cli.ssdp_port.or(file.ssdp_port),
        external_address: cli.external_address.or(file.external_address),
        igd_version: cli.igd_version.or(file.igd_version),
        secure_mode: cli.secure_mode.or(file.secure_mode),
        rule: file
            .rule_texts()
            .map(str::to_owned)
            .chain(cli.rule.iter().cloned())
            .collect(),
        default_rules: cli.default_rules.or(file.default_rules),
        quota: cli.quota.or(file.max_mappings_per_client),
        uuid: cli.uuid.clone().or(file.uuid.clone()),
        no_announce: cli.no_announce || file.announce == Some(false),
        ctl: cli.ctl.clone().or(file.ctl.clone()),
        ctl_group: cli.ctl_group.clone().or(file.ctl_group.clone()),
    };
    if c.lan.is_empty() {
        c.lan = file.lan.clone();
    }
    Ok((c, file))
}

/// The permission policy of merged flags (the part SIGHUP can change live).
pub fn policy_from_merged(cli: &Cli, file: &FileConfig) -> anyhow::Result<Policy> {
    let mut rules = Vec::new();
    for r in &cli.rule {
        rules.push(
            r.parse()
                .with_context(|| format!("permission rule {r:?}"))?,
        );
    }
    let mut extra = Vec::new();
    for p in &file.lan_prefixes {
        extra.push(
            p.get_ref()
                .parse::<Ipv4Prefix>()
                .with_context(|| format!("LAN prefix {:?}", p.get_ref()))?,
        );
    }
    let quota = cli.quota.unwrap_or(128);
    Ok(Policy {
        lan: extra,
        secure_mode: cli.secure_mode.unwrap_or(true),
        rules,
        builtin_rules: cli.default_rules.unwrap_or(true),
        max_per_client: (quota > 0).then_some(quota),
    })
}

/// [`config_from_cli`] for flags already [`merged`] with the file.
pub fn config_from_merged(cli: &Cli, file: &FileConfig) -> anyhow::Result<DaemonConfig> {
    if cli.lan.is_empty() {
        bail!(
            "no LAN interface: give --lan IFACE (or lan = [\"IFACE\"] in the config file), e.g. --lan br-lan"
        );
    }
    let mut lan = Vec::new();
    for name in &cli.lan {
        let (addr, prefix_len) = interface_v4(name)?;
        lan.push(LanInterface {
            name: name.clone(),
            addr,
            prefix_len,
        });
    }
    let state = cli.state_dir.as_deref();
    let uuid = cli
        .uuid
        .clone()
        .or(file.uuid.clone())
        .or_else(|| read_state(state, "igd-uuid"))
        .unwrap_or_else(DeviceIdentity::random_uuid);
    write_state(state, "igd-uuid", &uuid)?;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let boot_id = next_boot_id(
        unix,
        read_state(state, "igd-bootid").and_then(|s| s.parse().ok()),
    );
    write_state(state, "igd-bootid", &boot_id.to_string())?;
    let mut identity = DeviceIdentity::new(uuid);
    if let Some(n) = &file.friendly_name {
        identity.friendly_name = n.clone();
    }
    let policy = policy_from_merged(cli, file)?;
    let external_address = match cli.external_address.or(file.external_address) {
        Some(a) => Some(a),
        None => match &cli.wan {
            Some(w) => interface_v4(w).ok().map(|(a, _)| a),
            None => None,
        },
    };
    let upstream = match cli.upstream.unwrap_or(Upstream::Pcp) {
        Upstream::None => UpstreamPlan::None,
        Upstream::Pcp => {
            let Some(wan) = &cli.wan else {
                bail!("--upstream pcp needs --wan IFACE (the interface towards the CGN)");
            };
            let (address, _) = interface_v4(wan)
                .with_context(|| format!("--wan {wan}: the PCP client needs its IPv4 address"))?;
            let server = match cli.pcp_server {
                Some(s) => s,
                None => default_gateway_of(wan).with_context(|| {
                    format!("no --pcp-server given and no default gateway on {wan} (name the CGN with --pcp-server ADDR:PORT)")
                })?,
            };
            UpstreamPlan::Pcp {
                server,
                wan: crate::nat1::WanSide {
                    iface: wan.clone(),
                    address,
                },
                nat: cli.nat.unwrap_or(Nat::Nftables),
            }
        }
    };
    Ok(DaemonConfig {
        upstream,
        lan,
        http_port: cli.http_port.or(file.http_port).unwrap_or(5000),
        ssdp_port: cli.ssdp_port.or(file.ssdp_port).unwrap_or(1900),
        multicast: true,
        announce: !cli.no_announce,
        identity,
        version_policy: cli.igd_version.or(file.igd_version).unwrap_or_default(),
        policy,
        external_address,
        max_mappings: file.max_mappings.unwrap_or(1024),
        notify_interval: Duration::from_secs(file.notify_interval.unwrap_or(900).max(30)),
        boot_id,
        link: LinkInfo {
            wan_interface: cli.wan.clone(),
            upstream_bps: file.upstream_bps.unwrap_or(1_000_000_000),
            downstream_bps: file.downstream_bps.unwrap_or(1_000_000_000),
            statistics_root: None,
        },
        watch_addresses: true,
        state_dir: cli.state_dir.clone(),
    })
}

/// The PCP server by default: the default gateway of `wan` on port 5351 (RFC 6887 §8.1).
pub fn default_gateway_of(wan: &str) -> anyhow::Result<SocketAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
    pcp_client::client::parse_ipv4_default_routes(&routes)
        .into_iter()
        .find(|(_, iface)| iface == wan)
        .map(|(ip, _)| SocketAddr::from((ip, pcp_client::wire::SERVER_PORT)))
        .with_context(|| format!("no default route via {wan}"))
}

/// How often the LAN interfaces' addresses are checked for a change.
pub const ADDRESS_POLL: Duration = Duration::from_secs(2);

/// The SSDP responder and HTTP listener of one LAN interface at one address.
#[derive(Debug)]
struct LanUnit {
    iface: LanInterface,
    shutdown: watch::Sender<bool>,
    ssdp_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
    http_addr: SocketAddr,
    ssdp_addr: SocketAddr,
}

impl LanUnit {
    /// Stops it: byebye with the old LOCATION, listener closed.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ssdp_task).await;
        self.http_task.abort();
    }
}

/// Shared pieces needed to (re)start a [`LanUnit`].
#[derive(Debug, Clone)]
struct UnitParams {
    http_port: u16,
    ssdp_port: u16,
    multicast: bool,
    announce: bool,
    identity: DeviceIdentity,
    version: crate::description::IgdVersion,
    notify_interval: Duration,
    lan: Vec<Ipv4Prefix>,
}

async fn start_unit<B: PortMappingBackend>(
    p: &UnitParams,
    l: &LanInterface,
    server: &Arc<IgdServer<B>>,
    boot_id: u32,
    revoke_first: bool,
) -> anyhow::Result<LanUnit> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let listener = TcpListener::bind((l.addr, p.http_port))
        .await
        .with_context(|| format!("binding HTTP on {}:{}", l.addr, p.http_port))?;
    let http_addr = listener.local_addr()?;
    let sockets = ssdp_socket::open(&l.name, l.addr, p.ssdp_port, p.multicast)
        .with_context(|| format!("opening SSDP sockets on {}", l.name))?;
    let ssdp_addr = sockets.unicast.local_addr()?;
    let engine = SsdpEngine::new(
        EngineConfig {
            identity: p.identity.clone(),
            version: p.version,
            context: MessageContext {
                location: format!("http://{http_addr}{ROOT_DESC_PATH}"),
                server: server_string(),
                boot_id,
                config_id: server.config_id,
                max_age: (p.notify_interval.as_secs() * 2).max(1800) as u32,
                port: if p.ssdp_port == 0 { 1900 } else { p.ssdp_port },
            },
            lan: p.lan.clone(),
            notify_interval: p.notify_interval,
            revoke_first,
        },
        rand::random(),
    );
    tracing::info!(iface = %l.name, http = %http_addr, ssdp = %ssdp_addr, group = sockets.group.is_some(), boot_id, "serving UPnP IGD");
    let http_task = tokio::spawn(http::serve(listener, server.clone(), shutdown_rx.clone()));
    let ssdp_task = tokio::spawn(ssdp_socket::run(engine, sockets, p.announce, shutdown_rx));
    Ok(LanUnit {
        iface: l.clone(),
        shutdown,
        ssdp_task,
        http_task,
        http_addr,
        ssdp_addr,
    })
}

/// Watches the LAN interfaces; when one's IPv4 address changes, revokes the old
/// announcements (byebye), bumps BOOTID (persisted) and serves and announces again at the
/// new address (upnp-igd.md §1.8).
async fn watch_addresses<B: PortMappingBackend>(
    p: UnitParams,
    units: Arc<tokio::sync::Mutex<Vec<LanUnit>>>,
    server: Arc<IgdServer<B>>,
    mut boot_id: u32,
    state_dir: Option<std::path::PathBuf>,
) {
    loop {
        tokio::time::sleep(ADDRESS_POLL).await;
        let mut guard = units.lock().await;
        let mut i = 0;
        while i < guard.len() {
            let name = guard[i].iface.name.clone();
            let now_addr = match interface_v4(&name) {
                Ok((a, len)) if a != guard[i].iface.addr => Some((a, len)),
                _ => None,
            };
            if let Some((addr, prefix_len)) = now_addr {
                let old = guard.remove(i);
                tracing::info!(iface = %name, old = %old.iface.addr, new = %addr, "LAN address changed: byebye, new BOOTID, re-announce");
                old.stop().await;
                boot_id = boot_id.wrapping_add(1) & 0x7fff_ffff;
                if let Err(e) =
                    write_state(state_dir.as_deref(), "igd-bootid", &boot_id.to_string())
                {
                    tracing::warn!(error = %e, "cannot persist BOOTID");
                }
                let l = LanInterface {
                    name: name.clone(),
                    addr,
                    prefix_len,
                };
                match start_unit(&p, &l, &server, boot_id, true).await {
                    Ok(u) => guard.insert(i, u),
                    Err(e) => {
                        tracing::warn!(iface = %name, error = %e, "cannot serve at the new address");
                        continue;
                    }
                }
            }
            i += 1;
        }
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon<B> {
    /// Shared state (backend, subscriptions, metrics).
    pub server: Arc<IgdServer<B>>,
    /// HTTP listen addresses at start, one per LAN interface.
    pub http_addrs: Vec<SocketAddr>,
    /// SSDP unicast addresses at start, one per LAN interface.
    pub ssdp_addrs: Vec<SocketAddr>,
    units: Arc<tokio::sync::Mutex<Vec<LanUnit>>>,
    shutdown: watch::Sender<bool>,
    other_tasks: Vec<JoinHandle<()>>,
}

impl<B: PortMappingBackend> Daemon<B> {
    /// LOCATION URL of the first interface.
    pub fn location(&self) -> String {
        self.http_addrs
            .first()
            .map(|a| format!("http://{a}{ROOT_DESC_PATH}"))
            .unwrap_or_default()
    }

    /// Stops serving, sends the byebye set and waits (≤ 2 s per interface) for it to leave.
    pub async fn stop(self) {
        for t in &self.other_tasks {
            t.abort();
        }
        let _ = self.shutdown.send(true);
        let units = std::mem::take(&mut *self.units.lock().await);
        for u in units {
            u.stop().await;
        }
        self.server.logs.flush_all(Instant::now());
    }
}

/// Starts the daemon with the in-memory backend (`--upstream none`).
pub async fn start(cfg: DaemonConfig) -> anyhow::Result<Daemon<MemoryBackend>> {
    let backend = Arc::new(MemoryBackend::new(
        Instant::now(),
        cfg.external_address,
        Some(cfg.max_mappings),
    ));
    start_with(cfg, backend).await
}

/// Starts the daemon with any backend.
pub async fn start_with<B: PortMappingBackend>(
    cfg: DaemonConfig,
    backend: Arc<B>,
) -> anyhow::Result<Daemon<B>> {
    let mut policy = cfg.policy.clone();
    for l in &cfg.lan {
        policy.lan.push(Ipv4Prefix::new(l.addr, l.prefix_len));
    }
    let (notify_tx, notify_rx) = mpsc::channel(1024);
    let server = Arc::new(IgdServer {
        igd: Igd {
            backend,
            policy: policy.clone().into(),
            identity: cfg.identity.clone(),
            link: cfg.link.clone(),
        },
        version_policy: cfg.version_policy,
        config_id: description::config_id(&cfg.identity),
        subs: Mutex::new(Subscriptions::new()),
        notify_tx,
        changed: tokio::sync::Notify::new(),
        metrics: Metrics::default(),
        logs: Default::default(),
    });
    let params = UnitParams {
        http_port: cfg.http_port,
        ssdp_port: cfg.ssdp_port,
        multicast: cfg.multicast,
        announce: cfg.announce,
        identity: cfg.identity.clone(),
        version: cfg.version_policy.highest(),
        notify_interval: cfg.notify_interval,
        lan: policy.lan.clone(),
    };
    let mut units = Vec::new();
    for l in &cfg.lan {
        units.push(start_unit(&params, l, &server, cfg.boot_id, false).await?);
    }
    let http_addrs = units.iter().map(|u| u.http_addr).collect();
    let ssdp_addrs = units.iter().map(|u| u.ssdp_addr).collect();
    let units = Arc::new(tokio::sync::Mutex::new(units));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut other_tasks = Vec::new();
    other_tasks.push(tokio::spawn(gena_delivery::run(server.clone(), notify_rx)));
    if cfg.watch_addresses {
        other_tasks.push(tokio::spawn(watch_addresses(
            params,
            units.clone(),
            server.clone(),
            cfg.boot_id,
            cfg.state_dir.clone(),
        )));
    }
    let srv = server.clone();
    let mut stop = shutdown_rx;
    other_tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = srv.changed.notified() => {}
                _ = tokio::time::sleep(EVENT_TICK) => {}
                _ = stop.changed() => return,
            }
            srv.publish_changes(Instant::now());
            srv.logs.flush(Instant::now());
        }
    }));
    Ok(Daemon {
        server,
        http_addrs,
        ssdp_addrs,
        units,
        shutdown,
        other_tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    // Checklist: BOOTID increases on every restart; the UDN stays stable (persisted).
    #[test]
    fn uuid_is_persisted_and_boot_id_grows_across_restarts() {
        let dir = std::env::temp_dir().join(format!("upnp-iwf-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = [
            "upnp-iwf",
            "--lan",
            "lo",
            "--upstream",
            "none",
            "--state-dir",
        ];
        let cli = Cli::parse_from(
            args.iter()
                .copied()
                .chain([dir.to_str().unwrap_or("/tmp/x")]),
        );
        let first = config_from_cli(&cli).expect("config");
        let second = config_from_cli(&cli).expect("config");
        assert_eq!(first.identity.uuid, second.identity.uuid);
        assert!(second.boot_id > first.boot_id);
        assert_eq!(first.lan[0].addr, Ipv4Addr::LOCALHOST);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Defaults that do what they say: PCP upstream needs a WAN interface, and says so.
    #[test]
    fn pcp_upstream_without_wan_says_what_is_missing() {
        let cli = Cli::parse_from(["upnp-iwf", "--lan", "lo"]);
        let err = config_from_cli(&cli).expect_err("no --wan");
        assert!(err.to_string().contains("--wan"), "{err}");
    }

    // Issue #13 item 4: every flag has a key; a flag given overrides the file.
    #[test]
    fn flags_override_the_config_file_and_the_file_fills_the_rest() {
        let path = std::env::temp_dir().join(format!("upnp-iwf-cfg-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "lan = [\"lo\"]\nupstream = \"none\"\nhttp_port = 6000\nsecure_mode = false\n\
             rules = [\"allow 80 127.0.0.1/32 80\"]\ndefault_rules = false\nannounce = false\n",
        )
        .expect("write");
        let p = path.to_string_lossy().into_owned();
        let cli = Cli::parse_from([
            "upnp-iwf",
            "--config",
            &p,
            "--http-port",
            "7000",
            "--rule",
            "deny 1-2 0.0.0.0/0 1-2",
        ]);
        let cfg = config_from_cli(&cli).expect("config");
        let _ = std::fs::remove_file(&path);
        assert_eq!(cfg.http_port, 7000, "the flag wins");
        assert_eq!(cfg.lan[0].name, "lo", "lan from the file");
        assert_eq!(cfg.upstream, UpstreamPlan::None);
        assert!(!cfg.policy.secure_mode);
        assert!(!cfg.policy.builtin_rules);
        assert!(!cfg.announce);
        assert_eq!(cfg.policy.rules.len(), 2, "file rules, then --rule");
        assert_eq!(
            cfg.policy.rules[0].to_string(),
            "allow 80-80 127.0.0.1/32 80-80"
        );
    }

    #[test]
    fn pcp_upstream_with_an_explicit_server() {
        let cli = Cli::parse_from([
            "upnp-iwf",
            "--lan",
            "lo",
            "--wan",
            "lo",
            "--pcp-server",
            "127.0.0.1:5351",
        ]);
        let cfg = config_from_cli(&cli).expect("config");
        assert!(matches!(cfg.upstream, UpstreamPlan::Pcp { server, .. } if server.port() == 5351));
    }
}
