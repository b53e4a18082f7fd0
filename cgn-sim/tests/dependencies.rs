//! design.md §2: cgn-sim uses pcp-client's codec only — not its tokio client, not the `pcpc`
//! CLI (daemon-engine issue, defect 7). Checked on the resolved manifest with `cargo metadata`.

use std::process::Command;

#[test]
fn cgn_sim_takes_pcp_client_without_the_tokio_client_or_the_cli() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let cgn = packages
        .iter()
        .find(|p| p["name"] == "cgn-sim")
        .expect("cgn-sim in the workspace");
    let dep = cgn["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .find(|d| d["name"] == "pcp-client" && d["kind"].is_null())
        .expect("pcp-client is a normal dependency");
    assert_eq!(dep["uses_default_features"], false, "{dep}");
    let features = dep["features"].as_array().expect("features");
    assert!(
        !features.iter().any(|f| f == "tokio" || f == "cli"),
        "{dep}"
    );
}
