//! Knowing when the router's other tables changed, without listing them on every install.
//!
//! The conflict check of an install ([`super::conflict`]) reads every other table with a nat
//! chain. Listing them afresh for each install costs two or more `nft` processes per
//! AddPortMapping; instead the backend keeps one `nft -j monitor ruleset` running, which the
//! kernel tells of every ruleset change (netlink multicast), and re-lists only when something
//! outside our own rules changed since the last listing. [`Monitor::generation`] counts those
//! changes; a listing taken at generation `g` is still good while the counter is `g`.
//!
//! What counts as a change ([`invalidates`]): any event for a table other than ours, the
//! deletion of our table or of one of its chains (the install must then rebuild), and any line
//! that is not understood. Adding or deleting our own rules does not.
//!
//! The counter is trusted only once the monitor has shown that it hears the kernel: the first
//! event it reads for our own table (the reset that follows its start rebuilds our table; if
//! the monitor subscribed too late for that, the next install's rules do it). A listing taken
//! before that is never reused. Until then, and after the monitor stops, every install lists
//! the other tables as before. The window left is the time between a change in another table
//! and the monitor reading its event: microseconds to a few milliseconds, against the
//! listing's own window of the same size between listing and adding.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use serde_json::Value;

use super::command::Runner;

/// State the reader thread shares with the backend.
#[derive(Debug, Default)]
struct Shared {
    generation: AtomicU64,
    synced: AtomicBool,
    alive: AtomicBool,
}

/// A running `nft -j monitor ruleset`.
#[derive(Debug)]
pub(crate) struct Monitor {
    child: Child,
    /// Held open while the monitor should run; closing it stops nft.
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts the monitor (inside the runner's namespace, if any). `None` when it cannot be
    /// started (logged): installs then list the other tables every time.
    pub fn start(runner: &Runner, nft: &std::path::Path, own_table: &str) -> Option<Monitor> {
        // nft runs under a small shell that kills it when our end of its standard input
        // closes (this daemon exited, even by SIGKILL) or when the shell gets SIGHUP, SIGINT
        // or SIGTERM (a Ctrl-C to the process group: the background nft itself ignores
        // SIGINT, as a non-interactive shell's background jobs do). No monitor is left
        // behind. The shell keeps no copy of the output pipe, so if nft ends the reader sees
        // end of file.
        let mut cmd = runner.command(std::path::Path::new("sh"));
        cmd.args([
            "-c",
            "exec 3>&1 >/dev/null; \"$0\" -j monitor ruleset >&3 3>&- & p=$!; exec 3>&-; \
             trap 'kill $p; exit 0' HUP INT TERM; read _; kill $p",
        ])
        .arg(nft)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start `nft monitor`; every NAT1 install lists the other tables");
                return None;
            }
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take()?;
        let shared = Arc::new(Shared::default());
        shared.alive.store(true, Ordering::SeqCst);
        let own = own_table.to_owned();
        let s = shared.clone();
        let reader = std::thread::Builder::new()
            .name("nft-monitor".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match classify(&line, &own) {
                        Event::Own | Event::OwnTouched => {
                            s.synced.store(true, Ordering::SeqCst);
                        }
                        Event::Changed => {
                            s.generation.fetch_add(1, Ordering::SeqCst);
                        }
                        Event::OwnStructure => {
                            s.synced.store(true, Ordering::SeqCst);
                            s.generation.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                s.alive.store(false, Ordering::SeqCst);
                tracing::warn!("`nft monitor` ended; every NAT1 install lists the other tables");
            })
            .ok();
        Some(Monitor {
            child,
            stdin,
            shared,
            reader,
        })
    }

    /// The change counter, when it can be trusted (the monitor hears the kernel and runs).
    pub fn generation(&self) -> Option<u64> {
        let s = &self.shared;
        (s.alive.load(Ordering::SeqCst) && s.synced.load(Ordering::SeqCst))
            .then(|| s.generation.load(Ordering::SeqCst))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // End of input: the shell kills nft and exits; then make sure of both.
        drop(self.stdin.take());
        let _ = self.child.wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// What one monitor line means for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A rule of ours added or deleted: nothing to re-list (and the monitor hears the kernel).
    Own,
    /// Our table or a chain of it added: nothing to re-list, and the monitor hears the kernel.
    OwnTouched,
    /// Our table or a chain of it deleted: re-list (the install must rebuild).
    OwnStructure,
    /// Anything else: re-list.
    Changed,
}

fn classify(line: &str, own_table: &str) -> Event {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Event::Changed;
    };
    let Some((verb, body)) = v.as_object().and_then(|o| o.iter().next()) else {
        return Event::Changed;
    };
    let Some((kind, obj)) = body.as_object().and_then(|o| o.iter().next()) else {
        return Event::Changed;
    };
    let (family, table) = if kind == "table" {
        (obj.get("family"), obj.get("name"))
    } else {
        (obj.get("family"), obj.get("table"))
    };
    let ours = family.and_then(Value::as_str) == Some("ip")
        && table.and_then(Value::as_str) == Some(own_table);
    match (ours, verb.as_str(), kind.as_str()) {
        (false, _, _) => Event::Changed,
        (true, _, "rule") => Event::Own,
        (true, "delete", _) => Event::OwnStructure,
        (true, _, "table" | "chain") => Event::OwnTouched,
        (true, _, _) => Event::Changed,
    }
}

/// Whether a monitor line means the other tables must be listed again (see the module doc).
#[cfg(test)]
fn invalidates(line: &str, own_table: &str) -> bool {
    matches!(
        classify(line, own_table),
        Event::Changed | Event::OwnStructure
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lines are what nft 1.0.6 prints (`nft -j monitor ruleset`).
    #[test]
    fn only_changes_outside_our_rules_invalidate() {
        let own = "upnp_iwf";
        let fw4_rule = r#"{"add": {"rule": {"family": "inet", "table": "fw4", "chain": "dstnat", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}}, {"dnat": {"family": "ip", "addr": "192.168.1.5"}}]}}}"#;
        assert!(invalidates(fw4_rule, own));
        assert!(invalidates(
            r#"{"add": {"table": {"family": "inet", "name": "fw4", "handle": 1}}}"#,
            own
        ));
        assert!(invalidates(
            r#"{"delete": {"table": {"family": "inet", "name": "fw4", "handle": 1}}}"#,
            own
        ));
        // Same name, other family: not ours.
        assert!(invalidates(
            r#"{"add": {"rule": {"family": "inet", "table": "upnp_iwf", "chain": "x", "handle": 3}}}"#,
            own
        ));
        // Our own rules come and go with every mapping.
        assert!(!invalidates(
            r#"{"add": {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "prerouting", "handle": 7}}}"#,
            own
        ));
        assert!(!invalidates(
            r#"{"delete": {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "prerouting", "handle": 7}}}"#,
            own
        ));
        assert!(!invalidates(
            r#"{"add": {"table": {"family": "ip", "name": "upnp_iwf", "handle": 2}}}"#,
            own
        ));
        // Our table or chain deleted behind our back: the install must see it.
        assert!(invalidates(
            r#"{"delete": {"chain": {"family": "ip", "table": "upnp_iwf", "name": "prerouting", "handle": 1}}}"#,
            own
        ));
        // Anything not understood counts as a change.
        assert!(invalidates("# new generation 42 by process 7 (nft)", own));
        assert!(invalidates("{}", own));
        assert!(invalidates(r#"{"add": 3}"#, own));
    }
}
