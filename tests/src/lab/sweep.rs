//! Finding lab namespaces and removing those left behind by dead processes.
//!
//! A lab built with a generated prefix is named `n444-<pid>-<counter>-<node>`. A test run that
//! is SIGKILLed never runs `Drop`, so each build first deletes namespaces (and log directories)
//! whose `<pid>` no longer exists. Labs with a fixed prefix (`nat444-lab up`) do not match the
//! pattern and are never swept.

use std::path::Path;

use super::command::{DEFAULT_TIMEOUT, run, run_ok};
use super::error::LabError;

/// Start of every generated lab prefix.
pub const GENERATED_PREFIX: &str = "n444-";

/// The names in `ip netns list` output (`name` or `name (id: 3)` per line).
pub(crate) fn parse_netns_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// All network namespaces known to iproute2 (those under `/run/netns`).
pub fn list_namespaces() -> Result<Vec<String>, LabError> {
    let out = run_ok(&["ip", "netns", "list"])?;
    Ok(parse_netns_list(&String::from_utf8_lossy(&out.stdout)))
}

/// The pid encoded in a generated name (`n444-<pid>-…`), if the name is one.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(GENERATED_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this pid exists (in our pid namespace).
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Deletes every generated lab namespace and log directory whose owning process is gone, and
/// returns the namespaces it deleted. Failures to delete one namespace do not stop the sweep.
pub fn sweep_stale() -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        match run(None, &["ip", "netns", "delete", &name], DEFAULT_TIMEOUT) {
            Ok(out) if out.status.success() => removed.push(name),
            _ => {}
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && owner_pid(name).is_some_and(|pid| !pid_alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_list_lines_with_and_without_ids_parse_to_names() {
        let text = "n444-12-0-cgn (id: 3)\nn444-12-0-lan\n\nother (id: 0)\n";
        assert_eq!(
            parse_netns_list(text),
            ["n444-12-0-cgn", "n444-12-0-lan", "other"]
        );
    }

    #[test]
    fn only_generated_names_carry_an_owner_pid() {
        assert_eq!(owner_pid("n444-4242-0-lan"), Some(4242));
        assert_eq!(owner_pid("n444-4242-probe"), Some(4242));
        assert_eq!(owner_pid("n444lab-lan"), None);
        assert_eq!(owner_pid("n444-x1-0-lan"), None);
        assert_eq!(owner_pid("n444--0-lan"), None);
        assert_eq!(owner_pid("n444-4242"), None);
        assert_eq!(owner_pid("docker-netns"), None);
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
    }
}
