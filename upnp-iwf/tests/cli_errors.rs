//! Issue #13 item 6: when upnp-iwf cannot start, it says so in one line naming what failed and
//! what to do, exits 1, and prints no backtrace even with RUST_BACKTRACE set; `upnp-iwf ctl`
//! mistakes are one line too (exit 2 for usage, 1 when no daemon answers).

use std::process::Command;

/// (exit code, stderr) of `upnp-iwf ARGS`.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_upnp-iwf"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("upnp-iwf runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, no backtrace:\n{err}");
    lines[0]
}

#[test]
fn start_errors_are_one_line_naming_the_flag_and_the_fix() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[],
            "upnp-iwf: no LAN interface: give --lan IFACE (or lan = [\"IFACE\"] in the config file), e.g. --lan br-lan",
        ),
        (
            &["--lan", "nosuch0"],
            "upnp-iwf: interface nosuch0 has no IPv4 address (is it up and addressed? `ip -4 addr show nosuch0`)",
        ),
        (
            &["--lan", "lo", "--upstream", "pcp"],
            "upnp-iwf: --upstream pcp needs --wan IFACE (the interface towards the CGN)",
        ),
        (
            &["--config", "/nonexistent/upnp-iwf.toml"],
            "upnp-iwf: cannot read config file /nonexistent/upnp-iwf.toml: No such file or directory (os error 2)",
        ),
    ];
    for (args, want) in cases {
        let (code, err) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(one_line(&err), want, "{args:?}");
    }
}

#[test]
fn ctl_mistakes_are_one_line() {
    let (code, err) = run(&["ctl", "--ctl", "/nonexistent/ctl.sock", "status"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        one_line(&err),
        "upnp-iwf ctl: no upnp-iwf answers on /nonexistent/ctl.sock (No such file or directory (os error 2)) — is the daemon running, with this --ctl path?"
    );
    let (code, err) = run(&["ctl", "--ctl", "/nonexistent/ctl.sock", "reboot"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        one_line(&err),
        "upnp-iwf ctl: unknown command \"reboot\" (try: status, mappings, delete PROTO PORT, renew-all)"
    );
}
