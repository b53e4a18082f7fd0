//! Raw-socket checks of SSDP (unicast M-SEARCH to the daemon's SSDP socket on 127.0.0.1) and
//! of GENA with a callback listener on 127.0.0.1, per upnp-igd.md §10.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn msearch(st: &str, extra: &str) -> String {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: {st}\r\n{extra}\r\n"
    )
}

// Checklist: igd-next bytes, libtorrent bytes (3×CRLF), MX 10, no MX, unquoted MAN are all
// answered; the first reply leaves within 200 ms, from the SSDP socket, to the requester;
// LOCATION host is the interface's IPv4 literal; required headers present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_flavour_of_msearch_is_answered_quickly() {
    let d = daemon(|_| {}).await;
    let to = d.ssdp_addrs[0];
    let igd1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
    let variants = [
        format!("M-SEARCH * HTTP/1.1\r\nHost:239.255.255.250:1900\r\nST:{igd1}\r\nMan:\"ssdp:discover\"\r\nMX:3\r\n\r\n"),
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST:upnp:rootdevice\r\nMAN:\"ssdp:discover\"\r\nMX:3\r\n\r\n\r\n".to_owned(),
        format!("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 10\r\nST: {igd1}\r\nUSER-AGENT: syncthing/1.0\r\n\r\n"),
        format!("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: ssdp:discover\r\nST: {igd1}\r\n\r\n"),
    ];
    for v in variants {
        let replies = tokio::task::spawn_blocking({
            let v = v.clone();
            move || ssdp_exchange(to, &v, Duration::from_millis(400))
        })
        .await
        .expect("join");
        assert_eq!(replies.len(), 1, "one reply to {v:?}");
        let (from, msg, after) = &replies[0];
        assert_eq!(*from, to, "reply comes from the SSDP socket");
        assert!(*after < Duration::from_millis(200), "{after:?}");
        assert!(msg.starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(header(msg, "LOCATION"), Some(d.location().as_str()));
        for h in [
            "CACHE-CONTROL",
            "EXT",
            "SERVER",
            "ST",
            "USN",
            "BOOTID.UPNP.ORG",
            "CONFIGID.UPNP.ORG",
        ] {
            assert!(header(msg, h).is_some(), "{h} in {msg}");
        }
        assert!(msg.len() <= 1024);
    }
    d.stop().await;
}

// Checklist: ssdp:all completeness, rootdevice, uuid of an embedded device, version echo,
// WANIPConnection:1 → WANConnectionDevice UDN, :3 → nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_targets_get_exactly_the_right_answers() {
    let d = daemon(|_| {}).await;
    let to = d.ssdp_addrs[0];
    let id = d.server.igd.identity.clone();
    let ask = |st: String| {
        tokio::task::spawn_blocking(move || {
            ssdp_exchange(to, &msearch(&st, ""), Duration::from_millis(300))
        })
    };
    let all = ask("ssdp:all".into()).await.expect("join");
    assert_eq!(all.len(), 10);
    let sts: Vec<String> = all
        .iter()
        .map(|(_, m, _)| header(m, "ST").unwrap_or("").to_owned())
        .collect();
    assert!(sts.contains(&"urn:schemas-upnp-org:device:InternetGatewayDevice:2".to_owned()));
    let root = ask("upnp:rootdevice".into()).await.expect("join");
    assert_eq!(root.len(), 1);
    assert_eq!(
        header(&root[0].1, "USN"),
        Some(format!("{}::upnp:rootdevice", id.root_udn()).as_str())
    );
    let w = ask(id.wan_udn()).await.expect("join");
    assert_eq!(w.len(), 1);
    assert_eq!(header(&w[0].1, "USN"), Some(id.wan_udn().as_str()));
    let v1 = ask("urn:schemas-upnp-org:device:InternetGatewayDevice:1".into())
        .await
        .expect("join");
    assert_eq!(
        header(&v1[0].1, "ST"),
        Some("urn:schemas-upnp-org:device:InternetGatewayDevice:1")
    );
    let ip1 = ask("urn:schemas-upnp-org:service:WANIPConnection:1".into())
        .await
        .expect("join");
    assert_eq!(ip1.len(), 1);
    assert!(
        header(&ip1[0].1, "USN").is_some_and(|u| u.starts_with(&format!("{}::", id.conn_udn())))
    );
    assert!(
        ask("urn:schemas-upnp-org:device:InternetGatewayDevice:3".into())
            .await
            .expect("join")
            .is_empty()
    );
    d.stop().await;
}

// Checklist: SSDP from non-LAN sources and NOTIFY packets are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_lan_searches_and_notifies_get_no_answer() {
    let d = daemon(|c| c.lan[0].prefix_len = 32).await;
    let to = d.ssdp_addrs[0];
    let got = tokio::task::spawn_blocking(move || {
        let s = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("t");
        s.send_to(msearch("ssdp:all", "").as_bytes(), to)
            .expect("send");
        let mut buf = [0u8; 1500];
        s.recv_from(&mut buf).is_ok()
    })
    .await
    .expect("join");
    assert!(!got, "no answer to 127.0.0.2 when the LAN is 127.0.0.1/32");
    let notify = "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n";
    let r =
        tokio::task::spawn_blocking(move || ssdp_exchange(to, notify, Duration::from_millis(300)))
            .await
            .expect("join");
    assert!(r.is_empty());
    d.stop().await;
}

/// A NOTIFY listener on 127.0.0.1: returns its URL and a channel of (headers+body) received.
fn listener() -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(mut s) = s else { break };
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let text = read_all(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

fn gena_request(a: SocketAddr, method: &str, headers: &str) -> String {
    raw_http(
        a,
        format!("{method} /evt/IPConn HTTP/1.1\r\nHost: {a}\r\n{headers}Content-Length: 0\r\n\r\n")
            .as_bytes(),
    )
}

// Checklist: SUBSCRIBE → 200 SID/TIMEOUT; initial NOTIFY SEQ 0 with every evented variable;
// NOTIFY headers; a mapping change → SEQ 1 with PortMappingNumberOfEntries; renewal;
// unknown SID 412; SID+CALLBACK 400; UNSUBSCRIBE stops events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gena_subscribe_events_renew_and_unsubscribe() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let (cb, rx) = listener();
    let r = tokio::task::spawn_blocking(move || {
        gena_request(
            a,
            "SUBSCRIBE",
            &format!(
                "CALLBACK: <http://{cb}/events>\r\nNT: upnp:event\r\nTIMEOUT: Second-1800\r\n"
            ),
        )
    })
    .await
    .expect("join");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    let sid = header(&r, "SID").expect("SID").to_owned();
    assert!(sid.starts_with("uuid:"));
    assert_eq!(header(&r, "TIMEOUT"), Some("Second-1800"));
    let initial = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("initial event");
    assert!(
        initial.starts_with("NOTIFY /events HTTP/1.1\r\n"),
        "{initial}"
    );
    assert_eq!(header(&initial, "SEQ"), Some("0"));
    assert_eq!(header(&initial, "SID"), Some(sid.as_str()));
    assert_eq!(header(&initial, "NT"), Some("upnp:event"));
    assert_eq!(header(&initial, "NTS"), Some("upnp:propchange"));
    assert_eq!(
        header(&initial, "CONTENT-TYPE"),
        Some("text/xml; charset=\"utf-8\"")
    );
    for v in [
        "PossibleConnectionTypes",
        "ConnectionStatus",
        "ExternalIPAddress",
        "PortMappingNumberOfEntries",
        "SystemUpdateID",
    ] {
        assert!(initial.contains(&format!("<{v}>")), "{v} in {initial}");
    }
    let r = tokio::task::spawn_blocking(move || {
        call(a, "AddPortMapping", &add_args("3000", "UDP", "0"))
    })
    .await
    .expect("join");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let change = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("change event");
    assert_eq!(header(&change, "SEQ"), Some("1"));
    assert!(
        change.contains("<PortMappingNumberOfEntries>1</PortMappingNumberOfEntries>"),
        "{change}"
    );
    let s2 = sid.clone();
    let (renew, unknown, both) = tokio::task::spawn_blocking(move || {
        (
            gena_request(
                a,
                "SUBSCRIBE",
                &format!("SID: {s2}\r\nTIMEOUT: Second-infinite\r\n"),
            ),
            gena_request(
                a,
                "SUBSCRIBE",
                "SID: uuid:unknown\r\nTIMEOUT: Second-1800\r\n",
            ),
            gena_request(
                a,
                "SUBSCRIBE",
                &format!("SID: {s2}\r\nCALLBACK: <http://127.0.0.1:9/>\r\n"),
            ),
        )
    })
    .await
    .expect("join");
    assert!(renew.starts_with("HTTP/1.1 200"), "{renew}");
    assert_eq!(
        header(&renew, "TIMEOUT"),
        Some("Second-1800"),
        "infinite becomes finite"
    );
    assert!(unknown.starts_with("HTTP/1.1 412"), "{unknown}");
    assert!(both.starts_with("HTTP/1.1 400"), "{both}");
    let s3 = sid.clone();
    let un = tokio::task::spawn_blocking(move || {
        gena_request(a, "UNSUBSCRIBE", &format!("SID: {s3}\r\n"))
    })
    .await
    .expect("join");
    assert!(un.starts_with("HTTP/1.1 200"), "{un}");
    tokio::task::spawn_blocking(move || {
        call(
            a,
            "DeletePortMapping",
            &[
                ("NewRemoteHost", ""),
                ("NewExternalPort", "3000"),
                ("NewProtocol", "UDP"),
            ],
        )
    })
    .await
    .expect("join");
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "no NOTIFY after UNSUBSCRIBE"
    );
    d.stop().await;
}

// Checklist: CALLBACK host different from the subscriber's IP → 412 (CallStranger); a missing
// CALLBACK or wrong NT → 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callstranger_callbacks_are_refused() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let rs = tokio::task::spawn_blocking(move || {
        [
            gena_request(
                a,
                "SUBSCRIBE",
                "CALLBACK: <http://127.0.0.9:80/x>\r\nNT: upnp:event\r\n",
            ),
            gena_request(
                a,
                "SUBSCRIBE",
                "CALLBACK: <http://203.0.113.50:80/x>\r\nNT: upnp:event\r\n",
            ),
            gena_request(a, "SUBSCRIBE", "NT: upnp:event\r\n"),
            gena_request(
                a,
                "SUBSCRIBE",
                "CALLBACK: <http://127.0.0.1:80/x>\r\nNT: upnp:propchange\r\n",
            ),
        ]
    })
    .await
    .expect("join");
    for r in rs {
        assert!(r.starts_with("HTTP/1.1 412"), "{r}");
    }
    assert!(d.server.subs().is_empty());
    d.stop().await;
}

// GENA delivery never blocks requests: a callback that accepts and never answers does not
// slow down SOAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_callback_does_not_block_control_requests() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let stuck = TcpListener::bind("127.0.0.1:0").expect("bind");
    let cb = stuck.local_addr().expect("addr");
    let r = tokio::task::spawn_blocking(move || {
        gena_request(
            a,
            "SUBSCRIBE",
            &format!("CALLBACK: <http://{cb}/>\r\nNT: upnp:event\r\n"),
        )
    })
    .await
    .expect("join");
    assert!(r.starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    for p in 0..20 {
        let port = (20000 + p).to_string();
        let r = tokio::task::spawn_blocking(move || {
            call(a, "AddPortMapping", &add_args(&port, "TCP", "0"))
        })
        .await
        .expect("join");
        assert!(r.starts_with("HTTP/1.1 200"));
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let mut buf = [0u8; 1];
    drop(stuck.set_nonblocking(true));
    let _ = stuck.accept().map(|(mut s, _)| s.read(&mut buf));
    d.stop().await;
}

// Issue: NOTIFY on changes of ExternalIPAddress and ConnectionStatus, and on lease expiry
// (PortMappingNumberOfEntries drops without any request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_address_change_and_lease_expiry_are_evented() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let (cb, rx) = listener();
    let r = tokio::task::spawn_blocking(move || {
        gena_request(
            a,
            "SUBSCRIBE",
            &format!("CALLBACK: <http://{cb}/e>\r\nNT: upnp:event\r\n"),
        )
    })
    .await
    .expect("join");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let initial = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("initial event");
    assert!(initial.contains("<ExternalIPAddress>198.51.100.1</ExternalIPAddress>"));
    d.server
        .igd
        .backend
        .set_external_address(Instant::now(), None);
    let ev = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("address change event");
    assert_eq!(header(&ev, "SEQ"), Some("1"));
    assert!(
        ev.contains("<ExternalIPAddress></ExternalIPAddress>"),
        "{ev}"
    );
    assert!(
        ev.contains("<ConnectionStatus>Disconnected</ConnectionStatus>"),
        "{ev}"
    );
    d.server
        .igd
        .backend
        .set_external_address(Instant::now(), Some([198, 51, 100, 2].into()));
    let ev = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("address change event");
    assert!(
        ev.contains("<ExternalIPAddress>198.51.100.2</ExternalIPAddress>"),
        "{ev}"
    );
    // A 1-second IGD:2 lease: added, evented, then expired and evented again.
    let r = tokio::task::spawn_blocking(move || {
        call(a, "AddPortMapping", &add_args("3100", "TCP", "1"))
    })
    .await
    .expect("join");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let ev = rx.recv_timeout(Duration::from_secs(5)).expect("add event");
    assert!(
        ev.contains("<PortMappingNumberOfEntries>1</PortMappingNumberOfEntries>"),
        "{ev}"
    );
    let ev = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("expiry event");
    assert!(
        ev.contains("<PortMappingNumberOfEntries>0</PortMappingNumberOfEntries>"),
        "{ev}"
    );
    d.stop().await;
}
