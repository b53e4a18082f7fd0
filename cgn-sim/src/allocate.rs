//! Choosing the external endpoint of a new binding: quotas (RFC 6888 REQ-4, RFC 6887 §17.2),
//! paired address pooling (RFC 6888 REQ-2), the suggested address and port (RFC 6887 §11.3
//! item 8), port hold-down with reclaim by the same owner (RFC 6887 §15), and random port
//! choice (RFC 6056).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Nonce, Protocol, ResultCode};

use crate::hold::HoldOwner;
use crate::pool::{PortRequest, proto_index};
use crate::server::Server;
use crate::subscribers::Limits;

/// What a request asks of a new binding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindingRequest {
    pub protocol: Protocol,
    pub realm: u16,
    pub subscriber: Ipv4Addr,
    pub internal_port: u16,
    pub nonce: Nonce,
    /// Suggested external address (as decoded: V4 0.0.0.0 = none, V6 = the other family).
    pub suggested_address: IpAddr,
    /// Suggested external port (0 = none).
    pub suggested_port: u16,
    /// Fail rather than take another endpoint (PREFER_FAILURE; always for PEER).
    pub exact: bool,
}

/// A chosen endpoint, with the port already taken in the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chosen {
    pub addr_index: u16,
    pub external: SocketAddrV4,
}

/// A deterministic starting address for a subscriber without an anchor, so the same
/// subscriber lands on the same address after a restart even without a suggestion.
pub(crate) fn preferred_index(subscriber: Ipv4Addr, realm: u16, n: usize) -> usize {
    let x = (u64::from(u32::from(subscriber)) ^ (u64::from(realm) << 32))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> 32) as usize) % n.max(1)
}

impl Server {
    /// The address a subscriber is (or would be) anchored to, for NAT-PMP's external address
    /// request and for new bindings.
    pub(crate) fn anchor_for(&self, realm: u16, subscriber: Ipv4Addr, proto: usize) -> Option<u16> {
        if let Some(anchor) = self.subscribers.anchor(realm, subscriber) {
            return Some(anchor);
        }
        if self.config.port_blocks.is_some() {
            // Port Block Allocation: the address of the block it would get.
            return self
                .block_for(realm, subscriber)
                .ok()
                .flatten()
                .map(|b| b.addr_index);
        }
        let n = self.pool.len();
        let start = preferred_index(subscriber, realm, n);
        // An address dedicated to another subscriber (all-protocol MAP) is not shared.
        (0..n)
            .map(|i| ((start + i) % n) as u16)
            .find(|i| !self.pool.is_dedicated(*i) && self.pool.free_ports(*i, proto) > 0)
    }

    /// Checks quota, rate and system limits for one more binding of this subscriber.
    pub(crate) fn admit_new_binding(
        &mut self,
        realm: u16,
        subscriber: Ipv4Addr,
        now_s: u32,
    ) -> Result<(), ResultCode> {
        if self.table.counts().bindings >= self.config.max_mappings {
            return Err(ResultCode::NoResources);
        }
        let limits = Limits::of(&self.config);
        self.subscribers.admit(realm, subscriber, now_s, limits)
    }

    /// Chooses and takes an external endpoint. `Err(CANNOT_PROVIDE_EXTERNAL)` when `exact` and
    /// the suggestion cannot be honoured; `Err(NO_RESOURCES)` when the anchor is full.
    /// Nothing changes on error.
    pub(crate) fn choose_endpoint(&mut self, req: &BindingRequest) -> Result<Chosen, ResultCode> {
        let proto = proto_index(req.protocol).ok_or(ResultCode::UnsuppProtocol)?;
        if let Some(block) = self.block_for(req.realm, req.subscriber)? {
            return self.choose_in_block(req, proto, block);
        }
        let anchored = self.subscribers.anchor(req.realm, req.subscriber);
        // What the suggestion names, if anything usable.
        let (hint_index, hint_bad) = match req.suggested_address {
            IpAddr::V4(a) if a.is_unspecified() => (None, false),
            IpAddr::V4(a) => match self.pool.index_of(a) {
                // RFC 6888 REQ-2 (paired) beats RFC 6887 §10: an anchored subscriber keeps
                // its address; one without mappings may be re-anchored to the suggestion.
                // An address dedicated to another subscriber is never suggested successfully.
                Some(i)
                    if anchored.is_none_or(|x| x == i)
                        && (anchored == Some(i) || !self.pool.is_dedicated(i)) =>
                {
                    (Some(i), false)
                }
                _ => (None, true),
            },
            // `::` or any IPv6 address: this NAT44 has no IPv6 external addresses.
            IpAddr::V6(_) => (None, true),
        };
        if hint_bad && req.exact {
            return Err(ResultCode::CannotProvideExternal);
        }
        let addr_index = match anchored.or(hint_index) {
            Some(i) => i,
            None => self
                .anchor_for(req.realm, req.subscriber, proto)
                .ok_or(ResultCode::NoResources)?,
        };
        let addr = self
            .pool
            .address(addr_index)
            .map(|a| a.addr)
            .ok_or(ResultCode::NoResources)?;
        // The same internal endpoint and nonce may take back its held port (RFC 6887 §15).
        let owner = HoldOwner {
            proto: proto as u8,
            realm: req.realm,
            addr: req.subscriber,
            port: req.internal_port,
            nonce: req.nonce,
        };
        if let Some(held) = self.holds.reclaim(&owner) {
            let fits = held.addr == addr_index
                && (req.suggested_port == 0 || req.suggested_port == held.port);
            if fits {
                return Ok(Chosen {
                    addr_index,
                    external: SocketAddrV4::new(addr, held.port),
                });
            }
            // Not what is asked for now: let the port go after all.
            self.pool.release(held.addr, proto, held.port);
        }
        if req.suggested_port != 0 && self.pool.take(addr_index, proto, req.suggested_port) {
            return Ok(Chosen {
                addr_index,
                external: SocketAddrV4::new(addr, req.suggested_port),
            });
        }
        if req.exact && (req.suggested_port != 0 || hint_bad) {
            return Err(ResultCode::CannotProvideExternal);
        }
        let port = self
            .pool
            .allocate(
                addr_index,
                PortRequest {
                    proto,
                    internal_port: req.internal_port,
                },
                &mut *self.rng,
            )
            .ok_or(ResultCode::NoResources)?;
        Ok(Chosen {
            addr_index,
            external: SocketAddrV4::new(addr, port),
        })
    }

    /// [`Server::choose_endpoint`] with Port Block Allocation: the subscriber's address and
    /// block only. A suggestion outside them cannot be honoured (CANNOT_PROVIDE_EXTERNAL with
    /// `exact`, else another port of the block); a full block is USER_EX_QUOTA.
    fn choose_in_block(
        &mut self,
        req: &BindingRequest,
        proto: usize,
        block: crate::blocks::PortBlock,
    ) -> Result<Chosen, ResultCode> {
        let addr_index = block.addr_index;
        let addr = self
            .pool
            .address(addr_index)
            .map(|a| a.addr)
            .ok_or(ResultCode::NoResources)?;
        let hint_bad = match req.suggested_address {
            IpAddr::V4(a) => !a.is_unspecified() && a != addr,
            IpAddr::V6(_) => true,
        };
        let port_bad = req.suggested_port != 0 && !block.contains(req.suggested_port);
        if req.exact && (hint_bad || port_bad) {
            return Err(ResultCode::CannotProvideExternal);
        }
        let owner = HoldOwner {
            proto: proto as u8,
            realm: req.realm,
            addr: req.subscriber,
            port: req.internal_port,
            nonce: req.nonce,
        };
        let mut chosen = None;
        if let Some(held) = self.holds.reclaim(&owner) {
            let fits = held.addr == addr_index
                && block.contains(held.port)
                && (req.suggested_port == 0 || req.suggested_port == held.port);
            if fits {
                chosen = Some(held.port);
            } else {
                self.pool.release(held.addr, proto, held.port);
            }
        }
        if chosen.is_none()
            && req.suggested_port != 0
            && !port_bad
            && self.pool.take(addr_index, proto, req.suggested_port)
        {
            chosen = Some(req.suggested_port);
        }
        if chosen.is_none() && req.exact && (req.suggested_port != 0 || hint_bad) {
            return Err(ResultCode::CannotProvideExternal);
        }
        let port = match chosen {
            Some(p) => p,
            None => self
                .pool
                .allocate_in(
                    addr_index,
                    proto,
                    req.internal_port,
                    block.first,
                    block.last,
                    &mut *self.rng,
                )
                .ok_or(ResultCode::UserExQuota)?,
        };
        self.take_block(req.realm, req.subscriber, block);
        Ok(Chosen {
            addr_index,
            external: SocketAddrV4::new(addr, port),
        })
    }

    /// Inserts the binding of `internal` to `external`, taken from pool address `addr_index`,
    /// labelled with that address's pool and section (the table's `Pool:` and `Section:`).
    pub(crate) fn insert_pool_binding(
        &mut self,
        protocol: Protocol,
        realm: u16,
        internal: SocketAddrV4,
        external: SocketAddrV4,
        addr_index: u16,
    ) -> u32 {
        let (pool_id, section) = self
            .pool
            .address(addr_index)
            .map_or((0, 0), |a| (a.pool, a.section));
        self.table.insert_binding(
            protocol, realm, internal, external, addr_index, pool_id, section,
        )
    }

    /// Records a new binding of the subscriber (anchor, count, creation token).
    pub(crate) fn account_new_binding(
        &mut self,
        realm: u16,
        subscriber: Ipv4Addr,
        anchor: u16,
        now_s: u32,
    ) {
        let burst = self.config.creation_burst;
        if self
            .subscribers
            .account(realm, subscriber, anchor, now_s, burst)
        {
            self.pool.anchor_delta(anchor, 1);
        }
    }
}
