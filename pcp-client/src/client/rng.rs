//! The injected randomness: jitter for timers and, by default, nonces.
//!
//! The engine takes any [`rand::RngCore`]. [`default_rng`] is a CSPRNG seeded from the
//! operating system, so nonces are unguessable (RFC 4086 quality, RFC 6887 §11.2) and the
//! retransmission jitter differs between runs (RFC 6887 §8.1.1). Tests pass a seeded
//! `StdRng` to make every timer reproducible.

use std::time::Duration;

use rand::{RngCore, SeedableRng};

/// The RNG the engine owns.
pub type BoxRng = Box<dyn RngCore + Send>;

/// A ChaCha-based CSPRNG seeded from the operating system.
pub fn default_rng() -> BoxRng {
    Box::new(rand::rngs::StdRng::from_entropy())
}

/// A reproducible RNG for tests and benchmarks.
pub fn seeded_rng(seed: u64) -> BoxRng {
    Box::new(rand::rngs::StdRng::seed_from_u64(seed))
}

/// Parts per million of the ±10 % RAND range (RFC 6887 §8.1.1).
const RAND_PPM: u64 = 100_000;

/// `base × (1 + RAND)` with RAND uniform in [−0.1, +0.1], drawn fresh (RFC 6887 §8.1.1).
pub fn jitter(rng: &mut dyn RngCore, base: Duration) -> Duration {
    let ppm = rng.next_u64() % (2 * RAND_PPM + 1); // 0 ..= 200 000
    let nanos = base.as_nanos();
    let scaled = nanos * (1_000_000 - u128::from(RAND_PPM) + u128::from(ppm)) / 1_000_000;
    duration_from_nanos(scaled)
}

/// A uniform random duration in `[low, high]` (nanosecond resolution). Returns `low` when
/// `high <= low`.
pub fn uniform(rng: &mut dyn RngCore, low: Duration, high: Duration) -> Duration {
    let (lo, hi) = (low.as_nanos(), high.as_nanos());
    if hi <= lo {
        return low;
    }
    let span = hi - lo + 1;
    let draw = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) % span;
    duration_from_nanos(lo + draw)
}

/// Saturating conversion from nanoseconds.
pub fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in u32.
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        // RFC 6887 §8.1.1: RAND uniform in [-0.1, +0.1]
        let mut rng = seeded_rng(7);
        let base = Duration::from_secs(3);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let d = jitter(&mut *rng, base);
            assert!(d >= Duration::from_millis(2700) && d <= Duration::from_millis(3300));
            lo = lo.min(d);
            hi = hi.max(d);
        }
        // The draw covers the range, not one point.
        assert!(lo < Duration::from_millis(2720) && hi > Duration::from_millis(3280));
    }

    #[test]
    fn uniform_is_inclusive_and_handles_empty_ranges() {
        let mut rng = seeded_rng(1);
        let (a, b) = (Duration::from_secs(1), Duration::from_secs(2));
        for _ in 0..1000 {
            let d = uniform(&mut *rng, a, b);
            assert!(d >= a && d <= b);
        }
        assert_eq!(uniform(&mut *rng, b, a), b);
    }
}
