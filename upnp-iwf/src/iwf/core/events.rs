//! What the PCP engine reports, applied to the table (grants, restores, errors, give-ups,
//! deletes), and the PCP → UPnP error mapping (RFC 6970 §4.3).

use super::*;

/// PCP result → the IGD's error for an add (RFC 6970 §4.3; digest §4.5). The SOAP layer
/// turns it into the code of the IGD version in use.
pub fn add_error(code: ErrorCode) -> MappingError {
    match code {
        ErrorCode::Pcp(ResultCode::NotAuthorized) => MappingError::NotAuthorized,
        ErrorCode::Pcp(ResultCode::NoResources | ResultCode::UserExQuota) => {
            MappingError::NoPortsAvailable
        }
        ErrorCode::Pcp(ResultCode::CannotProvideExternal) => MappingError::Conflict,
        other => MappingError::Upstream(format!("PCP server answered {other}")),
    }
}

/// PCP result → the IGD's error for a delete (CANNOT_PROVIDE_EXTERNAL is 714, §5.8).
pub fn delete_error(code: ErrorCode) -> MappingError {
    match code {
        ErrorCode::Pcp(ResultCode::CannotProvideExternal) => MappingError::NotFound,
        other => add_error(other),
    }
}

impl Core {
    pub(super) fn key_of(&self, id: MappingId) -> Option<MappingKey> {
        self.by_pcp.get(&id).copied()
    }

    pub(super) fn set_external(&mut self, external: SocketAddrV4) {
        let ip = Some(*external.ip());
        if self.external != ip {
            self.external = ip;
            self.event(IwfEvent::ExternalAddress(ip));
        }
    }

    /// Applies every event the PCP engine produced.
    pub(super) fn drain_engine(&mut self, now: Instant) {
        while let Some(event) = self.engine.poll_event() {
            self.on_engine_event(now, event);
        }
    }

    pub(super) fn on_engine_event(&mut self, now: Instant, event: Event) {
        if let Event::Announced { epoch, result, .. } = event {
            return self.event(IwfEvent::ServerAnswered { epoch, result });
        }
        if let Event::ServerStateLost { announced, .. } = event {
            for e in self.table.values_mut() {
                if matches!(e.phase, Phase::Active | Phase::Renewing) {
                    e.phase = Phase::Recovering;
                }
            }
            return self.event(IwfEvent::ServerStateLost { announced });
        }
        let Some(id) = event.mapping() else {
            return;
        };
        if self.probes.contains_key(&id) {
            return self.on_probe_event(now, id, event);
        }
        let Some(key) = self.key_of(id) else {
            return;
        };
        let result = match event {
            Event::Granted { .. }
            | Event::Restored { .. }
            | Event::Updated { .. }
            | Event::Renewed { .. }
            | Event::Changed { .. } => Some("SUCCESS".to_string()),
            Event::Failed { code, .. } => Some(match code {
                ErrorCode::Pcp(c) => c.to_string(),
                other => other.to_string(),
            }),
            Event::GaveUp { .. } | Event::TimedOut { .. } => Some("NO_ANSWER".to_string()),
            _ => None,
        };
        if let Some(r) = result {
            *self.results.entry(r).or_default() += 1;
        }
        let span = self.table.get(&key).map(|e| e.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let info = self.engine.mapping(id);
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        e.pcp_expires = info.as_ref().and_then(|i| i.expires_at);
        e.last_result = info.as_ref().and_then(|i| i.last_result).or(e.last_result);
        match event {
            Event::Granted { external, .. }
            | Event::Restored { external, .. }
            | Event::Updated { external, .. }
            | Event::Renewed { external, .. }
            | Event::Changed { external, .. } => {
                let Some(external) = v4(external) else {
                    return;
                };
                self.granted(now, key, id, external, event);
            }
            Event::Expired { .. } => {
                if matches!(e.phase, Phase::Active | Phase::Renewing) {
                    e.phase = Phase::Recovering;
                }
            }
            Event::Failed { code, .. } => {
                self.stats.pcp_errors += 1;
                match e.phase {
                    Phase::PcpInFlight => self.fail_create(key, add_error(code)),
                    Phase::Renewing => {
                        e.phase = Phase::Active;
                        if let Some(w) = e.waiter.take() {
                            self.reply(w, Err(add_error(code)));
                        }
                    }
                    Phase::Deleting => {
                        // The engine dropped the refused delete (NO_RESOURCES aside, which it
                        // retries): the mapping is gone for us either way.
                        if code == ErrorCode::Pcp(ResultCode::NoResources) {
                            return;
                        }
                        let waiter = e.waiter.take();
                        e.pcp = None;
                        self.by_pcp.remove(&id);
                        if let Some(w) = waiter {
                            self.reply(w, Err(delete_error(code)));
                        }
                        self.remove_locally(key, AfterRemoval::Deleted);
                        // The waiter got the error; do not answer it twice.
                        if let Some(e) = self.table.get_mut(&key) {
                            e.waiter = None;
                        }
                    }
                    _ => self.event(IwfEvent::PcpError { key, code }),
                }
            }
            Event::GaveUp {
                exchange,
                transmissions,
                ..
            } => {
                let error = MappingError::Upstream(format!(
                    "no answer from PCP server {} after {transmissions} tries",
                    self.config.server
                ));
                match exchange {
                    Exchange::Create => {
                        self.by_pcp.remove(&id);
                        let orphan = self.table.get_mut(&key).map(|e| {
                            e.pcp = None;
                            (e.nat1_port, e.nonce)
                        });
                        self.fail_create(key, error);
                        // The server may have made the mapping and only its answers were
                        // lost: delete it with its nonce in the background, bounded.
                        // A retry by the control point reuses the nonce (and drops this
                        // delete), so the server sees a refresh, not a stranger's request.
                        if let Some((port, Some(nonce))) = orphan {
                            let request = MapRequest::new(key.protocol.protocol(), port, 1)
                                .nonce(nonce)
                                .give_up(GiveUp::after(ORPHAN_DELETE));
                            match self.engine.delete_mapping(now, self.server, request) {
                                Ok(orphan) => {
                                    self.orphans.insert((key.protocol, port), orphan);
                                }
                                Err(err) => tracing::debug!(%err, "no background delete"),
                            }
                            self.remember_nonce(now, (key.protocol, port), nonce);
                        }
                    }
                    Exchange::Update => {
                        e.phase = Phase::Active;
                        if let Some(w) = e.waiter.take() {
                            self.reply(w, Err(error));
                        }
                    }
                }
            }
            Event::TimedOut { .. } => {
                self.by_pcp.remove(&id);
                e.pcp = None;
                if e.phase == Phase::PcpInFlight {
                    let error = MappingError::Upstream(format!(
                        "no answer from PCP server {}",
                        self.config.server
                    ));
                    self.fail_create(key, error);
                } else {
                    self.remove_locally(key, AfterRemoval::Deleted);
                }
            }
            Event::PreferFailureIgnored { .. } => {
                // The engine deletes what the server made; answer now (UNSUPP_OPTION-like, 501).
                if let Some(w) = e.waiter.take() {
                    self.reply(
                        w,
                        Err(MappingError::Upstream(
                            "the PCP server ignores PREFER_FAILURE".into(),
                        )),
                    );
                }
                if let Some(e) = self.table.get_mut(&key) {
                    e.phase = Phase::Deleting;
                }
            }
            Event::Deleted { .. } => {
                self.by_pcp.remove(&id);
                e.pcp = None;
                if e.phase == Phase::Deleting {
                    self.remove_locally(key, AfterRemoval::Deleted);
                }
            }
            _ => {}
        }
    }

    pub(super) fn granted(
        &mut self,
        now: Instant,
        key: MappingKey,
        id: MappingId,
        external: SocketAddrV4,
        event: Event,
    ) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        let before = e.external;
        e.external = Some(external);
        let phase = e.phase;
        match phase {
            Phase::PcpInFlight => {
                e.phase = Phase::Active;
                let waiter = e.waiter.take();
                let nat1_port = e.nat1_port;
                let mut mapping = e.mapping.clone();
                // AddAnyPortMapping: the key becomes the assigned port (NewReservedPort).
                let mut key = key;
                if e.created_by == CreatedBy::AddAnyPortMapping
                    && external.port() != key.external_port
                {
                    let new_key = MappingKey {
                        external_port: external.port(),
                        ..key
                    };
                    if !self.table.contains_key(&new_key) {
                        if let Some(mut moved) = self.table.remove(&key) {
                            moved.mapping.key = new_key;
                            mapping = moved.mapping.clone();
                            self.table.insert(new_key, moved);
                            self.by_pcp.insert(id, new_key);
                            key = new_key;
                        }
                    }
                }
                self.stats.created += 1;
                tracing::info!(
                    port = key.external_port, protocol = key.protocol.as_str(),
                    %external, nat1_port, "MAP SUCCESS: mapped through both NATs"
                );
                self.set_external(external);
                self.event(IwfEvent::Created {
                    key,
                    external,
                    nat1_port,
                });
                if let Some(w) = waiter {
                    self.reply(w, Ok(mapping));
                }
                self.persist();
            }
            Phase::Renewing => {
                e.phase = Phase::Active;
                let waiter = e.waiter.take();
                let mapping = e.mapping.clone();
                self.set_external(external);
                // A control point's refresh changed the lease end: persist it (an operator's
                // renew-all changed nothing durable, unless the endpoint moved).
                if waiter.is_some() || before != Some(external) {
                    self.persist();
                }
                if let Some(w) = waiter {
                    self.reply(w, Ok(mapping));
                }
            }
            Phase::Recovering | Phase::Active => {
                e.phase = Phase::Active;
                let restored =
                    phase == Phase::Recovering || matches!(event, Event::Restored { .. });
                if restored {
                    e.restores += 1;
                    self.stats.restores += 1;
                    let same_endpoint = before == Some(external);
                    tracing::info!(
                        port = key.external_port, %external, same_endpoint,
                        "mapping restored upstream"
                    );
                    self.event(IwfEvent::Restored {
                        key,
                        external,
                        same_endpoint,
                    });
                }
                self.set_external(external);
                if before != Some(external) {
                    // A new endpoint (Mapping Update, restore elsewhere): keep the file true.
                    self.persist();
                }
            }
            Phase::Deleting | Phase::RemovingNat1 | Phase::ReservingNat1 => {}
        }
        let _ = now;
    }
}
