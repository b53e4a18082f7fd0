//! Probe mappings (RFC 6970 §5.7 GetSpecificPortMappingEntry, §4.2 GetExternalIPAddress):
//! short MAPs outside the table, deleted as soon as they are answered.

use super::*;

/// What a probe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeKind {
    Specific,
    External,
}

/// A probe mapping in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProbeState {
    pub(super) request: u64,
    pub(super) kind: ProbeKind,
    pub(super) answered: bool,
    pub(super) protocol: Protocol,
    pub(super) port: u16,
}

/// Lifetime asked for a probe mapping (RFC 6970 §5.7: short, e.g. 60 s); it is deleted as
/// soon as it is answered.
pub const PROBE_LIFETIME: u32 = 60;

/// The internal port of the external-address probe: discard (RFC 6970 §4.2 suggests 9).
pub const PROBE_EXTERNAL_PORT: u16 = 9;

impl Core {
    /// Sends a probe MAP (never entered in the table, never persisted).
    pub(super) fn probe(
        &mut self,
        now: Instant,
        request: u64,
        kind: ProbeKind,
        key: Option<MappingKey>,
    ) {
        let (protocol, port) = match (kind, key) {
            (ProbeKind::Specific, Some(k)) => {
                // G4: a throw-away internal port nobody uses (no NAT1 rule is installed:
                // nothing is meant to arrive there).
                let busy = |p: u16| {
                    self.probes
                        .values()
                        .any(|s| s.protocol == k.protocol && s.port == p)
                };
                let port = self
                    .config
                    .nat1_ports
                    .clone()
                    .rev()
                    .find(|&p| self.nat1_port_free(k.protocol, p) && !busy(p));
                match port {
                    Some(p) => (k.protocol, p),
                    None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                }
            }
            _ => (Protocol::Udp, PROBE_EXTERNAL_PORT),
        };
        let mut map = MapRequest::new(protocol.protocol(), port, PROBE_LIFETIME)
            .give_up(self.config.create_give_up);
        if let (ProbeKind::Specific, Some(k)) = (kind, key) {
            map = map
                .suggest(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    k.external_port,
                ))
                .prefer_failure();
        }
        match self.engine.map(now, self.server, map) {
            Ok(id) => {
                tracing::info!(?kind, port, "PCP probe sent");
                self.probes.insert(
                    id,
                    ProbeState {
                        request,
                        kind,
                        answered: false,
                        protocol,
                        port,
                    },
                );
            }
            // e.g. an external-address probe already in flight (same internal tuple).
            Err(err) => {
                tracing::debug!(%err, "no probe");
                match kind {
                    ProbeKind::Specific => self.reply(request, Err(MappingError::NotFound)),
                    ProbeKind::External => self.outputs.push_back(Output::External {
                        request,
                        address: self.external,
                    }),
                }
            }
        }
    }

    /// A probe's engine event.
    pub(super) fn on_probe_event(&mut self, now: Instant, id: MappingId, event: Event) {
        let Some(state) = self.probes.get(&id).copied() else {
            return;
        };
        let answer = match event {
            Event::Granted { external, .. } => {
                if let Some(x) = v4(external) {
                    self.set_external(x);
                }
                // G5: the probe made a mapping: delete it at once with its nonce.
                if self.engine.delete(now, id).is_err() {
                    self.probes.remove(&id);
                }
                Some(Err(MappingError::NotFound))
            }
            Event::Failed { code, .. } => {
                self.engine.forget(id);
                self.probes.remove(&id);
                Some(match code {
                    ErrorCode::Pcp(ResultCode::CannotProvideExternal) => {
                        Err(MappingError::NotFound)
                    }
                    other => Err(add_error(other)),
                })
            }
            Event::GaveUp { .. } | Event::TimedOut { .. } | Event::Deleted { .. } => {
                self.probes.remove(&id);
                Some(Err(MappingError::Upstream(format!(
                    "no answer from PCP server {}",
                    self.config.server
                ))))
            }
            _ => None,
        };
        let Some(result) = answer else {
            return;
        };
        if state.answered {
            return;
        }
        if let Some(p) = self.probes.get_mut(&id) {
            p.answered = true;
        }
        match state.kind {
            ProbeKind::Specific => self.reply(state.request, result),
            ProbeKind::External => {
                let address = self.external;
                for request in std::iter::once(state.request).chain(self.external_waiters.drain(..))
                {
                    self.outputs
                        .push_back(Output::External { request, address });
                }
            }
        }
    }
}
