//! Benchmarks of the IGD: the sans-IO parts (SOAP parse, action dispatch on the in-memory
//! backend, SSDP search handling) and SOAP round trips over loopback TCP against an
//! in-process daemon, one connection per request with `Connection: close` as upnpc does.
//!
//! `cargo bench -p upnp-iwf --bench igd`

use std::future::Future;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use upnp_iwf::actions::{Context, Igd, LinkInfo};
use upnp_iwf::daemon::{self, DaemonConfig};
use upnp_iwf::description::{DeviceIdentity, IgdVersion};
use upnp_iwf::mapping::MemoryBackend;
use upnp_iwf::policy::{Ipv4Prefix, Policy};
use upnp_iwf::soap;
use upnp_iwf::ssdp_engine::{EngineConfig, SsdpEngine};
use upnp_iwf::ssdp_reply::{MessageContext, server_string};

const NS: &str = "urn:schemas-upnp-org:service:WANIPConnection:2";

fn body(action: &str, args: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} \
         xmlns:u=\"{NS}\">{args}</u:{action}></s:Body></s:Envelope>\r\n"
    )
}

fn add_body(client: &str) -> String {
    body(
        "AddPortMapping",
        &format!(
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>5000</NewExternalPort>\
             <NewProtocol>UDP</NewProtocol><NewInternalPort>5000</NewInternalPort>\
             <NewInternalClient>{client}</NewInternalClient><NewEnabled>1</NewEnabled>\
             <NewPortMappingDescription>bench</NewPortMappingDescription>\
             <NewLeaseDuration>3600</NewLeaseDuration>"
        ),
    )
}

fn del_body() -> String {
    body(
        "DeletePortMapping",
        "<NewRemoteHost></NewRemoteHost><NewExternalPort>5000</NewExternalPort><NewProtocol>UDP</NewProtocol>",
    )
}

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = TaskContext::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn sans_io(c: &mut Criterion) {
    let add = add_body("192.168.0.10");
    let del = del_body();
    let mut g = c.benchmark_group("sans_io");
    g.throughput(Throughput::Elements(1));
    g.bench_function("soap_parse_add_port_mapping", |b| {
        b.iter(|| soap::parse_request(black_box(add.as_bytes())))
    });
    let now = Instant::now();
    let igd = Igd {
        backend: Arc::new(MemoryBackend::new(
            now,
            Some(Ipv4Addr::new(198, 51, 100, 1)),
            None,
        )),
        policy: Policy {
            lan: vec![Ipv4Prefix::new(Ipv4Addr::new(192, 168, 0, 0), 24)],
            ..Policy::default()
        }
        .into(),
        identity: DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001"),
        link: LinkInfo::default(),
    };
    let ctx = Context {
        caller: Ipv4Addr::new(192, 168, 0, 10),
        version: IgdVersion::V2,
        now,
    };
    g.bench_function("dispatch_add_then_delete", |b| {
        b.iter(|| {
            let a = soap::parse_request(add.as_bytes()).expect("parses");
            ready(igd.handle(&ctx, "AddPortMapping", &a)).expect("added");
            let d = soap::parse_request(del.as_bytes()).expect("parses");
            ready(igd.handle(&ctx, "DeletePortMapping", &d)).expect("deleted");
        })
    });
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
            lan: vec![Ipv4Prefix::new(Ipv4Addr::new(192, 168, 0, 0), 24)],
            notify_interval: Duration::from_secs(900),
            revoke_first: false,
        },
        1,
    );
    let search = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";
    let from: SocketAddr = "192.168.0.10:1900".parse().expect("addr");
    g.bench_function("ssdp_search_igd1_answer", |b| {
        b.iter(|| {
            engine.handle(now, from, false, black_box(search));
            engine.poll_transmit(now).expect("answer")
        })
    });
    g.finish();
}

fn post(addr: SocketAddr, action: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
         SOAPAction: \"{NS}#{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let d = rt
        .block_on(daemon::start(DaemonConfig::loopback()))
        .expect("daemon");
    let addr = d.http_addrs[0];
    let add = add_body("127.0.0.1");
    let del = del_body();
    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Elements(2));
    g.bench_function("soap_add_delete_round_trips", |b| {
        b.iter(|| {
            let r = post(addr, "AddPortMapping", &add);
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            let r = post(addr, "DeletePortMapping", &del);
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        })
    });
    g.finish();
    rt.block_on(d.stop());
}

criterion_group!(benches, sans_io, loopback);
criterion_main!(benches);
