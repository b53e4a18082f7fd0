//! The NAT-PMP server (RFC 6886) on the PCP port (RFC 6887 App. A: first byte 0 is
//! NAT-PMP). It shares the pool, quotas and table with PCP; its mappings are MAP parts
//! flagged NAT-PMP with the all-zero nonce, so a PCP client with another nonce cannot take
//! them over, and NAT-PMP cannot touch PCP mappings.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use pcp_client::natpmp::{self, ErrorResponse, RequestRepr, ResponseRepr};
use pcp_client::wire::{Nonce, Protocol, ResultCode};

use crate::allocate::BindingRequest;
use crate::metrics::DropReason;
use crate::pool::proto_index;
use crate::server::Server;
use crate::table::{InternalKey, flags};

fn natpmp_result(r: ResultCode) -> natpmp::ResultCode {
    match r {
        ResultCode::NotAuthorized | ResultCode::CannotProvideExternal => {
            natpmp::ResultCode::NotAuthorized
        }
        ResultCode::NetworkFailure => natpmp::ResultCode::NetworkFailure,
        _ => natpmp::ResultCode::OutOfResources,
    }
}

impl Server {
    pub(crate) fn handle_natpmp(
        &mut self,
        now: Instant,
        source: SocketAddrV4,
        bytes: &[u8],
        epoch: u32,
        out: &mut [u8],
    ) -> Option<usize> {
        let request = match RequestRepr::parse(bytes) {
            Ok(r) => r,
            Err(e) => {
                let Some(code) = e.result_code() else {
                    self.metrics_mut().drop(DropReason::NatPmp);
                    return None;
                };
                self.metrics_mut().natpmp(code.to_u16());
                return natpmp::emit_error_reply(bytes, code, epoch, out).ok();
            }
        };
        self.remember_client(source, now);
        let now_s = self.seconds(now);
        let subscriber = *source.ip();
        let response = match request {
            RequestRepr::ExternalAddress => {
                let proto = proto_index(Protocol::UDP).unwrap_or(0);
                match self
                    .anchor_for(0, subscriber, proto)
                    .and_then(|i| self.pool().address(i))
                {
                    Some(a) => ResponseRepr::ExternalAddress {
                        epoch,
                        external_address: a.addr,
                    },
                    None => ResponseRepr::Error(ErrorResponse::ExternalAddress {
                        result: natpmp::ResultCode::OutOfResources,
                        epoch,
                    }),
                }
            }
            RequestRepr::Map {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            } => match self.natpmp_map(
                now_s,
                subscriber,
                protocol.protocol(),
                internal_port,
                suggested_external_port,
                lifetime.get(),
            ) {
                Ok((external_port, lifetime)) => ResponseRepr::Map {
                    protocol,
                    epoch,
                    internal_port,
                    external_port,
                    lifetime,
                },
                Err(r) => ResponseRepr::Error(ErrorResponse::Map {
                    protocol,
                    result: natpmp_result(r),
                    epoch,
                    internal_port,
                    external_port: 0,
                }),
            },
            RequestRepr::Delete {
                protocol,
                internal_port,
            } => match self.natpmp_delete(
                now_s,
                subscriber,
                protocol.protocol(),
                internal_port.get(),
            ) {
                Ok(()) => ResponseRepr::Map {
                    protocol,
                    epoch,
                    internal_port: internal_port.get(),
                    external_port: 0,
                    lifetime: 0,
                },
                Err(r) => ResponseRepr::Error(ErrorResponse::Map {
                    protocol,
                    result: natpmp_result(r),
                    epoch,
                    internal_port: internal_port.get(),
                    external_port: 0,
                }),
            },
            RequestRepr::DeleteAll { protocol } => {
                self.natpmp_delete_all(now_s, subscriber, protocol.protocol());
                ResponseRepr::Map {
                    protocol,
                    epoch,
                    internal_port: 0,
                    external_port: 0,
                    lifetime: 0,
                }
            }
        };
        self.metrics_mut().natpmp(response.result().to_u16());
        response.emit(out).ok()
    }

    fn natpmp_map(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        protocol: Protocol,
        internal_port: u16,
        suggested: u16,
        requested: u32,
    ) -> Result<(u16, u32), ResultCode> {
        let lifetime = self.clamp_lifetime(requested);
        let key = InternalKey {
            protocol: protocol.0,
            realm: 0,
            addr: subscriber,
            port: internal_port,
        };
        let expires = now_s.saturating_add(lifetime);
        if let Some(id) = self.table().lookup_internal(&key) {
            let Some(b) = self.table().binding(id) else {
                return Err(ResultCode::NoResources);
            };
            let ext = b.external.port();
            if b.has_map() {
                if b.flags & flags::NATPMP == 0 {
                    // A PCP (or static) mapping: NAT-PMP has no nonce to prove ownership.
                    return Err(ResultCode::NotAuthorized);
                }
                self.table_mut().refresh_map(id, expires, lifetime);
                self.metrics_mut().refreshed += 1;
            } else {
                self.table_mut().set_map(
                    id,
                    Nonce::default(),
                    expires,
                    lifetime,
                    flags::NATPMP,
                    None,
                );
                self.metrics_mut().created += 1;
            }
            return Ok((ext, lifetime));
        }
        self.admit_new_binding(0, subscriber, now_s)?;
        let chosen = self.choose_endpoint(&BindingRequest {
            protocol,
            realm: 0,
            subscriber,
            internal_port,
            nonce: Nonce::default(),
            suggested_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            suggested_port: suggested,
            exact: false,
        })?;
        let id = self.insert_pool_binding(
            protocol,
            0,
            SocketAddrV4::new(subscriber, internal_port),
            chosen.external,
            chosen.addr_index,
        );
        self.table_mut()
            .set_map(id, Nonce::default(), expires, lifetime, flags::NATPMP, None);
        self.account_new_binding(0, subscriber, chosen.addr_index, now_s);
        self.metrics_mut().created += 1;
        tracing::info!(%subscriber, internal_port, external = %chosen.external, "NAT-PMP mapping created");
        Ok((chosen.external.port(), lifetime))
    }

    fn natpmp_delete(
        &mut self,
        now_s: u32,
        subscriber: Ipv4Addr,
        protocol: Protocol,
        internal_port: u16,
    ) -> Result<(), ResultCode> {
        let key = InternalKey {
            protocol: protocol.0,
            realm: 0,
            addr: subscriber,
            port: internal_port,
        };
        let Some(id) = self.table().lookup_internal(&key) else {
            return Ok(());
        };
        match self.table().binding(id) {
            Some(b) if b.has_map() && b.flags & flags::NATPMP != 0 => {}
            Some(b) if b.has_map() => return Err(ResultCode::NotAuthorized),
            _ => return Ok(()),
        }
        if let Some(f) = self.table_mut().remove_map(id) {
            self.on_freed(f, now_s);
        }
        self.metrics_mut().deleted += 1;
        Ok(())
    }

    /// RFC 6886 §3.4: internal port 0 and lifetime 0 delete all of the client's NAT-PMP
    /// mappings of the protocol (PCP mappings belong to their nonces and stay).
    fn natpmp_delete_all(&mut self, now_s: u32, subscriber: Ipv4Addr, protocol: Protocol) {
        let ids: Vec<u32> = self
            .table()
            .bindings()
            .filter(|(_, b)| {
                *b.internal.ip() == subscriber
                    && b.realm == 0
                    && b.protocol == protocol.0
                    && b.has_map()
                    && b.flags & flags::NATPMP != 0
            })
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            if let Some(f) = self.table_mut().remove_map(id) {
                self.on_freed(f, now_s);
            }
            self.metrics_mut().deleted += 1;
        }
    }
}
