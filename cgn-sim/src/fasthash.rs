//! A small keyed hasher for the mapping table's indexes.
//!
//! The table's keys are a few bytes long (protocol, address, port, nonce) and looked up on
//! every request, so SipHash dominates the profile. This hasher multiplies and folds 64-bit
//! words with a per-table random key; the keys are chosen by clients, so the key keeps them
//! from steering entries into one bucket (HashDoS), without the cost of SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` using [`KeyedState`].
pub type FastMap<K, V> = HashMap<K, V, KeyedState>;

/// Builds [`KeyedHasher`]s sharing one random key.
#[derive(Debug, Clone, Copy)]
pub struct KeyedState {
    key: u64,
}

impl KeyedState {
    /// A state with a key drawn from the standard library's per-process random source.
    pub fn random() -> KeyedState {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        KeyedState {
            key: h.finish() | 1,
        }
    }
}

impl Default for KeyedState {
    fn default() -> Self {
        KeyedState::random()
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            state: self.key,
            key: self.key,
        }
    }
}

/// The hasher: one multiply-fold per written word.
#[derive(Debug, Clone, Copy)]
pub struct KeyedHasher {
    state: u64,
    key: u64,
}

const MUL: u64 = 0x5851_f42d_4c95_7f2d;

impl KeyedHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        let x = (self.state ^ word).wrapping_mul(MUL);
        let folded = (u128::from(x) * u128::from(self.key | 1)) as u64;
        self.state = folded ^ (x.rotate_right(29));
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let x = self.state ^ (self.state >> 32);
        x.wrapping_mul(MUL) ^ (x >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_keys_hash_differently_and_maps_work() {
        let a = KeyedState::random();
        let mut m: FastMap<(u8, u32, u16), u32> = FastMap::with_hasher(a);
        for i in 0..10_000u32 {
            m.insert((6, i, i as u16), i);
        }
        assert_eq!(m.get(&(6, 77, 77)), Some(&77));
        assert_eq!(m.len(), 10_000);
    }
}
