//! Taking and releasing ports of the pool, and choosing them at random: RFC 6056 §4 (random
//! start, then the next free one), keeping the internal port's parity (RFC 4787 REQ-4) and its
//! <1024 / ≥1024 range (RFC 4787 REQ-3a), inside a port block ([`crate::blocks`]) or as a run
//! of consecutive ports (RFC 7753 port sets).

use rand::RngCore;

use super::NatPool;

/// How to pick a port.
#[derive(Debug, Clone, Copy)]
pub struct PortRequest {
    /// Protocol index ([`proto_index`](super::proto_index)).
    pub proto: usize,
    /// Internal port: its range class (<1024 or not) and parity are kept.
    pub internal_port: u16,
}

impl NatPool {
    /// Takes a specific port; false if it is taken or not allocatable.
    pub fn take(&mut self, index: u16, proto: usize, port: u16) -> bool {
        if !self.is_allocatable(proto, port) {
            return false;
        }
        match self
            .addrs
            .get_mut(usize::from(index))
            .and_then(|a| a.ports.get_mut(proto))
        {
            Some(b) => b.set(port),
            None => false,
        }
    }

    /// Returns a port to the free set (after its hold-down).
    pub fn release(&mut self, index: u16, proto: usize, port: u16) {
        if !self.is_allocatable(proto, port) {
            return;
        }
        if let Some(b) = self
            .addrs
            .get_mut(usize::from(index))
            .and_then(|a| a.ports.get_mut(proto))
        {
            b.clear(port);
        }
    }

    /// Picks and takes a random free port on `index` (RFC 6056 §4 style: random start, then
    /// the next free one), keeping the internal port's range class and, if configured, its
    /// parity. Falls back to the other parity, then the other range, before giving up.
    pub fn allocate(&mut self, index: u16, req: PortRequest, rng: &mut dyn RngCore) -> Option<u16> {
        let (low, high) = (
            (self.port_min.max(1), self.port_max.min(1023)),
            (self.port_min.max(1024), self.port_max),
        );
        let ranges = if req.internal_port < 1024 && req.internal_port != 0 {
            [low, high]
        } else {
            [high, low]
        };
        let parity = self.parity.then_some(req.internal_port & 1);
        let addr = self.addrs.get_mut(usize::from(index))?;
        let bitmap = addr.ports.get_mut(req.proto)?;
        for (lo, hi) in ranges {
            if lo > hi {
                continue;
            }
            let span = u32::from(hi) - u32::from(lo) + 1;
            // A few random probes first: cheap while the address is not crowded.
            for _ in 0..8 {
                let mut port = lo + (rng.next_u32() % span) as u16;
                if let Some(p) = parity {
                    port = (port & !1) | p;
                    if port < lo || port > hi {
                        continue;
                    }
                }
                if bitmap.set(port) {
                    return Some(port);
                }
            }
            let start = lo + (rng.next_u32() % span) as u16;
            if let Some(port) = bitmap.take_scanned(lo, hi, start, parity) {
                return Some(port);
            }
        }
        None
    }

    /// Picks and takes a random free port in `lo..=hi` on `index` (a subscriber's port block,
    /// [`crate::blocks`]): RFC 6056 style like [`NatPool::allocate`], keeping the internal
    /// port's parity if configured and possible. `None`: every port of the range is in use.
    pub fn allocate_in(
        &mut self,
        index: u16,
        proto: usize,
        internal_port: u16,
        lo: u16,
        hi: u16,
        rng: &mut dyn RngCore,
    ) -> Option<u16> {
        let (lo, hi) = (lo.max(self.port_min).max(1), hi.min(self.port_max));
        if lo > hi {
            return None;
        }
        let parity = self.parity.then_some(internal_port & 1);
        let span = u32::from(hi) - u32::from(lo) + 1;
        let start = lo + (rng.next_u32() % span) as u16;
        // PCP's own ports and the reserved ones are always set in the bitmap: never chosen.
        let bitmap = self
            .addrs
            .get_mut(usize::from(index))?
            .ports
            .get_mut(proto)?;
        bitmap.take_scanned(lo, hi, start, parity)
    }

    /// Takes `n` consecutive free ports on `index` (RFC 7753 port sets), starting at a random
    /// point of the internal port's range class; the first port has `parity` when given.
    /// Returns the first port, or `None` if no run of `n` exists.
    pub fn allocate_run(
        &mut self,
        index: u16,
        req: PortRequest,
        n: u16,
        parity: Option<u16>,
        within: Option<(u16, u16)>,
        rng: &mut dyn RngCore,
    ) -> Option<u16> {
        if n == 0 {
            return None;
        }
        let (lo, hi) = match within {
            // A port block: the run stays inside it.
            Some((lo, hi)) => (lo.max(self.port_min).max(1), hi.min(self.port_max)),
            None if req.internal_port < 1024 => (self.port_min.max(1), self.port_max.min(1023)),
            None => (self.port_min.max(1024), self.port_max),
        };
        if lo > hi || u32::from(hi) - u32::from(lo) + 1 < u32::from(n) {
            return None;
        }
        let last_start = hi - (n - 1);
        let span = u32::from(last_start) - u32::from(lo) + 1;
        let first = lo + (rng.next_u32() % span) as u16;
        let proto = req.proto;
        let fits = |pool: &NatPool, start: u16| {
            (0..n).all(|i| {
                pool.is_allocatable(proto, start + i) && !pool.is_used(index, proto, start + i)
            })
        };
        let mut start = first;
        for _ in 0..span {
            if parity.is_none_or(|p| start & 1 == p) && fits(self, start) {
                for i in 0..n {
                    self.take(index, proto, start + i);
                }
                return Some(start);
            }
            start = if start >= last_start { lo } else { start + 1 };
        }
        None
    }
}
