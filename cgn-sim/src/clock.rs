//! The server's time: engine seconds (the table's clock), the instant being handled, the
//! last second whose expiries ran, and the PCP Epoch (RFC 6887 §8.5).
//!
//! One part of the [`Server`](crate::server::Server)'s state. Its invariants: engine seconds
//! start at [`FIRST_SECOND`] and never go back; [`Clock::now`] never goes back either (a timer
//! or datagram handled late does not rewind it); a second's expiries run once
//! ([`Clock::tick`]).

use std::time::{Duration, Instant};

use crate::epoch::Epoch;

/// The engine second of the instant the server was created: engine seconds never start at 0,
/// so 0 can mean "no deadline" in the table.
pub(crate) const FIRST_SECOND: u32 = 1;

/// Engine seconds, the handled instant and the Epoch.
#[derive(Debug)]
pub(crate) struct Clock {
    base: Instant,
    now: Instant,
    last_second: u32,
    epoch: Epoch,
}

impl Clock {
    /// A clock started at `now`, Epoch 0.
    pub fn new(now: Instant) -> Clock {
        Clock {
            base: now,
            now,
            last_second: FIRST_SECOND,
            epoch: Epoch::new(now),
        }
    }

    /// Engine seconds at `at`.
    pub fn seconds(&self, at: Instant) -> u32 {
        FIRST_SECOND.saturating_add(at.saturating_duration_since(self.base).as_secs() as u32)
    }

    /// The latest instant handled (for answers queued while handling a request).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves to `at`. Returns the engine second when one has begun since the last tick (its
    /// expiries are then due), `None` otherwise.
    pub fn tick(&mut self, at: Instant) -> Option<u32> {
        self.now = self.now.max(at);
        let now_s = self.seconds(at);
        (now_s > self.last_second).then(|| {
            self.last_second = now_s;
            now_s
        })
    }

    /// Marks `now_s` as done without running its expiries (state loss: nothing is left).
    pub fn skip_to(&mut self, now_s: u32) {
        self.last_second = now_s;
    }

    /// When the next engine second begins.
    pub fn next_second(&self) -> Instant {
        self.base + Duration::from_secs(u64::from(self.last_second - FIRST_SECOND + 1))
    }

    /// The Epoch Time at `at`.
    pub fn epoch(&self, at: Instant) -> u32 {
        self.epoch.at(at)
    }

    /// Epoch resets so far.
    pub fn epoch_resets(&self) -> u64 {
        self.epoch.resets()
    }

    /// Restarts the Epoch at `at` (state lost).
    pub fn reset_epoch(&mut self, at: Instant) {
        self.epoch.reset(at);
    }
}
