//! The sans-IO PCP client engine: mapping table, timers and transmissions.
//!
//! Driven like quinn-proto: the driver feeds datagrams ([`Engine::handle_datagram`]), ICMP
//! errors ([`Engine::handle_icmp_error`]) and timeouts ([`Engine::handle_timeout`]) with the
//! current [`Instant`], and drains [`Engine::poll_transmit`] and [`Engine::poll_event`];
//! [`Engine::poll_timeout`] says when to call back. Nothing here touches a socket or a clock.
//! Response processing lives in `receive.rs`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::natpmp;
use crate::wire::{Nonce, Protocol};

use super::config::{self, Config};
use super::epoch::EpochState;
use super::event::{Event, MappingId, Path, ServerId, Transmit, Version};
use super::renewal;
use super::request::{self, MapRequest, PeerRequest, RequestError, Send, Spec};
use super::retransmit::Retransmit;
use super::rng::{BoxRng, default_rng, seeded_rng};

/// What a response is matched on (RFC 6887 §11.4, §12.4): never the fields the server fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub server: usize,
    /// THIRD_PARTY address; `None` means this host's own address on the path.
    pub third_party: Option<IpAddr>,
    pub protocol: Protocol,
    pub internal_port: u16,
    pub nonce: Nonce,
    /// PEER only.
    pub remote: Option<(IpAddr, u16)>,
}

/// What the server granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub external: SocketAddr,
    pub lifetime: u32,
    pub granted_at: Instant,
    pub expires_at: Instant,
    pub via: Version,
}

/// One mapping's state.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub server: usize,
    pub spec: Spec,
    pub nonce: Nonce,
    pub deleting: bool,
    pub grant: Option<Grant>,
    /// The last external endpoint granted: suggested again after expiry or state loss.
    pub last_external: Option<SocketAddr>,
    /// The §8.1.1 schedule, while creating, re-creating after expiry, or deleting.
    pub tx: Option<Retransmit>,
    /// Renewal attempts sent for the current grant.
    pub renew_k: u32,
    pub last_sent: Option<Instant>,
    /// A request is out and unanswered.
    pub awaiting: bool,
    /// Path index of the last transmission.
    pub sent_path: usize,
    /// Error hold-down (RFC 6887 §8.3).
    pub hold_until: Option<Instant>,
    /// The current exchange goes over NAT-PMP.
    pub natpmp: bool,
    /// The next renewal attempt goes over NAT-PMP (set by the fallback).
    pub natpmp_next: bool,
    pub next_send: Option<Instant>,
    pub deadline: Option<Instant>,
    pub timer_gen: u32,
    pub queued: bool,
}

impl Mapping {
    pub fn key(&self) -> Key {
        Key {
            server: self.server,
            third_party: self.spec.options.third_party,
            protocol: self.spec.protocol,
            internal_port: self.spec.internal_port,
            nonce: self.nonce,
            remote: self.spec.remote,
        }
    }
}

/// A solicited ANNOUNCE in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnnounceTx {
    pub tx: Retransmit,
    pub next: Instant,
    pub queued: bool,
}

/// Per-server state (RFC 6887 §8.5 epoch, §8.3 hold-downs; RFC 7488 §3 address list).
#[derive(Debug)]
pub(crate) struct Server {
    pub paths: Vec<Path>,
    pub failed: Vec<bool>,
    pub active: usize,
    /// The address that answered last (kept until it stops answering).
    pub answered: Option<usize>,
    /// Every address failed: try again then.
    pub retry_at: Option<Instant>,
    pub epoch: EpochState,
    pub natpmp_epoch: Option<(Instant, u32)>,
    pub natpmp_external: Option<Ipv4Addr>,
    pub natpmp_external_queued: bool,
    /// NO_RESOURCES after a create or renew: no new-mapping requests until then.
    pub hold_new_until: Option<Instant>,
    /// NO_RESOURCES after a delete: no requests at all until then.
    pub hold_all_until: Option<Instant>,
    /// An ANNOUNCE showed state loss: re-create everything then (0 to 5 s later).
    pub renew_all_at: Option<Instant>,
    pub announce: Option<AnnounceTx>,
}

/// What is waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    Mapping(u64),
    Announce(usize),
    NatPmpExternal(usize),
}

/// Counters for metrics (`pcp_client_*_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the driver.
    pub transmissions: u64,
    /// Of those, retransmissions of an unanswered request.
    pub retransmissions: u64,
    /// Renewal attempts sent.
    pub renewals: u64,
    /// Responses that matched a request and were applied.
    pub responses: u64,
    /// Datagrams dropped by the §8.3 rules (wrong source, short, R = 0, bad length, no match).
    pub dropped: u64,
    /// PREFER_FAILURE successes that did not echo the suggestion (stale Mapping Updates, §13.2).
    pub stale_updates: u64,
    /// Invalid epochs seen (state loss).
    pub epoch_resets: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

/// A read-only view of one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    /// The server it lives at.
    pub server: ServerId,
    /// Its nonce (store it to renew or delete after a restart).
    pub nonce: Nonce,
    /// Protocol.
    pub protocol: Protocol,
    /// Internal port.
    pub internal_port: u16,
    /// The current external endpoint, if granted.
    pub external: Option<SocketAddr>,
    /// The granted lifetime (seconds).
    pub lifetime: Option<u32>,
    /// When the grant runs out.
    pub expires_at: Option<Instant>,
    /// The protocol of the last grant.
    pub via: Option<Version>,
    /// A delete is in progress.
    pub deleting: bool,
}

/// The sans-IO PCP client (see the module docs of [`crate::client`]).
pub struct Engine {
    pub(crate) config: Config,
    pub(crate) rng: BoxRng,
    pub(crate) servers: Vec<Server>,
    pub(crate) mappings: HashMap<u64, Mapping>,
    pub(crate) index: HashMap<Key, u64>,
    next_id: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    pub(crate) transmits: VecDeque<Job>,
    events: VecDeque<Event>,
    pub(crate) stats: Stats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("servers", &self.servers.len())
            .field("mappings", &self.mappings.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with an OS-seeded CSPRNG: random nonces and a jitter sequence that differs
    /// on every start (RFC 6887 §8.1.1, §11.2).
    pub fn new(config: Config) -> Self {
        Self::with_rng(config, default_rng())
    }

    /// An engine with a reproducible RNG (tests, benchmarks, fuzzing). Do not use a seeded
    /// RNG in production: nonces must be unguessable.
    pub fn with_seed(config: Config, seed: u64) -> Self {
        Self::with_rng(config, seeded_rng(seed))
    }

    /// An engine with the given RNG.
    pub fn with_rng(mut config: Config, rng: BoxRng) -> Self {
        // A zero IRT would retransmit in a loop without time passing.
        config.irt = config.irt.max(Duration::from_millis(1));
        config.natpmp_irt = config.natpmp_irt.max(Duration::from_millis(1));
        config.max_lifetime = config.max_lifetime.max(1);
        Engine {
            config,
            rng,
            servers: Vec::new(),
            mappings: HashMap::new(),
            index: HashMap::new(),
            next_id: 1,
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Adds a server with its addresses in preference order (RFC 7488 §3: the caller sorts
    /// them per RFC 6724). Several addresses of one server share nonces and epoch state; use
    /// separate servers for separate PCP servers (RFC 7488 §4). An empty list is refused.
    pub fn add_server(&mut self, paths: Vec<Path>) -> Option<ServerId> {
        if paths.is_empty() {
            return None;
        }
        self.servers.push(Server {
            failed: vec![false; paths.len()],
            paths,
            active: 0,
            answered: None,
            retry_at: None,
            epoch: EpochState::new(),
            natpmp_epoch: None,
            natpmp_external: None,
            natpmp_external_queued: false,
            hold_new_until: None,
            hold_all_until: None,
            renew_all_at: None,
            announce: None,
        });
        Some(ServerId(self.servers.len() - 1))
    }

    /// The addresses of a server.
    pub fn server_paths(&self, server: ServerId) -> Option<&[Path]> {
        self.servers.get(server.0).map(|s| s.paths.as_slice())
    }

    /// The server's last epoch, if it answered.
    pub fn server_epoch(&self, server: ServerId) -> Option<u32> {
        self.servers.get(server.0)?.epoch.last_epoch()
    }

    /// Number of mappings held (any state).
    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }

    /// Ids of every mapping, in no particular order.
    pub fn mapping_ids(&self) -> impl Iterator<Item = MappingId> + '_ {
        self.mappings.keys().map(|&id| MappingId(id))
    }

    /// A view of one mapping.
    pub fn mapping(&self, id: MappingId) -> Option<MappingInfo> {
        let m = self.mappings.get(&id.0)?;
        Some(MappingInfo {
            server: ServerId(m.server),
            nonce: m.nonce,
            protocol: m.spec.protocol,
            internal_port: m.spec.internal_port,
            external: m.grant.map(|g| g.external),
            lifetime: m.grant.map(|g| g.lifetime),
            expires_at: m.grant.map(|g| g.expires_at),
            via: m.grant.map(|g| g.via),
            deleting: m.deleting,
        })
    }

    /// Starts a MAP (RFC 6887 §11): the first transmission is queued at once, then it is
    /// retransmitted (§8.1.1) until answered, and renewed (§11.2.1) until deleted or forgotten.
    pub fn map(
        &mut self,
        now: Instant,
        server: ServerId,
        request: MapRequest,
    ) -> Result<MappingId, RequestError> {
        let (spec, nonce) = Spec::from_map(request)?;
        self.insert(now, server, spec, nonce)
    }

    /// Starts a PEER (RFC 6887 §12), retransmitted and renewed like a MAP.
    pub fn peer(
        &mut self,
        now: Instant,
        server: ServerId,
        request: PeerRequest,
    ) -> Result<MappingId, RequestError> {
        let (spec, nonce) = Spec::from_peer(request)?;
        self.insert(now, server, spec, nonce)
    }

    fn insert(
        &mut self,
        now: Instant,
        server: ServerId,
        spec: Spec,
        nonce: Option<Nonce>,
    ) -> Result<MappingId, RequestError> {
        let s = self
            .servers
            .get(server.0)
            .ok_or(RequestError::UnknownServer(server.0))?;
        if let Some(tp) = spec.options.third_party {
            if s.paths.iter().any(|p| p.local == tp) {
                return Err(RequestError::ThirdPartyIsSelf(tp));
            }
        }
        let nonce = match nonce {
            Some(n) => {
                // RFC 6887 §11.2: nonces MUST differ between servers.
                if self
                    .mappings
                    .values()
                    .any(|m| m.nonce == n && m.server != server.0)
                {
                    return Err(RequestError::NonceUsedAtAnotherServer);
                }
                n
            }
            None => {
                let mut n = [0u8; 12];
                self.rng.fill_bytes(&mut n);
                Nonce(n)
            }
        };
        let id = self.next_id;
        let mapping = Mapping {
            server: server.0,
            spec,
            nonce,
            deleting: false,
            grant: None,
            last_external: None,
            tx: None,
            renew_k: 0,
            last_sent: None,
            awaiting: false,
            sent_path: s.active,
            hold_until: None,
            natpmp: false,
            natpmp_next: false,
            next_send: Some(now),
            deadline: None,
            timer_gen: 0,
            queued: false,
        };
        let key = mapping.key();
        if self.index.contains_key(&key) {
            return Err(RequestError::Duplicate);
        }
        self.next_id += 1;
        self.index.insert(key, id);
        self.mappings.insert(id, mapping);
        self.fire(now, id);
        Ok(MappingId(id))
    }

    /// Deletes a MAP (RFC 6887 §15.1 with erratum 3621): lifetime 0, suggested port 0, the
    /// all-zeros address of the mapping's family, the same nonce; retransmitted like any
    /// request; [`Event::Deleted`] when the server confirms. A PEER cannot be deleted
    /// (§12): it is forgotten at once and reported as deleted.
    pub fn delete(&mut self, now: Instant, id: MappingId) -> Result<(), RequestError> {
        let m = self
            .mappings
            .get_mut(&id.0)
            .ok_or(RequestError::UnknownMapping(id.0))?;
        if m.spec.remote.is_some() {
            self.forget(id);
            self.push_event(Event::Deleted { id });
            return Ok(());
        }
        if !m.deleting {
            m.deleting = true;
            m.tx = None;
            m.hold_until = None;
            m.natpmp = false;
            m.next_send = Some(now);
            self.fire(now, id.0);
        }
        Ok(())
    }

    /// Stops managing a mapping without telling the server; it lapses at the end of its
    /// lifetime. Returns false if there was no such mapping.
    pub fn forget(&mut self, id: MappingId) -> bool {
        match self.mappings.remove(&id.0) {
            Some(m) => {
                self.index.remove(&m.key());
                true
            }
            None => false,
        }
    }

    /// Sends a solicited ANNOUNCE (RFC 6887 §14.1; lifetime 0) to learn the server's epoch;
    /// [`Event::Announced`] reports the answer. Retransmitted per §8.1.1 until answered or
    /// cancelled with [`Engine::cancel_announce`].
    pub fn announce(&mut self, now: Instant, server: ServerId) -> Result<(), RequestError> {
        let s = self
            .servers
            .get_mut(server.0)
            .ok_or(RequestError::UnknownServer(server.0))?;
        let mut tx = Retransmit::new(now, self.config.irt, s.active);
        let next = tx.on_transmit(now, s.active, &self.config, &mut *self.rng);
        let queued = s.announce.is_some_and(|a| a.queued);
        s.announce = Some(AnnounceTx {
            tx,
            next,
            queued: true,
        });
        if !queued {
            self.transmits.push_back(Job::Announce(server.0));
        }
        Ok(())
    }

    /// Stops retransmitting a solicited ANNOUNCE.
    pub fn cancel_announce(&mut self, server: ServerId) {
        if let Some(s) = self.servers.get_mut(server.0) {
            s.announce = None;
        }
    }

    /// Forgets every hold-down (error lifetimes and NO_RESOURCES), for a host that moved to a
    /// new network (RFC 6887 §8.3, MAY).
    pub fn clear_hold_downs(&mut self, now: Instant) {
        for s in &mut self.servers {
            s.hold_new_until = None;
            s.hold_all_until = None;
        }
        let ids: Vec<u64> = self
            .mappings
            .iter_mut()
            .filter_map(|(&id, m)| m.hold_until.take().map(|_| id))
            .collect();
        for id in ids {
            if let Some(m) = self.mappings.get_mut(&id) {
                m.next_send = Some(now);
            }
            self.reschedule(id);
        }
    }

    /// A hard ICMP error (port or host unreachable) for datagrams sent to `remote`. For a
    /// multi-address server the engine moves to the next address at once (RFC 7488 §3, MUST).
    pub fn handle_icmp_error(&mut self, now: Instant, remote: SocketAddr) {
        let Some((server, path)) = self.find_path(remote) else {
            return;
        };
        if self.servers[server].paths.len() < 2 || self.servers[server].failed[path] {
            return;
        }
        self.fail_path(now, server, path);
        let ids: Vec<u64> = self
            .mappings
            .iter()
            .filter(|(_, m)| m.server == server && m.awaiting && m.sent_path == path)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(m) = self.mappings.get_mut(&id) {
                m.next_send = Some(now);
            }
            self.fire(now, id);
        }
    }

    /// When the engine next needs [`Engine::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Drop stale heap entries so the top is a live deadline.
        while let Some(Reverse((at, id, generation))) = self.timers.peek().copied() {
            match self.mappings.get(&id) {
                Some(m) if m.timer_gen == generation && m.deadline == Some(at) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let mapping = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let server = self
            .servers
            .iter()
            .flat_map(|s| [s.renew_all_at, s.announce.map(|a| a.next)])
            .flatten()
            .min();
        match (mapping, server) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for server in 0..self.servers.len() {
            if self.servers[server].renew_all_at.is_some_and(|t| t <= now) {
                self.servers[server].renew_all_at = None;
                self.renew_all(now, server, None);
            }
            self.announce_timer(now, server);
        }
        let mut due = Vec::new();
        while let Some(Reverse((at, id, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self
                .mappings
                .get(&id)
                .is_some_and(|m| m.timer_gen == generation && m.deadline == Some(at))
            {
                due.push(id);
            }
        }
        for id in due {
            if let Some(m) = self.mappings.get_mut(&id) {
                m.deadline = None;
            }
            self.fire(now, id);
        }
    }

    fn announce_timer(&mut self, now: Instant, server: usize) {
        let s = &mut self.servers[server];
        let Some(a) = s.announce.as_mut() else {
            return;
        };
        if a.next > now {
            return;
        }
        if a.tx.exhausted(now, &self.config) {
            s.announce = None;
            return;
        }
        a.next =
            a.tx.on_transmit(now, s.active, &self.config, &mut *self.rng);
        self.stats.retransmissions += 1;
        if !a.queued {
            a.queued = true;
            self.transmits.push_back(Job::Announce(server));
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn push_event(&mut self, event: Event) {
        if self.events.len() >= config::MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Writes the next datagram to send into `buf` (at least 1100 bytes; a shorter buffer
    /// makes requests that do not fit be skipped) and says where it goes.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(job) = self.transmits.pop_front() {
            if let Some(t) = self.build(job, buf) {
                self.stats.transmissions += 1;
                return Some(t);
            }
        }
        None
    }

    fn build(&mut self, job: Job, buf: &mut [u8]) -> Option<Transmit> {
        match job {
            Job::Announce(server) => {
                let s = self.servers.get_mut(server)?;
                let a = s.announce.as_mut()?;
                a.queued = false;
                let path = s.paths.get(a.tx.address)?;
                let len = request::emit_announce(path.local, buf).ok()?;
                Some(Transmit {
                    destination: path.remote,
                    source: path.local,
                    len,
                })
            }
            Job::NatPmpExternal(server) => {
                let s = self.servers.get_mut(server)?;
                s.natpmp_external_queued = false;
                let path = s.paths.get(s.active)?;
                let len = natpmp::RequestRepr::ExternalAddress.emit(buf).ok()?;
                Some(Transmit {
                    destination: path.remote,
                    source: path.local,
                    len,
                })
            }
            Job::Mapping(id) => {
                let m = self.mappings.get_mut(&id)?;
                m.queued = false;
                let path = *self.servers.get(m.server)?.paths.get(m.sent_path)?;
                // Renewals suggest the last assigned endpoint (RFC 6887 §11.2.1), and so do
                // re-creates after expiry or state loss (§14.1.3).
                let suggested = match m.grant.map(|g| g.external).or(m.last_external) {
                    Some(e) if e.ip().is_ipv4() == m.spec.suggested_address.is_ipv4() => {
                        (e.ip(), e.port())
                    }
                    _ => (m.spec.suggested_address, m.spec.suggested_port),
                };
                let len = if m.natpmp {
                    let protocol = if m.spec.protocol == Protocol::TCP {
                        natpmp::Protocol::Tcp
                    } else {
                        natpmp::Protocol::Udp
                    };
                    let (port, lifetime) = if m.deleting {
                        (0, 0)
                    } else {
                        (suggested.1, m.spec.lifetime)
                    };
                    natpmp::RequestRepr::from_fields(protocol, m.spec.internal_port, port, lifetime)
                        .emit(buf)
                        .ok()?
                } else {
                    let send = Send {
                        client_ip: path.local,
                        nonce: m.nonce,
                        suggested,
                        delete: m.deleting,
                    };
                    request::emit_pcp(&m.spec, send, buf).ok()?
                };
                Some(Transmit {
                    destination: path.remote,
                    source: path.local,
                    len,
                })
            }
        }
    }

    pub(crate) fn find_path(&self, remote: SocketAddr) -> Option<(usize, usize)> {
        self.servers.iter().enumerate().find_map(|(i, s)| {
            s.paths
                .iter()
                .position(|p| p.remote == remote)
                .map(|path| (i, path))
        })
    }

    /// Marks an address failed and picks the next one (RFC 7488 §3). An address that had
    /// answered and then stopped clears the list and starts over.
    fn fail_path(&mut self, now: Instant, server: usize, path: usize) {
        let s = &mut self.servers[server];
        if s.answered == Some(path) {
            s.failed.iter_mut().for_each(|f| *f = false);
            s.answered = None;
        }
        s.failed[path] = true;
        match s.failed.iter().position(|f| !f) {
            Some(next) => s.active = next,
            None => {
                s.retry_at = Some(now + self.config.all_failed_retry);
                self.push_event(Event::ServerUnreachable {
                    server: ServerId(server),
                });
            }
        }
    }

    /// Handles a mapping whose deadline came: expiry, error hold-down end, a retransmission,
    /// or a renewal attempt.
    pub(crate) fn fire(&mut self, now: Instant, id: u64) {
        self.step(now, id);
        self.reschedule(id);
    }

    fn step(&mut self, now: Instant, id: u64) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let server = m.server;
        // Expiry: fall back to the §8.1.1 schedule (digest §2.6 impl note).
        if let Some(g) = m.grant {
            if now >= g.expires_at && !m.deleting {
                m.grant = None;
                m.tx = None;
                m.renew_k = 0;
                m.next_send = Some(now);
                self.push_event(Event::Expired { id: MappingId(id) });
            }
        }
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        if m.next_send.is_none_or(|t| t > now) {
            return;
        }
        // Hold-downs (RFC 6887 §8.3, §11.4) and the RFC 7488 15-minute wait.
        let s = &mut self.servers[server];
        if s.retry_at.is_some_and(|t| t <= now) {
            s.retry_at = None;
            s.failed.iter_mut().for_each(|f| *f = false);
            s.active = 0;
            s.answered = None;
        }
        let new_mapping = m.grant.is_none() && !m.deleting;
        let hold = [
            m.hold_until,
            s.hold_all_until,
            s.hold_new_until.filter(|_| new_mapping),
            s.retry_at,
        ]
        .into_iter()
        .flatten()
        .filter(|&t| t > now)
        .max();
        if let Some(until) = hold {
            m.next_send = Some(until);
            return;
        }
        if m.hold_until.take().is_some() && m.tx.is_some_and(|tx| tx.transmissions > 0) {
            m.tx = None;
        }
        let renewal = m.grant.is_some() && !m.deleting;
        if renewal {
            // A renewal attempt: one transmission per §11.2.1 window.
            m.natpmp = std::mem::take(&mut m.natpmp_next);
            if !m.natpmp {
                m.renew_k = m.renew_k.saturating_add(1);
            }
            m.tx = None;
            self.stats.renewals += 1;
            let path = s.active;
            self.transmit(now, id, path);
            let m = match self.mappings.get_mut(&id) {
                Some(m) => m,
                None => return,
            };
            m.next_send = m.grant.and_then(|g| {
                renewal::next_attempt(
                    &mut *self.rng,
                    g.granted_at,
                    Duration::from_secs(u64::from(g.lifetime)),
                    m.renew_k + 1,
                    Some(now),
                )
            });
            return;
        }
        // The §8.1.1 schedule (create, re-create, delete).
        let mut tx = match m.tx {
            Some(tx) => tx,
            None => {
                m.natpmp = false;
                Retransmit::new(now, self.config.irt, s.active)
            }
        };
        if tx.transmissions > 0 {
            if tx.exhausted(now, &self.config) {
                self.forget(MappingId(id));
                self.push_event(Event::TimedOut { id: MappingId(id) });
                return;
            }
            if s.paths.len() > 1 && tx.address_exhausted(&self.config) && tx.address == s.active {
                self.fail_path(now, server, tx.address);
                if let Some(retry) = self.servers[server].retry_at {
                    if let Some(m) = self.mappings.get_mut(&id) {
                        m.tx = None;
                        m.next_send = Some(retry);
                    }
                    return;
                }
            }
            self.stats.retransmissions += 1;
        }
        let path = self.servers[server].active;
        let next = tx.on_transmit(now, path, &self.config, &mut *self.rng);
        if let Some(m) = self.mappings.get_mut(&id) {
            m.tx = Some(tx);
            m.next_send = Some(next);
        }
        self.transmit(now, id, path);
    }

    /// Queues one transmission of a mapping's request on `path`.
    fn transmit(&mut self, now: Instant, id: u64, path: usize) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        m.last_sent = Some(now);
        m.awaiting = true;
        m.sent_path = path;
        let (server, natpmp) = (m.server, m.natpmp);
        if !m.queued {
            m.queued = true;
            self.transmits.push_back(Job::Mapping(id));
        }
        // NAT-PMP maps carry no external address: ask the gateway for it alongside.
        let s = &mut self.servers[server];
        if natpmp && s.natpmp_external.is_none() && !s.natpmp_external_queued {
            s.natpmp_external_queued = true;
            self.transmits.push_back(Job::NatPmpExternal(server));
        }
    }

    /// Recomputes a mapping's deadline (next send or expiry) and pushes it on the heap.
    pub(crate) fn reschedule(&mut self, id: u64) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let expiry = m.grant.filter(|_| !m.deleting).map(|g| g.expires_at);
        let deadline = match (m.next_send, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline == m.deadline {
            return;
        }
        m.deadline = deadline;
        m.timer_gen = m.timer_gen.wrapping_add(1);
        if let Some(at) = deadline {
            self.timers.push(Reverse((at, id, m.timer_gen)));
        }
        // Lazy deletion leaves stale entries; rebuild before they outnumber live ones.
        if self.timers.len() > 2 * self.mappings.len() + 64 {
            self.timers = self
                .mappings
                .iter()
                .filter_map(|(&id, m)| m.deadline.map(|at| Reverse((at, id, m.timer_gen))))
                .collect();
        }
    }

    /// Re-sends every mapping at `server` now (state loss, RFC 6887 §8.5, §14.1.3), except
    /// `except` (whose response showed the loss and already refreshed it). Hold-downs learned
    /// from the server before it lost its state are dropped.
    pub(crate) fn renew_all(&mut self, now: Instant, server: usize, except: Option<u64>) {
        let s = &mut self.servers[server];
        s.hold_new_until = None;
        s.hold_all_until = None;
        let ids: Vec<u64> = self
            .mappings
            .iter()
            .filter(|&(&id, m)| m.server == server && Some(id) != except)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(m) = self.mappings.get_mut(&id) {
                m.hold_until = None;
                if m.grant.is_none() || m.deleting {
                    m.tx = None;
                }
                m.next_send = Some(now);
            }
            self.fire(now, id);
        }
    }

    /// Applies an error hold-down to a mapping (RFC 6887 §8.3: do not resend the same
    /// request within the error lifetime).
    pub(crate) fn hold(&mut self, now: Instant, id: u64, seconds: u32) {
        if let Some(m) = self.mappings.get_mut(&id) {
            let until = now + Duration::from_secs(u64::from(seconds));
            m.hold_until = Some(until);
            m.awaiting = false;
            m.tx = None;
            m.next_send = Some(until);
        }
        self.reschedule(id);
    }

    /// Records a grant and schedules the first renewal (RFC 6887 §11.4: MUST set a timer).
    pub(crate) fn grant(
        &mut self,
        now: Instant,
        id: u64,
        external: SocketAddr,
        lifetime: u32,
        epoch: u32,
        via: Version,
    ) {
        let lifetime = lifetime.min(self.config.max_lifetime);
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let previous = m.grant.map(|g| g.external);
        let life = Duration::from_secs(u64::from(lifetime));
        m.grant = Some(Grant {
            external,
            lifetime,
            granted_at: now,
            expires_at: now + life,
            via,
        });
        m.last_external = Some(external);
        m.tx = None;
        m.awaiting = false;
        m.hold_until = None;
        m.renew_k = 0;
        m.next_send = renewal::next_attempt(&mut *self.rng, now, life, 1, m.last_sent);
        let id = MappingId(id);
        let event = match previous {
            None => Event::Granted {
                id,
                external,
                lifetime,
                epoch,
                via,
            },
            Some(previous) if previous == external => Event::Renewed {
                id,
                external,
                lifetime,
            },
            Some(previous) => Event::Changed {
                id,
                previous,
                external,
                lifetime,
            },
        };
        self.push_event(event);
        self.reschedule(id.0);
    }
}
