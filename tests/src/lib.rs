//! The NAT444 network-namespace lab, the end-to-end tests and the `nat444-lab` demo.
//!
//! * [`lab`]: builds the namespaces of design.md §4 and runs commands in them;
//! * [`bins`]: finds the workspace's daemons and tools for the lab;
//! * [`demo`]: what `nat444-lab demo` shows;
//! * [`e2e`]: helpers the end-to-end tests share;
//! * [`scale`]: what `nat444-lab scale` runs (many subscribers behind one CGN).

pub mod bins;
pub mod demo;
pub mod e2e;
pub mod lab;
pub mod scale;
