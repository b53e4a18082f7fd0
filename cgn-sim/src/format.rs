//! The mapping table as operators see it (design.md §1): one entry per line, in the shape of
//! a vendor CGN's PCP table, and the same entries as JSON.
//!
//! ```text
//! Type: MAP IN, Protocol: TCP, Zone: ---, Vpn: public ANY -> 198.51.100.3:2048[100.64.0.2:5791] TTL: 120, Left: 97, Pool: 10, Section: 0 Mapping Nonce: 0x…, Filter(s): 0
//! Type: MAP OUT, Protocol: TCP, Zone: ---, Vpn: public 100.64.0.2:5791[198.51.100.3:2048] -> ANY TTL: 120, Left: 97, Pool: 10, Section: 0 Mapping Nonce: 0x…, Filter(s): 0
//! Type: PEER, Protocol: UDP, Zone: ---, Vpn: public 100.64.0.2:17192[198.51.100.3:9000] -> 203.0.113.50:1280 TTL: 1800, Left: 1800, Pool: 10, Section: 0 Mapping Nonce: 0x…
//! ```

use std::fmt::Write as _;
use std::net::SocketAddrV4;

use pcp_client::wire::{Nonce, Protocol};
use serde::Serialize;

use crate::blocks::PortBlock;
use crate::table::Table;

/// The kind of a table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EntryType {
    /// Inbound half of a MAP mapping.
    #[serde(rename = "MAP IN")]
    MapIn,
    /// Outbound half of a MAP mapping.
    #[serde(rename = "MAP OUT")]
    MapOut,
    /// Inbound half of a static mapping.
    #[serde(rename = "STATIC IN")]
    StaticIn,
    /// Outbound half of a static mapping.
    #[serde(rename = "STATIC OUT")]
    StaticOut,
    /// A PEER 5-tuple entry.
    #[serde(rename = "PEER")]
    Peer,
    /// An implicit outbound binding (made by traffic).
    #[serde(rename = "IMPLICIT")]
    Implicit,
}

impl EntryType {
    /// The name printed after `Type:`.
    pub fn name(self) -> &'static str {
        match self {
            EntryType::MapIn => "MAP IN",
            EntryType::MapOut => "MAP OUT",
            EntryType::StaticIn => "STATIC IN",
            EntryType::StaticOut => "STATIC OUT",
            EntryType::Peer => "PEER",
            EntryType::Implicit => "IMPLICIT",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableEntry {
    /// Kind.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// `TCP`, `UDP`, …
    pub protocol: String,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Remote peer (PEER only).
    pub remote: Option<SocketAddrV4>,
    /// Granted lifetime, seconds.
    pub ttl: u32,
    /// Seconds left.
    pub left: u32,
    /// Pool id.
    pub pool: u16,
    /// Section id; with Port Block Allocation the subscriber's block number on its address.
    pub section: u16,
    /// The subscriber's port block as `first-last` (Port Block Allocation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    /// Nonce as `0x` + 24 hex digits (absent for implicit entries).
    pub nonce: Option<String>,
    /// FILTERs as `addr/len:port` (MAP only).
    pub filters: Vec<String>,
    /// DESCRIPTION (RFC 7220), if any.
    pub description: Option<String>,
    /// Made by NAT-PMP rather than PCP.
    pub natpmp: bool,
}

impl TableEntry {
    /// The operator line (design.md §1).
    pub fn line(&self) -> String {
        let mut s = format!(
            "Type: {}, Protocol: {}, Zone: ---, Vpn: public ",
            self.kind.name(),
            self.protocol
        );
        let _ = match self.kind {
            EntryType::MapIn | EntryType::StaticIn => {
                write!(s, "ANY -> {}[{}]", self.external, self.internal)
            }
            EntryType::MapOut | EntryType::StaticOut | EntryType::Implicit => {
                write!(s, "{}[{}] -> ANY", self.internal, self.external)
            }
            EntryType::Peer => match self.remote {
                Some(r) => write!(s, "{}[{}] -> {}", self.internal, self.external, r),
                None => write!(s, "{}[{}] -> ANY", self.internal, self.external),
            },
        };
        let _ = write!(
            s,
            " TTL: {}, Left: {}, Pool: {}, Section: {}",
            self.ttl, self.left, self.pool, self.section
        );
        if let Some(b) = &self.block {
            let _ = write!(s, " (ports {b})");
        }
        if let Some(n) = &self.nonce {
            let _ = write!(s, " Mapping Nonce: {n}");
        }
        if matches!(
            self.kind,
            EntryType::MapIn | EntryType::MapOut | EntryType::StaticIn | EntryType::StaticOut
        ) {
            let _ = write!(s, ", Filter(s): {}", self.filters.len());
        }
        s
    }
}

fn nonce_text(n: &Nonce) -> String {
    n.to_string()
}

/// Every entry of the table at engine second `now`, in a stable order (by external endpoint,
/// MAP IN before MAP OUT, then PEERs).
pub fn entries(table: &Table, now: u32) -> Vec<TableEntry> {
    entries_with(table, now, &|_, _| None)
}

/// [`entries`], with each subscriber's port block (by realm and subscriber address) as its
/// `Section` (Port Block Allocation, [`crate::blocks`]).
pub fn entries_with(table: &Table, now: u32, blocks: &BlockOf<'_>) -> Vec<TableEntry> {
    let mut out = Vec::new();
    let mut bindings: Vec<_> = table.bindings().collect();
    bindings.sort_by_key(|(_, b)| (u32::from(*b.external.ip()), b.external.port(), b.protocol));
    let left = |expires: u32| expires.saturating_sub(now);
    for (id, b) in &bindings {
        let protocol = Protocol(b.protocol).to_string();
        let block = blocks(b.realm, *b.internal.ip());
        let base = |kind, ttl, left, nonce: Option<String>| TableEntry {
            kind,
            protocol: protocol.clone(),
            internal: b.internal,
            external: b.external,
            remote: None,
            ttl,
            left,
            pool: b.pool,
            section: block.map_or(u16::from(b.section), |k| k.number),
            block: block.map(|k| format!("{}-{}", k.first, k.last)),
            nonce,
            filters: Vec::new(),
            description: None,
            natpmp: false,
        };
        if b.has_map() {
            let (kin, kout) = if b.is_static() {
                (EntryType::StaticIn, EntryType::StaticOut)
            } else {
                (EntryType::MapIn, EntryType::MapOut)
            };
            let l = if b.is_static() {
                u32::MAX
            } else {
                left(b.map_expires)
            };
            let nonce = (!b.is_static()).then(|| nonce_text(&b.nonce));
            let filters: Vec<String> = b
                .filters()
                .iter()
                .map(|f| {
                    format!(
                        "{}/{}:{}",
                        f.remote_peer_address,
                        f.prefix_length.saturating_sub(96),
                        f.remote_peer_port
                    )
                })
                .collect();
            let description = b.extra.as_ref().and_then(|e| e.description.clone());
            let natpmp = b.flags & crate::table::flags::NATPMP != 0;
            for kind in [kin, kout] {
                let mut e = base(kind, b.map_lifetime, l, nonce.clone());
                e.filters = filters.clone();
                e.description = description.clone();
                e.natpmp = natpmp;
                out.push(e);
            }
        }
        let mut peers: Vec<_> = table
            .peer_sessions()
            .filter(|(_, p)| p.binding == *id)
            .collect();
        peers.sort_by_key(|(_, p)| (u32::from(*p.remote.ip()), p.remote.port()));
        for (_, p) in peers {
            let mut e = base(
                EntryType::Peer,
                p.lifetime,
                left(p.expires),
                Some(nonce_text(&p.nonce)),
            );
            e.remote = Some(p.remote);
            e.description = p.description.as_deref().map(str::to_string);
            out.push(e);
        }
        if b.implicit_expires != 0 {
            let l = left(b.implicit_expires);
            out.push(base(EntryType::Implicit, l, l, None));
        }
    }
    out
}

/// Looks up a subscriber's port block by (realm, subscriber address).
pub type BlockOf<'a> = dyn Fn(u16, std::net::Ipv4Addr) -> Option<PortBlock> + 'a;

/// The whole table as operator lines, one per entry, each ending in a newline.
pub fn render_text(table: &Table, now: u32) -> String {
    render_text_with(table, now, &|_, _| None)
}

/// [`render_text`] with port blocks as the `Section` ([`entries_with`]).
pub fn render_text_with(table: &Table, now: u32, blocks: &BlockOf<'_>) -> String {
    let mut s = String::new();
    for e in entries_with(table, now, blocks) {
        s.push_str(&e.line());
        s.push('\n');
    }
    s
}

/// The whole table as a JSON array.
pub fn render_json(table: &Table, now: u32) -> String {
    render_json_with(table, now, &|_, _| None)
}

/// [`render_json`] with port blocks ([`entries_with`]).
pub fn render_json_with(table: &Table, now: u32, blocks: &BlockOf<'_>) -> String {
    serde_json::to_string_pretty(&entries_with(table, now, blocks)).unwrap_or_else(|_| "[]".into())
}
