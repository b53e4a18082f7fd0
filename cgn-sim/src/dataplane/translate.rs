//! The translator: decides what happens to each IPv4 packet read from the TUN device and
//! rewrites it in place (sans-IO; the clock is passed in).
//!
//! * **Outbound** (source in a subscriber prefix): the endpoint-independent binding of the
//!   internal endpoint is found or created in the shared mapping table (RFC 4787 REQ-1,
//!   protocol-dependent per RFC 7857 §5, implicit mappings sharing pool, quota and port space
//!   with PCP mappings), the session is recorded, the source is rewritten. No binding possible
//!   (quota, exhaustion): drop and ICMP Host Unreachable, code 1 (RFC 6888 REQ-11); existing
//!   mappings are never evicted.
//! * **Inbound** (destination in the pool): admitted by a MAP mapping (EIF unless FILTER says
//!   otherwise, RFC 6887 §11, §13.3), a PEER session, an existing session, or the NAT's own
//!   filtering for implicit bindings (EIF by default, RFC 6888 REQ-7; APDF as an option).
//! * **Hairpin** (subscriber → another subscriber's external endpoint): translated outbound,
//!   then inbound, so the packet carries the *external* source (RFC 4787 REQ-9, RFC 5382 REQ-8).
//! * **ICMP errors** in both directions have their embedded header restored (RFC 5508 REQ-4,
//!   REQ-5) and never refresh anything (REQ-6).
//! * **TTL** is decremented; at 1 the packet is dropped with ICMP Time Exceeded. A DF packet
//!   over the MTU gets Fragmentation Needed, others are fragmented (RFC 4787 REQ-13).
//! * **Unsolicited inbound SYNs** are held 6 s; an outbound SYN of the same connection
//!   discards them silently, otherwise ICMP Port Unreachable goes back (RFC 5382 REQ-4).
//! * **Bypassed destinations** ([`DataplaneConfig::bypass`], RFC 6888 REQ-6): outbound packets
//!   to them leave untranslated (TTL and MTU handled as usual); see [`super::bypass`].
//!
//! Every drop has a reason and a counter ([`DropReason`]).

mod flows;
mod fragments;

#[cfg(test)]
pub(crate) use fragments::fragment_for_test;
use fragments::{first_fragment_key, fragment};

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use pcp_client::wire::{Protocol, ResultCode};

use super::bypass::Bypass;
use super::checksum;
use super::fragment::{FragmentKey, FragmentRewrite, Fragments};
use super::icmp::{IcmpError, build_error_checked};
use super::ipv4::{Ipv4Packet, MIN_HEADER_LEN, PacketError, field, proto};
use super::rewrite::{
    Classified, Flow, Side, classify_checked, rewrite_flow_checked, rewrite_icmp_error_checked,
};
use super::session::{Bound, Dir, FastPath, SessionKey, Sessions, Timeouts, Touch};
use crate::server::Server;
use crate::table::{ExternalKey, InternalKey, filter_matches};

/// Inbound filtering for implicit (non-PCP) bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filtering {
    /// Endpoint-independent filtering (RFC 6888 REQ-7 recommends it for CGNs).
    #[default]
    EndpointIndependent,
    /// Address-and-port-dependent filtering: only remote endpoints the subscriber has sent to.
    AddressAndPortDependent,
}

/// How the translator treats the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlMode {
    /// The translator is the hop: it decrements the TTL, and answers TTL 1 with ICMP Time
    /// Exceeded itself.
    #[default]
    Decrement,
    /// The kernel forwards every packet twice around the translator (into the TUN device and
    /// out of it) and decrements the TTL both times, sending Time Exceeded itself when it runs
    /// out. The translator adds one back, so the CGN counts as one hop, as a NAT should.
    KernelForwardsTwice,
}

/// Translator settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Filtering for implicit bindings.
    pub filtering: Filtering,
    /// Session idle timers.
    pub timeouts: Timeouts,
    /// How long an unsolicited inbound SYN is held before ICMP Port Unreachable (≥ 6 s).
    pub syn_hold: Duration,
    /// Send ICMP Port Unreachable for unsolicited SYNs (else drop them silently).
    pub syn_port_unreachable: bool,
    /// MTU of the links the translated packets leave on.
    pub mtu: usize,
    /// Source of ICMP errors sent to subscribers (the CGN's inside address).
    pub inside_address: Ipv4Addr,
    /// Source of ICMP errors sent towards the Internet (the CGN's outside address);
    /// unspecified (0.0.0.0): the first address of the pool in force, which follows a
    /// renumbering.
    pub outside_address: Ipv4Addr,
    /// Most sessions.
    pub max_sessions: usize,
    /// Most unsolicited SYNs held at once.
    pub max_pending_syns: usize,
    /// TTL handling.
    pub ttl: TtlMode,
    /// Destinations (prefix, optionally protocol and port) that subscribers reach untranslated
    /// (RFC 6888 REQ-6). Empty by default: everything is translated.
    pub bypass: Vec<Bypass>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            filtering: Filtering::default(),
            timeouts: Timeouts::default(),
            syn_hold: Duration::from_secs(6),
            syn_port_unreachable: true,
            mtu: 1500,
            inside_address: Ipv4Addr::new(100, 64, 0, 1),
            outside_address: Ipv4Addr::new(203, 0, 113, 1),
            max_sessions: 4_000_000,
            max_pending_syns: 1024,
            ttl: TtlMode::Decrement,
            bypass: Vec::new(),
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $v:ident = $name:literal,)*) => {
        /// Why a packet was not forwarded.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason { $($(#[$doc])* $v,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Label used in metrics.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
        }
    };
}

drop_reasons! {
    /// Not IPv4 (the TUN also delivers IPv6).
    NotIpv4 = "not_ipv4",
    /// Header lengths inconsistent, transport header cut short.
    Malformed = "malformed",
    /// IP header, ICMP or embedded header checksum wrong (RFC 5508 REQ-3).
    BadChecksum = "bad_checksum",
    /// Neither from a subscriber nor to the pool (ingress filtering).
    NotNatTraffic = "not_nat_traffic",
    /// A protocol or ICMP type the NAT does not translate.
    UnsupportedProtocol = "unsupported_protocol",
    /// TTL ran out (ICMP Time Exceeded sent).
    TtlExceeded = "ttl_exceeded",
    /// DF set and larger than the MTU (ICMP Fragmentation Needed sent).
    TooBig = "too_big",
    /// No port or address left (ICMP Host Unreachable sent).
    NoResources = "no_resources",
    /// Subscriber quota exceeded (ICMP Host Unreachable sent).
    QuotaExceeded = "quota_exceeded",
    /// Session table full (ICMP Host Unreachable sent).
    SessionTableFull = "session_table_full",
    /// Inbound to an external endpoint with no mapping.
    NoMapping = "no_mapping",
    /// Inbound not admitted by the mapping's filtering or FILTER options.
    Filtered = "filtered",
    /// A later fragment whose first fragment never came (or no room to hold it).
    FragmentOrphan = "fragment_orphan",
    /// An ICMP error about a flow the NAT does not know.
    IcmpErrorNoMapping = "icmp_error_no_mapping",
    /// An unsolicited inbound SYN, held for RFC 5382 REQ-4 (not lost: answered later).
    UnsolicitedSyn = "unsolicited_syn",
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Drops by [`DropReason`] (index = position in [`DropReason::ALL`]).
    pub drops: [u64; 15],
    /// Packets translated outbound.
    pub outbound: u64,
    /// Packets translated inbound.
    pub inbound: u64,
    /// Packets hairpinned (counted once, also in `outbound` and `inbound`).
    pub hairpinned: u64,
    /// ICMP errors translated.
    pub icmp_errors: u64,
    /// ICMP errors generated by the translator.
    pub icmp_generated: u64,
    /// Later fragments translated (immediately or after their first one).
    pub fragments: u64,
    /// Packets fragmented to fit the MTU.
    pub fragmented: u64,
    /// Packets [`Translator::process_batch`] translated on its fast path (also counted in
    /// `outbound` or `inbound`).
    pub fast_path: u64,
    /// Outbound packets forwarded untranslated to a bypassed destination (RFC 6888 REQ-6;
    /// their later fragments count in `fragments`).
    pub bypassed: u64,
}

impl Counters {
    /// The count of one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.drops[i])
    }

    fn count(&mut self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.drops[i] += 1;
        }
    }
}

/// What to do with the packet handed to [`Translator::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place: send it (same length).
    Forward,
    /// Do not send it.
    Drop(DropReason),
    /// Taken over: held (an early fragment) or sent as fragments through
    /// [`Translator::poll_transmit`].
    Consumed,
}

struct PendingSyn {
    due: Instant,
    external: SocketAddrV4,
    remote: SocketAddrV4,
    packet: Vec<u8>,
}

/// The translator state (see the module docs).
pub struct Translator {
    pub(super) config: DataplaneConfig,
    pub(super) sessions: Sessions,
    fragments: Fragments,
    pending_syns: VecDeque<PendingSyn>,
    out: VecDeque<Vec<u8>>,
    pub(super) counters: Counters,
    ident: u16,
    /// The mapping table's change-log losses seen so far ([`Translator::sync_bindings`]).
    seen_losses: u64,
}

impl std::fmt::Debug for Translator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator")
            .field("sessions", &self.sessions.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// The checked view of the packet being translated, carried through the whole path.
type View<'a> = Ipv4Packet<&'a mut [u8]>;

fn ep(e: (Ipv4Addr, u16)) -> SocketAddrV4 {
    SocketAddrV4::new(e.0, e.1)
}

fn map_err(e: PacketError) -> DropReason {
    match e {
        PacketError::BadHeaderChecksum | PacketError::BadIcmpChecksum => DropReason::BadChecksum,
        PacketError::NotIpv4(_) => DropReason::NotIpv4,
        _ => DropReason::Malformed,
    }
}

impl Translator {
    /// A translator for `server`'s pool and subscribers, its clock at `now`.
    pub fn new(config: DataplaneConfig, server: &Server, now: Instant) -> Translator {
        let now_s = server.seconds(now);
        Translator {
            // Ids already in the log are of bindings no session of this translator is on.
            seen_losses: server.table().changes().losses,
            sessions: Sessions::new(now_s, config.max_sessions),
            fragments: Fragments::new(30, 65_536, 256),
            pending_syns: VecDeque::new(),
            out: VecDeque::new(),
            counters: Counters::default(),
            ident: 0,
            config,
        }
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Timer entries of the session table.
    pub fn session_wheel_entries(&self) -> usize {
        self.sessions.wheel_len()
    }

    /// Approximate heap bytes of the session table.
    pub fn session_heap_bytes(&self) -> usize {
        self.sessions.heap_bytes()
    }

    /// The next packet the translator itself sends (ICMP errors, fragments, released early
    /// fragments).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Forgets every session (the CGN lost its state).
    pub fn clear(&mut self, server: &Server, now: Instant) {
        self.sessions.clear(server.seconds(now));
        self.pending_syns.clear();
    }

    /// Marks stale the sessions on every binding the mapping table freed or changed since the
    /// last call (all of them if the table was cleared or its log overflowed), so that the
    /// fast path may trust a session's flags instead of reading its binding. Runs before every
    /// packet of the full path and at the start of every batch.
    pub(super) fn sync_bindings(&mut self, server: &mut Server) {
        let changes = server.binding_changes();
        if changes.losses != self.seen_losses {
            self.seen_losses = changes.losses;
            changes.ids.clear();
            self.sessions.invalidate_all();
            return;
        }
        for id in changes.ids.drain(..) {
            self.sessions.invalidate(id);
        }
    }

    /// Expires sessions, fragments and held SYNs (answering the SYNs, RFC 5382 REQ-4).
    pub fn handle_timeout(&mut self, server: &mut Server, now: Instant) {
        let now_s = server.seconds(now);
        self.sessions.expire(now_s, |_, _| {});
        let orphans = self.fragments.expire(now_s);
        for _ in 0..orphans {
            self.counters.count(DropReason::FragmentOrphan);
        }
        while self.pending_syns.front().is_some_and(|p| p.due <= now) {
            let Some(p) = self.pending_syns.pop_front() else {
                break;
            };
            if self.config.syn_port_unreachable {
                // From the address the SYN was sent to, as the host itself would answer.
                // The held copy is its own buffer, checked here once (a cut copy is not
                // quoted: no error, as before).
                if let Ok(held) = Ipv4Packet::new_checked(&p.packet[..]) {
                    self.emit_error(&held, *p.external.ip(), IcmpError::PortUnreachable);
                }
            }
        }
    }

    /// When [`Translator::handle_timeout`] must run next, at the latest.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let second = now + Duration::from_secs(1);
        self.pending_syns
            .front()
            .map_or(second, |p| p.due.min(second))
    }

    /// Translates `packet` in place (see the module docs).
    pub fn process(&mut self, server: &mut Server, now: Instant, packet: &mut [u8]) -> Verdict {
        self.sync_bindings(server);
        let verdict = self.process_inner(server, now, packet);
        if let Verdict::Drop(reason) = verdict {
            self.counters.count(reason);
        }
        verdict
    }

    fn process_inner(&mut self, server: &mut Server, now: Instant, packet: &mut [u8]) -> Verdict {
        if packet.first().is_none_or(|b| b >> 4 != 4) {
            return Verdict::Drop(DropReason::NotIpv4);
        }
        // The one header check of the path: lengths and checksum, into a view that every
        // step below carries; none of them parses the IPv4 header again.
        let mut ip = match Ipv4Packet::new_checked(packet) {
            Ok(ip) => ip,
            Err(e) => return Verdict::Drop(map_err(e)),
        };
        if !ip.verify_checksum() {
            return Verdict::Drop(DropReason::BadChecksum);
        }
        let class = match classify_checked(&ip) {
            Ok(c) => c,
            Err(e) => return Verdict::Drop(map_err(e)),
        };
        let (src, dst, ttl) = (ip.src(), ip.dst(), ip.ttl());
        let from_inside = server.is_subscriber(src);
        let to_pool = server.pool().contains(dst);
        if !from_inside && !to_pool {
            return Verdict::Drop(DropReason::NotNatTraffic);
        }
        if ttl <= 1 && self.config.ttl == TtlMode::Decrement {
            let from = if from_inside {
                self.config.inside_address
            } else {
                self.outside_source(server)
            };
            self.emit_error(&ip, from, IcmpError::TimeExceeded);
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        if from_inside
            && !to_pool
            && !self.config.bypass.is_empty()
            && super::bypass::covers(&self.config.bypass, &class, dst)
        {
            return self.bypass(server.seconds(now), &mut ip, src);
        }
        // A DF packet over the MTU is refused with Fragmentation Needed about the packet as
        // its sender sent it (RFC 4787 REQ-13, RFC 1191): translation keeps the length, so
        // this is known now, and the untranslated copy is what the error must quote and go to.
        let refused_copy =
            (ip.total_len() > self.config.mtu && ip.dont_fragment()).then(|| ip.to_owned_packet());
        let verdict = match class {
            Classified::Flow {
                flow, tcp_flags, ..
            } if from_inside => {
                match self.outbound(server, now, &mut ip, flow, tcp_flags) {
                    Verdict::Forward if server.pool().contains(flow.dst.0) => {
                        // Hairpin: the packet now carries the external source.
                        self.counters.hairpinned += 1;
                        let flow = Flow {
                            src: flow_src(&ip),
                            ..flow
                        };
                        self.inbound(server, now, &mut ip, flow, tcp_flags)
                    }
                    v => v,
                }
            }
            Classified::Flow {
                flow, tcp_flags, ..
            } => self.inbound(server, now, &mut ip, flow, tcp_flags),
            Classified::IcmpError { embedded, .. } if from_inside => {
                match self.icmp_error(server, &mut ip, embedded, Dir::Out) {
                    Verdict::Forward if server.pool().contains(embedded.src.0) => {
                        let Ok(Classified::IcmpError { embedded, .. }) = classify_checked(&ip)
                        else {
                            return Verdict::Drop(DropReason::Malformed);
                        };
                        self.icmp_error(server, &mut ip, embedded, Dir::In)
                    }
                    v => v,
                }
            }
            Classified::IcmpError { embedded, .. } => {
                self.icmp_error(server, &mut ip, embedded, Dir::In)
            }
            Classified::Fragment {
                protocol,
                src,
                dst,
                ident,
            } => {
                let key = FragmentKey {
                    protocol,
                    src,
                    dst,
                    ident,
                };
                self.later_fragment(server, now, &mut ip, key)
            }
            Classified::Unsupported { .. } => {
                self.portless(server, now, &mut ip, from_inside, to_pool, src, dst)
            }
        };
        if verdict == Verdict::Forward {
            let outside = self.outside_source(server);
            let refused = refused_copy.as_ref().map(Ipv4Packet::view);
            return self.finish(&mut ip, from_inside, outside, refused);
        }
        verdict
    }

    /// The source of ICMP errors the translator sends towards the Internet:
    /// [`DataplaneConfig::outside_address`], or when that is unspecified the first address
    /// of the pool in force, so that it follows a renumbering (`ctl pool`).
    fn outside_source(&self, server: &Server) -> Ipv4Addr {
        if self.config.outside_address.is_unspecified() {
            server
                .pool()
                .addresses()
                .first()
                .map_or(Ipv4Addr::UNSPECIFIED, |a| a.addr)
        } else {
            self.config.outside_address
        }
    }

    /// Forwards an outbound packet to a bypassed destination untranslated (RFC 6888 REQ-6):
    /// no binding, no session, only TTL and MTU. A first fragment makes the rest of its
    /// datagram follow unchanged (the fragment table "rewrites" its source to itself).
    fn bypass(&mut self, now_s: u32, ip: &mut View<'_>, src: Ipv4Addr) -> Verdict {
        if let Some(k) = first_fragment_key(ip) {
            self.learn_fragments(now_s, k, FragmentRewrite::Source(src));
        }
        // From the inside: errors come from the inside address, the outside one is unused.
        let verdict = self.finish(ip, true, self.config.inside_address, None);
        if !matches!(verdict, Verdict::Drop(_)) {
            self.counters.bypassed += 1;
        }
        verdict
    }

    /// TTL and MTU, after translation. `original` is the packet as it arrived when it was
    /// translated and is too big with DF set (the Fragmentation Needed quotes it).
    fn finish(
        &mut self,
        ip: &mut View<'_>,
        from_inside: bool,
        outside: Ipv4Addr,
        original: Option<Ipv4Packet<&[u8]>>,
    ) -> Verdict {
        apply_ttl(ip, self.config.ttl);
        if ip.total_len() <= self.config.mtu {
            return Verdict::Forward;
        }
        let from = if from_inside {
            self.config.inside_address
        } else {
            outside
        };
        if ip.dont_fragment() {
            let mtu = u16::try_from(self.config.mtu).unwrap_or(u16::MAX);
            let quoted = original.unwrap_or_else(|| ip.view());
            self.emit_error(&quoted, from, IcmpError::FragmentationNeeded { mtu });
            return Verdict::Drop(DropReason::TooBig);
        }
        match fragment(ip, self.config.mtu) {
            Some(pieces) => {
                self.counters.fragmented += 1;
                self.out.extend(pieces);
                Verdict::Consumed
            }
            None => Verdict::Drop(DropReason::Malformed),
        }
    }

    fn emit_error<T: AsRef<[u8]>>(
        &mut self,
        original: &Ipv4Packet<T>,
        from: Ipv4Addr,
        error: IcmpError,
    ) {
        let mut buf = vec![0u8; super::icmp::MAX_ERROR_LEN];
        self.ident = self.ident.wrapping_add(1);
        if let Some(len) = build_error_checked(original, from, error, self.ident, &mut buf) {
            buf.truncate(len);
            self.counters.icmp_generated += 1;
            self.out.push_back(buf);
        }
    }

    /// Rewrites one end of a flow packet to `to`; a first fragment with more to come teaches
    /// the fragment table how to rewrite the rest of its datagram.
    fn rewrite(&mut self, now_s: u32, ip: &mut View<'_>, side: Side, to: SocketAddrV4) -> Verdict {
        let first_of_many = first_fragment_key(ip);
        if let Err(e) = rewrite_flow_checked(ip, side, (*to.ip(), to.port())) {
            return Verdict::Drop(map_err(e));
        }
        if let Some(k) = first_of_many {
            let rewrite = match side {
                Side::Source => FragmentRewrite::Source(*to.ip()),
                Side::Destination => FragmentRewrite::Destination(*to.ip()),
            };
            self.learn_fragments(now_s, k, rewrite);
        }
        Verdict::Forward
    }

    /// RFC 5382 REQ-4: the outbound SYN of a held connection silences the held one.
    pub(super) fn silence_held_syns(&mut self, external: SocketAddrV4, remote: SocketAddrV4) {
        if self.pending_syns.is_empty() {
            return;
        }
        self.pending_syns
            .retain(|p| !(p.external == external && p.remote == remote));
    }
}

/// One hop's worth of TTL (see [`TtlMode`]).
fn apply_ttl<T: AsRef<[u8]> + AsMut<[u8]>>(ip: &mut Ipv4Packet<T>, mode: TtlMode) {
    match mode {
        TtlMode::Decrement => ip.decrement_ttl(),
        TtlMode::KernelForwardsTwice => {
            let ttl = ip.ttl();
            ip.set_ttl(ttl.saturating_add(1));
        }
    }
}

/// The remote endpoint of a session: ICMP query sessions key on the address only (the
/// identifier is the subscriber's "port", translated like one).
fn remote_of(protocol: u8, e: (Ipv4Addr, u16)) -> SocketAddrV4 {
    if protocol == proto::ICMP {
        SocketAddrV4::new(e.0, 0)
    } else {
        ep(e)
    }
}

/// The source endpoint of a UDP/TCP/ICMP-echo packet the view holds (after an outbound
/// rewrite, for the hairpin's inbound half): read from the view, not parsed again.
fn flow_src<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> (Ipv4Addr, u16) {
    let l4 = ip.payload();
    let port = match ip.protocol() {
        proto::UDP | proto::TCP => l4.get(..2).map(|p| u16::from_be_bytes([p[0], p[1]])),
        proto::ICMP => l4.get(4..6).map(|p| u16::from_be_bytes([p[0], p[1]])),
        _ => None,
    };
    match port {
        Some(port) => (ip.src(), port),
        None => (Ipv4Addr::UNSPECIFIED, 0),
    }
}
