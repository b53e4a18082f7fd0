//! The CPE's own NAT ("NAT1"): for each UPnP port mapping, a DNAT of `WAN:wan_port` to the LAN
//! client `client:client_port` and the SNAT that makes the client's outbound flows from
//! `client_port` leave as `WAN:wan_port` (spec `nat1-nftables.md`, "The two rules a mapping
//! needs").
//!
//! The interworking core drives a [`Nat1Backend`]; this module holds the trait and its three
//! implementations:
//! * [`Nftables`] (`--nat nftables`), the kernel NAT of the home router, in a table of its own;
//! * [`NoNat`] (`--nat none`), which does nothing (a CPE without a local NAT, or tests);
//! * [`RecordingNat`], in memory, recording every call, with injectable failures, for tests of
//!   the core.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use upnp_iwf::mapping::Protocol;
//! use upnp_iwf::nat1::{Nat1Backend, Nat1Error, Nat1Rule, RecordingNat, WanSide};
//!
//! let mut nat = RecordingNat::new();
//! let wan = WanSide { iface: "wan0".into(), address: Ipv4Addr::new(100, 64, 0, 2) };
//! nat.reset(&wan, &[]).expect("in memory");
//! let rule = Nat1Rule {
//!     protocol: Protocol::Udp,
//!     wan_port: 40000,
//!     client: Ipv4Addr::new(192, 168, 0, 10),
//!     client_port: 5000,
//! };
//! nat.install(&rule).expect("in memory");
//! assert_eq!(nat.installed().expect("in memory"), vec![rule]);
//!
//! // A port the router already forwards elsewhere is refused (UPnP 729).
//! nat.fail_on(Protocol::Tcp, 5000, Nat1Error::ConflictWithOtherMechanisms {
//!     protocol: Protocol::Tcp, wan_port: 5000, table: "inet fw4".into(),
//! });
//! let tcp = Nat1Rule { protocol: Protocol::Tcp, wan_port: 5000, ..rule };
//! assert!(matches!(nat.install(&tcp), Err(Nat1Error::ConflictWithOtherMechanisms { .. })));
//! ```

mod batch;
mod command;
mod conflict;
mod conntrack;
mod monitor;
mod nft;
mod recording;

use std::net::Ipv4Addr;

use crate::mapping::Protocol;

pub use batch::{RULE_COMMENT_PREFIX, parse_comment, rule_comment};
pub use conflict::find_conflict;
pub use conntrack::StaleFlows;
pub use nft::{DEFAULT_TABLE, NftConfig, Nftables, POSTROUTING_PRIORITY, PREROUTING_PRIORITY};
pub use recording::{Nat1Call, RecordingNat};

/// One NAT1 mapping: inbound `WAN:wan_port` -> `client:client_port`, outbound
/// `client:client_port` -> `WAN:wan_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nat1Rule {
    /// Transport protocol of both rules.
    pub protocol: Protocol,
    /// The CPE's WAN port (P1) the CGN mapping points at.
    pub wan_port: u16,
    /// The LAN client's address.
    pub client: Ipv4Addr,
    /// The LAN client's port.
    pub client_port: u16,
}

impl std::fmt::Display for Nat1Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} WAN:{} <-> {}:{}",
            self.protocol.as_str(),
            self.wan_port,
            self.client,
            self.client_port
        )
    }
}

/// The CPE's WAN side: the interface the rules match (`iifname`/`oifname`) and the address the
/// SNAT rewrites to. When the WAN address changes, [`Nat1Backend::reset`] rebuilds the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WanSide {
    /// WAN interface name, e.g. `wan0` (matched exactly).
    pub iface: String,
    /// The CPE's WAN address (100.64.0.2 in the lab).
    pub address: Ipv4Addr,
}

/// Why a NAT1 operation failed. In every case nothing was changed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nat1Error {
    /// Another table (the router's own port forward, another daemon) already DNATs this WAN
    /// port/protocol: the IGD answers UPnP 729 ConflictWithOtherMechanisms.
    #[error("{protocol:?} port {wan_port} is already forwarded by nftables table {table}")]
    ConflictWithOtherMechanisms {
        /// Protocol of the refused rule.
        protocol: Protocol,
        /// WAN port of the refused rule.
        wan_port: u16,
        /// The other table, as `family name` (e.g. `inet fw4`).
        table: String,
    },
    /// An installed rule of ours already uses this WAN port/protocol, or this client
    /// endpoint/protocol with another WAN port (its SNAT would be ambiguous).
    #[error("NAT1 rule {existing} already installed")]
    Duplicate {
        /// The installed rule in the way.
        existing: Nat1Rule,
    },
    /// `nft` (or `ip` for a namespace) is not installed or not executable.
    #[error("nftables unavailable: {0}")]
    Unavailable(String),
    /// `nft` refused the transaction, or its output could not be read (message from nft or
    /// the parser); nothing was changed.
    #[error("nft rejected the request: {0}")]
    Rejected(String),
    /// A rule was installed or removed before [`Nat1Backend::reset`] told the backend its WAN
    /// side.
    #[error("NAT1 backend used before reset() gave it the WAN side")]
    NotStarted,
}

/// The NAT1 backend the interworking core drives. Synchronous: the async driver calls it from
/// a blocking thread. Every method that changes rules is one atomic transaction; on error
/// nothing was changed.
pub trait Nat1Backend: Send + 'static {
    /// (Re)builds our own table from scratch with exactly `rules` in one transaction, matching
    /// `wan.iface` and translating to `wan.address`. Used at start to reconcile after a crash
    /// (stale rules cleared, stored ones re-adopted) and when the WAN address changes.
    fn reset(&mut self, wan: &WanSide, rules: &[Nat1Rule]) -> Result<(), Nat1Error>;
    /// Installs both rules of `rule` (idempotent for an identical rule). Checks other tables
    /// for a DNAT of the same WAN port first. The client's conntrack entries from
    /// `client:client_port` are then stale (its next packet must take the new SNAT): they are
    /// deleted by the [`StaleFlows`] of [`Nat1Backend::take_stale_flows`].
    fn install(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error>;
    /// Removes both rules of `rule` atomically (a rule not installed is not an error). The
    /// mapping's conntrack entries are then stale (inbound must stop at once): see
    /// [`Nat1Backend::take_stale_flows`].
    fn remove(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error>;
    /// The conntrack deletions the changes since the last call call for, to run after them
    /// (off the reply's path, without the backend); `None` when there are none.
    fn take_stale_flows(&mut self) -> Option<StaleFlows> {
        None
    }
    /// The mappings installed, read back from the kernel (status page, tests).
    fn installed(&mut self) -> Result<Vec<Nat1Rule>, Nat1Error>;
    /// Deletes our table (clean exit); never touches other tables.
    fn shutdown(&mut self) -> Result<(), Nat1Error>;
}

/// Backend `none`: installs nothing, always succeeds, and reports no rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNat;

impl Nat1Backend for NoNat {
    fn reset(&mut self, _wan: &WanSide, _rules: &[Nat1Rule]) -> Result<(), Nat1Error> {
        Ok(())
    }
    fn install(&mut self, _rule: &Nat1Rule) -> Result<(), Nat1Error> {
        Ok(())
    }
    fn remove(&mut self, _rule: &Nat1Rule) -> Result<(), Nat1Error> {
        Ok(())
    }
    fn installed(&mut self) -> Result<Vec<Nat1Rule>, Nat1Error> {
        Ok(Vec::new())
    }
    fn shutdown(&mut self) -> Result<(), Nat1Error> {
        Ok(())
    }
}

/// The rule in `rules` that `candidate` would clash with: same protocol and WAN port, or same
/// protocol and client endpoint (two SNATs for one source). An identical rule is no clash.
pub(crate) fn clash<'a>(
    rules: impl IntoIterator<Item = &'a Nat1Rule>,
    candidate: &Nat1Rule,
) -> Option<Nat1Rule> {
    rules
        .into_iter()
        .find(|r| {
            *r != candidate
                && r.protocol == candidate.protocol
                && (r.wan_port == candidate.wan_port
                    || (r.client == candidate.client && r.client_port == candidate.client_port))
        })
        .copied()
}
