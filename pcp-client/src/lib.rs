//! `pcp_client`: a Port Control Protocol (RFC 6887) client library with NAT-PMP (RFC 6886)
//! fallback.
//!
//! * [`wire`]: the complete RFC 6887 message and option codec (with RFC 7220 DESCRIPTION,
//!   RFC 7753 PORT_SET and RFC 7843 THIRD_PARTY_ID), in the smoltcp style: a typed view over a
//!   byte buffer plus plain `Repr` structs with `parse` and `emit`;
//! * [`natpmp`]: the RFC 6886 messages and the detector for a NAT-PMP "unsupported version"
//!   answer to a PCP request;
//! * [`client`]: the sans-IO client engine (retransmission, renewal, epoch, ANNOUNCE,
//!   RFC 7488 failover, NAT-PMP fallback) with the clock and RNG injected;
//! * `Client` (feature `tokio`, on by default): the thin tokio driver over UDP sockets.

pub mod client;
pub mod natpmp;
pub mod prefix;
pub mod transport;
pub mod wire;

#[cfg(feature = "tokio")]
pub use client::{Announcement, Client, ClientConfig, ClientError, Mapping};

/// The README's examples, compiled by `cargo test --doc` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
