//! What the router owner sees: one snapshot of the daemon's health, its mappings with their
//! upstream state and the recent events, rendered as the HTML status page (`/`), the plain
//! text page (`/status.txt`, `upnp-iwf ctl status`) and JSON (`/status.json`,
//! `upnp-iwf ctl … --json`). The schema is documented in docs/status.md.
//!
//! Nothing secret is in a [`Status`]: PCP nonces never leave the core and the state file.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The version of the JSON schema (docs/status.md); bumped on an incompatible change.
pub const SCHEMA: u32 = 1;

/// One snapshot of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Upstream and local NAT health.
    pub health: Health,
    /// Every mapping, in the table's order (external port, protocol, remote host).
    pub mappings: Vec<MappingStatus>,
    /// Recent events, newest first (at most 32).
    pub events: Vec<EventLine>,
}

/// The health line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `pcp` (RFC 6970 interworking) or `none` (local mappings only).
    pub upstream: String,
    /// The PCP server, `ADDR:PORT` (absent with upstream `none`).
    pub pcp_server: Option<String>,
    /// Whether the PCP server has answered.
    pub pcp_answering: bool,
    /// Its last epoch (RFC 6887 §8.5), once it answered.
    pub pcp_epoch: Option<u32>,
    /// The external address (from the last PCP answer), if known.
    pub external_address: Option<Ipv4Addr>,
    /// The local NAT backend: `nftables` or `none`.
    pub nat1_backend: String,
    /// `ok`, or the last NAT1 error.
    pub nat1_state: String,
    /// The last state-file error, if any.
    pub state_file_error: Option<String>,
}

/// One mapping with its upstream state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingStatus {
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// The UPnP external port (the key).
    pub external_port: u16,
    /// The UPnP remote host, when the mapping is restricted to one.
    pub remote_host: Option<Ipv4Addr>,
    /// The LAN host.
    pub lan_host: Ipv4Addr,
    /// Its port.
    pub internal_port: u16,
    /// The control point's description.
    pub description: String,
    /// The WAN port the router's NAT maps to the LAN host (absent without NAT1).
    pub nat1_port: Option<u16>,
    /// The external endpoint the CGN granted (absent until granted).
    pub external: Option<SocketAddrV4>,
    /// Where it stands: `active`, `renewing`, `recovering`, `pcp-in-flight`, … (`local` for
    /// a mapping with no upstream).
    pub phase: String,
    /// UPnP lease left, seconds; absent for a permanent lease.
    pub lease_left_s: Option<u64>,
    /// PCP lifetime left, seconds; absent while nothing is granted.
    pub pcp_lifetime_left_s: Option<u64>,
    /// The result of the last PCP answer (`SUCCESS`, `NO_RESOURCES`, …).
    pub last_pcp_result: Option<String>,
    /// How many times it was re-created after the CGN or this daemon lost it.
    pub restores: u32,
}

/// One recent event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// When, seconds since the Unix epoch.
    pub at_unix: u64,
    /// What happened, one line.
    pub text: String,
}

impl MappingStatus {
    /// The UPnP lease as the page shows it.
    fn lease(&self) -> String {
        self.lease_left_s
            .map_or_else(|| "permanent".to_owned(), |s| format!("{s}s"))
    }

    fn pcp_left(&self) -> String {
        self.pcp_lifetime_left_s
            .map_or_else(|| "-".to_owned(), |s| format!("{s}s"))
    }

    fn external_text(&self) -> String {
        self.external
            .map_or_else(|| "-".to_owned(), |x| x.to_string())
    }

    fn nat1_text(&self) -> String {
        self.nat1_port
            .map_or_else(|| "-".to_owned(), |p| p.to_string())
    }
}

impl Status {
    /// The JSON document (pretty, one trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned());
        s.push('\n');
        s
    }

    /// The plain-text page: health lines, one line per mapping
    /// (`UDP 192.168.0.10:20000 → 20000 → 198.51.100.3:20000 active lease 3599s pcp 119s
    /// SUCCESS restores 0 "desc"`), then the recent events.
    pub fn to_text(&self) -> String {
        let h = &self.health;
        let mut s = String::from("upnp-iwf: UPnP IGD\n\n");
        match (&h.pcp_server, h.pcp_epoch) {
            (Some(server), Some(epoch)) if h.pcp_answering => {
                let _ = writeln!(s, "PCP server {server}: answering (epoch {epoch})");
            }
            (Some(server), _) => {
                let _ = writeln!(s, "PCP server {server}: no answer yet");
            }
            (None, _) => {
                let _ = writeln!(s, "upstream: none (local mappings only)");
            }
        }
        let _ = writeln!(
            s,
            "external address: {}",
            h.external_address
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
        );
        let _ = writeln!(s, "NAT1 ({}): {}", h.nat1_backend, h.nat1_state);
        if let Some(e) = &h.state_file_error {
            let _ = writeln!(s, "state file: {e}");
        }
        let _ = writeln!(
            s,
            "\nmappings (LAN host → NAT1 port → external, phase, UPnP lease left, PCP lifetime left, last PCP result, restores):"
        );
        for m in &self.mappings {
            let _ = writeln!(
                s,
                "{} {}:{} → {} → {} {} lease {} pcp {} {} restores {} {:?}",
                m.protocol,
                m.lan_host,
                m.internal_port,
                m.nat1_text(),
                m.external_text(),
                m.phase,
                m.lease(),
                m.pcp_left(),
                m.last_pcp_result.as_deref().unwrap_or("-"),
                m.restores,
                m.description,
            );
        }
        if !self.events.is_empty() {
            let _ = writeln!(s, "\nrecent events:");
            for e in &self.events {
                let _ = writeln!(s, "{} {}", rfc3339(e.at_unix), e.text);
            }
        }
        s
    }

    /// The HTML status page: readable without script, on a phone too (one column, the
    /// table scrolls sideways), refreshed by the browser every 10 s.
    pub fn to_html(&self) -> String {
        let h = &self.health;
        let mut s = String::with_capacity(4096 + 512 * self.mappings.len());
        s.push_str(concat!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<meta http-equiv=\"refresh\" content=\"10\">",
            "<title>upnp-iwf status</title><style>",
            "body{font-family:system-ui,sans-serif;margin:1em;max-width:70em;color:#222}",
            "h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}",
            ".health{display:flex;flex-wrap:wrap;gap:.5em}",
            ".health div{border:1px solid #ccc;border-radius:6px;padding:.4em .7em}",
            ".ok{background:#e8f5e9}.bad{background:#ffebee}",
            ".scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.95em}",
            "th,td{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left;white-space:nowrap}",
            "th{background:#f4f4f4}td.num{text-align:right}",
            "ul{padding-left:1.2em}small{color:#666}",
            // A phone: each mapping becomes a card of labelled lines.
            "@media (max-width:40em){table,tbody,tr,td{display:block}thead{display:none}",
            "tr{border:1px solid #ccc;border-radius:6px;margin:0 0 .6em;padding:.3em}",
            "td{border:none;white-space:normal;padding:.1em .3em}td.num{text-align:left}",
            "td::before{content:attr(data-label) \": \";font-weight:600;color:#555}}",
            "</style></head><body>\n<h1>upnp-iwf: UPnP IGD to PCP</h1>\n",
        ));
        s.push_str("<div class=\"health\" id=\"health\">");
        match &h.pcp_server {
            Some(server) => {
                let (class, state) = match (h.pcp_answering, h.pcp_epoch) {
                    (true, Some(e)) => ("ok", format!("answering, epoch {e}")),
                    _ => ("bad", "no answer yet".to_owned()),
                };
                let _ = write!(
                    s,
                    "<div class=\"{class}\" id=\"pcp\">PCP server {}: {}</div>",
                    esc(server),
                    esc(&state)
                );
            }
            None => s.push_str("<div id=\"pcp\">upstream: none (local mappings only)</div>"),
        }
        let _ = write!(
            s,
            "<div id=\"external\">External address: {}</div>",
            h.external_address
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
        );
        let nat_class = if h.nat1_state == "ok" { "ok" } else { "bad" };
        let _ = write!(
            s,
            "<div class=\"{nat_class}\" id=\"nat1\">NAT1 ({}): {}</div>",
            esc(&h.nat1_backend),
            esc(&h.nat1_state)
        );
        if let Some(e) = &h.state_file_error {
            let _ = write!(s, "<div class=\"bad\">State file: {}</div>", esc(e));
        }
        let _ = writeln!(
            s,
            "<div>Up {}, version {}</div></div>",
            duration(self.uptime_s),
            esc(&self.version)
        );
        let _ = writeln!(s, "<h2>Port mappings ({})</h2>", self.mappings.len());
        if self.mappings.is_empty() {
            s.push_str("<p id=\"no-mappings\">No port mappings.</p>\n");
        } else {
            s.push_str(concat!(
                "<div class=\"scroll\"><table id=\"mappings\"><thead><tr>",
                "<th>LAN host</th><th>Description</th><th>Protocol</th><th>Internal</th>",
                "<th>External port</th><th>NAT1 port</th><th>External endpoint</th>",
                "<th>State</th><th>UPnP lease left</th><th>PCP lifetime left</th>",
                "<th>Last PCP result</th><th>Restored</th></tr></thead><tbody>\n",
            ));
            for m in &self.mappings {
                let remote = m
                    .remote_host
                    .map_or_else(String::new, |r| format!(" <small>from {r}</small>"));
                let cells: [(&str, String, bool); 12] = [
                    ("LAN host", m.lan_host.to_string(), false),
                    ("Description", esc(&m.description), false),
                    ("Protocol", esc(&m.protocol), false),
                    (
                        "Internal",
                        format!("{}:{}", m.lan_host, m.internal_port),
                        false,
                    ),
                    (
                        "External port",
                        format!("{}{remote}", m.external_port),
                        true,
                    ),
                    ("NAT1 port", m.nat1_text(), true),
                    ("External endpoint", m.external_text(), false),
                    ("State", esc(&m.phase), false),
                    (
                        "UPnP lease left",
                        m.lease_left_s.map_or_else(|| "permanent".into(), duration),
                        true,
                    ),
                    (
                        "PCP lifetime left",
                        m.pcp_lifetime_left_s.map_or_else(|| "-".into(), duration),
                        true,
                    ),
                    (
                        "Last PCP result",
                        esc(m.last_pcp_result.as_deref().unwrap_or("-")),
                        false,
                    ),
                    ("Restored", m.restores.to_string(), true),
                ];
                s.push_str("<tr>");
                for (label, value, num) in cells {
                    let class = if num { " class=\"num\"" } else { "" };
                    let _ = write!(s, "<td data-label=\"{label}\"{class}>{value}</td>");
                }
                s.push_str("</tr>\n");
            }
            s.push_str("</tbody></table></div>\n");
        }
        s.push_str("<h2>Recent events</h2>\n");
        if self.events.is_empty() {
            s.push_str("<p>None.</p>\n");
        } else {
            s.push_str("<ul id=\"events\">\n");
            for e in &self.events {
                let _ = writeln!(
                    s,
                    "<li><small>{}</small> {}</li>",
                    rfc3339(e.at_unix),
                    esc(&e.text)
                );
            }
            s.push_str("</ul>\n");
        }
        s.push_str(
            "<p><small>The same as JSON: <a href=\"/status.json\">/status.json</a>; \
             as text: <a href=\"/status.txt\">/status.txt</a>; metrics: \
             <a href=\"/metrics\">/metrics</a>.</small></p>\n</body></html>\n",
        );
        s
    }
}

/// HTML text escaping (element content and quoted attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `1d 2h 3m` style.
fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", secs % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (civil-from-days, proleptic Gregorian).
pub fn rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            schema: SCHEMA,
            version: "0.1.0".into(),
            uptime_s: 3725,
            health: Health {
                upstream: "pcp".into(),
                pcp_server: Some("100.64.0.1:5351".into()),
                pcp_answering: true,
                pcp_epoch: Some(42),
                external_address: Some(Ipv4Addr::new(198, 51, 100, 3)),
                nat1_backend: "nftables".into(),
                nat1_state: "ok".into(),
                state_file_error: None,
            },
            mappings: vec![MappingStatus {
                protocol: "UDP".into(),
                external_port: 20000,
                remote_host: None,
                lan_host: Ipv4Addr::new(192, 168, 0, 10),
                internal_port: 20000,
                description: "<script>alert(1)</script> & \"x\"".into(),
                nat1_port: Some(20000),
                external: Some(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 3), 20000)),
                phase: "active".into(),
                lease_left_s: None,
                pcp_lifetime_left_s: Some(119),
                last_pcp_result: Some("SUCCESS".into()),
                restores: 1,
            }],
            events: vec![EventLine {
                at_unix: 1_796_000_000,
                text: "restored UDP 20000 on 198.51.100.3:20000".into(),
            }],
        }
    }

    #[test]
    fn html_escapes_what_a_control_point_wrote_and_has_every_column() {
        let html = sample().to_html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"));
        for col in [
            "LAN host",
            "Description",
            "Protocol",
            "Internal",
            "NAT1 port",
            "External endpoint",
            "UPnP lease left",
            "PCP lifetime left",
            "Last PCP result",
            "Restored",
        ] {
            assert!(html.contains(&format!("<th>{col}</th>")), "{col}");
        }
        assert!(html.contains("<td data-label=\"External endpoint\">198.51.100.3:20000</td>"));
        assert!(html.contains("PCP server 100.64.0.1:5351: answering, epoch 42"));
        assert!(html.contains("width=device-width"));
        assert!(html.contains("2026-11-30T00:53:20Z"), "{html}");
    }

    #[test]
    fn json_round_trips_and_text_lines_keep_their_shape() {
        let s = sample();
        let back: Status = serde_json::from_str(&s.to_json()).expect("json");
        assert_eq!(back, s);
        let text = s.to_text();
        assert!(text.contains(
            "UDP 192.168.0.10:20000 → 20000 → 198.51.100.3:20000 active lease permanent pcp 119s SUCCESS restores 1"
        ), "{text}");
        assert!(text.contains("PCP server 100.64.0.1:5351: answering (epoch 42)"));
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_169_600), "2026-12-02T00:00:00Z");
    }
}
