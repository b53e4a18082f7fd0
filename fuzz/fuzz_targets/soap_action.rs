//! Fuzzes the SOAP/action layer of upnp-iwf: the first line of the input is the SOAPAction
//! header, the rest the body. The header parser, the strict and lenient body parsers, and the
//! full action dispatch against the in-memory backend (IGD:1 and IGD:2 rules) must never
//! panic; every answer is either a response that parses back or a fault with a UPnP code.
//! The GENA header parsers and the Host guard get the same bytes.
#![no_main]

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use upnp_iwf::actions::{Context, Igd, LinkInfo};
use upnp_iwf::description::{DeviceIdentity, IgdVersion};
use upnp_iwf::mapping::MemoryBackend;
use upnp_iwf::policy::{Ipv4Prefix, Policy};
use upnp_iwf::soap::{self, SoapAction};
use upnp_iwf::{gena, http};

fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = TaskContext::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or(&[]);
    let _ = gena::parse_callbacks(&header);
    let _ = gena::granted_timeout(Some(&header));
    let _ = http::host_is_ip_literal(&header);
    let action = SoapAction::parse(&header)
        .map(|a| a.action)
        .unwrap_or_else(|| "AddPortMapping".to_owned());
    let Ok(req) = soap::parse_request(body) else {
        return;
    };
    let now = Instant::now();
    let igd = Igd {
        backend: Arc::new(MemoryBackend::new(
            now,
            Some(Ipv4Addr::new(198, 51, 100, 1)),
            Some(8),
        )),
        policy: Policy {
            lan: vec![Ipv4Prefix::new(Ipv4Addr::new(192, 168, 0, 0), 24)],
            ..Policy::default()
        }
        .into(),
        identity: DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001"),
        link: LinkInfo::default(),
    };
    for version in [IgdVersion::V1, IgdVersion::V2] {
        let ctx = Context {
            caller: Ipv4Addr::new(192, 168, 0, 10),
            version,
            now,
        };
        for name in [action.as_str(), req.action.as_str()] {
            match ready(igd.handle(&ctx, name, &req)) {
                Some(Ok(outs)) => {
                    let xml = soap::response("urn:x", name, &outs);
                    assert!(
                        soap::parse_request(xml.as_bytes()).is_ok(),
                        "own response parses"
                    );
                }
                Some(Err(e)) => assert!(e.code() >= 401),
                None => panic!("in-memory backend never waits"),
            }
        }
    }
});
