//! The allocation part of the server: every external port, free, held or bound.
//!
//! [`Ports`] owns the NAT pool's port bitmaps ([`NatPool`]), the hold-down list
//! ([`HoldDown`], RFC 6888 REQ-8, RFC 6887 §15), the dynamic port blocks
//! ([`BlockTable`], RFC 7422) and the RNG that picks ports (RFC 6056). Its invariant: **a port
//! is free, held or bound, never two**. Only these moves change a port's state:
//!
//! | move | from → to | method |
//! |---|---|---|
//! | take, allocate, choose | free → bound | [`Ports::take`], [`Ports::allocate`], [`Ports::choose`], … |
//! | release | bound → free | [`Ports::release`], [`Ports::release_or_hold`] with no hold time |
//! | hold | bound → held | [`Ports::release_or_hold`] |
//! | reclaim | held → bound | inside [`Ports::choose`] and [`Ports::choose_in_block`] |
//! | expire | held → free | [`Ports::expire_holds`] |
//!
//! A held port stays set in the pool's bitmap, so nobody else is given it; the hold list says
//! whose it is. The part never sees a binding's table entry: the server tells it what a freed
//! binding held ([`FreedBinding`]) and which address a subscriber is anchored to.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Nonce, Protocol, ResultCode};
use rand::RngCore;

use crate::blocks::{BlockTable, PortBlock};
use crate::hold::{HeldPort, HoldDown, HoldOwner};
use crate::pool::{NatPool, PortRequest, preferred_index, proto_index};
use crate::table::FreedBinding;

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

/// The external ports: the pool, hold-down, dynamic port blocks and the port-choice RNG.
pub(crate) struct Ports {
    pool: NatPool,
    holds: HoldDown,
    blocks: BlockTable,
    rng: Box<dyn RngCore + Send>,
}

impl Ports {
    /// All ports of `pool` free, nothing held, no block assigned; ports drawn from `rng`.
    pub fn new(pool: NatPool, rng: Box<dyn RngCore + Send>) -> Ports {
        Ports {
            pool,
            holds: HoldDown::default(),
            blocks: BlockTable::default(),
            rng,
        }
    }

    /// The pool, read-only (addresses, port usage, anchors).
    pub fn pool(&self) -> &NatPool {
        &self.pool
    }

    /// Number of held ports.
    pub fn held(&self) -> usize {
        self.holds.len()
    }

    /// True when a port is held (the server then has something to expire).
    pub fn has_holds(&self) -> bool {
        !self.holds.is_empty()
    }

    /// Replaces the pool (renumbering): every port of the new pool is free, and the old
    /// pool's holds and blocks are dropped with it.
    pub fn replace_pool(&mut self, pool: NatPool) {
        self.pool = pool;
        self.blocks = BlockTable::default();
        self.holds.clear();
    }

    /// Takes a specific port (free → bound); false if it is not free or not allocatable.
    pub fn take(&mut self, index: u16, proto: usize, port: u16) -> bool {
        self.pool.take(index, proto, port)
    }

    /// Frees a bound port at once (no hold-down).
    pub fn release(&mut self, index: u16, proto: usize, port: u16) {
        self.pool.release(index, proto, port)
    }

    /// Picks and takes a random free port on `index` ([`NatPool::allocate`]).
    pub fn allocate(&mut self, index: u16, req: PortRequest) -> Option<u16> {
        self.pool.allocate(index, req, &mut *self.rng)
    }

    /// Picks and takes a random free port in `lo..=hi` on `index` ([`NatPool::allocate_in`]).
    pub fn allocate_in(
        &mut self,
        index: u16,
        proto: usize,
        internal_port: u16,
        lo: u16,
        hi: u16,
    ) -> Option<u16> {
        self.pool
            .allocate_in(index, proto, internal_port, lo, hi, &mut *self.rng)
    }

    /// Takes `n` consecutive free ports on `index` ([`NatPool::allocate_run`]).
    pub fn allocate_run(
        &mut self,
        index: u16,
        req: PortRequest,
        n: u16,
        parity: Option<u16>,
        within: Option<(u16, u16)>,
    ) -> Option<u16> {
        self.pool
            .allocate_run(index, req, n, parity, within, &mut *self.rng)
    }

    /// The external port a freed binding held.
    pub fn held_port(f: &FreedBinding) -> HeldPort {
        let proto = proto_index(Protocol(f.internal.protocol)).unwrap_or(0);
        HeldPort {
            proto: proto as u8,
            addr: f.addr_index,
            port: f.external.port,
        }
    }

    /// Releases the external port of a freed binding, or holds it for its owner (the same
    /// internal endpoint and nonce) until `now_s + hold_secs` (RFC 6888 REQ-8, RFC 6887 §15);
    /// `hold_secs` 0 frees it at once. An all-protocol binding holds no port: its address
    /// goes back to the shared pool ([`crate::dmz`]).
    pub fn release_or_hold(&mut self, f: &FreedBinding, now_s: u32, hold_secs: u32) {
        if f.internal.protocol == Protocol::ALL.0 {
            self.pool.set_dedicated(f.addr_index, false);
            return;
        }
        let held = Self::held_port(f);
        if hold_secs == 0 {
            self.pool
                .release(held.addr, usize::from(held.proto), held.port);
        } else {
            self.holds.hold(
                held,
                HoldOwner {
                    proto: held.proto,
                    realm: f.internal.realm,
                    addr: f.internal.addr,
                    port: f.internal.port,
                    nonce: f.nonce,
                },
                now_s.saturating_add(hold_secs),
            );
        }
    }

    /// Frees the holds that ended at or before `now_s`, and the oldest beyond `max` held.
    pub fn expire_holds(&mut self, now_s: u32, max: usize) {
        let pool = &mut self.pool;
        self.holds.expire(now_s, max, |h| {
            pool.release(h.addr, usize::from(h.proto), h.port)
        });
    }

    /// Dedicates an address to one subscriber (all-protocol MAP), or gives it back.
    pub fn set_dedicated(&mut self, index: u16, dedicated: bool) {
        self.pool.set_dedicated(index, dedicated);
    }

    /// Gives every dedicated address back (state loss).
    pub fn clear_dedicated(&mut self) {
        self.pool.clear_dedicated();
    }

    /// Adjusts the anchored-subscriber count of an address (paired pooling).
    pub fn anchor_delta(&mut self, index: u16, delta: i32) {
        self.pool.anchor_delta(index, delta);
    }

    /// The shared address a subscriber without an anchor lands on: from its preferred
    /// address on ([`preferred_index`]), the first one not dedicated to another subscriber
    /// with a free `proto` port.
    pub fn shared_address_for(
        &self,
        realm: u16,
        subscriber: Ipv4Addr,
        proto: usize,
    ) -> Option<u16> {
        let n = self.pool.len();
        let start = preferred_index(subscriber, realm, n);
        (0..n)
            .map(|i| ((start + i) % n) as u16)
            .find(|i| !self.pool.is_dedicated(*i) && self.pool.free_ports(*i, proto) > 0)
    }

    /// The dynamic block assigned to the subscriber, if any.
    pub fn assigned_block(&self, realm: u16, subscriber: Ipv4Addr) -> Option<PortBlock> {
        self.blocks.get(realm, subscriber)
    }

    /// True if block `number` on address `addr_index` is assigned to someone.
    pub fn is_block_taken(&self, addr_index: u16, number: u16) -> bool {
        self.blocks.is_taken(addr_index, number)
    }

    /// Assigns `block` to the subscriber; true if it had none before (then it is logged).
    pub fn assign_block(&mut self, realm: u16, subscriber: Ipv4Addr, block: PortBlock) -> bool {
        self.blocks.assign(realm, subscriber, block)
    }

    /// Takes the subscriber's dynamic block back, returning it.
    pub fn release_block(&mut self, realm: u16, subscriber: Ipv4Addr) -> Option<PortBlock> {
        self.blocks.release(realm, subscriber)
    }

    /// Forgets every dynamic block (state loss).
    pub fn clear_blocks(&mut self) {
        self.blocks = BlockTable::default();
    }

    /// Takes back the port `owner` held, if that is what the request may have now; a held
    /// port that does not fit is freed after all. `fits` says whether the held port may be
    /// used.
    fn reclaim(&mut self, owner: &HoldOwner, fits: impl Fn(&HeldPort) -> bool) -> Option<u16> {
        let held = self.holds.reclaim(owner)?;
        if fits(&held) {
            return Some(held.port);
        }
        // Not what is asked for now: let the port go after all.
        self.pool
            .release(held.addr, usize::from(held.proto), held.port);
        None
    }

    /// Chooses and takes an external endpoint for `req` on the shared pool (no port blocks).
    /// `anchored` is the subscriber's anchor address, if it has one. `Err(CANNOT_PROVIDE_EXTERNAL)`
    /// when `exact` and the suggestion cannot be honoured; `Err(NO_RESOURCES)` when the anchor
    /// is full. Nothing changes on error.
    pub fn choose(
        &mut self,
        req: &BindingRequest,
        proto: usize,
        anchored: Option<u16>,
    ) -> Result<Chosen, ResultCode> {
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
                .shared_address_for(req.realm, req.subscriber, proto)
                .ok_or(ResultCode::NoResources)?,
        };
        let addr = self
            .pool
            .address(addr_index)
            .map(|a| a.addr)
            .ok_or(ResultCode::NoResources)?;
        // The same internal endpoint and nonce may take back its held port (RFC 6887 §15).
        let owner = hold_owner(req, proto);
        let reclaimed = self.reclaim(&owner, |held| {
            held.addr == addr_index && (req.suggested_port == 0 || req.suggested_port == held.port)
        });
        if let Some(port) = reclaimed {
            return Ok(Chosen {
                addr_index,
                external: SocketAddrV4::new(addr, port),
            });
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
            .allocate(
                addr_index,
                PortRequest {
                    proto,
                    internal_port: req.internal_port,
                },
            )
            .ok_or(ResultCode::NoResources)?;
        Ok(Chosen {
            addr_index,
            external: SocketAddrV4::new(addr, port),
        })
    }

    /// [`Ports::choose`] with Port Block Allocation: the subscriber's address and block only.
    /// A suggestion outside them cannot be honoured (CANNOT_PROVIDE_EXTERNAL with `exact`,
    /// else another port of the block); a full block is USER_EX_QUOTA. The caller records
    /// the block as the subscriber's once this succeeds.
    pub fn choose_in_block(
        &mut self,
        req: &BindingRequest,
        proto: usize,
        block: PortBlock,
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
        let owner = hold_owner(req, proto);
        let mut chosen = self.reclaim(&owner, |held| {
            held.addr == addr_index
                && block.contains(held.port)
                && (req.suggested_port == 0 || req.suggested_port == held.port)
        });
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
                .allocate_in(
                    addr_index,
                    proto,
                    req.internal_port,
                    block.first,
                    block.last,
                )
                .ok_or(ResultCode::UserExQuota)?,
        };
        Ok(Chosen {
            addr_index,
            external: SocketAddrV4::new(addr, port),
        })
    }
}

/// Who may reclaim a held port for `req`: its internal endpoint and nonce.
fn hold_owner(req: &BindingRequest, proto: usize) -> HoldOwner {
    HoldOwner {
        proto: proto as u8,
        realm: req.realm,
        addr: req.subscriber,
        port: req.internal_port,
        nonce: req.nonce,
    }
}
