//! The translator's session index: an open-addressing hash table from a flow's five-tuple to a
//! session slot, built so that a batch of lookups can overlap their cache misses.
//!
//! A general-purpose map hides where an entry lives, so a lookup can only be started when the
//! previous one has finished; with a million sessions every lookup is a cache miss and the
//! translator waits on memory most of the time. Here the table is an array of 64-byte buckets
//! (one cache line: eight 32-bit hash tags and eight 32-bit slot numbers), and the bucket of a
//! hash is known before the lookup: [`FlowIndex::touch`] reads it early, for many packets in a
//! row, so the memory system fetches their buckets in parallel (the same idea as VPP's
//! prefetching vector loops, done with plain loads: the CPU's out-of-order window overlaps
//! them, and no `unsafe` prefetch intrinsic is needed).
//!
//! Collisions probe bucket by bucket (linear probing over whole lines); a removed entry leaves
//! a tombstone that inserts reuse, and the table is rebuilt when live entries plus tombstones
//! pass 3/4 of the slots. The hash is keyed with a per-table random key, as the mapping table's
//! is, so remote peers cannot choose five-tuples that pile into one bucket.

use crate::fasthash::KeyedState;

/// Entries per bucket.
const WAYS: usize = 8;
/// Tag of an empty entry.
const EMPTY: u32 = 0;
/// Tag of a removed entry.
const TOMBSTONE: u32 = 1;
/// Buckets of a new table.
const MIN_BUCKETS: usize = 16;

/// A five-tuple as the index sees it: protocol, one endpoint (the internal one for the
/// outbound index, the external one for the inbound index) and the remote endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol.
    pub protocol: u8,
    /// Address of the subscriber-side endpoint (internal or external).
    pub addr: u32,
    /// Its port (ICMP: identifier).
    pub port: u16,
    /// Remote address.
    pub remote_addr: u32,
    /// Remote port (ICMP: 0).
    pub remote_port: u16,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; WAYS],
    slots: [u32; WAYS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    tags: [EMPTY; WAYS],
    slots: [0; WAYS],
};

/// The hash of a key: its tag and the bits that choose its home bucket (masked with the
/// table's size when used, so a hash stays valid when the table grows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowHash {
    tag: u32,
    bucket: usize,
}

/// The index (see the module docs). Values are slot numbers of the session table; the caller
/// confirms a candidate slot by comparing the key stored there.
#[derive(Clone)]
pub struct FlowIndex {
    buckets: Vec<Bucket>,
    mask: usize,
    live: usize,
    tombstones: usize,
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for FlowIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowIndex")
            .field("buckets", &self.buckets.len())
            .field("live", &self.live)
            .field("tombstones", &self.tombstones)
            .finish()
    }
}

/// 64 × 64 → 128-bit multiply, high and low halves folded (the "mum" step of wyhash).
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Bit `i` set where `tags[i] == tag` (branch-free, so the compiler can compare all eight at
/// once).
#[inline(always)]
fn match_mask(tags: &[u32; WAYS], tag: u32) -> u32 {
    let mut m = 0u32;
    for (i, t) in tags.iter().enumerate() {
        m |= u32::from(*t == tag) << i;
    }
    m
}

impl FlowIndex {
    /// An empty index with a random hash key.
    pub fn new() -> FlowIndex {
        let state = KeyedState::random();
        let k0 = std::hash::BuildHasher::hash_one(&state, 0x243f_6a88_85a3_08d3u64) | 1;
        let k1 = std::hash::BuildHasher::hash_one(&state, 0x1319_8a2e_0370_7344u64) | 1;
        FlowIndex {
            buckets: vec![EMPTY_BUCKET; MIN_BUCKETS],
            mask: MIN_BUCKETS - 1,
            live: 0,
            tombstones: 0,
            k0,
            k1,
        }
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// The hash of `key`.
    #[inline(always)]
    pub fn hash(&self, key: &FlowKey) -> FlowHash {
        let w0 = (u64::from(key.addr) << 32) | u64::from(key.remote_addr);
        let w1 = (u64::from(key.port) << 32)
            | (u64::from(key.remote_port) << 16)
            | u64::from(key.protocol);
        let h = mum(w0 ^ self.k0, w1 ^ self.k1);
        let h = mum(h, 0x9e37_79b9_7f4a_7c15 ^ self.k1);
        let tag = ((h >> 32) as u32).max(TOMBSTONE + 1);
        FlowHash {
            tag,
            bucket: h as usize,
        }
    }

    /// Reads the first word of the bucket `h` starts in, so that the line is on its way to
    /// the cache when [`FlowIndex::first_candidate`] needs it. Returns the word: fold it into a
    /// value the caller keeps, so the load is not optimised away.
    #[inline(always)]
    pub fn touch(&self, h: FlowHash) -> u32 {
        self.buckets
            .get(h.bucket & self.mask)
            .map_or(0, |b| b.tags[0])
    }

    /// The first slot in `h`'s home bucket whose tag matches (a guess for prefetching the
    /// session; confirm with [`FlowIndex::find`]).
    #[inline(always)]
    pub fn first_candidate(&self, h: FlowHash) -> Option<u32> {
        let b = self.buckets.get(h.bucket & self.mask)?;
        let m = match_mask(&b.tags, h.tag);
        (m != 0).then(|| b.slots[m.trailing_zeros() as usize])
    }

    /// The slot stored for `h` for which `is_key(slot)` holds.
    #[inline]
    pub fn find(&self, h: FlowHash, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut bucket = h.bucket & self.mask;
        for _ in 0..self.buckets.len() {
            let b = &self.buckets[bucket];
            let mut m = match_mask(&b.tags, h.tag);
            while m != 0 {
                let slot = b.slots[m.trailing_zeros() as usize];
                if is_key(slot) {
                    return Some(slot);
                }
                m &= m - 1;
            }
            // A bucket with a free entry ends the probe (an insert would have used it).
            if b.tags.contains(&EMPTY) {
                return None;
            }
            bucket = (bucket + 1) & self.mask;
        }
        None
    }

    /// Stores `slot` under `key` (the caller knows the key is not stored yet). May rebuild
    /// the table, asking `key_of(slot)` for the key of every stored slot.
    pub fn insert(&mut self, key: &FlowKey, slot: u32, key_of: impl Fn(u32) -> FlowKey) {
        if (self.live + self.tombstones + 1) * 4 > self.buckets.len() * WAYS * 3 {
            self.rebuild(self.live + 1, &key_of);
        }
        let h = self.hash(key);
        if self.place(h, slot) {
            self.tombstones -= 1;
        }
        self.live += 1;
    }

    /// Puts `slot` in the first free entry of `h`'s probe sequence; true if it was a tombstone.
    fn place(&mut self, h: FlowHash, slot: u32) -> bool {
        let mut bucket = h.bucket & self.mask;
        loop {
            let b = &mut self.buckets[bucket];
            if let Some(i) = b.tags.iter().position(|&t| t == EMPTY || t == TOMBSTONE) {
                let was_tombstone = b.tags[i] == TOMBSTONE;
                b.tags[i] = h.tag;
                b.slots[i] = slot;
                return was_tombstone;
            }
            // The load limit keeps free entries in the table, so this ends.
            bucket = (bucket + 1) & self.mask;
        }
    }

    /// Removes the entry of `key` that holds `slot`; false if there was none.
    pub fn remove(&mut self, key: &FlowKey, slot: u32) -> bool {
        let h = self.hash(key);
        let mut bucket = h.bucket & self.mask;
        for _ in 0..self.buckets.len() {
            let b = &mut self.buckets[bucket];
            let mut any_empty = false;
            for i in 0..WAYS {
                if b.tags[i] == h.tag && b.slots[i] == slot {
                    b.tags[i] = TOMBSTONE;
                    self.live -= 1;
                    self.tombstones += 1;
                    return true;
                }
                any_empty |= b.tags[i] == EMPTY;
            }
            if any_empty {
                return false;
            }
            bucket = (bucket + 1) & self.mask;
        }
        false
    }

    /// Rebuilds for `want` entries at half load, dropping tombstones.
    fn rebuild(&mut self, want: usize, key_of: &impl Fn(u32) -> FlowKey) {
        let slots: Vec<u32> = self
            .buckets
            .iter()
            .flat_map(|b| {
                b.tags
                    .iter()
                    .zip(b.slots.iter())
                    .filter(|(t, _)| **t > TOMBSTONE)
                    .map(|(_, s)| *s)
            })
            .collect();
        let n = (want.max(1) * 2).div_ceil(WAYS).next_power_of_two();
        let n = n.max(MIN_BUCKETS);
        self.buckets = vec![EMPTY_BUCKET; n];
        self.mask = n - 1;
        self.tombstones = 0;
        self.live = slots.len();
        for s in slots {
            let h = self.hash(&key_of(s));
            self.place(h, s);
        }
    }

    /// Drops every entry (and shrinks back to the initial size).
    pub fn clear(&mut self) {
        self.buckets = vec![EMPTY_BUCKET; MIN_BUCKETS];
        self.mask = MIN_BUCKETS - 1;
        self.live = 0;
        self.tombstones = 0;
    }
}

impl Default for FlowIndex {
    fn default() -> Self {
        FlowIndex::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            protocol: if i % 2 == 0 { 17 } else { 6 },
            addr: 0x6440_0000 + i / 16,
            port: 10_000 + (i % 16) as u16,
            remote_addr: 0xcb00_7132,
            remote_port: 9000,
        }
    }

    // Inserts, finds and removes agree with a HashMap through growth and tombstone reuse.
    #[test]
    fn behaves_like_a_map_through_growth_and_removal() {
        let mut idx = FlowIndex::new();
        let mut model: HashMap<FlowKey, u32> = HashMap::new();
        let mut keys: HashMap<u32, FlowKey> = HashMap::new();
        for round in 0..3u32 {
            for i in 0..5_000u32 {
                let k = key(i + round * 100_000);
                let slot = i + round * 10_000;
                keys.insert(slot, k);
                let ks = &keys;
                idx.insert(&k, slot, |s| ks[&s]);
                model.insert(k, slot);
            }
            // Remove every third entry of this round.
            for i in (0..5_000u32).step_by(3) {
                let k = key(i + round * 100_000);
                let slot = model.remove(&k).unwrap_or(u32::MAX);
                assert!(idx.remove(&k, slot));
                keys.remove(&slot);
            }
        }
        assert_eq!(idx.len(), model.len());
        for (k, slot) in &model {
            let h = idx.hash(k);
            assert_eq!(idx.find(h, |s| keys.get(&s) == Some(k)), Some(*slot));
        }
        let absent = key(7_777_777);
        let h = idx.hash(&absent);
        assert_eq!(idx.find(h, |s| keys.get(&s) == Some(&absent)), None);
        assert!(!idx.remove(&absent, 1));
    }

    // Removed entries leave tombstones that inserts reuse: churn does not grow the table.
    #[test]
    fn churn_at_constant_size_does_not_grow_the_table() {
        let mut idx = FlowIndex::new();
        let mut keys: HashMap<u32, FlowKey> = HashMap::new();
        for i in 0..1_000u32 {
            keys.insert(i, key(i));
            let ks = &keys;
            idx.insert(&key(i), i, |s| ks[&s]);
        }
        let size = idx.heap_bytes();
        for i in 1_000..50_000u32 {
            let old = i - 1_000;
            assert!(idx.remove(&key(old), old));
            keys.remove(&old);
            keys.insert(i, key(i));
            let ks = &keys;
            idx.insert(&key(i), i, |s| ks[&s]);
        }
        assert_eq!(idx.len(), 1_000);
        assert!(
            idx.heap_bytes() <= size * 2,
            "{} > 2 × {size}",
            idx.heap_bytes()
        );
    }

    #[test]
    fn hash_is_keyed_per_table() {
        let (a, b) = (FlowIndex::new(), FlowIndex::new());
        let same = (0..64)
            .filter(|i| a.hash(&key(*i)) == b.hash(&key(*i)))
            .count();
        assert!(same < 8, "{same} of 64 hashes equal across two tables");
    }
}
