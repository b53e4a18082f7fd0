//! `nat444-lab scale`: many subscribers behind one CGN (issue 12, build item 3).
//!
//! It builds a [`MultiLab`] with N subscribers, starts `cgn-sim` (PCP server and TUN
//! dataplane) in `cgn` and, on every CPE, the router's own masquerade and `upnp-iwf` with its
//! defaults (PCP upstream to the WAN default gateway, nftables NAT1). Every LAN host then maps
//! M UDP ports with a real UPnP client (`upnpc -a`, one call per port; the clients of up to
//! `parallel` subscribers run at once). After `cgn-sim ctl restart` it polls the CGN's table
//! until every granted mapping is back on the external endpoint it had, and then every IWF's
//! status page until each shows every mapping active and restored, bounded by a timeout.
//!
//! The figures ([`ScaleReport`]) are counted on the CGN's own table and the IWFs' own pages
//! ([`check::compare`]): a mapping is restored when the CGN holds it exactly once on the same
//! external endpoint and its IWF shows it active there with a restore; anything else is
//! lost, and every further CGN entry of a lab subscriber is a duplicate. Everything is torn
//! down when [`run`] returns, also on an error or when `interrupted` is raised (Ctrl-C).

pub mod check;
pub mod report;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::e2e::{IGD_URL, PY, ROUTER_FW};
use crate::lab::multi::cpe_wan;
use crate::lab::plan::LAN_HOST;
use crate::lab::{LabChild, LabError, MultiLab, MultiLabBuilder, Site, cgn_sim_argv};
use check::{Asked, CgnEntry, IwfEntry, Verdict};
pub use report::ScaleReport;

/// Most mappings per subscriber.
pub const MAX_MAPPINGS: u16 = 1000;
/// Time limit of one `upnpc -a`.
const ADD_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one status page fetch or `cgn-sim ctl` call.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemons get to come up, plus [`START_PER_SUBSCRIBER`] each.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra start-up time per subscriber (60 debug-build IWFs on 2 shared cores).
const START_PER_SUBSCRIBER: Duration = Duration::from_millis(500);
/// A client spots a restart by the epoch going back (RFC 6887 §8.5), which needs the CGN to
/// have been up a few seconds: the restart waits until it has.
const MIN_CGN_UPTIME: Duration = Duration::from_secs(4);
/// Poll period of the CGN table during recovery.
const POLL: Duration = Duration::from_millis(200);
/// After everything is confirmed, the last snapshot is taken this much later, so that a late
/// duplicate (a second re-creation) is still seen.
const SETTLE: Duration = Duration::from_secs(2);
/// Prints the page at `argv[1]` (Debian's python3 is in the lab's package list; curl is not).
const FETCH: &str = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())";
/// The description every mapping carries.
const DESCRIPTION: &str = "nat444-scale";
/// UPnP lease of every mapping, seconds.
const LEASE: &str = "3600";

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Subscribers (1 to [`crate::lab::multi::MAX_SUBSCRIBERS`]).
    pub subscribers: u16,
    /// Mappings per subscriber (1 to [`MAX_MAPPINGS`]).
    pub mappings: u16,
    /// Subscribers whose clients run at once (at least 1).
    pub parallel: usize,
    /// Longest wait for recovery after the restart.
    pub timeout: Duration,
    /// Namespace prefix (default: generated `n444-<pid>-<n>`).
    pub prefix: Option<String>,
}

/// Why a run stopped before it had figures.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Building or using the lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Writing progress failed.
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    /// The interrupt flag was raised (Ctrl-C); the lab was torn down.
    #[error("interrupted; the lab was torn down")]
    Interrupted,
    /// A daemon binary is not built.
    #[error(transparent)]
    MissingBinary(#[from] crate::bins::MissingBinary),
    /// The options cannot be run.
    #[error("{0}")]
    Options(String),
    /// A step did not do what it should.
    #[error("{step}: {detail}")]
    Step {
        /// The step.
        step: &'static str,
        /// What went wrong, with the output that shows it.
        detail: String,
    },
}

fn step_err(step: &'static str, detail: impl Into<String>) -> ScaleError {
    ScaleError::Step {
        step,
        detail: detail.into(),
    }
}

fn check_interrupt(interrupted: &AtomicBool) -> Result<(), ScaleError> {
    if interrupted.load(Ordering::SeqCst) {
        Err(ScaleError::Interrupted)
    } else {
        Ok(())
    }
}

/// Polls `cond` every 100 ms until it holds, `limit` passes or `interrupted` is raised.
fn wait_for(limit: Duration, interrupted: &AtomicBool, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline || interrupted.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `f(i)` for `i` in `0..count` on at most `parallel` threads; `None` for the items not
/// run because `interrupted` was raised.
fn parallel_map<T: Send>(
    count: usize,
    parallel: usize,
    interrupted: &AtomicBool,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<Option<T>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, count.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || interrupted.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = f(i);
                    let mut all = results.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(slot) = all.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The binaries a run needs, next to this executable.
struct Bins {
    cgn_sim: PathBuf,
    upnp_iwf: PathBuf,
}

fn locate() -> Result<Bins, ScaleError> {
    Ok(Bins {
        cgn_sim: crate::bins::require("cgn-sim")?,
        upnp_iwf: crate::bins::require("upnp-iwf")?,
    })
}

/// The running lab of one run.
struct Scale<'a> {
    lab: MultiLab,
    bins: Bins,
    sock: PathBuf,
    opts: &'a ScaleOptions,
    interrupted: &'a AtomicBool,
}

/// Runs the scale lab, writing progress lines to `progress`, and returns its figures. The lab
/// is gone when this returns, whatever it returns.
pub fn run(
    opts: &ScaleOptions,
    progress: &mut dyn Write,
    interrupted: &AtomicBool,
) -> Result<ScaleReport, ScaleError> {
    validate(opts)?;
    let bins = locate()?;
    let mut report = ScaleReport {
        subscribers: opts.subscribers,
        mappings: opts.mappings,
        asked: usize::from(opts.subscribers) * usize::from(opts.mappings),
        parallel: opts.parallel,
        timeout_s: opts.timeout.as_secs(),
        load_start: report::load_average(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        ..ScaleReport::default()
    };
    check_interrupt(interrupted)?;
    let started = Instant::now();
    let mut builder = MultiLabBuilder::new(opts.subscribers);
    if let Some(p) = &opts.prefix {
        builder = builder.prefix(p.clone());
    }
    let lab = builder.build()?;
    report.lab_s = started.elapsed().as_secs_f64();
    report.prefix = lab.prefix().to_owned();
    writeln!(
        progress,
        "lab {} built: {} namespaces in {:.2} s",
        lab.prefix(),
        lab.sites().len(),
        report.lab_s
    )?;
    let sock = lab.log_dir().join("cgn.sock");
    let scale = Scale {
        lab,
        bins,
        sock,
        opts,
        interrupted,
    };
    let result = scale.measure(progress, started, &mut report);
    writeln!(progress, "tearing down lab {} ...", scale.lab.prefix())?;
    drop(scale);
    result?;
    report.load_end = report::load_average();
    Ok(report)
}

fn validate(opts: &ScaleOptions) -> Result<(), ScaleError> {
    let max = crate::lab::multi::MAX_SUBSCRIBERS;
    if opts.subscribers == 0 || opts.subscribers > max {
        return Err(ScaleError::Options(format!(
            "--subscribers must be 1 to {max}"
        )));
    }
    if opts.mappings == 0 || opts.mappings > MAX_MAPPINGS {
        return Err(ScaleError::Options(format!(
            "--mappings must be 1 to {MAX_MAPPINGS}"
        )));
    }
    if check::port_of(opts.subscribers, opts.mappings - 1, opts.mappings).is_none() {
        return Err(ScaleError::Options(format!(
            "{} × {} mappings do not fit the ports {}–{}",
            opts.subscribers,
            opts.mappings,
            check::FIRST_PORT,
            check::LAST_PORT
        )));
    }
    if opts.parallel == 0 {
        return Err(ScaleError::Options("--parallel must be at least 1".into()));
    }
    Ok(())
}

impl Scale<'_> {
    fn subscribers(&self) -> std::ops::RangeInclusive<u16> {
        1..=self.opts.subscribers
    }

    fn measure(
        &self,
        progress: &mut dyn Write,
        started: Instant,
        report: &mut ScaleReport,
    ) -> Result<(), ScaleError> {
        let (cgn, cgn_started, iwfs) = self.start_daemons()?;
        report.setup_s = started.elapsed().as_secs_f64();
        writeln!(
            progress,
            "cgn-sim and {} upnp-iwf serving after {:.2} s",
            iwfs.len(),
            report.setup_s
        )?;

        let mut asked = self.add_mappings(report)?;
        writeln!(
            progress,
            "{} of {} mappings granted in {:.2} s ({:.1}/s)",
            report.granted, report.asked, report.mapping_s, report.mapping_rate
        )?;
        check_interrupt(self.interrupted)?;

        // Before the restart: what the CGN and the IWFs hold (this also learns each
        // mapping's NAT1 port from its IWF).
        let (before, _) = self.snapshot(&mut asked, false)?;
        report.at_cgn_before = before.restored;
        writeln!(
            progress,
            "before the restart: {} at the CGN and active in their IWF",
            before.restored
        )?;
        let up = cgn_started.elapsed();
        if up < MIN_CGN_UPTIME {
            std::thread::sleep(MIN_CGN_UPTIME - up);
        }
        check_interrupt(self.interrupted)?;

        self.recover(progress, &mut asked, report)?;
        report.cgn_mem = report::memory(cgn.pid()).unwrap_or_default();
        let mems: Vec<_> = iwfs
            .iter()
            .filter_map(|c| report::memory(c.pid()))
            .collect();
        report.iwf_hwm = report::spread(mems.iter().map(|m| m.hwm_kib));
        report.iwf_rss = report::spread(mems.iter().map(|m| m.rss_kib));
        report.detail = asked;
        Ok(())
    }

    /// cgn-sim, then every CPE's firewall and upnp-iwf; waits until all serve.
    fn start_daemons(&self) -> Result<(LabChild, Instant, Vec<LabChild>), ScaleError> {
        let s = |p: &Path| p.display().to_string();
        let mut argv = cgn_sim_argv(&s(&self.bins.cgn_sim), "tun", &s(&self.sock));
        argv.extend(["--min-lifetime".to_owned(), "30".to_owned()]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cgn = self.lab.spawn(Site::Cgn, &argv)?;
        let cgn_started = Instant::now();
        if !wait_for(START_TIMEOUT, self.interrupted, || self.sock.exists()) {
            check_interrupt(self.interrupted)?;
            return Err(step_err("starting cgn-sim", cgn.log()));
        }
        let fw = self.lab.log_dir().join("routerfw.nft");
        std::fs::write(&fw, ROUTER_FW)?;
        let fw = s(&fw);
        let n = usize::from(self.opts.subscribers);
        let installed = parallel_map(n, self.opts.parallel, self.interrupted, |i| {
            let site = Site::Cpe(sub(i));
            self.lab.exec_ok(site, &["nft", "-f", &fw])
        });
        check_interrupt(self.interrupted)?;
        for r in installed.into_iter().flatten() {
            r?;
        }
        let upnp_iwf = s(&self.bins.upnp_iwf);
        let mut iwfs = Vec::with_capacity(n);
        for k in self.subscribers() {
            let state = s(&self.lab.log_dir().join(format!("iwf-state-{k}")));
            let ctl = s(&self.lab.log_dir().join(format!("iwf-ctl-{k}.sock")));
            let argv = crate::bins::cpe_iwf_argv(&upnp_iwf, &state, &ctl, &[]);
            iwfs.push(self.lab.spawn(Site::Cpe(k), &argv)?);
        }
        let limit = START_TIMEOUT + START_PER_SUBSCRIBER * u32::from(self.opts.subscribers);
        let all_serving = wait_for(limit, self.interrupted, || {
            iwfs.iter().all(|c| c.log().contains("serving UPnP IGD"))
        });
        check_interrupt(self.interrupted)?;
        if !all_serving {
            let late: Vec<String> = iwfs
                .iter()
                .filter(|c| !c.log().contains("serving UPnP IGD"))
                .map(|c| format!("{}:\n{}", c.command(), c.log()))
                .collect();
            return Err(step_err("starting upnp-iwf", late.join("\n")));
        }
        Ok((cgn, cgn_started, iwfs))
    }

    /// Every LAN host maps its M ports with `upnpc -a`; fills the rate figures.
    fn add_mappings(&self, report: &mut ScaleReport) -> Result<Vec<Asked>, ScaleError> {
        let m = self.opts.mappings;
        let started = Instant::now();
        let per_subscriber = parallel_map(
            usize::from(self.opts.subscribers),
            self.opts.parallel,
            self.interrupted,
            |i| {
                let n = sub(i);
                let mut done = Vec::with_capacity(usize::from(m));
                for j in 0..m {
                    if self.interrupted.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(port) = check::port_of(n, j, m) else {
                        break;
                    };
                    done.push(self.add(n, port));
                }
                done
            },
        );
        report.mapping_s = started.elapsed().as_secs_f64();
        check_interrupt(self.interrupted)?;
        let mut asked = Vec::with_capacity(report.asked);
        let mut times = Vec::with_capacity(report.asked);
        for (a, ms) in per_subscriber.into_iter().flatten().flatten() {
            asked.push(a);
            times.push(ms);
        }
        report.granted = asked.iter().filter(|a| a.external.is_some()).count();
        report.mapping_rate = if report.mapping_s > 0.0 {
            report.granted as f64 / report.mapping_s
        } else {
            0.0
        };
        report.add_ms_p50 = report::percentile(&times, 0.5).unwrap_or(0.0);
        report.add_ms_p90 = report::percentile(&times, 0.9).unwrap_or(0.0);
        report.add_ms_max = report::percentile(&times, 1.0).unwrap_or(0.0);
        Ok(asked)
    }

    /// One `upnpc -a` from subscriber `n`'s LAN host for UDP `port`; the mapping and the
    /// call's wall time in ms.
    fn add(&self, n: u16, port: u16) -> (Asked, f64) {
        let p = port.to_string();
        let host = LAN_HOST.to_string();
        let argv = [
            "upnpc",
            "-u",
            IGD_URL,
            "-e",
            DESCRIPTION,
            "-a",
            &host,
            &p,
            &p,
            "UDP",
            LEASE,
        ];
        let t = Instant::now();
        let out = self.lab.exec_timeout(Site::Lan(n), &argv, ADD_TIMEOUT);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let (external, add_error) = match out {
            Ok(o) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                match check::parse_upnpc_external(&text) {
                    Some(e) => (Some(e), None),
                    None => (None, Some(text.trim().to_owned())),
                }
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let asked = Asked {
            subscriber: n,
            wan: cpe_wan(n).unwrap_or(LAN_HOST),
            port,
            external,
            nat1_port: None,
            add_error,
            external_after: None,
            restores: None,
        };
        (asked, ms)
    }

    /// `cgn-sim ctl mappings --json`'s MAP IN entries.
    fn cgn_table(&self) -> Result<Vec<CgnEntry>, ScaleError> {
        let bin = self.bins.cgn_sim.display().to_string();
        let sock = self.sock.display().to_string();
        let argv = [bin.as_str(), "--ctl", &sock, "ctl", "mappings", "--json"];
        let out = self.lab.exec_timeout(Site::Cgn, &argv, QUERY_TIMEOUT)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(step_err(
                "cgn-sim ctl mappings",
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        check::parse_cgn_map_in(&text)
            .map_err(|e| step_err("cgn-sim ctl mappings --json", format!("{e}: {text}")))
    }

    /// Every IWF's upstream table, read from its status page on the LAN (an IWF that does
    /// not answer has no entries).
    fn iwf_tables(&self) -> HashMap<u16, Vec<IwfEntry>> {
        let url = IGD_URL.replace("rootDesc.xml", "status.txt");
        let pages = parallel_map(
            usize::from(self.opts.subscribers),
            self.opts.parallel,
            self.interrupted,
            |i| {
                let argv = [PY, "-c", FETCH, url.as_str()];
                self.lab
                    .exec_timeout(Site::Lan(sub(i)), &argv, QUERY_TIMEOUT)
                    .map(|o| check::parse_iwf_status(&String::from_utf8_lossy(&o.stdout)))
                    .unwrap_or_default()
            },
        );
        pages
            .into_iter()
            .enumerate()
            .map(|(i, p)| (sub(i), p.unwrap_or_default()))
            .collect()
    }

    /// The IWFs' tables, then the CGN's, compared with what was asked.
    fn snapshot(
        &self,
        asked: &mut [Asked],
        need_restore: bool,
    ) -> Result<(Verdict, Vec<CgnEntry>), ScaleError> {
        let iwf = self.iwf_tables();
        let cgn = self.cgn_table()?;
        Ok((check::compare(asked, &cgn, &iwf, need_restore), cgn))
    }

    /// `cgn-sim ctl restart`, then the wait for every mapping to come back.
    fn recover(
        &self,
        progress: &mut dyn Write,
        asked: &mut [Asked],
        report: &mut ScaleReport,
    ) -> Result<(), ScaleError> {
        let bin = self.bins.cgn_sim.display().to_string();
        let sock = self.sock.display().to_string();
        let restart = [bin.as_str(), "--ctl", &sock, "ctl", "restart"];
        let said = self.lab.exec_ok(Site::Cgn, &restart)?;
        let restarted = Instant::now();
        writeln!(progress, "cgn-sim ctl restart: {}", said.trim())?;
        let granted = asked.iter().filter(|a| a.external.is_some()).count();
        let deadline = restarted + self.opts.timeout;
        let mut first = true;
        let mut last_report = Instant::now();
        loop {
            check_interrupt(self.interrupted)?;
            let cgn = self.cgn_table()?;
            let back = check::at_cgn(asked, &cgn);
            if first {
                report.cgn_entries_after_restart = back;
                first = false;
            }
            if back == granted && report.recovery_s.is_none() {
                report.recovery_s = Some(restarted.elapsed().as_secs_f64());
                writeln!(
                    progress,
                    "all {granted} back at the CGN after {:.2} s; checking the IWFs",
                    restarted.elapsed().as_secs_f64()
                )?;
            }
            if report.recovery_s.is_some() {
                let (v, _) = self.snapshot(asked, true)?;
                if v.restored == granted && v.duplicated == 0 {
                    report.iwf_confirmed_s = Some(restarted.elapsed().as_secs_f64());
                    break;
                }
            }
            if Instant::now() >= deadline {
                report.recovery_timed_out = true;
                writeln!(
                    progress,
                    "recovery timed out after {} s ({back} of {granted} back at the CGN)",
                    self.opts.timeout.as_secs()
                )?;
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                writeln!(
                    progress,
                    "  {:.0} s: {back} of {granted} back at the CGN",
                    restarted.elapsed().as_secs_f64()
                )?;
                last_report = Instant::now();
            }
            std::thread::sleep(POLL);
        }
        if !report.recovery_timed_out {
            std::thread::sleep(SETTLE);
        }
        let (v, cgn) = self.snapshot(asked, true)?;
        report.restored = v.restored;
        report.lost = v.lost;
        report.duplicated = v.duplicated;
        report.verdict = v;
        report.cgn_after = cgn;
        Ok(())
    }
}

/// Subscriber number of the `i`-th worker item (0-based → 1-based).
fn sub(i: usize) -> u16 {
    u16::try_from(i + 1).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_cannot_run_are_refused_with_the_reason() {
        let ok = ScaleOptions {
            subscribers: 4,
            mappings: 5,
            parallel: 4,
            timeout: Duration::from_secs(60),
            prefix: None,
        };
        assert!(validate(&ok).is_ok());
        for (s, m, p, what) in [
            (0, 5, 4, "--subscribers"),
            (254, 5, 4, "--subscribers"),
            (4, 0, 4, "--mappings"),
            (4, 1001, 4, "--mappings"),
            (253, 1000, 4, "do not fit"),
            (4, 5, 0, "--parallel"),
        ] {
            let o = ScaleOptions {
                subscribers: s,
                mappings: m,
                parallel: p,
                ..ok.clone()
            };
            let err = validate(&o).expect_err("refused").to_string();
            assert!(err.contains(what), "{s} {m} {p}: {err}");
        }
    }

    #[test]
    fn parallel_map_runs_every_item_once_in_order() {
        let stop = AtomicBool::new(false);
        let out = parallel_map(10, 3, &stop, |i| i * 2);
        assert_eq!(out, (0..10).map(|i| Some(i * 2)).collect::<Vec<_>>());
        stop.store(true, Ordering::SeqCst);
        assert!(parallel_map(5, 2, &stop, |i| i).iter().all(Option::is_none));
    }
}
