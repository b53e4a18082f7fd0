//! The sans-IO interworking core (RFC 6970; design §7): LAN requests, PCP datagrams, NAT1
//! results and `now` in; PCP transmits, NAT1 commands, replies, state writes and events out.
//! It owns the mapping table and drives a [`pcp_client::client::Engine`] directly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant, SystemTime};

use pcp_client::client::{
    Config as EngineConfig, Engine, ErrorCode, Event, Exchange, GiveUp, MapRequest, MappingId,
    MappingUpdate, Path, ServerId, Transmit,
};
use pcp_client::wire::{Nonce, Protocol as PcpProtocol, ResultCode};

use super::entry::{AfterRemoval, Entry, Phase};
use crate::mapping::{
    AddRequest, Lease, MappingError, MappingKey, PortChoice, PortMapping, Protocol,
};
use crate::nat1::{Nat1Error, Nat1Rule};
use crate::state::{CreatedBy, FrontEnd, LeaseEnd, StoredMapping};

/// How long a control point waits for the first PCP answer before it gets 501 (§5.1): two
/// transmissions (0 and 3 s ± 10 %), given up at 4 s. upnpc 2.2.4 and python3-miniupnpc give
/// up on a SOAP answer after 5.0 s (measured: docs/architecture.md, "How long a control point
/// waits"), so the 501 must come before that.
pub const CREATE_GIVE_UP: Duration = Duration::from_secs(4);

/// How long a delete (by the control point or at lease end) waits for the PCP answer before
/// the NAT1 rules go anyway: a LAN host must not keep receiving traffic for a mapping that
/// ended. The PCP delete goes on in the background (the CGN's mapping lapses otherwise).
pub const DELETE_WAIT: Duration = Duration::from_secs(4);

/// How long the background delete of a create that gave up keeps trying (its grant, if the
/// server made one and only the answers were lost, would otherwise linger until it expires).
pub const ORPHAN_DELETE: Duration = Duration::from_secs(120);

/// How long the nonce of a deleted mapping is kept for its NAT1 port: a new mapping of the
/// same internal port within this time reuses it, so the CGN's port hold-down after a delete
/// (RFC 6888 REQ-8, RFC 6887 §15: "the same internal endpoint and nonce may take it back")
/// does not refuse an app that deletes and re-adds its port.
pub const NONCE_REUSE: Duration = Duration::from_secs(600);

/// The PCP lifetime asked for an infinite UPnP lease (RFC 6970 §5.9 prints 2^32, which does
/// not fit: digest G3).
pub const INFINITE_LIFETIME: u32 = u32::MAX;

/// Whether the CPE translates (NAT444) or not (DS-Lite-like B4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMode {
    /// NAT1 in the CPE: the MAP's internal port is the NAT1 WAN port (RFC 6970 §5.5).
    Nat1,
    /// No NAT in the CPE (§5.4): fields pass unchanged; `third_party` sends InternalClient as
    /// THIRD_PARTY when it differs from the CPE's own address (only on a trusted network).
    None {
        /// Send THIRD_PARTY.
        third_party: bool,
    },
}

/// Configuration of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The PCP server.
    pub server: SocketAddr,
    /// The CPE's WAN address (the PCP Client IP, and NAT1's outside address).
    pub wan_address: Ipv4Addr,
    /// NAT444 or not.
    pub nat: NatMode,
    /// WAN ports NAT1 may hand out when the requested external port is taken.
    pub nat1_ports: RangeInclusive<u16>,
    /// Most mappings per LAN host (`None`: no limit), counted over every phase.
    pub max_per_client: Option<usize>,
    /// Most mappings in all.
    pub max_mappings: usize,
    /// Bound of a first request (the control point waits).
    pub create_give_up: GiveUp,
    /// How long a delete waits for the PCP answer before NAT1 is removed anyway.
    pub delete_wait: Duration,
    /// PCP engine timers.
    pub engine: EngineConfig,
}

impl CoreConfig {
    /// The RFC defaults towards `server` from `wan_address`, NAT1 on.
    pub fn new(server: SocketAddr, wan_address: Ipv4Addr) -> CoreConfig {
        CoreConfig {
            server,
            wan_address,
            nat: NatMode::Nat1,
            nat1_ports: 1024..=65535,
            max_per_client: Some(128),
            max_mappings: 1024,
            create_give_up: GiveUp::after(CREATE_GIVE_UP),
            delete_wait: DELETE_WAIT,
            engine: EngineConfig {
                max_queued_events: 0,
                ..EngineConfig::default()
            },
        }
    }
}

/// A request from a LAN front-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// AddPortMapping / AddAnyPortMapping (already validated and authorized by the SOAP
    /// layer); the answer is the mapping as stored (AddAny: with the assigned port).
    Add(AddRequest),
    /// DeletePortMapping of exactly this key; the answer is the removed mapping.
    Delete(MappingKey),
    /// GetSpecificPortMappingEntry for a key not in the table: a short PREFER_FAILURE MAP
    /// from a throw-away NAT1 port, deleted at once (RFC 6970 §5.7; G4, G5). The answer is
    /// always negative: 714 when the port was free (the probe succeeded) or taken
    /// (CANNOT_PROVIDE_EXTERNAL), the mapped error otherwise.
    ProbeSpecific(MappingKey),
    /// GetExternalIPAddress with no address known yet: a short MAP of UDP port 9 (discard),
    /// deleted at once (RFC 6970 §4.2, MAY); answered with [`Output::External`].
    ProbeExternal,
}

/// What a probe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Specific,
    External,
}

/// A probe mapping in flight.
#[derive(Debug, Clone, Copy)]
struct ProbeState {
    request: u64,
    kind: ProbeKind,
    answered: bool,
    protocol: Protocol,
    port: u16,
}

/// Lifetime asked for a probe mapping (RFC 6970 §5.7: short, e.g. 60 s); it is deleted as
/// soon as it is answered.
pub const PROBE_LIFETIME: u32 = 60;

/// The internal port of the external-address probe: discard (RFC 6970 §4.2 suggests 9).
pub const PROBE_EXTERNAL_PORT: u16 = 9;

/// A NAT1 change the driver must carry out and report with [`Core::handle_nat1_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat1Command {
    /// Install the DNAT/SNAT pair.
    Install(Nat1Rule),
    /// Remove it.
    Remove(Nat1Rule),
}

/// Something the router owner or the IGD should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IwfEvent {
    /// A mapping is live through both NATs.
    Created {
        /// UPnP key.
        key: MappingKey,
        /// External endpoint at the CGN.
        external: SocketAddrV4,
        /// NAT1 port.
        nat1_port: u16,
    },
    /// A mapping was removed (delete, lease end, rollback).
    Removed {
        /// UPnP key.
        key: MappingKey,
        /// Why.
        reason: &'static str,
    },
    /// A mapping was re-created after the CGN lost it or the IWF restarted.
    Restored {
        /// UPnP key.
        key: MappingKey,
        /// The external endpoint now.
        external: SocketAddrV4,
        /// True when it is the one it had before.
        same_endpoint: bool,
    },
    /// The PCP server lost its state (epoch or ANNOUNCE): every mapping is being re-created.
    ServerStateLost {
        /// Shown by an ANNOUNCE.
        announced: bool,
    },
    /// The PCP server answered the start-up ANNOUNCE.
    ServerAnswered {
        /// Its epoch.
        epoch: u32,
        /// The result (SUCCESS, or e.g. UNSUPP_VERSION from a NAT-PMP-only gateway).
        result: ResultCode,
    },
    /// The external address seen in PCP answers changed (evented as ExternalIPAddress).
    ExternalAddress(Option<Ipv4Addr>),
    /// A PCP error on an existing mapping (renewal or re-create), which cannot be told to
    /// the control point (RFC 6970 §5.9).
    PcpError {
        /// UPnP key.
        key: MappingKey,
        /// The result.
        code: ErrorCode,
    },
    /// A NAT1 change failed for an existing mapping.
    Nat1Failed {
        /// The rule.
        rule: Nat1Rule,
        /// The error.
        error: Nat1Error,
    },
}

/// What the core asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The answer to a request.
    Reply {
        /// The request.
        request: u64,
        /// Its result.
        result: Result<PortMapping, MappingError>,
    },
    /// A NAT1 change.
    Nat1 {
        /// Operation id for [`Core::handle_nat1_result`].
        op: u64,
        /// The change.
        command: Nat1Command,
    },
    /// The answer to [`Request::ProbeExternal`]: the external address, if learned.
    External {
        /// The request.
        request: u64,
        /// ExternalIPAddress ("" when `None`).
        address: Option<Ipv4Addr>,
    },
    /// Write these mappings to the state file (on create and delete, never on renewals).
    Persist(Vec<StoredMapping>),
    /// An event.
    Event(IwfEvent),
}

/// Counters (OpenMetrics `upnp_iwf_*_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Mappings created through both NATs.
    pub created: u64,
    /// Mappings removed.
    pub removed: u64,
    /// Mappings re-created after state loss or a restart.
    pub restores: u64,
    /// NAT1 rule changes carried out.
    pub nat1_changes: u64,
    /// NAT1 changes that failed.
    pub nat1_failures: u64,
    /// PCP errors answered (any phase).
    pub pcp_errors: u64,
}

/// The interworking core.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    engine: Engine,
    server: ServerId,
    table: BTreeMap<MappingKey, Entry>,
    by_pcp: HashMap<MappingId, MappingKey>,
    nat1_ops: HashMap<u64, (MappingKey, Nat1Command)>,
    next_op: u64,
    outputs: VecDeque<Output>,
    external: Option<Ipv4Addr>,
    update_id: u32,
    clock: (Instant, SystemTime),
    stats: CoreStats,
    results: BTreeMap<String, u64>,
    probes: HashMap<MappingId, ProbeState>,
    /// Nonces of recently deleted mappings by (protocol, NAT1 port), with when they go.
    recent_nonces: HashMap<(Protocol, u16), (Nonce, Instant)>,
    /// Re-mapping after a WAN address change (no PREFER_FAILURE).
    rebinding: bool,
    /// Deletes going on in the engine without a table entry (a create that gave up, a delete
    /// past DELETE_WAIT), by (protocol, NAT1 port): dropped when the port is mapped again with
    /// the same nonce.
    orphans: HashMap<(Protocol, u16), MappingId>,
    /// Adds that met the requester's own entry while its NAT1 rules were being removed; run
    /// again once the entry is gone.
    deferred: Vec<(u64, AddRequest)>,
    /// GetExternalIPAddress requests waiting for the probe in flight.
    external_waiters: Vec<u64>,
}

fn pcp_protocol(p: Protocol) -> PcpProtocol {
    match p {
        Protocol::Tcp => PcpProtocol::TCP,
        Protocol::Udp => PcpProtocol::UDP,
    }
}

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

/// PCP result → the IGD's error for an add (RFC 6970 §4.3; digest §4.5). The SOAP layer
/// turns it into the code of the IGD version in use.
pub fn add_error(code: ErrorCode) -> MappingError {
    match code {
        ErrorCode::Pcp(ResultCode::NotAuthorized) => MappingError::NotAuthorized,
        ErrorCode::Pcp(ResultCode::NoResources | ResultCode::UserExQuota) => {
            MappingError::NoPortsAvailable
        }
        ErrorCode::Pcp(ResultCode::CannotProvideExternal) => MappingError::Conflict,
        other => MappingError::Upstream(format!("PCP server answered {other}")),
    }
}

/// PCP result → the IGD's error for a delete (CANNOT_PROVIDE_EXTERNAL is 714, §5.8).
pub fn delete_error(code: ErrorCode) -> MappingError {
    match code {
        ErrorCode::Pcp(ResultCode::CannotProvideExternal) => MappingError::NotFound,
        other => add_error(other),
    }
}

impl Core {
    /// A core at `now` (monotonic) / `wall` (for leases in the state file), with an
    /// OS-seeded engine.
    pub fn new(config: CoreConfig, now: Instant, wall: SystemTime) -> Core {
        let engine = Engine::new(config.engine.clone());
        Self::with_engine(config, engine, now, wall)
    }

    /// A core with a seeded engine (simulated-time tests).
    pub fn with_seed(config: CoreConfig, seed: u64, now: Instant, wall: SystemTime) -> Core {
        let engine = Engine::with_seed(config.engine.clone(), seed);
        Self::with_engine(config, engine, now, wall)
    }

    fn with_engine(config: CoreConfig, mut engine: Engine, now: Instant, wall: SystemTime) -> Core {
        let path = Path {
            remote: config.server,
            local: IpAddr::V4(config.wan_address),
        };
        // One path is never refused.
        let server = engine.add_server(vec![path]).unwrap_or(ServerId(0));
        Core {
            config,
            engine,
            server,
            table: BTreeMap::new(),
            by_pcp: HashMap::new(),
            nat1_ops: HashMap::new(),
            next_op: 1,
            outputs: VecDeque::new(),
            external: None,
            update_id: 1,
            clock: (now, wall),
            stats: CoreStats::default(),
            results: BTreeMap::new(),
            probes: HashMap::new(),
            recent_nonces: HashMap::new(),
            rebinding: false,
            orphans: HashMap::new(),
            deferred: Vec::new(),
            external_waiters: Vec::new(),
        }
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.clock.1 + now.saturating_duration_since(self.clock.0)
    }

    fn instant(&self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.clock.1) {
            Ok(d) => self.clock.0 + d,
            Err(_) => self.clock.0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Counters of the core.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// PCP answers by result (`SUCCESS`, `NOT_AUTHORIZED` …, and `NO_ANSWER` for requests
    /// given up), for `upnp_iwf_pcp_results_total{result=…}`.
    pub fn pcp_results(&self) -> &BTreeMap<String, u64> {
        &self.results
    }

    /// Counters of the PCP engine (retransmissions, renewals, epoch resets …).
    pub fn pcp_stats(&self) -> pcp_client::client::Stats {
        self.engine.stats()
    }

    /// The PCP server's last epoch, if it ever answered.
    pub fn server_epoch(&self) -> Option<u32> {
        self.engine.server_epoch(self.server)
    }

    /// The table, every phase (status page, tests).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.table.values()
    }

    /// The mappings the IGD shows at `now` (phases that exist upstream, lease not over).
    pub fn mappings(&self, now: Instant) -> Vec<PortMapping> {
        self.table
            .values()
            .filter(|e| e.phase.visible() && !e.mapping.lease.expired(now))
            .map(|e| e.mapping.clone())
            .collect()
    }

    /// The visible mapping with exactly `key`.
    pub fn get(&self, now: Instant, key: &MappingKey) -> Option<PortMapping> {
        self.table
            .get(key)
            .filter(|e| e.phase.visible() && !e.mapping.lease.expired(now))
            .map(|e| e.mapping.clone())
    }

    /// `SystemUpdateID`: changes whenever the visible table changes.
    pub fn update_id(&self) -> u32 {
        self.update_id
    }

    /// The external address from the last PCP answer (RFC 6970 §4.1), if any.
    pub fn external_address(&self) -> Option<Ipv4Addr> {
        self.external
    }

    /// ExternalIPAddress for one control point: the address of its own most recent live
    /// mapping, else the last one any PCP answer gave (RFC 6970 §4.1: per CP).
    pub fn external_address_for(&self, cp: Ipv4Addr) -> Option<Ipv4Addr> {
        self.table
            .values()
            .filter(|e| e.mapping.owner == cp && e.phase.visible())
            .filter_map(|e| e.external.map(|x| *x.ip()))
            .next_back()
            .or(self.external)
    }

    fn bump(&mut self) {
        self.update_id = self.update_id.wrapping_add(1).max(1);
    }

    /// The NAT1 rules of every mapping that has them (for a NAT1 rebuild after a WAN
    /// address change).
    pub fn nat1_rules(&self) -> Vec<Nat1Rule> {
        match self.config.nat {
            NatMode::Nat1 => self
                .table
                .values()
                .filter(|e| !matches!(e.phase, Phase::ReservingNat1 | Phase::RemovingNat1))
                .map(Entry::nat1_rule)
                .collect(),
            NatMode::None { .. } => Vec::new(),
        }
    }

    /// The CPE's WAN address changed (RFC 6970 §5.10, MAY): the PCP mappings of the old
    /// address cannot be renewed or deleted any more (they lapse at the CGN), so every mapping
    /// is mapped again from the new address, with a fresh nonce (a new client for the server,
    /// RFC 6887 §11.2), suggesting its previous external endpoint but without PREFER_FAILURE:
    /// the old mappings hold those ports until they expire. The driver rebuilds NAT1 (the SNAT
    /// target changed) before calling this. A changed external port cannot be told to the CP.
    pub fn wan_address_changed(&mut self, now: Instant, address: Ipv4Addr) {
        if address == self.config.wan_address {
            return;
        }
        tracing::warn!(old = %self.config.wan_address, new = %address, "WAN address changed: mapping everything again");
        self.config.wan_address = address;
        let path = Path {
            remote: self.config.server,
            local: IpAddr::V4(address),
        };
        if let Some(server) = self.engine.add_server(vec![path]) {
            self.server = server;
        }
        let keys: Vec<MappingKey> = self
            .table
            .iter()
            .filter(|(_, e)| e.phase.visible())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(e) = self.table.get_mut(&key) {
                if let Some(id) = e.pcp.take() {
                    self.engine.forget(id);
                    self.by_pcp.remove(&id);
                }
                e.nonce = None;
                e.phase = Phase::Recovering;
                e.waiter = None;
            }
            self.rebinding = true;
            let result = self.start_pcp(now, key);
            self.rebinding = false;
            if let Err(err) = result {
                tracing::warn!(port = key.external_port, %err, "cannot map again after the WAN change");
            }
        }
        self.recent_nonces.clear();
        self.external = None;
        self.drain_engine(now);
    }

    /// Sends a solicited ANNOUNCE (RFC 6887 §14.1) to learn whether the PCP server answers
    /// and its epoch; retransmitted until answered ([`IwfEvent::ServerAnswered`]).
    pub fn check_server(&mut self, now: Instant) {
        let _ = self.engine.announce(now, self.server);
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next PCP datagram to send (`buf` ≥ 1100 bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.engine.poll_transmit(now, buf)
    }

    /// When [`Core::handle_timeout`] is due: the engine's next timer or the next lease end.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let lease = self
            .table
            .values()
            .filter_map(|e| match (e.phase, e.mapping.lease) {
                (p, Lease::Until(t)) if p.visible() => Some(t),
                (Phase::Deleting, _) => e.deadline,
                _ => None,
            })
            .min();
        match (self.engine.poll_timeout(), lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`: PCP retransmissions and renewals, UPnP lease ends
    /// (a lease end deletes the mapping upstream, then locally; RFC 6970 §5.9).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        let ended: Vec<MappingKey> = self
            .table
            .iter()
            .filter(|(_, e)| e.phase.visible() && e.mapping.lease.expired(now))
            .map(|(k, _)| *k)
            .collect();
        for key in ended {
            self.start_delete(now, key, None, "UPnP lease ended");
        }
        // Deletes the PCP server did not answer in time: NAT1 goes now, the PCP delete
        // goes on without us (its events no longer reach the table).
        let overdue: Vec<MappingKey> = self
            .table
            .iter()
            .filter(|(_, e)| e.phase == Phase::Deleting && e.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in overdue {
            if let Some(e) = self.table.get_mut(&key) {
                let slot = (key.protocol, e.nat1_port);
                if let Some(id) = e.pcp.take() {
                    self.by_pcp.remove(&id);
                    self.orphans.insert(slot, id);
                }
            }
            tracing::warn!(
                port = key.external_port,
                protocol = key.protocol.as_str(),
                "PCP delete unanswered: NAT1 rules removed now, the delete goes on upstream"
            );
            self.remove_locally(key, AfterRemoval::Deleted);
        }
        self.drain_engine(now);
    }

    /// A datagram from the PCP side (responses, ANNOUNCE, Mapping Updates).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        self.engine.handle_datagram(now, from, to, bytes);
        self.drain_engine(now);
    }

    /// A hard ICMP error for datagrams sent to the server.
    pub fn handle_icmp_error(&mut self, now: Instant, remote: SocketAddr) {
        self.engine.handle_icmp_error(now, remote);
        self.drain_engine(now);
    }

    /// Mappings reloaded from the state file at start, whose NAT1 rules the driver has
    /// re-installed: each is renewed upstream with its stored nonce, PREFER_FAILURE and the
    /// stored external endpoint (RFC 6970 §5.3, §5.10). Expired ones are dropped.
    pub fn restore(&mut self, now: Instant, stored: Vec<StoredMapping>) {
        let wall = self.wall(now);
        for s in stored {
            if s.lease_end.is_expired(wall) || self.table.contains_key(&s.key()) {
                continue;
            }
            let lease = match s.lease_end {
                LeaseEnd::Permanent => Lease::Permanent,
                LeaseEnd::At(t) => Lease::Until(self.instant(t)),
            };
            let mapping = PortMapping {
                key: s.key(),
                internal_client: s.internal_client,
                internal_port: s.internal_port,
                enabled: s.enabled,
                description: s.description.clone(),
                lease,
                owner: s.owner,
            };
            let entry = Entry {
                mapping,
                created_by: s.created_by,
                nat1_port: if s.nat1_port == 0 {
                    s.internal_port
                } else {
                    s.nat1_port
                },
                phase: Phase::Recovering,
                pcp: None,
                nonce: Some(Nonce(s.nonce)),
                external: s.external,
                last_result: None,
                pcp_expires: None,
                restores: 0,
                waiter: None,
                after_removal: None,
                deadline: None,
                span: tracing::info_span!(
                    "restore",
                    port = s.external_port,
                    protocol = s.protocol.as_str()
                ),
            };
            let key = entry.mapping.key;
            self.table.insert(key, entry);
            if let Err(e) = self.start_pcp(now, key) {
                tracing::warn!(%key.external_port, error = %e, "cannot renew a stored mapping");
                self.table.remove(&key);
            }
        }
        self.bump();
        self.drain_engine(now);
    }

    /// A request from a LAN front-end; the answer comes as [`Output::Reply`] with `request`.
    pub fn handle_request(&mut self, now: Instant, request: u64, req: Request) {
        match req {
            Request::Add(add) => self.add(now, request, add),
            Request::Delete(key) => match self.table.get(&key).map(|e| e.phase) {
                None => self.reply(request, Err(MappingError::NotFound)),
                Some(p) if !p.visible() => self.reply(
                    request,
                    Err(MappingError::Upstream(format!(
                        "the mapping is {} upstream; try again",
                        p.as_str()
                    ))),
                ),
                Some(_) => {
                    self.start_delete(now, key, Some(request), "deleted by the control point")
                }
            },
            Request::ProbeSpecific(key) => self.probe(now, request, ProbeKind::Specific, Some(key)),
            Request::ProbeExternal => match self.external {
                Some(address) => self.outputs.push_back(Output::External {
                    request,
                    address: Some(address),
                }),
                // One probe at a time: they share internal port 9, and a second nonce for
                // it would be refused (NOT_AUTHORIZED) while the first lives.
                None if self.probes.values().any(|p| p.kind == ProbeKind::External) => {
                    self.external_waiters.push(request);
                }
                None => self.probe(now, request, ProbeKind::External, None),
            },
        }
        self.drain_engine(now);
    }

    /// The outcome of an [`Output::Nat1`] command.
    pub fn handle_nat1_result(&mut self, now: Instant, op: u64, result: Result<(), Nat1Error>) {
        let Some((key, command)) = self.nat1_ops.remove(&op) else {
            return;
        };
        if result.is_ok() {
            self.stats.nat1_changes += 1;
        } else {
            self.stats.nat1_failures += 1;
        }
        match command {
            Nat1Command::Install(rule) => {
                let Some(e) = self.table.get(&key) else {
                    return;
                };
                if e.phase != Phase::ReservingNat1 {
                    return;
                }
                match result {
                    Ok(()) => {
                        if let Err(err) = self.start_pcp(now, key) {
                            self.fail_create(key, err);
                        }
                    }
                    Err(error) => {
                        let answer = match &error {
                            Nat1Error::ConflictWithOtherMechanisms { .. } => {
                                MappingError::ConflictWithOtherMechanisms
                            }
                            Nat1Error::Duplicate { .. } => MappingError::Conflict,
                            other => MappingError::Upstream(format!("local NAT: {other}")),
                        };
                        tracing::warn!(%rule, %error, "NAT1 install refused");
                        if let Some(e) = self.table.remove(&key) {
                            if let Some(w) = e.waiter {
                                self.reply(w, Err(answer));
                            }
                        }
                    }
                }
            }
            Nat1Command::Remove(rule) => {
                if let Err(error) = result {
                    tracing::warn!(%rule, %error, "NAT1 removal failed");
                    self.event(IwfEvent::Nat1Failed { rule, error });
                }
                let Some(e) = self.table.get(&key) else {
                    return;
                };
                if e.phase != Phase::RemovingNat1 {
                    return;
                }
                if let Some(e) = self.table.remove(&key) {
                    self.stats.removed += 1;
                    if let (Some(w), Some(AfterRemoval::Deleted)) = (e.waiter, e.after_removal) {
                        self.reply(w, Ok(e.mapping.clone()));
                    }
                    if e.after_removal == Some(AfterRemoval::Deleted) {
                        self.persist();
                    }
                }
                // Adds that waited for this entry to go.
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
                    .into_iter()
                    .partition(|(_, a)| a.mapping.key.overlaps(&key));
                self.deferred = waiting;
                for (request, add) in ready {
                    self.add(now, request, add);
                }
            }
        }
        self.drain_engine(now);
    }

    fn reply(&mut self, request: u64, result: Result<PortMapping, MappingError>) {
        self.outputs.push_back(Output::Reply { request, result });
    }

    fn event(&mut self, event: IwfEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn nat1(&mut self, key: MappingKey, command: Nat1Command) {
        let op = self.next_op;
        self.next_op += 1;
        self.nat1_ops.insert(op, (key, command));
        self.outputs.push_back(Output::Nat1 { op, command });
    }

    /// The state file's view: every mapping that may exist upstream.
    pub fn stored(&self) -> Vec<StoredMapping> {
        self.table
            .values()
            .filter(|e| e.phase.durable())
            .filter_map(|e| {
                let nonce = e.nonce?;
                Some(StoredMapping {
                    owner: e.mapping.owner,
                    front_end: FrontEnd::Igd,
                    remote_host: e.mapping.key.remote_host,
                    protocol: e.mapping.key.protocol,
                    external_port: e.mapping.key.external_port,
                    internal_client: e.mapping.internal_client,
                    internal_port: e.mapping.internal_port,
                    nat1_port: match self.config.nat {
                        NatMode::Nat1 => e.nat1_port,
                        NatMode::None { .. } => 0,
                    },
                    external: e.external,
                    nonce: nonce.0,
                    lease_end: match e.mapping.lease {
                        Lease::Permanent => LeaseEnd::Permanent,
                        Lease::Until(t) => LeaseEnd::At(self.wall(t)),
                    },
                    description: e.mapping.description.clone(),
                    created_by: e.created_by,
                    enabled: e.mapping.enabled,
                })
            })
            .collect()
    }

    fn persist(&mut self) {
        let stored = self.stored();
        self.outputs.push_back(Output::Persist(stored));
        self.bump();
    }

    /// The PCP lifetime for a UPnP lease (RFC 6970 §5.9).
    fn pcp_lifetime(now: Instant, lease: Lease) -> u32 {
        match lease {
            Lease::Permanent => INFINITE_LIFETIME,
            Lease::Until(t) => {
                let left = t.saturating_duration_since(now);
                u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                    .unwrap_or(INFINITE_LIFETIME)
                    .max(1)
            }
        }
    }

    fn overlapping(&self, key: &MappingKey) -> impl Iterator<Item = (&MappingKey, &Entry)> {
        self.table.iter().filter(move |(k, _)| k.overlaps(key))
    }

    fn nat1_port_free(&self, protocol: Protocol, port: u16) -> bool {
        !self
            .table
            .values()
            .any(|e| e.mapping.key.protocol == protocol && e.nat1_port == port)
    }

    fn add(&mut self, now: Instant, request: u64, add: AddRequest) {
        let AddRequest {
            mut mapping,
            choice,
        } = add;
        let client = mapping.internal_client;
        // The CP's own existing entry: a refresh with the same nonce (IGD:2 practice).
        let hit = self.overlapping(&mapping.key).next().map(|(&k, e)| {
            (
                k,
                e.mapping.internal_client,
                e.mapping.internal_port,
                e.phase,
            )
        });
        if let Some((key, holder, holder_port, phase)) = hit {
            let own = key == mapping.key && holder == client;
            let same_target = holder_port == mapping.internal_port;
            if own && same_target {
                match phase {
                    Phase::Active | Phase::Recovering => {
                        return self.refresh(now, request, key, mapping);
                    }
                    Phase::ReservingNat1 | Phase::PcpInFlight => {
                        // The control point asks again while its first request is in flight
                        // (it gave up waiting): this request takes over the answer.
                        if let Some(e) = self.table.get_mut(&key) {
                            if let Some(old) = e.waiter.replace(request) {
                                self.reply(
                                    old,
                                    Err(MappingError::Upstream(
                                        "superseded by a newer request".into(),
                                    )),
                                );
                            }
                        }
                        return;
                    }
                    Phase::RemovingNat1 => {
                        // A retry right after a failed create: wait the few milliseconds
                        // until the old rules are gone, then make it anew.
                        self.deferred
                            .push((request, AddRequest { mapping, choice }));
                        return;
                    }
                    p => {
                        return self.reply(
                            request,
                            Err(MappingError::Upstream(format!(
                                "the mapping is {} upstream; try again",
                                p.as_str()
                            ))),
                        );
                    }
                }
            }
            match choice {
                PortChoice::Exact => return self.reply(request, Err(MappingError::Conflict)),
                PortChoice::Any(ref ranges) => {
                    // Suggest another port the table does not hold; the CGN decides.
                    match self.free_external(&mapping.key, ranges) {
                        Some(p) => mapping.key.external_port = p,
                        None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                    }
                }
            }
        }
        if let PortChoice::Any(ref ranges) = choice {
            if mapping.key.external_port == 0 {
                match self.free_external(&mapping.key, ranges) {
                    Some(p) => mapping.key.external_port = p,
                    None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                }
            }
        }
        // Quotas, counted over every phase in the same step (no check-then-await).
        let held = self.table.values().filter(|e| e.client() == client).count();
        if self.config.max_per_client.is_some_and(|m| held >= m)
            || self.table.len() >= self.config.max_mappings
        {
            return self.reply(request, Err(MappingError::NoPortsAvailable));
        }
        // One NAT1 rule pair per client endpoint (its SNAT must be unambiguous).
        if self.table.values().any(|e| {
            e.mapping.key.protocol == mapping.key.protocol
                && e.client() == client
                && e.mapping.internal_port == mapping.internal_port
        }) {
            return self.reply(request, Err(MappingError::Conflict));
        }
        let protocol = mapping.key.protocol;
        let nat1_port = match self.config.nat {
            NatMode::None { .. } => mapping.internal_port,
            NatMode::Nat1 => {
                let wanted = mapping.key.external_port;
                if self.nat1_port_free(protocol, wanted) {
                    wanted
                } else {
                    match self
                        .config
                        .nat1_ports
                        .clone()
                        .find(|&p| self.nat1_port_free(protocol, p))
                    {
                        Some(p) => p,
                        None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                    }
                }
            }
        };
        let created_by = match choice {
            PortChoice::Exact => CreatedBy::AddPortMapping,
            PortChoice::Any(_) => CreatedBy::AddAnyPortMapping,
        };
        let key = mapping.key;
        let entry = Entry {
            mapping,
            created_by,
            nat1_port,
            phase: Phase::ReservingNat1,
            pcp: None,
            nonce: None,
            external: None,
            last_result: None,
            pcp_expires: None,
            restores: 0,
            waiter: Some(request),
            after_removal: None,
            deadline: None,
            span: tracing::Span::current(),
        };
        let rule = entry.nat1_rule();
        self.table.insert(key, entry);
        match self.config.nat {
            NatMode::Nat1 => self.nat1(key, Nat1Command::Install(rule)),
            NatMode::None { .. } => {
                if let Err(err) = self.start_pcp(now, key) {
                    self.fail_create(key, err);
                }
            }
        }
    }

    /// Sends a probe MAP (never entered in the table, never persisted).
    fn probe(&mut self, now: Instant, request: u64, kind: ProbeKind, key: Option<MappingKey>) {
        let (protocol, port) = match (kind, key) {
            (ProbeKind::Specific, Some(k)) => {
                // G4: a throw-away internal port nobody uses (no NAT1 rule is installed:
                // nothing is meant to arrive there).
                let busy = |p: u16| {
                    self.probes
                        .values()
                        .any(|s| s.protocol == k.protocol && s.port == p)
                };
                let port = self
                    .config
                    .nat1_ports
                    .clone()
                    .rev()
                    .find(|&p| self.nat1_port_free(k.protocol, p) && !busy(p));
                match port {
                    Some(p) => (k.protocol, p),
                    None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                }
            }
            _ => (Protocol::Udp, PROBE_EXTERNAL_PORT),
        };
        let mut map = MapRequest::new(pcp_protocol(protocol), port, PROBE_LIFETIME)
            .give_up(self.config.create_give_up);
        if let (ProbeKind::Specific, Some(k)) = (kind, key) {
            map = map
                .suggest(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    k.external_port,
                ))
                .prefer_failure();
        }
        match self.engine.map(now, self.server, map) {
            Ok(id) => {
                tracing::info!(?kind, port, "PCP probe sent");
                self.probes.insert(
                    id,
                    ProbeState {
                        request,
                        kind,
                        answered: false,
                        protocol,
                        port,
                    },
                );
            }
            // e.g. an external-address probe already in flight (same internal tuple).
            Err(err) => {
                tracing::debug!(%err, "no probe");
                match kind {
                    ProbeKind::Specific => self.reply(request, Err(MappingError::NotFound)),
                    ProbeKind::External => self.outputs.push_back(Output::External {
                        request,
                        address: self.external,
                    }),
                }
            }
        }
    }

    /// A probe's engine event.
    fn on_probe_event(&mut self, now: Instant, id: MappingId, event: Event) {
        let Some(state) = self.probes.get(&id).copied() else {
            return;
        };
        let answer = match event {
            Event::Granted { external, .. } => {
                if let Some(x) = v4(external) {
                    self.set_external(x);
                }
                // G5: the probe made a mapping: delete it at once with its nonce.
                if self.engine.delete(now, id).is_err() {
                    self.probes.remove(&id);
                }
                Some(Err(MappingError::NotFound))
            }
            Event::Failed { code, .. } => {
                self.engine.forget(id);
                self.probes.remove(&id);
                Some(match code {
                    ErrorCode::Pcp(ResultCode::CannotProvideExternal) => {
                        Err(MappingError::NotFound)
                    }
                    other => Err(add_error(other)),
                })
            }
            Event::GaveUp { .. } | Event::TimedOut { .. } | Event::Deleted { .. } => {
                self.probes.remove(&id);
                Some(Err(MappingError::Upstream(format!(
                    "no answer from PCP server {}",
                    self.config.server
                ))))
            }
            _ => None,
        };
        let Some(result) = answer else {
            return;
        };
        if state.answered {
            return;
        }
        if let Some(p) = self.probes.get_mut(&id) {
            p.answered = true;
        }
        match state.kind {
            ProbeKind::Specific => self.reply(state.request, result),
            ProbeKind::External => {
                let address = self.external;
                for request in std::iter::once(state.request).chain(self.external_waiters.drain(..))
                {
                    self.outputs
                        .push_back(Output::External { request, address });
                }
            }
        }
    }

    fn free_external(&self, key: &MappingKey, ranges: &[RangeInclusive<u16>]) -> Option<u16> {
        let start = key.external_port.max(1);
        (start..=u16::MAX)
            .chain(1..start)
            .filter(|p| ranges.iter().any(|r| r.contains(p)))
            .find(|&p| {
                let k = MappingKey {
                    external_port: p,
                    ..*key
                };
                self.overlapping(&k).next().is_none()
            })
    }

    fn remember_nonce(&mut self, now: Instant, slot: (Protocol, u16), nonce: Nonce) {
        self.recent_nonces.retain(|_, (_, until)| *until > now);
        self.orphans
            .retain(|_, id| self.engine.mapping(*id).is_some());
        self.recent_nonces.insert(slot, (nonce, now + NONCE_REUSE));
    }

    /// Sends the MAP for `key` (create, or renew a stored one with its nonce).
    fn start_pcp(&mut self, now: Instant, key: MappingKey) -> Result<(), MappingError> {
        let Some(e) = self.table.get(&key) else {
            return Err(MappingError::NotFound);
        };
        let span = e.span.clone();
        let _entered = span.enter();
        let restoring = e.phase == Phase::Recovering;
        let mut request = MapRequest::new(
            pcp_protocol(key.protocol),
            e.nat1_port,
            Self::pcp_lifetime(now, e.mapping.lease),
        );
        // Suggest the requested (or stored) external endpoint.
        let suggested = match e.external {
            Some(x) => SocketAddr::V4(x),
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), key.external_port),
        };
        request = request.suggest(suggested);
        // AddPortMapping: PREFER_FAILURE (§5.6.2, never with port 0: G1). A restore keeps
        // the external port stable or fails loudly, AddAny included (§5.10, G9).
        if suggested.port() != 0
            && !self.rebinding
            && (e.created_by == CreatedBy::AddPortMapping || restoring)
        {
            request = request.prefer_failure();
        }
        if !e.mapping.description.is_empty() {
            request = request.description(e.mapping.description.clone());
        }
        if let Some(host) = key.remote_host {
            request = request.filter(pcp_client::wire::Filter {
                prefix_length: 128,
                remote_peer_port: 0,
                remote_peer_address: IpAddr::V4(host),
            });
        }
        if let NatMode::None { third_party: true } = self.config.nat {
            if e.client() != self.config.wan_address {
                request = request.third_party(IpAddr::V4(e.client()));
            }
        }
        let slot = (key.protocol, e.nat1_port);
        let reused = match e.nonce {
            Some(n) => {
                request = request.nonce(n);
                false
            }
            None => match self.recent_nonces.remove(&slot) {
                Some((n, until)) if until > now => {
                    // The delete of that mapping may still be going on: this MAP replaces it.
                    if let Some(orphan) = self.orphans.remove(&slot) {
                        self.engine.forget(orphan);
                    }
                    request = request.clone().nonce(n);
                    true
                }
                _ => false,
            },
        };
        if !restoring {
            request = request.give_up(self.config.create_give_up);
        }
        let id = match self.engine.map(now, self.server, request.clone()) {
            // The old delete with that nonce is still in the engine: take a fresh nonce.
            Err(pcp_client::client::RequestError::Duplicate) if reused => {
                request.nonce = None;
                self.engine.map(now, self.server, request)
            }
            other => other,
        }
        .map_err(|err| MappingError::Upstream(format!("PCP request: {err}")))?;
        let nonce = self.engine.mapping(id).map(|m| m.nonce);
        self.by_pcp.insert(id, key);
        if let Some(e) = self.table.get_mut(&key) {
            e.pcp = Some(id);
            e.nonce = nonce;
            if e.phase == Phase::ReservingNat1 {
                e.phase = Phase::PcpInFlight;
            }
            tracing::info!(
                key = %key.external_port, protocol = key.protocol.as_str(),
                nat1_port = e.nat1_port, nonce = ?nonce, restoring, "MAP sent"
            );
        }
        Ok(())
    }

    /// A create that failed upstream: answer, forget the PCP side, roll NAT1 back.
    fn fail_create(&mut self, key: MappingKey, error: MappingError) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        let waiter = e.waiter.take();
        if let Some(id) = e.pcp.take() {
            self.engine.forget(id);
            self.by_pcp.remove(&id);
        }
        if let Some(w) = waiter {
            self.reply(w, Err(error));
        }
        self.remove_locally(key, AfterRemoval::RolledBack);
    }

    /// Removes the NAT1 rules (if any), then the entry.
    fn remove_locally(&mut self, key: MappingKey, after: AfterRemoval) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        e.phase = Phase::RemovingNat1;
        e.after_removal = Some(after);
        let rule = e.nat1_rule();
        match self.config.nat {
            NatMode::Nat1 => self.nat1(key, Nat1Command::Remove(rule)),
            NatMode::None { .. } => {
                if let Some(e) = self.table.remove(&key) {
                    self.stats.removed += 1;
                    if let (Some(w), AfterRemoval::Deleted) = (e.waiter, after) {
                        self.reply(w, Ok(e.mapping.clone()));
                    }
                    if after == AfterRemoval::Deleted {
                        self.persist();
                    }
                }
            }
        }
        self.event(IwfEvent::Removed {
            key,
            reason: match after {
                AfterRemoval::Deleted => "deleted",
                AfterRemoval::RolledBack => "rolled back",
            },
        });
    }

    fn refresh(&mut self, now: Instant, request: u64, key: MappingKey, new: PortMapping) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        let Some(id) = e.pcp else {
            return self.reply(request, Err(MappingError::NotFound));
        };
        let update = MappingUpdate {
            lifetime: Some(Self::pcp_lifetime(now, new.lease)),
            description: Some((!new.description.is_empty()).then(|| new.description.clone())),
            give_up: Some(self.config.create_give_up),
            ..MappingUpdate::default()
        };
        match self.engine.update(now, id, update) {
            Ok(()) => {
                e.mapping.lease = new.lease;
                e.mapping.description = new.description;
                e.mapping.enabled = new.enabled;
                e.mapping.owner = new.owner;
                e.phase = Phase::Renewing;
                e.waiter = Some(request);
            }
            Err(err) => self.reply(request, Err(MappingError::Upstream(format!("{err}")))),
        }
    }

    fn start_delete(&mut self, now: Instant, key: MappingKey, waiter: Option<u64>, why: &str) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        tracing::info!(
            port = key.external_port,
            protocol = key.protocol.as_str(),
            why,
            "deleting"
        );
        e.waiter = waiter;
        e.phase = Phase::Deleting;
        e.deadline = Some(now + self.config.delete_wait);
        let pcp = e.pcp;
        if let Some(nonce) = e.nonce {
            let slot = (key.protocol, e.nat1_port);
            self.remember_nonce(now, slot, nonce);
        }
        match pcp {
            Some(id) if self.engine.delete(now, id).is_ok() => {
                self.bump();
            }
            _ => {
                // Nothing upstream to delete.
                self.remove_locally(key, AfterRemoval::Deleted);
            }
        }
    }

    fn key_of(&self, id: MappingId) -> Option<MappingKey> {
        self.by_pcp.get(&id).copied()
    }

    fn set_external(&mut self, external: SocketAddrV4) {
        let ip = Some(*external.ip());
        if self.external != ip {
            self.external = ip;
            self.event(IwfEvent::ExternalAddress(ip));
        }
    }

    /// Applies every event the PCP engine produced.
    fn drain_engine(&mut self, now: Instant) {
        while let Some(event) = self.engine.poll_event() {
            self.on_engine_event(now, event);
        }
    }

    fn on_engine_event(&mut self, now: Instant, event: Event) {
        if let Event::Announced { epoch, result, .. } = event {
            return self.event(IwfEvent::ServerAnswered { epoch, result });
        }
        if let Event::ServerStateLost { announced, .. } = event {
            for e in self.table.values_mut() {
                if matches!(e.phase, Phase::Active | Phase::Renewing) {
                    e.phase = Phase::Recovering;
                }
            }
            return self.event(IwfEvent::ServerStateLost { announced });
        }
        let Some(id) = event.mapping() else {
            return;
        };
        if self.probes.contains_key(&id) {
            return self.on_probe_event(now, id, event);
        }
        let Some(key) = self.key_of(id) else {
            return;
        };
        let result = match event {
            Event::Granted { .. }
            | Event::Restored { .. }
            | Event::Updated { .. }
            | Event::Renewed { .. }
            | Event::Changed { .. } => Some("SUCCESS".to_string()),
            Event::Failed { code, .. } => Some(match code {
                ErrorCode::Pcp(c) => c.to_string(),
                other => other.to_string(),
            }),
            Event::GaveUp { .. } | Event::TimedOut { .. } => Some("NO_ANSWER".to_string()),
            _ => None,
        };
        if let Some(r) = result {
            *self.results.entry(r).or_default() += 1;
        }
        let span = self.table.get(&key).map(|e| e.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let info = self.engine.mapping(id);
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        e.pcp_expires = info.as_ref().and_then(|i| i.expires_at);
        e.last_result = info.as_ref().and_then(|i| i.last_result).or(e.last_result);
        match event {
            Event::Granted { external, .. }
            | Event::Restored { external, .. }
            | Event::Updated { external, .. }
            | Event::Renewed { external, .. }
            | Event::Changed { external, .. } => {
                let Some(external) = v4(external) else {
                    return;
                };
                self.granted(now, key, id, external, event);
            }
            Event::Expired { .. } => {
                if matches!(e.phase, Phase::Active | Phase::Renewing) {
                    e.phase = Phase::Recovering;
                }
            }
            Event::Failed { code, .. } => {
                self.stats.pcp_errors += 1;
                match e.phase {
                    Phase::PcpInFlight => self.fail_create(key, add_error(code)),
                    Phase::Renewing => {
                        e.phase = Phase::Active;
                        if let Some(w) = e.waiter.take() {
                            self.reply(w, Err(add_error(code)));
                        }
                    }
                    Phase::Deleting => {
                        // The engine dropped the refused delete (NO_RESOURCES aside, which it
                        // retries): the mapping is gone for us either way.
                        if code == ErrorCode::Pcp(ResultCode::NoResources) {
                            return;
                        }
                        let waiter = e.waiter.take();
                        e.pcp = None;
                        self.by_pcp.remove(&id);
                        if let Some(w) = waiter {
                            self.reply(w, Err(delete_error(code)));
                        }
                        self.remove_locally(key, AfterRemoval::Deleted);
                        // The waiter got the error; do not answer it twice.
                        if let Some(e) = self.table.get_mut(&key) {
                            e.waiter = None;
                        }
                    }
                    _ => self.event(IwfEvent::PcpError { key, code }),
                }
            }
            Event::GaveUp {
                exchange,
                transmissions,
                ..
            } => {
                let error = MappingError::Upstream(format!(
                    "no answer from PCP server {} after {transmissions} tries",
                    self.config.server
                ));
                match exchange {
                    Exchange::Create => {
                        self.by_pcp.remove(&id);
                        let orphan = self.table.get_mut(&key).map(|e| {
                            e.pcp = None;
                            (e.nat1_port, e.nonce)
                        });
                        self.fail_create(key, error);
                        // The server may have made the mapping and only its answers were
                        // lost: delete it with its nonce in the background, bounded.
                        // A retry by the control point reuses the nonce (and drops this
                        // delete), so the server sees a refresh, not a stranger's request.
                        if let Some((port, Some(nonce))) = orphan {
                            let request = MapRequest::new(pcp_protocol(key.protocol), port, 1)
                                .nonce(nonce)
                                .give_up(GiveUp::after(ORPHAN_DELETE));
                            match self.engine.delete_mapping(now, self.server, request) {
                                Ok(orphan) => {
                                    self.orphans.insert((key.protocol, port), orphan);
                                }
                                Err(err) => tracing::debug!(%err, "no background delete"),
                            }
                            self.remember_nonce(now, (key.protocol, port), nonce);
                        }
                    }
                    Exchange::Update => {
                        e.phase = Phase::Active;
                        if let Some(w) = e.waiter.take() {
                            self.reply(w, Err(error));
                        }
                    }
                }
            }
            Event::TimedOut { .. } => {
                self.by_pcp.remove(&id);
                e.pcp = None;
                if e.phase == Phase::PcpInFlight {
                    let error = MappingError::Upstream(format!(
                        "no answer from PCP server {}",
                        self.config.server
                    ));
                    self.fail_create(key, error);
                } else {
                    self.remove_locally(key, AfterRemoval::Deleted);
                }
            }
            Event::PreferFailureIgnored { .. } => {
                // The engine deletes what the server made; answer now (UNSUPP_OPTION-like, 501).
                if let Some(w) = e.waiter.take() {
                    self.reply(
                        w,
                        Err(MappingError::Upstream(
                            "the PCP server ignores PREFER_FAILURE".into(),
                        )),
                    );
                }
                if let Some(e) = self.table.get_mut(&key) {
                    e.phase = Phase::Deleting;
                }
            }
            Event::Deleted { .. } => {
                self.by_pcp.remove(&id);
                e.pcp = None;
                if e.phase == Phase::Deleting {
                    self.remove_locally(key, AfterRemoval::Deleted);
                }
            }
            _ => {}
        }
    }

    fn granted(
        &mut self,
        now: Instant,
        key: MappingKey,
        id: MappingId,
        external: SocketAddrV4,
        event: Event,
    ) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        let before = e.external;
        e.external = Some(external);
        let phase = e.phase;
        match phase {
            Phase::PcpInFlight => {
                e.phase = Phase::Active;
                let waiter = e.waiter.take();
                let nat1_port = e.nat1_port;
                let mut mapping = e.mapping.clone();
                // AddAnyPortMapping: the key becomes the assigned port (NewReservedPort).
                let mut key = key;
                if e.created_by == CreatedBy::AddAnyPortMapping
                    && external.port() != key.external_port
                {
                    let new_key = MappingKey {
                        external_port: external.port(),
                        ..key
                    };
                    if !self.table.contains_key(&new_key) {
                        if let Some(mut moved) = self.table.remove(&key) {
                            moved.mapping.key = new_key;
                            mapping = moved.mapping.clone();
                            self.table.insert(new_key, moved);
                            self.by_pcp.insert(id, new_key);
                            key = new_key;
                        }
                    }
                }
                self.stats.created += 1;
                tracing::info!(
                    port = key.external_port, protocol = key.protocol.as_str(),
                    %external, nat1_port, "MAP SUCCESS: mapped through both NATs"
                );
                self.set_external(external);
                self.event(IwfEvent::Created {
                    key,
                    external,
                    nat1_port,
                });
                if let Some(w) = waiter {
                    self.reply(w, Ok(mapping));
                }
                self.persist();
            }
            Phase::Renewing => {
                e.phase = Phase::Active;
                let waiter = e.waiter.take();
                let mapping = e.mapping.clone();
                self.set_external(external);
                if let Some(w) = waiter {
                    self.reply(w, Ok(mapping));
                }
                // The lease end changed: persist it.
                self.persist();
            }
            Phase::Recovering | Phase::Active => {
                e.phase = Phase::Active;
                let restored =
                    phase == Phase::Recovering || matches!(event, Event::Restored { .. });
                if restored {
                    e.restores += 1;
                    self.stats.restores += 1;
                    let same_endpoint = before == Some(external);
                    tracing::info!(
                        port = key.external_port, %external, same_endpoint,
                        "mapping restored upstream"
                    );
                    self.event(IwfEvent::Restored {
                        key,
                        external,
                        same_endpoint,
                    });
                }
                self.set_external(external);
                if before != Some(external) {
                    // A new endpoint (Mapping Update, restore elsewhere): keep the file true.
                    self.persist();
                }
            }
            Phase::Deleting | Phase::RemovingNat1 | Phase::ReservingNat1 => {}
        }
        let _ = now;
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
