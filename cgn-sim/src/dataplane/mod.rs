//! The CGN dataplane: IPv4 packet translation.
//!
//! This layer is sans-IO: functions over packets in caller buffers. [`rewrite`] classifies a
//! packet into a flow and rewrites its endpoints in place with incremental checksum updates;
//! [`icmp`] builds the ICMP errors the translator originates. The binding and session logic
//! that decides *what* to rewrite, and the TUN adapter, sit on top.

pub mod checksum;
pub mod icmp;
pub mod ipv4;
pub mod rewrite;

#[cfg(test)]
mod tests;
