//! Mapping storage: a slab (vector of slots plus a free list) keyed by `u64` ids that carry the
//! slot index and a generation, so ids are never reused while lookups stay a bounds check and
//! a compare. Its methods mirror the `HashMap` ones the engine uses.

/// One slot: a live value with its id, or a free slot with the generation its next value gets.
#[derive(Debug)]
enum Slot<T> {
    Full(u64, T),
    Free(u32),
}

/// Values addressed by `u64` ids (`generation << 32 | index`).
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

fn index(id: u64) -> usize {
    (id & u64::from(u32::MAX)) as usize
}

impl<T> Slab<T> {
    /// The id the next [`Slab::insert`] will return.
    pub fn next_id(&self) -> u64 {
        match self.free.last() {
            Some(&i) => match self.slots.get(i as usize) {
                Some(Slot::Free(generation)) => u64::from(*generation) << 32 | u64::from(i),
                _ => u64::from(i),
            },
            None => (1u64 << 32) | self.slots.len() as u64,
        }
    }

    /// Stores a value and returns its id (equal to [`Slab::next_id`] before the call).
    pub fn insert(&mut self, value: T) -> u64 {
        let id = self.next_id();
        let i = index(id);
        if self.free.pop().is_none() {
            self.slots.push(Slot::Free(1));
        }
        self.slots[i] = Slot::Full(id, value);
        self.len += 1;
        id
    }

    pub fn get(&self, id: &u64) -> Option<&T> {
        match self.slots.get(index(*id)) {
            Some(Slot::Full(got, value)) if got == id => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<&mut T> {
        match self.slots.get_mut(index(*id)) {
            Some(Slot::Full(got, value)) if got == id => Some(value),
            _ => None,
        }
    }

    pub fn remove(&mut self, id: &u64) -> Option<T> {
        let i = index(*id);
        match self.slots.get(i) {
            Some(Slot::Full(got, _)) if got == id => {}
            _ => return None,
        }
        // Generations wrap after 2^32 reuses of one slot; skip 0 so no id is 0.
        let next = ((*id >> 32) as u32).checked_add(1).unwrap_or(1);
        let Slot::Full(_, value) = std::mem::replace(&mut self.slots[i], Slot::Free(next)) else {
            return None;
        };
        self.free.push(i as u32);
        self.len -= 1;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &T)> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Full(id, v) => Some((id, v)),
            Slot::Free(_) => None,
        })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut T)> {
        self.slots.iter_mut().filter_map(|s| match s {
            Slot::Full(id, v) => Some((&*id, v)),
            Slot::Free(_) => None,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &u64> {
        self.iter().map(|(id, _)| id)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_not_reused_and_stale_ids_miss() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_ne!(a, b);
        assert_eq!(s.remove(&a), Some("a"));
        assert_eq!(s.get(&a), None);
        let c = s.insert("c");
        assert_ne!(c, a, "same slot, new generation");
        assert_eq!(s.get(&c), Some(&"c"));
        assert_eq!(s.remove(&a), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().count(), 2);
        assert_eq!(s.get(&u64::MAX), None);
    }
}
