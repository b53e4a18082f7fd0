//! The translator's fast path: batches of packets of known sessions, with their memory
//! accesses overlapped.
//!
//! With a million sessions, a packet's session slot, its index line and its binding in the
//! mapping table are each a cache miss; handled one packet at a time, the translator spends
//! most of its time waiting for memory. [`Translator::process_batch`] therefore works on
//! [`CHUNK`] packets at a time in stages, VPP-style: it parses every packet and starts
//! fetching its index line; then, for every packet, reads the slot the index suggests; then
//! the binding that slot names; and only then translates, by which time the lines are in the
//! cache. The stages only *read* ahead; the last one looks everything up again for real, so a
//! wrong guess (a hash collision, a session created by an earlier packet of the same batch)
//! costs time, never correctness.
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
use super::ipv4::proto;
use super::session::{Dir, TcpState};
use super::translate::{Translator, TtlMode, Verdict};
use crate::server::Server;

/// Packets between two stages of the pipeline (see [`Translator::process_batch`]).
pub const LAG: usize = 8;
/// Packets in the pipeline at once (a power of two above `3 * LAG`).
const RING: usize = 32;
/// The pipeline's depth in packets: the tests use batch sizes around it.
pub const CHUNK: usize = RING;

const TCP_SYN: u8 = 0x02;

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
fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

#[inline(always)]
fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

#[inline(always)]
fn plain(p: &[u8], mtu: usize, ttl: TtlMode) -> Option<Plain> {
    let h = p.get(..40.min(p.len()))?;
    if h.len() < 28 || h[0] != 0x45 {
        return None;
    }
    let total = usize::from(be16(h, 2));
    let protocol = h[9];
    let need = match protocol {
        proto::UDP => 28,
        proto::TCP => 40,
        _ => return None,
    };
    if total < need || total > p.len() || total > mtu || h.len() < need {
        return None;
    }
    if be16(h, 6) & 0x3fff != 0 {
        return None; // MF or an offset: fragments take the full path
    }
    let ok_ttl = match ttl {
        TtlMode::Decrement => h[8] > 1,
        TtlMode::KernelForwardsTwice => true,
    };
    if !ok_ttl || checksum::fold(checksum::sum(&h[..20])) != 0xffff {
        return None;
    }
    Some(Plain {
        protocol,
        src: be32(h, 12),
        dst: be32(h, 16),
        sport: be16(h, 20),
        dport: be16(h, 22),
        tcp_flags: if protocol == proto::TCP { h[33] } else { 0 },
    })
}

/// Rewrites the source (outbound) or destination (inbound) endpoint of a packet [`plain`]
/// accepted and takes one hop of TTL, with the same checksum steps, in the same order, as the
/// full path (`rewrite_flow`, then the TTL), so both give the same bytes.
#[inline(always)]
fn rewrite(p: &mut [u8], inbound: bool, to: SocketAddrV4, ttl: TtlMode) {
    let (addr_at, port_at) = if inbound { (16, 22) } else { (12, 20) };
    let old_addr = Ipv4Addr::from(be32(p, addr_at));
    let new_addr = *to.ip();
    let c = checksum::adjust_addr(be16(p, 10), old_addr, new_addr);
    p[addr_at..addr_at + 4].copy_from_slice(&new_addr.octets());
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let old_port = be16(p, port_at);
    p[port_at..port_at + 2].copy_from_slice(&to.port().to_be_bytes());
    let udp = p[9] == proto::UDP;
    let ck_at = if udp { 26 } else { 36 };
    let c = be16(p, ck_at);
    if !(udp && c == 0) {
        let mut c = checksum::adjust_addr(c, old_addr, new_addr);
        c = checksum::adjust(c, old_port, to.port());
        if udp && c == 0 {
            c = 0xffff;
        }
        p[ck_at..ck_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let old_ttl = p[8];
    let new_ttl = match ttl {
        TtlMode::Decrement => old_ttl.saturating_sub(1),
        TtlMode::KernelForwardsTwice => old_ttl.saturating_add(1),
    };
    let c = checksum::adjust(
        be16(p, 10),
        u16::from_be_bytes([old_ttl, p[9]]),
        u16::from_be_bytes([new_ttl, p[9]]),
    );
    p[8] = new_ttl;
    p[10..12].copy_from_slice(&c.to_be_bytes());
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
        // gives the same table, as the clock does not move within a batch.
        server.handle_timeout(now);
        let now_s = server.seconds(now);
        let mut metas: [Option<Meta>; RING] = [None; RING];
        let mut bindings = [u32::MAX; RING];
        let mut warm = 0u32;
        // Packet `step` enters stage 1 while packet `step - LAG` is in stage 2, `step - 2 LAG`
        // in stage 3 and `step - 3 LAG` is translated: each fetch has LAG packets' worth of
        // work to arrive in, and no stage waits for its own loads.
        for step in 0..n + 3 * LAG {
            if let Some(p) = packets.get(step).filter(|_| step < n) {
                let m = self.meta(server, p);
                if let Some(m) = &m {
                    warm ^= self.sessions.touch_index(m.hash, m.inbound);
                }
                metas[step % RING] = m;
            }
            if let Some(j) = step.checked_sub(LAG).filter(|j| *j < n) {
                bindings[j % RING] = metas[j % RING]
                    .and_then(|m| self.sessions.touch_candidate(m.hash, m.inbound))
                    .unwrap_or(u32::MAX);
            }
            if let Some(j) = step.checked_sub(2 * LAG).filter(|j| *j < n) {
                warm ^= u32::from(server.touch_binding(bindings[j % RING]));
            }
            if let Some(j) = step.checked_sub(3 * LAG).filter(|j| *j < n) {
                let p = &mut *packets[j];
                verdicts[j] = match &metas[j % RING] {
                    Some(m) => match self.fast_one(server, now_s, p, m) {
                        Some(v) => v,
                        None => self.process(server, now, p),
                    },
                    None => self.process(server, now, p),
                };
            }
        }
        black_box(warm);
    }

    /// Stage 1 for one packet: `None` sends it to the full path.
    #[inline(always)]
    fn meta(&self, server: &Server, p: &[u8]) -> Option<Meta> {
        let h = plain(p, self.config.mtu, self.config.ttl)?;
        let from_inside = server.is_subscriber(Ipv4Addr::from(h.src));
        let to_pool = server.pool().contains(Ipv4Addr::from(h.dst));
        let (inbound, key) =
            match (from_inside, to_pool) {
                // A bypassed destination (RFC 6888 REQ-6) is never translated, even where an
                // inbound packet made a session with it.
                (true, false)
                    if !self.config.bypass.is_empty()
                        && self.config.bypass.iter().any(|r| {
                            r.matches(Ipv4Addr::from(h.dst), h.protocol, Some(h.dport))
                        }) =>
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
        let hash = if inbound {
            self.sessions.hash_in(&key)
        } else {
            self.sessions.hash_out(&key)
        };
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
    ) -> Option<Verdict> {
        let protocol = m.key.protocol;
        let endpoint = SocketAddrV4::new(Ipv4Addr::from(m.key.addr), m.key.port);
        let t = self.config.timeouts;
        if m.inbound {
            let id = self.sessions.find_in(m.hash, &m.key)?;
            let (s, internal) = self.sessions.slot(id)?;
            // The session admits the packet (as in the full path) if its binding still owns
            // the external endpoint.
            if !server.binding_maps(s.binding, protocol, internal, endpoint) {
                return None;
            }
            self.sessions
                .touch_slot(id, now_s, Dir::In, m.tcp_flags, &t);
            rewrite(p, true, internal, self.config.ttl);
            self.counters.inbound += 1;
        } else {
            let id = self.sessions.find_out(m.hash, &m.key)?;
            let (s, _) = self.sessions.slot(id)?;
            let next = if protocol == proto::TCP {
                s.tcp.next(Dir::Out, m.tcp_flags)
            } else {
                TcpState::Closed
            };
            let expires = now_s.saturating_add(t.idle(protocol, next));
            if !server.refresh_outbound(s.binding, protocol, endpoint, s.external, expires) {
                return None;
            }
            self.sessions
                .touch_slot(id, now_s, Dir::Out, m.tcp_flags, &t);
            if protocol == proto::TCP && m.tcp_flags & TCP_SYN != 0 {
                self.silence_held_syns(s.external, m.key.remote_addr, m.key.remote_port);
            }
            rewrite(p, false, s.external, self.config.ttl);
            self.counters.outbound += 1;
        }
        self.counters.fast_path += 1;
        Some(Verdict::Forward)
    }
}
