//! [`LabBuilder`]: creating the namespaces, links, addresses, routes and sysctls of a [`Lab`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::command::{run_in_ok, run_ok};
use super::error::LabError;
use super::plan::{BRIDGE_PORTS, CGN_BRIDGE, LINKS, MULTICAST_NET, Node};
use super::sweep::{GENERATED_PREFIX, list_namespaces, sweep_stale};
use super::{Lab, namespace_name, netns_locked};

/// Longest accepted lab prefix.
const MAX_PREFIX_LEN: usize = 40;

/// Counter that makes generated prefixes unique within this process.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Checks that `prefix` yields valid namespace and directory names (`<prefix>-<node>`).
pub(super) fn validate_prefix(prefix: &str) -> Result<(), LabError> {
    let reason = if prefix.is_empty() {
        Some("empty")
    } else if prefix.len() > MAX_PREFIX_LEN {
        Some("longer than 40 bytes")
    } else if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Some("only ASCII letters, digits and '-' are allowed")
    } else if prefix.starts_with('-') {
        Some("must not start with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LabError::InvalidPrefix {
            prefix: prefix.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A fresh generated prefix `n444-<pid>-<counter>`, unique within this process and swept as
/// stale once it has exited.
pub(super) fn generated_prefix() -> String {
    format!(
        "{GENERATED_PREFIX}{}-{}",
        std::process::id(),
        LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Configures and builds a [`Lab`].
#[derive(Debug, Clone, Default)]
pub struct LabBuilder {
    prefix: Option<String>,
    second_subscriber: bool,
}

impl LabBuilder {
    /// One subscriber (`lan`, `cpe`), the `cgn` and `inet`, with a generated unique prefix.
    pub fn new() -> LabBuilder {
        LabBuilder::default()
    }

    /// Also build the second subscriber (`cpe2`, `lan2`) for subscriber-to-subscriber tests.
    pub fn second_subscriber(mut self, yes: bool) -> LabBuilder {
        self.second_subscriber = yes;
        self
    }

    /// Use a fixed prefix instead of `n444-<pid>-<counter>` (e.g. [`UP_PREFIX`](super::UP_PREFIX)). Labs with a
    /// fixed prefix are not swept as stale; [`Lab::remove_by_prefix`] removes them.
    pub fn prefix(mut self, prefix: impl Into<String>) -> LabBuilder {
        self.prefix = Some(prefix.into());
        self
    }

    /// Builds the lab. Sweeps stale labs of dead processes first. Fails with
    /// [`LabError::AlreadyExists`] if one of its namespaces exists, and otherwise with the first
    /// command that failed; whatever was created by then is removed again.
    pub fn build(self) -> Result<Lab, LabError> {
        let prefix = match self.prefix {
            Some(prefix) => {
                validate_prefix(&prefix)?;
                prefix
            }
            None => generated_prefix(),
        };
        // A sweep failure (say, a namespace busy) must not stop this lab; a missing `ip`
        // will surface below with a precise error.
        let _ = sweep_stale();

        let nodes: Vec<Node> = Node::ALL
            .into_iter()
            .filter(|n| self.second_subscriber || !n.is_second_subscriber())
            .collect();
        let existing = list_namespaces()?;
        for node in &nodes {
            let namespace = namespace_name(&prefix, *node);
            if existing.contains(&namespace) {
                return Err(LabError::AlreadyExists { prefix, namespace });
            }
        }
        let log_dir = std::env::temp_dir().join(&prefix);
        let mut lab = Lab {
            prefix,
            nodes: Vec::new(),
            keep: false,
            children: Arc::new(Mutex::new(HashMap::new())),
            next_child: AtomicU64::new(0),
            log_dir,
        };
        // From here on, an error drops `lab`, which deletes the namespaces created so far.
        for node in nodes {
            let ns = lab.ns(node);
            netns_locked(|| run_ok(&["ip", "netns", "add", &ns]))?;
            lab.nodes.push(node);
            run_ok(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            let mut sysctls = vec![
                "net.ipv4.conf.all.rp_filter=0".to_owned(),
                "net.ipv4.conf.default.rp_filter=0".to_owned(),
            ];
            if node.forwards() {
                sysctls.push("net.ipv4.ip_forward=1".to_owned());
            }
            lab.sysctl(node, &sysctls)?;
        }
        lab.wire()?;
        Ok(lab)
    }
}

impl Lab {
    fn sysctl(&self, node: Node, settings: &[String]) -> Result<(), LabError> {
        let mut argv = vec!["sysctl", "-q", "-w"];
        argv.extend(settings.iter().map(String::as_str));
        run_in_ok(&self.ns(node), &argv).map(drop)
    }

    /// Creates the bridge, veths, addresses and routes between the namespaces already added.
    fn wire(&self) -> Result<(), LabError> {
        let cgn = self.ns(Node::Cgn);
        run_ok(&[
            "ip",
            "-n",
            &cgn,
            "link",
            "add",
            CGN_BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        for link in LINKS
            .iter()
            .filter(|l| self.contains(l.a.0) && self.contains(l.b.0))
        {
            let (a_ns, b_ns) = (self.ns(link.a.0), self.ns(link.b.0));
            run_ok(&[
                "ip", "-n", &a_ns, "link", "add", link.a.1, "type", "veth", "peer", "name",
                link.b.1, "netns", &b_ns,
            ])?;
        }
        for (port, owner) in BRIDGE_PORTS {
            if self.contains(owner) {
                run_ok(&["ip", "-n", &cgn, "link", "set", port, "master", CGN_BRIDGE])?;
                run_ok(&["ip", "-n", &cgn, "link", "set", port, "up"])?;
            }
        }
        for &node in &self.nodes {
            let ns = self.ns(node);
            let mut per_iface = Vec::new();
            for iface in node.interfaces() {
                let cidr = format!("{}/{}", iface.addr, iface.prefix_len);
                run_ok(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", iface.name])?;
                run_ok(&["ip", "-n", &ns, "link", "set", iface.name, "up"])?;
                per_iface.push(format!("net.ipv4.conf.{}.rp_filter=0", iface.name));
            }
            self.sysctl(node, &per_iface)?;
            if let Some(gw) = node.gateway() {
                let gw = gw.to_string();
                run_ok(&["ip", "-n", &ns, "route", "add", "default", "via", &gw])?;
            }
            if let Some(dev) = node.multicast_interface() {
                run_ok(&["ip", "-n", &ns, "route", "add", MULTICAST_NET, "dev", dev])?;
            }
            for (dst, via) in node.static_routes() {
                let via = via.to_string();
                run_ok(&["ip", "-n", &ns, "route", "add", dst, "via", &via])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_that_would_break_namespace_names_are_rejected() {
        assert!(validate_prefix("n444lab").is_ok());
        assert!(validate_prefix("n444-1-2").is_ok());
        for bad in ["", "a/b", "a b", "-x", &"x".repeat(41)] {
            assert!(
                matches!(validate_prefix(bad), Err(LabError::InvalidPrefix { .. })),
                "{bad:?}"
            );
        }
    }
}
