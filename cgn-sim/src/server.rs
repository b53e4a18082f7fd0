//! The sans-IO PCP server engine (RFC 6887 §8.2 receive pipeline) with NAT-PMP on the same
//! port, in the quinn-proto style: the engine never touches a socket or a clock.
//!
//! * [`Server::handle`] takes one datagram (with its source, the interface it arrived on and
//!   the time) and writes the answer, if any, into a caller buffer;
//! * [`Server::handle_timeout`] expires mappings and port holds and schedules ANNOUNCE;
//! * [`Server::poll_transmit`] yields unsolicited datagrams (ANNOUNCE, Mapping Update);
//! * [`Server::poll_timeout`] says when to call `handle_timeout` next.
//!
//! Randomness (port choice) comes from an injected [`RngCore`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use pcp_client::wire::{
    self, ErrorResponse, Opcode, OpcodeData, Options, PcpOption, Protocol, RequestRepr,
    ResponseRepr, ResultCode, emit_error_response,
};
use rand::RngCore;

use crate::clock::Clock;
use crate::config::{ConfigError, EngineConfig};
use crate::inject::Injector;
use crate::metrics::{DropReason, Metrics};
use crate::options::{self, OptionPolicy};
use crate::pool::NatPool;
use crate::ports::Ports;
use crate::subscribers::Subscribers;
use crate::table::{FreedBinding, Table};
use crate::unsolicited::Unsolicited;

/// Which side of the CGN a datagram arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// The subscriber-facing side (where PCP is served).
    Inside,
    /// The Internet side: ordinary requests arriving here are ignored silently
    /// (RFC 6887 §8.2).
    Outside,
}

/// An unsolicited datagram to send (it lives with the queue that holds it).
pub use crate::unsolicited::Transmit;

/// What the engine answers a MAP or PEER request with, before encoding.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    Success {
        lifetime: u32,
        data: OpcodeData,
        options: Vec<PcpOption<'a>>,
    },
    Error {
        result: ResultCode,
        lifetime: u32,
    },
}

/// A static (operator) mapping, reinstalled after state loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticMapping {
    /// Protocol.
    pub protocol: Protocol,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint (must be a pool address).
    pub external: SocketAddrV4,
}

/// The PCP + NAT-PMP server engine.
pub struct Server {
    /// The configuration in force (validated; the pools change with renumbering).
    config: EngineConfig,
    /// Who is served, THIRD_PARTY policy, and what each subscriber holds.
    subscribers: Subscribers,
    /// Bindings, PEER sessions, their indexes and expiry.
    table: Table,
    /// External ports: pool, hold-down, port blocks and the port-choice RNG.
    ports: Ports,
    /// Static (operator) mappings, reinstalled after state loss.
    statics: Vec<StaticMapping>,
    /// Engine seconds, the handled instant and the Epoch.
    clock: Clock,
    /// ANNOUNCE, Mapping Updates and the queue of unsolicited datagrams.
    unsolicited: Unsolicited,
    /// Counters.
    metrics: Metrics,
    /// Error injection for tests (`cgn-sim ctl inject`, [`Server::inject`]): the next
    /// creating or refreshing MAP requests get this error and change nothing.
    injection: Injector,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("mappings", &self.table.counts())
            .field("pool", &self.ports.pool().len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with `config`, its clocks starting at `now`, drawing ports from `rng`.
    pub fn new(
        config: EngineConfig,
        now: Instant,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Server, ConfigError> {
        config.validate()?;
        let pool = NatPool::new(&config)?;
        Ok(Server {
            subscribers: Subscribers::new(&config),
            table: Table::new(crate::clock::FIRST_SECOND),
            ports: Ports::new(pool, rng),
            statics: Vec::new(),
            clock: Clock::new(now),
            unsolicited: Unsolicited::new(config.max_remembered_clients),
            metrics: Metrics::default(),
            injection: Injector::default(),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The mapping table (for the dataplane and the control endpoint).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The NAT pool.
    pub fn pool(&self) -> &NatPool {
        self.ports.pool()
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ports in hold-down.
    pub fn held_ports(&self) -> usize {
        self.ports.held()
    }

    /// Replaces the configuration (renumbering: the same settings with new pools).
    pub(crate) fn set_config(&mut self, config: EngineConfig) {
        self.config = config;
    }

    /// The mapping table, to change through its API.
    pub(crate) fn table_mut(&mut self) -> &mut Table {
        &mut self.table
    }

    /// The allocation part: pool, hold-down, port blocks, port choice.
    pub(crate) fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The allocation part, to change through its API.
    pub(crate) fn ports_mut(&mut self) -> &mut Ports {
        &mut self.ports
    }

    /// The subscribers part.
    pub(crate) fn subscribers(&self) -> &Subscribers {
        &self.subscribers
    }

    /// The subscribers part, to change through its API.
    pub(crate) fn subscribers_mut(&mut self) -> &mut Subscribers {
        &mut self.subscribers
    }

    /// The engine clock.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The engine clock, to change through its API.
    pub(crate) fn clock_mut(&mut self) -> &mut Clock {
        &mut self.clock
    }

    /// The unsolicited-message part.
    pub(crate) fn unsolicited(&self) -> &Unsolicited {
        &self.unsolicited
    }

    /// The unsolicited-message part, to change through its API.
    pub(crate) fn unsolicited_mut(&mut self) -> &mut Unsolicited {
        &mut self.unsolicited
    }

    /// Counters, to count with.
    pub(crate) fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// The static mappings, in the order they were installed.
    pub(crate) fn statics(&self) -> &[StaticMapping] {
        &self.statics
    }

    /// Remembers a static mapping, to reinstall after state loss.
    pub(crate) fn remember_static(&mut self, mapping: StaticMapping) {
        self.statics.push(mapping);
    }

    /// The error-injection state.
    pub(crate) fn injector(&self) -> &Injector {
        &self.injection
    }

    /// The error-injection state, to arm or consume.
    pub(crate) fn injector_mut(&mut self) -> &mut Injector {
        &mut self.injection
    }

    /// The Epoch Time at `now`.
    pub fn epoch(&self, now: Instant) -> u32 {
        self.clock.epoch(now)
    }

    /// The addresses unsolicited messages are sent from (the inside sockets, port 5351).
    pub fn set_server_addresses(&mut self, addrs: Vec<SocketAddr>) {
        self.unsolicited.set_server_addresses(addrs);
    }

    /// Engine seconds at `now` (the table's clock).
    pub fn seconds(&self, now: Instant) -> u32 {
        self.clock.seconds(now)
    }

    /// The table as operator lines (design.md §1); with Port Block Allocation the
    /// subscriber's block is the `Section:`.
    pub fn render_table(&self, now: Instant) -> String {
        crate::format::render_text_with(&self.table, self.seconds(now), &|r, a| {
            self.port_block(r, a)
        })
    }

    /// The table as JSON.
    pub fn render_table_json(&self, now: Instant) -> String {
        crate::format::render_json_with(&self.table, self.seconds(now), &|r, a| {
            self.port_block(r, a)
        })
    }

    /// Counters and gauges in OpenMetrics text.
    pub fn render_metrics(&self, now: Instant) -> String {
        self.metrics.render(
            self.table.counts(),
            self.clock.epoch(now),
            self.clock.epoch_resets(),
            self.ports.held(),
        )
    }

    pub(crate) fn error_lifetime(&self, result: ResultCode) -> u32 {
        if result.is_long_lifetime_error() {
            self.config.long_error_lifetime
        } else {
            self.config.short_error_lifetime
        }
    }

    /// Lifetime clamp (RFC 6887 §15: min 120 s, max 24 h by default).
    pub(crate) fn clamp_lifetime(&self, requested: u32) -> u32 {
        requested.clamp(self.config.min_lifetime, self.config.max_lifetime)
    }

    /// True if `ip` is inside the configured subscriber prefixes (the inside realm): the
    /// dataplane uses it to tell outbound from inbound traffic.
    pub fn is_subscriber(&self, ip: Ipv4Addr) -> bool {
        self.subscribers.is_subscriber(ip)
    }

    fn is_third_party_host(&self, ip: Ipv4Addr) -> bool {
        self.subscribers.is_third_party_host(ip)
    }

    /// Handles one datagram that arrived from `from` on `iface` at `now`, and writes the
    /// answer into `out` (which should hold 1100 bytes). Returns the answer's length, or `None`
    /// when the datagram is to be ignored silently. Never panics, whatever the bytes.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        iface: Interface,
        bytes: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        self.handle_timeout(now);
        let source = match from {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddrV4::new(v4, a.port()),
                None => {
                    self.metrics.drop(DropReason::Interface);
                    return None;
                }
            },
        };
        // §8.2 step 1: the interface check. Subscribers only on the inside; authorized
        // THIRD_PARTY senders may use the outside if configured.
        let tp_host = self.is_third_party_host(*source.ip());
        let outside = iface == Interface::Outside;
        if (outside && !(self.config.third_party_on_outside && tp_host))
            || (!self.is_subscriber(*source.ip()) && !tp_host)
        {
            self.metrics.drop(DropReason::Interface);
            return None;
        }
        // Step 2: shorter than 2 octets.
        if bytes.len() < 2 {
            self.metrics.drop(DropReason::Short);
            return None;
        }
        let epoch = self.clock.epoch(now);
        if bytes[0] == pcp_client::natpmp::VERSION && self.config.natpmp && !outside {
            return self.handle_natpmp(now, source, bytes, epoch, out);
        }
        // Steps 3 to 7 (and 9).
        let packet = match RequestRepr::check_header(bytes) {
            Ok(p) => p,
            Err(wire::Error::UnsupportedOpcode { .. }) if bytes.len() >= wire::HEADER_LEN => {
                // Step 8 comes before step 9.
                let client = wire::Packet::new_unchecked(bytes).client_ip();
                let result = if ip_matches(client, source) {
                    ResultCode::UnsuppOpcode
                } else {
                    ResultCode::AddressMismatch
                };
                return self.error(bytes, Opcode::from(bytes[1]), result, epoch, false, out);
            }
            Err(e) => {
                let Some(result) = e.result_code() else {
                    self.metrics.drop(if bytes[1] & 0x80 != 0 {
                        DropReason::Response
                    } else {
                        DropReason::Short
                    });
                    return None;
                };
                return self.error(bytes, Opcode::from(bytes[1]), result, epoch, false, out);
            }
        };
        let opcode = packet.opcode();
        // Step 8: ADDRESS_MISMATCH.
        if !ip_matches(packet.client_ip(), source) {
            let parsed = RequestRepr::parse(bytes).is_ok();
            return self.error(
                bytes,
                opcode,
                ResultCode::AddressMismatch,
                epoch,
                parsed,
                out,
            );
        }
        // Step 10: parse opcode data and options.
        let repr = match RequestRepr::parse(bytes) {
            Ok(r) => r,
            Err(e) => {
                let result = if options::unsupported_before_error(bytes, &e) {
                    ResultCode::UnsuppOption
                } else {
                    e.result_code()?
                };
                return self.error(bytes, opcode, result, epoch, false, out);
            }
        };
        // A THIRD_PARTY host outside the subscriber prefixes may only speak for others.
        if (outside || !self.is_subscriber(*source.ip()))
            && !repr.options.contains(wire::OptionCode::THIRD_PARTY)
        {
            self.metrics.drop(DropReason::Interface);
            return None;
        }
        self.remember_client(source, now);
        let now_s = self.seconds(now);
        let outcome = match repr.data {
            OpcodeData::Announce => match options::check_announce(&repr) {
                // RFC 6887 §14.1.1: SUCCESS, lifetime 0, no state change.
                Ok(()) => Outcome::Success {
                    lifetime: 0,
                    data: OpcodeData::Announce,
                    options: Vec::new(),
                },
                Err(result) => Outcome::Error {
                    result,
                    lifetime: self.error_lifetime(result),
                },
            },
            OpcodeData::Authentication(_) => Outcome::Error {
                result: ResultCode::UnsuppOpcode,
                lifetime: self.error_lifetime(ResultCode::UnsuppOpcode),
            },
            OpcodeData::Map(map) => {
                let injected = (repr.lifetime != 0)
                    .then(|| self.take_injection())
                    .flatten();
                if let Some((result, lifetime)) = injected {
                    Outcome::Error { result, lifetime }
                } else if self.config.allow_map {
                    self.process_map(now_s, source, &repr, &map)
                } else {
                    self.err(ResultCode::NotAuthorized)
                }
            }
            OpcodeData::Peer(peer) => {
                if self.config.allow_peer {
                    self.process_peer(now_s, *source.ip(), &repr, &peer)
                } else {
                    self.err(ResultCode::NotAuthorized)
                }
            }
        };
        self.emit(bytes, opcode, outcome, epoch, out)
    }

    pub(crate) fn err(&self, result: ResultCode) -> Outcome<'static> {
        Outcome::Error {
            result,
            lifetime: self.error_lifetime(result),
        }
    }

    pub(crate) fn policy(&self) -> OptionPolicy<'_> {
        self.subscribers.policy(&self.config)
    }

    fn emit(
        &mut self,
        bytes: &[u8],
        opcode: Opcode,
        outcome: Outcome<'_>,
        epoch: u32,
        out: &mut [u8],
    ) -> Option<usize> {
        match outcome {
            Outcome::Success {
                lifetime,
                data,
                options,
            } => {
                let response = ResponseRepr {
                    result: ResultCode::Success,
                    lifetime,
                    epoch,
                    data,
                    options: Options::List(&options),
                };
                match response.emit(out) {
                    Ok(n) => {
                        self.metrics.pcp(opcode, ResultCode::Success);
                        tracing::debug!(%opcode, lifetime, "SUCCESS");
                        Some(n)
                    }
                    // RFC 6887 §7.3: a reply that would exceed 1100 bytes.
                    Err(_) => self.error(
                        bytes,
                        opcode,
                        ResultCode::MalformedRequest,
                        epoch,
                        true,
                        out,
                    ),
                }
            }
            Outcome::Error { result, lifetime } => {
                self.metrics.pcp(opcode, result);
                tracing::debug!(%opcode, %result, lifetime, "error");
                emit_error_response(
                    bytes,
                    &ErrorResponse {
                        result,
                        lifetime,
                        epoch,
                        request_parsed: true,
                    },
                    out,
                )
                .ok()
            }
        }
    }

    fn error(
        &mut self,
        bytes: &[u8],
        opcode: Opcode,
        result: ResultCode,
        epoch: u32,
        parsed: bool,
        out: &mut [u8],
    ) -> Option<usize> {
        self.metrics.pcp(opcode, result);
        tracing::debug!(%opcode, %result, "error before processing");
        emit_error_response(
            bytes,
            &ErrorResponse {
                result,
                lifetime: self.error_lifetime(result),
                epoch,
                request_parsed: parsed,
            },
            out,
        )
        .ok()
    }

    pub(crate) fn remember_client(&mut self, client: SocketAddrV4, now: Instant) {
        let s = self.seconds(now);
        self.unsolicited.remember(client, s);
    }

    /// Clients remembered for unicast ANNOUNCE (their request source endpoints).
    pub fn remembered_clients(&self) -> Vec<SocketAddrV4> {
        self.unsolicited.clients()
    }

    /// Releases the external port of a freed binding, or holds it for its owner (the same
    /// internal endpoint and nonce) for `port_hold_secs` (RFC 6888 REQ-8, RFC 6887 §15).
    pub(crate) fn release_or_hold(&mut self, f: &FreedBinding, now_s: u32) {
        let hold_secs = self.config.port_hold_secs;
        self.ports.release_or_hold(f, now_s, hold_secs);
    }

    /// A binding lost its last part: its port goes into hold-down for its owner
    /// (RFC 6888 REQ-8; RFC 6887 §15), and the subscriber's count drops.
    pub(crate) fn on_freed(&mut self, f: FreedBinding, now_s: u32) {
        self.release_or_hold(&f, now_s);
        let (realm, subscriber) = (f.internal.realm, f.internal.addr);
        if let Some(anchor) = self.subscribers.release(realm, subscriber) {
            self.ports.anchor_delta(anchor, -1);
            self.release_block(realm, subscriber);
        }
    }

    /// Expires mappings and holds, and queues due ANNOUNCE and Mapping Update copies.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(now_s) = self.clock.tick(now) {
            let mut freed = Vec::new();
            self.table.expire(now_s, |f| freed.push(f));
            self.metrics.expired += freed.len() as u64;
            for f in freed {
                self.on_freed(f, now_s);
            }
            let max = self.config.max_held_ports;
            self.ports.expire_holds(now_s, max);
        }
        while self.unsolicited.announce_due(now) {
            self.queue_announce(now);
        }
        self.send_due_updates(now);
    }

    /// When to call [`Server::handle_timeout`] next: the next ANNOUNCE or Mapping Update
    /// copy, or the next second while anything can expire.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.unsolicited.next_deadline();
        let c = self.table.counts();
        if c.bindings > 0 || self.ports.has_holds() {
            let second = self.clock.next_second();
            next = Some(next.map_or(second, |n| n.min(second)));
        }
        next
    }

    /// The next unsolicited datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.unsolicited.pop()
    }
}

/// True if the Client IP field names the packet's source (RFC 6887 §8.2, compared in
/// IPv4-mapped form).
fn ip_matches(field: IpAddr, source: SocketAddrV4) -> bool {
    match field {
        IpAddr::V4(v4) => v4 == *source.ip(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped() == Some(*source.ip()),
    }
}
