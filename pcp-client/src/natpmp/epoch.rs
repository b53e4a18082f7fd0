//! The Seconds Since Start of Epoch check that tells a client its gateway lost its mappings
//! (RFC 6886 §3.6).

use std::time::Duration;

use super::STATE_LOSS_TOLERANCE;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Decides whether a gateway lost its mapping state between two of its packets
/// (RFC 6886 §3.6), so that the client MUST renew all its mappings at once (§3.7).
///
/// `previous_client_time` and `previous_epoch` are the client's clock when it received the
/// gateway's previous packet and that packet's Seconds Since Start of Epoch; `client_time` and
/// `epoch` are the same for the packet just received. Client times are offsets from any fixed
/// origin of one monotonic clock (e.g. `Instant - start`).
///
/// The client expects at least `previous_epoch + 7/8 × elapsed`; the gateway lost state when
/// `epoch` falls more than [`STATE_LOSS_TOLERANCE`] (2 s) below that. Exactly 2 s below is
/// not a loss. If `client_time` is before `previous_client_time` (packets handled out of
/// order) the elapsed time counts as zero. Computed exactly in nanoseconds, so it never
/// overflows, underflows or panics, whatever the inputs.
pub fn gateway_lost_state(
    previous_client_time: Duration,
    previous_epoch: u32,
    client_time: Duration,
    epoch: u32,
) -> bool {
    let elapsed = client_time.saturating_sub(previous_client_time).as_nanos();
    // u128 holds u64::MAX seconds in nanoseconds (≈1.8e28) times 7 with room to spare.
    let expected = u128::from(previous_epoch) * NANOS_PER_SEC + elapsed * 7 / 8;
    let received = u128::from(epoch) * NANOS_PER_SEC;
    received + STATE_LOSS_TOLERANCE.as_nanos() < expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn epoch_keeping_pace_is_not_state_loss() {
        // RFC 6886 §3.6
        assert!(!gateway_lost_state(secs(100), 1000, secs(180), 1080));
        assert!(!gateway_lost_state(secs(0), 0, secs(0), 0));
        // A gateway clock running fast is fine.
        assert!(!gateway_lost_state(secs(100), 1000, secs(110), 5000));
    }

    #[test]
    fn epoch_at_seven_eighths_of_elapsed_time_is_not_state_loss() {
        // RFC 6886 §3.6: conservative estimate is 7/8 of the elapsed time
        // 80 s elapsed → expected 100 + 70 = 170.
        assert!(!gateway_lost_state(secs(20), 100, secs(100), 170));
        assert!(!gateway_lost_state(secs(20), 100, secs(100), 169));
    }

    #[test]
    fn epoch_exactly_two_seconds_below_expected_is_not_state_loss() {
        // RFC 6886 §3.6: "less than ... by more than 2 seconds"
        assert!(!gateway_lost_state(secs(20), 100, secs(100), 168));
        assert!(!gateway_lost_state(secs(5), 10, secs(5), 8));
    }

    #[test]
    fn epoch_more_than_two_seconds_below_expected_means_state_loss() {
        // RFC 6886 §3.6
        assert!(gateway_lost_state(secs(20), 100, secs(100), 167));
        assert!(gateway_lost_state(secs(5), 10, secs(5), 7));
        // Fractions count: 1 s elapsed → expected 10.875; 8 is 2.875 below.
        assert!(gateway_lost_state(secs(0), 10, secs(1), 8));
        assert!(!gateway_lost_state(secs(0), 10, secs(1), 9));
        // 2 s + 1 ns below.
        let t = Duration::from_nanos(8 * (NANOS_PER_SEC as u64 * 2 + 1) / 7 + 1);
        assert!(gateway_lost_state(Duration::ZERO, 0, t, 0));
    }

    #[test]
    fn gateway_reboot_resets_epoch_to_zero_and_is_state_loss() {
        // RFC 6886 §3.6, §3.7: a rebooted gateway counts SSSoE from zero again
        assert!(gateway_lost_state(secs(1000), 86_400, secs(1010), 3));
        // ... but a gateway only just started, whose old epoch was under 2 s, is not noticed.
        assert!(!gateway_lost_state(secs(1000), 2, secs(1000), 0));
    }

    #[test]
    fn client_clock_going_backwards_counts_as_no_elapsed_time() {
        assert!(!gateway_lost_state(secs(500), 100, secs(10), 98));
        assert!(gateway_lost_state(secs(500), 100, secs(10), 97));
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        assert!(gateway_lost_state(
            Duration::ZERO,
            u32::MAX,
            Duration::MAX,
            u32::MAX
        ));
        assert!(gateway_lost_state(
            Duration::ZERO,
            u32::MAX,
            Duration::ZERO,
            0
        ));
        assert!(!gateway_lost_state(
            Duration::MAX,
            0,
            Duration::ZERO,
            u32::MAX
        ));
        assert!(!gateway_lost_state(
            Duration::MAX,
            u32::MAX,
            Duration::MAX,
            u32::MAX
        ));
    }

    proptest! {
        /// An epoch that advanced at least as fast as the client's clock is never a loss.
        #[test]
        fn epoch_advancing_with_the_clock_is_never_state_loss(
            start in 0u64..1 << 40, prev: u32, elapsed in 0u32..=u32::MAX
        ) {
            let epoch = prev.saturating_add(elapsed);
            prop_assume!(u64::from(epoch) - u64::from(prev) == u64::from(elapsed));
            prop_assert!(!gateway_lost_state(secs(start), prev, secs(start + u64::from(elapsed)), epoch));
        }
    }
}
