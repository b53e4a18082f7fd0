//! Writing the queued transmissions: PCP requests (with the nonce, Client IP and suggested
//! endpoint of the moment), ANNOUNCE, and the NAT-PMP fallback requests.

use std::time::Instant;

use crate::natpmp;

use super::engine::{Engine, Job};
use super::event::Transmit;
use super::request::{self, Attempt};

impl Engine {
    /// Writes the next datagram to send into `buf` (at least 1100 bytes; a shorter buffer
    /// makes requests that do not fit be skipped) and says where it goes.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(job) = self.transmits.pop_front() {
            if let Some(t) = self.build(job, buf) {
                self.stats.transmissions += 1;
                tracing::trace!(?job, to = %t.destination, len = t.len, "PCP client send");
                return Some(t);
            }
        }
        None
    }

    fn build(&mut self, job: Job, buf: &mut [u8]) -> Option<Transmit> {
        match job {
            Job::Announce(server) => {
                let s = self.servers.get_mut(server)?;
                let a = s.announce.as_mut()?;
                a.queued = false;
                let path = s.paths.get(a.tx.address)?;
                let len = request::emit_announce(path.local, buf).ok()?;
                Some(Transmit {
                    destination: path.remote,
                    source: path.local,
                    len,
                })
            }
            Job::NatPmpExternal(server) => {
                let s = self.servers.get_mut(server)?;
                s.natpmp_external_queued = false;
                let path = s.paths.get(s.active)?;
                let len = natpmp::RequestRepr::ExternalAddress.emit(buf).ok()?;
                Some(Transmit {
                    destination: path.remote,
                    source: path.local,
                    len,
                })
            }
            Job::Mapping(id) => {
                let m = self.mappings.get_mut(&id)?;
                m.queued = false;
                let path = *self.servers.get(m.server)?.paths.get(m.sent_path)?;
                // Renewals suggest the last assigned endpoint (RFC 6887 §11.2.1), and so do
                // re-creates after expiry or state loss (§14.1.3).
                let suggested = match m.grant.map(|g| g.external).or(m.last_external) {
                    Some(e) if e.ip().is_ipv4() == m.spec.suggested_address.is_ipv4() => {
                        (e.ip(), e.port())
                    }
                    _ => (m.spec.suggested_address, m.spec.suggested_port),
                };
                let len = if m.natpmp {
                    // Only UDP and TCP maps fall back to NAT-PMP (`natpmp_eligible`).
                    let protocol = natpmp::Transport::from_protocol(m.spec.protocol)
                        .unwrap_or(natpmp::Transport::Udp);
                    let (port, lifetime) = if m.deleting {
                        (0, 0)
                    } else {
                        (suggested.1, m.spec.lifetime)
                    };
                    natpmp::RequestRepr::from_fields(protocol, m.spec.internal_port, port, lifetime)
                        .emit(buf)
                        .ok()?
                } else {
                    let send = Attempt {
                        client_ip: path.local,
                        nonce: m.nonce,
                        suggested,
                        delete: m.deleting,
                    };
                    request::emit_pcp(&m.spec, send, buf).ok()?
                };
                Some(Transmit {
                    destination: path.remote,
                    source: path.local,
                    len,
                })
            }
        }
    }
}
