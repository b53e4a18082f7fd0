//! Small helpers the end-to-end lab tests share (upnp-iwf + cgn-sim in the NAT444 lab).

use std::time::{Duration, Instant};

use crate::lab::{Lab, Node};

/// Debian's python3, which has python3-miniupnpc (the `python3` in `PATH` may be another one).
pub const PY: &str = "/usr/bin/python3";

/// The home router's own firewall (not the IWF's): masquerade the LAN towards the WAN. The
/// IWF's table `ip upnp_iwf` sits in front of it (docs/architecture.md, "NAT1 on nftables").
pub const ROUTER_FW: &str = "table ip routerfw {\n  chain post { type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan0\" masquerade\n  }\n}\n";

/// The IGD's description URL on the home router's LAN address.
pub const IGD_URL: &str = "http://192.168.0.1:5000/rootDesc.xml";

/// A workspace binary's path as a string (see [`crate::bins::workspace_bin`]).
pub fn bin(name: &str) -> String {
    crate::bins::workspace_bin(name, name)
        .to_string_lossy()
        .into_owned()
}

/// Polls `cond` every 50 ms for at most `secs` seconds; its last value.
pub fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs `argv` in `node` (at most `secs` seconds) and returns stdout followed by stderr.
///
/// # Panics
/// When the command cannot be run at all (a test helper: the test fails with the reason).
pub fn out(lab: &Lab, node: Node, argv: &[&str], secs: u64) -> String {
    let o = lab
        .exec_timeout(node, argv, Duration::from_secs(secs))
        .expect("command runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
