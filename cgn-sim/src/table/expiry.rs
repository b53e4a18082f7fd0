//! Expiry of the mapping table on a [`crate::timer::TimerWheel`]: each MAP part, PEER
//! session and implicit part has an entry at its deadline (an item naming the part, tagged
//! with [`PEER_BIT`] or [`IMPLICIT_BIT`]). An entry whose part was refreshed since is stale
//! and ignored, or, for an extended implicit part, moved to its new deadline, so traffic does
//! not add one entry per packet.

use super::nonce::PEER_BIT;
use super::{FreedBinding, Table};

/// Marks an implicit part in a wheel item.
pub(super) const IMPLICIT_BIT: u32 = 1 << 30;

impl Table {
    /// Timer entries pending (at most about one per expiring part, however often parts are
    /// refreshed).
    pub fn timer_entries(&self) -> usize {
        self.wheel.len()
    }

    /// Expires everything due at or before engine second `now`; `freed` gets each binding
    /// that lost its last part.
    pub fn expire(&mut self, now: u32, mut freed: impl FnMut(FreedBinding)) {
        let mut due = Vec::new();
        self.wheel
            .advance(now, |deadline, item| due.push((deadline, item)));
        for (deadline, item) in due {
            if item & PEER_BIT != 0 {
                let id = item & !PEER_BIT;
                if self.peer(id).is_some_and(|p| p.expires == deadline) {
                    if let Some(f) = self.remove_peer(id) {
                        freed(f);
                    }
                }
            } else if item & IMPLICIT_BIT != 0 {
                let id = item & !IMPLICIT_BIT;
                let Some(b) = self.binding_mut(id) else {
                    continue;
                };
                if b.implicit_expires > deadline {
                    // Refreshed since this entry was scheduled: move it to the new deadline.
                    let at = b.implicit_expires;
                    self.wheel.insert(at, item);
                } else if b.implicit_expires == deadline {
                    b.implicit_expires = 0;
                    let nonce = b.nonce;
                    self.counts.implicit -= 1;
                    self.changes.push(id);
                    if let Some(f) = self.free_if_unused(id, nonce) {
                        freed(f);
                    }
                }
            } else if self
                .binding(item)
                .is_some_and(|b| b.has_map() && !b.is_static() && b.map_expires == deadline)
            {
                if let Some(f) = self.remove_map(item) {
                    freed(f);
                }
            }
        }
    }
}
