//! What `nat444-lab scale` compares: what each subscriber asked for and was granted, the CGN's
//! mapping table (`cgn-sim ctl mappings --json`) and each IWF's own view (its status page).
//! Pure functions over text, so every rule is unit-tested without a lab.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The UDP port of a probe mapping (RFC 6970 §4.2: the IWF learns its external address with a
/// short-lived MAP for the discard port); it lives only until its answer and is not a
/// subscriber's mapping.
pub const PROBE_PORT: u16 = 9;

/// First port the subscribers map (see [`port_of`]).
pub const FIRST_PORT: u16 = 20000;

/// Highest port [`port_of`] hands out.
pub const LAST_PORT: u16 = 60000;

/// The port subscriber `n` (1-based) maps as its `j`-th mapping (0-based): internal port =
/// external port asked = `FIRST_PORT + (n-1)·M + j`. Subscribers get disjoint ports: 60 of
/// them share the 16 addresses of the pool, and with PREFER_FAILURE (RFC 6970 §5.1) two
/// subscribers on one address asking for the same port would see 718, which is correct but
/// not what this run measures. `None` when the plan runs past [`LAST_PORT`].
pub fn port_of(n: u16, j: u16, mappings: u16) -> Option<u16> {
    let offset = u32::from(n.checked_sub(1)?) * u32::from(mappings) + u32::from(j);
    let port = u32::from(FIRST_PORT) + offset;
    if j >= mappings || port > u32::from(LAST_PORT) {
        return None;
    }
    u16::try_from(port).ok()
}

/// One entry of `cgn-sim ctl mappings --json` (the fields this check reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CgnEntry {
    /// `MAP IN`, `MAP OUT`, `PEER`, `IMPLICIT`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `UDP`, `TCP`, …
    pub protocol: String,
    /// Internal endpoint (the CPE's WAN address and NAT1 port).
    pub internal: SocketAddrV4,
    /// External endpoint on the pool.
    pub external: SocketAddrV4,
}

/// The `MAP IN` entries of a `cgn-sim ctl mappings --json` answer (one per MAP mapping).
pub fn parse_cgn_map_in(json: &str) -> Result<Vec<CgnEntry>, serde_json::Error> {
    let all: Vec<CgnEntry> = serde_json::from_str(json)?;
    Ok(all.into_iter().filter(|e| e.kind == "MAP IN").collect())
}

/// One line of the IWF's upstream table on its text status page (`GET /status.txt`):
/// `UDP 192.168.0.10:20000 → 20000 → 198.51.100.3:20000 active lease 3599s pcp 119s SUCCESS restores 1 "…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IwfEntry {
    /// `UDP` or `TCP`.
    pub protocol: String,
    /// The LAN host's endpoint.
    pub client: SocketAddrV4,
    /// The port the IWF's NAT1 reserved on the CPE's WAN address (the CGN's internal port).
    pub nat1_port: u16,
    /// The external endpoint the CGN granted, if known.
    pub external: Option<SocketAddrV4>,
    /// `active`, `recovering`, …
    pub phase: String,
    /// How often the IWF re-created it upstream after the CGN lost it.
    pub restores: u32,
}

/// The upstream lines of an IWF status page; other lines are skipped.
pub fn parse_iwf_status(page: &str) -> Vec<IwfEntry> {
    page.lines().filter_map(parse_iwf_line).collect()
}

fn parse_iwf_line(line: &str) -> Option<IwfEntry> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 7 || t[2] != "→" || t[4] != "→" || !matches!(t[0], "UDP" | "TCP") {
        return None;
    }
    // The last PCP result before it may be one word or two (`SUCCESS (0)`).
    let restores = t.iter().skip(7).position(|w| *w == "restores")? + 7;
    Some(IwfEntry {
        protocol: t[0].to_owned(),
        client: t[1].parse().ok()?,
        nat1_port: t[3].parse().ok()?,
        external: t[5].parse().ok(),
        phase: t[6].to_owned(),
        restores: t.get(restores + 1)?.parse().ok()?,
    })
}

/// The external endpoint in `upnpc -a`'s output
/// (`external 198.51.100.3:20000 UDP is redirected to internal 192.168.0.10:20000 …`).
pub fn parse_upnpc_external(output: &str) -> Option<SocketAddrV4> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("external ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// One mapping a subscriber asked for, and what it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Asked {
    /// Subscriber number (1-based).
    pub subscriber: u16,
    /// The CPE's WAN address.
    pub wan: Ipv4Addr,
    /// LAN port = external port asked.
    pub port: u16,
    /// What `upnpc -a` reported as granted (`None`: the add failed).
    pub external: Option<SocketAddrV4>,
    /// The NAT1 port the IWF reserved (from its status page before the restart).
    pub nat1_port: Option<u16>,
    /// Why the add failed, if it did (upnpc's words).
    pub add_error: Option<String>,
    /// The external endpoint at the CGN after the restart, if found.
    pub external_after: Option<SocketAddrV4>,
    /// The IWF's restore count for it after the restart.
    pub restores: Option<u32>,
}

impl Asked {
    /// The CGN's internal endpoint for it, once the NAT1 port is known.
    pub fn internal(&self) -> Option<SocketAddrV4> {
        Some(SocketAddrV4::new(self.wan, self.nat1_port?))
    }
}

/// The comparison of [`Asked`] with the CGN's table and the IWFs' tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Asked mappings found exactly once at the CGN on the external endpoint granted before,
    /// and active on that endpoint in their IWF.
    pub restored: usize,
    /// Asked mappings not restored (add failed, missing, moved, or the IWF disagrees).
    pub lost: usize,
    /// CGN entries beyond one per asked mapping: a second entry for the same internal
    /// endpoint, or an entry of a lab subscriber that no asked mapping explains (e.g. the same
    /// mapping re-created on another NAT1 port).
    pub duplicated: usize,
    /// Lost because the add itself failed.
    pub add_failed: usize,
    /// Lost because the CGN has no entry for it.
    pub missing: usize,
    /// Lost because the CGN has it on another external endpoint.
    pub moved: usize,
    /// Lost because its IWF does not show it active on the granted endpoint.
    pub iwf_mismatch: usize,
}

impl Verdict {
    /// Whether nothing was lost or duplicated.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }
}

/// Compares the asked mappings with the CGN's `MAP IN` entries and the IWFs' entries
/// (`iwf[n]` = subscriber `n`'s), filling in `external_after` and `restores`.
/// `need_restore`: also require each IWF entry to have been restored at least once (after a
/// CGN restart).
pub fn compare(
    asked: &mut [Asked],
    cgn: &[CgnEntry],
    iwf: &HashMap<u16, Vec<IwfEntry>>,
    need_restore: bool,
) -> Verdict {
    let wans: HashMap<Ipv4Addr, u16> = asked.iter().map(|a| (a.wan, a.subscriber)).collect();
    // Every UDP MAP IN entry of a lab subscriber by internal endpoint (probes aside).
    let mut by_internal: BTreeMap<SocketAddrV4, Vec<&CgnEntry>> = BTreeMap::new();
    for e in cgn {
        if e.protocol == "UDP"
            && wans.contains_key(e.internal.ip())
            && e.internal.port() != PROBE_PORT
        {
            by_internal.entry(e.internal).or_default().push(e);
        }
    }
    let mut v = Verdict::default();
    let mut explained = 0usize;
    for a in asked.iter_mut() {
        a.external_after = None;
        a.restores = None;
        let Some(granted) = a.external else {
            v.add_failed += 1;
            v.lost += 1;
            continue;
        };
        let iwf_entry = iwf.get(&a.subscriber).and_then(|entries| {
            let mut mine = entries.iter().filter(|e| {
                e.protocol == "UDP"
                    && e.client.port() == a.port
                    && *e.client.ip() == crate::lab::plan::LAN_HOST
            });
            let first = mine.next();
            // Two IWF entries for one LAN mapping would be a duplicate in the IWF itself.
            if mine.next().is_some() { None } else { first }
        });
        let nat1 = a.nat1_port.or(iwf_entry.map(|e| e.nat1_port));
        a.nat1_port = nat1;
        a.restores = iwf_entry.map(|e| e.restores);
        let at_cgn = nat1
            .map(|p| SocketAddrV4::new(a.wan, p))
            .and_then(|i| by_internal.get(&i))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !at_cgn.is_empty() {
            explained += at_cgn.len();
            v.duplicated += at_cgn.len() - 1;
        }
        let Some(found) = at_cgn.first() else {
            v.missing += 1;
            v.lost += 1;
            continue;
        };
        a.external_after = Some(found.external);
        if found.external != granted {
            v.moved += 1;
            v.lost += 1;
            continue;
        }
        let iwf_ok = iwf_entry.is_some_and(|e| {
            e.phase == "active"
                && e.external == Some(granted)
                && e.nat1_port == found.internal.port()
                && (!need_restore || e.restores >= 1)
        });
        if !iwf_ok {
            v.iwf_mismatch += 1;
            v.lost += 1;
            continue;
        }
        v.restored += 1;
    }
    let total: usize = by_internal.values().map(Vec::len).sum();
    v.duplicated += total.saturating_sub(explained);
    v
}

/// How many granted mappings whose NAT1 port is known the CGN holds exactly once on their
/// granted external endpoint (the CGN side of [`compare`], cheap enough to poll).
pub fn at_cgn(asked: &[Asked], cgn: &[CgnEntry]) -> usize {
    let mut by_internal: HashMap<SocketAddrV4, Vec<SocketAddrV4>> = HashMap::new();
    for e in cgn.iter().filter(|e| e.protocol == "UDP") {
        by_internal.entry(e.internal).or_default().push(e.external);
    }
    asked
        .iter()
        .filter(|a| {
            let (Some(internal), Some(granted)) = (a.internal(), a.external) else {
                return false;
            };
            by_internal
                .get(&internal)
                .is_some_and(|ext| ext.as_slice() == [granted])
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGN_JSON: &str = r#"[
      {"type": "MAP IN", "protocol": "UDP", "internal": "100.64.0.2:20000", "external": "198.51.100.3:20000", "remote": null, "ttl": 120, "left": 100, "pool": 1, "section": 0, "nonce": "0x00", "filters": [], "description": null, "natpmp": false},
      {"type": "MAP OUT", "protocol": "UDP", "internal": "100.64.0.2:20000", "external": "198.51.100.3:20000", "remote": null, "ttl": 120, "left": 100, "pool": 1, "section": 0, "nonce": "0x00", "filters": [], "description": null, "natpmp": false},
      {"type": "MAP IN", "protocol": "UDP", "internal": "100.64.0.3:20001", "external": "198.51.100.4:20001", "remote": null, "ttl": 120, "left": 100, "pool": 1, "section": 0, "nonce": "0x00", "filters": [], "description": null, "natpmp": false},
      {"type": "MAP IN", "protocol": "UDP", "internal": "100.64.0.3:9", "external": "198.51.100.4:2000", "remote": null, "ttl": 2, "left": 1, "pool": 1, "section": 0, "nonce": "0x00", "filters": [], "description": null, "natpmp": false}
    ]"#;

    fn asked(n: u16, port: u16, ext: &str) -> Asked {
        Asked {
            subscriber: n,
            wan: Ipv4Addr::new(100, 64, 0, 1 + n as u8),
            port,
            external: ext.parse().ok(),
            nat1_port: None,
            add_error: None,
            external_after: None,
            restores: None,
        }
    }

    fn iwf_line(port: u16, ext: &str, phase: &str, restores: u32) -> String {
        format!(
            "UDP 192.168.0.10:{port} → {port} → {ext} {phase} lease 3599s pcp 119s SUCCESS (0) restores {restores} \"nat444-scale\""
        )
    }

    fn iwfs(lines: &[(u16, String)]) -> HashMap<u16, Vec<IwfEntry>> {
        let mut m: HashMap<u16, Vec<IwfEntry>> = HashMap::new();
        for (n, l) in lines {
            m.entry(*n).or_default().extend(parse_iwf_status(l));
        }
        m
    }

    #[test]
    fn ports_are_disjoint_per_subscriber_and_bounded() {
        assert_eq!(port_of(1, 0, 10), Some(20000));
        assert_eq!(port_of(1, 9, 10), Some(20009));
        assert_eq!(port_of(2, 0, 10), Some(20010));
        assert_eq!(port_of(60, 9, 10), Some(20599));
        assert_eq!(port_of(1, 10, 10), None);
        assert_eq!(port_of(0, 0, 10), None);
        assert_eq!(port_of(253, 999, 1000), None);
    }

    #[test]
    fn cgn_json_gives_the_map_in_entries() {
        let e = parse_cgn_map_in(CGN_JSON).expect("parses");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].internal, "100.64.0.2:20000".parse().expect("addr"));
        assert!(parse_cgn_map_in("not json").is_err());
    }

    #[test]
    fn iwf_status_lines_parse_and_other_lines_are_skipped() {
        let page = format!(
            "upnp-iwf: UPnP IGD\n\nPCP server 100.64.0.1:5351: answering (epoch 3)\n\
             upstream (LAN host → NAT1 port → external, …):\n{}\n\
             UDP 192.168.0.10:20001 → 20001 → - recovering lease 3599s pcp - - restores 0 \"x\"\n\
             port mappings:\nUDP 20000 -> 192.168.0.10:20000 lease 3599s \"x\"\n",
            iwf_line(20000, "198.51.100.3:20000", "active", 1)
        );
        let e = parse_iwf_status(&page);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].nat1_port, 20000);
        assert_eq!(e[0].external, "198.51.100.3:20000".parse().ok());
        assert_eq!((e[0].phase.as_str(), e[0].restores), ("active", 1));
        assert_eq!((e[1].external, e[1].phase.as_str()), (None, "recovering"));
    }

    // The parser reads what upnp-iwf really renders at /status.txt (not a hand-made copy).
    #[test]
    fn the_page_upnp_iwf_renders_parses() {
        use upnp_iwf::status::{Health, MappingStatus, SCHEMA, Status};
        let m = |port: u16, external: Option<&str>, phase: &str| MappingStatus {
            protocol: "UDP".into(),
            external_port: port,
            remote_host: None,
            lan_host: "192.168.0.10".parse().expect("literal"),
            internal_port: port,
            description: "two words".into(),
            nat1_port: Some(port + 1),
            external: external.map(|e| e.parse().expect("literal")),
            phase: phase.into(),
            lease_left_s: Some(3599),
            pcp_lifetime_left_s: Some(119),
            last_pcp_result: Some("SUCCESS".into()),
            restores: 2,
        };
        let status = Status {
            schema: SCHEMA,
            version: "0".into(),
            uptime_s: 1,
            health: Health {
                upstream: "pcp".into(),
                pcp_server: Some("100.64.0.1:5351".into()),
                pcp_answering: true,
                pcp_epoch: Some(1),
                external_address: None,
                nat1_backend: "nftables".into(),
                nat1_state: "ok".into(),
                state_file_error: None,
            },
            mappings: vec![
                m(20000, Some("198.51.100.3:20000"), "active"),
                m(20001, None, "recovering"),
            ],
            events: Vec::new(),
        };
        let e = parse_iwf_status(&status.to_text());
        assert_eq!(e.len(), 2, "{}", status.to_text());
        assert_eq!((e[0].nat1_port, e[0].restores), (20001, 2));
        assert_eq!(e[0].external, "198.51.100.3:20000".parse().ok());
        assert_eq!((e[1].external, e[1].phase.as_str()), (None, "recovering"));
    }

    #[test]
    fn upnpc_external_endpoint_is_read() {
        let out = "ExternalIPAddress = 198.51.100.3\nInternalIP:Port = 192.168.0.10:20000\n\
                   external 198.51.100.3:20000 UDP is redirected to internal 192.168.0.10:20000 (duration=3600)\n";
        assert_eq!(parse_upnpc_external(out), "198.51.100.3:20000".parse().ok());
        assert_eq!(
            parse_upnpc_external("AddPortMapping failed with code 718"),
            None
        );
    }

    #[test]
    fn everything_restored_on_the_same_endpoints_is_clean() {
        let cgn = parse_cgn_map_in(CGN_JSON).expect("parses");
        let mut a = vec![
            asked(1, 20000, "198.51.100.3:20000"),
            asked(2, 20001, "198.51.100.4:20001"),
        ];
        let iwf = iwfs(&[
            (1, iwf_line(20000, "198.51.100.3:20000", "active", 1)),
            (2, iwf_line(20001, "198.51.100.4:20001", "active", 1)),
        ]);
        let v = compare(&mut a, &cgn, &iwf, true);
        assert_eq!((v.restored, v.lost, v.duplicated), (2, 0, 0), "{v:?}");
        assert!(v.clean());
        assert_eq!(at_cgn(&a, &cgn), 2);
        assert_eq!(at_cgn(&a, &cgn[..1]), 1);
        assert_eq!(a[0].external_after, "198.51.100.3:20000".parse().ok());
        assert_eq!(a[1].restores, Some(1));
    }

    #[test]
    fn missing_moved_and_unrestored_mappings_are_lost() {
        let cgn = parse_cgn_map_in(CGN_JSON).expect("parses");
        // Subscriber 2 was granted another port; subscriber 1's second mapping is gone;
        // subscriber 1's first was never restored by its IWF (restores 0).
        let mut a = vec![
            asked(1, 20000, "198.51.100.3:20000"),
            asked(1, 20002, "198.51.100.3:20002"),
            asked(2, 20001, "198.51.100.4:29999"),
            asked(2, 20003, "-"),
        ];
        let iwf = iwfs(&[
            (1, iwf_line(20000, "198.51.100.3:20000", "active", 0)),
            (2, iwf_line(20001, "198.51.100.4:20001", "active", 1)),
        ]);
        let v = compare(&mut a, &cgn, &iwf, true);
        assert_eq!(v.restored, 0, "{v:?}");
        assert_eq!(v.lost, 4);
        assert_eq!(
            (v.iwf_mismatch, v.missing, v.moved, v.add_failed),
            (1, 1, 1, 1)
        );
        // Before a restart, restores 0 is fine.
        let v = compare(&mut a[..1], &cgn, &iwf, false);
        assert_eq!(v.restored, 1, "{v:?}");
    }

    #[test]
    fn extra_entries_of_a_subscriber_are_duplicates_but_probes_are_not() {
        let mut cgn = parse_cgn_map_in(CGN_JSON).expect("parses");
        // The same mapping re-created from another NAT1 port.
        cgn.push(CgnEntry {
            kind: "MAP IN".into(),
            protocol: "UDP".into(),
            internal: "100.64.0.2:20100".parse().expect("addr"),
            external: "198.51.100.3:20100".parse().expect("addr"),
        });
        let mut a = vec![
            asked(1, 20000, "198.51.100.3:20000"),
            asked(2, 20001, "198.51.100.4:20001"),
        ];
        let iwf = iwfs(&[
            (1, iwf_line(20000, "198.51.100.3:20000", "active", 1)),
            (2, iwf_line(20001, "198.51.100.4:20001", "active", 1)),
        ]);
        let v = compare(&mut a, &cgn, &iwf, true);
        assert_eq!((v.restored, v.lost, v.duplicated), (2, 0, 1), "{v:?}");
        assert!(!v.clean());
    }
}
