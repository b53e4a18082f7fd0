//! The NAT address pool: pools and sections of external addresses, a port bitmap per address
//! and protocol, random port allocation (RFC 6056 §4, RFC 7857 §9) that keeps parity
//! (RFC 4787 REQ-4) and the <1024 / ≥1024 range (RFC 4787 REQ-3a), and never hands out
//! UDP 5350/5351 (RFC 6887 §11.3).//!
//! Split by idea: this file holds the addresses (pools, sections, membership, anchors and
//! dedicated addresses); `bitmap` the per-address, per-protocol port bitmaps; `choose` taking,
//! releasing and randomly choosing ports; `capacity` what an address offers and uses.

use std::net::Ipv4Addr;

use pcp_client::wire::Protocol;

use crate::config::{ConfigError, EngineConfig};
use crate::fasthash::{FastMap, KeyedState};
use crate::prefix::parse_range;

mod bitmap;
mod capacity;
mod choose;
#[cfg(test)]
mod tests;

use bitmap::PortBitmap;

/// A deterministic starting address for a subscriber without an anchor, so the same
/// subscriber lands on the same address after a restart even without a suggestion.
pub(crate) fn preferred_index(subscriber: Ipv4Addr, realm: u16, n: usize) -> usize {
    let x = (u64::from(u32::from(subscriber)) ^ (u64::from(realm) << 32))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> 32) as usize) % n.max(1)
}
pub use choose::PortRequest;

/// Protocols the pool hands ports out for. ICMP "ports" are query identifiers, used by the
/// dataplane only (RFC 5508 REQ-1: mapped like ports); PCP maps TCP and UDP
/// ([`pcp_proto_index`]). Others get UNSUPP_PROTOCOL.
pub const PROTOCOLS: [Protocol; 3] = [Protocol::TCP, Protocol::UDP, Protocol::ICMP];

/// PCP's own ports, never mapped for clients: UDP 5350 and 5351 (RFC 6887 §11.3).
pub const PCP_PORTS: [u16; 2] = [5350, 5351];

/// Index of a supported protocol in the per-address bitmaps.
pub fn proto_index(protocol: Protocol) -> Option<usize> {
    PROTOCOLS.iter().position(|p| *p == protocol)
}

/// [`proto_index`] for the protocols PCP MAP and PEER accept: TCP and UDP (an ICMP mapping
/// would have to cover every identifier, RFC 6887 §11.3 item 2).
pub fn pcp_proto_index(protocol: Protocol) -> Option<usize> {
    if protocol == Protocol::ICMP {
        None
    } else {
        proto_index(protocol)
    }
}

/// One external address.
#[derive(Debug, Clone)]
pub struct PoolAddress {
    /// The address.
    pub addr: Ipv4Addr,
    /// Pool id (`Pool:` in the table).
    pub pool: u16,
    /// Section id (`Section:` in the table).
    pub section: u8,
    ports: [PortBitmap; PROTOCOLS.len()],
    /// Subscribers anchored here (paired pooling).
    pub subscribers: u32,
    /// Dedicated to one subscriber by an all-protocol MAP (RFC 6887 §11.1, protocol 0): no
    /// other subscriber is anchored here or takes a port here while it lasts.
    pub dedicated: bool,
}

/// All external addresses, with port usage.
#[derive(Debug, Clone)]
pub struct NatPool {
    addrs: Vec<PoolAddress>,
    index: FastMap<Ipv4Addr, u16>,
    port_min: u16,
    port_max: u16,
    parity: bool,
    reserved: Vec<u16>,
    /// Lowest and highest address (as integers): a quick "not in the pool" test.
    span: (u32, u32),
    /// One bit per address of the span, set for pool addresses (empty when the span is over
    /// [`MEMBER_BITMAP_MAX`] addresses; then the index answers).
    members: Vec<u64>,
}

/// Largest address span that gets a membership bitmap (1 Mi addresses = 128 KiB).
const MEMBER_BITMAP_MAX: u64 = 1 << 20;

impl NatPool {
    /// Builds the pool from the configuration.
    pub fn new(config: &EngineConfig) -> Result<NatPool, ConfigError> {
        let mut pool = NatPool {
            addrs: Vec::new(),
            index: FastMap::with_hasher(KeyedState::random()),
            port_min: config.port_min.max(1),
            port_max: config.port_max,
            parity: config.preserve_parity,
            reserved: config.reserved_ports.clone(),
            span: (u32::MAX, 0),
            members: Vec::new(),
        };
        for p in &config.pools {
            for s in &p.sections {
                for r in &s.ranges {
                    for addr in parse_range(r)? {
                        pool.push(addr, p.id, s.id)?;
                    }
                }
            }
        }
        if pool.addrs.is_empty() {
            return Err(ConfigError::NoPool);
        }
        let span = u64::from(pool.span.1 - pool.span.0) + 1;
        if span <= MEMBER_BITMAP_MAX {
            pool.members = vec![0; span.div_ceil(64) as usize];
            for a in &pool.addrs {
                let bit = (u32::from(a.addr) - pool.span.0) as usize;
                pool.members[bit / 64] |= 1 << (bit % 64);
            }
        }
        Ok(pool)
    }

    fn push(&mut self, addr: Ipv4Addr, pool: u16, section: u8) -> Result<(), ConfigError> {
        if self.index.contains_key(&addr) {
            return Err(ConfigError::DuplicateAddress(addr));
        }
        let i = u16::try_from(self.addrs.len()).map_err(|_| ConfigError::TooManyAddresses)?;
        let mut ports: [PortBitmap; PROTOCOLS.len()] = std::array::from_fn(|_| PortBitmap::new());
        for (pi, bitmap) in ports.iter_mut().enumerate() {
            // Port 0 is never a port.
            bitmap.set(0);
            for r in &self.reserved {
                bitmap.set(*r);
            }
            if PROTOCOLS[pi] == Protocol::UDP {
                for p in PCP_PORTS {
                    bitmap.set(p);
                }
            }
        }
        self.addrs.push(PoolAddress {
            addr,
            pool,
            section,
            ports,
            subscribers: 0,
            dedicated: false,
        });
        self.index.insert(addr, i);
        let a = u32::from(addr);
        self.span = (self.span.0.min(a), self.span.1.max(a));
        Ok(())
    }

    /// Number of external addresses.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// True when there is no address (never, once built).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The address at `index`.
    pub fn address(&self, index: u16) -> Option<&PoolAddress> {
        self.addrs.get(usize::from(index))
    }

    /// All addresses.
    pub fn addresses(&self) -> &[PoolAddress] {
        &self.addrs
    }

    /// True if `addr` is a pool address. Cheaper than [`NatPool::index_of`] for the common
    /// case of an address outside the pool's span (the dataplane asks for every packet).
    #[inline]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        if a < self.span.0 || a > self.span.1 {
            return false;
        }
        let bit = (a - self.span.0) as usize;
        match self.members.get(bit / 64) {
            Some(w) => w & (1 << (bit % 64)) != 0,
            None => self.index.contains_key(&addr),
        }
    }

    /// Index of `addr` if it is in the pool.
    pub fn index_of(&self, addr: Ipv4Addr) -> Option<u16> {
        self.index.get(&addr).copied()
    }

    /// Clears every port (state loss) but keeps the exclusions.
    pub fn reset(&mut self) {
        let config_reserved = self.reserved.clone();
        for a in &mut self.addrs {
            a.subscribers = 0;
            a.dedicated = false;
            for (pi, b) in a.ports.iter_mut().enumerate() {
                *b = PortBitmap::new();
                b.set(0);
                for r in &config_reserved {
                    b.set(*r);
                }
                if PROTOCOLS[pi] == Protocol::UDP {
                    for p in PCP_PORTS {
                        b.set(p);
                    }
                }
            }
        }
    }

    /// True if nothing uses the address: no subscriber anchored, no port mapped or held in
    /// any protocol (only the permanent exclusions are set), not dedicated. An all-protocol
    /// MAP may take such an address whole.
    pub fn untouched(&self, index: u16) -> bool {
        let Some(a) = self.addrs.get(usize::from(index)) else {
            return false;
        };
        // Port 0, the reserved ports and (UDP) PCP's own ports are always set.
        let excluded = |pi: usize| {
            let mut ex = vec![0u16];
            ex.extend_from_slice(&self.reserved);
            if PROTOCOLS[pi] == Protocol::UDP {
                ex.extend_from_slice(&PCP_PORTS);
            }
            ex.sort_unstable();
            ex.dedup();
            ex.len() as u32
        };
        a.subscribers == 0
            && !a.dedicated
            && a.ports
                .iter()
                .enumerate()
                .all(|(pi, b)| b.used <= excluded(pi))
    }

    /// True if the address is dedicated to one subscriber ([`PoolAddress::dedicated`]).
    pub fn is_dedicated(&self, index: u16) -> bool {
        self.addrs
            .get(usize::from(index))
            .is_some_and(|a| a.dedicated)
    }

    /// Dedicates the address to one subscriber, or gives it back to the shared pool.
    pub fn set_dedicated(&mut self, index: u16, dedicated: bool) {
        if let Some(a) = self.addrs.get_mut(usize::from(index)) {
            a.dedicated = dedicated;
        }
    }

    /// Gives every dedicated address back (state loss).
    pub fn clear_dedicated(&mut self) {
        for a in &mut self.addrs {
            a.dedicated = false;
        }
    }

    /// Adjusts the anchored-subscriber count of an address.
    pub fn anchor_delta(&mut self, index: u16, delta: i32) {
        if let Some(a) = self.addrs.get_mut(usize::from(index)) {
            a.subscribers = a.subscribers.saturating_add_signed(delta);
        }
    }
}
