//! Self-checks of the mapping table: its invariants (for tests and the fuzz target) and its
//! memory footprint (for the bytes-per-mapping benchmark).

use std::net::SocketAddrV4;

use super::{Binding, ExternalKey, InternalKey, PeerSession, Table, TableCounts};

impl Table {
    /// Approximate heap bytes used by the table (for the bytes-per-mapping benchmark).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        fn map_bytes<K, V>(cap: usize) -> usize {
            // hashbrown: buckets = next power of two of cap * 8 / 7, one control byte each.
            let buckets = (cap * 8 / 7).next_power_of_two().max(4);
            buckets * (size_of::<(K, V)>() + 1)
        }
        self.bindings.capacity() * size_of::<Binding>()
            + self.peers.capacity() * size_of::<PeerSession>()
            + self.free.capacity() * 4
            + self.free_peers.capacity() * 4
            + map_bytes::<InternalKey, u32>(self.by_internal.capacity())
            + map_bytes::<ExternalKey, u32>(self.by_external.capacity())
            + map_bytes::<(u32, SocketAddrV4), u32>(self.by_peer.capacity())
            + map_bytes::<u64, u32>(self.by_nonce.capacity())
            + self.wheel.len() * 8
            + crate::timer::SLOTS * size_of::<Vec<(u32, u32)>>()
    }

    /// Checks the table's invariants: indexes agree with the entries, no two bindings share
    /// an external endpoint or an internal endpoint, counts are right. Returns a description
    /// of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut counts = TableCounts::default();
        for (id, b) in self.bindings() {
            counts.bindings += 1;
            if b.has_map() {
                counts.maps += 1;
            }
            if b.is_static() {
                counts.statics += 1;
            }
            if b.implicit_expires != 0 {
                counts.implicit += 1;
            }
            if self.by_internal.get(&b.internal_key()) != Some(&id) {
                return Err(format!("binding {id} missing from the internal index"));
            }
            if self.by_external.get(&b.external_key()) != Some(&id) {
                return Err(format!(
                    "binding {id} shares or lacks its external endpoint"
                ));
            }
            if !b.has_map() && b.peers == 0 && b.implicit_expires == 0 {
                return Err(format!("binding {id} has no part but is live"));
            }
        }
        for (id, p) in self.peer_sessions() {
            counts.peers += 1;
            if self.binding(p.binding).is_none() {
                return Err(format!("peer {id} on a dead binding"));
            }
            if self.by_peer.get(&(p.binding, p.remote)) != Some(&id) {
                return Err(format!("peer {id} missing from the 5-tuple index"));
            }
        }
        if self.by_internal.len() != counts.bindings || self.by_external.len() != counts.bindings {
            return Err("index sizes differ from the live bindings".into());
        }
        if counts != self.counts {
            return Err(format!("counts {:?} != {:?}", self.counts, counts));
        }
        Ok(())
    }
}
