//! The NAT444 network-namespace lab (design.md §4).
//!
//! [`LabBuilder`] creates one network namespace per [`Node`] (`lan`, `cpe`, `cgn`, `inet`, and
//! optionally a second subscriber `cpe2`/`lan2`), joins them with veth pairs, addresses them as
//! in [`plan`], and sets up routes and sysctls. The result is a [`Lab`]; dropping it (also
//! while a test panics) kills every process it spawned and deletes every namespace. Nothing
//! is translated yet: traffic crosses the lab by plain kernel routing (later, `cgn-sim`'s TUN
//! dataplane and the CPE's nftables NAT go in).
//!
//! ```text
//!  lan  [eth0 192.168.0.10]──[lan0 192.168.0.1] cpe  [wan0 100.64.0.2]──sub1─┐
//!                                                                          cgn: bridge inside0
//!  lan2 [eth0 192.168.0.10]──[lan0 192.168.0.1] cpe2 [wan0 100.64.0.3]──sub2─┘      100.64.0.1
//!
//!  cgn [outside0 203.0.113.1]──[eth0 203.0.113.50] inet   (198.51.100.0/28 via 203.0.113.1)
//! ```
//! (`lan2`/`cpe2`/`sub2` exist only with [`LabBuilder::second_subscriber`].)
//!
//! For many subscribers (`nat444-lab scale`), [`MultiLab`] builds `cpe1`/`lan1` …
//! `cpeN`/`lanN` on the same bridge from the same plan, prefixes, sweep and cleanup.
//!
//! Interface names are fixed and meaningful inside each namespace (every veth is created
//! straight into its namespaces, so nothing ever appears in the root namespace). Namespace
//! names carry a prefix, `n444-<pid>-<counter>` by default, so tests run in parallel; a
//! build first sweeps namespaces whose `<pid>` is dead (see [`sweep_stale`]).
//!
//! # Why this shells out to `ip`
//! The lab is test scaffolding, not product code: the commands it runs are exactly what a
//! person debugging a failed test types (`ip netns exec n444-…-cgn ip route`), and the errors
//! it reports are iproute2's own messages, which users of the lab already know. A netlink crate
//! would add a large dependency and a second vocabulary for no gain in the tests. The daemons'
//! own dataplanes (TUN, nftables) are a different matter and use crates (design.md §3).
//!
//! # Privileges
//! Building a lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN). Every namespace test starts
//! with [`require_privileges!`](crate::require_privileges), which skips the test with a
//! `SKIPPED:` line when unprivileged, or fails it when `NAT444_REQUIRE_PRIVILEGED=1`.
//!
//! ```no_run
//! use nat444_tests::lab::{LabBuilder, Node, plan};
//!
//! # fn main() -> Result<(), nat444_tests::lab::LabError> {
//! let lab = LabBuilder::new().second_subscriber(true).build()?;
//! let ping = lab.ping(Node::Lan, plan::CPE_LAN)?;
//! assert!(ping.replied);
//! let routes = lab.exec_ok(Node::Cgn, &["ip", "route"])?;
//! println!("{routes}");
//! # Ok(()) }
//! ```

mod builder;
mod child;
mod command;
mod error;
pub mod multi;
pub mod plan;
mod privilege;
mod sweep;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub use builder::LabBuilder;
pub use child::LabChild;
pub use command::DEFAULT_TIMEOUT;
pub use error::LabError;
pub use multi::{MultiLab, MultiLabBuilder, Site};
pub use plan::{Iface, Node};
pub use privilege::{
    Privileged, REQUIRE_PRIVILEGED_ENV, check_privileges, privileged_required, require_found,
    require_privileges, require_tool,
};
pub use sweep::{GENERATED_PREFIX, list_namespaces, sweep_stale};

use builder::validate_prefix;
use command::{run, run_in_ok, run_ok};

/// Fixed prefix of the long-lived lab that `nat444-lab up` builds and `nat444-lab down`
/// removes (namespaces `n444lab-lan`, `n444lab-cpe`, …).
pub const UP_PREFIX: &str = "n444lab";

/// How many times [`Lab::ping`] tries before it reports no reply.
pub const PING_ATTEMPTS: u32 = 3;

/// Serialises `ip netns add/delete` within this process: the first `add` on a machine sets up
/// the shared `/run/netns` mount, and concurrent first adds can stack that mount.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

fn netns_locked<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    f()
}

/// The command line of `cgn-sim` as the CGN of the lab plan: `bin` with the given
/// `--dataplane` (`tun` or `none`), the CGN's inside and outside addresses, the pool
/// 198.51.100.0/28 and its control socket at `ctl`. Callers append their own flags.
pub fn cgn_sim_argv(bin: &str, dataplane: &str, ctl: &str) -> Vec<String> {
    [
        bin,
        "--dataplane",
        dataplane,
        "--inside",
        "100.64.0.1",
        "--outside",
        "203.0.113.1",
        "--pool",
        "198.51.100.0/28",
        "--ctl",
        ctl,
    ]
    .map(String::from)
    .to_vec()
}

/// Namespace name of `node` in the lab with `prefix`.
pub fn namespace_name(prefix: &str, node: Node) -> String {
    format!("{prefix}-{}", node.name())
}

/// A built lab. Dropping it kills its children and deletes its namespaces, unless
/// [`Lab::keep`] was called.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    nodes: Vec<Node>,
    keep: bool,
    children: child::Registry,
    next_child: AtomicU64,
    log_dir: PathBuf,
}

/// Result of [`Lab::ping`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    /// Node the ping ran in.
    pub from: Node,
    /// Address pinged.
    pub to: Ipv4Addr,
    /// Whether an echo reply came back.
    pub replied: bool,
    /// Round-trip time of the reply, in milliseconds, as ping printed it.
    pub rtt_ms: Option<f64>,
    /// Attempts made (at most [`PING_ATTEMPTS`]).
    pub attempts: u32,
    /// Output of the last attempt.
    pub output: String,
}

/// The `time=0.042 ms` value of a ping reply line.
fn parse_rtt_ms(output: &str) -> Option<f64> {
    let start = output.find("time=")? + "time=".len();
    let rest = &output[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Lab {
    /// Same as [`LabBuilder::new`].
    pub fn builder() -> LabBuilder {
        LabBuilder::new()
    }

    /// Prefix of every namespace name of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Nodes this lab has, in build order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Whether the lab has `node` (the second subscriber is optional).
    pub fn contains(&self, node: Node) -> bool {
        self.nodes.contains(&node)
    }

    fn ns(&self, node: Node) -> String {
        namespace_name(&self.prefix, node)
    }

    /// Namespace name of `node`, for `ip netns exec <name> …`.
    pub fn namespace(&self, node: Node) -> Result<String, LabError> {
        if self.contains(node) {
            Ok(self.ns(node))
        } else {
            Err(LabError::NodeAbsent { node })
        }
    }

    /// Every namespace name of this lab.
    pub fn namespaces(&self) -> Vec<String> {
        self.nodes.iter().map(|n| self.ns(*n)).collect()
    }

    /// Addressed interfaces of `node`.
    pub fn interfaces(&self, node: Node) -> Result<&'static [Iface], LabError> {
        self.namespace(node)?;
        Ok(node.interfaces())
    }

    /// Main address of `node` (see [`Node::address`]).
    pub fn address(&self, node: Node) -> Result<Ipv4Addr, LabError> {
        self.namespace(node)?;
        Ok(node.address())
    }

    /// Directory holding the logs of spawned children (created on first spawn).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Runs `argv` in `node`'s namespace (`ip netns exec`), waits at most [`DEFAULT_TIMEOUT`],
    /// and returns its output whatever the exit status.
    pub fn exec(&self, node: Node, argv: &[&str]) -> Result<Output, LabError> {
        self.exec_timeout(node, argv, DEFAULT_TIMEOUT)
    }

    /// [`Lab::exec`] with an explicit time limit; the command is killed when it runs out.
    pub fn exec_timeout(
        &self,
        node: Node,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<Output, LabError> {
        let ns = self.namespace(node)?;
        run(Some(&ns), argv, timeout)
    }

    /// Runs `argv` in `node`'s namespace and returns its standard output, or
    /// [`LabError::Failed`] with its standard error if it exits unsuccessfully.
    pub fn exec_ok(&self, node: Node, argv: &[&str]) -> Result<String, LabError> {
        let ns = self.namespace(node)?;
        let out = run_in_ok(&ns, argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running `argv` in `node`'s namespace. The returned handle (and the lab,
    /// whichever is dropped first) kills it by pid and reaps it.
    pub fn spawn(&self, node: Node, argv: &[&str]) -> Result<LabChild, LabError> {
        let ns = self.namespace(node)?;
        std::fs::create_dir_all(&self.log_dir).map_err(|source| LabError::Io {
            action: "creating log directory",
            path: self.log_dir.clone(),
            source,
        })?;
        let id = self.next_child.fetch_add(1, Ordering::Relaxed);
        let program = argv
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = self
            .log_dir
            .join(format!("{}-{id}-{program}.log", node.name()));
        LabChild::spawn(&self.children, id, node, &ns, argv, log)
    }

    /// Pings `to` from `node` (`ping -n -c 1 -W 1`), up to [`PING_ATTEMPTS`] times until a
    /// reply arrives. A missing reply is `replied: false`, not an error.
    pub fn ping(&self, node: Node, to: Ipv4Addr) -> Result<Ping, LabError> {
        let target = to.to_string();
        let argv = ["ping", "-n", "-c", "1", "-W", "1", target.as_str()];
        let mut last = String::new();
        for attempt in 1..=PING_ATTEMPTS {
            let out = self.exec_timeout(node, &argv, Duration::from_secs(5))?;
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                return Ok(Ping {
                    from: node,
                    to,
                    replied: true,
                    rtt_ms: parse_rtt_ms(&last),
                    attempts: attempt,
                    output: last,
                });
            }
            // ping exits 1 for "no reply"; anything else (2, or 255 from `ip netns exec` when
            // ping is missing) is a broken command, not a verdict about the network.
            if out.status.code() != Some(1) {
                return Err(LabError::Failed {
                    command: argv.join(" "),
                    namespace: Some(self.ns(node)),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            last.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        Ok(Ping {
            from: node,
            to,
            replied: false,
            rtt_ms: None,
            attempts: PING_ATTEMPTS,
            output: last,
        })
    }

    /// A human description: each namespace, its addresses and routes in words, and how to
    /// enter it.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let w = self
            .namespaces()
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(9);
        let _ = writeln!(
            s,
            "{:<w$}  {:<9} {:<18} role",
            "namespace", "interface", "address"
        );
        for &node in &self.nodes {
            let ns = self.ns(node);
            for iface in node.interfaces() {
                let cidr = format!("{}/{}", iface.addr, iface.prefix_len);
                let _ = writeln!(s, "{ns:<w$}  {:<9} {cidr:<18} {}", iface.name, iface.role);
            }
            if let Some(gw) = node.gateway() {
                let _ = writeln!(
                    s,
                    "{ns:<w$}  {:<9} {:<18} default gateway",
                    "",
                    gw.to_string()
                );
            }
        }
        let _ = writeln!(
            s,
            "\nPool 198.51.100.0/28 is routed to the CGN (203.0.113.1) by inet."
        );
        let _ = writeln!(s, "Enter a namespace with, e.g.:");
        let lan = self.ns(Node::Lan);
        let cgn = self.ns(Node::Cgn);
        let _ = writeln!(s, "  ip netns exec {lan} ping -c1 192.168.0.1");
        let _ = writeln!(s, "  ip netns exec {cgn} ip -br addr");
        let _ = writeln!(s, "  ip netns exec {cgn} bash     # a shell inside the CGN");
        s
    }

    /// Leaves the lab up: dropping it then deletes nothing. Returns the prefix, for
    /// [`Lab::remove_by_prefix`]. Refused, handing the lab back, while spawned children run,
    /// since nothing would reap them.
    pub fn keep(mut self) -> Result<String, Lab> {
        if !child::lock(&self.children).is_empty() {
            return Err(self);
        }
        self.keep = true;
        Ok(self.prefix.clone())
    }

    /// Deletes the namespaces of a kept lab (every [`Node`] with that prefix that exists) and
    /// returns their names. Processes still running inside (started by hand) are not killed:
    /// they keep their namespace alive until they exit.
    pub fn remove_by_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
        validate_prefix(prefix)?;
        let existing = list_namespaces()?;
        let mut removed = Vec::new();
        for node in Node::ALL.into_iter().rev() {
            let ns = namespace_name(prefix, node);
            if existing.contains(&ns) {
                netns_locked(|| run_ok(&["ip", "netns", "delete", &ns]))?;
                removed.push(ns);
            }
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(prefix));
        Ok(removed)
    }

    /// Pids of processes still running in the namespaces of the lab with `prefix`
    /// (`ip netns pids`), per namespace; for a warning before [`Lab::remove_by_prefix`].
    pub fn running_pids(prefix: &str) -> Result<Vec<(String, Vec<u32>)>, LabError> {
        let existing = list_namespaces()?;
        let mut found = Vec::new();
        for node in Node::ALL {
            let ns = namespace_name(prefix, node);
            if !existing.contains(&ns) {
                continue;
            }
            let out = run_ok(&["ip", "netns", "pids", &ns])?;
            let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if !pids.is_empty() {
                found.push((ns, pids));
            }
        }
        Ok(found)
    }

    fn teardown(&mut self) {
        child::kill_all(&self.children);
        let existing = list_namespaces().ok();
        for node in self.nodes.iter().rev() {
            let ns = namespace_name(&self.prefix, *node);
            if existing.as_ref().is_some_and(|list| !list.contains(&ns)) {
                continue;
            }
            if let Err(e) = netns_locked(|| run_ok(&["ip", "netns", "delete", &ns])) {
                eprintln!("nat444 lab teardown: {e}");
            }
        }
        if self.log_dir.exists() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rtt_is_read_from_a_ping_reply_line() {
        let out = "64 bytes from 192.168.0.1: icmp_seq=1 ttl=64 time=0.052 ms\n";
        assert_eq!(parse_rtt_ms(out), Some(0.052));
        assert_eq!(parse_rtt_ms("1 packets transmitted, 0 received"), None);
    }

    #[test]
    fn namespace_names_are_prefix_dash_node() {
        assert_eq!(namespace_name("n444lab", Node::Cpe2), "n444lab-cpe2");
    }
}
