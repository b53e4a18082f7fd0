//! Port Block Allocation (RFC 7422; RFC 6888 REQ-14), a pool option
//! ([`crate::config::EngineConfig::port_blocks`]).
//!
//! The ports `max(port_min, 1024)..=port_max` of every pool address are cut into blocks of
//! `size` ports; each subscriber gets one block, on its (paired) address, and every external
//! port it holds (MAP, PORT_SET, PEER, NAT-PMP, implicit bindings of the dataplane) comes from
//! that block, at random inside it (RFC 7422 §2, SHOULD). A full block means the subscriber is
//! over its quota: USER_EX_QUOTA for PCP, a dropped packet with ICMP Host Unreachable in the
//! dataplane (RFC 6888 REQ-11). No block left at all is NO_RESOURCES.
//!
//! * **Deterministic** (RFC 7422): the subscriber's ordinal `k` among the subscriber prefixes
//!   gives address `k mod N` and block `k div N`: computed, never stored, the same after a
//!   restart, so an operator needs no per-mapping log to know who used a port.
//! * **Dynamic**: at its first mapping a subscriber takes the first free block on its
//!   preferred address (or any address), logged once; the block goes back when its last
//!   mapping does.
//!
//! The block is shown in the table's `Section:` field (`Section: 3 (ports 1216-1279)`).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use pcp_client::wire::ResultCode;

use crate::allocate::preferred_index;
use crate::config::{BlockMode, PortBlocks};
use crate::server::Server;

/// One subscriber's block of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortBlock {
    /// Pool address index the block is on.
    pub addr_index: u16,
    /// The block's number on its address (0 = the first block from port 1024 up).
    pub number: u16,
    /// First port of the block.
    pub first: u16,
    /// Last port of the block.
    pub last: u16,
}

impl PortBlock {
    /// True if `port` is in the block.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// Dynamic block assignments (kept by [`crate::ports::Ports`]): a block is taken exactly
/// while one subscriber holds it.
#[derive(Debug, Clone, Default)]
pub(crate) struct BlockTable {
    /// (realm, subscriber) → block.
    by_subscriber: std::collections::HashMap<(u16, Ipv4Addr), PortBlock>,
    /// (address index, block number) in use.
    taken: HashSet<(u16, u16)>,
}

impl BlockTable {
    /// The block the subscriber holds.
    pub fn get(&self, realm: u16, subscriber: Ipv4Addr) -> Option<PortBlock> {
        self.by_subscriber.get(&(realm, subscriber)).copied()
    }

    /// True if block `number` of address `addr_index` is held.
    pub fn is_taken(&self, addr_index: u16, number: u16) -> bool {
        self.taken.contains(&(addr_index, number))
    }

    /// Gives `block` to the subscriber; true if it held none before.
    pub fn assign(&mut self, realm: u16, subscriber: Ipv4Addr, block: PortBlock) -> bool {
        if self
            .by_subscriber
            .insert((realm, subscriber), block)
            .is_none()
        {
            self.taken.insert((block.addr_index, block.number));
            true
        } else {
            false
        }
    }

    /// Takes the subscriber's block back.
    pub fn release(&mut self, realm: u16, subscriber: Ipv4Addr) -> Option<PortBlock> {
        let b = self.by_subscriber.remove(&(realm, subscriber))?;
        self.taken.remove(&(b.addr_index, b.number));
        Some(b)
    }
}

impl Server {
    /// Block settings, the lowest block port and blocks per address; `None`: option off.
    fn block_geometry(&self) -> Option<(PortBlocks, u16, u16)> {
        let b = self.config().port_blocks?;
        let lo = self.config().port_min.max(1024);
        let span = (u32::from(self.config().port_max) + 1).saturating_sub(u32::from(lo));
        let per_addr = u16::try_from(span / u32::from(b.size.max(1))).unwrap_or(u16::MAX);
        Some((b, lo, per_addr))
    }

    fn block(&self, addr_index: u16, number: u16) -> Option<PortBlock> {
        let (b, lo, per_addr) = self.block_geometry()?;
        if number >= per_addr || usize::from(addr_index) >= self.pool().len() {
            return None;
        }
        let first = u32::from(lo) + u32::from(number) * u32::from(b.size);
        Some(PortBlock {
            addr_index,
            number,
            first: u16::try_from(first).ok()?,
            last: u16::try_from(first + u32::from(b.size) - 1).ok()?,
        })
    }

    /// The subscriber's ordinal among the subscriber prefixes (RFC 7422 deterministic
    /// mapping), if it is a subscriber address.
    fn subscriber_ordinal(&self, subscriber: Ipv4Addr) -> Option<u64> {
        let mut base = 0u64;
        for p in self.subscribers().prefixes() {
            let size = 1u64 << (32 - u32::from(p.len.min(32)));
            if p.contains(subscriber) {
                return Some(base + u64::from(u32::from(subscriber) - u32::from(p.addr)));
            }
            base += size;
        }
        None
    }

    /// The block a subscriber holds, or (none yet) the one it would get now. `Ok(None)`: Port
    /// Block Allocation is off. `Err(NO_RESOURCES)`: no block is left for it.
    pub(crate) fn block_for(
        &self,
        realm: u16,
        subscriber: Ipv4Addr,
    ) -> Result<Option<PortBlock>, ResultCode> {
        let Some((b, _, per_addr)) = self.block_geometry() else {
            return Ok(None);
        };
        let n = self.pool().len() as u64;
        match b.mode {
            BlockMode::Deterministic => {
                let k = self
                    .subscriber_ordinal(subscriber)
                    .ok_or(ResultCode::NoResources)?;
                let number = u16::try_from(k / n.max(1)).map_err(|_| ResultCode::NoResources)?;
                self.block((k % n.max(1)) as u16, number)
                    .filter(|_| number < per_addr)
                    .map(Some)
                    .ok_or(ResultCode::NoResources)
            }
            BlockMode::Dynamic => {
                if let Some(held) = self.ports().assigned_block(realm, subscriber) {
                    return Ok(Some(held));
                }
                let start = preferred_index(subscriber, realm, self.pool().len());
                let len = self.pool().len();
                (0..len)
                    .map(|i| ((start + i) % len) as u16)
                    .find_map(|a| {
                        (0..per_addr)
                            .find(|j| !self.ports().is_block_taken(a, *j))
                            .and_then(|j| self.block(a, j))
                    })
                    .map(Some)
                    .ok_or(ResultCode::NoResources)
            }
        }
    }

    /// Records that the subscriber uses `block` (dynamic mode: taken until its last mapping
    /// goes; logged once, RFC 7422 §2: dynamically assigned blocks MUST be logged).
    pub(crate) fn take_block(&mut self, realm: u16, subscriber: Ipv4Addr, block: PortBlock) {
        if self.config().port_blocks.map(|b| b.mode) != Some(BlockMode::Dynamic) {
            return;
        }
        if self.ports_mut().assign_block(realm, subscriber, block) {
            let addr = self.pool().address(block.addr_index).map(|a| a.addr);
            tracing::info!(%subscriber, external = ?addr, first = block.first, last = block.last, "port block assigned");
        }
    }

    /// The subscriber's last mapping went: its dynamic block is free again.
    pub(crate) fn release_block(&mut self, realm: u16, subscriber: Ipv4Addr) {
        if let Some(b) = self.ports_mut().release_block(realm, subscriber) {
            tracing::info!(%subscriber, first = b.first, last = b.last, "port block released");
        }
    }

    /// The port block of a subscriber with mappings (for `ctl mappings` and the dataplane);
    /// `None` when the option is off or the subscriber has no mapping.
    pub fn port_block(&self, realm: u16, subscriber: Ipv4Addr) -> Option<PortBlock> {
        if !self.subscribers().has_bindings(realm, subscriber) {
            return None;
        }
        self.block_for(realm, subscriber).ok().flatten()
    }
}
