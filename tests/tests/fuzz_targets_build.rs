//! Every parser has a fuzz target in `fuzz/` (a workspace of its own, for cargo-fuzz's
//! nightly-only flags), which `cargo test --workspace` never builds. A target that nobody
//! builds rots: `soap_action` did not compile for a whole session after the live-policy
//! change. This test type-checks all of them against today's crates (`cargo check`, without
//! libFuzzer's C++ runtime, so no C++ compiler is needed), in a target directory of its own.

use std::path::Path;
use std::process::Command;

#[test]
fn fuzz_targets_compile_against_todays_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root.join("fuzz"))
        // cargo-fuzz's crates expect a nightly toolchain; this is how it runs on stable.
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["check", "--bins", "--no-default-features", "--target-dir"])
        .arg(root.join("target").join("fuzz-check"))
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("could not compile") && fetch_failed(&stderr) {
        // The fuzz crate's own dependencies (libfuzzer-sys, arbitrary) are not in the main
        // workspace's lock: without a registry to fetch them from there is nothing to check.
        println!("SKIPPED: the fuzz crate's dependencies cannot be fetched:\n{stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "a fuzz target no longer compiles:\n{stderr}"
    );
}

/// Cargo's output when it could not get a crate (offline, no registry), not a compile error.
fn fetch_failed(stderr: &str) -> bool {
    [
        "failed to download",
        "failed to get",
        "failed to query replaced source",
        "unable to update",
        "no matching package named",
        "attempting to make an HTTP request, but --offline",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}
