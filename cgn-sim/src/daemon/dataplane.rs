//! The TUN dataplane inside the daemon: the [`Translator`] and the [`Tun`] device, owned by
//! the engine task next to the PCP [`Server`] (no lock on the packet path).
//!
//! After each wake-up of the device one batch is handled: up to [`TUN_BATCH`] queued packets
//! are read without waiting ([`Tun::recv_batch`]; with the offload interface one read may
//! carry many segments of a flow), translated in place with one
//! [`Translator::process_batch`] call, and the forwarded ones written back together
//! ([`Tun::send_batch`], which coalesces runs of one flow into one write) followed by
//! whatever the translator emits itself (ICMP errors, fragments). The kernel then routes them,
//! see [`crate::dataplane::tun`]. The packet buffers are allocated once.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::Context as _;

use crate::dataplane::translate::{Counters, DataplaneConfig, DropReason, Translator, Verdict};
use crate::dataplane::tun::{
    MAX_SEGMENTS, PacketBatch, Tun, TunConfig, covering_prefixes, interface_with_address,
};
use crate::server::Server;

/// Packets handled per wake-up of the device before timers and control requests are looked
/// at again.
pub const TUN_BATCH: usize = 256;

/// How the dataplane is set up (`--dataplane tun`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneOptions {
    /// Device name, MTU, routing table and rule priority; the pool prefixes are filled in
    /// from the engine's pool, the inside interfaces from [`DataplaneOptions::inside_ifaces`].
    pub tun: TunConfig,
    /// Subscriber-facing interfaces; empty: the one carrying the inside address.
    pub inside_ifaces: Vec<String>,
    /// Translator settings (filtering, timers, MTU, ICMP source addresses).
    pub translator: DataplaneConfig,
}

/// Device I/O counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Packets read from the device (segments of a super-packet each count).
    pub rx: u64,
    /// Packets written to the device (before coalescing).
    pub tx: u64,
    /// Packets whose write failed.
    pub tx_errors: u64,
    /// Read system calls that returned packets: `rx / reads` is the read batching.
    pub reads: u64,
}

/// The running dataplane.
pub(crate) struct Dataplane {
    tun: Tun,
    translator: Translator,
    io: IoCounters,
    batch: PacketBatch,
    verdicts: Vec<Verdict>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("tun", &self.tun)
            .field("translator", &self.translator)
            .field("io", &self.io)
            .finish()
    }
}

impl Dataplane {
    /// Opens the device and installs the routing for `server`'s pool.
    pub(crate) async fn open(
        options: &DataplaneOptions,
        server: &Server,
        inside: Ipv4Addr,
        now: Instant,
    ) -> anyhow::Result<Dataplane> {
        let mut tun_config = options.tun.clone();
        let pool: Vec<Ipv4Addr> = server.pool().addresses().iter().map(|a| a.addr).collect();
        tun_config.pool = covering_prefixes(&pool);
        tun_config.inside_interfaces = if options.inside_ifaces.is_empty() {
            vec![
                interface_with_address(inside)
                    .await
                    .with_context(|| format!("finding the interface that carries {inside}"))?,
            ]
        } else {
            options.inside_ifaces.clone()
        };
        // An unspecified outside address stays so: the translator then sends its ICMP errors
        // towards the Internet from the first address of the pool in force (after `ctl pool`
        // too).
        let translator = options.translator.clone();
        let tun = Tun::open(&tun_config)
            .await
            .with_context(|| format!("opening the TUN dataplane {}", tun_config.name))?;
        let (offload, uso) = tun.offload();
        tracing::info!(
            tun = %tun.name(),
            offload,
            uso,
            inside = ?tun_config.inside_interfaces,
            pool = ?tun_config.pool,
            filtering = ?options.translator.filtering,
            "TUN dataplane up"
        );
        let batch = PacketBatch::new(TUN_BATCH, tun.mtu());
        Ok(Dataplane {
            tun,
            translator: Translator::new(translator, server, now),
            io: IoCounters::default(),
            batch,
            verdicts: vec![Verdict::Consumed; TUN_BATCH + MAX_SEGMENTS],
        })
    }

    /// Waits until the device has a packet (cancel-safe: nothing is read).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.tun.readable().await
    }

    /// Translates the queued packets, up to [`TUN_BATCH`] (plus the segments of the last
    /// super-packet read).
    pub(crate) async fn drain(&mut self, server: &mut Server) {
        let now = Instant::now();
        let (reads, read) = self.tun.recv_batch(&mut self.batch);
        self.io.reads += reads as u64;
        if let Err(e) = read {
            tracing::warn!(error = %e, "TUN read failed");
        }
        let n = self.batch.len();
        self.io.rx += n as u64;
        if let Some(verdicts) = self.verdicts.get_mut(..n) {
            // One small vector of slices per batch (not per packet).
            let mut packets: Vec<&mut [u8]> = self.batch.packets_mut().collect();
            self.translator
                .process_batch(server, now, &mut packets, verdicts);
            let verdicts = &self.verdicts;
            self.batch
                .retain(|i| matches!(verdicts.get(i), Some(Verdict::Forward)));
        }
        self.flush().await;
    }

    /// Runs the translator's timers (with the server's: call after `server.handle_timeout`).
    pub(crate) async fn handle_timeout(&mut self, server: &mut Server, now: Instant) {
        self.translator.handle_timeout(server, now);
        self.flush().await;
    }

    /// When the translator's timers are due next.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Instant {
        self.translator.poll_timeout(now)
    }

    /// Routes the server's pool into the device if it is not what the device routes already
    /// (after `ctl pool`); returns the prefixes now routed, or `None` if nothing changed.
    pub(crate) async fn reroute(
        &mut self,
        server: &Server,
    ) -> anyhow::Result<Option<Vec<(Ipv4Addr, u8)>>> {
        let pool: Vec<Ipv4Addr> = server.pool().addresses().iter().map(|a| a.addr).collect();
        let prefixes = covering_prefixes(&pool);
        if prefixes == self.tun.pool() {
            return Ok(None);
        }
        self.tun
            .set_pool(&prefixes)
            .await
            .with_context(|| format!("routing the new pool into {}", self.tun.name()))?;
        Ok(Some(prefixes))
    }

    /// Forgets every session (`ctl restart` without `--keep-state`).
    pub(crate) fn clear(&mut self, server: &Server, now: Instant) {
        self.translator.clear(server, now);
    }

    /// OpenMetrics lines (without `# EOF`).
    pub(crate) fn render_metrics(&self) -> String {
        render_metrics(
            self.translator.counters(),
            self.translator.session_count(),
            self.io,
        )
    }

    /// Removes the routing rules; the device goes with the process.
    pub(crate) async fn close(self) {
        let name = self.tun.name().to_string();
        if let Err(e) = self.tun.close().await {
            tracing::warn!(tun = %name, error = %e, "removing the TUN routing rules failed");
        }
    }

    /// Writes the batch (the forwarded packets) and the translator's own packets after them,
    /// in the same batch while there is room.
    async fn flush(&mut self) {
        let mut overflow = None;
        while let Some(p) = self.translator.poll_transmit() {
            if !self.batch.push(&p) {
                overflow = Some(p);
                break;
            }
        }
        let n = self.batch.len() as u64;
        match self.tun.send_batch(&mut self.batch) {
            Ok(_) => self.io.tx += n,
            Err(e) => {
                self.io.tx_errors += n;
                tracing::debug!(error = %e, packets = n, "TUN write failed");
            }
        }
        // More than a batch (a burst of fragments): one write each.
        while let Some(p) = overflow.take().or_else(|| self.translator.poll_transmit()) {
            match self.tun.send(&p).await {
                Ok(_) => self.io.tx += 1,
                Err(e) => {
                    self.io.tx_errors += 1;
                    tracing::debug!(error = %e, len = p.len(), "TUN write failed");
                }
            }
        }
    }
}

/// The dataplane's counters and gauges in OpenMetrics text (no `# EOF` line).
pub fn render_metrics(c: &Counters, sessions: usize, io: IoCounters) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_packets counter\n# HELP cgn_dataplane_packets Packets translated, by direction (hairpinned ones also count as outbound and inbound)."
    );
    for (d, v) in [
        ("outbound", c.outbound),
        ("inbound", c.inbound),
        ("hairpin", c.hairpinned),
    ] {
        let _ = writeln!(s, "cgn_dataplane_packets_total{{direction=\"{d}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_drops counter\n# HELP cgn_dataplane_drops Packets not forwarded, by reason."
    );
    for r in DropReason::ALL {
        let _ = writeln!(
            s,
            "cgn_dataplane_drops_total{{reason=\"{}\"}} {}",
            r.name(),
            c.dropped(*r)
        );
    }
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_tun_packets counter\n# HELP cgn_dataplane_tun_packets Packets read from and written to the TUN device."
    );
    for (d, v) in [("rx", io.rx), ("tx", io.tx), ("tx_error", io.tx_errors)] {
        let _ = writeln!(s, "cgn_dataplane_tun_packets_total{{io=\"{d}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_tun_reads counter\n# HELP cgn_dataplane_tun_reads Read system calls on the TUN device that returned packets (one may carry a GSO super-packet).\ncgn_dataplane_tun_reads_total {}",
        io.reads
    );
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_icmp_errors counter\n# HELP cgn_dataplane_icmp_errors ICMP errors translated or generated by the NAT."
    );
    for (k, v) in [
        ("translated", c.icmp_errors),
        ("generated", c.icmp_generated),
    ] {
        let _ = writeln!(s, "cgn_dataplane_icmp_errors_total{{kind=\"{k}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_fragments counter\n# HELP cgn_dataplane_fragments Later fragments translated, and packets fragmented to fit the MTU."
    );
    for (k, v) in [("translated", c.fragments), ("fragmented", c.fragmented)] {
        let _ = writeln!(s, "cgn_dataplane_fragments_total{{kind=\"{k}\"}} {v}");
    }
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_bypassed_packets counter\n# HELP cgn_dataplane_bypassed_packets Subscriber packets forwarded untranslated to a --no-translate destination (RFC 6888 REQ-6).\ncgn_dataplane_bypassed_packets_total {}",
        c.bypassed
    );
    let _ = writeln!(
        s,
        "# TYPE cgn_dataplane_sessions gauge\n# HELP cgn_dataplane_sessions Live translator sessions.\ncgn_dataplane_sessions {sessions}"
    );
    s
}

/// Appends the dataplane's lines to the server's exposition, before its `# EOF`.
pub(crate) fn splice_metrics(server_text: String, dataplane: &str) -> String {
    let mut s = server_text
        .strip_suffix("# EOF\n")
        .map(str::to_string)
        .unwrap_or(server_text);
    s.push_str(dataplane);
    s.push_str("# EOF\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataplane_metrics_name_every_drop_reason_and_direction() {
        let mut c = Counters {
            outbound: 3,
            inbound: 2,
            hairpinned: 1,
            bypassed: 4,
            ..Counters::default()
        };
        c.drops[0] = 7;
        let text = render_metrics(
            &c,
            5,
            IoCounters {
                rx: 9,
                tx: 8,
                tx_errors: 0,
                reads: 4,
            },
        );
        assert!(text.contains("cgn_dataplane_packets_total{direction=\"outbound\"} 3"));
        assert!(text.contains("cgn_dataplane_packets_total{direction=\"hairpin\"} 1"));
        assert!(text.contains(&format!(
            "cgn_dataplane_drops_total{{reason=\"{}\"}} 7",
            DropReason::ALL[0].name()
        )));
        for r in DropReason::ALL {
            assert!(text.contains(&format!("reason=\"{}\"", r.name())), "{r:?}");
        }
        assert!(text.contains("cgn_dataplane_sessions 5"));
        assert!(text.contains("cgn_dataplane_bypassed_packets_total 4"));
        assert!(text.contains("cgn_dataplane_tun_packets_total{io=\"rx\"} 9"));
        assert!(text.contains("cgn_dataplane_tun_reads_total 4"));
        let all = splice_metrics("a 1\n# EOF\n".into(), &text);
        assert!(all.starts_with("a 1\n# TYPE cgn_dataplane_packets counter"));
        assert!(all.ends_with("cgn_dataplane_sessions 5\n# EOF\n"));
        assert_eq!(all.matches("# EOF").count(), 1);
    }
}
