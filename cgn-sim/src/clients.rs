//! Remembered clients, for unicast ANNOUNCE after state loss (RFC 6887 §14.1.3: "the client
//! addresses and ports it still remembers") and for Mapping Update destinations (§14.2).
//!
//! Kept per client address: the last [`PORTS_PER_CLIENT`] source ports it used, so a client
//! that opens a new socket per request (as a CLI does) cannot make the server spray stale
//! endpoints; the number of addresses is bounded too, the stalest forgotten first.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::fasthash::{FastMap, KeyedState};

/// Source ports remembered per client address.
pub const PORTS_PER_CLIENT: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Ports {
    /// (port, last seen second), most recent not necessarily first.
    entries: [(u16, u32); PORTS_PER_CLIENT],
    len: u8,
}

impl Ports {
    fn touch(&mut self, port: u16, now: u32) {
        let len = usize::from(self.len);
        if let Some(e) = self.entries[..len].iter_mut().find(|e| e.0 == port) {
            e.1 = now;
        } else if len < PORTS_PER_CLIENT {
            self.entries[len] = (port, now);
            self.len += 1;
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.1) {
            *oldest = (port, now);
        }
    }
    fn latest(&self) -> Option<(u16, u32)> {
        self.entries[..usize::from(self.len)]
            .iter()
            .max_by_key(|e| e.1)
            .copied()
    }
    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.entries[..usize::from(self.len)].iter().map(|e| e.0)
    }
}

/// The remembered clients.
#[derive(Debug, Clone)]
pub struct RememberedClients {
    map: FastMap<Ipv4Addr, Ports>,
    max: usize,
}

impl RememberedClients {
    /// At most `max` client addresses.
    pub fn new(max: usize) -> RememberedClients {
        RememberedClients {
            map: FastMap::with_hasher(KeyedState::random()),
            max: max.max(1),
        }
    }

    /// Notes a request from `client` at engine second `now`.
    pub fn remember(&mut self, client: SocketAddrV4, now: u32) {
        if let Some(p) = self.map.get_mut(client.ip()) {
            p.touch(client.port(), now);
            return;
        }
        if self.map.len() >= self.max {
            let stalest = self
                .map
                .iter()
                .min_by_key(|(_, p)| p.latest().map_or(0, |l| l.1))
                .map(|(ip, _)| *ip);
            if let Some(ip) = stalest {
                self.map.remove(&ip);
            }
        }
        let mut p = Ports::default();
        p.touch(client.port(), now);
        self.map.insert(*client.ip(), p);
    }

    /// The endpoint `ip` used last.
    pub fn latest(&self, ip: Ipv4Addr) -> Option<SocketAddrV4> {
        self.map
            .get(&ip)
            .and_then(Ports::latest)
            .map(|(port, _)| SocketAddrV4::new(ip, port))
    }

    /// Every remembered endpoint, sorted.
    pub fn endpoints(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<SocketAddrV4> = self
            .map
            .iter()
            .flat_map(|(ip, p)| p.ports().map(|port| SocketAddrV4::new(*ip, port)))
            .collect();
        v.sort();
        v
    }

    /// Number of client addresses.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6887 §14.1.3: unicast ANNOUNCE goes to remembered endpoints; a client opening a new
    // socket per request leaves at most four of them, the freshest kept.
    #[test]
    fn at_most_four_ports_per_client_and_the_stalest_address_goes_first() {
        let mut c = RememberedClients::new(2);
        let a = Ipv4Addr::new(100, 64, 0, 2);
        for (i, port) in (40_000..40_010u16).enumerate() {
            c.remember(SocketAddrV4::new(a, port), i as u32);
        }
        let e = c.endpoints();
        assert_eq!(e.len(), 4);
        assert_eq!(e.first().map(|s| s.port()), Some(40_006));
        assert_eq!(c.latest(a).map(|s| s.port()), Some(40_009));
        c.remember(SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 3), 1), 20);
        c.remember(SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 4), 1), 21);
        assert_eq!(c.len(), 2);
        assert_eq!(c.latest(a), None, "the stalest address was forgotten");
    }
}
