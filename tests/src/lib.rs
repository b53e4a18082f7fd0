//! The NAT444 network-namespace lab, the end-to-end tests and the `nat444-lab` demo.
//!
//! * [`lab`]: builds the namespaces of design.md §4 and runs commands in them;
//! * [`demo`]: what `nat444-lab demo` shows.

pub mod demo;
pub mod lab;
