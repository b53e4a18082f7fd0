//! [`MultiLab`]: the lab of design.md §4 with any number of subscribers behind the one CGN,
//! for `nat444-lab scale`.
//!
//! Subscriber `n` (1-based) has its own CPE namespace `<prefix>-cpe<n>` (LAN `192.168.0.1`,
//! WAN `100.64.0.<1+n>`) and LAN host `<prefix>-lan<n>` (`192.168.0.10`): every home uses the
//! same private plan, as real homes do. Every CPE's `wan0` is joined to the CGN's bridge
//! [`CGN_BRIDGE`] through its port `sub<n>`; the `cgn` and `inet` namespaces are those of
//! [`Node::Cgn`] and [`Node::Inet`].
//!
//! ```text
//!  lan1 [eth0 192.168.0.10]──[lan0 192.168.0.1] cpe1 [wan0 100.64.0.2]──sub1─┐
//!  lan2 [eth0 192.168.0.10]──[lan0 192.168.0.1] cpe2 [wan0 100.64.0.3]──sub2─┤ cgn: bridge inside0
//!   …                                                                       …│      100.64.0.1
//!  lanN [eth0 192.168.0.10]──[lan0 192.168.0.1] cpeN [wan0 100.64.0.N+1]─subN─┘
//!
//!  cgn [outside0 203.0.113.1]──[eth0 203.0.113.50] inet   (198.51.100.0/28 via 203.0.113.1)
//! ```
//!
//! It is built from the same pieces as [`Lab`](super::Lab): the addresses of [`Node`]'s plan,
//! generated prefixes `n444-<pid>-<counter>` that [`sweep_stale`] removes once their process is
//! gone, the shared `ip netns add` lock, and the child registry that kills every spawned
//! process by pid. Dropping a `MultiLab` (also while unwinding) kills its children and
//! deletes its namespaces and log directory. Each namespace is wired with one
//! `ip -n NS -batch FILE`, so a 60-subscriber lab takes seconds, not minutes.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::builder::{generated_prefix, validate_prefix};
use super::child::{self, LabChild};
use super::command::{DEFAULT_TIMEOUT, run, run_in_ok, run_ok};
use super::error::LabError;
use super::netns_locked;
use super::plan::{CGN_BRIDGE, CGN_INSIDE, MULTICAST_NET, Node};
use super::sweep::{list_namespaces, sweep_stale};

/// Most subscribers a [`MultiLab`] can have: their WAN addresses `100.64.0.2` …
/// `100.64.0.254` fill the CGN's inside `/24`.
pub const MAX_SUBSCRIBERS: u16 = 253;

/// One namespace of a [`MultiLab`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// The carrier NAT (as [`Node::Cgn`]).
    Cgn,
    /// The Internet peer (as [`Node::Inet`]).
    Inet,
    /// Subscriber `n`'s home router (1-based).
    Cpe(u16),
    /// Subscriber `n`'s LAN host (1-based).
    Lan(u16),
}

impl Site {
    /// The namespace suffix: `cgn`, `inet`, `cpe<n>`, `lan<n>`.
    pub fn name(self) -> String {
        match self {
            Site::Cgn => "cgn".to_owned(),
            Site::Inet => "inet".to_owned(),
            Site::Cpe(n) => format!("cpe{n}"),
            Site::Lan(n) => format!("lan{n}"),
        }
    }

    /// The [`Node`] of the two-subscriber plan this site plays: its interfaces, gateway,
    /// routes and sysctls are that node's (a CPE's WAN address aside, see [`cpe_wan`]).
    pub fn role(self) -> Node {
        match self {
            Site::Cgn => Node::Cgn,
            Site::Inet => Node::Inet,
            Site::Cpe(_) => Node::Cpe,
            Site::Lan(_) => Node::Lan,
        }
    }

    /// The subscriber this site belongs to, if any.
    pub fn subscriber(self) -> Option<u16> {
        match self {
            Site::Cpe(n) | Site::Lan(n) => Some(n),
            Site::Cgn | Site::Inet => None,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// WAN address of subscriber `n`'s CPE, `100.64.0.<1+n>`; `None` outside
/// `1..=`[`MAX_SUBSCRIBERS`].
pub fn cpe_wan(n: u16) -> Option<Ipv4Addr> {
    if n == 0 || n > MAX_SUBSCRIBERS {
        return None;
    }
    let last = u8::try_from(n + 1).ok()?;
    let [a, b, c, _] = CGN_INSIDE.octets();
    Some(Ipv4Addr::new(a, b, c, last))
}

/// Name of subscriber `n`'s port on the CGN's bridge (`sub<n>`, at most 6 bytes).
pub fn bridge_port(n: u16) -> String {
    format!("sub{n}")
}

/// Configures and builds a [`MultiLab`].
#[derive(Debug, Clone)]
pub struct MultiLabBuilder {
    subscribers: u16,
    prefix: Option<String>,
}

impl MultiLabBuilder {
    /// `subscribers` subscribers (1 to [`MAX_SUBSCRIBERS`]) with a generated unique prefix.
    pub fn new(subscribers: u16) -> MultiLabBuilder {
        MultiLabBuilder {
            subscribers,
            prefix: None,
        }
    }

    /// Use a fixed prefix instead of `n444-<pid>-<counter>`. A prefix of the generated shape
    /// `n444-<pid>-…` is swept as stale once process `<pid>` is gone.
    pub fn prefix(mut self, prefix: impl Into<String>) -> MultiLabBuilder {
        self.prefix = Some(prefix.into());
        self
    }

    /// Builds the lab. Sweeps stale labs of dead processes first. Fails with
    /// [`LabError::TooManySubscribers`] for 0 or more than [`MAX_SUBSCRIBERS`], with
    /// [`LabError::AlreadyExists`] if one of its namespaces exists, and otherwise with the
    /// first command that failed; whatever was created by then is removed again.
    pub fn build(self) -> Result<MultiLab, LabError> {
        if self.subscribers == 0 || self.subscribers > MAX_SUBSCRIBERS {
            return Err(LabError::TooManySubscribers {
                asked: self.subscribers,
                max: MAX_SUBSCRIBERS,
            });
        }
        let prefix = match self.prefix {
            Some(prefix) => {
                validate_prefix(&prefix)?;
                prefix
            }
            None => generated_prefix(),
        };
        let _ = sweep_stale();
        let mut sites = vec![Site::Cgn, Site::Inet];
        for n in 1..=self.subscribers {
            sites.extend([Site::Lan(n), Site::Cpe(n)]);
        }
        let existing = list_namespaces()?;
        for site in &sites {
            let namespace = format!("{prefix}-{site}");
            if existing.contains(&namespace) {
                return Err(LabError::AlreadyExists { prefix, namespace });
            }
        }
        let log_dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&log_dir).map_err(|source| LabError::Io {
            action: "creating log directory",
            path: log_dir.clone(),
            source,
        })?;
        let mut lab = MultiLab {
            prefix,
            subscribers: self.subscribers,
            created: Vec::new(),
            children: Arc::new(Mutex::new(HashMap::new())),
            next_child: AtomicU64::new(0),
            log_dir,
        };
        // From here on, an error drops `lab`, which deletes the namespaces created so far.
        for site in sites {
            let ns = lab.ns(site);
            netns_locked(|| run_ok(&["ip", "netns", "add", &ns]))?;
            lab.created.push(site);
        }
        lab.wire()?;
        Ok(lab)
    }
}

/// A built many-subscriber lab. Dropping it kills its children and deletes its namespaces.
#[derive(Debug)]
pub struct MultiLab {
    prefix: String,
    subscribers: u16,
    /// Namespaces created, in creation order (deleted in reverse).
    created: Vec<Site>,
    children: child::Registry,
    next_child: AtomicU64,
    log_dir: PathBuf,
}

impl MultiLab {
    /// Prefix of every namespace name of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Number of subscribers (`cpe1`/`lan1` … `cpeN`/`lanN`).
    pub fn subscribers(&self) -> u16 {
        self.subscribers
    }

    /// Every site of the lab, in build order.
    pub fn sites(&self) -> &[Site] {
        &self.created
    }

    fn ns(&self, site: Site) -> String {
        format!("{}-{site}", self.prefix)
    }

    /// Whether the lab has `site`.
    pub fn contains(&self, site: Site) -> bool {
        self.created.contains(&site)
    }

    /// Namespace name of `site`, for `ip netns exec <name> …`.
    pub fn namespace(&self, site: Site) -> Result<String, LabError> {
        if self.contains(site) {
            Ok(self.ns(site))
        } else {
            Err(LabError::SiteAbsent {
                site: site.name(),
                subscribers: self.subscribers,
            })
        }
    }

    /// Every namespace name of this lab.
    pub fn namespaces(&self) -> Vec<String> {
        self.created.iter().map(|s| self.ns(*s)).collect()
    }

    /// Directory holding the lab's logs and files (removed with the lab).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Runs `argv` in `site`'s namespace, killing it after `timeout`; its output whatever
    /// the exit status.
    pub fn exec_timeout(
        &self,
        site: Site,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<Output, LabError> {
        let ns = self.namespace(site)?;
        run(Some(&ns), argv, timeout)
    }

    /// Runs `argv` in `site`'s namespace and returns its standard output, or
    /// [`LabError::Failed`] with its standard error if it exits unsuccessfully.
    pub fn exec_ok(&self, site: Site, argv: &[&str]) -> Result<String, LabError> {
        let ns = self.namespace(site)?;
        let out = run_in_ok(&ns, argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running `argv` in `site`'s namespace, its output going to
    /// `<log_dir>/<site>-<id>-<program>.log`. The handle (and the lab, whichever is dropped
    /// first) kills it by pid and reaps it; [`LabChild::node`] is the site's [`Site::role`].
    pub fn spawn(&self, site: Site, argv: &[&str]) -> Result<LabChild, LabError> {
        let ns = self.namespace(site)?;
        let id = self.next_child.fetch_add(1, Ordering::Relaxed);
        let program = argv
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = self.log_dir.join(format!("{site}-{id}-{program}.log"));
        LabChild::spawn(&self.children, id, site.role(), &ns, argv, log)
    }

    /// The `ip` batch that wires `site` (run with `ip -n NS -batch`), after every namespace
    /// exists: veths it owns, addresses, links up, routes.
    fn batch(&self, site: Site) -> String {
        let mut b = String::from("link set lo up\n");
        let node = site.role();
        match site {
            Site::Cgn => {
                let _ = writeln!(
                    b,
                    "link add {CGN_BRIDGE} type bridge mcast_snooping 0\n\
                     link add outside0 type veth peer name eth0 netns {}",
                    self.ns(Site::Inet)
                );
            }
            Site::Cpe(n) => {
                let _ = writeln!(
                    b,
                    "link add lan0 type veth peer name eth0 netns {}\n\
                     link add wan0 type veth peer name {} netns {}",
                    self.ns(Site::Lan(n)),
                    bridge_port(n),
                    self.ns(Site::Cgn)
                );
            }
            Site::Inet | Site::Lan(_) => {}
        }
        for iface in node.interfaces() {
            let addr = match (site, iface.name) {
                (Site::Cpe(n), "wan0") => cpe_wan(n).unwrap_or(iface.addr),
                _ => iface.addr,
            };
            let _ = writeln!(
                b,
                "addr add {addr}/{} dev {name}\nlink set {name} up",
                iface.prefix_len,
                name = iface.name
            );
        }
        if let Some(gw) = node.gateway() {
            let _ = writeln!(b, "route add default via {gw}");
        }
        if let Some(dev) = node.multicast_interface() {
            let _ = writeln!(b, "route add {MULTICAST_NET} dev {dev}");
        }
        for (dst, via) in node.static_routes() {
            let _ = writeln!(b, "route add {dst} via {via}");
        }
        b
    }

    /// The sysctls of `site`: no reverse-path filter anywhere, forwarding on CPEs and CGN.
    fn sysctls(site: Site) -> Vec<String> {
        let node = site.role();
        let mut s = vec![
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            "net.ipv4.conf.default.rp_filter=0".to_owned(),
        ];
        s.extend(
            node.interfaces()
                .iter()
                .map(|i| format!("net.ipv4.conf.{}.rp_filter=0", i.name)),
        );
        if node.forwards() {
            s.push("net.ipv4.ip_forward=1".to_owned());
        }
        s
    }

    /// Wires every namespace: the CGN (bridge, outside link) first, then each subscriber,
    /// then the bridge ports, then the sysctls.
    fn wire(&self) -> Result<(), LabError> {
        let order = [Site::Cgn, Site::Inet]
            .into_iter()
            .chain((1..=self.subscribers).flat_map(|n| [Site::Cpe(n), Site::Lan(n)]));
        for site in order {
            let file = self.log_dir.join(format!("wire-{site}.ip"));
            std::fs::write(&file, self.batch(site)).map_err(|source| LabError::Io {
                action: "writing ip batch",
                path: file.clone(),
                source,
            })?;
            let ns = self.ns(site);
            run_ok(&["ip", "-n", &ns, "-batch", &file.to_string_lossy()])?;
        }
        let mut ports = String::new();
        for n in 1..=self.subscribers {
            let port = bridge_port(n);
            let _ = writeln!(
                ports,
                "link set {port} master {CGN_BRIDGE}\nlink set {port} up"
            );
        }
        let file = self.log_dir.join("wire-bridge-ports.ip");
        std::fs::write(&file, ports).map_err(|source| LabError::Io {
            action: "writing ip batch",
            path: file.clone(),
            source,
        })?;
        run_ok(&[
            "ip",
            "-n",
            &self.ns(Site::Cgn),
            "-batch",
            &file.to_string_lossy(),
        ])?;
        for &site in &self.created {
            let settings = Self::sysctls(site);
            let mut argv = vec!["sysctl", "-q", "-w"];
            argv.extend(settings.iter().map(String::as_str));
            run_in_ok(&self.ns(site), &argv)?;
        }
        Ok(())
    }

    fn teardown(&mut self) {
        child::kill_all(&self.children);
        let existing = list_namespaces().ok();
        for site in self.created.iter().rev() {
            let ns = self.ns(*site);
            if existing.as_ref().is_some_and(|list| !list.contains(&ns)) {
                continue;
            }
            let deleted =
                netns_locked(|| run(None, &["ip", "netns", "delete", &ns], DEFAULT_TIMEOUT));
            match deleted {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "nat444 lab teardown: ip netns delete {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("nat444 lab teardown: {e}"),
            }
        }
        self.created.clear();
        if self.log_dir.exists() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

impl Drop for MultiLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_addresses_fill_the_inside_slash_24_from_dot_2() {
        assert_eq!(cpe_wan(1), Some(Ipv4Addr::new(100, 64, 0, 2)));
        assert_eq!(cpe_wan(2), Some(Ipv4Addr::new(100, 64, 0, 3)));
        assert_eq!(cpe_wan(60), Some(Ipv4Addr::new(100, 64, 0, 61)));
        assert_eq!(cpe_wan(253), Some(Ipv4Addr::new(100, 64, 0, 254)));
        assert_eq!(cpe_wan(0), None);
        assert_eq!(cpe_wan(254), None);
    }

    #[test]
    fn names_fit_namespaces_and_ifnamsiz() {
        assert_eq!(Site::Cpe(17).name(), "cpe17");
        assert_eq!(Site::Lan(3).to_string(), "lan3");
        assert!(bridge_port(MAX_SUBSCRIBERS).len() <= 15);
        assert_eq!(Site::Cpe(4).role(), Node::Cpe);
        assert_eq!(Site::Lan(4).subscriber(), Some(4));
        assert_eq!(Site::Cgn.subscriber(), None);
    }

    #[test]
    fn each_subscriber_gets_its_own_wan_and_the_shared_lan_plan() {
        let lab = MultiLab {
            prefix: "n444-1-0".to_owned(),
            subscribers: 3,
            created: Vec::new(),
            children: Arc::new(Mutex::new(HashMap::new())),
            next_child: AtomicU64::new(0),
            log_dir: PathBuf::from("/nonexistent"),
        };
        let cpe = lab.batch(Site::Cpe(3));
        assert!(cpe.contains("link add wan0 type veth peer name sub3 netns n444-1-0-cgn"));
        assert!(cpe.contains("link add lan0 type veth peer name eth0 netns n444-1-0-lan3"));
        assert!(cpe.contains("addr add 100.64.0.4/24 dev wan0"), "{cpe}");
        assert!(cpe.contains("addr add 192.168.0.1/24 dev lan0"), "{cpe}");
        assert!(cpe.contains("route add default via 100.64.0.1"), "{cpe}");
        let lan = lab.batch(Site::Lan(3));
        assert!(lan.contains("addr add 192.168.0.10/24 dev eth0"), "{lan}");
        assert!(lan.contains("route add default via 192.168.0.1"), "{lan}");
        let cgn = lab.batch(Site::Cgn);
        assert!(cgn.contains("link add inside0 type bridge"), "{cgn}");
        assert!(cgn.contains("addr add 100.64.0.1/24 dev inside0"), "{cgn}");
        let inet = lab.batch(Site::Inet);
        assert!(
            inet.contains("route add 198.51.100.0/28 via 203.0.113.1"),
            "{inet}"
        );
        assert!(MultiLab::sysctls(Site::Cpe(1)).contains(&"net.ipv4.ip_forward=1".to_owned()));
        assert!(!MultiLab::sysctls(Site::Lan(1)).contains(&"net.ipv4.ip_forward=1".to_owned()));
    }
}
