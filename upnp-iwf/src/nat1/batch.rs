//! The JSON batches (`nft -j -f -`) that change our own table, made from the `nftables` crate's
//! typed schema, and the reading back of that table (or of nft's `--echo` of a batch).
//!
//! Our table `ip <table>` has two base chains: `prerouting` (type nat, priority dstnat, -100)
//! with one DNAT rule per mapping, and `postrouting` (type nat, priority srcnat - 10, 90) with
//! one SNAT rule per mapping, so the SNAT is in before a router's masquerade at srcnat (100):
//! the first nat chain that performs NAT wins (spec, "How NAT decisions are made"). Both rules
//! of a mapping carry the same comment ([`rule_comment`]), which is how [`parse_rules`] finds
//! them again.
//!
//! Each batch is one transaction and its size does not depend on how many mappings the table
//! holds, except [`TableSpec::rebuild`] (reset):
//! * [`TableSpec::add_mapping`]: `add rule` ×2 (run with `--echo --handle`, so nft prints the
//!   two new rule handles back);
//! * [`TableSpec::delete_rules`]: `delete rule … handle H` for exactly the given handles;
//! * [`TableSpec::rebuild`]: delete the table whatever it holds and build it anew;
//! * [`TableSpec::delete`]: delete the table.
//!
//! Established flows keep their conntrack bindings through any of these, so other mappings are
//! not disturbed.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Deserialize;

use super::{Nat1Error, Nat1Rule, WanSide};
use crate::mapping::Protocol;

/// Start of the comment on both rules of a mapping: `upnp_iwf:udp:40000:192.168.0.10:5000`.
pub const RULE_COMMENT_PREFIX: &str = "upnp_iwf:";

/// Name of our DNAT base chain.
pub(crate) const PREROUTING: &str = "prerouting";
/// Name of our SNAT base chain.
pub(crate) const POSTROUTING: &str = "postrouting";

/// The comment both rules of `rule` carry, e.g. `upnp_iwf:udp:40000:192.168.0.10:5000`.
pub fn rule_comment(rule: &Nat1Rule) -> String {
    format!(
        "{RULE_COMMENT_PREFIX}{}:{}:{}:{}",
        proto_name(rule.protocol),
        rule.wan_port,
        rule.client,
        rule.client_port
    )
}

/// Reads a [`rule_comment`] back; `None` for anything else (a foreign or edited comment).
pub fn parse_comment(comment: &str) -> Option<Nat1Rule> {
    let rest = comment.strip_prefix(RULE_COMMENT_PREFIX)?;
    let mut parts = rest.split(':');
    let protocol = Protocol::parse(parts.next()?)?;
    let wan_port: u16 = parts.next()?.parse().ok()?;
    let client: Ipv4Addr = parts.next()?.parse().ok()?;
    let client_port: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || wan_port == 0 || client_port == 0 {
        return None;
    }
    Some(Nat1Rule {
        protocol,
        wan_port,
        client,
        client_port,
    })
}

/// nft's lower-case protocol name.
pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Builds batches for one table (`ip <name>`) with its two chains at the given priorities.
#[derive(Debug, Clone)]
pub(crate) struct TableSpec<'a> {
    pub name: &'a str,
    pub prerouting_prio: i32,
    pub postrouting_prio: i32,
}

impl<'a> TableSpec<'a> {
    fn table(&self) -> Table<'a> {
        Table {
            family: NfFamily::IP,
            name: Cow::Borrowed(self.name),
            handle: None,
        }
    }

    fn chain(&self, name: &'a str, hook: NfHook, prio: i32) -> Chain<'a> {
        Chain {
            family: NfFamily::IP,
            table: Cow::Borrowed(self.name),
            name: Cow::Borrowed(name),
            _type: Some(NfChainType::NAT),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }
    }

    fn chains(&self) -> [Chain<'a>; 2] {
        [
            self.chain(PREROUTING, NfHook::Prerouting, self.prerouting_prio),
            self.chain(POSTROUTING, NfHook::Postrouting, self.postrouting_prio),
        ]
    }

    /// Adds the DNAT and the SNAT rule of `rule` (appended to our two chains, which must
    /// exist). One transaction: used by install.
    pub fn add_mapping(&self, wan: &WanSide, rule: &Nat1Rule) -> Nftables<'a> {
        let mut b = Batch::new();
        self.add_rules(&mut b, wan, std::slice::from_ref(rule));
        b.to_nftables()
    }

    /// Deletes exactly the rules `at` (by chain and handle). One transaction: used by remove.
    pub fn delete_rules(&self, at: &[RuleRef]) -> Nftables<'a> {
        let mut b = Batch::new();
        for r in at {
            b.delete(NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: Cow::Borrowed(self.name),
                chain: Cow::Borrowed(r.chain.name()),
                handle: Some(r.handle),
                ..Rule::default()
            }));
        }
        b.to_nftables()
    }

    /// Deletes the table whatever it holds (a stale one after a crash may have other chains)
    /// and builds it anew with exactly `rules`. One transaction: used by reset.
    pub fn rebuild(&self, wan: &WanSide, rules: &[Nat1Rule]) -> Nftables<'a> {
        let mut b = Batch::new();
        // `add` first so the `delete` cannot fail on a missing table.
        b.add(NfListObject::Table(self.table()));
        b.delete(NfListObject::Table(self.table()));
        b.add(NfListObject::Table(self.table()));
        for chain in self.chains() {
            b.add(NfListObject::Chain(chain));
        }
        self.add_rules(&mut b, wan, rules);
        b.to_nftables()
    }

    /// Deletes the table if it exists. One transaction: used by shutdown.
    pub fn delete(&self) -> Nftables<'a> {
        let mut b = Batch::new();
        b.add(NfListObject::Table(self.table()));
        b.delete(NfListObject::Table(self.table()));
        b.to_nftables()
    }

    fn add_rules(&self, b: &mut Batch<'a>, wan: &WanSide, rules: &[Nat1Rule]) {
        for rule in rules {
            b.add(NfListObject::Rule(self.dnat_rule(wan, rule)));
            b.add(NfListObject::Rule(self.snat_rule(wan, rule)));
        }
    }

    /// `iifname WAN <proto> dport P1 dnat to C:p comment "…"`.
    fn dnat_rule(&self, wan: &WanSide, rule: &Nat1Rule) -> Rule<'a> {
        Rule {
            family: NfFamily::IP,
            table: Cow::Borrowed(self.name),
            chain: Cow::Borrowed(PREROUTING),
            expr: vec![
                eq(
                    meta(MetaKey::Iifname),
                    Expression::String(wan.iface.clone().into()),
                ),
                eq(
                    payload(proto_name(rule.protocol), "dport"),
                    Expression::Number(rule.wan_port.into()),
                ),
                Statement::DNAT(Some(NAT {
                    addr: Some(Expression::String(rule.client.to_string().into())),
                    family: None,
                    port: Some(Expression::Number(rule.client_port.into())),
                    flags: None,
                })),
            ]
            .into(),
            handle: None,
            index: None,
            comment: Some(rule_comment(rule).into()),
        }
    }

    /// `oifname WAN ip saddr C <proto> sport p snat to W:P1 comment "…"`.
    fn snat_rule(&self, wan: &WanSide, rule: &Nat1Rule) -> Rule<'a> {
        Rule {
            family: NfFamily::IP,
            table: Cow::Borrowed(self.name),
            chain: Cow::Borrowed(POSTROUTING),
            expr: vec![
                eq(
                    meta(MetaKey::Oifname),
                    Expression::String(wan.iface.clone().into()),
                ),
                eq(
                    payload("ip", "saddr"),
                    Expression::String(rule.client.to_string().into()),
                ),
                eq(
                    payload(proto_name(rule.protocol), "sport"),
                    Expression::Number(rule.client_port.into()),
                ),
                Statement::SNAT(Some(NAT {
                    addr: Some(Expression::String(wan.address.to_string().into())),
                    family: None,
                    port: Some(Expression::Number(rule.wan_port.into())),
                    flags: None,
                })),
            ]
            .into(),
            handle: None,
            index: None,
            comment: Some(rule_comment(rule).into()),
        }
    }
}

fn meta<'a>(key: MetaKey) -> Expression<'a> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload<'a>(protocol: &'a str, field: &'a str) -> Expression<'a> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn eq<'a>(left: Expression<'a>, right: Expression<'a>) -> Statement<'a> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// One of our two chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum OurChain {
    /// `prerouting`, the DNAT rules.
    Prerouting,
    /// `postrouting`, the SNAT rules.
    Postrouting,
}

impl OurChain {
    /// The chain's name in our table.
    pub fn name(self) -> &'static str {
        match self {
            OurChain::Prerouting => PREROUTING,
            OurChain::Postrouting => POSTROUTING,
        }
    }

    fn from_name(name: &str) -> Option<OurChain> {
        match name {
            PREROUTING => Some(OurChain::Prerouting),
            POSTROUTING => Some(OurChain::Postrouting),
            _ => None,
        }
    }
}

/// Where one rule sits: our chain and the rule's handle there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RuleRef {
    /// The chain.
    pub chain: OurChain,
    /// nft's handle of the rule (unique within our table while the table exists).
    pub handle: u32,
}

/// The handles of a mapping's two rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Handles {
    /// The DNAT rule in `prerouting`.
    pub dnat: u32,
    /// The SNAT rule in `postrouting`.
    pub snat: u32,
}

impl Handles {
    /// Both rules, for [`TableSpec::delete_rules`].
    pub fn refs(self) -> [RuleRef; 2] {
        [
            RuleRef {
                chain: OurChain::Prerouting,
                handle: self.dnat,
            },
            RuleRef {
                chain: OurChain::Postrouting,
                handle: self.snat,
            },
        ]
    }
}

/// What [`parse_rules`] found in our table (or in nft's echo of a batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReadBack {
    /// Mappings with both their DNAT and SNAT rule present, sorted.
    pub complete: Vec<Nat1Rule>,
    /// Mappings with only one of their two rules (someone edited our table).
    pub half: Vec<Nat1Rule>,
    /// Rules in our table without one of our comments (or in a chain not ours).
    pub foreign: usize,
    /// Every rule with one of our comments in one of our chains, with its handle when nft
    /// printed one, in the order listed.
    pub ours: Vec<(Nat1Rule, OurChain, Option<u32>)>,
}

impl ReadBack {
    /// The handles of `rule`'s rules as listed (usually two; more if someone copied one).
    pub fn refs_of(&self, rule: &Nat1Rule) -> Vec<RuleRef> {
        self.ours
            .iter()
            .filter(|(r, _, _)| r == rule)
            .filter_map(|&(_, chain, handle)| {
                Some(RuleRef {
                    chain,
                    handle: handle?,
                })
            })
            .collect()
    }

    /// The handles of `rule` when exactly one DNAT and one SNAT rule with handles were listed.
    pub fn handles_of(&self, rule: &Nat1Rule) -> Option<Handles> {
        let refs = self.refs_of(rule);
        let one = |chain| {
            let mut it = refs.iter().filter(|r| r.chain == chain);
            match (it.next(), it.next()) {
                (Some(r), None) => Some(r.handle),
                _ => None,
            }
        };
        Some(Handles {
            dnat: one(OurChain::Prerouting)?,
            snat: one(OurChain::Postrouting)?,
        })
    }
}

/// The few fields of nft's JSON this module reads. Everything else (the statements, metainfo,
/// tables, chains) is skipped by serde without being stored, so reading a listing of our table
/// or the echo of a large batch costs little memory beyond nft's output itself.
#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    nftables: Vec<ListedObject<'a>>,
}

/// `{"rule": {...}}` (a listing) or `{"add": {"rule": {...}}}` (an echoed batch).
#[derive(Deserialize)]
struct ListedObject<'a> {
    #[serde(borrow, default)]
    rule: Option<ListedRule<'a>>,
    #[serde(borrow, default)]
    add: Option<EchoedAdd<'a>>,
}

#[derive(Deserialize)]
struct EchoedAdd<'a> {
    #[serde(borrow, default)]
    rule: Option<ListedRule<'a>>,
}

#[derive(Deserialize)]
struct ListedRule<'a> {
    #[serde(borrow)]
    family: Cow<'a, str>,
    #[serde(borrow)]
    table: Cow<'a, str>,
    #[serde(borrow)]
    chain: Cow<'a, str>,
    #[serde(default)]
    handle: Option<u32>,
    #[serde(borrow, default)]
    comment: Option<Cow<'a, str>>,
}

/// Reads the rules of our table `ip <table>` from `nft -j list table ip <table>` output, or
/// from the `--echo --handle` output of one of our batches. Output that is not an nftables
/// JSON document is [`Nat1Error::Rejected`] with the parser's message.
pub(crate) fn parse_rules(json: &str, table: &str) -> Result<ReadBack, Nat1Error> {
    let doc: Listing<'_> = serde_json::from_str(json)
        .map_err(|e| Nat1Error::Rejected(format!("unreadable nft output: {e}")))?;
    let mut dnat = std::collections::BTreeSet::new();
    let mut snat = std::collections::BTreeSet::new();
    let mut back = ReadBack::default();
    for obj in doc.nftables {
        let Some(rule) = obj.rule.or(obj.add.and_then(|a| a.rule)) else {
            continue;
        };
        if rule.family != "ip" || rule.table != table {
            continue;
        }
        let chain = OurChain::from_name(&rule.chain);
        match (rule.comment.as_deref().and_then(parse_comment), chain) {
            (Some(r), Some(chain)) => {
                match chain {
                    OurChain::Prerouting => dnat.insert(r),
                    OurChain::Postrouting => snat.insert(r),
                };
                back.ours.push((r, chain, rule.handle));
            }
            _ => back.foreign += 1,
        }
    }
    back.complete = dnat.intersection(&snat).copied().collect();
    back.half = dnat.symmetric_difference(&snat).copied().collect();
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec() -> TableSpec<'static> {
        TableSpec {
            name: "upnp_iwf",
            prerouting_prio: -100,
            postrouting_prio: 90,
        }
    }

    fn wan() -> WanSide {
        WanSide {
            iface: "wan0".into(),
            address: Ipv4Addr::new(100, 64, 0, 2),
        }
    }

    fn udp() -> Nat1Rule {
        Nat1Rule {
            protocol: Protocol::Udp,
            wan_port: 40000,
            client: Ipv4Addr::new(192, 168, 0, 10),
            client_port: 5000,
        }
    }

    fn to_value(doc: &Nftables<'_>) -> Value {
        serde_json::to_value(doc).expect("batch serialises")
    }

    fn dnat_json() -> Value {
        json!({"add": {"rule": {
        "family": "ip", "table": "upnp_iwf", "chain": "prerouting",
        "comment": "upnp_iwf:udp:40000:192.168.0.10:5000",
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan0"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 40000}},
            {"dnat": {"addr": "192.168.0.10", "port": 5000}}
        ]}}})
    }

    fn snat_json() -> Value {
        json!({"add": {"rule": {
        "family": "ip", "table": "upnp_iwf", "chain": "postrouting",
        "comment": "upnp_iwf:udp:40000:192.168.0.10:5000",
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wan0"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.168.0.10"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 5000}},
            {"snat": {"addr": "100.64.0.2", "port": 40000}}
        ]}}})
    }

    fn chain_json(name: &str, hook: &str, prio: i32) -> Value {
        json!({"add": {"chain": {"family": "ip", "table": "upnp_iwf", "name": name,
            "type": "nat", "hook": hook, "prio": prio, "policy": "accept"}}})
    }

    // spec "The two rules a mapping needs": DNAT at dstnat, SNAT at srcnat - 10, both in one
    // transaction that only adds them (no other rule of the table is in the batch).
    #[test]
    fn install_batch_adds_exactly_the_dnat_and_the_snat_in_one_document() {
        let doc = spec().add_mapping(&wan(), &udp());
        assert_eq!(
            to_value(&doc),
            json!({"nftables": [dnat_json(), snat_json()]})
        );
    }

    #[test]
    fn remove_batch_deletes_exactly_the_given_handles() {
        let handles = Handles { dnat: 7, snat: 8 };
        let doc = spec().delete_rules(&handles.refs());
        let del = |chain: &str, handle: u32| {
            json!({"delete": {"rule": {"family": "ip", "table": "upnp_iwf", "chain": chain,
                "expr": [], "handle": handle}}})
        };
        assert_eq!(
            to_value(&doc),
            json!({"nftables": [del("prerouting", 7), del("postrouting", 8)]})
        );
    }

    // spec "Our table only": a crash leaves our table behind; reset deletes it (whatever it
    // holds) and rebuilds it, in one transaction that cannot fail on a missing table.
    #[test]
    fn reset_batch_deletes_and_rebuilds_only_our_table() {
        let doc = spec().rebuild(&wan(), &[udp()]);
        let table = json!({"table": {"family": "ip", "name": "upnp_iwf"}});
        assert_eq!(
            to_value(&doc),
            json!({"nftables": [
                {"add": table}, {"delete": table}, {"add": table},
                chain_json("prerouting", "prerouting", -100),
                chain_json("postrouting", "postrouting", 90),
                dnat_json(),
                snat_json(),
            ]})
        );
    }

    #[test]
    fn shutdown_batch_deletes_our_table_even_when_missing() {
        let table = json!({"table": {"family": "ip", "name": "upnp_iwf"}});
        assert_eq!(
            to_value(&spec().delete()),
            json!({"nftables": [{"add": table}, {"delete": table}]})
        );
    }

    #[test]
    fn tcp_rules_match_tcp_ports() {
        let tcp = Nat1Rule {
            protocol: Protocol::Tcp,
            ..udp()
        };
        let doc = to_value(&spec().add_mapping(&wan(), &tcp));
        let dnat = &doc["nftables"][0]["add"]["rule"]["expr"][1]["match"]["left"]["payload"];
        assert_eq!(dnat, &json!({"protocol": "tcp", "field": "dport"}));
        let snat = &doc["nftables"][1]["add"]["rule"]["expr"][2]["match"]["left"]["payload"];
        assert_eq!(snat, &json!({"protocol": "tcp", "field": "sport"}));
        assert!(!doc.to_string().contains("udp"), "{doc}");
    }

    // The interface name goes into a JSON string: quotes and semicolons stay data.
    #[test]
    fn interface_names_cannot_inject_commands() {
        let evil = WanSide {
            iface: "wan0\"; flush ruleset; \"".into(),
            ..wan()
        };
        let doc = spec().add_mapping(&evil, &udp());
        let back: Value =
            serde_json::from_str(&serde_json::to_string(&doc).expect("ser")).expect("valid json");
        let rule = &back["nftables"][0]["add"]["rule"]["expr"][0]["match"]["right"];
        assert_eq!(rule, &json!("wan0\"; flush ruleset; \""));
    }

    #[test]
    fn comments_round_trip_and_reject_anything_else() {
        assert_eq!(rule_comment(&udp()), "upnp_iwf:udp:40000:192.168.0.10:5000");
        assert_eq!(parse_comment(&rule_comment(&udp())), Some(udp()));
        for bad in [
            "",
            "upnp_iwf:",
            "upnp_iwf:sctp:1:1.2.3.4:5",
            "upnp_iwf:udp:0:192.168.0.10:5000",
            "upnp_iwf:udp:40000:192.168.0.10:5000:extra",
            "upnp_iwf:udp:70000:192.168.0.10:5000",
            "upnp_iwf:udp:40000:192.168.0.300:5000",
            "!fw4: web",
        ] {
            assert_eq!(parse_comment(bad), None, "{bad}");
        }
    }

    /// `nft -j list table ip upnp_iwf` of nft 1.0.6 after the install batch (handles, metainfo).
    const LISTED: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "upnp_iwf", "handle": 1}},
      {"chain": {"family": "ip", "table": "upnp_iwf", "name": "prerouting", "handle": 1, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "upnp_iwf", "name": "postrouting", "handle": 2, "type": "nat", "hook": "postrouting", "prio": 90, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "prerouting", "handle": 3, "comment": "upnp_iwf:udp:40000:192.168.0.10:5000",
        "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan0"}},
                 {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 40000}},
                 {"dnat": {"addr": "192.168.0.10", "port": 5000}}]}},
      {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "prerouting", "handle": 5, "comment": "upnp_iwf:tcp:40001:192.168.0.11:22",
        "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 40001}},
                 {"dnat": {"addr": "192.168.0.11", "port": 22}}]}},
      {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "postrouting", "handle": 4, "comment": "upnp_iwf:udp:40000:192.168.0.10:5000",
        "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wan0"}},
                 {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.168.0.10"}},
                 {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 5000}},
                 {"snat": {"addr": "100.64.0.2", "port": 40000}}]}},
      {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "postrouting", "handle": 6,
        "expr": [{"masquerade": null}]}}
    ]}"#;

    #[test]
    fn read_back_pairs_rules_by_comment() {
        let back = parse_rules(LISTED, "upnp_iwf").expect("parses");
        assert_eq!(back.complete, vec![udp()]);
        assert_eq!(back.half.len(), 1);
        assert_eq!(back.half[0].wan_port, 40001);
        assert_eq!(back.foreign, 1);
        assert_eq!(back.handles_of(&udp()), Some(Handles { dnat: 3, snat: 4 }));
        // A half mapping has no pair of handles, but its one rule can still be deleted.
        let half = back.half[0];
        assert_eq!(back.handles_of(&half), None);
        assert_eq!(
            back.refs_of(&half),
            vec![RuleRef {
                chain: OurChain::Prerouting,
                handle: 5
            }]
        );
        // Another table's name sees nothing.
        assert_eq!(
            parse_rules(LISTED, "other").expect("parses"),
            ReadBack::default()
        );
    }

    /// `nft --echo --handle -j -f -` of nft 1.0.6 for the install batch: the batch itself,
    /// each rule with the handle the kernel gave it.
    const ECHOED: &str = r#"{"nftables": [{"add": {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "prerouting", "comment": "upnp_iwf:udp:40000:192.168.0.10:5000", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wan0"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 40000}}, {"dnat": {"addr": "192.168.0.10", "port": 5000}}], "handle": 3}}}, {"add": {"rule": {"family": "ip", "table": "upnp_iwf", "chain": "postrouting", "comment": "upnp_iwf:udp:40000:192.168.0.10:5000", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wan0"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.168.0.10"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 5000}}, {"snat": {"addr": "100.64.0.2", "port": 40000}}], "handle": 4}}}]}"#;

    #[test]
    fn the_echo_of_an_install_gives_both_handles() {
        let back = parse_rules(ECHOED, "upnp_iwf").expect("parses");
        assert_eq!(back.complete, vec![udp()]);
        assert_eq!(back.handles_of(&udp()), Some(Handles { dnat: 3, snat: 4 }));
        // The echo of the rebuild batch also has table and chain objects: skipped.
        let rebuild = ECHOED.replacen(
            "[{\"add\": {\"rule\"",
            "[{\"add\": {\"table\": {\"family\": \"ip\", \"name\": \"upnp_iwf\"}}}, {\"delete\": {\"table\": {\"family\": \"ip\", \"name\": \"upnp_iwf\"}}}, {\"add\": {\"rule\"",
            1,
        );
        assert_ne!(rebuild, ECHOED);
        let back = parse_rules(&rebuild, "upnp_iwf").expect("parses");
        assert_eq!(back.handles_of(&udp()), Some(Handles { dnat: 3, snat: 4 }));
        // Without --handle nft prints no handles: the rules are seen, their handles unknown.
        let bare = ECHOED
            .replace(", \"handle\": 3", "")
            .replace(", \"handle\": 4", "");
        let back = parse_rules(&bare, "upnp_iwf").expect("parses");
        assert_eq!(back.complete, vec![udp()]);
        assert_eq!(back.handles_of(&udp()), None);
    }

    #[test]
    fn unreadable_output_is_rejected_not_a_panic() {
        for bad in ["", "{", "null", "{\"nftables\": 3}", "\u{0}\u{ff}"] {
            assert!(
                matches!(parse_rules(bad, "upnp_iwf"), Err(Nat1Error::Rejected(_))),
                "{bad:?}"
            );
        }
    }
}
