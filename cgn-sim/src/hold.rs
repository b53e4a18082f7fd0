//! External-port hold-down (RFC 6888 REQ-8; RFC 6887 §15): a freed port is not handed to
//! anyone else for `port_hold_secs` (120 s), except to the same internal endpoint with the
//! same nonce, which may take it back. Holds expire in FIFO order (every hold lasts the same
//! time), so release is O(1) amortised.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use pcp_client::wire::Nonce;

use crate::fasthash::{FastMap, KeyedState};

/// Who may reclaim a held port: the internal endpoint and nonce that owned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldOwner {
    /// Protocol index.
    pub proto: u8,
    /// THIRD_PARTY_ID realm (0 = none).
    pub realm: u16,
    /// Internal address.
    pub addr: Ipv4Addr,
    /// Internal port.
    pub port: u16,
    /// Nonce of the mapping that owned the port.
    pub nonce: Nonce,
}

/// A held external port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeldPort {
    /// Protocol index.
    pub proto: u8,
    /// Pool address index.
    pub addr: u16,
    /// External port.
    pub port: u16,
}

/// The hold-down list.
#[derive(Debug, Clone)]
pub struct HoldDown {
    queue: VecDeque<(u32, HeldPort)>,
    held: FastMap<HeldPort, (u32, HoldOwner)>,
    by_owner: FastMap<HoldOwner, HeldPort>,
}

impl Default for HoldDown {
    fn default() -> Self {
        HoldDown {
            queue: VecDeque::new(),
            held: FastMap::with_hasher(KeyedState::random()),
            by_owner: FastMap::with_hasher(KeyedState::random()),
        }
    }
}

impl HoldDown {
    /// Holds `port` until `until` (engine seconds) for `owner`.
    pub fn hold(&mut self, port: HeldPort, owner: HoldOwner, until: u32) {
        if let Some(old) = self.by_owner.insert(owner, port) {
            if old != port {
                // The owner had another held port: it stays held, but only by time.
                if let Some(entry) = self.held.get_mut(&old) {
                    entry.1.nonce = Nonce([0xff; 12]);
                    entry.1.port = 0;
                }
            }
        }
        self.held.insert(port, (until, owner));
        self.queue.push_back((until, port));
    }

    /// Takes back the port `owner` held, if any.
    pub fn reclaim(&mut self, owner: &HoldOwner) -> Option<HeldPort> {
        let port = self.by_owner.remove(owner)?;
        match self.held.get(&port) {
            Some((_, o)) if o == owner => {
                self.held.remove(&port);
                Some(port)
            }
            _ => None,
        }
    }

    /// Releases holds that ended at or before `now`, and the oldest beyond `max`; returns the
    /// ports to free.
    pub fn expire(&mut self, now: u32, max: usize, mut free: impl FnMut(HeldPort)) {
        while let Some(&(until, port)) = self.queue.front() {
            let over = self.held.len() > max;
            if until > now && !over {
                break;
            }
            self.queue.pop_front();
            if let Some(&(u, owner)) = self.held.get(&port) {
                if u == until {
                    self.held.remove(&port);
                    if self.by_owner.get(&owner) == Some(&port) {
                        self.by_owner.remove(&owner);
                    }
                    free(port);
                }
            }
        }
    }

    /// Number of held ports.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// True if the port is held.
    pub fn is_held(&self, port: &HeldPort) -> bool {
        self.held.contains_key(port)
    }

    /// Drops every hold without freeing (the pool is being reset).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.held.clear();
        self.by_owner.clear();
    }
}
