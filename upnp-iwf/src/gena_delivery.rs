//! GENA NOTIFY delivery (upnp-igd.md §5.2): one worker per subscription so events stay in
//! SEQ order, bounded queues (a full queue drops the event rather than block a request),
//! connect/write/read time limits, callbacks tried in order, and a subscription dropped
//! after [`MAX_FAILURES`] failed deliveries in a row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::gena::{Callback, Notify};
use crate::http::IgdServer;
use crate::mapping::PortMappingBackend;

/// Time allowed for one delivery attempt (connect + write + status line).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive failed deliveries before the subscription is dropped.
pub const MAX_FAILURES: u32 = 3;
/// Events queued per subscription.
pub const PER_SUBSCRIPTION_QUEUE: usize = 16;
/// A worker with nothing to do for this long exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(120);

/// The NOTIFY request bytes for `n` sent to `cb`.
pub fn notify_request(n: &Notify, cb: &Callback) -> Vec<u8> {
    format!(
        "NOTIFY {} HTTP/1.1\r\nHOST: {}\r\nCONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n\
         CONTENT-LENGTH: {}\r\nNT: upnp:event\r\nNTS: upnp:propchange\r\nSID: {}\r\nSEQ: {}\r\n\
         CONNECTION: close\r\n\r\n{}",
        cb.path,
        cb.addr,
        n.body.len(),
        n.sid,
        n.seq,
        n.body
    )
    .into_bytes()
}

async fn deliver_once(n: &Notify, cb: &Callback) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(cb.addr).await?;
    s.write_all(&notify_request(n, cb)).await?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let k = s.read(&mut buf[got..]).await?;
        if k == 0 {
            break;
        }
        got += k;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))
}

async fn deliver(n: &Notify) -> bool {
    for cb in &n.callbacks {
        match tokio::time::timeout(DELIVERY_TIMEOUT, deliver_once(n, cb)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return true,
            Ok(Ok(status)) => tracing::info!(sid = %n.sid, status, "NOTIFY refused"),
            Ok(Err(e)) => tracing::info!(sid = %n.sid, error = %e, "NOTIFY failed"),
            Err(_) => tracing::info!(sid = %n.sid, "NOTIFY timed out"),
        }
    }
    false
}

async fn worker<B: PortMappingBackend>(srv: Arc<IgdServer<B>>, mut rx: mpsc::Receiver<Notify>) {
    let mut failures = 0;
    while let Ok(Some(n)) = tokio::time::timeout(IDLE_EXIT, rx.recv()).await {
        if deliver(&n).await {
            failures = 0;
            srv.metrics
                .inc("upnp_iwf_gena_notify", "result=\"ok\"".into());
        } else {
            failures += 1;
            srv.metrics
                .inc("upnp_iwf_gena_notify", "result=\"failed\"".into());
            if failures >= MAX_FAILURES {
                tracing::info!(sid = %n.sid, "dropping subscription after failed deliveries");
                srv.subs().drop_subscription(&n.sid);
                return;
            }
        }
    }
}

/// Routes queued NOTIFYs to per-subscription workers until the queue closes.
pub async fn run<B: PortMappingBackend>(srv: Arc<IgdServer<B>>, mut rx: mpsc::Receiver<Notify>) {
    let mut workers: HashMap<String, mpsc::Sender<Notify>> = HashMap::new();
    while let Some(n) = rx.recv().await {
        workers.retain(|_, tx| !tx.is_closed());
        let tx = workers.entry(n.sid.clone()).or_insert_with(|| {
            let (tx, wrx) = mpsc::channel(PER_SUBSCRIPTION_QUEUE);
            tokio::spawn(worker(srv.clone(), wrx));
            tx
        });
        if tx.try_send(n).is_err() {
            srv.metrics.inc("upnp_iwf_gena_dropped", String::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Checklist: NOTIFY carries NT, NTS, SID, SEQ, Content-Type text/xml.
    #[test]
    fn notify_request_has_the_gena_headers() {
        let cb = Callback::parse("http://192.168.0.10:4000/cb").expect("url");
        let n = Notify {
            sid: "uuid:s".into(),
            seq: 3,
            callbacks: vec![cb.clone()],
            body: "<e:propertyset/>".into(),
        };
        let text = String::from_utf8(notify_request(&n, &cb)).expect("text");
        assert!(text.starts_with("NOTIFY /cb HTTP/1.1\r\n"));
        for h in [
            "HOST: 192.168.0.10:4000",
            "NT: upnp:event",
            "NTS: upnp:propchange",
            "SID: uuid:s",
            "SEQ: 3",
            "CONTENT-TYPE: text/xml; charset=\"utf-8\"",
            "CONTENT-LENGTH: 16",
        ] {
            assert!(text.contains(&format!("{h}\r\n")), "{h}");
        }
    }
}
