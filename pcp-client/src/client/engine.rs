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

use crate::wire::{Nonce, Protocol};

use super::config::Config;
use super::epoch::EpochState;
use super::event::{ErrorCode, Event, MappingId, Path, ServerId, Version};
use super::request::{GiveUp, MapRequest, MappingUpdate, PeerRequest, RequestError, Spec};
use super::retransmit::{Limit, Retransmit};
use super::rng::{BoxRng, default_rng, seeded_rng};
use super::slab::Slab;

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
    /// The PORT_SET of the last successful response (RFC 7753: `None` means one port).
    pub granted_port_set: Option<crate::wire::PortSet>,
    /// PREFER_FAILURE successes that did not echo the suggestion while this request was
    /// unanswered (a server that ignores PREFER_FAILURE sends one per retransmission).
    pub stale_offers: u8,
    /// The next renewal attempt goes over NAT-PMP (set by the fallback).
    pub natpmp_next: bool,
    pub next_send: Option<Instant>,
    pub deadline: Option<Instant>,
    pub timer_gen: u32,
    pub queued: bool,
    /// Re-creating after state loss, an address failure or expiry: on the §8.1.1 schedule,
    /// unbounded, until answered (RFC 6887 §8.5, §14.1.3); the answer is [`Event::Restored`].
    pub recovering: bool,
    /// An [`Engine::update`] is in flight (§8.1.1 schedule, bounded by `give_up`).
    pub updating: bool,
    /// Bound of the current create or update exchange.
    pub give_up: Option<GiveUp>,
    /// The result of the last answer (SUCCESS included).
    pub last_result: Option<ErrorCode>,
}

impl Mapping {
    /// The MRC/MRD of a new §8.1.1 exchange of this mapping: deletes and first creates
    /// without a bound follow the engine; bounded creates and updates their own bound;
    /// re-creates (after state loss or expiry) and unbounded updates never give up.
    pub fn exchange_limit(&self) -> Option<Limit> {
        if self.deleting {
            self.give_up.map(GiveUp::limit)
        } else if self.updating {
            Some(self.give_up.map_or(Limit::UNBOUNDED, GiveUp::limit))
        } else if self.recovering || self.last_external.is_some() {
            Some(Limit::UNBOUNDED)
        } else {
            self.give_up.map(GiveUp::limit)
        }
    }

    /// Where the mapping stands.
    pub fn phase(&self) -> MappingPhase {
        if self.deleting {
            MappingPhase::Deleting
        } else if self.updating {
            MappingPhase::Updating
        } else if self.recovering || (self.grant.is_none() && self.last_external.is_some()) {
            MappingPhase::Recovering
        } else if self.grant.is_some() {
            MappingPhase::Active
        } else {
            MappingPhase::Creating
        }
    }

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
    /// Mappings re-created after state loss, an address failure or expiry
    /// ([`Event::Restored`]).
    pub restores: u64,
    /// Bounded exchanges that gave up ([`Event::GaveUp`]).
    pub gave_up: u64,
    /// Changes of the host's address towards a server ([`Engine::local_address_changed`]).
    pub renumberings: u64,
}

/// Where a mapping stands in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingPhase {
    /// The first request is out, unanswered.
    Creating,
    /// Granted; renewed per RFC 6887 §11.2.1.
    Active,
    /// An [`Engine::update`] is in flight.
    Updating,
    /// Being re-created after state loss, an address failure or expiry.
    Recovering,
    /// A delete is in flight.
    Deleting,
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
    /// The port set the server granted (RFC 7753); `None` when the last answer carried no
    /// PORT_SET, which means a single port.
    pub port_set: Option<crate::wire::PortSet>,
    /// A delete is in progress.
    pub deleting: bool,
    /// Where the mapping stands.
    pub phase: MappingPhase,
    /// THIRD_PARTY address, if the mapping is for another host.
    pub third_party: Option<IpAddr>,
    /// The last external endpoint ever granted (kept through expiry and state loss).
    pub last_external: Option<SocketAddr>,
    /// The requested lifetime (seconds).
    pub requested_lifetime: u32,
    /// PREFER_FAILURE is sent.
    pub prefer_failure: bool,
    /// The result code of the last answer (SUCCESS included); `None` before any.
    pub last_result: Option<ErrorCode>,
}

impl MappingInfo {
    /// Time left until the grant runs out at `now` (zero once expired; `None` if not granted).
    pub fn lifetime_left(&self, now: Instant) -> Option<Duration> {
        self.expires_at.map(|t| t.saturating_duration_since(now))
    }
}

/// The sans-IO PCP client (see the module docs of [`crate::client`]).
pub struct Engine {
    pub(crate) config: Config,
    pub(crate) rng: BoxRng,
    pub(crate) servers: Vec<Server>,
    pub(crate) mappings: Slab<Mapping>,
    pub(crate) index: HashMap<Key, u64>,
    pub(crate) timers: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    pub(crate) transmits: VecDeque<Job>,
    pub(crate) events: VecDeque<Event>,
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
            mappings: Slab::default(),
            index: HashMap::new(),
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

    /// Sizes of the internal queues: (timer heap entries, queued transmissions, queued
    /// events). For tests and fuzzing, which check that nothing grows without bound.
    pub fn queue_lengths(&self) -> (usize, usize, usize) {
        (self.timers.len(), self.transmits.len(), self.events.len())
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
            port_set: m.grant.and(m.granted_port_set),
            deleting: m.deleting,
            phase: m.phase(),
            third_party: m.spec.options.third_party,
            last_external: m.last_external,
            requested_lifetime: m.spec.lifetime,
            prefer_failure: m.spec.options.prefer_failure,
            last_result: m.last_result,
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
        let give_up = request.give_up;
        let (spec, nonce) = Spec::from_map(request)?;
        let id = self.insert(now, server, spec, nonce, false, give_up)?;
        Ok(id)
    }

    /// Changes a live mapping (RFC 6887 §11.2: a new request with the same nonce is a
    /// refresh of the same mapping): new lifetime, DESCRIPTION, FILTER set or
    /// PREFER_FAILURE. Granted mappings are refreshed at once on the §8.1.1 schedule,
    /// suggesting the current external endpoint, and [`Event::Updated`] reports the answer;
    /// a mapping still being created restarts its exchange with the new parameters. An
    /// invalid combination is refused and changes nothing.
    pub fn update(
        &mut self,
        now: Instant,
        id: MappingId,
        update: MappingUpdate,
    ) -> Result<(), RequestError> {
        let m = self
            .mappings
            .get(&id.0)
            .ok_or(RequestError::UnknownMapping(id.0))?;
        if m.deleting {
            return Err(RequestError::Deleting);
        }
        let mut spec = m.spec.clone();
        let peer = spec.remote.is_some();
        if let Some(lifetime) = update.lifetime {
            spec.lifetime = lifetime;
        }
        if let Some(description) = update.description {
            spec.options.description = description;
        }
        if let Some(filters) = update.filters {
            if peer {
                return Err(RequestError::MapOnlyOption("FILTER"));
            }
            spec.options.filters = filters;
            spec.options.replace_filters = true;
        }
        if let Some(on) = update.prefer_failure {
            if peer && on {
                return Err(RequestError::PreferFailureInPeer);
            }
            if on && spec.suggested_port == 0 && m.last_external.is_none() {
                return Err(RequestError::PreferFailureWithoutPort);
            }
            if on && spec.options.port_set.is_some() {
                return Err(RequestError::PortSetWithPreferFailure);
            }
            spec.options.prefer_failure = on;
        }
        spec.check_common()?;
        let granted = m.grant.is_some();
        let Some(m) = self.mappings.get_mut(&id.0) else {
            return Err(RequestError::UnknownMapping(id.0));
        };
        m.spec = spec;
        m.give_up = update.give_up;
        m.updating = granted;
        m.tx = None;
        m.hold_until = None;
        m.stale_offers = 0;
        m.next_send = Some(now);
        self.fire(now, id.0);
        Ok(())
    }

    /// Deletes a MAP this engine did not create (e.g. one made by an earlier run, whose nonce
    /// was stored): the request names protocol, internal port, family (suggested address),
    /// THIRD_PARTY, PORT_SET and the nonce, which is required. Sent and confirmed like
    /// [`Engine::delete`]; the lifetime and PREFER_FAILURE/FILTER are ignored; its
    /// [`MapRequest::give_up`] bounds the delete (else the engine's MRC/MRD).
    pub fn delete_mapping(
        &mut self,
        now: Instant,
        server: ServerId,
        mut request: MapRequest,
    ) -> Result<MappingId, RequestError> {
        if request.nonce.is_none() {
            return Err(RequestError::NonceRequired);
        }
        request.lifetime = 1;
        request.options.prefer_failure = false;
        request.options.filters.clear();
        request.options.replace_filters = false;
        let give_up = request.give_up;
        let (spec, nonce) = Spec::from_map(request)?;
        self.insert(now, server, spec, nonce, true, give_up)
    }

    /// Starts a PEER (RFC 6887 §12), retransmitted and renewed like a MAP.
    pub fn peer(
        &mut self,
        now: Instant,
        server: ServerId,
        request: PeerRequest,
    ) -> Result<MappingId, RequestError> {
        let (spec, nonce) = Spec::from_peer(request)?;
        self.insert(now, server, spec, nonce, false, None)
    }

    fn insert(
        &mut self,
        now: Instant,
        server: ServerId,
        spec: Spec,
        nonce: Option<Nonce>,
        deleting: bool,
        give_up: Option<GiveUp>,
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
        let id = self.mappings.next_id();
        let mapping = Mapping {
            server: server.0,
            spec,
            nonce,
            deleting,
            grant: None,
            last_external: None,
            tx: None,
            renew_k: 0,
            last_sent: None,
            awaiting: false,
            sent_path: s.active,
            hold_until: None,
            natpmp: false,
            stale_offers: 0,
            granted_port_set: None,
            natpmp_next: false,
            next_send: Some(now),
            deadline: None,
            timer_gen: 0,
            queued: false,
            recovering: false,
            updating: false,
            give_up,
            last_result: None,
        };
        let key = mapping.key();
        if self.index.contains_key(&key) {
            return Err(RequestError::Duplicate);
        }
        self.index.insert(key, id);
        self.mappings.insert(mapping);
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
            m.recovering = false;
            m.updating = false;
            m.give_up = None;
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
                self.compact_timers();
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
                // A renewal that went to the failed address is re-sent to the next one on
                // the §8.1.1 schedule, not as one more renewal attempt.
                if m.grant.is_some() && !m.deleting && !m.updating && m.tx.is_none() {
                    m.recovering = true;
                }
                m.next_send = Some(now);
            }
            self.fire(now, id);
        }
    }

    /// The host's source address towards `server`'s address number `path` (an index into
    /// [`Engine::server_paths`]) is now `local`: the host was renumbered by DHCP, an IPv6
    /// privacy address rotated, or it moved to another network (RFC 6887 §11.5, §8.4).
    ///
    /// A PCP server keys its mappings by the client's address, so every mapping at the
    /// server is created again from the new address at once: same nonce and parameters,
    /// suggesting its last external endpoint, on the §8.1.1 schedule until answered
    /// ([`Event::Restored`]). Error hold-downs the server gave the old address are dropped
    /// with it. The server's mappings for the old address are left to lapse: deleting them
    /// takes a request from the old address, which is usually gone. Reports
    /// [`Event::Renumbered`] and returns the number of mappings re-created; an unknown
    /// server or path, or an unchanged address, changes nothing and returns 0.
    pub fn local_address_changed(
        &mut self,
        now: Instant,
        server: ServerId,
        path: usize,
        local: IpAddr,
    ) -> usize {
        let Some(p) = self
            .servers
            .get_mut(server.0)
            .and_then(|s| s.paths.get_mut(path))
        else {
            return 0;
        };
        if p.local == local {
            return 0;
        }
        let previous = std::mem::replace(&mut p.local, local);
        let count = self
            .mappings
            .values()
            .filter(|m| m.server == server.0)
            .count();
        tracing::info!(%previous, %local, mappings = count, "PCP client address changed: re-creating its mappings");
        self.stats.renumberings += 1;
        self.push_event(Event::Renumbered {
            server,
            previous,
            local,
        });
        self.renew_all(now, server.0, None);
        count
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
        match event {
            Event::Failed { .. }
            | Event::TimedOut { .. }
            | Event::ServerStateLost { .. }
            | Event::ServerUnreachable { .. }
            | Event::PreferFailureIgnored { .. }
            | Event::Expired { .. } => tracing::info!(?event, "PCP client"),
            _ => tracing::debug!(?event, "PCP client"),
        }
        let cap = self.config.max_queued_events;
        if cap != 0 && self.events.len() >= cap {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    pub(crate) fn find_path(&self, remote: SocketAddr) -> Option<(usize, usize)> {
        self.servers.iter().enumerate().find_map(|(i, s)| {
            s.paths
                .iter()
                .position(|p| p.remote == remote)
                .map(|path| (i, path))
        })
    }
}

#[cfg(test)]
mod size_tests {
    // Memory per mapping (BENCHMARKS: bytes per mapping): keep the per-mapping state compact.
    #[test]
    fn mapping_state_stays_compact() {
        let mapping = std::mem::size_of::<super::Mapping>();
        let key = std::mem::size_of::<super::Key>();
        assert!(mapping <= 480, "Mapping is {mapping} bytes");
        assert!(key <= 64, "Key is {key} bytes");
    }
}
