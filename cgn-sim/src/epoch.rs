//! The server's Epoch Time (RFC 6887 §8.5): seconds since the server last lost (or reset)
//! its mapping state or changed its external addresses. One global epoch.

use std::time::Instant;

/// The epoch clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    start: Instant,
    resets: u64,
}

impl Epoch {
    /// An epoch starting at `now` (value 0).
    pub fn new(now: Instant) -> Epoch {
        Epoch {
            start: now,
            resets: 0,
        }
    }

    /// The Epoch Time at `now`: whole seconds since the start, wrapping at 2^32
    /// (RFC 6887 §8.5: it increases by one each second).
    pub fn at(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_secs() as u32
    }

    /// Resets to 0 at `now`: state was lost or the external addresses changed
    /// (RFC 6887 §8.5 MUST).
    pub fn reset(&mut self, now: Instant) {
        self.start = now;
        self.resets += 1;
    }

    /// How many times the epoch was reset.
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // RFC 6887 §8.5: +1 per second, reset to 0 on state loss.
    #[test]
    fn epoch_counts_seconds_and_resets_to_zero() {
        let t0 = Instant::now();
        let mut e = Epoch::new(t0);
        assert_eq!(e.at(t0), 0);
        assert_eq!(e.at(t0 + Duration::from_millis(2999)), 2);
        e.reset(t0 + Duration::from_secs(100));
        assert_eq!(e.at(t0 + Duration::from_secs(101)), 1);
        assert_eq!(e.resets(), 1);
    }
}
