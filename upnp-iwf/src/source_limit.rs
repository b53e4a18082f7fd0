//! Per-source budget of SSDP answers (issue #13 item 5, field-survey.md §3 "rate limits on
//! SSDP"): one search for `ssdp:all` costs 10 datagrams of ~300 bytes, so without a bound a
//! LAN host (or a spoofed source) could make the daemon an amplifier. A token bucket per
//! source address, refilled at [`ANSWERS_PER_SECOND`] up to [`ANSWER_BURST`]; the table
//! holds at most [`MAX_SOURCES`] addresses and evicts the least recently seen one. Sans-IO:
//! the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Answers (datagrams) one source may receive per second, sustained.
pub const ANSWERS_PER_SECOND: u32 = 20;
/// Answers one source may receive at once (four `ssdp:all` searches).
pub const ANSWER_BURST: u32 = 40;
/// Sources tracked at once.
pub const MAX_SOURCES: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths of an answer.
    milli: u64,
    last: Instant,
}

/// Token buckets keyed by source address.
#[derive(Debug, Clone)]
pub struct SourceLimiter {
    rate: u32,
    burst: u32,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        SourceLimiter::new(ANSWERS_PER_SECOND, ANSWER_BURST, MAX_SOURCES)
    }
}

impl SourceLimiter {
    /// `rate` answers per second, `burst` at once, `max_sources` addresses tracked (each at
    /// least 1).
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> SourceLimiter {
        SourceLimiter {
            rate: rate.max(1),
            burst: burst.max(1),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes `cost` answers from `src`'s budget at `now`; `false` (and nothing taken) when
    /// the budget is short. A cost above the burst is never granted.
    pub fn try_take(&mut self, src: IpAddr, cost: u32, now: Instant) -> bool {
        let cap = u64::from(self.burst) * 1000;
        if !self.buckets.contains_key(&src) && self.buckets.len() >= self.max_sources {
            self.evict_oldest();
        }
        let rate = u64::from(self.rate);
        let b = self.buckets.entry(src).or_insert(Bucket {
            milli: cap,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last);
        let refill = elapsed
            .as_millis()
            .saturating_mul(u128::from(rate))
            .min(u128::from(cap));
        b.milli = (b.milli + refill as u64).min(cap);
        if now > b.last {
            b.last = now;
        }
        let want = u64::from(cost) * 1000;
        if b.milli >= want {
            b.milli -= want;
            true
        } else {
            false
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .buckets
            .iter()
            .min_by_key(|(_, b)| b.last)
            .map(|(k, _)| *k)
        {
            self.buckets.remove(&k);
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Time for an empty bucket to hold `cost` answers again (documentation and tests).
    pub fn refill_time(&self, cost: u32) -> Duration {
        Duration::from_millis(u64::from(cost) * 1000 / u64::from(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, 10));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, 11));

    // Issue #13 item 5: answers to one source are bounded per second.
    #[test]
    fn one_source_gets_its_burst_then_the_sustained_rate() {
        let mut l = SourceLimiter::new(20, 40, 16);
        let t = Instant::now();
        let granted = (0..100).filter(|_| l.try_take(A, 10, t)).count();
        assert_eq!(granted, 4, "burst of 40 answers = four ssdp:all searches");
        assert!(l.try_take(B, 10, t), "another source has its own budget");
        // One second later: 20 more answers, two searches.
        let t1 = t + Duration::from_secs(1);
        let granted = (0..100).filter(|_| l.try_take(A, 10, t1)).count();
        assert_eq!(granted, 2);
        assert!(!l.try_take(A, 41, t + Duration::from_secs(3600)));
        assert_eq!(l.refill_time(10), Duration::from_millis(500));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_seen() {
        let mut l = SourceLimiter::new(20, 40, 4);
        let t = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.try_take(ip, 1, t + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(l.len(), 4);
    }
}
