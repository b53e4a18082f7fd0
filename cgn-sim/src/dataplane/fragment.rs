//! Fragments (RFC 4787 REQ-14, RFC 5508 §4.2 of fragment handling): only the first fragment
//! carries the transport header, so the translation chosen for it is remembered under the
//! fragment key (protocol, source, destination, IP Identification) and applied to the later
//! fragments. Fragments that arrive before their first one are held, a bounded number for a
//! bounded time, and released once the first one has been translated.

use std::net::Ipv4Addr;

use crate::fasthash::{FastMap, KeyedState};

/// The reassembly key of a datagram's fragments, as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// IP protocol.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP Identification.
    pub ident: u16,
}

/// How to translate the later fragments: the new source or destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentRewrite {
    /// Outbound: new source address.
    Source(Ipv4Addr),
    /// Inbound: new destination address.
    Destination(Ipv4Addr),
}

/// Fragment state.
#[derive(Debug, Clone)]
pub struct Fragments {
    known: FastMap<FragmentKey, (FragmentRewrite, u32)>,
    early: Vec<(FragmentKey, Vec<u8>, u32)>,
    /// Longest a key or an early fragment is kept, seconds (IP reassembly time, RFC 791).
    pub hold_secs: u32,
    /// Most keys remembered.
    pub max_known: usize,
    /// Most early fragments held.
    pub max_early: usize,
}

impl Fragments {
    /// Empty state with the given limits.
    pub fn new(hold_secs: u32, max_known: usize, max_early: usize) -> Fragments {
        Fragments {
            known: FastMap::with_hasher(KeyedState::random()),
            early: Vec::new(),
            hold_secs,
            max_known,
            max_early,
        }
    }

    /// Remembers the translation of a first fragment; returns the early fragments of the same
    /// datagram, to be translated and sent now. `false` in the second slot when the table is
    /// full (the later fragments will then be dropped as orphans).
    pub fn learn(
        &mut self,
        now: u32,
        key: FragmentKey,
        rewrite: FragmentRewrite,
    ) -> (Vec<Vec<u8>>, bool) {
        let stored = if self.known.len() < self.max_known || self.known.contains_key(&key) {
            self.known
                .insert(key, (rewrite, now.saturating_add(self.hold_secs)));
            true
        } else {
            false
        };
        let mut released = Vec::new();
        let mut i = 0;
        while i < self.early.len() {
            if self.early[i].0 == key {
                released.push(self.early.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        (released, stored)
    }

    /// The translation for a later fragment, if its first fragment was seen.
    pub fn lookup(&self, now: u32, key: &FragmentKey) -> Option<FragmentRewrite> {
        self.known
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(r, _)| *r)
    }

    /// Holds a fragment that came before its first one; `false` if there is no room.
    pub fn hold_early(&mut self, now: u32, key: FragmentKey, packet: &[u8]) -> bool {
        if self.early.len() >= self.max_early {
            return false;
        }
        self.early
            .push((key, packet.to_vec(), now.saturating_add(self.hold_secs)));
        true
    }

    /// Forgets expired keys and early fragments; returns how many early fragments expired.
    pub fn expire(&mut self, now: u32) -> usize {
        self.known.retain(|_, (_, exp)| *exp > now);
        let before = self.early.len();
        self.early.retain(|(_, _, exp)| *exp > now);
        before - self.early.len()
    }

    /// Keys remembered and fragments held.
    pub fn sizes(&self) -> (usize, usize) {
        (self.known.len(), self.early.len())
    }
}
