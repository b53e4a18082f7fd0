//! Who may do what (upnp-igd.md §4.2): LAN-only service, secure mode (a client maps only to
//! itself), miniupnpd-style allow/deny permission rules (first match wins, no match = allow)
//! and a per-client mapping quota.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

pub use pcp_client::prefix::Ipv4Prefix;

/// Error for a malformed prefix, port range or rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {text:?}")]
pub struct ParseError {
    /// What was being parsed.
    pub what: &'static str,
    /// The offending text.
    pub text: String,
}

fn perr(what: &'static str, text: &str) -> ParseError {
    ParseError {
        what,
        text: text.to_owned(),
    }
}

fn parse_range(s: &str) -> Result<RangeInclusive<u16>, ParseError> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| perr("port range", s))?;
    let b: u16 = b.trim().parse().map_err(|_| perr("port range", s))?;
    if a > b {
        return Err(perr("port range", s));
    }
    Ok(a..=b)
}

/// Verdict of a permission rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Permit.
    Allow,
    /// Refuse (606 on IGD:2, 718 on IGD:1).
    Deny,
}

/// `allow|deny <ext-port-range> <ip/mask> <int-port-range>` (miniupnpd syntax; the address
/// tested is the InternalClient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRule {
    /// Allow or deny.
    pub action: RuleAction,
    /// External ports the rule covers.
    pub external_ports: RangeInclusive<u16>,
    /// Internal clients the rule covers.
    pub client: Ipv4Prefix,
    /// Internal ports the rule covers.
    pub internal_ports: RangeInclusive<u16>,
}

impl FromStr for PermissionRule {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [action, ext, client, int] = parts.as_slice() else {
            return Err(perr("permission rule", s));
        };
        let action = match action.to_ascii_lowercase().as_str() {
            "allow" => RuleAction::Allow,
            "deny" => RuleAction::Deny,
            _ => return Err(perr("permission rule", s)),
        };
        Ok(PermissionRule {
            action,
            external_ports: parse_range(ext)?,
            client: client.parse().map_err(|_| perr("permission rule", s))?,
            internal_ports: parse_range(int)?,
        })
    }
}

impl PermissionRule {
    fn matches(&self, ext: u16, client: Ipv4Addr, int: u16) -> bool {
        self.external_ports.contains(&ext)
            && self.client.contains(client)
            && self.internal_ports.contains(&int)
    }
}

/// Ports OpenWrt's miniupnpd package refuses by default (FTP, telnet, MS RPC, NetBIOS, SMB,
/// RDP): denied as external or internal port by the built-in rules.
pub const DEFAULT_DENIED_PORTS: [RangeInclusive<u16>; 6] = [
    21..=21,
    23..=23,
    135..=135,
    137..=139,
    445..=445,
    3389..=3389,
];

/// The built-in rules evaluated after the configured ones (issue #13 item 5, secure
/// defaults a router owner expects): deny [`DEFAULT_DENIED_PORTS`] (external or internal),
/// allow 1024–65535 to 1024–65535 (miniupnpd's shipped rule), deny everything else. So a
/// port below 1024 is refused unless a configured rule allows it.
pub fn builtin_rules() -> Vec<PermissionRule> {
    let any = Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0);
    let mut v = Vec::new();
    for r in DEFAULT_DENIED_PORTS {
        v.push(PermissionRule {
            action: RuleAction::Deny,
            external_ports: r.clone(),
            client: any,
            internal_ports: 0..=u16::MAX,
        });
        v.push(PermissionRule {
            action: RuleAction::Deny,
            external_ports: 0..=u16::MAX,
            client: any,
            internal_ports: r,
        });
    }
    v.push(PermissionRule {
        action: RuleAction::Allow,
        external_ports: 1024..=u16::MAX,
        client: any,
        internal_ports: 1024..=u16::MAX,
    });
    v.push(PermissionRule {
        action: RuleAction::Deny,
        external_ports: 0..=u16::MAX,
        client: any,
        internal_ports: 0..=u16::MAX,
    });
    v
}

impl fmt::Display for PermissionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        };
        write!(
            f,
            "{action} {}-{} {} {}-{}",
            self.external_ports.start(),
            self.external_ports.end(),
            self.client,
            self.internal_ports.start(),
            self.internal_ports.end()
        )
    }
}

/// Why policy refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The peer is not on a LAN prefix.
    #[error("request from outside the LAN")]
    NotLan,
    /// Secure mode: InternalClient is not the caller.
    #[error("secure mode: internal client is not the caller")]
    NotCaller,
    /// A deny rule matched.
    #[error("refused by a permission rule")]
    Rule,
    /// The client holds its maximum number of mappings.
    #[error("per-client mapping quota reached")]
    Quota,
}

/// The policy of one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Prefixes of the LAN; only peers inside them are served (SSDP and HTTP).
    pub lan: Vec<Ipv4Prefix>,
    /// Secure mode (default on): InternalClient must be the caller, and a client may delete
    /// only its own mappings.
    pub secure_mode: bool,
    /// Configured permission rules, first match wins.
    pub rules: Vec<PermissionRule>,
    /// Evaluate [`builtin_rules`] after `rules` (default on). Off, no match allows
    /// (miniupnpd's behaviour without rules).
    pub builtin_rules: bool,
    /// Maximum mappings per internal client (`None`: no limit).
    pub max_per_client: Option<usize>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lan: Vec::new(),
            secure_mode: true,
            rules: Vec::new(),
            builtin_rules: true,
            max_per_client: Some(128),
        }
    }
}

impl Policy {
    /// Whether `ip` (IPv4-mapped IPv6 unmapped first) is on a LAN prefix. IPv6 peers are not
    /// served: this IGD manages IPv4 mappings only.
    pub fn is_lan(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.lan.iter().any(|p| p.contains(v4)),
            IpAddr::V6(_) => false,
        }
    }

    /// Secure-mode check of `NewInternalClient` against the TCP peer.
    pub fn check_client(&self, caller: Ipv4Addr, client: Ipv4Addr) -> Result<(), Denied> {
        if self.secure_mode && caller != client {
            Err(Denied::NotCaller)
        } else {
            Ok(())
        }
    }

    /// Whether the permission rules allow mapping `ext` to `client:int`: the configured
    /// rules, then (unless turned off) the built-in ones; first match wins.
    pub fn permits(&self, ext: u16, client: Ipv4Addr, int: u16) -> bool {
        if let Some(r) = self.rules.iter().find(|r| r.matches(ext, client, int)) {
            return r.action == RuleAction::Allow;
        }
        if self.builtin_rules {
            return builtin_allows(ext, int);
        }
        true
    }

    /// External port ranges the rules allow for `client:int` (for `AddAnyPortMapping`).
    pub fn permitted_ports(&self, client: Ipv4Addr, int: u16) -> Vec<RangeInclusive<u16>> {
        let mut out: Vec<RangeInclusive<u16>> = Vec::new();
        let mut start: Option<u16> = None;
        for p in 1..=u16::MAX {
            let ok = self.permits(p, client, int);
            match (ok, start) {
                (true, None) => start = Some(p),
                (false, Some(s)) => {
                    out.push(s..=p - 1);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(s..=u16::MAX);
        }
        out
    }

    /// Quota check: `held` is how many mappings `client` has, not counting one being
    /// refreshed.
    pub fn check_quota(&self, held: usize) -> Result<(), Denied> {
        match self.max_per_client {
            Some(max) if held >= max => Err(Denied::Quota),
            _ => Ok(()),
        }
    }
}

/// [`builtin_rules`] evaluated without building them (hot path of `permitted_ports`).
fn builtin_allows(ext: u16, int: u16) -> bool {
    let denied = |p: u16| DEFAULT_DENIED_PORTS.iter().any(|r| r.contains(&p));
    !denied(ext) && !denied(int) && ext >= 1024 && int >= 1024
}

/// A [`Policy`] that can be replaced while requests read it (SIGHUP reload): readers take a
/// snapshot with [`LivePolicy::get`], a reload swaps it whole with [`LivePolicy::set`].
#[derive(Debug, Default)]
pub struct LivePolicy(std::sync::RwLock<std::sync::Arc<Policy>>);

impl LivePolicy {
    /// The policy in force now.
    pub fn get(&self) -> std::sync::Arc<Policy> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the policy; requests already running keep the snapshot they took.
    pub fn set(&self, p: Policy) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(p);
    }

    /// Mutable access when nothing else holds it (set-up and tests).
    pub fn get_mut(&mut self) -> &mut Policy {
        std::sync::Arc::make_mut(
            self.0
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl From<Policy> for LivePolicy {
    fn from(p: Policy) -> Self {
        LivePolicy(std::sync::RwLock::new(std::sync::Arc::new(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Policy {
        Policy {
            lan: vec!["192.168.0.0/24".parse().expect("prefix")],
            rules: rules.iter().map(|r| r.parse().expect("rule")).collect(),
            ..Policy::default()
        }
    }

    const C: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);

    // upnp-igd.md §4.2: SSDP and HTTP only for LAN peers; IPv4-mapped IPv6 is unmapped.
    #[test]
    fn only_lan_prefixes_are_served_and_mapped_v6_is_unmapped() {
        let p = policy(&[]);
        assert!(p.is_lan("192.168.0.10".parse().expect("ip")));
        assert!(p.is_lan("::ffff:192.168.0.10".parse().expect("ip")));
        assert!(!p.is_lan("100.64.0.1".parse().expect("ip")));
        assert!(!p.is_lan("fe80::1".parse().expect("ip")));
    }

    #[test]
    fn secure_mode_requires_internal_client_to_be_the_caller() {
        let mut p = policy(&[]);
        assert_eq!(
            p.check_client(C, Ipv4Addr::new(192, 168, 0, 11)),
            Err(Denied::NotCaller)
        );
        assert_eq!(p.check_client(C, C), Ok(()));
        p.secure_mode = false;
        assert_eq!(p.check_client(C, Ipv4Addr::new(192, 168, 0, 11)), Ok(()));
    }

    // miniupnpd.conf: first match wins, no match = allow.
    #[test]
    fn permission_rules_first_match_wins_default_allow() {
        let p = policy(&[
            "allow 1024-65535 192.168.0.0/24 1024-65535",
            "deny 0-65535 0.0.0.0/0 0-65535",
        ]);
        assert!(p.permits(5000, C, 5000));
        assert!(!p.permits(80, C, 80));
        assert!(!p.permits(5000, Ipv4Addr::new(10, 0, 0, 1), 5000));
        assert!(
            Policy {
                builtin_rules: false,
                ..policy(&[])
            }
            .permits(22, C, 22),
            "without the built-in rules no match allows"
        );
        assert_eq!(p.permitted_ports(C, 5000), vec![1024..=65535]);
        assert_eq!(p.permitted_ports(C, 80), Vec::<RangeInclusive<u16>>::new());
    }

    // Issue #13 item 5 (miniupnpd.conf's shipped rule allows 1024-65535 only; OpenWrt also
    // refuses 21 23 135 137-139 445 3389): with no rule configured, ports below 1024 and
    // the listed ones are refused; a configured rule can allow them.
    #[test]
    fn ports_below_1024_and_risky_ports_are_refused_unless_a_rule_allows_them() {
        let p = policy(&[]);
        assert!(!p.permits(80, C, 80));
        assert!(!p.permits(5000, C, 80), "internal port below 1024");
        assert!(!p.permits(80, C, 5000), "external port below 1024");
        assert!(!p.permits(3389, C, 3389));
        assert!(!p.permits(5000, C, 445), "SMB refused as internal port too");
        assert!(p.permits(5000, C, 5000));
        assert!(p.permits(65535, C, 1024));
        assert_eq!(p.permitted_ports(C, 5000), vec![1024..=3388, 3390..=65535]);
        let allowed = policy(&["allow 80 192.168.0.10/32 80"]);
        assert!(allowed.permits(80, C, 80));
        assert!(
            !allowed.permits(80, Ipv4Addr::new(192, 168, 0, 11), 80),
            "only the host the rule names"
        );
        // The built-in rules, as text, evaluate as the fast path does.
        let spelled = Policy {
            rules: builtin_rules(),
            builtin_rules: false,
            ..policy(&[])
        };
        for (e, i) in [
            (80, 80),
            (5000, 5000),
            (3389, 5000),
            (1024, 1023),
            (139, 139),
        ] {
            assert_eq!(spelled.permits(e, C, i), p.permits(e, C, i), "{e}->{i}");
        }
        assert_eq!(
            builtin_rules().last().map(ToString::to_string).as_deref(),
            Some("deny 0-65535 0.0.0.0/0 0-65535")
        );
    }

    #[test]
    fn malformed_rules_and_prefixes_are_rejected() {
        assert!(
            "allow 1-2 192.168.0.0/24"
                .parse::<PermissionRule>()
                .is_err()
        );
        assert!(
            "permit 1-2 0.0.0.0/0 1-2"
                .parse::<PermissionRule>()
                .is_err()
        );
        assert!("allow 9-2 0.0.0.0/0 1-2".parse::<PermissionRule>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Prefix>().is_err());
        assert_eq!(
            "10.1.2.3".parse::<Ipv4Prefix>().expect("bare"),
            Ipv4Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 32)
        );
    }

    #[test]
    fn quota_counts_existing_mappings() {
        let p = Policy {
            max_per_client: Some(2),
            ..Policy::default()
        };
        assert_eq!(p.check_quota(1), Ok(()));
        assert_eq!(p.check_quota(2), Err(Denied::Quota));
    }
}
