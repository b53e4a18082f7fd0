//! Counters and gauges in OpenMetrics text (conventions.md: `cgn_pcp_requests_total{…}`).

use std::fmt::Write as _;

use pcp_client::wire::{Opcode, ResultCode};

use crate::table::TableCounts;

/// Opcode labels counted.
const OPCODES: [&str; 5] = ["announce", "map", "peer", "other", "natpmp"];

/// Why a datagram was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Arrived on the outside interface or from a non-subscriber (RFC 6887 §8.2).
    Interface,
    /// Shorter than 2 bytes, or a supported version shorter than 24 (RFC 6887 §8.2).
    Short,
    /// R bit set (RFC 6887 §8.2).
    Response,
    /// NAT-PMP request that NAT-PMP ignores.
    NatPmp,
}

const DROP_REASONS: [&str; 4] = ["interface", "short", "response", "natpmp"];

/// The engine's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    requests: [[u64; 32]; 5],
    dropped: [u64; 4],
    /// USER_EX_QUOTA answers.
    pub quota_hits: u64,
    /// NO_RESOURCES answers.
    pub no_resources: u64,
    /// Unsolicited ANNOUNCE datagrams sent.
    pub announces_sent: u64,
    /// Mapping Update datagrams sent.
    pub mapping_updates_sent: u64,
    /// Mappings created (MAP, PEER, NAT-PMP).
    pub created: u64,
    /// Mappings refreshed.
    pub refreshed: u64,
    /// Mappings deleted by request.
    pub deleted: u64,
    /// Mappings expired.
    pub expired: u64,
}

fn opcode_index(op: Opcode) -> usize {
    match op {
        Opcode::Announce => 0,
        Opcode::Map => 1,
        Opcode::Peer => 2,
        _ => 3,
    }
}

impl Metrics {
    /// Counts a PCP answer.
    pub fn pcp(&mut self, op: Opcode, result: ResultCode) {
        let r = usize::from(u8::from(result)).min(31);
        self.requests[opcode_index(op)][r] += 1;
        match result {
            ResultCode::UserExQuota => self.quota_hits += 1,
            ResultCode::NoResources => self.no_resources += 1,
            _ => {}
        }
    }

    /// Counts a NAT-PMP answer (result as NAT-PMP code).
    pub fn natpmp(&mut self, result: u16) {
        self.requests[4][usize::from(result).min(31)] += 1;
    }

    /// Counts a silent drop.
    pub fn drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }

    /// Answers with `result` to `op` so far.
    pub fn count(&self, op: Opcode, result: ResultCode) -> u64 {
        self.requests[opcode_index(op)][usize::from(u8::from(result)).min(31)]
    }

    /// Total answered requests.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Silent drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// OpenMetrics text exposition.
    pub fn render(
        &self,
        counts: TableCounts,
        epoch: u32,
        epoch_resets: u64,
        held: usize,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# TYPE cgn_pcp_requests counter\n# HELP cgn_pcp_requests Requests answered, by opcode and result."
        );
        for (oi, op) in OPCODES.iter().enumerate() {
            for (ri, n) in self.requests[oi].iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let result = if oi == 4 {
                    format!("{ri}")
                } else {
                    ResultCode::from(ri as u8).to_string()
                };
                let _ = writeln!(
                    s,
                    "cgn_pcp_requests_total{{opcode=\"{op}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# TYPE cgn_pcp_dropped counter\n# HELP cgn_pcp_dropped Datagrams dropped silently."
        );
        for (i, r) in DROP_REASONS.iter().enumerate() {
            let _ = writeln!(
                s,
                "cgn_pcp_dropped_total{{reason=\"{r}\"}} {}",
                self.dropped[i]
            );
        }
        for (name, help, v) in [
            ("cgn_quota_hits", "USER_EX_QUOTA answers.", self.quota_hits),
            (
                "cgn_no_resources",
                "NO_RESOURCES answers.",
                self.no_resources,
            ),
            (
                "cgn_epoch_resets",
                "Epoch resets (state loss, pool change).",
                epoch_resets,
            ),
            (
                "cgn_announces_sent",
                "Unsolicited ANNOUNCE datagrams.",
                self.announces_sent,
            ),
            (
                "cgn_mapping_updates_sent",
                "Mapping Update datagrams.",
                self.mapping_updates_sent,
            ),
            ("cgn_mappings_created", "Mappings created.", self.created),
            (
                "cgn_mappings_refreshed",
                "Mappings refreshed.",
                self.refreshed,
            ),
            (
                "cgn_mappings_deleted",
                "Mappings deleted by request.",
                self.deleted,
            ),
            ("cgn_mappings_expired", "Mappings expired.", self.expired),
        ] {
            let _ = writeln!(
                s,
                "# TYPE {name} counter\n# HELP {name} {help}\n{name}_total {v}"
            );
        }
        let _ = writeln!(
            s,
            "# TYPE cgn_mappings gauge\n# HELP cgn_mappings Live mappings by type."
        );
        for (t, v) in [
            ("map", counts.maps),
            ("peer", counts.peers),
            ("implicit", counts.implicit),
            ("static", counts.statics),
            ("binding", counts.bindings),
        ] {
            let _ = writeln!(s, "cgn_mappings{{type=\"{t}\"}} {v}");
        }
        let _ = writeln!(
            s,
            "# TYPE cgn_held_ports gauge\n# HELP cgn_held_ports External ports in hold-down.\ncgn_held_ports {held}"
        );
        let _ = writeln!(
            s,
            "# TYPE cgn_epoch_seconds gauge\n# HELP cgn_epoch_seconds Current PCP Epoch Time.\ncgn_epoch_seconds {epoch}"
        );
        s.push_str("# EOF\n");
        s
    }
}
