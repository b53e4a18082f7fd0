//! Issue #13 item 5 / "Done when": a burst of bad SSDP and HTTP input leaves a bounded number
//! of log lines. The real `upnp-iwf` binary on 127.0.0.1 (`--upstream none`), logging at
//! `info` to a file, gets 5 000 `ssdp:all` M-SEARCHes (half from one source, half from 250
//! loopback sources) and 400 bad SOAP requests (200 with a DTD, 200 unparsable). Its log then
//! holds a handful of lines per kind of warning and summary lines that account for the rest
//! ("… N more suppressed in the last 10 s"). Counts are asserted, never times.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::BinaryDaemon;

const SEARCHES: usize = 5000;
const DTD_REQUESTS: usize = 200;
const BAD_SOAP_REQUESTS: usize = 200;
/// Lines the daemon may write for the whole flood: five per kind of warning (SSDP over
/// budget, SSDP queue full, DTD, unparsable body, UPnP fault), one summary per kind, and the
/// shutdown lines. Without rate limiting it writes thousands.
const MAX_LINES: usize = 40;

fn post(addr: SocketAddr, body: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "POST /ctl/IPConn HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\n\
         SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

const DTD_BODY: &str = "<?xml version=\"1.0\"?><!DOCTYPE s [<!ENTITY e \"80\">]><s:Envelope \
    xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><u:AddPortMapping \
    xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\"><NewExternalPort>&e;</NewExternalPort>\
    </u:AddPortMapping></s:Body></s:Envelope>";

fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Number after `suppressed=` in a summary line.
fn suppressed(line: &str) -> u64 {
    line.split("suppressed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_burst_of_bad_ssdp_and_http_input_leaves_a_bounded_number_of_log_lines() {
    let log = std::env::temp_dir().join(format!("upnp-iwf-flood-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut daemon = BinaryDaemon::start("info", Some(file));
    let addr = daemon.http;
    daemon.wait_http();
    let before = lines_of(&log).len();

    // 5 000 searches: even ones from one source, odd ones from 127.0.1.1–250.
    let search = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";
    let to = daemon.ssdp;
    let one = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let many: Vec<UdpSocket> = (1..=250u8)
        .filter_map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 1, i], 0))).ok())
        .collect();
    assert!(!many.is_empty());
    for i in 0..SEARCHES {
        let s = if i % 2 == 0 {
            &one
        } else {
            &many[(i / 2) % many.len()]
        };
        let _ = s.send_to(search, to);
    }
    // Bad SOAP: a DTD (refused with 400 and a reason), and unparsable bodies (402 fault).
    for _ in 0..DTD_REQUESTS {
        let r = post(addr, DTD_BODY);
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        assert!(r.contains("DTD"), "{r}");
    }
    for _ in 0..BAD_SOAP_REQUESTS {
        let r = post(addr, "<s:Envelope><s:Body></s:Envelope>");
        assert!(r.starts_with("HTTP/1.1 500"), "{r}");
    }
    // SIGTERM: the daemon writes the summaries still pending and exits.
    let pid = daemon.pid().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "daemon did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = lines_of(&log);
    let flood = &lines[before.min(lines.len())..];
    let _ = std::fs::remove_file(&log);
    println!("{} lines for the flood:\n{}", flood.len(), flood.join("\n"));
    assert!(
        flood.len() <= MAX_LINES,
        "{} log lines for one burst (at most {MAX_LINES}):\n{}",
        flood.len(),
        flood.join("\n")
    );
    // Every DTD request is accounted for: logged, or counted in a summary.
    let dtd_logged = flood
        .iter()
        .filter(|l| l.contains("SOAP body with a DTD refused"))
        .count() as u64;
    let dtd_summarised: u64 = flood
        .iter()
        .filter(|l| l.contains("more suppressed") && l.contains("kind=\"soap_dtd\""))
        .map(|l| suppressed(l))
        .sum();
    assert!(dtd_logged <= 5, "{dtd_logged}");
    assert_eq!(dtd_logged + dtd_summarised, DTD_REQUESTS as u64);
    // The one-source SSDP flood was cut to the answer budget and summarised.
    assert!(
        flood
            .iter()
            .any(|l| l.contains("more suppressed") && l.contains("kind=\"ssdp_rate_limited\"")),
        "no SSDP summary line"
    );
}
