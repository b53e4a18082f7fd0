//! Issue #13 item 3 / "Done when": the OpenMetrics of both daemons, scraped in the NAT444 lab
//! (upnp-iwf on the LAN address, cgn-sim on `--metrics`), parse with a real OpenMetrics parser
//! (Python's `prometheus_client.openmetrics.parser`, Debian python3-prometheus-client, which
//! rejects anything not in the format, e.g. a missing `# EOF`), carry the documented stable
//! names, and move after an action: one AddPortMapping from the LAN raises the SOAP, PCP and
//! NAT1 counters and the live-mapping gauges. Needs root (SKIPPED otherwise).

use std::collections::BTreeMap;

use nat444_tests::e2e::{FETCH, Nat444, PY, out, upnpc_add, wait};
use nat444_tests::lab::Node;
use nat444_tests::require_privileges;

/// Parses OpenMetrics text from stdin strictly; prints `family type` and `sample labels value`.
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read()
for f in text_string_to_metric_families(text):
    print("FAMILY %s %s" % (f.name, f.type))
    for s in f.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("SAMPLE %s{%s} %s" % (s.name, labels, s.value))
"#;

/// `(families, samples)` of `text` as the parser read it; panics with its error otherwise.
fn parse(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    use std::io::Write as _;
    // FETCH prints the body with one newline more than was sent.
    let text = format!("{}\n", text.trim_end());
    let text = text.as_str();
    let mut child = std::process::Command::new(PY)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let o = child.wait_with_output().expect("parser");
    assert!(
        o.status.success(),
        "OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(r) = l.strip_prefix("FAMILY ") {
            if let Some((n, t)) = r.split_once(' ') {
                families.insert(n.to_owned(), t.to_owned());
            }
        } else if let Some(r) = l.strip_prefix("SAMPLE ") {
            if let Some((k, v)) = r.rsplit_once(' ') {
                samples.insert(k.to_owned(), v.parse().unwrap_or(f64::NAN));
            }
        }
    }
    (families, samples)
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

fn have_parser() -> bool {
    let ok = std::process::Command::new(PY)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    nat444_tests::lab::require_found(
        ok,
        "Python's prometheus_client",
        "python3-prometheus-client",
    )
}

// Issue #13 item 3; design.md §3 "Observable"; README "Metrics" lists these names.
#[test]
fn metrics_of_both_daemons_parse_as_openmetrics_and_move_after_an_action() {
    let _privileged = require_privileges!();
    if !have_parser() {
        return;
    }
    let n = Nat444::start_with(false, &["--metrics", "100.64.0.1:9100"]);
    let iwf_metrics = || {
        out(
            &n.lab,
            Node::Lan,
            &[PY, "-c", FETCH, "http://192.168.0.1:5000/metrics"],
            10,
        )
    };
    let cgn_metrics = || {
        out(
            &n.lab,
            Node::Cpe,
            &[PY, "-c", FETCH, "http://100.64.0.1:9100/metrics"],
            10,
        )
    };
    assert!(wait(10, || cgn_metrics().contains("# EOF")), "{}", n.logs());
    let (_, iwf_before) = parse(&iwf_metrics());
    let (_, cgn_before) = parse(&cgn_metrics());

    let o = upnpc_add(&n.lab, Node::Lan, 5000, "UDP", 3600);
    assert!(o.contains("is redirected to internal"), "{o}\n{}", n.logs());

    let text = iwf_metrics();
    let (families, after) = parse(&text);
    for (family, kind) in [
        ("upnp_iwf_soap_actions", "counter"),
        ("upnp_iwf_pcp_results", "counter"),
        ("upnp_iwf_pcp_transmissions", "counter"),
        ("upnp_iwf_pcp_retransmissions", "counter"),
        ("upnp_iwf_pcp_renewals", "counter"),
        ("upnp_iwf_pcp_epoch_resets", "counter"),
        ("upnp_iwf_restores", "counter"),
        ("upnp_iwf_nat1_changes", "counter"),
        ("upnp_iwf_nat1_failures", "counter"),
        ("upnp_iwf_mappings", "gauge"),
        ("upnp_iwf_live_mappings", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family} in:\n{text}"
        );
    }
    let ok = "upnp_iwf_soap_actions_total{action=\"AddPortMapping\",result=\"ok\"}";
    assert_eq!(value(&after, ok), value(&iwf_before, ok) + 1.0, "{text}");
    let success = "upnp_iwf_pcp_results_total{result=\"SUCCESS\"}";
    assert!(
        value(&after, success) > value(&iwf_before, success),
        "{text}"
    );
    assert!(
        value(&after, "upnp_iwf_nat1_changes_total{}")
            > value(&iwf_before, "upnp_iwf_nat1_changes_total{}"),
        "{text}"
    );
    assert_eq!(value(&after, "upnp_iwf_mappings{}"), 1.0, "{text}");

    let text = cgn_metrics();
    let (families, cgn_after) = parse(&text);
    for (family, kind) in [
        ("cgn_pcp_requests", "counter"),
        ("cgn_epoch_resets", "counter"),
        ("cgn_mappings_created", "counter"),
        ("cgn_mappings", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family} in:\n{text}"
        );
    }
    let created = "cgn_mappings_created_total{}";
    assert!(
        value(&cgn_after, created) > value(&cgn_before, created),
        "{text}"
    );
    println!(
        "metrics: upnp-iwf {} samples, cgn-sim {} samples, both parsed",
        after.len(),
        cgn_after.len()
    );
}
