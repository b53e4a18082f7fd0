//! The CGN dataplane: IPv4 packet translation over a TUN device.
//!
//! Everything but [`tun`] is sans-IO. [`rewrite`] classifies a packet into a flow and rewrites
//! its endpoints in place with incremental checksum updates; [`icmp`] builds the ICMP errors
//! the translator originates; [`session`] and [`fragment`] hold per-connection and
//! per-datagram state; [`translate::Translator`] ties them to the PCP server's mapping table,
//! pool and quotas, so implicit and PCP mappings share one external port space; [`bypass`]
//! names the destinations it leaves untranslated. [`tun`] is the device and the routing that
//! steer traffic through the translator.

pub mod bypass;
pub mod checksum;
pub mod fast;
pub mod flow_index;
pub mod fragment;
pub mod icmp;
pub mod ipv4;
pub mod rewrite;
pub mod session;
pub mod translate;
pub mod tun;

#[cfg(test)]
mod fast_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod translate_tests;
