//! [`Nftables`], the NAT1 backend on the router's kernel NAT (`--nat nftables`).
//!
//! Every change is one JSON document fed to `nft -j -f -` (one kernel transaction: all or
//! nothing), built from the `nftables` crate's typed schema by [`super::batch`]. Rules live in
//! our own table only (`ip upnp_iwf` by default); other tables are read (for conflicts) but
//! never written. The table's contents are kept in memory and each install or remove
//! replaces both chains with the full set, so the kernel ends up with exactly that set even
//! if someone edited the table; [`Nat1Backend::installed`] reads it back from the kernel.
//!
//! `nft` is run by this module (via `ip netns exec NAME` when [`NftConfig::netns`] is set)
//! rather than by the crate's `helper::apply_ruleset_with_args`: that helper lets nft's error
//! message go to our own stderr instead of returning it, and its listing helper puts `-j`
//! before any wrapper program, so it cannot run nft inside a namespace.

use std::collections::BTreeSet;
use std::path::PathBuf;

use nftables::schema::{NfListObject, NfObject, Nftables as NftDocument};
use nftables::types::NfFamily;

use super::batch::{ReadBack, TableSpec, parse_table};
use super::command::{Ran, Runner};
use super::conflict::find_conflict;
use super::conntrack::{self, Direction};
use super::{Nat1Backend, Nat1Error, Nat1Rule, WanSide, clash};

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
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            table: DEFAULT_TABLE.to_owned(),
            nft_program: PathBuf::from("nft"),
            netns: None,
            ip_program: PathBuf::from("ip"),
            conntrack_program: Some(PathBuf::from("conntrack")),
        }
    }
}

/// The nftables NAT1 backend. Create it with [`Nftables::new`], then call
/// [`Nat1Backend::reset`] once with the WAN side and the stored mappings before installing.
#[derive(Debug)]
pub struct Nftables {
    config: NftConfig,
    runner: Runner,
    wan: Option<WanSide>,
    rules: BTreeSet<Nat1Rule>,
    conntrack_warned: bool,
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
            rules: BTreeSet::new(),
            conntrack_warned: false,
        }
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
        let json = serde_json::to_vec(doc)
            .map_err(|e| Nat1Error::Rejected(format!("cannot serialise batch: {e}")))?;
        tracing::debug!(batch = %String::from_utf8_lossy(&json), "nft -j -f -");
        self.nft(&["-j", "-f", "-"], Some(&json)).map(drop)
    }

    /// Whether our table exists (`nft -j list tables ip`).
    fn table_exists(&self) -> Result<bool, Nat1Error> {
        let out = self.nft(&["-j", "list", "tables", "ip"], None)?;
        let doc: NftDocument<'_> = serde_json::from_str(&out)
            .map_err(|e| Nat1Error::Rejected(format!("unreadable `nft -j list tables`: {e}")))?;
        Ok(doc.objects.iter().any(|o| {
            matches!(o, NfObject::ListObject(NfListObject::Table(t))
                if t.family == NfFamily::IP && t.name == self.config.table.as_str())
        }))
    }

    /// What the kernel has in our table (empty when the table does not exist).
    fn read_back(&self) -> Result<ReadBack, Nat1Error> {
        if !self.table_exists()? {
            return Ok(ReadBack::default());
        }
        let out = self.nft(&["-j", "list", "table", "ip", &self.config.table], None)?;
        parse_table(&out, &self.config.table)
    }

    /// Deletes conntrack entries of `rule`; problems are logged, never returned.
    fn flush_conntrack(&mut self, rule: &Nat1Rule, directions: &[Direction]) {
        let Some(program) = &self.config.conntrack_program else {
            return;
        };
        match conntrack::delete(&self.runner, program, rule, directions) {
            Ok(n) => tracing::debug!(%rule, deleted = n, "conntrack entries deleted"),
            Err(warning) if !self.conntrack_warned => {
                self.conntrack_warned = true;
                tracing::warn!(%rule, "{warning} (install conntrack-tools; further warnings at debug level)");
            }
            Err(warning) => tracing::debug!(%rule, "{warning}"),
        }
    }

    /// Replaces our chains' contents by `rules` in one transaction.
    fn replace(&self, rules: &BTreeSet<Nat1Rule>) -> Result<(), Nat1Error> {
        let wan = self.wan.as_ref().ok_or(Nat1Error::NotStarted)?;
        let rules: Vec<Nat1Rule> = rules.iter().copied().collect();
        self.apply(&self.spec().replace_rules(wan, &rules))
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
        let mut wanted = BTreeSet::new();
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
        self.apply(&self.spec().rebuild(wan, &list))?;
        self.wan = Some(wan.clone());
        self.rules = wanted;
        tracing::info!(
            table = %self.config.table,
            wan = %wan.iface,
            address = %wan.address,
            rules = self.rules.len(),
            "NAT1 table rebuilt"
        );
        let stale: Vec<Nat1Rule> = old
            .complete
            .iter()
            .chain(&old.half)
            .filter(|r| !self.rules.contains(r))
            .copied()
            .collect();
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
        if let Some(existing) = clash(&self.rules, rule) {
            return Err(Nat1Error::Duplicate { existing });
        }
        let ruleset = self.nft(&["-j", "list", "ruleset"], None)?;
        let own = &self.config.table;
        if let Some(table) = find_conflict(
            &ruleset,
            "ip",
            own,
            &wan.iface,
            rule.protocol,
            rule.wan_port,
        )? {
            return Err(Nat1Error::ConflictWithOtherMechanisms {
                protocol: rule.protocol,
                wan_port: rule.wan_port,
                table,
            });
        }
        let mut next = self.rules.clone();
        next.insert(*rule);
        self.replace(&next)?;
        self.rules = next;
        tracing::info!(%rule, "NAT1 rule installed");
        // After the rules are in: the client's next packet from C:p takes the new SNAT.
        self.flush_conntrack(rule, &[Direction::FromClient]);
        Ok(())
    }

    fn remove(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error> {
        if self.wan.is_none() {
            return Err(Nat1Error::NotStarted);
        }
        if self.rules.contains(rule) {
            let mut next = self.rules.clone();
            next.remove(rule);
            self.replace(&next)?;
            self.rules = next;
            tracing::info!(%rule, "NAT1 rule removed");
        }
        self.flush_conntrack(rule, &[Direction::FromClient, Direction::ToClient]);
        Ok(())
    }

    fn installed(&mut self) -> Result<Vec<Nat1Rule>, Nat1Error> {
        let back = self.read_back()?;
        if !back.half.is_empty() || back.foreign > 0 {
            tracing::warn!(
                half = ?back.half,
                foreign = back.foreign,
                table = %self.config.table,
                "NAT1 table was edited by someone else; the next change rebuilds it"
            );
        }
        Ok(back.complete)
    }

    fn shutdown(&mut self) -> Result<(), Nat1Error> {
        self.apply(&self.spec().delete())?;
        tracing::info!(table = %self.config.table, "NAT1 table deleted");
        // Established flows keep their conntrack binding: a restarted daemon re-adopts the
        // stored mappings without breaking them.
        self.rules.clear();
        self.wan = None;
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
}
