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
