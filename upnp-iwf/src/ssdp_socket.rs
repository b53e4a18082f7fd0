//! SSDP sockets of one LAN interface and the tokio loop driving an [`SsdpEngine`]
//! (upnp-igd.md §1.1, §9). Two sockets, both `SO_REUSEADDR` and bound to the interface
//! (`SO_BINDTODEVICE`, best effort):
//! * the *group* socket, bound to `239.255.255.250:1900` and joined to the group on this
//!   interface only, receives multicast searches (never anything from other interfaces);
//! * the *unicast* socket, bound to `<LAN address>:1900`, receives unicast searches and sends
//!   every answer and NOTIFY, so replies leave from port 1900 and the LAN address, with
//!   `IP_MULTICAST_IF` = the LAN address, TTL 2 and multicast loopback off.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::log_limit::{LogLimiter, Verdict, log_summary};
use crate::ssdp::{MAX_DATAGRAM, SSDP_GROUP};
use crate::ssdp_engine::{Outcome, SsdpEngine};

/// Multicast TTL of NOTIFYs (UDA: default 2).
pub const MULTICAST_TTL: u32 = 2;

/// The sockets of one interface.
#[derive(Debug)]
pub struct SsdpSockets {
    /// Unicast receive + all sends.
    pub unicast: UdpSocket,
    /// Multicast receive (absent when the interface cannot join the group, e.g. `lo`).
    pub group: Option<UdpSocket>,
}

fn base(iface: &str) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if let Err(e) = s.bind_device(Some(iface.as_bytes())) {
        tracing::warn!(iface, error = %e, "SO_BINDTODEVICE failed; relying on address binding");
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Opens the sockets of interface `iface` with address `addr`, on `port` (1900; 0 picks an
/// ephemeral unicast port and skips the group socket, for unprivileged tests).
pub fn open(iface: &str, addr: Ipv4Addr, port: u16, multicast: bool) -> io::Result<SsdpSockets> {
    let u = base(iface)?;
    u.bind(&SocketAddr::V4(SocketAddrV4::new(addr, port)).into())?;
    u.set_multicast_if_v4(&addr)?;
    u.set_multicast_ttl_v4(MULTICAST_TTL)?;
    u.set_multicast_loop_v4(false)?;
    let unicast = UdpSocket::from_std(u.into())?;
    let group = if multicast && port != 0 {
        let g = base(iface)?;
        g.bind(&SocketAddr::V4(SocketAddrV4::new(SSDP_GROUP, port)).into())?;
        match g.join_multicast_v4(&SSDP_GROUP, &addr) {
            Ok(()) => Some(UdpSocket::from_std(g.into())?),
            Err(e) => {
                tracing::warn!(iface, error = %e, "cannot join the SSDP group; unicast only");
                None
            }
        }
    } else {
        None
    };
    Ok(SsdpSockets { unicast, group })
}

async fn recv_group(g: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match g {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn flush(engine: &mut SsdpEngine, sock: &UdpSocket) {
    let now = Instant::now();
    while let Some(t) = engine.poll_transmit(now) {
        if let Err(e) = sock.send_to(&t.payload, t.to).await {
            tracing::debug!(to = %t.to, error = %e, "SSDP send failed");
        }
    }
}

/// Runs the responder until `shutdown` turns true, then sends the byebye set. With
/// `announce` false no NOTIFY is sent (loopback tests).
pub async fn run(
    mut engine: SsdpEngine,
    sockets: SsdpSockets,
    announce: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    if announce {
        engine.start(Instant::now());
    }
    let mut ubuf = vec![0u8; MAX_DATAGRAM + 1];
    let mut gbuf = vec![0u8; MAX_DATAGRAM + 1];
    let mut logs = LogLimiter::default();
    loop {
        let wake = [engine.poll_timeout(), logs.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            r = sockets.unicast.recv_from(&mut ubuf) => {
                if let Ok((n, from)) = r {
                    let now = Instant::now();
                    log_outcome(&mut logs, now, engine.handle(now, from, false, &ubuf[..n]), from);
                }
            }
            r = recv_group(&sockets.group, &mut gbuf) => {
                if let Ok((n, from)) = r {
                    let now = Instant::now();
                    log_outcome(&mut logs, now, engine.handle(now, from, true, &gbuf[..n]), from);
                }
            }
            _ = tokio::time::sleep_until(wake) => engine.handle_timeout(Instant::now()),
            _ = shutdown.changed() => break,
        }
        for s in logs.poll_summaries(Instant::now()) {
            log_summary(&s);
        }
        flush(&mut engine, &sockets.unicast).await;
    }
    for s in logs.drain(Instant::now()) {
        log_summary(&s);
    }
    if announce {
        for t in engine.shutdown() {
            let _ = sockets.unicast.send_to(&t.payload, t.to).await;
        }
    }
}

/// Logs what became of a datagram. Warnings a flood can cause go through `logs`: at most
/// [`crate::log_limit::LOG_BURST`] per kind and window, then one summary line.
fn log_outcome(logs: &mut LogLimiter, now: Instant, o: Outcome, from: SocketAddr) {
    match o {
        Outcome::Answered(n) => tracing::debug!(%from, n, "M-SEARCH answered"),
        Outcome::NotLan => tracing::debug!(%from, "SSDP from outside the LAN ignored"),
        Outcome::Malformed => tracing::debug!(%from, "malformed SSDP ignored"),
        Outcome::Overloaded => {
            if logs.check("ssdp_queue_full", now) == Verdict::Log {
                tracing::warn!(%from, "SSDP queue full; search dropped");
            }
        }
        Outcome::RateLimited => {
            if logs.check("ssdp_rate_limited", now) == Verdict::Log {
                tracing::warn!(%from, "SSDP searches over the per-source answer budget; not answered");
            }
        }
        Outcome::NotASearch | Outcome::NoMatch => {}
    }
}
