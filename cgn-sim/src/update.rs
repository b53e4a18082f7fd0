//! Mapping Update (RFC 6887 §14.2): when the pool changes, mappings move to new external
//! endpoints and each client is told with an unsolicited MAP response, sent 3 times (at once,
//! after 250 ms, after another 500 ms) and stopped when the client refreshes.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use pcp_client::wire::{
    MapData, OpcodeData, Options, PcpOption, Protocol, ResponseRepr, ResultCode,
};

use crate::announce::MAPPING_UPDATE_COPIES;
use crate::config::{ConfigError, PoolConfig};
use crate::pool::{NatPool, PortRequest, proto_index};
use crate::server::{PendingUpdate, Server, Transmit};
use crate::table::{Binding, flags};

impl Server {
    pub(crate) fn cancel_updates(&mut self, binding: u32) {
        self.updates.retain(|u| u.binding != binding);
    }

    pub(crate) fn send_due_updates(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.updates.len() {
            if self.updates[i].next <= now {
                let u = &mut self.updates[i];
                self.out.push_back(Transmit {
                    source: None,
                    destination: u.destination,
                    payload: u.payload.clone(),
                });
                self.metrics.mapping_updates_sent += 1;
                u.sent += 1;
                // 0 ms, 250 ms, then 500 ms more (RFC 6887 §14.2).
                u.next += Duration::from_millis(250 * u64::from(u.sent));
                if u.sent >= MAPPING_UPDATE_COPIES {
                    self.updates.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    fn client_of(&self, b: &Binding) -> Option<SocketAddr> {
        if let Some(e) = b.extra.as_ref().filter(|e| e.third_party.is_some()) {
            return e.requester.map(SocketAddr::V4);
        }
        self.clients.latest(*b.internal.ip()).map(SocketAddr::V4)
    }

    /// Replaces the NAT pools at `now` (renumbering). The epoch resets (RFC 6887 §8.5: the
    /// external addresses changed). Each MAP mapping keeps its external port on a new address
    /// when it can; its client gets a Mapping Update (RFC 6887 §14.2) with the new values and
    /// its FILTERs and THIRD_PARTY, or CANNOT_PROVIDE_EXTERNAL (and the mapping is dropped)
    /// when it asked for PREFER_FAILURE and the old endpoint cannot be kept. PEER and implicit
    /// bindings are dropped (their sessions end with the address).
    pub fn replace_pools(
        &mut self,
        now: Instant,
        pools: Vec<PoolConfig>,
    ) -> Result<(), ConfigError> {
        let mut config = self.config.clone();
        config.pools = pools;
        let pool = NatPool::new(&config)?;
        let now_s = self.seconds(now);
        let old: Vec<Binding> = self
            .table
            .bindings()
            .filter(|(_, b)| b.has_map())
            .map(|(_, b)| b.clone())
            .collect();
        self.config = config;
        self.pool = pool;
        self.table.clear(now_s);
        self.subs.clear();
        self.holds.clear();
        self.updates.clear();
        self.epoch.reset(now);
        let n = self.pool.len();
        for b in old {
            let Some(proto) = proto_index(Protocol(b.protocol)) else {
                continue;
            };
            let kept = self
                .pool
                .index_of(*b.external.ip())
                .filter(|i| self.pool.take(*i, proto, b.external.port()));
            let moved = match kept {
                Some(i) => Some((i, b.external.port())),
                None if b.flags & flags::PREFER_FAILURE != 0 || b.is_static() => None,
                None => {
                    let start = (u32::from(*b.internal.ip()) as usize) % n.max(1);
                    let anchor = self
                        .subs
                        .get(&(b.realm, *b.internal.ip()))
                        .map(|s| s.anchor)
                        .unwrap_or(start as u16);
                    self.pool
                        .allocate(
                            anchor,
                            PortRequest {
                                proto,
                                internal_port: b.internal.port(),
                            },
                            &mut *self.rng,
                        )
                        .map(|p| (anchor, p))
                }
            };
            let left = b.map_expires.saturating_sub(now_s);
            let (result, ext) = match moved {
                Some((i, port)) => {
                    let Some((a_addr, a_pool, a_section)) =
                        self.pool.address(i).map(|a| (a.addr, a.pool, a.section))
                    else {
                        continue;
                    };
                    let ext = SocketAddrV4::new(a_addr, port);
                    let id = self.table.insert_binding(
                        Protocol(b.protocol),
                        b.realm,
                        b.internal,
                        ext,
                        i,
                        a_pool,
                        a_section,
                    );
                    self.table.set_map(
                        id,
                        b.nonce,
                        b.map_expires,
                        b.map_lifetime,
                        b.flags & (flags::STATIC | flags::NATPMP | flags::PREFER_FAILURE),
                        b.extra.clone(),
                    );
                    self.account_new_binding(b.realm, *b.internal.ip(), i, now_s);
                    (ResultCode::Success, Some((id, ext)))
                }
                None => (ResultCode::CannotProvideExternal, None),
            };
            if b.is_static() || b.flags & flags::NATPMP != 0 {
                continue;
            }
            let Some(destination) = self.client_of(&b) else {
                continue;
            };
            let mut options: Vec<PcpOption<'_>> = Vec::new();
            if let Some(extra) = &b.extra {
                if let Some(tp) = extra.third_party {
                    options.push(PcpOption::ThirdParty(IpAddr::V4(tp)));
                }
                for f in &extra.filters {
                    options.push(PcpOption::Filter(*f));
                }
            }
            let (external, lifetime) = match ext {
                Some((_, e)) => (e, left),
                None => (b.external, self.config.short_error_lifetime),
            };
            let response = ResponseRepr {
                result,
                lifetime,
                epoch: self.epoch.at(now),
                data: OpcodeData::Map(MapData {
                    nonce: b.nonce,
                    protocol: Protocol(b.protocol),
                    internal_port: b.internal.port(),
                    external_port: external.port(),
                    external_address: IpAddr::V4(*external.ip()),
                }),
                options: Options::List(&options),
            };
            let mut buf = [0u8; pcp_client::wire::MAX_MESSAGE_LEN];
            let Ok(len) = response.emit(&mut buf) else {
                continue;
            };
            self.updates.push(PendingUpdate {
                binding: ext.map_or(u32::MAX, |(id, _)| id),
                destination,
                payload: buf[..len].to_vec(),
                next: now,
                sent: 0,
            });
        }
        self.send_due_updates(now);
        Ok(())
    }
}
