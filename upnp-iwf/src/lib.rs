//! `upnp_iwf`: the UPnP IGD server of the home router and the UPnP IGD to PCP interworking
//! function (RFC 6970, [`iwf`]), with the router's own NAT on nftables ([`nat1`]) and durable
//! state ([`state`]).
//!
//! The LAN side is built from sans-IO parts driven by thin tokio/hyper drivers:
//! * [`ssdp`] parses SSDP, [`ssdp_reply`] builds the search answers and NOTIFY sets, and
//!   [`ssdp_engine`] schedules them (random delays, announcements, BOOTID/CONFIGID);
//! * [`description`] generates the IGD:1/IGD:2 device and service descriptions;
//! * [`soap`] reads and writes SOAP envelopes, [`actions`] validates and executes actions;
//! * [`gena`] keeps GENA subscriptions and builds NOTIFY messages;
//! * [`policy`] decides who may map what; [`mapping`] holds the [`mapping::PortMappingBackend`]
//!   trait the interworking function implements, and the in-memory backend;
//! * [`state`] persists the mappings in `--state-dir` across restarts (RFC 6970 §5.3);
//! * [`http`], [`ssdp_socket`], [`gena_delivery`] and [`daemon`] are the I/O drivers.
//!
//! ```
//! use upnp_iwf::soap::{SoapAction, parse_request};
//! let a = SoapAction::parse("\"urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress\"")
//!     .expect("valid header");
//! assert_eq!(a.action, "GetExternalIPAddress");
//! let body = parse_request(b"<s:Envelope><s:Body><u:GetExternalIPAddress/></s:Body></s:Envelope>")
//!     .expect("valid body");
//! assert_eq!(body.action, "GetExternalIPAddress");
//! ```

pub mod actions;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod description;
pub mod dhcp;
pub mod gena;
pub mod gena_delivery;
pub mod http;
pub mod iwf;
pub mod log_limit;
pub mod mapping;
pub mod metrics;
pub mod nat1;
pub mod policy;
pub mod sd_notify;
pub mod service_table;
pub mod soap;
pub mod source_limit;
pub mod ssdp;
pub mod ssdp_engine;
pub mod ssdp_reply;
pub mod ssdp_socket;
pub mod state;
pub mod status;
pub mod xml;
