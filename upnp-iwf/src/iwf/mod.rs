//! The UPnP IGD → PCP interworking function (RFC 6970) for a NAT444 home router.
//!
//! [`Core`] is sans-IO (quinn-proto shape): requests from the LAN front-ends, PCP datagrams,
//! NAT1 results and `now` go in; PCP transmits, NAT1 commands, replies, state writes and
//! events come out. It owns the mapping table, where every mapping has a [`Phase`]
//! (reserving NAT1 → PCP in flight → active → renewing → recovering → deleting → removing
//! NAT1), so concurrent requests for one port see one consistent table, and it drives a
//! [`pcp_client::client::Engine`] for the PCP side (retransmission, renewals, epoch,
//! ANNOUNCE, nonces). [`driver`] is the thin tokio driver: one UDP socket to the PCP server,
//! the ANNOUNCE listener on the WAN, the NAT1 backend on a blocking thread, the state file,
//! and [`driver::PcpBackend`], the [`crate::mapping::PortMappingBackend`] the SOAP layer asks.
//!
//! The table is keyed by the UPnP mapping key and knows nothing of SOAP, so NAT-PMP and PCP
//! front-ends can feed the same core later.

mod core;
pub mod driver;
mod entry;

pub use self::core::{
    CREATE_GIVE_UP, Core, CoreConfig, CoreStats, DELETE_WAIT, INFINITE_LIFETIME, IwfEvent,
    NONCE_REUSE, Nat1Command, NatMode, ORPHAN_DELETE, Output, PROBE_EXTERNAL_PORT, PROBE_LIFETIME,
    Request, add_error, delete_error,
};
pub use entry::{Entry, Phase};
