//! The translator's fast path: batches of packets of known sessions, with their memory
//! accesses overlapped.
//!
//! With a million sessions, a packet's session slot, its index line and its binding in the
//! mapping table are each a cache miss; handled one packet at a time, the translator spends
//! most of its time waiting for memory. [`Translator::process_batch`] therefore works on
//! [`CHUNK`] packets at a time in stages, VPP-style: it parses every packet and starts
//! fetching its index line; then, for every packet, reads the slot the index suggests; then
//! the binding that slot names; and only then translates, by which time the lines are in the
//! cache. The stages only *read* ahead; the last one confirms the fetched slot holds the
//! packet's session (or looks it up properly), so a wrong guess (a hash collision, a session
//! created by an earlier packet of the same batch) costs time, never correctness.
//!
//! The fast path takes plain UDP and TCP packets (no IP options, not fragments, TTL left,
//! within the MTU) of sessions that exist, whose binding is still the one they were made on;
//! TCP packets may change the connection state. Everything else (new flows, ICMP, hairpins,
//! fragments, drops) goes through [`Translator::process`] — the same code a single packet
//! takes, so both paths give the same bytes, verdicts, counters and state (checked by
//! `fast_path_matches_the_full_path` in the tests).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::checksum;
use super::flow_index::{FlowHash, FlowKey};
use super::ipv4::{MIN_HEADER_LEN, field, proto};
use super::rewrite::{TCP_CHECKSUM, TCP_FLAGS, TCP_HEADER_LEN, UDP_CHECKSUM, UDP_HEADER_LEN};
use super::session::Dir;
use super::translate::{Translator, TtlMode, Verdict};
use crate::server::Server;

/// Packets whose fetches are overlapped (each stage runs over this many packets before the
/// next starts).
pub const CHUNK: usize = 64;

const TCP_SYN: u8 = 0x02;

// The fast path reads the same fields as `Ipv4Packet` and the full path's rewrite, at the
// same offsets (`ipv4::field`, `rewrite`): one header layout, read here through fixed-size
// arrays so that the bounds are checked once per packet rather than per field.
/// Transport header of an option-less IPv4 packet.
const L4: usize = MIN_HEADER_LEN;
/// The bytes [`plain`] and [`rewrite`] look at: the IPv4 header and a UDP header.
const VIEW: usize = L4 + UDP_HEADER_LEN;
const TCP_FLAGS_AT: usize = L4 + TCP_FLAGS;
const TCP_CHECKSUM_AT: usize = L4 + TCP_CHECKSUM;
const UDP_CHECKSUM_AT: usize = L4 + UDP_CHECKSUM;

/// What the first stage learnt of a packet the fast path may take.
#[derive(Debug, Clone, Copy)]
struct Meta {
    inbound: bool,
    key: FlowKey,
    hash: FlowHash,
    tcp_flags: u8,
}

/// The header fields of a plain UDP/TCP packet, if the fast path may take it: IPv4 without
/// options, header checksum right, not a fragment, transport header complete, TTL that does
/// not run out, not larger than `mtu`.
#[derive(Debug, Clone, Copy)]
struct Plain {
    protocol: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
}

#[inline(always)]
fn plain(p: &[u8], mtu: usize, ttl: TtlMode) -> Option<Plain> {
    // Fixed-size views: the compiler checks the length once, not at every field.
    let h: &[u8; VIEW] = p.get(..VIEW)?.try_into().ok()?;
    if h[field::VER_IHL] != 0x45 {
        return None; // not version 4, or IP options
    }
    let total = usize::from(u16::from_be_bytes([
        h[field::TOTAL_LEN],
        h[field::TOTAL_LEN + 1],
    ]));
    let protocol = h[field::PROTOCOL];
    let (need, tcp_flags) = match protocol {
        proto::UDP => (VIEW, 0),
        proto::TCP => (L4 + TCP_HEADER_LEN, *p.get(TCP_FLAGS_AT)?),
        _ => return None,
    };
    if total < need || total > p.len() || total > mtu {
        return None;
    }
    if (h[field::FLAGS_FRAG] & 0x3f) | h[field::FLAGS_FRAG + 1] != 0 {
        return None; // MF or an offset: fragments take the full path
    }
    if ttl == TtlMode::Decrement && h[field::TTL] <= 1 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let sum = u64::from(word(0))
        + u64::from(word(4))
        + u64::from(word(8))
        + u64::from(word(12))
        + u64::from(word(16));
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    if checksum::fold(sum as u32 + (sum >> 32) as u32) != 0xffff {
        return None;
    }
    Some(Plain {
        protocol,
        src: word(field::SRC),
        dst: word(field::DST),
        sport: u16::from_be_bytes([h[L4], h[L4 + 1]]),
        dport: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        tcp_flags,
    })
}

/// Rewrites the source (outbound) or destination (inbound) endpoint of a packet [`plain`]
/// accepted and takes one hop of TTL, with the same checksum steps, in the same order, as the
/// full path (`rewrite_flow`, then the TTL), so both give the same bytes.
#[inline(always)]
fn rewrite(p: &mut [u8], inbound: bool, to: SocketAddrV4, ttl: TtlMode) {
    let tcp_checksum = p
        .get(TCP_CHECKSUM_AT..TCP_CHECKSUM_AT + 2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    let Some(h) = p.get_mut(..VIEW) else {
        return;
    };
    let Ok(h): Result<&mut [u8; VIEW], _> = h.try_into() else {
        return;
    };
    let (addr_at, port_at) = if inbound {
        (field::DST, L4 + 2)
    } else {
        (field::SRC, L4)
    };
    let old_addr = u32::from_be_bytes([h[addr_at], h[addr_at + 1], h[addr_at + 2], h[addr_at + 3]]);
    let new_addr = u32::from(*to.ip());
    let old_port = u16::from_be_bytes([h[port_at], h[port_at + 1]]);
    let old_ttl = h[field::TTL];
    let protocol = h[field::PROTOCOL];
    let new_ttl = match ttl {
        TtlMode::Decrement => old_ttl.saturating_sub(1),
        TtlMode::KernelForwardsTwice => old_ttl.saturating_add(1),
    };
    // RFC 1624 eqn. 3 for every changed word at once, HC' = ~(~HC + Σ(~m + m')): the same
    // checksum as applying the words one by one (each fold keeps the value modulo 0xffff and
    // is zero only for a zero sum), which the full path does.
    let addr_delta = u32::from(!(old_addr >> 16) as u16)
        + u32::from(!old_addr as u16)
        + (new_addr >> 16)
        + (new_addr & 0xffff);
    let ttl_delta = u32::from(!u16::from_be_bytes([old_ttl, protocol]))
        + u32::from(u16::from_be_bytes([new_ttl, protocol]));
    let old_ck = u16::from_be_bytes([h[field::CHECKSUM], h[field::CHECKSUM + 1]]);
    let ip_ck = !checksum::fold(u32::from(!old_ck) + addr_delta + ttl_delta);
    h[addr_at..addr_at + 4].copy_from_slice(&new_addr.to_be_bytes());
    h[field::TTL] = new_ttl;
    h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&ip_ck.to_be_bytes());
    h[port_at..port_at + 2].copy_from_slice(&to.port().to_be_bytes());
    let port_delta = u32::from(!old_port) + u32::from(to.port());
    let l4 = |c: u16| !checksum::fold(u32::from(!c) + addr_delta + port_delta);
    if protocol == proto::UDP {
        let c = u16::from_be_bytes([h[UDP_CHECKSUM_AT], h[UDP_CHECKSUM_AT + 1]]);
        if c != 0 {
            // A result of zero is sent as all ones (RFC 768); zero means "no checksum".
            let c = match l4(c) {
                0 => 0xffff,
                c => c,
            };
            h[UDP_CHECKSUM_AT..UDP_CHECKSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
        }
    } else if let Some(c) = tcp_checksum {
        if let Some(at) = p.get_mut(TCP_CHECKSUM_AT..TCP_CHECKSUM_AT + 2) {
            at.copy_from_slice(&l4(c).to_be_bytes());
        }
    }
}

impl Translator {
    /// Translates a batch of packets in place: `verdicts[i]` is what to do with `packets[i]`,
    /// exactly as [`Translator::process`] would answer for each in order, but with the memory
    /// accesses of [`CHUNK`] packets at a time overlapped (see the module docs). Only the first
    /// `min(packets.len(), verdicts.len())` packets are handled.
    pub fn process_batch(
        &mut self,
        server: &mut Server,
        now: Instant,
        packets: &mut [&mut [u8]],
        verdicts: &mut [Verdict],
    ) {
        let n = packets.len().min(verdicts.len());
        // The full path runs the server's timers before each outbound packet; once per batch
        // gives the same table, as the clock does not move within a batch. Then the sessions
        // of the bindings that freed (or anything else did) go stale.
        server.handle_timeout(now);
        self.sync_bindings(server);
        let now_s = server.seconds(now);
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK).min(n);
            self.chunk(
                server,
                now,
                now_s,
                &mut packets[start..end],
                &mut verdicts[start..end],
            );
            start = end;
        }
    }

    /// One [`CHUNK`] of a batch, stage by stage.
    fn chunk(
        &mut self,
        server: &mut Server,
        now: Instant,
        now_s: u32,
        packets: &mut [&mut [u8]],
        verdicts: &mut [Verdict],
    ) {
        let mut metas: [Option<Meta>; CHUNK] = [None; CHUNK];
        let mut slots = [u32::MAX; CHUNK];
        // Stage 1: parse and hash (the packets are in the cache already).
        for (m, p) in metas.iter_mut().zip(packets.iter()) {
            *m = self.meta(server, p);
        }
        // The fetch loops are kept tight: their loads are plain reads, which the CPU only
        // overlaps as far as its out-of-order window reaches, so the less work between two
        // loads, the more of them are in flight at once. (A prefetch instruction would not
        // hold up retirement, but `_mm_prefetch` still needs `unsafe` outside a
        // `#[target_feature]` function, which this crate does not allow.)
        let mut warm = 0u32;
        for m in metas.iter().flatten() {
            warm ^= self.sessions.touch_index(m.hash, m.inbound);
        }
        // Stage 2: the slots the index lines suggest, then fetch them. The binding is not
        // fetched: the slot's flags say whether the session may use the fast path.
        for (m, slot) in metas.iter().zip(slots.iter_mut()) {
            if let Some(m) = m {
                *slot = self.sessions.candidate(m.hash, m.inbound);
            }
        }
        for slot in &slots {
            warm ^= self.sessions.fetch_slot(*slot);
        }
        black_box(warm);
        // Stage 4: translate, the lines now (most likely) in the cache.
        for (((m, p), v), slot) in metas
            .iter()
            .zip(packets.iter_mut())
            .zip(verdicts.iter_mut())
            .zip(slots)
        {
            *v = match m {
                Some(m) => match self.fast_one(server, now_s, p, m, slot) {
                    Some(v) => v,
                    None => self.process(server, now, p),
                },
                None => self.process(server, now, p),
            };
        }
    }

    /// Stage 1 for one packet: `None` sends it to the full path.
    #[inline(always)]
    fn meta(&self, server: &Server, p: &[u8]) -> Option<Meta> {
        let h = plain(p, self.config.mtu, self.config.ttl)?;
        let from_inside = server.is_subscriber(Ipv4Addr::from(h.src));
        let to_pool = server.pool().contains(Ipv4Addr::from(h.dst));
        let (inbound, key) = match (from_inside, to_pool) {
            // A bypassed destination (RFC 6888 REQ-6) is never translated, even where an
            // inbound packet made a session with it.
            (true, false)
                if super::bypass::covers_port(
                    &self.config.bypass,
                    Ipv4Addr::from(h.dst),
                    h.protocol,
                    Some(h.dport),
                ) =>
            {
                return None;
            }
            // Outbound: (internal endpoint, remote endpoint).
            (true, false) => (
                false,
                FlowKey {
                    protocol: h.protocol,
                    addr: h.src,
                    port: h.sport,
                    remote_addr: h.dst,
                    remote_port: h.dport,
                },
            ),
            // Inbound: (external endpoint, remote endpoint).
            (false, true) => (
                true,
                FlowKey {
                    protocol: h.protocol,
                    addr: h.dst,
                    port: h.dport,
                    remote_addr: h.src,
                    remote_port: h.sport,
                },
            ),
            // Hairpins and strays take the full path.
            _ => return None,
        };
        let hash = self.sessions.hash(&key, inbound);
        Some(Meta {
            inbound,
            key,
            hash,
            tcp_flags: h.tcp_flags,
        })
    }

    /// Stage 4 for one packet of the fast path; `None` (nothing changed) sends it to the full
    /// path.
    #[inline(always)]
    fn fast_one(
        &mut self,
        server: &mut Server,
        now_s: u32,
        p: &mut [u8],
        m: &Meta,
        candidate: u32,
    ) -> Option<Verdict> {
        let protocol = m.key.protocol;
        let t = self.config.timeouts;
        if m.inbound {
            let id = self.sessions.resolve(candidate, m.hash, &m.key, true)?;
            // The session admits the packet (as in the full path) while its binding still
            // owns the external endpoint: it has not gone stale since it was put on it.
            let s = self.sessions.fast_slot(id, true)?;
            self.sessions
                .touch_slot(id, now_s, Dir::In, m.tcp_flags, &t);
            rewrite(p, true, s.internal, self.config.ttl);
            self.counters.inbound += 1;
        } else {
            let id = self.sessions.resolve(candidate, m.hash, &m.key, false)?;
            // Outbound, the binding must also be the realm-0 one `outbound_binding` finds.
            let s = self.sessions.fast_slot(id, false)?;
            let (touched, covered) = self
                .sessions
                .touch_slot(id, now_s, Dir::Out, m.tcp_flags, &t);
            if !covered {
                // The binding's implicit part lives as long as the session's new deadline,
                // as the full path's `outbound_binding` sets it. Only when that deadline
                // moved, or another session or the server set the binding's since: else
                // the write would change nothing, and the binding's line is not touched.
                server.refresh_implicit(s.binding, touched.expires);
                self.sessions.cover(id);
            }
            if protocol == proto::TCP && m.tcp_flags & TCP_SYN != 0 {
                let remote =
                    SocketAddrV4::new(Ipv4Addr::from(m.key.remote_addr), m.key.remote_port);
                self.silence_held_syns(s.external, remote);
            }
            rewrite(p, false, s.external, self.config.ttl);
            self.counters.outbound += 1;
        }
        self.counters.fast_path += 1;
        Some(Verdict::Forward)
    }
}
