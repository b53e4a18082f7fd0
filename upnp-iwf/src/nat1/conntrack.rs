//! Deleting the conntrack entries of a mapping with `conntrack -D` (conntrack-tools).
//!
//! Spec `nat1-nftables.md`, "Stale conntrack entries": NAT is decided on a connection's first
//! packet only. Before a mapping is added, the client's flows from `C:p` carry the masquerade's
//! port, not P1, so they are deleted to make its next packet take the new SNAT; after a mapping
//! is removed, its flows (outbound from `C:p`, and inbound ones DNATed to `C:p`) would keep
//! their translation for the conntrack timeout, so they are deleted too.
//!
//! This is best effort: a missing `conntrack` binary or a refused deletion is reported to the
//! caller as a warning to log, never as a failure of the NAT1 operation.
//!
//! The deletions are not part of the rule change: the backend collects them as
//! [`StaleFlows`], which the caller runs after the change's result has gone on (the reply to
//! the control point and the PCP MAP do not wait for two `conntrack` processes), on any
//! thread, without the backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Nat1Rule;
use super::batch::proto_name;
use super::command::{Ran, Runner};

/// Conntrack entries that rule changes left stale, to be deleted after the changes (see the
/// module docs). Made by [`super::Nat1Backend::take_stale_flows`].
#[derive(Debug)]
pub struct StaleFlows {
    pub(crate) runner: Runner,
    pub(crate) program: PathBuf,
    pub(crate) work: Vec<(Nat1Rule, &'static [Direction])>,
    /// Shared with the backend: the first failure is a warning, later ones debug lines.
    pub(crate) warned: Arc<AtomicBool>,
}

impl StaleFlows {
    /// The rules whose flows are to be deleted.
    pub fn rules(&self) -> impl Iterator<Item = &Nat1Rule> {
        self.work.iter().map(|(r, _)| r)
    }

    /// Deletes the entries (one `conntrack -D` per rule and direction): how many were
    /// deleted. Problems are logged, never returned.
    pub fn forget(self) -> u64 {
        let mut total = 0;
        for (rule, directions) in &self.work {
            match delete(&self.runner, &self.program, rule, directions) {
                Ok(n) => {
                    tracing::debug!(%rule, deleted = n, "conntrack entries deleted");
                    total += n;
                }
                Err(warning) if !self.warned.swap(true, Ordering::Relaxed) => {
                    tracing::warn!(%rule, "{warning} (install conntrack-tools; further warnings at debug level)");
                }
                Err(warning) => tracing::debug!(%rule, "{warning}"),
            }
        }
        total
    }
}

/// Which entries of a mapping to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Flows the client opened from `C:p` (original source `C:p`).
    FromClient,
    /// Flows that were DNATed to `C:p` (reply source `C:p`).
    ToClient,
}

/// `conntrack -D` arguments deleting `rule`'s entries in `direction`.
pub(crate) fn delete_args(rule: &Nat1Rule, direction: Direction) -> Vec<String> {
    let (addr, port) = match direction {
        Direction::FromClient => ("--orig-src", "--orig-port-src"),
        Direction::ToClient => ("--reply-src", "--reply-port-src"),
    };
    [
        "-D",
        "-p",
        proto_name(rule.protocol),
        addr,
        &rule.client.to_string(),
        port,
        &rule.client_port.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The `N` of conntrack's `… N flow entries have been deleted.` summary.
pub(crate) fn deleted_count(stderr: &str) -> Option<u64> {
    let before = stderr.split(" flow entries have been deleted").next()?;
    if before.len() == stderr.len() {
        return None;
    }
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Deletes `rule`'s entries in each of `directions`: the number deleted, or a warning.
pub(crate) fn delete(
    runner: &Runner,
    program: &Path,
    rule: &Nat1Rule,
    directions: &[Direction],
) -> Result<u64, String> {
    let mut total = 0;
    for &direction in directions {
        let args = delete_args(rule, direction);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match runner.run(program, &args, None) {
            Ran::Missing(msg) => {
                return Err(format!(
                    "{msg}; existing flows of {rule} keep their old NAT"
                ));
            }
            // `conntrack -D` exits 1 when nothing matched ("0 flow entries have been deleted").
            Ran::Exited {
                success, stderr, ..
            } => match deleted_count(&stderr) {
                Some(n) => total += n,
                None if success => {}
                None => {
                    return Err(format!("conntrack {} failed: {stderr}", args.join(" ")));
                }
            },
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Protocol;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    fn rule() -> Nat1Rule {
        Nat1Rule {
            protocol: Protocol::Tcp,
            wan_port: 40000,
            client: Ipv4Addr::new(192, 168, 0, 10),
            client_port: 5000,
        }
    }

    #[test]
    fn arguments_select_the_clients_endpoint_in_each_direction() {
        assert_eq!(
            delete_args(&rule(), Direction::FromClient).join(" "),
            "-D -p tcp --orig-src 192.168.0.10 --orig-port-src 5000"
        );
        assert_eq!(
            delete_args(&rule(), Direction::ToClient).join(" "),
            "-D -p tcp --reply-src 192.168.0.10 --reply-port-src 5000"
        );
    }

    #[test]
    fn the_summary_line_is_read() {
        let none = "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.";
        assert_eq!(deleted_count(none), Some(0));
        assert_eq!(
            deleted_count(
                "conntrack v1.4.7 (conntrack-tools): 12 flow entries have been deleted.\n"
            ),
            Some(12)
        );
        assert_eq!(
            deleted_count("conntrack v1.4.7: Operation not permitted"),
            None
        );
        assert_eq!(deleted_count(""), None);
    }

    // A missing binary is a warning for the log, not a failure.
    #[test]
    fn a_missing_conntrack_is_a_warning() {
        let runner = Runner {
            ip_program: PathBuf::from("ip"),
            netns: None,
        };
        let missing = PathBuf::from("/nonexistent/conntrack-nat1-test");
        let r = delete(&runner, &missing, &rule(), &[Direction::FromClient]);
        let warning = r.expect_err("missing program");
        assert!(warning.contains("conntrack-nat1-test"), "{warning}");
    }
}
