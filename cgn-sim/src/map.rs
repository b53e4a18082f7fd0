//! MAP processing, server side (RFC 6887 §11.3, §15, §15.1 with erratum 3621, §13).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{MapData, OpcodeData, Protocol, RequestRepr, ResultCode};

use crate::allocate::BindingRequest;
use crate::inject::Injection;
use crate::options::{self, Processed};
use crate::pool::{pcp_proto_index, proto_index};
use crate::server::{Outcome, Server, StaticMapping};
use crate::table::{InternalKey, MapExtra, flags};

/// Why a static mapping could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StaticError {
    /// The protocol has no port space here.
    #[error("protocol {0} is not supported")]
    Protocol(u8),
    /// The external address is not in the pool.
    #[error("{0} is not a pool address")]
    NotInPool(Ipv4Addr),
    /// The external port or the internal endpoint is already in use.
    #[error("endpoint already in use")]
    InUse,
}

impl Server {
    pub(crate) fn process_map<'a>(
        &mut self,
        now_s: u32,
        source: SocketAddrV4,
        repr: &RequestRepr<'a>,
        map: &MapData,
    ) -> Outcome<'a> {
        let opts = match options::process(repr, *source.ip(), self.policy()) {
            Ok(o) => o,
            Err(result) => return self.err(result),
        };
        let subscriber = opts.subscriber.unwrap_or(*source.ip());
        if repr.lifetime == 0 {
            self.map_delete(now_s, subscriber, map, opts)
        } else {
            self.map_create(now_s, subscriber, source, repr.lifetime, map, opts)
        }
    }

    /// RFC 6887 §15.1 with erratum 3621: lifetime 0.
    fn map_delete<'a>(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        map: &MapData,
        opts: Processed<'a>,
    ) -> Outcome<'a> {
        // §11.3 / §15.1: protocol 0 with a port is malformed for delete too.
        if map.protocol == Protocol::ALL && map.internal_port != 0 {
            return self.err(ResultCode::MalformedRequest);
        }
        // The response copies protocol, internal port and the suggested fields (erratum 3621).
        let opts_port_set = opts.port_set;
        let mut echo = opts.echo;
        echo.retain(|o| !matches!(o, pcp_client::wire::PcpOption::Description(_)));
        let success = |lifetime| Outcome::Success {
            lifetime,
            data: OpcodeData::Map(*map),
            options: echo,
        };
        // The suggested address selects the family: an IPv6 family delete touches no IPv4
        // mapping. Wildcard mappings (one protocol, port 0) are never granted, so none
        // exists; the all-protocol (DMZ) mapping is looked up like any other, under protocol 0
        // and port 0, and needs its nonce (§15.1).
        if matches!(map.external_address, IpAddr::V6(_))
            || (map.internal_port == 0 && map.protocol != Protocol::ALL)
        {
            return success(0);
        }
        let key = InternalKey {
            protocol: map.protocol.0,
            realm: opts.realm,
            addr: subscriber,
            port: map.internal_port,
        };
        if let Some(set) = opts_port_set.filter(|s| s.size > 1) {
            return match self.delete_port_set(now_s, subscriber, map, key.realm, set) {
                Ok(_) => success(0),
                Err(e) => e,
            };
        }
        let Some(id) = self.table().lookup_internal(&key) else {
            // Deleting what does not exist succeeds, so retransmissions agree (§15.1).
            return success(0);
        };
        let Some(b) = self.table().binding(id) else {
            return success(0);
        };
        if !b.has_map() && !b.is_static() && b.nonce == map.nonce && b.nonce.0 != [0; 12] {
            // The MAP this nonce made is already gone (a retransmitted delete) and outbound
            // traffic keeps the implicit mapping: agree with the first answer (§15, §15.1).
            // Purely implicit bindings carry the zero nonce; only a deleted MAP leaves its own.
            return success(b.implicit_expires.saturating_sub(now_s));
        }
        if !b.has_map() || b.is_static() {
            // §15.1: MAP may not delete outbound (implicit/PEER) or static mappings.
            return self.err(ResultCode::NotAuthorized);
        }
        if b.nonce != map.nonce {
            // §11.3 (Simple Threat Model): lifetime = remaining lifetime.
            return Outcome::Error {
                result: ResultCode::NotAuthorized,
                lifetime: b.map_expires.saturating_sub(now_s),
            };
        }
        // §15 anti-theft: outbound traffic keeps the binding; the answer says for how long.
        let idle_left = b.implicit_expires.saturating_sub(now_s);
        if let Some(f) = self.table_mut().remove_map(id) {
            self.on_freed(f, now_s);
        }
        self.metrics_mut().deleted += 1;
        tracing::info!(%subscriber, port = map.internal_port, nonce = %map.nonce, "MAP deleted");
        success(idle_left)
    }

    fn map_create<'a>(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        source: SocketAddrV4,
        requested: u32,
        map: &MapData,
        opts: Processed<'a>,
    ) -> Outcome<'a> {
        let lifetime = self.clamp_lifetime(requested);
        // §11.1, §11.3 item 2: all protocols (protocol 0, port 0) on an address of its own.
        if map.protocol == Protocol::ALL {
            return self.map_dmz_create(now_s, subscriber, source, lifetime, map, opts);
        }
        // §11.3 item 2: a wildcard (port 0) mapping needs every port of one protocol of an
        // address; a shared-address CGN cannot grant it in full.
        if map.internal_port == 0 || pcp_proto_index(map.protocol).is_none() {
            return self.err(ResultCode::UnsuppProtocol);
        }
        if let Some(set) = opts.port_set.filter(|s| s.size > 1) {
            return self.map_port_set(now_s, subscriber, source, map, opts, set, lifetime);
        }
        let key = InternalKey {
            protocol: map.protocol.0,
            realm: opts.realm,
            addr: subscriber,
            port: map.internal_port,
        };
        let suggestion_differs = |ext: SocketAddrV4| {
            map.external_port != ext.port()
                || match map.external_address {
                    IpAddr::V4(a) => !a.is_unspecified() && a != *ext.ip(),
                    IpAddr::V6(_) => true,
                }
        };
        let existing = self.table().lookup_internal(&key).and_then(|id| {
            self.table().binding(id).map(|b| {
                (
                    id,
                    b.has_map(),
                    b.is_static(),
                    b.nonce,
                    b.external,
                    b.map_expires,
                    b.filters().to_vec(),
                    b.extra.clone(),
                )
            })
        });
        let response = |ext: SocketAddrV4, lifetime: u32, echo| Outcome::Success {
            lifetime,
            data: OpcodeData::Map(MapData {
                external_port: ext.port(),
                external_address: IpAddr::V4(*ext.ip()),
                ..*map
            }),
            options: echo,
        };
        if let Some((id, has_map, is_static, nonce, ext, expires, old_filters, old_extra)) =
            existing
        {
            if has_map && !is_static && nonce != map.nonce {
                // §11.3 item 3: nonce mismatch, lifetime = remaining.
                return Outcome::Error {
                    result: ResultCode::NotAuthorized,
                    lifetime: expires.saturating_sub(now_s),
                };
            }
            if opts.prefer_failure && suggestion_differs(ext) {
                // §11.3 item 7.1.
                return Outcome::Error {
                    result: ResultCode::CannotProvideExternal,
                    lifetime: if has_map && !is_static {
                        expires.saturating_sub(now_s)
                    } else {
                        self.config().short_error_lifetime
                    },
                };
            }
            if is_static {
                // §11.3 items 4 and 7.2: the static mapping, the request's nonce, 2^32-1.
                return response(ext, u32::MAX, opts.echo);
            }
            let base = if has_map { old_filters } else { Vec::new() };
            let filters = match self.merge_filters(base, &opts) {
                Ok(f) => f,
                Err(o) => return o,
            };
            let extra = build_extra(
                if has_map { old_extra } else { None },
                filters,
                &opts,
                source,
            );
            let expires = now_s.saturating_add(lifetime);
            let pf = if opts.prefer_failure {
                flags::PREFER_FAILURE
            } else {
                0
            };
            if has_map {
                // §11.3 item 7.3: refresh, same external endpoint whatever was suggested.
                self.table_mut().refresh_map(id, expires, lifetime);
                self.table_mut().set_map_extra(id, extra);
                self.metrics_mut().refreshed += 1;
            } else {
                // §11.3 item 7.4: an inbound mapping over an outbound binding copies it.
                self.table_mut()
                    .set_map(id, map.nonce, expires, lifetime, pf, extra);
                self.metrics_mut().created += 1;
            }
            self.cancel_updates(id);
            return response(ext, lifetime, opts.echo);
        }
        // No binding yet: create one.
        let filters = match self.merge_filters(Vec::new(), &opts) {
            Ok(f) => f,
            Err(o) => return o,
        };
        if let Err(result) = self.admit_new_binding(opts.realm, subscriber, now_s) {
            return self.err(result);
        }
        let req = BindingRequest {
            protocol: map.protocol,
            realm: opts.realm,
            subscriber,
            internal_port: map.internal_port,
            nonce: map.nonce,
            suggested_address: map.external_address,
            suggested_port: map.external_port,
            exact: opts.prefer_failure,
        };
        let chosen = match self.choose_endpoint(&req) {
            Ok(c) => c,
            Err(result) => return self.err(result),
        };
        let id = self.insert_pool_binding(
            map.protocol,
            opts.realm,
            SocketAddrV4::new(subscriber, map.internal_port),
            chosen.external,
            chosen.addr_index,
        );
        let extra = build_extra(None, filters, &opts, source);
        let pf = if opts.prefer_failure {
            flags::PREFER_FAILURE
        } else {
            0
        };
        self.table_mut().set_map(
            id,
            map.nonce,
            now_s.saturating_add(lifetime),
            lifetime,
            pf,
            extra,
        );
        self.account_new_binding(opts.realm, subscriber, chosen.addr_index, now_s);
        self.metrics_mut().created += 1;
        tracing::info!(
            %subscriber,
            protocol = %map.protocol,
            internal_port = map.internal_port,
            external = %chosen.external,
            nonce = %map.nonce,
            lifetime,
            "MAP created"
        );
        response(chosen.external, lifetime, opts.echo)
    }

    /// FILTER semantics (RFC 6887 §13.3): new ones add to the existing ones, prefix 0
    /// clears; too many → EXCESSIVE_REMOTE_PEERS with no state change.
    pub(crate) fn merge_filters(
        &self,
        mut base: Vec<pcp_client::wire::Filter>,
        opts: &Processed<'_>,
    ) -> Result<Vec<pcp_client::wire::Filter>, Outcome<'static>> {
        if opts.clear_filters {
            base.clear();
        }
        for f in &opts.filters {
            if !base.contains(f) {
                base.push(*f);
            }
        }
        if base.len() > self.config().max_filters {
            return Err(self.err(ResultCode::ExcessiveRemotePeers));
        }
        Ok(base)
    }

    /// Installs a static mapping (operator configuration): never expires, no nonce; MAP
    /// returns it with lifetime 2^32−1 and cannot delete it (RFC 6887 §11.3, §15.1).
    pub fn add_static(&mut self, mapping: StaticMapping) -> Result<(), StaticError> {
        self.install_static(mapping)?;
        self.remember_static(mapping);
        Ok(())
    }

    pub(crate) fn install_static(&mut self, s: StaticMapping) -> Result<(), StaticError> {
        let proto = proto_index(s.protocol).ok_or(StaticError::Protocol(s.protocol.0))?;
        let index = self
            .pool()
            .index_of(*s.external.ip())
            .ok_or(StaticError::NotInPool(*s.external.ip()))?;
        let key = InternalKey {
            protocol: s.protocol.0,
            realm: 0,
            addr: *s.internal.ip(),
            port: s.internal.port(),
        };
        if self.table().lookup_internal(&key).is_some()
            || !self.ports_mut().take(index, proto, s.external.port())
        {
            return Err(StaticError::InUse);
        }
        let id = self.insert_pool_binding(s.protocol, 0, s.internal, s.external, index);
        self.table_mut().set_map(
            id,
            Default::default(),
            u32::MAX,
            u32::MAX,
            flags::STATIC,
            None,
        );
        Ok(())
    }
}

pub(crate) fn build_extra(
    old: Option<Box<MapExtra>>,
    filters: Vec<pcp_client::wire::Filter>,
    opts: &Processed<'_>,
    source: SocketAddrV4,
) -> Option<Box<MapExtra>> {
    let mut extra = old.map(|b| *b).unwrap_or_default();
    extra.filters = filters;
    if let Some(d) = opts.description {
        // RFC 7220 §3: an empty DESCRIPTION clears the text.
        extra.description = (!d.is_empty()).then(|| d.to_string());
    }
    if opts.third_party {
        extra.third_party = opts.subscriber;
        // Mapping Updates go to whoever asked (RFC 6887 §14.2), not to the third party.
        extra.requester = Some(source);
    }
    if let Some(id) = opts.third_party_id {
        extra.third_party_id = Some(id.to_vec());
    }
    (extra != MapExtra::default()).then(|| Box::new(extra))
}

/// Error injection for tests (`cgn-sim ctl inject`): an injected error is a MAP answer.
impl Server {
    /// Answers the next `count` MAP requests that would create or refresh a mapping with
    /// `result` and `lifetime` (default: the server's error lifetime for `result`), changing
    /// no state. `count` 0 cancels a pending injection.
    pub fn inject(&mut self, result: ResultCode, lifetime: Option<u32>, count: u32) {
        let lifetime = lifetime.unwrap_or_else(|| self.error_lifetime(result));
        self.injector_mut().arm(result, lifetime, count);
        tracing::info!(%result, lifetime, count, "error injection armed");
    }

    /// The pending injection, if any.
    pub fn injection(&self) -> Option<Injection> {
        self.injector().pending()
    }

    /// Consumes one injected answer, if one is pending.
    pub(crate) fn take_injection(&mut self) -> Option<(ResultCode, u32)> {
        let taken = self.injector_mut().take()?;
        tracing::info!(result = %taken.0, lifetime = taken.1, "injected error answered");
        Some(taken)
    }
}
