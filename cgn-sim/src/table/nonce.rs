//! The nonce index of the mapping table: every MAP part and PEER session is on a doubly
//! linked chain of the entries whose nonce has the same (keyed) hash, headed in `by_nonce`,
//! so a nonce lookup (RFC 6887 §11.3, §12.3: a request's nonce must match) costs one hash
//! probe and a walk of entries that share it.

use pcp_client::wire::Nonce;

use super::{EntryRef, Table};
use crate::fasthash::KeyedState;

/// The end of a chain.
pub(super) const NIL: u32 = u32::MAX;
/// Marks a PEER session in a chain link or a wheel item (else a binding's MAP part).
pub(super) const PEER_BIT: u32 = 1 << 31;

impl EntryRef {
    fn encode(self) -> u32 {
        match self {
            EntryRef::Map(i) => i,
            EntryRef::Peer(i) => i | PEER_BIT,
        }
    }
    fn decode(v: u32) -> EntryRef {
        if v & PEER_BIT != 0 {
            EntryRef::Peer(v & !PEER_BIT)
        } else {
            EntryRef::Map(v)
        }
    }
}

pub(super) fn nonce_hash(state: &KeyedState, nonce: &Nonce) -> u64 {
    use std::hash::BuildHasher;
    state.hash_one(nonce.0)
}

impl Table {
    /// Every MAP part and PEER session carrying `nonce`.
    pub fn lookup_nonce(&self, nonce: &Nonce) -> Vec<EntryRef> {
        let mut out = Vec::new();
        let Some(&head) = self.by_nonce.get(&nonce_hash(&self.nonce_state, nonce)) else {
            return out;
        };
        let mut cur = head;
        while cur != NIL {
            let r = EntryRef::decode(cur);
            let (n, next) = match r {
                EntryRef::Map(i) => match self.bindings.get(i as usize) {
                    Some(b) => (b.nonce, b.nonce_next),
                    None => break,
                },
                EntryRef::Peer(i) => match self.peers.get(i as usize) {
                    Some(p) => (p.nonce, p.nonce_next),
                    None => break,
                },
            };
            if n == *nonce {
                out.push(r);
            }
            cur = next;
        }
        out
    }

    pub(super) fn links(&mut self, r: u32) -> Option<(&mut u32, &mut u32)> {
        match EntryRef::decode(r) {
            EntryRef::Map(i) => self
                .bindings
                .get_mut(i as usize)
                .map(|b| (&mut b.nonce_prev, &mut b.nonce_next)),
            EntryRef::Peer(i) => self
                .peers
                .get_mut(i as usize)
                .map(|p| (&mut p.nonce_prev, &mut p.nonce_next)),
        }
    }

    pub(super) fn nonce_link(&mut self, r: EntryRef, nonce: &Nonce) {
        let h = nonce_hash(&self.nonce_state, nonce);
        let me = r.encode();
        let old = self.by_nonce.insert(h, me).unwrap_or(NIL);
        if let Some((prev, next)) = self.links(me) {
            *prev = NIL;
            *next = old;
        }
        if old != NIL {
            if let Some((prev, _)) = self.links(old) {
                *prev = me;
            }
        }
    }

    pub(super) fn nonce_unlink(&mut self, r: EntryRef, nonce: &Nonce) {
        let me = r.encode();
        let Some((prev, next)) = self.links(me).map(|(p, n)| (*p, *n)) else {
            return;
        };
        if prev != NIL {
            if let Some((_, n)) = self.links(prev) {
                *n = next;
            }
        } else {
            let h = nonce_hash(&self.nonce_state, nonce);
            if next == NIL {
                self.by_nonce.remove(&h);
            } else {
                self.by_nonce.insert(h, next);
            }
        }
        if next != NIL {
            if let Some((p, _)) = self.links(next) {
                *p = prev;
            }
        }
        if let Some((p, n)) = self.links(me) {
            *p = NIL;
            *n = NIL;
        }
    }
}
