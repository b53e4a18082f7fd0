//! The tokio driver around the sans-IO [`Server`]: one UDP socket on the inside address (and
//! optionally one on the outside, whose requests are ignored), the control socket, an
//! optional OpenMetrics HTTP endpoint, and the timers the engine asks for.
//!
//! The engine lives in one task; the control and metrics tasks talk to it over a channel, so
//! no lock is taken on the request path. After each wake-up one `recvmmsg` takes what is
//! queued (up to [`BATCH`] datagrams), the engine answers the whole batch and one `sendmmsg`
//! sends the answers ([`batch`]) before timers are looked at again.
//!
//! With `--dataplane tun` the same task also owns the translator and the TUN device
//! ([`dataplane`]): packets, PCP requests, timers and control requests are served in turn, so
//! implicit and PCP mappings change one table without locks.

pub mod batch;
mod control;
pub mod dataplane;
mod http;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::config::EngineConfig;
use crate::ctl::Request;
use crate::server::{Interface, Server};
pub use batch::BATCH;
use batch::{RecvBatch, SendBatch};
use dataplane::{Dataplane, DataplaneOptions};

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Engine configuration.
    pub engine: EngineConfig,
    /// Inside address (PCP served here).
    pub inside: IpAddr,
    /// Server port (5351).
    pub port: u16,
    /// Outside address (requests ignored).
    pub outside: Option<IpAddr>,
    /// Control socket path.
    pub ctl: PathBuf,
    /// OpenMetrics HTTP address.
    pub metrics: Option<SocketAddr>,
    /// The TUN dataplane (`--dataplane tun`); `None` serves PCP only.
    pub dataplane: Option<DataplaneOptions>,
}

/// A control request with its reply channel.
pub(crate) type Call = (Request, oneshot::Sender<String>);

/// Runs the daemon until Ctrl-C / SIGTERM.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let inside = UdpSocket::bind((config.inside, config.port))
        .await
        .with_context(|| {
            format!(
                "binding the PCP server to {}:{}",
                config.inside, config.port
            )
        })?;
    let outside = match config.outside {
        Some(a) => Some(
            UdpSocket::bind((a, config.port))
                .await
                .with_context(|| format!("binding the outside socket to {a}:{}", config.port))?,
        ),
        None => None,
    };
    let local = inside.local_addr()?;
    let mut server = Server::new(
        config.engine.clone(),
        Instant::now(),
        Box::new(rand::rngs::StdRng::from_entropy()),
    )?;
    server.set_server_addresses(vec![local]);
    let (tx, mut rx) = mpsc::channel::<Call>(64);
    let _ = std::fs::remove_file(&config.ctl);
    let listener = tokio::net::UnixListener::bind(&config.ctl)
        .with_context(|| format!("binding the control socket {}", config.ctl.display()))?;
    tokio::spawn(control::serve(listener, tx.clone()));
    if let Some(addr) = config.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint {addr}"))?;
        tokio::spawn(http::serve(l, tx.clone()));
    }
    tracing::info!(%local, outside = ?config.outside, ctl = %config.ctl.display(), "PCP server listening");
    let mut rx_batch = RecvBatch::new();
    let mut tx_batch = SendBatch::new();
    let mut obuf = vec![0u8; 2048];
    let mut out = vec![0u8; 1100];
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Last of the fallible set-up steps, so its routing rules are always removed again below.
    // Control requests wait in the channel meanwhile: a `ctl` answer means the dataplane is up.
    let mut dp = match &config.dataplane {
        Some(options) => {
            let IpAddr::V4(inside4) = config.inside else {
                anyhow::bail!("the TUN dataplane needs an IPv4 --inside address");
            };
            Some(Dataplane::open(options, &server, inside4, Instant::now()).await?)
        }
        None => None,
    };
    // systemd Type=notify: everything is bound and the dataplane is up.
    if let Err(e) = crate::sd_notify::notify("READY=1\nSTATUS=PCP server listening") {
        tracing::warn!(error = %e, "cannot notify systemd ($NOTIFY_SOCKET)");
    }
    loop {
        flush(&mut server, &inside).await;
        let mut deadline = server.poll_timeout();
        if let Some(dp) = &dp {
            let t = dp.poll_timeout(Instant::now());
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = inside.readable() => {
                r?;
                match rx_batch.recv(&inside) {
                    Ok(_) => answer_batch(&mut server, &inside, &rx_batch, &mut tx_batch).await,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => tracing::warn!(error = %e, "PCP receive failed"),
                }
            }
            r = recv_opt(outside.as_ref(), &mut obuf) => {
                if let (Some(sock), Ok((n, from))) = (outside.as_ref(), r) {
                    answer(&mut server, sock, Interface::Outside, from, &obuf[..n], &mut out).await;
                }
            }
            r = readable(dp.as_ref()) => {
                match (r, dp.as_mut()) {
                    (Ok(()), Some(dp)) => dp.drain(&mut server).await,
                    (Err(e), _) => {
                        tracing::error!(error = %e, "TUN device failed");
                        break;
                    }
                    (Ok(()), None) => {}
                }
            }
            _ = sleep => {
                let now = Instant::now();
                server.handle_timeout(now);
                if let Some(dp) = dp.as_mut() {
                    dp.handle_timeout(&mut server, now).await;
                }
            }
            Some((req, reply)) = rx.recv() => {
                let renumber = matches!(req, crate::ctl::Request::Pool(_));
                let mut answer = control::execute(&mut server, dp.as_mut(), &config, req);
                if let (true, Some(dp)) = (renumber, dp.as_mut()) {
                    // `ctl pool`: pool-bound traffic must now reach the device for the new
                    // addresses (and no longer for the old ones).
                    match dp.reroute(&server).await {
                        Ok(Some(prefixes)) => {
                            let list: Vec<String> =
                                prefixes.iter().map(|(p, l)| format!("{p}/{l}")).collect();
                            answer.push_str(&format!("TUN routes: {}\n", list.join(" ")));
                        }
                        Ok(None) => {}
                        Err(e) => answer.push_str(&format!("error: {e:#}\n")),
                    }
                }
                let _ = reply.send(answer);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    if let Some(dp) = dp {
        dp.close().await;
    }
    let _ = std::fs::remove_file(&config.ctl);
    tracing::info!("stopped");
    Ok(())
}

async fn readable(dp: Option<&Dataplane>) -> std::io::Result<()> {
    match dp {
        Some(dp) => dp.readable().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn answer(
    server: &mut Server,
    sock: &UdpSocket,
    iface: Interface,
    from: SocketAddr,
    bytes: &[u8],
    out: &mut [u8],
) {
    tracing::trace!(%from, len = bytes.len(), "datagram");
    if let Some(n) = server.handle(Instant::now(), from, iface, bytes, out) {
        // Non-blocking first: the socket buffer almost always has room.
        let sent = match sock.try_send_to(&out[..n], from) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sock.send_to(&out[..n], from).await
            }
            other => other,
        };
        if let Err(e) = sent {
            tracing::warn!(%from, error = %e, "send failed");
        }
    }
}

/// Answers one received batch with one `sendmmsg` (more only when the socket buffer is full).
async fn answer_batch(server: &mut Server, sock: &UdpSocket, rx: &RecvBatch, tx: &mut SendBatch) {
    let now = Instant::now();
    for i in 0..rx.len() {
        let Some((Some(from), bytes)) = rx.get(i) else {
            continue;
        };
        tracing::trace!(%from, len = bytes.len(), "datagram");
        let Some(slot) = tx.next_slot() else {
            break;
        };
        if let Some(n) = server.handle(now, from, Interface::Inside, bytes, slot) {
            tx.commit(n, from);
        }
    }
    tx.send(sock).await;
}

async fn flush(server: &mut Server, sock: &UdpSocket) {
    while let Some(t) = server.poll_transmit() {
        if let Err(e) = sock.send_to(&t.payload, t.destination).await {
            tracing::debug!(to = %t.destination, error = %e, "unsolicited send failed");
        }
    }
}
