//! The NAT address pool: pools and sections of external addresses, a port bitmap per address
//! and protocol, random port allocation (RFC 6056 §4, RFC 7857 §9) that keeps parity
//! (RFC 4787 REQ-4) and the <1024 / ≥1024 range (RFC 4787 REQ-3a), and never hands out
//! UDP 5350/5351 (RFC 6887 §11.3).

use std::net::Ipv4Addr;

use pcp_client::wire::Protocol;
use rand::RngCore;

use crate::config::{ConfigError, EngineConfig};
use crate::fasthash::{FastMap, KeyedState};
use crate::prefix::parse_range;

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

const WORDS: usize = 65536 / 64;

/// One bit per port.
#[derive(Clone)]
struct PortBitmap {
    words: Box<[u64; WORDS]>,
    used: u32,
}

impl std::fmt::Debug for PortBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortBitmap({} used)", self.used)
    }
}

impl PortBitmap {
    fn new() -> PortBitmap {
        PortBitmap {
            words: Box::new([0; WORDS]),
            used: 0,
        }
    }
    fn get(&self, port: u16) -> bool {
        self.words[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }
    fn set(&mut self, port: u16) -> bool {
        let w = &mut self.words[usize::from(port) / 64];
        let bit = 1 << (port % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.used += 1;
        true
    }
    fn clear(&mut self, port: u16) {
        let w = &mut self.words[usize::from(port) / 64];
        let bit = 1 << (port % 64);
        if *w & bit != 0 {
            *w &= !bit;
            self.used -= 1;
        }
    }
    /// First free port in `lo..=hi` at or after `start` (wrapping), whose parity matches
    /// `parity` when given.
    fn scan(&self, lo: u16, hi: u16, start: u16, parity: Option<u16>) -> Option<u16> {
        let mask = match parity {
            Some(0) => 0x5555_5555_5555_5555u64,
            Some(_) => 0xaaaa_aaaa_aaaa_aaaau64,
            None => u64::MAX,
        };
        let (lo32, hi32) = (u32::from(lo), u32::from(hi));
        let span = hi32 - lo32 + 1;
        let mut pos = u32::from(start.clamp(lo, hi));
        let mut scanned = 0u32;
        while scanned < span + 64 {
            let word_index = (pos / 64) as usize;
            let base = (pos / 64) * 64;
            let mut free = !self.words[word_index] & mask;
            // Keep only bits ≥ pos and ≤ hi, and ≥ lo.
            let from = pos - base;
            free &= u64::MAX << from;
            if base + 63 > hi32 {
                let keep = hi32 - base;
                free &= if keep >= 63 {
                    u64::MAX
                } else {
                    (1u64 << (keep + 1)) - 1
                };
            }
            if base < lo32 {
                free &= u64::MAX << (lo32 - base);
            }
            if free != 0 {
                let port = base + free.trailing_zeros();
                return u16::try_from(port).ok();
            }
            let advanced = base + 64 - pos;
            scanned += advanced;
            pos = base + 64;
            if pos > hi32 {
                pos = lo32;
            }
        }
        None
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

/// How to pick a port.
#[derive(Debug, Clone, Copy)]
pub struct PortRequest {
    /// Protocol index ([`proto_index`]).
    pub proto: usize,
    /// Internal port: its range class (<1024 or not) and parity are kept.
    pub internal_port: u16,
}

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
            for want in [parity, None] {
                if let Some(port) = bitmap.scan(lo, hi, start, want) {
                    bitmap.set(port);
                    return Some(port);
                }
                if parity.is_none() {
                    break;
                }
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
        for want in [parity, None] {
            if let Some(port) = bitmap.scan(lo, hi, start, want) {
                bitmap.set(port);
                return Some(port);
            }
            if parity.is_none() {
                break;
            }
        }
        None
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn pool() -> NatPool {
        NatPool::new(&EngineConfig::with_pools(&["198.51.100.0/30"])).expect("pool")
    }

    // The dataplane's membership test agrees with the index, with gaps in the pool, at its
    // edges and far outside it.
    #[test]
    fn contains_agrees_with_the_index() {
        let p = NatPool::new(&EngineConfig::with_pools(&[
            "198.51.100.0/30",
            "198.51.100.9",
            "198.51.100.64/27",
        ]))
        .expect("pool");
        for last in 0..=255u8 {
            let a = Ipv4Addr::new(198, 51, 100, last);
            assert_eq!(p.contains(a), p.index_of(a).is_some(), "{a}");
        }
        assert!(!p.contains(Ipv4Addr::new(203, 0, 113, 1)));
        assert!(!p.contains(Ipv4Addr::new(0, 0, 0, 0)));
        assert!(!p.contains(Ipv4Addr::BROADCAST));
    }

    // RFC 6887 §11.3: external UDP 5350 and 5351 MUST NOT be mapped.
    #[test]
    fn udp_5350_and_5351_are_never_allocated() {
        let mut p = pool();
        let udp = proto_index(Protocol::UDP).expect("udp");
        let tcp = proto_index(Protocol::TCP).expect("tcp");
        assert!(!p.take(0, udp, 5351));
        assert!(!p.take(0, udp, 5350));
        assert!(p.take(0, tcp, 5351));
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = 0;
        while let Some(port) = p.allocate(
            1,
            PortRequest {
                proto: udp,
                internal_port: 5000,
            },
            &mut rng,
        ) {
            assert!(!PCP_PORTS.contains(&port));
            seen += 1;
        }
        // Every port but 0, 5350, 5351 was handed out exactly once.
        assert_eq!(seen, 65535 - 2);
    }

    // RFC 4787 REQ-3a and REQ-4: range class and parity are preserved.
    #[test]
    fn allocation_keeps_range_and_parity_and_is_random() {
        let mut p = pool();
        let mut rng = StdRng::seed_from_u64(7);
        let mut ports = Vec::new();
        for internal in [80u16, 81, 5000, 5001, 6000] {
            let port = p
                .allocate(
                    0,
                    PortRequest {
                        proto: 0,
                        internal_port: internal,
                    },
                    &mut rng,
                )
                .expect("port");
            assert_eq!(port & 1, internal & 1, "parity");
            assert_eq!(port < 1024, internal < 1024, "range");
            ports.push(port);
        }
        // Random, not sequential.
        assert!(ports.windows(2).any(|w| w[1].abs_diff(w[0]) > 2));
    }

    #[test]
    fn scan_finds_last_free_port_with_parity() {
        let mut b = PortBitmap::new();
        for port in 1024..=65535u16 {
            if port != 40001 && port != 40002 {
                b.set(port);
            }
        }
        assert_eq!(b.scan(1024, 65535, 50000, Some(1)), Some(40001));
        assert_eq!(b.scan(1024, 65535, 1024, Some(0)), Some(40002));
        assert_eq!(b.scan(1024, 40000, 1024, None), None);
    }
}
