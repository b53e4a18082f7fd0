//! Fuzzes the SSDP side of upnp-iwf: the datagram parser, the search-target grammar, and the
//! sans-IO responder fed the datagram as a LAN search (multicast and unicast), draining every
//! answer it schedules. Any panic is a bug; every answer must stay ≤ 1024 bytes and parse.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use upnp_iwf::description::{DeviceIdentity, IgdVersion};
use upnp_iwf::policy::Ipv4Prefix;
use upnp_iwf::ssdp::{self, SearchTarget, SsdpMessage};
use upnp_iwf::ssdp_engine::{EngineConfig, SsdpEngine};
use upnp_iwf::ssdp_reply::{MessageContext, server_string};

fuzz_target!(|data: &[u8]| {
    if let Ok(SsdpMessage::Search(s)) = ssdp::parse(data) {
        let _ = SearchTarget::parse(&s.st);
    }
    let mut engine = SsdpEngine::new(
        EngineConfig {
            identity: DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001"),
            version: IgdVersion::V2,
            context: MessageContext {
                location: "http://192.168.0.1:5000/rootDesc.xml".into(),
                server: server_string(),
                boot_id: 1,
                config_id: 1,
                max_age: 1800,
                port: 1900,
            },
            lan: vec![Ipv4Prefix::new(std::net::Ipv4Addr::new(192, 168, 0, 0), 24)],
            notify_interval: Duration::from_secs(900),
            revoke_first: false,
        },
        1,
    );
    let now = Instant::now();
    let from = "192.168.0.10:1900".parse().expect("constant address");
    engine.handle(now, from, true, data);
    engine.handle(now, from, false, data);
    let later = now + Duration::from_secs(10);
    while let Some(t) = engine.poll_transmit(later) {
        assert!(t.payload.len() <= 1024, "oversized SSDP answer");
        assert!(matches!(ssdp::parse(&t.payload), Ok(SsdpMessage::Response)));
    }
});
