//! The figures of a `nat444-lab scale` run: the table a person reads and the JSON object a
//! test or a script reads (the same fields).

use std::fmt::Write as _;

use serde::Serialize;

use super::check::{Asked, CgnEntry, Verdict};

/// Resident memory of one process from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Mem {
    /// Peak resident set (`VmHWM`).
    pub hwm_kib: u64,
    /// Resident set now (`VmRSS`).
    pub rss_kib: u64,
}

/// `VmHWM` and `VmRSS` of a `/proc/PID/status` text; `None` if either is missing.
pub fn parse_mem(status: &str) -> Option<Mem> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Mem {
        hwm_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
    })
}

/// [`Mem`] of process `pid`, `None` if it is gone or unreadable.
pub fn memory(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_mem(&status)
}

/// Max and mean over several processes, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Largest value.
    pub max_kib: u64,
    /// Mean value.
    pub mean_kib: f64,
}

/// Max and mean of `values` (zeros for none).
pub fn spread(values: impl IntoIterator<Item = u64>) -> Spread {
    let (mut max, mut sum, mut n) = (0u64, 0u64, 0u64);
    for v in values {
        max = max.max(v);
        sum = sum.saturating_add(v);
        n += 1;
    }
    Spread {
        max_kib: max,
        mean_kib: if n == 0 { 0.0 } else { sum as f64 / n as f64 },
    }
}

/// Nearest-rank percentile `q` (0–1) of `samples`; `None` for none.
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v.get(rank).copied()
}

/// Everything a run found. `--json` prints it as one object.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleReport {
    /// Subscribers (CPE + LAN host + upnp-iwf each).
    pub subscribers: u16,
    /// Mappings asked for per subscriber.
    pub mappings: u16,
    /// Mappings asked for in all (`subscribers × mappings`).
    pub asked: usize,
    /// `upnpc -a` calls that got a mapping.
    pub granted: usize,
    /// Asked mappings found at the CGN before the restart (same endpoint, active in the IWF).
    pub at_cgn_before: usize,
    /// Asked mappings back at the CGN after the restart on the endpoint granted before, each
    /// exactly once, each active in its IWF and restored by it (restores ≥ 1).
    pub restored: usize,
    /// Asked mappings not restored (`asked - restored`; the causes are in `verdict`).
    pub lost: usize,
    /// CGN entries beyond one per asked mapping after the restart.
    pub duplicated: usize,
    /// Whether the wait for recovery ran out before everything was restored.
    pub recovery_timed_out: bool,
    /// Seconds to build the namespaces and links.
    pub lab_s: f64,
    /// Seconds to build the lab and start cgn-sim and every upnp-iwf (all serving).
    pub setup_s: f64,
    /// Seconds from the first `upnpc -a` to the last one's exit.
    pub mapping_s: f64,
    /// Granted mappings per second over `mapping_s`.
    pub mapping_rate: f64,
    /// `upnpc -a` wall time per call (spawn to exit, `ip netns exec` included), ms: p50, p90,
    /// max.
    pub add_ms_p50: f64,
    /// See `add_ms_p50`.
    pub add_ms_p90: f64,
    /// See `add_ms_p50`.
    pub add_ms_max: f64,
    /// Seconds from `cgn-sim ctl restart` to the first CGN table holding every granted
    /// mapping again on its old endpoint (polled every 200 ms); `None` if that never came.
    pub recovery_s: Option<f64>,
    /// Seconds from the restart until every IWF also showed every mapping active and
    /// restored (each check reads all status pages, so this trails `recovery_s`).
    pub iwf_confirmed_s: Option<f64>,
    /// CGN entries of the asked mappings at the first poll after the restart (the restart
    /// empties the table; the IWFs wait 0–5 s before re-creating, RFC 6887 §14.1.3).
    pub cgn_entries_after_restart: usize,
    /// cgn-sim's memory at the end.
    pub cgn_mem: Mem,
    /// Peak RSS (VmHWM) over the IWFs.
    pub iwf_hwm: Spread,
    /// RSS (VmRSS) over the IWFs at the end.
    pub iwf_rss: Spread,
    /// `upnpc` clients run at once (one subscriber each).
    pub parallel: usize,
    /// Recovery wait limit, seconds.
    pub timeout_s: u64,
    /// 1-minute load average at the start and at the end (`/proc/loadavg`).
    pub load_start: f64,
    /// See `load_start`.
    pub load_end: f64,
    /// Online CPUs.
    pub cpus: usize,
    /// Namespace prefix of the lab (every namespace is `<prefix>-…`; all gone at exit).
    pub prefix: String,
    /// The causes of `lost` and `duplicated`.
    pub verdict: Verdict,
    /// Every asked mapping and what became of it.
    pub detail: Vec<Asked>,
    /// The CGN's `MAP IN` entries after the recovery (the table `restored` was counted on).
    pub cgn_after: Vec<CgnEntry>,
}

impl ScaleReport {
    /// Whether the run passed: nothing lost or duplicated, recovery within the limit.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && !self.recovery_timed_out
    }

    /// The report as one JSON object (pretty-printed).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The figures as a table for people.
    pub fn table(&self) -> String {
        let secs =
            |v: Option<f64>| v.map_or_else(|| "timed out".to_owned(), |s| format!("{s:.2} s"));
        let mib = |kib: f64| format!("{:.1} MiB", kib / 1024.0);
        let rows: Vec<(&str, String)> = vec![
            (
                "subscribers × mappings",
                format!("{} × {} = {}", self.subscribers, self.mappings, self.asked),
            ),
            (
                "set-up (lab + cgn-sim + IWFs serving)",
                format!("{:.2} s (lab {:.2} s)", self.setup_s, self.lab_s),
            ),
            (
                "mapping (upnpc -a, granted)",
                format!(
                    "{} in {:.2} s = {:.1} mappings/s",
                    self.granted, self.mapping_s, self.mapping_rate
                ),
            ),
            (
                "upnpc -a per call p50 / p90 / max",
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    self.add_ms_p50, self.add_ms_p90, self.add_ms_max
                ),
            ),
            (
                "at the CGN before restart",
                format!("{}", self.at_cgn_before),
            ),
            (
                "at the CGN at the first poll after restart",
                format!("{}", self.cgn_entries_after_restart),
            ),
            (
                "recovery to all restored (CGN table)",
                secs(self.recovery_s),
            ),
            ("  … and confirmed by every IWF", secs(self.iwf_confirmed_s)),
            ("restored", format!("{} of {}", self.restored, self.asked)),
            (
                "lost / duplicated",
                format!("{} / {}", self.lost, self.duplicated),
            ),
            (
                "cgn-sim RSS peak / now",
                format!(
                    "{} / {}",
                    mib(self.cgn_mem.hwm_kib as f64),
                    mib(self.cgn_mem.rss_kib as f64)
                ),
            ),
            (
                "upnp-iwf peak RSS max / mean",
                format!(
                    "{} / {}",
                    mib(self.iwf_hwm.max_kib as f64),
                    mib(self.iwf_hwm.mean_kib)
                ),
            ),
            (
                "upnp-iwf RSS now max / mean",
                format!(
                    "{} / {}",
                    mib(self.iwf_rss.max_kib as f64),
                    mib(self.iwf_rss.mean_kib)
                ),
            ),
            (
                "machine",
                format!(
                    "{} CPUs, load {:.2} → {:.2}, {} clients at once",
                    self.cpus, self.load_start, self.load_end, self.parallel
                ),
            ),
        ];
        let w = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut s = String::new();
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<w$}  {v}");
        }
        let v = &self.verdict;
        if !v.clean() || self.recovery_timed_out {
            let _ = writeln!(
                s,
                "\n  FAILED: lost {} (add failed {}, missing {}, moved {}, IWF disagrees {}), duplicated {}{}",
                v.lost,
                v.add_failed,
                v.missing,
                v.moved,
                v.iwf_mismatch,
                v.duplicated,
                if self.recovery_timed_out {
                    ", recovery timed out"
                } else {
                    ""
                }
            );
        }
        s
    }
}

/// The 1-minute load average (`/proc/loadavg`), 0 if unreadable.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t    9300 kB\nVmRSS:\t    9100 kB\n";
        assert_eq!(
            parse_mem(status),
            Some(Mem {
                hwm_kib: 9300,
                rss_kib: 9100
            })
        );
        assert_eq!(parse_mem("Name:\tx\n"), None);
        assert!(memory(std::process::id()).is_some_and(|m| m.hwm_kib >= m.rss_kib.min(1)));
    }

    #[test]
    fn spread_and_percentiles() {
        assert_eq!(
            spread([10, 20, 30]),
            Spread {
                max_kib: 30,
                mean_kib: 20.0
            }
        );
        assert_eq!(spread([]).max_kib, 0);
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.9), Some(5.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_report_with_a_loss_fails_and_says_why() {
        let mut r = ScaleReport {
            subscribers: 2,
            mappings: 1,
            asked: 2,
            restored: 2,
            recovery_s: Some(3.0),
            ..ScaleReport::default()
        };
        assert!(r.passed());
        assert!(!r.table().contains("FAILED"));
        r.lost = 1;
        r.verdict.lost = 1;
        r.verdict.missing = 1;
        assert!(!r.passed());
        assert!(r.table().contains("FAILED: lost 1"), "{}", r.table());
        let json: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        for key in [
            "subscribers",
            "mappings",
            "restored",
            "lost",
            "duplicated",
            "setup_s",
            "recovery_s",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
