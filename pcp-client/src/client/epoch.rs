//! Epoch validation (RFC 6887 §8.5), in signed arithmetic.
//!
//! The RFC says the check "works in unsigned arithmetic" yet allows the server's epoch to step
//! back by up to 1 s; with unsigned numbers `cs = prev − 1` wraps `server_delta` and the second
//! test wrongly reports state loss (digest §2.5 gotcha). Everything here is `i64` seconds.

use std::time::Instant;

/// The outcome of one epoch check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// The first response from this server: valid by definition.
    First,
    /// The epoch is consistent with the time that passed.
    Valid,
    /// The server probably lost its state: renew every mapping there (RFC 6887 §8.5, §16.3.1).
    Invalid,
}

impl EpochCheck {
    /// True for [`EpochCheck::Invalid`].
    pub const fn is_invalid(self) -> bool {
        matches!(self, EpochCheck::Invalid)
    }
}

/// The per-server epoch state: the client time and server epoch of the last validated response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochState {
    previous: Option<(Instant, u32)>,
}

impl EpochState {
    /// No response seen yet.
    pub const fn new() -> Self {
        EpochState { previous: None }
    }

    /// The last epoch seen, if any.
    pub fn last_epoch(&self) -> Option<u32> {
        self.previous.map(|(_, e)| e)
    }

    /// Forgets the server (a new network: RFC 6887 §8.3).
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// Checks `epoch` received at `now`, then records both (they are updated whatever the
    /// outcome, RFC 6887 §8.5). `now` comes from a monotonic clock; if it is earlier than the
    /// previous time (out-of-order calls) the client delta counts as 0.
    pub fn check(&mut self, now: Instant, epoch: u32) -> EpochCheck {
        let outcome = match self.previous {
            None => EpochCheck::First,
            Some((prev_client, prev_server)) => {
                let cs = i64::from(epoch);
                let ps = i64::from(prev_server);
                // Seconds, truncated: the +2 s tolerance absorbs the quantization.
                let client_delta =
                    i64::try_from(now.saturating_duration_since(prev_client).as_secs())
                        .unwrap_or(i64::MAX / 2);
                if cs + 1 < ps {
                    EpochCheck::Invalid
                } else {
                    let server_delta = cs - ps;
                    if client_delta + 2 < server_delta - server_delta / 16
                        || server_delta + 2 < client_delta - client_delta / 16
                    {
                        EpochCheck::Invalid
                    } else {
                        EpochCheck::Valid
                    }
                }
            }
        };
        self.previous = Some((now, epoch));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    // RFC 6887 §8.5: the first response is valid by definition.
    #[test]
    fn first_response_from_a_server_is_valid() {
        let mut e = EpochState::new();
        assert_eq!(e.check(Instant::now(), 12345), EpochCheck::First);
    }

    // RFC 6887 §8.5 with the digest §2.5 gotcha: a 1 s backward step is tolerated.
    #[test]
    fn epoch_one_second_back_is_valid_in_signed_arithmetic() {
        let t0 = Instant::now();
        let mut e = EpochState::new();
        e.check(t0, 1000);
        assert_eq!(e.check(t0, 999), EpochCheck::Valid);
    }

    // RFC 6887 §8.5: more than 1 s back is state loss.
    #[test]
    fn epoch_more_than_one_second_back_means_state_loss() {
        let t0 = Instant::now();
        let mut e = EpochState::new();
        e.check(t0, 1000);
        assert_eq!(e.check(t0, 998), EpochCheck::Invalid);
        // A restarted server (epoch near zero) after a long time.
        let mut e = EpochState::new();
        e.check(t0, 100_000);
        assert_eq!(e.check(at(t0, 600), 3), EpochCheck::Invalid);
    }

    // RFC 6887 §8.5: client_delta + 2 < server_delta − server_delta/16 is invalid.
    #[test]
    fn epoch_running_ahead_beyond_drift_and_slack_is_invalid() {
        let t0 = Instant::now();
        // 160 s client time: the server may advance up to 162 + 162/16 ≈ 172 s.
        let mut e = EpochState::new();
        e.check(t0, 1000);
        assert_eq!(e.check(at(t0, 160), 1000 + 172), EpochCheck::Valid);
        let mut e = EpochState::new();
        e.check(t0, 1000);
        assert_eq!(e.check(at(t0, 160), 1000 + 173), EpochCheck::Invalid);
    }

    // RFC 6887 §8.5: server_delta + 2 < client_delta − client_delta/16 is invalid.
    #[test]
    fn epoch_lagging_beyond_drift_and_slack_is_invalid() {
        let t0 = Instant::now();
        // 160 s client time: 160 − 10 = 150, so the server must advance at least 148 s.
        let mut e = EpochState::new();
        e.check(t0, 1000);
        assert_eq!(e.check(at(t0, 160), 1148), EpochCheck::Valid);
        let mut e = EpochState::new();
        e.check(t0, 1000);
        assert_eq!(e.check(at(t0, 160), 1147), EpochCheck::Invalid);
    }

    // RFC 6887 §8.5: previous times are updated after every check, valid or not.
    #[test]
    fn previous_times_are_updated_after_every_check() {
        let t0 = Instant::now();
        let mut e = EpochState::new();
        e.check(t0, 5000);
        assert_eq!(e.check(at(t0, 10), 3), EpochCheck::Invalid);
        // Judged against (t0+10, 3), not against (t0, 5000).
        assert_eq!(e.check(at(t0, 20), 13), EpochCheck::Valid);
        assert_eq!(e.last_epoch(), Some(13));
    }

    // RFC 6887 §8.5: the client clock never goes backwards; an earlier `now` counts as 0.
    #[test]
    fn client_time_never_runs_backwards() {
        let t0 = Instant::now();
        let mut e = EpochState::new();
        e.check(at(t0, 100), 500);
        assert_eq!(e.check(t0, 501), EpochCheck::Valid);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let t0 = Instant::now();
        let mut e = EpochState::new();
        e.check(t0, u32::MAX);
        assert_eq!(e.check(at(t0, 1), 0), EpochCheck::Invalid);
        assert_eq!(e.check(at(t0, 2), u32::MAX), EpochCheck::Invalid);
    }
}
