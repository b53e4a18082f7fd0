//! Finding the workspace's binaries (`cgn-sim`, `upnp-iwf`, `pcpc`, …) from the lab's tests and
//! from `nat444-lab`: they sit in the same `target/<profile>/` directory as the running
//! executable (or its parent, for a test binary in `deps/`). `cargo test --workspace` and
//! `cargo build --workspace` build them all.

use std::path::PathBuf;
use std::process::Command;

/// The `target/<profile>/` directory the running executable belongs to.
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Some(dir)
}

/// Binary `name` of workspace package `package`, if it is built.
pub fn find(name: &str) -> Option<PathBuf> {
    let bin = target_dir()?.join(name);
    bin.exists().then_some(bin)
}

/// The command line of `upnp-iwf` (binary `bin`) on a lab CPE: LAN `lan0`, WAN `wan0`, its
/// state directory `state`, its control socket `ctl` (`none`: none), and `extra` flags; all
/// else at its defaults, as a router owner starts it (PCP towards the WAN's default gateway,
/// nftables NAT1).
pub fn cpe_iwf_argv<'a>(
    bin: &'a str,
    state: &'a str,
    ctl: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut argv = vec![
        bin,
        "--lan",
        "lan0",
        "--wan",
        "wan0",
        "--state-dir",
        state,
        "--ctl",
        ctl,
    ];
    argv.extend_from_slice(extra);
    argv
}

/// A daemon binary `nat444-lab` needs is not built.
#[derive(Debug, thiserror::Error)]
#[error("{name} is not built in {}: run `cargo build --workspace` first", dir.display())]
pub struct MissingBinary {
    /// Binary name.
    pub name: &'static str,
    /// Where it was looked for.
    pub dir: PathBuf,
}

/// Binary `name`, next to this executable, or which one is missing and where it was looked for.
pub fn require(name: &'static str) -> Result<PathBuf, MissingBinary> {
    find(name).ok_or_else(|| MissingBinary {
        name,
        dir: target_dir().unwrap_or_default(),
    })
}

/// Binary `name` of workspace package `package` for a test: built with `cargo build` when it is
/// missing (e.g. when only this test crate was asked for). Panics, as a test should, when it
/// cannot be had.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    if let Some(bin) = find(name) {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", package, "--bin", name])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "building {name} (package {package}) failed"
    );
    find(name).unwrap_or_else(|| panic!("{name} is still missing after cargo build"))
}
