//! Bad input, bounded in count and time, against the real `upnp-iwf` binary on 127.0.0.1:
//! thousands of malformed and oversized HTTP requests and SSDP datagrams plus a crowd of
//! slow (slowloris) connections from another loopback address. Afterwards — and while the
//! slow connections are still open — a good request is answered quickly, and the daemon's
//! resident memory has stayed bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

mod common;

use common::BinaryDaemon;

const MALFORMED_HTTP: usize = 3000;
const MALFORMED_SSDP: usize = 5000;
const SLOW_CONNECTIONS: usize = 100;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn request(addr: SocketAddr, bytes: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(bytes);
    // Read one response (head + Content-Length body), or until the daemon closes.
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn good(addr: SocketAddr) -> (String, Duration) {
    let ns = "urn:schemas-upnp-org:service:WANIPConnection:1";
    let body = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><u:GetExternalIPAddress xmlns:u=\"{ns}\"/></s:Body></s:Envelope>"
    );
    let req = format!(
        "POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nSOAPAction: \"{ns}#GetExternalIPAddress\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    let r = request(addr, req.as_bytes());
    (r, t.elapsed())
}

fn malformed(i: usize, addr: SocketAddr) -> Vec<u8> {
    let big = "A".repeat(20_000);
    match i % 8 {
        0 => b"\x00\xff\xfe garbage\r\n\r\n".to_vec(),
        1 => format!("GET /{big} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
        2 => format!("GET / HTTP/1.1\r\nX-Big: {big}\r\n\r\n").into_bytes(),
        3 => format!("POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nSOAPAction: \"x#AddPortMapping\"\r\nContent-Length: 100000000\r\n\r\nshort").into_bytes(),
        4 => format!("POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nSOAPAction: \"x#AddPortMapping\"\r\nContent-Length: 30\r\n\r\n<a><Body><AddPortMapping><</a>").into_bytes(),
        5 => format!("SUBSCRIBE /evt/IPConn HTTP/1.1\r\nHost: {addr}\r\nCALLBACK: <http://{}/>\r\nNT: upnp:event\r\n\r\n", "9".repeat(300)).into_bytes(),
        6 => format!("POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nSOAPAction: {}\r\nContent-Length: 0\r\n\r\n", "#".repeat(500)).into_bytes(),
        _ => format!("POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nSOAPAction: \"x#AddPortMapping\"\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n").into_bytes(),
    }
}

#[test]
fn daemon_survives_malformed_floods_and_slow_connections() {
    let daemon = BinaryDaemon::start("warn", None);
    let pid = daemon.pid();
    let addr = daemon.http;
    let deadline = Instant::now() + Duration::from_secs(10);
    while good(addr).0.is_empty() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (warm, _) = good(addr);
    assert!(warm.contains("198.51.100.1"), "{warm}");
    let rss_before = rss_kib(pid);
    let started = Instant::now();

    // Slow connections from 127.0.0.2: a request line, then nothing.
    let mut slow = Vec::new();
    for _ in 0..SLOW_CONNECTIONS {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if sock
            .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .is_err()
        {
            break;
        }
        if sock
            .connect_timeout(&addr.into(), Duration::from_secs(1))
            .is_ok()
        {
            let mut s: TcpStream = sock.into();
            let _ = s.write_all(b"POST /ctl/IPConn HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            slow.push(s);
        }
    }

    // Malformed and oversized HTTP.
    for i in 0..MALFORMED_HTTP {
        let r = request(addr, &malformed(i, addr));
        if !r.is_empty() {
            assert!(r.starts_with("HTTP/1."), "{r}");
        }
    }
    // Malformed and oversized SSDP.
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let to = daemon.ssdp;
    for i in 0..MALFORMED_SSDP {
        let msg: Vec<u8> = match i % 4 {
            0 => vec![0xff; 3000],
            1 => format!(
                "M-SEARCH * HTTP/1.1\r\nST: {}\r\n\r\n",
                "x".repeat(i % 1400)
            )
            .into_bytes(),
            2 => b"M-SEARCH * HTTP/1.1\r\nno colon\r\n\r\n".to_vec(),
            _ => b"M-SEARCH * HTTP/1.1\r\nMX: 99999999999\r\nST: ssdp:all\r\n\r\n".to_vec(),
        };
        let _ = u.send_to(&msg, to);
    }

    // While the slow connections are still open, a good request is answered quickly.
    let (r, took) = good(addr);
    assert!(
        r.contains("<NewExternalIPAddress>198.51.100.1</NewExternalIPAddress>"),
        "{r}"
    );
    assert!(
        took < Duration::from_millis(500),
        "good request took {took:?}"
    );
    // And SSDP still answers.
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("t");
    let mut buf = [0u8; 2048];
    while u.recv_from(&mut buf).is_ok() {}
    u.send_to(b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nST: upnp:rootdevice\r\n\r\n", to).expect("send");
    let t = Instant::now();
    let (n, _) = u.recv_from(&mut buf).expect("SSDP answer after the flood");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    assert!(t.elapsed() < Duration::from_millis(500));

    let rss_after = rss_kib(pid);
    println!(
        "flood: {MALFORMED_HTTP} HTTP + {MALFORMED_SSDP} SSDP + {} slow in {:?}; good request {took:?}; RSS {rss_before} → {rss_after} KiB",
        slow.len(),
        started.elapsed()
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    drop(slow);
    assert!(daemon_alive(pid));
}

fn daemon_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
