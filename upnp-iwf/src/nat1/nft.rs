//! [`Nftables`], the NAT1 backend on the router's kernel NAT (`--nat nftables`).
//!
//! Every change is one JSON document fed to `nft -j -f -` (one kernel transaction: all or
//! nothing), built from the `nftables` crate's typed schema by [`super::batch`]. Rules live in
//! our own table only (`ip upnp_iwf` by default); other tables are read (for conflicts) but
//! never written. [`Nat1Backend::installed`] reads our table back from the kernel.
//!
//! # Cost per change
//!
//! An install or a remove costs the same whether our table holds no mapping or thousands: no
//! step lists, parses or rewrites our own table (a benchmark of the first version, which did,
//! measured 46 ms per add with an empty table and 284 ms at 1 000 mappings, and a 40 MiB
//! memory peak from parsing the growing listing; BENCHMARKS.md, "UPnP → PCP interworking").
//! * Install: `nft -j list chains` (every table's chains, no rules: our table adds two), then
//!   `nft -j list table FAMILY NAME` for each *other* table with a nat base chain (the only ones
//!   that can DNAT; [`super::conflict`]), then one transaction that only adds our two rules,
//!   run with `--echo --handle` so nft prints the handles the kernel gave them. The backend
//!   keeps each mapping's two handles in memory. The listings of the other tables are kept
//!   while a running `nft -j monitor ruleset` reports no change outside our own rules
//!   ([`super::monitor`]; [`NftConfig::monitor`]), so an install in a quiet ruleset is one
//!   `nft` process, and any change to the router's firewall makes the next install list again.
//! * Remove: one transaction deleting exactly those two handles. If they are unknown or nft
//!   refuses them (someone deleted a rule of ours), our table is read once and whatever rules
//!   of the mapping are still there are deleted in one transaction instead.
//! * Duplicates ([`Nat1Error::Duplicate`]) are found in the in-memory indexes, not in a
//!   listing.
//! * [`Nat1Backend::reset`] is O(mappings) by nature: one transaction deletes our table and
//!   builds it anew with every rule (run with `--echo --handle` to learn all handles).
//!
//! Our table is ours: the backend does not re-read it before each change. If our table or one
//! of its chains has gone (a `flush ruleset`), the next install sees that in the chain listing
//! and rebuilds the whole table from memory instead of adding to it. Rules of ours edited or
//! deleted one by one are reported by [`Nat1Backend::installed`] and repaired by the next
//! reset. Rule handles are unique within a table for its lifetime, and every rebuild of ours
//! learns the new ones, so a delete by handle hits only our own rule unless someone else
//! deleted and re-created our table and filled it with rules of their own.
//!
//! `nft` is run by this module (via `ip netns exec NAME` when [`NftConfig::netns`] is set)
//! rather than by the crate's `helper::apply_ruleset_with_args`: that helper lets nft's error
//! message go to our own stderr instead of returning it, and its listing helper puts `-j`
//! before any wrapper program, so it cannot run nft inside a namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use nftables::schema::Nftables as NftDocument;

use super::batch::{Handles, POSTROUTING, PREROUTING, ReadBack, TableSpec, parse_rules};
use super::command::{Ran, Runner};
use super::conflict::{ChainListing, find_conflict, nat_tables};
use super::conntrack::{Direction, StaleFlows};
use super::monitor::Monitor;
use super::{Nat1Backend, Nat1Error, Nat1Rule, WanSide, clash};
use crate::mapping::Protocol;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Default name of our table (`table ip upnp_iwf`).
pub const DEFAULT_TABLE: &str = "upnp_iwf";
/// Priority of our DNAT chain: `dstnat` (-100), where a router's own port forwards also sit.
pub const PREROUTING_PRIORITY: i32 = -100;
/// Priority of our SNAT chain: `srcnat - 10` (90), so our SNAT is in before a masquerade at
/// `srcnat` (100): the first nat chain that performs NAT wins.
pub const POSTROUTING_PRIORITY: i32 = 90;

/// Configuration of [`Nftables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// Name of our `ip` table (default [`DEFAULT_TABLE`]). nft rejects names that are not
    /// identifiers (the first operation then fails with [`Nat1Error::Rejected`]).
    pub table: String,
    /// The `nft` program (default `nft`, searched in `PATH`).
    pub nft_program: PathBuf,
    /// Run every command inside this network namespace (`ip netns exec NAME …`), for the lab.
    pub netns: Option<String>,
    /// The `ip` program used for [`NftConfig::netns`] (default `ip`).
    pub ip_program: PathBuf,
    /// conntrack-tools' `conntrack` (default `conntrack`); `None` never touches conntrack. A
    /// missing program is a logged warning, not a failure.
    pub conntrack_program: Option<PathBuf>,
    /// Keep an `nft -j monitor ruleset` running so installs re-list the other tables only
    /// after they changed (default true; false lists them for every install).
    pub monitor: bool,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            table: DEFAULT_TABLE.to_owned(),
            nft_program: PathBuf::from("nft"),
            netns: None,
            ip_program: PathBuf::from("ip"),
            conntrack_program: Some(PathBuf::from("conntrack")),
            monitor: true,
        }
    }
}

/// The mappings we installed, with the handles of their two rules when known, and indexes for
/// the duplicate check (O(log n) per install).
#[derive(Debug, Default)]
struct Mappings {
    handles: BTreeMap<Nat1Rule, Option<Handles>>,
    by_wan_port: BTreeMap<(Protocol, u16), Nat1Rule>,
    by_client: BTreeMap<(Protocol, Ipv4Addr, u16), Nat1Rule>,
}

impl Mappings {
    fn contains(&self, rule: &Nat1Rule) -> bool {
        self.handles.contains_key(rule)
    }

    /// The mapping `rule` would clash with (same as [`clash`], from the indexes).
    fn clash(&self, rule: &Nat1Rule) -> Option<Nat1Rule> {
        let by_port = self.by_wan_port.get(&(rule.protocol, rule.wan_port));
        let by_client = self
            .by_client
            .get(&(rule.protocol, rule.client, rule.client_port));
        by_port.or(by_client).filter(|r| *r != rule).copied()
    }

    fn insert(&mut self, rule: Nat1Rule, handles: Option<Handles>) {
        self.handles.insert(rule, handles);
        self.by_wan_port
            .insert((rule.protocol, rule.wan_port), rule);
        self.by_client
            .insert((rule.protocol, rule.client, rule.client_port), rule);
    }

    fn remove(&mut self, rule: &Nat1Rule) {
        self.handles.remove(rule);
        self.by_wan_port.remove(&(rule.protocol, rule.wan_port));
        self.by_client
            .remove(&(rule.protocol, rule.client, rule.client_port));
    }

    /// The mappings, sorted, with `extra` added.
    fn list_with(&self, extra: Option<&Nat1Rule>) -> Vec<Nat1Rule> {
        let mut list: Vec<Nat1Rule> = self.handles.keys().copied().collect();
        if let Some(extra) = extra {
            list.push(*extra);
            list.sort();
        }
        list
    }

    fn len(&self) -> usize {
        self.handles.len()
    }
}

/// The nftables NAT1 backend. Create it with [`Nftables::new`], then call
/// [`Nat1Backend::reset`] once with the WAN side and the stored mappings before installing.
#[derive(Debug)]
pub struct Nftables {
    config: NftConfig,
    runner: Runner,
    wan: Option<WanSide>,
    rules: Mappings,
    /// Conntrack deletions the changes so far call for, until [`Nat1Backend::take_stale_flows`].
    stale: Vec<(Nat1Rule, &'static [Direction])>,
    conntrack_warned: Arc<AtomicBool>,
    /// The ruleset monitor, once [`Nat1Backend::reset`] started it.
    monitor: Option<Monitor>,
    /// The other nat tables' listings and whether our chains were all there, with the
    /// monitor's generation they were taken at (`None`: no monitor, not to be reused).
    others: Option<(Option<u64>, Vec<String>, bool)>,
}

impl Nftables {
    /// A backend with `config`. Runs nothing yet; [`Nftables::probe`] checks that nft works.
    pub fn new(config: NftConfig) -> Nftables {
        let runner = Runner {
            ip_program: config.ip_program.clone(),
            netns: config.netns.clone(),
        };
        Nftables {
            config,
            runner,
            wan: None,
            rules: Mappings::default(),
            stale: Vec::new(),
            conntrack_warned: Arc::new(AtomicBool::new(false)),
            monitor: None,
            others: None,
        }
    }

    /// How many ruleset changes outside our own rules the monitor has seen, once it is known
    /// to hear the kernel (`None`: no monitor, or not yet). For tests and diagnostics.
    pub fn ruleset_changes(&self) -> Option<u64> {
        self.monitor.as_ref().and_then(Monitor::generation)
    }

    /// The configuration this backend was made with.
    pub fn config(&self) -> &NftConfig {
        &self.config
    }

    /// Runs `nft --version`: its version line, or [`Nat1Error::Unavailable`] when nft cannot
    /// be run (for the daemon's start-up message).
    pub fn probe(&self) -> Result<String, Nat1Error> {
        match self
            .runner
            .run(&self.config.nft_program, &["--version"], None)
        {
            Ran::Missing(msg) => Err(Nat1Error::Unavailable(msg)),
            Ran::Exited {
                success: true,
                stdout,
                ..
            } => Ok(stdout.trim().to_owned()),
            Ran::Exited { stderr, .. } => Err(Nat1Error::Unavailable(format!(
                "`nft --version` failed: {stderr}"
            ))),
        }
    }

    fn spec(&self) -> TableSpec<'_> {
        TableSpec {
            name: &self.config.table,
            prerouting_prio: PREROUTING_PRIORITY,
            postrouting_prio: POSTROUTING_PRIORITY,
        }
    }

    /// `nft ARGS…` with `stdin`: its standard output, or Unavailable / Rejected.
    fn nft(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, Nat1Error> {
        match self.runner.run(&self.config.nft_program, args, stdin) {
            Ran::Missing(msg) => Err(Nat1Error::Unavailable(msg)),
            Ran::Exited {
                success: true,
                stdout,
                ..
            } => Ok(stdout),
            Ran::Exited { stdout, stderr, .. } => {
                let msg = if stderr.is_empty() {
                    stdout.trim()
                } else {
                    stderr.as_str()
                };
                Err(Nat1Error::Rejected(msg.to_owned()))
            }
        }
    }

    /// Applies `doc` as one transaction (`nft -j -f -`).
    fn apply(&self, doc: &NftDocument<'_>) -> Result<(), Nat1Error> {
        self.run_batch(doc, &["-j", "-f", "-"]).map(drop)
    }

    /// Applies `doc` as one transaction with `--echo --handle`: what nft added, with the
    /// handles the kernel gave it. The transaction has been committed once nft succeeds, so an
    /// echo this code cannot read is logged and read as "no handles", not an error (which
    /// would claim nothing was changed).
    fn apply_echo(&self, doc: &NftDocument<'_>) -> Result<ReadBack, Nat1Error> {
        let out = self.run_batch(doc, &["--echo", "--handle", "-j", "-f", "-"])?;
        Ok(parse_rules(&out, &self.config.table).unwrap_or_else(|e| {
            tracing::warn!("{e} (echo of a committed NAT1 batch; handles unknown)");
            ReadBack::default()
        }))
    }

    fn run_batch(&self, doc: &NftDocument<'_>, args: &[&str]) -> Result<String, Nat1Error> {
        let json = serde_json::to_vec(doc)
            .map_err(|e| Nat1Error::Rejected(format!("cannot serialise batch: {e}")))?;
        tracing::debug!(batch = %String::from_utf8_lossy(&json), "nft -j -f -");
        self.nft(args, Some(&json))
    }

    /// `nft -j list chains`: every table's chains, no rules (cheap whatever our table holds).
    fn list_chains(&self) -> Result<ChainListing, Nat1Error> {
        let out = self.nft(&["-j", "list", "chains"], None)?;
        nat_tables(&out, "ip", &self.config.table)
    }

    /// What the kernel has in our table (empty when the table, or any chain in it, does not
    /// exist). Reads the whole table: for `installed()`, reset, and the fallback of remove.
    fn read_back(&self) -> Result<ReadBack, Nat1Error> {
        if self.list_chains()?.own_chains.is_empty() {
            return Ok(ReadBack::default());
        }
        let out = self.nft(&["-j", "list", "table", "ip", &self.config.table], None)?;
        parse_rules(&out, &self.config.table)
    }

    /// Notes that `rule`'s conntrack entries in `directions` are stale once this change is in
    /// (deleted by [`StaleFlows::forget`], after the change).
    fn flush_conntrack(&mut self, rule: &Nat1Rule, directions: &'static [Direction]) {
        if self.config.conntrack_program.is_some() {
            self.stale.push((*rule, directions));
        }
    }

    /// Deletes our table and builds it anew with exactly `rules` (sorted, clash-free) in one
    /// transaction, then remembers them with the handles nft echoed.
    fn rebuild(&mut self, wan: &WanSide, rules: &[Nat1Rule]) -> Result<(), Nat1Error> {
        self.others = None;
        let echoed = self.apply_echo(&self.spec().rebuild(wan, rules))?;
        let mut next = Mappings::default();
        let mut unknown = 0;
        for rule in rules {
            let handles = echoed.handles_of(rule);
            unknown += usize::from(handles.is_none());
            next.insert(*rule, handles);
        }
        if unknown > 0 {
            tracing::debug!(
                unknown,
                "nft echoed no handles for some NAT1 rules; their removal reads the table"
            );
        }
        self.rules = next;
        Ok(())
    }

    /// The other table (as `family name`) that DNATs `rule`'s WAN port, if any, whether our
    /// table still has both its chains, and whether that came from listings kept from before
    /// (unchanged since, by the monitor). Lists every table's chains, then each other table
    /// with a nat chain; never our own table's rules.
    fn check_others(
        &mut self,
        wan: &WanSide,
        rule: &Nat1Rule,
    ) -> Result<(Option<String>, bool, bool), Nat1Error> {
        let generation = self.monitor.as_ref().and_then(Monitor::generation);
        let fresh =
            matches!((&self.others, generation), (Some((Some(g), _, _)), Some(now)) if *g == now);
        if !fresh {
            let listing = self.list_chains()?;
            let intact = [PREROUTING, POSTROUTING]
                .iter()
                .all(|c| listing.own_chains.iter().any(|o| o == c));
            let mut listings = Vec::with_capacity(listing.nat_tables.len());
            for (family, name) in &listing.nat_tables {
                listings.push(self.nft(&["-j", "list", "table", family, name], None)?);
            }
            // Taken at the generation read before listing: a change during the listing bumps
            // the counter and the next install lists again. Without a monitor, never reused.
            self.others = Some((generation, listings, intact));
        }
        let Some((_, listings, ours_intact)) = &self.others else {
            return Ok((None, true, false));
        };
        let own = self.config.table.as_str();
        for listing in listings {
            let found =
                find_conflict(listing, "ip", own, &wan.iface, rule.protocol, rule.wan_port)?;
            if found.is_some() {
                return Ok((found, *ours_intact, fresh));
            }
        }
        Ok((None, *ours_intact, fresh))
    }

    /// Deletes whatever rules of `rule` our table still holds, found by reading it once.
    fn remove_by_listing(&self, rule: &Nat1Rule) -> Result<(), Nat1Error> {
        let refs = self.read_back()?.refs_of(rule);
        if refs.is_empty() {
            return Ok(());
        }
        self.apply(&self.spec().delete_rules(&refs))
    }
}

/// Refuses port 0 (nft would take it, the kernel would translate to "any port").
fn check_ports(rule: &Nat1Rule) -> Result<(), Nat1Error> {
    if rule.wan_port == 0 || rule.client_port == 0 {
        return Err(Nat1Error::Rejected(format!("port 0 in NAT1 rule {rule}")));
    }
    Ok(())
}

impl Nat1Backend for Nftables {
    fn reset(&mut self, wan: &WanSide, rules: &[Nat1Rule]) -> Result<(), Nat1Error> {
        let mut wanted = std::collections::BTreeSet::new();
        for rule in rules {
            check_ports(rule)?;
            if let Some(existing) = clash(&wanted, rule) {
                return Err(Nat1Error::Duplicate { existing });
            }
            wanted.insert(*rule);
        }
        let old = match self.read_back() {
            Ok(old) => old,
            Err(Nat1Error::Rejected(msg)) => {
                tracing::warn!("cannot read the old NAT1 table before reset: {msg}");
                ReadBack::default()
            }
            Err(e) => return Err(e),
        };
        let list: Vec<Nat1Rule> = wanted.iter().copied().collect();
        drop(wanted);
        if self.config.monitor && self.monitor.is_none() {
            // Started before the rebuild, whose events for our table show it hears the kernel.
            self.monitor =
                Monitor::start(&self.runner, &self.config.nft_program, &self.config.table);
        }
        self.others = None;
        self.rebuild(wan, &list)?;
        self.wan = Some(wan.clone());
        tracing::info!(
            table = %self.config.table,
            wan = %wan.iface,
            address = %wan.address,
            rules = self.rules.len(),
            "NAT1 table rebuilt"
        );
        let mut stale: Vec<Nat1Rule> = old
            .complete
            .iter()
            .chain(&old.half)
            .filter(|r| !self.rules.contains(r))
            .copied()
            .collect();
        drop(old);
        stale.sort();
        stale.dedup();
        for rule in stale {
            tracing::info!(%rule, "stale NAT1 rule cleared");
            self.flush_conntrack(&rule, &[Direction::FromClient, Direction::ToClient]);
        }
        Ok(())
    }

    fn install(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error> {
        check_ports(rule)?;
        let wan = self.wan.clone().ok_or(Nat1Error::NotStarted)?;
        if self.rules.contains(rule) {
            return Ok(());
        }
        if let Some(existing) = self.rules.clash(rule) {
            return Err(Nat1Error::Duplicate { existing });
        }
        let (conflict, ours_intact, from_cache) = self.check_others(&wan, rule)?;
        if let Some(table) = conflict {
            return Err(Nat1Error::ConflictWithOtherMechanisms {
                protocol: rule.protocol,
                wan_port: rule.wan_port,
                table,
            });
        }
        if ours_intact {
            let echoed = match self.apply_echo(&self.spec().add_mapping(&wan, rule)) {
                Ok(e) => e,
                // A listing kept from before may be older than the monitor's news (our table
                // deleted a moment ago): list again and retry once.
                Err(Nat1Error::Rejected(_)) if from_cache => {
                    self.others = None;
                    return self.install(rule);
                }
                Err(e) => return Err(e),
            };
            let handles = echoed.handles_of(rule);
            if handles.is_none() {
                tracing::debug!(%rule, "nft echoed no handles; its removal reads the table");
            }
            self.rules.insert(*rule, handles);
        } else {
            // Our table or a chain of it was deleted behind our back: put every mapping back.
            tracing::warn!(
                table = %self.config.table,
                mappings = self.rules.len() + 1,
                "NAT1 table or chain missing; rebuilding it from memory"
            );
            let list = self.rules.list_with(Some(rule));
            self.rebuild(&wan, &list)?;
        }
        tracing::info!(%rule, "NAT1 rule installed");
        // After the rules are in: the client's next packet from C:p takes the new SNAT.
        self.flush_conntrack(rule, &[Direction::FromClient]);
        Ok(())
    }

    fn remove(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error> {
        if self.wan.is_none() {
            return Err(Nat1Error::NotStarted);
        }
        if let Some(known) = self.rules.handles.get(rule).copied() {
            let by_handle = match known {
                Some(handles) => self.apply(&self.spec().delete_rules(&handles.refs())),
                None => Err(Nat1Error::Rejected("rule handles unknown".into())),
            };
            match by_handle {
                Ok(()) => {}
                Err(Nat1Error::Rejected(msg)) => {
                    // Nothing was deleted (one transaction); find what is left by listing.
                    tracing::debug!(%rule, "delete by handle failed ({msg}); reading the table");
                    self.remove_by_listing(rule)?;
                }
                Err(e) => return Err(e),
            }
            self.rules.remove(rule);
            tracing::info!(%rule, "NAT1 rule removed");
        }
        self.flush_conntrack(rule, &[Direction::FromClient, Direction::ToClient]);
        Ok(())
    }

    fn take_stale_flows(&mut self) -> Option<StaleFlows> {
        let program = self.config.conntrack_program.clone()?;
        if self.stale.is_empty() {
            return None;
        }
        Some(StaleFlows {
            runner: self.runner.clone(),
            program,
            work: std::mem::take(&mut self.stale),
            warned: self.conntrack_warned.clone(),
        })
    }

    fn installed(&mut self) -> Result<Vec<Nat1Rule>, Nat1Error> {
        let back = self.read_back()?;
        // Before reset the kernel may still hold a crashed run's rules: no mismatch then.
        let mismatch = self.wan.is_some()
            && (back.complete.len() != self.rules.len()
                || back.complete.iter().any(|r| !self.rules.contains(r)));
        if !back.half.is_empty() || back.foreign > 0 || mismatch {
            tracing::warn!(
                half = ?back.half,
                foreign = back.foreign,
                kernel = back.complete.len(),
                ours = self.rules.len(),
                table = %self.config.table,
                "NAT1 table was edited by someone else; the next reset rebuilds it"
            );
        }
        Ok(back.complete)
    }

    fn shutdown(&mut self) -> Result<(), Nat1Error> {
        self.apply(&self.spec().delete())?;
        tracing::info!(table = %self.config.table, "NAT1 table deleted");
        // Established flows keep their conntrack binding: a restarted daemon re-adopts the
        // stored mappings without breaking them.
        self.rules = Mappings::default();
        self.wan = None;
        self.monitor = None;
        self.others = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Protocol;
    use std::net::Ipv4Addr;

    fn missing() -> Nftables {
        Nftables::new(NftConfig {
            nft_program: PathBuf::from("/nonexistent/nft-nat1-test"),
            monitor: false,
            ..NftConfig::default()
        })
    }

    fn wan() -> WanSide {
        WanSide {
            iface: "wan0".into(),
            address: Ipv4Addr::new(100, 64, 0, 2),
        }
    }

    fn rule() -> Nat1Rule {
        Nat1Rule {
            protocol: Protocol::Udp,
            wan_port: 40000,
            client: Ipv4Addr::new(192, 168, 0, 10),
            client_port: 5000,
        }
    }

    #[test]
    fn defaults_are_our_own_ip_table_and_plain_programs() {
        let c = NftConfig::default();
        assert_eq!(c.table, "upnp_iwf");
        assert_eq!(c.nft_program, PathBuf::from("nft"));
        assert_eq!(c.netns, None);
        assert_eq!(c.conntrack_program, Some(PathBuf::from("conntrack")));
    }

    // The daemon reports a missing nft plainly at start.
    #[test]
    fn a_missing_nft_is_unavailable_everywhere() {
        let mut nft = missing();
        assert!(matches!(nft.probe(), Err(Nat1Error::Unavailable(_))));
        assert!(matches!(
            nft.reset(&wan(), &[]),
            Err(Nat1Error::Unavailable(_))
        ));
        assert!(matches!(nft.installed(), Err(Nat1Error::Unavailable(_))));
        assert!(matches!(nft.shutdown(), Err(Nat1Error::Unavailable(_))));
    }

    #[test]
    fn install_before_reset_is_refused_without_running_nft() {
        let mut nft = missing();
        assert_eq!(nft.install(&rule()), Err(Nat1Error::NotStarted));
        assert_eq!(nft.remove(&rule()), Err(Nat1Error::NotStarted));
    }

    #[test]
    fn reset_refuses_clashing_rules_and_port_zero_before_running_nft() {
        let mut nft = missing();
        let other_client = Nat1Rule {
            client_port: 6000,
            ..rule()
        };
        assert_eq!(
            nft.reset(&wan(), &[rule(), other_client]),
            Err(Nat1Error::Duplicate { existing: rule() })
        );
        let zero = Nat1Rule {
            wan_port: 0,
            ..rule()
        };
        assert!(matches!(
            nft.reset(&wan(), &[zero]),
            Err(Nat1Error::Rejected(_))
        ));
    }

    /// A stand-in `nft` (a shell script in a fresh temp dir) that prints `stdout`/`stderr` and
    /// exits with `code`.
    fn fake_nft(name: &str, stdout: &str, stderr: &str, code: i32) -> Nftables {
        let dir = std::env::temp_dir().join(format!("nat1-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("nft");
        let script = format!(
            "#!/bin/sh\ncat >/dev/null\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {code}\n"
        );
        std::fs::write(&path, script).expect("write script");
        let mut perms = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
        Nftables::new(NftConfig {
            nft_program: path,
            conntrack_program: None,
            monitor: false,
            ..NftConfig::default()
        })
    }

    // "nft refused the transaction (message from nft); nothing was changed."
    #[test]
    fn a_refused_transaction_is_rejected_with_nfts_message() {
        let empty = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}]}"#;
        let mut nft = fake_nft(
            "refused",
            empty,
            "Error: Could not process rule: Operation not permitted",
            1,
        );
        match nft.shutdown() {
            Err(Nat1Error::Rejected(msg)) => {
                assert!(msg.contains("Operation not permitted"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_from_nft_is_rejected_not_a_panic() {
        let mut nft = fake_nft("garbage", "not json at all", "", 0);
        assert!(matches!(nft.installed(), Err(Nat1Error::Rejected(_))));
        assert!(matches!(nft.reset(&wan(), &[rule()]), Ok(())));
        // Listing the ruleset for conflicts reads garbage too.
        let tcp = Nat1Rule {
            protocol: Protocol::Tcp,
            ..rule()
        };
        assert!(matches!(nft.install(&tcp), Err(Nat1Error::Rejected(_))));
    }

    /// A scripted stand-in `nft` in a fresh temp dir: answers each command line from a file
    /// of the dir, appends every command line to `calls` and every batch (one JSON line) to
    /// `batches`; `-j -f -` fails once if the file `fail_once` exists.
    struct Scripted {
        dir: PathBuf,
    }

    impl Scripted {
        fn new(name: &str) -> (Scripted, Nftables) {
            let dir = std::env::temp_dir().join(format!("nat1-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let script = r#"#!/bin/sh
d=$(dirname "$0")
printf '%s\n' "$*" >> "$d/calls"
case "$*" in
  "-j list chains") cat "$d/chains.json" ;;
  "-j list table ip upnp_iwf") cat "$d/ours.json" ;;
  "-j list table inet fw4") cat "$d/fw4.json" ;;
  "--echo --handle -j -f -") cat >> "$d/batches"; echo >> "$d/batches"; cat "$d/echo.json" ;;
  "-j -f -") cat >> "$d/batches"; echo >> "$d/batches"
    if [ -e "$d/fail_once" ]; then rm "$d/fail_once"; echo "Error: No such file or directory" >&2; exit 1; fi ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#;
            let path = dir.join("nft");
            std::fs::write(&path, script).expect("write script");
            let mut perms = std::fs::metadata(&path).expect("stat").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&path, perms).expect("chmod");
            let s = Scripted { dir };
            s.write("chains.json", include_str!("testdata/fw4_ruleset.json"));
            s.write("fw4.json", include_str!("testdata/fw4_forward_5000.json"));
            s.write("echo.json", r#"{"nftables": []}"#);
            let nft = Nftables::new(NftConfig {
                nft_program: path,
                conntrack_program: None,
                monitor: false,
                ..NftConfig::default()
            });
            (s, nft)
        }

        fn write(&self, file: &str, text: &str) {
            std::fs::write(self.dir.join(file), text).expect("write");
        }

        /// Lines of `file` written since the last call (the file is emptied).
        fn take(&self, file: &str) -> Vec<String> {
            let path = self.dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            text.lines().map(str::to_owned).collect()
        }

        /// nft's echo (or listing, with `wrap` = false) of `rule`'s two rules with handles.
        fn rules_json(rule: &Nat1Rule, dnat: u32, snat: u32, wrap: bool) -> String {
            let one = |chain: &str, handle: u32| {
                let r = serde_json::json!({"rule": {"family": "ip", "table": "upnp_iwf",
                    "chain": chain, "comment": super::super::rule_comment(rule),
                    "expr": [], "handle": handle}});
                if wrap {
                    serde_json::json!({"add": r})
                } else {
                    r
                }
            };
            serde_json::json!({"nftables": [one("prerouting", dnat), one("postrouting", snat)]})
                .to_string()
        }
    }

    fn batch_cmds(line: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(line).expect("batch is JSON");
        v["nftables"].as_array().expect("array").clone()
    }

    // The point of the design: an install never lists (or rewrites) our own table, and a
    // remove deletes exactly the two handles the install's echo reported.
    #[test]
    fn install_lists_only_other_tables_and_remove_deletes_its_two_handles() {
        let (fake, mut nft) = Scripted::new("scripted-handles");
        nft.reset(&wan(), &[]).expect("reset");
        fake.take("calls");
        fake.take("batches");

        fake.write("echo.json", &Scripted::rules_json(&rule(), 7, 8, true));
        nft.install(&rule()).expect("install");
        assert_eq!(
            fake.take("calls"),
            [
                "-j list chains",
                "-j list table inet fw4",
                "--echo --handle -j -f -"
            ]
        );
        let batches = fake.take("batches");
        assert_eq!(batches.len(), 1);
        let cmds = batch_cmds(&batches[0]);
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(
            cmds.iter().all(|c| c["add"]["rule"].is_object()),
            "{cmds:?}"
        );

        // Installing it again is a no-op; a clash is found in memory, without nft.
        nft.install(&rule()).expect("idempotent");
        let same_port = Nat1Rule {
            client_port: 6000,
            ..rule()
        };
        assert_eq!(
            nft.install(&same_port),
            Err(Nat1Error::Duplicate { existing: rule() })
        );
        let same_client = Nat1Rule {
            wan_port: 40001,
            ..rule()
        };
        assert_eq!(
            nft.install(&same_client),
            Err(Nat1Error::Duplicate { existing: rule() })
        );
        assert!(fake.take("calls").is_empty());

        nft.remove(&rule()).expect("remove");
        assert_eq!(fake.take("calls"), ["-j -f -"]);
        let cmds = batch_cmds(&fake.take("batches")[0]);
        let deleted: Vec<(&str, u64)> = cmds
            .iter()
            .map(|c| {
                let r = &c["delete"]["rule"];
                (
                    r["chain"].as_str().expect("chain"),
                    r["handle"].as_u64().expect("handle"),
                )
            })
            .collect();
        assert_eq!(deleted, [("prerouting", 7), ("postrouting", 8)]);
        // Not installed any more: removing again runs no nft.
        nft.remove(&rule()).expect("again");
        assert!(fake.take("calls").is_empty());
    }

    #[test]
    fn a_port_forward_in_another_table_is_a_conflict_and_nothing_is_applied() {
        let (fake, mut nft) = Scripted::new("scripted-conflict");
        nft.reset(&wan(), &[]).expect("reset");
        fake.take("batches");
        let tcp5000 = Nat1Rule {
            protocol: Protocol::Tcp,
            wan_port: 5000,
            ..rule()
        };
        assert_eq!(
            nft.install(&tcp5000),
            Err(Nat1Error::ConflictWithOtherMechanisms {
                protocol: Protocol::Tcp,
                wan_port: 5000,
                table: "inet fw4".into(),
            })
        );
        assert!(fake.take("batches").is_empty());
    }

    // A delete by handle that nft refuses (someone deleted a rule of ours) falls back to one
    // listing of our table and deletes what of the mapping is left.
    #[test]
    fn a_refused_delete_by_handle_falls_back_to_reading_our_table() {
        let (fake, mut nft) = Scripted::new("scripted-fallback");
        nft.reset(&wan(), &[]).expect("reset");
        fake.write("echo.json", &Scripted::rules_json(&rule(), 7, 8, true));
        nft.install(&rule()).expect("install");
        fake.take("calls");
        fake.take("batches");
        fake.write("fail_once", "");
        fake.write("ours.json", &Scripted::rules_json(&rule(), 17, 18, false));
        nft.remove(&rule()).expect("remove");
        assert_eq!(
            fake.take("calls"),
            [
                "-j -f -",
                "-j list chains",
                "-j list table ip upnp_iwf",
                "-j -f -"
            ]
        );
        let batches = fake.take("batches");
        let handles: Vec<u64> = batch_cmds(&batches[1])
            .iter()
            .filter_map(|c| c["delete"]["rule"]["handle"].as_u64())
            .collect();
        assert_eq!(handles, [17, 18]);
    }

    // `flush ruleset` took our table: the next install rebuilds it from memory.
    #[test]
    fn a_missing_table_is_rebuilt_from_memory_on_the_next_install() {
        let (fake, mut nft) = Scripted::new("scripted-rebuild");
        nft.reset(&wan(), &[rule()]).expect("reset");
        fake.take("batches");
        fake.write(
            "chains.json",
            r#"{"nftables": [{"chain": {"family": "inet", "table": "fw4", "name": "dstnat", "type": "nat", "hook": "prerouting", "prio": -100}}]}"#,
        );
        let tcp = Nat1Rule {
            protocol: Protocol::Tcp,
            wan_port: 40001,
            ..rule()
        };
        nft.install(&tcp).expect("install");
        let cmds = batch_cmds(&fake.take("batches")[0]);
        assert!(cmds[1]["delete"]["table"].is_object(), "{cmds:?}");
        let rules = cmds.iter().filter(|c| c["add"]["rule"].is_object()).count();
        assert_eq!(rules, 4, "both mappings, two rules each");
        // Handles unknown (the echo held none): remove reads the table instead.
        fake.take("calls");
        nft.remove(&tcp).expect("remove");
        assert_eq!(fake.take("calls"), ["-j list chains"]);
    }

    /// Cost of install and remove with an empty table and with 1 000 mappings, against the
    /// real nft. By hand only, as root, inside a throw-away namespace (it creates and deletes
    /// our table there): `ip netns add t && ip netns exec t env NAT1_TIMING=1 cargo test -p
    /// upnp-iwf --release nat1::nft::tests::timing -- --ignored --nocapture; ip netns del t`.
    #[test]
    #[ignore = "timing, by hand, root, in a throw-away namespace"]
    fn timing() {
        if std::env::var_os("NAT1_TIMING").is_none() {
            return;
        }
        let mut nft = Nftables::new(NftConfig {
            conntrack_program: None,
            ..NftConfig::default()
        });
        let udp = |i: u16| Nat1Rule {
            wan_port: 20000 + i,
            client_port: 20000 + i,
            ..rule()
        };
        let ms = |t: std::time::Instant, n: u32| t.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
        nft.reset(&wan(), &[]).expect("reset");
        let t = std::time::Instant::now();
        for i in 0..20 {
            nft.install(&udp(i)).expect("install");
        }
        let add0 = ms(t, 20);
        let t = std::time::Instant::now();
        for i in 0..20 {
            nft.remove(&udp(i)).expect("remove");
        }
        let del0 = ms(t, 20);
        let t = std::time::Instant::now();
        for i in 0..1000 {
            nft.install(&udp(i)).expect("install");
        }
        let bulk = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for i in 1000..1020 {
            nft.install(&udp(i)).expect("install");
        }
        let add1000 = ms(t, 20);
        let t = std::time::Instant::now();
        for i in 1000..1020 {
            nft.remove(&udp(i)).expect("remove");
        }
        let del1000 = ms(t, 20);
        let t = std::time::Instant::now();
        let n = nft.installed().expect("installed").len();
        let listed = ms(t, 1);
        nft.shutdown().expect("shutdown");
        println!(
            "nat1 timing: add {add0:.1} / {add1000:.1} ms, remove {del0:.1} / {del1000:.1} ms \
             (empty / 1000 mappings), 1000 adds {bulk:.1} s, installed() of {n}: {listed:.0} ms"
        );
    }
}
