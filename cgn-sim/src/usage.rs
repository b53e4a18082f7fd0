//! `cgn-sim ctl status [--json]`: how full the pool is, per pool and section and per
//! subscriber, the way a carrier's operator reads a CGN's address pool.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Instant;

use serde::Serialize;

use crate::pool::{PROTOCOLS, proto_index};
use crate::server::Server;
use pcp_client::wire::Protocol;

/// Ports of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// Ports clients can get (range without reserved and PCP ports) × addresses.
    pub capacity: u64,
    /// Taken (mappings, implicit bindings, ports held down after release).
    pub used: u64,
}

/// One section of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionUsage {
    /// Section id.
    pub section: u8,
    /// External addresses in it.
    pub addresses: usize,
    /// UDP ports.
    pub udp: Ports,
    /// TCP ports.
    pub tcp: Ports,
    /// Subscribers anchored on its addresses (paired pooling).
    pub subscribers: u32,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// Pool id.
    pub pool: u16,
    /// Its sections.
    pub sections: Vec<SectionUsage>,
}

/// One subscriber (internal address) with bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberStatus {
    /// The subscriber's address.
    pub subscriber: Ipv4Addr,
    /// Bindings (each one external port) of any kind.
    pub bindings: u32,
    /// Of those, with a MAP (inbound allowed).
    pub maps: u32,
    /// PEER entries on its bindings.
    pub peers: u32,
    /// The per-subscriber quota (0: none).
    pub quota: u32,
    /// Its port block `ADDR:FIRST-LAST`, with Port Block Allocation.
    pub port_block: Option<String>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The server's epoch now (RFC 6887 §8.5).
    pub epoch: u32,
    /// Bindings in the table.
    pub bindings: usize,
    /// Pools and sections.
    pub pools: Vec<PoolUsage>,
    /// Subscribers with at least one binding, by address.
    pub subscribers: Vec<SubscriberStatus>,
}

/// The status of `server` at `now`.
pub fn status(server: &Server, now: Instant) -> Status {
    let pool = server.pool();
    let udp = proto_index(Protocol::UDP).unwrap_or(1);
    let tcp = proto_index(Protocol::TCP).unwrap_or(0);
    let (cap_udp, cap_tcp) = (u64::from(pool.capacity(udp)), u64::from(pool.capacity(tcp)));
    let mut pools: BTreeMap<u16, BTreeMap<u8, SectionUsage>> = BTreeMap::new();
    for (i, a) in pool.addresses().iter().enumerate() {
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        let s = pools
            .entry(a.pool)
            .or_default()
            .entry(a.section)
            .or_insert(SectionUsage {
                section: a.section,
                addresses: 0,
                udp: Ports {
                    capacity: 0,
                    used: 0,
                },
                tcp: Ports {
                    capacity: 0,
                    used: 0,
                },
                subscribers: 0,
            });
        s.addresses += 1;
        s.udp.capacity += cap_udp;
        s.tcp.capacity += cap_tcp;
        s.udp.used += u64::from(pool.used_ports(index, udp));
        s.tcp.used += u64::from(pool.used_ports(index, tcp));
        s.subscribers += a.subscribers;
    }
    let quota = server.config().quota_per_subscriber;
    let mut subs: BTreeMap<Ipv4Addr, SubscriberStatus> = BTreeMap::new();
    for (_, b) in server.table().bindings() {
        let ip = *b.internal.ip();
        let e = subs.entry(ip).or_insert_with(|| SubscriberStatus {
            subscriber: ip,
            bindings: 0,
            maps: 0,
            peers: 0,
            quota,
            port_block: server.port_block(b.realm, ip).and_then(|blk| {
                pool.address(blk.addr_index)
                    .map(|a| format!("{}:{}-{}", a.addr, blk.first, blk.last))
            }),
        });
        e.bindings += 1;
        e.maps += u32::from(b.has_map());
        e.peers += u32::from(b.peers);
    }
    Status {
        epoch: server.epoch(now),
        bindings: server.table().bindings().count(),
        pools: pools
            .into_iter()
            .map(|(pool, sections)| PoolUsage {
                pool,
                sections: sections.into_values().collect(),
            })
            .collect(),
        subscribers: subs.into_values().collect(),
    }
}

fn pct(p: Ports) -> String {
    if p.capacity == 0 {
        return "-".into();
    }
    format!("{:.1}%", p.used as f64 * 100.0 / p.capacity as f64)
}

impl Status {
    /// The operator's text: one line per pool section, one per subscriber.
    pub fn to_text(&self) -> String {
        let mut s = format!("epoch {}, {} bindings\n\n", self.epoch, self.bindings);
        let _ = writeln!(
            s,
            "{:<5} {:<8} {:>9} {:>21} {:>21} {:>11}",
            "Pool",
            "Section",
            "Addresses",
            "UDP used / capacity",
            "TCP used / capacity",
            "Subscribers"
        );
        for p in &self.pools {
            for sec in &p.sections {
                let _ = writeln!(
                    s,
                    "{:<5} {:<8} {:>9} {:>21} {:>21} {:>11}",
                    p.pool,
                    sec.section,
                    sec.addresses,
                    format!("{} / {} ({})", sec.udp.used, sec.udp.capacity, pct(sec.udp)),
                    format!("{} / {} ({})", sec.tcp.used, sec.tcp.capacity, pct(sec.tcp)),
                    sec.subscribers
                );
            }
        }
        let _ = writeln!(
            s,
            "\n{:<16} {:>8} {:>5} {:>5} {:>6}  Port block",
            "Subscriber", "Bindings", "MAPs", "PEERs", "Quota"
        );
        for sub in &self.subscribers {
            let _ = writeln!(
                s,
                "{:<16} {:>8} {:>5} {:>5} {:>6}  {}",
                sub.subscriber,
                sub.bindings,
                sub.maps,
                sub.peers,
                if sub.quota == 0 {
                    "-".into()
                } else {
                    sub.quota.to_string()
                },
                sub.port_block.as_deref().unwrap_or("-")
            );
        }
        s
    }

    /// The JSON document (pretty, one trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

// Keeps the protocol list in one place: the status reports the two PCP protocols.
const _: () = assert!(PROTOCOLS.len() == 3);
