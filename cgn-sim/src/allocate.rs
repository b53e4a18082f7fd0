//! Choosing the external endpoint of a new binding: quotas (RFC 6888 REQ-4, RFC 6887 §17.2),
//! paired address pooling (RFC 6888 REQ-2), the suggested address and port (RFC 6887 §11.3
//! item 8), port hold-down with reclaim by the same owner (RFC 6887 §15), and random port
//! choice (RFC 6056).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Nonce, Protocol, ResultCode};

use crate::pool::proto_index;
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
        if let Some(anchor) = self.subscribers().anchor(realm, subscriber) {
            return Some(anchor);
        }
        if self.config().port_blocks.is_some() {
            // Port Block Allocation: the address of the block it would get.
            return self
                .block_for(realm, subscriber)
                .ok()
                .flatten()
                .map(|b| b.addr_index);
        }
        // An address dedicated to another subscriber (all-protocol MAP) is not shared.
        self.ports().shared_address_for(realm, subscriber, proto)
    }

    /// Checks quota, rate and system limits for one more binding of this subscriber.
    pub(crate) fn admit_new_binding(
        &mut self,
        realm: u16,
        subscriber: Ipv4Addr,
        now_s: u32,
    ) -> Result<(), ResultCode> {
        if self.table().counts().bindings >= self.config().max_mappings {
            return Err(ResultCode::NoResources);
        }
        let limits = Limits::of(self.config());
        self.subscribers_mut()
            .admit(realm, subscriber, now_s, limits)
    }

    /// Chooses and takes an external endpoint ([`crate::ports::Ports::choose`], or
    /// [`crate::ports::Ports::choose_in_block`] with Port Block Allocation, which then records
    /// the block as the subscriber's). `Err(CANNOT_PROVIDE_EXTERNAL)` when `exact` and the
    /// suggestion cannot be honoured; `Err(NO_RESOURCES)` when the anchor is full. Nothing
    /// changes on error.
    pub(crate) fn choose_endpoint(&mut self, req: &BindingRequest) -> Result<Chosen, ResultCode> {
        let proto = proto_index(req.protocol).ok_or(ResultCode::UnsuppProtocol)?;
        if let Some(block) = self.block_for(req.realm, req.subscriber)? {
            let chosen = self.ports_mut().choose_in_block(req, proto, block)?;
            self.take_block(req.realm, req.subscriber, block);
            return Ok(chosen);
        }
        let anchored = self.subscribers().anchor(req.realm, req.subscriber);
        self.ports_mut().choose(req, proto, anchored)
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
            .pool()
            .address(addr_index)
            .map_or((0, 0), |a| (a.pool, a.section));
        self.table_mut().insert_binding(
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
        let burst = self.config().creation_burst;
        if self
            .subscribers_mut()
            .account(realm, subscriber, anchor, now_s, burst)
        {
            self.ports_mut().anchor_delta(anchor, 1);
        }
    }
}
