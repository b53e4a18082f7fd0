//! `upnp_iwf`: the UPnP IGD to PCP interworking function (RFC 6970) for a home router.
//!
//! It will hold SSDP, the HTTP/SOAP IGD, GENA, the interworking logic, the nftables backend
//! and durable state (see `design.md` §2). Today it holds only the command-line contract of
//! the daemon; the daemon refuses to start rather than pretend to serve.

pub mod cli;
