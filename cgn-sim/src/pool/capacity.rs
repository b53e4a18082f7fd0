//! What a pool address offers and uses: whether a port may ever be handed out, whether it is
//! taken, and per-address, per-protocol capacity, used and free counts (for `ctl status`,
//! metrics and anchoring).

use pcp_client::wire::Protocol;

use super::{NatPool, PCP_PORTS, PROTOCOLS};

impl NatPool {
    /// True if the port is taken (mapped, held, or excluded).
    pub fn is_used(&self, index: u16, proto: usize, port: u16) -> bool {
        self.addrs
            .get(usize::from(index))
            .and_then(|a| a.ports.get(proto))
            .is_none_or(|b| b.get(port))
    }

    /// True if `port` may ever be handed out (inside the configured range, not reserved).
    pub fn is_allocatable(&self, proto: usize, port: u16) -> bool {
        port >= self.port_min
            && port <= self.port_max
            && port != 0
            && !self.reserved.contains(&port)
            && !(PROTOCOLS.get(proto) == Some(&Protocol::UDP) && PCP_PORTS.contains(&port))
    }

    /// How many ports of protocol index `proto` an address offers clients (the configured
    /// range without reserved and PCP ports).
    pub fn capacity(&self, proto: usize) -> u32 {
        (self.port_min.max(1)..=self.port_max)
            .filter(|&p| self.is_allocatable(proto, p))
            .map(|_| 1)
            .sum()
    }

    /// How many of those are taken on address `index` (mappings, implicit bindings, holds).
    pub fn used_ports(&self, index: u16, proto: usize) -> u32 {
        (self.port_min.max(1)..=self.port_max)
            .filter(|&p| self.is_allocatable(proto, p) && self.is_used(index, proto, p))
            .map(|_| 1)
            .sum()
    }

    /// Free ports on an address for a protocol.
    pub fn free_ports(&self, index: u16, proto: usize) -> u32 {
        self.addrs
            .get(usize::from(index))
            .and_then(|a| a.ports.get(proto))
            .map_or(0, |b| 65536 - b.used)
    }
}
