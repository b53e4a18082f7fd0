//! PEER processing, server side (RFC 6887 §12.3).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{MapData, OpcodeData, PeerData, RequestRepr, ResultCode};

use crate::allocate::BindingRequest;
use crate::options;
use crate::pool::pcp_proto_index;
use crate::server::{Outcome, Server};
use crate::table::InternalKey;

/// True if a remote peer is one the NAT would let a host talk to (RFC 6887 §12.3 item 2):
/// IPv4, unicast, not loopback, not unspecified.
fn valid_remote(addr: IpAddr, port: u16) -> Option<SocketAddrV4> {
    let IpAddr::V4(v4) = addr else {
        return None;
    };
    if port == 0
        || v4.is_unspecified()
        || v4.is_loopback()
        || v4.is_multicast()
        || v4.is_broadcast()
    {
        return None;
    }
    Some(SocketAddrV4::new(v4, port))
}

impl Server {
    pub(crate) fn process_peer<'a>(
        &mut self,
        now_s: u32,
        source: Ipv4Addr,
        repr: &RequestRepr<'a>,
        peer: &PeerData,
    ) -> Outcome<'a> {
        let opts = match options::process(repr, source, self.policy()) {
            Ok(o) => o,
            Err(result) => return self.err(result),
        };
        let map = &peer.map;
        if pcp_proto_index(map.protocol).is_none() {
            return self.err(ResultCode::UnsuppProtocol);
        }
        let Some(remote) = valid_remote(peer.remote_peer_address, peer.remote_peer_port) else {
            return self.err(ResultCode::MalformedRequest);
        };
        let subscriber = opts.subscriber.unwrap_or(source);
        // PEER never shortens (RFC 6887 §12.1); lifetimes are clamped like MAP's.
        let lifetime = self.clamp_lifetime(repr.lifetime);
        let description: Option<Box<str>> =
            opts.description.filter(|d| !d.is_empty()).map(Into::into);
        let key = InternalKey {
            protocol: map.protocol.0,
            realm: opts.realm,
            addr: subscriber,
            port: map.internal_port,
        };
        let response = |ext: SocketAddrV4, lifetime: u32, echo| Outcome::Success {
            lifetime,
            data: OpcodeData::Peer(PeerData {
                map: MapData {
                    external_port: ext.port(),
                    external_address: IpAddr::V4(*ext.ip()),
                    ..*map
                },
                ..*peer
            }),
            options: echo,
        };
        let suggested = |ext: SocketAddrV4| {
            let port_ok = map.external_port == 0 || map.external_port == ext.port();
            let addr_ok = match map.external_address {
                IpAddr::V4(a) => a.is_unspecified() || a == *ext.ip(),
                IpAddr::V6(_) => false,
            };
            port_ok && addr_ok
        };
        if let Some(id) = self.table().lookup_internal(&key) {
            let Some(ext) = self.table().binding(id).map(|b| b.external) else {
                return self.err(ResultCode::NoResources);
            };
            if let Some(sid) = self.table().lookup_peer(id, remote) {
                let Some(s) = self.table().peer(sid) else {
                    return self.err(ResultCode::NoResources);
                };
                if s.by_peer && s.nonce != map.nonce {
                    // §12.3 (Simple Threat Model): lifetime = remaining.
                    return Outcome::Error {
                        result: ResultCode::NotAuthorized,
                        lifetime: s.expires.saturating_sub(now_s),
                    };
                }
                // Extend, never shorten; the suggestion is ignored for an existing mapping.
                let expires = s.expires.max(now_s.saturating_add(lifetime));
                let granted = expires - now_s;
                let desc = opts.description.map(|d| (!d.is_empty()).then(|| d.into()));
                self.table_mut()
                    .refresh_peer(sid, map.nonce, expires, granted, desc);
                self.cancel_peer_updates(id, remote);
                self.metrics_mut().refreshed += 1;
                return response(ext, granted, opts.echo);
            }
            // EIM: a new remote peer from a bound internal endpoint gets that endpoint's
            // external port; another non-zero suggestion cannot be honoured.
            if !suggested(ext) {
                return Outcome::Error {
                    result: ResultCode::CannotProvideExternal,
                    lifetime: self.config().short_error_lifetime,
                };
            }
            let expires = now_s.saturating_add(lifetime);
            self.table_mut()
                .insert_peer(id, remote, map.nonce, expires, lifetime, description);
            self.metrics_mut().created += 1;
            return response(ext, lifetime, opts.echo);
        }
        if let Err(result) = self.admit_new_binding(opts.realm, subscriber, now_s) {
            return self.err(result);
        }
        let chosen = match self.choose_endpoint(&BindingRequest {
            protocol: map.protocol,
            realm: opts.realm,
            subscriber,
            internal_port: map.internal_port,
            nonce: map.nonce,
            suggested_address: map.external_address,
            suggested_port: map.external_port,
            // §12.3: PREFER_FAILURE semantics are built in.
            exact: true,
        }) {
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
        self.table_mut().insert_peer(
            id,
            remote,
            map.nonce,
            now_s.saturating_add(lifetime),
            lifetime,
            description,
        );
        self.account_new_binding(opts.realm, subscriber, chosen.addr_index, now_s);
        self.metrics_mut().created += 1;
        // The remote peer is a destination: not logged (RFC 6888 REQ-12).
        tracing::info!(%subscriber, internal_port = map.internal_port, external = %chosen.external, nonce = %map.nonce, "PEER created");
        response(chosen.external, lifetime, opts.echo)
    }
}
