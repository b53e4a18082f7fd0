//! Helpers shared by the loopback integration tests: an in-process daemon on 127.0.0.1 with
//! ephemeral ports, raw HTTP/SSDP exchanges and running real client programs with a time limit.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use upnp_iwf::daemon::{self, Daemon, DaemonConfig};
use upnp_iwf::mapping::MemoryBackend;

/// Starts a loopback daemon with `tweak` applied to the default loopback configuration.
pub async fn daemon(tweak: impl FnOnce(&mut DaemonConfig)) -> Daemon<MemoryBackend> {
    let mut cfg = DaemonConfig::loopback();
    tweak(&mut cfg);
    daemon::start(cfg).await.expect("daemon starts on loopback")
}

/// Sends `request` bytes on a fresh connection and reads until close or `limit`.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    read_all(&mut s)
}

/// Reads a whole response (until the peer closes, or until Content-Length bytes of body).
pub fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = text[..head_end].to_ascii_lowercase();
            if let Some(cl) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if buf.len() >= head_end + 4 + cl {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A SOAP POST with the given header spelling and SOAPAction value.
pub fn soap_request(
    addr: SocketAddr,
    path: &str,
    header: &str,
    action_value: &str,
    body: &str,
) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
         Content-Length: {}\r\n{header}: {action_value}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A SOAP envelope around `<u:{action}>` with `args`.
pub fn envelope(ns: &str, action: &str, args: &[(&str, &str)]) -> String {
    let mut inner = String::new();
    for (k, v) in args {
        inner.push_str(&format!("<{k}>{v}</{k}>"));
    }
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{ns}\">{inner}</u:{action}></s:Body></s:Envelope>\r\n"
    )
}

/// Calls `action` (WANIPConnection:2 namespace, quoted SOAPAction) and returns the response.
pub fn call(addr: SocketAddr, action: &str, args: &[(&str, &str)]) -> String {
    let ns = "urn:schemas-upnp-org:service:WANIPConnection:2";
    let body = envelope(ns, action, args);
    raw_http(
        addr,
        &soap_request(
            addr,
            "/ctl/IPConn",
            "SOAPAction",
            &format!("\"{ns}#{action}\""),
            &body,
        ),
    )
}

/// AddPortMapping arguments for a UDP/TCP mapping to 127.0.0.1.
pub fn add_args<'a>(ext: &'a str, proto: &'a str, lease: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("NewRemoteHost", ""),
        ("NewExternalPort", ext),
        ("NewProtocol", proto),
        ("NewInternalPort", ext),
        ("NewInternalClient", "127.0.0.1"),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", "test"),
        ("NewLeaseDuration", lease),
    ]
}

/// Runs a program (blocking) with a time limit; kills it (by its own pid) when it overruns.
pub fn run(program: &str, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Runs `program` off the async runtime.
pub async fn run_async(program: &'static str, args: Vec<String>, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &a, limit)
    })
    .await
    .expect("join")
}

/// Sends one SSDP datagram to `to` and collects answers for `wait`.
pub fn ssdp_exchange(
    to: SocketAddr,
    msg: &str,
    wait: Duration,
) -> Vec<(SocketAddr, String, Duration)> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let start = Instant::now();
    s.send_to(msg.as_bytes(), to).expect("send");
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < wait {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((
                from,
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                start.elapsed(),
            ));
        }
    }
    out
}

/// Value of header `name` (case-insensitive) in an HTTP-style message.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
}

/// Environment variable CI sets: a test that would skip for want of a tool fails instead
/// (the same switch as the namespace tests' `nat444_tests::lab::REQUIRE_PRIVILEGED_ENV`).
pub const REQUIRE_ENV: &str = "NAT444_REQUIRE_PRIVILEGED";

/// True when [`REQUIRE_ENV`] is set to anything but empty or `0`.
pub fn tools_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether a test may go on without `what`: prints `SKIPPED: …` and returns false on a
/// laptop, panics under [`REQUIRE_ENV`] (CI), so a CI run never passes by skipping.
pub fn missing_tool(what: &str, install: &str) -> bool {
    assert!(
        !tools_required(),
        "{what} is not installed ({install}), and {REQUIRE_ENV} forbids skipping"
    );
    println!("SKIPPED: {what} is not installed ({install})");
    false
}

/// True if `program` is on PATH (or is a path that exists); otherwise see [`missing_tool`].
pub fn require_program(program: &str, install: &str) -> bool {
    let found = std::path::Path::new(program).exists()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    found || missing_tool(program, install)
}

/// The real `upnp-iwf` binary on 127.0.0.1, no upstream, no NAT, no control socket, on free
/// HTTP and SSDP ports; killed (by its own pid) when dropped.
pub struct BinaryDaemon {
    /// The process.
    pub child: std::process::Child,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its SSDP address.
    pub ssdp: SocketAddr,
}

impl BinaryDaemon {
    /// Starts it with `RUST_LOG=log_level`, its output to `output` (`None`: discarded).
    pub fn start(log_level: &str, output: Option<std::fs::File>) -> BinaryDaemon {
        let http_port = free_tcp_port();
        let ssdp_port = free_udp_port();
        let (stdout, stderr) = match output {
            Some(f) => (
                Stdio::from(f.try_clone().expect("dup log file")),
                Stdio::from(f),
            ),
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_upnp-iwf"))
            .args([
                "--lan",
                "lo",
                "--upstream",
                "none",
                "--nat",
                "none",
                "--ctl",
                "none",
                "--no-announce",
                "--external-address",
                "198.51.100.1",
                "--http-port",
                &http_port.to_string(),
                "--ssdp-port",
                &ssdp_port.to_string(),
            ])
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("upnp-iwf starts");
        BinaryDaemon {
            child,
            http: ([127, 0, 0, 1], http_port).into(),
            ssdp: ([127, 0, 0, 1], ssdp_port).into(),
        }
    }

    /// Waits until its HTTP port accepts connections (at most 20 s).
    pub fn wait_http(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.http).is_err() {
            assert!(Instant::now() < deadline, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BinaryDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free on 127.0.0.1 just now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A UDP port free on 127.0.0.1 just now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}
