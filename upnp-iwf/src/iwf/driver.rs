//! The thin tokio driver of the interworking [`Core`]: one UDP socket connected to the PCP
//! server (its local address is the PCP Client IP), the ANNOUNCE listener on the WAN only,
//! the NAT1 backend on a blocking thread, the state file, and [`PcpBackend`], which the SOAP
//! layer uses as its [`PortMappingBackend`].
//!
//! The core sits behind a `std::sync::Mutex` that is never held across an `.await`: SOAP
//! handlers read the table under it and hand requests to it; the driver task runs every
//! output (datagrams, NAT1 changes, state writes, replies) and the timers.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, oneshot, watch};

use super::core::{Core, IwfEvent, Nat1Command, Output, Request};
use crate::dhcp::LeaseTracker;
use crate::mapping::{
    AddRequest, MappingError, MappingKey, PortMapping, PortMappingBackend, WanStatus,
};
use crate::nat1::{Nat1Backend, Nat1Error, WanSide};
use crate::state::{StateDir, StoredMapping, split_expired};

/// How long after start the driver waits for the PCP server's first answer before it says
/// plainly that there is none.
pub const SERVER_CHECK: Duration = Duration::from_secs(10);

type Replies = HashMap<u64, oneshot::Sender<Result<PortMapping, MappingError>>>;

/// What the driver and the SOAP handlers share.
#[derive(Debug)]
pub struct Shared {
    core: Mutex<Core>,
    replies: Mutex<Replies>,
    external_replies: Mutex<HashMap<u64, oneshot::Sender<Option<Ipv4Addr>>>>,
    wake: Notify,
    next_request: AtomicU64,
    started: Instant,
    /// Human-readable health: PCP server reachable, NAT1 backend state (status page).
    health: Mutex<Health>,
}

/// Health of the upstream parts, for logs and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The last NAT1 error, if the backend is failing.
    pub nat1_error: Option<String>,
    /// The last state-file error.
    pub state_error: Option<String>,
    /// Recent events, newest last (at most 32).
    pub recent: std::collections::VecDeque<crate::status::EventLine>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The core, locked (never hold it across an await).
    pub fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// Health snapshot.
    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    fn note(&self, line: String) {
        let mut h = lock(&self.health);
        if h.recent.len() == 32 {
            h.recent.pop_front();
        }
        let at_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        h.recent.push_back(crate::status::EventLine {
            at_unix,
            text: line,
        });
    }
}

/// The IGD's backend with `--upstream pcp`.
#[derive(Debug, Clone)]
pub struct PcpBackend {
    shared: Arc<Shared>,
}

impl PcpBackend {
    /// The shared state (status page, tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    async fn ask(&self, now: Instant, req: Request) -> Result<PortMapping, MappingError> {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.replies).insert(id, tx);
        self.shared.core().handle_request(now, id, req);
        self.shared.wake.notify_one();
        rx.await.unwrap_or_else(|_| {
            Err(MappingError::Upstream(
                "the interworking task stopped".into(),
            ))
        })
    }
}

impl PortMappingBackend for PcpBackend {
    fn wan_status(&self, now: Instant) -> WanStatus {
        let core = self.shared.core();
        WanStatus {
            external_address: core.external_address(),
            connected: core.server_epoch().is_some(),
            uptime: now.saturating_duration_since(self.shared.started),
        }
    }

    fn external_address_for(&self, _now: Instant, cp: Ipv4Addr) -> Option<Ipv4Addr> {
        self.shared.core().external_address_for(cp)
    }

    fn status(&self, now: Instant) -> crate::status::Status {
        use crate::status::{Health as H, MappingStatus, SCHEMA, Status};
        let core = self.shared.core();
        let health = self.shared.health();
        let nat1 = match core.config().nat {
            super::NatMode::Nat1 => "nftables",
            super::NatMode::None { .. } => "none",
        };
        let secs = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(now).as_secs());
        Status {
            schema: SCHEMA,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: now.saturating_duration_since(self.shared.started).as_secs(),
            health: H {
                upstream: "pcp".into(),
                pcp_server: Some(core.config().server.to_string()),
                pcp_answering: core.server_epoch().is_some(),
                pcp_epoch: core.server_epoch(),
                external_address: core.external_address(),
                nat1_backend: nat1.into(),
                nat1_state: health.nat1_error.clone().unwrap_or_else(|| "ok".into()),
                state_file_error: health.state_error.clone(),
            },
            mappings: core
                .entries()
                .map(|e| MappingStatus {
                    protocol: e.mapping.key.protocol.as_str().to_owned(),
                    external_port: e.mapping.key.external_port,
                    remote_host: e.mapping.key.remote_host,
                    lan_host: e.mapping.internal_client,
                    internal_port: e.mapping.internal_port,
                    description: e.mapping.description.clone(),
                    nat1_port: (nat1 == "nftables").then_some(e.nat1_port),
                    external: e.external,
                    phase: e.phase.as_str().to_owned(),
                    lease_left_s: match e.mapping.lease {
                        crate::mapping::Lease::Permanent => None,
                        crate::mapping::Lease::Until(t) => secs(Some(t)),
                    },
                    pcp_lifetime_left_s: secs(e.pcp_expires),
                    last_pcp_result: e.last_result.map(|r| r.to_string()),
                    restores: e.restores,
                })
                .collect(),
            events: health.recent.iter().rev().cloned().collect(),
        }
    }

    fn renew_all(&self, now: Instant) -> usize {
        let n = self.shared.core().renew_all(now);
        self.shared.wake.notify_one();
        self.shared
            .note(format!("operator: renew-all ({n} mappings)"));
        n
    }

    fn upstream_metrics(&self, _now: Instant) -> String {
        use std::fmt::Write as _;
        let core = self.shared.core();
        let c = core.stats();
        let p = core.pcp_stats();
        let mut s = String::new();
        let counters: [(&str, u64); 11] = [
            ("upnp_iwf_pcp_transmissions", p.transmissions),
            ("upnp_iwf_pcp_retransmissions", p.retransmissions),
            ("upnp_iwf_pcp_renewals", p.renewals),
            ("upnp_iwf_pcp_responses", p.responses),
            ("upnp_iwf_pcp_epoch_resets", p.epoch_resets),
            ("upnp_iwf_restores", c.restores),
            ("upnp_iwf_mappings_created", c.created),
            ("upnp_iwf_mappings_removed", c.removed),
            ("upnp_iwf_nat1_changes", c.nat1_changes),
            ("upnp_iwf_nat1_failures", c.nat1_failures),
            ("upnp_iwf_pcp_errors", c.pcp_errors),
        ];
        for (name, v) in counters {
            let _ = writeln!(s, "# TYPE {name} counter\n{name}_total {v}");
        }
        let _ = writeln!(s, "# TYPE upnp_iwf_pcp_results counter");
        for (result, v) in core.pcp_results() {
            let _ = writeln!(s, "upnp_iwf_pcp_results_total{{result=\"{result}\"}} {v}");
        }
        let _ = writeln!(s, "# TYPE upnp_iwf_live_mappings gauge");
        let mut phases: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for e in core.entries() {
            *phases.entry(e.phase.as_str()).or_default() += 1;
        }
        for (phase, v) in phases {
            let _ = writeln!(s, "upnp_iwf_live_mappings{{phase=\"{phase}\"}} {v}");
        }
        let up = u8::from(core.server_epoch().is_some());
        let _ = writeln!(
            s,
            "# TYPE upnp_iwf_pcp_server_answering gauge\nupnp_iwf_pcp_server_answering {up}"
        );
        s
    }

    fn add(
        &self,
        now: Instant,
        request: AddRequest,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send {
        self.ask(now, Request::Add(request))
    }

    fn delete(
        &self,
        now: Instant,
        key: MappingKey,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send {
        self.ask(now, Request::Delete(key))
    }

    fn get(&self, now: Instant, key: &MappingKey) -> Option<PortMapping> {
        self.shared.core().get(now, key)
    }

    fn probe_specific(
        &self,
        now: Instant,
        key: MappingKey,
    ) -> impl Future<Output = MappingError> + Send {
        let this = self.clone();
        async move {
            match this.ask(now, Request::ProbeSpecific(key)).await {
                Ok(_) => MappingError::NotFound,
                Err(e) => e,
            }
        }
    }

    fn probe_external(&self, now: Instant) -> impl Future<Output = Option<Ipv4Addr>> + Send {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.external_replies).insert(id, tx);
        self.shared
            .core()
            .handle_request(now, id, Request::ProbeExternal);
        self.shared.wake.notify_one();
        async move { rx.await.ok().flatten() }
    }

    fn list(&self, now: Instant) -> Vec<PortMapping> {
        self.shared.core().mappings(now)
    }

    fn count(&self, now: Instant) -> usize {
        self.shared.core().count(now)
    }

    fn expire(&self, _now: Instant) -> Vec<PortMapping> {
        // Lease ends are timers of the core (it deletes upstream first).
        Vec::new()
    }

    fn update_id(&self) -> u32 {
        self.shared.core().update_id()
    }
}

/// What the driver needs besides the core.
pub struct DriverConfig {
    /// The WAN side (interface for the ANNOUNCE listener and NAT1, address).
    pub wan: WanSide,
    /// Durable state, if any.
    pub state_dir: Option<PathBuf>,
    /// The NAT1 backend.
    pub nat1: Box<dyn Nat1Backend>,
    /// Bind the ANNOUNCE listener to the WAN interface (needs root or CAP_NET_RAW).
    pub announce_listener: bool,
    /// The co-located DHCP server's lease file (dnsmasq format), if the mappings are to
    /// follow its leases (RFC 6970 §5.10).
    pub dhcp_leases: Option<PathBuf>,
}

impl std::fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverConfig")
            .field("wan", &self.wan)
            .field("state_dir", &self.state_dir)
            .field("announce_listener", &self.announce_listener)
            .field("dhcp_leases", &self.dhcp_leases)
            .finish_non_exhaustive()
    }
}

/// A running interworking function.
#[derive(Debug)]
pub struct Iwf {
    /// The backend to give the IGD.
    pub backend: Arc<PcpBackend>,
    task: tokio::task::JoinHandle<()>,
    /// The state-file writer (ends when the driver does, after its last write).
    writer: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<Notify>,
    nat1: Arc<Mutex<Box<dyn Nat1Backend>>>,
}

impl std::fmt::Debug for dyn Nat1Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nat1Backend")
    }
}

impl Iwf {
    /// Stops the driver and removes the NAT1 table (a clean exit). The PCP mappings are left
    /// to lapse at the CGN, and the state file keeps them, so a restart renews them with
    /// their nonces.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        // The driver is gone, and with it the sender: the writer writes what is pending and ends.
        if let Some(writer) = self.writer {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        let nat1 = self.nat1.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&nat1).shutdown()).await;
    }
}

/// Starts the interworking function: loads the state file (a corrupt one is moved aside and
/// reported), rebuilds the NAT1 table with exactly the stored mappings (stale rules from a
/// crash cleared), opens the PCP socket and the ANNOUNCE listener, and renews the stored
/// mappings with their nonces.
pub async fn start(core: Core, config: DriverConfig) -> anyhow::Result<Iwf> {
    use anyhow::Context as _;
    let server = core.config().server;
    let now = Instant::now();
    let mut stored: Vec<StoredMapping> = Vec::new();
    let mut state_error = None;
    let state = config.state_dir.clone().map(StateDir::new);
    if let Some(dir) = &state {
        match dir.load() {
            Ok(loaded) => {
                if let Some((path, err)) = &loaded.discarded {
                    tracing::error!(moved_to = %path.display(), error = %err, "state file unreadable: moved aside, starting with no mappings");
                    state_error = Some(format!("{err} (moved to {})", path.display()));
                }
                let (kept, dropped) = split_expired(loaded.mappings, SystemTime::now());
                if !dropped.is_empty() {
                    tracing::info!(
                        count = dropped.len(),
                        "stored mappings expired while down: dropped"
                    );
                }
                stored = kept;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state directory; starting empty");
                state_error = Some(e.to_string());
            }
        }
    }
    let nat1 = Arc::new(Mutex::new(config.nat1));
    let rules: Vec<_> = stored
        .iter()
        .filter(|s| s.nat1_port != 0)
        .map(|s| crate::nat1::Nat1Rule {
            protocol: s.protocol,
            wan_port: s.nat1_port,
            client: s.internal_client,
            client_port: s.internal_port,
        })
        .collect();
    let wan = config.wan.clone();
    let n = nat1.clone();
    let reset = tokio::task::spawn_blocking(move || lock(&n).reset(&wan, &rules))
        .await
        .context("NAT1 reset task")?;
    forget_stale_flows(&nat1);
    let nat1_error = match reset {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(error = %e, "NAT1 backend unavailable: mappings cannot reach LAN hosts until it works");
            Some(e.to_string())
        }
    };
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .context("binding the PCP client socket")?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("no route to the PCP server {server}"))?;
    let local = socket.local_addr()?;
    let announce = if config.announce_listener {
        match pcp_client::client::announce_socket_v4(Some(&config.wan.iface), config.wan.address) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(iface = %config.wan.iface, error = %e, "no ANNOUNCE listener on the WAN (restarts of the CGN are noticed at the next renewal)");
                None
            }
        }
    } else {
        None
    };
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        replies: Mutex::new(HashMap::new()),
        external_replies: Mutex::new(HashMap::new()),
        wake: Notify::new(),
        next_request: AtomicU64::new(1),
        started: now,
        health: Mutex::new(Health {
            nat1_error,
            state_error,
            ..Health::default()
        }),
    });
    shared.core().restore(Instant::now(), stored);
    shared.core().check_server(Instant::now());
    // Say plainly when the PCP server does not answer (it never pretends).
    let watch = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SERVER_CHECK).await;
        if watch.core().server_epoch().is_none() {
            tracing::error!(
                "no answer from PCP server {server} after {} s — is PCP enabled on the CGN? Mappings get 501 until it answers",
                SERVER_CHECK.as_secs()
            );
            watch.note(format!("no answer from PCP server {server}"));
        }
    });
    let (persist_tx, writer) = match state {
        Some(dir) => {
            let (tx, rx) = watch::channel(None);
            (
                Some(tx),
                Some(tokio::spawn(write_state(dir, rx, shared.clone()))),
            )
        }
        None => (None, None),
    };
    let stop = Arc::new(Notify::new());
    let driver = Driver {
        shared: shared.clone(),
        socket: Mutex::new(Arc::new(socket)),
        local: Mutex::new(local),
        wan: Mutex::new(config.wan.clone()),
        announce: announce.map(Arc::new),
        nat1: nat1.clone(),
        persist: persist_tx,
        leases: config.dhcp_leases.map(|path| LeaseWatch {
            path,
            seen: None,
            tracker: LeaseTracker::new(),
            warned: false,
        }),
    };
    let task = tokio::spawn(driver.run(stop.clone()));
    Ok(Iwf {
        backend: Arc::new(PcpBackend { shared }),
        task,
        writer,
        stop,
        nat1,
    })
}

/// Writes the newest table the driver published to the state file (write, fsync, rename),
/// one write at a time; versions published during a write are skipped for the newest one.
/// Ends when the driver's sender is dropped, after writing what was pending.
async fn write_state(
    dir: StateDir,
    mut rx: watch::Receiver<Option<Arc<Vec<StoredMapping>>>>,
    shared: Arc<Shared>,
) {
    // `changed` is an error only once the sender is gone and the newest version was seen.
    while rx.changed().await.is_ok() {
        let pending = rx.borrow_and_update().clone();
        if let Some(mappings) = pending {
            let dir = dir.clone();
            let result = tokio::task::spawn_blocking(move || dir.save(&mappings)).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("state task: {e}")),
            };
            if let Some(e) = &error {
                tracing::error!(error = %e, "cannot write the state file");
            }
            lock(&shared.health).state_error = error;
        }
    }
}

/// Deletes the conntrack entries the last NAT1 changes left stale, on a blocking thread and
/// without waiting: the result of the change has gone on already (the MAP is sent, or the
/// control point answered), and the deletions need no lock on the backend.
fn forget_stale_flows(nat1: &Mutex<Box<dyn Nat1Backend>>) {
    if let Some(stale) = lock(nat1).take_stale_flows() {
        tokio::task::spawn_blocking(move || stale.forget());
    }
}

/// How often the WAN interface's address is checked for a change.
pub const WAN_POLL: Duration = Duration::from_secs(2);

/// How often the DHCP lease file is looked at (its modification time; read when it changed)
/// and its leases' expiry times checked.
pub const LEASE_POLL: Duration = Duration::from_secs(5);

/// The DHCP lease file being followed.
struct LeaseWatch {
    path: PathBuf,
    /// Modification time and length of the last read.
    seen: Option<(SystemTime, u64)>,
    tracker: LeaseTracker,
    /// A read or parse failure was reported (further ones go to debug until one succeeds).
    warned: bool,
}

impl LeaseWatch {
    /// The addresses whose lease ended since the last look. The file is small and local
    /// (tmpfs on OpenWrt), so it is read in place, not on a blocking thread.
    fn poll(&mut self) -> Vec<(Ipv4Addr, crate::dhcp::Ended)> {
        let now = SystemTime::now();
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && stamp == self.seen {
            return self.tracker.expire(now);
        }
        let view = match stamp {
            None => Err("cannot read it".to_owned()),
            Some((_, len)) if len > crate::dhcp::MAX_FILE as u64 => {
                Err(format!("{len} bytes, more than {}", crate::dhcp::MAX_FILE))
            }
            Some(_) => match std::fs::read(&self.path) {
                Ok(bytes) => crate::dhcp::parse_dnsmasq(&bytes).map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot read it: {e}")),
            },
        };
        match view {
            Ok(view) => {
                self.seen = stamp;
                if self.warned {
                    tracing::info!(path = %self.path.display(), "DHCP lease file readable again");
                }
                self.warned = false;
                self.tracker.update(view, now)
            }
            Err(e) => {
                // The previous view stays: a bad read never deletes mappings.
                if !self.warned {
                    tracing::warn!(path = %self.path.display(), error = %e, "DHCP lease file ignored; mappings keep following the last good read");
                }
                self.warned = true;
                self.tracker.expire(now)
            }
        }
    }
}

struct Driver {
    shared: Arc<Shared>,
    socket: Mutex<Arc<UdpSocket>>,
    local: Mutex<SocketAddr>,
    wan: Mutex<WanSide>,
    announce: Option<Arc<UdpSocket>>,
    nat1: Arc<Mutex<Box<dyn Nat1Backend>>>,
    persist: Option<watch::Sender<Option<Arc<Vec<StoredMapping>>>>>,
    leases: Option<LeaseWatch>,
}

enum Incoming {
    Datagram(SocketAddr, SocketAddr, Vec<u8>),
    Refused,
}

async fn recv(socket: &UdpSocket, to: SocketAddr, buf: &mut [u8]) -> Incoming {
    loop {
        match socket.recv_from(buf).await {
            Ok((n, from)) => return Incoming::Datagram(from, to, buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Incoming::Refused,
            Err(e) => {
                tracing::debug!(error = %e, "PCP socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Driver {
    async fn run(mut self, stop: Arc<Notify>) {
        let mut buf = vec![0u8; 2048];
        let mut abuf = vec![0u8; 2048];
        let announce_to = SocketAddr::new(IpAddr::V4(pcp_client::natpmp::ANNOUNCE_ADDRESS), 5350);
        let mut wan_poll = tokio::time::interval(WAN_POLL);
        wan_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease_poll = tokio::time::interval(LEASE_POLL);
        lease_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leases = self.leases.take();
        loop {
            self.flush().await;
            let deadline = self.shared.core().poll_timeout();
            let socket = lock(&self.socket).clone();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let announce = async {
                match &self.announce {
                    Some(s) => recv(s, announce_to, &mut abuf).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.notified() => return,
                () = self.shared.wake.notified() => {}
                item = recv(&socket, *lock(&self.local), &mut buf) => self.incoming(item),
                _ = wan_poll.tick() => self.check_wan().await,
                _ = lease_poll.tick(), if leases.is_some() => {
                    if let Some(w) = leases.as_mut() {
                        let ended = w.poll();
                        self.leases_ended(&ended);
                    }
                }
                item = announce => self.incoming(item),
                () = sleep => self.shared.core().handle_timeout(Instant::now()),
            }
        }
    }

    /// Follows a change of the WAN address (RFC 6970 §5.10): NAT1 rebuilt with the new SNAT
    /// target, the PCP socket re-connected (new Client IP), every mapping mapped again.
    async fn check_wan(&self) {
        let iface = lock(&self.wan).iface.clone();
        let Ok((address, _)) = crate::daemon::interface_v4(&iface) else {
            return;
        };
        if address == lock(&self.wan).address {
            return;
        }
        let server = self.shared.core().config().server;
        // A connected UDP socket keeps the source address it was connected with: open a new
        // one (the PCP Client IP is the new address).
        let socket = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "new PCP socket");
                return;
            }
        };
        if let Err(e) = socket.connect(server).await {
            tracing::debug!(error = %e, "PCP socket after the WAN change: no route yet");
            return;
        }
        match socket.local_addr() {
            Ok(l) if l.ip() == IpAddr::V4(address) => *lock(&self.local) = l,
            // The route to the server does not use the new address yet: try again later.
            _ => return,
        }
        *lock(&self.socket) = Arc::new(socket);
        let wan = WanSide { iface, address };
        *lock(&self.wan) = wan.clone();
        let rules = self.shared.core().nat1_rules();
        let nat1 = self.nat1.clone();
        let reset = tokio::task::spawn_blocking(move || lock(&nat1).reset(&wan, &rules)).await;
        forget_stale_flows(&self.nat1);
        if let Ok(Err(e)) | Err(e) = reset.map_err(|e| Nat1Error::Rejected(e.to_string())) {
            tracing::error!(error = %e, "NAT1 rebuild after the WAN address change failed");
            lock(&self.shared.health).nat1_error = Some(e.to_string());
        }
        self.shared
            .note(format!("WAN address changed to {address}"));
        self.shared
            .core()
            .wan_address_changed(Instant::now(), address);
    }

    /// RFC 6970 §5.10: the mappings of each address whose DHCP lease ended go.
    fn leases_ended(&self, ended: &[(Ipv4Addr, crate::dhcp::Ended)]) {
        for &(address, why) in ended {
            let deleted = self
                .shared
                .core()
                .release_client(Instant::now(), address, why.as_str());
            if deleted > 0 {
                tracing::info!(%address, deleted, why = why.as_str(), "mappings of a LAN host removed");
                self.shared.note(format!(
                    "{}: {deleted} mappings of {address} removed",
                    why.as_str()
                ));
            }
        }
    }

    fn incoming(&self, item: Incoming) {
        let now = Instant::now();
        let mut core = self.shared.core();
        match item {
            Incoming::Datagram(from, to, bytes) => core.handle_datagram(now, from, to, &bytes),
            Incoming::Refused => {
                let server = core.config().server;
                core.handle_icmp_error(now, server);
            }
        }
    }

    /// Carries out everything the core asked for, until it asks nothing more.
    async fn flush(&self) {
        let mut buf = [0u8; 1100];
        loop {
            let now = Instant::now();
            let (transmits, outputs) = {
                let mut core = self.shared.core();
                let mut transmits = Vec::new();
                while let Some(t) = core.poll_transmit(now, &mut buf) {
                    transmits.push(buf[..t.len].to_vec());
                }
                let mut outputs = Vec::new();
                while let Some(o) = core.poll_output() {
                    outputs.push(o);
                }
                (transmits, outputs)
            };
            if transmits.is_empty() && outputs.is_empty() {
                return;
            }
            for t in transmits {
                let socket = lock(&self.socket).clone();
                if let Err(e) = socket.send(&t).await {
                    tracing::debug!(error = %e, "PCP send");
                }
            }
            // Only the last state write of a batch matters (each is the whole table): a burst
            // (restores, lease ends) writes the file once, not once per mapping.
            let last_persist = outputs
                .iter()
                .rposition(|o| matches!(o, Output::Persist(_)));
            for (i, o) in outputs.into_iter().enumerate() {
                if matches!(o, Output::Persist(_)) && Some(i) != last_persist {
                    continue;
                }
                self.output(o).await;
            }
        }
    }

    async fn output(&self, o: Output) {
        match o {
            Output::Reply { request, result } => {
                if let Some(tx) = lock(&self.shared.replies).remove(&request) {
                    let _ = tx.send(result);
                }
            }
            Output::External { request, address } => {
                if let Some(tx) = lock(&self.shared.external_replies).remove(&request) {
                    let _ = tx.send(address);
                }
            }
            Output::Nat1 { op, command } => {
                let nat1 = self.nat1.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let mut b = lock(&nat1);
                    match command {
                        Nat1Command::Install(rule) => b.install(&rule),
                        Nat1Command::Remove(rule) => b.remove(&rule),
                    }
                })
                .await
                .unwrap_or_else(|e| Err(Nat1Error::Rejected(format!("NAT1 task: {e}"))));
                {
                    let mut h = lock(&self.shared.health);
                    h.nat1_error = match &result {
                        Err(e)
                            if !matches!(
                                e,
                                Nat1Error::ConflictWithOtherMechanisms { .. }
                                    | Nat1Error::Duplicate { .. }
                            ) =>
                        {
                            Some(e.to_string())
                        }
                        _ => None,
                    };
                }
                self.shared
                    .core()
                    .handle_nat1_result(Instant::now(), op, result);
                forget_stale_flows(&self.nat1);
            }
            Output::Persist(mappings) => {
                // The writer takes the newest table when it is free: the driver never waits
                // for a write and fsync, and a burst of changes costs one write.
                if let Some(tx) = &self.persist {
                    let _ = tx.send(Some(Arc::new(mappings)));
                }
            }
            Output::Event(event) => {
                match &event {
                    IwfEvent::ServerAnswered { epoch, result } => {
                        tracing::info!(%result, epoch, server = %self.shared.core().config().server, "PCP server answers");
                    }
                    IwfEvent::ServerStateLost { .. } | IwfEvent::Restored { .. } => {
                        tracing::info!(?event, "interworking");
                    }
                    _ => {}
                }
                self.shared.note(event.to_string());
            }
        }
    }
}
