//! Recovery after state loss (RFC 6887 §14.1.3, §8.5): the simulated restart and the
//! unsolicited ANNOUNCE round.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use pcp_client::wire::{self, Nonce, OpcodeData, Options, Protocol, ResponseRepr, ResultCode};

use crate::announce::ANNOUNCE_MULTICAST;
use crate::pool::proto_index;
use crate::ports::Ports;
use crate::server::{Server, Transmit};
use crate::table::FreedBinding;

impl Server {
    /// The unsolicited ANNOUNCE response (RFC 6887 §14.1.3): SUCCESS, lifetime 0, the
    /// current epoch.
    pub fn announce_message(&self, now: Instant) -> Vec<u8> {
        let mut buf = [0u8; wire::HEADER_LEN];
        let r = ResponseRepr {
            result: ResultCode::Success,
            lifetime: 0,
            epoch: self.clock().epoch(now),
            data: OpcodeData::Announce,
            options: Options::EMPTY,
        };
        match r.emit(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    pub(crate) fn queue_announce(&mut self, now: Instant) {
        let payload = self.announce_message(now);
        let mut dests: Vec<SocketAddr> = Vec::new();
        for c in self.remembered_clients() {
            dests.push(SocketAddr::V4(c));
            if self.config().announce_client_port {
                let p = SocketAddr::V4(SocketAddrV4::new(*c.ip(), wire::CLIENT_PORT));
                if !dests.contains(&p) {
                    dests.push(p);
                }
            }
        }
        if self.config().announce_multicast {
            dests.push(ANNOUNCE_MULTICAST);
        }
        let sources = self.unsolicited().sources();
        for source in sources {
            for d in &dests {
                self.metrics_mut().announces_sent += 1;
                self.unsolicited_mut().push(Transmit {
                    source,
                    destination: *d,
                    payload: payload.clone(),
                });
            }
        }
        tracing::info!(
            epoch = self.clock().epoch(now),
            copy = self.unsolicited().announce_copy(),
            destinations = dests.len(),
            "unsolicited ANNOUNCE"
        );
    }

    /// Simulates a restart at `now` (RFC 6887 §14.1.3, §8.5).
    ///
    /// * `keep_state = false` (a reboot): every mapping is lost and the epoch resets to 0.
    ///   The freed external ports stay in hold-down (RFC 6888 REQ-8 applies after state
    ///   loss), reclaimable by the same internal endpoint and nonce (RFC 6887 §15), so
    ///   clients that re-create their mappings get their old ports back. Remembered clients
    ///   and static mappings survive.
    /// * `keep_state = true` (an engine restart): mappings and epoch are kept.
    ///
    /// Either way the unsolicited ANNOUNCE round starts now.
    pub fn restart(&mut self, now: Instant, keep_state: bool) {
        let now_s = self.seconds(now);
        if !keep_state {
            let bindings: Vec<FreedBinding> = self
                .table()
                .bindings()
                .filter(|(_, b)| !b.is_static())
                .map(|(id, b)| FreedBinding {
                    internal: b.internal_key(),
                    external: b.external_key(),
                    addr_index: b.addr_index,
                    nonce: if b.has_map() {
                        b.nonce
                    } else {
                        self.table()
                            .peer_sessions()
                            .find(|(_, p)| p.binding == id)
                            .map_or(Nonce::default(), |(_, p)| p.nonce)
                    },
                })
                .collect();
            let statics: Vec<_> = self
                .table()
                .bindings()
                .filter(|(_, b)| b.is_static())
                .map(|(_, b)| {
                    (
                        b.addr_index,
                        proto_index(Protocol(b.protocol)),
                        b.external.port(),
                    )
                })
                .collect();
            for (addr, proto, port) in statics {
                if let Some(p) = proto {
                    self.ports_mut().release(addr, p, port);
                }
            }
            self.table_mut().clear(now_s);
            self.ports_mut().clear_dedicated();
            self.clock_mut().skip_to(now_s);
            for anchor in self.subscribers_mut().clear_usage() {
                self.ports_mut().anchor_delta(anchor, -1);
            }
            self.ports_mut().clear_blocks();
            self.unsolicited_mut().clear_updates();
            let mut seen = std::collections::HashSet::new();
            for f in bindings {
                if seen.insert(Ports::held_port(&f)) {
                    self.release_or_hold(&f, now_s);
                }
            }
            self.clock_mut().reset_epoch(now);
            for s in self.statics().to_vec() {
                let _ = self.install_static(s);
            }
            tracing::warn!("state lost: mappings dropped, epoch reset");
        } else {
            tracing::info!("engine restart with state kept");
        }
        let count = self.config().announce_count;
        self.unsolicited_mut().start_announce(now, count);
        self.handle_timeout(now);
    }
}
