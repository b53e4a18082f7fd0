//! Response processing, in the order of RFC 6887 §8.3 (digest §2.4), plus version
//! negotiation (§9) and the NAT-PMP fallback (App. A, RFC 6886).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::natpmp;
use crate::wire::{OptionCode, PcpOption, ResponseRepr, ResultCode, peek_response};

use super::config::{LONG_ERROR_LIFETIME, SHORT_ERROR_LIFETIME, UNSUPP_VERSION_RETRY};
use super::engine::{Engine, Key};
use super::epoch::EpochCheck;
use super::event::{ErrorCode, Event, MappingId, ServerId, Version};
use super::retransmit::Retransmit;
use super::rng::uniform;

impl Engine {
    /// Handles a datagram received from `from` on local address `to` (for a socket bound to a
    /// wildcard or multicast address, pass that address; the path's local address is used
    /// then). Whatever the bytes, this never panics and never creates state beyond the
    /// server's epoch and the mappings the application asked for.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        // 1. Only from an address of a server we talk to (source IP and port).
        let Some((server, path)) = self.find_path(from) else {
            self.stats.dropped += 1;
            return;
        };
        // RFC 7488 §3: ignore a late answer from an address already given up on.
        if self.servers[server].failed[path] {
            self.stats.dropped += 1;
            return;
        }
        // 2. At least 4 bytes.
        if bytes.len() < 4 {
            self.stats.dropped += 1;
            return;
        }
        // The NAT-PMP "unsupported version" reply, whatever its R bit (digest §1.11 gotcha).
        if natpmp::is_unsupp_version_reply(bytes) {
            let epoch = natpmp::unsupp_version_reply_epoch(bytes);
            if let Some(epoch) = epoch {
                self.natpmp_epoch(now, server, epoch, None);
            }
            self.unsupported_version(now, server, path, natpmp::VERSION, None, epoch);
            return;
        }
        if bytes[0] == natpmp::VERSION {
            self.natpmp_response(now, server, bytes);
            return;
        }
        // 3. R = 1.
        let Some((version, _, result)) = peek_response(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        // 4. UNSUPP_VERSION before the length rules.
        if result == ResultCode::UnsuppVersion {
            let lifetime = bytes
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            self.unsupported_version(now, server, path, version, lifetime, None);
            return;
        }
        // 5. Length rules (24 ≤ len ≤ 1100, multiple of 4) and structure.
        let Ok(response) = ResponseRepr::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        match response.data {
            crate::wire::OpcodeData::Announce => {
                self.announce_response(now, server, path, &response)
            }
            crate::wire::OpcodeData::Map(_) | crate::wire::OpcodeData::Peer(_) => {
                self.mapping_response(now, server, path, to, &response)
            }
            crate::wire::OpcodeData::Authentication(_) => self.stats.dropped += 1,
        }
    }

    fn announce_response(
        &mut self,
        now: Instant,
        server: usize,
        path: usize,
        response: &ResponseRepr<'_>,
    ) {
        self.stats.responses += 1;
        self.path_answered(server, path);
        // RFC 6887 §14.1.3: on an invalid epoch wait uniform 0 to 5 s, then renew everything.
        if self.servers[server].epoch.check(now, response.epoch) == EpochCheck::Invalid {
            self.stats.epoch_resets += 1;
            let delay = uniform(
                &mut *self.rng,
                Duration::ZERO,
                super::config::ANNOUNCE_RENEW_MAX_DELAY,
            );
            let s = &mut self.servers[server];
            let at = now + delay;
            s.renew_all_at = Some(s.renew_all_at.map_or(at, |t| t.min(at)));
            self.push_event(Event::ServerStateLost {
                server: ServerId(server),
                announced: true,
            });
        }
        if self.servers[server].announce.take().is_some() {
            self.push_event(Event::Announced {
                server: ServerId(server),
                result: response.result,
                epoch: response.epoch,
            });
        }
    }

    fn mapping_response(
        &mut self,
        now: Instant,
        server: usize,
        path: usize,
        to: SocketAddr,
        response: &ResponseRepr<'_>,
    ) {
        let Some(map) = response.data.map_fields() else {
            return;
        };
        let remote = match response.data {
            crate::wire::OpcodeData::Peer(p) => Some((p.remote_peer_address, p.remote_peer_port)),
            _ => None,
        };
        let third_party = match response.options.find(OptionCode::THIRD_PARTY) {
            Some(PcpOption::ThirdParty(ip)) => Some(ip),
            _ => None,
        };
        // 6. Internal IP: THIRD_PARTY, else the response's destination must be our address.
        let local = self.servers[server].paths[path].local;
        let dest = to.ip();
        if third_party.is_none() && !dest.is_unspecified() && !dest.is_multicast() && dest != local
        {
            self.stats.dropped += 1;
            return;
        }
        let key = Key {
            server,
            third_party,
            protocol: map.protocol,
            internal_port: map.internal_port,
            nonce: map.nonce,
            remote,
        };
        // Responses to requests never sent are ignored (MUST).
        let Some(&id) = self.index.get(&key) else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.responses += 1;
        self.path_answered(server, path);
        // 7. Epoch.
        let invalid = self.servers[server].epoch.check(now, response.epoch) == EpochCheck::Invalid;
        if invalid {
            // This answer re-created the mapping at a server that lost its state.
            if let Some(m) = self.mappings.get_mut(&id) {
                if m.grant.is_some() && !m.deleting {
                    m.recovering = true;
                }
            }
        }
        // 8. Apply the result.
        self.apply(now, id, response, map);
        if invalid {
            self.stats.epoch_resets += 1;
            self.push_event(Event::ServerStateLost {
                server: ServerId(server),
                announced: false,
            });
            self.renew_all(now, server, Some(id));
        }
    }

    fn apply(
        &mut self,
        now: Instant,
        id: u64,
        response: &ResponseRepr<'_>,
        map: &crate::wire::MapData,
    ) {
        let Some(m) = self.mappings.get(&id) else {
            return;
        };
        let (deleting, server) = (m.deleting, m.server);
        if response.result.is_success() {
            if deleting {
                // RFC 6887 §15: when outbound traffic keeps the implicit mapping alive, the
                // server answers the delete with SUCCESS and that mapping's remaining
                // lifetime. So any success after the delete went out confirms it; one that
                // comes before answers an earlier renewal (stale, ignored).
                let delete_sent = m.tx.is_some_and(|tx| tx.transmissions > 0);
                if response.lifetime == 0 || delete_sent {
                    self.forget(MappingId(id));
                    self.push_event(Event::Deleted { id: MappingId(id) });
                }
                return;
            }
            if response.lifetime == 0 {
                // A create never asks for lifetime 0: before a grant, a SUCCESS with lifetime
                // 0 answers an older delete with the same nonce (e.g. a retried mapping whose
                // first attempt was deleted): stale, and it must not restart the exchange.
                if m.grant.is_some() {
                    self.lost(now, id);
                } else {
                    self.stats.dropped += 1;
                }
                return;
            }
            // RFC 6887 §13.2: a PREFER_FAILURE success must echo the suggestion, else it is
            // a Mapping Update for an older mapping that raced the request.
            if m.spec.options.prefer_failure {
                let (address, port) = match m.grant.map(|g| g.external).or(m.last_external) {
                    Some(e) => (e.ip(), e.port()),
                    None => (m.spec.suggested_address, m.spec.suggested_port),
                };
                if map.external_port != port
                    || (!address.is_unspecified() && map.external_address != address)
                {
                    self.stats.stale_updates += 1;
                    self.stale_offer(now, id, map);
                    return;
                }
            }
            let external = SocketAddr::new(map.external_address, map.external_port);
            let port_set = match response.options.find(OptionCode::PORT_SET) {
                Some(PcpOption::PortSet(set)) => Some(set),
                _ => None,
            };
            if let Some(m) = self.mappings.get_mut(&id) {
                m.granted_port_set = port_set;
            }
            self.grant(
                now,
                id,
                external,
                response.lifetime,
                response.epoch,
                Version::Pcp,
            );
            return;
        }
        let code = response.result;
        if let Some(m) = self.mappings.get_mut(&id) {
            m.last_result = Some(ErrorCode::Pcp(code));
        }
        let lifetime = self.error_lifetime(code.is_long_lifetime_error(), response.lifetime);
        if code == ResultCode::NoResources {
            self.no_resources(now, server, deleting, lifetime);
        }
        self.failed(
            now,
            id,
            ErrorCode::Pcp(code),
            lifetime,
            code == ResultCode::NoResources,
        );
    }

    /// A second non-echoing PREFER_FAILURE success for a request still unanswered is not a race
    /// any more: the server ignores PREFER_FAILURE (some miniupnpd versions substitute another
    /// port). Report it and delete what the server made with our nonce, so it does not linger.
    fn stale_offer(&mut self, now: Instant, id: u64, map: &crate::wire::MapData) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        if !m.awaiting || m.grant.is_some() {
            return;
        }
        m.stale_offers = m.stale_offers.saturating_add(1);
        if m.stale_offers < 2 {
            return;
        }
        self.push_event(Event::PreferFailureIgnored {
            id: MappingId(id),
            offered: SocketAddr::new(map.external_address, map.external_port),
        });
        let _ = self.delete(now, MappingId(id));
    }

    /// NO_RESOURCES hold-downs (RFC 6887 §11.4, §12.4): after a create or renew no new-mapping
    /// requests, after a delete no requests at all, for the error's lifetime.
    fn no_resources(&mut self, now: Instant, server: usize, deleting: bool, lifetime: u32) {
        let until = now + Duration::from_secs(u64::from(lifetime));
        let s = &mut self.servers[server];
        let slot = if deleting {
            &mut s.hold_all_until
        } else {
            &mut s.hold_new_until
        };
        *slot = Some(slot.map_or(until, |t| t.max(until)));
    }

    /// Reports an error and holds the mapping down for `lifetime`. A refused delete is
    /// dropped, except after NO_RESOURCES, which retries once the hold-down ends.
    fn failed(
        &mut self,
        now: Instant,
        id: u64,
        code: ErrorCode,
        lifetime: u32,
        retry_delete: bool,
    ) {
        self.push_event(Event::Failed {
            id: MappingId(id),
            code,
            lifetime,
        });
        let deleting = self.mappings.get(&id).is_some_and(|m| m.deleting);
        if deleting && !retry_delete {
            self.forget(MappingId(id));
        } else {
            self.hold(now, id, lifetime);
        }
    }

    /// The error lifetime to honour: the server's, or the RFC 6887 §7.4 suggestion when it
    /// sent 0, capped like any lifetime.
    fn error_lifetime(&self, long: bool, lifetime: u32) -> u32 {
        let lifetime = match lifetime {
            0 if long => LONG_ERROR_LIFETIME,
            0 => SHORT_ERROR_LIFETIME,
            l => l,
        };
        lifetime.min(self.config.max_lifetime)
    }

    /// The server removed the mapping (success with lifetime 0): report it and ask again.
    fn lost(&mut self, now: Instant, id: u64) {
        let irt = self.config.irt;
        if let Some(m) = self.mappings.get_mut(&id) {
            m.grant = None;
            m.awaiting = false;
            m.tx = None;
            m.renew_k = 0;
            m.next_send = Some(now + irt);
        }
        self.push_event(Event::Expired { id: MappingId(id) });
        self.reschedule(id);
    }

    /// Keeps using an address that answered (RFC 7488 §3).
    fn path_answered(&mut self, server: usize, path: usize) {
        let s = &mut self.servers[server];
        s.active = path;
        s.answered = Some(path);
    }

    /// UNSUPP_VERSION (RFC 6887 §9): version 0 means NAT-PMP; fall back for the requests
    /// NAT-PMP can carry (App. A), fail the others. This client speaks only PCP version 2,
    /// so any other version fails too, with a retry after min(30 min, lifetime).
    fn unsupported_version(
        &mut self,
        now: Instant,
        server: usize,
        path: usize,
        version: u8,
        lifetime: Option<u32>,
        natpmp_epoch: Option<u32>,
    ) {
        self.stats.responses += 1;
        let retry = match lifetime {
            Some(l) if l > 0 => l.min(UNSUPP_VERSION_RETRY),
            _ => UNSUPP_VERSION_RETRY,
        };
        let remote_v4 = self.servers[server].paths[path].remote.is_ipv4();
        let ids: Vec<u64> = self
            .mappings
            .iter()
            .filter(|(_, m)| m.server == server && m.awaiting && !m.natpmp && m.sent_path == path)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let Some(m) = self.mappings.get_mut(&id) else {
                continue;
            };
            m.awaiting = false;
            let fallback = version == natpmp::VERSION
                && self.config.natpmp_fallback
                && remote_v4
                && m.spec.natpmp_eligible();
            if fallback {
                if m.grant.is_some() && !m.deleting {
                    m.natpmp_next = true;
                } else {
                    m.natpmp = true;
                    m.tx = Some(Retransmit::new(now, self.config.natpmp_irt, path));
                }
                m.next_send = Some(now);
                self.fire(now, id);
            } else {
                self.failed(
                    now,
                    id,
                    ErrorCode::Pcp(ResultCode::UnsuppVersion),
                    retry,
                    false,
                );
            }
        }
        if self.servers[server].announce.take().is_some() {
            self.push_event(Event::Announced {
                server: ServerId(server),
                result: ResultCode::UnsuppVersion,
                epoch: natpmp_epoch.unwrap_or(0),
            });
        }
    }

    /// The RFC 6886 §3.6 epoch test for NAT-PMP answers; state loss renews everything.
    fn natpmp_epoch(&mut self, now: Instant, server: usize, epoch: u32, except: Option<u64>) {
        let s = &mut self.servers[server];
        let lost = s.natpmp_epoch.is_some_and(|(at, previous)| {
            natpmp::gateway_lost_state(
                Duration::ZERO,
                previous,
                now.saturating_duration_since(at),
                epoch,
            )
        });
        s.natpmp_epoch = Some((now, epoch));
        if lost {
            self.stats.epoch_resets += 1;
            self.push_event(Event::ServerStateLost {
                server: ServerId(server),
                announced: false,
            });
            self.renew_all(now, server, except);
        }
    }

    /// A NAT-PMP answer to a fallback request.
    fn natpmp_response(&mut self, now: Instant, server: usize, bytes: &[u8]) {
        let Ok(response) = natpmp::ResponseRepr::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        match response {
            natpmp::ResponseRepr::ExternalAddress {
                epoch,
                external_address,
            } => {
                self.stats.responses += 1;
                self.servers[server].natpmp_external = Some(external_address);
                self.natpmp_epoch(now, server, epoch, None);
                self.natpmp_external_changed(server, external_address);
            }
            natpmp::ResponseRepr::Map {
                protocol,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => {
                let Some(id) = self.natpmp_match(server, protocol, internal_port) else {
                    self.stats.dropped += 1;
                    return;
                };
                self.stats.responses += 1;
                let deleting = self.mappings.get(&id).is_some_and(|m| m.deleting);
                if deleting {
                    if lifetime == 0 {
                        self.forget(MappingId(id));
                        self.push_event(Event::Deleted { id: MappingId(id) });
                    }
                } else if lifetime == 0 {
                    self.lost(now, id);
                } else {
                    let address = self.servers[server]
                        .natpmp_external
                        .unwrap_or(Ipv4Addr::UNSPECIFIED);
                    let external = SocketAddr::new(IpAddr::V4(address), external_port);
                    self.grant(now, id, external, lifetime, epoch, Version::NatPmp);
                }
                self.natpmp_epoch(now, server, epoch, Some(id));
            }
            natpmp::ResponseRepr::Error(natpmp::ErrorResponse::Map {
                protocol,
                result,
                epoch,
                internal_port,
                ..
            }) => {
                let Some(id) = self.natpmp_match(server, protocol, internal_port) else {
                    self.stats.dropped += 1;
                    return;
                };
                self.stats.responses += 1;
                let short = matches!(
                    result,
                    natpmp::ResultCode::NetworkFailure | natpmp::ResultCode::OutOfResources
                );
                let lifetime = self.error_lifetime(!short, 0);
                let out_of_resources = result == natpmp::ResultCode::OutOfResources;
                if out_of_resources {
                    let deleting = self.mappings.get(&id).is_some_and(|m| m.deleting);
                    self.no_resources(now, server, deleting, lifetime);
                }
                self.failed(
                    now,
                    id,
                    ErrorCode::NatPmp(result),
                    lifetime,
                    out_of_resources,
                );
                self.natpmp_epoch(now, server, epoch, Some(id));
            }
            natpmp::ResponseRepr::Error(_) => self.stats.dropped += 1,
        }
    }

    /// The mapping a NAT-PMP map answer is for: same server, protocol and internal port, in a
    /// NAT-PMP exchange or granted over NAT-PMP.
    fn natpmp_match(&self, server: usize, protocol: natpmp::Transport, port: u16) -> Option<u64> {
        let protocol = protocol.protocol();
        let candidates = self.mappings.iter().filter(|(_, m)| {
            m.server == server
                && m.spec.protocol == protocol
                && m.spec.internal_port == port
                && m.spec.natpmp_eligible()
        });
        let mut fallback = None;
        for (&id, m) in candidates {
            if m.natpmp && m.awaiting {
                return Some(id);
            }
            if m.natpmp || m.grant.is_some_and(|g| g.via == Version::NatPmp) {
                fallback = Some(id);
            }
        }
        fallback
    }

    /// The NAT-PMP gateway told its external address: fill it into the mappings granted
    /// over NAT-PMP.
    fn natpmp_external_changed(&mut self, server: usize, address: Ipv4Addr) {
        let mut changed = Vec::new();
        for (&id, m) in self.mappings.iter_mut() {
            let Some(g) = m.grant.as_mut() else { continue };
            if m.server != server || g.via != Version::NatPmp || g.external.ip() == address {
                continue;
            }
            let previous = g.external;
            g.external = SocketAddr::new(IpAddr::V4(address), previous.port());
            changed.push(Event::Changed {
                id: MappingId(id),
                previous,
                external: g.external,
                lifetime: g.lifetime,
            });
        }
        for event in changed {
            self.push_event(event);
        }
    }
}
