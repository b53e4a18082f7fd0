//! The HTTP side of the IGD on hyper 1 (upnp-igd.md §2.1, §3, §5, §7): descriptions, SOAP
//! control, GENA SUBSCRIBE/UNSUBSCRIBE, a status page and `/metrics`. Served only to LAN
//! peers, with a connection cap, header/body time limits, a body size cap, half-close
//! tolerated, Title-Case header names and `Content-Length` on every response.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::actions::{Context, Igd};
use crate::description::{self, IgdVersion, ROOT_DESC_PATH, Service, VersionPolicy};
use crate::gena::{Notify, Subscriptions};
use crate::log_limit::SharedLogLimiter;
use crate::mapping::PortMappingBackend;
use crate::metrics::Metrics;
use crate::soap::{self, SoapAction, UpnpError};
use crate::ssdp_reply::server_string;

/// Largest request body read (SOAP requests are < 2 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Time allowed for the request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay open.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Most concurrent connections; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Most concurrent connections from one LAN host, so one slow or hostile host cannot take
/// every slot.
pub const MAX_CONNECTIONS_PER_PEER: usize = 16;
/// hyper's read buffer cap (bounds header size).
pub const MAX_BUF: usize = 16 * 1024;

const XML: &str = "text/xml; charset=\"utf-8\"";

/// Everything the HTTP handlers share.
#[derive(Debug)]
pub struct IgdServer<B> {
    /// Control logic and backend.
    pub igd: Igd<B>,
    /// Which description each client gets.
    pub version_policy: VersionPolicy,
    /// CONFIGID (`configId` attribute).
    pub config_id: u32,
    /// GENA subscriptions.
    pub subs: Mutex<Subscriptions>,
    /// Queue of NOTIFYs to deliver (non-blocking: full → dropped and counted).
    pub notify_tx: mpsc::Sender<Notify>,
    /// Wakes the event task after a state change.
    pub changed: tokio::sync::Notify,
    /// Counters.
    pub metrics: Metrics,
    /// Rate limit of the log lines a flood of bad requests causes.
    pub logs: SharedLogLimiter,
}

impl<B: PortMappingBackend> IgdServer<B> {
    /// The subscription table.
    pub fn subs(&self) -> MutexGuard<'_, Subscriptions> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a NOTIFY without waiting.
    pub fn queue_notify(&self, n: Notify) {
        if self.notify_tx.try_send(n).is_err() {
            self.metrics.inc("upnp_iwf_gena_dropped", String::new());
        }
    }

    /// Re-evaluates evented state and queues NOTIFYs for what changed; also expires leases.
    pub fn publish_changes(&self, now: Instant) {
        let expired = self.igd.backend.expire(now);
        for m in &expired {
            tracing::info!(
                port = m.key.external_port,
                proto = m.key.protocol.as_str(),
                "lease expired"
            );
        }
        let v = self.version_policy.highest();
        let mut out = Vec::new();
        for s in Service::ALL {
            let state = self.igd.evented_state(s, v, now);
            out.extend(self.subs().on_state(now, s, state));
        }
        for n in out {
            self.queue_notify(n);
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(ct) = content_type {
        if let Ok(v) = HeaderValue::from_str(ct) {
            h.insert(hyper::header::CONTENT_TYPE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&server_string()) {
        h.insert(hyper::header::SERVER, v);
    }
    r
}

fn with(mut r: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
    r
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether a `Host:` value is an IP literal (`a.b.c.d[:port]` or `[v6][:port]`), the
/// DNS-rebinding guard of miniupnpd.
pub fn host_is_ip_literal(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    h.parse::<Ipv4Addr>().is_ok()
}

async fn read_body(body: Incoming) -> Result<Bytes, StatusCode> {
    // A declared length over the cap is refused before reading anything.
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY as u64 {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let limited = Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
        Ok(Err(_)) => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn service_for(path: &str, f: fn(Service) -> &'static str) -> Option<Service> {
    Service::ALL
        .into_iter()
        .find(|s| f(*s).eq_ignore_ascii_case(path))
}

/// Handles one request from `peer` that arrived on `local`.
pub async fn handle<B: PortMappingBackend>(
    srv: Arc<IgdServer<B>>,
    local: SocketAddr,
    peer: Ipv4Addr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("igd_request", %peer, %method, %path);
    let _g = span.enter();
    if let Some(host) = header(&req, "host") {
        if !host_is_ip_literal(host) {
            srv.metrics
                .inc("upnp_iwf_http_refused", "reason=\"host\"".into());
            return Ok(reply(StatusCode::FORBIDDEN, None, ""));
        }
    }
    let ua = header(&req, "user-agent").map(str::to_owned);
    let version = srv.version_policy.for_user_agent(ua.as_deref());
    let lower = path.to_ascii_lowercase();
    let resp = match method.as_str() {
        "GET" | "HEAD" => get(&srv, local, version, &lower),
        "POST" => {
            if service_for(&path, Service::control_path).is_none() {
                reply(StatusCode::NOT_FOUND, None, "")
            } else {
                drop(_g);
                return Ok(post(&srv, peer, version, req).await);
            }
        }
        "SUBSCRIBE" | "UNSUBSCRIBE" => match service_for(&path, Service::event_path) {
            None => reply(StatusCode::NOT_FOUND, None, ""),
            Some(s) => gena(&srv, peer, s, &method, &req),
        },
        _ => reply(StatusCode::NOT_IMPLEMENTED, None, ""),
    };
    Ok(resp)
}

fn get<B: PortMappingBackend>(
    srv: &IgdServer<B>,
    local: SocketAddr,
    v: IgdVersion,
    lower: &str,
) -> Resp {
    if lower == ROOT_DESC_PATH.to_ascii_lowercase() {
        let pres = format!("http://{local}/");
        let xml = description::root_description(&srv.igd.identity, v, &pres, srv.config_id);
        return reply(StatusCode::OK, Some(XML), xml);
    }
    if let Some(s) = service_for(lower, Service::scpd_path) {
        return reply(StatusCode::OK, Some(XML), description::scpd(s, v));
    }
    if service_for(lower, Service::control_path).is_some() {
        return with(
            reply(StatusCode::METHOD_NOT_ALLOWED, None, ""),
            "allow",
            "POST",
        );
    }
    if service_for(lower, Service::event_path).is_some() {
        return with(
            reply(StatusCode::METHOD_NOT_ALLOWED, None, ""),
            "allow",
            "SUBSCRIBE, UNSUBSCRIBE",
        );
    }
    let now = Instant::now();
    match lower {
        "/" | "/index.html" => reply(
            StatusCode::OK,
            Some("text/html; charset=utf-8"),
            srv.igd.backend.status(now).to_html(),
        ),
        "/status.json" => reply(
            StatusCode::OK,
            Some("application/json"),
            srv.igd.backend.status(now).to_json(),
        ),
        "/status.txt" => reply(
            StatusCode::OK,
            Some("text/plain; charset=utf-8"),
            srv.igd.backend.status(now).to_text(),
        ),
        "/metrics" => {
            let count = srv.igd.backend.count(now) as u64;
            let subs = srv.subs().len() as u64;
            let text = srv.metrics.render_with(
                &[
                    ("upnp_iwf_mappings", count),
                    ("upnp_iwf_gena_subscriptions", subs),
                ],
                &srv.igd.backend.upstream_metrics(now),
            );
            reply(
                StatusCode::OK,
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                text,
            )
        }
        _ => reply(StatusCode::NOT_FOUND, None, ""),
    }
}

fn soap_reply(status: StatusCode, body: String) -> Resp {
    with(reply(status, Some(XML), body), "ext", "")
}

async fn post<B: PortMappingBackend>(
    srv: &IgdServer<B>,
    peer: Ipv4Addr,
    version: IgdVersion,
    req: Request<Incoming>,
) -> Resp {
    let Some(action) = header(&req, "soapaction").map(str::to_owned) else {
        srv.metrics
            .inc("upnp_iwf_http_refused", "reason=\"no_soapaction\"".into());
        return reply(StatusCode::BAD_REQUEST, None, "");
    };
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(status) => return reply(status, None, ""),
    };
    let Some(sa) = SoapAction::parse(&action) else {
        return fault(srv, "?", UpnpError::InvalidAction);
    };
    let span = tracing::info_span!("soap", action = %sa.action);
    let _g = span.enter();
    let parsed = match soap::parse_request(&body) {
        Ok(p) => p,
        Err(soap::SoapParseError::Dtd) => {
            srv.metrics
                .inc("upnp_iwf_http_refused", "reason=\"dtd\"".into());
            if srv.logs.allow("soap_dtd", Instant::now()) {
                tracing::warn!(%peer, "SOAP body with a DTD refused (400)");
            }
            return reply(
                StatusCode::BAD_REQUEST,
                Some("text/plain; charset=utf-8"),
                "SOAP body refused: it contains a DTD (<!DOCTYPE ...>); SOAP 1.1 messages must not carry one\n",
            );
        }
        Err(e) => {
            if srv.logs.allow("soap_unparsable", Instant::now()) {
                tracing::info!(error = %e, "unparsable SOAP body");
            }
            return fault(srv, &sa.action, UpnpError::InvalidArgs);
        }
    };
    let ctx = Context {
        caller: peer,
        version,
        now: Instant::now(),
    };
    drop(_g);
    // One span per IGD request, carried into its PCP transaction by the interworking core
    // (`AddPortMapping → MAP nonce=… → SUCCESS 198.51.100.3:5000` in one story).
    let result = tracing::Instrument::instrument(
        srv.igd.handle(&ctx, &sa.action, &parsed),
        tracing::info_span!("igd", action = %sa.action, cp = %peer),
    )
    .await;
    match result {
        Ok(outs) => {
            srv.metrics.inc(
                "upnp_iwf_soap_actions",
                format!("action=\"{}\",result=\"ok\"", sa.action),
            );
            if matches!(
                sa.action.as_str(),
                "AddPortMapping"
                    | "AddAnyPortMapping"
                    | "DeletePortMapping"
                    | "DeletePortMappingRange"
            ) {
                tracing::info!(action = %sa.action, "mapping table changed");
                srv.changed.notify_one();
            }
            soap_reply(
                StatusCode::OK,
                soap::response(&sa.namespace, &sa.action, &outs),
            )
        }
        Err(e) => fault(srv, &sa.action, e),
    }
}

fn fault<B>(srv: &IgdServer<B>, action: &str, e: UpnpError) -> Resp {
    if srv.logs.allow("upnp_fault", Instant::now()) {
        tracing::info!(code = e.code(), "UPnP fault");
    }
    let label = if action.bytes().all(|b| b.is_ascii_alphanumeric()) {
        action
    } else {
        "?"
    };
    srv.metrics.inc(
        "upnp_iwf_soap_actions",
        format!("action=\"{label}\",result=\"{}\"", e.code()),
    );
    soap_reply(StatusCode::INTERNAL_SERVER_ERROR, soap::fault(e))
}

fn gena<B: PortMappingBackend>(
    srv: &IgdServer<B>,
    peer: Ipv4Addr,
    service: Service,
    method: &str,
    req: &Request<Incoming>,
) -> Resp {
    let now = Instant::now();
    let (cb, nt, sid, timeout) = (
        header(req, "callback"),
        header(req, "nt"),
        header(req, "sid"),
        header(req, "timeout"),
    );
    if method == "UNSUBSCRIBE" {
        return match srv.subs().unsubscribe(sid, cb, nt) {
            Ok(()) => reply(StatusCode::OK, None, ""),
            Err(e) => reply(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                None,
                "",
            ),
        };
    }
    let state = srv
        .igd
        .evented_state(service, srv.version_policy.highest(), now);
    let result = srv
        .subs()
        .subscribe(now, peer, service, cb, nt, sid, timeout, &state, || {
            format!("uuid:{}", description::DeviceIdentity::random_uuid())
        });
    match result {
        Ok(s) => {
            if let Some(initial) = s.initial {
                srv.queue_notify(initial);
            }
            let r = with(reply(StatusCode::OK, None, ""), "sid", &s.sid);
            with(r, "timeout", &format!("Second-{}", s.timeout))
        }
        Err(e) => reply(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            None,
            "",
        ),
    }
}

/// Open connections per peer address.
#[derive(Debug, Default)]
struct PeerSlots(Mutex<std::collections::HashMap<Ipv4Addr, usize>>);

/// One connection's claim on its peer's slots; released on drop.
#[derive(Debug)]
struct PeerSlot(Arc<PeerSlots>, Ipv4Addr);

impl PeerSlots {
    fn take(self: &Arc<Self>, peer: Ipv4Addr) -> Option<PeerSlot> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(peer).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot(self.clone(), peer))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown` turns true.
pub async fn serve<B: PortMappingBackend>(
    listener: TcpListener,
    srv: Arc<IgdServer<B>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(PeerSlots::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let peer_v4 = match peer.ip().to_canonical() {
            IpAddr::V4(v4) if srv.igd.policy.get().is_lan(IpAddr::V4(v4)) => v4,
            _ => {
                srv.metrics
                    .inc("upnp_iwf_http_refused", "reason=\"not_lan\"".into());
                continue;
            }
        };
        let Some(slot) = peers.take(peer_v4) else {
            srv.metrics
                .inc("upnp_iwf_http_refused", "reason=\"peer_busy\"".into());
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            srv.metrics
                .inc("upnp_iwf_http_refused", "reason=\"busy\"".into());
            continue;
        };
        let local = stream.local_addr().unwrap_or(peer);
        let srv = srv.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let svc =
                hyper::service::service_fn(move |req| handle(srv.clone(), local, peer_v4, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .title_case_headers(true)
                .max_buf_size(MAX_BUF)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_literal_hosts_pass_the_rebinding_guard() {
        assert!(host_is_ip_literal("192.168.0.1:5000"));
        assert!(host_is_ip_literal("192.168.0.1"));
        assert!(host_is_ip_literal("[fe80::1]:5000"));
        assert!(!host_is_ip_literal("evil.example"));
        assert!(!host_is_ip_literal("evil.example:5000"));
        assert!(!host_is_ip_literal("1.2.3.4.evil:80"));
    }
}
