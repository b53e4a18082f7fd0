//! A hashed timing wheel with one-second slots: O(1) insertion and O(1) amortised expiry for
//! the mapping table (RFC 6887 §15 lifetimes, RFC 4787 idle timers).
//!
//! Refreshing a timer does not remove the old entry; the owner checks, when an entry fires,
//! that the deadline still matches (lazy deletion). Entries whose deadline is more than one
//! revolution away stay in their slot until their lap comes.

/// Number of one-second slots (68 minutes per revolution).
pub const SLOTS: usize = 4096;

/// The wheel. `T` identifies what expires.
#[derive(Debug, Clone)]
pub struct TimerWheel<T> {
    slots: Vec<Vec<(u32, T)>>,
    /// Last second processed.
    now: u32,
    len: usize,
}

impl<T: Copy> TimerWheel<T> {
    /// An empty wheel at second `now`.
    pub fn new(now: u32) -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            now,
            len: 0,
        }
    }

    /// Schedules `item` at second `deadline` (fires on the first `advance` reaching it).
    pub fn insert(&mut self, deadline: u32, item: T) {
        let deadline = deadline.max(self.now.saturating_add(1));
        self.slots[deadline as usize % SLOTS].push((deadline, item));
        self.len += 1;
    }

    /// Entries stored, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest second with an entry, looking at most one revolution ahead.
    pub fn next_deadline(&self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mut best: Option<u32> = None;
        for d in 1..=SLOTS as u32 {
            let s = self.now.wrapping_add(d);
            for (deadline, _) in &self.slots[s as usize % SLOTS] {
                if *deadline <= s.saturating_add(SLOTS as u32) {
                    best = Some(best.map_or(*deadline, |b| b.min(*deadline)));
                }
            }
            if let Some(b) = best {
                if b <= s {
                    return Some(b);
                }
            }
        }
        best
    }

    /// Processes every second up to `now`, calling `fire(deadline, item)` for due entries.
    pub fn advance(&mut self, now: u32, mut fire: impl FnMut(u32, T)) {
        if now <= self.now {
            return;
        }
        let steps = (now - self.now) as usize;
        let mut due = Vec::new();
        // The slots of the seconds passed; a jump of a whole revolution or more visits every
        // slot once.
        let (first, count) = if steps >= SLOTS {
            (0, SLOTS)
        } else {
            ((self.now as usize).wrapping_add(1), steps)
        };
        for k in 0..count {
            let i = first.wrapping_add(k) % SLOTS;
            let slot = &mut self.slots[i];
            let before = slot.len();
            slot.retain(|&(d, item)| {
                if d <= now {
                    due.push((d, item));
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.now = now;
        due.sort_by_key(|(d, _)| *d);
        for (d, item) in due {
            fire(d, item);
        }
    }

    /// Drops every entry and restarts at `now`.
    pub fn clear(&mut self, now: u32) {
        for s in &mut self.slots {
            s.clear();
        }
        self.len = 0;
        self.now = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_including_far_deadlines() {
        let mut w = TimerWheel::new(0);
        w.insert(5, 'a');
        w.insert(3, 'b');
        w.insert(5000, 'c');
        w.insert(86_400, 'd');
        assert_eq!(w.next_deadline(), Some(3));
        let mut fired = Vec::new();
        w.advance(10, |d, x| fired.push((d, x)));
        assert_eq!(fired, vec![(3, 'b'), (5, 'a')]);
        w.advance(4999, |d, x| fired.push((d, x)));
        assert_eq!(fired.len(), 2);
        w.advance(5000, |d, x| fired.push((d, x)));
        assert_eq!(fired.last(), Some(&(5000, 'c')));
        w.advance(100_000, |d, x| fired.push((d, x)));
        assert_eq!(fired.last(), Some(&(86_400, 'd')));
        assert!(w.is_empty());
    }
}
