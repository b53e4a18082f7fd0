//! Which sessions run on each binding: a doubly linked list through the session slots per
//! binding id, so that when the mapping table frees or changes a binding the translator marks
//! exactly its sessions stale ([`super::Sessions::invalidate`]), and the last session to write
//! each binding's implicit deadline (for [`super::slot::flags::COVERED`]).
//!
//! Only the full path, session creation and expiry, and the rare fast-path refresh that moves
//! a binding's deadline touch these arrays; the fast path's per-packet work does not.

/// No slot.
pub(super) const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Head {
    /// First session on the binding.
    first: u32,
    /// The session that last wrote the binding's implicit deadline, if it still holds it.
    writer: u32,
}

const EMPTY: Head = Head {
    first: NIL,
    writer: NIL,
};

/// The per-binding session lists (see the module docs).
#[derive(Debug, Clone, Default)]
pub(super) struct Links {
    /// Per slot: the previous and the next session on the same binding.
    around: Vec<[u32; 2]>,
    /// Per binding id.
    heads: Vec<Head>,
}

impl Links {
    fn head_mut(&mut self, binding: u32) -> &mut Head {
        let i = binding as usize;
        if self.heads.len() <= i {
            self.heads.resize(i + 1, EMPTY);
        }
        &mut self.heads[i]
    }

    fn around_mut(&mut self, slot: u32) -> &mut [u32; 2] {
        let i = slot as usize;
        if self.around.len() <= i {
            self.around.resize(i + 1, [NIL, NIL]);
        }
        &mut self.around[i]
    }

    /// Puts `slot` (on no list) on `binding`'s list.
    pub(super) fn link(&mut self, slot: u32, binding: u32) {
        let h = self.head_mut(binding);
        let old = std::mem::replace(&mut h.first, slot);
        *self.around_mut(slot) = [NIL, old];
        if old != NIL {
            self.around_mut(old)[0] = slot;
        }
    }

    /// Takes `slot` off `binding`'s list (and from being its writer).
    pub(super) fn unlink(&mut self, slot: u32, binding: u32) {
        let [prev, next] = std::mem::replace(self.around_mut(slot), [NIL, NIL]);
        if prev != NIL {
            self.around_mut(prev)[1] = next;
        }
        if next != NIL {
            self.around_mut(next)[0] = prev;
        }
        let h = self.head_mut(binding);
        if h.first == slot {
            h.first = next;
        }
        if h.writer == slot {
            h.writer = NIL;
        }
    }

    /// Empties `binding`'s list, calling `each` for every slot that was on it.
    pub(super) fn take(&mut self, binding: u32, mut each: impl FnMut(u32)) {
        let Some(h) = self.heads.get_mut(binding as usize) else {
            return;
        };
        let mut cur = std::mem::replace(h, EMPTY).first;
        while cur != NIL {
            let [_, next] = std::mem::replace(self.around_mut(cur), [NIL, NIL]);
            each(cur);
            cur = next;
        }
    }

    /// Makes `slot` (or nobody, [`NIL`]) the last writer of `binding`'s implicit deadline;
    /// returns the previous one.
    pub(super) fn set_writer(&mut self, binding: u32, slot: u32) -> u32 {
        std::mem::replace(&mut self.head_mut(binding).writer, slot)
    }

    /// Forgets every list.
    pub(super) fn clear(&mut self) {
        *self = Links::default();
    }

    /// Heap bytes used.
    pub(super) fn heap_bytes(&self) -> usize {
        self.around.capacity() * 8 + self.heads.capacity() * 8
    }
}
