//! One mapping of the interworking table: the UPnP view next to its upstream state (NAT1
//! port, PCP nonce and grant, last result) and the phase it is in (design §7).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use pcp_client::client::{ErrorCode, MappingId};
use pcp_client::wire::Nonce;

use crate::mapping::PortMapping;
use crate::nat1::Nat1Rule;
use crate::state::CreatedBy;

/// Where a mapping stands. Every request that meets a mapping reads its phase in the same
/// step as it acts, so nothing checks a condition, awaits, and acts on a stale answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The NAT1 rules are being installed (the WAN port is already reserved in the table).
    ReservingNat1,
    /// The first PCP MAP is out, unanswered.
    PcpInFlight,
    /// Granted upstream; renewed by the PCP engine until the UPnP lease ends.
    Active,
    /// A refresh (AddPortMapping over the CP's own entry) is in flight with the same nonce.
    Renewing,
    /// The PCP server lost it (restart, ANNOUNCE, expiry) or the IWF restarted: being
    /// re-created with the stored nonce, suggesting the previous external endpoint.
    Recovering,
    /// A PCP delete (lifetime 0, same nonce) is in flight.
    Deleting,
    /// The NAT1 rules are being removed (after the PCP delete, or as a rollback).
    RemovingNat1,
}

impl Phase {
    /// Whether the mapping exists for the IGD (listed, counted, answered by GetSpecific).
    pub fn visible(self) -> bool {
        matches!(self, Phase::Active | Phase::Renewing | Phase::Recovering)
    }

    /// Whether the mapping may exist at the PCP server (persisted, so a restart can renew
    /// or delete it with its nonce).
    pub fn durable(self) -> bool {
        matches!(
            self,
            Phase::Active | Phase::Renewing | Phase::Recovering | Phase::Deleting
        )
    }

    /// Lower-case name for logs and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::ReservingNat1 => "reserving-nat1",
            Phase::PcpInFlight => "pcp-in-flight",
            Phase::Active => "active",
            Phase::Renewing => "renewing",
            Phase::Recovering => "recovering",
            Phase::Deleting => "deleting",
            Phase::RemovingNat1 => "removing-nat1",
        }
    }
}

/// What to do once the NAT1 removal of an entry is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterRemoval {
    /// The entry was deleted on purpose: answer the waiter with success.
    Deleted,
    /// A create failed upstream: the waiter was already answered.
    RolledBack,
}

/// One mapping, as the core holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The UPnP view (key, internal client and port, description, lease, owner).
    pub mapping: PortMapping,
    /// Add or AddAny (decides PREFER_FAILURE).
    pub created_by: CreatedBy,
    /// The WAN port NAT1 maps to the client (the PCP MAP's internal port).
    pub nat1_port: u16,
    /// Phase.
    pub phase: Phase,
    /// The PCP engine's mapping, while there is one.
    pub pcp: Option<MappingId>,
    /// The mapping nonce (stored so a restart can renew or delete it).
    pub nonce: Option<Nonce>,
    /// The external endpoint last granted.
    pub external: Option<SocketAddrV4>,
    /// The PCP result of the last answer.
    pub last_result: Option<ErrorCode>,
    /// When the PCP grant runs out (from the engine).
    pub pcp_expires: Option<Instant>,
    /// How many times the mapping was re-created after state loss.
    pub restores: u32,
    /// Request waiting for this entry's create, refresh or delete.
    pub(crate) waiter: Option<u64>,
    /// What the pending NAT1 removal finishes.
    pub(crate) after_removal: Option<AfterRemoval>,
    /// While deleting: when to stop waiting for the PCP answer.
    pub(crate) deadline: Option<Instant>,
    /// The span of the request that made it (its PCP story is logged inside it).
    pub(crate) span: tracing::Span,
}

impl Entry {
    /// The NAT1 rule pair of this entry.
    pub fn nat1_rule(&self) -> Nat1Rule {
        Nat1Rule {
            protocol: self.mapping.key.protocol,
            wan_port: self.nat1_port,
            client: self.mapping.internal_client,
            client_port: self.mapping.internal_port,
        }
    }

    /// The LAN host the mapping is for.
    pub fn client(&self) -> Ipv4Addr {
        self.mapping.internal_client
    }
}
