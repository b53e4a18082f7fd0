//! The retransmission schedule of one exchange (RFC 6887 §8.1.1, the DHCPv6 scheme) and its
//! per-address count for multi-address servers (RFC 7488 §3).
//!
//! ```text
//! RT = (1 + RAND) · IRT                       first transmission
//! RT = (1 + RAND) · min(2 · RTprev, MRT)      every retransmission (MRT = 0: no cap)
//! fail when (MRC ≠ 0 and transmissions = MRC) or (MRD ≠ 0 and elapsed ≥ MRD)
//! ```

use std::time::{Duration, Instant};

use rand::RngCore;

use super::config::Config;
use super::rng::jitter;

/// How long one exchange may go on: MRC transmissions and MRD time (RFC 6887 §8.1.1); zero in
/// either means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Maximum transmissions (0: no limit).
    pub mrc: u32,
    /// Maximum duration (zero: no limit).
    pub mrd: Duration,
}

impl Limit {
    /// Never gives up (re-creates after state loss, renewals).
    pub const UNBOUNDED: Limit = Limit {
        mrc: 0,
        mrd: Duration::ZERO,
    };

    /// The engine-wide limit of `config`.
    pub fn of(config: &Config) -> Limit {
        Limit {
            mrc: config.mrc,
            mrd: config.mrd,
        }
    }
}

/// Retransmission state of one request (a create, a re-create after expiry or state loss, an
/// update, or a delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// When the exchange started (for MRD).
    pub started: Instant,
    /// Initial retransmission time of this exchange (IRT, or 250 ms for NAT-PMP).
    pub irt: Duration,
    /// The RT drawn for the last transmission; zero before the first.
    pub rt: Duration,
    /// Transmissions so far, on every address.
    pub transmissions: u32,
    /// Index of the server address the last transmissions went to.
    pub address: usize,
    /// Transmissions to that address (RFC 7488 §3 counts MRC per address).
    pub address_transmissions: u32,
    /// This exchange's own MRC/MRD; `None` follows the engine's [`Config`].
    pub limit: Option<Limit>,
}

impl Retransmit {
    /// A new exchange starting at `now`, to address `address`.
    pub fn new(now: Instant, irt: Duration, address: usize) -> Self {
        Retransmit {
            started: now,
            irt,
            rt: Duration::ZERO,
            transmissions: 0,
            address,
            address_transmissions: 0,
            limit: None,
        }
    }

    /// The same exchange with its own MRC/MRD instead of the engine's.
    pub fn with_limit(mut self, limit: Option<Limit>) -> Self {
        self.limit = limit;
        self
    }

    fn effective(&self, config: &Config) -> Limit {
        self.limit.unwrap_or_else(|| Limit::of(config))
    }

    /// Records a transmission at `now` to `address` and returns when the exchange times out
    /// next (the next retransmission, or the MRD deadline). Moving to another address
    /// restarts the schedule from IRT (RFC 7488 §3: the normal retransmission runs per address).
    pub fn on_transmit(
        &mut self,
        now: Instant,
        address: usize,
        config: &Config,
        rng: &mut dyn RngCore,
    ) -> Instant {
        if address != self.address {
            self.address = address;
            self.address_transmissions = 0;
            self.rt = Duration::ZERO;
        }
        let base = if self.rt.is_zero() {
            self.irt
        } else if config.mrt.is_zero() {
            self.rt.saturating_mul(2)
        } else {
            self.rt.saturating_mul(2).min(config.mrt)
        };
        self.rt = jitter(rng, base);
        self.transmissions = self.transmissions.saturating_add(1);
        self.address_transmissions = self.address_transmissions.saturating_add(1);
        let next = now + self.rt;
        let mrd = self.effective(config).mrd;
        if mrd.is_zero() {
            next
        } else {
            next.min(self.started + mrd)
        }
    }

    /// True when the exchange has failed at `now`: MRC transmissions were sent, or MRD has
    /// elapsed (RFC 6887 §8.1.1). Asked when a timeout fires.
    pub fn exhausted(&self, now: Instant, config: &Config) -> bool {
        let Limit { mrc, mrd } = self.effective(config);
        (mrc != 0 && self.transmissions >= mrc) || (!mrd.is_zero() && now >= self.started + mrd)
    }

    /// True when the current address has had its RFC 7488 §3 share (`address_mrc`
    /// transmissions), so the next timeout moves on to the next address.
    pub fn address_exhausted(&self, config: &Config) -> bool {
        config.address_mrc != 0 && self.address_transmissions >= config.address_mrc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::rng::seeded_rng;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    // RFC 6887 §8.1.1: RT = (1+RAND)·IRT, then (1+RAND)·min(2·RTprev, MRT).
    #[test]
    fn rt_doubles_from_irt_with_fresh_jitter_and_caps_at_mrt() {
        let config = Config::default();
        let mut rng = seeded_rng(3);
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0, config.irt, 0);
        let mut now = t0;
        let mut prev = Duration::ZERO;
        for i in 0..20 {
            let next = r.on_transmit(now, 0, &config, &mut *rng);
            let rt = next - now;
            let base = if i == 0 {
                secs(3.0)
            } else {
                (prev * 2).min(secs(1024.0))
            };
            assert!(
                rt >= base.mul_f64(0.9) && rt <= base.mul_f64(1.1),
                "{i}: {rt:?}"
            );
            prev = rt;
            now = next;
        }
        // Capped: the last RTs are all within ±10 % of MRT.
        assert!(prev >= secs(921.6) && prev <= secs(1126.4));
        assert!(!r.exhausted(now, &config), "MRC = MRD = 0 never gives up");
    }

    // RFC 6887 §8.1.1: fail after MRC transmissions.
    #[test]
    fn exchange_fails_after_mrc_transmissions() {
        let config = Config {
            mrc: 3,
            ..Config::default()
        };
        let mut rng = seeded_rng(1);
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0, config.irt, 0);
        let mut now = t0;
        for _ in 0..3 {
            assert!(!r.exhausted(now, &config));
            now = r.on_transmit(now, 0, &config, &mut *rng);
        }
        assert!(r.exhausted(now, &config));
    }

    // RFC 6887 §8.1.1: fail once MRD has elapsed; the timeout never overshoots MRD.
    #[test]
    fn exchange_fails_at_mrd() {
        let config = Config {
            mrd: Duration::from_secs(10),
            ..Config::default()
        };
        let mut rng = seeded_rng(1);
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0, config.irt, 0);
        let mut now = t0;
        while !r.exhausted(now, &config) {
            now = r.on_transmit(now, 0, &config, &mut *rng);
            assert!(now <= t0 + Duration::from_secs(10));
        }
        assert_eq!(now, t0 + Duration::from_secs(10));
        assert!(r.transmissions >= 2);
    }

    // RFC 7488 §3: a new address restarts the schedule from IRT.
    #[test]
    fn moving_to_the_next_address_restarts_from_irt() {
        let config = Config::default();
        let mut rng = seeded_rng(2);
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0, config.irt, 0);
        let mut now = t0;
        for _ in 0..4 {
            now = r.on_transmit(now, 0, &config, &mut *rng);
        }
        assert!(r.address_exhausted(&config));
        let next = r.on_transmit(now, 1, &config, &mut *rng);
        assert!(next - now <= secs(3.3));
        assert_eq!(
            (r.address, r.address_transmissions, r.transmissions),
            (1, 1, 5)
        );
    }
}
