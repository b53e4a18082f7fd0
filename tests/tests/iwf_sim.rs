//! The upnp-iwf interworking core (`upnp_iwf::iwf::Core`, RFC 6970) against cgn-sim's PCP
//! server engine (`cgn_sim::server::Server`, RFC 6887) in simulated time: no processes, no
//! sockets, no privileges, no sleeping. A lossy simulated link (seeded) carries the PCP
//! datagrams both ways, NAT1 commands are answered at once, and the clock is an `Instant`
//! the test advances to the next timer of either side.
//!
//! What it shows: UPnP adds become PCP MAPs whose internal port is the NAT1 port and whose
//! leases end on both sides; a CGN restart and an IWF restart are both recovered with the
//! stored nonces and the same external ports; a Mapping Update reaches the table; PCP
//! errors reach the control point as IGD errors with the NAT1 rule rolled back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use cgn_sim::config::{EngineConfig, PoolConfig, SectionConfig};
use cgn_sim::server::{Interface, Server};
use pcp_client::client::GiveUp;
use pcp_client::wire::{Nonce, Opcode, ResultCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use upnp_iwf::iwf::{Core, CoreConfig, IwfEvent, Nat1Command, Output, Phase, Request};
use upnp_iwf::mapping::{
    AddRequest, Lease, MappingError, MappingKey, PortChoice, PortMapping, Protocol,
};
use upnp_iwf::state::StoredMapping;

/// The CGN's PCP server address (the CPE's default gateway side).
const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 5351));
/// The CPE's WAN address (the PCP client, NAT1's outside address).
const CPE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// The LAN hosts.
const HOST_A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
const HOST_B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);
/// The CGN's external pool.
const POOL: &str = "198.51.100.0/28";
/// Protocol number of UDP in the server's table.
const UDP: u8 = 17;
/// Most loop iterations of one `run_until` (every iteration advances time or drains work).
const GUARD: usize = 200_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One MAP at the server, as the test compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServerMap {
    subscriber: Ipv4Addr,
    internal_port: u16,
    external: SocketAddrV4,
    nonce: Nonce,
}

/// The core, the server, the link between them and the clock.
struct Sim {
    core: Core,
    server: Server,
    t0: Instant,
    wall0: SystemTime,
    now: Instant,
    /// Loss on the link, both directions (each datagram lost with this probability).
    rng: StdRng,
    loss: f64,
    /// The CPE's PCP socket port (a restarted IWF binds another one).
    cpe_port: u16,
    next_request: u64,
    /// Requests sent by the test and not answered yet.
    sent_requests: BTreeSet<u64>,
    replies: HashMap<u64, Result<PortMapping, MappingError>>,
    /// Every NAT1 command, in order.
    nat1: Vec<Nat1Command>,
    /// The last state file written.
    persisted: Option<Vec<StoredMapping>>,
    events: Vec<(Instant, IwfEvent)>,
    /// PCP datagrams the core sent (lost or not).
    pcp_sent: usize,
}

impl Sim {
    fn new(seed: u64, loss: f64, server_config: EngineConfig) -> Sim {
        Self::with_core_config(seed, loss, server_config, |_| {})
    }

    fn with_core_config(
        seed: u64,
        loss: f64,
        server_config: EngineConfig,
        tweak: impl FnOnce(&mut CoreConfig),
    ) -> Sim {
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        let mut config = CoreConfig::new(SERVER, CPE);
        tweak(&mut config);
        let core = Core::with_seed(config, seed, t0, wall0);
        let server = Server::new(
            server_config,
            t0,
            Box::new(StdRng::seed_from_u64(seed ^ 0x5e57)),
        )
        .expect("server config is valid");
        Sim {
            core,
            server,
            t0,
            wall0,
            now: t0,
            rng: StdRng::seed_from_u64(seed ^ 0x1055),
            loss,
            cpe_port: 40_000,
            next_request: 1,
            sent_requests: BTreeSet::new(),
            replies: HashMap::new(),
            nat1: Vec::new(),
            persisted: None,
            events: Vec::new(),
            pcp_sent: 0,
        }
    }

    fn at(&self, s: u64) -> Instant {
        self.t0 + secs(s)
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.gen_bool(self.loss)
    }

    fn cpe(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(CPE, self.cpe_port))
    }

    /// Takes every output of the core; NAT1 commands succeed at once.
    fn drain_outputs(&mut self) {
        let mut guard = 0;
        while let Some(out) = self.core.poll_output() {
            guard += 1;
            assert!(guard < GUARD, "the core keeps producing outputs");
            match out {
                Output::Reply { request, result } => {
                    assert!(
                        self.sent_requests.remove(&request),
                        "reply to request {request}, which is not waiting: {result:?}"
                    );
                    self.replies.insert(request, result);
                }
                Output::Nat1 { op, command } => {
                    self.nat1.push(command);
                    self.core.handle_nat1_result(self.now, op, Ok(()));
                }
                Output::External { request, .. } => {
                    assert!(self.sent_requests.remove(&request), "probe {request}");
                }
                Output::Persist(stored) => self.persisted = Some(stored),
                Output::Event(e) => self.events.push((self.now, e)),
            }
        }
    }

    /// Delivers everything either side has to send at `now`, until both are quiet.
    fn pump(&mut self) {
        let mut buf = [0u8; 1100];
        let mut answer = [0u8; 1100];
        let mut guard = 0;
        loop {
            guard += 1;
            assert!(guard < GUARD, "the link never goes quiet");
            self.drain_outputs();
            let mut busy = false;
            while let Some(t) = self.core.poll_transmit(self.now, &mut buf) {
                busy = true;
                self.pcp_sent += 1;
                assert_eq!(t.destination, SERVER, "PCP goes to the configured server");
                let Some(bytes) = buf.get(..t.len) else {
                    panic!("transmit longer than the buffer: {}", t.len);
                };
                if self.lost() {
                    continue;
                }
                let cpe = self.cpe();
                let Some(n) =
                    self.server
                        .handle(self.now, cpe, Interface::Inside, bytes, &mut answer)
                else {
                    continue;
                };
                if self.lost() {
                    continue;
                }
                if let Some(reply) = answer.get(..n) {
                    self.core.handle_datagram(self.now, SERVER, cpe, reply);
                }
                self.drain_outputs();
            }
            while let Some(t) = self.server.poll_transmit() {
                busy = true;
                // Only unicast to the CPE reaches it (ANNOUNCE, Mapping Update).
                if t.destination.ip() != IpAddr::V4(CPE) || self.lost() {
                    continue;
                }
                let from = t.source.unwrap_or(SERVER);
                self.core
                    .handle_datagram(self.now, from, t.destination, &t.payload);
                self.drain_outputs();
            }
            if !busy {
                return;
            }
        }
    }

    /// Runs both sides' timers.
    fn fire(&mut self) {
        self.server.handle_timeout(self.now);
        self.core.handle_timeout(self.now);
        self.pump();
    }

    /// One step: deliver what is pending, then advance to the next timer (at most `until`).
    /// Returns false once `until` is reached.
    fn step(&mut self, until: Instant) -> bool {
        self.pump();
        let next = match (self.core.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(t) if t <= until => {
                self.now = self.now.max(t);
                self.fire();
                true
            }
            _ => {
                self.now = self.now.max(until);
                self.fire();
                false
            }
        }
    }

    fn run_until(&mut self, until: Instant) {
        let mut guard = 0;
        while self.step(until) {
            guard += 1;
            assert!(guard < GUARD, "simulation does not reach {until:?}");
        }
    }

    /// Runs until `done` holds or `until`; returns whether it held.
    fn run_until_or(&mut self, until: Instant, done: impl Fn(&Sim) -> bool) -> bool {
        let mut guard = 0;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(until) {
                return done(self);
            }
            guard += 1;
            assert!(guard < GUARD, "simulation does not reach {until:?}");
        }
    }

    fn request(&mut self, req: Request) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.sent_requests.insert(id);
        self.core.handle_request(self.now, id, req);
        self.pump();
        id
    }

    fn add(&mut self, mapping: PortMapping, choice: PortChoice) -> u64 {
        self.request(Request::Add(AddRequest { mapping, choice }))
    }

    /// Waits (in simulated time, at most 115 s) for the answers to `ids`.
    fn wait_replies(&mut self, ids: &[u64]) -> Vec<Result<PortMapping, MappingError>> {
        let limit = self.now + secs(115);
        let answered = self.run_until_or(limit, |s| ids.iter().all(|i| s.replies.contains_key(i)));
        assert!(
            answered,
            "unanswered requests after 115 s: {:?}",
            self.sent_requests
        );
        ids.iter()
            .map(|i| self.replies.get(i).cloned().expect("answered"))
            .collect()
    }

    /// The server's MAP mappings, by internal port.
    fn server_maps(&self) -> BTreeMap<u16, ServerMap> {
        self.server
            .table()
            .bindings()
            .filter(|(_, b)| b.has_map() && b.protocol == UDP)
            .map(|(_, b)| {
                (
                    b.internal.port(),
                    ServerMap {
                        subscriber: *b.internal.ip(),
                        internal_port: b.internal.port(),
                        external: b.external,
                        nonce: b.nonce,
                    },
                )
            })
            .collect()
    }

    fn server_map_count(&self) -> usize {
        self.server
            .table()
            .bindings()
            .filter(|(_, b)| b.has_map())
            .count()
    }

    fn not_authorized(&self) -> u64 {
        self.server
            .metrics()
            .count(Opcode::Map, ResultCode::NotAuthorized)
    }

    fn removed_nat1_ports(&self) -> BTreeSet<u16> {
        self.nat1
            .iter()
            .filter_map(|c| match c {
                Nat1Command::Remove(r) => Some(r.wan_port),
                Nat1Command::Install(_) => None,
            })
            .collect()
    }

    /// A new IWF process: a fresh core (another seed, another socket) at `now`.
    fn restart_iwf(&mut self, seed: u64, stored: Vec<StoredMapping>) {
        let config = self.core.config().clone();
        let wall = self.wall0 + self.now.saturating_duration_since(self.t0);
        self.core = Core::with_seed(config, seed, self.now, wall);
        self.cpe_port += 1;
        self.sent_requests.clear();
        self.core.restore(self.now, stored);
        self.pump();
    }
}

fn udp_key(port: u16) -> MappingKey {
    MappingKey {
        external_port: port,
        protocol: Protocol::Udp,
        remote_host: None,
    }
}

fn mapping(now: Instant, host: Ipv4Addr, port: u16, lease_secs: u32) -> PortMapping {
    PortMapping {
        key: udp_key(port),
        internal_client: host,
        internal_port: port,
        enabled: true,
        description: format!("sim {port}"),
        lease: Lease::from_secs(now, lease_secs),
        owner: host,
    }
}

fn server_config() -> EngineConfig {
    EngineConfig::with_pools(&[POOL])
}

/// Adds `ports` from `host` (Exact, UDP, `lease` seconds, 0: permanent) and expects every
/// one to be granted with its own port.
fn add_all(sim: &mut Sim, host: Ipv4Addr, ports: std::ops::Range<u16>, lease: u32) {
    let ids: Vec<u64> = ports
        .clone()
        .map(|p| {
            let m = mapping(sim.now, host, p, lease);
            sim.add(m, PortChoice::Exact)
        })
        .collect();
    for (port, result) in ports.zip(sim.wait_replies(&ids)) {
        let m = result.unwrap_or_else(|e| panic!("AddPortMapping {port}: {e}"));
        assert_eq!(m.key.external_port, port);
        assert_eq!(m.internal_port, port);
    }
}

/// The core's entries that are Active, by key.
fn active(sim: &Sim) -> BTreeMap<MappingKey, (Option<Nonce>, Option<SocketAddrV4>)> {
    sim.core
        .entries()
        .filter(|e| e.phase == Phase::Active)
        .map(|e| (e.mapping.key, (e.nonce, e.external)))
        .collect()
}

// RFC 6970 §5.5 (NAT444: the MAP's internal port is the NAT1 WAN port), §5.6 (AddPortMapping →
// MAP with PREFER_FAILURE), §5.9 (the UPnP lease decides the PCP lifetime; its end deletes the
// mapping upstream); RFC 6887 §8.1.1 (retransmission over a lossy link), §15 (lifetime),
// §15.1 (delete).
#[test]
fn adds_become_maps_and_leases_end_on_both_sides() {
    // The default 4 s bound on a first request (two transmissions, for the control point's
    // 5 s SOAP timeout) fails about one add in four at 30 % loss both ways (each exchange
    // gets through with 0.7 × 0.7 = 0.49); this test is about the mapping life cycle, so the
    // bound is lifted to 110 s (six transmissions, RFC 6887 §8.1.1), inside the lease.
    let mut sim = Sim::with_core_config(3, 0.3, server_config(), |c| {
        c.create_give_up = GiveUp::after(secs(110));
    });
    add_all(&mut sim, HOST_A, 5000..5020, 120);

    // The server holds 20 MAPs from the subscriber 100.64.0.2 whose internal ports are the
    // NAT1 ports (here equal to the requested ports).
    let maps = sim.server_maps();
    assert_eq!(
        maps.len(),
        20,
        "server table:\n{}",
        sim.server.render_table(sim.now)
    );
    let nat1_ports: BTreeSet<u16> = sim.core.entries().map(|e| e.nat1_port).collect();
    assert_eq!(nat1_ports, (5000..5020).collect::<BTreeSet<u16>>());
    for (port, m) in &maps {
        assert_eq!(m.subscriber, CPE);
        assert!(nat1_ports.contains(port), "MAP for internal port {port}");
        let e = sim
            .core
            .entries()
            .find(|e| e.nat1_port == *port)
            .expect("an entry per MAP");
        assert_eq!(e.nonce, Some(m.nonce), "the MAP carries the entry's nonce");
        assert_eq!(e.external, Some(m.external));
    }
    assert!(
        sim.server
            .render_table(sim.now)
            .contains("Type: MAP IN, Protocol: UDP")
    );

    // Every lease (120 s from its add) has ended by 125 s: the IGD shows none.
    sim.run_until(sim.at(125));
    assert!(sim.core.mappings(sim.now).is_empty(), "no lease is visible");
    assert!(
        sim.core
            .entries()
            .all(|e| matches!(e.phase, Phase::Deleting | Phase::RemovingNat1)),
        "every entry is being deleted"
    );
    // The PCP deletes (lifetime 0, same nonce) cross the same lossy link; each one is
    // retransmitted until answered (RFC 6887 §8.1.1), so give them time, then both sides are
    // empty.
    let done = sim.run_until_or(sim.at(600), |s| s.core.entries().next().is_none());
    let left: Vec<(u16, Phase)> = sim
        .core
        .entries()
        .map(|e| (e.mapping.key.external_port, e.phase))
        .collect();
    assert!(done, "core table at {:?}: {left:?}", sim.now - sim.t0);
    assert_eq!(
        sim.removed_nat1_ports(),
        (5000..5020).collect::<BTreeSet<u16>>()
    );
    let removed = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, IwfEvent::Removed { .. }))
        .count();
    assert_eq!(removed, 20);
    // NAT1 went after at most DELETE_WAIT; an unanswered PCP delete goes on in the engine
    // until the server has it.
    sim.run_until_or(sim.at(600), |s| s.server_maps().is_empty());
    assert_eq!(
        sim.server_maps().len(),
        0,
        "server table:\n{}",
        sim.server.render_table(sim.now)
    );
    assert_eq!(
        sim.persisted.as_ref().map(Vec::len),
        Some(0),
        "state file empty"
    );
}

// RFC 6970 §5.9: when the UPnP lease ends the mapping ends, through both NATs. The NAT1 rule
// (which forwards to the LAN host) must go when the lease ends, not when the PCP server gets
// round to confirming the delete: with 30 % loss some deletes are unanswered at 125 s, and
// the core removes NAT1 once `DELETE_WAIT` (4 s) has passed without an answer.
#[test]
fn lease_end_removes_every_nat1_rule_by_125_s_on_a_lossy_link() {
    let mut sim = Sim::with_core_config(3, 0.3, server_config(), |c| {
        c.create_give_up = GiveUp::after(secs(110));
    });
    add_all(&mut sim, HOST_A, 5000..5020, 120);
    sim.run_until(sim.at(125));
    let left: Vec<(u16, Phase)> = sim
        .core
        .entries()
        .map(|e| (e.mapping.key.external_port, e.phase))
        .collect();
    assert_eq!(
        sim.removed_nat1_ports(),
        (5000..5020).collect::<BTreeSet<u16>>(),
        "NAT1 rules removed at 125 s; core table: {left:?}"
    );
    assert!(left.is_empty(), "core table at 125 s: {left:?}");
}

// RFC 6887 §8.5 and §14.1.3 (a restart resets the epoch; unsolicited ANNOUNCE; clients
// re-create their mappings with the same nonce), §15 (the freed port is held for its owner);
// RFC 6970 §5.10 (the IWF re-creates every mapping, suggesting the previous external
// endpoint with PREFER_FAILURE).
#[test]
fn cgn_restart_recovers_every_mapping_with_same_nonces_and_ports() {
    let mut sim = Sim::new(2, 0.0, server_config());
    add_all(&mut sim, HOST_A, 6000..6050, 0);
    // Let the epoch run long enough for its reset to be detectable (RFC 6887 §8.5).
    let restart_at = sim.at(300);
    sim.run_until(restart_at);
    let before = sim.server_maps();
    assert_eq!(before.len(), 50);
    let core_before = active(&sim);
    assert_eq!(core_before.len(), 50);

    sim.server.restart(sim.now, false);
    assert_eq!(sim.server_map_count(), 0, "the reboot lost every mapping");
    sim.loss = 0.3;
    let events_from = sim.events.len();
    // Within 120 s every mapping is back at the server, on its old port, with its nonce.
    let back = sim.run_until_or(restart_at + secs(120), |s| s.server_maps() == before);
    let after = sim.server_maps();
    assert!(
        back,
        "{} of 50 back at the server at {:?}",
        after.len(),
        sim.now - restart_at
    );
    for (port, m) in &before {
        let a = after.get(port).expect("back at the server");
        assert_eq!(
            a.external, m.external,
            "internal port {port}: same external endpoint"
        );
        assert_eq!(a.nonce, m.nonce, "internal port {port}: same nonce");
    }
    // The core learns it from the answers: one whose answers were all lost so far (about one
    // in 60 after six tries at 0.49 a try) waits for its next retransmission (RFC 6887
    // §8.1.1: 3, 6, 12, 24, 48, 96 s … apart, at most MRT = 1024 s). The link heals; by the
    // next retransmission every one is Active.
    sim.loss = 0.0;
    let all_active = sim.run_until_or(restart_at + secs(1300), |s| active(s).len() == 50);
    assert!(
        all_active,
        "{} of 50 active in the core at {:?}",
        active(&sim).len(),
        sim.now - restart_at
    );
    assert_eq!(
        sim.server_maps(),
        before,
        "still the same MAPs, none duplicated"
    );
    assert_eq!(sim.server_map_count(), 50);
    assert_eq!(sim.not_authorized(), 0, "no NOT_AUTHORIZED");
    assert_eq!(
        active(&sim),
        core_before,
        "same nonces and endpoints in the core"
    );

    let events = sim.events.get(events_from..).unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, IwfEvent::ServerStateLost { .. })),
        "the state loss was noticed"
    );
    let restored: BTreeSet<u16> = events
        .iter()
        .filter_map(|(_, e)| match e {
            IwfEvent::Restored {
                key,
                same_endpoint: true,
                ..
            } => Some(key.external_port),
            _ => None,
        })
        .collect();
    assert_eq!(restored, (6000..6050).collect::<BTreeSet<u16>>());
}

// RFC 6970 §5.3 (the IWF stores the nonces so that it can renew or delete its mappings after
// its own restart), §5.10; RFC 6887 §11.3 (a request with the mapping's nonce refreshes it:
// no second mapping, no NOT_AUTHORIZED).
#[test]
fn iwf_restart_renews_stored_mappings_with_their_nonces() {
    let mut sim = Sim::new(3, 0.0, server_config());
    add_all(&mut sim, HOST_A, 7000..7010, 0);
    let stored = sim.persisted.clone().expect("the state file was written");
    assert_eq!(stored.len(), 10);
    let before = sim.server_maps();
    assert_eq!(before.len(), 10);
    for s in &stored {
        let m = before
            .get(&s.nat1_port)
            .expect("stored mapping exists at the server");
        assert_eq!(Nonce(s.nonce), m.nonce);
        assert_eq!(s.external, Some(m.external));
    }

    // The IWF is killed; 30 s later a new process starts from the state file.
    // (The old core is simply never driven again.)
    let down_at = sim.now;
    let back_at = down_at + secs(30);
    // Only the server runs meanwhile (the dead IWF sends nothing).
    let mut guard = 0;
    while sim.now < back_at {
        guard += 1;
        assert!(guard < GUARD);
        sim.now = sim
            .server
            .poll_timeout()
            .map_or(back_at, |t| t.min(back_at))
            .max(sim.now);
        sim.server.handle_timeout(sim.now);
        while sim.server.poll_transmit().is_some() {}
    }
    sim.restart_iwf(1234, stored);
    sim.run_until(back_at + secs(20));

    let core_now = active(&sim);
    assert_eq!(
        core_now.len(),
        10,
        "all Active again: {:?}",
        sim.core.entries().collect::<Vec<_>>()
    );
    let after = sim.server_maps();
    assert_eq!(sim.server_map_count(), 10, "none duplicated");
    assert_eq!(after, before, "same MAPs: nonces and external endpoints");
    assert_eq!(sim.not_authorized(), 0, "no NOT_AUTHORIZED");
    for (key, (nonce, external)) in &core_now {
        let m = after.get(&key.external_port).expect("at the server");
        assert_eq!(*nonce, Some(m.nonce));
        assert_eq!(*external, Some(m.external));
    }
}

// RFC 6887 §14.2 (Mapping Update: the server moves a mapping and tells the client with an
// unsolicited MAP response); RFC 6970 §4.1 (ExternalIPAddress follows the PCP answers) and
// §5.3 (the stored state stays true).
#[test]
fn mapping_update_from_the_server_updates_the_table() {
    let mut sim = Sim::new(4, 0.0, server_config());
    // AddAnyPortMapping (no PREFER_FAILURE): the server may move it to another endpoint.
    let id = sim.add(
        mapping(sim.now, HOST_A, 8000, 0),
        PortChoice::Any(vec![1024..=65535]),
    );
    let m = sim.wait_replies(&[id]).remove(0).expect("AddAny granted");
    let old = active(&sim)
        .get(&m.key)
        .and_then(|(_, x)| *x)
        .expect("granted endpoint");
    assert_eq!(sim.core.external_address(), Some(*old.ip()));
    sim.run_until(sim.now + secs(10));

    // Renumbering: the pool is replaced; the mapping moves to the new address.
    let new_pool = vec![PoolConfig {
        id: 2,
        sections: vec![SectionConfig {
            id: 0,
            ranges: vec!["203.0.113.0/28".into()],
        }],
    }];
    sim.server
        .replace_pools(sim.now, new_pool)
        .expect("new pool is valid");
    let moved = sim.server_maps().get(&m.key.external_port).copied();
    let moved = moved.expect("the mapping moved, not dropped").external;
    assert_ne!(moved.ip(), old.ip());
    sim.run_until(sim.now + secs(5));

    assert!(sim.server.metrics().mapping_updates_sent > 0);
    let (_, external) = active(&sim).get(&m.key).copied().expect("still active");
    assert_eq!(external, Some(moved), "the table shows the new endpoint");
    assert_eq!(sim.core.external_address(), Some(*moved.ip()));
    assert!(
        sim.events
            .iter()
            .any(|(_, e)| *e == IwfEvent::ExternalAddress(Some(*moved.ip()))),
        "ExternalIPAddress evented"
    );
    let stored = sim.persisted.clone().expect("state file");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].external,
        Some(moved),
        "the state file has the new endpoint"
    );
}

// RFC 6970 §5.6.1 (AddPortMapping of a port mapped to another client: 718
// ConflictInMappingEntry, answered locally), §5.7 (AddAnyPortMapping gets another port).
#[test]
fn add_for_a_taken_port_is_a_conflict_and_addany_gets_another_port() {
    let mut sim = Sim::new(5, 0.0, server_config());
    add_all(&mut sim, HOST_A, 9000..9001, 0);
    let sent = sim.pcp_sent;
    let id = sim.add(mapping(sim.now, HOST_B, 9000, 0), PortChoice::Exact);
    assert_eq!(sim.replies.get(&id), Some(&Err(MappingError::Conflict)));
    sim.pump();
    assert_eq!(sim.pcp_sent, sent, "no PCP traffic for the conflict");

    let id = sim.add(
        mapping(sim.now, HOST_B, 9000, 0),
        PortChoice::Any(vec![1024..=65535]),
    );
    let m = sim.wait_replies(&[id]).remove(0).expect("AddAny granted");
    assert_ne!(m.key.external_port, 9000);
    assert_eq!(m.internal_client, HOST_B);
    assert_eq!(sim.server_map_count(), 2);
    assert_eq!(active(&sim).len(), 2);
}

// RFC 6970 §4.3 and §5.6 (USER_EX_QUOTA → IGD:2 728 NoPortMapsAvailable) with the local
// state rolled back; RFC 6887 §7.4 (USER_EX_QUOTA), RFC 6888 REQ-4 (per-subscriber quota).
#[test]
fn pcp_errors_reach_the_control_point_as_igd_errors() {
    let mut config = server_config();
    config.quota_per_subscriber = 2;
    let mut sim = Sim::new(6, 0.0, config);
    let ids: Vec<u64> = (10_000..10_003)
        .map(|p| sim.add(mapping(sim.now, HOST_A, p, 0), PortChoice::Exact))
        .collect();
    let results = sim.wait_replies(&ids);
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert_eq!(results[2], Err(MappingError::NoPortsAvailable));
    assert_eq!(sim.server.metrics().quota_hits, 1);
    assert_eq!(sim.server_map_count(), 2);
    // The NAT1 rule of the failed add was installed, then removed.
    assert!(
        sim.nat1
            .iter()
            .any(|c| matches!(c, Nat1Command::Install(r) if r.wan_port == 10_002))
    );
    assert_eq!(sim.removed_nat1_ports(), BTreeSet::from([10_002]));
    assert!(
        sim.core
            .entries()
            .all(|e| e.mapping.key.external_port != 10_002)
    );
    assert_eq!(sim.core.mappings(sim.now).len(), 2);
}

// RFC 6970 §5.10 (MUST when co-located with the DHCP server): when an internal address's lease
// ends (here: it leaves dnsmasq's lease file), every mapping bound to it is deleted, one PCP
// delete each, on a lossy link; the other host's mappings stay, at the server and in NAT1.
#[test]
fn dhcp_lease_end_deletes_every_mapping_of_that_host_and_only_those() {
    use upnp_iwf::dhcp::{LeaseTracker, parse_dnsmasq};
    let mut sim = Sim::with_core_config(3, 0.3, server_config(), |c| {
        c.create_give_up = GiveUp::after(secs(110));
    });
    add_all(&mut sim, HOST_A, 5000..5003, 3600);
    add_all(&mut sim, HOST_B, 6000..6002, 3600);
    assert_eq!(sim.server_maps().len(), 5);
    let wall = SystemTime::UNIX_EPOCH + secs(1_000_000);
    let both = "0 aa:00:00:00:00:0a 192.168.0.10 a *\n0 aa:00:00:00:00:0b 192.168.0.11 b *\n";
    let only_b = "0 aa:00:00:00:00:0b 192.168.0.11 b *\n";
    let mut leases = LeaseTracker::new();
    assert!(
        leases
            .update(parse_dnsmasq(both.as_bytes()).expect("valid"), wall)
            .is_empty()
    );
    let ended = leases.update(parse_dnsmasq(only_b.as_bytes()).expect("valid"), wall);
    assert_eq!(ended.len(), 1);
    let (address, why) = ended[0];
    assert_eq!(address, HOST_A);
    let now = sim.now;
    assert_eq!(sim.core.release_client(now, address, why.as_str()), 3);
    sim.pump();
    let done = sim.run_until_or(sim.at(600), |s| {
        s.server_maps().len() == 2 && s.core.entries().count() == 2
    });
    assert!(done, "server table:\n{}", sim.server.render_table(sim.now));
    assert_eq!(
        sim.removed_nat1_ports(),
        (5000..5003).collect::<BTreeSet<u16>>()
    );
    let left: BTreeSet<u16> = sim.server_maps().keys().copied().collect();
    assert_eq!(left, (6000..6002).collect::<BTreeSet<u16>>());
    assert!(
        sim.core
            .entries()
            .all(|e| e.mapping.internal_client == HOST_B)
    );
    assert_eq!(sim.persisted.as_ref().map(Vec::len), Some(2), "state file");
}

// RFC 6970 §4.1: a RemoteHost goes upstream as FILTER (RFC 6887 §13.3): the CGN's mapping admits
// only that peer.
#[test]
fn remote_host_goes_upstream_as_a_filter_for_that_peer_only() {
    let mut sim = Sim::new(7, 0.0, server_config());
    let peer = Ipv4Addr::new(203, 0, 113, 50);
    let mut m = mapping(sim.now, HOST_A, 5100, 3600);
    m.key.remote_host = Some(peer);
    let id = sim.add(m, PortChoice::Exact);
    let got = sim.wait_replies(&[id]).remove(0).expect("granted");
    assert_eq!(got.key.remote_host, Some(peer));
    let filters: Vec<_> = sim
        .server
        .table()
        .bindings()
        .filter(|(_, b)| b.has_map() && b.internal.port() == 5100)
        .flat_map(|(_, b)| b.filters().to_vec())
        .collect();
    assert_eq!(filters.len(), 1, "one FILTER at the CGN: {filters:?}");
    assert_eq!(filters[0].remote_peer_address, IpAddr::V4(peer));
    assert_eq!(filters[0].prefix_length, 128, "the one address");
}

// RFC 6970 §5.4 (no NAT in the CPE, DS-Lite style) and §6: with `--nat none --third-party` an
// InternalClient other than the router itself goes upstream as THIRD_PARTY, with its own port
// unchanged; the router's own address never does.
#[test]
fn without_nat1_another_internal_client_goes_upstream_as_third_party() {
    use upnp_iwf::iwf::NatMode;
    let mut config = server_config();
    config.third_party_hosts = vec!["100.64.0.2/32".parse().expect("rule")];
    let mut sim = Sim::with_core_config(8, 0.0, config, |c| {
        c.nat = NatMode::None { third_party: true };
    });
    let host = Ipv4Addr::new(100, 64, 0, 20);
    let id = sim.add(mapping(sim.now, host, 5200, 3600), PortChoice::Exact);
    sim.wait_replies(&[id]).remove(0).expect("granted");
    let own = sim.add(mapping(sim.now, CPE, 5201, 3600), PortChoice::Exact);
    sim.wait_replies(&[own]).remove(0).expect("granted");
    let by_port: BTreeMap<u16, (Ipv4Addr, Option<Ipv4Addr>)> = sim
        .server
        .table()
        .bindings()
        .filter(|(_, b)| b.has_map())
        .map(|(_, b)| {
            (
                b.internal.port(),
                (
                    *b.internal.ip(),
                    b.extra.as_ref().and_then(|e| e.third_party),
                ),
            )
        })
        .collect();
    assert_eq!(
        by_port.get(&5200),
        Some(&(host, Some(host))),
        "THIRD_PARTY {host}, internal port unchanged (no NAT1): {by_port:?}"
    );
    assert_eq!(by_port.get(&5201), Some(&(CPE, None)), "{by_port:?}");
    assert!(sim.nat1.is_empty(), "no NAT1 command without NAT1");
}

// Issue #13 item 2 (`upnp-iwf ctl renew-all`): every active mapping is refreshed upstream at
// once with its own nonce and its remaining lease; the CGN's table keeps the same endpoints,
// no control point is answered and the state file is not rewritten (nothing durable changed).
#[test]
fn renew_all_refreshes_every_mapping_now_with_its_nonce_and_writes_no_state() {
    let mut sim = Sim::new(11, 0.0, server_config());
    add_all(&mut sim, HOST_A, 5000..5004, 3600);
    let before = sim.server_maps();
    assert_eq!(before.len(), 4);
    sim.run_until(sim.at(30));
    let sent_before = sim.pcp_sent;
    sim.persisted = None;
    let now = sim.now;
    assert_eq!(sim.core.renew_all(now), 4);
    assert!(
        sim.core.entries().all(|e| e.phase == Phase::Renewing),
        "refresh in flight"
    );
    sim.pump();
    assert_eq!(
        sim.pcp_sent - sent_before,
        4,
        "one MAP per mapping, at once"
    );
    assert!(sim.core.entries().all(|e| e.phase == Phase::Active));
    assert_eq!(sim.server_maps(), before, "same nonces and endpoints");
    assert!(sim.persisted.is_none(), "no state-file write for a renewal");
    assert!(sim.sent_requests.is_empty());
}
