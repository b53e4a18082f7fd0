//! Mapping Update (RFC 6887 §14.2) and renumbering: when the pool changes, every binding
//! moves to the new pool with all its parts (MAP, PEER sessions, the implicit part the
//! dataplane's traffic keeps alive), and each PCP client is told with unsolicited MAP and PEER
//! responses, sent 3 times (at once, after 250 ms, after another 500 ms) and stopped when the
//! client refreshes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use pcp_client::wire::{
    MapData, OpcodeData, Options, PcpOption, PeerData, Protocol, ResponseRepr, ResultCode,
};

use crate::config::{ConfigError, PoolConfig};
use crate::pool::{NatPool, PortRequest, proto_index};
use crate::server::Server;
use crate::table::{Binding, PeerSession, flags};
use crate::unsolicited::PendingUpdate;

impl Server {
    /// Stops the Mapping Update of binding `binding`'s MAP part (the client refreshed it).
    pub(crate) fn cancel_updates(&mut self, binding: u32) {
        self.unsolicited_mut().cancel_updates(binding, None);
    }

    /// Stops the Mapping Update of the PEER session of `binding` with `remote`.
    pub(crate) fn cancel_peer_updates(&mut self, binding: u32, remote: SocketAddrV4) {
        self.unsolicited_mut().cancel_updates(binding, Some(remote));
    }

    pub(crate) fn send_due_updates(&mut self, now: Instant) {
        self.metrics_mut().mapping_updates_sent += self.unsolicited_mut().send_due_updates(now);
    }

    fn client_of(&self, b: &Binding) -> Option<SocketAddr> {
        if let Some(e) = b.extra.as_ref().filter(|e| e.third_party.is_some()) {
            return e.requester.map(SocketAddr::V4);
        }
        self.unsolicited()
            .latest_client(*b.internal.ip())
            .map(SocketAddr::V4)
    }

    /// Where binding `b` goes in the new pool: its old endpoint if that address is still in
    /// the pool (and not another subscriber's), else its subscriber's anchor (the first
    /// binding moved sets it, so paired pooling holds), keeping the port where it is free.
    /// An all-protocol mapping needs an address of its own ([`crate::dmz`]). `None`: no room.
    fn move_target(&mut self, b: &Binding) -> Option<(u16, u16)> {
        let subscriber = *b.internal.ip();
        if b.protocol == Protocol::ALL.0 {
            let kept = self.pool().index_of(*b.external.ip()).filter(|i| {
                self.pool().untouched(*i) && !self.subscribers().has_bindings(b.realm, subscriber)
            });
            let index = kept.or_else(|| {
                self.dmz_address(
                    b.realm,
                    subscriber,
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                )
            })?;
            self.ports_mut().set_dedicated(index, true);
            return Some((index, 0));
        }
        let proto = proto_index(Protocol(b.protocol))?;
        if let Ok(Some(block)) = self.block_for(b.realm, subscriber) {
            // Port Block Allocation: into the subscriber's block of the new pool.
            let addr = block.addr_index;
            let port = if block.contains(b.external.port())
                && self.ports_mut().take(addr, proto, b.external.port())
            {
                b.external.port()
            } else {
                self.ports_mut().allocate_in(
                    addr,
                    proto,
                    b.internal.port(),
                    block.first,
                    block.last,
                )?
            };
            self.take_block(b.realm, subscriber, block);
            return Some((addr, port));
        }
        if let Some(t) = self.take_old_endpoint(b) {
            return Some(t);
        }
        let anchored = self.subscribers().anchor(b.realm, subscriber);
        let anchor = match anchored {
            Some(a) => a,
            None => self.anchor_for(b.realm, subscriber, proto)?,
        };
        if self.ports_mut().take(anchor, proto, b.external.port()) {
            return Some((anchor, b.external.port()));
        }
        self.ports_mut()
            .allocate(
                anchor,
                PortRequest {
                    proto,
                    internal_port: b.internal.port(),
                },
            )
            .map(|p| (anchor, p))
    }

    /// Takes binding `b`'s old external endpoint in the new pool, if it is there and free.
    fn take_old_endpoint(&mut self, b: &Binding) -> Option<(u16, u16)> {
        let proto = proto_index(Protocol(b.protocol))?;
        let i = self.pool().index_of(*b.external.ip())?;
        let anchored = self.subscribers().anchor(b.realm, *b.internal.ip());
        let fits = anchored.is_none_or(|a| a == i)
            && (anchored == Some(i) || !self.pool().is_dedicated(i));
        (fits && self.ports_mut().take(i, proto, b.external.port()))
            .then_some((i, b.external.port()))
    }

    /// Queues a Mapping Update: `response` to `destination`, three copies.
    fn queue_update(
        &mut self,
        now: Instant,
        binding: u32,
        remote: Option<SocketAddrV4>,
        destination: SocketAddr,
        response: &ResponseRepr<'_>,
    ) {
        let mut buf = [0u8; pcp_client::wire::MAX_MESSAGE_LEN];
        let Ok(len) = response.emit(&mut buf) else {
            return;
        };
        self.unsolicited_mut().queue_update(PendingUpdate {
            binding,
            remote,
            destination,
            payload: buf[..len].to_vec(),
            next: now,
            sent: 0,
        });
    }

    /// Replaces the NAT pools at `now` (renumbering). The epoch resets (RFC 6887 §8.5: the
    /// external addresses changed). Every binding moves to the new pool with all its parts:
    /// it keeps its external port (on its old address if that is still in the pool, else on
    /// its subscriber's new address) when it can, the subscriber's bindings stay on one address
    /// (RFC 6888 REQ-2), and the dataplane's flows carry on over the moved implicit bindings.
    ///
    /// * A MAP part's client gets a Mapping Update (RFC 6887 §14.2) with the new values and its
    ///   FILTERs and THIRD_PARTY, or CANNOT_PROVIDE_EXTERNAL (and the MAP part is dropped) when
    ///   it asked for PREFER_FAILURE, or is static, and its old endpoint cannot be kept.
    /// * Each PEER session's client gets an unsolicited PEER response with the new external
    ///   endpoint (its remote peer and nonce as before).
    /// * Implicit parts move silently (no PCP client asked for them).
    pub fn replace_pools(
        &mut self,
        now: Instant,
        pools: Vec<PoolConfig>,
    ) -> Result<(), ConfigError> {
        let mut config = self.config().clone();
        config.pools = pools;
        let pool = NatPool::new(&config)?;
        let now_s = self.seconds(now);
        let mut old: Vec<(u32, Binding)> = self
            .table()
            .bindings()
            .map(|(id, b)| (id, b.clone()))
            .collect();
        // All-protocol mappings first: each needs an address nobody is on yet.
        old.sort_by_key(|(id, b)| (b.protocol != Protocol::ALL.0, *id));
        let mut peers: HashMap<u32, Vec<PeerSession>> = HashMap::new();
        for (_, p) in self.table().peer_sessions() {
            peers.entry(p.binding).or_default().push(p.clone());
        }
        self.set_config(config);
        self.ports_mut().replace_pool(pool);
        self.table_mut().clear(now_s);
        // The new pool counts no anchors yet: nothing to give back.
        let _ = self.subscribers_mut().clear_usage();
        self.unsolicited_mut().clear_updates();
        self.clock_mut().reset_epoch(now);
        for (old_id, b) in old {
            let sessions = peers.remove(&old_id).unwrap_or_default();
            // A PREFER_FAILURE or static MAP part moves only onto its old endpoint; the
            // binding's other parts (implicit, PEER) move anyway.
            let pinned = b.flags & flags::PREFER_FAILURE != 0 || b.is_static();
            let exact = if b.has_map() && pinned {
                self.take_old_endpoint(&b)
            } else {
                None
            };
            let map_moves = b.has_map() && (!pinned || exact.is_some());
            let rest = b.implicit_expires != 0 || !sessions.is_empty();
            let target = match exact {
                Some(t) => Some(t),
                None if map_moves || rest => self.move_target(&b),
                None => None,
            };
            let moved = target.and_then(|(i, port)| {
                let a = self.pool().address(i)?;
                let (addr, pool_id, section) = (a.addr, a.pool, a.section);
                let ext = SocketAddrV4::new(addr, port);
                let id = self.table_mut().insert_binding(
                    Protocol(b.protocol),
                    b.realm,
                    b.internal,
                    ext,
                    i,
                    pool_id,
                    section,
                );
                if map_moves {
                    self.table_mut().set_map(
                        id,
                        b.nonce,
                        b.map_expires,
                        b.map_lifetime,
                        b.flags & (flags::STATIC | flags::NATPMP | flags::PREFER_FAILURE),
                        b.extra.clone(),
                    );
                }
                if b.implicit_expires != 0 {
                    self.table_mut().touch_implicit(id, b.implicit_expires);
                }
                for p in &sessions {
                    self.table_mut().insert_peer(
                        id,
                        p.remote,
                        p.nonce,
                        p.expires,
                        p.lifetime,
                        p.description.clone(),
                    );
                }
                self.account_new_binding(b.realm, *b.internal.ip(), i, now_s);
                Some((id, ext))
            });
            let Some(destination) = self.client_of(&b) else {
                continue;
            };
            let epoch = self.clock().epoch(now);
            if b.has_map() && !b.is_static() && b.flags & flags::NATPMP == 0 {
                let mut options: Vec<PcpOption<'_>> = Vec::new();
                if let Some(extra) = &b.extra {
                    if let Some(tp) = extra.third_party {
                        options.push(PcpOption::ThirdParty(IpAddr::V4(tp)));
                    }
                    for f in &extra.filters {
                        options.push(PcpOption::Filter(*f));
                    }
                }
                let (result, external, lifetime) = match moved.filter(|_| map_moves) {
                    Some((_, e)) => (ResultCode::Success, e, b.map_expires.saturating_sub(now_s)),
                    None => (
                        ResultCode::CannotProvideExternal,
                        b.external,
                        self.config().short_error_lifetime,
                    ),
                };
                let response = ResponseRepr {
                    result,
                    lifetime,
                    epoch,
                    data: OpcodeData::Map(MapData {
                        nonce: b.nonce,
                        protocol: Protocol(b.protocol),
                        internal_port: b.internal.port(),
                        external_port: external.port(),
                        external_address: IpAddr::V4(*external.ip()),
                    }),
                    options: Options::List(&options),
                };
                let id = moved.map_or(u32::MAX, |(id, _)| id);
                self.queue_update(now, id, None, destination, &response);
            }
            for p in &sessions {
                let (result, external, lifetime) = match moved {
                    Some((_, e)) => (ResultCode::Success, e, p.expires.saturating_sub(now_s)),
                    None => (
                        ResultCode::CannotProvideExternal,
                        b.external,
                        self.config().short_error_lifetime,
                    ),
                };
                let response = ResponseRepr {
                    result,
                    lifetime,
                    epoch,
                    data: OpcodeData::Peer(PeerData {
                        map: MapData {
                            nonce: p.nonce,
                            protocol: Protocol(b.protocol),
                            internal_port: b.internal.port(),
                            external_port: external.port(),
                            external_address: IpAddr::V4(*external.ip()),
                        },
                        remote_peer_port: p.remote.port(),
                        remote_peer_address: IpAddr::V4(*p.remote.ip()),
                    }),
                    options: Options::EMPTY,
                };
                let id = moved.map_or(u32::MAX, |(id, _)| id);
                self.queue_update(now, id, Some(p.remote), destination, &response);
            }
        }
        self.send_due_updates(now);
        Ok(())
    }
}
