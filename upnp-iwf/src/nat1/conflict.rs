//! Conflict detection: does another table already DNAT (or redirect) a WAN port?
//!
//! Spec `nat1-nftables.md`, "Conflicts with the router's own port forwards": a static DNAT for
//! the same port in another table can win or lose depending on priorities, so the IGD answers
//! 729 ConflictWithOtherMechanisms instead of installing a rule that may do nothing.
//!
//! The backend does not list the whole ruleset (that would include our own table, whose size
//! grows with the mappings): it lists the chains of all tables ([`nat_tables`], `nft -j list
//! chains`, no rules) and then each other table that has a base chain of type nat (`nft -j
//! list table FAMILY NAME`): only those can DNAT a packet (a `dnat` statement is accepted only
//! in, or in a chain jumped to from, a nat chain of the same table). [`find_conflict`] takes
//! such a listing, or a whole ruleset.
//!
//! The listings are walked as plain JSON rather than through the typed schema: a router's firewall may use statements the schema does not know yet (a newer nft),
//! and one unknown statement in someone else's table must not make every install fail.
//!
//! A rule of another table is a conflict for `protocol`/`port` when it has a `dnat` or
//! `redirect` statement and its matches do not exclude the packet: a destination-port match
//! (`tcp dport`, `th dport`, with a number, an anonymous set or a range) that contains the
//! port, no protocol match that excludes the protocol (`meta l4proto`, `ip protocol`), and no
//! `iifname` match that excludes the WAN interface. Rules without a destination-port match
//! (a DMZ host for every port) and matches against named sets (`@ports`) are not
//! counted: they are not port forwards this code can judge.

use serde_json::Value;

use super::Nat1Error;
use super::batch::proto_name;
use crate::mapping::Protocol;

/// The first table other than ours (`own_family`/`own_table`) in `ruleset` (the output of
/// `nft -j list ruleset`, or of `nft -j list table FAMILY NAME`) whose rules DNAT or redirect `protocol` `port` arriving on
/// `wan_iface`, as `family name` (e.g. `inet fw4`); `None` if there is none. Output that is
/// not JSON is [`Nat1Error::Rejected`] with the parser's message; unknown objects and
/// statements are skipped.
pub fn find_conflict(
    ruleset: &str,
    own_family: &str,
    own_table: &str,
    wan_iface: &str,
    protocol: Protocol,
    port: u16,
) -> Result<Option<String>, Nat1Error> {
    let doc: Value = serde_json::from_str(ruleset)
        .map_err(|e| Nat1Error::Rejected(format!("unreadable `nft -j list` output: {e}")))?;
    for obj in objects(&doc)? {
        let Some(rule) = obj.get("rule") else {
            continue;
        };
        let family = rule.get("family").and_then(Value::as_str).unwrap_or("");
        let table = rule.get("table").and_then(Value::as_str).unwrap_or("");
        if family == own_family && table == own_table {
            continue;
        }
        let Some(exprs) = rule.get("expr").and_then(Value::as_array) else {
            continue;
        };
        if rule_forwards(exprs, wan_iface, protocol, port) {
            return Ok(Some(format!("{family} {table}")));
        }
    }
    Ok(None)
}

/// The `nftables` array of an nft JSON document.
fn objects(doc: &Value) -> Result<&Vec<Value>, Nat1Error> {
    doc.get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| Nat1Error::Rejected("`nft -j list` printed no \"nftables\" array".into()))
}

/// What `nft -j list chains` says about the tables (see [`nat_tables`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChainListing {
    /// The tables other than ours that have a base chain of type nat, as `(family, name)`,
    /// each once, in listing order.
    pub nat_tables: Vec<(String, String)>,
    /// The names of our own table's chains (empty: no such table, or one without chains,
    /// hence without rules).
    pub own_chains: Vec<String>,
}

/// Reads `chains` (the output of `nft -j list chains`, which lists no rules, so its size does
/// not grow with our mappings; nft 1.0.6's `list tables` fetches every rule and does). Output
/// that is not JSON is [`Nat1Error::Rejected`]; odd objects are skipped.
pub(crate) fn nat_tables(
    chains: &str,
    own_family: &str,
    own_table: &str,
) -> Result<ChainListing, Nat1Error> {
    let doc: Value = serde_json::from_str(chains)
        .map_err(|e| Nat1Error::Rejected(format!("unreadable `nft -j list chains`: {e}")))?;
    let mut listing = ChainListing::default();
    for obj in objects(&doc)? {
        let Some(chain) = obj.get("chain") else {
            continue;
        };
        let field = |k| chain.get(k).and_then(Value::as_str).unwrap_or("");
        let (family, table) = (field("family"), field("table"));
        if family == own_family && table == own_table {
            listing.own_chains.push(field("name").to_owned());
            continue;
        }
        if field("type") == "nat"
            && !family.is_empty()
            && !listing
                .nat_tables
                .iter()
                .any(|(f, t)| f == family && t == table)
        {
            listing
                .nat_tables
                .push((family.to_owned(), table.to_owned()));
        }
    }
    Ok(listing)
}

/// What a right-hand side is tested for.
#[derive(Clone, Copy)]
enum Needle<'a> {
    /// A port number (also inside `{"range": [lo, hi]}`).
    Port(u16),
    /// A protocol, by name (`tcp`) or number (6).
    Proto(&'a str),
    /// An interface name, against names and `prefix*` wildcards.
    Iface(&'a str),
}

impl Needle<'_> {
    fn is(self, v: &Value) -> bool {
        match self {
            Needle::Port(p) => v.as_u64() == Some(u64::from(p)),
            Needle::Proto(name) => {
                let number = if name == "tcp" { 6 } else { 17 };
                v.as_str() == Some(name) || v.as_u64() == Some(number)
            }
            Needle::Iface(iface) => match v.as_str() {
                Some(s) => match s.strip_suffix('*') {
                    Some(prefix) => iface.starts_with(prefix),
                    None => s == iface,
                },
                None => false,
            },
        }
    }

    fn in_range(self, lo: &Value, hi: &Value) -> Option<bool> {
        match self {
            Needle::Port(p) => {
                let (lo, hi) = (lo.as_u64()?, hi.as_u64()?);
                Some(lo <= u64::from(p) && u64::from(p) <= hi)
            }
            _ => None,
        }
    }
}

/// Whether the right-hand side `right` (an immediate, an anonymous `{"set": [...]}` or a
/// `{"range": [lo, hi]}`) contains `needle`; `None` when it cannot be judged (a named set
/// `@x`, a map, a concatenation, something unknown).
fn contains(right: &Value, needle: Needle<'_>) -> Option<bool> {
    if right.as_str().is_some_and(|s| s.starts_with('@')) {
        return None;
    }
    if right.is_string() || right.is_number() {
        return Some(needle.is(right));
    }
    if let Some(items) = right.get("set").and_then(Value::as_array) {
        let mut any = false;
        for item in items {
            any |= contains(item, needle)?;
        }
        return Some(any);
    }
    if let Some([lo, hi]) = right
        .get("range")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return needle.in_range(lo, hi);
    }
    None
}

/// Whether one rule's statements DNAT/redirect the port (see the module doc).
fn rule_forwards(exprs: &[Value], wan_iface: &str, protocol: Protocol, port: u16) -> bool {
    let proto = proto_name(protocol);
    let mut translates = false;
    let mut port_matched = false;
    for stmt in exprs {
        if stmt.get("dnat").is_some() || stmt.get("redirect").is_some() {
            translates = true;
            continue;
        }
        let Some(m) = stmt.get("match") else {
            continue;
        };
        let (Some(left), Some(right)) = (m.get("left"), m.get("right")) else {
            continue;
        };
        let positive = match m.get("op").and_then(Value::as_str).unwrap_or("==") {
            "==" | "in" => true,
            "!=" => false,
            // Comparisons (`<`, `>=`, …) and bit operations: judged as not excluding.
            _ => continue,
        };
        // `Some(false)`: this match rules the packet out; `None`: not judged.
        let excluded = |needle| contains(right, needle).map(|hit| hit != positive);
        if let Some(p) = left.get("payload") {
            let field = p.get("field").and_then(Value::as_str).unwrap_or("");
            let hdr = p.get("protocol").and_then(Value::as_str).unwrap_or("");
            if field == "dport" && (hdr == proto || hdr == "th") {
                match excluded(Needle::Port(port)) {
                    Some(false) => port_matched = true,
                    // Excluded, or a named set or something else this code cannot judge.
                    Some(true) | None => return false,
                }
            } else if field == "dport" && matches!(hdr, "tcp" | "udp" | "sctp" | "dccp") {
                // `udp dport …` implies udp: a rule for another protocol.
                if positive {
                    return false;
                }
            } else if hdr == "ip"
                && field == "protocol"
                && excluded(Needle::Proto(proto)) == Some(true)
            {
                return false;
            }
        } else if let Some(meta) = left.get("meta") {
            let key = meta.get("key").and_then(Value::as_str);
            let needle = match key {
                Some("l4proto") => Needle::Proto(proto),
                Some("iifname") => Needle::Iface(wan_iface),
                _ => continue,
            };
            if excluded(needle) == Some(true) {
                return false;
            }
        }
    }
    translates && port_matched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list ruleset` (nft 1.0.6) of a fw4-like firewall (OpenWrt 23.05 layout: inet
    /// fw4, `dstnat_wan`/`srcnat_wan`, `ct status dnat accept` in `forward_wan`) with port
    /// forwards of TCP 8080, TCP+UDP 6000-6010 and a UDP redirect of 7000/7001, plus our own
    /// table forwarding UDP 40000.
    const FW4_RULESET: &str = include_str!("testdata/fw4_ruleset.json");
    /// The same firewall with a static port forward of TCP 5000 in `dstnat_wan`.
    const FW4_FORWARD_5000: &str = include_str!("testdata/fw4_forward_5000.json");

    fn conflict(ruleset: &str, protocol: Protocol, port: u16) -> Option<String> {
        find_conflict(ruleset, "ip", "upnp_iwf", "wan0", protocol, port).expect("valid JSON")
    }

    // spec "Conflicts with the router's own port forwards" → 729.
    #[test]
    fn a_static_fw4_port_forward_of_tcp_5000_is_a_conflict_for_tcp_5000_only() {
        assert_eq!(
            conflict(FW4_FORWARD_5000, Protocol::Tcp, 5000).as_deref(),
            Some("inet fw4")
        );
        assert_eq!(conflict(FW4_FORWARD_5000, Protocol::Udp, 5000), None);
        assert_eq!(conflict(FW4_FORWARD_5000, Protocol::Tcp, 5001), None);
        assert_eq!(conflict(FW4_RULESET, Protocol::Tcp, 5000), None);
    }

    #[test]
    fn fw4_forwards_by_set_range_and_redirect_are_found() {
        for (proto, port) in [
            (Protocol::Tcp, 8080),
            (Protocol::Tcp, 6000),
            (Protocol::Udp, 6005),
            (Protocol::Udp, 6010),
            (Protocol::Udp, 7001),
        ] {
            assert_eq!(
                conflict(FW4_RULESET, proto, port).as_deref(),
                Some("inet fw4"),
                "{proto:?} {port}"
            );
        }
        for (proto, port) in [
            (Protocol::Udp, 8080),
            (Protocol::Tcp, 6011),
            (Protocol::Tcp, 7000),
            (Protocol::Udp, 68), // an accept, not a DNAT
        ] {
            assert_eq!(conflict(FW4_RULESET, proto, port), None, "{proto:?} {port}");
        }
    }

    #[test]
    fn our_own_table_is_never_a_conflict() {
        assert_eq!(conflict(FW4_RULESET, Protocol::Udp, 40000), None);
        // Under another name it would be.
        let r = find_conflict(FW4_RULESET, "ip", "other", "wan0", Protocol::Udp, 40000);
        assert_eq!(r, Ok(Some("ip upnp_iwf".to_owned())));
    }

    #[test]
    fn a_dnat_for_another_input_interface_is_no_conflict() {
        let lan_only = r#"{"nftables": [{"rule": {"family": "ip", "table": "dns", "chain": "pre",
            "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br-lan"}},
                     {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
                     {"redirect": {"port": 53}}]}}]}"#;
        assert_eq!(conflict(lan_only, Protocol::Udp, 53), None);
        let wan_wild = lan_only.replace("br-lan", "wan*");
        assert_eq!(
            conflict(&wan_wild, Protocol::Udp, 53).as_deref(),
            Some("ip dns")
        );
        let not_lan = lan_only.replace(
            r#""op": "==", "left": {"meta""#,
            r#""op": "!=", "left": {"meta""#,
        );
        assert_eq!(
            conflict(&not_lan, Protocol::Udp, 53).as_deref(),
            Some("ip dns")
        );
    }

    #[test]
    fn named_sets_and_dmz_rules_are_not_judged() {
        let named = r#"{"nftables": [{"rule": {"family": "ip", "table": "t", "chain": "c",
            "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@fwd"}},
                     {"dnat": {"addr": "192.168.0.5"}}]}},
            {"rule": {"family": "ip", "table": "t", "chain": "c",
            "expr": [{"dnat": {"addr": "192.168.0.6"}}]}}]}"#;
        assert_eq!(conflict(named, Protocol::Tcp, 80), None);
    }

    // Only other tables with a nat base chain are listed for the conflict check; ours never.
    #[test]
    fn nat_tables_are_the_other_tables_with_a_nat_chain() {
        let listing = nat_tables(FW4_RULESET, "ip", "upnp_iwf").expect("valid JSON");
        assert_eq!(
            listing.nat_tables,
            vec![("inet".to_owned(), "fw4".to_owned())]
        );
        assert_eq!(listing.own_chains, ["prerouting", "postrouting"]);
        // Under another name our table is just another nat table, and ours is missing.
        let listing = nat_tables(FW4_RULESET, "ip", "other").expect("valid JSON");
        assert_eq!(listing.nat_tables.len(), 2);
        assert_eq!(
            listing.nat_tables[1],
            ("ip".to_owned(), "upnp_iwf".to_owned())
        );
        assert!(listing.own_chains.is_empty());
        let filter_only = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "f", "name": "input", "type": "filter", "hook": "input", "prio": 0}},
            {"chain": {"family": "ip", "table": "f", "name": "regular"}}, 1, {"chain": 2}]}"#;
        assert_eq!(
            nat_tables(filter_only, "ip", "upnp_iwf"),
            Ok(ChainListing::default())
        );
        for bad in ["", "[", "{}"] {
            assert!(nat_tables(bad, "ip", "upnp_iwf").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn odd_output_never_panics() {
        for bad in ["", "[", "3", "{}", "{\"nftables\": {}}"] {
            assert!(
                find_conflict(bad, "ip", "upnp_iwf", "wan0", Protocol::Tcp, 1).is_err(),
                "{bad:?}"
            );
        }
        // Well-formed JSON of unexpected shapes is skipped.
        let odd = r#"{"nftables": [1, "x", {"rule": 3}, {"rule": {"expr": [1, {"match": 2},
            {"match": {"left": {"payload": 7}, "right": null}}, {"dnat": null},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": ["a", 2]}}}]}}]}"#;
        assert_eq!(conflict(odd, Protocol::Tcp, 1), None);
    }
}
