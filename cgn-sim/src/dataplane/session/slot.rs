//! How a session is stored: a 32-byte slot, two to a cache line, and the flags in its binding
//! word that let the fast path use the session without reading the binding.

use std::net::SocketAddrV4;

use super::{Session, SessionKey, TcpState};
use crate::dataplane::flow_index::FlowKey;

/// The bits of [`Slot::binding`]: the binding's id in the low 29 bits, and what the session
/// knows about the binding without reading it.
pub(super) mod flags {
    /// The binding id.
    pub const ID: u32 = (1 << 29) - 1;
    /// The binding was freed or changed since the session was put on it (or is one the fast
    /// path does not take, a DMZ host's): its packets take the full path, which puts the
    /// session on the binding it finds. A stale session is on no binding's list.
    pub const STALE: u32 = 1 << 31;
    /// The binding has a THIRD_PARTY_ID realm: outbound packets take the full path, which
    /// looks up realm 0 (inbound ones may use the fast path).
    pub const NO_OUT: u32 = 1 << 30;
    /// The binding's implicit deadline is this session's deadline: the session was the last
    /// to write it and its deadline has not moved since, so an outbound packet that leaves
    /// the deadline where it is need not write the binding.
    pub const COVERED: u32 = 1 << 29;
}

/// A session as stored: 32 bytes, so two share a cache line and none straddles one.
/// `protocol == 0` marks a free slot.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct Slot {
    pub(super) internal_addr: u32,
    pub(super) remote_addr: u32,
    pub(super) external_addr: u32,
    pub(super) internal_port: u16,
    pub(super) remote_port: u16,
    pub(super) external_port: u16,
    pub(super) protocol: u8,
    pub(super) tcp: TcpState,
    pub(super) expires: u32,
    /// The deadline of this session's wheel entry.
    pub(super) scheduled: u32,
    /// The binding's id in the mapping table and the [`flags`] about it.
    pub(super) binding: u32,
}

pub(super) const FREE_SLOT: Slot = Slot {
    internal_addr: 0,
    remote_addr: 0,
    external_addr: 0,
    internal_port: 0,
    remote_port: 0,
    external_port: 0,
    protocol: 0,
    tcp: TcpState::Closed,
    expires: 0,
    scheduled: 0,
    binding: 0,
};

impl Slot {
    /// True for a live session.
    #[inline(always)]
    pub(super) fn is_live(&self) -> bool {
        self.protocol != 0
    }

    /// The mapping table's id of the binding.
    #[inline(always)]
    pub(super) fn binding_id(&self) -> u32 {
        self.binding & flags::ID
    }

    /// True while the session is on its binding's list (it has not gone stale).
    #[inline(always)]
    pub(super) fn is_linked(&self) -> bool {
        self.is_live() && self.binding & flags::STALE == 0
    }

    pub(super) fn out_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            addr: self.internal_addr,
            port: self.internal_port,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
        }
    }

    pub(super) fn in_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            addr: self.external_addr,
            port: self.external_port,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
        }
    }

    pub(super) fn key(&self) -> SessionKey {
        SessionKey {
            protocol: self.protocol,
            internal: SocketAddrV4::new(self.internal_addr.into(), self.internal_port),
            remote: SocketAddrV4::new(self.remote_addr.into(), self.remote_port),
        }
    }

    pub(super) fn external(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.external_addr.into(), self.external_port)
    }

    pub(super) fn session(&self) -> Session {
        Session {
            external: self.external(),
            binding: self.binding_id(),
            tcp: self.tcp,
            expires: self.expires,
        }
    }
}
