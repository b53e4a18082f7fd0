//! Creating, refreshing and deleting mappings: the table side of every request (phases,
//! quotas, NAT1 port choice, nonces) and the MAP each one sends.

use super::*;

impl Core {
    pub(super) fn add(&mut self, now: Instant, request: u64, add: AddRequest) {
        let AddRequest {
            mut mapping,
            choice,
        } = add;
        let client = mapping.internal_client;
        if !mapping.enabled {
            // RFC 6970 §4.1: only PortMappingEnabled = 1 is allowed; the RFC names no code
            // (gap G8), 402 Invalid Args says the argument is what is wrong.
            return self.reply(request, Err(MappingError::DisabledNotSupported));
        }
        // The CP's own existing entry: a refresh with the same nonce (IGD:2 practice).
        let hit = self.overlapping(&mapping.key).next().map(|(&k, e)| {
            (
                k,
                e.mapping.internal_client,
                e.mapping.internal_port,
                e.phase,
            )
        });
        if let Some((key, holder, holder_port, phase)) = hit {
            let own = key == mapping.key && holder == client;
            let same_target = holder_port == mapping.internal_port;
            if own && same_target {
                match phase {
                    Phase::Active | Phase::Recovering => {
                        return self.refresh(now, request, key, mapping);
                    }
                    Phase::ReservingNat1 | Phase::PcpInFlight => {
                        // The control point asks again while its first request is in flight
                        // (it gave up waiting): this request takes over the answer.
                        if let Some(e) = self.table.get_mut(&key) {
                            if let Some(old) = e.waiter.replace(request) {
                                self.reply(
                                    old,
                                    Err(MappingError::Upstream(
                                        "superseded by a newer request".into(),
                                    )),
                                );
                            }
                        }
                        return;
                    }
                    Phase::RemovingNat1 => {
                        // A retry right after a failed create: wait the few milliseconds
                        // until the old rules are gone, then make it anew.
                        self.deferred
                            .push((request, AddRequest { mapping, choice }));
                        return;
                    }
                    p => {
                        return self.reply(
                            request,
                            Err(MappingError::Upstream(format!(
                                "the mapping is {} upstream; try again",
                                p.as_str()
                            ))),
                        );
                    }
                }
            }
            match choice {
                PortChoice::Exact => return self.reply(request, Err(MappingError::Conflict)),
                PortChoice::Any(ref ranges) => {
                    // Suggest another port the table does not hold; the CGN decides.
                    match self.free_external(&mapping.key, ranges) {
                        Some(p) => mapping.key.external_port = p,
                        None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                    }
                }
            }
        }
        if let PortChoice::Any(ref ranges) = choice {
            if mapping.key.external_port == 0 {
                match self.free_external(&mapping.key, ranges) {
                    Some(p) => mapping.key.external_port = p,
                    None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                }
            }
        }
        // Quotas, counted over every phase in the same step (no check-then-await).
        let held = self.table.values().filter(|e| e.client() == client).count();
        if self.config.max_per_client.is_some_and(|m| held >= m)
            || self.table.len() >= self.config.max_mappings
        {
            return self.reply(request, Err(MappingError::NoPortsAvailable));
        }
        // One NAT1 rule pair per client endpoint (its SNAT must be unambiguous).
        if self.table.values().any(|e| {
            e.mapping.key.protocol == mapping.key.protocol
                && e.client() == client
                && e.mapping.internal_port == mapping.internal_port
        }) {
            return self.reply(request, Err(MappingError::Conflict));
        }
        let protocol = mapping.key.protocol;
        let nat1_port = match self.config.nat {
            NatMode::None { .. } => mapping.internal_port,
            NatMode::Nat1 => {
                let wanted = mapping.key.external_port;
                if self.nat1_port_free(protocol, wanted) {
                    wanted
                } else {
                    match self
                        .config
                        .nat1_ports
                        .clone()
                        .find(|&p| self.nat1_port_free(protocol, p))
                    {
                        Some(p) => p,
                        None => return self.reply(request, Err(MappingError::NoPortsAvailable)),
                    }
                }
            }
        };
        let created_by = match choice {
            PortChoice::Exact => CreatedBy::AddPortMapping,
            PortChoice::Any(_) => CreatedBy::AddAnyPortMapping,
        };
        let key = mapping.key;
        let entry = Entry {
            mapping,
            created_by,
            nat1_port,
            phase: Phase::ReservingNat1,
            pcp: None,
            nonce: None,
            external: None,
            last_result: None,
            pcp_expires: None,
            restores: 0,
            waiter: Some(request),
            after_removal: None,
            deadline: None,
            span: tracing::Span::current(),
        };
        let rule = entry.nat1_rule();
        self.table.insert(key, entry);
        match self.config.nat {
            NatMode::Nat1 => self.nat1(key, Nat1Command::Install(rule)),
            NatMode::None { .. } => {
                if let Err(err) = self.start_pcp(now, key) {
                    self.fail_create(key, err);
                }
            }
        }
    }

    pub(super) fn free_external(
        &self,
        key: &MappingKey,
        ranges: &[RangeInclusive<u16>],
    ) -> Option<u16> {
        let start = key.external_port.max(1);
        (start..=u16::MAX)
            .chain(1..start)
            .filter(|p| ranges.iter().any(|r| r.contains(p)))
            .find(|&p| {
                let k = MappingKey {
                    external_port: p,
                    ..*key
                };
                self.overlapping(&k).next().is_none()
            })
    }

    pub(super) fn remember_nonce(&mut self, now: Instant, slot: (Protocol, u16), nonce: Nonce) {
        self.recent_nonces.retain(|_, (_, until)| *until > now);
        self.orphans
            .retain(|_, id| self.engine.mapping(*id).is_some());
        self.recent_nonces.insert(slot, (nonce, now + NONCE_REUSE));
    }

    /// Sends the MAP for `key` (create, or renew a stored one with its nonce).
    pub(super) fn start_pcp(&mut self, now: Instant, key: MappingKey) -> Result<(), MappingError> {
        let Some(e) = self.table.get(&key) else {
            return Err(MappingError::NotFound);
        };
        let span = e.span.clone();
        let _entered = span.enter();
        let restoring = e.phase == Phase::Recovering;
        let mut request = MapRequest::new(
            key.protocol.protocol(),
            e.nat1_port,
            Self::pcp_lifetime(now, e.mapping.lease),
        );
        // Suggest the requested (or stored) external endpoint.
        let suggested = match e.external {
            Some(x) => SocketAddr::V4(x),
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), key.external_port),
        };
        request = request.suggest(suggested);
        // AddPortMapping: PREFER_FAILURE (§5.6.2, never with port 0: G1). A restore keeps
        // the external port stable or fails loudly, AddAny included (§5.10, G9).
        if suggested.port() != 0
            && !self.rebinding
            && (e.created_by == CreatedBy::AddPortMapping || restoring)
        {
            request = request.prefer_failure();
        }
        if !e.mapping.description.is_empty() {
            request = request.description(e.mapping.description.clone());
        }
        if let Some(host) = key.remote_host {
            request = request.filter(pcp_client::wire::Filter {
                prefix_length: 128,
                remote_peer_port: 0,
                remote_peer_address: IpAddr::V4(host),
            });
        }
        if let NatMode::None { third_party: true } = self.config.nat {
            if e.client() != self.config.wan_address {
                request = request.third_party(IpAddr::V4(e.client()));
            }
        }
        let slot = (key.protocol, e.nat1_port);
        let reused = match e.nonce {
            Some(n) => {
                request = request.nonce(n);
                false
            }
            None => match self.recent_nonces.remove(&slot) {
                Some((n, until)) if until > now => {
                    // The delete of that mapping may still be going on: this MAP replaces it.
                    if let Some(orphan) = self.orphans.remove(&slot) {
                        self.engine.forget(orphan);
                    }
                    request = request.clone().nonce(n);
                    true
                }
                _ => false,
            },
        };
        if !restoring {
            request = request.give_up(self.config.create_give_up);
        }
        let id = match self.engine.map(now, self.server, request.clone()) {
            // The old delete with that nonce is still in the engine: take a fresh nonce.
            Err(pcp_client::client::RequestError::Duplicate) if reused => {
                request.nonce = None;
                self.engine.map(now, self.server, request)
            }
            other => other,
        }
        .map_err(|err| MappingError::Upstream(format!("PCP request: {err}")))?;
        let nonce = self.engine.mapping(id).map(|m| m.nonce);
        self.by_pcp.insert(id, key);
        if let Some(e) = self.table.get_mut(&key) {
            e.pcp = Some(id);
            e.nonce = nonce;
            if e.phase == Phase::ReservingNat1 {
                e.phase = Phase::PcpInFlight;
            }
            tracing::info!(
                key = %key.external_port, protocol = key.protocol.as_str(),
                nat1_port = e.nat1_port, nonce = ?nonce, restoring, "MAP sent"
            );
        }
        Ok(())
    }

    /// A create that failed upstream: answer, forget the PCP side, roll NAT1 back.
    pub(super) fn fail_create(&mut self, key: MappingKey, error: MappingError) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        let waiter = e.waiter.take();
        if let Some(id) = e.pcp.take() {
            self.engine.forget(id);
            self.by_pcp.remove(&id);
        }
        if let Some(w) = waiter {
            self.reply(w, Err(error));
        }
        self.remove_locally(key, AfterRemoval::RolledBack);
    }

    /// Removes the NAT1 rules (if any), then the entry.
    pub(super) fn remove_locally(&mut self, key: MappingKey, after: AfterRemoval) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        e.phase = Phase::RemovingNat1;
        e.after_removal = Some(after);
        let rule = e.nat1_rule();
        match self.config.nat {
            NatMode::Nat1 => {
                // A delete is answered now: the mapping is gone at the CGN (or the delete
                // waited DELETE_WAIT), so nothing from outside reaches the NAT1 rules any
                // more, and they go in the next transaction. The control point does not wait
                // for an nft process; an add for the same port waits for the removal.
                if after == AfterRemoval::Deleted {
                    if let Some(w) = e.waiter.take() {
                        let mapping = e.mapping.clone();
                        self.reply(w, Ok(mapping));
                    }
                }
                self.nat1(key, Nat1Command::Remove(rule));
            }
            NatMode::None { .. } => {
                if let Some(e) = self.table.remove(&key) {
                    self.stats.removed += 1;
                    if let (Some(w), AfterRemoval::Deleted) = (e.waiter, after) {
                        self.reply(w, Ok(e.mapping.clone()));
                    }
                    if after == AfterRemoval::Deleted {
                        self.persist();
                    }
                }
            }
        }
        self.event(IwfEvent::Removed {
            key,
            reason: match after {
                AfterRemoval::Deleted => "deleted",
                AfterRemoval::RolledBack => "rolled back",
            },
        });
    }

    pub(super) fn refresh(
        &mut self,
        now: Instant,
        request: u64,
        key: MappingKey,
        new: PortMapping,
    ) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        let Some(id) = e.pcp else {
            return self.reply(request, Err(MappingError::NotFound));
        };
        let update = MappingUpdate {
            lifetime: Some(Self::pcp_lifetime(now, new.lease)),
            description: Some((!new.description.is_empty()).then(|| new.description.clone())),
            give_up: Some(self.config.create_give_up),
            ..MappingUpdate::default()
        };
        match self.engine.update(now, id, update) {
            Ok(()) => {
                e.mapping.lease = new.lease;
                e.mapping.description = new.description;
                e.mapping.enabled = new.enabled;
                e.mapping.owner = new.owner;
                e.phase = Phase::Renewing;
                e.waiter = Some(request);
            }
            Err(err) => self.reply(request, Err(MappingError::Upstream(format!("{err}")))),
        }
    }

    pub(super) fn start_delete(
        &mut self,
        now: Instant,
        key: MappingKey,
        waiter: Option<u64>,
        why: &str,
    ) {
        let Some(e) = self.table.get_mut(&key) else {
            return;
        };
        tracing::info!(
            port = key.external_port,
            protocol = key.protocol.as_str(),
            why,
            "deleting"
        );
        e.waiter = waiter;
        e.phase = Phase::Deleting;
        e.deadline = Some(now + self.config.delete_wait);
        let pcp = e.pcp;
        if let Some(nonce) = e.nonce {
            let slot = (key.protocol, e.nat1_port);
            self.remember_nonce(now, slot, nonce);
        }
        match pcp {
            Some(id) if self.engine.delete(now, id).is_ok() => {
                self.bump();
            }
            _ => {
                // Nothing upstream to delete.
                self.remove_locally(key, AfterRemoval::Deleted);
            }
        }
    }

    /// RFC 6970 §5.10 (MUST when co-located with the DHCP server): `client`'s lease ended
    /// (`why` says how), so every mapping bound to it is deleted, one PCP delete each with its
    /// nonce, and its NAT1 rules go. The number of deletes started.
    pub fn release_client(&mut self, now: Instant, client: Ipv4Addr, why: &str) -> usize {
        let keys: Vec<MappingKey> = self
            .table
            .iter()
            .filter(|(_, e)| e.phase.visible() && e.mapping.internal_client == client)
            .map(|(k, _)| *k)
            .collect();
        for &key in &keys {
            self.start_delete(now, key, None, why);
        }
        self.drain_engine(now);
        keys.len()
    }

    /// The operator's `renew-all`: every active mapping is refreshed upstream now with its
    /// nonce and its remaining UPnP lease (RFC 6887 §11.2.1 schedule from now on), and
    /// mappings waiting to be re-created retry at once (hold-downs cleared). Nothing is
    /// answered to a control point. The number of refreshes started.
    pub fn renew_all(&mut self, now: Instant) -> usize {
        self.engine.clear_hold_downs(now);
        let mut started = 0;
        for e in self.table.values_mut() {
            let (Phase::Active, Some(id)) = (e.phase, e.pcp) else {
                continue;
            };
            let update = MappingUpdate {
                lifetime: Some(Self::pcp_lifetime(now, e.mapping.lease)),
                give_up: Some(self.config.create_give_up),
                ..MappingUpdate::default()
            };
            match self.engine.update(now, id, update) {
                Ok(()) => {
                    e.phase = Phase::Renewing;
                    started += 1;
                }
                Err(err) => {
                    tracing::warn!(port = e.mapping.key.external_port, %err, "cannot renew")
                }
            }
        }
        self.drain_engine(now);
        started
    }

    /// The CPE's WAN address changed (RFC 6970 §5.10, MAY): the PCP mappings of the old
    /// address cannot be renewed or deleted any more (they lapse at the CGN), so every mapping
    /// is mapped again from the new address, with a fresh nonce (a new client for the server,
    /// RFC 6887 §11.2), suggesting its previous external endpoint but without PREFER_FAILURE:
    /// the old mappings hold those ports until they expire. The driver rebuilds NAT1 (the SNAT
    /// target changed) before calling this. A changed external port cannot be told to the CP.
    pub fn wan_address_changed(&mut self, now: Instant, address: Ipv4Addr) {
        if address == self.config.wan_address {
            return;
        }
        tracing::warn!(old = %self.config.wan_address, new = %address, "WAN address changed: mapping everything again");
        self.config.wan_address = address;
        let path = Path {
            remote: self.config.server,
            local: IpAddr::V4(address),
        };
        if let Some(server) = self.engine.add_server(vec![path]) {
            self.server = server;
        }
        let keys: Vec<MappingKey> = self
            .table
            .iter()
            .filter(|(_, e)| e.phase.visible())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(e) = self.table.get_mut(&key) {
                if let Some(id) = e.pcp.take() {
                    self.engine.forget(id);
                    self.by_pcp.remove(&id);
                }
                e.nonce = None;
                e.phase = Phase::Recovering;
                e.waiter = None;
            }
            self.rebinding = true;
            let result = self.start_pcp(now, key);
            self.rebinding = false;
            if let Err(err) = result {
                tracing::warn!(port = key.external_port, %err, "cannot map again after the WAN change");
            }
        }
        self.recent_nonces.clear();
        self.external = None;
        self.drain_engine(now);
    }
}
