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
use pcp_client::wire::{Nonce, ResultCode};

use super::entry::{AfterRemoval, Entry, Phase};

mod create;
mod describe;
mod events;
mod probe;

use crate::mapping::{
    AddRequest, Lease, MappingError, MappingKey, PortChoice, PortMapping, Protocol,
};
use crate::nat1::{Nat1Error, Nat1Rule};
use crate::state::{CreatedBy, FrontEnd, LeaseEnd, StoredMapping};
pub use events::{add_error, delete_error};
pub use probe::{PROBE_EXTERNAL_PORT, PROBE_LIFETIME};
use probe::{ProbeKind, ProbeState};

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

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
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

    /// How many mappings the IGD shows at `now` ([`Core::mappings`] without the copies).
    pub fn count(&self, now: Instant) -> usize {
        self.table
            .values()
            .filter(|e| e.phase.visible() && !e.mapping.lease.expired(now))
            .count()
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
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
