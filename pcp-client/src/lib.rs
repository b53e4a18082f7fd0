//! `pcp_client`: a Port Control Protocol (RFC 6887) client library with NAT-PMP (RFC 6886)
//! fallback.
//!
//! Today the crate holds the wire codecs every other part of the workspace builds on:
//!
//! * [`wire`]: the complete RFC 6887 message and option codec (with RFC 7220 DESCRIPTION,
//!   RFC 7753 PORT_SET and RFC 7843 THIRD_PARTY_ID), in the smoltcp style: a typed view over a
//!   byte buffer plus plain `Repr` structs with `parse` and `emit`;
//! * [`natpmp`]: the RFC 6886 messages and the detector for a NAT-PMP "unsupported version"
//!   answer to a PCP request.
//!
//! The sans-IO client engine, the tokio client and `pcpc` are built on these.

pub mod natpmp;
pub mod wire;
