//! All-protocol MAP (RFC 6887 §11.1: protocol 0 means all protocols, and the internal port
//! must then be 0): the "DMZ host" mapping a CPE asks for to forward everything.
//!
//! On a CGN whose addresses are shared, such a mapping can only be granted in full (RFC 6887
//! §11.3 item 2) by giving the subscriber a whole pool address. So the server grants it when
//! the subscriber's anchored address has no other subscriber, or, for a subscriber without
//! mappings, on an address nobody uses; it then marks the address dedicated
//! ([`crate::pool::PoolAddress::dedicated`]): no other subscriber is anchored there or takes a
//! port there until the mapping goes. Otherwise the answer is UNSUPP_PROTOCOL.
//!
//! The mapping is a binding of protocol 0, internal port 0 and external port 0 (it shows as
//! `Protocol: ANY` MAP IN / MAP OUT lines with port 0). The dataplane sends inbound packets of
//! any protocol to that address, on any port without a binding of its own, to the internal
//! host with the port unchanged ([`Server::dmz_binding`]); outbound, the host's implicit
//! bindings keep their internal ports where they can, so its answers leave from the port they
//! were sent to, and packets of protocols without ports leave from the dedicated address.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{MapData, OpcodeData, Protocol, ResultCode};

use crate::allocate::preferred_index;
use crate::map::build_extra;
use crate::options::Processed;
use crate::server::{Outcome, Server};
use crate::table::{ExternalKey, InternalKey};

impl Server {
    /// The all-protocol key of a subscriber.
    fn dmz_key(realm: u16, subscriber: Ipv4Addr) -> InternalKey {
        InternalKey {
            protocol: Protocol::ALL.0,
            realm,
            addr: subscriber,
            port: 0,
        }
    }

    /// The address an all-protocol MAP of this subscriber may take whole, if any: its anchor
    /// when it is the only subscriber there, else (no anchor) the suggested address or the
    /// first address nobody uses, from the subscriber's preferred one on.
    pub(crate) fn dmz_address(
        &self,
        realm: u16,
        subscriber: Ipv4Addr,
        suggested: IpAddr,
    ) -> Option<u16> {
        if let Some(anchor) = self.subscribers().anchor(realm, subscriber) {
            let alone = self
                .pool()
                .address(anchor)
                .is_some_and(|a| a.subscribers == 1);
            return alone.then_some(anchor);
        }
        if let IpAddr::V4(a) = suggested {
            if let Some(i) = self
                .pool()
                .index_of(a)
                .filter(|i| self.pool().untouched(*i))
            {
                return Some(i);
            }
        }
        let n = self.pool().len();
        let start = preferred_index(subscriber, realm, n);
        (0..n)
            .map(|i| ((start + i) % n) as u16)
            .find(|i| self.pool().untouched(*i))
    }

    /// MAP with protocol 0 and internal port 0, lifetime ≠ 0 (RFC 6887 §11.3 item 2): creates
    /// or refreshes the subscriber's all-protocol mapping.
    pub(crate) fn map_dmz_create<'a>(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        source: SocketAddrV4,
        lifetime: u32,
        map: &MapData,
        opts: Processed<'a>,
    ) -> Outcome<'a> {
        let key = Self::dmz_key(opts.realm, subscriber);
        let response = |ext: Ipv4Addr, lifetime: u32, echo| Outcome::Success {
            lifetime,
            data: OpcodeData::Map(MapData {
                external_port: 0,
                external_address: IpAddr::V4(ext),
                ..*map
            }),
            options: echo,
        };
        let expires = now_s.saturating_add(lifetime);
        if let Some(id) = self.table().lookup_internal(&key) {
            let Some(b) = self.table().binding(id).cloned() else {
                return self.err(ResultCode::NoResources);
            };
            if b.nonce != map.nonce {
                // §11.3 item 3 (Simple Threat Model): lifetime = remaining.
                return Outcome::Error {
                    result: ResultCode::NotAuthorized,
                    lifetime: b.map_expires.saturating_sub(now_s),
                };
            }
            let filters = match self.merge_filters(b.filters().to_vec(), &opts) {
                Ok(f) => f,
                Err(o) => return o,
            };
            let extra = build_extra(b.extra.clone(), filters, &opts, source);
            self.table_mut().refresh_map(id, expires, lifetime);
            self.table_mut().set_map_extra(id, extra);
            self.cancel_updates(id);
            self.metrics_mut().refreshed += 1;
            return response(*b.external.ip(), lifetime, opts.echo);
        }
        let filters = match self.merge_filters(Vec::new(), &opts) {
            Ok(f) => f,
            Err(o) => return o,
        };
        if let Err(result) = self.admit_new_binding(opts.realm, subscriber, now_s) {
            return self.err(result);
        }
        // §11.3 item 2: not grantable in full (every address is shared, or addresses are cut
        // into port blocks) → UNSUPP_PROTOCOL.
        let index = if self.config().port_blocks.is_some() {
            None
        } else {
            self.dmz_address(opts.realm, subscriber, map.external_address)
        };
        let Some(index) = index else {
            return self.err(ResultCode::UnsuppProtocol);
        };
        let Some(addr) = self.pool().address(index).map(|a| a.addr) else {
            return self.err(ResultCode::NoResources);
        };
        let id = self.insert_pool_binding(
            Protocol::ALL,
            opts.realm,
            SocketAddrV4::new(subscriber, 0),
            SocketAddrV4::new(addr, 0),
            index,
        );
        let extra = build_extra(None, filters, &opts, source);
        self.table_mut()
            .set_map(id, map.nonce, expires, lifetime, 0, extra);
        self.account_new_binding(opts.realm, subscriber, index, now_s);
        self.ports_mut().set_dedicated(index, true);
        self.metrics_mut().created += 1;
        tracing::info!(%subscriber, external = %addr, nonce = %map.nonce, lifetime, "all-protocol MAP created");
        response(addr, lifetime, opts.echo)
    }

    /// Dataplane: the all-protocol mapping on external address `external`, if there is one
    /// (its binding id; the internal host is the binding's internal address).
    #[inline]
    pub fn dmz_binding(&self, external: Ipv4Addr) -> Option<u32> {
        self.table().lookup_external(&ExternalKey {
            protocol: Protocol::ALL.0,
            addr: external,
            port: 0,
        })
    }

    /// Dataplane: the address dedicated to `subscriber` by its all-protocol mapping (realm 0,
    /// the dataplane's realm), if it has one.
    #[inline]
    pub fn dmz_address_of(&self, subscriber: Ipv4Addr) -> Option<Ipv4Addr> {
        let id = self
            .table()
            .lookup_internal(&Self::dmz_key(0, subscriber))?;
        self.table().binding(id).map(|b| *b.external.ip())
    }
}
