//! The unsolicited ANNOUNCE schedule after state loss (RFC 6887 §14.1.3): the first copy at
//! once, then intervals of at least 250 ms, each at least double the previous one, up to a
//! configured count (at most 10 per the RFC); every copy carries the current epoch.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The first interval between two ANNOUNCE copies (RFC 6887 §14.1.3: at least 250 ms).
pub const ANNOUNCE_FIRST_INTERVAL: Duration = Duration::from_millis(250);
/// Most ANNOUNCE copies the RFC allows (RFC 6887 §14.1.3).
pub const ANNOUNCE_MAX_COUNT: u32 = 10;
/// IPv4 all-hosts group and the client port, where multicast ANNOUNCE goes
/// (RFC 6887 §14.1.3).
pub const ANNOUNCE_MULTICAST: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 5350));
/// Mapping Update copies (RFC 6887 §14.2: 3, SHOULD).
pub const MAPPING_UPDATE_COPIES: u32 = 3;

/// When the next ANNOUNCE copies are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnnounceSchedule {
    next: Option<Instant>,
    sent: u32,
    count: u32,
    interval: Duration,
}

impl AnnounceSchedule {
    /// Starts a new round of `count` copies (capped at 10) at `now`.
    pub fn start(&mut self, now: Instant, count: u32) {
        let count = count.min(ANNOUNCE_MAX_COUNT);
        *self = AnnounceSchedule {
            next: (count > 0).then_some(now),
            sent: 0,
            count,
            interval: ANNOUNCE_FIRST_INTERVAL,
        };
    }

    /// When the next copy is due.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Copies sent in this round.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// If a copy is due at `now`, marks it sent and returns true.
    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(at) if at <= now => {
                self.sent += 1;
                if self.sent >= self.count {
                    self.next = None;
                } else {
                    self.next = Some(at + self.interval);
                    self.interval *= 2;
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6887 §14.1.3: ≥ 250 ms between the first two, doubling, at most 10.
    #[test]
    fn announce_schedule_is_250ms_then_doubling_up_to_ten() {
        let t0 = Instant::now();
        let mut s = AnnounceSchedule::default();
        s.start(t0, 12);
        let mut times = Vec::new();
        let mut now = t0;
        while let Some(at) = s.next() {
            now = now.max(at);
            assert!(s.take_due(now));
            times.push(now - t0);
        }
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[1], Duration::from_millis(250));
        assert_eq!(times[2], Duration::from_millis(750));
        for w in times.windows(3) {
            assert!((w[2] - w[1]) >= 2 * (w[1] - w[0]));
        }
    }
}
