//! OpenMetrics counters of the IGD (`/metrics` on the LAN address).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

/// Labelled counters, e.g. `upnp_iwf_soap_actions_total{action="AddPortMapping",result="718"}`.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    /// Adds one to counter `name` with the label set `labels` (already formatted).
    pub fn inc(&self, name: &'static str, labels: String) {
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *c.entry((name, labels)).or_insert(0) += 1;
    }

    /// Current value of a counter (tests).
    pub fn get(&self, name: &'static str, labels: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        c.get(&(name, labels.to_owned())).copied().unwrap_or(0)
    }

    /// OpenMetrics text with the gauges given, ending in `# EOF`.
    pub fn render(&self, gauges: &[(&str, u64)]) -> String {
        self.render_with(gauges, "")
    }

    /// [`Metrics::render`] with `extra` OpenMetrics lines (complete families, e.g. the
    /// upstream's) before `# EOF`.
    pub fn render_with(&self, gauges: &[(&str, u64)], extra: &str) -> String {
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = String::new();
        let mut last = "";
        for ((name, labels), v) in c.iter() {
            if *name != last {
                let _ = writeln!(s, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(s, "{name}_total{{{labels}}} {v}");
        }
        for (name, v) in gauges {
            let _ = writeln!(s, "# TYPE {name} gauge\n{name} {v}");
        }
        s.push_str(extra);
        s.push_str("# EOF\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_openmetrics() {
        let m = Metrics::default();
        m.inc(
            "upnp_iwf_soap_actions",
            "action=\"AddPortMapping\",result=\"ok\"".into(),
        );
        m.inc(
            "upnp_iwf_soap_actions",
            "action=\"AddPortMapping\",result=\"ok\"".into(),
        );
        let text = m.render(&[("upnp_iwf_mappings", 3)]);
        assert!(
            text.contains("upnp_iwf_soap_actions_total{action=\"AddPortMapping\",result=\"ok\"} 2")
        );
        assert!(text.contains("upnp_iwf_mappings 3"));
        assert!(text.ends_with("# EOF\n"));
    }
}
