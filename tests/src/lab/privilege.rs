//! Whether this process may build the lab, and what a namespace test does when it may not.
//!
//! Namespace tests call [`require_privileges`] (or the [`require_privileges!`](crate::require_privileges)
//! macro) first. Without root they print a `SKIPPED:` line and return, so `cargo test` stays
//! useful on a laptop; with `NAT444_REQUIRE_PRIVILEGED=1` (as CI sets) a skip is a failure
//! instead, so a CI run can never pass by skipping the lab.

use std::sync::OnceLock;

use super::command::{DEFAULT_TIMEOUT, run};
use super::error::LabError;

/// Environment variable that turns a privilege skip into a test failure when set to anything
/// other than empty or `0`.
pub const REQUIRE_PRIVILEGED_ENV: &str = "NAT444_REQUIRE_PRIVILEGED";

/// `CAP_NET_ADMIN` bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN` bit: `ip netns add` bind-mounts the namespace under /run/netns.
const CAP_SYS_ADMIN: u32 = 21;

/// Proof that [`check_privileges`] succeeded in this process.
#[derive(Debug, Clone, Copy)]
pub struct Privileged {
    _private: (),
}

/// The effective capability mask from `/proc/self/status` text (`CapEff:\t000001ffffffffff`).
pub(crate) fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    let hex = line.trim_start_matches("CapEff:").trim();
    u64::from_str_radix(hex, 16).ok()
}

fn probe() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let caps = effective_caps(&status).ok_or("no CapEff line in /proc/self/status")?;
    for (bit, name) in [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ] {
        if caps & (1 << bit) == 0 {
            return Err(format!("this process lacks {name}; run as root"));
        }
    }
    // Capabilities can still be useless (read-only /run, seccomp): try the real thing.
    let name = format!("n444-{}-probe", std::process::id());
    let add = run(None, &["ip", "netns", "add", &name], DEFAULT_TIMEOUT)
        .map_err(|e| format!("probe failed: {e}"))?;
    if !add.status.success() {
        return Err(format!(
            "`ip netns add {name}` failed: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let _ = run(None, &["ip", "netns", "delete", &name], DEFAULT_TIMEOUT);
    Ok(())
}

/// Checks once per process (by capabilities and a probe `ip netns add`) whether the lab can be
/// built. Errors with [`LabError::NotPrivileged`] saying what is missing.
pub fn check_privileges() -> Result<Privileged, LabError> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    match RESULT.get_or_init(probe) {
        Ok(()) => Ok(Privileged { _private: () }),
        Err(reason) => Err(LabError::NotPrivileged {
            reason: reason.clone(),
        }),
    }
}

/// Whether `NAT444_REQUIRE_PRIVILEGED` asks for skips to fail.
pub fn privileged_required() -> bool {
    std::env::var(REQUIRE_PRIVILEGED_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// For namespace tests: `Some` when the lab can be built. Otherwise prints
/// `SKIPPED: needs root (CAP_NET_ADMIN) for network namespaces (…)` and returns `None`, or
/// panics if `NAT444_REQUIRE_PRIVILEGED` is set, so that CI cannot pass by skipping.
pub fn require_privileges() -> Option<Privileged> {
    match check_privileges() {
        Ok(p) => Some(p),
        Err(LabError::NotPrivileged { reason }) => skip_or_fail(&reason),
        Err(other) => skip_or_fail(&other.to_string()),
    }
}

fn skip_or_fail(reason: &str) -> Option<Privileged> {
    if privileged_required() {
        panic!("{REQUIRE_PRIVILEGED_ENV} is set but network namespaces are unavailable: {reason}");
    }
    println!("SKIPPED: needs root (CAP_NET_ADMIN) for network namespaces ({reason})");
    None
}

/// Whether the program `name` runs (`name ARGS…` exits, whatever its status). When it does
/// not: prints `SKIPPED: … (apt-get install PACKAGE)` and returns false, or panics when
/// `NAT444_REQUIRE_PRIVILEGED` is set (CI installs every tool, so a missing one is a failure).
pub fn require_tool(name: &str, args: &[&str], package: &str) -> bool {
    let runs = std::process::Command::new(name)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    require_found(runs, name, package)
}

/// [`require_tool`] for a check the caller made (`found`), e.g. that a command succeeds or a
/// Python module imports: `what` names what is missing, `package` the Debian package that
/// brings it.
pub fn require_found(found: bool, what: &str, package: &str) -> bool {
    if found {
        return true;
    }
    assert!(
        !privileged_required(),
        "{what} is not installed, and {REQUIRE_PRIVILEGED_ENV} forbids skipping (apt-get install {package})"
    );
    println!("SKIPPED: {what} is not installed (apt-get install {package})");
    false
}

/// Returns from the enclosing test (after printing a `SKIPPED:` line) unless the lab can be
/// built; see [`lab::require_privileges`](crate::lab::require_privileges).
///
/// ```no_run
/// // In a #[test] function:
/// fn needs_the_lab() {
///     nat444_tests::require_privileges!();
///     let lab = nat444_tests::lab::LabBuilder::new().build().expect("lab");
/// #   drop(lab);
/// }
/// ```
#[macro_export]
macro_rules! require_privileges {
    () => {
        match $crate::lab::require_privileges() {
            Some(privileged) => privileged,
            None => return,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_mask_is_read_from_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }
}
