//! PORT_SET (RFC 7753): one MAP request for a run of consecutive internal ports, mapped to a
//! run of consecutive external ports on the subscriber's address. Each port is its own
//! binding carrying the request's nonce; the set is renewed and deleted as one unit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use pcp_client::wire::{
    MapData, OpcodeData, Options, PcpOption, PortSet, ResponseRepr, ResultCode,
};

use crate::options::Processed;
use crate::pool::{PortRequest, pcp_proto_index};
use crate::server::{Outcome, Server};
use crate::table::InternalKey;
use crate::unsolicited::PendingUpdate;

impl Server {
    /// How many ports a PORT_SET asks for, capped (0xffff = as many as possible).
    fn port_set_want(&self, first: u16, set: &PortSet) -> u16 {
        let room = 65535 - u32::from(first) + 1;
        let want = if set.size == u16::MAX {
            u32::from(self.config().max_port_set)
        } else {
            u32::from(set.size).min(u32::from(self.config().max_port_set))
        };
        want.min(room) as u16
    }

    fn key(&self, protocol: u8, realm: u16, addr: Ipv4Addr, port: u16) -> InternalKey {
        InternalKey {
            protocol,
            realm,
            addr,
            port,
        }
    }

    /// MAP with PORT_SET (size > 1), lifetime ≠ 0.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn map_port_set<'a>(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        source: SocketAddrV4,
        map: &MapData,
        mut opts: Processed<'a>,
        set: PortSet,
        lifetime: u32,
    ) -> Outcome<'a> {
        let Some(proto) = pcp_proto_index(map.protocol) else {
            return self.err(ResultCode::UnsuppProtocol);
        };
        let p = map.internal_port;
        let want = self.port_set_want(p, &set);
        let k = |s: &Server, i: u16| s.key(map.protocol.0, opts.realm, subscriber, p + i);
        let expires = now_s.saturating_add(lifetime);
        let reply = |first: SocketAddrV4, count: u16, mut echo: Vec<PcpOption<'a>>| {
            // RFC 7753 §4.2: only a set of more than one port is reported.
            if count > 1 {
                echo.push(PcpOption::PortSet(PortSet {
                    size: count,
                    first_internal_port: p,
                    parity: set.parity && first.port() & 1 == p & 1,
                }));
            }
            Outcome::Success {
                lifetime,
                data: OpcodeData::Map(MapData {
                    external_port: first.port(),
                    external_address: IpAddr::V4(*first.ip()),
                    ..*map
                }),
                options: echo,
            }
        };
        if let Some(id0) = self.table().lookup_internal(&k(self, 0)) {
            let Some(b0) = self.table().binding(id0).cloned() else {
                return self.err(ResultCode::NoResources);
            };
            if !b0.has_map() || b0.is_static() {
                return self.err(ResultCode::NotAuthorized);
            }
            if b0.nonce != map.nonce {
                return Outcome::Error {
                    result: ResultCode::NotAuthorized,
                    lifetime: b0.map_expires.saturating_sub(now_s),
                };
            }
            // Renew the set as a unit: every consecutive port of it with this nonce.
            let mut count = 0u16;
            while count < want {
                let Some(id) = self.table().lookup_internal(&k(self, count)) else {
                    break;
                };
                let same = self.table().binding(id).is_some_and(|b| {
                    b.has_map()
                        && b.nonce == map.nonce
                        && b.external.ip() == b0.external.ip()
                        && u32::from(b.external.port())
                            == u32::from(b0.external.port()) + u32::from(count)
                });
                if !same {
                    break;
                }
                self.table_mut().refresh_map(id, expires, lifetime);
                self.cancel_updates(id);
                count += 1;
            }
            self.metrics_mut().refreshed += u64::from(count);
            self.refresh_overlapped(
                source, map, opts.realm, subscriber, count, want, lifetime, set,
            );
            let echo = std::mem::take(&mut opts.echo);
            return reply(b0.external, count, echo);
        }
        // A new set: as many free internal ports from `p` as asked, within the quota.
        let mut n = 0u16;
        while n < want && self.table().lookup_internal(&k(self, n)).is_none() {
            n += 1;
        }
        let filters = match self.merge_filters(Vec::new(), &opts) {
            Ok(f) => f,
            Err(o) => return o,
        };
        if let Err(result) = self.admit_new_binding(opts.realm, subscriber, now_s) {
            return self.err(result);
        }
        let held = self.subscribers().held(opts.realm, subscriber);
        let quota_left = self.config().quota_per_subscriber.saturating_sub(held);
        let system_left = self
            .config()
            .max_mappings
            .saturating_sub(self.table().counts().bindings);
        n = n
            .min(quota_left.min(u32::from(u16::MAX)) as u16)
            .min(system_left.min(65535) as u16);
        // Port Block Allocation: the set comes from the subscriber's block, on its address.
        let block = match self.block_for(opts.realm, subscriber) {
            Ok(b) => b,
            Err(result) => return self.err(result),
        };
        let index = match block {
            Some(b) => b.addr_index,
            None => match self.anchor_for(opts.realm, subscriber, proto) {
                Some(i) => i,
                None => return self.err(ResultCode::NoResources),
            },
        };
        let parity = set.parity.then_some(p & 1);
        let req = PortRequest {
            proto,
            internal_port: p,
        };
        // The longest run that fits, halving on failure (RFC 7753: fewer ports are allowed).
        let mut start = None;
        while n > 0 {
            if let Some(s) = self.ports_mut().allocate_run(
                index,
                req,
                n,
                parity,
                block.map(|b| (b.first, b.last)),
            ) {
                start = Some(s);
                break;
            }
            n /= 2;
        }
        let Some(start) = start else {
            // A full block is the subscriber's quota (RFC 7422, RFC 6887 §11.3 item 10).
            return self.err(if block.is_some() {
                ResultCode::UserExQuota
            } else {
                ResultCode::NoResources
            });
        };
        if let Some(b) = block {
            self.take_block(opts.realm, subscriber, b);
        }
        let Some((addr, pool_id, section)) = self
            .pool()
            .address(index)
            .map(|a| (a.addr, a.pool, a.section))
        else {
            return self.err(ResultCode::NoResources);
        };
        let extra = crate::map::build_extra(None, filters, &opts, source);
        for i in 0..n {
            let id = self.table_mut().insert_binding(
                map.protocol,
                opts.realm,
                SocketAddrV4::new(subscriber, p + i),
                SocketAddrV4::new(addr, start + i),
                index,
                pool_id,
                section,
            );
            self.table_mut()
                .set_map(id, map.nonce, expires, lifetime, 0, extra.clone());
            self.account_new_binding(opts.realm, subscriber, index, now_s);
        }
        self.metrics_mut().created += u64::from(n);
        tracing::info!(%subscriber, first_internal = p, first_external = start, ports = n, "PORT_SET mapped");
        self.refresh_overlapped(source, map, opts.realm, subscriber, n, want, lifetime, set);
        let echo = std::mem::take(&mut opts.echo);
        reply(SocketAddrV4::new(addr, start), n, echo)
    }

    /// RFC 7753 §4.4.1: a PORT_SET request that overlaps existing mappings is a refresh of each
    /// overlapped mapping, and each gets its own response. The mapping the request starts on
    /// (or the set it creates) is the answer itself; here, every other mapping of the
    /// subscriber with the request's nonce inside `[Internal Port + from, Internal Port + to)`
    /// (a single port, or a set: consecutive internal and external ports with that nonce) is
    /// refreshed with the granted `lifetime` and gets an unsolicited MAP response to `source`,
    /// sent as a Mapping Update (RFC 6887 §14.2: 3 copies, stopped by a refresh of that
    /// mapping). Mappings under another nonce are left alone (RFC 6887 §11.3, Simple Threat
    /// Model), and free ports after the answered part are not mapped: a client that wants them
    /// asks for them from their first port.
    #[allow(clippy::too_many_arguments)]
    fn refresh_overlapped(
        &mut self,
        source: SocketAddrV4,
        map: &MapData,
        realm: u16,
        subscriber: Ipv4Addr,
        from: u16,
        to: u16,
        lifetime: u32,
        set: PortSet,
    ) {
        let now = self.clock().now();
        let now_s = self.seconds(now);
        let expires = now_s.saturating_add(lifetime);
        let p = map.internal_port;
        let owned = |s: &Server, i: u16| {
            let id = s.table().lookup_internal(&s.key(
                map.protocol.0,
                realm,
                subscriber,
                p.checked_add(i)?,
            ))?;
            let b = s.table().binding(id)?;
            (b.has_map() && !b.is_static() && b.nonce == map.nonce).then_some((id, b.external))
        };
        let mut i = from;
        while i < to {
            let Some((id0, ext0)) = owned(self, i) else {
                i += 1;
                continue;
            };
            // The run of this set: consecutive ports, consecutive external ports.
            let mut n = 1u16;
            while i + n < to
                && owned(self, i + n).is_some_and(|(_, e)| {
                    e.ip() == ext0.ip()
                        && u32::from(e.port()) == u32::from(ext0.port()) + u32::from(n)
                })
            {
                n += 1;
            }
            for k in 0..n {
                if let Some((id, _)) = owned(self, i + k) {
                    self.table_mut().refresh_map(id, expires, lifetime);
                    self.cancel_updates(id);
                }
            }
            self.metrics_mut().refreshed += u64::from(n);
            let options: Vec<PcpOption<'_>> = if n > 1 {
                vec![PcpOption::PortSet(PortSet {
                    size: n,
                    first_internal_port: p + i,
                    parity: set.parity && ext0.port() & 1 == (p + i) & 1,
                })]
            } else {
                Vec::new()
            };
            let response = ResponseRepr {
                result: ResultCode::Success,
                lifetime,
                epoch: self.clock().epoch(now),
                data: OpcodeData::Map(MapData {
                    internal_port: p + i,
                    external_port: ext0.port(),
                    external_address: IpAddr::V4(*ext0.ip()),
                    ..*map
                }),
                options: Options::List(&options),
            };
            let mut buf = [0u8; pcp_client::wire::MAX_MESSAGE_LEN];
            if let Ok(len) = response.emit(&mut buf) {
                self.unsolicited_mut().queue_update(PendingUpdate {
                    binding: id0,
                    remote: None,
                    destination: SocketAddr::V4(source),
                    payload: buf[..len].to_vec(),
                    next: now,
                    sent: 0,
                });
            }
            tracing::debug!(%subscriber, first_internal = p + i, ports = n, "overlapped mapping refreshed");
            i += n;
        }
        self.send_due_updates(now);
    }

    /// MAP delete with PORT_SET: the set goes as one unit (RFC 7753 §4.4). Returns how many
    /// ports were deleted, or the error.
    pub(crate) fn delete_port_set(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        map: &MapData,
        realm: u16,
        set: PortSet,
    ) -> Result<u16, Outcome<'static>> {
        let p = map.internal_port;
        let want = self.port_set_want(
            p,
            &PortSet {
                size: set.size.max(1),
                ..set
            },
        );
        let mut count = 0u16;
        while count < want {
            let key = self.key(map.protocol.0, realm, subscriber, p + count);
            let Some(id) = self.table().lookup_internal(&key) else {
                break;
            };
            let Some(b) = self.table().binding(id) else {
                break;
            };
            if !b.has_map() || b.is_static() {
                if count == 0 {
                    return Err(self.err(ResultCode::NotAuthorized));
                }
                break;
            }
            if b.nonce != map.nonce {
                if count == 0 {
                    return Err(Outcome::Error {
                        result: ResultCode::NotAuthorized,
                        lifetime: b.map_expires.saturating_sub(now_s),
                    });
                }
                break;
            }
            if let Some(f) = self.table_mut().remove_map(id) {
                self.on_freed(f, now_s);
            }
            count += 1;
        }
        self.metrics_mut().deleted += u64::from(count);
        Ok(count)
    }
}
