//! Timing constants and the engine's configuration (RFC 6887 §8.1.1, §8.3, §11.2.1, §14.1.3;
//! RFC 7488 §3).

use std::time::Duration;

/// Initial retransmission time, 3 s (RFC 6887 §8.1.1, SHOULD).
pub const IRT: Duration = Duration::from_secs(3);
/// Maximum retransmission time, 1024 s (RFC 6887 §8.1.1, SHOULD).
pub const MRT: Duration = Duration::from_secs(1024);
/// Maximum retransmission count; 0 means no limit (RFC 6887 §8.1.1, SHOULD).
pub const MRC: u32 = 0;
/// Maximum retransmission duration; zero means no limit (RFC 6887 §8.1.1, SHOULD).
pub const MRD: Duration = Duration::ZERO;
/// Transmissions to one address of a multi-address server before moving to the next address
/// (RFC 7488 §3).
pub const ADDRESS_MRC: u32 = 4;
/// How often the whole address list is tried again once every address failed, 15 min
/// (RFC 7488 §3, SHOULD).
pub const ALL_ADDRESSES_FAILED_RETRY: Duration = Duration::from_secs(15 * 60);
/// Longest lifetime the client believes; longer grants are capped (RFC 6887 §8.3, §15:
/// "e.g. 24 hours").
pub const MAX_LIFETIME: u32 = 24 * 3600;
/// Renewals of one mapping are never sent closer together than this (RFC 6887 §11.2.1, MUST NOT).
pub const MIN_RENEWAL_GAP: Duration = Duration::from_secs(4);
/// Upper bound of the random wait before re-creating mappings after an ANNOUNCE with an invalid
/// epoch (RFC 6887 §14.1.3, MUST: uniform 0 to 5 s).
pub const ANNOUNCE_RENEW_MAX_DELAY: Duration = Duration::from_secs(5);
/// Suggested lifetime of a short-lifetime error, used when a server sends 0 (RFC 6887 §7.4).
pub const SHORT_ERROR_LIFETIME: u32 = 30;
/// Suggested lifetime of a long-lifetime error, used when a server sends 0 (RFC 6887 §7.4).
pub const LONG_ERROR_LIFETIME: u32 = 30 * 60;
/// Longest wait before retrying a server that answered UNSUPP_VERSION for version 2
/// (RFC 6887 §9: min(30 min, the response's lifetime)).
pub const UNSUPP_VERSION_RETRY: u32 = 30 * 60;
/// First retransmission timeout of a NAT-PMP exchange, 250 ms (RFC 6886 §3.1).
pub const NATPMP_IRT: Duration = Duration::from_millis(250);
/// Most events kept unread; older ones are dropped (and counted) beyond this, so an
/// application that never polls cannot make the engine grow without bound.
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// The engine's tunables. [`Config::default`] is the RFC's recommended behaviour; tests and
/// constrained deployments shorten the timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Initial retransmission time ([`IRT`]).
    pub irt: Duration,
    /// Maximum retransmission time ([`MRT`]); zero means no cap.
    pub mrt: Duration,
    /// Maximum transmissions of one exchange; 0 means no limit ([`MRC`]).
    pub mrc: u32,
    /// Maximum duration of one exchange; zero means no limit ([`MRD`]).
    pub mrd: Duration,
    /// Transmissions per address when a server has several ([`ADDRESS_MRC`]).
    pub address_mrc: u32,
    /// Wait before retrying a server whose addresses all failed ([`ALL_ADDRESSES_FAILED_RETRY`]).
    pub all_failed_retry: Duration,
    /// Lifetime cap in seconds ([`MAX_LIFETIME`]).
    pub max_lifetime: u32,
    /// Fall back to NAT-PMP for IPv4 UDP/TCP maps when the server speaks only NAT-PMP
    /// (RFC 6887 App. A, MAY).
    pub natpmp_fallback: bool,
    /// First retransmission timeout of NAT-PMP exchanges ([`NATPMP_IRT`]).
    pub natpmp_irt: Duration,
    /// Most unread events kept ([`MAX_QUEUED_EVENTS`]); 0 keeps every event (for a driver
    /// that drains [`super::Engine::poll_event`] after every input, so none is ever lost).
    pub max_queued_events: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            irt: IRT,
            mrt: MRT,
            mrc: MRC,
            mrd: MRD,
            address_mrc: ADDRESS_MRC,
            all_failed_retry: ALL_ADDRESSES_FAILED_RETRY,
            max_lifetime: MAX_LIFETIME,
            natpmp_fallback: true,
            natpmp_irt: NATPMP_IRT,
            max_queued_events: MAX_QUEUED_EVENTS,
        }
    }
}
