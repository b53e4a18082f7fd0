//! Raw-socket checks of the HTTP side (upnp-igd.md §10 Description and SOAP lines that real
//! clients do not reach), against an in-process daemon on 127.0.0.1.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::*;
use upnp_iwf::policy::Ipv4Prefix;

fn status(resp: &str) -> &str {
    resp.split("\r\n").next().unwrap_or("")
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

// Checklist: GET LOCATION → 200, text/xml; charset="utf-8", Content-Length, no BOM;
// Title-Case header names on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_description_is_served_with_exact_headers() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let r = raw_http(
        a,
        format!("GET /rootDesc.xml HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert!(
        r.contains("\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"),
        "{r}"
    );
    assert!(r.contains("\r\nContent-Length: "), "{r}");
    assert!(r.contains("\r\nServer: Linux/"), "{r}");
    assert!(body(&r).starts_with("<?xml version=\"1.0\"?>"));
    assert!(body(&r).contains("urn:schemas-upnp-org:device:InternetGatewayDevice:2"));
    assert!(body(&r).contains(&format!("<presentationURL>http://{a}/</presentationURL>")));
    let len: usize = header(&r, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("length");
    assert_eq!(len, body(&r).len());
    // Paths are matched case-insensitively (buggy clients changed the case).
    let r = raw_http(
        a,
        format!("GET /ROOTDESC.XML HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    d.stop().await;
}

// Checklist: Microsoft/FDSSDP user agents get IGD:1 without v2-only actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_user_agent_gets_igd1_descriptions() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    for ua in ["Microsoft-Windows/10.0 UPnP/1.0", "FDSSDP"] {
        let r = raw_http(
            a,
            format!("GET /rootDesc.xml HTTP/1.1\r\nHost: {a}\r\nUser-Agent: {ua}\r\n\r\n")
                .as_bytes(),
        );
        assert!(body(&r).contains("InternetGatewayDevice:1<"), "{r}");
        assert!(!body(&r).contains(":2<"), "{r}");
        let r = raw_http(
            a,
            format!("GET /WANIPCn.xml HTTP/1.1\r\nHost: {a}\r\nUser-Agent: {ua}\r\n\r\n")
                .as_bytes(),
        );
        assert!(body(&r).contains("<name>AddPortMapping</name>"));
        assert!(!body(&r).contains("AddAnyPortMapping"));
    }
    d.stop().await;
}

// Checklist: unknown path → 404; GET on a control URL → 405 Allow: POST; GET on an event URL
// → 405; Host: evil.example → refused; unknown method → 501.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_paths_methods_and_hosts_are_refused() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let get = |path: &str, host: &str| {
        raw_http(
            a,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
    };
    assert_eq!(
        status(&get("/nothing", &a.to_string())),
        "HTTP/1.1 404 Not Found"
    );
    let r = get("/ctl/IPConn", &a.to_string());
    assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(header(&r, "allow"), Some("POST"));
    let r = get("/evt/IPConn", &a.to_string());
    assert_eq!(header(&r, "allow"), Some("SUBSCRIBE, UNSUBSCRIBE"));
    assert_eq!(
        status(&get("/rootDesc.xml", "evil.example")),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        status(&get("/rootDesc.xml", "evil.example:5000")),
        "HTTP/1.1 403 Forbidden"
    );
    let r = raw_http(
        a,
        format!("DELETE /rootDesc.xml HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&r), "HTTP/1.1 501 Not Implemented");
    d.stop().await;
}

// Checklist: SOAPAction / Soapaction / SOAPACTION spellings; ", ' and unquoted values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soapaction_spellings_and_quoting_are_accepted() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let ns = "urn:schemas-upnp-org:service:WANIPConnection:2";
    let body_xml = envelope(ns, "GetExternalIPAddress", &[]);
    for h in ["SOAPAction", "Soapaction", "SOAPACTION"] {
        for v in [
            format!("\"{ns}#GetExternalIPAddress\""),
            format!("'{ns}#GetExternalIPAddress'"),
            format!("{ns}#GetExternalIPAddress"),
        ] {
            let r = raw_http(a, &soap_request(a, "/ctl/IPConn", h, &v, &body_xml));
            assert_eq!(status(&r), "HTTP/1.1 200 OK", "{h}: {v}\n{r}");
            assert!(r.contains("<NewExternalIPAddress>198.51.100.1</NewExternalIPAddress>"));
            assert!(
                r.contains("\r\nExt: \r\n") || r.contains("\r\nExt:\r\n"),
                "{r}"
            );
        }
    }
    d.stop().await;
}

// Checklist: a WANIPConnection:1#AddPortMapping to the :2 service succeeds and the response
// uses the :1 namespace; any control URL accepts any action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_namespace_is_echoed_and_any_control_url_works() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let ns1 = "urn:schemas-upnp-org:service:WANIPConnection:1";
    let body_xml = envelope(ns1, "AddPortMapping", &add_args("5555", "UDP", "60"));
    let r = raw_http(
        a,
        &soap_request(
            a,
            "/ctl/IPConn",
            "SOAPAction",
            &format!("\"{ns1}#AddPortMapping\""),
            &body_xml,
        ),
    );
    assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
    assert!(
        r.contains(&format!("<u:AddPortMappingResponse xmlns:u=\"{ns1}\">")),
        "{r}"
    );
    let cfg = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1";
    let r = raw_http(
        a,
        &soap_request(
            a,
            "/ctl/IPConn",
            "SOAPAction",
            &format!("\"{cfg}#GetCommonLinkProperties\""),
            &envelope(cfg, "GetCommonLinkProperties", &[]),
        ),
    );
    assert!(
        r.contains("<NewWANAccessType>Ethernet</NewWANAccessType>"),
        "{r}"
    );
    d.stop().await;
}

// Checklist: missing SOAPAction → 400; unknown action → 500 + 401; fault body and type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_soapaction_is_400_and_unknown_action_is_fault_401() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let b = envelope("x", "GetExternalIPAddress", &[]);
    let req = format!(
        "POST /ctl/IPConn HTTP/1.1\r\nHost: {a}\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    assert_eq!(
        status(&raw_http(a, req.as_bytes())),
        "HTTP/1.1 400 Bad Request"
    );
    let r = call(a, "Reboot", &[]);
    assert_eq!(status(&r), "HTTP/1.1 500 Internal Server Error");
    assert!(r.contains("\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"));
    assert!(r.contains("<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>"));
    assert!(
        r.contains("<errorCode>401</errorCode><errorDescription>Invalid Action</errorDescription>"),
        "{r}"
    );
    let r = call(
        a,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "0")],
    );
    assert!(r.contains("<errorCode>713</errorCode>"), "{r}");
    d.stop().await;
}

// Checklist: HTTP/1.0 request → HTTP/1.0 response with Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_gets_http10_response_with_content_length() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let r = raw_http(a, b"GET /rootDesc.xml HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    assert!(header(&r, "content-length").is_some());
    assert!(header(&r, "transfer-encoding").is_none());
    d.stop().await;
}

// Checklist: Expect: 100-continue completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_completes() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let ns = "urn:schemas-upnp-org:service:WANIPConnection:2";
    let b = envelope(ns, "GetStatusInfo", &[]);
    let r = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
        write!(s, "POST /ctl/IPConn HTTP/1.1\r\nHost: {a}\r\nSOAPAction: \"{ns}#GetStatusInfo\"\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", b.len()).expect("head");
        let mut first = [0u8; 25];
        std::io::Read::read_exact(&mut s, &mut first).expect("100 Continue");
        let first = String::from_utf8_lossy(&first).into_owned();
        s.write_all(b.as_bytes()).expect("body");
        (first, read_all(&mut s))
    })
    .await
    .expect("join");
    assert!(r.0.starts_with("HTTP/1.1 100 Continue"), "{}", r.0);
    assert!(
        r.1.contains("<NewConnectionStatus>Connected</NewConnectionStatus>"),
        "{}",
        r.1
    );
    d.stop().await;
}

// Checklist: a client that half-closes (SHUT_WR) after its request still gets the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_still_receives_the_response() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let req = soap_request(
        a,
        "/ctl/IPConn",
        "SOAPAction",
        "\"urn:schemas-upnp-org:service:WANIPConnection:2#GetExternalIPAddress\"",
        &envelope(
            "urn:schemas-upnp-org:service:WANIPConnection:2",
            "GetExternalIPAddress",
            &[],
        ),
    );
    let r = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
        s.write_all(&req).expect("write");
        s.shutdown(Shutdown::Write).expect("SHUT_WR");
        read_all(&mut s)
    })
    .await
    .expect("join");
    assert!(
        r.contains("<NewExternalIPAddress>198.51.100.1</NewExternalIPAddress>"),
        "{r}"
    );
    d.stop().await;
}

// Checklist: requests from non-LAN source addresses are refused (connection closed unanswered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_lan_peer_gets_no_answer() {
    let d = daemon(|c| c.lan[0].prefix_len = 32).await;
    let a = d.http_addrs[0];
    let r = tokio::task::spawn_blocking(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.bind(
            &"127.0.0.2:0"
                .parse::<std::net::SocketAddr>()
                .expect("addr")
                .into(),
        )
        .expect("bind 127.0.0.2");
        sock.connect(&a.into()).expect("connect");
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("t");
        let _ = s.write_all(format!("GET /rootDesc.xml HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes());
        read_all(&mut s)
    })
    .await
    .expect("join");
    assert_eq!(r, "", "no answer for a non-LAN peer");
    assert!(
        d.server
            .metrics
            .get("upnp_iwf_http_refused", "reason=\"not_lan\"")
            >= 1
    );
    // And the LAN prefix really is what is served: 127.0.0.1 still works.
    let ok = raw_http(
        a,
        format!("GET /rootDesc.xml HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&ok), "HTTP/1.1 200 OK");
    let _ = Ipv4Prefix::new(std::net::Ipv4Addr::LOCALHOST, 32);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_and_status_and_metrics_pages_answer() {
    let d = daemon(|_| {}).await;
    let a = d.http_addrs[0];
    let big = "x".repeat(upnp_iwf::http::MAX_BODY + 10);
    let r = raw_http(
        a,
        &soap_request(a, "/ctl/IPConn", "SOAPAction", "\"x#GetStatusInfo\"", &big),
    );
    assert_eq!(status(&r), "HTTP/1.1 413 Payload Too Large");
    call(a, "AddPortMapping", &add_args("4321", "TCP", "0"));
    let r = raw_http(a, format!("GET / HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes());
    assert!(r.contains("text/html"), "{r}");
    assert!(
        body(&r).contains("<td data-label=\"Internal\">127.0.0.1:4321</td>"),
        "{r}"
    );
    let r = raw_http(
        a,
        format!("GET /status.txt HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    assert!(
        body(&r).contains("TCP 127.0.0.1:4321 → - → 198.51.100.1:4321 local"),
        "{r}"
    );
    let r = raw_http(
        a,
        format!("GET /status.json HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    let v: serde_json::Value = serde_json::from_str(body(&r)).expect("status.json");
    assert_eq!(v["mappings"][0]["external_port"], 4321, "{r}");
    let r = raw_http(
        a,
        format!("GET /metrics HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    assert!(
        body(&r).contains("upnp_iwf_soap_actions_total{action=\"AddPortMapping\",result=\"ok\"} 1"),
        "{r}"
    );
    assert!(body(&r).contains("upnp_iwf_mappings 1"));
    d.stop().await;
}
