//! Rate limiting of log lines caused by floods (issue #13 item 5): a burst of 5 000 bad
//! M-SEARCHes or SOAP requests must not write 5 000 warnings. Sans-IO: the caller passes
//! `now`, so tests drive it with a fake clock.
//!
//! Per kind of message (a `&'static str` key such as `"ssdp_queue_full"`), the first
//! [`LogLimiter::burst`] events of a [`LogLimiter::window`] are logged; the rest are counted.
//! When the window ends, [`LogLimiter::poll_summaries`] returns one summary per key that
//! suppressed something ("… N more suppressed in the last 10 s"). Memory is bounded by the
//! number of distinct keys, which are compile-time strings.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use upnp_iwf::log_limit::{LogLimiter, Verdict};
//! let mut l = LogLimiter::new(2, Duration::from_secs(10));
//! let t = Instant::now();
//! assert_eq!(l.check("k", t), Verdict::Log);
//! assert_eq!(l.check("k", t), Verdict::Log);
//! assert_eq!(l.check("k", t), Verdict::Suppress);
//! let s = l.poll_summaries(t + Duration::from_secs(10));
//! assert_eq!(s[0].suppressed, 1);
//! ```

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Default window of [`LogLimiter`].
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Default number of lines per key and window.
pub const LOG_BURST: u32 = 5;

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the log line.
    Log,
    /// Drop it; it is counted in the next summary.
    Suppress,
}

/// A summary due at the end of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The key (kind of message).
    pub key: &'static str,
    /// Events not logged during the window.
    pub suppressed: u64,
    /// Length of the window.
    pub window: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} more suppressed in the last {} s",
            self.key,
            self.suppressed,
            self.window.as_secs()
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Per-key log rate limiter (sans-IO).
#[derive(Debug, Clone)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    entries: BTreeMap<&'static str, Entry>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LOG_BURST, LOG_WINDOW)
    }
}

impl LogLimiter {
    /// At most `burst` lines per key in each `window` (a `burst` of 0 is treated as 1).
    pub fn new(burst: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            burst: burst.max(1),
            window,
            entries: BTreeMap::new(),
        }
    }

    /// Lines allowed per window.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Decides whether the event `key` at `now` is logged. A window that has ended is not
    /// restarted here when it still owes a summary: call [`LogLimiter::poll_summaries`]
    /// first (the drivers do, before each check and on their tick).
    pub fn check(&mut self, key: &'static str, now: Instant) -> Verdict {
        let window = self.window;
        let e = self.entries.entry(key).or_insert(Entry {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(e.start) >= window && e.suppressed == 0 {
            *e = Entry {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if e.logged < self.burst {
            e.logged += 1;
            Verdict::Log
        } else {
            e.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Summaries of the windows that have ended by `now` with something suppressed; those
    /// windows restart empty. Idle keys are forgotten.
    pub fn poll_summaries(&mut self, now: Instant) -> Vec<Summary> {
        let window = self.window;
        let mut out = Vec::new();
        self.entries.retain(|key, e| {
            if now.saturating_duration_since(e.start) < window {
                return true;
            }
            if e.suppressed > 0 {
                out.push(Summary {
                    key,
                    suppressed: e.suppressed,
                    window,
                });
            }
            false
        });
        out
    }

    /// Every pending summary at once, windows ended or not (at shutdown, so no count is
    /// lost); each summary's window is the time since its window began, in whole seconds
    /// rounded up.
    pub fn drain(&mut self, now: Instant) -> Vec<Summary> {
        let window = self.window;
        let out = self
            .entries
            .iter()
            .filter(|(_, e)| e.suppressed > 0)
            .map(|(key, e)| {
                let elapsed = now.saturating_duration_since(e.start).min(window);
                Summary {
                    key,
                    suppressed: e.suppressed,
                    window: Duration::from_secs(elapsed.as_secs() + 1).min(window),
                }
            })
            .collect();
        self.entries.clear();
        out
    }

    /// When the next summary may be due (for a driver's timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.suppressed > 0)
            .map(|e| e.start + self.window)
            .min()
    }
}

/// A [`LogLimiter`] shared by tasks (HTTP connections), using the real clock at the edges.
#[derive(Debug, Default)]
pub struct SharedLogLimiter {
    inner: Mutex<LogLimiter>,
}

impl SharedLogLimiter {
    /// Whether to log event `key` now; writes any due summaries first.
    pub fn allow(&self, key: &'static str, now: Instant) -> bool {
        let mut l = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for s in l.poll_summaries(now) {
            log_summary(&s);
        }
        l.check(key, now) == Verdict::Log
    }

    /// Writes every pending summary (at shutdown).
    pub fn flush_all(&self, now: Instant) {
        let due = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(now);
        for s in due {
            log_summary(&s);
        }
    }

    /// Writes the summaries due at `now` (call on a periodic tick).
    pub fn flush(&self, now: Instant) {
        let due = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_summaries(now);
        for s in due {
            log_summary(&s);
        }
    }
}

/// Writes one summary line as a warning.
pub fn log_summary(s: &Summary) {
    tracing::warn!(
        kind = s.key,
        suppressed = s.suppressed,
        "{} more suppressed in the last {} s",
        s.suppressed,
        s.window.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue #13 item 5: 5 000 events of one kind give `burst` lines and one summary.
    #[test]
    fn a_flood_of_one_kind_logs_a_burst_then_one_summary_per_window() {
        let mut l = LogLimiter::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        let mut logged = 0;
        for i in 0..5000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            logged += l.poll_summaries(now).len();
            if l.check("ssdp_queue_full", now) == Verdict::Log {
                logged += 1;
            }
        }
        assert_eq!(logged, 5);
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + Duration::from_secs(10)),
            "a summary is due at the end of the window"
        );
        let s = l.poll_summaries(t0 + Duration::from_secs(10));
        assert_eq!(
            s,
            vec![Summary {
                key: "ssdp_queue_full",
                suppressed: 4995,
                window: Duration::from_secs(10)
            }]
        );
        assert_eq!(
            s[0].to_string(),
            "ssdp_queue_full: 4995 more suppressed in the last 10 s"
        );
        assert_eq!(l.poll_timeout(), None);
        // At shutdown a window that has not ended still gets its summary.
        for _ in 0..7 {
            l.check("http", t0 + Duration::from_secs(20));
        }
        let d = l.drain(t0 + Duration::from_millis(22_500));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].suppressed, 2);
        assert_eq!(d[0].window, Duration::from_secs(3));
        // The next window starts fresh.
        assert_eq!(
            l.check("ssdp_queue_full", t0 + Duration::from_secs(11)),
            Verdict::Log
        );
    }

    #[test]
    fn keys_are_limited_independently_and_quiet_windows_owe_no_summary() {
        let mut l = LogLimiter::new(1, Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(l.check("a", t), Verdict::Log);
        assert_eq!(l.check("b", t), Verdict::Log);
        assert_eq!(l.check("a", t), Verdict::Suppress);
        let s = l.poll_summaries(t + Duration::from_secs(10));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].key, "a");
        // A key below the burst in an ended window restarts without a summary.
        assert_eq!(l.check("c", t), Verdict::Log);
        assert!(l.poll_summaries(t + Duration::from_secs(30)).is_empty());
        assert_eq!(l.check("c", t + Duration::from_secs(30)), Verdict::Log);
    }
}
