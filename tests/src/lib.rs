//! The NAT444 network-namespace lab and end-to-end tests.

pub mod lab;
