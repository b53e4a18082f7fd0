//! Renewal timing (RFC 6887 §11.2.1).
//!
//! With L the granted lifetime counted from when the response arrived, renewal attempt k
//! (k = 1, 2, 3 …) goes out at a uniform random time in
//! `[L·(1 − 2^−k), L·(1 − 2^−k) + L·2^−(k+2)]`: [½L, ⅝L], then [¾L, ¾L + L/16], [⅞L, ⅞L + L/32]
//! and so on. Two renewals of one mapping are never less than [`MIN_RENEWAL_GAP`] (4 s) apart;
//! when the next window would break that rule before the mapping expires, the attempt moves
//! to 4 s after the last one, and when that is past expiry there is no further renewal: the
//! mapping expires and the client falls back to the §8.1.1 schedule.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::config::MIN_RENEWAL_GAP;
use super::rng::{duration_from_nanos, uniform};

/// Attempts past this number all use this window (it is already within L/2^32 of expiry).
const MAX_ATTEMPT: u32 = 32;

/// The window `[start, end]` of renewal attempt `k` (from 1) for a lifetime granted at
/// `granted_at`.
pub fn window(granted_at: Instant, lifetime: Duration, k: u32) -> (Instant, Instant) {
    let k = k.clamp(1, MAX_ATTEMPT);
    let l = lifetime.as_nanos();
    let start = l - (l >> k);
    let width = l >> (k + 2);
    (
        granted_at + duration_from_nanos(start),
        granted_at + duration_from_nanos(start + width),
    )
}

/// When to send renewal attempt `k`, or `None` if no attempt fits before `expires_at`
/// given the 4 s rule (`last_sent` is the previous transmission of this mapping, if any).
pub fn next_attempt(
    rng: &mut dyn RngCore,
    granted_at: Instant,
    lifetime: Duration,
    k: u32,
    last_sent: Option<Instant>,
) -> Option<Instant> {
    let expires_at = granted_at + lifetime;
    let (start, end) = window(granted_at, lifetime, k);
    let mut at = granted_at + uniform(rng, start - granted_at, end - granted_at);
    if let Some(last) = last_sent {
        at = at.max(last + MIN_RENEWAL_GAP);
    }
    (at < expires_at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::rng::seeded_rng;

    // RFC 6887 §11.2.1: [½, ⅝], then [¾, ¾ + 1/16], [⅞, ⅞ + 1/32].
    #[test]
    fn renewal_windows_follow_the_halving_schedule() {
        let t0 = Instant::now();
        let l = Duration::from_secs(3200);
        let s = |x: u64| t0 + Duration::from_secs(x);
        assert_eq!(window(t0, l, 1), (s(1600), s(2000)));
        assert_eq!(window(t0, l, 2), (s(2400), s(2600)));
        assert_eq!(window(t0, l, 3), (s(2800), s(2900)));
        assert_eq!(window(t0, l, 4), (s(3000), s(3050)));
    }

    // RFC 6887 §11.2.1: the first renewal is uniform in [½L, ⅝L].
    #[test]
    fn first_renewal_is_uniform_in_half_to_five_eighths() {
        let t0 = Instant::now();
        let l = Duration::from_secs(800);
        let mut rng = seeded_rng(9);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..2000 {
            let at = next_attempt(&mut *rng, t0, l, 1, None).expect("fits") - t0;
            assert!(at >= Duration::from_secs(400) && at <= Duration::from_secs(500));
            lo = lo.min(at);
            hi = hi.max(at);
        }
        assert!(lo < Duration::from_secs(402) && hi > Duration::from_secs(498));
    }

    // RFC 6887 §11.2.1: renewals MUST NOT be sent less than 4 s apart.
    #[test]
    fn renewals_are_never_less_than_four_seconds_apart() {
        let t0 = Instant::now();
        let l = Duration::from_secs(30);
        let mut rng = seeded_rng(4);
        for _ in 0..200 {
            let mut last = None;
            let mut sends = Vec::new();
            for k in 1.. {
                match next_attempt(&mut *rng, t0, l, k, last) {
                    Some(at) => {
                        sends.push(at);
                        last = Some(at);
                    }
                    None => break,
                }
            }
            assert!(!sends.is_empty());
            for pair in sends.windows(2) {
                assert!(pair[1] - pair[0] >= MIN_RENEWAL_GAP);
            }
            assert!(sends.iter().all(|&t| t < t0 + l));
        }
    }

    #[test]
    fn tiny_and_huge_lifetimes_do_not_panic() {
        let t0 = Instant::now();
        let mut rng = seeded_rng(4);
        assert!(next_attempt(&mut *rng, t0, Duration::ZERO, 1, None).is_none());
        assert!(next_attempt(&mut *rng, t0, Duration::from_secs(1), 40, Some(t0)).is_none());
        let l = Duration::from_secs(u64::from(u32::MAX));
        assert!(next_attempt(&mut *rng, t0, l, 1, None).is_some());
        assert!(next_attempt(&mut *rng, t0, l, u32::MAX, None).is_some());
    }
}
