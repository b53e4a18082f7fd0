//! `cgn_sim`: a carrier-grade NAT simulator for NAT444 labs.
//!
//! It will hold the PCP server engine, the NAT address pool, the mapping table, the packet
//! translator and the TUN adapter (see `design.md` §2). Today it holds only the command-line
//! contract of the daemon, so that the lab and the docs can be written against it; the
//! daemon refuses to start rather than pretend to serve.

pub mod cli;
