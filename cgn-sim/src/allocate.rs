//! Choosing the external endpoint of a new binding: quotas (RFC 6888 REQ-4, RFC 6887 §17.2),
//! paired address pooling (RFC 6888 REQ-2), the suggested address and port (RFC 6887 §11.3
//! item 8), port hold-down with reclaim by the same owner (RFC 6887 §15), random port
//! choice (RFC 6056), and which port block a subscriber gets (RFC 7422, [`crate::blocks`]).
//! The ports themselves are taken and given back by the allocation part
//! ([`crate::ports::Ports`]); this file decides for the server which ones.

use std::net::{Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Protocol, ResultCode};

use crate::blocks::PortBlock;
use crate::config::{BlockMode, PortBlocks};
use crate::pool::proto_index;
use crate::server::Server;
use crate::subscribers::Limits;

pub(crate) use crate::pool::preferred_index;
pub(crate) use crate::ports::{BindingRequest, Chosen};

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

/// Port Block Allocation (RFC 7422): which block a subscriber gets, and its assignment.
impl Server {
    /// Block settings, the lowest block port and blocks per address; `None`: option off.
    fn block_geometry(&self) -> Option<(PortBlocks, u16, u16)> {
        let b = self.config().port_blocks?;
        let lo = self.config().port_min.max(1024);
        let span = (u32::from(self.config().port_max) + 1).saturating_sub(u32::from(lo));
        let per_addr = u16::try_from(span / u32::from(b.size.max(1))).unwrap_or(u16::MAX);
        Some((b, lo, per_addr))
    }

    fn block(&self, addr_index: u16, number: u16) -> Option<PortBlock> {
        let (b, lo, per_addr) = self.block_geometry()?;
        if number >= per_addr || usize::from(addr_index) >= self.pool().len() {
            return None;
        }
        let first = u32::from(lo) + u32::from(number) * u32::from(b.size);
        Some(PortBlock {
            addr_index,
            number,
            first: u16::try_from(first).ok()?,
            last: u16::try_from(first + u32::from(b.size) - 1).ok()?,
        })
    }

    /// The subscriber's ordinal among the subscriber prefixes (RFC 7422 deterministic
    /// mapping), if it is a subscriber address.
    fn subscriber_ordinal(&self, subscriber: Ipv4Addr) -> Option<u64> {
        let mut base = 0u64;
        for p in self.subscribers().prefixes() {
            let size = 1u64 << (32 - u32::from(p.len.min(32)));
            if p.contains(subscriber) {
                return Some(base + u64::from(u32::from(subscriber) - u32::from(p.addr)));
            }
            base += size;
        }
        None
    }

    /// The block a subscriber holds, or (none yet) the one it would get now. `Ok(None)`: Port
    /// Block Allocation is off. `Err(NO_RESOURCES)`: no block is left for it.
    pub(crate) fn block_for(
        &self,
        realm: u16,
        subscriber: Ipv4Addr,
    ) -> Result<Option<PortBlock>, ResultCode> {
        let Some((b, _, per_addr)) = self.block_geometry() else {
            return Ok(None);
        };
        let n = self.pool().len() as u64;
        match b.mode {
            BlockMode::Deterministic => {
                let k = self
                    .subscriber_ordinal(subscriber)
                    .ok_or(ResultCode::NoResources)?;
                let number = u16::try_from(k / n.max(1)).map_err(|_| ResultCode::NoResources)?;
                self.block((k % n.max(1)) as u16, number)
                    .filter(|_| number < per_addr)
                    .map(Some)
                    .ok_or(ResultCode::NoResources)
            }
            BlockMode::Dynamic => {
                if let Some(held) = self.ports().assigned_block(realm, subscriber) {
                    return Ok(Some(held));
                }
                let start = preferred_index(subscriber, realm, self.pool().len());
                let len = self.pool().len();
                (0..len)
                    .map(|i| ((start + i) % len) as u16)
                    .find_map(|a| {
                        (0..per_addr)
                            .find(|j| !self.ports().is_block_taken(a, *j))
                            .and_then(|j| self.block(a, j))
                    })
                    .map(Some)
                    .ok_or(ResultCode::NoResources)
            }
        }
    }

    /// Records that the subscriber uses `block` (dynamic mode: taken until its last mapping
    /// goes; logged once, RFC 7422 §2: dynamically assigned blocks MUST be logged).
    pub(crate) fn take_block(&mut self, realm: u16, subscriber: Ipv4Addr, block: PortBlock) {
        if self.config().port_blocks.map(|b| b.mode) != Some(BlockMode::Dynamic) {
            return;
        }
        if self.ports_mut().assign_block(realm, subscriber, block) {
            let addr = self.pool().address(block.addr_index).map(|a| a.addr);
            tracing::info!(%subscriber, external = ?addr, first = block.first, last = block.last, "port block assigned");
        }
    }

    /// The subscriber's last mapping went: its dynamic block is free again.
    pub(crate) fn release_block(&mut self, realm: u16, subscriber: Ipv4Addr) {
        if let Some(b) = self.ports_mut().release_block(realm, subscriber) {
            tracing::info!(%subscriber, first = b.first, last = b.last, "port block released");
        }
    }

    /// The port block of a subscriber with mappings (for `ctl mappings` and the dataplane);
    /// `None` when the option is off or the subscriber has no mapping.
    pub fn port_block(&self, realm: u16, subscriber: Ipv4Addr) -> Option<PortBlock> {
        if !self.subscribers().has_bindings(realm, subscriber) {
            return None;
        }
        self.block_for(realm, subscriber).ok().flatten()
    }
}
